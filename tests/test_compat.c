/* losa.compat = losa | reference: the switches between losa's allocation
 * rules and the official LoSA code's, on hand-derived cases.
 *  - ranks: err (10,1,1,1), mean rank 6 (total 24): raw err/mean*R =
 *    (18.46, 1.85, 1.85, 1.85) -> (18, 2, 2, 2) -> clipped (16, 2, 2, 2);
 *    reference (bound 16, one pass, slice to r = 8 rows): allocated
 *    (16, 3, 3, 2), active (8, 3, 3, 2): the rank above 8 is capped and its
 *    surplus is NOT redistributed (active total 16, not 24); losa (bound
 *    min(16, r_max = 8), exact): (8, 2, 2, 2) + 10 in round-robin passes ->
 *    (8, 6, 5, 5), active = allocated, total 24;
 *  - one pass leaves the total off: err (100, 1, 1), R 2: (5.88, .06, .06) ->
 *    (6, 1, 1), sum 8 > 6: one pass -> (5, 1, 1) (sum 7); exact -> (4, 1, 1);
 *  - numpy rounding (half to even) in one_pass: err (1, 3), R 3: (1.5, 4.5)
 *    -> (2, 4) = total; lround (exact) -> (2, 5), then -1 -> (1, 5);
 *  - sparsity floors: imp (0.3, 0.2, 0.1), s_t 0.5, delta 0.01: no floor ->
 *    (0.49, 0.50, 0.51) (least important to the upper bound first); layer 0
 *    already at 0.55 with the floor -> (0.55, 0.49, 0.49); the reference
 *    asks 0.49 of layer 0 and Wanda leaves a 55%-sparse matrix untouched at
 *    0.49 (no weight changes), so the measured mean is 0.52, not 0.50;
 *  - training slices of the reference: T 5, n 1000, last 6000: step 1
 *    [1000, 2000), step 4 [4000, 5000), step 5 [4000, 10000); clipped to the
 *    set size;
 *  - deck: losa.compat = reference sets every switch, lora.r_max 8,
 *    train.seed 42, the python sampler, calibration seed 4, BOS + EOS,
 *    length-grouped batches; a key the deck sets wins; losa.compat = losa
 *    keeps today's behaviour.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "losa.h"
#include "prune.h"
#include "settings.h"
#include "test_util.h"

static void check_ints(const int *x, const int *want, int n, const char *what)
{
    int ok = 1;
    for (int i = 0; i < n; i++) ok &= x[i] == want[i];
    char got[256] = "", exp[256] = "";
    for (int i = 0; i < n; i++) {
        snprintf(got + strlen(got), sizeof got - strlen(got), " %d", x[i]);
        snprintf(exp + strlen(exp), sizeof exp - strlen(exp), " %d", want[i]);
    }
    TEST_CHECK(ok, "%s: got%s, expected%s", what, got, exp);
}

static void check_ranks(void)
{
    const double err[4] = {10, 1, 1, 1};
    int r[4], a[4];
    /* reference: bound 16 whatever r_max, one pass, slice to 8 rows */
    int bound = losa_rank_bound(LOSA_RANK_CAP_SLICE, 16, 8);
    TEST_CHECK(bound == 16, "slice bound %d", bound);
    losa_alloc_ranks_mode(r, err, 4, 6, 1, bound, LOSA_REBALANCE_ONE_PASS);
    check_ints(r, (int[]){16, 3, 3, 2}, 4, "reference allocated ranks");
    losa_rank_active(a, r, 4, LOSA_RANK_CAP_SLICE, 8);
    check_ints(a, (int[]){8, 3, 3, 2}, 4, "reference active ranks (capped at r = 8)");
    /* losa: bound min(16, r_max), exact total */
    bound = losa_rank_bound(LOSA_RANK_CAP_REDISTRIBUTE, 16, 8);
    TEST_CHECK(bound == 8, "redistribute bound %d", bound);
    losa_alloc_ranks_mode(r, err, 4, 6, 1, bound, LOSA_REBALANCE_EXACT);
    check_ints(r, (int[]){8, 6, 5, 5}, 4, "losa ranks (surplus redistributed)");
    losa_rank_active(a, r, 4, LOSA_RANK_CAP_REDISTRIBUTE, 8);
    check_ints(a, r, 4, "losa active = allocated");
    TEST_CHECK(losa_rank_bound(LOSA_RANK_CAP_REDISTRIBUTE, 16, 32) == 16, "bound min(16, 32)");

    const double e2[3] = {100, 1, 1};
    int r2[3];
    losa_alloc_ranks_mode(r2, e2, 3, 2, 1, 16, LOSA_REBALANCE_ONE_PASS);
    check_ints(r2, (int[]){5, 1, 1}, 3, "one pass leaves the total at 7");
    losa_alloc_ranks_mode(r2, e2, 3, 2, 1, 16, LOSA_REBALANCE_EXACT);
    check_ints(r2, (int[]){4, 1, 1}, 3, "exact reaches 6");

    const double e3[2] = {1, 3};
    int r3[2];
    losa_alloc_ranks_mode(r3, e3, 2, 3, 1, 16, LOSA_REBALANCE_ONE_PASS);
    check_ints(r3, (int[]){2, 4}, 2, "one pass: numpy round half to even");
    losa_alloc_ranks_mode(r3, e3, 2, 3, 1, 16, LOSA_REBALANCE_EXACT);
    check_ints(r3, (int[]){1, 5}, 2, "exact: lround then -1");
    losa_alloc_ranks(r3, e3, 2, 3, 1, 16);
    check_ints(r3, (int[]){1, 5}, 2, "losa_alloc_ranks = exact");
}

static void check_floor(void)
{
    const double imp[3] = {0.3, 0.2, 0.1}, fl[3] = {0.55, 0, 0};
    double x[3];
    losa_alloc_lp_floor(x, imp, 3, 0.5, 0.01, NULL);
    TEST_NEAR(x[0], 0.49, 1e-12, "no floor x0");
    TEST_NEAR(x[1], 0.50, 1e-12, "no floor x1");
    TEST_NEAR(x[2], 0.51, 1e-12, "no floor x2");
    double y[3];
    losa_alloc_lp_floor(y, imp, 3, 0.5, 0.01, fl);
    TEST_NEAR(y[0], 0.55, 1e-12, "floor x0");
    TEST_NEAR(y[1], 0.49, 1e-12, "floor x1");
    TEST_NEAR(y[2], 0.49, 1e-12, "floor x2");
    /* Wanda asked 0.49 of a matrix that is 55% sparse: nothing changes */
    enum { O = 8, I = 20 };
    float W[O * I], W0[O * I];
    double colsq[I];
    for (int j = 0; j < I; j++) colsq[j] = 1.0 + 0.1 * j;
    for (int i = 0; i < O; i++)
        for (int j = 0; j < I; j++)
            W[i * I + j] = ((i * 7 + j * 3) % I) < 11 ? 0.0f : 0.5f + 0.01f * (float)(i + j);
    memcpy(W0, W, sizeof W);
    TEST_CHECK(prune_wanda(W, colsq, O, I, x[0], 0, 0) == LOSA_OK, "prune_wanda");
    int same = !memcmp(W, W0, sizeof W);
    TEST_CHECK(same, "Wanda below the current sparsity changes no weight");
    int z = 0;
    for (int k = 0; k < O * I; k++) z += W[k] == 0;
    double measured = (double)z / (O * I);
    TEST_NEAR(measured, 0.55, 1e-12, "layer stays at 0.55");
    double mean = (measured + x[1] + x[2]) / 3;
    TEST_NEAR(mean, 0.52, 1e-12, "mean overshoots s_t = 0.50");
}

static void check_slices(void)
{
    int64_t a, n;
    losa_train_slice(1, 5, 1000, 6000, 50000, &a, &n);
    TEST_CHECK(a == 1000 && n == 1000, "step 1: %lld + %lld", (long long)a, (long long)n);
    losa_train_slice(4, 5, 1000, 6000, 50000, &a, &n);
    TEST_CHECK(a == 4000 && n == 1000, "step 4: %lld + %lld", (long long)a, (long long)n);
    losa_train_slice(5, 5, 1000, 6000, 50000, &a, &n);
    TEST_CHECK(a == 4000 && n == 6000, "step 5: %lld + %lld", (long long)a, (long long)n);
    losa_train_slice(5, 5, 1000, 6000, 4500, &a, &n);
    TEST_CHECK(a == 4000 && n == 500, "step 5 clipped: %lld + %lld", (long long)a, (long long)n);
    losa_train_slice(1, 5, 1000, 6000, 900, &a, &n);
    TEST_CHECK(a == 900 && n == 0, "step 1 past the end: %lld + %lld", (long long)a, (long long)n);
}

/* The settings of a deck: losa.compat = reference gives the reference
 * code's defaults to the keys the deck does not set (losa, data, train,
 * lora sections); an explicit key wins; without it, losa's defaults. */
typedef struct {
    losa_settings ls;
    data_settings ds;
    train_settings ts;
    lora_settings lo;
} compat_view;

static void settings_of(const deck *dk, compat_view *v)
{
    TEST_CHECK(losa_settings_from_deck(dk, &v->ls) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(data_settings_from_deck(dk, NULL, 0, &v->ds) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(train_settings_from_deck(dk, NULL, &v->ts) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(lora_settings_from_deck(dk, &v->ts, &v->lo) == LOSA_OK, "%s", core_errmsg());
}

static void check_deck(void)
{
    deck *dk = NULL;
    TEST_CHECK(deck_parse(&dk, "ref.ini", "[losa]\ncompat = reference\n") == LOSA_OK, "%s",
               core_errmsg());
    compat_view v;
    settings_of(dk, &v);
    const losa_compat *c = &v.ls.compat;
    const calib_draw *cd = &v.ds.draw;
    TEST_CHECK(c->reference && !c->sparsity_floor && c->rebalance == LOSA_REBALANCE_ONE_PASS &&
               c->rank_cap == LOSA_RANK_CAP_SLICE && c->rank_max == 16 &&
               v.ds.train_slices == LOSA_TRAIN_SLICES_REFERENCE && v.ds.group_by_length,
               "reference switches");
    TEST_CHECK(v.lo.lc.r_max == 8 && v.ts.tc.seed == 42 && v.lo.lc.seed == 42,
               "reference r %d seed %llu", v.lo.lc.r_max, (unsigned long long)v.ts.tc.seed);
    TEST_CHECK(cd->sampler == CALIB_SAMPLER_PYTHON && cd->seed == 4 && cd->bos == 1 && cd->eos == 1,
               "reference calibration draw");
    /* explicit keys win */
    TEST_CHECK(deck_set(dk, "losa.rank_rebalance=exact") == LOSA_OK, "set");
    TEST_CHECK(deck_set(dk, "data.calib_seed=0") == LOSA_OK, "set");
    TEST_CHECK(deck_set(dk, "lora.r_max=16") == LOSA_OK, "set");
    TEST_CHECK(deck_set(dk, "data.calib_eos=0") == LOSA_OK, "set");
    TEST_CHECK(deck_set(dk, "data.group_by_length=false") == LOSA_OK, "set");
    settings_of(dk, &v);
    TEST_CHECK(!v.ds.group_by_length, "explicit group_by_length = false wins");
    TEST_CHECK(c->rebalance == LOSA_REBALANCE_EXACT && !c->sparsity_floor && v.lo.lc.r_max == 16,
               "explicit rank_rebalance / r_max win");
    TEST_CHECK(cd->seed == 0 && cd->eos == 0 && cd->sampler == CALIB_SAMPLER_PYTHON,
               "explicit calib_seed / calib_eos win");
    deck_free(&dk);
    /* default: today's behaviour */
    TEST_CHECK(deck_parse(&dk, "losa.ini", "[losa]\nsteps = 5\n") == LOSA_OK, "%s", core_errmsg());
    settings_of(dk, &v);
    TEST_CHECK(!c->reference && c->sparsity_floor && c->rebalance == LOSA_REBALANCE_EXACT &&
               c->rank_cap == LOSA_RANK_CAP_REDISTRIBUTE &&
               v.ds.train_slices == LOSA_TRAIN_SLICES_LOSA && !v.ds.group_by_length &&
               v.lo.lc.r_max == 16 && v.ts.tc.seed == 0, "losa defaults");
    TEST_CHECK(cd->sampler == CALIB_SAMPLER_LOSA && cd->seed == 0 && cd->bos == 1 && cd->eos == 0,
               "losa calibration draw");
    deck_free(&dk);
}

static int has_line(const char *txt, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = txt; (p = strstr(p, line)); p++)
        if ((p == txt || p[-1] == '\n') && p[n] == '\n') return 1;
    return 0;
}

/* What run files record (/run/deck): the values in effect.  Under
 * losa.compat = reference a key the deck leaves unset shows the reference
 * default, an explicit key its own value; the dump parses back to the same
 * settings. */
static void check_dump(void)
{
    deck *dk = NULL, *back = NULL;
    TEST_CHECK(deck_parse(&dk, "ref.ini", "[losa]\ncompat = reference\n[data]\ncalib_eos = 0\n") ==
               LOSA_OK, "%s", core_errmsg());
    char *d = settings_deck_dump(dk, NULL);
    TEST_CHECK(has_line(d, "group_by_length = true") && has_line(d, "calib_sampler = python") &&
               has_line(d, "r_max = 8") && has_line(d, "rank_rebalance = one_pass") &&
               has_line(d, "calib_eos = 0"), "reference dump:\n%s", d);
    compat_view v, w;
    settings_of(dk, &v);
    TEST_CHECK(deck_parse(&back, "dump", d) == LOSA_OK, "%s", core_errmsg());
    settings_of(back, &w);
    TEST_CHECK(w.ds.group_by_length == v.ds.group_by_length && w.lo.lc.r_max == v.lo.lc.r_max &&
               w.ds.draw.sampler == v.ds.draw.sampler && w.ds.draw.eos == 0 &&
               w.ls.compat.rebalance == v.ls.compat.rebalance, "the dump reparses to the same settings");
    free(d);
    deck_free(&back);
    deck_free(&dk);
    TEST_CHECK(deck_parse(&dk, "losa.ini", "[losa]\nsteps = 5\n") == LOSA_OK, "%s", core_errmsg());
    d = settings_deck_dump(dk, NULL);
    TEST_CHECK(has_line(d, "group_by_length = false") && has_line(d, "calib_sampler = losa") &&
               has_line(d, "r_max = 16"), "losa dump:\n%s", d);
    free(d);
    deck_free(&dk);
}

int main(void)
{
    check_ranks();
    check_floor();
    check_slices();
    check_deck();
    check_dump();
    return test_finish("test_compat");
}
