#include "checks.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "parse.h"
#include "proc.h"

static void add(struct lc_check *ch, size_t *k, int device, enum lc_kind kind,
                enum lc_source src, const char *expected)
{
    struct lc_check *c = &ch[(*k)++];
    c->device = device;
    c->kind = kind;
    c->source = src;
    snprintf(c->expected, sizeof c->expected, "%s", expected);
}

struct lc_check *lc_build_checks(const struct lc_config *c, int with_dcmi, size_t *n)
{
    size_t cap = (size_t)c->ndevices * (4 + (size_t)c->npeers), k = 0;
    struct lc_check *ch = calloc(cap ? cap : 1, sizeof *ch);
    char loss[32];
    if (!ch)
        return NULL;
    snprintf(loss, sizeof loss, "loss <= %ld.%02ld%%", c->max_loss_centi / 100,
             c->max_loss_centi % 100);
    for (int d = 0; d < c->ndevices; d++) {
        const struct lc_device *dev = &c->devices[d];
        add(ch, &k, dev->id, LC_LINK, LC_SRC_HCCN, "UP");
        add(ch, &k, dev->id, LC_OPTICAL, LC_SRC_HCCN, "present");
        add(ch, &k, dev->id, LC_IP, with_dcmi ? LC_SRC_DCMI : LC_SRC_HCCN, dev->ip);
        if (with_dcmi)
            add(ch, &k, dev->id, LC_NET_HEALTH, LC_SRC_DCMI, "Success or Init");
        for (int p = 0; p < c->npeers; p++) {
            if (lc_ip_equal(c->peers[p], strlen(c->peers[p]), dev->ip))
                continue; /* pinging yourself proves nothing about the fabric */
            ch[k].peer = c->peers[p];
            add(ch, &k, dev->id, LC_PING, LC_SRC_HCCN, loss);
        }
    }
    *n = k;
    return ch;
}

void lc_free_checks(struct lc_check *ch, size_t n)
{
    for (size_t i = 0; ch && i < n; i++)
        free(ch[i].raw);
    free(ch);
}

static int executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static int search_path(const char *path_env, char *out, size_t outn)
{
    const char *p = path_env;
    while (p && *p) {
        size_t len = strcspn(p, ":");
        if (len > 0 && len + sizeof "/hccn_tool" < outn) {
            snprintf(out, outn, "%.*s/hccn_tool", (int)len, p);
            if (executable(out))
                return 0;
        }
        p += len + (p[len] == ':');
    }
    return -1;
}

int lc_find_tool(char *out, size_t outn, char *err, size_t errn)
{
    const char *env = getenv(LC_TOOL_ENV);
    /* An explicit choice is never silently replaced by another binary. */
    if (env && *env) {
        if (strlen(env) < outn && executable(env)) {
            snprintf(out, outn, "%s", env);
            return 0;
        }
        snprintf(err, errn, "hccn_tool not found: %s=%s is not an executable file",
                 LC_TOOL_ENV, env);
        return -1;
    }
    if (executable(LC_TOOL_DEFAULT)) {
        snprintf(out, outn, "%s", LC_TOOL_DEFAULT);
        return 0;
    }
    const char *path = getenv("PATH");
    if (search_path(path, out, outn) == 0)
        return 0;
    snprintf(err, errn,
             "hccn_tool not found; tried %s (unset), %s, and hccn_tool in PATH (%s). "
             "Install the Ascend driver tools or set %s",
             LC_TOOL_ENV, LC_TOOL_DEFAULT, path ? path : "unset", LC_TOOL_ENV);
    return -1;
}

struct lc_pool {
    const struct lc_config *cfg;
    const char *tool;
    struct lc_check *ch;
    size_t n, next;
    pthread_mutex_t mu;
    pthread_t threads[64];
    int nthreads;
};

static const char *sub_of(enum lc_kind k)
{
    switch (k) {
    case LC_LINK: return "-link";
    case LC_OPTICAL: return "-optical";
    case LC_IP: return "-ip";
    case LC_NET_HEALTH: return "-net_health";
    default: return "-ping";
    }
}

static pthread_mutex_t strerror_mu = PTHREAD_MUTEX_INITIALIZER;

static void describe_errno(char *dst, size_t n, int err)
{
    pthread_mutex_lock(&strerror_mu);
    snprintf(dst, n, "%s", strerror(err));
    pthread_mutex_unlock(&strerror_mu);
}

/* "hccn_tool", "hccn_tool exit 1" or "hccn_tool killed by signal 11". */
static void who(char *dst, size_t n, const struct lc_proc *r)
{
    if (r->how == LC_P_EXITED && r->code != 0)
        snprintf(dst, n, "hccn_tool exit %d", r->code);
    else if (r->how == LC_P_SIGNALED)
        snprintf(dst, n, "hccn_tool killed by signal %d", r->code);
    else if (r->how == LC_P_UNREAPED)
        snprintf(dst, n, "hccn_tool did not exit after SIGKILL");
    else
        snprintf(dst, n, "hccn_tool");
}

static void set_evidence(struct lc_check *c, const struct lc_proc *r, const char *prefix,
                         const struct lc_span *line)
{
    char q[224];
    const char *trunc = r->truncated ? ", output truncated at 64 KiB" : "";
    if (line && line->n) {
        lc_sanitize(q, sizeof q, line->p, line->n);
        snprintf(c->evidence, sizeof c->evidence, "%s\"%s\"%s", prefix, q, trunc);
    } else {
        snprintf(c->evidence, sizeof c->evidence, "%s%s%s", prefix,
                 r->len ? "only blank output" : "no output", trunc);
    }
}

static void tool_evidence(struct lc_check *c, const struct lc_proc *r,
                          const struct lc_span *line)
{
    char w[64], prefix[80];
    who(w, sizeof w, r);
    snprintf(prefix, sizeof prefix, "%s: ", w);
    set_evidence(c, r, prefix, line);
}

/* Timeouts and spawn failures end the check before any parsing. */
static int process_failed(struct lc_check *c, const struct lc_proc *r, long timeout_ms)
{
    struct lc_span last = {NULL, 0};
    char prefix[80];
    if (r->how == LC_P_TIMEOUT) {
        c->state = LC_TIMEOUT;
        snprintf(c->seen, sizeof c->seen, "timeout after %.1f s", timeout_ms / 1000.0);
        snprintf(prefix, sizeof prefix, "hccn_tool killed after %.1f s, last output: ",
                 timeout_ms / 1000.0);
        lc_last_line(r->out, r->len, &last);
        set_evidence(c, r, prefix, &last);
        return 1;
    }
    if (r->how == LC_P_SPAWN_FAILED) {
        char msg[128];
        describe_errno(msg, sizeof msg, r->code);
        c->state = LC_ERROR;
        snprintf(c->seen, sizeof c->seen, "hccn_tool could not be started");
        snprintf(c->evidence, sizeof c->evidence, "posix_spawn: %s", msg);
        return 1;
    }
    return 0;
}

static void no_match(struct lc_check *c, const struct lc_proc *r, const char *what)
{
    struct lc_span first = {NULL, 0};
    c->state = LC_FAIL;
    if (r->len == 0)
        snprintf(c->seen, sizeof c->seen, "no output");
    else
        snprintf(c->seen, sizeof c->seen, "no \"%s\" line in the output", what);
    lc_first_line(r->out, r->len, &first);
    tool_evidence(c, r, &first);
}

static void eval_keyed(struct lc_check *c, const struct lc_proc *r, const char *key)
{
    struct lc_span line, val;
    char shown[64];
    if (!lc_find_key(r->out, r->len, key, &line, &val)) {
        snprintf(shown, sizeof shown, "%s:", key);
        no_match(c, r, shown);
        return;
    }
    int ok = c->kind == LC_IP ? lc_ip_equal(val.p, val.n, c->expected)
                              : lc_span_eq(val, c->expected);
    c->state = ok ? LC_PASS : LC_FAIL;
    if (val.n == 0)
        snprintf(c->seen, sizeof c->seen, "an empty value");
    else
        lc_sanitize(c->seen, sizeof c->seen, val.p, val.n);
    tool_evidence(c, r, &line);
}

static void eval_ping(struct lc_check *c, const struct lc_proc *r, long max_loss)
{
    struct lc_ping pg;
    if (!lc_parse_ping(r->out, r->len, &pg)) {
        no_match(c, r, "packets transmitted");
        return;
    }
    if (pg.tx == 0)
        snprintf(c->seen, sizeof c->seen, "0 packets transmitted");
    else
        snprintf(c->seen, sizeof c->seen, "%ld.%02ld%%", pg.loss_centi / 100,
                 pg.loss_centi % 100);
    c->state = pg.tx > 0 && pg.loss_centi <= max_loss ? LC_PASS : LC_FAIL;
    tool_evidence(c, r, &pg.line);
}

static void run_one(const struct lc_pool *p, struct lc_check *c)
{
    char dev[16], pkt[16];
    snprintf(dev, sizeof dev, "%d", c->device);
    snprintf(pkt, sizeof pkt, "%d", p->cfg->pings);
    char *argv[10] = {(char *)p->tool, "-i", dev, (char *)sub_of(c->kind), "-g", NULL};
    if (c->kind == LC_PING) {
        argv[5] = "address";
        argv[6] = (char *)c->peer;
        /* "pkt N" is unverified on real drivers: only sent when asked for a non-default count. */
        if (p->cfg->pings != LC_DEFAULT_PINGS) {
            argv[7] = "pkt";
            argv[8] = pkt;
        }
    }
    struct lc_proc r;
    lc_run(p->tool, argv, p->cfg->timeout_ms, LC_RAW_CAP, &r);
    c->seconds = r.seconds;
    if (!process_failed(c, &r, p->cfg->timeout_ms)) {
        if (c->kind == LC_PING)
            eval_ping(c, &r, p->cfg->max_loss_centi);
        else
            eval_keyed(c, &r, c->kind == LC_LINK ? "link status"
                              : c->kind == LC_OPTICAL ? "present" : "ipaddr");
    }
    c->raw = r.out;
    c->raw_len = r.len;
    c->raw_truncated = r.truncated;
}

static void *worker(void *arg)
{
    struct lc_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->next < p->n && p->ch[p->next].source != LC_SRC_HCCN)
            p->next++;
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n)
            return NULL;
        run_one(p, &p->ch[i]);
    }
}

struct lc_pool *lc_pool_start(const struct lc_config *c, const char *tool,
                              struct lc_check *ch, size_t n)
{
    struct lc_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->cfg = c;
    p->tool = tool;
    p->ch = ch;
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    int want = c->jobs < (int)n ? c->jobs : (int)n;
    for (int i = 0; i < want && i < 64; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0)
            break; /* fewer workers only means less parallelism */
        p->nthreads++;
    }
    return p;
}

void lc_pool_join(struct lc_pool *p)
{
    if (p->nthreads == 0)
        worker(p); /* no thread could be created: do the work here */
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
