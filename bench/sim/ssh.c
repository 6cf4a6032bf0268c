/* A stand-in for the `ssh` client, for bench/sim_hosts.py: the launcher's OpenSSH transport runs
 * it exactly as it runs ssh (`ssh OPTIONS... ADDRESS -- COMMAND`, stdin, stdout, stderr, exit
 * code), and it hands the command to the simulated hosts' server on the unix socket $SIM_SOCK
 * instead of a remote sshd. `ssh ... -O exit ADDRESS` (the end of a shared connection) is a
 * no-op. C, so that what the operator pays per call is a fork and exec of a small client, as
 * with ssh's shared connections (no handshake, no crypto: that is the floor of an ssh call). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int put(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int get(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int frame(int fd, const char *s, uint32_t n) { return put(fd, &n, 4) || put(fd, s, n); }

int main(int argc, char **argv)
{
    int dd = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-O"))
            return 0;
        if (!strcmp(argv[i], "--")) {
            dd = i;
            break;
        }
    }
    if (dd < 2 || dd + 1 >= argc) {
        fprintf(stderr, "sim ssh: expected OPTIONS ADDRESS -- COMMAND\n");
        return 255;
    }
    /* stdin, all of it (the launcher writes its input and closes it) */
    size_t cap = 1 << 16, len = 0;
    char *in = malloc(cap);
    for (ssize_t r; in && (r = read(0, in + len, cap - len)) > 0;) {
        len += (size_t)r;
        if (len == cap)
            in = realloc(in, cap *= 2);
    }
    const char *path = getenv("SIM_SOCK");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (!in || !path || strlen(path) >= sizeof sa.sun_path || fd < 0) {
        fprintf(stderr, "sim ssh: no $SIM_SOCK or out of memory\n");
        return 255;
    }
    strcpy(sa.sun_path, path);
    uint64_t n64 = len;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) || frame(fd, argv[dd + 1], (uint32_t)strlen(argv[dd + 1]))
        || frame(fd, argv[dd - 1], (uint32_t)strlen(argv[dd - 1])) || put(fd, &n64, 8) || put(fd, in, len)) {
        perror("sim ssh: connect to the simulated hosts");
        return 255;
    }
    int32_t code;
    uint32_t n;
    if (get(fd, &code, 4))
        return 255;
    for (int out = 1; out <= 2; out++) {
        if (get(fd, &n, 4))
            return 255;
        char *buf = malloc(n ? n : 1);
        if (!buf || get(fd, buf, n) || put(out, buf, n))
            return 255;
        free(buf);
    }
    return code;
}
