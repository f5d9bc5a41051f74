/* LoSA allocators (see include/losa.h). */
#include "losa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"

double losa_schedule(double s, int t, int T)
{
    double f = 1.0 - (double)t / T;
    return s - s * f * f * f;
}

double losa_delta(double s_t)
{
    if (s_t <= 0.5) return 0.01;
    if (s_t <= 0.6) return 0.02;
    if (s_t <= 0.7) return 0.03;
    if (s_t <= 0.8) return 0.04;
    return 0.05;
}

void losa_cka(double *cka, const double *grams, int n_rep, int n)
{
    int64_t nn = (int64_t)n * n;
    double *norm = malloc(sizeof(double) * n_rep);
    for (int i = 0; i < n_rep; i++) {
        double s = 0;
        for (int64_t k = 0; k < nn; k++) s += grams[i * nn + k] * grams[i * nn + k];
        norm[i] = sqrt(s);
    }
    for (int i = 0; i < n_rep; i++)
        for (int j = i; j < n_rep; j++) {
            double s = 0;
            for (int64_t k = 0; k < nn; k++) s += grams[i * nn + k] * grams[j * nn + k];
            double den = norm[i] * norm[j];
            double v = den > 0 ? s / den : (i == j ? 1.0 : 0.0);
            cka[i * n_rep + j] = cka[j * n_rep + i] = v;
        }
    free(norm);
}

static const char *alloc_names[] = {"rmi", "mi_proportional", "uniform"};

losa_status losa_alloc_from_string(const char *s, losa_alloc *a)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, alloc_names[i])) {
            *a = (losa_alloc)i;
            return LOSA_OK;
        }
    return core_err(LOSA_ERR_ARG, "unknown allocator '%s' (expected rmi, mi_proportional or uniform)", s);
}


void losa_rmi_importance(double *imp, const double *cka, int L, double beta)
{
    double tot = 0;
    for (int i = 0; i < L; i++) {
        double r = 0;
        for (int j = 0; j < L; j++)
            if (j != i) r += cka[i * L + j];
        imp[i] = r;
        tot += r;
    }
    for (int i = 0; i < L; i++) imp[i] = exp(-beta * (tot > 0 ? imp[i] / tot : 1.0 / L));
}

static void bounds(double s_t, double delta, double *lo, double *hi)
{
    *lo = s_t - delta < 0 ? 0 : s_t - delta;
    *hi = s_t + delta > 0.99 ? 0.99 : s_t + delta;
}

void losa_alloc_lp(double *x, const double *imp, int L, double s_t, double delta)
{
    losa_alloc_lp_floor(x, imp, L, s_t, delta, NULL);
}

void losa_alloc_lp_floor(double *x, const double *imp, int L, double s_t, double delta,
                         const double *floor_)
{
    double lo, hi, budget = L * s_t;
    bounds(s_t, delta, &lo, &hi);
    int *ord = malloc(sizeof(int) * L);
    for (int i = 0; i < L; i++) {
        ord[i] = i;
        x[i] = floor_ && floor_[i] > lo ? floor_[i] : lo;
        budget -= x[i];
    }
    /* least important first; ties by index (insertion sort is stable) */
    for (int i = 1; i < L; i++) {
        int k = ord[i], j = i - 1;
        while (j >= 0 && imp[ord[j]] > imp[k]) {
            ord[j + 1] = ord[j];
            j--;
        }
        ord[j + 1] = k;
    }
    for (int q = 0; q < L && budget > 0; q++) {
        double room = hi - x[ord[q]];
        if (room <= 0) continue;
        double add = room < budget ? room : budget;
        x[ord[q]] += add;
        budget -= add;
    }
    free(ord);
}

void losa_alloc_mi_proportional(double *x, const double *mi, int L, double s_t,
                                double delta)
{
    double lo, hi;
    bounds(s_t, delta, &lo, &hi);
    double msum = 0;
    for (int i = 0; i < L; i++) msum += mi[i] > 0 ? mi[i] : 0;
    if (msum <= 0) {
        for (int i = 0; i < L; i++) x[i] = s_t;
        return;
    }
    /* sparsity_l(lam) = clip(1 - lam * mi_l / mean(mi)), decreasing in lam;
     * lam = 1 - s_t is the unclipped normalisation; bisect for the exact mean */
    double a = 0, b = 2.0 / (msum / L) * 2 + 10;
    for (int it = 0; it < 200; it++) {
        double lam = 0.5 * (a + b), mean = 0;
        for (int i = 0; i < L; i++) {
            double v = 1 - lam * (mi[i] > 0 ? mi[i] : 0) / (msum / L);
            mean += v < lo ? lo : v > hi ? hi : v;
        }
        mean /= L;
        if (mean > s_t) a = lam; else b = lam;
    }
    double lam = 0.5 * (a + b), mean = 0;
    for (int i = 0; i < L; i++) {
        double v = 1 - lam * (mi[i] > 0 ? mi[i] : 0) / (msum / L);
        x[i] = v < lo ? lo : v > hi ? hi : v;
        mean += x[i];
    }
    /* remove the bisection residue (< 1e-12) from an unclipped layer */
    mean /= L;
    for (int i = 0; i < L; i++)
        if (x[i] > lo && x[i] < hi) {
            x[i] -= (mean - s_t) * L;
            break;
        }
}

/* order of layers by error: desc = 1 for descending; ties by index */
static void order_by(int *ord, const double *err, int L, int desc)
{
    for (int i = 0; i < L; i++) ord[i] = i;
    for (int i = 1; i < L; i++) {
        int k = ord[i], j = i - 1;
        while (j >= 0 && (desc ? err[ord[j]] < err[k] : err[ord[j]] > err[k])) {
            ord[j + 1] = ord[j];
            j--;
        }
        ord[j + 1] = k;
    }
}

void losa_alloc_ranks(int *rank, const double *err, int L, int R, int rmin, int rmax)
{
    losa_alloc_ranks_mode(rank, err, L, R, rmin, rmax, LOSA_REBALANCE_EXACT);
}

void losa_alloc_ranks_mode(int *rank, const double *err, int L, int R, int rmin, int rmax,
                           losa_rebalance mode)
{
    int one_pass = mode == LOSA_REBALANCE_ONE_PASS;
    double mean = 0;
    for (int i = 0; i < L; i++) mean += err[i];
    mean /= L;
    for (int i = 0; i < L; i++) {
        double v = mean > 0 ? err[i] / mean * R : R;
        int r = (int)(one_pass ? rint(v) : lround(v)); /* rint: half to even */
        rank[i] = r < rmin ? rmin : r > rmax ? rmax : r;
    }
    int64_t target = (int64_t)R * L, sum = 0;
    for (int i = 0; i < L; i++) sum += rank[i];
    int *ord = malloc(sizeof(int) * L);
    if (sum < target) {
        order_by(ord, err, L, 1);
        for (int moved = 1; sum < target && moved;) {
            moved = 0;
            for (int q = 0; q < L && sum < target; q++)
                if (rank[ord[q]] < rmax) rank[ord[q]]++, sum++, moved = 1;
            if (one_pass) break;
        }
    } else if (sum > target) {
        order_by(ord, err, L, 0);
        for (int moved = 1; sum > target && moved;) {
            moved = 0;
            for (int q = 0; q < L && sum > target; q++)
                if (rank[ord[q]] > rmin) rank[ord[q]]--, sum--, moved = 1;
            if (one_pass) break;
        }
    }
    free(ord);
}

int losa_rank_bound(losa_rank_cap cap, int rank_max, int r_max)
{
    return cap == LOSA_RANK_CAP_SLICE || rank_max < r_max ? rank_max : r_max;
}

void losa_rank_active(int *active, const int *rank, int L, losa_rank_cap cap, int r_max)
{
    (void)cap; /* REDISTRIBUTE: ranks are already <= r_max */
    for (int i = 0; i < L; i++) active[i] = rank[i] < r_max ? rank[i] : r_max;
}

void losa_train_slice(int t, int T, int64_t n_step, int64_t n_last, int64_t n, int64_t *first,
                      int64_t *count)
{
    int64_t a = t < T ? (int64_t)t * n_step : (int64_t)(T - 1) * n_step;
    int64_t b = a + (t < T ? n_step : n_last);
    if (a > n) a = n;
    if (b > n) b = n;
    *first = a;
    *count = b - a;
}

void losa_decision_init(losa_decision *dc, int L)
{
    memset(dc, 0, sizeof *dc);
    dc->L = L;
    dc->sparsity = calloc(L, sizeof(double));
    dc->importance = calloc(L, sizeof(double));
    dc->cka = calloc((size_t)(L + 1) * (L + 1), sizeof(double));
    dc->rank = calloc(L, sizeof(int));
    dc->rank_active = calloc(L, sizeof(int));
}

void losa_decision_free(losa_decision *dc)
{
    free(dc->sparsity);
    free(dc->importance);
    free(dc->cka);
    free(dc->rank);
    free(dc->rank_active);
    memset(dc, 0, sizeof *dc);
}

void losa_decide_sparsity(losa_decision *dc, losa_alloc a, const double *grams, int n,
                          double s, int t, int T, double beta, const double *floor_)
{
    int L = dc->L;
    dc->s_t = losa_schedule(s, t, T);
    double delta = losa_delta(dc->s_t);
    if (grams) losa_cka(dc->cka, grams, L + 1, n);
    double *lay = calloc((size_t)L * L, sizeof(double)), *mi = calloc(L, sizeof(double));
    for (int i = 0; i < L; i++) {
        for (int j = 0; j < L; j++) lay[i * L + j] = dc->cka[i * (L + 1) + j];
        mi[i] = dc->cka[i * (L + 1) + L];
    }
    losa_rmi_importance(dc->importance, lay, L, beta);
    switch (a) {
    case LOSA_ALLOC_RMI:
        losa_alloc_lp_floor(dc->sparsity, dc->importance, L, dc->s_t, delta, floor_);
        break;
    case LOSA_ALLOC_MI_PROPORTIONAL: losa_alloc_mi_proportional(dc->sparsity, mi, L, dc->s_t, delta); break;
    case LOSA_ALLOC_UNIFORM:
        for (int i = 0; i < L; i++) dc->sparsity[i] = dc->s_t;
        break;
    }
    /* floors for the other allocators: never ask a layer to become denser */
    if (floor_ && a != LOSA_ALLOC_RMI)
        for (int i = 0; i < L; i++)
            if (dc->sparsity[i] < floor_[i]) dc->sparsity[i] = floor_[i];
    free(lay);
    free(mi);
}

void losa_collective_ranks(dist_ctx *d, losa_decision *dc, const double *err_local, int R,
                           int rmin, int rmax, int fixed_rank, losa_rebalance mode)
{
    int L = dc->L;
    double *err = malloc(sizeof(double) * L);
    memcpy(err, err_local, sizeof(double) * L);
    dist_sum_doubles(d, err, L);
    if (dist_rank(d) == 0) {
        if (fixed_rank > 0)
            for (int i = 0; i < L; i++) dc->rank[i] = fixed_rank;
        else
            losa_alloc_ranks_mode(dc->rank, err, L, R, rmin, rmax, mode);
    }
    dist_bcast(d, dc->rank, sizeof(int) * L, 0);
    free(err);
}
