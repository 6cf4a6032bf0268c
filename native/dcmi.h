/* Optional libdcmi path: the IP check and a network-health check without spawning
 * hccn_tool. Every DCMI call runs on one executor thread and is abandoned after a
 * deadline, because a wedged driver must not wedge the preflight gate. */
#ifndef LC_DCMI_H
#define LC_DCMI_H

#include "linkcheck.h"

#define LC_DCMI_ENV "LAUNCHER_DCMI_LIB"
#define LC_DCMI_CALL_TIMEOUT_MS 1000

struct lc_dcmi;

/* NULL when no library loads (or LAUNCHER_DCMI_LIB=none). Otherwise a handle;
 * lc_dcmi_usable() says whether dcmi_init succeeded. Warnings go to stderr. */
struct lc_dcmi *lc_dcmi_open(long init_timeout_ms);
int lc_dcmi_usable(const struct lc_dcmi *d);
const char *lc_dcmi_path(const struct lc_dcmi *d);

/* Fills the ip and net_health checks of one physical device id. */
void lc_dcmi_check_device(struct lc_dcmi *d, int phy_id, struct lc_check *ip_check,
                          struct lc_check *health_check);

/* Returns 1 when a call is still hung: the caller must then leave with _exit(),
 * since the library cannot be unloaded under a running call. */
int lc_dcmi_close(struct lc_dcmi *d);

#endif
