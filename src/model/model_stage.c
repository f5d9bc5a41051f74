/* model_stage: minimal stage building (io branch stand-in; the lead's version
 * of this file replaces it at merge).  Follows include/model.h: one parameter
 * block, pointers into it in the order embed, per layer attn_norm, w[0..6],
 * ffn_norm, then final_norm, head. */
#include "model.h"

#include <string.h>

losa_status model_config_check(const model_config *c, const char *what)
{
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->vocab_size <= 0 || c->max_seq_len <= 0)
        return core_err(LOSA_ERR_FORMAT,
                        "%s: dimensions must be positive (dim %d hidden_dim %d "
                        "n_layers %d n_heads %d n_kv_heads %d vocab_size %d "
                        "max_seq_len %d)",
                        what, c->dim, c->hidden_dim, c->n_layers, c->n_heads,
                        c->n_kv_heads, c->vocab_size, c->max_seq_len);
    if (c->dim % c->n_heads != 0)
        return core_err(LOSA_ERR_FORMAT, "%s: dim %d not divisible by n_heads %d",
                        what, c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return core_err(LOSA_ERR_FORMAT,
                        "%s: n_heads %d not divisible by n_kv_heads %d", what,
                        c->n_heads, c->n_kv_heads);
    if ((c->dim / c->n_heads) % 2 != 0)
        return core_err(LOSA_ERR_FORMAT, "%s: head size %d must be even (RoPE)",
                        what, c->dim / c->n_heads);
    if (!(c->rms_eps > 0) || !(c->rope_theta > 0))
        return core_err(LOSA_ERR_FORMAT, "%s: rms_eps %g and rope_theta %g must be > 0",
                        what, c->rms_eps, c->rope_theta);
    if (c->bos_id >= c->vocab_size || c->eos_id >= c->vocab_size)
        return core_err(LOSA_ERR_FORMAT, "%s: bos_id %d / eos_id %d outside vocab %d",
                        what, c->bos_id, c->eos_id, c->vocab_size);
    return LOSA_OK;
}

static int64_t layer_params(const model_config *c)
{
    int64_t D = c->dim, F = c->hidden_dim, kvD = model_kv_dim(c);
    return 2 * D + 2 * D * D + 2 * kvD * D + 3 * F * D;
}

int64_t model_param_count(const model_config *c)
{
    int64_t V = c->vocab_size, D = c->dim;
    return V * D + (int64_t)c->n_layers * layer_params(c) + D +
           (c->tie_embeddings ? 0 : V * D);
}

const char *model_map_name(model_map m)
{
    static const char *names[MODEL_N_MAPS] = {"wq", "wk", "wv", "wo",
                                              "w_gate", "w_up", "w_down"};
    LOSA_CHECK(m >= 0 && m < MODEL_N_MAPS);
    return names[m];
}

void model_map_shape(const model_config *c, model_map m, int *out, int *in)
{
    int D = c->dim, F = c->hidden_dim, kvD = model_kv_dim(c);
    switch (m) {
    case MODEL_MAP_Q: case MODEL_MAP_O: *out = D; *in = D; break;
    case MODEL_MAP_K: case MODEL_MAP_V: *out = kvD; *in = D; break;
    case MODEL_MAP_GATE: case MODEL_MAP_UP: *out = F; *in = D; break;
    case MODEL_MAP_DOWN: *out = D; *in = F; break;
    default: LOSA_CHECK(0);
    }
}

void model_split_layers(const model_config *c, int P, int *first, int *count)
{
    LOSA_CHECK(P >= 1 && P <= c->n_layers);
    int L = c->n_layers, at = 0;
    for (int p = 0; p < P; p++) {
        count[p] = L / P + (p < L % P ? 1 : 0);
        first[p] = at;
        at += count[p];
    }
}

losa_status model_stage_build(model_stage *s, const model_config *c, int stage,
                              int n_stages)
{
    memset(s, 0, sizeof *s);
    losa_status st = model_config_check(c, "model config");
    if (st != LOSA_OK) return st;
    if (n_stages < 1 || n_stages > c->n_layers || stage < 0 || stage >= n_stages)
        return core_err(LOSA_ERR_ARG, "stage %d of %d invalid for %d layers", stage,
                        n_stages, c->n_layers);
    int first[n_stages], count[n_stages];
    model_split_layers(c, n_stages, first, count);
    s->cfg = *c;
    s->stage = stage;
    s->n_stages = n_stages;
    s->layer0 = first[stage];
    s->n_layers = count[stage];
    s->has_embed = stage == 0;
    s->has_head = stage == n_stages - 1;
    int64_t V = c->vocab_size, D = c->dim;
    int need_embed = s->has_embed || (s->has_head && c->tie_embeddings);
    size_t n = 0;
    if (need_embed) n += (size_t)(V * D);
    n += (size_t)s->n_layers * (size_t)layer_params(c);
    if (s->has_head) n += (size_t)D + (c->tie_embeddings ? 0 : (size_t)(V * D));
    s->params = core_calloc(n, sizeof(float));
    s->n_params = n;
    s->layers = core_calloc((size_t)s->n_layers, sizeof(model_layer));
    float *p = s->params;
    if (need_embed) { s->embed = p; p += V * D; }
    for (int l = 0; l < s->n_layers; l++) {
        model_layer *ly = &s->layers[l];
        ly->attn_norm = p; p += D;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            ly->w[m] = p; p += (int64_t)o * i;
        }
        ly->ffn_norm = p; p += D;
    }
    if (s->has_head) {
        s->final_norm = p; p += D;
        if (c->tie_embeddings) s->head = s->embed;
        else { s->head = p; p += V * D; }
    }
    LOSA_CHECK((size_t)(p - s->params) == n);
    return LOSA_OK;
}

void model_stage_free(model_stage *s)
{
    if (!s) return;
    core_free(s->params);
    core_free(s->layers);
    memset(s, 0, sizeof *s);
}

static void fill(float *x, int64_t n, uint64_t seed, float mean, float std)
{
    core_rng r;
    core_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = mean + std * core_rng_normal(&r);
}

void model_stage_randomize(model_stage *s, uint64_t seed, float std)
{
    const model_config *c = &s->cfg;
    int64_t V = c->vocab_size, D = c->dim;
    uint64_t base = seed * 1000003ull;
    if (s->embed) fill(s->embed, V * D, base + 1, 0, std);
    for (int l = 0; l < s->n_layers; l++) {
        uint64_t g = base + 100ull * (uint64_t)(s->layer0 + l + 1);
        model_layer *ly = &s->layers[l];
        fill(ly->attn_norm, D, g + 10, 1, 0.1f);
        fill(ly->ffn_norm, D, g + 11, 1, 0.1f);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            fill(ly->w[m], (int64_t)o * i, g + (uint64_t)m, 0, std);
        }
    }
    if (s->has_head) {
        fill(s->final_norm, D, base + 2, 1, 0.1f);
        if (!c->tie_embeddings) fill(s->head, V * D, base + 3, 0, std);
    }
}
