/* A testbed host's wall clock set off from the others' (Testbed.up(clocks=True)).
 *
 * The testbed's hosts share one kernel clock. Every process a host's sshd starts gets
 * LD_PRELOAD=<this, built by the testbed> and TESTBED_CLOCK_FILE=<host>/clock (sshd SetEnv):
 * the realtime clock it reads (clock_gettime, gettimeofday, time) is shifted by the whole
 * seconds in that file, re-read at most once a second. Monotonic clocks, sleeps and timed
 * waits are untouched (libfaketime's clock_nanosleep broke Python's time.sleep, and a faked
 * monotonic clock its timed waits). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static volatile long offset;
static volatile time_t read_at = -1;

static long shift(time_t now) {
    if (now != read_at) {
        read_at = now;
        const char *path = getenv("TESTBED_CLOCK_FILE");
        FILE *f = path ? fopen(path, "re") : NULL;
        if (f) {
            long v;
            if (fscanf(f, "%ld", &v) == 1)
                offset = v;
            fclose(f);
        }
    }
    return offset;
}

static int real(clockid_t id, struct timespec *ts) {
    if (!real_clock_gettime)
        real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    return real_clock_gettime(id, ts);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += shift(ts->tv_sec);
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    (void)tz;
    if (real(CLOCK_REALTIME, &ts) != 0)
        return -1;
    struct timeval *volatile out = tv; /* may be NULL, whatever glibc's header says */
    if (out) {
        tv->tv_sec = ts.tv_sec + shift(ts.tv_sec);
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    real(CLOCK_REALTIME, &ts);
    time_t t = ts.tv_sec + shift(ts.tv_sec);
    if (out)
        *out = t;
    return t;
}
