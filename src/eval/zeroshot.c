/* Zero-shot multiple-choice evaluation, lm-evaluation-harness style (see
 * include/eval.h for the scoring rule and input/tasks/README.md for the
 * task file keys). */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"
#include "eval.h"
#include "kernels.h"

/* ---- a growing byte string ---- */
typedef struct {
    char *p;
    size_t n, cap;
} zs_buf;

static void zs_buf_add(zs_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->n + n + 1 > cap) cap *= 2;
        b->p = realloc(b->p, cap);
        LOSA_CHECK(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void zs_buf_addc(zs_buf *b, char c) { zs_buf_add(b, &c, 1); }
/* The string (never NULL), ownership to the caller. */
static char *zs_buf_take(zs_buf *b)
{
    if (!b->p) zs_buf_add(b, "", 0);
    char *p = b->p;
    memset(b, 0, sizeof *b);
    return p;
}

static char *zs_strdup(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    LOSA_CHECK(p);
    memcpy(p, s, n + 1);
    return p;
}

/* Python's str.isspace for ASCII bytes. */
static int zs_isspace(unsigned char c)
{
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f);
}

/* ---- TSV with csv-module quoting ---- */
void eval_table_free(eval_table *tab)
{
    if (!tab) return;
    if (tab->cells)
        for (int64_t i = 0; i < (int64_t)(tab->n_rows + 1) * tab->n_cols; i++) free(tab->cells[i]);
    free(tab->cells);
    memset(tab, 0, sizeof *tab);
}

losa_status eval_tsv_parse(eval_table *tab, const char *text, size_t len,
                           const char *what)
{
    memset(tab, 0, sizeof *tab);
    size_t pos = 0, cap = 0, n_cells = 0;
    char **cells = NULL;
    int line = 1, records = 0;
    while (pos < len) {
        int rec_line = line, nf = 0, any_quoted = 0;
        size_t first = n_cells;
        for (;;) {
            zs_buf f = {0};
            if (text[pos] == '"') {
                any_quoted = 1;
                pos++;
                for (;;) {
                    if (pos >= len) {
                        free(f.p);
                        for (size_t i = 0; i < n_cells; i++) free(cells[i]);
                        free(cells);
                        return core_err(LOSA_ERR_FORMAT,
                                        "%s: line %d: quoted field never closed", what, rec_line);
                    }
                    char c = text[pos];
                    if (c == '"') {
                        if (pos + 1 < len && text[pos + 1] == '"') {
                            zs_buf_addc(&f, '"');
                            pos += 2;
                            continue;
                        }
                        pos++;
                        break;
                    }
                    if (c == '\n') line++;
                    zs_buf_addc(&f, c);
                    pos++;
                }
            }
            /* unquoted text (or text after a closing quote, kept as csv does) */
            while (pos < len && text[pos] != '\t' && text[pos] != '\n' &&
                   !(text[pos] == '\r' && pos + 1 < len && text[pos + 1] == '\n'))
                zs_buf_addc(&f, text[pos++]);
            if (n_cells == cap) {
                cap = cap ? 2 * cap : 64;
                cells = realloc(cells, cap * sizeof *cells);
                LOSA_CHECK(cells);
            }
            cells[n_cells++] = zs_buf_take(&f);
            nf++;
            if (pos < len && text[pos] == '\t') {
                pos++;
                continue;
            }
            if (pos < len && text[pos] == '\r') pos++;
            if (pos < len && text[pos] == '\n') pos++;
            line++;
            break;
        }
        if (nf == 1 && !any_quoted && cells[first][0] == 0) { /* blank line */
            free(cells[--n_cells]);
            continue;
        }
        if (records == 0) tab->n_cols = nf;
        else if (nf != tab->n_cols) {
            for (size_t i = 0; i < n_cells; i++) free(cells[i]);
            free(cells);
            int hc = tab->n_cols;
            tab->n_cols = 0;
            return core_err(LOSA_ERR_FORMAT, "%s: line %d: %d fields, the header has %d",
                            what, rec_line, nf, hc);
        }
        records++;
    }
    if (records == 0) {
        free(cells);
        return core_err(LOSA_ERR_FORMAT, "%s: no header row", what);
    }
    tab->cells = cells;
    tab->n_rows = records - 1;
    return LOSA_OK;
}

/* ---- HellaSwag preprocessing (lm-eval's preprocess / _process_doc) ---- */
char *eval_hellaswag_preprocess(const char *text)
{
    size_t a = 0, b = strlen(text);
    while (a < b && zs_isspace((unsigned char)text[a])) a++;
    while (b > a && zs_isspace((unsigned char)text[b - 1])) b--;
    zs_buf s1 = {0}, s2 = {0}, s3 = {0};
    /* " [title]" -> ". " */
    for (size_t i = a; i < b;) {
        if (b - i >= 8 && !memcmp(text + i, " [title]", 8)) {
            zs_buf_add(&s1, ". ", 2);
            i += 8;
        } else zs_buf_addc(&s1, text[i++]);
    }
    char *t1 = zs_buf_take(&s1);
    /* re.sub("\\[.*?\\]", "", t): '[' up to the nearest ']' on the same line */
    for (size_t i = 0; t1[i];) {
        if (t1[i] == '[') {
            size_t j = i + 1;
            while (t1[j] && t1[j] != ']' && t1[j] != '\n') j++;
            if (t1[j] == ']') {
                i = j + 1;
                continue;
            }
        }
        zs_buf_addc(&s2, t1[i++]);
    }
    free(t1);
    char *t2 = zs_buf_take(&s2);
    /* str.replace("  ", " "): non-overlapping, left to right */
    for (size_t i = 0; t2[i];) {
        if (t2[i] == ' ' && t2[i + 1] == ' ') {
            zs_buf_addc(&s3, ' ');
            i += 2;
        } else zs_buf_addc(&s3, t2[i++]);
    }
    free(t2);
    return zs_buf_take(&s3);
}

char *eval_capitalize(const char *text)
{
    char *s = zs_strdup(text);
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 128) s[i] = (char)(i == 0 ? toupper(c) : tolower(c));
    }
    return s;
}

/* ---- task file ---- */
typedef struct {
    const char *file;
    char name[64];
    char data[1024];
    char format[16];       /* jsonl | tsv */
    char preprocess[16];   /* none | hellaswag */
    char mode[16];         /* mc | partial */
    char *context;         /* template */
    char *choice;          /* mc: template of a choice's text, {choice} */
    char *continuation;    /* partial: template of the shared continuation */
    char *delim;           /* target_delimiter */
    char *choices;         /* mc: fixed choice list "a|b" */
    char *strip_prefix;    /* removed from the start of field strip_field */
    char choices_field[64], gold_field[64], options_field[64], strip_field[64];
    char err[512];
} zs_spec;

static void zs_spec_free(zs_spec *sp)
{
    free(sp->context);
    free(sp->choice);
    free(sp->continuation);
    free(sp->delim);
    free(sp->choices);
    free(sp->strip_prefix);
}

/* Task file value: surrounding double quotes dropped (keeps edge spaces);
 * escapes \n \t \\ \" . */
static char *zs_unescape(const char *v)
{
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    zs_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '\\' && i + 1 < n) {
            char c = v[++i];
            zs_buf_addc(&b, c == 'n' ? '\n' : c == 't' ? '\t' : c);
        } else zs_buf_addc(&b, v[i]);
    }
    return zs_buf_take(&b);
}

static int zs_set_str(char *dst, size_t cap, const char *v, zs_spec *sp, const char *key)
{
    char *u = zs_unescape(v);
    size_t n = strlen(u);
    if (n >= cap) {
        snprintf(sp->err, sizeof sp->err, "%s: at most %zu bytes", key, cap - 1);
        free(u);
        return 0;
    }
    memcpy(dst, u, n + 1);
    free(u);
    return 1;
}

static int zs_ini_handler(void *user, const char *section, const char *key,
                          const char *value)
{
    zs_spec *sp = user;
    if (strcmp(section, "task")) {
        snprintf(sp->err, sizeof sp->err, "section [%s]: expected [task]", section);
        return 0;
    }
    char **dyn = !strcmp(key, "context") ? &sp->context
                 : !strcmp(key, "choice") ? &sp->choice
                 : !strcmp(key, "continuation") ? &sp->continuation
                 : !strcmp(key, "target_delimiter") ? &sp->delim
                 : !strcmp(key, "choices") ? &sp->choices
                 : !strcmp(key, "strip_prefix") ? &sp->strip_prefix : NULL;
    if (dyn) {
        free(*dyn);
        *dyn = zs_unescape(value);
        return 1;
    }
#define ZS_KEY(k, field)                                                      \
    if (!strcmp(key, k)) return zs_set_str(sp->field, sizeof sp->field, value, sp, key)
    ZS_KEY("name", name);
    ZS_KEY("data", data);
    ZS_KEY("format", format);
    ZS_KEY("preprocess", preprocess);
    ZS_KEY("mode", mode);
    ZS_KEY("choices_field", choices_field);
    ZS_KEY("gold_field", gold_field);
    ZS_KEY("options_field", options_field);
    ZS_KEY("strip_field", strip_field);
#undef ZS_KEY
    snprintf(sp->err, sizeof sp->err,
             "unknown key '%s' (expected name, data, format, preprocess, mode, context, "
             "choice, continuation, target_delimiter, choices, choices_field, gold_field, "
             "options_field, strip_prefix, strip_field)", key);
    return 0;
}

static losa_status zs_spec_parse(zs_spec *sp, const char *file, const char *text)
{
    memset(sp, 0, sizeof *sp);
    sp->file = file;
    strcpy(sp->format, "jsonl");
    strcpy(sp->preprocess, "none");
    strcpy(sp->mode, "mc");
    strcpy(sp->gold_field, "gold");
    int rc = ini_parse_string(text, zs_ini_handler, sp);
    if (rc != 0)
        return core_err(LOSA_ERR_FORMAT, "%s: line %d: %s", file, rc,
                        sp->err[0] ? sp->err : "not an INI line (key = value)");
    if (!sp->data[0]) return core_err(LOSA_ERR_FORMAT, "%s: key 'data' (data file) is required", file);
    if (!sp->context) return core_err(LOSA_ERR_FORMAT, "%s: key 'context' (template) is required", file);
    if (strcmp(sp->format, "jsonl") && strcmp(sp->format, "tsv"))
        return core_err(LOSA_ERR_FORMAT, "%s: format '%s': expected jsonl or tsv", file, sp->format);
    if (strcmp(sp->preprocess, "none") && strcmp(sp->preprocess, "hellaswag"))
        return core_err(LOSA_ERR_FORMAT, "%s: preprocess '%s': expected none or hellaswag", file,
                        sp->preprocess);
    if (!strcmp(sp->mode, "mc")) {
        if (!sp->choices_field[0] && !sp->choices)
            return core_err(LOSA_ERR_FORMAT, "%s: mode mc needs 'choices_field' or 'choices'", file);
        if (!sp->choice) sp->choice = zs_strdup("{choice}");
    } else if (!strcmp(sp->mode, "partial")) {
        if (!sp->options_field[0] || !sp->continuation)
            return core_err(LOSA_ERR_FORMAT, "%s: mode partial needs 'options_field' and 'continuation'",
                            file);
    } else return core_err(LOSA_ERR_FORMAT, "%s: mode '%s': expected mc or partial", file, sp->mode);
    if (!sp->delim) sp->delim = zs_strdup(" ");
    return LOSA_OK;
}

/* ---- records ---- */

/* Field value as text (strings as is, integers as %d, other numbers %.17g). */
static losa_status zs_field_text(const zs_spec *sp, const cJSON *rec, const char *name,
                                 int item, zs_buf *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(rec, name);
    if (cJSON_IsString(f)) {
        const char *v = f->valuestring;
        if (sp->strip_prefix && !strcmp(name, sp->strip_field)) {
            size_t np = strlen(sp->strip_prefix);
            if (!strncmp(v, sp->strip_prefix, np)) v += np;
        }
        zs_buf_add(out, v, strlen(v));
        return LOSA_OK;
    }
    if (cJSON_IsNumber(f)) {
        char tmp[40];
        double x = f->valuedouble;
        if (x == floor(x) && fabs(x) < 1e15) snprintf(tmp, sizeof tmp, "%lld", (long long)x);
        else snprintf(tmp, sizeof tmp, "%.17g", x);
        zs_buf_add(out, tmp, strlen(tmp));
        return LOSA_OK;
    }
    return core_err(LOSA_ERR_FORMAT, "%s: item %d: field '%s' (used by a template) is missing "
                    "or not a string/number", sp->file, item, name);
}

/* Expand {field} placeholders; {var} takes var_val; {{ and }} are braces. */
static losa_status zs_expand(const zs_spec *sp, const char *tmpl, const cJSON *rec,
                             const char *var, const char *var_val, int item, char **out)
{
    zs_buf b = {0};
    for (const char *p = tmpl; *p;) {
        if (p[0] == '{' && p[1] == '{') { zs_buf_addc(&b, '{'); p += 2; continue; }
        if (p[0] == '}' && p[1] == '}') { zs_buf_addc(&b, '}'); p += 2; continue; }
        if (*p != '{') { zs_buf_addc(&b, *p++); continue; }
        const char *e = strchr(p, '}');
        if (!e || e - p - 1 <= 0 || e - p - 1 >= 64) {
            free(b.p);
            return core_err(LOSA_ERR_FORMAT, "%s: template '%s': unterminated or empty {field}",
                            sp->file, tmpl);
        }
        char name[64];
        memcpy(name, p + 1, e - p - 1);
        name[e - p - 1] = 0;
        if (var && !strcmp(name, var)) zs_buf_add(&b, var_val, strlen(var_val));
        else {
            losa_status s = zs_field_text(sp, rec, name, item, &b);
            if (s != LOSA_OK) {
                free(b.p);
                return s;
            }
        }
        p = e + 1;
    }
    *out = zs_buf_take(&b);
    return LOSA_OK;
}

static void zs_item_free(eval_item *it)
{
    for (int c = 0; c < it->n_choices; c++) {
        if (it->context) free(it->context[c]);
        if (it->cont) free(it->cont[c]);
    }
    free(it->context);
    free(it->cont);
    free(it->norm_bytes);
    memset(it, 0, sizeof *it);
}

/* HellaSwag: add "query" and "choices" built as lm-eval's _process_doc. */
static losa_status zs_hellaswag_doc(const zs_spec *sp, cJSON *rec, int item)
{
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(rec, "activity_label"),
                *ca = cJSON_GetObjectItemCaseSensitive(rec, "ctx_a"),
                *cb = cJSON_GetObjectItemCaseSensitive(rec, "ctx_b"),
                *en = cJSON_GetObjectItemCaseSensitive(rec, "endings");
    if (!cJSON_IsString(al) || !cJSON_IsString(ca) || !cJSON_IsString(cb) || !cJSON_IsArray(en))
        return core_err(LOSA_ERR_FORMAT, "%s: item %d: hellaswag needs string activity_label, "
                        "ctx_a, ctx_b and an array endings", sp->file, item);
    zs_buf q = {0};
    char *cap = eval_capitalize(cb->valuestring);
    zs_buf_add(&q, al->valuestring, strlen(al->valuestring));
    zs_buf_add(&q, ": ", 2);
    zs_buf_add(&q, ca->valuestring, strlen(ca->valuestring));
    zs_buf_addc(&q, ' ');
    zs_buf_add(&q, cap, strlen(cap));
    free(cap);
    char *raw = zs_buf_take(&q), *query = eval_hellaswag_preprocess(raw);
    free(raw);
    cJSON *choices = cJSON_CreateArray();
    const cJSON *e;
    cJSON_ArrayForEach(e, en)
    {
        if (!cJSON_IsString(e)) {
            cJSON_Delete(choices);
            free(query);
            return core_err(LOSA_ERR_FORMAT, "%s: item %d: endings must be strings", sp->file, item);
        }
        char *p = eval_hellaswag_preprocess(e->valuestring);
        cJSON_AddItemToArray(choices, cJSON_CreateString(p));
        free(p);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "query");
    cJSON_DeleteItemFromObjectCaseSensitive(rec, "choices");
    cJSON_AddItemToObject(rec, "query", cJSON_CreateString(query));
    cJSON_AddItemToObject(rec, "choices", choices);
    free(query);
    return LOSA_OK;
}

static losa_status zs_gold(const zs_spec *sp, const cJSON *rec, int item, int n_choices, int *gold)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(rec, sp->gold_field);
    long v = -1;
    if (cJSON_IsNumber(g) && g->valuedouble == floor(g->valuedouble)) v = (long)g->valuedouble;
    else if (cJSON_IsString(g)) {
        char *end;
        v = strtol(g->valuestring, &end, 10);
        if (end == g->valuestring || *end) v = -1;
    }
    if (v < 0 || v >= n_choices)
        return core_err(LOSA_ERR_FORMAT, "%s: item %d: gold field '%s' must be an integer in "
                        "[0, %d)", sp->file, item, sp->gold_field, n_choices);
    *gold = (int)v;
    return LOSA_OK;
}

static losa_status zs_item_build(const zs_spec *sp, cJSON *rec, int item, eval_item *it)
{
    memset(it, 0, sizeof *it);
    losa_status s = LOSA_OK;
    if (!strcmp(sp->preprocess, "hellaswag") && (s = zs_hellaswag_doc(sp, rec, item)) != LOSA_OK)
        return s;
    /* the choice strings */
    int C = 0;
    char **opts = NULL;
    if (!strcmp(sp->mode, "mc") && sp->choices) {
        char *list = zs_strdup(sp->choices), *save = NULL;
        for (char *t = strtok_r(list, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
            opts = realloc(opts, (C + 1) * sizeof *opts);
            opts[C++] = zs_strdup(t);
        }
        free(list);
    } else {
        const char *field = !strcmp(sp->mode, "mc") ? sp->choices_field : sp->options_field;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(rec, field), *e;
        if (!cJSON_IsArray(arr))
            return core_err(LOSA_ERR_FORMAT, "%s: item %d: field '%s' must be an array of strings",
                            sp->file, item, field);
        cJSON_ArrayForEach(e, arr)
        {
            if (!cJSON_IsString(e)) {
                for (int c = 0; c < C; c++) free(opts[c]);
                free(opts);
                return core_err(LOSA_ERR_FORMAT, "%s: item %d: field '%s' must hold strings",
                                sp->file, item, field);
            }
            opts = realloc(opts, (C + 1) * sizeof *opts);
            opts[C++] = zs_strdup(e->valuestring);
        }
    }
    if (C < 2) s = core_err(LOSA_ERR_FORMAT, "%s: item %d: %d choices, need >= 2", sp->file, item, C);
    if (s == LOSA_OK) s = zs_gold(sp, rec, item, C, &it->gold);
    if (s == LOSA_OK) {
        it->n_choices = C;
        it->context = calloc(C, sizeof(char *));
        it->cont = calloc(C, sizeof(char *));
        it->norm_bytes = calloc(C, sizeof(int));
        LOSA_CHECK(it->context && it->cont && it->norm_bytes);
    }
    char *shared = NULL; /* mc: the context; partial: the continuation */
    if (s == LOSA_OK)
        s = !strcmp(sp->mode, "mc") ? zs_expand(sp, sp->context, rec, NULL, NULL, item, &shared)
                                    : zs_expand(sp, sp->continuation, rec, NULL, NULL, item, &shared);
    for (int c = 0; s == LOSA_OK && c < C; c++) {
        zs_buf cont = {0};
        zs_buf_add(&cont, sp->delim, strlen(sp->delim));
        if (!strcmp(sp->mode, "mc")) {
            char *text = NULL;
            s = zs_expand(sp, sp->choice, rec, "choice", opts[c], item, &text);
            if (s == LOSA_OK) {
                zs_buf_add(&cont, text, strlen(text));
                it->norm_bytes[c] = (int)strlen(text);
                it->context[c] = zs_strdup(shared);
            }
            free(text);
        } else {
            s = zs_expand(sp, sp->context, rec, "option", opts[c], item, &it->context[c]);
            zs_buf_add(&cont, shared, strlen(shared));
            it->norm_bytes[c] = (int)strlen(opts[c]);
        }
        it->cont[c] = zs_buf_take(&cont);
    }
    free(shared);
    for (int c = 0; c < C; c++) free(opts[c]);
    free(opts);
    if (s != LOSA_OK) zs_item_free(it);
    return s;
}

void eval_task_free(eval_task *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_items; i++) zs_item_free(&t->items[i]);
    free(t->items);
    memset(t, 0, sizeof *t);
}

static void zs_task_push(eval_task *t, const eval_item *it)
{
    t->items = realloc(t->items, (t->n_items + 1) * sizeof *t->items);
    LOSA_CHECK(t->items);
    t->items[t->n_items++] = *it;
}

static void zs_name_from_path(char *dst, size_t cap, const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 4 && !strcmp(b + n - 4, ".ini")) n -= 4;
    if (n >= cap) n = cap - 1;
    memcpy(dst, b, n);
    dst[n] = 0;
}

losa_status eval_task_parse(eval_task *t, const char *ini_name,
                            const char *ini_text, const char *data_name,
                            const char *data, size_t data_len, int limit)
{
    memset(t, 0, sizeof *t);
    snprintf(t->path, sizeof t->path, "%s", ini_name);
    zs_spec sp;
    losa_status s = zs_spec_parse(&sp, ini_name, ini_text);
    if (s != LOSA_OK) {
        zs_spec_free(&sp);
        return s;
    }
    if (sp.name[0]) snprintf(t->name, sizeof t->name, "%s", sp.name);
    else zs_name_from_path(t->name, sizeof t->name, ini_name);
    if (!strcmp(sp.format, "jsonl")) {
        size_t pos = 0;
        int line = 0;
        while (s == LOSA_OK && pos < data_len && (limit <= 0 || t->n_items < limit)) {
            size_t e = pos;
            while (e < data_len && data[e] != '\n') e++;
            line++;
            size_t a = pos;
            while (a < e && zs_isspace((unsigned char)data[a])) a++;
            if (a < e) {
                cJSON *rec = cJSON_ParseWithLength(data + a, e - a);
                if (!cJSON_IsObject(rec))
                    s = core_err(LOSA_ERR_FORMAT, "%s: line %d: not a JSON object", data_name, line);
                eval_item it;
                if (s == LOSA_OK && (s = zs_item_build(&sp, rec, line, &it)) == LOSA_OK)
                    zs_task_push(t, &it);
                cJSON_Delete(rec);
            }
            pos = e + 1;
        }
    } else {
        eval_table tab;
        s = eval_tsv_parse(&tab, data, data_len, data_name);
        for (int r = 0; s == LOSA_OK && r < tab.n_rows && (limit <= 0 || t->n_items < limit); r++) {
            cJSON *rec = cJSON_CreateObject();
            for (int c = 0; c < tab.n_cols; c++)
                cJSON_AddItemToObject(rec, tab.cells[c],
                                      cJSON_CreateString(tab.cells[(int64_t)(r + 1) * tab.n_cols + c]));
            eval_item it;
            if ((s = zs_item_build(&sp, rec, r + 1, &it)) == LOSA_OK) zs_task_push(t, &it);
            cJSON_Delete(rec);
        }
        eval_table_free(&tab);
    }
    if (s == LOSA_OK && t->n_items == 0)
        s = core_err(LOSA_ERR_FORMAT, "%s: no items in %s", ini_name, data_name);
    zs_spec_free(&sp);
    if (s != LOSA_OK) eval_task_free(t);
    return s;
}


/* The 'data' key of a task file, read without parsing the rest. */
static int zs_data_key(void *user, const char *section, const char *key, const char *value)
{
    (void)section;
    if (!strcmp(key, "data")) {
        char *u = zs_unescape(value);
        snprintf(user, 1024, "%s", u);
        free(u);
    }
    return 1;
}

losa_status eval_task_load(dist_ctx *d, eval_task *t, const char *ini_path,
                           const char *data_dir, int limit)
{
    memset(t, 0, sizeof *t);
    char *ini = NULL, *data = NULL;
    size_t n_ini = 0, n_data = 0;
    losa_status s = dist_read_file(d, ini_path, &ini, &n_ini);
    if (s != LOSA_OK) return s;
    char rel[1024] = "", path[2048];
    ini_parse_string(ini, zs_data_key, rel);
    if (!rel[0]) s = core_err(LOSA_ERR_FORMAT, "%s: key 'data' (data file) is required", ini_path);
    s = dist_agree(d, s);
    if (s == LOSA_OK) {
        if (rel[0] == '/' || !data_dir || !data_dir[0]) snprintf(path, sizeof path, "%s", rel);
        else snprintf(path, sizeof path, "%s/%s", data_dir, rel);
        s = dist_read_file(d, path, &data, &n_data);
    }
    if (s == LOSA_OK) s = eval_task_parse(t, ini_path, ini, path, data, n_data, limit);
    free(ini);
    free(data);
    /* every rank parsed the same bytes; keep the contract anyway */
    s = dist_agree(d, s);
    if (s != LOSA_OK) eval_task_free(t);
    return s;
}

/* ---- requests ---- */
void eval_requests_free(eval_request *req, int n)
{
    if (!req) return;
    for (int i = 0; i < n; i++) free(req[i].tokens);
    free(req);
}

losa_status eval_task_requests(const eval_task *t, const tok_tokenizer *tok,
                               int max_seq_len, eval_request **req, int *n_req)
{
    int n = 0;
    for (int i = 0; i < t->n_items; i++) n += t->items[i].n_choices;
    eval_request *r = calloc(n, sizeof *r);
    LOSA_CHECK(r);
    losa_status s = LOSA_OK;
    int k = 0;
    for (int i = 0; s == LOSA_OK && i < t->n_items; i++) {
        const eval_item *it = &t->items[i];
        for (int c = 0; s == LOSA_OK && c < it->n_choices; c++, k++) {
            const char *ctx = it->context[c];
            size_t nc = strlen(ctx), ns = 0;
            while (ns < nc && zs_isspace((unsigned char)ctx[nc - 1 - ns])) ns++;
            size_t nctx = nc - ns; /* trailing spaces move to the continuation */
            zs_buf whole = {0};
            zs_buf_add(&whole, ctx, nc);
            zs_buf_add(&whole, it->cont[c], strlen(it->cont[c]));
            int *ce = NULL, *we = NULL;
            int64_t nce = 0, nwe = 0;
            s = tok_encode(tok, ctx, nctx, 1, 0, &ce, &nce);
            if (s == LOSA_OK) s = tok_encode(tok, whole.p, whole.n, 1, 0, &we, &nwe);
            free(whole.p);
            if (s == LOSA_OK) {
                int64_t ncont = nwe - nce;
                const int *cp = ce; /* the context tokens */
                if (ncont <= 0) { /* the continuation merged into the context */
                    cp = we;
                    nce = nwe - 1;
                    ncont = 1;
                }
                int64_t total = nce + ncont, keep = total;
                if (keep > (int64_t)max_seq_len + 1) keep = (int64_t)max_seq_len + 1;
                r[k].n = (int)keep;
                r[k].n_cont = (int)(ncont < keep - 1 ? ncont : keep - 1);
                r[k].tokens = malloc(sizeof(int) * keep);
                LOSA_CHECK(r[k].tokens);
                /* sequence = ce[0:nce] + we[nce_orig..]; cut from the left */
                for (int64_t j = 0; j < keep; j++) {
                    int64_t g = total - keep + j; /* index in the full sequence */
                    r[k].tokens[j] = g < nce ? cp[g] : we[nwe - ncont + (g - nce)];
                }
            }
            free(ce);
            free(we);
        }
    }
    if (s != LOSA_OK) {
        eval_requests_free(r, n);
        return s;
    }
    *req = r;
    *n_req = n;
    return LOSA_OK;
}

/* ---- scoring through the pipeline ---- */
typedef struct {
    int n, idx;
} zs_order;

static int zs_order_cmp(const void *a, const void *b)
{
    const zs_order *x = a, *y = b;
    if (x->n != y->n) return x->n > y->n ? -1 : 1;
    return x->idx - y->idx;
}

losa_status eval_loglik(dist_ctx *d, const model_stage *s, const eval_request *req,
                        int n_req, int batch_tokens, double *ll)
{
    memset(ll, 0, sizeof(double) * (size_t)n_req);
    if (n_req == 0) return LOSA_OK;
    int Tcap = 1, V = s->cfg.vocab_size;
    for (int i = 0; i < n_req; i++) {
        if (req[i].n < 2 || req[i].n_cont < 1 || req[i].n_cont > req[i].n - 1)
            return core_err(LOSA_ERR_INTERNAL, "zero-shot: request %d has %d tokens, %d scored",
                            i, req[i].n, req[i].n_cont);
        if (req[i].n - 1 > Tcap) Tcap = req[i].n - 1;
    }
    if (Tcap > s->cfg.max_seq_len)
        return core_err(LOSA_ERR_ARG, "zero-shot: a request of %d tokens exceeds max_seq_len %d",
                        Tcap, s->cfg.max_seq_len);
    int Bcap = batch_tokens / Tcap;
    if (Bcap < 1) Bcap = 1;
    if (Bcap > 64) Bcap = 64;
    if (Bcap > n_req) Bcap = n_req;
    zs_order *ord = malloc(sizeof *ord * n_req);
    LOSA_CHECK(ord);
    for (int i = 0; i < n_req; i++) ord[i] = (zs_order){req[i].n, i};
    qsort(ord, n_req, sizeof *ord, zs_order_cmp);
    model_acts a;
    losa_status st = model_acts_build(&a, s, Bcap, Tcap, 0);
    if (st != LOSA_OK) {
        free(ord);
        return st;
    }
    int *tok = malloc(sizeof(int) * (size_t)Bcap * Tcap); /* (B,T) */
    LOSA_CHECK(tok);
    int dp = dist_n_replicas(d), rep = dist_replica(d), nb = (n_req + Bcap - 1) / Bcap;
    int show = s->has_embed && rep == 0;
    core_progress p;
    if (show) core_progress_start(&p, "zero-shot requests", "tok", n_req);
    int64_t done_tok = 0;
    for (int bi = rep; bi < nb; bi += dp) {
        int i0 = bi * Bcap, bc = n_req - i0 < Bcap ? n_req - i0 : Bcap;
        int T = ord[i0].n - 1; /* longest of the batch (sorted) */
        for (int b = 0; b < bc; b++) {
            const eval_request *r = &req[ord[i0 + b].idx];
            int nin = r->n - 1;
            memcpy(tok + (size_t)b * T, r->tokens, sizeof(int) * nin);
            for (int t = nin; t < T; t++) tok[(size_t)b * T + t] = 0; /* right pad */
        }
        model_pipeline_forward(d, &a, s, tok, bc, T, bi); /* seq: the batch */
        if (s->has_head) {
            for (int b = 0; b < bc; b++) {
                const eval_request *r = &req[ord[i0 + b].idx];
                int nin = r->n - 1;
                double sum = 0;
                for (int j = nin - r->n_cont; j < nin; j++)
                    sum -= kern_nll_row(a.logits + ((int64_t)b * T + j) * V, r->tokens[j + 1], V);
                ll[ord[i0 + b].idx] = sum;
            }
        }
        if (show) { /* this replica's share, scaled to the whole */
            done_tok += (int64_t)bc * T;
            int64_t done = (int64_t)(bi + dp) * Bcap;
            core_progress_update(&p, done > n_req ? n_req : done, done_tok * dp, NULL);
        }
    }
    if (show) core_progress_end(&p, done_tok * dp);
    /* exactly one rank (a last stage) holds each request's value */
    dist_sum_doubles(d, ll, n_req);
    free(tok);
    free(ord);
    model_acts_free(&a);
    for (int i = 0; i < n_req; i++)
        if (!isfinite(ll[i]))
            return core_err(LOSA_ERR_NUMERIC, "zero-shot: log-likelihood of request %d is %g", i, ll[i]);
    return LOSA_OK;
}

void eval_task_result_free(eval_task_result *r)
{
    if (!r) return;
    free(r->ll);
    r->ll = NULL;
}

void eval_mc_score(const double *ll, const eval_task *t, eval_task_result *r)
{
    int n = t->n_items, k = 0;
    double hit = 0, hit_norm = 0;
    for (int i = 0; i < n; i++) {
        const eval_item *it = &t->items[i];
        int best = 0, best_norm = 0;
        double bv = -INFINITY, bn = -INFINITY;
        for (int c = 0; c < it->n_choices; c++) {
            double v = ll[k + c], vn = v / (it->norm_bytes[c] > 0 ? it->norm_bytes[c] : 1);
            if (v > bv) { bv = v; best = c; }
            if (vn > bn) { bn = vn; best_norm = c; }
        }
        hit += best == it->gold;
        hit_norm += best_norm == it->gold;
        k += it->n_choices;
    }
    snprintf(r->name, sizeof r->name, "%s", t->name);
    r->n = n;
    r->acc = n ? hit / n : 0;
    r->acc_norm = n ? hit_norm / n : 0;
    r->acc_stderr = n > 1 ? sqrt(r->acc * (1 - r->acc) / (n - 1)) : 0;
    r->acc_norm_stderr = n > 1 ? sqrt(r->acc_norm * (1 - r->acc_norm) / (n - 1)) : 0;
}

losa_status eval_task_run(dist_ctx *d, const model_stage *s, const tok_tokenizer *tok,
                          const eval_task *t, int batch_tokens, eval_task_result *r)
{
    memset(r, 0, sizeof *r);
    double t0 = core_time();
    eval_request *req = NULL;
    int n_req = 0;
    losa_status st = eval_task_requests(t, tok, s->cfg.max_seq_len, &req, &n_req);
    st = dist_agree(d, st);
    if (st != LOSA_OK) return st;
    double *ll = malloc(sizeof(double) * (n_req ? n_req : 1));
    LOSA_CHECK(ll);
    st = eval_loglik(d, s, req, n_req, batch_tokens, ll);
    eval_requests_free(req, n_req);
    if (st != LOSA_OK) {
        free(ll);
        return st;
    }
    eval_mc_score(ll, t, r);
    r->ll = ll;
    r->n_requests = n_req;
    r->seconds = core_time() - t0;
    return LOSA_OK;
}

/* ---- losa eval --zeroshot ---- */

/* Directory of the executable's parent (the repo when run as build/losa). */
static int zs_exe_root(char *buf, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *sl = strrchr(exe, '/');
        if (!sl) return 0;
        *sl = 0;
    }
    snprintf(buf, cap, "%s", exe[0] ? exe : "/");
    return 1;
}

/* out = a + b (truncated to cap). */
static void zs_join(char *out, size_t cap, const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > cap - 1) na = cap - 1;
    if (nb > cap - 1 - na) nb = cap - 1 - na;
    memmove(out, a, na);
    memcpy(out + na, b, nb);
    out[na + nb] = 0;
}

static void zs_resolve_task(const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (strchr(name, '/') || (n > 4 && !strcmp(name + n - 4, ".ini"))) {
        zs_join(out, cap, name, "");
        return;
    }
    char root[PATH_MAX] = "", file[PATH_MAX], cand[3][PATH_MAX];
    int nc = 0;
    zs_join(file, sizeof file, name, ".ini");
    const char *env = getenv("LOSA_TASKS");
    if (env && env[0]) {
        zs_join(cand[nc], sizeof cand[0], env, "/");
        zs_join(cand[nc], sizeof cand[0], cand[nc], file);
        nc++;
    }
    if (zs_exe_root(root, sizeof root)) {
        zs_join(cand[nc], sizeof cand[0], root, "/input/tasks/");
        zs_join(cand[nc], sizeof cand[0], cand[nc], file);
        nc++;
    }
    zs_join(cand[nc++], sizeof cand[0], "input/tasks/", file);
    for (int i = 0; i < nc; i++)
        if (access(cand[i], R_OK) == 0) {
            zs_join(out, cap, cand[i], "");
            return;
        }
    zs_join(out, cap, cand[nc - 1], ""); /* the error will name it */
}

static void zs_resolve_data_dir(char *out, size_t cap)
{
    const char *env = getenv("LOSA_DATA");
    char root[PATH_MAX];
    if (env && env[0]) zs_join(out, cap, env, "");
    else if (zs_exe_root(root, sizeof root)) {
        zs_join(out, cap, root, "/../shared/data");
        if (access(out, R_OK) != 0) zs_join(out, cap, "../shared/data", "");
    } else zs_join(out, cap, "../shared/data", "");
}

/* Debugging aid ($LOSA_ZS_DUMP=FILE): rank 0 appends every request as one
 * JSON line {task, item, choice, context, continuation, norm_bytes, gold,
 * tokens, n_cont, ll} (tests/ref/zs_prompts.py checks them). */
static losa_status zs_dump(const char *file, const model_stage *s, const tok_tokenizer *tok,
                           const eval_task *t, const double *ll)
{
    eval_request *req = NULL;
    int n_req = 0;
    losa_status st = eval_task_requests(t, tok, s->cfg.max_seq_len, &req, &n_req);
    if (st != LOSA_OK) return st;
    FILE *f = fopen(file, "a");
    if (!f) {
        eval_requests_free(req, n_req);
        return core_err(LOSA_ERR_IO, "LOSA_ZS_DUMP: cannot open %s", file);
    }
    int k = 0;
    for (int i = 0; i < t->n_items; i++)
        for (int c = 0; c < t->items[i].n_choices; c++, k++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "task", t->name);
            cJSON_AddNumberToObject(o, "item", i);
            cJSON_AddNumberToObject(o, "choice", c);
            cJSON_AddStringToObject(o, "context", t->items[i].context[c]);
            cJSON_AddStringToObject(o, "continuation", t->items[i].cont[c]);
            cJSON_AddNumberToObject(o, "norm_bytes", t->items[i].norm_bytes[c]);
            cJSON_AddNumberToObject(o, "gold", t->items[i].gold);
            cJSON_AddItemToObject(o, "tokens", cJSON_CreateIntArray(req[k].tokens, req[k].n));
            cJSON_AddNumberToObject(o, "n_cont", req[k].n_cont);
            cJSON_AddNumberToObject(o, "ll", ll[k]);
            char *js = cJSON_PrintUnformatted(o);
            fprintf(f, "%s\n", js);
            free(js);
            cJSON_Delete(o);
        }
    eval_requests_free(req, n_req);
    return fclose(f) == 0 ? LOSA_OK : core_err(LOSA_ERR_IO, "LOSA_ZS_DUMP: writing %s failed", file);
}

losa_status eval_zeroshot_cli(dist_ctx *d, const model_stage *s, const tok_tokenizer *tok,
                              const char *tasks, int limit, cJSON *out)
{
    if (tok->n_vocab > s->cfg.vocab_size)
        return core_err(LOSA_ERR_FORMAT, "zero-shot: tokenizer has %d ids, the model %d",
                        tok->n_vocab, s->cfg.vocab_size);
    char data_dir[PATH_MAX];
    if (dist_rank(d) == 0) zs_resolve_data_dir(data_dir, sizeof data_dir);
    dist_bcast(d, data_dir, sizeof data_dir, 0);
    char *list = zs_strdup(tasks), *save = NULL;
    cJSON *jt = cJSON_CreateObject();
    double acc_sum = 0;
    int n_tasks = 0;
    losa_status st = LOSA_OK;
    for (char *name = strtok_r(list, ",", &save); st == LOSA_OK && name;
         name = strtok_r(NULL, ",", &save)) {
        if (!name[0]) continue;
        char path[PATH_MAX];
        if (dist_rank(d) == 0) zs_resolve_task(name, path, sizeof path);
        dist_bcast(d, path, sizeof path, 0);
        eval_task t;
        eval_task_result r;
        if ((st = eval_task_load(d, &t, path, data_dir, limit)) != LOSA_OK) break;
        core_log("zero-shot %s: %d items (%s)\n", t.name, t.n_items, path);
        st = eval_task_run(d, s, tok, &t, 2048, &r);
        if (st == LOSA_OK) {
            core_log("zero-shot %-14s acc %.4f +- %.4f  acc_norm %.4f +- %.4f  (n=%d, %.1fs)\n",
                     r.name, r.acc, r.acc_stderr, r.acc_norm, r.acc_norm_stderr, r.n, r.seconds);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "acc", r.acc);
            cJSON_AddNumberToObject(o, "acc_norm", r.acc_norm);
            cJSON_AddNumberToObject(o, "acc_stderr", r.acc_stderr);
            cJSON_AddNumberToObject(o, "acc_norm_stderr", r.acc_norm_stderr);
            cJSON_AddNumberToObject(o, "n", r.n);
            cJSON_AddNumberToObject(o, "seconds", r.seconds);
            cJSON_DeleteItemFromObjectCaseSensitive(jt, r.name);
            cJSON_AddItemToObject(jt, r.name, o);
            acc_sum += r.acc;
            n_tasks++;
            const char *dump = getenv("LOSA_ZS_DUMP");
            if (dump && dump[0] && dist_rank(d) == 0) st = zs_dump(dump, s, tok, &t, r.ll);
            st = dist_agree(d, st);
        }
        eval_task_result_free(&r);
        eval_task_free(&t);
    }
    free(list);
    if (st == LOSA_OK && n_tasks == 0) st = core_err(LOSA_ERR_ARG, "--zeroshot: no task names in '%s'", tasks);
    if (st != LOSA_OK) {
        cJSON_Delete(jt);
        return st;
    }
    cJSON_AddItemToObject(out, "tasks", jt);
    cJSON_AddNumberToObject(out, "mean_acc", acc_sum / n_tasks);
    core_log("zero-shot mean acc over %d tasks: %.4f\n", n_tasks, acc_sum / n_tasks);
    return LOSA_OK;
}
