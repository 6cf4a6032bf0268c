/* Test double for Ascend's hccn_tool. Prints the documented output formats
 * (ASCEND_REFERENCE.md section 3.1; seeds 003 and 004) as the scenario file named
 * by $FAKE_NPU_SCENARIO describes. Written in C because the checker starts dozens
 * of these at once and a Python start-up costs ~250 ms on the test machines.
 *   hccn_tool -i N {-link|-optical|-ip|-net_health} -g
 *   hccn_tool -i N -ping -g address IP [pkt COUNT]
 *   Atlas A3: hccn_tool -i N {-vnic|-tls} -g; hccn_tool -i N -hccs_ping -g address IP [pkt COUNT] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_scenario.h"

static const char *const health_names[] = {"Success", "Socket failed", "Receive timeout",
                                           "Unreachable", "Time exceeded", "Fault", "Init",
                                           "Thread error", "Detect ip set"};

static int usage(void)
{
    fprintf(stderr, "Usage: hccn_tool -i <device_id> -<command> -g [args]\n");
    return 1;
}

static void log_call(int argc, char **argv)
{
    const char *path = sc_get("log");
    char line[1024];
    size_t o = 0;
    if (!path)
        return;
    for (int i = 1; i < argc && o < sizeof line - 2; i++)
        o += (size_t)snprintf(line + o, sizeof line - o, "%s%s", i > 1 ? " " : "", argv[i]);
    if (o > sizeof line - 2)
        o = sizeof line - 2;
    line[o++] = '\n';
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        if (write(fd, line, o) < 0)
            perror("fake_hccn_tool: log");
        close(fd);
    }
}

/* Like a wedged driver call. A grandchild keeps our stdout open as well, so the
 * checker has to kill the whole process group, not just us. */
static void hang(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        execlp("sleep", "sleep", "3600", (char *)NULL);
        _exit(127);
    }
    const char *pidfile = sc_get("hang_pidfile");
    FILE *f = pidfile ? fopen(pidfile, "a") : NULL;
    if (f) {
        fprintf(f, "%d\n", (int)pid);
        fclose(f);
    }
    for (;;)
        sleep(3600);
}

static int copy_raw(const char *path, int dev, const char *sub)
{
    char key[64], buf[65536];
    size_t k;
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 2;
    }
    while ((k = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, k, stdout);
    fclose(f);
    snprintf(key, sizeof key, "exit_%s", sub);
    return sc_int(sc_lookup(key, dev, NULL), 0);
}

static int out_optical(int dev)
{
    const char *present = sc_lookup("optical", dev, NULL);
    present = present ? present : "present";
    printf("optical info:\n%-21s: %s\n", "present", present);
    if (!strcmp(present, "present"))
        printf("%-21s: 47 C\n%-21s: 0.8421 mW\n%-21s: 0.7713 mW\n%-21s: 0x0\n",
               "temperature", "Tx Power0", "Rx Power0", "Rx Los Flag");
    return 0;
}

static int out_ip(int dev)
{
    const char *ip = sc_lookup("ip", dev, NULL), *mask = sc_lookup("netmask", dev, NULL);
    if (!ip) {
        printf("device %d has no ip address configured\n", dev); /* [U] wording */
        return 1;
    }
    printf("ipaddr:%s\nnetmask:%s\n", ip, mask ? mask : "255.255.255.0");
    return 0;
}

/* ASCEND_REFERENCE 1.3 [U: a vendor reference page]: "vnic link status: UP", "vnic ipaddr: X". */
static int out_vnic(int dev)
{
    const char *ip = sc_lookup("vnic_ip", dev, NULL), *link = sc_lookup("vnic_link", dev, NULL);
    printf("vnic link status: %s\n", link ? link : "UP");
    if (ip)
        printf("vnic ipaddr: %s\nvnic netmask: 255.255.255.0\n", ip);
    return 0;
}

/* [U] only `| grep switch` of this output is public; the value sits in "tls switch[N]". */
static int out_tls(int dev)
{
    printf("dev_id:%d, tls switch[%s](0:disable, 1:enable), tls preconfigured[1](0:non-preset, "
           "1:preset)\n", dev, sc_lookup("tls", dev, NULL) ? sc_lookup("tls", dev, NULL) : "0");
    return 0;
}

static int out_ping(int dev, int argc, char **argv, const char *loss_key)
{
    if ((argc != 2 && argc != 4) || strcmp(argv[0], "address") ||
        (argc == 4 && strcmp(argv[2], "pkt")))
        return usage();
    const char *peer = argv[1];
    int count = argc == 4 ? atoi(argv[3]) : 3;
    if (count < 1)
        return usage();
    int lost = sc_int(sc_lookup(loss_key, dev, peer), 0);
    lost = lost > count ? count : lost;
    long delay_ms = sc_int(sc_get("ping_delay_ms"), 0);
    struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    printf("device %d PING %s\n", dev, peer);
    fflush(stdout);
    for (int seq = 0; seq < count; seq++) {
        nanosleep(&ts, NULL);
        if (seq < lost) /* the seed shows the first packet lost */
            printf("recv time out seq=%d\n", seq);
        else
            printf("recv seq=%d,time=0.067000ms\n", seq);
        fflush(stdout);
    }
    printf("%d packets transmitted, %d received, %.2f%% packet loss\n", count, count - lost,
           100.0 * lost / count);
    return 0;
}

static int dispatch(int dev, const char *sub, int argc, char **argv)
{
    if (!strcmp(sub, "ping"))
        return out_ping(dev, argc, argv, "ping_loss");
    if (!strcmp(sub, "hccs_ping")) /* [U] output assumed in -ping's shape (ASCEND_REFERENCE 1.3) */
        return out_ping(dev, argc, argv, "hccs_ping_loss");
    if (argc != 0)
        return usage();
    if (!strcmp(sub, "link")) {
        const char *s = sc_lookup("link", dev, NULL);
        printf("link status: %s\n", s ? s : "UP");
        return 0;
    }
    if (!strcmp(sub, "optical"))
        return out_optical(dev);
    if (!strcmp(sub, "vnic"))
        return out_vnic(dev);
    if (!strcmp(sub, "tls"))
        return out_tls(dev);
    if (!strcmp(sub, "ip"))
        return out_ip(dev);
    if (!strcmp(sub, "net_health")) {
        int h = sc_int(sc_lookup("net_health", dev, NULL), 0);
        printf("net health status: %s\n", h >= 0 && h <= 8 ? health_names[h] : "Unknown");
        return 0;
    }
    return usage();
}

int main(int argc, char **argv)
{
    const char *path = getenv("FAKE_NPU_SCENARIO");
    if (sc_load(path) != 0) {
        fprintf(stderr, "fake_hccn_tool: cannot read FAKE_NPU_SCENARIO=%s\n",
                path ? path : "(unset)");
        return 2;
    }
    log_call(argc, argv);
    if (argc < 5 || strcmp(argv[1], "-i") || strspn(argv[2], "0123456789") != strlen(argv[2]) ||
        !argv[2][0] || argv[3][0] != '-' || strcmp(argv[4], "-g"))
        return usage();
    int dev = atoi(argv[2]);
    const char *sub = argv[3] + 1;
    char key[64];
    if (!sc_has_device(dev)) {
        /* [U] the real wording and exit status for a missing device are not documented. */
        printf("Error: device id %d is invalid. Please check the device id.\n", dev);
        return 255;
    }
    if (sc_in_list(sc_lookup("hang", dev, NULL), sub))
        hang();
    snprintf(key, sizeof key, "raw_%s", sub);
    const char *raw = sc_lookup(key, dev, NULL);
    if (raw)
        return copy_raw(raw, dev, sub);
    return dispatch(dev, sub, argc - 5, argv + 5);
}
