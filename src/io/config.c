/* io config: a model configuration from outside (Hugging Face config.json,
 * the llama2.c header) parsed and checked against what the model code
 * computes and what 64-bit size arithmetic can hold, before anything is
 * sized from it.  Errors name the file and the key. */
#include "io.h"
#include "io_internal.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* architectures / model_type / hidden_act / rope_scaling: a LLaMA or
 * Mistral model that computes what losa computes. */
static losa_status hf_config_arch(const cJSON *j, const char *path)
{
    losa_status s = LOSA_OK;
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
    return s;
}

/* The dimensions, norms, RoPE, special ids and tying into c. */
static losa_status hf_config_fields(const cJSON *j, const char *path, model_config *c)
{
    losa_status s = hf_int(j, path, "hidden_size", 1, 0, &c->dim);
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
    return s;
}

/* What the model code cannot compute faithfully: a sliding window shorter
 * than the context, biases on the projections. */
static losa_status hf_config_refusals(const cJSON *j, const char *path, const model_config *c)
{
    losa_status s = LOSA_OK;
    /* Mistral: attention restricted to the last sliding_window tokens.  It is
     * plain causal attention (what losa computes) only when no position the
     * model can run at reaches past the window. */
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
    return s;
}

losa_status io_hf_config_parse(const char *path, const char *text, size_t n, model_config *c)
{
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
    losa_status s = hf_config_arch(j, path);
    if (s == LOSA_OK) s = hf_config_fields(j, path, c);
    if (s == LOSA_OK) s = hf_config_refusals(j, path, c);
    cJSON_Delete(j);
    if (s == LOSA_OK) s = io_config_check(c, path);
    return s;
}

losa_status io_hf_config_read(const char *path, model_config *c)
{
    char *text = NULL;
    size_t n = 0;
    losa_status s = core_read_file(path, &text, &n);
    if (s != LOSA_OK) return s;
    s = io_hf_config_parse(path, text, n, c);
    free(text);
    return s;
}

/* ---- the llama2.c header ----------------------------------------------------- */

losa_status io_l2c_header_parse(const char *ckpt, const int32_t h[7], uint64_t fsize,
                                model_config *c)
{
    memset(c, 0, sizeof *c);
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    int shared = h[5] > 0;
    c->vocab_size = h[5] == INT32_MIN ? 0 : abs(h[5]);
    c->max_seq_len = h[6];
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->tie_embeddings = shared;
    c->bos_id = 1;
    c->eos_id = 2;
    /* bounds every dimension, so the sizes below cannot overflow */
    losa_status s = io_config_check(c, ckpt);
    if (s != LOSA_OK) return s;
    int64_t V = c->vocab_size, D = c->dim, F = c->hidden_dim, L = c->n_layers;
    int64_t kvD = model_kv_dim(c), hd = model_head_size(c), T = c->max_seq_len;
    int64_t n_floats = V * D + L * (2 * D + 2 * D * D + 2 * kvD * D + 3 * F * D) + D + T * hd +
                       (shared ? 0 : V * D);
    uint64_t want = 28 + 4 * (uint64_t)n_floats;
    if (fsize != want)
        return core_err(fsize < want ? LOSA_ERR_IO : LOSA_ERR_FORMAT,
                        "%s: file size: %llu bytes, but the header (dim %d hidden_dim %d "
                        "n_layers %d n_heads %d n_kv_heads %d vocab_size %d seq_len %d) "
                        "implies %llu%s",
                        ckpt, (unsigned long long)fsize, h[0], h[1], h[2], h[3], h[4],
                        h[5], h[6], (unsigned long long)want,
                        fsize < want ? " (truncated)" : "");
    return LOSA_OK;
}

/* ---- what a config implies ------------------------------------------------- */

double io_float_shortest(float f)
{
    char buf[32];
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

static void hf_tensor_set(io_hf_tensor *t, int ndim, int64_t s0, int64_t s1, int is_map)
{
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = s1;
    t->is_map = is_map;
}

int io_hf_tensors(const model_config *c, io_hf_tensor *it)
{
    static const char *const proj[MODEL_N_MAPS] = {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    int k = 0;
    int64_t V = c->vocab_size, D = c->dim;
    snprintf(it[k].hf, sizeof it[k].hf, "model.embed_tokens.weight");
    snprintf(it[k].store, sizeof it[k].store, "/embed");
    hf_tensor_set(&it[k++], 2, V, D, 0);
    for (int l = 0; l < c->n_layers; l++) {
        snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.input_layernorm.weight", l);
        io_layer_name(it[k].store, sizeof it[k].store, l, "attn_norm");
        hf_tensor_set(&it[k++], 1, D, 0, 0);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.%s.weight", l, proj[m]);
            io_layer_name(it[k].store, sizeof it[k].store, l, model_map_name((model_map)m));
            hf_tensor_set(&it[k++], 2, o, i, 1);
        }
        snprintf(it[k].hf, sizeof it[k].hf, "model.layers.%d.post_attention_layernorm.weight",
                 l);
        io_layer_name(it[k].store, sizeof it[k].store, l, "ffn_norm");
        hf_tensor_set(&it[k++], 1, D, 0, 0);
    }
    snprintf(it[k].hf, sizeof it[k].hf, "model.norm.weight");
    snprintf(it[k].store, sizeof it[k].store, "/final_norm");
    hf_tensor_set(&it[k++], 1, D, 0, 0);
    if (!c->tie_embeddings) {
        snprintf(it[k].hf, sizeof it[k].hf, "lm_head.weight");
        snprintf(it[k].store, sizeof it[k].store, "/head");
        hf_tensor_set(&it[k++], 2, V, D, 0);
    }
    return k;
}

int64_t io_hf_tensor_numel(const io_hf_tensor *t)
{
    return t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
}
