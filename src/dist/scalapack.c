/* dist scalapack: SparseGPT over the DP replicas of one stage.
 *   - dist_sparsegpt_hinv: the damped Hessian's Cholesky factor, inverse and
 *     the Cholesky factor of the inverse with ScaLAPACK on a BLACS grid built
 *     on the stage communicator;
 *   - dist_sparsegpt_rows: the OBS column sweep with W's rows split over the
 *     replicas, the unstructured selection done over MPI (dist_select_stage).
 * ScaLAPACK ships no C headers: the Fortran and C-BLACS entry points are
 * declared here (Fortran convention: every argument by pointer).
 */
#include "dist_internal.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* ---- ScaLAPACK / BLACS prototypes ------------------------------------- */
void Cblacs_pinfo(int *mypnum, int *nprocs);
int Csys2blacs_handle(MPI_Comm comm);
void Cfree_blacs_system_handle(int handle);
void Cblacs_gridinit(int *ctxt, const char *order, int nprow, int npcol);
void Cblacs_gridinfo(int ctxt, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int ctxt);
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc,
            const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb,
               const int *irsrc, const int *icsrc, const int *ictxt, const int *lld,
               int *info);
void pdpotrf_(const char *uplo, const int *n, double *a, const int *ia, const int *ja,
              const int *desca, int *info);
void pdpotri_(const char *uplo, const int *n, double *a, const int *ia, const int *ja,
              const int *desca, int *info);

/* Grid nprow x npcol = P, as square as possible (nprow <= npcol). */
static void grid_shape(int P, int *nprow, int *npcol)
{
    int r = (int)sqrt((double)P);
    while (r > 1 && P % r) r--;
    *nprow = r;
    *npcol = P / r;
}

/* Sum (in place) over the stage, in chunks of at most 2^27 doubles. */
static void sum_stage(MPI_Comm c, double *x, size_t n)
{
    const size_t chunk = (size_t)1 << 27;
    for (size_t off = 0; off < n; off += chunk) {
        int cnt = (int)(n - off < chunk ? n - off : chunk);
        MPI_Allreduce(MPI_IN_PLACE, x + off, cnt, MPI_DOUBLE, MPI_SUM, c);
    }
}

/* ScaLAPACK block size of dist_sparsegpt_hinv. */
#define HINV_NB 64

int dist_sparsegpt_hinv_local(int in, int P) { return P == 1 || in <= DIST_HINV_LOCAL_MAX; }

int dist_sparsegpt_rows_local(int out, int in, int P)
{
    return P == 1 || (int64_t)out * in <= DIST_ROWS_LOCAL_MAX;
}

size_t dist_sparsegpt_hinv_bytes(int in, int P)
{
    if (dist_sparsegpt_hinv_local(in, P)) return 0; /* LAPACK works in place */
    int nprow, npcol, nb = HINV_NB, zero = 0;
    grid_shape(P, &nprow, &npcol);
    size_t most = 0;
    for (int r = 0; r < nprow; r++)
        for (int c = 0; c < npcol; c++) {
            int mloc = numroc_(&in, &nb, &r, &zero, &nprow);
            int nloc = numroc_(&in, &nb, &c, &zero, &npcol);
            size_t b = core_alloc_bytes((size_t)(mloc > 1 ? mloc : 1) * (nloc > 0 ? nloc : 1),
                                        sizeof(double));
            if (b > most) most = b;
        }
    return most;
}

size_t dist_sparsegpt_rows_bytes(int out, int in, int blocksize, int P)
{
    if (dist_sparsegpt_rows_local(out, in, P)) return prune_sparsegpt_rows_bytes(out, in, blocksize, 1);
    int row0, nrows, bs = blocksize < in ? blocksize : in;
    dist_rows_split(out, P, 0, &row0, &nrows); /* replica 0 holds the most rows */
    /* dist_select_stage: the gathered scores (out, bs) and prune_select_local's copy */
    return prune_sparsegpt_rows_bytes(nrows, in, blocksize, 0) +
           core_alloc_bytes((size_t)out * bs + 1, sizeof(double)) +
           core_alloc_bytes((size_t)out * bs, sizeof(double));
}

static losa_status hook_hinv(void *ctx, const double *H, int in, double percdamp,
                             double *Hinv_upper, unsigned char *dead)
{
    return dist_sparsegpt_hinv(ctx, H, in, percdamp, Hinv_upper, dead);
}

static losa_status hook_rows(void *ctx, float *W, int out, int in, const double *Hinv_upper,
                             const unsigned char *dead, double sparsity, int nm_n, int nm_m,
                             int blocksize, prune_sparsegpt_timing *t)
{
    return dist_sparsegpt_rows(ctx, W, out, in, Hinv_upper, dead, sparsity, nm_n, nm_m,
                               blocksize, t);
}

prune_sparsegpt_hooks dist_sparsegpt_hooks(dist_ctx *d)
{
    prune_sparsegpt_hooks h = {.hinv = hook_hinv, .rows = hook_rows, .ctx = d};
    return h;
}

losa_status dist_sparsegpt_hinv(dist_ctx *d, const double *H, int in, double percdamp,
                                double *Hinv_upper, unsigned char *dead)
{
    /* small Hessians: every replica factorises its own copy (H is equal on
     * all), the result of one rank exactly; one status reduction over the
     * stage so that a failure on one replica (another BLAS kernel on a
     * mixed allocation) is a failure on all, not a hang in the next
     * collective */
    if (dist_sparsegpt_hinv_local(in, dist_n_replicas(d))) {
        losa_status s = prune_sparsegpt_prepare_hinv(H, in, percdamp, Hinv_upper, dead, NULL);
        int bad = s != LOSA_OK, anybad = 0;
        MPI_Allreduce(&bad, &anybad, 1, MPI_INT, MPI_MAX, dist_comm_stage(d));
        if (anybad && s == LOSA_OK)
            s = core_err(LOSA_ERR_NUMERIC, "dist_sparsegpt_hinv: the damped Hessian (%d x %d) "
                         "failed to factorise on another replica; raise percdamp", in, in);
        return s;
    }
    return dist_sparsegpt_hinv_nb(d, H, in, percdamp, Hinv_upper, dead, HINV_NB);
}

losa_status dist_sparsegpt_hinv_nb(dist_ctx *d, const double *H, int in, double percdamp,
                                   double *Hinv_upper, unsigned char *dead, int nb)
{
    const char *fn = "dist_sparsegpt_hinv";
    if (dist_n_replicas(d) == 1)
        return prune_sparsegpt_prepare_hinv(H, in, percdamp, Hinv_upper, dead, NULL);
    /* argument checks give the same answer on every replica (global inputs) */
    if (in <= 0)
        return core_err(LOSA_ERR_ARG, "%s: in: expected > 0, got %d", fn, in);
    if (!(percdamp >= 0))
        return core_err(LOSA_ERR_ARG, "%s: percdamp: expected >= 0, got %g", fn, percdamp);
    if (nb <= 0) nb = HINV_NB;

    /* dead inputs and damping from the diagonal, as the LAPACK path */
    double mean = 0;
    for (int j = 0; j < in; j++) {
        double h = H[(int64_t)j * in + j];
        if (!isfinite(h))
            return core_err(LOSA_ERR_NUMERIC, "%s: H[%d,%d] is not finite", fn, j, j);
        if (dead) dead[j] = h == 0.0;
        mean += h == 0.0 ? 1.0 : h;
    }
    double damp = percdamp * mean / in;

    MPI_Comm comm = dist_comm_stage(d);
    int P, me;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &me);
    int nprow, npcol, myrow, mycol, zero = 0, info = 0;
    grid_shape(P, &nprow, &npcol);
    int pnum, nprocs;
    Cblacs_pinfo(&pnum, &nprocs);
    int handle = Csys2blacs_handle(comm);
    int ctxt = handle;
    Cblacs_gridinit(&ctxt, "Row", nprow, npcol);
    Cblacs_gridinfo(ctxt, &nprow, &npcol, &myrow, &mycol);
    LOSA_CHECK(myrow >= 0 && myrow * npcol + mycol == me);

    int mloc = numroc_(&in, &nb, &myrow, &zero, &nprow);
    int nloc = numroc_(&in, &nb, &mycol, &zero, &npcol);
    int lld = mloc > 1 ? mloc : 1, desc[9];
    descinit_(desc, &in, &in, &nb, &nb, &zero, &zero, &ctxt, &lld, &info);
    LOSA_CHECK(info == 0);

    /* local blocks (column-major, lld x nloc) straight from the global H
     * (local index l of block-cyclic dimension: global ((l/nb)*np + me)*nb + l%nb);
     * H is symmetric, so its row-major array is its column-major self */
    double *A = core_calloc((size_t)lld * (nloc > 0 ? nloc : 1), sizeof *A);
    for (int lj = 0; lj < nloc; lj++) {
        int gj = ((lj / nb) * npcol + mycol) * nb + lj % nb;
        for (int li = 0; li < mloc; li++) {
            int gi = ((li / nb) * nprow + myrow) * nb + li % nb;
            double h = H[(int64_t)gj * in + gi];
            if (gi == gj) h = (h == 0.0 ? 1.0 : h) + damp;
            A[(int64_t)lj * lld + li] = h;
        }
    }
    /* column-major 'L' as in the LAPACK path: H = L L^T, Hinv in the lower
     * triangle, Hinv = L2 L2^T; L2 col-major lower = row-major upper U */
    int one = 1, step = 0;
    pdpotrf_("L", &in, A, &one, &one, desc, &info);
    if (info == 0) step = 1, pdpotri_("L", &in, A, &one, &one, desc, &info);
    if (info == 0) step = 2, pdpotrf_("L", &in, A, &one, &one, desc, &info);
    int bad = info != 0, anybad = 0;
    MPI_Allreduce(&bad, &anybad, 1, MPI_INT, MPI_MAX, comm);

    losa_status s = LOSA_OK;
    if (anybad) {
        s = core_err(LOSA_ERR_NUMERIC, "%s: damped Hessian (%d x %d) is not positive "
                     "definite (ScaLAPACK %s info %d); raise percdamp", fn, in, in,
                     step == 1 ? "pdpotri" : "pdpotrf", info);
    } else {
        /* every entry of the lower triangle is owned by exactly one process:
         * write ours into a zeroed global array and sum over the stage */
        memset(Hinv_upper, 0, (size_t)in * in * sizeof *Hinv_upper);
        for (int lj = 0; lj < nloc; lj++) {
            int gj = ((lj / nb) * npcol + mycol) * nb + lj % nb;
            for (int li = 0; li < mloc; li++) {
                int gi = ((li / nb) * nprow + myrow) * nb + li % nb;
                if (gi >= gj) Hinv_upper[(int64_t)gj * in + gi] = A[(int64_t)lj * lld + li];
            }
        }
        sum_stage(comm, Hinv_upper, (size_t)in * in);
    }
    core_free(A);
    Cblacs_gridexit(ctxt);
    Cfree_blacs_system_handle(handle);
    return s;
}

void dist_rows_split(int out, int n, int p, int *row0, int *nrows)
{
    int base = out / n, rem = out % n;
    *nrows = base + (p < rem);
    *row0 = p * base + (p < rem ? p : rem);
}

losa_status dist_select_stage(void *ctx, const double *score, int nrows, int count,
                              int64_t row0, int64_t k_global, prune_threshold *thr)
{
    dist_ctx *d = ctx;
    MPI_Comm comm = dist_comm_stage(d);
    int P;
    MPI_Comm_size(comm, &P);
    int64_t mine = (int64_t)nrows * count;
    int64_t *all = core_calloc((size_t)P, sizeof *all);
    int64_t *first = core_calloc((size_t)P, sizeof *first);
    MPI_Allgather(&mine, 1, MPI_INT64_T, all, 1, MPI_INT64_T, comm);
    int64_t row0_first = 0;
    MPI_Allreduce(&row0, &row0_first, 1, MPI_INT64_T, MPI_MIN, comm);
    int64_t total = 0;
    for (int p = 0; p < P; p++) first[p] = total, total += all[p];
    losa_status s = LOSA_OK;
    if (total > INT_MAX || row0_first != 0) {
        /* same decision on every replica (all inputs are global now) */
        s = core_err(LOSA_ERR_ARG, "dist_select_stage: %lld scores from row %lld: "
                     "expected <= %d scores starting at row 0", (long long)total,
                     (long long)row0_first, INT_MAX);
    } else {
        int *cnt = core_calloc((size_t)P, sizeof *cnt), *dsp = core_calloc((size_t)P, sizeof *dsp);
        for (int p = 0; p < P; p++) cnt[p] = (int)all[p], dsp[p] = (int)first[p];
        double *g = core_calloc((size_t)total + 1, sizeof *g); /* (out_total, count) */
        MPI_Allgatherv(score, (int)mine, MPI_DOUBLE, g, cnt, dsp, MPI_DOUBLE, comm);
        /* contiguous rows in replica order: g is the block in global order */
        s = prune_select_local(NULL, g, (int)(total / (count > 0 ? count : 1)), count, 0,
                               k_global, thr);
        core_free(g);
        core_free(cnt);
        core_free(dsp);
    }
    core_free(all);
    core_free(first);
    return s;
}

losa_status dist_sparsegpt_rows(dist_ctx *d, float *W, int out, int in,
                                const double *Hinv_upper, const unsigned char *dead,
                                double sparsity, int nm_n, int nm_m, int blocksize,
                                prune_sparsegpt_timing *t)
{
    int P = dist_n_replicas(d);
    if (P == 1)
        return prune_sparsegpt_rows(W, out, 0, out, in, Hinv_upper, dead, sparsity, nm_n,
                                    nm_m, blocksize, NULL, NULL, t);
    if (!dist_sparsegpt_rows_local(out, in, P))
        return dist_sparsegpt_rows_split(d, W, out, in, Hinv_upper, dead, sparsity, nm_n, nm_m,
                                         blocksize, t);
    /* every replica the whole W (equal inputs: equal results); the status
     * reduced so that a failure on one is a failure on all */
    losa_status s = prune_sparsegpt_rows(W, out, 0, out, in, Hinv_upper, dead, sparsity, nm_n,
                                         nm_m, blocksize, NULL, NULL, t);
    int bad = s != LOSA_OK, anybad = 0;
    MPI_Allreduce(&bad, &anybad, 1, MPI_INT, MPI_MAX, dist_comm_stage(d));
    if (anybad && s == LOSA_OK)
        s = core_err(LOSA_ERR_INTERNAL, "dist_sparsegpt_rows: another replica failed");
    return s;
}

losa_status dist_sparsegpt_rows_split(dist_ctx *d, float *W, int out, int in,
                                      const double *Hinv_upper, const unsigned char *dead,
                                      double sparsity, int nm_n, int nm_m, int blocksize,
                                      prune_sparsegpt_timing *t)
{
    int P = dist_n_replicas(d), me = dist_replica(d);
    if (P == 1)
        return prune_sparsegpt_rows(W, out, 0, out, in, Hinv_upper, dead, sparsity, nm_n,
                                    nm_m, blocksize, NULL, NULL, t);
    if ((int64_t)out * in > INT_MAX || out <= 0 || in <= 0)
        return core_err(LOSA_ERR_ARG, "dist_sparsegpt_rows: shape %d x %d: expected > 0 "
                        "and at most %d floats", out, in, INT_MAX);
    int row0, nrows;
    dist_rows_split(out, P, me, &row0, &nrows);
    prune_sparsegpt_timing tt = {0};
    losa_status s = prune_sparsegpt_rows(W + (int64_t)row0 * in, nrows, row0, out, in,
                                         Hinv_upper, dead, sparsity, nm_n, nm_m, blocksize,
                                         dist_select_stage, d, &tt);
    /* every replica made the same argument checks and selections; agree anyway */
    MPI_Comm comm = dist_comm_stage(d);
    int bad = s != LOSA_OK, anybad = 0;
    MPI_Allreduce(&bad, &anybad, 1, MPI_INT, MPI_MAX, comm);
    if (anybad) {
        if (s == LOSA_OK)
            s = core_err(LOSA_ERR_INTERNAL, "dist_sparsegpt_rows: another replica failed");
        return s;
    }
    int *cnt = core_calloc((size_t)P, sizeof *cnt), *dsp = core_calloc((size_t)P, sizeof *dsp);
    for (int p = 0; p < P; p++) {
        int r0, nr;
        dist_rows_split(out, P, p, &r0, &nr);
        cnt[p] = nr * in;
        dsp[p] = r0 * in;
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, W, cnt, dsp, MPI_FLOAT, comm);
    core_free(cnt);
    core_free(dsp);
    MPI_Allreduce(MPI_IN_PLACE, &tt.loss, 1, MPI_DOUBLE, MPI_SUM, comm);
    if (t) {
        t->mask_s += tt.mask_s;
        t->sweep_s += tt.sweep_s;
        t->update_s += tt.update_s;
        t->total_s += tt.total_s;
        t->loss += tt.loss;
    }
    return s;
}
