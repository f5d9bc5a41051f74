/* Every fast decoder kernel against its _ref twin (src/kernels/kernels_ref.c:
 * double precision, libm, no BLAS, no tables).  Each check is elementwise
 * against a forward-error bound derived for that kernel (Higham, 2nd ed.,
 * sec. 3.1: a K-term fp32 dot product in any order is within
 * gamma_K * sum |a_k b_k| of the exact value, gamma_K = K u / (1 - K u),
 * u = 2^-24); the bound is written next to each check.  The backward kernels
 * accumulate, so they start from non-zero outputs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "test_util.h"
#include "../src/kernels/kern_internal.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / 8388608.0 - 1.0);
}
static float *rnd(int64_t n, float scale)
{
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x) abort();
    for (int64_t i = 0; i < n; i++) x[i] = scale * frand();
    return x;
}
static float *dup(const float *x, int64_t n)
{
    float *y = malloc(sizeof(float) * (size_t)n);
    if (!y) abort();
    memcpy(y, x, sizeof(float) * (size_t)n);
    return y;
}
static float *absv(const float *x, int64_t n)
{
    float *y = dup(x, n);
    for (int64_t i = 0; i < n; i++) y[i] = fabsf(y[i]);
    return y;
}

/* Number of entries with |a - r| > bound[i]; the first is printed. */
static int64_t over(const char *what, const float *a, const float *r, const double *bound, int64_t n)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - r[i]);
        if (!(d <= bound[i])) {
            if (!bad)
                fprintf(stderr, "%s[%ld]: %.9g vs ref %.9g, |diff| %.3g > bound %.3g\n", what,
                        (long)i, a[i], r[i], d, bound[i]);
            bad++;
        }
    }
    return bad;
}

/* matmul: out = inp W^T (K = IC), dinp += dout W (K = OC + 1 with the
 * initial value), dw += dout^T inp (K = N + 1).  Bound per entry:
 * gamma_K * (the same product of absolute values) + u |ref| (the ref's own
 * rounding to fp32). */
static void test_matmul(void)
{
    const int64_t N = 37;
    const int IC = 96, OC = 80;
    float *x = rnd(N * IC, 1), *w = rnd((int64_t)OC * IC, 0.5f), *dy = rnd(N * OC, 1);
    float *ax = absv(x, N * IC), *aw = absv(w, (int64_t)OC * IC), *ady = absv(dy, N * OC);
    double *b = malloc(sizeof(double) * (size_t)(N * IC > OC * IC ? N * IC : OC * IC) * 2);
    float *y = rnd(N * OC, 1), *yr = rnd(N * OC, 1), *ay = rnd(N * OC, 1);
    kern_matmul_forward(y, x, w, N, IC, OC);
    kern_matmul_forward_ref(yr, x, w, N, IC, OC);
    kern_matmul_forward_ref(ay, ax, aw, N, IC, OC);
    for (int64_t i = 0; i < N * OC; i++)
        b[i] = test_gamma(IC, TEST_U32) * ay[i] + TEST_U32 * fabs(yr[i]);
    TEST_CHECK(over("matmul_forward", y, yr, b, N * OC) == 0, "fast vs ref");

    float *g0 = rnd(N * IC, 1), *g = dup(g0, N * IC), *gr = dup(g0, N * IC), *ag = absv(g0, N * IC);
    kern_matmul_backward_inp(g, dy, w, N, IC, OC);
    kern_matmul_backward_inp_ref(gr, dy, w, N, IC, OC);
    kern_matmul_backward_inp_ref(ag, ady, aw, N, IC, OC); /* |g0| + |dy| |W| */
    for (int64_t i = 0; i < N * IC; i++)
        b[i] = test_gamma(OC + 1, TEST_U32) * ag[i] + TEST_U32 * fabs(gr[i]);
    TEST_CHECK(over("matmul_backward_inp", g, gr, b, N * IC) == 0, "fast vs ref");

    float *w0 = rnd((int64_t)OC * IC, 1), *dw = dup(w0, (int64_t)OC * IC),
          *dwr = dup(w0, (int64_t)OC * IC), *adw = absv(w0, (int64_t)OC * IC);
    kern_matmul_backward_w(dw, dy, x, N, IC, OC);
    kern_matmul_backward_w_ref(dwr, dy, x, N, IC, OC);
    kern_matmul_backward_w_ref(adw, ady, ax, N, IC, OC);
    for (int64_t i = 0; i < (int64_t)OC * IC; i++)
        b[i] = test_gamma(N + 1, TEST_U32) * adw[i] + TEST_U32 * fabs(dwr[i]);
    TEST_CHECK(over("matmul_backward_w", dw, dwr, b, (int64_t)OC * IC) == 0, "fast vs ref");
    free(x), free(w), free(dy), free(ax), free(aw), free(ady), free(b), free(y), free(yr);
    free(ay), free(g0), free(g), free(gr), free(ag), free(w0), free(dw), free(dwr), free(adw);
}

/* rmsnorm forward: the sum of squares is in double in both; the fast r is
 * fp32 (ss/D rounded, + eps, sqrtf, 1/x: 4 roundings), then x r w (2 more)
 * and the ref's own rounding: |out - ref| <= 8u |ref|.
 * backward: dx = r w dy - c x with c = r^3 dot / D; each term within 8u of
 * its exact value (r 4u, products 3u, dot in double) plus the accumulation
 * into dx0: |diff| <= 8u (|r w dy| + |c x| + |dx0|) + u |ref|. */
static void test_rmsnorm(void)
{
    const int64_t N = 23;
    const int D = 130;
    const float eps = 1e-5f;
    float *x = rnd(N * D, 2), *w = rnd(D, 1.5f), *dy = rnd(N * D, 1);
    float *o = rnd(N * D, 1), *or = rnd(N * D, 1), r[23], rr[23];
    double *b = malloc(sizeof(double) * (size_t)(N * D));
    kern_rmsnorm_forward(o, r, x, w, N, D, eps);
    kern_rmsnorm_forward_ref(or, rr, x, w, N, D, eps);
    for (int64_t i = 0; i < N * D; i++) b[i] = 8 * TEST_U32 * fabs(or[i]) + 1e-30;
    TEST_CHECK(over("rmsnorm_forward", o, or, b, N * D) == 0, "fast vs ref");
    for (int i = 0; i < N; i++) TEST_NEAR(r[i], rr[i], 8 * TEST_U32, "rstd");

    float *d0 = rnd(N * D, 1), *d = dup(d0, N * D), *dr = dup(d0, N * D);
    kern_rmsnorm_backward(d, dy, x, w, r, N, D);
    kern_rmsnorm_backward_ref(dr, dy, x, w, N, D, eps);
    for (int64_t i = 0; i < N; i++) {
        double ss = 0, dot = 0;
        for (int j = 0; j < D; j++) {
            ss += (double)x[i * D + j] * x[i * D + j];
            dot += (double)dy[i * D + j] * w[j] * x[i * D + j];
        }
        double rs = 1.0 / sqrt(ss / D + eps), c = rs * rs * rs * dot / D;
        for (int j = 0; j < D; j++) {
            int64_t k = i * D + j;
            b[k] = 8 * TEST_U32 * (fabs(rs * w[j] * dy[k]) + fabs(c * x[k]) + fabs(d0[k])) +
                   TEST_U32 * fabs(dr[k]);
        }
    }
    TEST_CHECK(over("rmsnorm_backward", d, dr, b, N * D) == 0, "fast vs ref");
    free(x), free(w), free(dy), free(o), free(or), free(b), free(d0), free(d), free(dr);
}

/* rope: the fast kernel uses fp32 tables (cos, sin each within u of the
 * exact value) and fp32 a c - b s (3 roundings): per output
 * |diff| <= 6u (|x0| + |x1|).  Backward is the inverse rotation, and
 * forward then backward returns the input within 12u (|x0| + |x1|). */
static void test_rope(void)
{
    const int B = 2, T = 19, nh = 3, hd = 16;
    const float theta = 10000.0f;
    const int64_t n = (int64_t)B * T * nh * hd;
    float *cs = malloc(sizeof(float) * T * hd / 2), *sn = malloc(sizeof(float) * T * hd / 2);
    float *x = rnd(n, 3), *y = dup(x, n), *yr = dup(x, n);
    double *b = malloc(sizeof(double) * (size_t)n);
    kern_rope_tables(cs, sn, T, hd, theta);
    kern_rope_forward(y, cs, sn, B, T, nh, hd);
    kern_rope_forward_ref(yr, B, T, nh, hd, theta);
    for (int64_t v = 0; v < n; v += hd)
        for (int i = 0; i < hd / 2; i++) {
            double m = fabs(x[v + i]) + fabs(x[v + i + hd / 2]);
            b[v + i] = b[v + i + hd / 2] = 6 * TEST_U32 * m;
        }
    TEST_CHECK(over("rope_forward", y, yr, b, n) == 0, "fast vs ref");
    float *z = dup(y, n), *zr = dup(y, n);
    kern_rope_backward(z, cs, sn, B, T, nh, hd);
    kern_rope_backward_ref(zr, B, T, nh, hd, theta);
    TEST_CHECK(over("rope_backward", z, zr, b, n) == 0, "fast vs ref");
    for (int64_t i = 0; i < n; i++) b[i] *= 2;
    TEST_CHECK(over("rope_roundtrip", z, x, b, n) == 0, "backward(forward(x)) = x");
    free(cs), free(sn), free(x), free(y), free(yr), free(b), free(z), free(zr);
}

/* attention, forward and backward (tiled, blocks of 64 rows and columns),
 * scaled residual as in HPL's tests: max |fast - ref| / max |ref| <=
 * 16 (T + hd) u.  The longest reduction has T + hd terms (scores over hd,
 * weighted sums over T: the online softmax rescales a partial sum once per
 * key block, one rounding each, fewer than T), and expf_neg is within
 * 3e-7 = 5u, inside the factor 16.  Shapes: one block with a ragged edge,
 * several blocks (T = 130: a ragged third block, causal masks inside the
 * diagonal blocks, rescaling across blocks), T = 1, GQA and MHA, head
 * sizes that are and are not multiples of the forward's 32- and 16-wide tiles. */
static void attention_case(int B, int T, int H, int Hkv, int hd)
{
    const int64_t nq = (int64_t)B * T * H * hd, nk = (int64_t)B * T * Hkv * hd;
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1), *dout = rnd(nq, 1);
    float *o = rnd(nq, 1), *or = rnd(nq, 1), *lse = malloc(sizeof(float) * (size_t)B * H * T);
    double tol = 16.0 * (T + hd) * TEST_U32;
    kern_attention_forward(o, lse, q, k, v, B, T, H, Hkv, hd);
    kern_attention_forward_ref(or, q, k, v, B, T, H, Hkv, hd);
    TEST_CHECK(test_max_rel(o, or, nq) <= tol, "attention_forward B%d T%d H%d/%d hd%d: %.3g > %.3g",
               B, T, H, Hkv, hd, test_max_rel(o, or, nq), tol);
    /* row 0 sees only itself: out = v_0 exactly (P = exp(0) = 1) */
    for (int h = 0; h < H; h++)
        for (int d = 0; d < hd; d++)
            TEST_CHECK(o[h * hd + d] == v[(h / (H / Hkv)) * hd + d], "row 0 = v_0");
    float *dq0 = rnd(nq, 0.1f), *dk0 = rnd(nk, 0.1f), *dv0 = rnd(nk, 0.1f);
    float *dq = dup(dq0, nq), *dk = dup(dk0, nk), *dv = dup(dv0, nk);
    float *dqr = dup(dq0, nq), *dkr = dup(dk0, nk), *dvr = dup(dv0, nk);
    kern_attention_backward(dq, dk, dv, dout, o, lse, q, k, v, B, T, H, Hkv, hd);
    kern_attention_backward_ref(dqr, dkr, dvr, dout, q, k, v, B, T, H, Hkv, hd);
    TEST_CHECK(test_max_rel(dq, dqr, nq) <= tol, "attention dq T%d %.3g", T, test_max_rel(dq, dqr, nq));
    TEST_CHECK(test_max_rel(dk, dkr, nk) <= tol, "attention dk T%d %.3g", T, test_max_rel(dk, dkr, nk));
    TEST_CHECK(test_max_rel(dv, dvr, nk) <= tol, "attention dv T%d %.3g", T, test_max_rel(dv, dvr, nk));
    free(q), free(k), free(v), free(dout), free(o), free(or), free(lse);
    free(dq0), free(dk0), free(dv0), free(dq), free(dk), free(dv), free(dqr), free(dkr), free(dvr);
}

/* With `threads` OpenMP threads the (batch row, kv head) groups are shared
 * out; each group's arithmetic is sequential, so the result must not
 * depend on the thread count: compared bit for bit with one thread. */
static void test_attention(int threads)
{
    const int B = 3, T = 100, H = 4, Hkv = 2, hd = 16;
    const int64_t nq = (int64_t)B * T * H * hd, nk = (int64_t)B * T * Hkv * hd;
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1), *dout = rnd(nq, 1);
    float *o[2], *lse[2], *dq[2], *dk[2], *dv[2];
    for (int r = 0; r < 2; r++) {
        kern_gemm_threads(r ? threads : 1);
        o[r] = rnd(nq, 1), lse[r] = rnd((int64_t)B * H * T, 1);
        dq[r] = calloc(nq, 4), dk[r] = calloc(nk, 4), dv[r] = calloc(nk, 4);
        kern_attention_forward(o[r], lse[r], q, k, v, B, T, H, Hkv, hd);
        kern_attention_backward(dq[r], dk[r], dv[r], dout, o[r], lse[r], q, k, v, B, T, H, Hkv, hd);
    }
    TEST_CHECK(!memcmp(o[0], o[1], 4 * nq) && !memcmp(dq[0], dq[1], 4 * nq) &&
               !memcmp(dk[0], dk[1], 4 * nk) && !memcmp(dv[0], dv[1], 4 * nk),
               "attention with %d threads = 1 thread, bit for bit", threads);
    for (int r = 0; r < 2; r++) free(o[r]), free(lse[r]), free(dq[r]), free(dk[r]), free(dv[r]);
    free(q), free(k), free(v), free(dout);
    kern_gemm_threads(threads);
    attention_case(2, 17, 4, 2, 8);
    attention_case(2, 130, 4, 2, 16);
    attention_case(1, 1, 2, 2, 8);
    attention_case(3, 64, 2, 2, 8);
    attention_case(1, 200, 4, 1, 32);
    attention_case(2, 100, 2, 2, 24); /* the forward's 16-wide tile and an 8-column tail */
    attention_case(1, 90, 2, 1, 56);  /* its 32-, 16-wide tiles and tail */
    attention_case(1, 70, 2, 1, 128); /* blocks of 32 (att_block) */
}

/* expf_neg (src/kernels/kern_internal.h), the vectorised exp of the
 * softmaxes, the log-sum-exp and swiglu: against libm's exp in double on
 * every 61st float of [-87, 0] (18 million; all 1.1e9 of them, run once
 * off-line, peak at 4.26u near -26.7), relative error <= 4.3u (u = 2^-24),
 * the bound the kernels' comments use.  Below -87 it gives exactly
 * exp(-87) rounded (the clamp), -inf too, and NaN stays NaN. */
static void test_expf_neg(void)
{
    union { float f; uint32_t u; } v = {.f = -87.0f}, z = {.f = -0.0f};
    double worst = 0;
    for (; v.u > z.u; v.u = v.u - z.u > 61 ? v.u - 61 : z.u) {
        double e = exp((double)v.f), r = fabs(expf_neg(v.f) - e) / e;
        worst = r > worst ? r : worst;
    }
    TEST_CHECK(expf_neg(0.0f) == 1.0f && expf_neg(-0.0f) == 1.0f, "expf_neg(0) = 1");
    fprintf(stderr, "expf_neg: max relative error %.3g = %.2fu\n", worst, worst / TEST_U32);
    TEST_CHECK(worst <= 4.3 * TEST_U32, "expf_neg relative error %.3g > 4.3u", worst);
    TEST_CHECK(expf_neg(-1000.0f) == expf_neg(-87.0f) && expf_neg(-INFINITY) == expf_neg(-87.0f),
               "expf_neg clamps at -87");
    TEST_CHECK(isnan(expf_neg(NAN)), "expf_neg(NaN) is NaN");
}

/* swiglu: forward g sigma(g) up with e = expf_neg(-|g|) (4.3u), 1 + e,
 * then 1 / (1 + e) (g >= 0: 2.5u from e, as e / (1 + e) <= 1/2, + 2u) or
 * e / (1 + e) (g < 0: 4.3u + 3.5u + u), then two products, and the
 * ref's own rounding to fp32: within 13u of the exact value relative, for
 * g >= -87; g spans [-90, 90] (the large
 * |g| by hand: saturation both ways, and g < -87 where exp(g) is taken as
 * e^-87, absolute |g up| e^-87 < 1e-35 there).  Backward: the factor 1 + g (1 - s)
 * cancels near g = -1.28, so the bound is absolute on its terms.  The fast
 * backward takes s from the forward's expf_neg path (9.5u as above); an
 * error d in s moves s (1 + g (1 - s)) by s d |1 + g (1 - 2s)| <=
 * s d (1 + |g|), so 9.5u (1 + |g|) s, plus the five roundings of the
 * products and the sum inside (5u (1 + |g|) s, loosely):
 * |ddgate| <= 15u |dout up s| (1 + |g|) + u (|dgate0| + |ref|), and for
 * dup = dup0 + dout (g s): 9.5u + 2u of products,
 * |ddup| <= 12u |dout g s| + u (|dup0| + |ref|). */
static void test_swiglu(void)
{
    const int64_t n = 4099;
    float *g = rnd(n, 8), *u = rnd(n, 2), *dout = rnd(n, 1);
    float *o = rnd(n, 1), *or = rnd(n, 1);
    double *b = malloc(sizeof(double) * (size_t)n), *b2 = malloc(sizeof(double) * (size_t)n);
    const float big[] = {-90, -88, -87, -86.5f, -50, -20, -1e-30f, 0, 1e-30f, 20, 50, 88, 90};
    for (int i = 0; i < (int)(sizeof big / sizeof big[0]); i++) g[100 + i] = big[i];
    kern_swiglu_forward(o, g, u, n);
    kern_swiglu_forward_ref(or, g, u, n);
    for (int64_t i = 0; i < n; i++)
        b[i] = 13 * TEST_U32 * fabs(or[i]) + (g[i] < -87 ? fabs(g[i] * u[i]) * exp(-87.0) : 1e-30);
    TEST_CHECK(over("swiglu_forward", o, or, b, n) == 0, "fast vs ref");
    float *dg0 = rnd(n, 1), *du0 = rnd(n, 1);
    float *dg = dup(dg0, n), *du = dup(du0, n), *dgr = dup(dg0, n), *dur = dup(du0, n);
    kern_swiglu_backward(dg, du, dout, g, u, n);
    kern_swiglu_backward_ref(dgr, dur, dout, g, u, n);
    for (int64_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)g[i]));
        /* below -87 s is e^-87 rounded, not e^g (the clamp) */
        double clamp = g[i] < -87 ? exp(-87.0) : 0;
        b[i] = 15 * TEST_U32 * fabs(dout[i] * u[i] * s) * (1 + fabs(g[i])) +
               TEST_U32 * (fabs(dg0[i]) + fabs(dgr[i])) +
               fabs(dout[i] * u[i]) * (1 + fabs(g[i])) * clamp;
        b2[i] = 12 * TEST_U32 * fabs(dout[i] * g[i] * s) + TEST_U32 * (fabs(du0[i]) + fabs(dur[i])) +
                fabs(dout[i] * g[i]) * clamp;
    }
    TEST_CHECK(over("swiglu_backward dgate", dg, dgr, b, n) == 0, "fast vs ref");
    TEST_CHECK(over("swiglu_backward dup", du, dur, b2, n) == 0, "fast vs ref");
    /* _set: the bits of the add onto zeros, every entry written (over NaN) */
    float *zg = calloc((size_t)n, sizeof(float)), *zu = calloc((size_t)n, sizeof(float));
    float *sg = malloc(sizeof(float) * (size_t)n), *su = malloc(sizeof(float) * (size_t)n);
    if (!zg || !zu || !sg || !su) abort();
    for (int64_t i = 0; i < n; i++) sg[i] = su[i] = NAN;
    kern_swiglu_backward(zg, zu, dout, g, u, n);
    kern_swiglu_backward_set(sg, su, dout, g, u, n);
    TEST_CHECK(!memcmp(zg, sg, sizeof(float) * (size_t)n) &&
                   !memcmp(zu, su, sizeof(float) * (size_t)n),
               "swiglu_backward_set: the bits of the add onto zeros");
    free(zg), free(zu), free(sg), free(su);
    free(g), free(u), free(dout), free(o), free(or), free(b), free(b2);
    free(dg0), free(du0), free(dg), free(du), free(dgr), free(dur);
}

/* cross-entropy: the fast log-sum-exp sums exp in fp32 blocks of 512 into a
 * double (relative error gamma_512 of the sum, so gamma_512 absolute in the
 * log), exp within 5u, and lse rounded to fp32 (|lse| u).  Per row
 * |nll - ref| <= gamma_512 + 8u (|lse| + 1); per entry
 * |d - ref| <= scale p_j (gamma_512 + 8u (|lse| + 1)) + 2u scale [j = t]
 * + u (|d0| + |ref|).  Rows with target -1 stay as they were. */
static void test_crossentropy(void)
{
    const int64_t N = 7;
    const int V = 1100;
    float *l = rnd(N * V, 6);
    int t[7] = {3, 1099, -1, 0, 512, 777, -1};
    const float scale = 0.125f;
    float *d0 = rnd(N * V, 0.01f), *d = dup(d0, N * V), *dr = dup(d0, N * V);
    double *b = malloc(sizeof(double) * (size_t)(N * V));
    double tot = kern_crossentropy_forward_backward(d, l, t, N, V, scale);
    double totr = kern_crossentropy_forward_backward_ref(dr, l, t, N, V, scale);
    double g512 = test_gamma(512, TEST_U32), tb = 0;
    for (int64_t i = 0; i < N; i++) {
        double nr = kern_nll_row_ref(l + i * V, t[i], V);
        double lse = t[i] < 0 ? 0 : nr + l[i * V + t[i]], rb = g512 + 8 * TEST_U32 * (fabs(lse) + 1);
        if (t[i] >= 0) tb += rb;
        TEST_CHECK(fabs(kern_nll_row(l + i * V, t[i], V) - nr) <= rb, "nll row %ld", (long)i);
        for (int j = 0; j < V; j++) {
            int64_t k = i * V + j;
            double p = t[i] < 0 ? 0 : exp(l[k] - lse);
            b[k] = scale * p * rb + (j == t[i] ? 2 * TEST_U32 * scale : 0) +
                   TEST_U32 * (fabs(d0[k]) + fabs(dr[k]));
            if (t[i] < 0) b[k] = 0; /* untouched: bit-identical */
        }
    }
    TEST_CHECK(over("crossentropy dlogits", d, dr, b, N * V) == 0, "fast vs ref");
    TEST_CHECK(fabs(tot - totr) <= tb, "summed nll %.12g vs ref %.12g (bound %.3g)", tot, totr, tb);
    free(l), free(d0), free(d), free(dr), free(b);
}

/* kern_crossentropy_forward_backward_bf16: bit for bit kern_bf16_round of
 * the fp32 kernel's output on a zeroed dlogits (the same fp32 operations,
 * then one rounding), rows with target -1 all +0; the same summed NLL
 * (the same rows, the same order). */
static void test_crossentropy_bf16(void)
{
    const int64_t N = 70; /* > one block of 64 rows */
    const int V = 1100;
    float *l = rnd(N * V, 6), *d = calloc((size_t)(N * V), sizeof(float));
    uint16_t *db = malloc(sizeof(uint16_t) * (size_t)(N * V));
    int *t = malloc(sizeof(int) * (size_t)N);
    if (!d || !db || !t) abort();
    for (int64_t i = 0; i < N; i++) t[i] = i % 9 == 2 ? -1 : (int)((i * 389) % V);
    for (int64_t k = 0; k < N * V; k++) db[k] = 0x7fc1; /* NaN: every entry must be written */
    const float scale = 1.0f / 61;
    double tot = kern_crossentropy_forward_backward(d, l, t, N, V, scale);
    double totb = kern_crossentropy_forward_backward_bf16(db, l, t, N, V, scale);
    int64_t off = 0;
    for (int64_t k = 0; k < N * V; k++) off += db[k] != kern_bf16_round(d[k]);
    TEST_CHECK(off == 0, "crossentropy bf16: %lld entries differ from bf16(fp32 kernel)",
               (long long)off);
    TEST_CHECK(tot == totb, "crossentropy bf16 nll %.17g vs fp32 kernel %.17g", totb, tot);
    /* the _set variant: the same bits as the add onto zeros, over NaN */
    float *ds = malloc(sizeof(float) * (size_t)(N * V));
    if (!ds) abort();
    for (int64_t k = 0; k < N * V; k++) ds[k] = NAN;
    double tots = kern_crossentropy_forward_backward_set(ds, l, t, N, V, scale);
    TEST_CHECK(!memcmp(ds, d, sizeof(float) * (size_t)(N * V)) && tots == tot,
               "crossentropy _set: the bits of the add onto zeros, every entry written");
    free(l), free(d), free(db), free(t), free(ds);
}

int main(void)
{
    test_matmul();
    test_rmsnorm();
    test_rope();
    test_attention(1);
    test_attention(2);
    test_expf_neg();
    test_swiglu();
    test_crossentropy();
    test_crossentropy_bf16();
    return test_finish("test_kernels");
}
