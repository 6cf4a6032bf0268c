/* Strict reader for the one JSON shape launcher-linkcheck accepts:
 * {"host": "h1", "devices": [{"id": 0, "ip": "10.0.0.1"}], "peers": ["10.0.0.2"],
 *  "pings": 3, "max_loss": 0.0, "timeout": 5}
 * Only "devices" is required. Anything else (unknown or repeated keys, other types,
 * exponents, negative numbers, trailing data) is refused with a byte offset. */
#ifndef LC_SPEC_H
#define LC_SPEC_H

#include <stddef.h>

#include "linkcheck.h"

#define LC_SPEC_MAX (1024 * 1024)

int lc_parse_spec(const char *text, size_t len, struct lc_config *c, char *err, size_t n);
/* path "-" is stdin. */
int lc_read_spec(const char *path, struct lc_config *c, char *err, size_t n);

#endif
