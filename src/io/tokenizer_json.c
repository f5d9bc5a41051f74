/* io tokenizer.json: a tokenizer (tok_tokenizer, either kind) as the
 * Hugging Face tokenizer.json of a LLaMA-2 style SentencePiece BPE
 * (include/io.h, io_tokenizer_hf_json). */
#include "io.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define EXP_SPACE_SYM "\xe2\x96\x81" /* U+2581, SentencePiece's whitespace */

typedef struct {
    const char *s; /* NUL-terminated name written to tokenizer.json */
    size_t n;
    int id;
} exp_piece;

static int exp_piece_cmp(const void *a, const void *b)
{
    const exp_piece *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return x->id - y->id;
}

/* Id of the ordinary piece with bytes s[0..n), -1 if none (sorted table). */
static int exp_piece_find(const exp_piece *tab, int n_tab, const char *s, size_t n)
{
    int lo = 0, hi = n_tab - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        size_t m = tab[mid].n < n ? tab[mid].n : n;
        int c = memcmp(tab[mid].s, s, m);
        if (!c && tab[mid].n != n) c = tab[mid].n < n ? -1 : 1;
        if (!c) return tab[mid].id;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static int exp_is_byte_piece(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

static int exp_utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

typedef struct {
    int a, b, m; /* left, right, merged piece */
    int pos;     /* split position in bytes */
    float score; /* of m */
} exp_merge;

static int exp_merge_cmp(const void *x, const void *y)
{
    const exp_merge *p = x, *q = y;
    if (p->score != q->score) return p->score > q->score ? -1 : 1; /* score descending */
    if (p->m != q->m) return p->m - q->m;
    return p->pos - q->pos;
}

static cJSON *exp_added_token(int id, const char *content)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "content", content);
    cJSON_AddFalseToObject(o, "single_word");
    cJSON_AddFalseToObject(o, "lstrip");
    cJSON_AddFalseToObject(o, "rstrip");
    cJSON_AddFalseToObject(o, "normalized");
    cJSON_AddTrueToObject(o, "special");
    return o;
}

static cJSON *exp_replace(const char *from, const char *to)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "Replace");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "pattern"), "String", from);
    cJSON_AddStringToObject(o, "content", to);
    return o;
}

/* {"SpecialToken": {"id": "<s>", "type_id": k}} / {"Sequence": {"id": "A", ..}} */
static cJSON *exp_template_item(const char *kind, const char *id, int type_id)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *in = cJSON_AddObjectToObject(o, kind);
    cJSON_AddStringToObject(in, "id", id);
    cJSON_AddNumberToObject(in, "type_id", type_id);
    return o;
}

/* The parts of tokenizer.json that do not depend on the vocabulary. */
static void exp_tok_frame(cJSON *root, const tok_tokenizer *t, const char *bos_name)
{
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    typedef struct { int id; const char *name; } exp_special;
    exp_special sp[3] = {
        {t->unk_id, "<unk>"}, {t->bos_id, "<s>"}, {t->eos_id, "</s>"}};
    for (int i = 1; i < 3; i++) /* by id (three entries: insertion sort) */
        for (int j = i; j > 0 && sp[j].id < sp[j - 1].id; j--) {
            exp_special x = sp[j];
            sp[j] = sp[j - 1];
            sp[j - 1] = x;
        }
    for (int k = 0; k < 3; k++)
        if (sp[k].id >= 0 && (k == 0 || sp[k].id != sp[k - 1].id))
            cJSON_AddItemToArray(added, exp_added_token(sp[k].id, sp[k].name));
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "Sequence");
    cJSON *nl = cJSON_AddArrayToObject(norm, "normalizers");
    if (t->add_dummy_prefix) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "Prepend");
        cJSON_AddStringToObject(p, "prepend", EXP_SPACE_SYM);
        cJSON_AddItemToArray(nl, p);
    }
    cJSON_AddItemToArray(nl, exp_replace(" ", EXP_SPACE_SYM));
    cJSON_AddNullToObject(root, "pre_tokenizer");
    if (t->bos_id >= 0) {
        cJSON *pp = cJSON_AddObjectToObject(root, "post_processor");
        cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
        cJSON *single = cJSON_AddArrayToObject(pp, "single");
        cJSON_AddItemToArray(single, exp_template_item("SpecialToken", bos_name, 0));
        cJSON_AddItemToArray(single, exp_template_item("Sequence", "A", 0));
        cJSON *pair = cJSON_AddArrayToObject(pp, "pair");
        cJSON_AddItemToArray(pair, exp_template_item("SpecialToken", bos_name, 0));
        cJSON_AddItemToArray(pair, exp_template_item("Sequence", "A", 0));
        cJSON_AddItemToArray(pair, exp_template_item("SpecialToken", bos_name, 1));
        cJSON_AddItemToArray(pair, exp_template_item("Sequence", "B", 1));
        cJSON *spt = cJSON_AddObjectToObject(cJSON_AddObjectToObject(pp, "special_tokens"),
                                             bos_name);
        cJSON_AddStringToObject(spt, "id", bos_name);
        int ids[1] = {t->bos_id};
        cJSON_AddItemToObject(spt, "ids", cJSON_CreateIntArray(ids, 1));
        const char *toks[1] = {bos_name};
        cJSON_AddItemToObject(spt, "tokens", cJSON_CreateStringArray(toks, 1));
    } else {
        cJSON_AddNullToObject(root, "post_processor");
    }
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "Sequence");
    cJSON *dl = cJSON_AddArrayToObject(dec, "decoders");
    cJSON_AddItemToArray(dl, exp_replace(EXP_SPACE_SYM, " "));
    cJSON *d;
    cJSON_AddItemToArray(dl, d = cJSON_CreateObject());
    cJSON_AddStringToObject(d, "type", "ByteFallback");
    cJSON_AddItemToArray(dl, d = cJSON_CreateObject());
    cJSON_AddStringToObject(d, "type", "Fuse");
    if (t->add_dummy_prefix) {
        cJSON_AddItemToArray(dl, d = cJSON_CreateObject());
        cJSON_AddStringToObject(d, "type", "Strip");
        cJSON_AddStringToObject(d, "content", " ");
        cJSON_AddNumberToObject(d, "start", 1);
        cJSON_AddNumberToObject(d, "stop", 0);
    }
}

/* Names by id (names[V]): control pieces get the standard LLaMA names
 * (llama2.c stores "\n<s>\n"), every other piece its bytes (copies in
 * own[V]).  The ordinary pieces (not control, not <0xNN>, not empty) also go
 * to sorted[0 .. *n_ord), sorted.  Every name must be valid UTF-8 and unique
 * (tokenizer.json's vocab is a map). */
static losa_status exp_tok_names(const tok_tokenizer *t, exp_piece *names, char **own,
                                 exp_piece *sorted, int *n_ord)
{
    int V = t->n_vocab;
    *n_ord = 0;
    for (int i = 0; i < V; i++) {
        const char *p = t->blob + t->offsets[i];
        size_t n = (size_t)(t->offsets[i + 1] - t->offsets[i]);
        const char *fixed = i == t->unk_id ? "<unk>" : i == t->bos_id ? "<s>"
                          : i == t->eos_id ? "</s>" : NULL;
        if (fixed) {
            names[i] = (exp_piece){fixed, strlen(fixed), i};
            continue;
        }
        if (memchr(p, 0, n) || !exp_utf8_valid((const unsigned char *)p, n))
            return core_err(LOSA_ERR_UNSUPPORTED, "tokenizer: piece %d is not valid UTF-8 "
                            "text (tokenizer.json cannot hold it)", i);
        own[i] = core_strndup(p, n);
        names[i] = (exp_piece){own[i], n, i};
        if (n > 0 && !exp_is_byte_piece(p, n)) sorted[(*n_ord)++] = names[i];
    }
    exp_piece *all = core_malloc((size_t)V, sizeof *all);
    memcpy(all, names, (size_t)V * sizeof *all);
    qsort(all, (size_t)V, sizeof *all, exp_piece_cmp);
    losa_status s = LOSA_OK;
    for (int i = 1; i < V && s == LOSA_OK; i++)
        if (all[i].n == all[i - 1].n && !memcmp(all[i].s, all[i - 1].s, all[i].n))
            s = core_err(LOSA_ERR_UNSUPPORTED,
                         "tokenizer: pieces %d and %d are both \"%s\" (tokenizer.json's "
                         "vocab needs unique pieces)", all[i - 1].id, all[i].id, all[i].s);
    free(all);
    if (s == LOSA_OK) qsort(sorted, (size_t)*n_ord, sizeof *sorted, exp_piece_cmp);
    return s;
}

/* The merge list into *mg (malloc'd), *nm entries.  TOK_KIND_MERGES: the
 * stored one.  TOK_KIND_SCORES (SentencePiece BPE): a pair of adjacent
 * symbols may merge when their concatenation is a piece, whose score is the
 * priority: every split of every ordinary piece at a character boundary
 * into two ordinary pieces, by score descending. */
static losa_status exp_tok_merges(const tok_tokenizer *t, const exp_piece *sorted, int n_ord,
                                  exp_merge **mg, int *nm)
{
    int V = t->n_vocab;
    *nm = 0;
    if (t->kind == TOK_KIND_MERGES) {
        *mg = core_malloc((size_t)t->n_merges + 1, sizeof **mg);
        for (int r = 0; r < t->n_merges; r++) {
            int a = t->merges[2 * r], b = t->merges[2 * r + 1];
            if (a < 0 || a >= V || b < 0 || b >= V)
                return core_err(LOSA_ERR_FORMAT, "tokenizer: merge %d: ids (%d, %d) outside "
                                "0..%d", r, a, b, V - 1);
            (*mg)[(*nm)++] = (exp_merge){a, b, -1, 0, 0.0f};
        }
        return LOSA_OK;
    }
    int64_t cap = 0;
    for (int k = 0; k < n_ord; k++) cap += (int64_t)sorted[k].n;
    *mg = core_malloc((size_t)cap + 1, sizeof **mg);
    for (int k = 0; k < n_ord; k++) {
        const exp_piece *p = &sorted[k];
        for (size_t j = 1; j < p->n; j++) {
            if (((unsigned char)p->s[j] & 0xC0) == 0x80) continue; /* inside a character */
            int a = exp_piece_find(sorted, n_ord, p->s, j);
            int b = a < 0 ? -1 : exp_piece_find(sorted, n_ord, p->s + j, p->n - j);
            if (b >= 0) (*mg)[(*nm)++] = (exp_merge){a, b, p->id, (int)j, t->scores[p->id]};
        }
    }
    qsort(*mg, (size_t)*nm, sizeof **mg, exp_merge_cmp);
    return LOSA_OK;
}

/* "model": BPE with the vocabulary and the merges ("a b" strings unless a
 * piece holds a space, then [a, b] pairs). */
static void exp_tok_model(cJSON *root, const tok_tokenizer *t, const exp_piece *names,
                          const exp_merge *mg, int nm)
{
    int plain = 1;
    for (int r = 0; r < nm && plain; r++)
        plain = !strchr(names[mg[r].a].s, ' ') && !strchr(names[mg[r].b].s, ' ');
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    if (t->unk_id >= 0) cJSON_AddStringToObject(model, "unk_token", names[t->unk_id].s);
    else cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddTrueToObject(model, "fuse_unk");
    cJSON_AddBoolToObject(model, "byte_fallback", t->byte_fallback != 0);
    cJSON_AddFalseToObject(model, "ignore_merges");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int i = 0; i < t->n_vocab; i++) cJSON_AddNumberToObject(vocab, names[i].s, i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    char *buf = NULL;
    size_t bufn = 0;
    for (int r = 0; r < nm; r++) {
        const exp_piece *a = &names[mg[r].a], *b = &names[mg[r].b];
        if (plain) {
            if (a->n + b->n + 2 > bufn) {
                bufn = 2 * (a->n + b->n + 2);
                buf = core_realloc(buf, bufn, 1);
            }
            memcpy(buf, a->s, a->n);
            buf[a->n] = ' ';
            memcpy(buf + a->n + 1, b->s, b->n);
            buf[a->n + 1 + b->n] = 0;
            cJSON_AddItemToArray(merges, cJSON_CreateString(buf));
        } else {
            const char *pair[2] = {a->s, b->s};
            cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
        }
    }
    free(buf);
}

losa_status io_tokenizer_hf_json(const tok_tokenizer *t, char **json, int *n_merges)
{
    *json = NULL;
    if (n_merges) *n_merges = 0;
    int V = t->n_vocab;
    if (V <= 0 || !t->blob || !t->offsets)
        return core_err(LOSA_ERR_FORMAT, "tokenizer: empty (n_vocab %d)", V);
    if (t->kind != TOK_KIND_MERGES && t->kind != TOK_KIND_SCORES)
        return core_err(LOSA_ERR_FORMAT, "tokenizer: kind %d (expected %d or %d)", t->kind,
                        TOK_KIND_MERGES, TOK_KIND_SCORES);
    exp_piece *names = core_calloc((size_t)V, sizeof *names); /* by id */
    exp_piece *sorted = core_calloc((size_t)V, sizeof *sorted);
    char **own = core_calloc((size_t)V, sizeof *own);
    exp_merge *mg = NULL;
    int n_ord = 0, nm = 0;
    losa_status s = exp_tok_names(t, names, own, sorted, &n_ord);
    if (s == LOSA_OK) s = exp_tok_merges(t, sorted, n_ord, &mg, &nm);
    if (s == LOSA_OK) {
        cJSON *root = cJSON_CreateObject();
        exp_tok_frame(root, t, names[t->bos_id >= 0 ? t->bos_id : 0].s);
        exp_tok_model(root, t, names, mg, nm);
        *json = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        if (!*json) s = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory printing tokenizer.json");
        else if (n_merges) *n_merges = nm;
    }
    for (int i = 0; i < V; i++) free(own[i]);
    free(own);
    free(names);
    free(sorted);
    free(mg);
    return s;
}
