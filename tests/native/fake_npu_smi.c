/* Test double for Ascend's npu-smi, the one command the link checker runs on Atlas A3:
 *   npu-smi info -t spod-info -i CARD -c CHIP
 * printing "SDID : N", "Super Pod Size : N", "Super Pod ID : N", "Server Index : N"
 * (hicann/shmem example README; ASCEND_REFERENCE 1.3). The die is CARD * chips_per_card + CHIP.
 * Scenario keys (FAKE_NPU_SCENARIO, shared with fake_hccn_tool): devices, chips_per_card (2),
 * sdid[.DEV] (default 104857600 + DEV), super_pod_id[.DEV] (0), server_index (0),
 * hang[.DEV] containing spod-info, raw_spod-info[.DEV] (a file printed instead), log. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_scenario.h"

static int usage(void)
{
    fprintf(stderr, "Usage: npu-smi info -t spod-info -i <card> -c <chip>\n");
    return 1;
}

static int number(const char *s)
{
    return *s && strspn(s, "0123456789") == strlen(s) ? atoi(s) : -1;
}

static void log_call(int argc, char **argv)
{
    const char *path = sc_get("log");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (!f)
        return;
    fputs("npu-smi", f);
    for (int i = 1; i < argc; i++)
        fprintf(f, " %s", argv[i]);
    fputc('\n', f);
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *path = getenv("FAKE_NPU_SCENARIO");
    if (sc_load(path) != 0) {
        fprintf(stderr, "fake_npu_smi: cannot read FAKE_NPU_SCENARIO=%s\n", path ? path : "(unset)");
        return 2;
    }
    log_call(argc, argv);
    if (argc != 8 || strcmp(argv[1], "info") || strcmp(argv[2], "-t") || strcmp(argv[3], "spod-info") ||
        strcmp(argv[4], "-i") || strcmp(argv[6], "-c"))
        return usage();
    int card = number(argv[5]), chip = number(argv[7]), chips = sc_int(sc_get("chips_per_card"), 2);
    int dev = card * chips + chip;
    if (card < 0 || chip < 0 || chip >= chips || !sc_has_device(dev)) {
        /* [U] the real wording for a missing card or chip is not documented */
        printf("Error: the card id %s or chip id %s is invalid.\n", argv[5], argv[7]);
        return 255;
    }
    if (sc_in_list(sc_lookup("hang", dev, NULL), "spod-info")) {
        for (;;)
            sleep(3600);
    }
    const char *raw = sc_lookup("raw_spod-info", dev, NULL);
    if (raw) {
        char buf[4096];
        size_t k;
        FILE *f = fopen(raw, "rb");
        if (!f)
            return 2;
        while ((k = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, k, stdout);
        fclose(f);
        return 0;
    }
    const char *sdid = sc_lookup("sdid", dev, NULL), *pod = sc_lookup("super_pod_id", dev, NULL);
    const char *index = sc_lookup("server_index", dev, NULL);
    if (sdid)
        printf("%-31s: %s\n", "SDID", sdid);
    else
        printf("%-31s: %d\n", "SDID", 104857600 + dev);
    printf("%-31s: 384\n%-31s: %s\n%-31s: %s\n", "Super Pod Size", "Super Pod ID", pod ? pod : "0",
           "Server Index", index ? index : "0");
    return 0;
}
