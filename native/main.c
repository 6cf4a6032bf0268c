/* launcher-linkcheck: preflight check of a host's Ascend NPU RoCE links before an
 * HCCL world starts. See README.md for the command line and exit codes. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checks.h"
#include "cli.h"
#include "dcmi.h"
#include "proc.h"
#include "report.h"
#include "spec.h"

/* Children get our fds 0-2 replaced, but a pipe must never land on 0-2 itself. */
static void ensure_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) == -1 && open("/dev/null", O_RDWR) != fd)
            _exit(LC_EXIT_USAGE);
}

static void on_fatal_signal(int sig)
{
    lc_kill_running();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* An operator's Ctrl-C, or a launcher's SSH timeout, must not orphan hung tools. */
static void install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "launcher-linkcheck: %s\n(see launcher-linkcheck --help)\n", msg);
    return LC_EXIT_USAGE;
}

static int configure(int argc, char **argv, struct lc_config *cfg, int *help)
{
    char err[512];
    const char *spec = NULL;
    lc_config_defaults(cfg);
    enum lc_cli_result r = lc_parse_cli(argc, argv, cfg, &spec, err, sizeof err);
    *help = r == LC_CLI_HELP;
    if (r == LC_CLI_ERROR)
        return usage_error(err);
    if (spec && lc_read_spec(spec, cfg, err, sizeof err) != 0)
        return usage_error(err);
    if (!cfg->host[0] && gethostname(cfg->host, sizeof cfg->host - 1) != 0)
        snprintf(cfg->host, sizeof cfg->host, "localhost");
    return 0;
}

/* DCMI work runs on this thread while the pool runs hccn_tool. */
static void run_dcmi(struct lc_dcmi *d, struct lc_check *ch, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ch[i].kind == LC_IP && ch[i].source == LC_SRC_DCMI)
            lc_dcmi_check_device(d, ch[i].device, &ch[i], &ch[i + 1]);
}

static int run(const struct lc_config *cfg, const char *tool)
{
    static char npu_smi[4096];
    int have_npu_smi = cfg->superpod && lc_find_npu_smi(npu_smi, sizeof npu_smi) == 0;
    struct lc_dcmi *d = lc_dcmi_open(cfg->timeout_ms);
    int use_dcmi = lc_dcmi_usable(d);
    size_t n = 0;
    struct lc_check *ch = lc_build_checks(cfg, use_dcmi, &n);
    struct lc_pool *pool = ch ? lc_pool_start(cfg, tool, have_npu_smi ? npu_smi : NULL, ch, n) : NULL;
    if (!pool) {
        fprintf(stderr, "launcher-linkcheck: out of memory\n");
        lc_free_checks(ch, n);
        lc_dcmi_close(d);
        return LC_EXIT_FAILED;
    }
    if (use_dcmi)
        run_dcmi(d, ch, n);
    lc_pool_join(pool);
    size_t failed = cfg->json ? lc_report_json(stdout, cfg->host, ch, n)
                              : lc_report_human(stdout, cfg->host, ch, n);
    int rc = failed ? LC_EXIT_FAILED : LC_EXIT_OK;
    lc_free_checks(ch, n);
    if (lc_dcmi_close(d)) {
        /* A DCMI call is still running inside the library: exit() would run its
         * destructors under it. Leave without them. */
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    return rc;
}

int main(int argc, char **argv)
{
    static struct lc_config cfg; /* ~40 KiB of peers: keep it off the stack */
    char tool[4096], err[8192];
    int help = 0;
    ensure_std_fds();
    install_signal_handlers();
    int rc = configure(argc, argv, &cfg, &help);
    if (help) {
        lc_usage(stdout);
        return LC_EXIT_OK;
    }
    if (rc != 0)
        return rc;
    if (lc_find_tool(tool, sizeof tool, err, sizeof err) != 0) {
        fprintf(stderr, "launcher-linkcheck: %s\n", err);
        return LC_EXIT_USAGE;
    }
    return run(&cfg, tool);
}
