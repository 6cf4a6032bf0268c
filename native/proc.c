#include "proc.h"
#include "linkcheck.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* After the child exits, a grandchild may still hold the pipe; wait this long for EOF. */
#define EXIT_GRACE_S 0.2
/* A child stuck in the kernel (D state) may not die on SIGKILL; do not wait forever. */
#define REAP_LIMIT_S 2.0

/* Process groups of running tools, read by a signal handler (so no locks: slots
 * are claimed and freed with compare-and-swap, 0 = free). Sized for the largest
 * worker pool (--jobs is at most LC_MAX_JOBS). */
#define RUNNING_SLOTS LC_MAX_JOBS
static volatile pid_t running[RUNNING_SLOTS];

static void track(pid_t pid)
{
    for (int i = 0; i < RUNNING_SLOTS; i++)
        if (__sync_bool_compare_and_swap(&running[i], 0, pid))
            return;
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < RUNNING_SLOTS; i++)
        if (__sync_bool_compare_and_swap(&running[i], pid, 0))
            return;
}

void lc_kill_running(void)
{
    for (int i = 0; i < RUNNING_SLOTS; i++) {
        pid_t pid = running[i];
        if (pid > 0)
            kill(-pid, SIGKILL);
    }
}

double lc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static int spawn_child(const char *path, char *const argv[], int outfd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t def, mask;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, outfd, 1);
    posix_spawn_file_actions_adddup2(&fa, outfd, 2);
    posix_spawnattr_init(&at);
    /* We ignore SIGPIPE; ignored signals survive exec, so restore it for the tool. */
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigemptyset(&mask);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setsigmask(&at, &mask);
    /* Own process group, so a timeout kills the tool and anything it started. */
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawn(pid, path, &fa, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* Exited but not reaped: WNOWAIT keeps the zombie, so its pid (and process group
 * id) cannot be reused before we kill the group. */
static int child_exited(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           si.si_pid == pid;
}

static void append(struct lc_proc *r, const char *chunk, size_t k, size_t cap)
{
    size_t room = cap - r->len;
    size_t take = k < room ? k : room;
    memcpy(r->out + r->len, chunk, take);
    r->len += take;
    if (take < k)
        r->truncated = 1;
}

/* Reads until EOF, the deadline, or a short grace after the child's exit.
 * Returns 1 when the deadline passed while the child was still running. */
static int collect(int fd, pid_t pid, double deadline, size_t cap, struct lc_proc *r)
{
    char chunk[16384];
    double grace_end = 0;
    int exited = 0;
    for (;;) {
        double now = lc_now();
        if (exited && now >= grace_end)
            return 0;
        if (now >= deadline)
            return !exited;
        double until = exited && grace_end < deadline ? grace_end : deadline;
        long ms = (long)((until - now) * 1000.0) + 1;
        if (!exited && ms > 50)
            ms = 50; /* wake up to notice an exit whose pipe stays open */
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)ms);
        if (pr > 0) {
            ssize_t k = read(fd, chunk, sizeof chunk);
            if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
                return 0;
            if (k > 0)
                append(r, chunk, (size_t)k, cap);
            continue;
        }
        if (!exited && child_exited(pid)) {
            exited = 1;
            grace_end = lc_now() + EXIT_GRACE_S;
        }
    }
}

/* EOF can come before the exit (a tool that closes its output, then cleans up):
 * let it finish on its own until the deadline. Returns 1 when it did not. */
static int wait_exit(pid_t pid, double deadline)
{
    long ms = 1;
    while (!child_exited(pid)) {
        if (lc_now() >= deadline)
            return 1;
        nap_ms(ms);
        if (ms < 20)
            ms *= 2;
    }
    return 0;
}

static void reap(pid_t pid, int timed_out, struct lc_proc *r)
{
    double limit = lc_now() + REAP_LIMIT_S;
    int st = 0;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if ((w < 0 && errno != EINTR) || lc_now() > limit) {
            r->how = timed_out ? LC_P_TIMEOUT : LC_P_UNREAPED;
            return;
        }
        nap_ms(2);
    }
    if (timed_out) {
        r->how = LC_P_TIMEOUT;
    } else if (WIFEXITED(st)) {
        r->how = LC_P_EXITED;
        r->code = WEXITSTATUS(st);
    } else {
        r->how = LC_P_SIGNALED;
        r->code = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    }
}

void lc_run(const char *path, char *const argv[], long timeout_ms, size_t cap,
            struct lc_proc *r)
{
    memset(r, 0, sizeof *r);
    double t0 = lc_now();
    r->out = malloc(cap + 1);
    int fds[2];
    if (!r->out || pipe2(fds, O_CLOEXEC) != 0) {
        r->how = LC_P_SPAWN_FAILED;
        r->code = errno;
        if (r->out)
            r->out[0] = '\0';
        return;
    }
    pid_t pid;
    int rc = spawn_child(path, argv, fds[1], &pid);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        r->how = LC_P_SPAWN_FAILED;
        r->code = rc;
        r->out[0] = '\0';
        return;
    }
    track(pid);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    double deadline = t0 + (double)timeout_ms / 1000.0;
    int timed_out = collect(fds[0], pid, deadline, cap, r);
    close(fds[0]);
    if (!timed_out)
        timed_out = wait_exit(pid, deadline);
    /* The leader is unreaped here, so -pid is still our group: clear it out. */
    kill(-pid, SIGKILL);
    reap(pid, timed_out, r);
    untrack(pid);
    r->out[r->len] = '\0';
    r->seconds = lc_now() - t0;
}
