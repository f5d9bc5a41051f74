/* Forward/backward kernels of the decoder (see include/kernels.h). */
#include "kernels.h"
#include "kern_internal.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* One row of kern_rmsnorm_forward: the sum of squares in double, in vector
 * lanes (its order fixed by the code and the ISA clone the CPU selects,
 * not by the thread count). */
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
static float rmsnorm_row(float *o, const float *x, const float *w, int D, float eps)
{
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int j = 0; j < D; j++) ss += (double)x[j] * x[j];
    float r = 1.0f / sqrtf((float)(ss / D) + eps);
#pragma omp simd
    for (int j = 0; j < D; j++) o[j] = x[j] * r * w[j];
    return r;
}

void kern_rmsnorm_forward(float *out, float *rstd, const float *inp,
                          const float *w, int64_t N, int D, float eps)
{
#pragma omp parallel for schedule(static) if (N * D > KERN_PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        float r = rmsnorm_row(out + i * D, inp + i * D, w, D, eps);
        if (rstd) rstd[i] = r;
    }
}

void kern_rmsnorm_backward(float *dinp, const float *dout, const float *inp,
                           const float *w, const float *rstd, int64_t N, int D)
{
    /* y_j = x_j r w_j, r = (mean x^2 + eps)^-1/2
     * dx_k = r w_k dy_k - r^3 x_k / D * sum_j dy_j w_j x_j */
#pragma omp parallel for schedule(static) if (N * D > KERN_PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * D, *dy = dout + i * D;
        float *dx = dinp + i * D;
        float r = rstd[i];
        double dot = 0;
        for (int j = 0; j < D; j++) dot += (double)dy[j] * w[j] * x[j];
        float c = (float)(dot * r * r * r / D);
        for (int j = 0; j < D; j++) dx[j] += r * w[j] * dy[j] - c * x[j];
    }
}

/* out = inp W^T + beta out */
static void matmul_nt(float *out, const float *inp, const float *w, int64_t N, int IC, int OC,
                      float beta)
{
    kern_gemm(0, 1, N, OC, IC, 1.0f, inp, IC, w, IC, beta, out, OC);
}

void kern_matmul_forward(float *out, const float *inp, const float *w,
                         int64_t N, int IC, int OC)
{
    matmul_nt(out, inp, w, N, IC, OC, 0.0f);
}

void kern_matmul_forward_acc(float *out, const float *inp, const float *w,
                             int64_t N, int IC, int OC)
{
    matmul_nt(out, inp, w, N, IC, OC, 1.0f);
}

void kern_matmul_backward_inp(float *dinp, const float *dout, const float *w,
                              int64_t N, int IC, int OC)
{
    kern_gemm(0, 0, N, IC, OC, 1.0f, dout, OC, w, IC, 1.0f, dinp, IC);
}

void kern_matmul_backward_w(float *dw, const float *dout, const float *inp,
                            int64_t N, int IC, int OC)
{
    kern_gemm(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dw, IC);
}

void kern_rope_tables(float *cos_t, float *sin_t, int T, int hd, float theta)
{
    int half = hd / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double freq = pow((double)theta, -2.0 * i / hd);
            double a = t * freq;
            cos_t[(int64_t)t * half + i] = (float)cos(a);
            sin_t[(int64_t)t * half + i] = (float)sin(a);
        }
}

static void rope_apply(float *x, const float *cos_t, const float *sin_t, int B,
                       int T, int nh, int hd, float sign)
{
    int half = hd / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos_t + (int64_t)t * half, *s = sin_t + (int64_t)t * half;
            for (int h = 0; h < nh; h++) {
                float *v = x + (((int64_t)b * T + t) * nh + h) * hd;
                for (int i = 0; i < half; i++) {
                    float a = v[i], bb = v[i + half], sn = sign * s[i];
                    v[i] = a * c[i] - bb * sn;
                    v[i + half] = bb * c[i] + a * sn;
                }
            }
        }
}

void kern_rope_forward(float *x, const float *cos_t, const float *sin_t, int B,
                       int T, int nh, int hd)
{
    rope_apply(x, cos_t, sin_t, B, T, nh, hd, 1.0f);
}

void kern_rope_backward(float *dx, const float *cos_t, const float *sin_t, int B,
                        int T, int nh, int hd)
{
    rope_apply(dx, cos_t, sin_t, B, T, nh, hd, -1.0f);
}

/* silu(g) up over a span, vectorised (libm's expf is a call per element):
 * e = expf_neg(-|g|) in (0, 1] (relative error <= 4.3u, u = 2^-24, the
 * largest over every float in [-87, 0], checked against libm by
 * test_kernels), sigma(g) = 1 / (1 + e) for g >= 0 and e / (1 + e) below,
 * so no exp overflows and nothing cancels: sigma within 9.5u, silu(g) up
 * within 11.5u of the exact value relative, for g >= -87 (below, exp(g) is
 * taken as e^-87 and silu(g) up is within |g up| e^-87 < 1e-35 |up| of it,
 * absolute).  NaN stays NaN. */
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
static void swiglu_span(float *out, const float *gate, const float *up, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], e = expf_neg(-fabsf(g));
        out[i] = g * ((g >= 0.0f ? 1.0f : e) / (1.0f + e)) * up[i];
    }
}

void kern_swiglu_forward(float *out, const float *gate, const float *up,
                         int64_t n)
{
    /* contiguous spans per thread; each element as in a serial loop */
#pragma omp parallel if (n > KERN_PAR_MIN)
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
        swiglu_span(out + lo, gate + lo, up + lo, hi - lo);
    }
}

/* The backward over a span, vectorised as swiglu_span: sigma(g) from the
 * same e = expf_neg(-|g|) (9.5u, in place of libm's expf per element, which
 * kept this loop scalar), then silu = g sigma and the chain rule's
 * sigma (1 + g (1 - sigma)); test_kernels bounds the result against the
 * double reference. */
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
static void swiglu_bwd_span(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, int64_t n, int set)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], e = expf_neg(-fabsf(g));
        float sg = (g >= 0.0f ? 1.0f : e) / (1.0f + e);
        float silu = g * sg;
        /* set: onto 0.0f, the add onto a zeroed buffer without the zeroing */
        float du = set ? 0.0f : dup[i], dg = set ? 0.0f : dgate[i];
        dup[i] = du + dout[i] * silu;
        dgate[i] = dg + dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

static void swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, int64_t n, int set)
{
#pragma omp parallel if (n > KERN_PAR_MIN)
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
        swiglu_bwd_span(dgate + lo, dup + lo, dout + lo, gate + lo, up + lo, hi - lo, set);
    }
}

void kern_swiglu_backward(float *dgate, float *dup, const float *dout,
                          const float *gate, const float *up, int64_t n)
{
    swiglu_bwd(dgate, dup, dout, gate, up, n, 0);
}

void kern_swiglu_backward_set(float *dgate, float *dup, const float *dout,
                              const float *gate, const float *up, int64_t n)
{
    swiglu_bwd(dgate, dup, dout, gate, up, n, 1);
}

void kern_embed_forward(float *out, const int *tokens, const float *embed,
                        int64_t N, int D)
{
    for (int64_t i = 0; i < N; i++)
        memcpy(out + i * D, embed + (int64_t)tokens[i] * D, sizeof(float) * D);
}

void kern_zero(float *x, int64_t n)
{
    /* a chunk per thread: memset's own stores, the threads' bandwidth */
#pragma omp parallel if (n > KERN_PAR_MIN)
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
        memset(x + lo, 0, sizeof(float) * (size_t)(hi - lo));
    }
}

void kern_add_inplace(float *x, const float *y, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

/* log sum_j exp(l_j): max pass, then the exponentials summed in float blocks
 * of 512 into a double. */
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
static double logsumexp_row(const float *l, int V)
{
    float mx = -FLT_MAX;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
    double s = 0;
    for (int j0 = 0; j0 < V; j0 += 512) {
        int j1 = j0 + 512 < V ? j0 + 512 : V;
        float b = 0;
#pragma omp simd reduction(+ : b)
        for (int j = j0; j < j1; j++) b += expf_neg(l[j] - mx);
        s += b;
    }
    return mx + log(s);
}

double kern_nll_row(const float *logits, int target, int V)
{
    if (target < 0) return 0.0;
    return logsumexp_row(logits, V) - logits[target];
}

/* One row of the cross-entropy: dlogits row += scale (softmax - onehot)
 * (set: onto 0.0f in place of the row's values, the same operations);
 * returns its NLL. */
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
static double crossentropy_row(float *d, const float *l, int target, int V, float scale, int set)
{
    double lse = logsumexp_row(l, V);
    float flse = (float)lse;
    if (set) {
#pragma omp simd
        for (int j = 0; j < V; j++) d[j] = 0.0f + scale * expf_neg(l[j] - flse);
    } else {
#pragma omp simd
        for (int j = 0; j < V; j++) d[j] += scale * expf_neg(l[j] - flse);
    }
    d[target] -= scale;
    return lse - l[target];
}

/* The two cross-entropies' driver: rows in parallel, a block at a time
 * (row(ctx, i): row i's NLL, rows with target < 0 included: they return 0);
 * the block's NLLs are then added in row order, as the serial loop does. */
static double crossentropy_rows(double (*row)(void *, int64_t), void *ctx, const int *targets,
                                int64_t N, int V)
{
    enum { BLK = 64 };
    double total = 0, nll[BLK];
    for (int64_t i0 = 0; i0 < N; i0 += BLK) {
        int nb = N - i0 < BLK ? (int)(N - i0) : BLK;
#pragma omp parallel for schedule(static) if ((int64_t)nb * V > KERN_PAR_MIN)
        for (int b = 0; b < nb; b++) nll[b] = row(ctx, i0 + b);
        for (int b = 0; b < nb; b++)
            if (targets[i0 + b] >= 0) total += nll[b];
    }
    return total;
}

typedef struct {
    void *d;
    const float *logits;
    const int *targets;
    int V;
    float scale;
} ce_args;

static double ce_row_f32(void *ctx, int64_t i)
{
    const ce_args *a = ctx;
    if (a->targets[i] < 0) return 0.0;
    return crossentropy_row((float *)a->d + i * a->V, a->logits + i * a->V, a->targets[i], a->V,
                            a->scale, 0);
}

static double ce_row_f32_set(void *ctx, int64_t i)
{
    const ce_args *a = ctx;
    float *d = (float *)a->d + i * a->V;
    if (a->targets[i] >= 0)
        return crossentropy_row(d, a->logits + i * a->V, a->targets[i], a->V, a->scale, 1);
    memset(d, 0, sizeof(float) * (size_t)a->V);
    return 0.0;
}

double kern_crossentropy_forward_backward(float *dlogits, const float *logits,
                                          const int *targets, int64_t N, int V,
                                          float scale)
{
    ce_args a = {dlogits, logits, targets, V, scale};
    return crossentropy_rows(ce_row_f32, &a, targets, N, V);
}

double kern_crossentropy_forward_backward_set(float *dlogits, const float *logits,
                                              const int *targets, int64_t N, int V,
                                              float scale)
{
    ce_args a = {dlogits, logits, targets, V, scale};
    return crossentropy_rows(ce_row_f32_set, &a, targets, N, V);
}

/* One row of kern_crossentropy_forward_backward_bf16: the fp32 values the
 * row above computes on a zeroed row (0 + scale p_j, minus scale at the
 * target, the same operations in the same order), each rounded to bf16. */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
static double crossentropy_row_bf16(uint16_t *d, const float *l, int target, int V, float scale)
{
    double lse = logsumexp_row(l, V);
    float flse = (float)lse;
#pragma omp simd
    for (int j = 0; j < V; j++) d[j] = kern_bf16_round(0.0f + scale * expf_neg(l[j] - flse));
    d[target] = kern_bf16_round((0.0f + scale * expf_neg(l[target] - flse)) - scale);
    return lse - l[target];
}

static double ce_row_bf16(void *ctx, int64_t i)
{
    const ce_args *a = ctx;
    uint16_t *d = (uint16_t *)a->d + i * a->V;
    if (a->targets[i] >= 0)
        return crossentropy_row_bf16(d, a->logits + i * a->V, a->targets[i], a->V, a->scale);
    memset(d, 0, sizeof(uint16_t) * (size_t)a->V);
    return 0.0;
}

double kern_crossentropy_forward_backward_bf16(uint16_t *dlogits, const float *logits,
                                               const int *targets, int64_t N, int V,
                                               float scale)
{
    ce_args a = {dlogits, logits, targets, V, scale};
    return crossentropy_rows(ce_row_bf16, &a, targets, N, V);
}

