/* Pure parsers for hccn_tool output and small text helpers. They take (pointer,
 * length) and never rely on NUL termination, because tool output may contain NULs. */
#ifndef LC_PARSE_H
#define LC_PARSE_H

#include <stddef.h>

struct lc_span {
    const char *p;
    size_t n;
};

struct lc_ping {
    long tx, rx;
    long loss_centi;     /* worst of the printed loss and the one computed from tx/rx */
    struct lc_span line; /* the summary line, stripped */
};

void lc_strip(struct lc_span *s);
int lc_next_line(const char *buf, size_t len, size_t *pos, struct lc_span *line);
int lc_span_eq(struct lc_span s, const char *lit);

/* Finds the first line "KEY : VALUE" (split at the first ':', both sides stripped). */
int lc_find_key(const char *buf, size_t len, const char *key,
                struct lc_span *line, struct lc_span *value);

/* Last line matching "T packets transmitted, R received, L% packet loss". */
int lc_parse_ping(const char *buf, size_t len, struct lc_ping *out);

/* First and last lines with a non-blank character. */
int lc_first_line(const char *buf, size_t len, struct lc_span *line);
int lc_last_line(const char *buf, size_t len, struct lc_span *line);

/* Decimal "D+(.D+)?" scaled by 10^scale, rounded half up. 0 ok, -1 syntax, -2 > max. */
int lc_parse_fixed(const char *p, size_t n, int scale, long max, long *out);

/* Printable ASCII copy: quotes and backslashes escaped, other bytes as \xNN,
 * cut with "..." when dst is too small. */
void lc_sanitize(char *dst, size_t cap, const char *p, size_t n);

/* 1 when both are the same IPv4/IPv6 address (textual forms may differ). */
int lc_ip_equal(const char *a, size_t alen, const char *b);
int lc_ip_valid(const char *s);

#endif
