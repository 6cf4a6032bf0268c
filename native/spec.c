#include "spec.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "parse.h"

struct jp {
    const char *s;
    size_t n, i;
    struct lc_config *c;
    char *err;
    size_t errn;
};

static int jfail(struct jp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int jfail(struct jp *p, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errn, "spec: byte %zu: %s", p->i, msg);
    return -1;
}

/* Errors from the shared validators carry no offset; add one. */
static int vfail(struct jp *p, int rc, const char *msg)
{
    if (rc == 0)
        return 0;
    char copy[256];
    snprintf(copy, sizeof copy, "%s", msg);
    return jfail(p, "%s", copy);
}

static void ws(struct jp *p)
{
    while (p->i < p->n && p->s[p->i] && strchr(" \t\r\n", p->s[p->i]))
        p->i++;
}

static int peek(struct jp *p)
{
    ws(p);
    return p->i < p->n ? (unsigned char)p->s[p->i] : -1;
}

static int expect(struct jp *p, char ch)
{
    if (peek(p) != (unsigned char)ch)
        return jfail(p, "expected '%c'", ch);
    p->i++;
    return 0;
}

static int hex4(struct jp *p, unsigned *v)
{
    *v = 0;
    for (int k = 0; k < 4; k++, p->i++) {
        char h = p->i < p->n ? p->s[p->i] : 0;
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
              : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0)
            return jfail(p, "bad \\u escape");
        *v = *v * 16 + (unsigned)d;
    }
    return 0;
}

static int escape(struct jp *p, char *out)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char e = p->i < p->n ? p->s[p->i] : 0;
    const char *k = e ? strchr(from, e) : NULL;
    p->i++;
    if (k) {
        *out = to[k - from];
        return 0;
    }
    unsigned v;
    if (e != 'u' || hex4(p, &v))
        return e == 'u' ? -1 : jfail(p, "bad escape");
    /* Every value in this shape is ASCII (names, addresses). */
    if (v == 0 || v > 0x7f)
        return jfail(p, "only ASCII \\u escapes (0001..007f) are accepted");
    *out = (char)v;
    return 0;
}

static int string(struct jp *p, char *out, size_t cap)
{
    size_t o = 0;
    if (expect(p, '"'))
        return -1;
    for (;;) {
        if (p->i >= p->n)
            return jfail(p, "unterminated string");
        unsigned char ch = (unsigned char)p->s[p->i++];
        char c = (char)ch;
        if (ch == '"')
            break;
        if (ch < 0x20)
            return jfail(p, "control character in string");
        if (ch == '\\' && escape(p, &c))
            return -1;
        if (o + 1 >= cap)
            return jfail(p, "string longer than %zu bytes", cap - 1);
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* A JSON number token restricted to -?D+(.D+)? ; returns its span. */
static int number(struct jp *p, const char **start, size_t *len)
{
    ws(p);
    size_t b = p->i;
    if (p->i < p->n && p->s[p->i] == '-')
        return jfail(p, "negative numbers are not accepted here");
    while (p->i < p->n && p->s[p->i] && strchr("0123456789.", p->s[p->i]))
        p->i++;
    if (p->i < p->n && p->s[p->i] && strchr("eE+", p->s[p->i]))
        return jfail(p, "exponents are not accepted here");
    if (p->i == b) {
        p->i = b;
        return jfail(p, "expected a number");
    }
    if (p->i - b > 1 && p->s[b] == '0' && p->s[b + 1] != '.') {
        p->i = b;
        return jfail(p, "leading zeros are not valid JSON");
    }
    *start = p->s + b;
    *len = p->i - b;
    return 0;
}

/* Between members of an object: a ',' (the caller has already seen no '}'). */
static int next_member(struct jp *p)
{
    if (peek(p) != ',')
        return jfail(p, "expected ',' or '}'");
    p->i++;
    return 0;
}

static int device(struct jp *p)
{
    char ip[LC_IP_MAX + 8] = "", key[16], msg[256], pod[LC_POD_MAX] = "";
    const char *num = NULL, *sdid_num = NULL;
    size_t numlen = 0, sdid_len = 0;
    unsigned have = 0; /* bit 0 id, 1 ip, 2 sdid, 3 pod */
    size_t at = p->i;
    if (expect(p, '{'))
        return -1;
    while (peek(p) != '}') {
        if (have && next_member(p))
            return -1;
        if (string(p, key, sizeof key) || expect(p, ':'))
            return -1;
        int k = !strcmp(key, "id") ? 0 : !strcmp(key, "ip") ? 1 : !strcmp(key, "sdid") ? 2
              : !strcmp(key, "pod") ? 3 : -1;
        if (k < 0)
            return jfail(p, "unknown key \"%s\" in a device (allowed: id, ip, sdid, pod)", key);
        if (have & (1u << k))
            return jfail(p, "key \"%s\" repeated", key);
        int rc = k == 0 ? number(p, &num, &numlen) : k == 1 ? string(p, ip, sizeof ip)
               : k == 2 ? number(p, &sdid_num, &sdid_len) : string(p, pod, sizeof pod);
        if (rc)
            return -1;
        have |= 1u << k;
    }
    p->i++;
    long id, sdid = -1;
    size_t end = p->i;
    p->i = at;
    if ((have & 3u) != 3u)
        return jfail(p, "a device needs both \"id\" and \"ip\"");
    if (lc_parse_fixed(num, numlen, 0, 100000, &id) != 0)
        return jfail(p, "device id must be an integer 0..255");
    /* an SDID is a uint32 (HCCL parses it as an integer) */
    if ((have & 4u) && lc_parse_fixed(sdid_num, sdid_len, 0, 4294967295L, &sdid) != 0)
        return jfail(p, "sdid must be an integer 0..4294967295");
    if ((have & 8u) && !pod[0])
        return jfail(p, "pod must not be empty");
    int rc = lc_add_device(p->c, id, ip, msg, sizeof msg);
    if (rc == 0) {
        p->c->devices[p->c->ndevices - 1].sdid = sdid;
        snprintf(p->c->devices[p->c->ndevices - 1].pod, LC_POD_MAX, "%s", pod);
        p->i = end;
    }
    return vfail(p, rc, msg);
}

/* Calls item() for each element of an array; empty arrays are allowed. */
static int array(struct jp *p, int (*item)(struct jp *))
{
    if (expect(p, '['))
        return -1;
    if (peek(p) == ']') {
        p->i++;
        return 0;
    }
    for (;;) {
        if (item(p))
            return -1;
        int ch = peek(p);
        p->i++;
        if (ch == ']')
            return 0;
        if (ch != ',') {
            p->i--;
            return jfail(p, "expected ',' or ']'");
        }
    }
}

static int peer(struct jp *p)
{
    char ip[LC_IP_MAX + 8], msg[256];
    peek(p); /* skip blanks so an error points at the value */
    size_t at = p->i;
    if (string(p, ip, sizeof ip))
        return -1;
    int rc = lc_add_peer(p->c, ip, msg, sizeof msg);
    if (rc)
        p->i = at;
    return vfail(p, rc, msg);
}

static int boolean(struct jp *p, int *out)
{
    peek(p);
    if (p->n - p->i >= 4 && !memcmp(p->s + p->i, "true", 4)) {
        p->i += 4;
        *out = 1;
        return 0;
    }
    if (p->n - p->i >= 5 && !memcmp(p->s + p->i, "false", 5)) {
        p->i += 5;
        *out = 0;
        return 0;
    }
    return jfail(p, "expected true or false");
}

static int scalar(struct jp *p, const char *key)
{
    char msg[256], host[LC_HOST_MAX + 8];
    const char *num;
    size_t len;
    int rc;
    peek(p);
    size_t at = p->i;
    if (!strcmp(key, "host")) {
        if (string(p, host, sizeof host))
            return -1;
        rc = lc_set_host(p->c, host, msg, sizeof msg);
    } else if (!strcmp(key, "superpod") || !strcmp(key, "tls") || !strcmp(key, "roce")) {
        return boolean(p, !strcmp(key, "tls") ? &p->c->tls : !strcmp(key, "roce") ? &p->c->roce : &p->c->superpod);
    } else if (!strcmp(key, "chips_per_card")) {
        long v;
        if (number(p, &num, &len))
            return -1;
        if (lc_parse_fixed(num, len, 0, 16, &v) != 0 || v < 1) {
            p->i = at;
            return jfail(p, "chips_per_card must be an integer 1..16");
        }
        p->c->chips_per_card = (int)v;
        return 0;
    } else {
        if (number(p, &num, &len))
            return -1;
        rc = !strcmp(key, "pings")      ? lc_set_pings(p->c, num, len, msg, sizeof msg)
             : !strcmp(key, "max_loss") ? lc_set_max_loss(p->c, num, len, msg, sizeof msg)
                                        : lc_set_timeout(p->c, num, len, msg, sizeof msg);
    }
    if (rc)
        p->i = at;
    return vfail(p, rc, msg);
}

static const char *const keys[] = {"host", "devices", "peers", "pings", "max_loss", "timeout",
                                   "superpod", "tls", "chips_per_card", "roce"};
#define N_KEYS (sizeof keys / sizeof keys[0])

static int member(struct jp *p, unsigned *seen)
{
    char key[32];
    peek(p);
    size_t at = p->i;
    if (string(p, key, sizeof key) || expect(p, ':'))
        return -1;
    size_t k = 0;
    while (k < N_KEYS && strcmp(key, keys[k]))
        k++;
    if (k == N_KEYS) {
        p->i = at;
        return jfail(p, "unknown key \"%s\" (allowed: host, devices, peers, pings, "
                     "max_loss, timeout, superpod, tls, chips_per_card, roce)", key);
    }
    if (*seen & (1u << k)) {
        p->i = at;
        return jfail(p, "key \"%s\" repeated", key);
    }
    *seen |= 1u << k;
    if (k == 1)
        return array(p, device);
    if (k == 2)
        return array(p, peer);
    return scalar(p, key);
}

int lc_parse_spec(const char *text, size_t len, struct lc_config *c, char *err, size_t n)
{
    struct jp p = {text, len, 0, c, err, n};
    unsigned seen = 0;
    if (expect(&p, '{'))
        return -1;
    while (peek(&p) != '}') {
        if (seen && next_member(&p))
            return -1;
        if (peek(&p) != '"')
            return jfail(&p, "expected a key in double quotes");
        if (member(&p, &seen))
            return -1;
    }
    p.i++;
    if (peek(&p) != -1)
        return jfail(&p, "unexpected data after the closing '}'");
    if (c->ndevices == 0) {
        p.i = 0;
        return jfail(&p, "\"devices\" is required and must list at least one device");
    }
    return 0;
}

int lc_read_spec(const char *path, struct lc_config *c, char *err, size_t n)
{
    int is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(err, n, "spec: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(LC_SPEC_MAX + 1);
    size_t len = buf ? fread(buf, 1, LC_SPEC_MAX + 1, f) : 0;
    int rc = -1;
    if (!buf)
        snprintf(err, n, "spec: out of memory");
    else if (ferror(f))
        snprintf(err, n, "spec: read error on %s", is_stdin ? "stdin" : path);
    else if (len > LC_SPEC_MAX)
        snprintf(err, n, "spec: larger than %d bytes", LC_SPEC_MAX);
    else if (len == 0)
        snprintf(err, n, "spec: empty input (expected a JSON object)");
    else
        rc = lc_parse_spec(buf, len, c, err, n);
    free(buf);
    if (!is_stdin)
        fclose(f);
    return rc;
}
