/* losa bench forward [--model STORE.h5] [--batch B] [--seqlen T] [--iters K]
 *                    [--dtype fp32|bf16] [--text FILE] [--calib FILE]
 *                    [--train FILE] [--json]
 * Forward tokens/s on one rank and, in the same run, this machine's sgemm
 * GFLOP/s; reports the fraction of that peak the forward's matrix work
 * reaches, and (matrix_*) the forward's time inside the GEMM seam's calls,
 * their GFLOP/s and share of the forward.  Without --model a
 * minillama-shaped model with random weights
 * (D 256, F 768, L 6, H 8, Hkv 4, V 32000) is used.  The rates of a run's
 * set-up (losa plan's setup phase): start_seconds (the process's start to
 * the command's, MPI's start the most of it), with --model
 * store_load_gbs (the fp32 bytes of the stage, model_stage_bytes, over the
 * seconds to allocate it and read it from the store), with --model and
 * any of --text (a perplexity text), --calib (a calibration set) and
 * --train (a training set) tokenize_bytes_per_s: the files' bytes over the
 * seconds the store's tokenizer takes to turn them into tokens with the
 * run's own loaders (the whole text; each JSONL document's "text"; the
 * training records rendered and cut to --seqlen), as losa plan counts the
 * deck's files' bytes (JSON syntax and fields no loader tokenizes made a
 * rate from a plain text 1.2-1.4x too slow for them).  The loaders run
 * with the decks' defaults: calibration documents with BOS and no EOS
 * (data.calib_bos / calib_eos), data.train_format auto, and the training
 * records cut to --seqlen (pass train.seqlen's value to match a deck). */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cli.h"
#include "io.h"
#include "lora.h"

/* The run's loaders (src/losa/inputs.c) on one file of each role. */
enum { TEXT_EVAL, TEXT_CALIB, TEXT_TRAIN, TEXT_ROLES };

/* Not collective.  Seconds to tokenize path as a run's role loader does;
 * *bytes its size. */
static losa_status tokenize_as_run(const tok_tokenizer *tk, int role, const char *path, int T,
                                   size_t *bytes, double *seconds)
{
    char *buf = NULL;
    losa_status s = core_read_file(path, &buf, bytes);
    if (s != LOSA_OK) return s;
    double t0 = core_time();
    if (role == TEXT_EVAL) {
        int *ids = NULL;
        int64_t n = 0;
        s = tok_encode(tk, buf, *bytes, 1, 0, &ids, &n);
        free(ids);
    } else if (role == TEXT_CALIB) { /* BOS per document, no EOS: data.calib_bos / _eos */
        int **docs = NULL, nd = 0;
        int64_t *dl = NULL;
        s = calib_docs_tokenize(tk, path, buf, *bytes, 1, 0, &docs, &dl, &nd);
        if (s == LOSA_OK) calib_docs_free(docs, dl, nd);
    } else {
        lora_dataset ds;
        s = lora_data_parse(&ds, path, buf, *bytes, LORA_DATA_AUTO, tk, T);
        if (s == LOSA_OK) lora_data_free(&ds);
    }
    *seconds = core_time() - t0;
    free(buf);
    return s;
}

double bench_sgemm_gflops(int M, int N, int K, double min_seconds)
{
    float *a = core_calloc((size_t)M * K, sizeof(float));
    float *b = core_calloc((size_t)K * N, sizeof(float));
    float *c = core_calloc((size_t)M * N, sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
    double best = 1e30, t_all = core_time();
    while (core_time() - t_all < min_seconds) {
        double t = core_time();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        t = core_time() - t;
        if (t < best) best = t;
    }
    core_free(a);
    core_free(b);
    core_free(c);
    return 2.0 * M * N * K / best / 1e9;
}

model_config bench_minillama_config(int n_layers)
{
    model_config c = {.dim = 256, .hidden_dim = 768, .n_layers = n_layers, .n_heads = 8,
                      .n_kv_heads = 4, .vocab_size = 32000, .max_seq_len = 4096,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .bos_id = 1, .eos_id = 2};
    return c;
}

losa_status bench_model(dist_ctx *d, const char *model, int n_layers, model_stage *st)
{
    if (model) return cli_load_model(d, model, st, NULL);
    model_config c = bench_minillama_config(n_layers);
    losa_status s = model_stage_build(st, &c, 0, 1);
    if (s == LOSA_OK) model_stage_randomize(st, 1, 0.02f);
    return s;
}

int bench_forward(dist_ctx *d, int argc, char **argv)
{
    const char *v;
    bench_shape sh = {.B = 8, .T = 256, .iters = 5};
    int json = 0;
    double start_s = core_time() - core_time_origin();
    const char *text[TEXT_ROLES] = {NULL, NULL, NULL};
    model_dtype dtype = MODEL_DTYPE_F32;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if (bench_shape_opt(argc, argv, &i, &sh, &s)) continue;
        else if ((v = cli_opt(argc, argv, &i, "--dtype"))) s = model_dtype_from_string(v, "--dtype", &dtype);
        else if ((v = cli_opt(argc, argv, &i, "--text"))) text[TEXT_EVAL] = v;
        else if ((v = cli_opt(argc, argv, &i, "--calib"))) text[TEXT_CALIB] = v;
        else if ((v = cli_opt(argc, argv, &i, "--train"))) text[TEXT_TRAIN] = v;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s'", argv[i]);
    }
    if (s == LOSA_OK && dist_size(d) != 1)
        s = core_err(LOSA_ERR_ARG, "bench forward runs on one rank (use bench pipeline for layouts)");
    int texts = !!text[TEXT_EVAL] + !!text[TEXT_CALIB] + !!text[TEXT_TRAIN];
    if (s == LOSA_OK && texts && !sh.model)
        s = core_err(LOSA_ERR_ARG, "--text/--calib/--train: need --model (the store's tokenizer "
                                   "encodes them)");
    if (cli_fail(d, "bench forward", s)) return 1;
    model_stage st;
    tok_tokenizer tk;
    memset(&tk, 0, sizeof tk);
    double tl0 = core_time();
    if (cli_fail(d, "bench forward", bench_model(d, sh.model, 6, &st))) return 1;
    /* the store's stage allocated and read, as a run's set-up does */
    double load_s = core_time() - tl0, tok_bps = 0;
    int L = st.cfg.n_layers;
    size_t stage_bytes = model_stage_bytes(&st.cfg, 0, 1, &L);
    if (texts) {
        io_store *io = NULL;
        s = io_store_open(&io, sh.model);
        if (s == LOSA_OK) s = io_store_read_tokenizer(io, &tk);
        io_store_close(&io);
        double all_bytes = 0, all_s = 0;
        for (int r = 0; r < TEXT_ROLES && s == LOSA_OK; r++) {
            size_t len = 0;
            double t = 0;
            if (!text[r]) continue;
            s = tokenize_as_run(&tk, r, text[r], sh.T, &len, &t);
            if (s == LOSA_OK)
                core_log("tokenizer: %zu bytes of %s in %.3f s (%.2f MB/s)\n", len, text[r], t,
                         t > 0 ? len / t / 1e6 : 0);
            all_bytes += (double)len, all_s += t;
        }
        if (s == LOSA_OK && all_s > 0) tok_bps = all_bytes / all_s;
        tok_free(&tk);
        if (cli_fail(d, "bench forward", s)) {
            model_stage_free(&st);
            return 1;
        }
    }
    if (dtype == MODEL_DTYPE_BF16 && cli_fail(d, "bench forward", cli_stage_to_bf16(d, &st, 0))) {
        model_stage_free(&st);
        return 1;
    }
    if ((s = bench_shape_fit(&sh, &st.cfg)) != LOSA_OK) {
        model_stage_free(&st);
        return cli_fail(d, "bench forward", s);
    }
    const int B = sh.B, T = sh.T, iters = sh.iters;
    model_acts a;
    if (cli_fail(d, "bench forward", model_acts_build(&a, &st, B, T, 0))) return 1;
    int *tok = malloc(sizeof(int) * B * T);
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7919) % st.cfg.vocab_size;
    core_log("bench forward: B x T = %d x %d, %d layers, D %d, F %d, V %d, %s maps\n", B, T,
             st.cfg.n_layers, st.cfg.dim, st.cfg.hidden_dim, st.cfg.vocab_size,
             model_dtype_name(dtype));
    model_stage_forward(&a, &st, tok, B, T); /* warm-up */
    bench_matrix mx = {.steps = iters};
    kern_gemm_stats_reset();
    /* model_stage_forward's calls, the layers and the head timed apart in
     * the same iterations (the calibration passes run the layers only, and
     * the head's one large GEMM runs at another rate than the layers'
     * smaller ones and their elementwise work) */
    double best = 1e30;
    double *times = core_calloc((size_t)iters, sizeof(double)),
           *tl = core_calloc((size_t)iters, sizeof(double)),
           *th = core_calloc((size_t)iters, sizeof(double));
    for (int k = 0; k < iters; k++) {
        double t = core_time();
        model_stage_forward_layers(&a, &st, tok, B, T);
        double t1 = core_time();
        if (st.has_head) model_stage_head(&a, &st, B, T);
        double t2 = core_time();
        times[k] = t2 - t;
        tl[k] = t1 - t;
        th[k] = t2 - t1;
        mx.seconds += times[k];
        if (times[k] < best) best = times[k];
    }
    kern_gemm_stats_get(&mx.gemm);
    double med = bench_median(times, iters), med_layers = bench_median(tl, iters),
           med_head = bench_median(th, iters);
    core_free(times);
    core_free(tl);
    core_free(th);
    double flops = model_forward_flops(&st.cfg, st.cfg.n_layers, 1, B, T);
    double flops_layers = model_forward_flops(&st.cfg, st.cfg.n_layers, 0, B, T);
    /* peak: sgemm on the forward's most common shape class, and square */
    double peak_sq = bench_sgemm_gflops(1024, 1024, 1024, 1.0);
    double achieved = flops / best / 1e9;
    double tps = (double)B * T / best;
    core_log("forward: %.0f tokens/s, %.1f GFLOP/s of matrix work; sgemm 1024^3: %.1f GFLOP/s; "
             "fraction of peak %.2f\n", tps, achieved, peak_sq, achieved / peak_sq);
    cJSON *o = bench_rate_json(json, achieved, peak_sq, model_dtype_name(dtype), &mx,
                               "forward_gflops", tps, B, T, best);
    if (o) { /* the median: the rate a run sustains (losa plan --bench reads it) */
        cJSON_AddNumberToObject(o, "forward_gflops_median", flops / med / 1e9);
        /* embedding + layers (no head), and the head alone: losa plan's
         * rates for passes without the head and for the head's share */
        if (med_layers > 0)
            cJSON_AddNumberToObject(o, "layers_gflops_median", flops_layers / med_layers / 1e9);
        if (med_head > 0 && flops > flops_layers)
            cJSON_AddNumberToObject(o, "head_gflops_median", (flops - flops_layers) / med_head / 1e9);
        cJSON_AddNumberToObject(o, "first_touch_gbs", bench_first_touch_gbs(3));
        /* the set-up's rates (losa plan's setup phase) */
        cJSON_AddNumberToObject(o, "start_seconds", start_s);
        if (sh.model && load_s > 0)
            cJSON_AddNumberToObject(o, "store_load_gbs", (double)stage_bytes / load_s / 1e9);
        if (tok_bps > 0) cJSON_AddNumberToObject(o, "tokenize_bytes_per_s", tok_bps);
        cli_json_emit(d, o);
    }
    free(tok);
    model_acts_free(&a);
    model_stage_free(&st);
    return 0;
}
