/* Export a model store as a Hugging Face LLaMA directory: config.json,
 * model.safetensors (F32 or BF16), tokenizer.json, tokenizer_config.json.
 *
 * Everything is written into "<out>.tmp.<pid>/" (each file fsync'd), and the
 * directory is renamed into place only when all four files are complete; on
 * any error the temporary directory is removed.  The store is read one
 * tensor at a time (one fp32 buffer of the largest tensor), so memory stays
 * at one tensor plus a small conversion chunk.
 *
 * The store's weights are (out, in) row-major with rotate-half RoPE, which is
 * exactly the HF layout: tensors are written unpermuted. */
#include "io.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXP_SPACE_SYM "\xe2\x96\x81" /* U+2581, SentencePiece's whitespace */
#define EXP_CHUNK (1 << 20)          /* elements per conversion chunk */

/* ---- bf16 ---------------------------------------------------------------- */

uint16_t io_f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    uint16_t h = (uint16_t)(r >> 16);
    /* a tiny non-zero (|x| < 2^-134) must not become a zero: keep the mask */
    if ((h & 0x7fffu) == 0 && (u & 0x7fffffffu) != 0) h = (uint16_t)((u >> 16 & 0x8000u) | 1u);
    return h;
}

/* ---- tokenizer.json ---------------------------------------------------------- */

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
    losa_status s = LOSA_OK;
    exp_piece *names = calloc((size_t)V, sizeof *names); /* by id */
    exp_piece *sorted = calloc((size_t)V, sizeof *sorted);
    char **own = calloc((size_t)V, sizeof *own);
    exp_merge *mg = NULL;
    cJSON *root = NULL;
    if (!names || !sorted || !own) {
        s = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory for %d pieces", V);
        goto out;
    }
    /* Names: control pieces get the standard LLaMA names (llama2.c stores
     * "\n<s>\n"); everything else is its bytes. */
    int n_ord = 0; /* ordinary pieces: in sorted[0 .. n_ord) */
    for (int i = 0; i < V && s == LOSA_OK; i++) {
        const char *p = t->blob + t->offsets[i];
        size_t n = (size_t)(t->offsets[i + 1] - t->offsets[i]);
        const char *fixed = i == t->unk_id ? "<unk>" : i == t->bos_id ? "<s>"
                          : i == t->eos_id ? "</s>" : NULL;
        if (fixed) {
            names[i] = (exp_piece){fixed, strlen(fixed), i};
            continue;
        }
        if (memchr(p, 0, n) || !exp_utf8_valid((const unsigned char *)p, n)) {
            s = core_err(LOSA_ERR_UNSUPPORTED, "tokenizer: piece %d is not valid UTF-8 text "
                         "(tokenizer.json cannot hold it)", i);
            break;
        }
        own[i] = strndup(p, n);
        if (!own[i]) {
            s = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory");
            break;
        }
        names[i] = (exp_piece){own[i], n, i};
        if (n > 0 && !exp_is_byte_piece(p, n)) sorted[n_ord++] = names[i];
    }
    if (s != LOSA_OK) goto out;
    /* Every name must be unique (tokenizer.json's vocab is a map). */
    {
        exp_piece *all = malloc((size_t)V * sizeof *all);
        if (!all) {
            s = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory");
            goto out;
        }
        memcpy(all, names, (size_t)V * sizeof *all);
        qsort(all, (size_t)V, sizeof *all, exp_piece_cmp);
        for (int i = 1; i < V && s == LOSA_OK; i++)
            if (all[i].n == all[i - 1].n && !memcmp(all[i].s, all[i - 1].s, all[i].n))
                s = core_err(LOSA_ERR_UNSUPPORTED,
                             "tokenizer: pieces %d and %d are both \"%s\" (tokenizer.json's "
                             "vocab needs unique pieces)", all[i - 1].id, all[i].id, all[i].s);
        free(all);
        if (s != LOSA_OK) goto out;
    }
    qsort(sorted, (size_t)n_ord, sizeof *sorted, exp_piece_cmp);

    /* Merges. */
    int nm = 0;
    if (t->kind == TOK_KIND_MERGES) {
        mg = malloc(((size_t)t->n_merges + 1) * sizeof *mg);
        if (!mg) {
            s = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory for %d merges", t->n_merges);
            goto out;
        }
        for (int r = 0; r < t->n_merges; r++) {
            int a = t->merges[2 * r], b = t->merges[2 * r + 1];
            if (a < 0 || a >= V || b < 0 || b >= V) {
                s = core_err(LOSA_ERR_FORMAT, "tokenizer: merge %d: ids (%d, %d) outside 0..%d",
                             r, a, b, V - 1);
                goto out;
            }
            mg[nm++] = (exp_merge){a, b, -1, 0, 0.0f};
        }
    } else {
        /* SentencePiece BPE: a pair of adjacent symbols may merge when their
         * concatenation is a piece; the piece's score is the priority. */
        int64_t cap = 0;
        for (int k = 0; k < n_ord; k++) cap += (int64_t)sorted[k].n;
        mg = malloc(((size_t)cap + 1) * sizeof *mg);
        if (!mg) {
            s = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory for merges");
            goto out;
        }
        for (int k = 0; k < n_ord; k++) {
            const exp_piece *p = &sorted[k];
            for (size_t j = 1; j < p->n; j++) {
                if (((unsigned char)p->s[j] & 0xC0) == 0x80) continue; /* inside a character */
                int a = exp_piece_find(sorted, n_ord, p->s, j);
                int b = a < 0 ? -1 : exp_piece_find(sorted, n_ord, p->s + j, p->n - j);
                if (b >= 0) mg[nm++] = (exp_merge){a, b, p->id, (int)j, t->scores[p->id]};
            }
        }
        qsort(mg, (size_t)nm, sizeof *mg, exp_merge_cmp);
    }
    int plain = 1; /* "a b" strings unless a piece holds a space */
    for (int r = 0; r < nm && plain; r++)
        plain = !strchr(names[mg[r].a].s, ' ') && !strchr(names[mg[r].b].s, ' ');

    root = cJSON_CreateObject();
    exp_tok_frame(root, t, names[t->bos_id >= 0 ? t->bos_id : 0].s);
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
    for (int i = 0; i < V; i++) cJSON_AddNumberToObject(vocab, names[i].s, i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    char *buf = NULL;
    size_t bufn = 0;
    for (int r = 0; r < nm; r++) {
        const exp_piece *a = &names[mg[r].a], *b = &names[mg[r].b];
        if (plain) {
            if (a->n + b->n + 2 > bufn) {
                bufn = 2 * (a->n + b->n + 2);
                char *nb = realloc(buf, bufn);
                if (!nb) {
                    free(buf);
                    s = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory");
                    goto out;
                }
                buf = nb;
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
    *json = cJSON_PrintUnformatted(root);
    if (!*json) s = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory printing tokenizer.json");
    else if (n_merges) *n_merges = nm;
out:
    cJSON_Delete(root);
    if (own)
        for (int i = 0; i < V; i++) free(own[i]);
    free(own);
    free(names);
    free(sorted);
    free(mg);
    return s;
}

/* ---- the directory ------------------------------------------------------------- */

static const char *exp_files[] = {"config.json", "model.safetensors", "tokenizer.json",
                                  "tokenizer_config.json"};
#define EXP_N_FILES (sizeof exp_files / sizeof exp_files[0])

static void exp_tmp_remove(const char *tmp)
{
    char p[PATH_MAX + 64];
    for (size_t i = 0; i < EXP_N_FILES; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, exp_files[i]);
        unlink(p);
    }
    rmdir(tmp);
}

/* Close f after flush + fsync; the message names path. */
static losa_status exp_file_close(FILE *f, const char *path)
{
    int bad = fflush(f) != 0 || ferror(f);
    int e = errno;
    if (!bad && fsync(fileno(f)) != 0) {
        bad = 1;
        e = errno;
    }
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) return core_err(LOSA_ERR_IO, "%s: write failed: %s", path, strerror(e));
    return LOSA_OK;
}

/* Write text (NUL-terminated) to dir/name. */
static losa_status exp_write_text(const char *dir, const char *name, const char *text)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) return core_err(LOSA_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
    size_t n = strlen(text);
    if (fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF) {
        int e = errno;
        fclose(f);
        return core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(e));
    }
    return exp_file_close(f, p);
}

/* A float for JSON: the shortest decimal that reads back as the same float
 * (1e-05, not 9.99999974737875e-06). */
static double exp_json_float(float x)
{
    char b[40];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, (double)x);
        if (strtof(b, NULL) == x) break;
    }
    return strtod(b, NULL);
}

static char *exp_config_json(const model_config *c, io_export_dtype dt)
{
    cJSON *o = cJSON_CreateObject();
    const char *arch[1] = {"LlamaForCausalLM"};
    cJSON_AddItemToObject(o, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_AddStringToObject(o, "model_type", "llama");
    cJSON_AddNumberToObject(o, "hidden_size", c->dim);
    cJSON_AddNumberToObject(o, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", model_head_size(c));
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_seq_len);
    cJSON_AddNumberToObject(o, "rms_norm_eps", exp_json_float(c->rms_eps));
    cJSON_AddNumberToObject(o, "rope_theta", exp_json_float(c->rope_theta));
    cJSON_AddNullToObject(o, "rope_scaling");
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddFalseToObject(o, "attention_bias");
    cJSON_AddFalseToObject(o, "mlp_bias");
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_embeddings != 0);
    cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
    cJSON_AddNumberToObject(o, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(o, "torch_dtype", dt == IO_EXPORT_BF16 ? "bfloat16" : "float32");
    cJSON_AddTrueToObject(o, "use_cache");
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    return txt;
}

static char *exp_tokenizer_config_json(const model_config *c, const tok_tokenizer *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tokenizer_class", "LlamaTokenizerFast");
    cJSON_AddBoolToObject(o, "add_bos_token", t->bos_id >= 0);
    cJSON_AddFalseToObject(o, "add_eos_token");
    if (t->bos_id >= 0) cJSON_AddStringToObject(o, "bos_token", "<s>");
    if (t->eos_id >= 0) cJSON_AddStringToObject(o, "eos_token", "</s>");
    if (t->unk_id >= 0) cJSON_AddStringToObject(o, "unk_token", "<unk>");
    cJSON_AddNullToObject(o, "pad_token");
    cJSON_AddNumberToObject(o, "model_max_length", c->max_seq_len);
    cJSON_AddFalseToObject(o, "clean_up_tokenization_spaces");
    cJSON_AddTrueToObject(o, "legacy");
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    return txt;
}

typedef struct {
    char hf[96];
    char store[64];
    int ndim;
    int64_t shape[2];
    int is_map;
} exp_item;

/* The tensors in HF order; returns the count (items sized 3 + 9 L). */
static int exp_items(const model_config *c, exp_item *it)
{
    static const char *proj[MODEL_N_MAPS] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    int k = 0;
    int64_t V = c->vocab_size, D = c->dim;
#define EXP_ITEM(ND, S0, S1, MAP)                                                           \
    do {                                                                                    \
        it[k].ndim = ND;                                                                    \
        it[k].shape[0] = S0;                                                                \
        it[k].shape[1] = S1;                                                                \
        it[k].is_map = MAP;                                                                 \
        k++;                                                                                \
    } while (0)
    snprintf(it[k].hf, sizeof it[k].hf, "model.embed_tokens.weight");
    snprintf(it[k].store, sizeof it[k].store, "/embed");
    EXP_ITEM(2, V, D, 0);
    for (int l = 0; l < c->n_layers; l++) {
        snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.input_layernorm.weight", l);
        io_layer_name(it[k].store, sizeof it[k].store, l, "attn_norm");
        EXP_ITEM(1, D, 0, 0);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.%s.weight", l, proj[m]);
            io_layer_name(it[k].store, sizeof it[k].store, l, model_map_name((model_map)m));
            EXP_ITEM(2, o, i, 1);
        }
        snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.post_attention_layernorm.weight",
                 l);
        io_layer_name(it[k].store, sizeof it[k].store, l, "ffn_norm");
        EXP_ITEM(1, D, 0, 0);
    }
    snprintf(it[k].hf, sizeof it[k].hf, "model.norm.weight");
    snprintf(it[k].store, sizeof it[k].store, "/final_norm");
    EXP_ITEM(1, D, 0, 0);
    if (!c->tie_embeddings) {
        snprintf(it[k].hf, sizeof it[k].hf, "lm_head.weight");
        snprintf(it[k].store, sizeof it[k].store, "/head");
        EXP_ITEM(2, V, D, 0);
    }
#undef EXP_ITEM
    return k;
}

static int64_t exp_numel(const exp_item *it)
{
    return it->shape[0] * (it->ndim == 2 ? it->shape[1] : 1);
}

/* model.safetensors: header (tensors in HF order, offsets in that order,
 * padded with spaces to a multiple of 8), then the data, one tensor at a time. */
static losa_status exp_write_safetensors(io_store *st, const model_config *c,
                                         io_export_dtype dt, const char *dir,
                                         io_export_stats *stats)
{
    int n_items = 3 + 9 * c->n_layers;
    exp_item *it = calloc((size_t)n_items, sizeof *it);
    if (!it) return core_err(LOSA_ERR_NOMEM, "export: out of memory");
    n_items = exp_items(c, it);
    size_t esz = dt == IO_EXPORT_BF16 ? 2 : 4;

    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(h, "__metadata__"), "format", "pt");
    uint64_t off = 0;
    int64_t maxn = 0;
    for (int i = 0; i < n_items; i++) {
        cJSON *e = cJSON_AddObjectToObject(h, it[i].hf);
        cJSON_AddStringToObject(e, "dtype", dt == IO_EXPORT_BF16 ? "BF16" : "F32");
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < it[i].ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)it[i].shape[d]));
        int64_t n = exp_numel(&it[i]);
        uint64_t end = off + (uint64_t)n * esz;
        cJSON *ofs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(ofs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(ofs, cJSON_CreateNumber((double)end));
        off = end;
        if (n > maxn) maxn = n;
    }
    char *htxt = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!htxt) {
        free(it);
        return core_err(LOSA_ERR_NOMEM, "export: out of memory printing the header");
    }
    uint64_t hlen = strlen(htxt), hpad = (hlen + 7) / 8 * 8;

    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    losa_status s = LOSA_OK;
    FILE *f = fopen(p, "wb");
    if (!f) s = core_err(LOSA_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)(hpad >> (8 * b)); /* little endian */
    if (s == LOSA_OK && (fwrite(len8, 1, 8, f) != 8 || fwrite(htxt, 1, hlen, f) != hlen))
        s = core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(errno));
    for (uint64_t k = hlen; s == LOSA_OK && k < hpad; k++)
        if (fputc(' ', f) == EOF) s = core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(errno));
    free(htxt);

    float *x = s == LOSA_OK ? core_calloc((size_t)maxn, sizeof(float)) : NULL;
    uint16_t *hb = s == LOSA_OK && dt == IO_EXPORT_BF16
                       ? core_calloc(EXP_CHUNK, sizeof(uint16_t)) : NULL;
    for (int i = 0; s == LOSA_OK && i < n_items; i++) {
        int64_t n = exp_numel(&it[i]);
        s = io_store_read_tensor(st, it[i].store, x, it[i].ndim, it[i].shape);
        if (s != LOSA_OK) break;
        int64_t z = 0;
        for (int64_t j = 0; j < n; j++) {
            if (!isfinite(x[j])) {
                s = core_err(LOSA_ERR_NUMERIC, "%s: %s: non-finite value at element %lld",
                             io_store_path(st), it[i].store, (long long)j);
                break;
            }
            z += x[j] == 0.0f;
        }
        if (s != LOSA_OK) break;
        if (it[i].is_map) {
            stats->map_zeros += z;
            stats->map_size += n;
        }
        if (dt == IO_EXPORT_F32) {
            if (fwrite(x, sizeof(float), (size_t)n, f) != (size_t)n)
                s = core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(errno));
        } else {
            for (int64_t j0 = 0; s == LOSA_OK && j0 < n; j0 += EXP_CHUNK) {
                int64_t m = n - j0 < EXP_CHUNK ? n - j0 : EXP_CHUNK;
                for (int64_t j = 0; j < m; j++) {
                    hb[j] = io_f32_to_bf16(x[j0 + j]);
                    if ((hb[j] & 0x7f80u) == 0x7f80u) /* finite fp32 beyond bf16's range */
                        s = core_err(LOSA_ERR_NUMERIC,
                                     "%s: %s: element %lld = %g overflows bf16 (use --dtype f32)",
                                     io_store_path(st), it[i].store, (long long)(j0 + j),
                                     (double)x[j0 + j]);
                }
                if (s == LOSA_OK && fwrite(hb, sizeof(uint16_t), (size_t)m, f) != (size_t)m)
                    s = core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(errno));
            }
        }
        stats->n_weights += n;
        stats->n_tensors++;
    }
    core_free(x);
    core_free(hb);
    if (f) {
        losa_status sc = exp_file_close(f, p);
        if (s == LOSA_OK) s = sc;
    }
    stats->st_bytes = (int64_t)(8 + hpad + off);
    free(it);
    return s;
}

/* out must not exist, or be an empty directory. */
static losa_status exp_check_out(const char *out)
{
    struct stat sb;
    if (stat(out, &sb) != 0) {
        if (errno == ENOENT) return LOSA_OK;
        return core_err(LOSA_ERR_IO, "%s: cannot stat: %s", out, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode))
        return core_err(LOSA_ERR_IO, "%s: exists and is not a directory (--out must be a new "
                        "directory)", out);
    DIR *d = opendir(out);
    if (!d) return core_err(LOSA_ERR_IO, "%s: cannot open: %s", out, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) && empty)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    if (!empty)
        return core_err(LOSA_ERR_IO, "%s: exists and is not empty (remove it or choose "
                        "another --out)", out);
    return LOSA_OK;
}

losa_status io_export_hf(const char *store_path, const char *out_dir, io_export_dtype dt,
                         io_export_stats *stats)
{
    io_export_stats dummy;
    if (!stats) stats = &dummy;
    memset(stats, 0, sizeof *stats);
    const uint16_t one = 1;
    unsigned char lo;
    memcpy(&lo, &one, 1);
    if (lo != 1)
        return core_err(LOSA_ERR_UNSUPPORTED, "export: big-endian hosts are not supported "
                        "(safetensors is little-endian)");
    if (dt != IO_EXPORT_F32 && dt != IO_EXPORT_BF16)
        return core_err(LOSA_ERR_ARG, "export: dtype %d (expected f32 or bf16)", (int)dt);
    /* out without trailing slashes (so that "<out>.tmp.<pid>" is a sibling) */
    char out[PATH_MAX];
    if (!out_dir || !*out_dir || strlen(out_dir) >= sizeof out)
        return core_err(LOSA_ERR_ARG, "--out: empty or too long");
    snprintf(out, sizeof out, "%s", out_dir);
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = 0;

    /* Read and check everything that can fail before creating anything. */
    io_store *st = NULL;
    model_config c;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    char *cfg = NULL, *tokj = NULL, *tokc = NULL;
    losa_status s = io_store_open(&st, store_path);
    if (s == LOSA_OK) s = io_store_read_config(st, &c);
    if (s == LOSA_OK && !io_store_has(st, "/tokenizer"))
        s = core_err(LOSA_ERR_FORMAT, "%s: no /tokenizer (an HF directory needs "
                     "tokenizer.json)", store_path);
    if (s == LOSA_OK) s = io_store_read_tokenizer(st, &tok);
    if (s == LOSA_OK && tok.n_vocab > c.vocab_size)
        s = core_err(LOSA_ERR_FORMAT, "%s: tokenizer has %d pieces, more than vocab_size %d",
                     store_path, tok.n_vocab, c.vocab_size);
    if (s == LOSA_OK) s = io_tokenizer_hf_json(&tok, &tokj, &stats->n_merges);
    if (s == LOSA_OK) {
        cfg = exp_config_json(&c, dt);
        tokc = exp_tokenizer_config_json(&c, &tok);
        if (!cfg || !tokc) s = core_err(LOSA_ERR_NOMEM, "export: out of memory");
    }
    if (s == LOSA_OK) s = exp_check_out(out);

    char tmp[PATH_MAX + 32];
    core_tmpname(tmp, sizeof tmp, out);
    int made = 0;
    if (s == LOSA_OK) {
        if (mkdir(tmp, 0755) != 0)
            s = core_err(LOSA_ERR_IO, "%s: cannot create the output directory (%s): %s", out,
                         tmp, strerror(errno));
        else made = 1;
    }
    if (s == LOSA_OK) s = exp_write_text(tmp, "config.json", cfg);
    if (s == LOSA_OK) s = exp_write_text(tmp, "tokenizer.json", tokj);
    if (s == LOSA_OK) s = exp_write_text(tmp, "tokenizer_config.json", tokc);
    if (s == LOSA_OK) s = exp_write_safetensors(st, &c, dt, tmp, stats);
    if (s == LOSA_OK && rename(tmp, out) != 0)
        s = core_err(LOSA_ERR_IO, "%s: cannot rename %s into place: %s", out, tmp,
                     strerror(errno));
    if (s == LOSA_OK) { /* make the rename durable: fsync the parent directory */
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", out);
        char *sl = strrchr(parent, '/');
        if (!sl) snprintf(parent, sizeof parent, ".");
        else if (sl == parent) parent[1] = 0;
        else *sl = 0;
        DIR *d = opendir(parent);
        if (d) {
            fsync(dirfd(d));
            closedir(d);
        }
    } else if (made) {
        exp_tmp_remove(tmp);
    }
    cJSON_free(cfg);
    cJSON_free(tokj);
    cJSON_free(tokc);
    tok_free(&tok);
    io_store_close(&st);
    return s;
}
