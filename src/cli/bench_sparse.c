/* losa bench sparse [--quick] [--json] [--reps K] [--rounds R]: dense
 * OpenBLAS vs sparse kernels on LLaMA-2-7B linear-layer shapes.
 *
 * For each shape (out, in) x pattern (unstructured magnitude pruning of
 * N(0,1) weights at 50-80%, 2:4) x batch (1 decode, 128 prefill): R rounds
 * (7 decode, 3 prefill) of [best-of-K wall time of cblas_sgemv /
 * cblas_sgemm, then best-of-K of sparse_matvec / sparse_matmul on the
 * panelled bitmap matrix], each series after a pause that lets the other
 * library's spinning workers sleep and one warm-up call, the last-level
 * cache flushed before every timed call (decode streams GBs of weights per
 * token, so a matrix that fits in L3 must not be timed warm).  speedup =
 * median over the rounds of the round's dense / sparse ratio (paired: the
 * load of this shared VM drifts by 20-40% over seconds and both paths of a
 * round see the same); speedup_of_best = best dense / best sparse time.
 * gbytes_per_s = bytes of the weight format read per call / best time.  A
 * STREAM-like triad (a = b + s c, 3 x 128 MB) gives the attainable
 * bandwidth.  --shape OUTxIN and --sparsity S restrict the matrix cases to
 * one shape / one unstructured sparsity (plus 2:4); --prefill-batch N
 * replaces the prefill batch of 128; --matrices-only skips
 * the model decode.
 * OpenBLAS and OpenMP use the same thread count (OMP_NUM_THREADS).
 * Then end-to-end decode: a model with LLaMA-2-7B layer shapes (D 4096,
 * F 11008, H = Hkv = 32, V 32000) but 2 layers, random N(0, 0.02) weights,
 * every map magnitude-pruned to 50% then 70%; tokens/s of the KV-cache
 * decode step (model_stage_decode_step, after a 16-token prefill), dense
 * (sgemv) vs sparse (every map on sparse_matvec), same run, 5 alternating
 * rounds: tokens/s from the best round of each, speedup the median of the
 * rounds' ratios.  The head
 * (V x D, not pruned) is ~25% of the dense bytes of this 2-layer model (2%
 * of the 32-layer one), so the layers-only speed-up (head sgemv time
 * subtracted) is reported too.  --decode-only skips the matrix cases.
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

/* Cache flush: touch a buffer larger than the last-level cache. */
static float *flush_buf;
static size_t flush_n;
static volatile float flush_sink;

static void cache_flush(void)
{
    float acc = 0; /* one thread: no OpenMP spinning next to OpenBLAS threads */
    for (size_t i = 0; i < flush_n; i += 16) {
        flush_buf[i] += 1.0f;
        acc += flush_buf[i];
    }
    flush_sink = acc;
}

/* OpenBLAS (pthreads) and OpenMP worker threads spin for a while after a
 * call; with one core per thread they would steal each other's cores.  Let
 * them go to sleep before the other library runs. */
static void settle(void)
{
    /* OpenBLAS spins 2^28 cycles (~0.1 s) before sleeping */
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static double time_best(void (*fn)(const bench_op *), const bench_op *op, int reps)
{
    settle();
    fn(op); /* warm-up: page faults, thread start, dispatch */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        cache_flush();
        double t0 = core_time();
        fn(op);
        double t = core_time() - t0;
        if (t < best) best = t;
    }
    return best;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Paired timing of dense vs sparse: `rounds` rounds of (best of k dense
 * calls, best of k sparse calls).  Returns the best times over all rounds
 * and the median over rounds of the round's ratio dense / sparse: both
 * paths of a round see the same machine load, which on a shared VM drifts
 * by 20-40% over seconds, so the paired median is the stable speed-up. */
static void time_pair(const bench_op *op, int k, int rounds, double *dense_s, double *sparse_s,
                      double *ratio)
{
    double r[16];
    if (rounds > 16) rounds = 16;
    *dense_s = *sparse_s = 1e30;
    for (int q = 0; q < rounds; q++) {
        double td = time_best(op_dense, op, k), ts = time_best(op_sparse, op, k);
        if (td < *dense_s) *dense_s = td;
        if (ts < *sparse_s) *sparse_s = ts;
        r[q] = td / ts;
    }
    qsort(r, rounds, sizeof r[0], cmp_double);
    *ratio = rounds % 2 ? r[rounds / 2] : 0.5 * (r[rounds / 2 - 1] + r[rounds / 2]);
}

static double triad_gbs(int reps)
{
    size_t n = (size_t)1 << 25; /* 128 MB per array */
    float *a = core_calloc(n, sizeof(float)), *b = core_calloc(n, sizeof(float));
    float *c = core_calloc(n, sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        a[i] = 0.0f;
        b[i] = 1.0f;
        c[i] = 2.0f;
    }
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = core_time();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0f * c[i];
        double t = core_time() - t0;
        if (r > 0 && t < best) best = t;
    }
    flush_sink = a[n / 2];
    core_free(a);
    core_free(b);
    core_free(c);
    return 3.0 * n * sizeof(float) / best / 1e9;
}

/* Read-only streaming bandwidth (xor of 256 MB, vectorisable), the bound
 * of a matvec. */
static double read_gbs(int reps)
{
    size_t n = (size_t)1 << 26;
    uint32_t *a = core_calloc(n, sizeof(uint32_t));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (uint32_t)i;
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = core_time();
        uint32_t acc = 0;
#pragma omp parallel for reduction(^ : acc) schedule(static)
        for (size_t i = 0; i < n; i++) acc ^= a[i];
        double t = core_time() - t0;
        flush_sink = (float)acc;
        if (r > 0 && t < best) best = t;
    }
    core_free(a);
    return n * sizeof(uint32_t) / best / 1e9;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Magnitude pruning in place by a sampled |w| quantile (nested: pruning an
 * already pruned matrix at a higher sparsity gives the same result as
 * pruning the original). */
static void prune_inplace(float *W, int64_t n, double sp, core_rng *r)
{
    int ns = 1 << 20;
    float *smp = malloc(sizeof(float) * ns);
    for (int i = 0; i < ns; i++) smp[i] = fabsf(W[core_rng_u64(r) % (uint64_t)n]);
    qsort(smp, ns, sizeof(float), cmp_float);
    float thr = smp[(int)(sp * (ns - 1))];
    free(smp);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        if (fabsf(W[i]) <= thr) W[i] = 0.0f;
}

/* Magnitude pruning of W (out, in): zero |w| below the sp-quantile
 * (estimated from a sample), or keep the 2 largest of every 4 (nm). */
static void prune(float *W, const float *W0, int out, int in, double sp, int nm, core_rng *r)
{
    int64_t n = (int64_t)out * in;
    memcpy(W, W0, sizeof(float) * n);
    if (nm) {
        for (int64_t g = 0; g < n; g += 4) {
            for (int k = 0; k < 2; k++) { /* drop the 2 smallest */
                int jmin = -1;
                for (int j = 0; j < 4; j++)
                    if (W[g + j] != 0.0f && (jmin < 0 || fabsf(W[g + j]) < fabsf(W[g + jmin])))
                        jmin = j;
                if (jmin >= 0) W[g + jmin] = 0.0f;
            }
        }
        return;
    }
    prune_inplace(W, n, sp, r); /* W == W0 here: same sample, same threshold */
}


typedef struct {
    double sparsity, density;
    double dense_tps, sparse_tps, head_s;
    double speedup; /* median over rounds of the paired ratio */
    double sparse_bytes, dense_bytes; /* of the layers' maps */
    int auto_maps;                    /* maps `--sparse auto` would convert */
} decode_case;

/* Seconds per token of `steps` decode steps after a prefill of P tokens. */
static double decode_time(model_stage *s, model_acts *a, model_kv_cache *kv, int P, int steps)
{
    int tok[64];
    for (int i = 0; i < P; i++) tok[i] = (7 * i + 3) % s->cfg.vocab_size;
    settle();
    model_stage_prefill(a, kv, s, tok, P);
    double t0 = core_time();
    for (int k = 0; k < steps; k++) model_stage_decode_step(a, kv, s, tok[k % P], P + k);
    return (core_time() - t0) / steps;
}

static int bench_decode(int quick, int steps, decode_case *out, int *nout)
{
    model_config c = {.dim = 4096, .hidden_dim = 11008, .n_layers = 2, .n_heads = 32,
                      .n_kv_heads = 32, .vocab_size = 32000, .max_seq_len = 256,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 0,
                      .bos_id = 1, .eos_id = 2};
    if (quick) {
        c.dim = 512;
        c.hidden_dim = 1376;
        c.n_heads = c.n_kv_heads = 8;
        c.vocab_size = 4000;
    }
    int P = 16;
    model_stage s;
    model_acts a;
    model_kv_cache kv;
    if (model_stage_build(&s, &c, 0, 1) != LOSA_OK || model_acts_build(&a, &s, 1, P, 0) != LOSA_OK ||
        model_kv_cache_build(&kv, &s, P + steps) != LOSA_OK) {
        fprintf(stderr, "losa bench sparse: decode model: %s\n", core_errmsg());
        return 1;
    }
    double t0 = core_time();
    /* random weights: threads fill disjoint chunks from their own streams */
#pragma omp parallel
    {
        core_rng r;
        int64_t n = (int64_t)s.n_params, ch = 1 << 20;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < (n + ch - 1) / ch; b++) {
            core_rng_seed(&r, 1000 + (uint64_t)b);
            int64_t e = (b + 1) * ch < n ? (b + 1) * ch : n;
            for (int64_t i = b * ch; i < e; i++) s.params[i] = 0.02f * core_rng_normal(&r);
        }
    }
    for (int l = 0; l < c.n_layers; l++) {
        for (int i = 0; i < c.dim; i++) s.layers[l].attn_norm[i] = s.layers[l].ffn_norm[i] = 1.0f;
    }
    for (int i = 0; i < c.dim; i++) s.final_norm[i] = 1.0f;
    fprintf(stderr, "\ndecode: %d layers D %d F %d H %d V %d, %.2f GB fp32 (%.1fs to fill); "
                    "%d steps after a %d-token prefill\n", c.n_layers, c.dim, c.hidden_dim,
            c.n_heads, c.vocab_size, 4e-9 * s.n_params, core_time() - t0, steps, P);
    /* the head alone (dense sgemv, identical in both paths) */
    float *hx = core_calloc((size_t)c.dim, sizeof(float)), *hy = core_calloc((size_t)c.vocab_size, sizeof(float));
    double head = 1e30;
    for (int r = 0; r < 5; r++) {
        cache_flush();
        double h0 = core_time();
        cblas_sgemv(CblasRowMajor, CblasNoTrans, c.vocab_size, c.dim, 1.0f, s.head, c.dim, hx, 1,
                    0.0f, hy, 1);
        double t = core_time() - h0;
        if (t < head) head = t;
    }
    core_free(hx);
    core_free(hy);
    static const double sps[] = {0.5, 0.7};
    core_rng r;
    core_rng_seed(&r, 99);
    int nc = 0;
    fprintf(stderr, "%-8s %6s %12s %12s %8s %14s\n", "sparsity", "dens", "dense_tok/s",
            "sparse_tok/s", "speedup", "layers_speedup");
    for (int k = 0; k < 2; k++) {
        int64_t nz = 0, tot = 0;
        for (int l = 0; l < c.n_layers; l++)
            for (int m = 0; m < MODEL_N_MAPS; m++) {
                int o, i;
                model_map_shape(&c, m, &o, &i);
                prune_inplace(s.layers[l].w[m], (int64_t)o * i, sps[k], &r);
            }
        model_sparse sp, spa;
        if (model_sparse_build(&sp, &s, MODEL_SPARSE_ON, 1, SPARSE_FORMAT_BITMAP) != LOSA_OK ||
            model_sparse_build(&spa, &s, MODEL_SPARSE_AUTO, 1, SPARSE_FORMAT_BITMAP) != LOSA_OK) {
            fprintf(stderr, "losa bench sparse: %s\n", core_errmsg());
            return 1;
        }
        for (int q = 0; q < c.n_layers * MODEL_N_MAPS; q++) {
            nz += sp.mat[q].nnz;
            tot += (int64_t)sp.mat[q].out * sp.mat[q].in;
        }
        decode_case *dc = &out[nc++];
        dc->sparsity = sps[k];
        dc->density = (double)nz / (double)tot;
        dc->auto_maps = spa.n_converted;
        model_sparse_free(&spa);
        dc->sparse_bytes = (double)sp.bytes;
        dc->dense_bytes = (double)sp.dense_bytes;
        dc->head_s = head;
        /* dense, sparse, dense, sparse, ...: best of three rounds each (the
         * interleaving exposes both paths to the same machine load) */
        double td = 1e30, ts = 1e30, rr[5];
        for (int rep = 0; rep < 5; rep++) {
            s.sparse = NULL;
            double t1 = decode_time(&s, &a, &kv, P, steps);
            if (t1 < td) td = t1;
            s.sparse = &sp;
            double t2 = decode_time(&s, &a, &kv, P, steps);
            if (t2 < ts) ts = t2;
            rr[rep] = t1 / t2;
        }
        qsort(rr, 5, sizeof rr[0], cmp_double);
        dc->speedup = rr[2];
        s.sparse = NULL;
        model_sparse_free(&sp);
        dc->dense_tps = 1.0 / td;
        dc->sparse_tps = 1.0 / ts;
        fprintf(stderr, "%-8.2f %6.3f %12.2f %12.2f %8.2f %14.2f   (head %.1f ms/token)\n",
                dc->sparsity, dc->density, dc->dense_tps, dc->sparse_tps, dc->speedup,
                (td - head) / (ts - head), 1e3 * head);
    }
    *nout = nc;
    model_acts_free(&a);
    model_kv_cache_free(&kv);
    model_stage_free(&s);
    return 0;
}

typedef struct {
    int out, in, batch;
    double sparsity, density;
    const char *pattern, *format;
    double dense_s, sparse_s, gbs, dense_gbs;
    double speedup; /* median over rounds of the paired ratio */
} bench_case;

/* The command line of bench sparse. */
typedef struct {
    int json, quick, reps, rounds, decode_only, steps, only_out, only_in, matrices_only, prefill;
    double only_sp;
} sparse_args;

static losa_status sparse_args_parse(sparse_args *a, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->only_sp = -1;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        const char *v;
        if (!strcmp(argv[i], "--json")) a->json = 1;
        else if (!strcmp(argv[i], "--quick")) a->quick = 1;
        else if (!strcmp(argv[i], "--decode-only")) a->decode_only = 1;
        else if (!strcmp(argv[i], "--matrices-only")) a->matrices_only = 1;
        else if ((v = cli_opt(argc, argv, &i, "--steps"))) s = cli_int("--steps", v, 1, 1000000, &a->steps);
        else if ((v = cli_opt(argc, argv, &i, "--reps"))) s = cli_int("--reps", v, 1, 1000000, &a->reps);
        else if ((v = cli_opt(argc, argv, &i, "--rounds"))) s = cli_int("--rounds", v, 1, 1000000, &a->rounds);
        else if ((v = cli_opt(argc, argv, &i, "--prefill-batch")))
            s = cli_int("--prefill-batch", v, 2, 4096, &a->prefill);
        else if ((v = cli_opt(argc, argv, &i, "--sparsity")))
            s = cli_fraction("--sparsity", v, &a->only_sp);
        else if ((v = cli_opt(argc, argv, &i, "--shape")))
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
    int nshape, nsp;
    int shapes[3][2];
    double sps[4];
    int batches[2], reps[2], rounds[2];
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
    p->batches[0] = 1;
    p->batches[1] = a->prefill ? a->prefill : a->quick ? 16 : 128;
    p->reps[0] = a->reps > 0 ? a->reps : a->quick ? 2 : 4;
    p->reps[1] = a->reps > 0 ? a->reps : a->quick ? 1 : 2;
    p->rounds[0] = a->rounds > 0 ? a->rounds : a->quick ? 3 : 7;
    p->rounds[1] = a->rounds > 0 ? a->rounds : a->quick ? 1 : 3;
}

/* Times one sparse matrix (decode batch, and prefill unless bf16) against
 * its dense original; appends the cases to cs[*nc]. */
static void time_matrix(const sparse_plan *p, const sparse_matrix *s, float *W, float *X, float *Y,
                        int out, int in, double sp, int nm, int bf16, bench_case *cs, int *nc)
{
    for (int b = 0; b < 2; b++) {
        if (bf16 && b) continue;
        bench_op op = {p->batches[b], W, X, Y, out, in, s};
        bench_case *c = &cs[(*nc)++];
        c->out = out;
        c->in = in;
        c->batch = p->batches[b];
        c->sparsity = sp;
        c->density = (double)s->nnz / ((double)out * in);
        c->pattern = nm ? "2:4" : "unstructured";
        c->format = bf16 ? "bitmap-bf16" : "bitmap";
        time_pair(&op, p->reps[b], p->rounds[b], &c->dense_s, &c->sparse_s, &c->speedup);
        c->gbs = sparse_matrix_bytes(s) / c->sparse_s / 1e9;
        c->dense_gbs = 4.0 * out * in / c->dense_s / 1e9;
        char sh[32];
        snprintf(sh, sizeof sh, "%dx%d", out, in);
        fprintf(stderr, "%-12s %-13s %-5s %-6d %5.3f %10.3f %10.3f %8.2f %8.2f %9.1f "
                        "%9.1f\n", sh, c->pattern, bf16 ? "bf16" : "f32", c->batch,
                c->density, 1e3 * c->dense_s, 1e3 * c->sparse_s, c->speedup,
                c->dense_s / c->sparse_s, c->dense_gbs, c->gbs);
    }
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
            double sp = nm ? 0.5 : p->sps[q];
            prune(W, W0, out, in, sp, nm, &r);
            for (int f = 0; f < 2 && !err; f++) {
                /* BF16 (lossy) only for decode at 70% and 2:4 */
                if (f && !(nm || (sp > 0.69 && sp < 0.71))) continue;
                sparse_matrix s;
                losa_status st = sparse_matrix_from_dense(
                    &s, W, out, in, f ? SPARSE_FORMAT_BITMAP_BF16 : SPARSE_FORMAT_BITMAP);
                if (st == LOSA_OK) st = sparse_matrix_panel(&s, 0); /* as model_sparse_build */
                if (st != LOSA_OK) {
                    fprintf(stderr, "losa bench sparse: %s\n", core_errmsg());
                    err = 1;
                    break;
                }
                time_matrix(p, &s, W, X, Y, out, in, sp, nm, f, cs, nc);
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

static void emit_json(dist_ctx *d, int nthr, const bench_case *cs, int nc, const decode_case *dcs,
                      int ndc, double triad, double readbw)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "threads", nthr);
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
        cJSON_AddNumberToObject(e, "gbytes_per_s", c->gbs);
        cJSON_AddNumberToObject(e, "dense_gbytes_per_s", c->dense_gbs);
        cJSON_AddItemToArray(ca, e);
    }
    cJSON *da = cJSON_AddArrayToObject(o, "decode");
    for (int i = 0; i < ndc; i++) {
        const decode_case *c = &dcs[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "sparsity", c->sparsity);
        cJSON_AddNumberToObject(e, "density", c->density);
        cJSON_AddNumberToObject(e, "layers", 2);
        cJSON_AddNumberToObject(e, "dense_tokens_per_s", c->dense_tps);
        cJSON_AddNumberToObject(e, "sparse_tokens_per_s", c->sparse_tps);
        cJSON_AddNumberToObject(e, "speedup", c->speedup);
        cJSON_AddNumberToObject(e, "head_s", c->head_s);
        cJSON_AddNumberToObject(e, "layers_speedup",
                                (1 / c->dense_tps - c->head_s) / (1 / c->sparse_tps - c->head_s));
        cJSON_AddNumberToObject(e, "sparse_gbytes", c->sparse_bytes / 1e9);
        cJSON_AddNumberToObject(e, "dense_gbytes", c->dense_bytes / 1e9);
        cJSON_AddNumberToObject(e, "auto_sparse_maps", c->auto_maps);
        cJSON_AddItemToArray(da, e);
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

    flush_n = (size_t)1 << 25; /* 128 MB > L3 */
    flush_buf = core_calloc(flush_n, sizeof(float));
    fprintf(stderr, "bench sparse: %d threads (OpenMP and OpenBLAS), ISA %s; decode/prefill: "
                    "%d/%d rounds of best of %d/%d dense then sparse calls, cache flushed "
                    "before every call; speedup = median over rounds of the round's ratio, "
                    "of_best = best dense / best sparse\n",
            nthr, sparse_isa_name(sparse_get_isa()), p.rounds[0], p.rounds[1], p.reps[0],
            p.reps[1]);
    double triad = triad_gbs(a.quick ? 2 : 5);
    double readbw = read_gbs(a.quick ? 2 : 5);
    fprintf(stderr, "triad: %.1f GB/s   read-only (sum): %.1f GB/s\n", triad, readbw);
    fprintf(stderr, "%-12s %-13s %-5s %-6s %5s %10s %10s %8s %8s %9s %9s\n", "shape", "pattern",
            "fmt", "batch", "dens", "dense_ms", "sparse_ms", "speedup", "of_best", "dense_GB/s",
            "sparse_GB/s");

    bench_case *cs = core_calloc((size_t)p.nshape * (p.nsp + 1) * 2 + p.nshape * 2, sizeof *cs);
    int nc = 0, ndc = 0, err = 0;
    decode_case dcs[2];
    if (!a.decode_only) err = matrix_cases(&p, cs, &nc);
    if (!err && !a.matrices_only)
        err = bench_decode(a.quick, a.steps > 0 ? a.steps : a.quick ? 16 : 32, dcs, &ndc);
    core_free(flush_buf);
    if (!err && a.json) emit_json(d, nthr, cs, nc, dcs, ndc, triad, readbw);
    core_free(cs);
    return err;
}
