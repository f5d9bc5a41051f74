/* losa plan: the time of the run (losa_time_plan) and the layout advisor.
 * Rates: --bench FILE (the --json of `losa bench forward` / `bench train` /
 * `bench prune` run on the target node: forward_gflops, step_gflops,
 * sgemm_gflops; the pruners' statistics, solve and mask rates),
 * --gflops G (one rate for every kind of work), or, with neither, this
 * machine's sgemm measured now with forward and training assumed at
 * PLAN_DEFAULT_EFFICIENCY of it.  Every assumption is printed. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plan.h"

#define PLAN_DEFAULT_EFFICIENCY 0.5

losa_status plan_time_opt(plan_time_opts *o, int argc, char **argv, int *i, int *taken)
{
    const char *v;
    losa_status s = LOSA_OK;
    *taken = 1;
    if ((v = cli_opt(argc, argv, i, "--bench"))) {
        if (o->n_bench >= PLAN_MAX_BENCH)
            return core_err(LOSA_ERR_ARG, "--bench: at most %d files", PLAN_MAX_BENCH);
        o->bench[o->n_bench++] = v;
    } else if ((v = cli_opt(argc, argv, i, "--gflops"))) {
        s = cli_double("--gflops", v, 1e-3, 1e9, &o->gflops);
    } else if ((v = cli_opt(argc, argv, i, "--touch-gbs"))) {
        s = cli_double("--touch-gbs", v, 0, 1e6, &o->touch_gbs);
    } else if ((v = cli_opt(argc, argv, i, "--net-gbps"))) {
        s = cli_double("--net-gbps", v, 1e-3, 1e6, &o->net_gbps);
    } else if ((v = cli_opt(argc, argv, i, "--net-latency-us"))) {
        s = cli_double("--net-latency-us", v, 0, 1e6, &o->net_latency_us);
    } else if ((v = cli_opt(argc, argv, i, "--eval-tokens"))) {
        double x;
        s = cli_double("--eval-tokens", v, 0, 1e15, &x);
        o->eval_tokens = (int64_t)x;
    } else {
        *taken = 0;
    }
    return s;
}

void plan_time_opts_default(plan_time_opts *o)
{
    memset(o, 0, sizeof *o);
    o->net_gbps = 100;
    o->net_latency_us = 2;
    o->eval_tokens = -1;
    o->touch_gbs = -1;
}

/* A number of a bench JSON, or 0. */
static double json_num(const cJSON *j, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(x) ? x->valuedouble : 0;
}

/* The pruner rates of a `losa bench prune --json` object (its layer shape
 * and token count turned into losa_pruner_flops). */
static void prune_rates(const cJSON *j, losa_rates *rt)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "breakdown");
    const cJSON *bw = cJSON_GetObjectItemCaseSensitive(b, "wanda");
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(b, "sparsegpt");
    model_config c = {.dim = (int)json_num(j, "dim"), .hidden_dim = (int)json_num(j, "hidden_dim"),
                      .n_heads = (int)json_num(j, "n_heads"),
                      .n_kv_heads = (int)json_num(j, "n_kv_heads")};
    double weights = (double)model_map_weights(&c), stats, hinv, sweep;
    losa_pruner_flops(&c, json_num(j, "n") * json_num(j, "seqlen"), &stats, &hinv, &sweep);
    double st = json_num(bs, "stats_s"), sh = json_num(bs, "hinv_s"),
           sv = json_num(bs, "sweep_s") + json_num(bs, "update_s");
    if (st > 0) rt->prune_stats_gflops = stats / st / 1e9;
    if (sh > 0) rt->prune_hinv_gflops = hinv / sh / 1e9;
    if (sv > 0) rt->prune_solve_gflops = sweep / sv / 1e9;
    if (json_num(bw, "mask_s") > 0) rt->mask_wps[0] = weights / json_num(bw, "mask_s");
    if (json_num(bs, "mask_s") > 0) rt->mask_wps[1] = weights / json_num(bs, "mask_s");
}

static losa_status read_bench(const char *path, losa_rates *rt, int *got_fwd, int *got_train,
                              int *got_prune)
{
    char *buf = NULL;
    size_t n = 0;
    if (core_read_file(path, &buf, &n) != LOSA_OK)
        return core_err(LOSA_ERR_IO, "--bench %s: cannot open", path);
    const char *start = strchr(buf, '{');
    cJSON *j = start ? cJSON_Parse(start) : NULL;
    free(buf);
    if (!j)
        return core_err(LOSA_ERR_FORMAT, "--bench %s: not the JSON of `losa bench "
                        "forward|train|prune --json`", path);
    /* a run's rate is the median step's, not the best one's */
    double fw = json_num(j, "forward_gflops_median"), tr = json_num(j, "step_gflops_median");
    if (fw <= 0) fw = json_num(j, "forward_gflops");
    if (tr <= 0) tr = json_num(j, "step_gflops");
    double sg = json_num(j, "sgemm_gflops"), ft = json_num(j, "first_touch_gbs");
    if (json_num(j, "layers_gflops_median") > 0) rt->layer_gflops = json_num(j, "layers_gflops_median");
    if (json_num(j, "head_gflops_median") > 0) rt->head_gflops = json_num(j, "head_gflops_median");
    if (ft > 0) rt->touch_gbs = ft;
    /* the set-up's rates (bench forward; absent from older JSONs: defaults) */
    if (json_num(j, "start_seconds") > 0) rt->start_s = json_num(j, "start_seconds");
    if (json_num(j, "store_load_gbs") > 0) rt->store_gbs = json_num(j, "store_load_gbs");
    if (json_num(j, "tokenize_bytes_per_s") > 0)
        rt->tokenize_bps = json_num(j, "tokenize_bytes_per_s");
    /* of a layer's micro-batch less the step's own work since the update
     * was timed apart; an older bench train's share is of the whole layer
     * (a few % lower) */
    double share = json_num(j, "layer_forward_share");
    if (share != 0 && !(share > 0 && share < 1)) {
        cJSON_Delete(j);
        return core_err(LOSA_ERR_FORMAT, "--bench %s: layer_forward_share %g (expected a share "
                        "of a layer's training time: 0 < share < 1)", path, share);
    }
    if (share > 0) rt->train_fwd_share = share;
    int pr = json_num(j, "sparsegpt_s") > 0 && json_num(j, "dim") > 0 && json_num(j, "n_heads") > 0;
    if (pr) prune_rates(j, rt), *got_prune = 1;
    cJSON_Delete(j);
    if (fw <= 0 && tr <= 0 && !pr)
        return core_err(LOSA_ERR_FORMAT, "--bench %s: none of forward_gflops (bench forward), "
                        "step_gflops (bench train), sparsegpt_s with the layer shape (bench "
                        "prune) in it", path);
    if (fw > 0) rt->fwd_gflops = fw, *got_fwd = 1;
    if (tr > 0) rt->train_gflops = tr, *got_train = 1;
    if (sg > rt->gemm_gflops) rt->gemm_gflops = sg;
    return LOSA_OK;
}

losa_status plan_rates(const plan_time_opts *o, int64_t eval_tokens, int64_t text_bytes,
                       losa_rates *rt, char *why, size_t n)
{
    memset(rt, 0, sizeof *rt);
    rt->net_gbps = o->net_gbps;
    rt->net_latency_us = o->net_latency_us;
    rt->eval_tokens = eval_tokens;
    rt->text_bytes = text_bytes;
    int fw = 0, tr = 0, pr = 0;
    for (int i = 0; i < o->n_bench; i++) {
        losa_status s = read_bench(o->bench[i], rt, &fw, &tr, &pr);
        if (s != LOSA_OK) return s;
    }
    const char *src = o->n_bench ? "--bench" : "";
    double base = o->gflops;
    char measured[80] = "";
    if (base <= 0 && !(fw && tr)) {
        base = bench_sgemm_gflops(1024, 1024, 1024, 0.3);
        snprintf(measured, sizeof measured, "sgemm 1024^3 measured now on this machine: %.1f GF/s; ",
                 base);
    }
    const char *touch = rt->touch_gbs > 0 ? "--bench" : "assumed";
    if (o->touch_gbs >= 0) rt->touch_gbs = o->touch_gbs, touch = "--touch-gbs";
    else if (rt->touch_gbs <= 0) rt->touch_gbs = PLAN_DEFAULT_TOUCH_GBS;
    double eff = o->gflops > 0 ? 1 : PLAN_DEFAULT_EFFICIENCY;
    if (!fw) rt->fwd_gflops = eff * base;
    if (!tr) rt->train_gflops = eff * base;
    if (rt->gemm_gflops <= 0) rt->gemm_gflops = base > 0 ? base : rt->fwd_gflops;
    char prune[224];
    if (pr)
        snprintf(prune, sizeof prune, "pruners (--bench): statistics %.1f GF/s, SparseGPT "
                 "factorisations %.1f / sweep %.1f GF/s, masks %.3g (Wanda) / %.3g (SparseGPT) "
                 "weights/s", rt->prune_stats_gflops, rt->prune_hinv_gflops,
                 rt->prune_solve_gflops, rt->mask_wps[0], rt->mask_wps[1]);
    else
        snprintf(prune, sizeof prune, "pruners at the dense GEMM rate, masks %.3g weights/s "
                 "(assumed; pass a `bench prune --json`)", LOSA_DEFAULT_MASK_WPS);
    char split[96] = "", fshare[64] = "; the forward's share of a layer from the cost model";
    if (rt->layer_gflops > 0)
        snprintf(split, sizeof split, " (layers %.1f, head %.1f GF/s: calibration passes at the "
                 "layers' rate)", rt->layer_gflops, rt->head_gflops > 0 ? rt->head_gflops : rt->fwd_gflops);
    if (rt->train_fwd_share > 0)
        snprintf(fshare, sizeof fshare, "; the forward %.2f of a layer (--bench)", rt->train_fwd_share);
    const char *ss = rt->start_s > 0 ? "--bench" : "assumed",
               *sg = rt->store_gbs > 0 ? "--bench" : "assumed",
               *sk = rt->tokenize_bps > 0 ? "--bench" : "assumed";
    losa_rates_setup_defaults(rt);
    char setup[200];
    snprintf(setup, sizeof setup, "set-up: start %.2f s (%s), store %.2f GB/s (%s), tokenizer "
             "%.2f MB/s (%s) on %lld bytes of text", rt->start_s, ss, rt->store_gbs, sg,
             rt->tokenize_bps / 1e6, sk, (long long)text_bytes);
    snprintf(why, n, "%sforward %.1f GF/s%s (%s), training %.1f GF/s (%s%s), dense GEMM %.1f GF/s "
             "per rank; %s; fresh memory %.2f GB/s (%s); network %.1f Gbit/s, %.1f us per message; "
             "%s; eval %lld tokens",
             measured, rt->fwd_gflops, split, fw ? src : o->gflops > 0 ? "--gflops" : "assumed x0.5",
             rt->train_gflops, tr ? src : o->gflops > 0 ? "--gflops" : "assumed x0.5", fshare,
             rt->gemm_gflops, prune, rt->touch_gbs,
             touch, rt->net_gbps, rt->net_latency_us, setup, (long long)eval_tokens);
    return LOSA_OK;
}

/* ------------------------------------------------------------ printing */

void plan_time_print(const losa_time *t, const char *why)
{
    printf("time (projected wall seconds; busy = the busiest stage's rank):\n");
    printf("  %-12s %12s %12s %12s\n", "phase", "wall_s", "per_step_s", "busy_s");
    for (int q = 0; q < LOSA_N_PHASES; q++) {
        if (t->wall[q] <= 0) continue;
        double busy = 0;
        for (int s = 0; s < t->pp; s++) busy = t->busy[q][s] > busy ? t->busy[q][s] : busy;
        char per[32] = "";
        if (t->step[q] > 0) snprintf(per, sizeof per, "%.2f", t->step[q]);
        printf("  %-12s %12.2f %12s %12.2f\n", losa_phase_name((losa_phase)q), t->wall[q], per,
               busy);
    }
    printf("  %-12s %12.2f  (%.2f h)\n", "total", t->total, t->total / 3600);
    printf("assumptions: %s\n", why);
}

void plan_time_json(cJSON *o, const losa_time *t, const char *why)
{
    cJSON *w = cJSON_AddObjectToObject(o, "wall_seconds");
    for (int q = 0; q < LOSA_N_PHASES; q++)
        if (t->wall[q] > 0) cJSON_AddNumberToObject(w, losa_phase_name((losa_phase)q), t->wall[q]);
    cJSON_AddNumberToObject(w, "total", t->total);
    cJSON *ps = cJSON_AddObjectToObject(o, "step_seconds");
    for (int q = 0; q < LOSA_N_PHASES; q++)
        if (t->step[q] > 0) cJSON_AddNumberToObject(ps, losa_phase_name((losa_phase)q), t->step[q]);
    cJSON_AddStringToObject(o, "time_assumptions", why);
}

void plan_time_rank_json(cJSON *e, const losa_time *t, int stage)
{
    cJSON *sec = cJSON_AddObjectToObject(e, "seconds");
    for (int q = 0; q < LOSA_N_PHASES; q++)
        if (t->busy[q][stage] > 0)
            cJSON_AddNumberToObject(sec, losa_phase_name((losa_phase)q), t->busy[q][stage]);
}
