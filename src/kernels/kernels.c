/* Forward/backward kernels of the decoder (see include/kernels.h). */
#include "kernels.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* exp(x) for x <= 0 in plain arithmetic that the compiler vectorises (libm's
 * expf is a call per element): x = n ln2 + r, |r| <= ln2/2, 2^n built in
 * the exponent bits, e^r by a degree-6 polynomial; relative error < 3e-7.
 * Inputs below -87 give 0. */
static inline __attribute__((always_inline)) float expf_neg(float x)
{
    x = x < -87.0f ? -87.0f : x;
    /* round to nearest by the 1.5 * 2^23 trick (no libm call, vectorises):
     * t's low mantissa bits then hold n as a two's complement integer, read
     * without a float -> int conversion (undefined for NaN); NaN propagates
     * through p. */
    union { float f; uint32_t u; } t = {.f = x * 1.44269504088896341f + 12582912.0f},
                                    m = {.f = 12582912.0f};
    float n = t.f - 12582912.0f;
    float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667f + r * (0.041666668f +
                  r * (0.0083333338f + r * 0.0013888889f)))));
    union { float f; uint32_t u; } e = {.u = (t.u - m.u + 127u) << 23};
    return p * e.f;
}

void kern_rmsnorm_forward(float *out, float *rstd, const float *inp,
                          const float *w, int64_t N, int D, float eps)
{
#pragma omp parallel for schedule(static) if (N * D > KERN_PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * D;
        float *o = out + i * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)x[j] * x[j];
        float r = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int j = 0; j < D; j++) o[j] = x[j] * r * w[j];
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

/* Causal softmax of row i of a (T,T) score matrix over columns 0..i; columns
 * above the diagonal become 0.  Vectorised exp (expf_neg, below). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void causal_softmax_row(float *row, int i, int T)
{
    float mx = -FLT_MAX;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j <= i; j++) {
        row[j] = expf_neg(row[j] - mx);
        sum += row[j];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j <= i; j++) row[j] *= inv;
    for (int j = i + 1; j < T; j++) row[j] = 0.0f;
}

int kern_attention_slots(int B, int Hkv)
{
    int n = B * Hkv, t = omp_get_max_threads();
    return kern_gemm_concurrent() ? (n < t ? n : t) : 1;
}

/* Threads for n groups with n_scr scratch slots (1 for the blas engine). */
static int attention_threads(int n, int n_scr)
{
    int t = kern_gemm_concurrent() ? omp_get_max_threads() : 1;
    if (t > n) t = n;
    return t < n_scr ? t : (n_scr > 0 ? n_scr : 1);
}

/* Head h of batch row b: scores, causal softmax into A (T,T), out = A V. */
static void head_forward(float *out, float *A, const float *q, const float *k, const float *v,
                         int b, int h, int T, int H, int Hkv, int hd)
{
    int qs = H * hd, ks = Hkv * hd, kh = h / (H / Hkv);
    const float *qb = q + (int64_t)b * T * qs + h * hd;
    const float *kb = k + (int64_t)b * T * ks + kh * hd;
    const float *vb = v + (int64_t)b * T * ks + kh * hd;
    float scale = 1.0f / sqrtf((float)hd);
    /* scores (T,T) = scale * Q K^T (the upper triangle is discarded) */
    kern_gemm(0, 1, T, T, hd, scale, qb, qs, kb, ks, 0.0f, A, T);
    for (int i = 0; i < T; i++) causal_softmax_row(A + (int64_t)i * T, i, T);
    kern_gemm(0, 0, T, hd, T, 1.0f, A, T, vb, ks, 0.0f, out + (int64_t)b * T * qs + h * hd, qs);
}

void kern_attention_forward(float *out, float *att, const float *q,
                            const float *k, const float *v, int B, int T, int H,
                            int Hkv, int hd, int save_att, int n_scr)
{
    int grp = H / Hkv, n = B * Hkv, nt = attention_threads(n, save_att ? n : n_scr);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int bk = 0; bk < n; bk++) {
        int b = bk / Hkv, slot = omp_get_thread_num();
        for (int h = bk % Hkv * grp; h < (bk % Hkv + 1) * grp; h++) {
            float *A = save_att ? att + ((int64_t)b * H + h) * T * T : att + (int64_t)slot * T * T;
            head_forward(out, A, q, k, v, b, h, T, H, Hkv, hd);
        }
    }
}

/* Head h of batch row b: dq, dk, dv += ..., datt (T,T) scratch. */
static void head_backward(float *dq, float *dk, float *dv, float *datt, const float *dout,
                          const float *att, const float *q, const float *k, const float *v,
                          int b, int h, int T, int H, int Hkv, int hd)
{
    int qs = H * hd, ks = Hkv * hd, kh = h / (H / Hkv);
    float scale = 1.0f / sqrtf((float)hd);
    const float *qb = q + (int64_t)b * T * qs + h * hd;
    const float *kb = k + (int64_t)b * T * ks + kh * hd;
    const float *vb = v + (int64_t)b * T * ks + kh * hd;
    const float *dob = dout + (int64_t)b * T * qs + h * hd;
    float *dqb = dq + (int64_t)b * T * qs + h * hd;
    float *dkb = dk + (int64_t)b * T * ks + kh * hd;
    float *dvb = dv + (int64_t)b * T * ks + kh * hd;
    const float *A = att + ((int64_t)b * H + h) * T * T;
    /* dV += A^T dO ; dA = dO V^T */
    kern_gemm(1, 0, T, hd, T, 1.0f, A, T, dob, qs, 1.0f, dvb, ks);
    kern_gemm(0, 1, T, T, hd, 1.0f, dob, qs, vb, ks, 0.0f, datt, T);
    /* softmax backward: dS_ij = A_ij (dA_ij - sum_k A_ik dA_ik), times scale */
    for (int i = 0; i < T; i++) {
        const float *a = A + (int64_t)i * T;
        float *d = datt + (int64_t)i * T;
        float dot = 0;
        for (int j = 0; j <= i; j++) dot += a[j] * d[j];
        for (int j = 0; j <= i; j++) d[j] = scale * a[j] * (d[j] - dot);
        for (int j = i + 1; j < T; j++) d[j] = 0.0f;
    }
    /* dQ += dS K ; dK += dS^T Q */
    kern_gemm(0, 0, T, hd, T, 1.0f, datt, T, kb, ks, 1.0f, dqb, qs);
    kern_gemm(1, 0, T, hd, T, 1.0f, datt, T, qb, qs, 1.0f, dkb, ks);
}

void kern_attention_backward(float *dq, float *dk, float *dv, float *datt,
                             const float *dout, const float *att, const float *q,
                             const float *k, const float *v, int B, int T, int H,
                             int Hkv, int hd, int n_scr)
{
    /* a group's heads share dk, dv: they stay on one thread, in order */
    int grp = H / Hkv, n = B * Hkv, nt = attention_threads(n, n_scr);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int bk = 0; bk < n; bk++) {
        float *scr = datt + (int64_t)omp_get_thread_num() * T * T;
        for (int h = bk % Hkv * grp; h < (bk % Hkv + 1) * grp; h++)
            head_backward(dq, dk, dv, scr, dout, att, q, k, v, bk / Hkv, h, T, H, Hkv, hd);
    }
}

void kern_swiglu_forward(float *out, const float *gate, const float *up,
                         int64_t n)
{
#pragma omp parallel for schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kern_swiglu_backward(float *dgate, float *dup, const float *dout,
                          const float *gate, const float *up, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
        float silu = g * sg;
        dup[i] += dout[i] * silu;
        dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

void kern_embed_forward(float *out, const int *tokens, const float *embed,
                        int64_t N, int D)
{
    for (int64_t i = 0; i < N; i++)
        memcpy(out + i * D, embed + (int64_t)tokens[i] * D, sizeof(float) * D);
}

void kern_add_inplace(float *x, const float *y, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

/* log sum_j exp(l_j): max pass, then the exponentials summed in float blocks
 * of 512 into a double. */
__attribute__((target_clones("avx512f", "avx2", "default")))
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

/* One row of the cross-entropy: dlogits row += scale (softmax - onehot);
 * returns its NLL. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static double crossentropy_row(float *d, const float *l, int target, int V, float scale)
{
    double lse = logsumexp_row(l, V);
    float flse = (float)lse;
#pragma omp simd
    for (int j = 0; j < V; j++) d[j] += scale * expf_neg(l[j] - flse);
    d[target] -= scale;
    return lse - l[target];
}

double kern_crossentropy_forward_backward(float *dlogits, const float *logits,
                                          const int *targets, int64_t N, int V,
                                          float scale)
{
    /* rows in parallel, a block at a time; the block's NLLs are then added
     * in row order, as the serial loop does */
    enum { BLK = 64 };
    double total = 0, nll[BLK];
    for (int64_t i0 = 0; i0 < N; i0 += BLK) {
        int nb = N - i0 < BLK ? (int)(N - i0) : BLK;
#pragma omp parallel for schedule(static) if ((int64_t)nb * V > KERN_PAR_MIN)
        for (int b = 0; b < nb; b++) {
            int64_t i = i0 + b;
            nll[b] = targets[i] < 0 ? 0.0
                     : crossentropy_row(dlogits + i * V, logits + i * V, targets[i], V, scale);
        }
        for (int b = 0; b < nb; b++)
            if (targets[i0 + b] >= 0) total += nll[b];
    }
    return total;
}
