/* The _ref twins of the decoder kernels (include/kernels.h): the textbook
 * formula of each, in double precision with libm's exp/sin/cos, one element
 * at a time, no BLAS, no tables, no vectorisation tricks.  Slow on purpose:
 * the tests compare every fast kernel with its twin. */
#include "kernels.h"

#include <math.h>

/* ---- matmul ---- */
void kern_matmul_forward_ref(float *out, const float *inp, const float *w,
                             int64_t N, int IC, int OC)
{
    for (int64_t i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double s = 0;
            for (int c = 0; c < IC; c++) s += (double)inp[i * IC + c] * w[(int64_t)o * IC + c];
            out[i * OC + o] = (float)s;
        }
}

void kern_matmul_backward_inp_ref(float *dinp, const float *dout, const float *w,
                                  int64_t N, int IC, int OC)
{
    for (int64_t i = 0; i < N; i++)
        for (int c = 0; c < IC; c++) {
            double s = dinp[i * IC + c];
            for (int o = 0; o < OC; o++) s += (double)dout[i * OC + o] * w[(int64_t)o * IC + c];
            dinp[i * IC + c] = (float)s;
        }
}

void kern_matmul_backward_w_ref(float *dw, const float *dout, const float *inp,
                                int64_t N, int IC, int OC)
{
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < IC; c++) {
            double s = dw[(int64_t)o * IC + c];
            for (int64_t i = 0; i < N; i++) s += (double)dout[i * OC + o] * inp[i * IC + c];
            dw[(int64_t)o * IC + c] = (float)s;
        }
}

/* ---- rmsnorm ---- */
void kern_rmsnorm_forward_ref(float *out, float *rstd, const float *inp,
                              const float *w, int64_t N, int D, float eps)
{
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)x[j] * x[j];
        double r = 1.0 / sqrt(ss / D + eps);
        for (int j = 0; j < D; j++) out[i * D + j] = (float)(x[j] * r * w[j]);
        if (rstd) rstd[i] = (float)r;
    }
}

/* dx_k = r w_k dy_k - r^3 x_k / D sum_j dy_j w_j x_j, r recomputed from x. */
void kern_rmsnorm_backward_ref(float *dinp, const float *dout, const float *inp,
                               const float *w, int64_t N, int D, float eps)
{
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * D, *dy = dout + i * D;
        double ss = 0, dot = 0;
        for (int j = 0; j < D; j++) {
            ss += (double)x[j] * x[j];
            dot += (double)dy[j] * w[j] * x[j];
        }
        double r = 1.0 / sqrt(ss / D + eps);
        for (int j = 0; j < D; j++)
            dinp[i * D + j] = (float)(dinp[i * D + j] + r * w[j] * dy[j] - r * r * r * x[j] * dot / D);
    }
}

/* ---- rope: angle t * theta^(-2i/hd) evaluated per element ---- */
static void rope_ref(float *x, int B, int T, int nh, int hd, float theta, double sign)
{
    int half = hd / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++) {
                float *v = x + (((int64_t)b * T + t) * nh + h) * hd;
                for (int i = 0; i < half; i++) {
                    double a = t * pow((double)theta, -2.0 * i / hd);
                    double c = cos(a), s = sign * sin(a), x0 = v[i], x1 = v[i + half];
                    v[i] = (float)(x0 * c - x1 * s);
                    v[i + half] = (float)(x1 * c + x0 * s);
                }
            }
}

void kern_rope_forward_ref(float *x, int B, int T, int nh, int hd, float theta)
{
    rope_ref(x, B, T, nh, hd, theta, 1.0);
}

void kern_rope_backward_ref(float *dx, int B, int T, int nh, int hd, float theta)
{
    rope_ref(dx, B, T, nh, hd, theta, -1.0);
}

/* ---- attention ---- */
void kern_attention_forward_ref(float *out, const float *q, const float *k,
                                const float *v, int B, int T, int H, int Hkv,
                                int hd)
{
    int qs = H * hd, ks = Hkv * hd, grp = H / Hkv;
    double scale = 1.0 / sqrt((double)hd);
    double p[T];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *qi = q + ((int64_t)b * T + i) * qs + h * hd;
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const float *kj = k + ((int64_t)b * T + j) * ks + (h / grp) * hd;
                    double s = 0;
                    for (int c = 0; c < hd; c++) s += (double)qi[c] * kj[c];
                    p[j] = s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                float *o = out + ((int64_t)b * T + i) * qs + h * hd;
                for (int c = 0; c < hd; c++) {
                    double s = 0;
                    for (int j = 0; j <= i; j++)
                        s += p[j] / sum * v[((int64_t)b * T + j) * ks + (h / grp) * hd + c];
                    o[c] = (float)s;
                }
            }
}

/* Recomputes the probabilities from q, k (no saved att):
 * P = softmax(scale q k^T) causal; dV += P^T dO; dP = dO V^T;
 * dS = P (dP - rowsum(P dP)); dQ += scale dS K; dK += scale dS^T Q. */
void kern_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                                 const float *q, const float *k, const float *v, int B,
                                 int T, int H, int Hkv, int hd)
{
    int qs = H * hd, ks = Hkv * hd, grp = H / Hkv;
    double scale = 1.0 / sqrt((double)hd);
    double p[T], dp[T];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                int64_t qi = ((int64_t)b * T + i) * qs + h * hd;
                double mx = -1e300, sum = 0, dot = 0;
                for (int j = 0; j <= i; j++) {
                    int64_t kj = ((int64_t)b * T + j) * ks + (h / grp) * hd;
                    double s = 0, d = 0;
                    for (int c = 0; c < hd; c++) {
                        s += (double)q[qi + c] * k[kj + c];
                        d += (double)dout[qi + c] * v[kj + c];
                    }
                    p[j] = s * scale;
                    dp[j] = d;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int j = 0; j <= i; j++) {
                    p[j] /= sum;
                    dot += p[j] * dp[j];
                }
                for (int j = 0; j <= i; j++) {
                    int64_t kj = ((int64_t)b * T + j) * ks + (h / grp) * hd;
                    double ds = scale * p[j] * (dp[j] - dot);
                    for (int c = 0; c < hd; c++) {
                        dv[kj + c] += (float)(p[j] * dout[qi + c]);
                        dq[qi + c] += (float)(ds * k[kj + c]);
                        dk[kj + c] += (float)(ds * q[qi + c]);
                    }
                }
            }
}

/* ---- swiglu ---- */
void kern_swiglu_forward_ref(float *out, const float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

void kern_swiglu_backward_ref(float *dgate, float *dup, const float *dout,
                              const float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i], sg = 1.0 / (1.0 + exp(-g));
        dup[i] = (float)(dup[i] + dout[i] * g * sg);
        dgate[i] = (float)(dgate[i] + dout[i] * up[i] * sg * (1.0 + g * (1.0 - sg)));
    }
}

/* ---- cross-entropy ---- */
static double logsumexp_ref(const float *l, int V)
{
    double mx = -1e300, s = 0;
    for (int j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
    for (int j = 0; j < V; j++) s += exp(l[j] - mx);
    return mx + log(s);
}

double kern_nll_row_ref(const float *logits, int target, int V)
{
    return target < 0 ? 0.0 : logsumexp_ref(logits, V) - logits[target];
}

double kern_crossentropy_forward_backward_ref(float *dlogits, const float *logits,
                                              const int *targets, int64_t N, int V,
                                              float scale)
{
    double total = 0;
    for (int64_t i = 0; i < N; i++) {
        if (targets[i] < 0) continue;
        const float *l = logits + i * V;
        double lse = logsumexp_ref(l, V);
        total += lse - l[targets[i]];
        for (int j = 0; j < V; j++)
            dlogits[i * V + j] = (float)(dlogits[i * V + j] +
                                         scale * (exp(l[j] - lse) - (j == targets[i])));
    }
    return total;
}
