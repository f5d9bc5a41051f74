/* losa bench train [--model STORE.h5] [--batch B] [--seqlen T] [--iters K]
 *                  [--dropout P] [--recompute] [--delta-buffers auto|persistent|transient]
 *                  [--dtype fp32|bf16] [--json]
 * Tokens/s of one masked-LoRA training step (forward, backward, dA/dB,
 * AdamW, delta update) on one rank, and in the same run this machine's sgemm
 * GFLOP/s; reports the fraction of that peak the step's matrix work reaches.
 * Without --model a minillama-shaped model with random weights (D 256, F 768,
 * L 6, H 8, Hkv 4, V 32000), pruned to 50% by magnitude, is used.  Default
 * B x T = 4 x 256, dropout 0.1 (the reference setting); the adapters'
 * dense forms as lora.delta_buffers (include/lora.h), auto by default.
 * --dtype bf16: the maps (after the pruning) and the head rounded to bf16
 * and multiplied in bf16, as `losa run` and `losa finetune` hold them
 * (model_stage_to_bf16: the head's forward and backward-input products in
 * bf16); --head fp32 keeps the head fp32 for comparison
 * (model_stage_to_bf16_maps).  The adapters, their gradients and AdamW stay fp32
 * (include/lora.h); fraction_of_physical_peak is then of the bf16 peak.
 * The step's matrix work alone, timed at the GEMM seam (kern_gemm_stats):
 * matrix_seconds per step, matrix_gflops while in the products,
 * matrix_fraction_of_physical_peak and matrix_share of the step (the rest
 * is attention, norms, SwiGLU, dropout, cross-entropy, adapters, AdamW). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lora.h"


int bench_train(dist_ctx *d, int argc, char **argv)
{
    const char *v;
    bench_shape sh = {.B = 4, .T = 256, .iters = 3};
    int json = 0, ckpt = 0;
    float dropout = 0.1f;
    lora_buffers buffers = LORA_BUFFERS_AUTO;
    model_dtype dtype = MODEL_DTYPE_F32, head = MODEL_DTYPE_F32;
    int head_set = 0; /* --head given; else the head as --dtype (as the run holds it) */
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if (bench_shape_opt(argc, argv, &i, &sh, &s)) continue;
        else if ((v = cli_opt(argc, argv, &i, "--dropout"))) {
            double p = 0;
            if ((s = cli_fraction("--dropout", v, &p)) == LOSA_OK) dropout = (float)p;
        }
        else if (!strcmp(argv[i], "--recompute")) ckpt = 1;
        else if ((v = cli_opt(argc, argv, &i, "--dtype")))
            s = model_dtype_from_string(v, "--dtype", &dtype);
        else if ((v = cli_opt(argc, argv, &i, "--head")))
            s = model_dtype_from_string(v, "--head", &head), head_set = 1;
        else if ((v = cli_opt(argc, argv, &i, "--delta-buffers"))) {
            buffers = !strcmp(v, "persistent") ? LORA_BUFFERS_PERSISTENT
                      : !strcmp(v, "transient") ? LORA_BUFFERS_TRANSIENT : LORA_BUFFERS_AUTO;
            if (buffers == LORA_BUFFERS_AUTO && strcmp(v, "auto"))
                s = core_err(LOSA_ERR_ARG, "--delta-buffers: expected auto, persistent or "
                             "transient, got '%s'", v);
        }
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s'", argv[i]);
    }
    if (!head_set) head = dtype;
    if (s == LOSA_OK && dist_size(d) != 1)
        s = core_err(LOSA_ERR_ARG, "bench train runs on one rank");
    if (s == LOSA_OK && head == MODEL_DTYPE_BF16 && dtype != MODEL_DTYPE_BF16)
        s = core_err(LOSA_ERR_ARG, "--head bf16: needs --dtype bf16");
    if (cli_fail(d, "bench train", s)) return 1;
    model_stage st;
    if (cli_fail(d, "bench train", bench_model(d, sh.model, 6, &st))) return 1;
    if (!sh.model) {
        for (int l = 0; l < st.n_layers; l++) /* 50% magnitude: |w| < 0.6745 sd */
            for (int m = 0; m < MODEL_N_MAPS; m++) {
                int o, i;
                model_map_shape(&st.cfg, m, &o, &i);
                for (int64_t e = 0; e < (int64_t)o * i; e++)
                    if (fabsf(st.layers[l].w[m][e]) < 0.6745f * 0.02f) st.layers[l].w[m][e] = 0;
            }
    }
    int64_t lost = 0;
    if (dtype == MODEL_DTYPE_BF16 &&
        (s = head == MODEL_DTYPE_BF16 ? model_stage_to_bf16(&st, &lost)
                                      : model_stage_to_bf16_maps(&st, &lost)) == LOSA_OK)
        core_log("bench train: bf16 maps, %s head (%lld non-zero weights rounded to zero)\n",
                 model_dtype_name(head), (long long)lost);
    if (s != LOSA_OK || (s = bench_shape_fit(&sh, &st.cfg)) != LOSA_OK) {
        model_stage_free(&st);
        return cli_fail(d, "bench train", s);
    }
    const int B = sh.B, T = sh.T, iters = sh.iters;
    lora_config lc;
    lora_config_default(&lc);
    lc.dropout = dropout;
    lc.buffers = buffers;
    lc.mb_tokens = (int64_t)B * T;
    lora_train_config tc;
    lora_train_config_default(&tc);
    tc.B = B;
    tc.T = T;
    tc.grad_accum = 1;
    tc.steps = iters + 1;
    tc.ckpt = ckpt;
    lora_adapters ad;
    lora_trainer tr;
    s = lora_adapters_build(&ad, &st, &lc);
    if (s == LOSA_OK) s = lora_trainer_build(&tr, NULL, &st, &ad, &tc);
    if (cli_fail(d, "bench train", s)) return 1;
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7919) % st.cfg.vocab_size;
    for (int i = 0; i < B * T; i++) tgt[i] = (i % T == T - 1) ? -1 : tok[i + 1];
    const char *bufs = lora_buffers_name(lora_buffers_resolve(&lc, &st.cfg, st.n_layers));
    core_log("bench train: B x T = %d x %d, %d layers, D %d, F %d, V %d, lora r %d, dropout %g%s, "
             "%s delta buffers, %s maps\n", B, T, st.cfg.n_layers, st.cfg.dim, st.cfg.hidden_dim,
             st.cfg.vocab_size, lc.rank, dropout, ckpt ? ", recompute" : "", bufs,
             model_dtype_name(dtype));
    lora_step_stats ss;
    s = lora_train_step(&tr, tok, tgt, &ss); /* warm-up */
    bench_matrix mx = {.steps = 0};
    kern_gemm_stats_reset();
    double best = 1e30, *times = core_calloc((size_t)iters, sizeof(double)),
           *heads = core_calloc((size_t)iters, sizeof(double)),
           *fwds = core_calloc((size_t)iters, sizeof(double));
    int done = 0, nh = 0;
    for (int k = 0; k < iters && s == LOSA_OK; k++) {
        s = lora_train_step(&tr, tok, tgt, &ss);
        times[done++] = ss.seconds;
        mx.seconds += ss.seconds;
        if (ss.seconds < best) best = ss.seconds;
        double h, f;
        bench_step_shares(&ss, st.n_layers, &h, &f);
        if (h > 0) heads[nh] = h, fwds[nh++] = f;
    }
    kern_gemm_stats_get(&mx.gemm);
    mx.steps = done;
    double med = bench_median(times, done), head_layers = nh > 0 ? bench_median(heads, nh) : 0,
           fwd_share = nh > 0 ? bench_median(fwds, nh) : 0;
    core_free(heads);
    core_free(fwds);
    core_free(times);
    if (cli_fail(d, "bench train", s)) return 1;
    double flops = model_train_flops(&st.cfg, st.cfg.n_layers, 1, B, T, lc.rank, dropout > 0, ckpt);
    double peak = bench_sgemm_gflops(1024, 1024, 1024, 1.0);
    double achieved = flops / best / 1e9, tps = (double)B * T / best;
    core_log("train step: %.3f s, %.0f tokens/s, %.1f GFLOP/s of matrix work (%.1f GFLOP); "
             "sgemm 1024^3: %.1f GFLOP/s; fraction of peak %.2f\n", best, tps, achieved,
             flops / 1e9, peak, achieved / peak);
    core_log("head + loss: %.2f layers (median of the steps; parallel.head_cost_layers); the "
             "layers' forward %.2f of their time\n", head_layers, fwd_share);
    cJSON *o = bench_rate_json(json, achieved, peak, model_dtype_name(dtype), &mx, "step_gflops",
                               tps, B, T, best);
    if (o) {
        /* the median: the rate a run sustains (losa plan --bench reads it) */
        cJSON_AddNumberToObject(o, "step_gflops_median", med > 0 ? flops / med / 1e9 : 0);
        cJSON_AddStringToObject(o, "head_dtype", model_dtype_name(head));
        cJSON_AddNumberToObject(o, "dropout", dropout);
        cJSON_AddStringToObject(o, "delta_buffers", bufs);
        /* measured head + loss in layers: parallel.head_cost_layers */
        cJSON_AddNumberToObject(o, "head_cost_layers", head_layers);
        /* the layers' forward steps over their micro-batch's busy time,
         * the step's own work apart (losa plan's pipeline schedule splits a
         * stage's micro-batch by it) */
        cJSON_AddNumberToObject(o, "layer_forward_share", fwd_share);
        cli_json_emit(d, o);
    }
    free(tok);
    free(tgt);
    lora_trainer_free(&tr);
    lora_adapters_free(&ad, &st);
    model_stage_free(&st);
    return 0;
}
