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

/* ---- config.json ------------------------------------------------------------ */

/* Integer field in [lo, INT_MAX]; absent -> *v = def (or error if def < lo). */
static losa_status hf_int(const cJSON *j, const char *path, const char *key, int lo,
                          int def, int *v)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!e || cJSON_IsNull(e)) {
        if (def < lo)
            return core_err(LOSA_ERR_FORMAT, "%s: %s: missing (expected an integer >= %d)",
                            path, key, lo);
        *v = def;
        return LOSA_OK;
    }
    double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
    if (!(d >= lo) || d > INT_MAX || d != floor(d))
        return core_err(LOSA_ERR_FORMAT, "%s: %s: expected an integer >= %d", path, key, lo);
    *v = (int)d;
    return LOSA_OK;
}

static losa_status hf_float(const cJSON *j, const char *path, const char *key,
                            double def, float *v)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!e || cJSON_IsNull(e)) {
        *v = (float)def;
        return LOSA_OK;
    }
    if (!cJSON_IsNumber(e) || !(e->valuedouble > 0) || !isfinite(e->valuedouble))
        return core_err(LOSA_ERR_FORMAT, "%s: %s: expected a positive number", path, key);
    *v = (float)e->valuedouble;
    return LOSA_OK;
}

losa_status io_config_check(const model_config *c, const char *what)
{
    const int64_t dmax = (int64_t)1 << 24, lmax = (int64_t)1 << 16;
    const struct { const char *name; int v; int64_t max; } f[] = {
        {"dim", c->dim, dmax}, {"hidden_dim", c->hidden_dim, dmax},
        {"n_layers", c->n_layers, lmax}, {"n_heads", c->n_heads, dmax},
        {"n_kv_heads", c->n_kv_heads, dmax}, {"vocab_size", c->vocab_size, dmax},
        {"max_seq_len", c->max_seq_len, dmax}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v > f[i].max)
            return core_err(LOSA_ERR_UNSUPPORTED, "%s: %s = %d is beyond the supported %lld",
                            what, f[i].name, f[i].v, (long long)f[i].max);
    losa_status s = model_config_check(c, what);
    if (s != LOSA_OK) return s;
    /* every factor < 2^24 and L < 2^16: each product below stays < 2^64 */
    int64_t D = c->dim, F = c->hidden_dim, V = c->vocab_size;
    int64_t per_layer = 2 * D + 2 * D * D + 2 * (int64_t)model_kv_dim(c) * D + 3 * F * D;
    int64_t n = 2 * V * D + D + per_layer * c->n_layers;
    if (n > ((int64_t)1 << 40))
        return core_err(LOSA_ERR_UNSUPPORTED, "%s: %lld parameters is beyond the supported 2^40",
                        what, (long long)n);
    return LOSA_OK;
}

losa_status io_hf_config_parse(const char *path, const char *text, size_t n, model_config *c)
{
    losa_status s = LOSA_OK;
    memset(c, 0, sizeof *c);
    cJSON *j = cJSON_ParseWithLength(text, n);
    if (!cJSON_IsObject(j)) {
        const char *at = cJSON_GetErrorPtr();
        long pos = j == NULL && at && at >= text && at <= text + n ? (long)(at - text) : -1;
        cJSON_Delete(j);
        if (pos >= 0)
            return core_err(LOSA_ERR_FORMAT, "%s: malformed JSON near byte %ld", path, pos);
        return core_err(LOSA_ERR_FORMAT, "%s: not a JSON object", path);
    }
    /* architecture */
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    if (!arch && !mt)
        s = core_err(LOSA_ERR_FORMAT, "%s: architectures: missing (and no model_type)", path);
    if (s == LOSA_OK && arch) {
        const cJSON *a0 = cJSON_IsArray(arch) ? cJSON_GetArrayItem(arch, 0) : NULL;
        if (!cJSON_IsString(a0))
            s = core_err(LOSA_ERR_FORMAT, "%s: architectures: expected a list of names", path);
        else if (strcmp(a0->valuestring, "LlamaForCausalLM") &&
                 strcmp(a0->valuestring, "MistralForCausalLM"))
            s = core_err(LOSA_ERR_UNSUPPORTED,
                         "%s: architectures: %s unsupported (LlamaForCausalLM or "
                         "MistralForCausalLM)",
                         path, a0->valuestring);
    }
    if (s == LOSA_OK && mt) {
        if (!cJSON_IsString(mt))
            s = core_err(LOSA_ERR_FORMAT, "%s: model_type: expected a string", path);
        else if (strcmp(mt->valuestring, "llama") && strcmp(mt->valuestring, "mistral"))
            s = core_err(LOSA_ERR_UNSUPPORTED,
                         "%s: model_type: %s unsupported (llama or mistral)", path,
                         mt->valuestring);
    }
    if (s == LOSA_OK) {
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
        if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu")))
            s = core_err(LOSA_ERR_UNSUPPORTED, "%s: hidden_act: only silu is supported", path);
    }
    if (s == LOSA_OK) {
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
        if (rs && !cJSON_IsNull(rs))
            s = core_err(LOSA_ERR_UNSUPPORTED, "%s: rope_scaling: not supported (must be null)",
                         path);
    }
    if (s == LOSA_OK) s = hf_int(j, path, "hidden_size", 1, 0, &c->dim);
    if (s == LOSA_OK) s = hf_int(j, path, "intermediate_size", 1, 0, &c->hidden_dim);
    if (s == LOSA_OK) s = hf_int(j, path, "num_hidden_layers", 1, 0, &c->n_layers);
    if (s == LOSA_OK) s = hf_int(j, path, "num_attention_heads", 1, 0, &c->n_heads);
    if (s == LOSA_OK)
        s = hf_int(j, path, "num_key_value_heads", 1, c->n_heads, &c->n_kv_heads);
    if (s == LOSA_OK) s = hf_int(j, path, "vocab_size", 1, 0, &c->vocab_size);
    if (s == LOSA_OK)
        s = hf_int(j, path, "max_position_embeddings", 1, 0, &c->max_seq_len);
    if (s == LOSA_OK) s = hf_float(j, path, "rms_norm_eps", 1e-6, &c->rms_eps);
    if (s == LOSA_OK) s = hf_float(j, path, "rope_theta", 10000.0, &c->rope_theta);
    if (s == LOSA_OK) s = hf_int(j, path, "bos_token_id", 0, 1, &c->bos_id);
    if (s == LOSA_OK) s = hf_int(j, path, "eos_token_id", 0, 2, &c->eos_id);
    if (s == LOSA_OK) {
        const cJSON *tie = cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings");
        if (tie && !cJSON_IsBool(tie))
            s = core_err(LOSA_ERR_FORMAT, "%s: tie_word_embeddings: expected true/false", path);
        c->tie_embeddings = cJSON_IsTrue(tie);
    }
    if (s == LOSA_OK) {
        const cJSON *hd = cJSON_GetObjectItemCaseSensitive(j, "head_dim");
        if (hd && !cJSON_IsNull(hd) &&
            (!cJSON_IsNumber(hd) || c->dim % c->n_heads ||
             hd->valuedouble != c->dim / c->n_heads))
            s = core_err(LOSA_ERR_UNSUPPORTED,
                         "%s: head_dim: must equal hidden_size / num_attention_heads", path);
    }
    if (s == LOSA_OK) {
        /* Mistral: attention restricted to the last sliding_window tokens.  It
         * is plain causal attention (what losa computes) only when no position
         * the model can run at reaches past the window. */
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(j, "sliding_window");
        if (sw && !cJSON_IsNull(sw)) {
            double v = cJSON_IsNumber(sw) ? sw->valuedouble : NAN;
            if (!(v >= 1) || v != floor(v))
                s = core_err(LOSA_ERR_FORMAT,
                             "%s: sliding_window: expected null or a positive integer", path);
            else if (v < c->max_seq_len)
                s = core_err(LOSA_ERR_UNSUPPORTED,
                             "%s: sliding_window: %.0f is smaller than "
                             "max_position_embeddings %d; sliding-window attention is not "
                             "supported (expected null or >= %d)",
                             path, v, c->max_seq_len, c->max_seq_len);
        }
    }
    /* biases on the projections (Qwen2-style attention_bias, mlp_bias): the
     * model code has none, so such a model cannot be imported faithfully */
    static const char *const bias_keys[] = {"attention_bias", "mlp_bias"};
    for (size_t b = 0; s == LOSA_OK && b < sizeof bias_keys / sizeof bias_keys[0]; b++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, bias_keys[b]);
        if (e && !cJSON_IsNull(e) && !cJSON_IsBool(e))
            s = core_err(LOSA_ERR_FORMAT, "%s: %s: expected true/false", path, bias_keys[b]);
        else if (cJSON_IsTrue(e))
            s = core_err(LOSA_ERR_UNSUPPORTED,
                         "%s: %s: true, but biases are not supported; losa supports "
                         "LLaMA-family models without biases (expected false)",
                         path, bias_keys[b]);
    }
    cJSON_Delete(j);
    if (s == LOSA_OK) s = io_config_check(c, path);
    return s;
}

static losa_status hf_config_parse(const char *path, model_config *c)
{
    char *text = NULL;
    size_t n = 0;
    losa_status s = core_read_file(path, &text, &n);
    if (s != LOSA_OK) return s;
    s = io_hf_config_parse(path, text, n, c);
    free(text);
    return s;
}

losa_status io_hf_config_read(const char *path, model_config *c)
{
    return hf_config_parse(path, c);
}

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
        w->files = calloc(1, sizeof *w->files);
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
    w->files = calloc((size_t)(cap > 0 ? cap : 1), sizeof *w->files);
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

typedef struct {
    char hf[96];    /* name in the safetensors */
    char store[64]; /* name in the store */
    const io_st_file *f;
    const io_st_tensor *t;
    int ndim;
    int64_t shape[2];
} hf_item;

losa_status io_import_hf(const char *src_dir, const char *out_path)
{
    struct stat sb;
    if (stat(src_dir, &sb) != 0)
        return core_err(LOSA_ERR_IO, "%s: cannot open: %s", src_dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return core_err(LOSA_ERR_ARG, "%s: not a directory (HF import expects one)", src_dir);
    char path[4200];
    model_config c;
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    losa_status s = hf_config_parse(path, &c);
    if (s != LOSA_OK) return s;

    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    snprintf(path, sizeof path, "%s/tokenizer.json", src_dir);
    s = tok_load_hf_json(&tok, path);
    if (s != LOSA_OK) return s;
    if (tok.n_vocab > c.vocab_size) {
        s = core_err(LOSA_ERR_FORMAT,
                     "%s: vocabulary has %d tokens, more than config.json vocab_size %d",
                     path, tok.n_vocab, c.vocab_size);
        tok_free(&tok);
        return s;
    }

    hf_weights w;
    s = hf_weights_open(&w, src_dir);
    if (s != LOSA_OK) {
        tok_free(&tok);
        return s;
    }
    /* the store must not replace anything the import reads */
    s = io_out_not_input(out_path, src_dir);
    static const char *const side[] = {"config.json", "tokenizer.json"};
    for (size_t i = 0; s == LOSA_OK && i < sizeof side / sizeof side[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", src_dir, side[i]);
        s = io_out_not_input(out_path, path);
    }
    if (s == LOSA_OK && w.weight_map) s = io_out_not_input(out_path, w.index_path);
    for (int i = 0; s == LOSA_OK && i < w.n_files; i++)
        s = io_out_not_input(out_path, w.files[i].path);
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    if (s == LOSA_OK) s = hf_weights_layers_check(&w, path, c.n_layers);
    if (s != LOSA_OK) {
        hf_weights_close(&w);
        tok_free(&tok);
        return s;
    }

    /* the tensors, in store order, each found and checked */
    int n_items = 2 + 9 * c.n_layers + (c.tie_embeddings ? 0 : 1);
    hf_item *it = calloc((size_t)n_items, sizeof *it);
    int64_t V = c.vocab_size, D = c.dim;
    int k = 0;
#define ITEM(STORE, ND, S0, S1)                                                 \
    do {                                                                        \
        snprintf(it[k].store, sizeof it[k].store, "%s", STORE);                  \
        it[k].ndim = ND;                                                        \
        it[k].shape[0] = S0;                                                    \
        it[k].shape[1] = S1;                                                    \
        k++;                                                                    \
    } while (0)
    snprintf(it[k].hf, sizeof it[k].hf, "model.embed_tokens.weight");
    ITEM("/embed", 2, V, D);
    static const char *proj[MODEL_N_MAPS] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    char nm[64];
    for (int l = 0; l < c.n_layers; l++) {
        snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.input_layernorm.weight", l);
        io_layer_name(nm, sizeof nm, l, "attn_norm");
        ITEM(nm, 1, D, 0);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&c, (model_map)m, &o, &i);
            snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.%s.weight", l, proj[m]);
            io_layer_name(nm, sizeof nm, l, model_map_name((model_map)m));
            ITEM(nm, 2, o, i);
        }
        snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.post_attention_layernorm.weight", l);
        io_layer_name(nm, sizeof nm, l, "ffn_norm");
        ITEM(nm, 1, D, 0);
    }
    snprintf(it[k].hf, sizeof it[k].hf, "model.norm.weight");
    ITEM("/final_norm", 1, D, 0);
    if (!c.tie_embeddings) {
        snprintf(it[k].hf, sizeof it[k].hf, "lm_head.weight");
        ITEM("/head", 2, V, D);
    }
#undef ITEM
    LOSA_CHECK(k == n_items);
    /* used[first[f] + t]: tensor t of file f is consumed; every other one is
     * an error (unknown, bias, duplicate, left out of the weight_map) */
    int *first = calloc((size_t)w.n_files + 1, sizeof *first);
    for (int i = 0; i < w.n_files; i++) first[i + 1] = first[i] + w.files[i].n;
    unsigned char *used = calloc((size_t)first[w.n_files] + 1, 1);
#define USED(F, T) used[first[(F) - w.files] + ((T) - (F)->t)]
    int64_t maxn = 0;
    for (int i = 0; s == LOSA_OK && i < n_items; i++) {
        s = hf_weights_find(&w, it[i].hf, it[i].ndim, it[i].shape, &it[i].f, &it[i].t);
        if (s == LOSA_OK) USED(it[i].f, it[i].t) = 1;
        int64_t nn = it[i].shape[0] * (it[i].ndim == 2 ? it[i].shape[1] : 1);
        if (nn > maxn) maxn = nn;
    }
    for (int l = 0; s == LOSA_OK && l < c.n_layers; l++) {
        const io_st_file *f;
        const io_st_tensor *t;
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.rotary_emb.inv_freq", l);
        if (hf_weights_locate(&w, nm, &f, &t) != 0) continue;
        s = hf_inv_freq_check(f, t, &c);
        if (s == LOSA_OK) USED(f, t) = 1;
    }
    if (s == LOSA_OK && w.weight_map) {
        const cJSON *e;
        cJSON_ArrayForEach(e, w.weight_map)
        {
            const io_st_file *f;
            const io_st_tensor *t;
            int where = hf_weights_locate(&w, e->string, &f, &t);
            if (where == 2)
                s = core_err(LOSA_ERR_FORMAT, "%s: weight_map: tensor %s: %s does not hold it",
                             w.index_path, e->string, f->path);
            else if (where == 0 && !USED(f, t))
                s = hf_unused_err(w.index_path, e->string, &c);
            if (s != LOSA_OK) break;
        }
    }
    for (int i = 0; s == LOSA_OK && i < w.n_files; i++)
        for (int j = 0; s == LOSA_OK && j < w.files[i].n; j++) {
            const io_st_file *f = &w.files[i];
            if (used[first[i] + j]) continue;
            const io_st_file *g;
            const io_st_tensor *u;
            if (io_st_find(f, f->t[j].name) != &f->t[j])
                s = core_err(LOSA_ERR_FORMAT,
                             "%s: tensor %s: listed twice in the header (expected once)",
                             f->path, f->t[j].name);
            else if (w.weight_map && hf_weights_locate(&w, f->t[j].name, &g, &u) != 1)
                s = core_err(LOSA_ERR_FORMAT,
                             "%s: tensor %s: also in %s, where %s places it (expected in "
                             "one shard only)",
                             f->path, f->t[j].name, g->path, w.index_path);
            else
                s = hf_unused_err(f->path, f->t[j].name, &c);
        }
#undef USED
    free(used);
    free(first);

    /* all validated: write */
    io_store *st = NULL;
    float *buf = NULL;
    if (s == LOSA_OK) s = io_store_create(&st, out_path);
    if (s == LOSA_OK) {
        char source[4200];
        snprintf(source, sizeof source, "hf:%s", src_dir);
        s = io_store_write_config(st, &c, source);
        buf = core_calloc((size_t)maxn, sizeof(float));
    }
    for (int i = 0; s == LOSA_OK && i < n_items; i++) {
        s = io_st_read_f32(it[i].f, it[i].t, buf);
        for (int64_t j = 0, nn = it[i].shape[0] * (it[i].ndim == 2 ? it[i].shape[1] : 1);
             s == LOSA_OK && j < nn; j++)
            if (!isfinite(buf[j]))
                s = core_err(LOSA_ERR_NUMERIC, "%s: tensor %s: non-finite value at %lld",
                             it[i].f->path, it[i].hf, (long long)j);
        if (s == LOSA_OK)
            s = io_store_write_tensor(st, it[i].store, buf, it[i].ndim, it[i].shape);
    }
    if (s == LOSA_OK) s = io_store_write_tokenizer(st, &tok);
    if (s == LOSA_OK) s = io_store_commit(&st);
    io_store_close(&st); /* no-op after commit; removes the temporary on error */
    core_free(buf);
    free(it);
    hf_weights_close(&w);
    tok_free(&tok);
    return s;
}
