/* prune: per-matrix pruners (magnitude, Wanda, SparseGPT; unstructured or
 * N:M) and the calibration statistics they need.  Kernels only: no MPI.
 * The layer-sequential calibration driver lives elsewhere and calls these.
 *
 * Shapes: W is (out, in) row-major fp32, y = x W^T; calibration inputs X
 * are (ntok, in).  None of these functions is collective; functions marked
 * "row-local" may be called by several processes on disjoint row ranges.
 *
 * Counting and tie rules (the same everywhere, also in tests/ref/prune_ref.py):
 *  - "prune k of N" uses k = prune_count(N, s) = floor(s*N + 1e-9), capped at
 *    N (the 1e-9 slack makes 0.29*100 give 29, not 28).  Exactly k entries
 *    become zero (entries already zero count as pruned if they are selected).
 *  - Selection is by ascending (score, index): the k lowest scores are pruned
 *    and among equal scores the lower index goes first (= a stable sort, as
 *    torch.sort(stable=True) in the Wanda reference).  Index is the row-major
 *    flat index in the set being ranked (matrix, row, block, or N:M group).
 *  - N:M (nm_m > 0): in every group of M consecutive input columns of a row
 *    (groups start at column 0; in % M must be 0) exactly N entries are
 *    pruned, by the same rule.  The sparsity argument is then ignored.
 */
#ifndef LOSA_PRUNE_H
#define LOSA_PRUNE_H

#include "core.h"

typedef enum {
    PRUNE_METHOD_MAGNITUDE = 0,
    PRUNE_METHOD_WANDA,
    PRUNE_METHOD_SPARSEGPT,
    PRUNE_METHOD_COUNT
} prune_method;

const char *prune_method_str(prune_method m); /* "magnitude", "wanda", "sparsegpt" */
/* Case-sensitive; LOSA_ERR_ARG (core_err set) for an unknown name. */
losa_status prune_method_from_string(const char *s, prune_method *m);

/* Entries pruned out of n at sparsity s (rule above). */
int64_t prune_count(int64_t n, double s);

/* ---------------------------------------------------------------------------
 * Calibration statistics for one sublayer input (width `in`).
 *
 * Raw sums live in one contiguous double buffer so a dist layer can
 * all-reduce them with a single call before prune_stats_finalize:
 *     raw[0]                 token count n (exact in a double up to 2^53)
 *     raw[1 .. in]           colsq: sum over tokens of x_j^2
 *     raw[1+in .. +in*in]    X^T X (in, in), upper triangle only (lower = 0)
 *                            (only when want_hessian)
 * After finalize:  colsq[j] = (1/n) sum_t x_tj^2   (Wanda: ||X_j||^2 / n; the
 *                  per-row ranking is invariant to the 1/n scale)
 *                  H = (2/n) X^T X, full symmetric (SparseGPT).
 * n == 0 at finalize is an error.
 */
typedef struct {
    int in;
    int want_hessian;
    int finalized;
    int64_t n_raw;      /* length of raw: 1 + in (+ in*in) */
    double *raw;        /* (n_raw) the one allocation holding the sums */
    double *colsq;      /* (in)  = raw + 1 */
    double *H;          /* (in, in) = raw + 1 + in, or NULL */
    double *scratch;    /* (PRUNE_STATS_CHUNK, in) double copy of a chunk of X */
} prune_stats;

#define PRUNE_STATS_CHUNK 256 /* tokens per dsyrk call */

losa_status prune_stats_init(prune_stats *st, int in, int want_hessian);
/* Bytes prune_stats_init allocates. */
size_t prune_stats_bytes(int in, int want_hessian);
/* Zero the sums (reuse for the next layer without reallocating). */
void prune_stats_reset(prune_stats *st);
/* X (ntok, in).  Adds to the raw sums (dsyrk in double for X^T X). */
losa_status prune_stats_accumulate(prune_stats *st, const float *X, int64_t ntok);
int64_t prune_stats_ntok(const prune_stats *st);
/* Scale and symmetrise in place (raw sums are consumed). */
losa_status prune_stats_finalize(prune_stats *st);
void prune_stats_free(prune_stats *st);

/* ---------------------------------------------------------------------------
 * Magnitude: score |W_ij|.  Unstructured: one ranking over the whole matrix,
 * exactly prune_count(out*in, sparsity) zeros.  N:M when nm_m > 0. */
losa_status prune_magnitude(float *W /* (out, in) */, int out, int in,
                            double sparsity, int nm_n, int nm_m);
/* Scratch bytes prune_magnitude allocates while it runs (unstructured: a
 * copy of |W|). */
size_t prune_magnitude_bytes(int out, int in, int nm_m);

/* Wanda: score |W_ij| * sqrt(colsq_j) (computed in double), compared within
 * each output row.  Unstructured: exactly K = prune_count(out*in, sparsity)
 * zeros in the matrix: k = K/out in every row, k+1 in the K - k*out rows
 * whose (k+1)-th lowest score is lowest (ties: lower row index), so the
 * sparsity is exact at any width.  N:M when nm_m > 0. */
losa_status prune_wanda(float *W /* (out, in) */, const double *colsq /* (in) */,
                        int out, int in, double sparsity, int nm_n, int nm_m);
size_t prune_wanda_bytes(int out, int in); /* scratch while it runs */

/* ---------------------------------------------------------------------------
 * SparseGPT (Frantar & Alistarh 2023, fasterprune).
 *
 * Step 1 (not row-local; later ScaLAPACK): from H (in, in) symmetric:
 *   dead_j = (H_jj == 0) -> H_jj = 1;  H += percdamp*mean(diag H) * I;
 *   Hinv_upper = U with U^T U = H^{-1}  (dpotrf, dpotri, dpotrf in double).
 *   Hinv_upper is (in, in) row-major, strict lower triangle set to 0.
 *   dead (in) receives 1 for dead inputs (may be NULL).
 *   LOSA_ERR_NUMERIC if a factorisation fails (H not positive definite).
 * Step 2 (row-local): the column sweep on rows W (nrows, in), which are the
 *   global rows [row0, row0 + nrows) of a matrix with out_total rows.
 *   W[:, dead] = 0 first.  For each block of `blocksize` columns:
 *   unstructured: score w^2 / Hinv_jj^2 over the whole block (out_total x
 *     count, global flat index r*count + c), exactly
 *     prune_count(out_total*count, sparsity) pruned per block — i.e. the
 *     matrix sparsity is sum over blocks of floor(s*out*count), which is
 *     floor(s*out*in) up to one entry per block.  (The reference prunes
 *     every score <= the k-th, one more than k; we prune exactly k.)
 *   N:M: at each column i with i % M == 0, the N lowest scores of the group
 *     per row (blocksize % M must be 0).
 *   then the OBS update column by column inside the block (in double per
 *   row) and W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:] with sgemm.
 *   When the rows are split over processes, unstructured selection needs the
 *   global k-th score of each block: pass `select` (NULL = local rows are
 *   all rows, row0 == 0 and nrows == out_total required).
 */
typedef struct {
    double hinv_s;    /* damping + Cholesky + inverse + Cholesky */
    double mask_s;    /* score + selection */
    double sweep_s;   /* in-block column updates */
    double update_s;  /* trailing sgemm */
    double total_s;
    double loss;      /* sum over the rows of (w - q)^2 / d^2 / 2 (reference "Losses") */
} prune_sparsegpt_timing;

/* Selection threshold: an entry with score s and global index g is pruned
 * iff (s, g) <= (score, index) lexicographically.  Nothing pruned: score =
 * -INFINITY, index = -1. */
typedef struct {
    double score;
    int64_t index;
} prune_threshold;

/* Block selection hook for row-split SparseGPT.  score (nrows, count) are
 * this process's scores of rows [row0, row0+nrows); global flat index of
 * score[r*count+c] is (row0+r)*count + c.  Must return in *thr the k-th
 * smallest (score, index) pair over all processes (k = k_global, 1-based;
 * k_global == 0 -> nothing).  Collective in the caller's sense: every
 * process of the split calls it once per block, in the same order. */
typedef losa_status (*prune_select_fn)(void *ctx, const double *score, int nrows,
                                       int count, int64_t row0, int64_t k_global,
                                       prune_threshold *thr);

/* Local (single-process) k-th smallest pair; usable as the select hook when
 * one process holds all rows.  Does not modify score. */
losa_status prune_select_local(void *ctx, const double *score, int nrows, int count,
                               int64_t row0, int64_t k_global, prune_threshold *thr);

losa_status prune_sparsegpt_prepare_hinv(const double *H /* (in, in) */, int in,
                                         double percdamp,
                                         double *Hinv_upper /* (in, in) out */,
                                         unsigned char *dead /* (in) out, or NULL */,
                                         prune_sparsegpt_timing *t /* or NULL */);

losa_status prune_sparsegpt_rows(float *W /* (nrows, in) */, int nrows, int64_t row0,
                                 int out_total, int in,
                                 const double *Hinv_upper /* (in, in) */,
                                 const unsigned char *dead /* (in) or NULL */,
                                 double sparsity, int nm_n, int nm_m, int blocksize,
                                 prune_select_fn select, void *select_ctx,
                                 prune_sparsegpt_timing *t /* or NULL; adds */);

/* Scratch bytes prune_sparsegpt_rows allocates while it runs on nrows
 * rows, with the local select hook's work when local_select. */
size_t prune_sparsegpt_rows_bytes(int nrows, int in, int blocksize, int local_select);

/* ---------------------------------------------------------------------------
 * The one dispatch: the maps that read one input (e.g. q, k and v of a
 * layer), every method.  Used by the calibration driver (per layer through
 * calib_prune_layer_maps), the bench and the tests. */
typedef struct {
    prune_method method;
    double sparsity;   /* fraction of zeros, 0..1 (ignored for N:M) */
    int nm_n, nm_m;    /* 0, 0 = unstructured */
    int blocksize;     /* SparseGPT, default 128 */
    double percdamp;   /* SparseGPT, default 0.01 */
} prune_config;

void prune_config_default(prune_config *c); /* wanda, 0.5, unstructured, 128, 0.01 */

/* Where SparseGPT's two steps run.  hinv: step 1 for the group's input, as
 * prune_sparsegpt_prepare_hinv; rows: step 2 on one whole map W (out, in),
 * as prune_sparsegpt_rows on all rows (a distributed one splits the rows
 * and passes its select hook, see dist_sparsegpt_hooks).  NULL members:
 * this process does it all (prune_sparsegpt_prepare_hinv;
 * prune_sparsegpt_rows with prune_select_local).  Both are called in the
 * same order on every process of a split. */
typedef struct {
    losa_status (*hinv)(void *ctx, const double *H, int in, double percdamp,
                        double *Hinv_upper, unsigned char *dead);
    losa_status (*rows)(void *ctx, float *W, int out, int in, const double *Hinv_upper,
                        const unsigned char *dead, double sparsity, int nm_n, int nm_m,
                        int blocksize, prune_sparsegpt_timing *t);
    void *ctx;
} prune_sparsegpt_hooks;

/* The input the maps of a group read, with its statistics. */
typedef struct {
    int in;               /* width */
    const double *colsq;  /* (in) mean squares of the input's columns (Wanda) */
    const double *H;      /* (in, in) Hessian, finalized (SparseGPT) */
    double *hinv;         /* (in, in) work: SparseGPT's inverse factor */
    unsigned char *dead;  /* (in) work: SparseGPT's dead inputs */
} prune_input;

/* Prune the n maps W[k] (out[k], in) that read input x to `sparsity` (c's
 * sparsity is not used: a layer may have its own) with c's method and
 * pattern: magnitude each map alone; Wanda with x->colsq; SparseGPT one
 * inverse factor of x->H for the group (hk->hinv), then every map's sweep
 * (hk->rows).  hk NULL: all local.  t (or NULL) adds the times: hinv_s,
 * mask_s (the whole pruner for magnitude and Wanda), SparseGPT's sweep_s,
 * update_s, loss.  On error *failed (if given) is the index of the map. */
losa_status prune_group(const prune_config *c, double sparsity, float *const *W, const int *out,
                        int n, const prune_input *x, const prune_sparsegpt_hooks *hk,
                        prune_sparsegpt_timing *t, int *failed);
/* Scratch bytes prune_group allocates while it runs on maps of shapes
 * (out[k], in) with local hooks (the most of any map; the SparseGPT
 * work of prune_input is the caller's). */
size_t prune_group_bytes(const prune_config *c, const int *out, int n, int in);

/* One matrix: prune_group of one map at c->sparsity (st finalized, with
 * the Hessian for SparseGPT, which allocates its (in, in) work here; st
 * unused for magnitude, may be NULL). */
losa_status prune_matrix(const prune_config *c, float *W /* (out, in) */, int out,
                         int in, const prune_stats *st, prune_sparsegpt_timing *t);

/* ---------------------------------------------------------------------------
 * Helpers. */
int64_t prune_count_zeros(const float *x, int64_t n);
/* "unstructured" -> 0:0; "N:M" with 0 < N < M <= 1024 -> N, M.  0 or -1. */
int prune_pattern_parse(const char *s, int *n, int *m);
/* Number of N:M groups (of M consecutive columns in a row) holding fewer
 * than N zeros; 0 means W satisfies the N:M pattern.  -1 if in % m != 0. */
int64_t prune_nm_check(const float *W /* (out, in) */, int out, int in, int n, int m);

/* Reconstruction error (ALGORITHM.md section 5):
 *   c_j = ||dense[:, j]||_2 over all tokens, err = sum_tj ((dense-sparse)/c_j)^2 / d
 * A channel with c_j == 0 uses c_j = 1 (its squared difference counts as is).
 * Split form for token-parallel use: accumulate per-channel partial sums
 * (dd_j += sum dense^2, ee_j += sum (dense-sparse)^2), all-reduce, combine. */
double prune_reconstruction_error(const float *dense_out /* (ntok, d) */,
                                  const float *sparse_out /* (ntok, d) */,
                                  int64_t ntok, int d);
void prune_recon_accumulate(const float *dense_out /* (ntok, d) */,
                            const float *sparse_out /* (ntok, d) */, int64_t ntok,
                            int d, double *dd /* (d) */, double *ee /* (d) */);
double prune_recon_combine(const double *dd /* (d) */, const double *ee /* (d) */, int d);

#endif
