/* The check list, hccn_tool discovery, and the bounded pool that runs hccn_tool. */
#ifndef LC_CHECKS_H
#define LC_CHECKS_H

#include <stddef.h>

#include "linkcheck.h"

#define LC_TOOL_ENV "LAUNCHER_HCCN_TOOL"
#define LC_TOOL_DEFAULT "/usr/local/Ascend/driver/tools/hccn_tool"
#define LC_NPU_SMI_ENV "LAUNCHER_NPU_SMI"
#define LC_NPU_SMI_DEFAULT "/usr/local/sbin/npu-smi"

/* Order: per device link, optical, ip, [net_health], [tls], then ping per peer; with
 * superpod (Atlas A3): vnic, ip (the vnic's), spod, [tls], then hccs_ping per peer; with superpod
 * and roce (an A3 world across SuperPoDs): link, ip (the NIC's), spod, [tls], then ping per peer.
 * A device never pings its own expected IP. ip (and net_health) use DCMI when with_dcmi. */
struct lc_check *lc_build_checks(const struct lc_config *c, int with_dcmi, size_t *n);
void lc_free_checks(struct lc_check *ch, size_t n);

/* 0 and the path in out, or -1 and a message naming every place tried. */
int lc_find_tool(char *out, size_t outn, char *err, size_t errn);

/* npu-smi for the A3 spod check: $LAUNCHER_NPU_SMI, the driver's path, then PATH. 0 or -1. */
int lc_find_npu_smi(char *out, size_t outn);

struct lc_pool;
struct lc_pool *lc_pool_start(const struct lc_config *c, const char *tool, const char *npu_smi,
                              struct lc_check *ch, size_t n);
void lc_pool_join(struct lc_pool *p);

#endif
