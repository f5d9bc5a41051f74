/* losa bench sparse [--quick] [--json] [--reps K] [--rounds R]: dense
 * OpenBLAS vs sparse kernels on LLaMA-2-7B linear-layer shapes.
 *
 * For each shape (out, in) x pattern (unstructured magnitude pruning of
 * N(0,1) weights at 50-80%, 2:4) x batch (1 decode, 128 prefill): R rounds
 * (7 decode, 3 prefill) of [best-of-K wall time of cblas_sgemv /
 * cblas_sgemm, then best-of-K of sparse_matvec / sparse_matmul on the
 * panelled sparse matrix], each series after a pause that lets the other
 * library's spinning workers sleep and one warm-up call, the last-level
 * cache flushed before every timed call (decode streams GBs of weights per
 * token, so a matrix that fits in L3 must not be timed warm).  speedup =
 * median over the rounds of the round's dense / sparse ratio (paired: the
 * load of this shared VM drifts by 20-40% over seconds and both paths of a
 * round see the same); speedup_of_best = best dense / best sparse time.
 * gbytes_per_s = bytes of the weight format read per call / best time;
 * ceiling = dense fp32 bytes / those bytes (the speed-up of a kernel that
 * streams its format as fast as dense streams fp32), fraction_of_ceiling =
 * speedup / ceiling.  A STREAM-like triad and a read-only stream give the
 * attainable bandwidth.  --shape OUTxIN and --sparsity S restrict the
 * matrix cases to one shape / one unstructured sparsity (plus 2:4);
 * --prefill-batch N replaces the prefill batch of 128; --decode-only skips
 * the prefill batch; --format F times only the sparse format F (2:4: only
 * the 2:4 pattern); --flush read makes the cache flush read-only (the
 * default write flush leaves dirty lines whose write-back a timed call may
 * pay; in a decode the previous layer's weights leave clean lines).  OpenBLAS and OpenMP use the same thread count
 * (OMP_NUM_THREADS).  The whole-model decode is `losa bench decode`.
 * Rank 0 only; human text on stderr, one JSON object on stdout (--json).
 */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "model.h"
#include "sparse.h"

typedef struct {
    int batch;
    const float *W, *X; /* W (out, in), X (batch, in) */
    float *Y;           /* (batch, out) */
    int out, in;
    const sparse_matrix *s;
} bench_op;

static void op_dense(const bench_op *op)
{
    if (op->batch == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, op->out, op->in, 1.0f, op->W, op->in, op->X, 1,
                    0.0f, op->Y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, op->batch, op->out, op->in, 1.0f,
                    op->X, op->in, op->W, op->in, 0.0f, op->Y, op->out);
}

static void op_sparse(const bench_op *op)
{
    if (op->batch == 1) sparse_matvec(op->Y, op->s, op->X);
    else sparse_matmul(op->Y, op->s, op->X, op->batch);
}

static double time_best(void (*fn)(const bench_op *), const bench_op *op, int reps)
{
    bench_settle();
    fn(op); /* warm-up: page faults, thread start, dispatch */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        bench_cache_flush();
        double t0 = core_time();
        fn(op);
        double t = core_time() - t0;
        if (t < best) best = t;
    }
    return best;
}

/* Paired timing of dense vs sparse: `rounds` rounds of (best of k dense
 * calls, best of k sparse calls).  Returns the best times over all rounds
 * and the median over rounds of the round's ratio dense / sparse: both
 * paths of a round see the same machine load, which on a shared VM drifts
 * by 20-40% over seconds, so the paired median is the stable speed-up. */
static void time_pair(const bench_op *op, int k, int rounds, double *dense_s, double *sparse_s,
                      double *ratio)
{
    double *r = core_calloc((size_t)rounds, sizeof(double));
    *dense_s = *sparse_s = 1e30;
    for (int q = 0; q < rounds; q++) {
        double td = time_best(op_dense, op, k), ts = time_best(op_sparse, op, k);
        if (td < *dense_s) *dense_s = td;
        if (ts < *sparse_s) *sparse_s = ts;
        r[q] = td / ts;
    }
    *ratio = bench_median(r, rounds);
    core_free(r);
}

typedef struct {
    int out, in, batch;
    double sparsity, density;
    const char *pattern, *format;
    double dense_s, sparse_s, gbs, dense_gbs;
    double speedup; /* median over rounds of the paired ratio */
    double ceiling; /* dense fp32 bytes / bytes of the sparse format */
} bench_case;

/* The command line of bench sparse. */
typedef struct {
    int json, quick, reps, rounds, decode_only, only_out, only_in, prefill;
    double only_sp;
    int only_fmt; /* -1: every format; else the one sparse_format timed (--format) */
    int flush_read; /* --flush read: the cache flush only reads */
} sparse_args;

static losa_status sparse_args_parse(sparse_args *a, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->only_sp = -1;
    a->only_fmt = -1;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        const char *v;
        if (!strcmp(argv[i], "--json")) a->json = 1;
        else if (!strcmp(argv[i], "--quick")) a->quick = 1;
        else if (!strcmp(argv[i], "--decode-only")) a->decode_only = 1;
        else if ((v = cli_opt(argc, argv, &i, "--reps"))) s = cli_int("--reps", v, 1, 1000000, &a->reps);
        else if ((v = cli_opt(argc, argv, &i, "--rounds"))) s = cli_int("--rounds", v, 1, 1000000, &a->rounds);
        else if ((v = cli_opt(argc, argv, &i, "--prefill-batch")))
            s = cli_int("--prefill-batch", v, 2, 4096, &a->prefill);
        else if ((v = cli_opt(argc, argv, &i, "--sparsity")))
            s = cli_fraction("--sparsity", v, &a->only_sp);
        else if ((v = cli_opt(argc, argv, &i, "--format"))) {
            sparse_format f;
            if (sparse_format_from_string(v, &f) == LOSA_OK) a->only_fmt = (int)f;
            else s = core_err(LOSA_ERR_ARG, "--format: '%s' (expected bitmap, bitmap-bf16, csr "
                              "or 2:4)", v);
        } else if ((v = cli_opt(argc, argv, &i, "--flush"))) {
            if (!strcmp(v, "read") || !strcmp(v, "write")) a->flush_read = !strcmp(v, "read");
            else s = core_err(LOSA_ERR_ARG, "--flush: '%s' (expected read or write)", v);
        } else if ((v = cli_opt(argc, argv, &i, "--shape")))
            s = cli_int_pair("--shape", v, 'x', 1, 1000000, &a->only_out, &a->only_in);
        else
            s = core_err(LOSA_ERR_ARG, "unknown option '%s' (losa bench sparse --help lists them)",
                         argv[i]);
    }
    return s;
}

/* The matrix cases' plan: shapes x sparsities (+ 2:4) x batches (decode,
 * prefill), repetitions and rounds of each. */
typedef struct {
    int nshape, nsp, nbatch;
    int shapes[3][2];
    double sps[4];
    int batches[2], reps[2], rounds[2];
    int only_fmt; /* -1, or the one format timed */
} sparse_plan;

static void sparse_plan_make(sparse_plan *p, const sparse_args *a)
{
    static const int full_shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    static const int quick_shapes[][2] = {{512, 1024}, {1024, 512}};
    static const double full_sp[] = {0.5, 0.6, 0.7, 0.8};
    p->nshape = a->quick ? 2 : 3;
    p->nsp = a->quick ? 1 : 4;
    memcpy(p->shapes, a->quick ? quick_shapes : full_shapes, sizeof(int[2]) * p->nshape);
    if (a->quick) p->sps[0] = 0.7;
    else memcpy(p->sps, full_sp, sizeof full_sp);
    if (a->only_out) { /* one shape (and sparsity): for studying one case */
        p->shapes[0][0] = a->only_out;
        p->shapes[0][1] = a->only_in;
        p->nshape = 1;
    }
    if (a->only_sp >= 0) {
        p->sps[0] = a->only_sp;
        p->nsp = 1;
    }
    p->only_fmt = a->only_fmt;
    p->nbatch = a->decode_only ? 1 : 2;
    p->batches[0] = 1;
    p->batches[1] = a->prefill ? a->prefill : a->quick ? 16 : 128;
    p->reps[0] = a->reps > 0 ? a->reps : a->quick ? 2 : 4;
    p->reps[1] = a->reps > 0 ? a->reps : a->quick ? 1 : 2;
    p->rounds[0] = a->rounds > 0 ? a->rounds : a->quick ? 3 : 7;
    p->rounds[1] = a->rounds > 0 ? a->rounds : a->quick ? 1 : 3;
}

/* Times one sparse matrix (decode batch, and prefill when `prefill`)
 * against its dense original; appends the cases to cs[*nc]. */
static void time_matrix(const sparse_plan *p, const sparse_matrix *s, float *W, float *X, float *Y,
                        double sp, int nm, int prefill, bench_case *cs, int *nc)
{
    int out = s->out, in = s->in;
    for (int b = 0; b < (prefill ? p->nbatch : 1); b++) {
        bench_op op = {p->batches[b], W, X, Y, out, in, s};
        bench_case *c = &cs[(*nc)++];
        c->out = out;
        c->in = in;
        c->batch = p->batches[b];
        c->sparsity = sp;
        c->density = (double)s->nnz / ((double)out * in);
        c->pattern = nm ? "2:4" : "unstructured";
        c->format = sparse_format_name(s->fmt);
        time_pair(&op, p->reps[b], p->rounds[b], &c->dense_s, &c->sparse_s, &c->speedup);
        c->gbs = sparse_matrix_bytes(s) / c->sparse_s / 1e9;
        c->dense_gbs = 4.0 * out * in / c->dense_s / 1e9;
        c->ceiling = 4.0 * out * in / (double)sparse_matrix_bytes(s);
        char sh[32];
        snprintf(sh, sizeof sh, "%dx%d", out, in);
        fprintf(stderr, "%-12s %-13s %-12s %-6d %5.3f %10.3f %10.3f %8.2f %8.2f %8.2f %6.2f "
                        "%9.1f %9.1f\n", sh, c->pattern, c->format, c->batch, c->density,
                1e3 * c->dense_s, 1e3 * c->sparse_s, c->speedup, c->dense_s / c->sparse_s,
                c->ceiling, c->speedup / c->ceiling, c->dense_gbs, c->gbs);
    }
}

/* The formats timed for a pattern: {format, with the prefill batch}.
 * BF16 (lossy) only for decode, at 70% and 2:4; the 2:4 format for 2:4. */
typedef struct { sparse_format fmt; int prefill; } fmt_case;

static int pattern_formats(double sp, int nm, fmt_case f[4])
{
    int n = 0;
    f[n++] = (fmt_case){SPARSE_FORMAT_BITMAP, 1};
    if (nm || (sp > 0.69 && sp < 0.71)) f[n++] = (fmt_case){SPARSE_FORMAT_BITMAP_BF16, 0};
    if (nm) f[n++] = (fmt_case){SPARSE_FORMAT_NM24, 1};
    return n;
}

/* Every matrix case of the plan into cs; returns non-zero on error. */
static int matrix_cases(const sparse_plan *p, bench_case *cs, int *nc)
{
    core_rng r;
    core_rng_seed(&r, 7);
    for (int k = 0; k < p->nshape; k++) {
        int out = p->shapes[k][0], in = p->shapes[k][1], maxb = p->batches[1];
        int64_t n = (int64_t)out * in;
        float *W0 = core_calloc(n, sizeof(float)), *W = core_calloc(n, sizeof(float));
        float *X = core_calloc((size_t)maxb * in, sizeof(float));
        float *Y = core_calloc((size_t)maxb * out, sizeof(float));
        for (int64_t i = 0; i < n; i++) W0[i] = core_rng_normal(&r);
        for (int64_t i = 0; i < (int64_t)maxb * in; i++) X[i] = core_rng_normal(&r);
        int err = 0;
        for (int q = 0; q <= p->nsp && !err; q++) {
            int nm = q == p->nsp;
            if (!nm && p->only_fmt == SPARSE_FORMAT_NM24) continue; /* 2:4 needs the 2:4 pattern */
            double sp = nm ? 0.5 : p->sps[q];
            memcpy(W, W0, sizeof(float) * n);
            bench_prune_matrix(W, n, sp, nm, &r);
            fmt_case fc[4];
            int nf = pattern_formats(sp, nm, fc);
            for (int f = 0; f < nf && !err; f++) {
                if (p->only_fmt >= 0 && (int)fc[f].fmt != p->only_fmt) continue;
                sparse_matrix s;
                losa_status st = sparse_matrix_from_dense(&s, W, out, in, fc[f].fmt);
                if (st == LOSA_OK) st = sparse_matrix_panel(&s, 0); /* as model_sparse_build */
                if (st != LOSA_OK) {
                    fprintf(stderr, "losa bench sparse: %s\n", core_errmsg());
                    err = 1;
                    break;
                }
                time_matrix(p, &s, W, X, Y, sp, nm, fc[f].prefill, cs, nc);
                sparse_matrix_free(&s);
            }
        }
        core_free(W0);
        core_free(W);
        core_free(X);
        core_free(Y);
        if (err) return 1;
    }
    return 0;
}

static void emit_json(dist_ctx *d, int nthr, const bench_case *cs, int nc, double triad,
                      double readbw, int flush_read)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "threads", nthr);
    cJSON_AddStringToObject(o, "flush", flush_read ? "read" : "write");
    cJSON_AddStringToObject(o, "isa", sparse_isa_name(sparse_get_isa()));
    cJSON *ca = cJSON_AddArrayToObject(o, "cases");
    for (int i = 0; i < nc; i++) {
        const bench_case *c = &cs[i];
        cJSON *e = cJSON_CreateObject();
        int sh[2] = {c->out, c->in};
        cJSON_AddItemToObject(e, "shape", cJSON_CreateIntArray(sh, 2));
        cJSON_AddNumberToObject(e, "sparsity", c->sparsity);
        cJSON_AddNumberToObject(e, "density", c->density);
        cJSON_AddStringToObject(e, "pattern", c->pattern);
        cJSON_AddStringToObject(e, "format", c->format);
        cJSON_AddNumberToObject(e, "batch", c->batch);
        cJSON_AddNumberToObject(e, "dense_s", c->dense_s);
        cJSON_AddNumberToObject(e, "sparse_s", c->sparse_s);
        cJSON_AddNumberToObject(e, "speedup", c->speedup);
        cJSON_AddNumberToObject(e, "speedup_of_best", c->dense_s / c->sparse_s);
        cJSON_AddNumberToObject(e, "ceiling", c->ceiling);
        cJSON_AddNumberToObject(e, "fraction_of_ceiling", c->speedup / c->ceiling);
        cJSON_AddNumberToObject(e, "gbytes_per_s", c->gbs);
        cJSON_AddNumberToObject(e, "dense_gbytes_per_s", c->dense_gbs);
        cJSON_AddItemToArray(ca, e);
    }
    cJSON_AddNumberToObject(o, "triad_gbytes_per_s", triad);
    cJSON_AddNumberToObject(o, "read_gbytes_per_s", readbw);
    cli_json_emit(d, o);
}

int bench_sparse(dist_ctx *d, int argc, char **argv)
{
    sparse_args a;
    if (cli_fail(d, "bench sparse", sparse_args_parse(&a, argc, argv))) return 1;
    if (dist_rank(d) != 0) return 0;
    int nthr = 1;
#ifdef _OPENMP
    nthr = omp_get_max_threads();
#endif
    openblas_set_num_threads(nthr);
    sparse_plan p;
    sparse_plan_make(&p, &a);
    bench_flush_init();
    bench_flush_read_only(a.flush_read);
    fprintf(stderr, "bench sparse: %d threads (OpenMP and OpenBLAS), ISA %s; decode/prefill: "
                    "%d/%d rounds of best of %d/%d dense then sparse calls, cache flushed (%s) "
                    "before every call; speedup = median over rounds of the round's ratio, "
                    "of_best = best dense / best sparse, ceil = dense bytes / sparse bytes, "
                    "frac = speedup / ceil\n",
            nthr, sparse_isa_name(sparse_get_isa()), p.rounds[0], p.rounds[1], p.reps[0],
            p.reps[1], a.flush_read ? "read" : "write");
    double triad = bench_triad_gbs(a.quick ? 2 : 5);
    double readbw = bench_read_gbs(a.quick ? 2 : 5);
    fprintf(stderr, "triad: %.1f GB/s   read-only (sum): %.1f GB/s\n", triad, readbw);
    fprintf(stderr, "%-12s %-13s %-12s %-6s %5s %10s %10s %8s %8s %8s %6s %9s %9s\n", "shape",
            "pattern", "format", "batch", "dens", "dense_ms", "sparse_ms", "speedup", "of_best",
            "ceil", "frac", "dense_GB/s", "sparse_GB/s");
    /* per shape and pattern: at most 4 formats x 2 batches */
    bench_case *cs = core_calloc((size_t)p.nshape * (p.nsp + 1) * 8, sizeof *cs);
    int nc = 0;
    int err = matrix_cases(&p, cs, &nc);
    bench_flush_free();
    if (!err && a.json) emit_json(d, nthr, cs, nc, triad, readbw, a.flush_read);
    core_free(cs);
    return err;
}
