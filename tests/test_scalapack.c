// ranks: 1 2 4
/* dist_sparsegpt_hinv (ScaLAPACK over the DP replicas of one stage) against
 * the LAPACK path prune_sparsegpt_prepare_hinv, with an HPL-style scaled
 * residual of the inverse; dist_sparsegpt_rows (rows split over replicas,
 * selection over MPI) against the single-process sweep: the same masks and
 * the weights within the reduction-order bound of the split trailing
 * update (check_rows). */
#include "dist.h"
#include "prune.h"
#include "test_util.h"

#include <float.h>
#include <string.h>

/* H = (2/n) X^T X (in, in) for X (n, in) ~ N(0,1) scaled per column, with
 * column `dead` of X zero (so H's row and column are 0). */
static void make_hessian(double *H, int in, int n, int dead, uint64_t seed)
{
    core_rng r;
    core_rng_seed(&r, seed);
    double *X = core_calloc((size_t)n * in, sizeof *X);
    for (int t = 0; t < n; t++)
        for (int j = 0; j < in; j++)
            X[(int64_t)t * in + j] = j == dead ? 0.0 : core_rng_normal(&r) * (0.5 + (j % 7));
    for (int i = 0; i < in; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0;
            for (int t = 0; t < n; t++) s += X[(int64_t)t * in + i] * X[(int64_t)t * in + j];
            H[(int64_t)i * in + j] = H[(int64_t)j * in + i] = 2.0 * s / n;
        }
    core_free(X);
}

/* HPL-style: ||U^T U Hd - I||_inf / (eps * ||U^T U||_inf * ||Hd||_inf * in),
 * Hd = H with dead diagonal 1 and damping added. */
static double inverse_residual(const double *H, const double *U, int in, double percdamp)
{
    double *Hd = core_calloc((size_t)in * in, sizeof *Hd);
    double *Hi = core_calloc((size_t)in * in, sizeof *Hi);
    memcpy(Hd, H, (size_t)in * in * sizeof *Hd);
    double mean = 0;
    for (int j = 0; j < in; j++) {
        double *h = Hd + (int64_t)j * in + j;
        if (*h == 0) *h = 1;
        mean += *h;
    }
    for (int j = 0; j < in; j++) Hd[(int64_t)j * in + j] += percdamp * mean / in;
    for (int i = 0; i < in; i++) /* Hi = U^T U */
        for (int j = 0; j < in; j++) {
            double s = 0;
            int m = i < j ? i : j;
            for (int k = 0; k <= m; k++) s += U[(int64_t)k * in + i] * U[(int64_t)k * in + j];
            Hi[(int64_t)i * in + j] = s;
        }
    double rmax = 0, nhi = 0, nhd = 0;
    for (int i = 0; i < in; i++) {
        double r = 0, a = 0, b = 0;
        for (int j = 0; j < in; j++) {
            double s = 0;
            for (int k = 0; k < in; k++) s += Hi[(int64_t)i * in + k] * Hd[(int64_t)k * in + j];
            r += fabs(s - (i == j));
            a += fabs(Hi[(int64_t)i * in + j]);
            b += fabs(Hd[(int64_t)i * in + j]);
        }
        if (r > rmax) rmax = r;
        if (a > nhi) nhi = a;
        if (b > nhd) nhd = b;
    }
    core_free(Hd);
    core_free(Hi);
    return rmax / (DBL_EPSILON * nhi * nhd * in);
}

static void check_hinv(dist_ctx *d, int in, int nb, int dead)
{
    const double percdamp = 0.01;
    double *H = core_calloc((size_t)in * in, sizeof *H);
    double *ref = core_calloc((size_t)in * in, sizeof *ref);
    double *got = core_calloc((size_t)in * in, sizeof *got);
    unsigned char *dref = core_calloc((size_t)in, 1), *dgot = core_calloc((size_t)in, 1);
    make_hessian(H, in, in + 37, dead, 1000 + in);
    TEST_CHECK(prune_sparsegpt_prepare_hinv(H, in, percdamp, ref, dref, NULL) == LOSA_OK,
               "%s", core_errmsg());
    losa_status s = dist_sparsegpt_hinv_nb(d, H, in, percdamp, got, dgot, nb);
    TEST_CHECK(s == LOSA_OK, "%s", core_errmsg());
    double maxd = 0, maxr = 0;
    int lower_nonzero = 0;
    for (int64_t i = 0; i < (int64_t)in * in; i++) {
        maxd = fmax(maxd, fabs(got[i] - ref[i]));
        maxr = fmax(maxr, fabs(ref[i]));
        if (i % in < i / in && got[i] != 0) lower_nonzero++;
    }
    double rel = maxd / maxr, resid = inverse_residual(H, got, in, percdamp);
    if (dist_rank(d) == 0)
        fprintf(stderr, "hinv in %d nb %d on %d replicas: max rel diff vs LAPACK %.3e, "
                "scaled residual %.4f ... %s\n", in, nb, dist_n_replicas(d), rel, resid,
                rel <= 1e-10 && resid < 16 ? "PASSED" : "FAILED");
    TEST_CHECK(rel <= 1e-10, "in %d nb %d: rel %g", in, nb, rel);
    TEST_CHECK(resid < 16.0, "in %d nb %d: scaled residual %g", in, nb, resid);
    TEST_CHECK(lower_nonzero == 0, "strict lower triangle: %d nonzeros", lower_nonzero);
    TEST_CHECK(memcmp(dref, dgot, (size_t)in) == 0, "dead flags differ");
    TEST_CHECK(dgot[dead] == 1, "dead column %d not flagged", dead);
    core_free(H);
    core_free(ref);
    core_free(got);
    core_free(dref);
    core_free(dgot);
}

/* The reference sweep's selection, recording how close each block's
 * threshold came to a tie: the smallest relative gap between the k-th and
 * the (k+1)-th smallest score of a block. */
typedef struct {
    double min_gap;
} gap_rec;

static losa_status select_recording(void *ctx, const double *score, int nrows, int count,
                                    int64_t row0, int64_t k, prune_threshold *thr)
{
    gap_rec *g = ctx;
    losa_status s = prune_select_local(NULL, score, nrows, count, row0, k, thr);
    int64_t n = (int64_t)nrows * count;
    if (s != LOSA_OK || k <= 0 || k >= n) return s;
    double above = INFINITY; /* smallest score not pruned */
    for (int64_t i = 0; i < n; i++)
        if (!(score[i] < thr->score || (score[i] == thr->score && i <= thr->index)) &&
            score[i] < above)
            above = score[i]; /* not pruned: (score, index) above the threshold pair */
    double gap = (above - thr->score) / fmax(above, DBL_MIN);
    if (gap < g->min_gap) g->min_gap = gap;
    return s;
}

/* Row-split sweep vs the single-process sweep (same Hinv).  Each replica's
 * trailing update is an sgemm on its own rows (M = its share): a BLAS may
 * run other micro-kernels on the other M and sum the K = bs products of an
 * entry in another order, so the swept weights agree within the reduction
 * bound, not bit for bit.  Bound (test_util.h): each of the in/bs trailing
 * updates differs by at most 2 gamma_bs sum_k |err_ik hf_kj|; with
 * |err_ik hf_kj| summed over k bounded by max |W| (the OBS error of a column
 * is at most the weight it removes, and |Hinv_kj / Hinv_kk| < 1 for this
 * diagonally dominant damped Hessian), the total is
 *   |dW_ij| <= (in / bs) 2 gamma_bs max |W|.
 * The masks are selected from scores of weights perturbed that little; they
 * must be identical unless a block's threshold is a tie within twice that
 * relative perturbation (recorded from the reference's selection). */
static void check_rows(dist_ctx *d, int out, int in, int bs, double sp, int nm_n, int nm_m)
{
    double *H = core_calloc((size_t)in * in, sizeof *H);
    double *hinv = core_calloc((size_t)in * in, sizeof *hinv);
    unsigned char *dead = core_calloc((size_t)in, 1);
    float *W = core_calloc((size_t)out * in, sizeof *W);
    float *ref = core_calloc((size_t)out * in, sizeof *ref);
    make_hessian(H, in, in + 11, 5, 77 + in);
    core_rng r;
    core_rng_seed(&r, 4242 + out);
    for (int64_t i = 0; i < (int64_t)out * in; i++) W[i] = ref[i] = core_rng_normal(&r);
    float wmax = 0;
    for (int64_t i = 0; i < (int64_t)out * in; i++) wmax = fmaxf(wmax, fabsf(W[i]));
    TEST_CHECK(prune_sparsegpt_prepare_hinv(H, in, 0.01, hinv, dead, NULL) == LOSA_OK, "%s",
               core_errmsg());
    prune_sparsegpt_timing tref = {0}, tgot = {0};
    gap_rec gap = {INFINITY};
    TEST_CHECK(prune_sparsegpt_rows(ref, out, 0, out, in, hinv, dead, sp, nm_n, nm_m, bs,
                                    nm_m ? NULL : select_recording, &gap, &tref) == LOSA_OK,
               "%s", core_errmsg());
    TEST_CHECK(dist_sparsegpt_rows_split(d, W, out, in, hinv, dead, sp, nm_n, nm_m, bs, &tgot) ==
                   LOSA_OK, "%s", core_errmsg());
    int nblk = (in + bs - 1) / bs;
    double wtol = nblk * 2.0 * test_gamma(bs, TEST_U32) * wmax;
    int64_t diff = 0, mism = 0;
    double maxd = 0;
    for (int64_t i = 0; i < (int64_t)out * in; i++) {
        diff += memcmp(&W[i], &ref[i], 4) != 0;
        mism += (W[i] == 0.0f) != (ref[i] == 0.0f);
        maxd = fmax(maxd, fabs((double)W[i] - ref[i]));
    }
    int64_t zeros = prune_count_zeros(W, (int64_t)out * in);
    int tie = gap.min_gap <= 4.0 * wtol / wmax;
    if (dist_rank(d) == 0)
        fprintf(stderr, "sweep %d x %d bs %d %s on %d replicas: %lld entries differ (max %.2e, "
                "bound %.2e), %lld mask flips (min threshold gap %.1e%s), %lld zeros, "
                "loss %.9g vs %.9g\n", out, in, bs, nm_m ? "N:M" : "unstructured",
                dist_n_replicas(d), (long long)diff, maxd, wtol, (long long)mism, gap.min_gap,
                tie ? ": a tie" : "", (long long)zeros, tgot.loss, tref.loss);
    TEST_CHECK(mism == 0 || tie, "%lld mask entries differ from the single-process sweep "
               "without a tie at the threshold", (long long)mism);
    if (mism == 0)
        TEST_CHECK(maxd <= wtol, "swept weights %.3g from the single-process sweep (bound %.3g)",
                   maxd, wtol);
    /* loss = sum e^2 / 2 with e = (w - q) / Hinv_jj, each e moved by at most
     * the weight bound (relative to max |W|), plus the fp64 sum over the
     * replicas in another order (gamma_out of the fp64 sum) */
    TEST_NEAR(tgot.loss, tref.loss, 2.0 * wtol / wmax + test_gamma(out, TEST_U64),
              "loss summed over replicas");
    if (nm_m) TEST_CHECK(prune_nm_check(W, out, in, nm_n, nm_m) == 0, "N:M pattern");
    core_free(H);
    core_free(hinv);
    core_free(dead);
    core_free(W);
    core_free(ref);
}

int main(int argc, char **argv)
{
    dist_ctx *d;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) return 1;
    int P = dist_size(d);
    TEST_CHECK(dist_set_layout(d, 1, P) == LOSA_OK, "%s", core_errmsg());

    check_hinv(d, 200, 32, 17);
    check_hinv(d, 200, 64, 199);
    check_hinv(d, 256, 32, 0);
    check_hinv(d, 256, 64, 100);

    /* below DIST_HINV_LOCAL_MAX the default entry runs LAPACK on every
     * replica: the one-rank result bit for bit, on any replica count */
    {
        int in = 300;
        TEST_CHECK(dist_sparsegpt_hinv_local(in, P) && dist_sparsegpt_hinv_local(DIST_HINV_LOCAL_MAX, P) &&
                   (P == 1 || !dist_sparsegpt_hinv_local(DIST_HINV_LOCAL_MAX + 1, P)),
                   "local threshold");
        TEST_CHECK(dist_sparsegpt_hinv_bytes(in, P) == 0, "local hinv needs no ScaLAPACK blocks");
        double *H = core_calloc((size_t)in * in, sizeof *H);
        double *ref = core_calloc((size_t)in * in, sizeof *ref), *got = core_calloc((size_t)in * in, sizeof *got);
        unsigned char *dref = core_calloc((size_t)in, 1), *dgot = core_calloc((size_t)in, 1);
        make_hessian(H, in, in + 37, 5, 77);
        TEST_CHECK(prune_sparsegpt_prepare_hinv(H, in, 0.01, ref, dref, NULL) == LOSA_OK, "%s", core_errmsg());
        TEST_CHECK(dist_sparsegpt_hinv(d, H, in, 0.01, got, dgot) == LOSA_OK, "%s", core_errmsg());
        TEST_CHECK(memcmp(ref, got, sizeof(double) * (size_t)in * in) == 0 &&
                   memcmp(dref, dgot, (size_t)in) == 0, "local hinv differs from LAPACK's");
        core_free(H);
        core_free(ref);
        core_free(got);
        core_free(dref);
        core_free(dgot);
    }

    /* not positive definite -> LOSA_ERR_NUMERIC on every replica */
    {
        int in = 64;
        double *H = core_calloc((size_t)in * in, sizeof *H), *U = core_calloc((size_t)in * in, sizeof *U);
        for (int j = 0; j < in; j++) H[(int64_t)j * in + j] = 1.0;
        H[1] = H[in] = 5.0; /* [[1,5],[5,1]] block: indefinite */
        losa_status s = dist_sparsegpt_hinv_nb(d, H, in, 0.0, U, NULL, 16);
        TEST_CHECK(s == LOSA_ERR_NUMERIC, "indefinite H: status %d (%s)", (int)s, core_errmsg());
        core_free(H);
        core_free(U);
    }

    /* up to DIST_ROWS_LOCAL_MAX weights the default entry sweeps all rows
     * on every replica: the one-rank result bit for bit, no messages but
     * the status */
    {
        int out = 300, in = 256;
        TEST_CHECK(dist_sparsegpt_rows_local(out, in, P) &&
                   dist_sparsegpt_rows_local(1, (int)DIST_ROWS_LOCAL_MAX, P) &&
                   (P == 1 || !dist_sparsegpt_rows_local(2, (int)DIST_ROWS_LOCAL_MAX, P)),
                   "rows local threshold");
        TEST_CHECK(dist_sparsegpt_rows_bytes(out, in, 64, P) ==
                   prune_sparsegpt_rows_bytes(out, in, 64, 1), "local rows: the local scratch");
        double *H = core_calloc((size_t)in * in, sizeof *H);
        double *hinv = core_calloc((size_t)in * in, sizeof *hinv);
        float *W = core_calloc((size_t)out * in, sizeof *W), *ref = core_calloc((size_t)out * in, sizeof *ref);
        make_hessian(H, in, in + 11, 5, 91);
        core_rng r;
        core_rng_seed(&r, 515);
        for (int64_t i = 0; i < (int64_t)out * in; i++) W[i] = ref[i] = core_rng_normal(&r);
        TEST_CHECK(prune_sparsegpt_prepare_hinv(H, in, 0.01, hinv, NULL, NULL) == LOSA_OK, "%s",
                   core_errmsg());
        prune_sparsegpt_timing tref = {0}, tgot = {0};
        TEST_CHECK(prune_sparsegpt_rows(ref, out, 0, out, in, hinv, NULL, 0.6, 0, 0, 64, NULL,
                                        NULL, &tref) == LOSA_OK, "%s", core_errmsg());
        TEST_CHECK(dist_sparsegpt_rows(d, W, out, in, hinv, NULL, 0.6, 0, 0, 64, &tgot) == LOSA_OK,
                   "%s", core_errmsg());
        TEST_CHECK(memcmp(W, ref, sizeof(float) * (size_t)out * in) == 0 && tgot.loss == tref.loss,
                   "local rows differ from the one-rank sweep");
        core_free(H);
        core_free(hinv);
        core_free(W);
        core_free(ref);
    }

    check_rows(d, 50, 256, 64, 0.5, 0, 0);
    check_rows(d, 37, 200, 32, 0.6, 0, 0);
    check_rows(d, 50, 256, 64, 0, 2, 4);
    check_rows(d, 13, 128, 128, 0.3, 0, 0);

    /* 2 stages x 2 replicas: each stage's pair runs its own BLACS grid */
    if (P == 4) {
        TEST_CHECK(dist_set_layout(d, 2, 2) == LOSA_OK, "%s", core_errmsg());
        check_hinv(d, 200 + 56 * dist_stage(d), 32, 3);
        check_rows(d, 21 + dist_stage(d), 128, 32, 0.5, 0, 0);
    }

    double fails = test_failures;
    dist_sum_doubles(d, &fails, 1);
    test_failures = (int)fails;
    int rc = dist_rank(d) == 0 ? test_finish("test_scalapack") : (test_failures ? 1 : 0);
    dist_finalize(&d);
    return rc;
}
