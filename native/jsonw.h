/* JSON string output. Tool output is arbitrary bytes; the result is always valid
 * JSON and valid UTF-8 (invalid sequences become U+FFFD). */
#ifndef LC_JSONW_H
#define LC_JSONW_H

#include <stddef.h>
#include <stdio.h>

void lc_json_str(FILE *f, const char *p, size_t n);
void lc_json_cstr(FILE *f, const char *s); /* NULL prints null */

#endif
