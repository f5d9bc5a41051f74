/* model backward: layer, head, stage (with optional activation
 * checkpointing).  Gradients flow to activations and to the adapters' dense
 * delta gradient dDelta only; W, norms, embedding and head stay frozen.
 *
 * Linear map with adapter (y = x W^T + drop(x) Delta^T), given dy (N,out):
 *   dDelta += dy^T drop(x)                          one GEMM (out,in)
 *   dx     += dy W + (dy Delta) ⊙ dropmask/(1-p)    dropout p > 0
 *   dx     += dy (W + Delta)                        dropout 0: one GEMM
 * The lora module turns dDelta into dA, dB: once per optimizer step from
 * the accumulated dDelta (persistent buffers), or right after each map's
 * backward (transient: s->adapter->grad). */
#include <string.h>

#include "kernels.h"
#include "model.h"

/* Floats of the backward scratch (model_bwd_build). */
static size_t bwd_floats(const model_config *c, int has_head, int64_t B, int64_t T)
{
    int64_t N = B * T, D = c->dim, F = c->hidden_dim, kv = model_kv_dim(c);
    int64_t wmax = F > D ? F : D;
    return (size_t)(N * D * 4 + N * kv * 2 + N * F * 3 + N * wmax +
                    (has_head ? N * c->vocab_size + N : 0));
}

size_t model_bwd_bytes(const model_config *c, int has_head, int B, int T)
{
    return core_alloc_bytes(bwd_floats(c, has_head, B, T), sizeof(float));
}

losa_status model_bwd_build(model_bwd *g, const model_stage *s, int B, int T)
{
    memset(g, 0, sizeof *g);
    if (model_stage_require_plain(s, "backward (training)") != LOSA_OK) return LOSA_ERR_ARG;
    const model_config *c = &s->cfg;
    int64_t N = (int64_t)B * T, D = c->dim, F = c->hidden_dim, kv = model_kv_dim(c);
    int64_t wmax = F > D ? F : D;
    size_t n = bwd_floats(c, s->has_head, B, T);
    g->mem = core_calloc(n, sizeof(float));
    g->n_floats = n;
    g->B = B;
    g->T = T;
    float *p = g->mem;
#define TAKE(ptr, cnt) do { ptr = p; p += (cnt); } while (0)
    TAKE(g->dx, N * D);
    TAKE(g->dln, N * D);
    TAKE(g->datty, N * D);
    TAKE(g->dq, N * D);
    TAKE(g->dk, N * kv);
    TAKE(g->dv, N * kv);
    TAKE(g->dgate, N * F);
    TAKE(g->dup, N * F);
    TAKE(g->dhid, N * F);
    TAKE(g->dtmp, N * wmax);
    if (s->has_head) {
        TAKE(g->dlogits, N * c->vocab_size);
        TAKE(g->rstdf, N);
    }
#undef TAKE
    LOSA_CHECK((size_t)(p - g->mem) == n);
    return LOSA_OK;
}

void model_bwd_free(model_bwd *g)
{
    if (!g) return;
    core_free(g->mem);
    memset(g, 0, sizeof *g);
}

/* dDelta (o,i) += dy^T x of a bf16 run: dy and x rounded to bf16 (the
 * activations in bf16, as the maps' products take them), fp32 accumulation
 * into the fp32 dDelta: the bf16 rate for the third of the backward's
 * matrix work that the weight gradients are (fp32 ran them at half of it). */
static void ddelta_bf16(float *ddelta, const float *dy, const float *x, int64_t N, int i, int o)
{
    kern_gemm_bf16r(1, 0, o, i, N, 1.0f, dy, o, x, i, 1.0f, ddelta, i);
}

static void linear_backward_bf16(model_bwd *g, float *dx, const float *dy, const float *x,
                                 const model_acts *a, const model_stage *s, int l, model_map m,
                                 int64_t N)
{
    const uint16_t *W = s->layers[l].wb[m];
    const model_adapter *path = s->adapter;
    const model_adapter_map *ad = path ? path->map(path->ctx, l, m) : NULL;
    int o, i;
    model_map_shape(&s->cfg, m, &o, &i);
    LOSA_CHECK(!s->bf16_packed);
    if (!ad) {
        kern_gemm_bf16w(0, N, i, o, 1.0f, dy, o, W, i, 1.0f, dx, i);
        return;
    }
    if (path->grad) kern_zero(ad->ddelta, (int64_t)o * i);
    if (a->drop_p <= 0.0f) {
        kern_gemm_bf16w(0, N, i, o, 1.0f, dy, o, ad->weffb, i, 1.0f, dx, i);
        ddelta_bf16(ad->ddelta, dy, x, N, i, o);
        if (path->grad) path->grad(path->ctx, l, m);
        return;
    }
    /* dx += dy W, dtmp = dy deltab: dy rounded once */
    kern_gemm_bf16w2(0, N, i, o, 1.0f, dy, o, W, ad->deltab, i, 1.0f, dx, 0.0f, g->dtmp, i);
    model_drop_backward(dx, a->xdrop, g->dtmp, x, a->drop_seed, s->layer0 + l, m, N * i,
                        a->drop_p);
    ddelta_bf16(ad->ddelta, dy, a->xdrop, N, i, o);
    if (path->grad) path->grad(path->ctx, l, m);
}

/* dx (N,in) += d/dx of map m given dy (N,out) and input x (N,in);
 * accumulates dDelta when the map has an adapter. */
static void linear_backward(model_bwd *g, float *dx, const float *dy,
                            const float *x, const model_acts *a,
                            const model_stage *s, int l, model_map m, int64_t N)
{
    if (s->dtype == MODEL_DTYPE_BF16) {
        linear_backward_bf16(g, dx, dy, x, a, s, l, m, N);
        return;
    }
    const model_layer *ly = &s->layers[l];
    const model_adapter *path = s->adapter;
    const model_adapter_map *ad = path ? path->map(path->ctx, l, m) : NULL;
    int o, i;
    model_map_shape(&s->cfg, m, &o, &i);
    if (!ad) {
        kern_matmul_backward_inp(dx, dy, ly->w[m], N, i, o);
        return;
    }
    /* a transient dDelta is this micro-batch's alone (then consumed) */
    if (path->grad) kern_zero(ad->ddelta, (int64_t)o * i);
    if (a->drop_p <= 0.0f) {
        kern_matmul_backward_inp(dx, dy, ad->weff, N, i, o);
        kern_matmul_backward_w(ad->ddelta, dy, x, N, i, o);
        if (path->grad) path->grad(path->ctx, l, m);
        return;
    }
    kern_matmul_backward_inp(dx, dy, ly->w[m], N, i, o);
    kern_zero(g->dtmp, N * i);
    kern_matmul_backward_inp(g->dtmp, dy, ad->delta, N, i, o);
    /* one pass regenerates the mask: dx on the branch, drop(x) for dDelta */
    model_drop_backward(dx, a->xdrop, g->dtmp, x, a->drop_seed, s->layer0 + l, m, N * i,
                        a->drop_p);
    kern_matmul_backward_w(ad->ddelta, dy, a->xdrop, N, i, o);
    if (path->grad) path->grad(path->ctx, l, m);
}

void model_layer_backward(model_bwd *g, float *dx, const model_acts *a,
                          const model_stage *s, int l, int B, int T)
{
    const model_config *c = &s->cfg;
    const model_layer *ly = &s->layers[l];
    LOSA_CHECK(a->save != MODEL_ACTS_NOSAVE);
    LOSA_CHECK(B <= g->B && T <= g->T);
    model_layer_acts la = model_acts_layer(a, s, l, B, T);
    int64_t N = (int64_t)B * T, D = c->dim, F = c->hidden_dim, kv = model_kv_dim(c);
    int H = c->n_heads, Hkv = c->n_kv_heads, hd = model_head_size(c);

    /* ffn: x2 = x1 + down(swiglu(gate(ln2), up(ln2))), ln2 = norm(x1) */
    kern_zero(g->dhid, N * F);
    linear_backward(g, g->dhid, dx, la.hid, a, s, l, MODEL_MAP_DOWN, N);
    kern_swiglu_backward_set(g->dgate, g->dup, g->dhid, la.gate, la.up, N * F);
    kern_zero(g->dln, N * D);
    linear_backward(g, g->dln, g->dgate, la.ln2, a, s, l, MODEL_MAP_GATE, N);
    linear_backward(g, g->dln, g->dup, la.ln2, a, s, l, MODEL_MAP_UP, N);
    kern_rmsnorm_backward(dx, g->dln, la.xres, ly->ffn_norm, la.rstd2, N, (int)D);

    /* attention: x1 = x0 + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1))) */
    kern_zero(g->datty, N * D);
    linear_backward(g, g->datty, dx, la.atty, a, s, l, MODEL_MAP_O, N);
    kern_zero(g->dq, N * D);
    kern_zero(g->dk, N * kv);
    kern_zero(g->dv, N * kv);
    kern_attention_backward(g->dq, g->dk, g->dv, g->datty, la.atty, la.att, la.q, la.k,
                            la.v, B, T, H, Hkv, hd);
    kern_rope_backward(g->dq, a->rope_cos, a->rope_sin, B, T, H, hd);
    kern_rope_backward(g->dk, a->rope_cos, a->rope_sin, B, T, Hkv, hd);
    kern_zero(g->dln, N * D);
    linear_backward(g, g->dln, g->dq, la.ln1, a, s, l, MODEL_MAP_Q, N);
    linear_backward(g, g->dln, g->dk, la.ln1, a, s, l, MODEL_MAP_K, N);
    linear_backward(g, g->dln, g->dv, la.ln1, a, s, l, MODEL_MAP_V, N);
    kern_rmsnorm_backward(dx, g->dln, la.xin, ly->attn_norm, la.rstd1, N, (int)D);
}

double model_head_backward(model_bwd *g, float *dx, const model_acts *a,
                           const model_stage *s, const int *targets, int B, int T,
                           float scale, int64_t *n)
{
    const model_config *c = &s->cfg;
    LOSA_CHECK(s->has_head && g->dlogits);
    int64_t N = (int64_t)B * T, D = c->dim, V = c->vocab_size;
    int64_t cnt = 0;
    for (int64_t i = 0; i < N; i++) cnt += targets[i] >= 0;
    *n = cnt;
    /* logits = norm(x) head^T: d norm(x) = dlogits head, then the norm */
    double nll;
    kern_zero(g->dln, N * D);
    if (s->head_bf16) {
        /* plain rows (model_stage_build_dtype, model_stage_to_bf16; packed:
         * refused at build).
         * The product rounds dlogits to bf16 anyway: the loss writes it in
         * bf16 (the same bits), into the first half of the fp32 buffer. */
        uint16_t *dlb = (uint16_t *)g->dlogits;
        nll = kern_crossentropy_forward_backward_bf16(dlb, a->logits, targets, N, (int)V, scale);
        kern_gemm_bf16a(0, N, D, V, 1.0f, dlb, V, s->head_bf16, D, 1.0f, g->dln, D);
    } else {
        nll = kern_crossentropy_forward_backward_set(g->dlogits, a->logits, targets, N, (int)V,
                                                     scale);
        kern_matmul_backward_inp(g->dln, g->dlogits, s->head, N, (int)D, (int)V);
    }
    kern_rmsnorm_forward(g->datty, g->rstdf, a->x, s->final_norm, N, (int)D, c->rms_eps);
    kern_zero(dx, N * D);
    kern_rmsnorm_backward(dx, g->dln, a->x, s->final_norm, g->rstdf, N, (int)D);
    return nll;
}

void model_stage_backward(model_bwd *g, float *dx, const model_acts *a,
                          const model_stage *s, int B, int T)
{
    LOSA_CHECK(a->save == MODEL_ACTS_SAVE);
    for (int l = s->n_layers - 1; l >= 0; l--) model_layer_backward(g, dx, a, s, l, B, T);
}

void model_stage_forward_ckpt(model_acts *a, float *xin_all, const model_stage *s,
                              int B, int T)
{
    int64_t ND = (int64_t)B * T * s->cfg.dim;
    for (int l = 0; l < s->n_layers; l++) {
        memcpy(xin_all + l * ND, a->x, sizeof(float) * ND);
        model_layer_forward(a, s, l, B, T);
    }
}

void model_stage_backward_ckpt(model_bwd *g, float *dx, model_acts *r,
                               const float *xin_all, const model_stage *s, int B,
                               int T)
{
    LOSA_CHECK(r->save == MODEL_ACTS_SAVE_ONE);
    int64_t ND = (int64_t)B * T * s->cfg.dim;
    for (int l = s->n_layers - 1; l >= 0; l--) {
        memcpy(r->x, xin_all + l * ND, sizeof(float) * ND);
        model_layer_forward(r, s, l, B, T);
        model_layer_backward(g, dx, r, s, l, B, T);
    }
}
