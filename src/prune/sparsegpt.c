/* prune sparsegpt: SparseGPT (Frantar & Alistarh 2023, "fasterprune"):
 * damped Hessian -> upper Cholesky factor of its inverse (LAPACKE, double),
 * then a row-local column sweep in blocks with the OBS error update. */
#include "prune_internal.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

losa_status prune_sparsegpt_prepare_hinv(const double *H, int in, double percdamp,
                                         double *Hinv_upper, unsigned char *dead,
                                         prune_sparsegpt_timing *t)
{
    if (in <= 0)
        return core_err(LOSA_ERR_ARG, "prune_sparsegpt_prepare_hinv: in: expected > 0, "
                        "got %d", in);
    if (!(percdamp >= 0))
        return core_err(LOSA_ERR_ARG, "prune_sparsegpt_prepare_hinv: percdamp: expected "
                        ">= 0, got %g", percdamp);
    double t0 = core_time();
    double *A = Hinv_upper;
    memcpy(A, H, (size_t)in * in * sizeof *A);
    double mean = 0;
    for (int j = 0; j < in; j++) {
        double *h = A + (int64_t)j * in + j;
        if (!isfinite(*h))
            return core_err(LOSA_ERR_NUMERIC, "prune_sparsegpt_prepare_hinv: H[%d,%d] is "
                            "not finite", j, j);
        if (dead) dead[j] = *h == 0.0;
        if (*h == 0.0) *h = 1.0;
        mean += *h;
    }
    double damp = percdamp * mean / in;
    for (int j = 0; j < in; j++) A[(int64_t)j * in + j] += damp;
    /* H is symmetric, so the row-major array is also its column-major self.
     * Column-major 'L' (= row-major upper) throughout: H = L L^T; Hinv in the
     * lower (col-major) triangle; Hinv = L2 L2^T, and L2 stored col-major
     * lower reads row-major as U = L2^T, upper, with U^T U = Hinv. */
    lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', in, A, in);
    if (info == 0) info = LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', in, A, in);
    if (info == 0) info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', in, A, in);
    if (info != 0)
        return core_err(LOSA_ERR_NUMERIC, "prune_sparsegpt_prepare_hinv: damped Hessian "
                        "(%d x %d) is not positive definite (LAPACK info %d); raise "
                        "percdamp", in, in, (int)info);
    for (int i = 1; i < in; i++) memset(A + (int64_t)i * in, 0, (size_t)i * sizeof *A);
    if (t) t->hinv_s += core_time() - t0;
    return LOSA_OK;
}

/* The scratch blocks of prune_sparsegpt_rows on nrows rows: element
 * counts n[] of sizes sz[] (the allocation and its size function use them). */
enum { SG_ERR, SG_SCORE, SG_MASK, SG_HF, SG_W, SG_DINV2, SG_N };
static void sg_blocks(int nrows, int in, int bs, size_t n[SG_N], size_t sz[SG_N])
{
    size_t rb = (size_t)nrows * bs + 1;
    const size_t cnt[SG_N] = {rb, rb, rb, (size_t)bs * in, (size_t)bs, (size_t)in};
    const size_t size[SG_N] = {sizeof(float), sizeof(double), 1, sizeof(float), sizeof(double),
                               sizeof(double)};
    memcpy(n, cnt, sizeof cnt);
    memcpy(sz, size, sizeof size);
}

size_t prune_sparsegpt_rows_bytes(int nrows, int in, int blocksize, int local_select)
{
    int bs = blocksize < in ? blocksize : in;
    size_t n[SG_N], sz[SG_N], b = 0;
    sg_blocks(nrows, in, bs, n, sz);
    for (int k = 0; k < SG_N; k++) b += core_alloc_bytes(n[k], sz[k]);
    /* prune_select_local: a copy of the block's scores */
    if (local_select) b += core_alloc_bytes((size_t)nrows * bs > 0 ? (size_t)nrows * bs : 1,
                                            sizeof(double));
    return b;
}

losa_status prune_sparsegpt_rows(float *W, int nrows, int64_t row0, int out_total, int in,
                                 const double *Hinv, const unsigned char *dead,
                                 double sparsity, int nm_n, int nm_m, int blocksize,
                                 prune_select_fn select, void *select_ctx,
                                 prune_sparsegpt_timing *t)
{
    const char *fn = "prune_sparsegpt_rows";
    losa_status s = prune_check_args(fn, out_total, in, sparsity, nm_n, nm_m);
    if (s != LOSA_OK) return s;
    if (nrows < 0 || row0 < 0 || row0 + nrows > out_total)
        return core_err(LOSA_ERR_ARG, "%s: rows [%lld, %lld) not inside [0, %d)", fn,
                        (long long)row0, (long long)(row0 + nrows), out_total);
    if (blocksize <= 0 || (nm_m > 0 && blocksize % nm_m != 0))
        return core_err(LOSA_ERR_ARG, "%s: blocksize: expected > 0 (and a multiple of "
                        "M = %d for N:M), got %d", fn, nm_m, blocksize);
    if (!select && nm_m == 0 && (row0 != 0 || nrows != out_total))
        return core_err(LOSA_ERR_ARG, "%s: rows [%lld, %lld) of %d: unstructured "
                        "selection over split rows needs a select hook", fn,
                        (long long)row0, (long long)(row0 + nrows), out_total);
    if (!select) select = prune_select_local;
    double tstart = core_time(), tm = 0, tsw = 0, tup = 0, loss = 0;
    const int bs = blocksize < in ? blocksize : in;

    for (int j = 0; dead && j < in; j++)
        if (dead[j])
            for (int r = 0; r < nrows; r++) W[(int64_t)r * in + j] = 0.0f;

    size_t nb[SG_N], sz[SG_N];
    sg_blocks(nrows, in, bs, nb, sz);
    float *err = core_calloc(nb[SG_ERR], sz[SG_ERR]);         /* (nrows, bs) */
    double *score = core_calloc(nb[SG_SCORE], sz[SG_SCORE]);  /* (nrows, bs) */
    unsigned char *mask = core_calloc(nb[SG_MASK], sz[SG_MASK]); /* (nrows, bs) */
    float *hf = core_calloc(nb[SG_HF], sz[SG_HF]);            /* (bs, in - i2) */
    double *w = core_calloc(nb[SG_W], sz[SG_W]);              /* (bs) */
    double *dinv2 = core_calloc(nb[SG_DINV2], sz[SG_DINV2]);  /* 1 / Hinv_jj^2 */
    for (int j = 0; j < in; j++) {
        double d = Hinv[(int64_t)j * in + j];
        dinv2[j] = 1.0 / (d * d);
    }

    for (int i1 = 0; i1 < in && s == LOSA_OK; i1 += bs) {
        int i2 = i1 + bs < in ? i1 + bs : in, count = i2 - i1;
        double ta = core_time();
        if (nm_m == 0) {
            for (int r = 0; r < nrows; r++)
                for (int c = 0; c < count; c++) {
                    double v = W[(int64_t)r * in + i1 + c];
                    score[(int64_t)r * count + c] = v * v * dinv2[i1 + c];
                }
            int64_t k = prune_count((int64_t)out_total * count, sparsity);
            prune_threshold thr;
            s = select(select_ctx, score, nrows, count, row0, k, &thr);
            if (s != LOSA_OK) break;
            for (int r = 0; r < nrows; r++)
                for (int c = 0; c < count; c++) {
                    int64_t l = (int64_t)r * count + c;
                    mask[l] = prune_thr_hit(score[l], (row0 + r) * count + c, thr);
                }
        }
        double tb = core_time();
        tm += tb - ta;
        /* in-block sweep, one row at a time in double */
        for (int r = 0; r < nrows; r++) {
            float *wr = W + (int64_t)r * in + i1;
            unsigned char *mr = mask + (int64_t)r * count;
            for (int c = 0; c < count; c++) w[c] = wr[c];
            for (int i = 0; i < count; i++) {
                if (nm_m > 0 && i % nm_m == 0) {
                    double sc[PRUNE_NM_MAX];
                    for (int c = 0; c < nm_m; c++)
                        sc[c] = w[i + c] * w[i + c] * dinv2[i1 + i + c];
                    prune_nm_select(sc, nm_m, nm_n, mr + i);
                }
                const double *h = Hinv + (int64_t)(i1 + i) * in + i1; /* row i1+i */
                double q = mr[i] ? 0.0 : w[i];
                double e = (w[i] - q) / h[i];
                loss += 0.5 * e * e;
                w[i] = q;
                for (int j = i + 1; j < count; j++) w[j] -= e * h[j];
                err[(int64_t)r * count + i] = (float)e;
            }
            for (int c = 0; c < count; c++) wr[c] = (float)w[c];
        }
        double tc = core_time();
        tsw += tc - tb;
        if (i2 < in && nrows > 0) {
            int rest = in - i2;
            for (int i = 0; i < count; i++) {
                const double *h = Hinv + (int64_t)(i1 + i) * in + i2;
                float *o = hf + (int64_t)i * rest;
                for (int j = 0; j < rest; j++) o[j] = (float)h[j];
            }
            /* W[:, i2:] (nrows, rest) -= err (nrows, count) @ hf (count, rest) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nrows, rest, count, -1.0f,
                        err, count, hf, rest, 1.0f, W + i2, in);
        }
        tup += core_time() - tc;
    }
    core_free(err);
    core_free(score);
    core_free(mask);
    core_free(hf);
    core_free(w);
    core_free(dinv2);
    if (t) {
        t->mask_s += tm;
        t->sweep_s += tsw;
        t->update_s += tup;
        t->total_s += core_time() - tstart;
        t->loss += loss;
    }
    return s;
}
