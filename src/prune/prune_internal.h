/* prune internals shared by the files of src/prune (not a public API). */
#ifndef LOSA_PRUNE_INTERNAL_H
#define LOSA_PRUNE_INTERNAL_H

#include "prune.h"

/* k-th smallest value (0-based k < n) of a; reorders a (3-way quickselect). */
double prune_qselect_d(double *a, int64_t n, int64_t k);
float prune_qselect_f(float *a, int64_t n, int64_t k);

/* The k-th smallest (score, index) pair of score (n) (k 1-based; k == 0 ->
 * nothing).  work (n) is scratch. */
prune_threshold prune_kth_pair_d(const double *score, int64_t n, int64_t k, double *work);

/* Within one N:M group: the n lowest of score (m) by (score, index);
 * sets sel[c] = 1 for those, 0 for the others.  m <= PRUNE_NM_MAX. */
void prune_nm_select(const double *score, int m, int n, unsigned char *sel);
#define PRUNE_NM_MAX 64

static inline int prune_thr_hit(double s, int64_t g, prune_threshold t)
{
    return s < t.score || (s == t.score && g <= t.index);
}

/* Validate sparsity / N:M arguments; sets core_err with the function name. */
losa_status prune_check_args(const char *fn, int out, int in, double sparsity, int nm_n,
                             int nm_m);

#endif
