/* eval tasks: zero-shot task files (input/tasks/README.md), their data
 * (JSON lines or TSV) into templated multiple-choice items, and the items
 * into token requests by lm-evaluation-harness's rule (include/eval.h). */
#include <cjson/cJSON.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "eval.h"
#include "eval_internal.h"

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
    eval_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '\\' && i + 1 < n) {
            char c = v[++i];
            eval_buf_addc(&b, c == 'n' ? '\n' : c == 't' ? '\t' : c);
        } else eval_buf_addc(&b, v[i]);
    }
    return eval_buf_take(&b);
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
        if (!sp->choice) sp->choice = core_strdup("{choice}");
    } else if (!strcmp(sp->mode, "partial")) {
        if (!sp->options_field[0] || !sp->continuation)
            return core_err(LOSA_ERR_FORMAT, "%s: mode partial needs 'options_field' and 'continuation'",
                            file);
    } else return core_err(LOSA_ERR_FORMAT, "%s: mode '%s': expected mc or partial", file, sp->mode);
    if (!sp->delim) sp->delim = core_strdup(" ");
    return LOSA_OK;
}

/* ---- records ---- */

/* Field value as text (strings as is, integers as %d, other numbers %.17g). */
static losa_status zs_field_text(const zs_spec *sp, const cJSON *rec, const char *name,
                                 int item, eval_buf *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(rec, name);
    if (cJSON_IsString(f)) {
        const char *v = f->valuestring;
        if (sp->strip_prefix && !strcmp(name, sp->strip_field)) {
            size_t np = strlen(sp->strip_prefix);
            if (!strncmp(v, sp->strip_prefix, np)) v += np;
        }
        eval_buf_add(out, v, strlen(v));
        return LOSA_OK;
    }
    if (cJSON_IsNumber(f)) {
        char tmp[40];
        double x = f->valuedouble;
        if (x == floor(x) && fabs(x) < 1e15) snprintf(tmp, sizeof tmp, "%lld", (long long)x);
        else snprintf(tmp, sizeof tmp, "%.17g", x);
        eval_buf_add(out, tmp, strlen(tmp));
        return LOSA_OK;
    }
    return core_err(LOSA_ERR_FORMAT, "%s: item %d: field '%s' (used by a template) is missing "
                    "or not a string/number", sp->file, item, name);
}

/* Expand {field} placeholders; {var} takes var_val; {{ and }} are braces. */
static losa_status zs_expand(const zs_spec *sp, const char *tmpl, const cJSON *rec,
                             const char *var, const char *var_val, int item, char **out)
{
    eval_buf b = {0};
    for (const char *p = tmpl; *p;) {
        if (p[0] == '{' && p[1] == '{') { eval_buf_addc(&b, '{'); p += 2; continue; }
        if (p[0] == '}' && p[1] == '}') { eval_buf_addc(&b, '}'); p += 2; continue; }
        if (*p != '{') { eval_buf_addc(&b, *p++); continue; }
        const char *e = strchr(p, '}');
        if (!e || e - p - 1 <= 0 || e - p - 1 >= 64) {
            free(b.p);
            return core_err(LOSA_ERR_FORMAT, "%s: template '%s': unterminated or empty {field}",
                            sp->file, tmpl);
        }
        char name[64];
        memcpy(name, p + 1, e - p - 1);
        name[e - p - 1] = 0;
        if (var && !strcmp(name, var)) eval_buf_add(&b, var_val, strlen(var_val));
        else {
            losa_status s = zs_field_text(sp, rec, name, item, &b);
            if (s != LOSA_OK) {
                free(b.p);
                return s;
            }
        }
        p = e + 1;
    }
    *out = eval_buf_take(&b);
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
    eval_buf q = {0};
    char *cap = eval_capitalize(cb->valuestring);
    eval_buf_add(&q, al->valuestring, strlen(al->valuestring));
    eval_buf_add(&q, ": ", 2);
    eval_buf_add(&q, ca->valuestring, strlen(ca->valuestring));
    eval_buf_addc(&q, ' ');
    eval_buf_add(&q, cap, strlen(cap));
    free(cap);
    char *raw = eval_buf_take(&q), *query = eval_hellaswag_preprocess(raw);
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

static void zs_opts_free(char **opts, int C)
{
    for (int c = 0; c < C; c++) free(opts[c]);
    free(opts);
}

/* The choice strings of an item: the fixed list "a|b" (mode mc, key
 * choices), else the array field choices_field (mc) or options_field
 * (partial).  *opts malloc'd, *C of them. */
static losa_status zs_item_options(const zs_spec *sp, const cJSON *rec, int item, char ***opts,
                                   int *C)
{
    *opts = NULL;
    *C = 0;
    if (!strcmp(sp->mode, "mc") && sp->choices) {
        char *list = core_strdup(sp->choices), *save = NULL;
        for (char *t = strtok_r(list, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
            *opts = core_realloc(*opts, (size_t)*C + 1, sizeof **opts);
            (*opts)[(*C)++] = core_strdup(t);
        }
        free(list);
        return LOSA_OK;
    }
    const char *field = !strcmp(sp->mode, "mc") ? sp->choices_field : sp->options_field;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(rec, field), *e;
    if (!cJSON_IsArray(arr))
        return core_err(LOSA_ERR_FORMAT, "%s: item %d: field '%s' must be an array of strings",
                        sp->file, item, field);
    cJSON_ArrayForEach(e, arr)
    {
        if (!cJSON_IsString(e)) {
            zs_opts_free(*opts, *C);
            *opts = NULL;
            *C = 0;
            return core_err(LOSA_ERR_FORMAT, "%s: item %d: field '%s' must hold strings",
                            sp->file, item, field);
        }
        *opts = core_realloc(*opts, (size_t)*C + 1, sizeof **opts);
        (*opts)[(*C)++] = core_strdup(e->valuestring);
    }
    return LOSA_OK;
}

/* Context, continuation and norm_bytes of choice c of it from the templates
 * (shared: mc the context, partial the continuation). */
static losa_status zs_item_choice(const zs_spec *sp, const cJSON *rec, int item,
                                  const char *opt, const char *shared, eval_item *it, int c)
{
    losa_status s = LOSA_OK;
    eval_buf cont = {0};
    eval_buf_add(&cont, sp->delim, strlen(sp->delim));
    if (!strcmp(sp->mode, "mc")) {
        char *text = NULL;
        s = zs_expand(sp, sp->choice, rec, "choice", opt, item, &text);
        if (s == LOSA_OK) {
            eval_buf_add(&cont, text, strlen(text));
            it->norm_bytes[c] = (int)strlen(text);
            it->context[c] = core_strdup(shared);
        }
        free(text);
    } else {
        s = zs_expand(sp, sp->context, rec, "option", opt, item, &it->context[c]);
        eval_buf_add(&cont, shared, strlen(shared));
        it->norm_bytes[c] = (int)strlen(opt);
    }
    it->cont[c] = eval_buf_take(&cont);
    return s;
}

static losa_status zs_item_build(const zs_spec *sp, cJSON *rec, int item, eval_item *it)
{
    memset(it, 0, sizeof *it);
    losa_status s = LOSA_OK;
    if (!strcmp(sp->preprocess, "hellaswag") && (s = zs_hellaswag_doc(sp, rec, item)) != LOSA_OK)
        return s;
    int C = 0;
    char **opts = NULL;
    s = zs_item_options(sp, rec, item, &opts, &C);
    if (s != LOSA_OK) return s;
    if (C < 2) s = core_err(LOSA_ERR_FORMAT, "%s: item %d: %d choices, need >= 2", sp->file, item, C);
    if (s == LOSA_OK) s = zs_gold(sp, rec, item, C, &it->gold);
    if (s == LOSA_OK) {
        it->n_choices = C;
        it->context = core_calloc((size_t)C, sizeof(char *));
        it->cont = core_calloc((size_t)C, sizeof(char *));
        it->norm_bytes = core_calloc((size_t)C, sizeof(int));
    }
    char *shared = NULL; /* mc: the context; partial: the continuation */
    if (s == LOSA_OK)
        s = !strcmp(sp->mode, "mc") ? zs_expand(sp, sp->context, rec, NULL, NULL, item, &shared)
                                    : zs_expand(sp, sp->continuation, rec, NULL, NULL, item, &shared);
    for (int c = 0; s == LOSA_OK && c < C; c++)
        s = zs_item_choice(sp, rec, item, opts[c], shared, it, c);
    free(shared);
    zs_opts_free(opts, C);
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
    t->items = core_realloc(t->items, (size_t)t->n_items + 1, sizeof *t->items);
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

/* Items from JSON lines (blank lines skipped; line numbers name items). */
static losa_status zs_parse_jsonl(eval_task *t, const zs_spec *sp, const char *data_name,
                                  const char *data, size_t data_len, int limit)
{
    losa_status s = LOSA_OK;
    size_t pos = 0;
    int line = 0;
    while (s == LOSA_OK && pos < data_len && (limit <= 0 || t->n_items < limit)) {
        size_t e = pos;
        while (e < data_len && data[e] != '\n') e++;
        line++;
        size_t a = pos;
        while (a < e && eval_isspace((unsigned char)data[a])) a++;
        if (a < e) {
            cJSON *rec = cJSON_ParseWithLength(data + a, e - a);
            if (!cJSON_IsObject(rec))
                s = core_err(LOSA_ERR_FORMAT, "%s: line %d: not a JSON object", data_name, line);
            eval_item it;
            if (s == LOSA_OK && (s = zs_item_build(sp, rec, line, &it)) == LOSA_OK)
                zs_task_push(t, &it);
            cJSON_Delete(rec);
        }
        pos = e + 1;
    }
    return s;
}

/* Items from a TSV table (the header names the fields; rows count items). */
static losa_status zs_parse_tsv(eval_task *t, const zs_spec *sp, const char *data_name,
                                const char *data, size_t data_len, int limit)
{
    eval_table tab;
    losa_status s = eval_tsv_parse(&tab, data, data_len, data_name);
    for (int r = 0; s == LOSA_OK && r < tab.n_rows && (limit <= 0 || t->n_items < limit); r++) {
        cJSON *rec = cJSON_CreateObject();
        for (int c = 0; c < tab.n_cols; c++)
            cJSON_AddItemToObject(rec, tab.cells[c],
                                  cJSON_CreateString(tab.cells[(int64_t)(r + 1) * tab.n_cols + c]));
        eval_item it;
        if ((s = zs_item_build(sp, rec, r + 1, &it)) == LOSA_OK) zs_task_push(t, &it);
        cJSON_Delete(rec);
    }
    eval_table_free(&tab);
    return s;
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
    if (!strcmp(sp.format, "jsonl")) s = zs_parse_jsonl(t, &sp, data_name, data, data_len, limit);
    else s = zs_parse_tsv(t, &sp, data_name, data, data_len, limit);
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
    eval_request *r = core_calloc((size_t)n, sizeof *r);
    losa_status s = LOSA_OK;
    int k = 0;
    for (int i = 0; s == LOSA_OK && i < t->n_items; i++) {
        const eval_item *it = &t->items[i];
        for (int c = 0; s == LOSA_OK && c < it->n_choices; c++, k++) {
            const char *ctx = it->context[c];
            size_t nc = strlen(ctx), ns = 0;
            while (ns < nc && eval_isspace((unsigned char)ctx[nc - 1 - ns])) ns++;
            size_t nctx = nc - ns; /* trailing spaces move to the continuation */
            eval_buf whole = {0};
            eval_buf_add(&whole, ctx, nc);
            eval_buf_add(&whole, it->cont[c], strlen(it->cont[c]));
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
                r[k].tokens = core_malloc((size_t)keep, sizeof(int));
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

