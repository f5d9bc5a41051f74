/* Backward kernels against central finite differences in double precision.
 *
 * Every op is ported to double inside this test (independent of the float
 * kernels).  For random inputs x and a random output weighting R the scalar
 * L(x) = sum(op(x) * R) is differentiated numerically in double
 * (h = 1e-6, truncation error ~h^2) and compared with the float backward
 * kernel fed dout = R.  The float analytic gradient carries ~1e-6 relative
 * rounding, so the scaled residual max|g - g_fd| / max|g_fd| must be < 1e-5;
 * a wrong formula gives O(1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "kernels.h"
#include "test_util.h"

static core_rng rng;
static void fill(float *x, int64_t n, float sd)
{
    for (int64_t i = 0; i < n; i++) x[i] = sd * core_rng_normal(&rng);
}
static double *tod(const float *x, int64_t n)
{
    double *d = malloc(sizeof(double) * n);
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* L = sum(out * R) of a double op whose input is xd (n values) */
typedef double (*loss_fn)(const double *xd, void *ctx);

/* FD gradient of f wrt xd[0..n) compared with analytic g (float). */
static void fd_check(const char *what, loss_fn f, void *ctx, double *xd, int64_t n,
                     const float *g)
{
    const double h = 1e-6;
    double maxd = 0, maxr = 0;
    for (int64_t i = 0; i < n; i++) {
        double x0 = xd[i];
        xd[i] = x0 + h;
        double lp = f(xd, ctx);
        xd[i] = x0 - h;
        double lm = f(xd, ctx);
        xd[i] = x0;
        double fd = (lp - lm) / (2 * h);
        maxd = fmax(maxd, fabs(fd - g[i]));
        maxr = fmax(maxr, fabs(fd));
    }
    double e = maxd / (maxr > 0 ? maxr : 1);
    fprintf(stderr, "%-24s n=%-5ld max|grad|=%.3g  rel err vs FD = %.2e (tol 1e-5)\n", what, (long)n,
            maxr, e);
    TEST_CHECK(e < 1e-5 && maxr > 0, "%s: rel err %.3g", what, e);
}

/* ---- rmsnorm ---- */
typedef struct { int N, D; double eps; const double *w, *R; } rms_ctx;
static double rms_loss(const double *x, void *vc)
{
    rms_ctx *c = vc;
    double L = 0;
    for (int i = 0; i < c->N; i++) {
        double ss = 0;
        for (int j = 0; j < c->D; j++) ss += x[i * c->D + j] * x[i * c->D + j];
        double r = 1 / sqrt(ss / c->D + c->eps);
        for (int j = 0; j < c->D; j++) L += x[i * c->D + j] * r * c->w[j] * c->R[i * c->D + j];
    }
    return L;
}
static void test_rmsnorm(void)
{
    int N = 5, D = 12;
    float x[60], w[12], R[60], out[60], rstd[5], dx[60] = {0};
    fill(x, N * D, 1.0f);
    fill(w, D, 1.0f);
    fill(R, N * D, 1.0f);
    kern_rmsnorm_forward(out, rstd, x, w, N, D, 1e-5f);
    kern_rmsnorm_backward(dx, R, x, w, rstd, N, D);
    double *xd = tod(x, N * D), *wd = tod(w, D), *Rd = tod(R, N * D);
    rms_ctx c = {N, D, 1e-5, wd, Rd};
    fd_check("rmsnorm dinp", rms_loss, &c, xd, N * D, dx);
    free(xd); free(wd); free(Rd);
}

/* ---- matmul: out = x W^T ---- */
typedef struct { int N, IC, OC; const double *x, *w, *R; int wrt_w; } mm_ctx;
static double mm_loss(const double *v, void *vc)
{
    mm_ctx *c = vc;
    const double *x = c->wrt_w ? c->x : v, *w = c->wrt_w ? v : c->w;
    double L = 0;
    for (int i = 0; i < c->N; i++)
        for (int o = 0; o < c->OC; o++) {
            double s = 0;
            for (int k = 0; k < c->IC; k++) s += x[i * c->IC + k] * w[o * c->IC + k];
            L += s * c->R[i * c->OC + o];
        }
    return L;
}
static void test_matmul(void)
{
    int N = 6, IC = 7, OC = 5;
    float x[42], w[35], R[30], dx[42] = {0}, dw[35] = {0}, out[30], ref[30];
    fill(x, N * IC, 1.0f);
    fill(w, OC * IC, 1.0f);
    fill(R, N * OC, 1.0f);
    kern_matmul_forward(out, x, w, N, IC, OC);
    kern_matmul_forward_ref(ref, x, w, N, IC, OC);
    TEST_CHECK(test_max_rel(out, ref, N * OC) < 1e-6, "matmul fwd vs ref");
    kern_matmul_backward_inp(dx, R, w, N, IC, OC);
    kern_matmul_backward_w(dw, R, x, N, IC, OC);
    double *xd = tod(x, N * IC), *wd = tod(w, OC * IC), *Rd = tod(R, N * OC);
    mm_ctx c = {N, IC, OC, xd, wd, Rd, 0};
    fd_check("matmul dinp", mm_loss, &c, xd, N * IC, dx);
    c.wrt_w = 1;
    fd_check("matmul dw", mm_loss, &c, wd, OC * IC, dw);
    /* backward accumulates */
    kern_matmul_backward_w(dw, R, x, N, IC, OC);
    float dw1[35] = {0};
    kern_matmul_backward_w(dw1, R, x, N, IC, OC);
    int acc = 1;
    for (int i = 0; i < 35; i++) acc &= fabsf(dw[i] - 2 * dw1[i]) <= 1e-5f * (1 + fabsf(dw[i]));
    TEST_CHECK(acc, "matmul_backward_w accumulates");
    free(xd); free(wd); free(Rd);
}

/* ---- rope (rotate-half) ---- */
typedef struct { int B, T, nh, hd; const float *cs, *sn; const double *R; } rope_ctx;
static double rope_loss(const double *x, void *vc)
{
    rope_ctx *c = vc;
    int half = c->hd / 2;
    double L = 0;
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t < c->T; t++)
            for (int h = 0; h < c->nh; h++) {
                int64_t o = (((int64_t)b * c->T + t) * c->nh + h) * c->hd;
                for (int i = 0; i < half; i++) {
                    double co = c->cs[t * half + i], si = c->sn[t * half + i];
                    double a = x[o + i], bb = x[o + i + half];
                    L += (a * co - bb * si) * c->R[o + i] + (bb * co + a * si) * c->R[o + i + half];
                }
            }
    return L;
}
static void test_rope(void)
{
    int B = 2, T = 5, nh = 3, hd = 8;
    int64_t n = (int64_t)B * T * nh * hd;
    float *x = malloc(sizeof(float) * n), *R = malloc(sizeof(float) * n);
    float cs[5 * 4], sn[5 * 4];
    fill(x, n, 1.0f);
    fill(R, n, 1.0f);
    kern_rope_tables(cs, sn, T, hd, 10000.0f);
    /* rope is linear: forward of x then backward must give x back */
    float *y = malloc(sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    kern_rope_forward(y, cs, sn, B, T, nh, hd);
    kern_rope_backward(y, cs, sn, B, T, nh, hd);
    TEST_CHECK(test_max_rel(y, x, n) < 1e-6, "rope backward inverts forward");
    memcpy(y, R, sizeof(float) * n);
    kern_rope_backward(y, cs, sn, B, T, nh, hd); /* dx = R^T dout */
    double *xd = tod(x, n), *Rd = tod(R, n);
    rope_ctx c = {B, T, nh, hd, cs, sn, Rd};
    fd_check("rope dinp", rope_loss, &c, xd, n, y);
    free(x); free(R); free(y); free(xd); free(Rd);
}

/* ---- grouped-query causal attention ---- */
typedef struct { int B, T, H, Hkv, hd, which; double *q, *k, *v; const double *R; } att_ctx;
static double att_loss(const double *u, void *vc)
{
    att_ctx *c = vc;
    const double *q = c->which == 0 ? u : c->q, *k = c->which == 1 ? u : c->k,
                 *v = c->which == 2 ? u : c->v;
    int qs = c->H * c->hd, ks = c->Hkv * c->hd, grp = c->H / c->Hkv, T = c->T;
    double L = 0, p[64];
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < T; i++) {
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int d = 0; d < c->hd; d++)
                        s += q[(b * T + i) * qs + h * c->hd + d] *
                             k[(b * T + j) * ks + (h / grp) * c->hd + d];
                    p[j] = s / sqrt((double)c->hd);
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < c->hd; d++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++)
                        o += p[j] / sum * v[(b * T + j) * ks + (h / grp) * c->hd + d];
                    L += o * c->R[(b * T + i) * qs + h * c->hd + d];
                }
            }
    return L;
}
static void test_attention(void)
{
    int B = 2, T = 6, H = 4, Hkv = 2, hd = 4;
    int64_t nq = (int64_t)B * T * H * hd, nk = (int64_t)B * T * Hkv * hd;
    float *q = malloc(4 * nq), *k = malloc(4 * nk), *v = malloc(4 * nk), *R = malloc(4 * nq);
    float *out = malloc(4 * nq), *ref = malloc(4 * nq), *att = malloc(4 * B * H * T * T);
    float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4), datt[36];
    fill(q, nq, 1.0f);
    fill(k, nk, 1.0f);
    fill(v, nk, 1.0f);
    fill(R, nq, 1.0f);
    kern_attention_forward(out, att, q, k, v, B, T, H, Hkv, hd, 1, 0);
    kern_attention_forward_ref(ref, q, k, v, B, T, H, Hkv, hd);
    TEST_CHECK(test_max_rel(out, ref, nq) < 1e-5, "attention fwd vs ref");
    kern_attention_backward(dq, dk, dv, datt, R, att, q, k, v, B, T, H, Hkv, hd, 1);
    att_ctx c = {B, T, H, Hkv, hd, 0, tod(q, nq), tod(k, nk), tod(v, nk), tod(R, nq)};
    c.which = 0;
    fd_check("attention dq", att_loss, &c, c.q, nq, dq);
    c.which = 1;
    fd_check("attention dk (GQA)", att_loss, &c, c.k, nk, dk);
    c.which = 2;
    fd_check("attention dv (GQA)", att_loss, &c, c.v, nk, dv);
    free(q); free(k); free(v); free(R); free(out); free(ref); free(att);
    free(dq); free(dk); free(dv); free(c.q); free(c.k); free(c.v); free((void *)c.R);
}

/* ---- swiglu ---- */
typedef struct { int n, which; double *g, *u; const double *R; } sw_ctx;
static double sw_loss(const double *x, void *vc)
{
    sw_ctx *c = vc;
    const double *g = c->which == 0 ? x : c->g, *u = c->which == 1 ? x : c->u;
    double L = 0;
    for (int i = 0; i < c->n; i++) L += g[i] / (1 + exp(-g[i])) * u[i] * c->R[i];
    return L;
}
static void test_swiglu(void)
{
    enum { n = 40 };
    float g[n], u[n], R[n], dg[n] = {0}, du[n] = {0};
    fill(g, n, 2.0f);
    fill(u, n, 1.0f);
    fill(R, n, 1.0f);
    kern_swiglu_backward(dg, du, R, g, u, n);
    sw_ctx c = {n, 0, tod(g, n), tod(u, n), tod(R, n)};
    fd_check("swiglu dgate", sw_loss, &c, c.g, n, dg);
    c.which = 1;
    fd_check("swiglu dup", sw_loss, &c, c.u, n, du);
    free(c.g); free(c.u); free((void *)c.R);
}

/* ---- cross-entropy: L = scale * sum_rows NLL ---- */
typedef struct { int N, V; const int *t; double scale; } ce_ctx;
static double ce_loss(const double *l, void *vc)
{
    ce_ctx *c = vc;
    double L = 0;
    for (int i = 0; i < c->N; i++) {
        if (c->t[i] < 0) continue;
        double mx = -1e300, s = 0;
        for (int j = 0; j < c->V; j++) mx = fmax(mx, l[i * c->V + j]);
        for (int j = 0; j < c->V; j++) s += exp(l[i * c->V + j] - mx);
        L += c->scale * (mx + log(s) - l[i * c->V + c->t[i]]);
    }
    return L;
}
static void test_crossentropy(void)
{
    int N = 4, V = 9, t[4] = {3, -1, 0, 8};
    float l[36], dl[36] = {0};
    fill(l, N * V, 2.0f);
    double nll = kern_crossentropy_forward_backward(dl, l, t, N, V, 0.25f);
    double *ld = tod(l, N * V);
    ce_ctx c = {N, V, t, 1.0};
    TEST_NEAR(nll, ce_loss(ld, &c), 1e-6, "crossentropy NLL sum");
    double nr = 0;
    for (int i = 0; i < N; i++) nr += kern_nll_row(l + i * V, t[i], V);
    TEST_NEAR(nr, nll, 1e-9, "nll_row sum");
    c.scale = 0.25;
    fd_check("crossentropy dlogits", ce_loss, &c, ld, N * V, dl);
    int untouched = 1;
    for (int j = 0; j < V; j++) untouched &= dl[V + j] == 0.0f;
    TEST_CHECK(untouched, "ignored row has zero gradient");
    free(ld);
}

int main(void)
{
    core_rng_seed(&rng, 1234);
    test_rmsnorm();
    test_matmul();
    test_rope();
    test_attention();
    test_swiglu();
    test_crossentropy();
    return test_finish("test_grad");
}
