/* losa bench prune [--model STORE.h5 [--layer l]] [--n N] [--seqlen S]
 *                  [--sparsity s] [--pattern N:M] [--json]
 *
 * Time to prune one decoder layer (its 7 maps) with Wanda and with
 * SparseGPT from N x S calibration tokens (default 64 x 256), and how that
 * time splits:
 *   forward     the layer's forward over the calibration tokens (in chunks
 *               of 8 windows) that produces the four sublayer inputs —
 *               common to both methods, reported apart;
 *   statistics  Wanda: column sums of squares; SparseGPT: X^T X (dsyrk) and
 *               finalize, for the 4 sublayer inputs;
 *   hinv        SparseGPT: damping + Cholesky + inverse + Cholesky (4 inputs);
 *   mask        score + selection (Wanda: the whole pruner);
 *   sweep       SparseGPT in-block OBS column updates;
 *   update      SparseGPT trailing sgemm.
 * wanda_s = statistics + mask; sparsegpt_s = statistics + hinv + mask +
 * sweep + update.  Without --model the layer is minillama-shaped (D 256,
 * F 768, H 8, Hkv 4) with random weights and random tokens; with --model the
 * store's layer l, fed by the embeddings of pseudo-random tokens through the
 * layers before it.  One rank. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cli.h"
#include "kernels.h"
#include "prune.h"

typedef struct {
    const char *model, *pattern;
    int layer, N, S, json, nm_n, nm_m;
    double sparsity;
} bp_args;

static losa_status bp_parse(int argc, char **argv, bp_args *a)
{
    *a = (bp_args){.pattern = "unstructured", .N = 64, .S = 256, .sparsity = 0.5};
    const char *v;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--model"))) a->model = v;
        else if ((v = cli_opt(argc, argv, &i, "--layer"))) s = cli_int("--layer", v, 0, 1000000, &a->layer);
        else if ((v = cli_opt(argc, argv, &i, "--n"))) s = cli_int("--n", v, 1, 1000000, &a->N);
        else if ((v = cli_opt(argc, argv, &i, "--seqlen"))) s = cli_int("--seqlen", v, 2, 1048576, &a->S);
        else if ((v = cli_opt(argc, argv, &i, "--sparsity"))) s = cli_fraction("--sparsity", v, &a->sparsity);
        else if ((v = cli_opt(argc, argv, &i, "--pattern"))) a->pattern = v;
        else if (!strcmp(argv[i], "--json")) a->json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa bench prune "
                          "[--model STORE.h5 [--layer l]] [--n N] [--seqlen S] [--sparsity s] "
                          "[--pattern N:M] [--json])", argv[i]);
    }
    if (s == LOSA_OK && strcmp(a->pattern, "unstructured")) {
        s = cli_int_pair("--pattern", a->pattern, ':', 1, 1024, &a->nm_n, &a->nm_m);
        if (s == LOSA_OK && a->nm_n >= a->nm_m)
            s = core_err(LOSA_ERR_ARG, "--pattern: expected N:M with 0 < N < M, got '%s'", a->pattern);
    }
    if (s == LOSA_OK && !(a->sparsity >= 0 && a->sparsity < 1))
        s = core_err(LOSA_ERR_ARG, "--n >= 1, --seqlen >= 2 and --sparsity in [0, 1) expected");
    return s;
}

/* The model (the store's, or a random minillama-shaped layer) and its checks. */
static losa_status bp_model(dist_ctx *d, bp_args *a, model_stage *st)
{
    losa_status s = a->model ? cli_load_model(d, a->model, st, NULL) : bench_model(d, NULL, 1, st);
    if (s != LOSA_OK) return s;
    if (!a->model) a->layer = 0;
    if (a->layer < 0 || a->layer >= st->cfg.n_layers)
        s = core_err(LOSA_ERR_ARG, "--layer %d: the model has %d layers", a->layer, st->cfg.n_layers);
    if (s == LOSA_OK && a->S > st->cfg.max_seq_len)
        s = core_err(LOSA_ERR_ARG, "--seqlen %d exceeds the model's max_seq_len %d", a->S,
                     st->cfg.max_seq_len);
    for (int g = 0; s == LOSA_OK && a->nm_m > 0 && g < MODEL_N_INPUTS; g++)
        if (model_input_width(&st->cfg, g) % a->nm_m)
            s = core_err(LOSA_ERR_ARG, "--pattern %s: input width %d not a multiple of M", a->pattern,
                         model_input_width(&st->cfg, g));
    return s;
}

/* The calibration stream reaching the layer (N, S, D): embeddings of
 * pseudo-random tokens through the layers before it. */
static float *bp_stream(model_acts *a, const model_stage *st, const bp_args *ba, int chunk)
{
    int N = ba->N, S = ba->S, D = st->cfg.dim;
    int *tok = core_malloc((size_t)N * S, sizeof(int));
    core_rng r;
    core_rng_seed(&r, 7);
    for (int64_t i = 0; i < (int64_t)N * S; i++) tok[i] = (int)(core_rng_u64(&r) % st->cfg.vocab_size);
    float *X = core_calloc((size_t)N * S * D, sizeof(float));
    for (int w = 0; w < N; w++)
        kern_embed_forward(X + (int64_t)w * S * D, tok + (int64_t)w * S, st->embed, S, D);
    free(tok);
    for (int l = 0; l < ba->layer; l++)
        for (int w0 = 0; w0 < N; w0 += chunk) {
            int nw = N - w0 < chunk ? N - w0 : chunk;
            memcpy(a->x, X + (int64_t)w0 * S * D, sizeof(float) * nw * S * D);
            model_layer_forward(a, st, l, nw, S);
            memcpy(X + (int64_t)w0 * S * D, a->x, sizeof(float) * nw * S * D);
        }
    return X;
}

/* One method on the layer (dense on entry): forward + statistics per chunk,
 * then calib_prune_layer_maps.  res: forward, stats, hinv, mask, sweep, update. */
static losa_status bp_method(model_acts *a, model_stage *st, const bp_args *ba, const float *X,
                             int chunk, const prune_config *pc, double res[6])
{
    int N = ba->N, S = ba->S, D = st->cfg.dim, sgpt = pc->method == PRUNE_METHOD_SPARSEGPT;
    int wmax = st->cfg.hidden_dim > D ? st->cfg.hidden_dim : D;
    prune_stats pst[MODEL_N_INPUTS];
    for (int g = 0; g < MODEL_N_INPUTS; g++) prune_stats_init(&pst[g], model_input_width(&st->cfg, g), sgpt);
    double fw = 0, stats = 0, t;
    for (int w0 = 0; w0 < N; w0 += chunk) {
        int nw = N - w0 < chunk ? N - w0 : chunk;
        memcpy(a->x, X + (int64_t)w0 * S * D, sizeof(float) * nw * S * D);
        t = core_time();
        model_layer_forward(a, st, ba->layer, nw, S);
        fw += core_time() - t;
        model_layer_acts la = model_acts_layer(a, st, 0, nw, S);
        t = core_time();
        for (int g = 0; g < MODEL_N_INPUTS; g++)
            prune_stats_accumulate(&pst[g], model_layer_input(&la, g), (int64_t)nw * S);
        stats += core_time() - t;
    }
    losa_status s = LOSA_OK;
    t = core_time();
    for (int g = 0; g < MODEL_N_INPUTS; g++) s = s ? s : prune_stats_finalize(&pst[g]);
    stats += core_time() - t;
    prune_input x[MODEL_N_INPUTS];
    double *hinv = sgpt ? core_calloc((size_t)wmax * wmax, sizeof(double)) : NULL;
    unsigned char *dead = sgpt ? core_calloc(wmax, 1) : NULL;
    for (int g = 0; g < MODEL_N_INPUTS; g++)
        x[g] = (prune_input){.in = pst[g].in, .colsq = pst[g].colsq, .H = pst[g].H, .hinv = hinv,
                             .dead = dead};
    prune_sparsegpt_timing tm = {0};
    if (s == LOSA_OK)
        s = calib_prune_layer_maps(st, ba->layer, pc, pc->sparsity, x, NULL, &tm, NULL);
    core_free(hinv);
    core_free(dead);
    for (int g = 0; g < MODEL_N_INPUTS; g++) prune_stats_free(&pst[g]);
    const double r[6] = {fw, stats, tm.hinv_s, tm.mask_s, tm.sweep_s, tm.update_s};
    memcpy(res, r, sizeof r);
    return s;
}

/* The 7 maps of layer l: into a new block (from NULL; returned), or back
 * from it. */
static float *bp_maps(model_stage *st, int l, float *from)
{
    size_t n = 0, off = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(&st->cfg, m, &o, &i);
        n += (size_t)o * i;
    }
    float *b = from ? from : core_malloc(n, sizeof(float));
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(&st->cfg, m, &o, &i);
        float *w = st->layers[l].w[m];
        if (from) memcpy(w, b + off, sizeof(float) * o * i);
        else memcpy(b + off, w, sizeof(float) * o * i);
        off += (size_t)o * i;
    }
    return b;
}

/* The timings (res[method][forward, stats, hinv, mask, sweep, update]):
 * log, and the JSON object with --json. */
static void bp_report(dist_ctx *d, const bp_args *a, const model_config *c, double res[2][6])
{
    double wanda_s = res[0][1] + res[0][3];
    double sgpt_s = res[1][1] + res[1][2] + res[1][3] + res[1][4] + res[1][5];
    core_log("  forward of the layer over the calibration tokens: %.3fs\n", res[0][0]);
    core_log("  wanda      %.3fs = statistics %.3fs + mask %.3fs\n", wanda_s, res[0][1], res[0][3]);
    core_log("  sparsegpt  %.3fs = statistics %.3fs + hinv %.3fs + mask %.3fs + sweep %.3fs "
             "+ update %.3fs\n", sgpt_s, res[1][1], res[1][2], res[1][3], res[1][4], res[1][5]);
    if (!a->json) return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "wanda_s", wanda_s);
    cJSON_AddNumberToObject(o, "sparsegpt_s", sgpt_s);
    cJSON_AddNumberToObject(o, "forward_s", res[0][0]);
    cJSON *b = cJSON_AddObjectToObject(o, "breakdown");
    cJSON *bw = cJSON_AddObjectToObject(b, "wanda");
    cJSON_AddNumberToObject(bw, "stats_s", res[0][1]);
    cJSON_AddNumberToObject(bw, "mask_s", res[0][3]);
    cJSON *bs = cJSON_AddObjectToObject(b, "sparsegpt");
    const char *keys[5] = {"stats_s", "hinv_s", "mask_s", "sweep_s", "update_s"};
    for (int k = 0; k < 5; k++) cJSON_AddNumberToObject(bs, keys[k], res[1][1 + k]);
    cJSON_AddNumberToObject(o, "n", a->N);
    cJSON_AddNumberToObject(o, "seqlen", a->S);
    cJSON_AddNumberToObject(o, "dim", c->dim);
    cJSON_AddNumberToObject(o, "hidden_dim", c->hidden_dim);
    cJSON_AddNumberToObject(o, "n_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "n_kv_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "layer", a->layer);
    cJSON_AddStringToObject(o, "pattern", a->pattern);
    cJSON_AddNumberToObject(o, "sparsity", a->nm_m ? (double)a->nm_n / a->nm_m : a->sparsity);
    cli_json_emit(d, o);
}

int bench_prune(dist_ctx *d, int argc, char **argv)
{
    bp_args a;
    losa_status s = bp_parse(argc, argv, &a);
    if (s == LOSA_OK && dist_size(d) != 1)
        s = core_err(LOSA_ERR_ARG, "bench prune runs on one rank");
    if (cli_fail(d, "bench prune", s)) return 1;
    model_stage st;
    memset(&st, 0, sizeof st);
    model_acts acts;
    memset(&acts, 0, sizeof acts);
    int chunk = a.N < 8 ? a.N : 8;
    s = bp_model(d, &a, &st);
    if (s == LOSA_OK) s = model_acts_build_layers(&acts, &st, chunk, a.S, 0);
    if (cli_fail(d, "bench prune", s)) {
        model_stage_free(&st);
        return 1;
    }
    const model_config *c = &st.cfg;
    float *X = bp_stream(&acts, &st, &a, chunk);
    /* the layer's maps, dense: restored before each method */
    float *dense = bp_maps(&st, a.layer, NULL);
    char what[64];
    if (a.nm_m) snprintf(what, sizeof what, "pattern %s", a.pattern);
    else snprintf(what, sizeof what, "sparsity %.2f", a.sparsity);
    core_log("bench prune: layer %d of %s (D %d, F %d), %d x %d calibration tokens, %s\n", a.layer,
             a.model ? a.model : "a random minillama-shaped layer", c->dim, c->hidden_dim, a.N, a.S,
             what);
    double res[2][6] = {{0}}; /* per method: forward, stats, hinv, mask, sweep, update */
    prune_config pc;
    prune_config_default(&pc);
    pc.sparsity = a.sparsity;
    pc.nm_n = a.nm_n;
    pc.nm_m = a.nm_m;
    const prune_method methods[2] = {PRUNE_METHOD_WANDA, PRUNE_METHOD_SPARSEGPT};
    for (int k = 0; k < 2 && s == LOSA_OK; k++) {
        pc.method = methods[k];
        bp_maps(&st, a.layer, dense);
        s = bp_method(&acts, &st, &a, X, chunk, &pc, res[k]);
    }
    int rc = cli_fail(d, "bench prune", s);
    if (rc == 0) bp_report(d, &a, c, res);
    core_free(dense);
    core_free(X);
    model_acts_free(&acts);
    model_stage_free(&st);
    return rc;
}
