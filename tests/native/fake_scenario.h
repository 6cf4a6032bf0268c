/* Scenario file reader shared by the two NPU-boundary fakes (fake_hccn_tool.c,
 * fake_dcmi.c). Format: "key=value" lines, '#' comments, blanks ignored; see
 * README.md. Lookups go from the most specific key to the least: key.DEV.PEER,
 * key.DEV, key. Header-only so each fake stays one translation unit. */
#ifndef FAKE_SCENARIO_H
#define FAKE_SCENARIO_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SC_MAX_KEYS 1024
#define SC_MAX_DEVS 64

static char sc_keys[SC_MAX_KEYS][128], sc_vals[SC_MAX_KEYS][512];
static int sc_nkeys;
static int sc_devs[SC_MAX_DEVS], sc_ndevs;

static inline char *sc_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && strchr(" \t\r\n", s[n - 1]))
        s[--n] = '\0';
    return s;
}

static inline const char *sc_get(const char *key)
{
    for (int i = sc_nkeys - 1; i >= 0; i--) /* a later line wins */
        if (!strcmp(sc_keys[i], key))
            return sc_vals[i];
    return NULL;
}

static inline const char *sc_lookup(const char *key, int dev, const char *peer)
{
    char k[256];
    const char *v = NULL;
    if (peer) {
        snprintf(k, sizeof k, "%s.%d.%s", key, dev, peer);
        v = sc_get(k);
    }
    if (!v) {
        snprintf(k, sizeof k, "%s.%d", key, dev);
        v = sc_get(k);
    }
    return v ? v : sc_get(key);
}

static inline int sc_int(const char *v, int dflt)
{
    return v ? atoi(v) : dflt;
}

/* 1 when item is one of the comma-separated names in list. */
static inline int sc_in_list(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p && *p;) {
        if (!strncmp(p, item, n) && (p[n] == ',' || p[n] == '\0'))
            return 1;
        p = strchr(p, ',');
        p = p ? p + 1 : NULL;
    }
    return 0;
}

static inline int sc_has_device(int dev)
{
    for (int i = 0; i < sc_ndevs; i++)
        if (sc_devs[i] == dev)
            return 1;
    return 0;
}

/* Returns 0, or -1 when the file cannot be read. */
static inline int sc_load(const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    char line[1024];
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f) && sc_nkeys < SC_MAX_KEYS) {
        char *l = sc_trim(line), *eq = strchr(l, '=');
        if (!*l || *l == '#' || !eq)
            continue;
        *eq = '\0';
        snprintf(sc_keys[sc_nkeys], sizeof sc_keys[0], "%.127s", sc_trim(l));
        snprintf(sc_vals[sc_nkeys], sizeof sc_vals[0], "%.511s", sc_trim(eq + 1));
        sc_nkeys++;
    }
    fclose(f);
    for (const char *p = sc_get("devices"); p && *p && sc_ndevs < SC_MAX_DEVS;) {
        sc_devs[sc_ndevs++] = atoi(p);
        p = strchr(p, ',');
        p = p ? p + 1 : NULL;
    }
    return 0;
}

#endif
