/* losa bench decode [--config CONFIG.json] [--layers A,B] [--sparsity S]
 *                   [--prompt P] [--steps N] [--rounds R] [--dtype fp32|bf16]
 *                   [--quick] [--json]
 * End-to-end batch-1 decode time per layer, dense fp32 against the sparse
 * formats, in one run.
 *
 * The model has the layer shapes of CONFIG.json (default
 * input/llama2-7b.json: D 4096, F 11008, H 32, V 32000; --quick: D 512,
 * F 1376, H 8, V 4000) with B layers (default 4) of N(0, 0.02) weights, as
 * `losa synth` writes them.  Each case decodes `steps` tokens after a
 * P-token prompt through model_stage_decode_step (what `losa generate`
 * runs per token: embedding, every layer's norms, maps, RoPE, attention
 * over the KV cache, SwiGLU, the final norm and the head) with the first A
 * and with all B layers; time per layer = (t_B - t_A) / (B - A) of the
 * median step times, so the embedding and the head (dense, the same in
 * every case) cancel.  Cases: dense (OpenBLAS sgemv), every map
 * magnitude-pruned to S (default 0.7) as bitmap and bitmap-bf16, and 2:4;
 * with --dtype bf16 also dense-bf16: the unpruned maps and the head in
 * bf16 on a second stage (what `losa generate --dtype bf16` decodes with,
 * sparse_dense_matvec_bf16), so its token_ms shows the head's share too.
 * R rounds (default 5) run every case and both depths in turn; ratio =
 * median over rounds of the round's sparse / dense time per layer (paired:
 * both see the same machine load).  ceiling = dense fp32 bytes / bytes of
 * the format per layer, fraction_of_ceiling = (1 / ratio) / ceiling.
 * maps_ms = the 7 matrix-vector products of a layer alone (same kernels,
 * same threads, every layer in turn, cold), so layer_ms - maps_ms is what
 * the rest of the step costs.  Rank 0 only; human text on stderr, one JSON
 * object on stdout (--json).
 */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "io.h"

#define DEC_MAX_ROUNDS 64
#define DEC_MAX_STEPS 4096

typedef struct {
    const char *config;
    int la, lb, prompt, steps, rounds, quick, json;
    double sparsity;
    model_dtype dtype;
} dec_args;

static losa_status dec_args_parse(dec_args *a, int argc, char **argv)
{
    *a = (dec_args){.config = "input/llama2-7b.json", .la = 2, .lb = 4, .prompt = 8,
                    .steps = 16, .rounds = 5, .sparsity = 0.7};
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        const char *v;
        if (!strcmp(argv[i], "--json")) a->json = 1;
        else if (!strcmp(argv[i], "--quick")) a->quick = 1;
        else if ((v = cli_opt(argc, argv, &i, "--config"))) a->config = v;
        else if ((v = cli_opt(argc, argv, &i, "--layers")))
            s = cli_int_pair("--layers", v, ',', 1, 1000, &a->la, &a->lb);
        else if ((v = cli_opt(argc, argv, &i, "--sparsity")))
            s = cli_fraction("--sparsity", v, &a->sparsity);
        else if ((v = cli_opt(argc, argv, &i, "--prompt")))
            s = cli_int("--prompt", v, 1, 1024, &a->prompt);
        else if ((v = cli_opt(argc, argv, &i, "--steps")))
            s = cli_int("--steps", v, 1, DEC_MAX_STEPS, &a->steps);
        else if ((v = cli_opt(argc, argv, &i, "--rounds")))
            s = cli_int("--rounds", v, 1, DEC_MAX_ROUNDS, &a->rounds);
        else if ((v = cli_opt(argc, argv, &i, "--dtype")))
            s = model_dtype_from_string(v, "--dtype", &a->dtype);
        else
            s = core_err(LOSA_ERR_ARG, "unknown option '%s' (losa bench decode --help lists them)",
                         argv[i]);
    }
    if (s == LOSA_OK && a->la >= a->lb)
        s = core_err(LOSA_ERR_ARG, "--layers: expected A,B with A < B, got %d,%d", a->la, a->lb);
    return s;
}

/* One case: a format of every map (dense: no sparse copies). */
typedef struct {
    const char *name, *pattern;
    sparse_format fmt;
    int sparse, nm;
    const model_stage *stage;               /* its own weights (dense-bf16), NULL: the shared */
    model_sparse sp;
    double density, layer_bytes;            /* per layer, of the maps */
    double tok[2][DEC_MAX_ROUNDS];          /* median step seconds, depth A and B */
    double layer[DEC_MAX_ROUNDS], ratio[DEC_MAX_ROUNDS], maps[DEC_MAX_ROUNDS];
    double layer_ms, ratio_med, maps_ms, tok_ms[2];
} dec_case;

/* The stage's weights: N(0, 0.02) matrices from fixed seeds (so a refill
 * restores them), norms 1. */
static void dec_fill(model_stage *s)
{
    const model_config *c = &s->cfg;
    int64_t D = c->dim, V = c->vocab_size;
    bench_fill_normal(s->embed, V * D, 0.02f, 1);
    if (s->head != s->embed) bench_fill_normal(s->head, V * D, 0.02f, 2);
    for (int64_t i = 0; i < D; i++) s->final_norm[i] = 1.0f;
    for (int l = 0; l < s->n_layers; l++) {
        for (int64_t i = 0; i < D; i++) s->layers[l].attn_norm[i] = s->layers[l].ffn_norm[i] = 1.0f;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            bench_fill_normal(s->layers[l].w[m], (int64_t)o * i, 0.02f, 16 + 8 * l + m);
        }
    }
}

static void dec_prune(model_stage *s, double sp, int nm)
{
    core_rng r;
    core_rng_seed(&r, 5);
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&s->cfg, (model_map)m, &o, &i);
            bench_prune_matrix(s->layers[l].w[m], (int64_t)o * i, sp, nm, &r);
        }
}

/* The sparse copies of case k from the stage's (pruned) weights. */
static losa_status dec_case_build(dec_case *k, const model_stage *s)
{
    losa_status st = model_sparse_build(&k->sp, s, MODEL_SPARSE_ON, 1, k->fmt);
    if (st != LOSA_OK) return st;
    double nnz = 0, tot = 0;
    for (int q = 0; q < s->n_layers * MODEL_N_MAPS; q++) {
        nnz += (double)k->sp.mat[q].nnz;
        tot += (double)k->sp.mat[q].out * k->sp.mat[q].in;
    }
    k->density = nnz / tot;
    k->layer_bytes = (double)k->sp.bytes / s->n_layers;
    return LOSA_OK;
}

/* Median seconds of one decode step over `steps` steps after a P-token
 * prefill, on the first v->n_layers layers. */
static double dec_time(model_stage *v, model_acts *a, model_kv_cache *kv, int P, int steps)
{
    static double t[DEC_MAX_STEPS];
    int tok[1024];
    for (int i = 0; i < P; i++) tok[i] = (7 * i + 3) % v->cfg.vocab_size;
    bench_settle();
    model_stage_prefill(a, kv, v, tok, P);
    for (int k = 0; k < steps; k++) {
        double t0 = core_time();
        model_stage_decode_step(a, kv, v, tok[k % P], P + k);
        t[k] = core_time() - t0;
    }
    return bench_median(t, steps);
}

/* Seconds per layer of the 7 maps alone, every layer of v in turn, with
 * the kernels of the decode step (sparse copies, or OpenBLAS sgemv). */
static double dec_maps_time(const model_stage *v, const model_sparse *sp, float *x, float *y)
{
    bench_settle();
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        bench_cache_flush();
        double t0 = core_time();
        for (int l = 0; l < v->n_layers; l++)
            for (int m = 0; m < MODEL_N_MAPS; m++) {
                int o, i;
                model_map_shape(&v->cfg, (model_map)m, &o, &i);
                if (sp && model_sparse_linear(y, x, sp, l, (model_map)m, 1)) continue;
                if (v->layers[l].wb[m]) {
                    sparse_dense_matvec_bf16(y, v->layers[l].wb[m], o, i, x);
                    continue;
                }
                cblas_sgemv(CblasRowMajor, CblasNoTrans, o, i, 1.0f, v->layers[l].w[m], i, x, 1,
                            0.0f, y, 1);
            }
        double t = (core_time() - t0) / v->n_layers;
        if (t < best) best = t;
    }
    return best;
}

/* One round: every case at both depths, then the per-layer times. */
static void dec_round(dec_case *ks, int nk, model_stage *s, model_acts *a, model_kv_cache kv[2],
                      const dec_args *ar, int r, float *x, float *y)
{
    int depth[2] = {ar->la, ar->lb};
    for (int k = 0; k < nk; k++) {
        model_stage v = ks[k].stage ? *ks[k].stage : *s; /* a view of the first layers */
        v.sparse = ks[k].sparse ? &ks[k].sp : NULL;
        for (int d = 0; d < 2; d++) {
            v.n_layers = depth[d];
            ks[k].tok[d][r] = dec_time(&v, a, &kv[d], ar->prompt, ar->steps);
        }
        ks[k].maps[r] = dec_maps_time(&v, v.sparse, x, y);
        ks[k].layer[r] = (ks[k].tok[1][r] - ks[k].tok[0][r]) / (ar->lb - ar->la);
        ks[k].ratio[r] = ks[k].layer[r] / ks[0].layer[r];
    }
}

static void dec_summary(dec_case *ks, int nk, int rounds, double dense_bytes)
{
    fprintf(stderr, "%-12s %6s %9s %7s %8s %6s %6s %9s %9s %9s\n", "format", "dens", "layer_ms",
            "ratio", "GB/s", "ceil", "frac", "maps_ms", "tokA_ms", "tokB_ms");
    for (int k = 0; k < nk; k++) {
        dec_case *c = &ks[k];
        c->layer_ms = 1e3 * bench_median(c->layer, rounds);
        c->ratio_med = bench_median(c->ratio, rounds);
        c->maps_ms = 1e3 * bench_median(c->maps, rounds);
        for (int d = 0; d < 2; d++) c->tok_ms[d] = 1e3 * bench_median(c->tok[d], rounds);
        double ceil = dense_bytes / c->layer_bytes;
        fprintf(stderr, "%-12s %6.3f %9.3f %7.3f %8.1f %6.2f %6.2f %9.3f %9.3f %9.3f\n", c->name,
                c->density, c->layer_ms, c->ratio_med, c->layer_bytes / c->layer_ms / 1e6, ceil,
                1.0 / c->ratio_med / ceil, c->maps_ms, c->tok_ms[0], c->tok_ms[1]);
    }
}

static void dec_json(dist_ctx *d, const dec_args *ar, const model_config *c, const dec_case *ks,
                     int nk, double dense_bytes, double readbw)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "config", ar->quick ? "quick" : ar->config);
    int depth[2] = {ar->la, ar->lb};
    cJSON_AddItemToObject(o, "layers", cJSON_CreateIntArray(depth, 2));
    cJSON_AddNumberToObject(o, "dim", c->dim);
    cJSON_AddNumberToObject(o, "hidden_dim", c->hidden_dim);
    cJSON_AddNumberToObject(o, "prompt", ar->prompt);
    cJSON_AddNumberToObject(o, "steps", ar->steps);
    cJSON_AddNumberToObject(o, "rounds", ar->rounds);
    int nthr = 1;
#ifdef _OPENMP
    nthr = omp_get_max_threads();
#endif
    cJSON_AddNumberToObject(o, "threads", nthr);
    cJSON_AddStringToObject(o, "isa", sparse_isa_name(sparse_get_isa()));
    cJSON_AddNumberToObject(o, "read_gbytes_per_s", readbw);
    cJSON_AddNumberToObject(o, "dense_layer_gbytes", dense_bytes / 1e9);
    cJSON *ca = cJSON_AddArrayToObject(o, "cases");
    for (int k = 0; k < nk; k++) {
        const dec_case *q = &ks[k];
        cJSON *e = cJSON_CreateObject();
        double ceil = dense_bytes / q->layer_bytes;
        cJSON_AddStringToObject(e, "format", q->name);
        cJSON_AddStringToObject(e, "pattern", q->pattern);
        cJSON_AddNumberToObject(e, "density", q->density);
        cJSON_AddNumberToObject(e, "layer_ms", q->layer_ms);
        cJSON_AddNumberToObject(e, "ratio_to_dense", q->ratio_med);
        cJSON_AddNumberToObject(e, "layer_gbytes", q->layer_bytes / 1e9);
        cJSON_AddNumberToObject(e, "gbytes_per_s", q->layer_bytes / q->layer_ms / 1e6);
        cJSON_AddNumberToObject(e, "ceiling", ceil);
        cJSON_AddNumberToObject(e, "fraction_of_ceiling", 1.0 / q->ratio_med / ceil);
        cJSON_AddNumberToObject(e, "maps_ms", q->maps_ms);
        cJSON_AddItemToObject(e, "token_ms", cJSON_CreateDoubleArray(q->tok_ms, 2));
        cJSON_AddItemToArray(ca, e);
    }
    cli_json_emit(d, o);
}

static losa_status dec_config(const dec_args *ar, model_config *c)
{
    if (ar->quick) {
        *c = (model_config){.dim = 512, .hidden_dim = 1376, .n_heads = 8, .n_kv_heads = 8,
                            .vocab_size = 4000, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                            .bos_id = 1, .eos_id = 2};
    } else {
        losa_status s = io_hf_config_read(ar->config, c);
        if (s != LOSA_OK) return s;
    }
    c->n_layers = ar->lb;
    c->max_seq_len = ar->prompt + ar->steps;
    return model_config_check(c, ar->quick ? "quick config" : ar->config);
}

/* The stage, its weights and every case's sparse copies: 2:4 first, then
 * the weights refilled and pruned to the unstructured sparsity. */
static losa_status dec_setup(model_stage *s, const model_config *c, dec_case *ks, int nk,
                             double sparsity)
{
    losa_status st = model_stage_build(s, c, 0, 1);
    if (st != LOSA_OK) return st;
    double t0 = core_time();
    for (int pass = 0; pass < 2 && st == LOSA_OK; pass++) {
        int nm = pass == 0;
        dec_fill(s);
        dec_prune(s, sparsity, nm);
        for (int k = 0; k < nk && st == LOSA_OK; k++)
            if (ks[k].sparse && ks[k].nm == nm) st = dec_case_build(&ks[k], s);
    }
    fprintf(stderr, "setup (weights, pruning, sparse copies): %.1f s\n", core_time() - t0);
    return st;
}

int bench_decode(dist_ctx *d, int argc, char **argv)
{
    dec_args ar;
    if (cli_fail(d, "bench decode", dec_args_parse(&ar, argc, argv))) return 1;
    if (dist_rank(d) != 0) return 0;
    model_config c;
    if (cli_fail(d, "bench decode", dec_config(&ar, &c))) return 1;
    int nthr = 1;
#ifdef _OPENMP
    nthr = omp_get_max_threads();
#endif
    openblas_set_num_threads(nthr);
    static model_stage sb; /* dense-bf16: unpruned maps and the head in bf16 */
    static dec_case ks[] = {
        {.name = "dense", .pattern = "dense"},
        {.name = "bitmap", .pattern = "unstructured", .fmt = SPARSE_FORMAT_BITMAP, .sparse = 1},
        {.name = "bitmap-bf16", .pattern = "unstructured", .fmt = SPARSE_FORMAT_BITMAP_BF16,
         .sparse = 1},
        {.name = "2:4", .pattern = "2:4", .fmt = SPARSE_FORMAT_BITMAP, .sparse = 1, .nm = 1},
        {.name = "dense-bf16", .pattern = "dense", .stage = &sb},
    };
    /* the last case only with --dtype bf16 */
    int nk = (int)(sizeof ks / sizeof ks[0]) - (ar.dtype != MODEL_DTYPE_BF16);
    bench_settle(); /* OpenBLAS's workers, just started, spin for a while */
    double readbw = bench_read_gbs(3);
    fprintf(stderr, "bench decode: D %d F %d H %d V %d, %d vs %d layers, %d-token prompt, %d "
                    "steps, %d rounds, %d threads, ISA %s; read-only stream %.1f GB/s\n",
            c.dim, c.hidden_dim, c.n_heads, c.vocab_size, ar.la, ar.lb, ar.prompt, ar.steps,
            ar.rounds, nthr, sparse_isa_name(sparse_get_isa()), readbw);
    model_stage s;
    model_acts a;
    model_kv_cache kv[2];
    memset(kv, 0, sizeof kv);
    losa_status st = dec_setup(&s, &c, ks, nk, ar.sparsity);
    if (st == LOSA_OK && ar.dtype == MODEL_DTYPE_BF16) {
        st = model_stage_build(&sb, &c, 0, 1);
        if (st == LOSA_OK) {
            dec_fill(&sb);
            st = model_stage_to_bf16(&sb, NULL);
        }
    }
    if (st == LOSA_OK) st = model_acts_build(&a, &s, 1, ar.prompt, 0);
    for (int k = 0; k < 2 && st == LOSA_OK; k++) {
        model_stage v = s;
        v.n_layers = k ? ar.lb : ar.la;
        st = model_kv_cache_build(&kv[k], &v, ar.prompt + ar.steps);
    }
    if (cli_fail(d, "bench decode", st)) return 1;
    double dense_bytes = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(&c, (model_map)m, &o, &i);
        dense_bytes += 4.0 * o * i;
    }
    ks[0].density = 1.0;
    ks[0].layer_bytes = dense_bytes;
    dec_case *kb = &ks[sizeof ks / sizeof ks[0] - 1]; /* dense-bf16 (timed if bf16) */
    kb->density = 1.0;
    kb->layer_bytes = dense_bytes / 2;
    bench_flush_init();
    float *x = core_calloc((size_t)c.hidden_dim, sizeof(float));
    float *y = core_calloc((size_t)c.hidden_dim, sizeof(float));
    for (int r = 0; r < ar.rounds; r++) {
        dec_round(ks, nk, &s, &a, kv, &ar, r, x, y);
        fprintf(stderr, "round %d:", r);
        for (int k = 0; k < nk; k++) fprintf(stderr, " %s %.2f ms", ks[k].name, 1e3 * ks[k].layer[r]);
        fprintf(stderr, "\n");
    }
    dec_summary(ks, nk, ar.rounds, dense_bytes);
    if (ar.json) dec_json(d, &ar, &c, ks, nk, dense_bytes, readbw);
    bench_flush_free();
    core_free(x);
    core_free(y);
    for (int k = 0; k < nk; k++) model_sparse_free(&ks[k].sp);
    model_stage_free(&sb);
    for (int k = 0; k < 2; k++) model_kv_cache_free(&kv[k]);
    model_acts_free(&a);
    model_stage_free(&s);
    return 0;
}
