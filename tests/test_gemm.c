/* The GEMM seam (kern_gemm, src/kernels/gemm.c) of whichever engine the
 * build uses (oneDNN or CBLAS):
 *  - C = alpha op(A) op(B) + beta C for the four transposes, leading
 *    dimensions wider than the rows, alpha != 1 and beta in {0, 1, -0.5},
 *    against a double-precision reference, entry by entry within
 *    gamma_{K+3} (|alpha| sum_k |a_ik b_kj| + |beta c0_ij|): a K-term fp32
 *    dot product in any order (Higham 3.1) plus three more roundings
 *    (alpha, beta c0, the final add);
 *  - padding between rows (lda/ldb/ldc > the row) is never written;
 *  - K = 0 gives beta C; M = 0 or N = 0 touches nothing;
 *  - the same call twice gives the same bits (a cached primitive reused);
 *  - oneDNN's primitive cache: one primitive per shape and thread count,
 *    the least recently used evicted past 256, results right after eviction;
 *  - kern_gemm_bf16w (bf16 B, fp32 A and C): against a double reference of
 *    A times the bf16 values of B, within (2^-8 + gamma_{K+3} (1 + 2^-8))
 *    (|alpha| sum_k |a_ik b_kj| + |beta c0_ij|): oneDNN rounds each a_ik
 *    to bf16 (relative error <= 2^-8, round to nearest even with 8
 *    significant bits), the products of two bf16 are exact in fp32 and
 *    summed in fp32 (gamma_K on the rounded terms, each <= (1 + 2^-8)
 *    times the exact one), three more roundings as above; CBLAS keeps A
 *    fp32 and meets the tighter half of it;
 *  - packed bf16 weights (kern_bf16_pack, kern_gemm_bf16p): unpacking gives
 *    the plain bits back (a permutation); kern_gemm_bf16p on the packed W
 *    against kern_gemm_bf16w(tb = 1) on the plain W, same A, entry by
 *    entry within 2 gamma_{K+3} (|alpha| sum_k |a'_ik b_jk| + |beta c0_ij|),
 *    a' = bf16(a) under oneDNN: both sum the same exact fp32 products
 *    a'_ik b_jk (two bf16 significands of 8 bits multiply exactly in fp32's
 *    24), each within gamma_{K+3} of the exact result whatever the order
 *    the engine picks (Higham 3.1, plus alpha, beta c0 and the final add),
 *    so their difference within twice that.  Bit-identical entries are
 *    counted and printed (oneDNN reorders the plain B into the same blocked
 *    layout and runs the same kernel, but that is its choice, not ours);
 *    CBLAS: the packed layout is the plain one, the results bit-identical
 *    (the same calls), which is checked;
 *  - kern_gemm_bf16a (A already bf16): with lda = K bit-identical to
 *    kern_gemm_bf16w on the fp32 values of A (oneDNN: the same primitive
 *    after bf16w's rounding, which changes nothing on bf16 values; CBLAS:
 *    A widened exactly, then the same path); with a padded lda within
 *    2 gamma_{K+3} (|alpha| sum_k |a_ik b_kj| + |beta c0_ij|) of it (the
 *    same exact products summed in orders the engine may pick, each within
 *    gamma_{K+3} of the exact result), the padding of C never written;
 *  - kern_gemm_bf16w2 (two products of one A): bit-identical to the two
 *    kern_gemm_bf16w calls, padding of C never written;
 *  - kern_bf16_round: round to nearest even on hand cases, zeros stay zero,
 *    kern_bf16_from_f32 counts the non-zeros that round to zero.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "test_util.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / 8388608.0 - 1.0);
}

#define PAD 1.0e30f /* written into the padding: must survive */

/* One case: op(A) (M,K), op(B) (K,N), C (M,N) with leading dimensions
 * cols + 3; returns the number of entries outside the bound (or padding
 * overwritten). */
static int64_t gemm_case(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta)
{
    int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    int64_t lda = ac + 3, ldb = bc + 3, ldc = N + 3;
    float *A = malloc(sizeof(float) * (size_t)(ar * lda + 1));
    float *B = malloc(sizeof(float) * (size_t)(br * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    if (!A || !B || !C || !C0) abort();
    for (int64_t i = 0; i < ar * lda; i++) A[i] = i % lda < ac ? frand() : PAD;
    for (int64_t i = 0; i < br * ldb; i++) B[i] = i % ldb < bc ? frand() : PAD;
    for (int64_t i = 0; i < M * ldc; i++) C0[i] = i % ldc < N ? frand() : PAD;
    memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
    kern_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    int64_t bad = 0;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k];
                double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
                sa += fabs(a * b);
            }
            double c0 = C0[i * ldc + j];
            double ref = alpha * s + (beta == 0.0f ? 0.0 : beta * c0);
            double bound = test_gamma((double)K + 3, TEST_U32) *
                           (fabs(alpha) * sa + fabs(beta) * fabs(c0));
            double d = fabs(C[i * ldc + j] - ref);
            if (!(d <= bound)) {
                if (!bad)
                    fprintf(stderr, "ta %d tb %d %ldx%ldx%ld: C[%ld,%ld] %.9g vs %.9g (bound %.3g)\n",
                            ta, tb, (long)M, (long)N, (long)K, (long)i, (long)j,
                            C[i * ldc + j], ref, bound);
                bad++;
            }
        }
        for (int64_t j = N; j < ldc; j++) bad += C[i * ldc + j] != PAD;
    }
    /* the same call again: the same bits */
    float *C2 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    if (!C2) abort();
    memcpy(C2, C0, sizeof(float) * (size_t)(M * ldc));
    kern_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc);
    TEST_CHECK(memcmp(C, C2, sizeof(float) * (size_t)(M * ldc)) == 0,
               "ta %d tb %d %ldx%ldx%ld: a second call differs", ta, tb, (long)M, (long)N, (long)K);
    free(A), free(B), free(C), free(C0), free(C2);
    return bad;
}

/* kern_gemm_bf16w: op(B) (K,N) bf16, A (M,K) fp32; lda, ldb, ldc padded. */
static int64_t gemm_bf16_case(int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta)
{
    int64_t br = tb ? N : K, bc = tb ? K : N;
    int64_t lda = K + 3, ldb = bc + 3, ldc = N + 3;
    float *A = malloc(sizeof(float) * (size_t)(M * lda + 1));
    uint16_t *B = malloc(sizeof(uint16_t) * (size_t)(br * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    if (!A || !B || !C || !C0) abort();
    for (int64_t i = 0; i < M * lda; i++) A[i] = frand();
    for (int64_t i = 0; i < br * ldb; i++) B[i] = kern_bf16_round(frand());
    for (int64_t i = 0; i < M * ldc; i++) C0[i] = i % ldc < N ? frand() : PAD;
    memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
    kern_gemm_bf16w(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    int64_t bad = 0;
    const double ub = 1.0 / 256.0; /* bf16 unit roundoff */
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = A[i * lda + k];
                double b = kern_bf16_value(tb ? B[j * ldb + k] : B[k * ldb + j]);
                s += a * b;
                sa += fabs(a * b);
            }
            double c0 = C0[i * ldc + j];
            double ref = alpha * s + (beta == 0.0f ? 0.0 : beta * c0);
            double bound = (ub + test_gamma((double)K + 3, TEST_U32) * (1 + ub)) *
                           (fabs(alpha) * sa + fabs(beta) * fabs(c0));
            double d = fabs(C[i * ldc + j] - ref);
            if (!(d <= bound)) {
                if (!bad)
                    fprintf(stderr, "bf16 tb %d %ldx%ldx%ld: C[%ld,%ld] %.9g vs %.9g (bound %.3g)\n",
                            tb, (long)M, (long)N, (long)K, (long)i, (long)j, C[i * ldc + j], ref,
                            bound);
                bad++;
            }
        }
        for (int64_t j = N; j < ldc; j++) bad += C[i * ldc + j] != PAD;
    }
    free(A), free(B), free(C), free(C0);
    return bad;
}

static void test_bf16(void)
{
    /* round to nearest even: 1 + 2^-8 is half way between 1 and 1 + 2^-7 */
    TEST_CHECK(kern_bf16_round(1.0f + 1.0f / 256) == 0x3f80, "1 + 2^-8 -> 1 (even)");
    TEST_CHECK(kern_bf16_round(1.0f + 3.0f / 256) == 0x3f82, "1 + 3 2^-8 -> 1 + 2^-6 (even)");
    TEST_CHECK(kern_bf16_round(1.0f + 1.0f / 128 + 1.0f / 4096) == 0x3f81, "above half: up");
    TEST_CHECK(kern_bf16_round(-2.0f) == 0xc000 && kern_bf16_value(0xc000) == -2.0f, "-2 exact");
    float x[5] = {0.0f, -0.0f, 1e-45f, 3.0f, 1e-39f};
    uint16_t y[5];
    int64_t lost = kern_bf16_from_f32(y, x, 5);
    TEST_CHECK(y[0] == 0 && y[1] == 0x8000 && (y[2] & 0x7fff) == 0 && y[3] == 0x4040,
               "zeros stay zero, 3 exact");
    TEST_CHECK(lost == 1 && y[4] != 0, "one non-zero (1e-45) rounds to zero, 1e-39 does not");
    float z[5];
    kern_bf16_to_f32(z, y, 5);
    TEST_CHECK(z[3] == 3.0f && z[0] == 0.0f, "back to fp32");
    static const int64_t shapes[][3] = {{37, 80, 96}, {256, 300, 256}, {8, 256, 768}, {1, 5, 1}};
    static const float betas[] = {0.0f, 1.0f, -0.5f};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tb = 0; tb < 2; tb++)
            for (int b = 0; b < 3; b++) {
                float alpha = b == 1 ? 1.0f : 0.35f;
                int64_t bad = gemm_bf16_case(tb, shapes[s][0], shapes[s][1], shapes[s][2], alpha,
                                             betas[b]);
                TEST_CHECK(bad == 0, "bf16 shape %zu tb %d beta %g: %lld entries off", s, tb,
                           betas[b], (long long)bad);
            }
    float C[2] = {2, 4}, A1[1] = {1};
    kern_gemm_bf16w(1, 1, 2, 0, 1.0f, A1, 1, NULL, 1, 0.5f, C, 2);
    TEST_CHECK(C[0] == 1.0f && C[1] == 2.0f, "bf16 K = 0 gives beta C");
}

/* kern_gemm_bf16a vs kern_gemm_bf16w on the widened A; returns entries off. */
static int64_t gemm_bf16a_case(int tb, int64_t M, int64_t N, int64_t K, int64_t lda, float alpha,
                               float beta)
{
    int64_t br = tb ? N : K, bc = tb ? K : N, ldb = bc + 1, ldc = N + 2;
    uint16_t *Ab = malloc(sizeof(uint16_t) * (size_t)(M * lda + 1));
    float *A = malloc(sizeof(float) * (size_t)(M * lda + 1));
    uint16_t *B = malloc(sizeof(uint16_t) * (size_t)(br * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *Cw = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    if (!Ab || !A || !B || !C || !Cw || !C0) abort();
    for (int64_t i = 0; i < M * lda; i++) A[i] = kern_bf16_value(Ab[i] = kern_bf16_round(frand()));
    for (int64_t i = 0; i < br * ldb; i++) B[i] = kern_bf16_round(frand());
    for (int64_t i = 0; i < M * ldc; i++) C0[i] = i % ldc < N ? frand() : PAD;
    memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
    memcpy(Cw, C0, sizeof(float) * (size_t)(M * ldc));
    kern_gemm_bf16a(tb, M, N, K, alpha, Ab, lda, B, ldb, beta, C, ldc);
    kern_gemm_bf16w(tb, M, N, K, alpha, A, lda, B, ldb, beta, Cw, ldc);
    int64_t bad = 0;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double sa = 0;
            for (int64_t k = 0; k < K; k++)
                sa += fabs((double)A[i * lda + k] *
                           kern_bf16_value(tb ? B[j * ldb + k] : B[k * ldb + j]));
            double bound = lda == K ? 0.0
                           : 2 * test_gamma((double)K + 3, TEST_U32) *
                                 (fabs(alpha) * sa + fabs(beta) * fabs(C0[i * ldc + j]));
            double d = fabs((double)C[i * ldc + j] - Cw[i * ldc + j]);
            if (!(d <= bound) || (lda == K && memcmp(&C[i * ldc + j], &Cw[i * ldc + j], 4))) {
                if (!bad)
                    fprintf(stderr, "bf16a tb %d %ldx%ldx%ld lda %ld: C[%ld,%ld] %.9g vs %.9g\n",
                            tb, (long)M, (long)N, (long)K, (long)lda, (long)i, (long)j,
                            C[i * ldc + j], Cw[i * ldc + j]);
                bad++;
            }
        }
        for (int64_t j = N; j < ldc; j++) bad += C[i * ldc + j] != PAD;
    }
    free(Ab), free(A), free(B), free(C), free(Cw), free(C0);
    return bad;
}

/* kern_gemm_bf16r: the product of the bf16-rounded operands (oneDNN; the
 * unrounded ones with CBLAS, which has no bf16 product) against float64 on
 * those values, every transpose pair, padded leading dimensions:
 * |C - ref| <= gamma_{K+3} (|alpha| sum |a b| + |beta c0|), fp32
 * accumulation (as kern_gemm's bound).  Returns entries off. */
static int64_t gemm_bf16r_case(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                               float beta)
{
    int round = !strcmp(kern_gemm_engine(), "onednn");
    int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    int64_t lda = ac + 3, ldb = bc + 1, ldc = N + 2;
    float *A = malloc(sizeof(float) * (size_t)(ar * lda + 1));
    float *B = malloc(sizeof(float) * (size_t)(br * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    if (!A || !B || !C || !C0) abort();
    for (int64_t i = 0; i < ar * lda; i++) A[i] = frand();
    for (int64_t i = 0; i < br * ldb; i++) B[i] = frand();
    for (int64_t i = 0; i < M * ldc; i++) C0[i] = i % ldc < N ? frand() : PAD;
    memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
    kern_gemm_bf16r(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    int64_t bad = 0;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (int64_t k = 0; k < K; k++) {
                float a = ta ? A[k * lda + i] : A[i * lda + k];
                float b = tb ? B[j * ldb + k] : B[k * ldb + j];
                double x = round ? kern_bf16_value(kern_bf16_round(a)) : a;
                double y = round ? kern_bf16_value(kern_bf16_round(b)) : b;
                s += x * y;
                sa += fabs(x * y);
            }
            double c0 = C0[i * ldc + j];
            double ref = alpha * s + (beta == 0.0f ? 0.0 : beta * c0);
            double bound = test_gamma((double)K + 3, TEST_U32) *
                           (fabs(alpha) * sa + fabs(beta) * fabs(c0));
            if (!(fabs(C[i * ldc + j] - ref) <= bound)) {
                if (!bad)
                    fprintf(stderr, "bf16r ta %d tb %d %ldx%ldx%ld: C[%ld,%ld] %.9g vs %.9g "
                            "(bound %.3g)\n", ta, tb, (long)M, (long)N, (long)K, (long)i,
                            (long)j, C[i * ldc + j], ref, bound);
                bad++;
            }
        }
        for (int64_t j = N; j < ldc; j++) bad += C[i * ldc + j] != PAD;
    }
    free(A), free(B), free(C), free(C0);
    return bad;
}

static void test_bf16r(void)
{
    static const int64_t shapes[][3] = {{1, 1, 1}, {7, 5, 300}, {64, 48, 129}, {33, 70, 256}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            float alpha = t == 1 ? 1.0f : 0.35f, beta = t == 2 ? 0.0f : t == 3 ? -0.5f : 1.0f;
            int64_t bad = gemm_bf16r_case(t & 1, t >> 1, shapes[s][0], shapes[s][1],
                                          shapes[s][2], alpha, beta);
            TEST_CHECK(bad == 0, "bf16r shape %zu ta %d tb %d: %lld entries off", s, t & 1, t >> 1,
                       (long long)bad);
        }
    float C[2] = {2, 4}, A1[1] = {1};
    kern_gemm_bf16r(0, 0, 1, 2, 0, 1.0f, A1, 1, NULL, 2, 0.5f, C, 2);
    TEST_CHECK(C[0] == 1.0f && C[1] == 2.0f, "bf16r K = 0 gives beta C");
    /* 1 + 2^-10 is 1 in bf16 (8 significant bits): rounded operands give 1 */
    float a = 1.0f + 0x1p-10f, b = 1.0f, c = 0;
    kern_gemm_bf16r(0, 0, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
    TEST_CHECK(c == (strcmp(kern_gemm_engine(), "onednn") ? a : 1.0f),
               "bf16r rounds its operands (onednn) or not (blas): %.9g", c);
}

static void test_bf16w2(void)
{
    static const int64_t shapes[][3] = {{37, 80, 96}, {64, 48, 1000}, {1, 5, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            int64_t br = tb ? N : K, bc = tb ? K : N, lda = K + 2, ldb = bc + 1, ldc = N + 3;
            float *A = malloc(sizeof(float) * (size_t)(M * lda));
            uint16_t *B1 = malloc(sizeof(uint16_t) * (size_t)(br * ldb));
            uint16_t *B2 = malloc(sizeof(uint16_t) * (size_t)(br * ldb));
            float *C[4];
            for (int c = 0; c < 4; c++) C[c] = malloc(sizeof(float) * (size_t)(M * ldc));
            if (!A || !B1 || !B2) abort();
            for (int64_t e = 0; e < M * lda; e++) A[e] = frand();
            for (int64_t e = 0; e < br * ldb; e++) B1[e] = kern_bf16_round(frand());
            for (int64_t e = 0; e < br * ldb; e++) B2[e] = kern_bf16_round(frand());
            for (int64_t e = 0; e < M * ldc; e++) C[0][e] = e % ldc < N ? frand() : PAD;
            for (int64_t e = 0; e < M * ldc; e++) C[1][e] = e % ldc < N ? frand() : PAD;
            memcpy(C[2], C[0], sizeof(float) * (size_t)(M * ldc));
            memcpy(C[3], C[1], sizeof(float) * (size_t)(M * ldc));
            kern_gemm_bf16w2(tb, M, N, K, 0.35f, A, lda, B1, B2, ldb, 1.0f, C[0], 0.0f, C[1], ldc);
            kern_gemm_bf16w(tb, M, N, K, 0.35f, A, lda, B1, ldb, 1.0f, C[2], ldc);
            kern_gemm_bf16w(tb, M, N, K, 0.35f, A, lda, B2, ldb, 0.0f, C[3], ldc);
            TEST_CHECK(!memcmp(C[0], C[2], sizeof(float) * (size_t)(M * ldc)) &&
                           !memcmp(C[1], C[3], sizeof(float) * (size_t)(M * ldc)),
                       "bf16w2 shape %zu tb %d: not the two bf16w products bit for bit", s, tb);
            free(A), free(B1), free(B2);
            for (int c = 0; c < 4; c++) free(C[c]);
        }
}

static void test_bf16a(void)
{
    static const int64_t shapes[][3] = {{37, 80, 96}, {64, 48, 1000}, {1, 5, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tb = 0; tb < 2; tb++)
            for (int pad = 0; pad < 2; pad++) {
                int64_t K = shapes[s][2];
                float alpha = pad ? 0.35f : 1.0f, beta = pad ? -0.5f : 1.0f;
                int64_t bad = gemm_bf16a_case(tb, shapes[s][0], shapes[s][1], K, K + 5 * pad,
                                              alpha, beta);
                TEST_CHECK(bad == 0, "bf16a shape %zu tb %d pad %d: %lld entries off", s, tb, pad,
                           (long long)bad);
            }
    float C[2] = {2, 4};
    kern_gemm_bf16a(1, 1, 2, 0, 1.0f, NULL, 1, NULL, 1, 0.5f, C, 2);
    TEST_CHECK(C[0] == 1.0f && C[1] == 2.0f, "bf16a K = 0 gives beta C");
}

/* kern_gemm_bf16p vs kern_gemm_bf16w on one shape; returns entries outside
 * the bound (or padding written), adds the bit-identical ones to *same. */
static int64_t gemm_packed_case(int64_t M, int64_t N, int64_t K, float alpha, float beta,
                                int64_t pad, int64_t *same, int64_t *total)
{
    int64_t lda = K + pad, ldc = N + pad;
    float *A = malloc(sizeof(float) * (size_t)(M * lda));
    uint16_t *W = malloc(sizeof(uint16_t) * (size_t)(N * K));
    uint16_t *W2 = malloc(sizeof(uint16_t) * (size_t)(N * K));
    uint16_t *Wp = malloc(kern_bf16_packed_bytes(N, K));
    float *Cp = malloc(sizeof(float) * (size_t)(M * ldc));
    float *Cu = malloc(sizeof(float) * (size_t)(M * ldc));
    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc));
    if (!A || !W || !W2 || !Wp || !Cp || !Cu || !C0) abort();
    for (int64_t i = 0; i < M * lda; i++) A[i] = frand();
    for (int64_t i = 0; i < N * K; i++) W[i] = kern_bf16_round(frand());
    for (int64_t i = 0; i < M * ldc; i++) C0[i] = i % ldc < N ? frand() : PAD;
    TEST_CHECK(kern_bf16_packed_bytes(N, K) >= sizeof(uint16_t) * (size_t)(N * K),
               "packed %ldx%ld: %zu bytes", (long)N, (long)K, kern_bf16_packed_bytes(N, K));
    kern_bf16_pack(Wp, W, N, K);
    kern_bf16_unpack(W2, Wp, N, K);
    TEST_CHECK(!memcmp(W, W2, sizeof(uint16_t) * (size_t)(N * K)),
               "packed %ldx%ld: unpack(pack(W)) != W", (long)N, (long)K);
    memcpy(Cp, C0, sizeof(float) * (size_t)(M * ldc));
    memcpy(Cu, C0, sizeof(float) * (size_t)(M * ldc));
    kern_gemm_bf16p(M, N, K, alpha, A, lda, Wp, beta, Cp, ldc);
    kern_gemm_bf16w(1, M, N, K, alpha, A, lda, W, K, beta, Cu, ldc);
    int onednn = !strcmp(kern_gemm_engine(), "onednn");
    int64_t bad = 0;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double sa = 0;
            for (int64_t k = 0; k < K; k++) {
                float a = A[i * lda + k];
                if (onednn) a = kern_bf16_value(kern_bf16_round(a));
                sa += fabs((double)a * kern_bf16_value(W[j * K + k]));
            }
            double c0 = C0[i * ldc + j];
            double bound = 2 * test_gamma((double)K + 3, TEST_U32) *
                           (fabs(alpha) * sa + fabs(beta) * fabs(c0));
            float p = Cp[i * ldc + j], u = Cu[i * ldc + j];
            *same += !memcmp(&p, &u, sizeof p);
            double d = fabs((double)p - u);
            if (!(d <= bound)) {
                if (!bad)
                    fprintf(stderr, "packed %ldx%ldx%ld: C[%ld,%ld] %.9g vs plain %.9g (bound %.3g)\n",
                            (long)M, (long)N, (long)K, (long)i, (long)j, p, u, bound);
                bad++;
            }
        }
        for (int64_t j = N; j < ldc; j++) bad += Cp[i * ldc + j] != PAD;
    }
    *total += M * N;
    free(A), free(W), free(W2), free(Wp), free(Cp), free(Cu), free(C0);
    return bad;
}

/* Shapes: the minillama maps and head (N, K), odd sizes that the packed
 * layout pads (80 x 96, 300 x 256, 5 x 1), M from 1 (decode-like) up; rows
 * of A and C dense (the model's calls: oneDNN's blocked kernel reads the
 * packed W) and padded by 3 (oneDNN 2.6 has only a reference kernel for
 * packed W with a strided C: the engine unpacks W then, see gemm.c). */
static void test_bf16_packed(void)
{
    static const int64_t nk[][2] = {{256, 256}, {128, 256}, {768, 256}, {256, 768},
                                    {32000, 256}, {80, 96}, {300, 256}, {5, 1}};
    static const int64_t ms[] = {1, 37, 256};
    int64_t same = 0, total = 0;
    for (size_t s = 0; s < sizeof nk / sizeof nk[0]; s++)
        for (size_t m = 0; m < sizeof ms / sizeof ms[0]; m++) {
            if (nk[s][0] == 32000 && ms[m] > 1) continue; /* reference cost */
            for (int64_t pad = 0; pad <= 3; pad += 3) {
                float alpha = m == 1 ? 0.35f : 1.0f, beta = m == 2 ? -0.5f : 0.0f;
                int64_t bad = gemm_packed_case(ms[m], nk[s][0], nk[s][1], alpha, beta, pad, &same,
                                               &total);
                TEST_CHECK(bad == 0, "packed %ldx%ldx%ld pad %ld: %lld entries off", (long)ms[m],
                           (long)nk[s][0], (long)nk[s][1], (long)pad, (long long)bad);
            }
        }
    fprintf(stderr, "bf16 packed vs plain: %lld of %lld entries bit-identical (%s)\n",
            (long long)same, (long long)total, kern_gemm_engine());
    if (strcmp(kern_gemm_engine(), "onednn"))
        TEST_CHECK(same == total, "CBLAS: packed and plain bf16 differ (%lld of %lld same)",
                   (long long)same, (long long)total);
    float C[2] = {2, 4}, A1[1] = {1};
    kern_gemm_bf16p(1, 2, 0, 1.0f, A1, 1, NULL, 0.5f, C, 2);
    TEST_CHECK(C[0] == 1.0f && C[1] == 2.0f, "bf16 packed K = 0 gives beta C");
}

/* kern_gemm_bf16p_shared: the q, k, v shapes of a (D 256, kv 128) layer on
 * one A (rows of K + 3), bit for bit the three kern_gemm_bf16p calls (the
 * same primitives on the same rounded A).  And the rounding of A itself
 * (row_to_bf16, vectorised): with W = I (K x K, K = 67: full vector lanes
 * and a tail) every C_ij = bf16(a_ij) * 1 + 0 exactly on oneDNN (A rounded,
 * which must be kern_bf16_round bit for bit: ties to even, a carry into
 * the exponent, an fp32 subnormal that rounds up to bf16's least normal,
 * signs), = a_ij on CBLAS (A kept fp32).  No bf16 subnormal results:
 * vdpbf16ps (oneDNN's bf16 kernel) reads them as zero (2^-130 gave 0). */
static void test_bf16_shared(void)
{
    enum { M = 37, K = 256, LDA = K + 3 };
    const int64_t N[3] = {256, 128, 128};
    float *A = malloc(sizeof(float) * M * LDA), *C[3], *R[3];
    uint16_t *W[3], *Wp[3];
    for (int64_t i = 0; i < M * LDA; i++) A[i] = frand();
    for (int j = 0; j < 3; j++) {
        W[j] = malloc(sizeof(uint16_t) * (size_t)(N[j] * K));
        Wp[j] = malloc(kern_bf16_packed_bytes(N[j], K));
        C[j] = malloc(sizeof(float) * (size_t)(M * N[j]));
        R[j] = malloc(sizeof(float) * (size_t)(M * N[j]));
        for (int64_t i = 0; i < N[j] * K; i++) W[j][i] = kern_bf16_round(frand());
        kern_bf16_pack(Wp[j], W[j], N[j], K);
        kern_gemm_bf16p(M, N[j], K, 1.0f, A, LDA, Wp[j], 0.0f, R[j], N[j]);
    }
    kern_gemm_bf16p_shared(3, M, K, A, LDA, (const uint16_t *const *)Wp, N, C);
    for (int j = 0; j < 3; j++) {
        TEST_CHECK(!memcmp(C[j], R[j], sizeof(float) * (size_t)(M * N[j])),
                   "bf16p_shared map %d != kern_gemm_bf16p, bit for bit", j);
        free(W[j]), free(Wp[j]), free(C[j]), free(R[j]);
    }
    free(A);

    enum { KI = 67, MI = 3 };
    float a[MI * KI], c[MI * KI];
    uint16_t id[KI * KI];
    uint16_t *idp = malloc(kern_bf16_packed_bytes(KI, KI));
    const float special[] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -(1.0f + 0x1p-8f), 0x1.ff9p-1f,
                             -0x1.ffp-127f, 0x1.0081p-126f, 3.0e38f, -0.0f, 0.0f, 1.00390625f,
                             1.01171875f, 65504.5f};
    for (int i = 0; i < MI * KI; i++)
        a[i] = i < (int)(sizeof special / sizeof special[0]) ? special[i] : frand() * 1e3f;
    for (int i = 0; i < KI * KI; i++) id[i] = i / KI == i % KI ? kern_bf16_round(1.0f) : 0;
    kern_bf16_pack(idp, id, KI, KI);
    const int64_t n1 = KI;
    float *c1 = c;
    const uint16_t *w1 = idp;
    kern_gemm_bf16p_shared(1, MI, KI, a, KI, &w1, &n1, &c1);
    int onednn = !strcmp(kern_gemm_engine(), "onednn"), bad = 0;
    for (int i = 0; i < MI * KI; i++) {
        float want = onednn ? kern_bf16_value(kern_bf16_round(a[i])) : a[i];
        if (memcmp(&c[i], &want, sizeof want) && !(want == 0 && c[i] == 0)) {
            if (!bad) fprintf(stderr, "A[%d] = %a: C %a, want %a\n", i, a[i], c[i], want);
            bad++;
        }
    }
    TEST_CHECK(bad == 0, "A through an identity W: %d of %d entries not %s", bad, MI * KI,
               onednn ? "kern_bf16_round(a)" : "a");
    free(idp);
}

static void test_values(void)
{
    static const int64_t shapes[][3] = {{37, 80, 96}, {256, 32, 256}, {8, 256, 768}, {1, 5, 1}};
    static const float betas[] = {0.0f, 1.0f, -0.5f};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            for (int b = 0; b < 3; b++) {
                float alpha = b == 1 ? 1.0f : 0.35f;
                int64_t bad = gemm_case(t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                                        alpha, betas[b]);
                TEST_CHECK(bad == 0, "shape %zu ta %d tb %d beta %g: %lld entries off", s, t & 1,
                           t >> 1, betas[b], (long long)bad);
            }
}

static void test_degenerate(void)
{
    float C[6] = {1, 2, 3, 4, 5, 6}, A[1] = {7}, B[1] = {9};
    kern_gemm(0, 0, 2, 3, 0, 1.0f, A, 1, B, 3, 0.5f, C, 3); /* K = 0: C = beta C */
    int ok = 1;
    for (int i = 0; i < 6; i++) ok &= C[i] == 0.5f * (float)(i + 1);
    TEST_CHECK(ok, "K = 0 gives beta C");
    kern_gemm(0, 0, 2, 3, 0, 1.0f, A, 1, B, 3, 0.0f, C, 3);
    ok = 1;
    for (int i = 0; i < 6; i++) ok &= C[i] == 0.0f;
    TEST_CHECK(ok, "K = 0, beta 0 gives 0");
    C[0] = 42;
    kern_gemm(0, 0, 0, 3, 1, 1.0f, A, 1, B, 3, 0.0f, C, 3);
    kern_gemm(0, 0, 2, 0, 1, 1.0f, A, 1, B, 3, 0.0f, C, 3);
    TEST_CHECK(C[0] == 42, "M = 0 or N = 0 leaves C alone");
}

/* oneDNN only: one primitive per (shape, thread count), LRU past 256. */
static void test_cache(void)
{
    if (strcmp(kern_gemm_engine(), "onednn")) {
        int64_t live, made, ev;
        kern_gemm_cache_stats(&live, &made, &ev);
        TEST_CHECK(live == 0 && made == 0 && ev == 0, "blas: no cache");
        return;
    }
    int64_t live0, made0, ev0, live, made, ev;
    kern_gemm_cache_stats(&live0, &made0, &ev0);
    TEST_CHECK(gemm_case(0, 1, 19, 23, 29, 1.0f, 0.0f) == 0, "new shape");
    kern_gemm_cache_stats(&live, &made, &ev);
    TEST_CHECK(made == made0 + 1 && live == live0 + 1, "one primitive for a new shape (two calls)");
    int nt = kern_gemm_threads_get();
    kern_gemm_threads(nt + 1);
    TEST_CHECK(gemm_case(0, 1, 19, 23, 29, 1.0f, 0.0f) == 0, "other thread count");
    kern_gemm_threads(nt);
    kern_gemm_cache_stats(NULL, &made0, NULL);
    TEST_CHECK(made0 == made + 1, "the thread count is part of the key");
    /* 300 more shapes: the table stays at 256 and evicts the oldest */
    int64_t bad = 0;
    for (int m = 1; m <= 300; m++) bad += gemm_case(1, 0, m, 3, 2, 1.0f, 1.0f);
    kern_gemm_cache_stats(&live, &made, &ev);
    TEST_CHECK(bad == 0, "%lld entries off while evicting", (long long)bad);
    TEST_CHECK(live == 256 && ev == ev0 + live0 + 2 + 300 - 256, "live %lld, evicted %lld",
               (long long)live, (long long)ev);
    /* an evicted shape is made again and still right */
    TEST_CHECK(gemm_case(1, 0, 1, 3, 2, 1.0f, 1.0f) == 0, "evicted shape again");
    kern_gemm_cache_stats(NULL, &made0, NULL);
    TEST_CHECK(made0 == made + 1, "an evicted shape is created again");
}

int main(void)
{
    test_values();
    test_degenerate();
    test_bf16();
    test_bf16a();
    test_bf16w2();
    test_bf16r();
    test_bf16_packed();
    test_bf16_shared();
    test_cache();
    fprintf(stderr, "engine %s\n", kern_gemm_engine());
    return test_finish("test_gemm");
}
