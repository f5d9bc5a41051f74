/* Import a Hugging Face LLaMA / Mistral directory (config.json, safetensors
 * single file or shards + index, tokenizer.json) into a model store.  Every
 * input is validated (config fields, all tensor headers, dtypes and shapes,
 * the tokenizer) before the store is created; the store is written tensor by
 * tensor (one fp32 buffer of the largest tensor) and committed atomically.
 * Nothing is dropped silently: what the model code cannot compute (biases,
 * a sliding window shorter than max_position_embeddings) is refused, the
 * config's layer count must be the weights', every tensor of every file read
 * must be consumed (rotary_emb.inv_freq only if it is theta^(-2i/hd)), and
 * the output must not be any file the import reads. */
#include "io.h"
#include "io_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- weights: one file or shards ------------------------------------------- */

typedef struct {
    int n_files;
    io_st_file *files;
    cJSON *weight_map; /* sharded: name -> file name (NULL for one file) */
    cJSON *index;
    char index_path[4200];
} hf_weights;

static void hf_weights_close(hf_weights *w)
{
    for (int i = 0; i < w->n_files; i++) io_st_close(&w->files[i]);
    free(w->files);
    cJSON_Delete(w->index);
    memset(w, 0, sizeof *w);
}

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static losa_status hf_weights_open(hf_weights *w, const char *dir)
{
    memset(w, 0, sizeof *w);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (file_exists(path)) {
        w->files = core_calloc(1, sizeof *w->files);
        losa_status s = io_st_open(&w->files[0], path);
        if (s == LOSA_OK) w->n_files = 1;
        else hf_weights_close(w);
        return s;
    }
    snprintf(w->index_path, sizeof w->index_path, "%s/model.safetensors.index.json", dir);
    if (!file_exists(w->index_path))
        return core_err(LOSA_ERR_IO,
                        "%s: model.safetensors: missing (nor model.safetensors.index.json)",
                        dir);
    char *text = NULL;
    size_t n = 0;
    losa_status s = core_read_file(w->index_path, &text, &n);
    if (s != LOSA_OK) return s;
    w->index = cJSON_ParseWithLength(text, n);
    free(text);
    if (!cJSON_IsObject(w->index)) {
        hf_weights_close(w);
        return core_err(LOSA_ERR_FORMAT, "%s: malformed JSON (expected an object)",
                        w->index_path);
    }
    w->weight_map = cJSON_GetObjectItemCaseSensitive(w->index, "weight_map");
    if (!cJSON_IsObject(w->weight_map)) {
        hf_weights_close(w);
        return core_err(LOSA_ERR_FORMAT, "%s: weight_map: missing or not an object "
                        "(malformed JSON?)", w->index_path);
    }
    int cap = cJSON_GetArraySize(w->weight_map);
    w->files = core_calloc((size_t)(cap > 0 ? cap : 1), sizeof *w->files);
    const cJSON *e;
    cJSON_ArrayForEach(e, w->weight_map)
    {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
            s = core_err(LOSA_ERR_FORMAT,
                         "%s: weight_map: %s: expected a file name in the directory",
                         w->index_path, e->string);
            break;
        }
        char fp[4200];
        snprintf(fp, sizeof fp, "%s/%s", dir, e->valuestring);
        int seen = 0;
        for (int i = 0; i < w->n_files && !seen; i++) seen = !strcmp(w->files[i].path, fp);
        if (seen) continue;
        s = io_st_open(&w->files[w->n_files], fp);
        if (s != LOSA_OK) break;
        w->n_files++;
    }
    if (s != LOSA_OK) hf_weights_close(w);
    return s;
}

/* Where tensor name is: 0 found (*f, *t set); 1 not listed in the weight_map
 * (sharded); 2 not in its file (*f set). */
static int hf_weights_locate(const hf_weights *w, const char *name, const io_st_file **f,
                             const io_st_tensor **t)
{
    const io_st_file *file = &w->files[0];
    if (w->weight_map) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(w->weight_map, name);
        if (!cJSON_IsString(e)) return 1;
        file = NULL;
        const char *base;
        for (int i = 0; i < w->n_files && !file; i++) {
            base = strrchr(w->files[i].path, '/');
            base = base ? base + 1 : w->files[i].path;
            if (!strcmp(base, e->valuestring)) file = &w->files[i];
        }
        LOSA_CHECK(file != NULL); /* hf_weights_open opened every file it names */
    }
    *f = file;
    *t = io_st_find(file, name);
    return *t ? 0 : 2;
}

/* Find and check tensor name with the given shape. */
static losa_status hf_weights_find(const hf_weights *w, const char *name, int ndim,
                                   const int64_t *shape, const io_st_file **f,
                                   const io_st_tensor **t)
{
    int where = hf_weights_locate(w, name, f, t);
    if (where == 1)
        return core_err(LOSA_ERR_FORMAT, "%s: weight_map: tensor %s is missing",
                        w->index_path, name);
    if (where == 2)
        return core_err(LOSA_ERR_FORMAT, "%s: tensor %s is missing", (*f)->path, name);
    return io_st_check(*f, *t, ndim, shape);
}

/* Layer index l of a tensor named "model.layers.<l>.<rest>", else -1. */
static long hf_layer_of(const char *name)
{
    static const char pre[] = "model.layers.";
    if (strncmp(name, pre, sizeof pre - 1)) return -1;
    const char *p = name + sizeof pre - 1;
    long l = 0;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((l = l * 10 + (*p - '0')) > INT_MAX) l = INT_MAX; /* saturate */
    return *p == '.' ? l : -1;
}

/* The number of layers the weights hold (highest model.layers.<l> + 1 over
 * every tensor of every file, and the weight_map) must be config.json's
 * num_hidden_layers: neither silently dropped nor silently missing. */
static losa_status hf_weights_layers_check(const hf_weights *w, const char *cfg_path,
                                           int n_layers)
{
    long top = -1;
    const char *where = w->weight_map ? w->index_path : w->files[0].path;
    for (int i = 0; i < w->n_files; i++)
        for (int j = 0; j < w->files[i].n; j++) {
            long l = hf_layer_of(w->files[i].t[j].name);
            if (l > top) top = l, where = w->files[i].path;
        }
    const cJSON *e;
    if (w->weight_map) cJSON_ArrayForEach(e, w->weight_map)
    {
        long l = hf_layer_of(e->string);
        if (l > top) top = l, where = w->index_path;
    }
    if (top + 1 == n_layers) return LOSA_OK;
    if (top < 0)
        return core_err(LOSA_ERR_FORMAT,
                        "%s: num_hidden_layers: %d, but %s holds no model.layers.* tensors",
                        cfg_path, n_layers, where);
    return core_err(LOSA_ERR_FORMAT,
                    "%s: num_hidden_layers: %d, but %s holds tensors of %ld layers "
                    "(model.layers.0 to model.layers.%ld); expected the two to agree",
                    cfg_path, n_layers, where, top + 1, top);
}

/* Old LLaMA checkpoints carry the RoPE frequencies as a tensor
 * model.layers.<l>.self_attn.rotary_emb.inv_freq (hd/2,).  losa computes
 * them from rope_theta (kern_rope_tables: theta^(-2i/hd)); the stored ones
 * are accepted only if they are those, to the precision of their dtype
 * (relative 1e-5 for F32, 2^-7 for F16/BF16, plus 2^-24 for F16 subnormals),
 * else the model uses other frequencies than the ones losa would apply. */
static losa_status hf_inv_freq_check(const io_st_file *f, const io_st_tensor *t,
                                     const model_config *c)
{
    int hd = model_head_size(c), half = hd / 2;
    int64_t shape[1] = {half};
    losa_status s = io_st_check(f, t, 1, shape);
    if (s != LOSA_OK) return s;
    float *x = core_calloc((size_t)half, sizeof(float));
    s = io_st_read_f32(f, t, x);
    double rel = t->dtype == IO_DTYPE_F32 ? 1e-5 : 1.0 / 128;
    for (int i = 0; s == LOSA_OK && i < half; i++) {
        double ref = pow((double)c->rope_theta, -2.0 * i / hd);
        if (!(fabs(x[i] - ref) <= rel * ref + 0x1p-24))
            s = core_err(LOSA_ERR_UNSUPPORTED,
                         "%s: tensor %s: inv_freq[%d] = %.9g, but config.json rope_theta "
                         "%g gives %.9g (expected plain RoPE frequencies theta^(-2i/%d))",
                         f->path, t->name, i, x[i], c->rope_theta, ref, hd);
    }
    core_free(x);
    return s;
}

/* A tensor the import does not consume: always an error, never dropped. */
static losa_status hf_unused_err(const char *path, const char *name, const model_config *c)
{
    size_t n = strlen(name);
    if (n >= 5 && !strcmp(name + n - 5, ".bias"))
        return core_err(LOSA_ERR_UNSUPPORTED,
                        "%s: tensor %s: biases are not supported; losa supports LLaMA-family "
                        "models without biases (expected no *.bias tensors)",
                        path, name);
    if (c->tie_embeddings && !strcmp(name, "lm_head.weight"))
        return core_err(LOSA_ERR_FORMAT,
                        "%s: tensor %s: present although config.json tie_word_embeddings is "
                        "true (expected no lm_head.weight, or tie_word_embeddings false)",
                        path, name);
    return core_err(LOSA_ERR_UNSUPPORTED,
                    "%s: tensor %s: unknown to a LLaMA/Mistral model of this config.json "
                    "(expected only the tensors it implies; refusing to drop it)",
                    path, name);
}

/* ---- the import ------------------------------------------------------------- */

/* Everything the import reads: config.json, tokenizer.json (no more ids than
 * vocab_size), the safetensors files (none of them, nor the index and side
 * files, the output; their layers those of the config).  On error nothing
 * is left open. */
static losa_status hf_inputs_open(const char *src_dir, const char *out_path, model_config *c,
                                  tok_tokenizer *tok, hf_weights *w)
{
    memset(tok, 0, sizeof *tok);
    struct stat sb;
    if (stat(src_dir, &sb) != 0)
        return core_err(LOSA_ERR_IO, "%s: cannot open: %s", src_dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return core_err(LOSA_ERR_ARG, "%s: not a directory (HF import expects one)", src_dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    losa_status s = io_hf_config_read(path, c);
    if (s != LOSA_OK) return s;

    snprintf(path, sizeof path, "%s/tokenizer.json", src_dir);
    s = tok_load_hf_json(tok, path);
    if (s != LOSA_OK) return s;
    if (tok->n_vocab > c->vocab_size) {
        s = core_err(LOSA_ERR_FORMAT,
                     "%s: vocabulary has %d tokens, more than config.json vocab_size %d",
                     path, tok->n_vocab, c->vocab_size);
        tok_free(tok);
        return s;
    }

    s = hf_weights_open(w, src_dir);
    if (s != LOSA_OK) {
        tok_free(tok);
        return s;
    }
    /* the store must not replace anything the import reads */
    s = io_out_not_input(out_path, src_dir);
    static const char *const side[] = {"config.json", "tokenizer.json"};
    for (size_t i = 0; s == LOSA_OK && i < sizeof side / sizeof side[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", src_dir, side[i]);
        s = io_out_not_input(out_path, path);
    }
    if (s == LOSA_OK && w->weight_map) s = io_out_not_input(out_path, w->index_path);
    for (int i = 0; s == LOSA_OK && i < w->n_files; i++)
        s = io_out_not_input(out_path, w->files[i].path);
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    if (s == LOSA_OK) s = hf_weights_layers_check(w, path, c->n_layers);
    if (s != LOSA_OK) {
        hf_weights_close(w);
        tok_free(tok);
    }
    return s;
}

/* A tensor of the store and where it is in the safetensors. */
typedef struct {
    io_hf_tensor x;
    const io_st_file *f;
    const io_st_tensor *t;
} hf_item;

/* used[first[f] + t]: tensor t of file f is consumed; every other one is an
 * error (unknown, bias, duplicate, left out of the weight_map). */
typedef struct {
    int *first;          /* (n_files + 1) */
    unsigned char *used; /* (tensors of all files) */
} hf_usage;

static void hf_usage_init(hf_usage *u, const hf_weights *w)
{
    u->first = core_calloc((size_t)w->n_files + 1, sizeof *u->first);
    for (int i = 0; i < w->n_files; i++) u->first[i + 1] = u->first[i] + w->files[i].n;
    u->used = core_calloc((size_t)u->first[w->n_files] + 1, 1);
}

static void hf_usage_free(hf_usage *u)
{
    free(u->used);
    free(u->first);
}

static unsigned char *hf_used(const hf_usage *u, const hf_weights *w, const io_st_file *f,
                              const io_st_tensor *t)
{
    return &u->used[u->first[f - w->files] + (t - f->t)];
}

/* Find and check every tensor of the store (*maxn: elements of the largest)
 * and the rotary_emb.inv_freq tensors, marking them used. */
static losa_status hf_items_find(const hf_weights *w, const model_config *c, hf_item *it,
                                 int n_items, const hf_usage *u, int64_t *maxn)
{
    losa_status s = LOSA_OK;
    *maxn = 0;
    for (int i = 0; s == LOSA_OK && i < n_items; i++) {
        s = hf_weights_find(w, it[i].x.hf, it[i].x.ndim, it[i].x.shape, &it[i].f, &it[i].t);
        if (s == LOSA_OK) *hf_used(u, w, it[i].f, it[i].t) = 1;
        int64_t nn = io_hf_tensor_numel(&it[i].x);
        if (nn > *maxn) *maxn = nn;
    }
    for (int l = 0; s == LOSA_OK && l < c->n_layers; l++) {
        const io_st_file *f;
        const io_st_tensor *t;
        char nm[64];
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.rotary_emb.inv_freq", l);
        if (hf_weights_locate(w, nm, &f, &t) != 0) continue;
        s = hf_inv_freq_check(f, t, c);
        if (s == LOSA_OK) *hf_used(u, w, f, t) = 1;
    }
    return s;
}

/* Every weight_map entry is in its file, and every tensor of every file
 * was used: nothing is dropped silently. */
static losa_status hf_unused_check(const hf_weights *w, const model_config *c,
                                   const hf_usage *u)
{
    losa_status s = LOSA_OK;
    const cJSON *e;
    if (w->weight_map) cJSON_ArrayForEach(e, w->weight_map)
    {
        const io_st_file *f;
        const io_st_tensor *t;
        int where = hf_weights_locate(w, e->string, &f, &t);
        if (where == 2)
            s = core_err(LOSA_ERR_FORMAT, "%s: weight_map: tensor %s: %s does not hold it",
                         w->index_path, e->string, f->path);
        else if (where == 0 && !*hf_used(u, w, f, t))
            s = hf_unused_err(w->index_path, e->string, c);
        if (s != LOSA_OK) return s;
    }
    for (int i = 0; s == LOSA_OK && i < w->n_files; i++)
        for (int j = 0; s == LOSA_OK && j < w->files[i].n; j++) {
            const io_st_file *f = &w->files[i];
            if (u->used[u->first[i] + j]) continue;
            const io_st_file *g;
            const io_st_tensor *t;
            if (io_st_find(f, f->t[j].name) != &f->t[j])
                s = core_err(LOSA_ERR_FORMAT,
                             "%s: tensor %s: listed twice in the header (expected once)",
                             f->path, f->t[j].name);
            else if (w->weight_map && hf_weights_locate(w, f->t[j].name, &g, &t) != 1)
                s = core_err(LOSA_ERR_FORMAT,
                             "%s: tensor %s: also in %s, where %s places it (expected in "
                             "one shard only)",
                             f->path, f->t[j].name, g->path, w->index_path);
            else
                s = hf_unused_err(f->path, f->t[j].name, c);
        }
    return s;
}

/* 1 if item it is written in bf16 into a store whose maps are bf16 (want:
 * the import's dtype): the maps, and the embedding and head when the
 * source has them in BF16 (keep) or always (bf16); norms stay fp32. */
static int hf_item_bf16(const hf_item *it, io_import_dtype want, int maps_bf16)
{
    if (!maps_bf16) return 0;
    if (it->x.is_map) return 1;
    if (strcmp(it->x.store, "/embed") && strcmp(it->x.store, "/head")) return 0;
    return want == IO_IMPORT_BF16 || it->t->dtype == IO_DTYPE_BF16;
}

/* All validated: write the store, tensor by tensor through one buffer of
 * maxn floats (a bf16 tensor is narrowed in place into its first half), and
 * commit it (on error nothing is left). */
static losa_status hf_store_write(const char *src_dir, const char *out_path,
                                  const model_config *c, const tok_tokenizer *tok,
                                  const hf_item *it, int n_items, int64_t maxn,
                                  io_import_dtype want, model_dtype *got)
{
    /* the maps' dtype: keep makes them bf16 when every map is BF16 at the source */
    int maps_bf16 = want == IO_IMPORT_BF16;
    if (want == IO_IMPORT_KEEP) {
        maps_bf16 = 1;
        for (int i = 0; i < n_items; i++)
            if (it[i].x.is_map && it[i].t->dtype != IO_DTYPE_BF16) maps_bf16 = 0;
    }
    *got = maps_bf16 ? MODEL_DTYPE_BF16 : MODEL_DTYPE_F32;
    io_store *st = NULL;
    losa_status s = io_store_create(&st, out_path);
    if (s != LOSA_OK) return s;
    char source[4200];
    snprintf(source, sizeof source, "hf:%s", src_dir);
    s = io_store_write_config(st, c, source);
    if (s == LOSA_OK) s = io_store_write_dtype(st, *got);
    float *buf = core_calloc((size_t)maxn, sizeof(float));
    for (int i = 0; s == LOSA_OK && i < n_items; i++) {
        int64_t nn = io_hf_tensor_numel(&it[i].x);
        s = io_st_read_f32(it[i].f, it[i].t, buf);
        for (int64_t j = 0; s == LOSA_OK && j < nn; j++)
            if (!isfinite(buf[j]))
                s = core_err(LOSA_ERR_NUMERIC, "%s: tensor %s: non-finite value at %lld",
                             it[i].f->path, it[i].x.hf, (long long)j);
        if (s != LOSA_OK) break;
        if (!hf_item_bf16(&it[i], want, maps_bf16)) {
            s = io_store_write_tensor(st, it[i].x.store, buf, it[i].x.ndim, it[i].x.shape);
            continue;
        }
        /* narrow in place: bf16 j (bytes [2j, 2j+2)) only overwrites floats
         * below j, already read.  A BF16 source comes back bit for bit; an
         * F32/F16 one rounds to nearest even, no non-zero becomes zero
         * (io_f32_to_bf16) and a value beyond bf16's range is an error. */
        uint16_t *hb = (uint16_t *)buf;
        for (int64_t j = 0; s == LOSA_OK && j < nn; j++) {
            float v = buf[j];
            hb[j] = io_f32_to_bf16(v);
            if ((hb[j] & 0x7f80u) == 0x7f80u)
                s = core_err(LOSA_ERR_NUMERIC, "%s: tensor %s: element %lld = %g overflows "
                             "bf16 (import with --dtype fp32)", it[i].f->path, it[i].x.hf,
                             (long long)j, (double)v);
        }
        if (s == LOSA_OK)
            s = io_store_write_tensor_bf16(st, it[i].x.store, hb, it[i].x.ndim, it[i].x.shape);
    }
    if (s == LOSA_OK) s = io_store_write_tokenizer(st, tok);
    if (s == LOSA_OK) s = io_store_commit(&st);
    io_store_close(&st); /* no-op after commit; removes the temporary on error */
    core_free(buf);
    return s;
}

losa_status io_import_hf(const char *src_dir, const char *out_path)
{
    model_dtype got;
    return io_import_hf_dtype(src_dir, out_path, IO_IMPORT_KEEP, &got);
}

losa_status io_import_hf_dtype(const char *src_dir, const char *out_path, io_import_dtype want,
                               model_dtype *got)
{
    *got = MODEL_DTYPE_F32;
    model_config c;
    tok_tokenizer tok;
    hf_weights w;
    losa_status s = hf_inputs_open(src_dir, out_path, &c, &tok, &w);
    if (s != LOSA_OK) return s;
    /* the tensors, in store order, each found and checked */
    io_hf_tensor *names = core_calloc((size_t)IO_HF_MAX_TENSORS(&c), sizeof *names);
    int n_items = io_hf_tensors(&c, names);
    hf_item *it = core_calloc((size_t)n_items, sizeof *it);
    for (int i = 0; i < n_items; i++) it[i].x = names[i];
    free(names);
    hf_usage u;
    hf_usage_init(&u, &w);
    int64_t maxn = 0;
    s = hf_items_find(&w, &c, it, n_items, &u, &maxn);
    if (s == LOSA_OK) s = hf_unused_check(&w, &c, &u);
    hf_usage_free(&u);
    if (s == LOSA_OK)
        s = hf_store_write(src_dir, out_path, &c, &tok, it, n_items, maxn, want, got);
    free(it);
    hf_weights_close(&w);
    tok_free(&tok);
    return s;
}
