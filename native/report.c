#include "report.h"

#include "jsonw.h"

const char *lc_kind_name(enum lc_kind k)
{
    static const char *const names[] = {"link", "optical", "ip", "net_health", "ping",
                                        "vnic", "spod", "tls", "hccs_ping"};
    return names[k];
}

const char *lc_state_name(enum lc_state s)
{
    static const char *const names[] = {"pass", "fail", "timeout", "error"};
    return names[s];
}

const char *lc_source_name(enum lc_source s)
{
    return s == LC_SRC_DCMI ? "dcmi" : s == LC_SRC_NPU_SMI ? "npu-smi" : "hccn_tool";
}

size_t lc_report_human(FILE *f, const char *host, const struct lc_check *ch, size_t n)
{
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct lc_check *c = &ch[i];
        if (c->state == LC_PASS)
            continue;
        failed++;
        fprintf(f, "%s device %d: %s%s%s: expected %s, seen %s (%s)\n", host, c->device,
                lc_kind_name(c->kind), c->peer ? " " : "", c->peer ? c->peer : "",
                c->expected, c->seen, c->evidence);
    }
    fprintf(f, "linkcheck: %zu checks, %zu failed\n", n, failed);
    return failed;
}

static void json_check(FILE *f, const struct lc_check *c)
{
    fprintf(f, "{\"device\":%d,\"check\":\"%s\",\"peer\":", c->device, lc_kind_name(c->kind));
    lc_json_cstr(f, c->peer);
    fprintf(f, ",\"ok\":%s,\"state\":\"%s\",\"expected\":",
            c->state == LC_PASS ? "true" : "false", lc_state_name(c->state));
    lc_json_cstr(f, c->expected);
    fputs(",\"seen\":", f);
    lc_json_cstr(f, c->seen);
    fputs(",\"evidence\":", f);
    lc_json_cstr(f, c->evidence);
    fprintf(f, ",\"source\":\"%s\",\"raw\":", lc_source_name(c->source));
    lc_json_str(f, c->raw ? c->raw : "", c->raw ? c->raw_len : 0);
    fprintf(f, ",\"raw_truncated\":%s,\"seconds\":%.3f}", c->raw_truncated ? "true" : "false",
            c->seconds);
}

size_t lc_report_json(FILE *f, const char *host, const struct lc_check *ch, size_t n)
{
    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += ch[i].state != LC_PASS;
    fputs("{\"host\":", f);
    lc_json_cstr(f, host);
    fprintf(f, ",\"ok\":%s,\"checks\":[", failed ? "false" : "true");
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        json_check(f, &ch[i]);
    }
    fputs("]}\n", f);
    return failed;
}
