/* LoSA allocators: cubic schedule, CKA (invariances, identity, against the
 * feature-space formula), the bounded LP (bounds, exact mean, order, ties),
 * the MI-proportional allocator, the rank allocator (exact total, clipping,
 * adjustment order). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "losa.h"
#include "test_util.h"

static double mean(const double *x, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

/* CKA by the feature-space formula on centred features (independent of the
 * Gram path): ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F). */
static double cka_features(const float *X, const float *Y, int n, int m)
{
    double *xc = calloc((size_t)n * m, sizeof(double)), *yc = calloc((size_t)n * m, sizeof(double));
    for (int j = 0; j < m; j++) {
        double mx = 0, my = 0;
        for (int i = 0; i < n; i++) mx += X[i * m + j], my += Y[i * m + j];
        mx /= n, my /= n;
        for (int i = 0; i < n; i++) xc[i * m + j] = X[i * m + j] - mx, yc[i * m + j] = Y[i * m + j] - my;
    }
    double xy = 0, xx = 0, yy = 0;
    for (int a = 0; a < m; a++)
        for (int b = 0; b < m; b++) {
            double sxy = 0, sxx = 0, syy = 0;
            for (int i = 0; i < n; i++) {
                sxy += yc[i * m + a] * xc[i * m + b];
                sxx += xc[i * m + a] * xc[i * m + b];
                syy += yc[i * m + a] * yc[i * m + b];
            }
            xy += sxy * sxy, xx += sxx * sxx, yy += syy * syy;
        }
    free(xc);
    free(yc);
    return xy / sqrt(xx * yy);
}

static double cka_grams(const float *X, const float *Y, int n, int m)
{
    double *g = calloc((size_t)2 * n * n, sizeof(double)), c[4];
    float *tmp = calloc((size_t)n * n, sizeof(float));
    calib_centred_gram(g, X, n, m, tmp);
    calib_centred_gram(g + n * n, Y, n, m, tmp);
    losa_cka(c, g, 2, n);
    free(g);
    free(tmp);
    return c[1];
}

static void test_cka(void)
{
    int n = 10, m = 6;
    core_rng r;
    core_rng_seed(&r, 4);
    float X[60], Y[60], XQ[60], Ys[60];
    for (int i = 0; i < n * m; i++) X[i] = core_rng_normal(&r), Y[i] = X[i] + core_rng_normal(&r);
    /* orthogonal transform: a Givens rotation of features 1 and 4 then 0 and 2 */
    double c1 = cos(0.7), s1 = sin(0.7), c2 = cos(-1.3), s2 = sin(-1.3);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < m; j++) XQ[i * m + j] = X[i * m + j];
        float a = XQ[i * m + 1], b = XQ[i * m + 4];
        XQ[i * m + 1] = (float)(c1 * a - s1 * b), XQ[i * m + 4] = (float)(s1 * a + c1 * b);
        a = XQ[i * m + 0], b = XQ[i * m + 2];
        XQ[i * m + 0] = (float)(c2 * a - s2 * b), XQ[i * m + 2] = (float)(s2 * a + c2 * b);
        for (int j = 0; j < m; j++) Ys[i * m + j] = 3.5f * Y[i * m + j];
    }
    double ref = cka_features(X, Y, n, m), got = cka_grams(X, Y, n, m);
    TEST_NEAR(got, ref, 1e-5, "CKA gram path vs feature-space formula");
    TEST_CHECK(ref > 0.1 && ref < 0.99, "CKA of correlated inputs in (0,1): %g", ref);
    TEST_NEAR(cka_grams(X, X, n, m), 1.0, 1e-6, "CKA(X, X) = 1");
    TEST_NEAR(cka_grams(XQ, Y, n, m), got, 1e-5, "CKA invariant to orthogonal transforms");
    TEST_NEAR(cka_grams(X, Ys, n, m), got, 1e-5, "CKA invariant to isotropic scaling");
}

/* The Gram of a long row (16 x 2^16: above OpenBLAS's single-thread size,
 * where a threaded sgemm splits K over its threads and rounds otherwise)
 * bit for bit the same with 1 and 2 OpenBLAS threads, and the caller's
 * thread count left as it was. */
static void test_gram_threads(void)
{
    int n = 16;
    int64_t m = 1 << 16;
    float *X = malloc(sizeof(float) * (size_t)(n * m)), *tmp = malloc(sizeof(float) * n * n);
    double *g1 = malloc(sizeof(double) * n * n), *g2 = malloc(sizeof(double) * n * n);
    core_rng r;
    core_rng_seed(&r, 7);
    for (int64_t i = 0; i < n * m; i++) X[i] = (float)core_rng_normal(&r);
    int nt = openblas_get_num_threads();
    openblas_set_num_threads(1);
    calib_centred_gram(g1, X, n, m, tmp);
    openblas_set_num_threads(2);
    calib_centred_gram(g2, X, n, m, tmp);
    TEST_CHECK(openblas_get_num_threads() == 2, "gram leaves OpenBLAS's thread count: %d",
               openblas_get_num_threads());
    openblas_set_num_threads(nt);
    TEST_CHECK(!memcmp(g1, g2, sizeof(double) * n * n), "gram: same bits with 1 and 2 threads");
    free(X);
    free(tmp);
    free(g1);
    free(g2);
}

static void test_lp(void)
{
    double imp[6] = {0.5, 0.2, 0.9, 0.2, 0.7, 0.1}, x[6];
    double s = 0.6, d = losa_delta(s);
    TEST_NEAR(d, 0.02, 1e-12, "delta(0.6)");
    losa_alloc_lp(x, imp, 6, s, d);
    TEST_NEAR(mean(x, 6), s, 1e-12, "LP mean exact");
    /* L*delta budget: the 3 least important (5, then 1 and 3 tied -> index 1 first) at the top */
    double want[6] = {0.58, 0.62, 0.58, 0.62, 0.58, 0.62};
    for (int i = 0; i < 6; i++) TEST_NEAR(x[i], want[i], 1e-12, "LP allocation");
    /* odd L: one layer in between */
    double imp5[5] = {3, 1, 2, 5, 4}, x5[5];
    losa_alloc_lp(x5, imp5, 5, 0.7, 0.03);
    TEST_NEAR(mean(x5, 5), 0.7, 1e-12, "LP mean (odd L)");
    TEST_NEAR(x5[1], 0.73, 1e-12, "least important at upper bound");
    TEST_NEAR(x5[2], 0.73, 1e-12, "second least important at upper bound");
    TEST_NEAR(x5[0], 0.70, 1e-12, "middle layer takes the rest");
    TEST_NEAR(x5[3], 0.67, 1e-12, "most important at lower bound");
    for (int i = 0; i < 5; i++) TEST_CHECK(x5[i] >= 0.67 - 1e-12 && x5[i] <= 0.73 + 1e-12, "bounds");
    /* floors: layer 3 (most important) is already at 0.71 */
    double fl[5] = {0, 0, 0, 0.71, 0};
    losa_alloc_lp_floor(x5, imp5, 5, 0.7, 0.03, fl);
    TEST_NEAR(mean(x5, 5), 0.7, 1e-12, "LP with floors: mean exact");
    TEST_NEAR(x5[3], 0.71, 1e-12, "floor respected");
    /* budget 3.5 - (4 * 0.67 + 0.71) = 0.11: least important (1) to 0.73, next (2) gets 0.05 */
    TEST_NEAR(x5[1], 0.73, 1e-12, "floors: least important filled");
    TEST_NEAR(x5[2], 0.72, 1e-12, "floors: the remaining budget to the next");
    TEST_NEAR(x5[0], 0.67, 1e-12, "floors: the rest at the lower bound");
    /* importances from CKA: a layer similar to all others is least important */
    double cka[9] = {1, 0.9, 0.9, 0.9, 1, 0.2, 0.9, 0.2, 1}, im[3];
    losa_rmi_importance(im, cka, 3, 1.0);
    TEST_CHECK(im[0] < im[1] && im[0] < im[2], "redundant layer 0 least important");
    TEST_NEAR(im[1], im[2], 1e-12, "symmetric layers equal importance");
    TEST_NEAR(im[0], exp(-1.8 / 4.0), 1e-12, "imp = exp(-beta * normalised redundancy)");
}

static void test_mi(void)
{
    double mi[5] = {0.9, 0.5, 0.7, 0.1, 0.6}, x[5];
    losa_alloc_mi_proportional(x, mi, 5, 0.6, 0.02);
    TEST_NEAR(mean(x, 5), 0.6, 1e-10, "MI mean exact");
    for (int i = 0; i < 5; i++) TEST_CHECK(x[i] >= 0.58 - 1e-12 && x[i] <= 0.62 + 1e-12, "MI bounds");
    TEST_CHECK(x[0] <= x[2] && x[2] <= x[4] && x[4] <= x[1] && x[1] <= x[3],
               "higher MI -> lower sparsity");
    /* unclipped case: density proportional to mi with mean density 1 - s */
    double mi2[4] = {1.0, 1.02, 0.98, 1.0}, x2[4];
    losa_alloc_mi_proportional(x2, mi2, 4, 0.5, 0.05);
    TEST_NEAR(1 - x2[1], 0.5 * 1.02, 1e-9, "density = (1-s) mi / mean(mi)");
}

static void test_ranks(void)
{
    double err[5] = {1, 2, 3, 4, 10};
    int r[5], sum = 0;
    losa_alloc_ranks(r, err, 5, 6, 1, 16);
    for (int i = 0; i < 5; i++) sum += r[i];
    TEST_CHECK(sum == 30, "rank total %d == 30", sum);
    /* raw: 1.5, 3, 4.5, 6, 15 -> 2,3,5(lround 4.5=5),6,15 = 31 -> -1 to the smallest error */
    int want[5] = {1, 3, 5, 6, 15};
    for (int i = 0; i < 5; i++) TEST_CHECK(r[i] == want[i], "rank[%d] = %d, want %d", i, r[i], want[i]);
    double err2[4] = {1, 1, 1, 100};
    losa_alloc_ranks(r, err2, 4, 6, 1, 16);
    /* raw 0.23,0.23,0.23,23.3 -> clip 1,1,1,16 = 19 < 24 -> +1 cyclic from the largest: 16 full, then 0,1,2 */
    int want2[4] = {3, 3, 2, 16};
    for (int i = 0; i < 4; i++) TEST_CHECK(r[i] == want2[i], "clip+adjust rank[%d] = %d, want %d", i, r[i], want2[i]);
    double err3[3] = {2, 2, 2};
    losa_alloc_ranks(r, err3, 3, 7, 1, 16);
    TEST_CHECK(r[0] == 7 && r[1] == 7 && r[2] == 7, "equal errors -> mean rank");
}

int main(void)
{
    TEST_NEAR(losa_schedule(0.7, 5, 5), 0.7, 1e-12, "s_T = s");
    TEST_NEAR(losa_schedule(0.7, 1, 5), 0.7 - 0.7 * 0.512, 1e-12, "s_1 cubic");
    TEST_NEAR(losa_schedule(0.5, 0, 5), 0.0, 1e-12, "s_0 = 0");
    TEST_NEAR(losa_delta(0.5), 0.01, 0, "delta 0.5");
    TEST_NEAR(losa_delta(0.7), 0.03, 0, "delta 0.7");
    test_cka();
    test_gram_threads();
    test_lp();
    test_mi();
    test_ranks();
    return test_finish("test_alloc");
}
