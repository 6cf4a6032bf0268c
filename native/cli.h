/* Command line and configuration validation (shared with the JSON spec reader). */
#ifndef LC_CLI_H
#define LC_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "linkcheck.h"

enum lc_cli_result { LC_CLI_RUN, LC_CLI_HELP, LC_CLI_ERROR };

void lc_config_defaults(struct lc_config *c);
int lc_add_device(struct lc_config *c, long id, const char *ip, char *err, size_t n);
int lc_add_peer(struct lc_config *c, const char *ip, char *err, size_t n);
int lc_set_host(struct lc_config *c, const char *host, char *err, size_t n);
int lc_set_pings(struct lc_config *c, const char *s, size_t len, char *err, size_t n);
int lc_set_max_loss(struct lc_config *c, const char *s, size_t len, char *err, size_t n);
int lc_set_timeout(struct lc_config *c, const char *s, size_t len, char *err, size_t n);

/* On LC_CLI_RUN, *spec_path is the --spec argument or NULL. */
enum lc_cli_result lc_parse_cli(int argc, char **argv, struct lc_config *c,
                                const char **spec_path, char *err, size_t n);
void lc_usage(FILE *f);

#endif
