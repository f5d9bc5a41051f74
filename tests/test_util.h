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

static inline int test_finish(const char *name)
{
    fprintf(stderr, "%s: %d checks, %d failed: %s\n", name, test_checks,
            test_failures, test_failures ? "FAILED" : "PASSED");
    return test_failures ? 1 : 0;
}

#endif
