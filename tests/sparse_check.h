/* Shared by test_sparse and test_sparse_nm: a sparse product checked
 * against the dense matrix it stores, and every kernel path checked that way. */
#ifndef LOSA_TEST_SPARSE_CHECK_H
#define LOSA_TEST_SPARSE_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "sparse.h"
#include "test_util.h"

/* Y (N, out) against W (out, in) and X (N, in) summed in double.  Bound:
 * any order of the in fp32 products and sums is off by at most
 * gamma_in sum_i |w_i x_i| (Higham 3.1; the products of stored fp32 values
 * are exact in double).  Returns the number of outputs beyond it. */
static int sparse_check_y(const float *Y, const float *W, const float *X, int N, int out, int in,
                          const char *what)
{
    double g = test_gamma((double)in, TEST_U32), worst = 0;
    int bad = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < out; o++) {
            double ref = 0, abs = 0;
            for (int64_t i = 0; i < in; i++) {
                double t = (double)W[o * in + i] * X[n * in + i];
                ref += t;
                abs += fabs(t);
            }
            double err = fabs(Y[n * out + o] - ref);
            if (abs > 0 && err / abs > worst) worst = err / abs;
            if (!(err <= g * abs)) {
                if (bad < 3)
                    fprintf(stderr, "  %s: Y[%lld,%lld] = %.9g, ref %.9g (abs-sum %.3g)\n", what,
                            (long long)n, (long long)o, Y[n * out + o], ref, abs);
                bad++;
            }
        }
    TEST_CHECK(bad == 0, "%s: %d outputs beyond gamma_%d sum|wx| (worst rel %.3g)", what, bad,
               in, worst);
    return bad;
}

/* The scalar references (matvec, and matmul at the largest batch) and every
 * compiled ISA path at every batch in batches[nb] against the dense W the
 * sparse matrix s stores (X holds the largest batch's rows). */
static void sparse_check_kernels(const sparse_matrix *s, const float *W, const float *X, int out,
                                 int in, const char *what, const int *batches, int nb)
{
    int maxN = 1;
    for (int b = 0; b < nb; b++) maxN = batches[b] > maxN ? batches[b] : maxN;
    float *Y = malloc(sizeof(float) * (size_t)maxN * out);
    char w2[240];
    snprintf(w2, sizeof w2, "%s ref", what);
    sparse_matvec_ref(Y, s, X);
    sparse_check_y(Y, W, X, 1, out, in, w2);
    sparse_matmul_ref(Y, s, X, maxN);
    sparse_check_y(Y, W, X, maxN, out, in, w2);
    for (int isa = 0; isa <= SPARSE_ISA_AVX512; isa++) {
        if (!sparse_isa_supported((sparse_isa)isa)) continue;
        sparse_set_isa((sparse_isa)isa);
        for (int b = 0; b < nb; b++) {
            int N = batches[b];
            snprintf(w2, sizeof w2, "%s %s N=%d", what, sparse_isa_name((sparse_isa)isa), N);
            for (int64_t i = 0; i < (int64_t)N * out; i++) Y[i] = NAN;
            if (N == 1) sparse_matvec(Y, s, X);
            else sparse_matmul(Y, s, X, N);
            sparse_check_y(Y, W, X, N, out, in, w2);
        }
    }
    sparse_set_isa(sparse_isa_best());
    free(Y);
}

#endif
