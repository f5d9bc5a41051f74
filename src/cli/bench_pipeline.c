/* losa bench pipeline [--model STORE.h5] [--batch B] [--seqlen T]
 *                     [--micro M] [--iters K] [--warmup W] [--split LIST] [--json]
 * Training throughput (masked LoRA, dropout 0.1) of a minillama-shaped model
 * (random weights pruned 50% by magnitude: D 256, F 768, L 6, H 8, Hkv 4,
 * V 32000) or of a store, for three ways of using two cores:
 *   (1,1)  one rank with 2 BLAS threads (rank 0 alone; rank 1 waits),
 *   (2,1)  a 2-stage pipeline, 1 thread per rank (1F1B; GPipe also timed),
 *   (1,2)  2 data-parallel replicas, 1 thread per rank.
 * Run it under `mpirun -np 2` (the layouts are switched in-process with
 * dist_set_layout); with one rank only (1,1) is measured.  An optimizer
 * step is M micro-batches of B x T tokens; tokens/s = M B T / step time
 * (best of K steps after --warmup W untimed ones, 2 by default, on every
 * layout and split afresh: the first steps of a layout touch its fresh
 * buffers, create the GEMM engine's primitives for the shapes and make the
 * first exchanges; the bubble is the steady state's; JSON warmup_steps).
 * Stage split of (2,1): --split LIST, comma-separated, each `cost` (the
 * run's split: model_split_stages under model_stage_cost_train at this
 * micro-batch, what `losa run` and `losa plan` use), `params` (the split by
 * parameter count of earlier versions: the head charged V*D / (layer
 * params) layers) or layer counts `4+2`; default `cost`.  With several, the
 * 1F1B pipeline is timed for each in alternating rounds (the pairs share
 * the machine's load) and each is reported.
 * Head and loss: measured on rank 0 with one thread, the other rank running
 * the same beside it (bench_head_cost_layers, in layers: what
 * parallel.head_cost_layers takes) and used by the `cost` split and the
 * models below as losa_stage_cost uses the deck key; --head-cost-layers H
 * gives it instead (0: the cost model's).  The same steps measure the
 * layers' forward share (as bench train's layer_forward_share), which the
 * models below take as losa plan takes bench train's
 * (head_cost_layers, layer_forward_share in the JSON).
 * Pipeline bubble: per stage, the idle fraction of the step 1 - busy/wall
 * (busy = this rank's forward/backward/update compute), averaged over the
 * stages.  Models: `bubble_model` the 1F1B bubble of the split under the
 * cost model (stage micro-batch times t_s, split into the forward step, the
 * backward and the per-step work's 1 / M share by model_stage_cost's
 * layer_fwd and layer_step, the last stage's forward with the head: wall =
 * the trainer's 1F1B order and then the slowest stage's per-step work,
 * lora_schedule_seconds, and the bubble 1 - M mean t / wall);
 * `bubble_schedule` the same with the measured t_s = busy_s / M, forward
 * steps stage_forward_s / M and per-step work stage_update_s (what the
 * schedule alone implies; the per-step work, the adapters' dense dDelta
 * projected, the optimizer and Delta formed again for the stage's layers,
 * runs on every stage at once after the micro-batches, so the stage with
 * the most layers holds the others: on minillama's 5+1 split 46 of a 650
 * ms step on stage 0);
 * `bubble_model_msgs` bubble_model with each stage's micro-batch in seconds
 * (the cost model's stage ratio, the measured busy seconds per unit of
 * cost) plus one measured stage exchange (`exchange_s`: a blocking
 * send+receive of B x T x D floats each way, the 1F1B steady state's
 * pairing) per micro-batch on each stage's time;
 * `bubble_model_head_modelled` bubble_model with the cost model's head in
 * place of the measured one (the model before the head was measured); and
 * (PP-1)/(M+PP-1) for equal stages.
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

/* Not collective: stage p of n with layers per stage split (random
 * weights, or read from the store). */
static losa_status stage_load(const char *model, const model_config *c, int p, int n,
                              const int *split, model_stage *s)
{
    losa_status st = model_stage_build_split(s, c, p, n, split);
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
    double fwd[8];   /* of which its forward steps (lora_step_stats forward_seconds) */
    double upd[8];   /* of which the step's own work (update_seconds) */
    int pp;
} measure;

/* Collective when d != NULL: K timed steps of the layout d is set to (or
 * the whole model on this process when d == NULL). */
static losa_status run_layout(dist_ctx *d, const char *model, const model_config *c,
                              const int *split, const lora_train_config *tc, int warm,
                              int iters, const int *tok, const int *tgt, measure *out)
{
    model_stage s;
    lora_adapters ad;
    lora_trainer tr;
    lora_config lc;
    lora_config_default(&lc);
    int pp = d ? dist_n_stages(d) : 1, p = d ? dist_stage(d) : 0;
    losa_status st = stage_load(model, c, p, pp, pp > 1 ? split : NULL, &s);
    if (st == LOSA_OK) st = lora_adapters_build(&ad, &s, &lc);
    if (st == LOSA_OK) st = lora_trainer_build(&tr, d, &s, &ad, tc);
    if (d) st = dist_agree(d, st);
    if (st != LOSA_OK) return st;
    if (out->pp != pp || out->step_s <= 0) { /* else: another round, keep the best */
        memset(out, 0, sizeof *out);
        out->pp = pp;
        out->step_s = 1e30;
    }
    lora_step_stats ss;
    for (int k = 0; k < warm + iters && st == LOSA_OK; k++) {
        if (d) dist_barrier(d);
        st = lora_train_step(&tr, tok, tgt, &ss);
        double v[2 + 24] = {ss.seconds, 0};
        if (d) { /* wall = slowest rank; busy per stage from replica 0 */
            memset(v, 0, sizeof v);
            v[0] = dist_rank(d) == 0 ? ss.seconds : 0;
            if (dist_replica(d) == 0 && p < 8)
                v[2 + p] = ss.busy_seconds, v[10 + p] = ss.forward_seconds,
                v[18 + p] = ss.update_seconds;
            dist_sum_doubles(d, v, 26);
        } else {
            v[2] = ss.busy_seconds;
            v[10] = ss.forward_seconds;
            v[18] = ss.update_seconds;
        }
        if (k >= warm && v[0] < out->step_s) {
            out->step_s = v[0];
            for (int q = 0; q < pp && q < 8; q++)
                out->busy[q] = v[2 + q], out->fwd[q] = v[10 + q], out->upd[q] = v[18 + q];
        }
    }
    lora_trainer_free(&tr);
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
    return d ? dist_agree(d, st) : st;
}

/* Not collective.  The head and loss of one training micro-batch of c
 * under (lc, tc), in units of one layer, measured with this process's GEMM
 * threads: iters steps (after a warm-up) of the whole model on this
 * process (random weights pruned 50 %), the trainer's head + loss seconds
 * (lora_step_stats head_seconds) over a layer's share of the rest of the
 * step's compute (busy less head and embedding, over the layers; the
 * optimizer's share with the layers as in model_stage_cost_train); the
 * median of the steps.  What parallel.head_cost_layers takes.  0 on
 * failure. */
double bench_head_cost_layers(const model_config *c, const lora_config *lc,
                              const lora_train_config *tc, int iters, double *fwd_share)
{
    int64_t n = (int64_t)tc->grad_accum * tc->B * tc->T;
    int *tok = core_calloc((size_t)n, sizeof(int)), *tgt = core_calloc((size_t)n, sizeof(int));
    for (int64_t i = 0; i < n; i++) tok[i] = (int)((i * 7919) % c->vocab_size);
    for (int64_t i = 0; i < n; i++) tgt[i] = (i % tc->T == tc->T - 1) ? -1 : tok[i + 1];
    double *r = core_calloc((size_t)iters, sizeof(double)),
           *fs = core_calloc((size_t)iters, sizeof(double));
    int done = 0;
    model_stage st;
    lora_adapters ad;
    lora_trainer tr;
    lora_train_config t = *tc;
    t.steps = iters + 1;
    losa_status s = stage_load(NULL, c, 0, 1, NULL, &st);
    if (s == LOSA_OK) {
        if ((s = lora_adapters_build(&ad, &st, lc)) == LOSA_OK) {
            if ((s = lora_trainer_build(&tr, NULL, &st, &ad, &t)) == LOSA_OK) {
                lora_step_stats ss;
                for (int k = 0; k <= iters && s == LOSA_OK; k++) {
                    s = lora_train_step(&tr, tok, tgt, &ss);
                    double h = 0, f = 0;
                    if (s == LOSA_OK) bench_step_shares(&ss, c->n_layers, &h, &f);
                    if (k > 0 && h > 0) r[done] = h, fs[done++] = f;
                }
                lora_trainer_free(&tr);
            }
            lora_adapters_free(&ad, &st);
        }
        model_stage_free(&st);
    }
    double h = s == LOSA_OK && done > 0 ? bench_median(r, done) : 0;
    if (fwd_share) *fwd_share = s == LOSA_OK && done > 0 ? bench_median(fs, done) : 0;
    core_free(r);
    core_free(fs);
    core_free(tok);
    core_free(tgt);
    return h;
}

#define MAX_SPLITS 4

/* One split of the (2,1) pipeline: its name, layers per stage and the
 * modelled stage costs (per micro-batch, the cost model's units). */
typedef struct {
    char name[32];
    int count[2];
    double cost[2];
    double fwd[2]; /* of which the forward step (the last stage's with the head) */
    double upd[2]; /* the stage's per-step work (layer_step x M per layer, once a step) */
    measure m;
} split_case;

/* The 2 stages' modelled costs under k with count layers each and the
 * layers' forward share (0: the cost model's), split as losa plan's time
 * model splits them (model_stage_train_parts): per micro-batch (cost, with
 * the per-step work's 1 / M share), of which the forward step (fwd), and
 * the per-step work once a step (upd). */
static void stage_costs(const model_stage_cost *k, const int *count, int M, double fwd_share,
                        double *cost, double *fwd, double *upd)
{
    for (int q = 0; q < 2; q++) {
        double bwd;
        model_stage_train_parts(k, count[q], q == 0, q == 1, M, fwd_share, &fwd[q], &bwd, &upd[q]);
        cost[q] = fwd[q] + bwd + upd[q] / M;
    }
}

/* Not collective: resolve item (cost | params | A+B) for 2 stages of c. */
static losa_status split_resolve(const char *item, const model_config *c, const lora_config *lc,
                                 const lora_train_config *tc, double head_layers,
                                 double fwd_share, split_case *sc)
{
    model_stage_cost k;
    model_stage_cost_train(c, tc->B, tc->T, tc->grad_accum, lc->r_max, lc->dropout > 0, tc->ckpt, &k);
    if (head_layers > 0) k.head = head_layers * k.layer; /* as losa_stage_cost */
    int first[2], L = c->n_layers;
    snprintf(sc->name, sizeof sc->name, "%s", item);
    if (!strcmp(item, "cost")) {
        model_split_stages(L, 2, &k, first, sc->count);
    } else if (!strcmp(item, "params")) {
        double layer = 2.0 * c->dim + (double)model_map_weights(c);
        model_stage_cost kp = {.layer = layer, .embed = 0,
                               .head = (double)c->vocab_size * c->dim};
        model_split_stages(L, 2, &kp, first, sc->count);
    } else {
        char tail;
        if (sscanf(item, "%d+%d%c", &sc->count[0], &sc->count[1], &tail) != 2 ||
            sc->count[0] < 1 || sc->count[1] < 1 || sc->count[0] + sc->count[1] != L)
            return core_err(LOSA_ERR_ARG, "--split: '%s' (expected cost, params or A+B with "
                            "A, B >= 1 and A + B = %d layers)", item, L);
    }
    /* the layers' forward as measured, as losa_time_plan takes bench
     * train's layer_forward_share */
    stage_costs(&k, sc->count, tc->grad_accum, fwd_share, sc->cost, sc->fwd, sc->upd);
    return LOSA_OK;
}

/* 1F1B bubble of 2 stages whose micro-batch costs t (with the 1 / M share
 * of the per-step work u) split into forward steps f, backwards
 * t - f - u / M and the step's own work u, one exchange of x seconds: wall
 * = the trainer's 1F1B schedule and then the slowest stage's u
 * (lora_schedule_seconds), bubble = mean over the stages of 1 - M t / wall. */
static double bubble_of(const double *t, const double *f, const double *u, int M, double x)
{
    double fw[2] = {f[0], f[1]}, bw[2] = {t[0] - f[0] - u[0] / M, t[1] - f[1] - u[1] / M};
    double wall = lora_schedule_seconds(LORA_SCHEDULE_1F1B, 2, M, fw, bw, x, u);
    return wall > 0 ? 1 - M * 0.5 * (t[0] + t[1]) / wall : 0;
}

/* Collective on the (2,1) layout: the seconds of one blocking exchange of n
 * floats each way between the two stages (dist_sendrecv_*: the 1F1B steady
 * state's pairing of activations forward with a gradient back), the median
 * of 21 after a barrier each, as rank 0 sees it. */
static double exchange_s(dist_ctx *d, size_t n)
{
    float *x = core_calloc(n, sizeof(float)), *y = core_calloc(n, sizeof(float));
    double t[21];
    for (int k = 0; k < 21; k++) {
        dist_barrier(d);
        double t0 = core_time();
        if (dist_stage(d) == 0) dist_sendrecv_next(d, x, n, 901, y, n, 902);
        else dist_sendrecv_prev(d, x, n, 902, y, n, 901);
        t[k] = core_time() - t0;
    }
    double m = bench_median(t, 21);
    dist_bcast(d, &m, sizeof m, 0);
    core_free(x);
    core_free(y);
    return m;
}

/* The 1F1B bubble of bubble_of with each stage's micro-batch cost in
 * seconds (cost x scale) and one exchange of x seconds. */
static double bubble_msgs(const double *cost, const double *fwd, const double *upd,
                          double scale, double x, int M)
{
    double t[2] = {cost[0] * scale, cost[1] * scale}, f[2] = {fwd[0] * scale, fwd[1] * scale},
           u[2] = {upd[0] * scale, upd[1] * scale};
    return bubble_of(t, f, u, M, x);
}

int bench_pipeline(dist_ctx *d, int argc, char **argv)
{
    const char *model = NULL, *v, *splits = "cost";
    int B = 1, T = 128, M = 8, iters = 2, warm = 2, json = 0;
    double head_opt = -1; /* < 0: measure */
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--model"))) model = v;
        else if ((v = cli_opt(argc, argv, &i, "--batch"))) s = cli_int("--batch", v, 1, 65536, &B);
        else if ((v = cli_opt(argc, argv, &i, "--seqlen"))) s = cli_int("--seqlen", v, 2, 1048576, &T);
        else if ((v = cli_opt(argc, argv, &i, "--micro"))) s = cli_int("--micro", v, 1, 65536, &M);
        else if ((v = cli_opt(argc, argv, &i, "--iters"))) s = cli_int("--iters", v, 1, 1000000, &iters);
        else if ((v = cli_opt(argc, argv, &i, "--warmup"))) s = cli_int("--warmup", v, 0, 1000000, &warm);
        else if ((v = cli_opt(argc, argv, &i, "--split"))) splits = v;
        else if ((v = cli_opt(argc, argv, &i, "--head-cost-layers"))) {
            char *end = NULL;
            head_opt = strtod(v, &end);
            if (!end || *end || !(head_opt >= 0 && head_opt < 1e6))
                s = core_err(LOSA_ERR_ARG, "--head-cost-layers: expected a number >= 0 "
                             "(0 = the cost model's), got '%s'", v);
        }
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa bench pipeline "
                          "[--model STORE.h5] [--batch B] [--seqlen T] [--micro M] [--iters K] "
                          "[--warmup W] [--split cost|params|A+B,...] [--head-cost-layers H] [--json])", argv[i]);
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
    if (s == LOSA_OK && c.n_layers < 2)
        s = core_err(LOSA_ERR_ARG, "bench pipeline: %d layer(s), 2 stages need 2", c.n_layers);
    lora_train_config tc;
    lora_train_config_default(&tc);
    tc.B = B;
    tc.T = T;
    tc.grad_accum = M;
    tc.steps = warm + iters;
    lora_config lc;
    lora_config_default(&lc);
    split_case sc[MAX_SPLITS];
    memset(sc, 0, sizeof sc);
    int ns = 0;
    {
        char buf[256], *save = NULL;
        snprintf(buf, sizeof buf, "%s", splits);
        for (char *it = strtok_r(buf, ",", &save); it && s == LOSA_OK;
             it = strtok_r(NULL, ",", &save)) {
            if (ns == MAX_SPLITS)
                s = core_err(LOSA_ERR_ARG, "--split: at most %d splits", MAX_SPLITS);
            else s = split_resolve(it, &c, &lc, &tc, 0, 0, &sc[ns++]);
        }
        if (s == LOSA_OK && ns == 0) s = core_err(LOSA_ERR_ARG, "--split: empty list");
    }
    if (cli_fail(d, "bench pipeline", dist_agree(d, s))) return 1;
    int64_t n = (int64_t)M * B * T;
    int *tok = malloc(sizeof(int) * n), *tgt = malloc(sizeof(int) * n);
    for (int64_t i = 0; i < n; i++) tok[i] = (int)((i * 7919) % c.vocab_size);
    for (int64_t i = 0; i < n; i++) tgt[i] = (i % T == T - 1) ? -1 : tok[i + 1];
    core_log("bench pipeline: %d micro-batches of %d x %d per step, %d layers, D %d, F %d, V %d, "
             "%d rank(s)\n", M, B, T, c.n_layers, c.dim, c.hidden_dim, c.vocab_size, dist_size(d));

    /* (1,1): rank 0 alone with 2 GEMM threads; sgemm peak with 1 thread */
    measure m11 = {0}, m21g = {0}, m12 = {0};
    double peak = 0, head_meas = 0, fwd_meas = 0, xchg = 0;
    /* the head's cost with one thread and the other rank computing beside
     * it, as a pipeline stage runs it (every rank measures, rank 0's
     * counts: the two share the L3 and the memory bandwidth) */
    kern_gemm_threads(1);
    double h = bench_head_cost_layers(&c, &lc, &tc, iters, &fwd_meas);
    head_meas = head_opt < 0 ? h : head_opt;
    dist_barrier(d);
    if (dist_rank(d) == 0) {
        peak = bench_sgemm_gflops(1024, 1024, 1024, 0.5);
        kern_gemm_threads(2);
        s = run_layout(NULL, model, &c, NULL, &tc, warm, iters, tok, tgt, &m11);
        kern_gemm_threads(1);
    }
    dist_barrier_idle(d); /* rank 1 sleeps meanwhile: rank 0 has both cores */
    s = dist_agree(d, s);
    dist_bcast(d, &m11, sizeof m11, 0);
    dist_bcast(d, &peak, sizeof peak, 0);
    dist_bcast(d, &head_meas, sizeof head_meas, 0);
    dist_bcast(d, &fwd_meas, sizeof fwd_meas, 0);
    /* the splits and their modelled costs with the head as measured */
    for (int q = 0; q < ns && s == LOSA_OK; q++) {
        char item[32];
        memcpy(item, sc[q].name, sizeof item);
        s = split_resolve(item, &c, &lc, &tc, head_meas, fwd_meas, &sc[q]);
    }
    model_stage_cost k0;
    model_stage_cost_train(&c, tc.B, tc.T, tc.grad_accum, lc.r_max, lc.dropout > 0, tc.ckpt, &k0);
    core_log("head + loss: %.2f layers %s (cost model %.2f)\n",
             head_meas > 0 ? head_meas : k0.head / k0.layer,
             head_opt < 0 ? (head_meas > 0 ? "measured" : "(measurement failed: modelled)")
                          : "given", k0.head / k0.layer);
    int two = dist_size(d) == 2 && s == LOSA_OK;
    if (two) {
        kern_gemm_threads(1);
        s = dist_set_layout(d, 2, 1);
        if (s == LOSA_OK) xchg = exchange_s(d, (size_t)B * T * c.dim);
        /* the 1F1B splits in alternating rounds (one round for one split) */
        int rounds = ns > 1 ? 3 : 1;
        for (int k = 0; k < rounds && s == LOSA_OK; k++)
            for (int q = 0; q < ns && s == LOSA_OK; q++)
                s = run_layout(d, model, &c, sc[q].count, &tc, warm, iters, tok, tgt, &sc[q].m);
        lora_train_config tg = tc;
        tg.schedule = LORA_SCHEDULE_GPIPE;
        if (s == LOSA_OK) s = run_layout(d, model, &c, sc[0].count, &tg, warm, iters, tok, tgt, &m21g);
        if (s == LOSA_OK && (s = dist_set_layout(d, 1, 2)) == LOSA_OK)
            s = run_layout(d, model, &c, NULL, &tc, warm, iters, tok, tgt, &m12);
        dist_set_layout(d, 2, 1);
    }
    free(tok);
    free(tgt);
    if (cli_fail(d, "bench pipeline", s)) return 1;
    double fl = mb_flops(&c, B, T) * M;
    const char *names[4] = {"1x1_2threads", "2x1_1f1b", "2x1_gpipe", "1x2"};
    measure *ms[4] = {&m11, &sc[0].m, &m21g, &m12};
    int nl = two ? 4 : 1;
    double bequal = 1.0 / (M + 1), bub[MAX_SPLITS], bsched[MAX_SPLITS], bmodel[MAX_SPLITS], bmodel0[MAX_SPLITS],
           bmsgs[MAX_SPLITS], bgpipe = 0;
    for (int q = 0; q < ns; q++) {
        measure *x = &sc[q].m;
        double t[2] = {x->busy[0] / M, x->busy[1] / M}, tf[2] = {x->fwd[0] / M, x->fwd[1] / M};
        bub[q] = 0;
        for (int p = 0; p < 2 && two; p++) bub[q] += 0.5 * (1 - x->busy[p] / x->step_s);
        bsched[q] = bubble_of(t, tf, x->upd, M, 0);
        bmodel[q] = bubble_of(sc[q].cost, sc[q].fwd, sc[q].upd, M, 0);
        /* the cost model's stages in seconds (the measured busy time of
         * the step per unit of modelled cost: units only, the stages'
         * ratio stays the model's) plus the measured exchange */
        double cs = sc[q].cost[0] + sc[q].cost[1], bs = x->busy[0] + x->busy[1];
        bmsgs[q] = two && cs > 0 ? bubble_msgs(sc[q].cost, sc[q].fwd, sc[q].upd, bs / (M * cs), xchg, M)
                                 : bmodel[q];
        /* the same split under the cost model's head (no measurement) */
        double c0[2], f0[2], u0[2];
        stage_costs(&k0, sc[q].count, M, 0, c0, f0, u0);
        bmodel0[q] = bubble_of(c0, f0, u0, M, 0);
    }
    for (int p = 0; p < 2 && two; p++) bgpipe += 0.5 * (1 - m21g.busy[p] / m21g.step_s);
    core_log("%-14s %12s %10s %12s\n", "layout", "tokens/s", "step s", "of 2x peak");
    for (int k = 0; k < nl; k++)
        core_log("%-14s %12.0f %10.3f %12.3f\n", names[k], (double)n / ms[k]->step_s,
                 ms[k]->step_s, fl / ms[k]->step_s / 1e9 / (2 * peak));
    if (two) {
        for (int q = 0; q < ns; q++)
            core_log("pipeline split %-7s %d+%d: 1F1B bubble measured %.3f, model %.3f (head "
                     "modelled %.3f; cost "
                     "model: stages %.2f : 1, forward shares %.2f, %.2f), schedule %.3f (stage busy "
                     "%.3f, %.3f of %.3f s; forward steps %.3f, %.3f s; per-step work %.3f, "
                     "%.3f s)\n",
                     sc[q].name, sc[q].count[0], sc[q].count[1], bub[q], bmodel[q], bmodel0[q],
                     sc[q].cost[0] / sc[q].cost[1], sc[q].fwd[0] / sc[q].cost[0],
                     sc[q].fwd[1] / sc[q].cost[1], bsched[q], sc[q].m.busy[0], sc[q].m.busy[1],
                     sc[q].m.step_s, sc[q].m.fwd[0], sc[q].m.fwd[1], sc[q].m.upd[0],
                     sc[q].m.upd[1]);
        core_log("GPipe (split %s) bubble %.3f; equal stages (PP-1)/(m+PP-1) = %.3f\n",
                 sc[0].name, bgpipe, bequal);
        core_log("stage exchange of %d x %d x %d floats each way: %.1f us (measured); 1F1B "
                 "bubble model with it: %.3f\n", B, T, c.dim, xchg * 1e6, bmsgs[0]);
    }
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
        cJSON *arr = cJSON_CreateArray();
        for (int q = 0; q < ns; q++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "split", sc[q].name);
            cJSON_AddItemToObject(e, "stage_layers", cJSON_CreateIntArray(sc[q].count, 2));
            cJSON_AddItemToObject(e, "stage_cost", cJSON_CreateDoubleArray(sc[q].cost, 2));
            cJSON_AddNumberToObject(e, "bubble_model", bmodel[q]);
            cJSON_AddNumberToObject(e, "bubble_model_head_modelled", bmodel0[q]);
            cJSON_AddNumberToObject(e, "bubble_model_msgs", bmsgs[q]);
            if (two) {
                cJSON_AddNumberToObject(e, "bubble_measured", bub[q]);
                cJSON_AddNumberToObject(e, "bubble_schedule", bsched[q]);
                cJSON_AddItemToObject(e, "stage_busy_s", cJSON_CreateDoubleArray(sc[q].m.busy, 2));
                cJSON_AddItemToObject(e, "stage_forward_s", cJSON_CreateDoubleArray(sc[q].m.fwd, 2));
                cJSON_AddItemToObject(e, "stage_update_s", cJSON_CreateDoubleArray(sc[q].m.upd, 2));
                cJSON_AddItemToObject(e, "stage_forward_cost", cJSON_CreateDoubleArray(sc[q].fwd, 2));
                cJSON_AddNumberToObject(e, "step_s", sc[q].m.step_s);
            }
            cJSON_AddItemToArray(arr, e);
        }
        cJSON_AddItemToObject(o, "splits", arr);
        /* the first split's numbers at the top level */
        if (two) {
            cJSON_AddNumberToObject(o, "bubble_measured", bub[0]);
            cJSON_AddNumberToObject(o, "bubble_measured_gpipe", bgpipe);
            cJSON_AddItemToObject(o, "stage_busy_s", cJSON_CreateDoubleArray(sc[0].m.busy, 2));
            cJSON_AddNumberToObject(o, "step_s_2x1", sc[0].m.step_s);
        } else {
            cJSON_AddNullToObject(o, "bubble_measured");
        }
        cJSON_AddNumberToObject(o, "bubble_model", bmodel[0]);
        cJSON_AddNumberToObject(o, "bubble_model_msgs", bmsgs[0]);
        if (two) cJSON_AddNumberToObject(o, "exchange_s", xchg);
        cJSON_AddNumberToObject(o, "head_cost_layers", head_meas > 0 ? head_meas : k0.head / k0.layer);
        cJSON_AddNumberToObject(o, "head_cost_layers_model", k0.head / k0.layer);
        cJSON_AddNumberToObject(o, "layer_forward_share", fwd_meas);
        cJSON_AddNumberToObject(o, "bubble_equal_stages", bequal);
        cJSON_AddItemToObject(o, "stage_layers", cJSON_CreateIntArray(sc[0].count, 2));
        cJSON_AddNumberToObject(o, "micro_batches", M);
        cJSON_AddNumberToObject(o, "warmup_steps", warm); /* untimed, per layout */
        cJSON_AddNumberToObject(o, "timed_steps", iters);
        cJSON_AddNumberToObject(o, "batch", B);
        cJSON_AddNumberToObject(o, "seqlen", T);
        cJSON_AddNumberToObject(o, "ranks", dist_size(d));
        cli_json_emit(d, o);
    }
    return 0;
}
