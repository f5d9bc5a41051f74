/* prune stats: per-input calibration sums (Wanda column norms, SparseGPT
 * Hessian) in one contiguous double buffer, mergeable by a plain sum. */
#include "prune.h"

#include <cblas.h>
#include <string.h>

/* Doubles of the raw sums: n, colsq (in), X^T X (in, in) when wanted. */
static int64_t raw_doubles(int in, int want_hessian)
{
    return 1 + (int64_t)in + (want_hessian ? (int64_t)in * in : 0);
}

size_t prune_stats_bytes(int in, int want_hessian)
{
    return core_alloc_bytes((size_t)raw_doubles(in, want_hessian), sizeof(double)) +
           (want_hessian ? core_alloc_bytes((size_t)PRUNE_STATS_CHUNK * in, sizeof(double)) : 0);
}

losa_status prune_stats_init(prune_stats *st, int in, int want_hessian)
{
    memset(st, 0, sizeof *st);
    if (in <= 0)
        return core_err(LOSA_ERR_ARG, "prune_stats_init: in: expected > 0, got %d", in);
    st->in = in;
    st->want_hessian = want_hessian != 0;
    st->n_raw = raw_doubles(in, st->want_hessian);
    st->raw = core_calloc((size_t)st->n_raw, sizeof *st->raw);
    st->colsq = st->raw + 1;
    if (st->want_hessian) {
        st->H = st->raw + 1 + in;
        st->scratch = core_calloc((size_t)PRUNE_STATS_CHUNK * in, sizeof *st->scratch);
    }
    return LOSA_OK;
}

void prune_stats_reset(prune_stats *st)
{
    memset(st->raw, 0, (size_t)st->n_raw * sizeof *st->raw);
    st->finalized = 0;
}

int64_t prune_stats_ntok(const prune_stats *st) { return (int64_t)st->raw[0]; }

losa_status prune_stats_accumulate(prune_stats *st, const float *X, int64_t ntok)
{
    if (st->finalized)
        return core_err(LOSA_ERR_ARG, "prune_stats_accumulate: statistics already "
                        "finalized (reset first)");
    if (ntok < 0)
        return core_err(LOSA_ERR_ARG, "prune_stats_accumulate: ntok: expected >= 0, "
                        "got %lld", (long long)ntok);
    const int in = st->in;
    double *colsq = st->colsq;
    for (int64_t t0 = 0; t0 < ntok; t0 += PRUNE_STATS_CHUNK) {
        int c = (int)(ntok - t0 < PRUNE_STATS_CHUNK ? ntok - t0 : PRUNE_STATS_CHUNK);
        const float *x = X + t0 * in;
        for (int t = 0; t < c; t++)
            for (int j = 0; j < in; j++) {
                double v = x[(int64_t)t * in + j];
                colsq[j] += v * v;
            }
        if (st->want_hessian) {
            for (int64_t i = 0; i < (int64_t)c * in; i++) st->scratch[i] = x[i];
            /* H (in, in) upper += A^T A, A = scratch (c, in) row-major */
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, in, c, 1.0, st->scratch,
                        in, 1.0, st->H, in);
        }
    }
    st->raw[0] += (double)ntok;
    return LOSA_OK;
}

losa_status prune_stats_finalize(prune_stats *st)
{
    if (st->finalized) return LOSA_OK;
    double n = st->raw[0];
    if (!(n > 0))
        return core_err(LOSA_ERR_ARG, "prune_stats_finalize: no calibration tokens "
                        "accumulated (width %d)", st->in);
    const int in = st->in;
    for (int j = 0; j < in; j++) st->colsq[j] /= n;
    if (st->H) {
        double a = 2.0 / n;
        for (int i = 0; i < in; i++) {
            double *row = st->H + (int64_t)i * in;
            for (int j = i; j < in; j++) row[j] *= a;
            for (int j = 0; j < i; j++) row[j] = st->H[(int64_t)j * in + i];
        }
    }
    st->finalized = 1;
    return LOSA_OK;
}

void prune_stats_free(prune_stats *st)
{
    if (!st) return;
    core_free(st->raw);
    core_free(st->scratch);
    memset(st, 0, sizeof *st);
}
