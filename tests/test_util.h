/* Minimal test helpers: every check prints on failure, the binary exits
 * non-zero if any check failed (test_finish).  Multi-rank tests report the
 * failure count summed over ranks. */
#ifndef LOSA_TEST_UTIL_H
#define LOSA_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int test_failures = 0;
static int test_checks = 0;

#define TEST_CHECK(cond, ...)                                                \
    do {                                                                     \
        test_checks++;                                                       \
        if (!(cond)) {                                                       \
            test_failures++;                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
        }                                                                    \
    } while (0)

/* |a - b| <= tol * max(1, |b|)  (relative above 1, absolute below). */
#define TEST_NEAR(a, b, tol, what)                                           \
    TEST_CHECK(fabs((double)(a) - (double)(b)) <=                            \
                   (tol) * fmax(1.0, fabs((double)(b))),                     \
               "%s: %.9g vs %.9g (tol %g)", what, (double)(a), (double)(b),  \
               (double)(tol))

/* Max relative error of x vs reference r over n values, relative to the
 * max |r| (a scaled residual, as in HPL/ScaLAPACK tests). */
static inline double test_max_rel(const float *x, const float *r, long n)
{
    double maxr = 0, maxd = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)x[i] - (double)r[i]);
        if (d > maxd || d != d) maxd = d != d ? INFINITY : d;
        if (fabs(r[i]) > maxr) maxr = fabs(r[i]);
    }
    return maxd / (maxr > 0 ? maxr : 1);
}

/* Reduction-order bounds for layout tests (Higham, "Accuracy and Stability
 * of Numerical Algorithms", 2nd ed., sec. 3.1).  A sum of K products
 * evaluated in floating point with unit roundoff u, in ANY order, differs
 * from the exact sum by at most gamma_K * sum_k |a_k b_k|, with
 * gamma_K = K u / (1 - K u); two evaluations in different orders (a BLAS
 * kernel blocked differently for a split problem, a different thread count,
 * an MPI reduction in another order) therefore differ by at most
 * 2 gamma_K * sum_k |a_k b_k|.  u = 2^-24 for fp32, 2^-53 for fp64.  This is
 * a worst-case bound: the differences actually seen are 10-1000x smaller,
 * while the defects these tests exist to catch (a window, row or replica
 * lost or counted twice) move results by O(1e-2) or more. */
#define TEST_U32 (1.0 / 16777216.0)
#define TEST_U64 (1.0 / 9007199254740992.0)
static inline double test_gamma(double K, double u) { return K * u / (1.0 - K * u); }

static inline int test_finish(const char *name)
{
    fprintf(stderr, "%s: %d checks, %d failed: %s\n", name, test_checks,
            test_failures, test_failures ? "FAILED" : "PASSED");
    return test_failures ? 1 : 0;
}

#endif
