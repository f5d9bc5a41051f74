/* losa bench pipeline [--model STORE.h5] [--batch B] [--seqlen T]
 *                     [--micro M] [--iters K] [--json]
 * Training throughput (masked LoRA, dropout 0.1) of a minillama-shaped model
 * (random weights pruned 50% by magnitude: D 256, F 768, L 6, H 8, Hkv 4,
 * V 32000) or of a store, for three ways of using two cores:
 *   (1,1)  one rank with 2 BLAS threads (rank 0 alone; rank 1 waits),
 *   (2,1)  a 2-stage pipeline, 1 thread per rank (1F1B; GPipe also timed),
 *   (1,2)  2 data-parallel replicas, 1 thread per rank.
 * Run it under `mpirun -np 2` (the layouts are switched in-process with
 * dist_set_layout); with one rank only (1,1) is measured.  An optimizer
 * step is M micro-batches of B x T tokens; tokens/s = M B T / step time
 * (best of K steps after one warm-up).
 * Pipeline bubble: per stage, the idle fraction of the step 1 - busy/wall
 * (busy = this rank's forward/backward/update compute), averaged over the
 * stages, against the (PP-1)/(M+PP-1) model of equal stages.  The
 * model ignores the head (vocabulary) cost that makes the last stage
 * heavier, so the measurement can exceed it.
 * sgemm_gflops: one-thread sgemm 1024^3 on rank 0; fraction_of_peak per
 * layout = matrix GFLOP/s of the step / (2 x sgemm_gflops). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dist.h"
#include "io.h"
#include "kernels.h"
#include "lora.h"


/* FLOPs of one micro-batch of the adapters stage_run trains. */
static double mb_flops(const model_config *c, int B, int T)
{
    lora_config lc;
    lora_config_default(&lc);
    return model_train_flops(c, c->n_layers, 1, B, T, lc.rank, 1, 0);
}

static void prune_half(model_stage *s, float sd)
{
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&s->cfg, m, &o, &i);
            for (int64_t e = 0; e < (int64_t)o * i; e++)
                if (fabsf(s->layers[l].w[m][e]) < 0.6745f * sd) s->layers[l].w[m][e] = 0;
        }
}

/* Not collective: stage p of n (random weights, or read from the store). */
static losa_status stage_load(const char *model, const model_config *c, int p, int n,
                              model_stage *s)
{
    losa_status st = model_stage_build(s, c, p, n);
    if (st != LOSA_OK) return st;
    if (!model) {
        model_stage_randomize(s, 1, 0.02f);
        prune_half(s, 0.02f);
        return LOSA_OK;
    }
    io_store *io = NULL;
    st = io_store_open(&io, model);
    if (st == LOSA_OK) st = io_store_read_stage(io, s);
    io_store_close(&io);
    return st;
}

typedef struct {
    double step_s;   /* best step wall time */
    double busy[8];  /* per stage busy seconds of that step (stage order) */
    int pp;
} measure;

/* Collective when d != NULL: K timed steps of the layout d is set to (or
 * the whole model on this process when d == NULL). */
static losa_status run_layout(dist_ctx *d, const char *model, const model_config *c,
                              const lora_train_config *tc, int iters, const int *tok,
                              const int *tgt, measure *out)
{
    model_stage s;
    lora_adapters ad;
    lora_trainer tr;
    lora_config lc;
    lora_config_default(&lc);
    int pp = d ? dist_n_stages(d) : 1, p = d ? dist_stage(d) : 0;
    losa_status st = stage_load(model, c, p, pp, &s);
    if (st == LOSA_OK) st = lora_adapters_build(&ad, &s, &lc);
    if (st == LOSA_OK) st = lora_trainer_build(&tr, d, &s, &ad, tc);
    if (d) st = dist_agree(d, st);
    if (st != LOSA_OK) return st;
    memset(out, 0, sizeof *out);
    out->pp = pp;
    out->step_s = 1e30;
    lora_step_stats ss;
    for (int k = 0; k <= iters && st == LOSA_OK; k++) {
        if (d) dist_barrier(d);
        st = lora_train_step(&tr, tok, tgt, &ss);
        double v[2 + 8] = {ss.seconds, 0};
        if (d) { /* wall = slowest rank; busy per stage from replica 0 */
            memset(v, 0, sizeof v);
            v[0] = dist_rank(d) == 0 ? ss.seconds : 0;
            if (dist_replica(d) == 0 && p < 8) v[2 + p] = ss.busy_seconds;
            dist_sum_doubles(d, v, 10);
        } else {
            v[2] = ss.busy_seconds;
        }
        if (k > 0 && v[0] < out->step_s) {
            out->step_s = v[0];
            for (int q = 0; q < pp && q < 8; q++) out->busy[q] = v[2 + q];
        }
    }
    lora_trainer_free(&tr);
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
    return d ? dist_agree(d, st) : st;
}

int bench_pipeline(dist_ctx *d, int argc, char **argv)
{
    const char *model = NULL, *v;
    int B = 1, T = 128, M = 8, iters = 2, json = 0;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--model"))) model = v;
        else if ((v = cli_opt(argc, argv, &i, "--batch"))) s = cli_int("--batch", v, 1, 65536, &B);
        else if ((v = cli_opt(argc, argv, &i, "--seqlen"))) s = cli_int("--seqlen", v, 2, 1048576, &T);
        else if ((v = cli_opt(argc, argv, &i, "--micro"))) s = cli_int("--micro", v, 1, 65536, &M);
        else if ((v = cli_opt(argc, argv, &i, "--iters"))) s = cli_int("--iters", v, 1, 1000000, &iters);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa bench pipeline "
                          "[--model STORE.h5] [--batch B] [--seqlen T] [--micro M] [--iters K] "
                          "[--json])", argv[i]);
    }
    if (s == LOSA_OK && (B < 1 || T < 2 || M < 1 || iters < 1))
        s = core_err(LOSA_ERR_ARG, "need --batch >= 1, --seqlen >= 2, --micro >= 1, --iters >= 1");
    if (s == LOSA_OK && dist_size(d) > 2)
        s = core_err(LOSA_ERR_ARG, "bench pipeline compares layouts of 2 cores: run it on 1 or 2 "
                     "ranks (got %d)", dist_size(d));
    model_config c = bench_minillama_config(6);
    if (s == LOSA_OK && model) {
        io_store *io = NULL;
        s = io_store_open(&io, model);
        if (s == LOSA_OK) s = io_store_read_config(io, &c);
        io_store_close(&io);
    }
    if (s == LOSA_OK && T > c.max_seq_len) T = c.max_seq_len;
    if (cli_fail(d, "bench pipeline", dist_agree(d, s))) return 1;
    lora_train_config tc;
    lora_train_config_default(&tc);
    tc.B = B;
    tc.T = T;
    tc.grad_accum = M;
    tc.steps = iters + 1;
    int64_t n = (int64_t)M * B * T;
    int *tok = malloc(sizeof(int) * n), *tgt = malloc(sizeof(int) * n);
    for (int64_t i = 0; i < n; i++) tok[i] = (int)((i * 7919) % c.vocab_size);
    for (int64_t i = 0; i < n; i++) tgt[i] = (i % T == T - 1) ? -1 : tok[i + 1];
    core_log("bench pipeline: %d micro-batches of %d x %d per step, %d layers, D %d, F %d, V %d, "
             "%d rank(s)\n", M, B, T, c.n_layers, c.dim, c.hidden_dim, c.vocab_size, dist_size(d));

    /* (1,1): rank 0 alone with 2 GEMM threads; sgemm peak with 1 thread */
    measure m11 = {0}, m21 = {0}, m21g = {0}, m12 = {0};
    double peak = 0;
    if (dist_rank(d) == 0) {
        kern_gemm_threads(1);
        peak = bench_sgemm_gflops(1024, 1024, 1024, 0.5);
        kern_gemm_threads(2);
        s = run_layout(NULL, model, &c, &tc, iters, tok, tgt, &m11);
        kern_gemm_threads(1);
    }
    dist_barrier_idle(d); /* rank 1 sleeps meanwhile: rank 0 has both cores */
    s = dist_agree(d, s);
    dist_bcast(d, &m11, sizeof m11, 0);
    dist_bcast(d, &peak, sizeof peak, 0);
    int two = dist_size(d) == 2 && s == LOSA_OK;
    if (two) {
        kern_gemm_threads(1);
        if ((s = dist_set_layout(d, 2, 1)) == LOSA_OK)
            s = run_layout(d, model, &c, &tc, iters, tok, tgt, &m21);
        lora_train_config tg = tc;
        tg.schedule = LORA_SCHEDULE_GPIPE;
        if (s == LOSA_OK) s = run_layout(d, model, &c, &tg, iters, tok, tgt, &m21g);
        if (s == LOSA_OK && (s = dist_set_layout(d, 1, 2)) == LOSA_OK)
            s = run_layout(d, model, &c, &tc, iters, tok, tgt, &m12);
        dist_set_layout(d, 2, 1);
    }
    free(tok);
    free(tgt);
    if (cli_fail(d, "bench pipeline", s)) return 1;
    double fl = mb_flops(&c, B, T) * M;
    const char *names[4] = {"1x1_2threads", "2x1_1f1b", "2x1_gpipe", "1x2"};
    measure *ms[4] = {&m11, &m21, &m21g, &m12};
    int nl = two ? 4 : 1;
    double bub[2] = {0, 0}, bmodel = 1.0 / (M + 1);
    for (int k = 0; k < 2 && two; k++) {
        measure *x = k ? &m21g : &m21;
        for (int q = 0; q < 2; q++) bub[k] += 0.5 * (1 - x->busy[q] / x->step_s);
    }
    core_log("%-14s %12s %10s %12s\n", "layout", "tokens/s", "step s", "of 2x peak");
    for (int k = 0; k < nl; k++)
        core_log("%-14s %12.0f %10.3f %12.3f\n", names[k], (double)n / ms[k]->step_s,
                 ms[k]->step_s, fl / ms[k]->step_s / 1e9 / (2 * peak));
    if (two)
        core_log("pipeline bubble (2 stages, %d micro-batches): measured 1F1B %.3f (stage busy "
                 "%.3f, %.3f of %.3f s), GPipe %.3f; model (PP-1)/(m+PP-1) = %.3f\n", M, bub[0],
                 m21.busy[0], m21.busy[1], m21.step_s, bub[1], bmodel);
    core_log("sgemm 1024^3, 1 thread: %.1f GFLOP/s\n", peak);
    if (json) {
        cJSON *o = cJSON_CreateObject(), *t = cJSON_CreateObject(), *f = cJSON_CreateObject();
        for (int k = 0; k < nl; k++) {
            cJSON_AddNumberToObject(t, names[k], (double)n / ms[k]->step_s);
            cJSON_AddNumberToObject(f, names[k], fl / ms[k]->step_s / 1e9 / (2 * peak));
        }
        cJSON_AddItemToObject(o, "tokens_per_s", t);
        cJSON_AddNumberToObject(o, "sgemm_gflops", peak);
        cJSON_AddItemToObject(o, "fraction_of_peak", f);
        if (two) {
            cJSON_AddNumberToObject(o, "bubble_measured", bub[0]);
            cJSON_AddNumberToObject(o, "bubble_measured_gpipe", bub[1]);
            cJSON_AddNumberToObject(o, "bubble_model", bmodel);
            cJSON *sb = cJSON_CreateArray();
            for (int q = 0; q < 2; q++) cJSON_AddItemToArray(sb, cJSON_CreateNumber(m21.busy[q]));
            cJSON_AddItemToObject(o, "stage_busy_s", sb);
            cJSON_AddNumberToObject(o, "step_s_2x1", m21.step_s);
        } else {
            cJSON_AddNullToObject(o, "bubble_measured");
            cJSON_AddNumberToObject(o, "bubble_model", bmodel);
        }
        cJSON_AddNumberToObject(o, "micro_batches", M);
        cJSON_AddNumberToObject(o, "batch", B);
        cJSON_AddNumberToObject(o, "seqlen", T);
        cJSON_AddNumberToObject(o, "ranks", dist_size(d));
        cli_json_emit(d, o);
    }
    return 0;
}
