/* Shared types of launcher-linkcheck: the run configuration and one check's result. */
#ifndef LINKCHECK_H
#define LINKCHECK_H

#include <stddef.h>

#define LC_MAX_DEVICES 64
#define LC_MAX_PEERS 512
#define LC_IP_MAX 64          /* longer than INET6_ADDRSTRLEN (46) */
#define LC_HOST_MAX 256
#define LC_RAW_CAP (64 * 1024) /* per tool invocation; the rest is drained and dropped */
#define LC_DEFAULT_PINGS 3     /* hccn_tool's own default count */
#define LC_DEFAULT_TIMEOUT_MS 10000
#define LC_MAX_JOBS 256       /* concurrent tool runs: every check of a host at once, up to this */
#define LC_DEFAULT_JOBS LC_MAX_JOBS
#define LC_EXIT_OK 0
#define LC_EXIT_FAILED 1
#define LC_EXIT_USAGE 2

#define LC_POD_MAX 64

struct lc_device {
    int id;
    char ip[LC_IP_MAX];
    long sdid;             /* expected super_device_id (A3), -1: not given (discovery reads it) */
    char pod[LC_POD_MAX];  /* expected Super Pod ID (A3), "": not given */
};

struct lc_config {
    char host[LC_HOST_MAX];
    struct lc_device devices[LC_MAX_DEVICES];
    int ndevices;
    char peers[LC_MAX_PEERS][LC_IP_MAX];
    int npeers;
    int pings;
    long max_loss_centi; /* percent * 100, so 33.33% compares exactly */
    long timeout_ms;
    int jobs;
    int json;
    int superpod;          /* Atlas A3: vnic instead of link/optical/ip, spod-info, -hccs_ping */
    int roce;              /* A3 world across SuperPoDs: the die's NIC (link, -ip) and -ping, not its vnic */
    int tls;               /* read each device's TLS switch (compared across a world by the caller) */
    int chips_per_card;    /* A3: npu-smi's -i card -c chip from a device id; default 2 */
};

enum lc_kind { LC_LINK, LC_OPTICAL, LC_IP, LC_NET_HEALTH, LC_PING, LC_VNIC, LC_SPOD, LC_TLS,
               LC_HCCS_PING };
enum lc_state { LC_PASS, LC_FAIL, LC_TIMEOUT, LC_ERROR };
enum lc_source { LC_SRC_HCCN, LC_SRC_DCMI, LC_SRC_NPU_SMI };

struct lc_check {
    int device;
    enum lc_kind kind;
    const char *peer;      /* into lc_config.peers; NULL unless ping */
    enum lc_source source;
    enum lc_state state;
    char expected[80];
    char seen[200];
    char evidence[320];    /* the tool's own words, one sanitized line */
    char *raw;             /* malloc'd stdout+stderr (or DCMI call log) */
    size_t raw_len;
    int raw_truncated;
    double seconds;
};

const char *lc_kind_name(enum lc_kind k);
const char *lc_state_name(enum lc_state s);
const char *lc_source_name(enum lc_source s);

#endif
