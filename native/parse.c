#include "parse.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

void lc_strip(struct lc_span *s)
{
    while (s->n && is_space((unsigned char)s->p[0])) {
        s->p++;
        s->n--;
    }
    while (s->n && is_space((unsigned char)s->p[s->n - 1]))
        s->n--;
}

int lc_next_line(const char *buf, size_t len, size_t *pos, struct lc_span *line)
{
    if (*pos >= len)
        return 0;
    const char *start = buf + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    size_t n = nl ? (size_t)(nl - start) : len - *pos;
    *pos += n + (nl ? 1 : 0);
    line->p = start;
    line->n = n;
    return 1;
}

int lc_span_eq(struct lc_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

int lc_find_key(const char *buf, size_t len, const char *key,
                struct lc_span *line, struct lc_span *value)
{
    size_t pos = 0;
    struct lc_span l;
    while (lc_next_line(buf, len, &pos, &l)) {
        const char *colon = memchr(l.p, ':', l.n);
        if (!colon)
            continue;
        struct lc_span k = {l.p, (size_t)(colon - l.p)};
        lc_strip(&k);
        if (!lc_span_eq(k, key))
            continue;
        value->p = colon + 1;
        value->n = l.n - (size_t)(colon - l.p) - 1;
        lc_strip(value);
        *line = l;
        lc_strip(line);
        return 1;
    }
    return 0;
}

/* Reads up to 9 digits at *p (so the value fits a long everywhere). */
static int read_count(const char **p, const char *end, long *out)
{
    const char *s = *p;
    long v = 0;
    while (*p < end && is_digit((unsigned char)**p) && *p - s < 9) {
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    if (*p == s || (*p < end && is_digit((unsigned char)**p)))
        return 0;
    *out = v;
    return 1;
}

static int expect_lit(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

static int parse_ping_line(struct lc_span l, struct lc_ping *o)
{
    static const char tx_lit[] = " packets transmitted, ";
    const char *m = memmem(l.p, l.n, tx_lit, sizeof tx_lit - 1);
    if (!m)
        return 0;
    const char *d = m;
    while (d > l.p && is_digit((unsigned char)d[-1]))
        d--;
    const char *end = l.p + l.n;
    const char *p = d;
    if (!read_count(&p, m, &o->tx) || p != m)
        return 0;
    p = m + sizeof tx_lit - 1;
    if (!read_count(&p, end, &o->rx) || !expect_lit(&p, end, " received, "))
        return 0;
    const char *num = p;
    while (p < end && (is_digit((unsigned char)*p) || *p == '.'))
        p++;
    long printed;
    if (lc_parse_fixed(num, (size_t)(p - num), 2, 10000, &printed) != 0)
        return 0;
    if (!expect_lit(&p, end, "% packet loss"))
        return 0;
    if (o->rx > o->tx)
        return 0;
    /* Trust neither number alone: a garbled line must not hide packet loss. */
    long computed = o->tx ? ((o->tx - o->rx) * 10000 + o->tx / 2) / o->tx : 10000;
    o->loss_centi = printed > computed ? printed : computed;
    o->line = l;
    lc_strip(&o->line);
    return 1;
}

int lc_parse_ping(const char *buf, size_t len, struct lc_ping *out)
{
    size_t pos = 0;
    struct lc_span l;
    struct lc_ping tmp;
    int found = 0;
    while (lc_next_line(buf, len, &pos, &l)) {
        if (parse_ping_line(l, &tmp)) {
            *out = tmp;
            found = 1;
        }
    }
    return found;
}

static int pick_line(const char *buf, size_t len, struct lc_span *line, int last)
{
    size_t pos = 0;
    struct lc_span l;
    int found = 0;
    while (lc_next_line(buf, len, &pos, &l)) {
        lc_strip(&l);
        if (l.n == 0)
            continue;
        *line = l;
        found = 1;
        if (!last)
            break;
    }
    return found;
}

int lc_first_line(const char *buf, size_t len, struct lc_span *line)
{
    return pick_line(buf, len, line, 0);
}

int lc_last_line(const char *buf, size_t len, struct lc_span *line)
{
    return pick_line(buf, len, line, 1);
}

int lc_parse_fixed(const char *p, size_t n, int scale, long max, long *out)
{
    size_t i = 0;
    long whole = 0, frac = 0;
    int fdigits = 0, round_up = 0;
    while (i < n && is_digit((unsigned char)p[i])) {
        if (whole > 100000000L)
            return -2;
        whole = whole * 10 + (p[i++] - '0');
    }
    if (i == 0)
        return -1;
    if (i < n && p[i] == '.' && scale > 0) {
        size_t start = ++i;
        for (; i < n && is_digit((unsigned char)p[i]); i++) {
            if (fdigits < scale) {
                frac = frac * 10 + (p[i] - '0');
                fdigits++;
            } else if ((size_t)fdigits == i - start) {
                round_up = p[i] >= '5';
            }
        }
        if (i == start)
            return -1;
    }
    if (i != n)
        return -1;
    for (; fdigits < scale; fdigits++)
        frac *= 10;
    long mult = 1;
    for (int k = 0; k < scale; k++)
        mult *= 10;
    long v = whole * mult + frac + round_up;
    if (v > max)
        return -2;
    *out = v;
    return 0;
}

void lc_sanitize(char *dst, size_t cap, const char *p, size_t n)
{
    size_t o = 0;
    if (cap == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char tmp[8];
        if (c == '"' || c == '\\')
            snprintf(tmp, sizeof tmp, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            snprintf(tmp, sizeof tmp, "%c", c);
        else
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
        size_t t = strlen(tmp);
        if (o + t + 4 > cap) { /* keep room for "..." and NUL */
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(dst + o, tmp, t);
        o += t;
    }
    dst[o] = '\0';
}

static int to_addr(const char *s, unsigned char buf[16], int *family)
{
    if (inet_pton(AF_INET, s, buf) == 1) {
        *family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, s, buf) == 1) {
        *family = AF_INET6;
        return 1;
    }
    return 0;
}

int lc_ip_valid(const char *s)
{
    unsigned char b[16];
    int f;
    return to_addr(s, b, &f);
}

int lc_ip_equal(const char *a, size_t alen, const char *b)
{
    char tmp[64];
    unsigned char x[16], y[16];
    int fx, fy;
    if (alen >= sizeof tmp || memchr(a, '\0', alen))
        return 0;
    memcpy(tmp, a, alen);
    tmp[alen] = '\0';
    if (!to_addr(tmp, x, &fx) || !to_addr(b, y, &fy) || fx != fy)
        return 0;
    return memcmp(x, y, fx == AF_INET ? 4 : 16) == 0;
}
