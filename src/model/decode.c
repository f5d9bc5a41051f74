/* model/decode: KV cache, prefill and the one-token decode step (per stage
 * and through the pipeline).  The sparse copies of the maps are
 * model/sparse_maps.c.
 *
 * The prefill is the ordinary layer forward (model_layer_forward, which
 * already dispatches to the sparse maps through s->sparse) followed by a copy
 * of each layer's k (after RoPE) and v into the cache, so its logits are
 * bit-identical to model_stage_forward.  The decode step recomputes only the
 * new position: rmsnorm, q/k/v (sgemv or sparse_matvec), RoPE at pos,
 * attention of q over the cached keys 0..pos, wo, the SwiGLU MLP. */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "dist.h"
#include "kernels.h"
#include "model.h"

/* ------------------------------------------------------------ cache */

losa_status model_kv_cache_build(model_kv_cache *kv, const model_stage *s, int max_T)
{
    memset(kv, 0, sizeof *kv);
    const model_config *c = &s->cfg;
    if (max_T < 1 || max_T > c->max_seq_len)
        return core_err(LOSA_ERR_ARG, "kv cache: %d positions (expected 1..max_seq_len %d)",
                        max_T, c->max_seq_len);
    int64_t L = s->n_layers, kvd = model_kv_dim(c), hd = model_head_size(c), H = c->n_heads;
    size_t n = (size_t)(2 * L * max_T * kvd + max_T * hd + H * max_T);
    kv->mem = core_calloc(n, sizeof(float));
    kv->n_floats = n;
    kv->max_T = max_T;
    kv->n_layers = (int)L;
    kv->kv_dim = (int)kvd;
    kv->head_size = (int)hd;
    float *p = kv->mem;
    kv->k = p; p += L * max_T * kvd;
    kv->v = p; p += L * max_T * kvd;
    kv->rope_cos = p; p += max_T * hd / 2;
    kv->rope_sin = p; p += max_T * hd / 2;
    kv->scores = p; p += H * max_T;
    LOSA_CHECK((size_t)(p - kv->mem) == n);
    kern_rope_tables(kv->rope_cos, kv->rope_sin, max_T, (int)hd, c->rope_theta);
    return LOSA_OK;
}

void model_kv_cache_free(model_kv_cache *kv)
{
    if (!kv) return;
    core_free(kv->mem);
    memset(kv, 0, sizeof *kv);
}

/* ----------------------------------------------------------- prefill */

/* Every layer of the stage on a->x (1,T,D), copying k (after RoPE) and v
 * of positions 0..T-1 into the cache. */
static void prefill_layers(model_acts *a, model_kv_cache *kv, const model_stage *s, int T)
{
    size_t n = (size_t)T * kv->kv_dim, ld = (size_t)kv->max_T * kv->kv_dim;
    for (int l = 0; l < s->n_layers; l++) {
        model_layer_forward(a, s, l, 1, T);
        model_layer_acts la = model_acts_layer(a, s, l, 1, T);
        memcpy(kv->k + l * ld, la.k, sizeof(float) * n);
        memcpy(kv->v + l * ld, la.v, sizeof(float) * n);
    }
}

void model_stage_prefill(model_acts *a, model_kv_cache *kv, const model_stage *s,
                         const int *tokens, int T)
{
    LOSA_CHECK(T >= 1 && T <= a->T && T <= kv->max_T && kv->n_layers == s->n_layers);
    if (s->has_embed) model_stage_embed(a, s, tokens, 1, T);
    prefill_layers(a, kv, s, T);
    if (s->has_head) model_stage_head(a, s, 1, T);
}

/* ------------------------------------------------------- decode step */

/* Whether the step runs on OpenMP kernels only (the sparse path, or bf16
 * weights): then the attention may fork too. */
static int step_openmp(const model_stage *s)
{
    return s->sparse != NULL || s->dtype == MODEL_DTYPE_BF16;
}

/* y (out) = W (out, in) x, W fp32 (W) or bf16 (Wb, when set): bf16 weights
 * use the bf16-weight matvec of the sparse module; fp32 OpenBLAS sgemv on
 * the dense path; on the OpenMP paths (step_openmp) the maps left dense
 * and the head use the OpenMP dense matvec of the sparse module, so that
 * one thread pool runs the whole step (OpenBLAS and OpenMP workers spin
 * after each call and would steal each other's cores). */
static void dense_matvec(float *y, const float *x, const model_stage *s, const float *W,
                         const uint16_t *Wb, int out, int in)
{
    if (Wb) sparse_dense_matvec_bf16(y, Wb, out, in, x);
    else if (step_openmp(s)) sparse_dense_matvec(y, W, out, in, x);
    else cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, in, x, 1, 0.0f, y, 1);
}

/* A training adapter (lora module) is applied through its merged weff
 * (inference: no dropout). */
static void matvec(float *y, const float *x, const model_stage *s, int l, model_map m)
{
    const model_adapter_map *ad = s->adapter ? s->adapter->map(s->adapter->ctx, l, m) : NULL;
    if (!ad && s->sparse && model_sparse_linear(y, x, s->sparse, l, m, 1)) return;
    int o, i;
    model_map_shape(&s->cfg, m, &o, &i);
    dense_matvec(y, x, s, ad ? ad->weff : s->layers[l].w[m], ad ? NULL : s->layers[l].wb[m], o,
                 i);
}

/* ys[j] = map ms[j] of layer l applied to x for j < n, maps sharing x
 * (q, k, v; gate, up): when every one of them runs on a sparse copy, in
 * one sparse_matvec_group call (one OpenMP region: a thread done with one
 * map takes the next one's rows instead of waiting for the other's last
 * block), with the results of the separate calls; else map by map. */
static void matvec_group(float *const *ys, const float *x, const model_stage *s, int l,
                         const model_map *ms, int n)
{
    const sparse_matrix *mats[SPARSE_GROUP_MAX];
    int all = s->sparse && !s->adapter && n <= SPARSE_GROUP_MAX;
    for (int j = 0; all && j < n; j++) all = (mats[j] = model_sparse_map(s->sparse, l, ms[j], 1)) != NULL;
    if (all) {
        sparse_matvec_group(ys, mats, n, x);
        return;
    }
    for (int j = 0; j < n; j++) matvec(ys[j], x, s, l, ms[j]);
}

/* out (H*hd) = softmax(q K^T / sqrt(hd)) V over cached positions 0..pos
 * in one row (max, expf, sum, multiply by 1/sum; the dot products summed in
 * vector lanes): a single query needs no tiling; it agrees with the tiled
 * kern_attention_forward within rounding.  Heads are independent:
 * with par (the sparse path, whose kernels are OpenMP too) threads split
 * them once the work pays for the fork; the dense path's OpenBLAS workers
 * would spin against them.  sc: (H, pos + 1). */
static void attention_step(float *out, float *sc, const float *q, const float *K,
                           const float *Vv, int pos, int H, int Hkv, int hd, int par)
{
    int ks = Hkv * hd, grp = H / Hkv;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static) if (par && (int64_t)H * (pos + 1) * hd > (1 << 15))
    for (int h = 0; h < H; h++) {
        const float *qh = q + (int64_t)h * hd;
        const float *kb = K + (int64_t)(h / grp) * hd, *vb = Vv + (int64_t)(h / grp) * hd;
        float *sh = sc + (int64_t)h * (pos + 1);
        float mx = -FLT_MAX;
        for (int t = 0; t <= pos; t++) {
            const float *kt = kb + (int64_t)t * ks;
            float d = 0.0f;
#pragma omp simd reduction(+ : d)
            for (int j = 0; j < hd; j++) d += qh[j] * kt[j];
            sh[t] = scale * d;
            mx = sh[t] > mx ? sh[t] : mx;
        }
        float sum = 0.0f;
        for (int t = 0; t <= pos; t++) {
            sh[t] = expf(sh[t] - mx);
            sum += sh[t];
        }
        float inv = 1.0f / sum;
        float *oh = out + (int64_t)h * hd;
        for (int j = 0; j < hd; j++) oh[j] = 0.0f;
        for (int t = 0; t <= pos; t++) {
            float p = sh[t] * inv;
            const float *vt = vb + (int64_t)t * ks;
#pragma omp simd
            for (int j = 0; j < hd; j++) oh[j] += p * vt[j];
        }
    }
}

static void layer_step(model_acts *a, model_kv_cache *kv, const model_stage *s, int l, int pos)
{
    const model_config *c = &s->cfg;
    const model_layer *ly = &s->layers[l];
    int D = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads;
    int hd = kv->head_size, kvd = kv->kv_dim;
    size_t ld = (size_t)kv->max_T * kvd;
    float *K = kv->k + l * ld, *Vv = kv->v + l * ld;
    float *kpos = K + (size_t)pos * kvd, *vpos = Vv + (size_t)pos * kvd;
    const float *cs = kv->rope_cos + (size_t)pos * hd / 2, *sn = kv->rope_sin + (size_t)pos * hd / 2;
    kern_rmsnorm_forward(a->ln1, a->rstd1, a->x, ly->attn_norm, 1, D, c->rms_eps);
    float *qkv[3] = {a->q, kpos, vpos}, *gu[2] = {a->gate, a->up};
    static const model_map mqkv[3] = {MODEL_MAP_Q, MODEL_MAP_K, MODEL_MAP_V};
    static const model_map mgu[2] = {MODEL_MAP_GATE, MODEL_MAP_UP};
    matvec_group(qkv, a->ln1, s, l, mqkv, 3);
    kern_rope_forward(a->q, cs, sn, 1, 1, H, hd);
    kern_rope_forward(kpos, cs, sn, 1, 1, Hkv, hd);
    attention_step(a->atty, kv->scores, a->q, K, Vv, pos, H, Hkv, hd, step_openmp(s));
    matvec(a->tmp, a->atty, s, l, MODEL_MAP_O);
    kern_add_inplace(a->x, a->tmp, D);
    kern_rmsnorm_forward(a->ln2, a->rstd2, a->x, ly->ffn_norm, 1, D, c->rms_eps);
    matvec_group(gu, a->ln2, s, l, mgu, 2);
    kern_swiglu_forward(a->hid, a->gate, a->up, F);
    matvec(a->tmp, a->hid, s, l, MODEL_MAP_DOWN);
    kern_add_inplace(a->x, a->tmp, D);
}

static void stage_head_step(model_acts *a, const model_stage *s)
{
    const model_config *c = &s->cfg;
    kern_rmsnorm_forward(a->tmp, NULL, a->x, s->final_norm, 1, c->dim, c->rms_eps);
    dense_matvec(a->logits, a->tmp, s, s->head, s->head_bf16, c->vocab_size, c->dim);
}

void model_stage_decode_step(model_acts *a, model_kv_cache *kv, const model_stage *s,
                             int token, int pos)
{
    LOSA_CHECK(pos >= 0 && pos < kv->max_T && kv->n_layers == s->n_layers);
    LOSA_CHECK(!s->bf16_packed); /* the matvecs read plain rows (model_stage_to_bf16) */
    if (s->has_embed) model_stage_embed(a, s, &token, 1, 1);
    for (int l = 0; l < s->n_layers; l++) layer_step(a, kv, s, l, pos);
    if (s->has_head) stage_head_step(a, s);
}

/* ---------------------------------------------------------- pipeline */

void model_pipeline_prefill(dist_ctx *d, model_acts *a, model_kv_cache *kv,
                            const model_stage *s, const int *tokens, int T, int seq)
{
    LOSA_CHECK(T >= 1 && T <= a->T && T <= kv->max_T && kv->n_layers == s->n_layers);
    if (s->has_embed) model_stage_embed(a, s, tokens, 1, T);
    else model_stage_recv_input(d, s, a->x, T, MODEL_STAGE_TAG_FORWARD, seq);
    prefill_layers(a, kv, s, T);
    if (s->has_head) model_stage_head(a, s, 1, T);
    else model_stage_send_output(d, s, a->x, T, MODEL_STAGE_TAG_FORWARD, seq);
}

void model_pipeline_decode_step(dist_ctx *d, model_acts *a, model_kv_cache *kv,
                                const model_stage *s, int token, int pos, int seq)
{
    LOSA_CHECK(pos >= 0 && pos < kv->max_T);
    if (s->has_embed) model_stage_embed(a, s, &token, 1, 1);
    else model_stage_recv_input(d, s, a->x, 1, MODEL_STAGE_TAG_FORWARD, seq);
    for (int l = 0; l < s->n_layers; l++) layer_step(a, kv, s, l, pos);
    if (s->has_head) stage_head_step(a, s);
    else model_stage_send_output(d, s, a->x, 1, MODEL_STAGE_TAG_FORWARD, seq);
}
