/* Import a Hugging Face LLaMA / Mistral directory (config.json, safetensors
 * single file or shards + index, tokenizer.json) into a model store.  Every
 * input is validated (config fields, all tensor headers, dtypes and shapes,
 * the tokenizer) before the store is created; the store is written tensor by
 * tensor (one fp32 buffer of the largest tensor) and committed atomically. */
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

static losa_status hf_config_parse(const char *path, model_config *c)
{
    char *text = NULL;
    size_t n = 0;
    losa_status s = core_read_file(path, &text, &n);
    if (s != LOSA_OK) return s;
    cJSON *j = cJSON_ParseWithLength(text, n);
    if (!cJSON_IsObject(j)) {
        const char *at = cJSON_GetErrorPtr();
        long pos = j == NULL && at && at >= text && at <= text + n ? (long)(at - text) : -1;
        free(text);
        cJSON_Delete(j);
        if (pos >= 0)
            return core_err(LOSA_ERR_FORMAT, "%s: malformed JSON near byte %ld", path, pos);
        return core_err(LOSA_ERR_FORMAT, "%s: not a JSON object", path);
    }
    free(text);
    memset(c, 0, sizeof *c);
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
        /* Mistral: within the sliding window attention is plain causal */
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(j, "sliding_window");
        if (sw && cJSON_IsNumber(sw) && sw->valuedouble >= 1 &&
            sw->valuedouble < c->max_seq_len)
            c->max_seq_len = (int)sw->valuedouble;
    }
    cJSON_Delete(j);
    if (s == LOSA_OK) s = model_config_check(c, path);
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

/* Find and check tensor name with the given shape. */
static losa_status hf_weights_find(const hf_weights *w, const char *name, int ndim,
                                   const int64_t *shape, const io_st_file **f,
                                   const io_st_tensor **t)
{
    const io_st_file *file = &w->files[0];
    if (w->weight_map) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(w->weight_map, name);
        if (!cJSON_IsString(e))
            return core_err(LOSA_ERR_FORMAT, "%s: weight_map: tensor %s is missing",
                            w->index_path, name);
        file = NULL;
        const char *base;
        for (int i = 0; i < w->n_files && !file; i++) {
            base = strrchr(w->files[i].path, '/');
            base = base ? base + 1 : w->files[i].path;
            if (!strcmp(base, e->valuestring)) file = &w->files[i];
        }
        LOSA_CHECK(file != NULL);
    }
    const io_st_tensor *tt = io_st_find(file, name);
    if (!tt) return core_err(LOSA_ERR_FORMAT, "%s: tensor %s is missing", file->path, name);
    losa_status s = io_st_check(file, tt, ndim, shape);
    if (s != LOSA_OK) return s;
    *f = file;
    *t = tt;
    return LOSA_OK;
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
    int64_t maxn = 0;
    for (int i = 0; s == LOSA_OK && i < n_items; i++) {
        s = hf_weights_find(&w, it[i].hf, it[i].ndim, it[i].shape, &it[i].f, &it[i].t);
        int64_t nn = it[i].shape[0] * (it[i].ndim == 2 ? it[i].shape[1] : 1);
        if (nn > maxn) maxn = nn;
    }

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
