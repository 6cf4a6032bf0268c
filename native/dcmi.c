#include "dcmi.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parse.h"
#include "proc.h"

/* Declared from the DCMI API reference, not from vendor headers. Enums are passed
 * as int, which is how the C ABI passes them on x86_64 and aarch64. */
struct lc_dcmi_ip_addr {
    union {
        unsigned char ip6[16];
        unsigned char ip4[4];
    } u_addr;
    int ip_type; /* 0 IPv4, 1 IPv6 */
};
#define DCMI_ROCE_PORT 1

typedef int (*fn_init)(void);
typedef int (*fn_card_list)(int *card_num, int *card_list, int list_len);
typedef int (*fn_dev_in_card)(int card_id, int *device_id_max, int *mcu_id, int *cpu_id);
typedef int (*fn_logic_id)(int *logic_id, int card_id, int device_id);
typedef int (*fn_logic_from_phy)(unsigned int phyid, unsigned int *logicid);
typedef int (*fn_card_dev_from_logic)(int *card_id, int *device_id, unsigned int logic);
typedef int (*fn_get_ip)(int card_id, int device_id, int port_type, int port_id,
                         struct lc_dcmi_ip_addr *ip, struct lc_dcmi_ip_addr *mask);
typedef int (*fn_net_health)(int card_id, int device_id, int *result);

enum op { OP_INIT, OP_LOGIC_FROM_PHY, OP_CARD_DEV, OP_ENUMERATE, OP_GET_IP, OP_HEALTH };

struct dcall {
    enum op op;
    int card, dev, ret, health;
    unsigned phy, logic;
    struct lc_dcmi_ip_addr ip, mask;
};

#define MAX_CARDS 64
#define MAX_CHIPS 256
#define MAX_CALLS (LC_MAX_DEVICES * 4 + 8)

struct chip {
    int card, dev;
    unsigned logic;
};

struct lc_dcmi {
    void *lib;
    char path[512];
    int usable;
    fn_init init;
    fn_card_list card_list;
    fn_dev_in_card dev_in_card;
    fn_logic_id logic_id;
    fn_logic_from_phy logic_from_phy;
    fn_card_dev_from_logic card_dev_from_logic;
    fn_get_ip get_ip;
    fn_net_health net_health;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct dcall *job;
    int done, quit, stuck;
    const char *stuck_in;

    /* Calls live here, not on a stack: an abandoned call may still write its
     * results after its caller has given up. */
    struct dcall calls[MAX_CALLS];
    size_t ncalls;
    int enumerated;
    struct chip chips[MAX_CHIPS];
    int nchips;
};

static const char *op_name(enum op o)
{
    static const char *const names[] = {
        "dcmi_init", "dcmi_get_device_logicid_from_phyid",
        "dcmi_get_card_id_device_id_from_logicid", "dcmi_get_card_list",
        "dcmi_get_device_ip", "dcmi_get_device_network_health"};
    return names[o];
}

static void enumerate(struct lc_dcmi *d, struct dcall *c)
{
    int cards[MAX_CARDS], ncards = 0;
    c->ret = d->card_list(&ncards, cards, MAX_CARDS);
    if (c->ret != 0)
        return;
    for (int i = 0; i < ncards && i < MAX_CARDS; i++) {
        int max = 0, mcu = 0, cpu = 0;
        if (d->dev_in_card(cards[i], &max, &mcu, &cpu) != 0)
            continue;
        /* NPU chips are 0..device_id_max-1; mcu and cpu ids are not NPUs. */
        for (int dev = 0; dev < max && d->nchips < MAX_CHIPS; dev++) {
            int logic = -1;
            if (d->logic_id(&logic, cards[i], dev) != 0 || logic < 0)
                continue;
            d->chips[d->nchips++] = (struct chip){cards[i], dev, (unsigned)logic};
        }
    }
}

static void dispatch(struct lc_dcmi *d, struct dcall *c)
{
    switch (c->op) {
    case OP_INIT: c->ret = d->init(); break;
    case OP_LOGIC_FROM_PHY: c->ret = d->logic_from_phy(c->phy, &c->logic); break;
    case OP_CARD_DEV: c->ret = d->card_dev_from_logic(&c->card, &c->dev, c->logic); break;
    case OP_ENUMERATE: enumerate(d, c); break;
    case OP_GET_IP:
        c->ret = d->get_ip(c->card, c->dev, DCMI_ROCE_PORT, 0, &c->ip, &c->mask);
        break;
    case OP_HEALTH: c->ret = d->net_health(c->card, c->dev, &c->health); break;
    }
}

static void *executor(void *arg)
{
    struct lc_dcmi *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->job && !d->quit)
            pthread_cond_wait(&d->cv, &d->mu);
        if (!d->job)
            break;
        struct dcall *c = d->job;
        pthread_mutex_unlock(&d->mu);
        dispatch(d, c);
        pthread_mutex_lock(&d->mu);
        d->job = NULL;
        d->done = 1;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static struct dcall *new_call(struct lc_dcmi *d, enum op o)
{
    if (d->ncalls == MAX_CALLS)
        return NULL;
    struct dcall *c = &d->calls[d->ncalls++];
    memset(c, 0, sizeof *c);
    c->op = o;
    return c;
}

enum call_result { CALL_DONE, CALL_TIMEOUT, CALL_SKIPPED };

static enum call_result call(struct lc_dcmi *d, struct dcall *c, long timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->mu);
    if (d->stuck || !c) {
        pthread_mutex_unlock(&d->mu);
        return CALL_SKIPPED;
    }
    d->job = c;
    d->done = 0;
    pthread_cond_broadcast(&d->cv);
    while (!d->done) {
        if (pthread_cond_timedwait(&d->cv, &d->mu, &dl) == ETIMEDOUT && !d->done) {
            d->stuck = 1;
            d->stuck_in = op_name(c->op);
            pthread_mutex_unlock(&d->mu);
            return CALL_TIMEOUT;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return CALL_DONE;
}

static int start_executor(struct lc_dcmi *d)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&d->mu, NULL);
    return pthread_create(&d->thread, NULL, executor, d);
}

static void *sym(void *lib, const char *name, const char *alt)
{
    void *f = dlsym(lib, name);
    return f || !alt ? f : dlsym(lib, alt);
}

/* Resolves what we need. The logic-id -> card/device call is newer; without it we
 * enumerate cards instead. Returns the first missing symbol or NULL. */
static const char *resolve(struct lc_dcmi *d)
{
    *(void **)&d->init = sym(d->lib, "dcmi_init", NULL);
    *(void **)&d->logic_from_phy = sym(d->lib, "dcmi_get_device_logicid_from_phyid", NULL);
    *(void **)&d->get_ip = sym(d->lib, "dcmi_get_device_ip", NULL);
    *(void **)&d->net_health = sym(d->lib, "dcmi_get_device_network_health", NULL);
    *(void **)&d->card_dev_from_logic =
        sym(d->lib, "dcmi_get_card_id_device_id_from_logicid", NULL);
    *(void **)&d->card_list = sym(d->lib, "dcmi_get_card_list", "dcmi_get_card_num_list");
    *(void **)&d->dev_in_card = sym(d->lib, "dcmi_get_device_id_in_card", NULL);
    *(void **)&d->logic_id = sym(d->lib, "dcmi_get_device_logic_id", NULL);
    if (!d->init)
        return "dcmi_init";
    if (!d->logic_from_phy)
        return "dcmi_get_device_logicid_from_phyid";
    if (!d->get_ip)
        return "dcmi_get_device_ip";
    if (!d->net_health)
        return "dcmi_get_device_network_health";
    if (!d->card_dev_from_logic && !(d->card_list && d->dev_in_card && d->logic_id))
        return "dcmi_get_card_id_device_id_from_logicid (or dcmi_get_card_list, "
               "dcmi_get_device_id_in_card and dcmi_get_device_logic_id)";
    return NULL;
}

static void *load(const char *env, char *path, size_t n)
{
    static const char *const defaults[] = {"/usr/local/Ascend/driver/lib64/driver/libdcmi.so",
                                           "/usr/local/dcmi/libdcmi.so", "libdcmi.so"};
    if (env) {
        snprintf(path, n, "%s", env);
        void *h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        if (!h)
            fprintf(stderr, "launcher-linkcheck: warning: cannot load %s=%s: %s; "
                    "the ip check uses hccn_tool\n", LC_DCMI_ENV, env, dlerror());
        return h;
    }
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        void *h = dlopen(defaults[i], RTLD_NOW | RTLD_LOCAL);
        if (h) {
            snprintf(path, n, "%s", defaults[i]);
            return h;
        }
    }
    return NULL;
}

static void init_library(struct lc_dcmi *d, long init_timeout_ms)
{
    struct dcall *c = new_call(d, OP_INIT);
    enum call_result r = call(d, c, init_timeout_ms);
    if (r == CALL_DONE && c->ret == 0) {
        d->usable = 1;
        return;
    }
    if (r == CALL_TIMEOUT)
        fprintf(stderr, "launcher-linkcheck: warning: %s: dcmi_init did not return within "
                "%.1f s; the ip check uses hccn_tool\n", d->path, init_timeout_ms / 1000.0);
    else
        fprintf(stderr, "launcher-linkcheck: warning: %s: dcmi_init returned %d; "
                "the ip check uses hccn_tool\n", d->path, c->ret);
}

struct lc_dcmi *lc_dcmi_open(long init_timeout_ms)
{
    const char *env = getenv(LC_DCMI_ENV);
    if (env && (!*env || !strcmp(env, "none")))
        return NULL;
    struct lc_dcmi *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->lib = load(env, d->path, sizeof d->path);
    const char *missing = d->lib ? resolve(d) : NULL;
    if (missing)
        fprintf(stderr, "launcher-linkcheck: warning: %s lacks %s; the ip check uses "
                "hccn_tool\n", d->path, missing);
    if (!d->lib || missing || start_executor(d) != 0) {
        if (d->lib)
            dlclose(d->lib);
        free(d);
        return NULL;
    }
    init_library(d, init_timeout_ms);
    return d;
}

int lc_dcmi_usable(const struct lc_dcmi *d)
{
    return d && d->usable;
}

const char *lc_dcmi_path(const struct lc_dcmi *d)
{
    return d->path;
}

/* Outcome of one step, written into a check. */
static void settle(struct lc_check *c, enum lc_state st, const char *seen, const char *raw,
                   double t0)
{
    c->state = st;
    c->source = LC_SRC_DCMI;
    snprintf(c->seen, sizeof c->seen, "%s", seen);
    snprintf(c->evidence, sizeof c->evidence, "dcmi: \"%s\"", raw);
    free(c->raw);
    c->raw = strdup(raw);
    c->raw_len = c->raw ? strlen(c->raw) : 0;
    c->seconds = lc_now() - t0;
}

/* Turns a timeout or skip into a check result; returns 1 when it did. */
static int hung(struct lc_dcmi *d, enum call_result r, enum op o, struct lc_check *c,
                double t0)
{
    char seen[200], raw[200];
    if (r == CALL_DONE)
        return 0;
    if (r == CALL_TIMEOUT) {
        snprintf(seen, sizeof seen, "timeout: %s did not return within %.1f s", op_name(o),
                 LC_DCMI_CALL_TIMEOUT_MS / 1000.0);
        snprintf(raw, sizeof raw, "%s: no answer after %.1f s", op_name(o),
                 LC_DCMI_CALL_TIMEOUT_MS / 1000.0);
    } else {
        snprintf(seen, sizeof seen, "timeout: not run, %s hung earlier",
                 d->stuck_in ? d->stuck_in : "a DCMI call");
        snprintf(raw, sizeof raw, "%s: not called", op_name(o));
    }
    settle(c, LC_TIMEOUT, seen, raw, t0);
    return 1;
}

static int find_chip(struct lc_dcmi *d, unsigned logic, int *card, int *dev)
{
    for (int i = 0; i < d->nchips; i++)
        if (d->chips[i].logic == logic) {
            *card = d->chips[i].card;
            *dev = d->chips[i].dev;
            return 1;
        }
    return 0;
}

/* physical id -> logic id -> (card, device). On failure both checks are settled. */
static int map_device(struct lc_dcmi *d, int phy, int *card, int *dev, struct lc_check *a,
                      struct lc_check *b, double t0)
{
    char msg[200];
    struct dcall *c = new_call(d, OP_LOGIC_FROM_PHY);
    if (c)
        c->phy = (unsigned)phy;
    enum call_result r = call(d, c, LC_DCMI_CALL_TIMEOUT_MS);
    if (hung(d, r, OP_LOGIC_FROM_PHY, a, t0) + hung(d, r, OP_LOGIC_FROM_PHY, b, t0))
        return 0;
    if (c->ret != 0) {
        snprintf(msg, sizeof msg, "dcmi_get_device_logicid_from_phyid(%d) = %d", phy, c->ret);
        settle(a, LC_FAIL, "no such device in DCMI", msg, t0);
        settle(b, LC_FAIL, "no such device in DCMI", msg, t0);
        return 0;
    }
    unsigned logic = c->logic;
    enum op o = d->card_dev_from_logic ? OP_CARD_DEV : OP_ENUMERATE;
    if (o == OP_ENUMERATE && d->enumerated) {
        r = CALL_DONE;
    } else {
        c = new_call(d, o);
        if (c)
            c->logic = logic;
        r = call(d, c, LC_DCMI_CALL_TIMEOUT_MS);
        if (hung(d, r, o, a, t0) + hung(d, r, o, b, t0))
            return 0;
        d->enumerated = o == OP_ENUMERATE;
    }
    int found = o == OP_CARD_DEV ? c->ret == 0 : find_chip(d, logic, card, dev);
    if (o == OP_CARD_DEV && found) {
        *card = c->card;
        *dev = c->dev;
    }
    if (!found) {
        if (o == OP_CARD_DEV)
            snprintf(msg, sizeof msg, "%s(logic id %u) = %d (physical id %d)", op_name(o),
                     logic, c->ret, phy);
        else
            snprintf(msg, sizeof msg, "no chip with logic id %u (physical id %d) among %d "
                     "chips listed by dcmi_get_card_list", logic, phy, d->nchips);
        settle(a, LC_FAIL, "no such device in DCMI", msg, t0);
        settle(b, LC_FAIL, "no such device in DCMI", msg, t0);
    }
    return found;
}

static void check_ip(struct lc_dcmi *d, int card, int dev, struct lc_check *c, double t0)
{
    char raw[200], ip[64] = "";
    struct dcall *k = new_call(d, OP_GET_IP);
    int v6 = strchr(c->expected, ':') != NULL;
    if (k) {
        k->card = card;
        k->dev = dev;
        k->ip.ip_type = v6; /* the driver reads the wanted family from here */
    }
    enum call_result r = call(d, k, LC_DCMI_CALL_TIMEOUT_MS);
    if (hung(d, r, OP_GET_IP, c, t0))
        return;
    snprintf(raw, sizeof raw, "dcmi_get_device_ip(card %d, device %d, ROCE, port 0) = %d",
             card, dev, k->ret);
    if (k->ret != 0) {
        settle(c, LC_FAIL, "no address (DCMI call failed)", raw, t0);
        return;
    }
    inet_ntop(k->ip.ip_type == 1 ? AF_INET6 : AF_INET,
              k->ip.ip_type == 1 ? (void *)k->ip.u_addr.ip6 : (void *)k->ip.u_addr.ip4, ip,
              sizeof ip);
    size_t used = strlen(raw);
    snprintf(raw + used, sizeof raw - used, ", %s", ip);
    settle(c, lc_ip_equal(ip, strlen(ip), c->expected) ? LC_PASS : LC_FAIL, ip, raw, t0);
}

static const char *health_name(int v)
{
    static const char *const names[] = {"Success", "Socket failed", "Receive timeout",
                                        "Unreachable", "Time exceeded", "Fault", "Init",
                                        "Thread error", "Detect ip set"};
    return v >= 0 && v <= 8 ? names[v] : "unknown";
}

static void check_health(struct lc_dcmi *d, int card, int dev, struct lc_check *c, double t0)
{
    char raw[200], seen[64];
    struct dcall *k = new_call(d, OP_HEALTH);
    if (k) {
        k->card = card;
        k->dev = dev;
    }
    enum call_result r = call(d, k, LC_DCMI_CALL_TIMEOUT_MS);
    if (hung(d, r, OP_HEALTH, c, t0))
        return;
    snprintf(raw, sizeof raw, "dcmi_get_device_network_health(card %d, device %d) = %d, "
             "result %d", card, dev, k->ret, k->health);
    if (k->ret != 0) {
        settle(c, LC_FAIL, "no health (DCMI call failed)", raw, t0);
        return;
    }
    snprintf(seen, sizeof seen, "%s (%d)", health_name(k->health), k->health);
    /* Init is what a device without a netdetect address reports: healthy. */
    settle(c, k->health == 0 || k->health == 6 ? LC_PASS : LC_FAIL, seen, raw, t0);
}

void lc_dcmi_check_device(struct lc_dcmi *d, int phy_id, struct lc_check *ip_check,
                          struct lc_check *health_check)
{
    double t0 = lc_now();
    int card = -1, dev = -1;
    if (!map_device(d, phy_id, &card, &dev, ip_check, health_check, t0))
        return;
    check_ip(d, card, dev, ip_check, t0);
    check_health(d, card, dev, health_check, lc_now());
}

int lc_dcmi_close(struct lc_dcmi *d)
{
    if (!d)
        return 0;
    pthread_mutex_lock(&d->mu);
    int stuck = d->stuck;
    d->quit = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (stuck)
        return 1; /* the executor is inside the library; leave everything as is */
    pthread_join(d->thread, NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    dlclose(d->lib);
    free(d);
    return 0;
}
