/* prune: method names, counting/selection rules, magnitude and Wanda
 * pruners, N:M helpers, reconstruction error, the one-call dispatcher. */
#include "prune_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *method_names[PRUNE_METHOD_COUNT] = {"magnitude", "wanda", "sparsegpt"};

const char *prune_method_str(prune_method m)
{
    return (m >= 0 && m < PRUNE_METHOD_COUNT) ? method_names[m] : "unknown";
}

losa_status prune_method_from_string(const char *s, prune_method *m)
{
    for (int i = 0; s && i < PRUNE_METHOD_COUNT; i++)
        if (strcmp(s, method_names[i]) == 0) {
            *m = (prune_method)i;
            return LOSA_OK;
        }
    return core_err(LOSA_ERR_ARG,
                    "prune: method: expected magnitude, wanda or sparsegpt, got '%s'",
                    s ? s : "(null)");
}

int64_t prune_count(int64_t n, double s)
{
    if (n <= 0 || !(s > 0)) return 0;
    double k = floor(s * (double)n + 1e-9);
    return k >= (double)n ? n : (int64_t)k;
}

/* ---- selection --------------------------------------------------------- */

#define DEFINE_QSELECT(name, T)                                              \
    T name(T *a, int64_t n, int64_t k)                                       \
    {                                                                        \
        int64_t lo = 0, hi = n - 1;                                          \
        while (lo < hi) {                                                    \
            T x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi], p;            \
            /* median of three */                                            \
            if (x < y) p = y < z ? y : (x < z ? z : x);                      \
            else p = x < z ? x : (y < z ? z : y);                            \
            int64_t lt = lo, i = lo, gt = hi;                                \
            while (i <= gt) {                                                \
                T v = a[i];                                                  \
                if (v < p) { a[i] = a[lt]; a[lt] = v; lt++; i++; }           \
                else if (v > p) { a[i] = a[gt]; a[gt] = v; gt--; }           \
                else i++;                                                    \
            }                                                                \
            if (k < lt) hi = lt - 1;                                         \
            else if (k > gt) lo = gt + 1;                                    \
            else return p;                                                   \
        }                                                                    \
        return a[lo];                                                        \
    }

DEFINE_QSELECT(prune_qselect_d, double)
DEFINE_QSELECT(prune_qselect_f, float)

prune_threshold prune_kth_pair_d(const double *score, int64_t n, int64_t k, double *work)
{
    prune_threshold t = {-INFINITY, -1};
    if (k <= 0) return t;
    if (k > n) k = n;
    memcpy(work, score, (size_t)n * sizeof *work);
    double v = prune_qselect_d(work, n, k - 1);
    int64_t less = 0;
    for (int64_t i = 0; i < n; i++) less += score[i] < v;
    int64_t need = k - less; /* >= 1: the k-th value is v */
    for (int64_t i = 0; i < n; i++)
        if (score[i] == v && --need == 0) {
            t.score = v;
            t.index = i;
            return t;
        }
    LOSA_CHECK(0 && "k-th pair not found");
    return t;
}

losa_status prune_select_local(void *ctx, const double *score, int nrows, int count,
                               int64_t row0, int64_t k_global, prune_threshold *thr)
{
    (void)ctx;
    int64_t n = (int64_t)nrows * count;
    if (row0 != 0 || k_global > n)
        return core_err(LOSA_ERR_ARG, "prune_select_local: rows [%lld, +%d) are not all "
                        "rows (k %lld > %lld): pass a distributed select hook",
                        (long long)row0, nrows, (long long)k_global, (long long)n);
    double *work = core_calloc((size_t)(n > 0 ? n : 1), sizeof *work);
    *thr = prune_kth_pair_d(score, n, k_global, work);
    core_free(work);
    return LOSA_OK;
}

void prune_nm_select(const double *score, int m, int n, unsigned char *sel)
{
    int idx[PRUNE_NM_MAX];
    /* insertion sort of indices by (score, index); strict < keeps it stable */
    for (int c = 0; c < m; c++) {
        int j = c;
        while (j > 0 && score[c] < score[idx[j - 1]]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = c;
    }
    memset(sel, 0, (size_t)m);
    for (int c = 0; c < n; c++) sel[idx[c]] = 1;
}

losa_status prune_check_args(const char *fn, int out, int in, double sparsity, int nm_n,
                             int nm_m)
{
    if (out <= 0 || in <= 0)
        return core_err(LOSA_ERR_ARG, "%s: shape: expected out, in > 0, got %d x %d", fn,
                        out, in);
    if (nm_m == 0) {
        if (!(sparsity >= 0 && sparsity <= 1))
            return core_err(LOSA_ERR_ARG, "%s: sparsity: expected 0 <= s <= 1, got %g",
                            fn, sparsity);
        if (nm_n != 0)
            return core_err(LOSA_ERR_ARG, "%s: nm_n: expected 0 when nm_m = 0, got %d", fn,
                            nm_n);
        return LOSA_OK;
    }
    if (nm_m < 1 || nm_m > PRUNE_NM_MAX || nm_n < 0 || nm_n > nm_m)
        return core_err(LOSA_ERR_ARG, "%s: N:M: expected 0 <= N <= M <= %d, got %d:%d", fn,
                        PRUNE_NM_MAX, nm_n, nm_m);
    if (in % nm_m != 0)
        return core_err(LOSA_ERR_ARG, "%s: N:M: input width %d is not a multiple of M = %d",
                        fn, in, nm_m);
    return LOSA_OK;
}

static losa_status check_finite(const char *fn, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return core_err(LOSA_ERR_NUMERIC, "%s: weight %lld is not finite", fn,
                            (long long)i);
    return LOSA_OK;
}

/* Zero the N lowest-score entries of every group of M columns of one row. */
static void nm_apply_row(float *w /* (in) */, const double *score /* (in) */, int in,
                         int n, int m)
{
    unsigned char sel[PRUNE_NM_MAX];
    for (int g = 0; g < in; g += m) {
        prune_nm_select(score + g, m, n, sel);
        for (int c = 0; c < m; c++)
            if (sel[c]) w[g + c] = 0.0f;
    }
}

/* ---- magnitude --------------------------------------------------------- */

size_t prune_magnitude_bytes(int out, int in, int nm_m)
{
    return nm_m > 0 ? core_alloc_bytes((size_t)in, sizeof(double))
                    : core_alloc_bytes((size_t)out * in, sizeof(float));
}

losa_status prune_magnitude(float *W, int out, int in, double sparsity, int nm_n, int nm_m)
{
    losa_status s = prune_check_args("prune_magnitude", out, in, sparsity, nm_n, nm_m);
    if (s != LOSA_OK) return s;
    int64_t N = (int64_t)out * in;
    if ((s = check_finite("prune_magnitude", W, N)) != LOSA_OK) return s;
    if (nm_m > 0) {
        double *score = core_calloc((size_t)in, sizeof *score); /* prune_magnitude_bytes */
        for (int r = 0; r < out; r++) {
            float *w = W + (int64_t)r * in;
            for (int j = 0; j < in; j++) score[j] = fabsf(w[j]);
            nm_apply_row(w, score, in, nm_n, nm_m);
        }
        core_free(score);
        return LOSA_OK;
    }
    int64_t k = prune_count(N, sparsity);
    if (k == 0) return LOSA_OK;
    float *work = core_calloc((size_t)N, sizeof *work); /* prune_magnitude_bytes */
    for (int64_t i = 0; i < N; i++) work[i] = fabsf(W[i]);
    float v = prune_qselect_f(work, N, k - 1);
    core_free(work);
    int64_t less = 0;
    for (int64_t i = 0; i < N; i++) less += fabsf(W[i]) < v;
    int64_t need = k - less;
    for (int64_t i = 0; i < N; i++) {
        float a = fabsf(W[i]);
        if (a < v) W[i] = 0.0f;
        else if (a == v && need > 0) {
            W[i] = 0.0f;
            need--;
        }
    }
    return LOSA_OK;
}

/* ---- Wanda ------------------------------------------------------------- */

/* Doubles of prune_wanda's one scratch block: norm, score, work (in each),
 * cand (out) and the `plus` flags (out bytes, in doubles' room). */
static size_t wanda_doubles(int out, int in) { return (size_t)in * 3 + (size_t)out * 2; }

size_t prune_wanda_bytes(int out, int in)
{
    return core_alloc_bytes(wanda_doubles(out, in), sizeof(double));
}

losa_status prune_wanda(float *W, const double *colsq, int out, int in, double sparsity,
                        int nm_n, int nm_m)
{
    losa_status s = prune_check_args("prune_wanda", out, in, sparsity, nm_n, nm_m);
    if (s != LOSA_OK) return s;
    if ((s = check_finite("prune_wanda", W, (int64_t)out * in)) != LOSA_OK) return s;
    for (int j = 0; j < in; j++)
        if (!(colsq[j] >= 0) || !isfinite(colsq[j]))
            return core_err(LOSA_ERR_NUMERIC,
                            "prune_wanda: colsq[%d]: expected finite >= 0, got %g", j,
                            colsq[j]);
    double *buf = core_calloc(wanda_doubles(out, in), sizeof *buf);
    double *norm = buf, *score = buf + in, *work = buf + 2 * in, *cand = buf + 3 * in;
    for (int j = 0; j < in; j++) norm[j] = sqrt(colsq[j]);
    /* Unstructured: K = prune_count(out*in, s) zeros in the matrix, k = K/out
     * in every row and one more in the `extra` rows whose next candidate
     * ((k+1)-th lowest score) is lowest (ties: lower row), so the matrix
     * sparsity is exact while the comparison stays within rows. */
    int64_t K = prune_count((int64_t)out * in, sparsity), k = K / out, extra = K - k * out;
    unsigned char *plus = (unsigned char *)(cand + out);
    memset(plus, 0, (size_t)out);
    if (nm_m == 0 && extra > 0) {
        for (int r = 0; r < out; r++) {
            const float *w = W + (int64_t)r * in;
            for (int j = 0; j < in; j++) score[j] = fabs((double)w[j]) * norm[j];
            cand[r] = prune_kth_pair_d(score, in, k + 1, work).score;
        }
        for (int64_t e = 0; e < extra; e++) { /* extra is < out: selection by scan */
            int best = -1;
            for (int r = 0; r < out; r++)
                if (!plus[r] && (best < 0 || cand[r] < cand[best])) best = r;
            plus[best] = 1;
        }
    }
    for (int r = 0; r < out; r++) {
        float *w = W + (int64_t)r * in;
        for (int j = 0; j < in; j++) score[j] = fabs((double)w[j]) * norm[j];
        if (nm_m > 0) {
            nm_apply_row(w, score, in, nm_n, nm_m);
            continue;
        }
        prune_threshold t = prune_kth_pair_d(score, in, k + plus[r], work);
        for (int j = 0; j < in; j++)
            if (prune_thr_hit(score[j], j, t)) w[j] = 0.0f;
    }
    core_free(buf);
    return LOSA_OK;
}

/* ---- helpers ----------------------------------------------------------- */

/* "unstructured" -> 0:0; "N:M" with 0 < N < M. */
int prune_pattern_parse(const char *s, int *n, int *m)
{
    *n = *m = 0;
    if (!strcmp(s, "unstructured")) return 0;
    char *e1, *e2;
    long a = strtol(s, &e1, 10);
    if (e1 == s || *e1 != ':') return -1;
    long b = strtol(e1 + 1, &e2, 10);
    if (e2 == e1 + 1 || *e2) return -1;
    if (!(b > 0 && a >= 1 && a < b && b <= 1024)) return -1;
    *n = (int)a;
    *m = (int)b;
    return 0;
}


int64_t prune_count_zeros(const float *x, int64_t n)
{
    int64_t z = 0;
    for (int64_t i = 0; i < n; i++) z += x[i] == 0.0f;
    return z;
}

int64_t prune_nm_check(const float *W, int out, int in, int n, int m)
{
    if (m <= 0 || in % m != 0) return -1;
    int64_t bad = 0;
    for (int r = 0; r < out; r++)
        for (int g = 0; g < in; g += m) {
            int z = 0;
            for (int c = 0; c < m; c++) z += W[(int64_t)r * in + g + c] == 0.0f;
            bad += z < n;
        }
    return bad;
}

void prune_recon_accumulate(const float *dense_out, const float *sparse_out, int64_t ntok,
                            int d, double *dd, double *ee)
{
    for (int64_t t = 0; t < ntok; t++) {
        const float *a = dense_out + t * d, *b = sparse_out + t * d;
        for (int j = 0; j < d; j++) {
            double x = a[j], e = (double)a[j] - (double)b[j];
            dd[j] += x * x;
            ee[j] += e * e;
        }
    }
}

double prune_recon_combine(const double *dd, const double *ee, int d)
{
    double err = 0;
    for (int j = 0; j < d; j++) err += dd[j] > 0 ? ee[j] / dd[j] : ee[j];
    return d > 0 ? err / d : 0.0;
}

double prune_reconstruction_error(const float *dense_out, const float *sparse_out,
                                  int64_t ntok, int d)
{
    double *buf = core_calloc((size_t)(2 * (d > 0 ? d : 1)), sizeof *buf);
    prune_recon_accumulate(dense_out, sparse_out, ntok, d, buf, buf + d);
    double err = prune_recon_combine(buf, buf + d, d);
    core_free(buf);
    return err;
}

/* ---- dispatcher -------------------------------------------------------- */

void prune_config_default(prune_config *c)
{
    c->method = PRUNE_METHOD_WANDA;
    c->sparsity = 0.5;
    c->nm_n = c->nm_m = 0;
    c->blocksize = 128;
    c->percdamp = 0.01;
}

/* One map of a group: the method's pruner (SparseGPT's inverse factor of
 * the group's input is in x). */
static losa_status group_map(const prune_config *c, double sp, float *W, int out,
                             const prune_input *x, const prune_sparsegpt_hooks *hk,
                             prune_sparsegpt_timing *t)
{
    int in = x->in;
    switch (c->method) {
    case PRUNE_METHOD_MAGNITUDE:
        return prune_magnitude(W, out, in, sp, c->nm_n, c->nm_m);
    case PRUNE_METHOD_WANDA:
        return prune_wanda(W, x->colsq, out, in, sp, c->nm_n, c->nm_m);
    case PRUNE_METHOD_SPARSEGPT:
        if (hk && hk->rows)
            return hk->rows(hk->ctx, W, out, in, x->hinv, x->dead, sp, c->nm_n, c->nm_m,
                            c->blocksize, t);
        return prune_sparsegpt_rows(W, out, 0, out, in, x->hinv, x->dead, sp, c->nm_n, c->nm_m,
                                    c->blocksize, NULL, NULL, t);
    default:
        return core_err(LOSA_ERR_ARG, "prune: unknown method %d", (int)c->method);
    }
}

losa_status prune_group(const prune_config *c, double sparsity, float *const *W, const int *out,
                        int n, const prune_input *x, const prune_sparsegpt_hooks *hk,
                        prune_sparsegpt_timing *t, int *failed)
{
    const char *name = prune_method_str(c->method);
    losa_status st = LOSA_OK;
    if (failed) *failed = -1;
    if (c->method == PRUNE_METHOD_WANDA && !x->colsq)
        st = core_err(LOSA_ERR_ARG, "prune: %s needs the input's column statistics (width %d)",
                      name, x->in);
    if (c->method == PRUNE_METHOD_SPARSEGPT && (!x->H || !x->hinv))
        st = core_err(LOSA_ERR_ARG, "prune: %s needs the input's Hessian (statistics with "
                      "want_hessian = 1) and an (in, in) work block (width %d)", name, x->in);
    if (st == LOSA_OK && c->method == PRUNE_METHOD_SPARSEGPT) {
        double t0 = core_time();
        st = hk && hk->hinv ? hk->hinv(hk->ctx, x->H, x->in, c->percdamp, x->hinv, x->dead)
                            : prune_sparsegpt_prepare_hinv(x->H, x->in, c->percdamp, x->hinv,
                                                           x->dead, NULL);
        if (t) t->hinv_s += core_time() - t0;
    }
    for (int k = 0; k < n && st == LOSA_OK; k++) {
        double t0 = core_time();
        st = group_map(c, sparsity, W[k], out[k], x, hk, t);
        if (t && c->method != PRUNE_METHOD_SPARSEGPT) t->mask_s += core_time() - t0;
        if (st != LOSA_OK && failed) *failed = k;
    }
    return st;
}

size_t prune_group_bytes(const prune_config *c, const int *out, int n, int in)
{
    size_t most = 0;
    for (int k = 0; k < n; k++) {
        size_t b = c->method == PRUNE_METHOD_MAGNITUDE ? prune_magnitude_bytes(out[k], in, c->nm_m)
                   : c->method == PRUNE_METHOD_WANDA
                       ? prune_wanda_bytes(out[k], in)
                       : prune_sparsegpt_rows_bytes(out[k], in, c->blocksize, c->nm_m == 0);
        if (b > most) most = b;
    }
    return most;
}

losa_status prune_matrix(const prune_config *c, float *W, int out, int in,
                         const prune_stats *st, prune_sparsegpt_timing *t)
{
    if (c->method != PRUNE_METHOD_MAGNITUDE && (!st || !st->finalized || st->in != in))
        return core_err(LOSA_ERR_ARG, "prune_matrix: %s needs finalized statistics of "
                        "width %d", prune_method_str(c->method), in);
    int sgpt = c->method == PRUNE_METHOD_SPARSEGPT;
    prune_input x = {.in = in, .colsq = st ? st->colsq : NULL, .H = st ? st->H : NULL};
    if (sgpt && x.H) {
        x.hinv = core_calloc((size_t)in * in, sizeof(double));
        x.dead = core_calloc((size_t)in, 1);
    }
    prune_sparsegpt_timing tt = {0};
    double t0 = core_time();
    losa_status s = prune_group(c, c->sparsity, &W, &out, 1, &x, NULL, &tt, NULL);
    tt.total_s = core_time() - t0;
    if (t) *t = tt;
    core_free(x.hinv);
    core_free(x.dead);
    return s;
}
