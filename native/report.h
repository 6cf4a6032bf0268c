/* Human and JSON reports. */
#ifndef LC_REPORT_H
#define LC_REPORT_H

#include <stdio.h>

#include "linkcheck.h"

/* Returns the number of checks that did not pass. */
size_t lc_report_human(FILE *f, const char *host, const struct lc_check *ch, size_t n);
size_t lc_report_json(FILE *f, const char *host, const struct lc_check *ch, size_t n);

#endif
