/* Test double for the Ascend driver's libdcmi.so, driven by the same scenario file
 * as fake_hccn_tool ($FAKE_NPU_SCENARIO; format in tests/native/README.md).
 * Build: see Makefile here (gcc -shared -fPIC -o libdcmi.so fake_dcmi.c -pthread).
 * With -DFAKE_DCMI_NO_FROM_LOGICID the library lacks
 * dcmi_get_card_id_device_id_from_logicid, like older drivers, so callers must
 * enumerate cards instead. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <unistd.h>

#include "fake_scenario.h"

#define ERR_INVALID (-8001) /* [U] real DCMI error values were not collected */

struct dcmi_ip_addr {
    union {
        unsigned char ip6[16];
        unsigned char ip4[4];
    } u_addr;
    int ip_type;
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int devs[SC_MAX_DEVS], ndevs;

static void load(void)
{
    /* $FAKE_NPU_SCENARIO, else the file "scenario" beside this library: on a testbed host the
     * checker runs with no test environment, so the host's copy finds its own scenario. */
    const char *path = getenv("FAKE_NPU_SCENARIO");
    char beside[4096];
    Dl_info info;
    if (!path && dladdr((void *)load, &info) && info.dli_fname) {
        char copy[4000];
        snprintf(copy, sizeof copy, "%s", info.dli_fname);
        snprintf(beside, sizeof beside, "%s/scenario", dirname(copy));
        path = beside;
    }
    sc_load(path);
    memcpy(devs, sc_devs, sizeof devs);
    ndevs = sc_ndevs;
}

/* Every entry point: read the scenario once, then hang if told to. */
static void ready(const char *fn)
{
    pthread_once(&once, load);
    if (sc_in_list(sc_get("dcmi_hang"), fn))
        for (;;)
            sleep(3600); /* a wedged driver call */
}

static int chips_per_card(void)
{
    int k = sc_int(sc_get("dcmi_chips_per_card"), 1);
    return k > 0 ? k : 1;
}

/* Logic id of physical id phy: dcmi_logic.PHY, else its index in devices. */
static int logic_of(int phy)
{
    for (int i = 0; i < ndevs; i++)
        if (devs[i] == phy)
            return sc_int(sc_lookup("dcmi_logic", phy, NULL), i);
    return -1;
}

static int phy_of_logic(int logic)
{
    for (int i = 0; i < ndevs; i++)
        if (logic_of(devs[i]) == logic)
            return devs[i];
    return -1;
}

static int logic_of_card_dev(int card, int dev)
{
    int k = chips_per_card(), base = sc_int(sc_get("dcmi_card_base"), 0);
    if (card < base || dev < 0 || dev >= k)
        return -1;
    return (card - base) * k + dev;
}

int dcmi_init(void)
{
    ready("dcmi_init");
    return sc_int(sc_get("dcmi_init"), 0);
}

int dcmi_get_card_list(int *card_num, int *card_list, int list_len)
{
    ready("dcmi_get_card_list");
    int k = chips_per_card(), base = sc_int(sc_get("dcmi_card_base"), 0), n = 0;
    for (int i = 0; i < ndevs; i++) {
        int card = base + logic_of(devs[i]) / k, seen = 0;
        for (int j = 0; j < n; j++)
            seen |= card_list[j] == card;
        if (!seen && n < list_len)
            card_list[n++] = card;
    }
    *card_num = n;
    return 0;
}

int dcmi_get_device_id_in_card(int card_id, int *device_id_max, int *mcu_id, int *cpu_id)
{
    ready("dcmi_get_device_id_in_card");
    int k = chips_per_card(), n = 0;
    for (int dev = 0; dev < k; dev++)
        n += phy_of_logic(logic_of_card_dev(card_id, dev)) >= 0;
    if (n == 0)
        return ERR_INVALID;
    *device_id_max = n;
    *mcu_id = -1;
    *cpu_id = -1;
    return 0;
}

int dcmi_get_device_logic_id(int *device_logic_id, int card_id, int device_id)
{
    ready("dcmi_get_device_logic_id");
    int logic = logic_of_card_dev(card_id, device_id);
    if (phy_of_logic(logic) < 0)
        return ERR_INVALID;
    *device_logic_id = logic;
    return 0;
}

int dcmi_get_device_logicid_from_phyid(unsigned int phyid, unsigned int *logicid)
{
    ready("dcmi_get_device_logicid_from_phyid");
    int logic = logic_of((int)phyid);
    if (logic < 0)
        return ERR_INVALID;
    *logicid = (unsigned)logic;
    return 0;
}

#ifndef FAKE_DCMI_NO_FROM_LOGICID
int dcmi_get_card_id_device_id_from_logicid(int *card_id, int *device_id,
                                            unsigned int device_logic_id)
{
    ready("dcmi_get_card_id_device_id_from_logicid");
    int k = chips_per_card();
    if (phy_of_logic((int)device_logic_id) < 0)
        return ERR_INVALID;
    *card_id = sc_int(sc_get("dcmi_card_base"), 0) + (int)device_logic_id / k;
    *device_id = (int)device_logic_id % k;
    return 0;
}
#endif

int dcmi_get_device_ip(int card_id, int device_id, int input_type, int port_id,
                       struct dcmi_ip_addr *ip, struct dcmi_ip_addr *mask)
{
    ready("dcmi_get_device_ip");
    int phy = phy_of_logic(logic_of_card_dev(card_id, device_id));
    /* Only the RoCE port 0 has the address hccn_tool -ip -g shows. */
    if (phy < 0 || input_type != 1 || port_id != 0)
        return ERR_INVALID;
    const char *v = sc_lookup("dcmi_ip", phy, NULL);
    char k[32];
    snprintf(k, sizeof k, "ip.%d", phy);
    v = v ? v : sc_get(k);
    if (!v || inet_pton(AF_INET, v, ip->u_addr.ip4) != 1)
        return ERR_INVALID;
    ip->ip_type = 0;
    inet_pton(AF_INET, "255.255.255.0", mask->u_addr.ip4);
    mask->ip_type = 0;
    return 0;
}

int dcmi_get_device_network_health(int card_id, int device_id, int *result)
{
    ready("dcmi_get_device_network_health");
    int phy = phy_of_logic(logic_of_card_dev(card_id, device_id));
    if (phy < 0)
        return ERR_INVALID;
    *result = sc_int(sc_lookup("net_health", phy, NULL), 0);
    return 0;
}
