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

/* Atlas A3 (superpod): the device IP is the die's virtual NIC's, HCCS peers answer -hccs_ping,
 * and the die's SuperPoD facts come from npu-smi (vLLM-Ascend's A3 multi-node preflight). A world
 * across SuperPoDs (roce) goes over the die's RoCE NIC: its link, its IP (-ip), -ping. */
static void add_superpod(struct lc_check *ch, size_t *k, const struct lc_device *dev, int roce)
{
    char spod[80];
    add(ch, k, dev->id, roce ? LC_LINK : LC_VNIC, LC_SRC_HCCN, "UP");
    add(ch, k, dev->id, LC_IP, LC_SRC_HCCN, dev->ip);
    if (dev->sdid >= 0 && dev->pod[0])
        snprintf(spod, sizeof spod, "SDID %ld, Super Pod ID %.40s", dev->sdid, dev->pod);
    else if (dev->sdid >= 0)
        snprintf(spod, sizeof spod, "SDID %ld", dev->sdid);
    else
        snprintf(spod, sizeof spod, "SDID and Super Pod ID");
    add(ch, k, dev->id, LC_SPOD, LC_SRC_NPU_SMI, spod);
}

struct lc_check *lc_build_checks(const struct lc_config *c, int with_dcmi, size_t *n)
{
    size_t cap = (size_t)c->ndevices * (5 + (size_t)c->npeers), k = 0;
    struct lc_check *ch = calloc(cap ? cap : 1, sizeof *ch);
    char loss[32];
    if (!ch)
        return NULL;
    snprintf(loss, sizeof loss, "loss <= %ld.%02ld%%", c->max_loss_centi / 100,
             c->max_loss_centi % 100);
    for (int d = 0; d < c->ndevices; d++) {
        const struct lc_device *dev = &c->devices[d];
        if (c->superpod) {
            add_superpod(ch, &k, dev, c->roce);
        } else {
            add(ch, &k, dev->id, LC_LINK, LC_SRC_HCCN, "UP");
            add(ch, &k, dev->id, LC_OPTICAL, LC_SRC_HCCN, "present");
            add(ch, &k, dev->id, LC_IP, with_dcmi ? LC_SRC_DCMI : LC_SRC_HCCN, dev->ip);
            if (with_dcmi)
                add(ch, &k, dev->id, LC_NET_HEALTH, LC_SRC_DCMI, "Success or Init");
        }
        /* passes when readable: the launcher compares the switch across the whole world (EI0016) */
        if (c->tls)
            add(ch, &k, dev->id, LC_TLS, LC_SRC_HCCN, "a readable TLS switch");
        for (int p = 0; p < c->npeers; p++) {
            if (lc_ip_equal(c->peers[p], strlen(c->peers[p]), dev->ip))
                continue; /* pinging yourself proves nothing about the fabric */
            ch[k].peer = c->peers[p];
            add(ch, &k, dev->id, c->superpod && !c->roce ? LC_HCCS_PING : LC_PING, LC_SRC_HCCN, loss);
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

static int search_path(const char *path_env, const char *name, char *out, size_t outn)
{
    const char *p = path_env;
    while (p && *p) {
        size_t len = strcspn(p, ":");
        if (len > 0 && len + strlen(name) + 2 < outn) {
            snprintf(out, outn, "%.*s/%s", (int)len, p, name);
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
    if (search_path(path, "hccn_tool", out, outn) == 0)
        return 0;
    snprintf(err, errn,
             "hccn_tool not found; tried %s (unset), %s, and hccn_tool in PATH (%s). "
             "Install the Ascend driver tools or set %s",
             LC_TOOL_ENV, LC_TOOL_DEFAULT, path ? path : "unset", LC_TOOL_ENV);
    return -1;
}

int lc_find_npu_smi(char *out, size_t outn)
{
    const char *env = getenv(LC_NPU_SMI_ENV);
    if (env && *env) { /* as for hccn_tool: an explicit choice is never replaced */
        snprintf(out, outn, "%s", env);
        return strlen(env) < outn && executable(env) ? 0 : -1;
    }
    if (executable(LC_NPU_SMI_DEFAULT)) {
        snprintf(out, outn, "%s", LC_NPU_SMI_DEFAULT);
        return 0;
    }
    return search_path(getenv("PATH"), "npu-smi", out, outn);
}

struct lc_pool {
    const struct lc_config *cfg;
    const char *tool;
    const char *npu_smi; /* NULL: not found; spod checks then fail saying so */
    struct lc_check *ch;
    size_t n, next;
    pthread_mutex_t mu;
    pthread_t threads[LC_MAX_JOBS];
    int nthreads;
};

static const char *sub_of(enum lc_kind k, int superpod)
{
    switch (k) {
    case LC_LINK: return "-link";
    case LC_OPTICAL: return "-optical";
    case LC_IP: return superpod ? "-vnic" : "-ip"; /* A3: the virtual NIC's address */
    case LC_NET_HEALTH: return "-net_health";
    case LC_VNIC: return "-vnic";
    case LC_TLS: return "-tls";
    case LC_HCCS_PING: return "-hccs_ping";
    default: return "-ping";
    }
}

static const char *tool_name(const struct lc_check *c)
{
    return c->source == LC_SRC_NPU_SMI ? "npu-smi" : "hccn_tool";
}

static pthread_mutex_t strerror_mu = PTHREAD_MUTEX_INITIALIZER;

static void describe_errno(char *dst, size_t n, int err)
{
    pthread_mutex_lock(&strerror_mu);
    snprintf(dst, n, "%s", strerror(err));
    pthread_mutex_unlock(&strerror_mu);
}

/* "hccn_tool", "hccn_tool exit 1" or "hccn_tool killed by signal 11" (or npu-smi ...). */
static void who(char *dst, size_t n, const struct lc_proc *r, const char *name)
{
    if (r->how == LC_P_EXITED && r->code != 0)
        snprintf(dst, n, "%s exit %d", name, r->code);
    else if (r->how == LC_P_SIGNALED)
        snprintf(dst, n, "%s killed by signal %d", name, r->code);
    else if (r->how == LC_P_UNREAPED)
        snprintf(dst, n, "%s did not exit after SIGKILL", name);
    else
        snprintf(dst, n, "%s", name);
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
    who(w, sizeof w, r, tool_name(c));
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
        snprintf(prefix, sizeof prefix, "%s killed after %.1f s, last output: ",
                 tool_name(c), timeout_ms / 1000.0);
        lc_last_line(r->out, r->len, &last);
        set_evidence(c, r, prefix, &last);
        return 1;
    }
    if (r->how == LC_P_SPAWN_FAILED) {
        char msg[128];
        describe_errno(msg, sizeof msg, r->code);
        c->state = LC_ERROR;
        snprintf(c->seen, sizeof c->seen, "%s could not be started", tool_name(c));
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

/* A decimal value of at most 10 digits (an SDID is a uint32). */
static int decimal(struct lc_span v, long *out)
{
    return v.n > 0 && v.n <= 10 && lc_parse_fixed(v.p, v.n, 0, 4294967295L, out) == 0;
}

/* npu-smi info -t spod-info: "SDID : N", "Super Pod ID : N" (hicann/shmem example README). */
static void eval_spod(const struct lc_pool *p, struct lc_check *c, const struct lc_proc *r)
{
    struct lc_span sline, sval, pline, pval;
    long sdid, pod;
    const struct lc_device *dev = NULL;
    for (int d = 0; d < p->cfg->ndevices; d++)
        if (p->cfg->devices[d].id == c->device)
            dev = &p->cfg->devices[d];
    if (!lc_find_key(r->out, r->len, "SDID", &sline, &sval)) {
        no_match(c, r, "SDID :");
        return;
    }
    if (!lc_find_key(r->out, r->len, "Super Pod ID", &pline, &pval)) {
        no_match(c, r, "Super Pod ID :");
        return;
    }
    if (!decimal(sval, &sdid) || !decimal(pval, &pod)) {
        struct lc_span *bad = decimal(sval, &sdid) ? &pline : &sline;
        c->state = LC_FAIL;
        snprintf(c->seen, sizeof c->seen, "not a number");
        tool_evidence(c, r, bad);
        return;
    }
    char pod_text[24];
    snprintf(pod_text, sizeof pod_text, "%ld", pod);
    snprintf(c->seen, sizeof c->seen, "SDID %ld, Super Pod ID %ld", sdid, pod);
    int ok = !dev || ((dev->sdid < 0 || dev->sdid == sdid) && (!dev->pod[0] || !strcmp(dev->pod, pod_text)));
    c->state = ok ? LC_PASS : LC_FAIL;
    tool_evidence(c, r, ok || (dev && dev->sdid >= 0 && dev->sdid != sdid) ? &sline : &pline);
}

/* hccn_tool -i N -tls -g: the "tls switch" value, e.g. "tls switch[0]" [U: format from
 * vLLM-Ascend's `| grep switch`]; "seen" is the value, compared across the world by the caller. */
static void eval_tls(struct lc_check *c, const struct lc_proc *r)
{
    size_t pos = 0;
    struct lc_span line;
    while (lc_next_line(r->out, r->len, &pos, &line)) {
        const char *at = memmem(line.p, line.n, "tls switch", 10);
        if (!at)
            continue;
        const char *q = at + 10, *end = line.p + line.n;
        while (q < end && (*q == ' ' || *q == ':' || *q == '[' || *q == '\t'))
            q++;
        size_t k = 0;
        while (q + k < end && k < 4 && q[k] >= '0' && q[k] <= '9')
            k++;
        if (k == 0)
            break;
        snprintf(c->seen, sizeof c->seen, "%.*s", (int)k, q);
        c->state = LC_PASS;
        lc_strip(&line);
        tool_evidence(c, r, &line);
        return;
    }
    no_match(c, r, "tls switch");
}

static void run_spod(const struct lc_pool *p, struct lc_check *c)
{
    char card[16], chip[16];
    struct lc_proc r;
    if (!p->npu_smi) {
        c->state = LC_ERROR;
        snprintf(c->seen, sizeof c->seen, "npu-smi not found");
        snprintf(c->evidence, sizeof c->evidence, "tried %s (unset), %s, and npu-smi in PATH",
                 LC_NPU_SMI_ENV, LC_NPU_SMI_DEFAULT);
        return;
    }
    snprintf(card, sizeof card, "%d", c->device / p->cfg->chips_per_card);
    snprintf(chip, sizeof chip, "%d", c->device % p->cfg->chips_per_card);
    char *argv[] = {(char *)p->npu_smi, "info", "-t", "spod-info", "-i", card, "-c", chip, NULL};
    lc_run(p->npu_smi, argv, p->cfg->timeout_ms, LC_RAW_CAP, &r);
    c->seconds = r.seconds;
    if (!process_failed(c, &r, p->cfg->timeout_ms))
        eval_spod(p, c, &r);
    c->raw = r.out;
    c->raw_len = r.len;
    c->raw_truncated = r.truncated;
}

static void run_one(const struct lc_pool *p, struct lc_check *c)
{
    char dev[16], pkt[16];
    if (c->kind == LC_SPOD) {
        run_spod(p, c);
        return;
    }
    snprintf(dev, sizeof dev, "%d", c->device);
    snprintf(pkt, sizeof pkt, "%d", p->cfg->pings);
    int vnic = p->cfg->superpod && !p->cfg->roce; /* A3 over HCCS: the vnic's address */
    char *argv[10] = {(char *)p->tool, "-i", dev, (char *)sub_of(c->kind, vnic), "-g", NULL};
    if (c->kind == LC_PING || c->kind == LC_HCCS_PING) {
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
        if (c->kind == LC_PING || c->kind == LC_HCCS_PING)
            eval_ping(c, &r, p->cfg->max_loss_centi);
        else if (c->kind == LC_TLS)
            eval_tls(c, &r);
        else
            eval_keyed(c, &r, c->kind == LC_LINK ? "link status" : c->kind == LC_OPTICAL ? "present"
                              : c->kind == LC_VNIC ? "vnic link status"
                              : vnic ? "vnic ipaddr" : "ipaddr");
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
        while (p->next < p->n && p->ch[p->next].source == LC_SRC_DCMI)
            p->next++;
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n)
            return NULL;
        run_one(p, &p->ch[i]);
    }
}

struct lc_pool *lc_pool_start(const struct lc_config *c, const char *tool, const char *npu_smi,
                              struct lc_check *ch, size_t n)
{
    struct lc_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->cfg = c;
    p->tool = tool;
    p->npu_smi = npu_smi;
    p->ch = ch;
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    int want = c->jobs < (int)n ? c->jobs : (int)n;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* a worker needs a few KiB (a 16 KiB read chunk the deepest): small stacks keep 256 cheap */
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < want && i < LC_MAX_JOBS; i++) {
        if (pthread_create(&p->threads[i], &attr, worker, p) != 0)
            break; /* fewer workers only means less parallelism */
        p->nthreads++;
    }
    pthread_attr_destroy(&attr);
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
