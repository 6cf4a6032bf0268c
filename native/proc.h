/* Runs one tool invocation: own process group, stdin from /dev/null, stdout and
 * stderr captured together into a bounded buffer, hard deadline. Thread-safe. */
#ifndef LC_PROC_H
#define LC_PROC_H

#include <stddef.h>

enum lc_how { LC_P_EXITED, LC_P_SIGNALED, LC_P_TIMEOUT, LC_P_SPAWN_FAILED, LC_P_UNREAPED };

struct lc_proc {
    char *out;        /* malloc'd, NUL-terminated for convenience; may contain NULs */
    size_t len;
    int truncated;    /* output went past the cap and the rest was dropped */
    enum lc_how how;
    int code;         /* exit status, signal number or errno */
    double seconds;
};

double lc_now(void);

/* Async-signal-safe: SIGKILLs the process group of every tool still running, so
 * an interrupted checker leaves no hung hccn_tool behind. */
void lc_kill_running(void);

void lc_run(const char *path, char *const argv[], long timeout_ms, size_t cap,
            struct lc_proc *r);

#endif
