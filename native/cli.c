#include "cli.h"

#include <stdarg.h>
#include <string.h>

#include "parse.h"

void lc_usage(FILE *f)
{
    fputs("usage: launcher-linkcheck --device ID=EXPECTED_IP [--device ...] [--peer IP ...]\n"
          "                          [--pings N] [--max-loss PCT] [--timeout S] [--host NAME]\n"
          "                          [--jobs N] [--json]\n"
          "       launcher-linkcheck --spec FILE|- [--jobs N] [--json]\n"
          "Checks, per local NPU: link UP, optical module present, device IP as expected,\n"
          "ping loss to every peer <= max-loss (and DCMI network health when libdcmi loads).\n"
          "Exit codes: 0 all checks pass, 1 a check failed or timed out, 2 usage error or\n"
          "hccn_tool missing.\n",
          f);
}

static int fail(char *err, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

void lc_config_defaults(struct lc_config *c)
{
    memset(c, 0, sizeof *c);
    c->pings = LC_DEFAULT_PINGS;
    c->max_loss_centi = 0;
    c->timeout_ms = LC_DEFAULT_TIMEOUT_MS;
    c->jobs = LC_DEFAULT_JOBS;
    c->chips_per_card = 2; /* Atlas A3: two dies per card */
}

static int check_ip(const char *ip, const char *what, char *err, size_t n)
{
    char shown[80];
    lc_sanitize(shown, sizeof shown, ip, strlen(ip));
    if (strlen(ip) >= LC_IP_MAX || !lc_ip_valid(ip))
        return fail(err, n, "%s: \"%s\" is not an IPv4 or IPv6 address", what, shown);
    return 0;
}

int lc_add_device(struct lc_config *c, long id, const char *ip, char *err, size_t n)
{
    if (id < 0 || id > 255)
        return fail(err, n, "device id %ld out of range 0..255", id);
    if (check_ip(ip, "device ip", err, n))
        return -1;
    for (int i = 0; i < c->ndevices; i++)
        if (c->devices[i].id == id)
            return fail(err, n, "device %ld given twice", id);
    if (c->ndevices == LC_MAX_DEVICES)
        return fail(err, n, "more than %d devices", LC_MAX_DEVICES);
    c->devices[c->ndevices].id = (int)id;
    c->devices[c->ndevices].sdid = -1;
    c->devices[c->ndevices].pod[0] = '\0';
    strcpy(c->devices[c->ndevices].ip, ip);
    c->ndevices++;
    return 0;
}

int lc_add_peer(struct lc_config *c, const char *ip, char *err, size_t n)
{
    if (check_ip(ip, "peer", err, n))
        return -1;
    for (int i = 0; i < c->npeers; i++)
        if (strcmp(c->peers[i], ip) == 0)
            return fail(err, n, "peer %s given twice", ip);
    if (c->npeers == LC_MAX_PEERS)
        return fail(err, n, "more than %d peers", LC_MAX_PEERS);
    strcpy(c->peers[c->npeers++], ip);
    return 0;
}

int lc_set_host(struct lc_config *c, const char *host, char *err, size_t n)
{
    size_t len = strlen(host);
    char shown[80];
    lc_sanitize(shown, sizeof shown, host, len);
    if (len == 0 || len >= LC_HOST_MAX)
        return fail(err, n, "host name must be 1..%d characters", LC_HOST_MAX - 1);
    /* Host names end up in report lines; keep them to what DNS names and IPs use. */
    if (strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789.-_:[]") != len)
        return fail(err, n, "host name \"%s\" has characters other than letters, digits, "
                    "'.', '-', '_', ':', '[', ']'", shown);
    memcpy(c->host, host, len + 1);
    return 0;
}

static int bad_number(const char *what, const char *s, size_t len, const char *range,
                      char *err, size_t n)
{
    char shown[64];
    lc_sanitize(shown, sizeof shown, s, len);
    return fail(err, n, "%s: \"%s\" is not a number in %s", what, shown, range);
}

int lc_set_pings(struct lc_config *c, const char *s, size_t len, char *err, size_t n)
{
    long v;
    if (lc_parse_fixed(s, len, 0, 100, &v) != 0 || v < 1)
        return bad_number("pings", s, len, "1..100", err, n);
    c->pings = (int)v;
    return 0;
}

int lc_set_max_loss(struct lc_config *c, const char *s, size_t len, char *err, size_t n)
{
    long v;
    if (lc_parse_fixed(s, len, 2, 10000, &v) != 0)
        return bad_number("max-loss", s, len, "0..100 (percent)", err, n);
    c->max_loss_centi = v;
    return 0;
}

int lc_set_timeout(struct lc_config *c, const char *s, size_t len, char *err, size_t n)
{
    long v;
    if (lc_parse_fixed(s, len, 3, 3600000, &v) != 0 || v < 1)
        return bad_number("timeout", s, len, "0.001..3600 (seconds)", err, n);
    c->timeout_ms = v;
    return 0;
}

static int parse_device_arg(struct lc_config *c, const char *arg, char *err, size_t n)
{
    const char *eq = strchr(arg, '=');
    long id;
    char shown[80];
    lc_sanitize(shown, sizeof shown, arg, strlen(arg));
    if (!eq || lc_parse_fixed(arg, (size_t)(eq - arg), 0, 100000, &id) != 0)
        return fail(err, n, "--device: expected ID=EXPECTED_IP (e.g. 0=10.0.0.1), got \"%s\"",
                    shown);
    return lc_add_device(c, id, eq + 1, err, n);
}

/* Splits "--name=value" or "--name value"; returns the value or NULL. */
static const char *take_value(int argc, char **argv, int *i, const char *opt)
{
    const char *a = argv[*i];
    size_t ol = strlen(opt);
    if (a[ol] == '=')
        return a + ol + 1;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

static int opt_is(const char *a, const char *opt)
{
    size_t ol = strlen(opt);
    return strncmp(a, opt, ol) == 0 && (a[ol] == '\0' || a[ol] == '=');
}

static int apply_valued(struct lc_config *c, const char *opt, const char *v, char *err,
                        size_t n)
{
    size_t len = strlen(v);
    if (!strcmp(opt, "--device"))
        return parse_device_arg(c, v, err, n);
    if (!strcmp(opt, "--peer"))
        return lc_add_peer(c, v, err, n);
    if (!strcmp(opt, "--pings"))
        return lc_set_pings(c, v, len, err, n);
    if (!strcmp(opt, "--max-loss"))
        return lc_set_max_loss(c, v, len, err, n);
    if (!strcmp(opt, "--timeout"))
        return lc_set_timeout(c, v, len, err, n);
    if (!strcmp(opt, "--host"))
        return lc_set_host(c, v, err, n);
    long jobs;
    if (lc_parse_fixed(v, len, 0, LC_MAX_JOBS, &jobs) != 0 || jobs < 1)
        return bad_number("jobs", v, len, "1..256", err, n);
    c->jobs = (int)jobs;
    return 0;
}

static const char *const valued_opts[] = {"--device", "--peer", "--pings", "--max-loss",
                                          "--timeout", "--host", "--jobs", "--spec"};
#define N_VALUED (sizeof valued_opts / sizeof valued_opts[0])

enum lc_cli_result lc_parse_cli(int argc, char **argv, struct lc_config *c,
                                const char **spec_path, char *err, size_t n)
{
    const char *topology_flag = NULL; /* a flag that --spec would contradict */
    *spec_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return LC_CLI_HELP;
        if (!strcmp(a, "--json")) {
            c->json = 1;
            continue;
        }
        size_t k = 0;
        while (k < N_VALUED && !opt_is(a, valued_opts[k]))
            k++;
        if (k == N_VALUED) {
            char shown[80];
            lc_sanitize(shown, sizeof shown, a, strlen(a));
            fail(err, n, "unknown argument \"%s\"", shown);
            return LC_CLI_ERROR;
        }
        const char *opt = valued_opts[k];
        const char *v = take_value(argc, argv, &i, opt);
        if (!v) {
            fail(err, n, "%s needs a value", opt);
            return LC_CLI_ERROR;
        }
        if (!strcmp(opt, "--spec")) {
            *spec_path = v;
            continue;
        }
        if (strcmp(opt, "--jobs"))
            topology_flag = opt;
        if (apply_valued(c, opt, v, err, n))
            return LC_CLI_ERROR;
    }
    if (*spec_path && topology_flag) {
        fail(err, n, "--spec cannot be combined with %s (put it in the spec)", topology_flag);
        return LC_CLI_ERROR;
    }
    if (!*spec_path && c->ndevices == 0) {
        fail(err, n, "no devices: give --device ID=EXPECTED_IP at least once, or --spec");
        return LC_CLI_ERROR;
    }
    return LC_CLI_RUN;
}
