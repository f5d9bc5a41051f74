/* deck: INI decks checked against the schema (see include/deck.h). */
#include "deck.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct deck {
    char name[256];
    char **val;   /* (deck_schema_len) value text or NULL */
    int *line;    /* line where set (0 = --set / unset) */
    losa_status err;
};

static int schema_find(const char *key)
{
    for (int i = 0; i < deck_schema_len; i++)
        if (!strcmp(deck_schema[i].key, key)) return i;
    return -1;
}

/* Check text against key k; returns 0 if fine, else fills why. */
static int check_value(const deck_key *k, const char *v, char *why, size_t n)
{
    char *end;
    switch (k->type) {
    case DECK_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end) {
            snprintf(why, n, "expected an integer, got '%s'", v);
            return 1;
        }
        if (x < k->min || x > k->max) {
            snprintf(why, n, "%lld is outside [%g, %g]", x, k->min, k->max);
            return 1;
        }
        return 0;
    }
    case DECK_FLOAT: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x)) {
            snprintf(why, n, "expected a number, got '%s'", v);
            return 1;
        }
        if (x < k->min || x > k->max) {
            snprintf(why, n, "%g is outside [%g, %g]", x, k->min, k->max);
            return 1;
        }
        return 0;
    }
    case DECK_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "1") || !strcmp(v, "0"))
            return 0;
        snprintf(why, n, "expected true or false, got '%s'", v);
        return 1;
    case DECK_CHOICE: {
        size_t lv = strlen(v);
        for (const char *c = k->choices; c && *c;) {
            const char *bar = strchr(c, '|');
            size_t lc = bar ? (size_t)(bar - c) : strlen(c);
            if (lc == lv && !strncmp(c, v, lc)) return 0;
            c = bar ? bar + 1 : NULL;
        }
        snprintf(why, n, "expected one of %s, got '%s'", k->choices, v);
        return 1;
    }
    case DECK_STRING:
        return 0;
    }
    return 0;
}

static losa_status store_value(deck *dk, const char *key, const char *value,
                               int line)
{
    int i = schema_find(key);
    char where[300];
    if (line > 0) snprintf(where, sizeof where, "%s:%d", dk->name, line);
    else snprintf(where, sizeof where, "--set %s", key);
    if (i < 0)
        return core_err(LOSA_ERR_ARG, "%s: unknown key '%s' (see input/README.md for the keys)",
                        where, key);
    /* a deck sets a key once (a repeated [section] may add keys, not redo
     * them); --set overrides on purpose */
    if (line > 0 && dk->line[i] > 0)
        return core_err(LOSA_ERR_ARG, "%s: %s: set again (first set at %s:%d); a key may "
                        "appear once in a deck (use --set to override)", where, key,
                        dk->name, dk->line[i]);
    char why[256];
    if (check_value(&deck_schema[i], value, why, sizeof why))
        return core_err(LOSA_ERR_ARG, "%s: %s: %s (%s)", where, key, why, deck_schema[i].help);
    free(dk->val[i]);
    dk->val[i] = strdup(value);
    dk->line[i] = line;
    return LOSA_OK;
}

/* The deck text as an fgets-style stream for the INI reader, so that the
 * handler knows the line it is called for (the system inih does not pass
 * it).  A CR before LF is dropped (the reader strips it anyway). */
struct parse_ctx {
    deck *dk;
    const char *p, *end; /* rest of the text */
    int line;            /* line of the chunk last returned */
    int next_line;
};

static char *deck_read_line(char *str, int num, void *stream)
{
    struct parse_ctx *pc = stream;
    if (pc->p >= pc->end) return NULL;
    pc->line = pc->next_line;
    int k = 0;
    while (pc->p < pc->end && k < num - 1) {
        char c = *pc->p++;
        if (c == '\r' && pc->p < pc->end && *pc->p == '\n') continue;
        str[k++] = c;
        if (c == '\n') {
            pc->next_line++;
            break;
        }
    }
    str[k] = 0;
    return str;
}

/* Longest deck line the INI reader takes (it cuts lines at 199 bytes). */
#define DECK_MAX_LINE 198

static int on_kv(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *pc = user;
    if (pc->dk->err != LOSA_OK) return 0;
    char key[256], val[1024];
    snprintf(key, sizeof key, "%s.%s", section, name);
    if (strlen(value) >= sizeof val) {
        pc->dk->err = core_err(LOSA_ERR_ARG, "%s:%d: %s: value longer than %zu characters",
                               pc->dk->name, pc->line, key, sizeof val - 1);
        return 0;
    }
    /* '#' or ';' starts a comment at the start of the value or after
     * whitespace (units in decks), as it would when the deck is dumped */
    snprintf(val, sizeof val, "%s", value);
    for (char *h = val; (h = strpbrk(h, "#;")) != NULL; h++)
        if (h == val || isspace((unsigned char)h[-1])) {
            *h = 0;
            break;
        }
    size_t n = strlen(val);
    while (n > 0 && isspace((unsigned char)val[n - 1])) val[--n] = 0;
    value = val;
    /* the resolved deck is dumped as "key = value": it must fit a line too */
    if (strlen(name) + 3 + n > DECK_MAX_LINE) {
        pc->dk->err = core_err(LOSA_ERR_ARG, "%s:%d: %s: value of %zu characters: the line "
                               "'%s = ...' would be longer than %d characters, the limit of a "
                               "deck line", pc->dk->name, pc->line, key, n, name, DECK_MAX_LINE);
        return 0;
    }
    losa_status s = store_value(pc->dk, key, value, pc->line);
    if (s != LOSA_OK) {
        pc->dk->err = s;
        return 0;
    }
    return 1;
}

static deck *deck_new(const char *name)
{
    deck *dk = calloc(1, sizeof *dk);
    snprintf(dk->name, sizeof dk->name, "%s", name);
    dk->val = calloc(deck_schema_len, sizeof(char *));
    dk->line = calloc(deck_schema_len, sizeof(int));
    return dk;
}

/* The system INI reader (inih) cuts lines at 199 characters and reports the
 * rest as a syntax error on some line; say so clearly instead, and hold
 * --set values to the same limit so that every resolved deck can be read
 * back.  It also stops at a NUL byte (the rest of the deck silently
 * ignored) and takes an indented line after "key = value" as more of that
 * value (the earlier text silently replaced): both are refused here, with
 * the line, before the reader sees the text. */
static losa_status deck_scan_lines(const char *name, const char *text, size_t len)
{
    int line = 1, key_line = 0; /* key_line: last "key = value" in this section */
    for (size_t at = 0; at < len; line++) {
        const char *l = text + at;
        const char *nl = memchr(l, '\n', len - at);
        size_t n = nl ? (size_t)(nl - l) : len - at;
        at += n + (nl != NULL);
        const char *nul = memchr(l, '\0', n);
        if (nul)
            return core_err(LOSA_ERR_ARG, "%s:%d: NUL byte at column %d (a deck is text: "
                            "'[section]' and 'key = value' lines)", name, line,
                            (int)(nul - l) + 1);
        size_t m = n > 0 && l[n - 1] == '\r' ? n - 1 : n;
        if (m > DECK_MAX_LINE)
            return core_err(LOSA_ERR_ARG, "%s:%d: line longer than %d characters (the limit "
                            "of the INI reader)", name, line, DECK_MAX_LINE);
        size_t b = line == 1 && m >= 3 && !memcmp(l, "\xEF\xBB\xBF", 3) ? 3 : 0; /* BOM */
        size_t i = b;
        while (i < m && isspace((unsigned char)l[i])) i++;
        if (i == m || l[i] == '#' || l[i] == ';') continue; /* blank or comment */
        if (i > b && key_line > 0)
            return core_err(LOSA_ERR_ARG, "%s:%d: indented line would continue the value "
                            "set on line %d (multi-line values are not supported: remove the "
                            "indentation)", name, line, key_line);
        if (l[i] == '[') key_line = 0;
        else if (memchr(l + i, '=', m - i) || memchr(l + i, ':', m - i)) key_line = line;
    }
    return LOSA_OK;
}

losa_status deck_parse(deck **out, const char *name, const char *text)
{
    return deck_parse_n(out, name, text, strlen(text));
}

losa_status deck_parse_n(deck **out, const char *name, const char *text, size_t len)
{
    *out = NULL;
    losa_status s = deck_scan_lines(name, text, len);
    if (s != LOSA_OK) return s;
    deck *dk = deck_new(name);
    struct parse_ctx pc = {dk, text, text + len, 0, 1};
    int rc = ini_parse_stream(deck_read_line, &pc, on_kv, &pc);
    if (rc != 0) {
        s = dk->err;
        deck_free(&dk);
        if (s != LOSA_OK) return s; /* the handler's message names the line */
        if (rc < 0) return core_err(LOSA_ERR_IO, "%s: cannot read deck", name);
        return core_err(LOSA_ERR_ARG,
                        "%s:%d: syntax error (expected '[section]' or 'key = value')",
                        name, rc);
    }
    *out = dk;
    return LOSA_OK;
}

losa_status deck_set(deck *dk, const char *assignment)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return core_err(LOSA_ERR_ARG, "--set %s: expected section.key=value", assignment);
    char key[256];
    size_t n = (size_t)(eq - assignment);
    if (n >= sizeof key) n = sizeof key - 1;
    memcpy(key, assignment, n);
    key[n] = 0;
    while (n > 0 && isspace((unsigned char)key[n - 1])) key[--n] = 0;
    const char *v = eq + 1;
    while (isspace((unsigned char)*v)) v++;
    if (!strchr(key, '.'))
        return core_err(LOSA_ERR_ARG, "--set %s: expected section.key=value", assignment);
    /* The value must survive deck_dump -> deck_parse unchanged (the resolved
     * deck is echoed into run files): one line, no comment markers, no
     * trailing blanks (trimmed, as the INI reader does). */
    size_t nv = strlen(v);
    while (nv > 0 && isspace((unsigned char)v[nv - 1])) nv--;
    for (size_t i = 0; i < nv; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f)
            return core_err(LOSA_ERR_ARG, "--set %s: control character 0x%02x in the value "
                            "(expected one line of text)", key, c);
        if ((c == '#' || c == ';') && (i == 0 || isspace((unsigned char)v[i - 1])))
            return core_err(LOSA_ERR_ARG, "--set %s: '%c' after a blank starts a comment in "
                            "a deck; not allowed in a value", key, c);
    }
    const char *dot = strchr(key, '.');
    if (strlen(dot + 1) + 3 + nv > DECK_MAX_LINE)
        return core_err(LOSA_ERR_ARG, "--set %s: value of %zu characters: the line '%s = ...' "
                        "would be longer than %d characters, the limit of a deck line", key,
                        nv, dot + 1, DECK_MAX_LINE);
    char *val = malloc(nv + 1);
    if (!val) return core_err(LOSA_ERR_NOMEM, "--set %s: out of memory", key);
    memcpy(val, v, nv);
    val[nv] = 0;
    losa_status s = store_value(dk, key, val, 0);
    free(val);
    return s;
}

static int in_sections(const char *key, const char *sections)
{
    if (!sections) return 1;
    size_t ls = strcspn(key, ".");
    for (const char *c = sections; *c;) {
        size_t lc = strcspn(c, ",");
        if (lc == ls && !strncmp(c, key, ls)) return 1;
        c += lc;
        if (*c == ',') c++;
    }
    return 0;
}

losa_status deck_check_required(const deck *dk, const char *sections)
{
    for (int i = 0; i < deck_schema_len; i++) {
        const deck_key *k = &deck_schema[i];
        if (k->def || dk->val[i] || !in_sections(k->key, sections)) continue;
        const char *dot = strchr(k->key, '.');
        return core_err(LOSA_ERR_ARG, "%s: missing required key '%s' in section [%.*s] (%s)",
                        dk->name, dot + 1, (int)(dot - k->key), k->key, k->help);
    }
    return LOSA_OK;
}

void deck_free(deck **dk)
{
    if (!dk || !*dk) return;
    for (int i = 0; i < deck_schema_len; i++) free((*dk)->val[i]);
    free((*dk)->val);
    free((*dk)->line);
    free(*dk);
    *dk = NULL;
}

static const char *get(const deck *dk, const char *key, int *idx)
{
    int i = schema_find(key);
    if (i < 0) core_fatal(__FILE__, __LINE__, key); /* a key missing from the schema is a bug */
    *idx = i;
    return dk->val[i] ? dk->val[i] : deck_schema[i].def ? deck_schema[i].def : "";
}

int64_t deck_int(const deck *dk, const char *key)
{
    int i;
    const char *v = get(dk, key, &i);
    LOSA_CHECK(deck_schema[i].type == DECK_INT);
    return strtoll(v, NULL, 10);
}

double deck_float(const deck *dk, const char *key)
{
    int i;
    const char *v = get(dk, key, &i);
    LOSA_CHECK(deck_schema[i].type == DECK_FLOAT || deck_schema[i].type == DECK_INT);
    return strtod(v, NULL);
}

const char *deck_str(const deck *dk, const char *key)
{
    int i;
    return get(dk, key, &i);
}

int deck_bool(const deck *dk, const char *key)
{
    int i;
    const char *v = get(dk, key, &i);
    LOSA_CHECK(deck_schema[i].type == DECK_BOOL);
    return !strcmp(v, "true") || !strcmp(v, "1");
}

int deck_is_set(const deck *dk, const char *key)
{
    int i = schema_find(key);
    return i >= 0 && dk->val[i] != NULL;
}

int deck_key_line(const deck *dk, const char *key)
{
    int i = schema_find(key);
    if (i < 0 || !dk->val[i]) return -1;
    return dk->line[i];
}

const char *deck_name(const deck *dk) { return dk->name; }

const deck_key *deck_schema_key(const char *key)
{
    int i = schema_find(key);
    return i < 0 ? NULL : &deck_schema[i];
}

char *deck_dump(const deck *dk, const char *sections, int ref_defaults)
{
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    LOSA_CHECK(out != NULL);
    out[0] = 0;
    char cur[64] = "";
    for (int i = 0; i < deck_schema_len; i++) {
        const deck_key *k = &deck_schema[i];
        if (!in_sections(k->key, sections)) continue;
        const char *v = dk->val[i] ? dk->val[i] : ref_defaults && k->ref ? k->ref : k->def;
        if (!v) continue;
        size_t ls = strcspn(k->key, ".");
        int newsec = strncmp(cur, k->key, ls) || cur[ls];
        if (newsec) snprintf(cur, sizeof cur, "%.*s", (int)ls, k->key);
        /* values are unbounded (--set): size the text before writing it */
        size_t need = (newsec ? strlen(cur) + 4 : 0) + strlen(k->key) + strlen(v) + 8;
        while (len + need + 1 > cap) {
            out = realloc(out, cap *= 2);
            LOSA_CHECK(out != NULL);
        }
        if (newsec) len += (size_t)snprintf(out + len, cap - len, "%s[%s]\n", len ? "\n" : "", cur);
        len += (size_t)snprintf(out + len, cap - len, "%s = %s\n", k->key + ls + 1, v);
    }
    return out;
}

int deck_float_list(const char *s, double *x, int n)
{
    int k = 0;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || k >= n) return -1;
        x[k++] = v;
        s = end;
        while (isspace((unsigned char)*s)) s++;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return k;
}
