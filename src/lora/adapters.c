/* lora adapters: allocation, init, masked delta, merge/unmerge, gradient
 * projection, AdamW, LR schedule (see include/lora.h for the formulation). */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "lora.h"

void lora_config_default(lora_config *c)
{
    c->r_max = 16;
    c->rank = 8;
    c->alpha = 16.0f;
    c->r0 = 8.0f;
    c->dropout = 0.1f;
    c->seed = 42;
    c->buffers = LORA_BUFFERS_AUTO;
    c->mb_tokens = 0;
}

static const char *buffers_names[] = {"auto", "persistent", "transient"};

const char *lora_buffers_name(lora_buffers b)
{
    return b >= 0 && b <= LORA_BUFFERS_TRANSIENT ? buffers_names[b] : "unknown";
}

/* Floats of the adapters of n_layers layers (np: A and B; nw: the maps;
 * wmax: the largest map). */
static void adapter_floats(const model_config *c, int n_layers, int r_max, size_t *np, size_t *nw,
                           size_t *wmax)
{
    *np = *nw = *wmax = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, m, &o, &i);
        *np += (size_t)r_max * (o + i);
        *nw += (size_t)o * i;
        if ((size_t)o * i > *wmax) *wmax = (size_t)o * i;
    }
    *np *= n_layers;
    *nw *= n_layers;
}

lora_buffers lora_buffers_resolve(const lora_config *lc, const model_config *c, int n_layers)
{
    if (lc->buffers != LORA_BUFFERS_AUTO) return lc->buffers;
    size_t np, nw, wmax;
    adapter_floats(c, n_layers, lc->r_max, &np, &nw, &wmax);
    int small = 3 * nw * sizeof(float) <= LORA_PERSISTENT_MAX_BYTES;
    return small && lc->mb_tokens < LORA_TRANSIENT_MIN_TOKENS ? LORA_BUFFERS_PERSISTENT
                                                              : LORA_BUFFERS_TRANSIENT;
}

/* Floats of each of the three dense blocks (delta, weff, ddelta): every
 * map of the stage (persistent) or the largest map (transient). */
static size_t dense_floats(const lora_config *lc, const model_config *c, int n_layers)
{
    size_t np, nw, wmax;
    adapter_floats(c, n_layers, lc->r_max, &np, &nw, &wmax);
    return lora_buffers_resolve(lc, c, n_layers) == LORA_BUFFERS_TRANSIENT ? wmax : nw;
}

size_t lora_adapters_bytes(const model_config *c, int n_layers, const lora_config *lc)
{
    size_t np, nw, wmax, nm = (size_t)n_layers * MODEL_N_MAPS;
    adapter_floats(c, n_layers, lc->r_max, &np, &nw, &wmax);
    if (nm == 0) nm = 1;
    size_t b = core_alloc_bytes(n_layers > 0 ? n_layers : 1, sizeof(int)) +
               4 * core_alloc_bytes(nm, sizeof(float *)) + core_alloc_bytes(nm, sizeof(size_t)) +
               core_alloc_bytes(nm, sizeof(model_adapter_map)) +
               4 * core_alloc_bytes(np + 1, sizeof(float));
    if (lora_buffers_resolve(lc, c, n_layers) == LORA_BUFFERS_PERSISTENT)
        b += 3 * core_alloc_bytes(nw + 1, sizeof(float));
    return b;
}

size_t lora_adapters_attached_bytes(const model_config *c, int n_layers, const lora_config *lc)
{
    if (lora_buffers_resolve(lc, c, n_layers) != LORA_BUFFERS_TRANSIENT) return 0;
    return 3 * core_alloc_bytes(dense_floats(lc, c, n_layers) + 1, sizeof(float));
}

static const model_adapter_map *map_persistent(void *ctx, int l, model_map m);
static const model_adapter_map *map_transient(void *ctx, int l, model_map m);
static void grad_transient(void *ctx, int l, model_map m);

losa_status lora_adapters_build(lora_adapters *ad, model_stage *s, const lora_config *c)
{
    memset(ad, 0, sizeof *ad);
    if (model_stage_require_plain(s, "LoRA adapters") != LOSA_OK) return LOSA_ERR_ARG;
    if (c->r_max < 1 || c->rank < 1 || c->rank > c->r_max)
        return core_err(LOSA_ERR_ARG, "lora: need 1 <= rank (%d) <= r_max (%d)", c->rank,
                        c->r_max);
    if (!(c->r0 > 0) || !isfinite(c->alpha))
        return core_err(LOSA_ERR_ARG, "lora: r0 must be > 0 and alpha finite (r0 %g, alpha %g)",
                        c->r0, c->alpha);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return core_err(LOSA_ERR_ARG, "lora: dropout must be in [0, 1) (got %g)", c->dropout);
    ad->cfg = *c;
    ad->mcfg = s->cfg;
    ad->scale = c->alpha / c->r0;
    ad->layer0 = s->layer0;
    ad->n_layers = s->n_layers;
    ad->transient = lora_buffers_resolve(c, &s->cfg, s->n_layers) == LORA_BUFFERS_TRANSIENT;
    int nl = s->n_layers, R = c->r_max, nm = nl * MODEL_N_MAPS;
    size_t np, nw, wmax;
    adapter_floats(&s->cfg, nl, R, &np, &nw, &wmax);
    ad->n_params = np;
    ad->n_w = dense_floats(c, &s->cfg, nl);
    ad->rank = core_calloc(nl > 0 ? nl : 1, sizeof(int));
    ad->A = core_calloc(nm > 0 ? nm : 1, sizeof(float *));
    ad->B = core_calloc(nm > 0 ? nm : 1, sizeof(float *));
    ad->gA = core_calloc(nm > 0 ? nm : 1, sizeof(float *));
    ad->gB = core_calloc(nm > 0 ? nm : 1, sizeof(float *));
    ad->w_off = core_calloc(nm > 0 ? nm : 1, sizeof(size_t));
    ad->maps = core_calloc(nm > 0 ? nm : 1, sizeof(model_adapter_map));
    ad->params = core_calloc(np + 1, sizeof(float));
    ad->grads = core_calloc(np + 1, sizeof(float));
    ad->m = core_calloc(np + 1, sizeof(float));
    ad->v = core_calloc(np + 1, sizeof(float));
    if (!ad->transient) { /* transient: allocated while attached */
        ad->delta = core_calloc(ad->n_w + 1, sizeof(float));
        ad->weff = core_calloc(ad->n_w + 1, sizeof(float));
        ad->ddelta = core_calloc(ad->n_w + 1, sizeof(float));
    }
    size_t p = 0, w = 0;
    for (int l = 0; l < nl; l++) {
        ad->rank[l] = c->rank;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i, k = l * MODEL_N_MAPS + m;
            model_map_shape(&s->cfg, m, &o, &i);
            ad->A[k] = ad->params + p;
            ad->gA[k] = ad->grads + p;
            p += (size_t)R * i;
            ad->B[k] = ad->params + p;
            ad->gB[k] = ad->grads + p;
            p += (size_t)R * o;
            ad->w_off[k] = w;
            if (!ad->transient) /* bf16 forms: in the map's weff floats (bf16_forms) */
                ad->maps[k] = (model_adapter_map){.delta = ad->delta + w, .weff = ad->weff + w,
                                                  .ddelta = ad->ddelta + w,
                                                  .weffb = (uint16_t *)(ad->weff + w),
                                                  .deltab = (uint16_t *)(ad->weff + w) +
                                                            (int64_t)o * i};
            w += (size_t)o * i;
            /* torch kaiming_uniform_(a=sqrt(5)): bound = 1/sqrt(fan_in); B = 0 */
            core_rng r;
            core_rng_seed(&r, c->seed * 7919ull + 1000ull * (s->layer0 + l) + m + 1);
            float bound = 1.0f / sqrtf((float)i);
            for (int64_t e = 0; e < (int64_t)R * i; e++)
                ad->A[k][e] = bound * (2.0f * core_rng_uniform(&r) - 1.0f);
        }
    }
    LOSA_CHECK(p == np && w == nw);
    ad->path = (model_adapter){.map = ad->transient ? map_transient : map_persistent,
                               .grad = ad->transient ? grad_transient : NULL, .ctx = ad};
    ad->formed = -1;
    lora_delta_update(ad, s);
    lora_attach(ad, s);
    return LOSA_OK;
}

void lora_adapters_free(lora_adapters *ad, model_stage *s)
{
    if (!ad) return;
    if (s && ad->attached) lora_detach(ad, s);
    core_free(ad->rank);
    core_free(ad->A);
    core_free(ad->B);
    core_free(ad->gA);
    core_free(ad->gB);
    core_free(ad->w_off);
    core_free(ad->maps);
    core_free(ad->params);
    core_free(ad->grads);
    core_free(ad->m);
    core_free(ad->v);
    core_free(ad->delta);
    core_free(ad->weff);
    core_free(ad->ddelta);
    memset(ad, 0, sizeof *ad);
}

losa_status lora_set_rank(lora_adapters *ad, int l, int r)
{
    if (l < 0 || l >= ad->n_layers || r < 1 || r > ad->cfg.r_max)
        return core_err(LOSA_ERR_ARG, "lora: rank %d for stage layer %d (need 1..%d)", r, l,
                        ad->cfg.r_max);
    ad->rank[l] = r;
    return LOSA_OK;
}

/* Transient: the scratch of one map's three forms. */
static void scratch_alloc(lora_adapters *ad)
{
    if (ad->delta) return;
    ad->delta = core_calloc(ad->n_w + 1, sizeof(float));
    ad->weff = core_calloc(ad->n_w + 1, sizeof(float));
    ad->ddelta = core_calloc(ad->n_w + 1, sizeof(float));
    ad->tmap = (model_adapter_map){.delta = ad->delta, .weff = ad->weff, .ddelta = ad->ddelta,
                                   .weffb = (uint16_t *)ad->weff};
    ad->formed = -1;
}

static void scratch_free(lora_adapters *ad)
{
    core_free(ad->delta);
    core_free(ad->weff);
    core_free(ad->ddelta);
    ad->delta = ad->weff = ad->ddelta = NULL;
    ad->formed = -1;
}

void lora_attach(lora_adapters *ad, model_stage *s)
{
    if (ad->transient) scratch_alloc(ad);
    ad->s = s;
    ad->formed = -1;
    s->adapter = &ad->path;
    ad->attached = 1;
}

void lora_detach(lora_adapters *ad, model_stage *s)
{
    s->adapter = NULL;
    if (ad->transient) scratch_free(ad);
    ad->attached = 0;
}

/* Delta (o,i) = scale * B[:, :r] (o,r; ld R) @ A[:r] (r,i), ⊙ M (M: W != 0),
 * and W_eff = W + Delta when we is given, for map k of stage layer l.
 * bf16 stage (plain maps): the o*i floats at we hold the two bf16 forms
 * instead (bf16_forms: weffb = bf16(W + Delta), then, with dropout,
 * deltab = bf16(Delta)), M from the bf16 weights; dl stays fp32. */
/* The bf16 stage's masked loops, a block of FORM_BLOCK entries at a time,
 * as selects (no branches, no conditional stores) in x86-64-v4 / AVX2
 * clones: the baseline build (SSE2) left them scalar.  The same values as
 * the plain loops (a select of the same expressions).  form_block_bf16:
 * dl zeroed off the mask (W == +-0), wb = bf16(W + dl) on it and 0 off it,
 * db = bf16(dl) (wb, db may be NULL); mask_block_bf16: G zeroed off it. */
#define FORM_BLOCK 4096
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
static void form_block_bf16(float *dl, uint16_t *wb, uint16_t *db, const uint16_t *W, int64_t n)
{
    if (wb && db) {
#pragma omp simd
        for (int64_t e = 0; e < n; e++) {
            int kept = (W[e] & 0x7fffu) != 0;
            float d = kept ? dl[e] : 0.0f;
            dl[e] = d;
            wb[e] = kept ? kern_bf16_round(kern_bf16_value(W[e]) + d) : 0;
            db[e] = kern_bf16_round(d);
        }
    } else if (wb) {
#pragma omp simd
        for (int64_t e = 0; e < n; e++) {
            int kept = (W[e] & 0x7fffu) != 0;
            float d = kept ? dl[e] : 0.0f;
            dl[e] = d;
            wb[e] = kept ? kern_bf16_round(kern_bf16_value(W[e]) + d) : 0;
        }
    } else {
#pragma omp simd
        for (int64_t e = 0; e < n; e++) dl[e] = (W[e] & 0x7fffu) != 0 ? dl[e] : 0.0f;
    }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
static void mask_block_bf16(float *G, const uint16_t *W, int64_t n)
{
#pragma omp simd
    for (int64_t e = 0; e < n; e++) G[e] = (W[e] & 0x7fffu) != 0 ? G[e] : 0.0f;
}

static void form_map(const lora_adapters *ad, const model_stage *s, int l, int k, float *dl,
                     float *we)
{
    int o, i, r = ad->rank[l], m = k % MODEL_N_MAPS;
    int64_t n;
    model_map_shape(&ad->mcfg, m, &o, &i);
    n = (int64_t)o * i;
    kern_gemm(0, 0, o, i, r, ad->scale, ad->B[k], ad->cfg.r_max, ad->A[k], i, 0.0f, dl, i);
    if (s->dtype == MODEL_DTYPE_BF16) {
        const uint16_t *W = s->layers[l].wb[m];
        uint16_t *wb = (uint16_t *)we, *db = ad->cfg.dropout > 0 && we ? wb + n : NULL;
        int64_t nb = (n + FORM_BLOCK - 1) / FORM_BLOCK;
#pragma omp parallel for schedule(static) if (n > KERN_PAR_MIN)
        for (int64_t b = 0; b < nb; b++) {
            int64_t e0 = b * FORM_BLOCK, len = n - e0 < FORM_BLOCK ? n - e0 : FORM_BLOCK;
            form_block_bf16(dl + e0, wb ? wb + e0 : NULL, db ? db + e0 : NULL, W + e0, len);
        }
        return;
    }
    const float *W = s->layers[l].w[m];
#pragma omp parallel for simd schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t e = 0; e < n; e++) {
        if (W[e] == 0.0f) dl[e] = 0.0f;
        if (we) we[e] = W[e] + dl[e];
    }
}

static const model_adapter_map *map_persistent(void *ctx, int l, model_map m)
{
    const lora_adapters *ad = ctx;
    return &ad->maps[l * MODEL_N_MAPS + m];
}

static const model_adapter_map *map_transient(void *ctx, int l, model_map m)
{
    lora_adapters *ad = ctx;
    int k = l * MODEL_N_MAPS + m;
    if (ad->formed != k) {
        form_map(ad, ad->s, l, k, ad->delta, ad->weff);
        int o, i;
        model_map_shape(&ad->mcfg, m, &o, &i);
        ad->tmap.deltab = ad->tmap.weffb + (int64_t)o * i; /* bf16_forms */
        ad->formed = k;
    }
    return &ad->tmap;
}

void lora_delta_update(lora_adapters *ad, const model_stage *s)
{
    ad->formed = -1; /* transient: formed again on demand */
    if (ad->transient) return;
    for (int l = 0; l < ad->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int k = l * MODEL_N_MAPS + m;
            form_map(ad, s, l, k, ad->delta + ad->w_off[k], ad->weff + ad->w_off[k]);
        }
}

/* bf16 stage: W <- bf16(W + sign Delta) map by map (round to nearest
 * even), Delta = scale (B[:, :r] A[:r]) ⊙ M formed into a one-map scratch
 * from the bf16 weights' own mask M = (W != 0).  Where M is 0, Delta is 0
 * and bf16(+-0 + 0) is zero: no pruned weight becomes non-zero.  A kept
 * weight whose W + Delta rounds to zero (exact cancellation, or
 * |W + Delta| <= 2^-134, half bf16's smallest subnormal) becomes zero: it
 * is counted (the return value) and every map with such weights gets a
 * warning line naming the layer and map. */
static int64_t add_delta_bf16(lora_adapters *ad, model_stage *s, float sign)
{
    int64_t changed = 0, maxw = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(&s->cfg, m, &o, &i);
        if ((int64_t)o * i > maxw) maxw = (int64_t)o * i;
    }
    float *dl = core_malloc((size_t)maxw, sizeof(float));
    for (int l = 0; l < ad->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i, r = ad->rank[l], k = l * MODEL_N_MAPS + m;
            model_map_shape(&s->cfg, m, &o, &i);
            uint16_t *W = s->layers[l].wb[m];
            int64_t n = (int64_t)o * i, lost = 0;
            kern_gemm(0, 0, o, i, r, sign * ad->scale, ad->B[k], ad->cfg.r_max, ad->A[k], i,
                      0.0f, dl, i);
#pragma omp parallel for simd schedule(static) reduction(+ : lost) if (n > KERN_PAR_MIN)
            for (int64_t e = 0; e < n; e++) {
                if ((W[e] & 0x7fffu) == 0) continue; /* pruned: stays exactly zero */
                uint16_t w1 = kern_bf16_round(kern_bf16_value(W[e]) + dl[e]);
                lost += (w1 & 0x7fffu) == 0;
                W[e] = w1;
            }
            if (lost > 0)
                core_log("warning: lora %s (bf16): layer %d %s: %lld kept weights rounded to "
                         "zero (the mask lost them)\n", sign > 0 ? "merge" : "unmerge",
                         ad->layer0 + l, model_map_name((model_map)m), (long long)lost);
            changed += lost;
        }
    core_free(dl);
    ad->formed = -1;
    return changed;
}

/* W += sign * Delta for every map (Delta of the current mask: stored, or
 * formed map by map into the transient scratch); bf16 stages round
 * (add_delta_bf16). */
static int64_t add_delta(lora_adapters *ad, model_stage *s, float sign)
{
    LOSA_CHECK(!s->bf16_packed); /* element by element: the plain layout */
    if (s->dtype == MODEL_DTYPE_BF16) return add_delta_bf16(ad, s, sign);
    int64_t changed = 0;
    int own = ad->transient && !ad->delta;
    if (own) scratch_alloc(ad);
    for (int l = 0; l < ad->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i, k = l * MODEL_N_MAPS + m;
            model_map_shape(&s->cfg, m, &o, &i);
            float *W = s->layers[l].w[m];
            const float *dl = ad->delta + (ad->transient ? 0 : ad->w_off[k]);
            if (ad->transient) form_map(ad, s, l, k, ad->delta, NULL);
            int64_t n = (int64_t)o * i, c = 0;
            /* element-wise: the same sums on any thread count (a pass over
             * the maps: 5-8 ms a merge on one thread for minillama) */
#pragma omp parallel for simd schedule(static) reduction(+ : c) if (n > KERN_PAR_MIN)
            for (int64_t e = 0; e < n; e++) {
                float w0 = W[e];
                W[e] = w0 + sign * dl[e]; /* dl == 0 wherever w0 == 0 */
                c += (w0 == 0.0f) != (W[e] == 0.0f);
            }
            changed += c;
        }
    if (own) scratch_free(ad);
    ad->formed = -1;
    return changed;
}

int64_t lora_merge(lora_adapters *ad, model_stage *s)
{
    int64_t c = add_delta(ad, s, 1.0f);
    lora_detach(ad, s);
    return c;
}

int64_t lora_unmerge(lora_adapters *ad, model_stage *s)
{
    lora_attach(ad, s);
    int64_t c = add_delta(ad, s, -1.0f);
    /* bf16: W came back within rounding only: the forms from the new W */
    if (s->dtype == MODEL_DTYPE_BF16) lora_delta_update(ad, s);
    return c;
}

/* G = dDelta ⊙ M (in place), then dB[:, :r] = scale G A[:r]^T and
 * dA[:r] = scale B[:, :r]^T G, added to beta x the gradients. */
static void project_map(lora_adapters *ad, const model_stage *s, int l, int k, float *G,
                        float beta)
{
    int o, i, R = ad->cfg.r_max, r = ad->rank[l], m = k % MODEL_N_MAPS;
    model_map_shape(&ad->mcfg, m, &o, &i);
    int64_t n = (int64_t)o * i;
    if (s->dtype == MODEL_DTYPE_BF16) {
        const uint16_t *W = s->layers[l].wb[m];
        int64_t nb = (n + FORM_BLOCK - 1) / FORM_BLOCK;
#pragma omp parallel for schedule(static) if (n > KERN_PAR_MIN)
        for (int64_t b = 0; b < nb; b++) {
            int64_t e0 = b * FORM_BLOCK, len = n - e0 < FORM_BLOCK ? n - e0 : FORM_BLOCK;
            mask_block_bf16(G + e0, W + e0, len);
        }
    } else {
        const float *W = s->layers[l].w[m];
#pragma omp parallel for simd schedule(static) if (n > KERN_PAR_MIN)
        for (int64_t e = 0; e < n; e++)
            if (W[e] == 0.0f) G[e] = 0.0f;
    }
    /* dB[:, :r] (o,r) = scale * G (o,i) @ A[:r]^T (i,r) */
    kern_gemm(0, 1, o, r, i, ad->scale, G, i, ad->A[k], i, beta, ad->gB[k], R);
    /* dA[:r] (r,i) = scale * B[:, :r]^T (r,o) @ G (o,i) */
    kern_gemm(1, 0, r, i, o, ad->scale, ad->B[k], R, G, i, beta, ad->gA[k], i);
}

static void grad_transient(void *ctx, int l, model_map m)
{
    lora_adapters *ad = ctx;
    project_map(ad, ad->s, l, l * MODEL_N_MAPS + m, ad->ddelta, 1.0f);
}

void lora_grad_zero(lora_adapters *ad)
{
    if (ad->transient) kern_zero(ad->grads, ad->n_params);
    else kern_zero(ad->ddelta, ad->n_w);
}

void lora_grad_project(lora_adapters *ad, const model_stage *s)
{
    if (ad->transient) return; /* projected map by map during the backward */
    kern_zero(ad->grads, ad->n_params);
    for (int l = 0; l < ad->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int k = l * MODEL_N_MAPS + m;
            project_map(ad, s, l, k, ad->ddelta + ad->w_off[k], 0.0f);
        }
}

double lora_grad_sumsq(const lora_adapters *ad, int l)
{
    /* the layer's A and B blocks are contiguous in grads */
    const float *g0 = ad->gA[l * MODEL_N_MAPS];
    const float *g1 = l + 1 < ad->n_layers ? ad->gA[(l + 1) * MODEL_N_MAPS]
                                           : ad->grads + ad->n_params;
    double s = 0;
    for (const float *g = g0; g < g1; g++) s += (double)*g * *g;
    return s;
}

static void adamw_slice(float *p, const float *g, float *m, float *v, int64_t n,
                        const lora_adamw *o, float gs, float bc1, float bc2)
{
    for (int64_t e = 0; e < n; e++) {
        float gr = g[e] * gs;
        p[e] -= o->lr * o->weight_decay * p[e];
        m[e] = o->beta1 * m[e] + (1.0f - o->beta1) * gr;
        v[e] = o->beta2 * v[e] + (1.0f - o->beta2) * gr * gr;
        float mh = m[e] / bc1, vh = v[e] / bc2;
        p[e] -= o->lr * mh / (sqrtf(vh) + o->eps);
    }
}

void lora_adamw_step(lora_adapters *ad, const lora_adamw *opt, float grad_scale)
{
    ad->step++;
    float bc1 = 1.0f - powf(opt->beta1, (float)ad->step);
    float bc2 = 1.0f - powf(opt->beta2, (float)ad->step);
    int R = ad->cfg.r_max;
    for (int l = 0; l < ad->n_layers; l++)
        for (int mm = 0; mm < MODEL_N_MAPS; mm++) {
            int k = l * MODEL_N_MAPS + mm, r = ad->rank[l];
            size_t oa = ad->A[k] - ad->params, ob = ad->B[k] - ad->params;
            int out, in;
            model_map_shape(&ad->mcfg, mm, &out, &in);
            /* A: the first r rows are contiguous */
            adamw_slice(ad->params + oa, ad->grads + oa, ad->m + oa, ad->v + oa, (int64_t)r * in, opt,
                        grad_scale, bc1, bc2);
            /* B: first r columns of every row */
            for (int row = 0; row < out; row++) {
                size_t e = ob + (size_t)row * R;
                adamw_slice(ad->params + e, ad->grads + e, ad->m + e, ad->v + e, r, opt,
                            grad_scale, bc1, bc2);
            }
        }
}

float lora_lr_at(float lr, float warmup_ratio, int64_t total, int64_t s)
{
    /* warmup_ratio arrives as float: round away its representation error */
    int64_t W = (int64_t)ceil((double)warmup_ratio * (double)total - 1e-4);
    if (W < 0) W = 0;
    if (s < W) return lr * (float)(s + 1) / (float)W;
    if (total <= W) return lr;
    double f = (double)(total - s) / (double)(total - W);
    return lr * (float)(f > 0 ? f : 0);
}
