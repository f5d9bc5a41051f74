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

#include "cli.h"
#include "kernels.h"
#include "prune.h"

enum { BP_QKV, BP_O, BP_GU, BP_DOWN, BP_NGRP };
static const int bp_grp[MODEL_N_MAPS] = {BP_QKV, BP_QKV, BP_QKV, BP_O, BP_GU, BP_GU, BP_DOWN};

/* Forward the chunk (in a->x) through layer l and add its sublayer inputs to
 * the statistics.  Returns the forward seconds; *stats_s gets the rest. */
static double bp_chunk(model_acts *a, const model_stage *s, int l, int nw, int S,
                       prune_stats *st, double *stats_s)
{
    double t = core_time();
    model_layer_forward(a, s, l, nw, S);
    double fw = core_time() - t;
    model_layer_acts la = model_acts_layer(a, s, 0, nw, S);
    const float *in[BP_NGRP] = {la.ln1, la.atty, la.ln2, la.hid};
    t = core_time();
    for (int g = 0; g < BP_NGRP; g++) prune_stats_accumulate(&st[g], in[g], (int64_t)nw * S);
    *stats_s += core_time() - t;
    return fw;
}

int bench_prune(dist_ctx *d, int argc, char **argv)
{
    const char *model = NULL, *v, *pattern = "unstructured";
    int layer = 0, N = 64, S = 256, json = 0, nm_n = 0, nm_m = 0;
    double sparsity = 0.5;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--model"))) model = v;
        else if ((v = cli_opt(argc, argv, &i, "--layer"))) s = cli_int("--layer", v, 0, 1000000, &layer);
        else if ((v = cli_opt(argc, argv, &i, "--n"))) s = cli_int("--n", v, 1, 1000000, &N);
        else if ((v = cli_opt(argc, argv, &i, "--seqlen"))) s = cli_int("--seqlen", v, 2, 1048576, &S);
        else if ((v = cli_opt(argc, argv, &i, "--sparsity"))) s = cli_fraction("--sparsity", v, &sparsity);
        else if ((v = cli_opt(argc, argv, &i, "--pattern"))) pattern = v;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa bench prune "
                          "[--model STORE.h5 [--layer l]] [--n N] [--seqlen S] [--sparsity s] "
                          "[--pattern N:M] [--json])", argv[i]);
    }
    if (s == LOSA_OK && strcmp(pattern, "unstructured")) {
        s = cli_int_pair("--pattern", pattern, ':', 1, 1024, &nm_n, &nm_m);
        if (s == LOSA_OK && nm_n >= nm_m)
            s = core_err(LOSA_ERR_ARG, "--pattern: expected N:M with 0 < N < M, got '%s'", pattern);
    }
    if (s == LOSA_OK && (N < 1 || S < 2 || !(sparsity >= 0 && sparsity < 1)))
        s = core_err(LOSA_ERR_ARG, "--n >= 1, --seqlen >= 2 and --sparsity in [0, 1) expected");
    if (s == LOSA_OK && dist_size(d) != 1)
        s = core_err(LOSA_ERR_ARG, "bench prune runs on one rank");
    if (cli_fail(d, "bench prune", s)) return 1;

    model_stage st;
    if (model) {
        if (cli_fail(d, "bench prune", cli_load_model(d, model, &st, NULL))) return 1;
        if (layer < 0 || layer >= st.cfg.n_layers)
            s = core_err(LOSA_ERR_ARG, "--layer %d: the model has %d layers", layer, st.cfg.n_layers);
    } else {
        if (cli_fail(d, "bench prune", bench_model(d, NULL, 1, &st))) return 1;
        layer = 0;
    }
    if (s == LOSA_OK && S > st.cfg.max_seq_len)
        s = core_err(LOSA_ERR_ARG, "--seqlen %d exceeds the model's max_seq_len %d", S,
                     st.cfg.max_seq_len);
    for (int m = 0; s == LOSA_OK && nm_m > 0 && m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(&st.cfg, m, &o, &i);
        if (i % nm_m) s = core_err(LOSA_ERR_ARG, "--pattern %s: input width %d not a multiple of M", pattern, i);
    }
    if (cli_fail(d, "bench prune", s)) {
        model_stage_free(&st);
        return 1;
    }
    const model_config *c = &st.cfg;
    int D = c->dim, F = c->hidden_dim, chunk = N < 8 ? N : 8;
    const int width[BP_NGRP] = {D, D, D, F};
    model_acts a;
    if (cli_fail(d, "bench prune", model_acts_build(&a, &st, chunk, S, 0))) {
        model_stage_free(&st);
        return 1;
    }
    /* the calibration stream reaching `layer`: (N, S, D) */
    int *tok = malloc(sizeof(int) * (size_t)N * S);
    core_rng r;
    core_rng_seed(&r, 7);
    for (int64_t i = 0; i < (int64_t)N * S; i++) tok[i] = (int)(core_rng_u64(&r) % c->vocab_size);
    float *X = core_calloc((size_t)N * S * D, sizeof(float));
    for (int w = 0; w < N; w++)
        kern_embed_forward(X + (int64_t)w * S * D, tok + (int64_t)w * S, st.embed, S, D);
    for (int l = 0; l < layer; l++)
        for (int w0 = 0; w0 < N; w0 += chunk) {
            int nw = N - w0 < chunk ? N - w0 : chunk;
            memcpy(a.x, X + (int64_t)w0 * S * D, sizeof(float) * nw * S * D);
            model_layer_forward(&a, &st, l, nw, S);
            memcpy(X + (int64_t)w0 * S * D, a.x, sizeof(float) * nw * S * D);
        }
    /* dense copy of the layer's maps, restored before each method */
    float *dense[MODEL_N_MAPS];
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, m, &o, &i);
        dense[m] = core_calloc((size_t)o * i, sizeof(float));
        memcpy(dense[m], st.layers[layer].w[m], sizeof(float) * o * i);
    }
    char what[64];
    if (nm_m) snprintf(what, sizeof what, "pattern %s", pattern);
    else snprintf(what, sizeof what, "sparsity %.2f", sparsity);
    core_log("bench prune: layer %d of %s (D %d, F %d), %d x %d calibration tokens, %s\n",
             layer, model ? model : "a random minillama-shaped layer", D, F, N, S, what);
    double res[2][6] = {{0}}; /* per method: forward, stats, hinv, mask, sweep, update */
    prune_config pc;
    prune_config_default(&pc);
    pc.sparsity = sparsity;
    pc.nm_n = nm_n;
    pc.nm_m = nm_m;
    for (int meth = 0; meth < 2; meth++) {
        int sgpt = meth == 1;
        pc.method = sgpt ? PRUNE_METHOD_SPARSEGPT : PRUNE_METHOD_WANDA;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, m, &o, &i);
            memcpy(st.layers[layer].w[m], dense[m], sizeof(float) * o * i);
        }
        prune_stats pst[BP_NGRP];
        for (int g = 0; g < BP_NGRP; g++) prune_stats_init(&pst[g], width[g], sgpt);
        double fw = 0, stats = 0;
        for (int w0 = 0; w0 < N; w0 += chunk) {
            int nw = N - w0 < chunk ? N - w0 : chunk;
            memcpy(a.x, X + (int64_t)w0 * S * D, sizeof(float) * nw * S * D);
            fw += bp_chunk(&a, &st, layer, nw, S, pst, &stats);
        }
        double t = core_time();
        for (int g = 0; g < BP_NGRP; g++) s = s ? s : prune_stats_finalize(&pst[g]);
        stats += core_time() - t;
        prune_sparsegpt_timing tm;
        memset(&tm, 0, sizeof tm);
        double mask = 0;
        double *hinv = sgpt ? core_calloc((size_t)F * F, sizeof(double)) : NULL;
        unsigned char *dead = sgpt ? core_calloc(F, 1) : NULL;
        for (int g = 0; g < BP_NGRP && s == LOSA_OK; g++) {
            if (sgpt) s = prune_sparsegpt_prepare_hinv(pst[g].H, width[g], pc.percdamp, hinv, dead, &tm);
            for (int m = 0; m < MODEL_N_MAPS && s == LOSA_OK; m++) {
                if (bp_grp[m] != g) continue;
                int o, i;
                model_map_shape(c, m, &o, &i);
                float *W = st.layers[layer].w[m];
                t = core_time();
                if (sgpt)
                    s = prune_sparsegpt_rows(W, o, 0, o, i, hinv, dead, pc.sparsity, nm_n, nm_m,
                                             pc.blocksize, NULL, NULL, &tm);
                else
                    s = prune_wanda(W, pst[g].colsq, o, i, pc.sparsity, nm_n, nm_m);
                if (!sgpt) mask += core_time() - t;
            }
        }
        core_free(hinv);
        core_free(dead);
        for (int g = 0; g < BP_NGRP; g++) prune_stats_free(&pst[g]);
        res[meth][0] = fw;
        res[meth][1] = stats;
        res[meth][2] = tm.hinv_s;
        res[meth][3] = sgpt ? tm.mask_s : mask;
        res[meth][4] = tm.sweep_s;
        res[meth][5] = tm.update_s;
    }
    int rc = cli_fail(d, "bench prune", s);
    double wanda_s = res[0][1] + res[0][3];
    double sgpt_s = res[1][1] + res[1][2] + res[1][3] + res[1][4] + res[1][5];
    if (rc == 0) {
        core_log("  forward of the layer over the calibration tokens: %.3fs\n", res[0][0]);
        core_log("  wanda      %.3fs = statistics %.3fs + mask %.3fs\n", wanda_s, res[0][1], res[0][3]);
        core_log("  sparsegpt  %.3fs = statistics %.3fs + hinv %.3fs + mask %.3fs + sweep %.3fs "
                 "+ update %.3fs\n", sgpt_s, res[1][1], res[1][2], res[1][3], res[1][4], res[1][5]);
    }
    if (rc == 0 && json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "wanda_s", wanda_s);
        cJSON_AddNumberToObject(o, "sparsegpt_s", sgpt_s);
        cJSON_AddNumberToObject(o, "forward_s", res[0][0]);
        cJSON *b = cJSON_AddObjectToObject(o, "breakdown");
        cJSON *bw = cJSON_AddObjectToObject(b, "wanda");
        cJSON_AddNumberToObject(bw, "stats_s", res[0][1]);
        cJSON_AddNumberToObject(bw, "mask_s", res[0][3]);
        cJSON *bs = cJSON_AddObjectToObject(b, "sparsegpt");
        cJSON_AddNumberToObject(bs, "stats_s", res[1][1]);
        cJSON_AddNumberToObject(bs, "hinv_s", res[1][2]);
        cJSON_AddNumberToObject(bs, "mask_s", res[1][3]);
        cJSON_AddNumberToObject(bs, "sweep_s", res[1][4]);
        cJSON_AddNumberToObject(bs, "update_s", res[1][5]);
        cJSON_AddNumberToObject(o, "n", N);
        cJSON_AddNumberToObject(o, "seqlen", S);
        cJSON_AddNumberToObject(o, "dim", D);
        cJSON_AddNumberToObject(o, "hidden_dim", F);
        cJSON_AddNumberToObject(o, "layer", layer);
        cJSON_AddStringToObject(o, "pattern", pattern);
        cJSON_AddNumberToObject(o, "sparsity", nm_m ? (double)nm_n / nm_m : sparsity);
        cli_json_emit(d, o);
    }
    for (int m = 0; m < MODEL_N_MAPS; m++) core_free(dense[m]);
    core_free(X);
    free(tok);
    model_acts_free(&a);
    model_stage_free(&st);
    return rc;
}
