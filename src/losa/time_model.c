/* The time model of `losa run` (include/losa.h, losa_time_plan): seconds per
 * phase from the FLOP counts of model_forward_flops / model_train_flops,
 * rates measured by `losa bench` (or given), the pipeline schedule and the
 * network.  Not collective. */
#include <math.h>
#include <string.h>

#include "dist.h"
#include "losa.h"
#include "settings.h"

void losa_stage_cost(const run_settings *rs, const model_config *c, model_stage_cost *k)
{
    const lora_train_config *tc = &rs->train.tc;
    model_stage_cost_train(c, tc->B, tc->T, tc->grad_accum, rs->lora.lc.r_max, rs->lora.lc.dropout > 0, tc->ckpt,
                           k);
    /* the head and loss as measured (parallel.head_cost_layers), in units of
     * the modelled layer: the split and the time model both read k */
    if (rs->parallel.head_cost_layers > 0) k->head = rs->parallel.head_cost_layers * k->layer;
}

void losa_stage_split(const run_settings *rs, const model_config *c, int pp, int *first,
                      int *count)
{
    model_stage_cost k;
    losa_stage_cost(rs, c, &k);
    model_split_stages(c->n_layers, pp, &k, first, count);
}

static double ceil_div(double a, double b) { return b > 0 ? ceil(a / b) : 0; }

/* Seconds to send `bytes` in one message. */
static double msg_s(const losa_rates *rt, double bytes)
{
    return rt->net_latency_us * 1e-6 + bytes / (rt->net_gbps * 1e9 / 8);
}

/* Ring all-reduce of `bytes` over n ranks: 2 (n - 1) messages of bytes / n. */
static double allreduce_s(const losa_rates *rt, double bytes, int n)
{
    return n > 1 ? 2.0 * (n - 1) * msg_s(rt, bytes / n) : 0;
}

/* Seconds of a forward of n_layers layers (and the head when `head`) over
 * B x T tokens: the layers at the layers' rate, the head at the head's
 * (bench forward times them apart: the head is one large GEMM, the layers
 * smaller GEMMs and elementwise work); without those, both at the forward
 * rate. */
static double fwd_s(const model_config *c, int n_layers, int head, double B, double T,
                    const losa_rates *rt)
{
    double gl = rt->layer_gflops > 0 ? rt->layer_gflops : rt->fwd_gflops,
           gh = rt->head_gflops > 0 ? rt->head_gflops : rt->fwd_gflops;
    double s = model_forward_flops(c, n_layers, 0, (int64_t)B, (int64_t)T) / (gl * 1e9);
    if (head) s += model_forward_flops(c, 0, 1, (int64_t)B, (int64_t)T) / (gh * 1e9);
    return s;
}

/* The eval windows of one perplexity pass (all replicas together). */
static double eval_windows(const run_settings *rs, const losa_rates *rt)
{
    double w = floor((double)rt->eval_tokens / rs->eval.seqlen);
    if (rs->eval.max_windows > 0 && w > rs->eval.max_windows) w = rs->eval.max_windows;
    return w;
}

/* One perplexity pass: per stage busy seconds, and the pipelined wall. */
static double eval_pass(const run_settings *rs, const model_config *c, int pp, int dp,
                        const int *count, const losa_rates *rt, double *busy)
{
    double W = ceil_div(eval_windows(rs, rt), dp), m = ceil_div(W, rs->eval.batch), worst = 0,
           sum = 0;
    double act = 4.0 * rs->eval.batch * rs->eval.seqlen * c->dim;
    for (int s = 0; s < pp; s++) {
        double b = fwd_s(c, count[s], s == pp - 1, W, rs->eval.seqlen, rt);
        b += s < pp - 1 ? m * msg_s(rt, act) : 0;
        busy[s] = b;
        double per = m > 0 ? b / m : 0;
        worst = per > worst ? per : worst;
        sum += per;
    }
    /* the first batch crosses every stage, the others follow the slowest */
    return m > 0 ? sum + (m - 1) * worst + allreduce_s(rt, 16, pp * dp) : 0;
}

/* A calibration pass of nw windows per replica through every stage in turn
 * (passes forward passes per layer, no head: at the layers' rate) plus
 * per-layer work of `extra_s` seconds and, on the last stage, `last_s`:
 * stages run one after the other. */
static double calib_pass(const run_settings *rs, const model_config *c, int pp,
                         const int *count, double nw, double passes, double extra_s,
                         double last_s, const losa_rates *rt, double *busy)
{
    double wall = 0, S = rs->data.calib_seqlen;
    for (int s = 0; s < pp; s++) {
        double b = passes * fwd_s(c, count[s], 0, nw, S, rt) + count[s] * extra_s +
                   (s == pp - 1 ? last_s : 0);
        if (s < pp - 1) b += msg_s(rt, 4.0 * nw * S * c->dim);
        busy[s] = b;
        wall += b;
    }
    return wall;
}

void losa_pruner_flops(const model_config *c, double tokens, double *stats, double *hinv,
                       double *sweep)
{
    double D = c->dim, F = c->hidden_dim;
    *sweep = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, (model_map)m, &o, &i);
        *sweep += 2.0 * o * (double)i * i;
    }
    *stats = 2 * tokens * (3 * D * D + F * F);
    *hinv = (4.0 / 3.0) * (3 * D * D * D + F * F * F);
}

/* Ring all-gather of `bytes` in all over n ranks: n - 1 messages of bytes / n. */
static double allgather_s(const losa_rates *rt, double bytes, int n)
{
    return n > 1 ? (n - 1) * msg_s(rt, bytes / n) : 0;
}

/* The pruner's own seconds per layer on one replica of dp (prune_layer,
 * calib_prune_layer_maps):
 *  - the statistics over the replica's nw windows, then their sum over the
 *    stage's replicas (dist_sum_doubles_stage: every input's per-window
 *    column sums, N x widths doubles, SparseGPT's four Hessians
 *    (1 + in + in^2 doubles each), the reconstruction sums, two of D);
 *  - SparseGPT's factorisations: ScaLAPACK over the replicas, but a small
 *    Hessian (dist_sparsegpt_hinv_local) is factorised whole by every
 *    replica (no split);
 *  - its sweep and update over the replica's share of W's rows
 *    (dist_sparsegpt_rows: split), then the rows' status and loss
 *    all-reduced and W gathered (an all-gather of out x in floats per
 *    map); a small Hessian's factorisation all-reduces its status;
 *  - its unstructured mask: each column block's scores of all rows are
 *    gathered (dist_select_stage: an all-gather of the counts, an
 *    all-reduce, an all-gather of out x blocksize doubles) and every
 *    replica selects over all of them, so the mask work (the selection
 *    dominates it) is not split; N:M masks are per row (split);
 *  - a small map (dist_sparsegpt_rows_local) is swept whole by every
 *    replica: its sweep, update and mask not split, one status all-reduce
 *    and no other message;
 *  - Wanda's / magnitude's masks on every replica (not split). */
static double pruner_s(const run_settings *rs, const model_config *c, int dp, double nw,
                       const losa_rates *rt)
{
    const prune_config *pc = &rs->prune.pc;
    double weights = (double)model_map_weights(c), N = rs->data.calib_n;
    int sgpt = pc->method == PRUNE_METHOD_SPARSEGPT;
    double mask = weights / (rt->mask_wps[sgpt] > 0 ? rt->mask_wps[sgpt] : LOSA_DEFAULT_MASK_WPS);
    /* the inputs' widths: q/k/v, o, gate/up (D) and down's (F) */
    const double ins[4] = {c->dim, c->dim, c->dim, c->hidden_dim};
    double comm = 2 * allreduce_s(rt, 8.0 * c->dim, dp);
    if (pc->method != PRUNE_METHOD_MAGNITUDE)
        comm += allreduce_s(rt, 8.0 * N * (3.0 * c->dim + c->hidden_dim), dp);
    if (!sgpt) return mask + comm;
    double stats, hinv, sweep, sweep_split = 0, w_split = 0;
    losa_pruner_flops(c, nw * rs->data.calib_seqlen, &stats, &hinv, &sweep);
    double gs = rt->prune_stats_gflops > 0 ? rt->prune_stats_gflops : rt->gemm_gflops,
           gv = rt->prune_solve_gflops > 0 ? rt->prune_solve_gflops : rt->gemm_gflops,
           gh = rt->prune_hinv_gflops > 0 ? rt->prune_hinv_gflops : gv;
    double hinv_s = 0;
    for (int h = 0; h < 4; h++) {
        int local = dist_sparsegpt_hinv_local((int)ins[h], dp);
        hinv_s += (4.0 / 3.0) * ins[h] * ins[h] * ins[h] / (gh * 1e9) / (local ? 1 : dp);
        comm += allreduce_s(rt, 8.0 * (1 + ins[h] + ins[h] * ins[h]), dp);
        if (local) comm += allreduce_s(rt, 4, dp); /* the factorisation's status */
    }
    int bs = pc->blocksize > 0 ? pc->blocksize : 128;
    for (int m = 0; m < MODEL_N_MAPS && dp > 1; m++) {
        int o, i;
        model_map_shape(c, (model_map)m, &o, &i);
        if (dist_sparsegpt_rows_local(o, i, dp)) { /* whole on every replica */
            comm += allreduce_s(rt, 4, dp);
            continue;
        }
        sweep_split += 2.0 * o * (double)i * i; /* losa_pruner_flops' share of this map */
        w_split += (double)o * i;
        /* the rows' status and loss all-reduces, then W gathered */
        comm += 2 * allreduce_s(rt, 8, dp) + allgather_s(rt, 4.0 * o * i, dp);
        if (pc->nm_m > 0) continue;
        for (int i1 = 0; i1 < i; i1 += bs) {
            int cols = i - i1 < bs ? i - i1 : bs;
            comm += allgather_s(rt, 8.0 * dp, dp) + allreduce_s(rt, 8, dp) +
                    allgather_s(rt, 8.0 * o * cols, dp);
        }
    }
    /* the split maps' sweep over the replicas; N:M masks split with them */
    double split = dp > 1 ? sweep_split : sweep, ws = dp > 1 ? w_split / weights : 1;
    return stats / (gs * 1e9) + hinv_s + (sweep - split + split / dp) / (gv * 1e9) +
           (pc->nm_m > 0 ? mask * (1 - ws + ws / dp) : mask) + comm;
}

/* Training on n examples: optimizer steps of train.batch x grad_accum
 * sequences, each replica running grad_accum / dp micro-batches through
 * the pipeline, then the gradient all-reduce over the replicas.  The
 * pipeline's step is the schedule the trainer runs (1F1B or GPipe,
 * lora_schedule_seconds: each stage's forwards, backwards and blocking
 * exchanges in the trainer's order) with each stage's forward and backward
 * of a micro-batch; with equal stages that is (m + pp - 1) slots, with
 * unequal ones the fill and drain cost what the stages before and after
 * the slowest one spend on them (a slow first stage overlaps its own
 * forwards with the later stages' work; sum t + (m - 1) max t, the bound
 * of a slow last stage, over-counts it). */
static double train_phase(const run_settings *rs, const model_config *c, int pp, int dp,
                          const int *count, const model_stage_cost *k, double n,
                          const losa_rates *rt, double *busy)
{
    const lora_train_config *tc = &rs->train.tc;
    double steps = ceil_div(n, (double)tc->B * tc->grad_accum), m = ceil_div(tc->grad_accum, dp);
    double act = 4.0 * tc->B * tc->T * c->dim, layer_grads = 0, most = 0;
    for (int q = 0; q < MODEL_N_MAPS; q++) { /* adapter gradients: r_max (in + out) floats */
        int o, i;
        model_map_shape(c, (model_map)q, &o, &i);
        layer_grads += 4.0 * rs->lora.lc.r_max * (o + i);
    }
    /* a micro-batch of the whole model at the training rate (what `losa
     * bench train` measures), shared among the stages in proportion to the
     * stage costs the split balances (losa_stage_cost: the head and loss
     * as measured, parallel.head_cost_layers, or at their modelled cost) */
    double whole = model_train_flops(c, c->n_layers, 1, tc->B, tc->T, rs->lora.lc.r_max,
                                     rs->lora.lc.dropout > 0, tc->ckpt) /
                   (rt->train_gflops * 1e9),
           all = c->n_layers * k->layer + k->embed + k->head;
    double x = msg_s(rt, act), f[pp], b[pp], upd[pp];
    for (int s = 0; s < pp; s++) {
        double u = whole / all;
        /* the forward step, the backwards, and the adapters' per-step work
         * (once a step on every replica, after the micro-batches); a
         * layer's forward as bench train measured its share (elementwise
         * work and dropout weigh on it more than their FLOPs), or modelled */
        model_stage_train_parts(k, count[s], s == 0, s == pp - 1, tc->grad_accum,
                                rt->train_fwd_share, &f[s], &b[s], &upd[s]);
        f[s] *= u, b[s] *= u, upd[s] *= u;
        /* per neighbour one blocking exchange a micro-batch, on this
         * stage's time (no communication thread): the 1F1B steady state
         * pairs the activations forward with a gradient back in one
         * send+receive (model_stage_send_output_recv_grad), both
         * directions at once: one message's time */
        busy[s] = steps * (m * (f[s] + b[s] + x * ((s > 0) + (s < pp - 1))) + upd[s]);
        most = count[s] > most ? count[s] : most;
    }
    double ar = allreduce_s(rt, most * layer_grads, dp);
    for (int s = 0; s < pp; s++) busy[s] += steps * ar;
    return steps * (lora_schedule_seconds(tc->schedule, pp, (int)m, f, b, x, upd) + ar);
}

static void add(double *acc, const double *x, int n, double times)
{
    for (int i = 0; i < n; i++) acc[i] += times * x[i];
}

/* The first touch of the memory one run of phase q allocates: per stage
 * into busy (times runs), the slowest stage's into the wall (the stages
 * allocate at the phase's start, side by side). */
static void touch_phase(losa_time *t, losa_phase q, const double *touch_s, int pp, double runs)
{
    double worst = 0;
    for (int s = 0; s < pp; s++) {
        t->busy[q][s] += runs * touch_s[s * LOSA_N_PHASES + q];
        if (touch_s[s * LOSA_N_PHASES + q] > worst) worst = touch_s[s * LOSA_N_PHASES + q];
    }
    t->wall[q] += runs * worst;
    if (t->step[q] > 0) t->step[q] += worst;
}

void losa_rates_setup_defaults(losa_rates *rt)
{
    if (rt->start_s <= 0) rt->start_s = LOSA_DEFAULT_START_S;
    if (rt->store_gbs <= 0) rt->store_gbs = LOSA_DEFAULT_STORE_GBS;
    if (rt->tokenize_bps <= 0) rt->tokenize_bps = LOSA_DEFAULT_TOKENIZE_BPS;
}

/* The set-up on every stage: the start, the text tokenized on rank 0 (the
 * others wait for its broadcast: their busy seconds include the wait), the
 * stage allocated and read from the store (the bytes the store holds for
 * it: a bf16 run from an fp32 store reads fp32 and rounds); the ranks read
 * side by side (the wall is the slowest stage's). */
static double setup_s(const model_config *c, int pp, const int *count, const losa_rates *rt0,
                      double *busy)
{
    losa_rates rt = *rt0;
    losa_rates_setup_defaults(&rt);
    double tok = (double)rt.text_bytes / rt.tokenize_bps, worst = 0;
    for (int s = 0; s < pp; s++) {
        busy[s] = rt.start_s + tok +
                  (double)model_stage_bytes_dtype(c, s, pp, count, rt.store_dtype) /
                      (rt.store_gbs * 1e9);
        worst = busy[s] > worst ? busy[s] : worst;
    }
    return worst;
}

void losa_time_plan(const run_settings *rs, const model_config *c, int pp, int dp,
                    const losa_rates *rt, losa_time *t)
{
    memset(t, 0, sizeof *t);
    t->pp = pp;
    double busy[pp], w;
    model_stage_cost k; /* the split of the run (losa_stage_split), once */
    losa_stage_cost(rs, c, &k);
    int first[pp], count[pp];
    model_split_stages(c->n_layers, pp, &k, first, count);
    losa_mode mode = rs->losa.mode;
    int T = rs->losa.steps, losa_on = mode == LOSA_MODE_LOSA || mode == LOSA_MODE_COMPARE;
    double Nm = ceil_div(rs->data.calib_n, dp);
    t->wall[LOSA_PHASE_SETUP] = setup_s(c, pp, count, rt, busy);
    add(t->busy[LOSA_PHASE_SETUP], busy, pp, 1);
    /* perplexity passes: dense, pruned, +LoRA; LoSA after steps and final */
    double evals = 1 + (mode != LOSA_MODE_LOSA) + (mode == LOSA_MODE_LORA || mode == LOSA_MODE_COMPARE);
    double losa_evals = losa_on ? (rs->eval.each_step ? T - 1 : 0) + 1 : 0;
    w = eval_pass(rs, c, pp, dp, count, rt, busy);
    t->wall[LOSA_PHASE_DENSE_EVAL] = evals * w;
    add(t->busy[LOSA_PHASE_DENSE_EVAL], busy, pp, evals);
    t->wall[LOSA_PHASE_LOSA_EVAL] = losa_evals * w;
    add(t->busy[LOSA_PHASE_LOSA_EVAL], busy, pp, losa_evals);
    double prune_s = pruner_s(rs, c, dp, Nm, rt); /* per layer, both pruning phases */
    if (mode != LOSA_MODE_LOSA) { /* one-shot: dense, statistics and output passes */
        w = calib_pass(rs, c, pp, count, Nm, 3, prune_s, 0, rt, busy);
        t->wall[LOSA_PHASE_PRUNE] = w;
        add(t->busy[LOSA_PHASE_PRUNE], busy, pp, 1);
    }
    /* +LoRA and LoSA train on the same examples: one projection for both */
    double total = (double)(T - 1) * rs->losa.samples_step + rs->losa.samples_last;
    double busy_train[pp], w_train = train_phase(rs, c, pp, dp, count, &k, total, rt, busy_train);
    if (mode == LOSA_MODE_LORA || mode == LOSA_MODE_COMPARE) {
        t->wall[LOSA_PHASE_LORA_TRAIN] = w_train;
        add(t->busy[LOSA_PHASE_LORA_TRAIN], busy_train, pp, 1);
    }
    if (losa_on) {
        t->wall[LOSA_PHASE_DENSE_REF] = calib_pass(rs, c, pp, count, Nm, 1, 0, 0, rt, busy);
        add(t->busy[LOSA_PHASE_DENSE_REF], busy, pp, 1);
        /* step_decide: the merge of the adapters (lora_merge: a rank-r
         * product per map, then W += Delta), then calib_layer_grams:
         * losa.rmi_n windows on every replica through the layers (no head),
         * a centred n x n Gram of each layer's input (an (n, S D) x (S D, n)
         * product, on one thread: at the rank's GEMM rate it is under by at
         * most the thread count, a few ms next to the forwards) and on the
         * last stage one more of the final output, the all-reduce of the
         * (L + 1) n x n doubles over every rank */
        double n = rs->losa.rmi_n, gram = 2 * n * n * rs->data.calib_seqlen * c->dim /
                                          (rt->gemm_gflops * 1e9);
        double merge = 2.0 * rs->lora.lc.r_max * (double)model_map_weights(c) /
                       (rt->gemm_gflops * 1e9);
        w = calib_pass(rs, c, pp, count, n, 1, gram + merge, gram, rt, busy) +
            allreduce_s(rt, 8.0 * (c->n_layers + 1) * n * n, pp * dp);
        t->wall[LOSA_PHASE_GRAMS] = T * w;
        t->step[LOSA_PHASE_GRAMS] = w;
        add(t->busy[LOSA_PHASE_GRAMS], busy, pp, T);
        w = calib_pass(rs, c, pp, count, Nm, 2, prune_s, 0, rt, busy);
        t->wall[LOSA_PHASE_LOSA_PRUNE] = T * w;
        t->step[LOSA_PHASE_LOSA_PRUNE] = w;
        add(t->busy[LOSA_PHASE_LOSA_PRUNE], busy, pp, T);
        t->wall[LOSA_PHASE_LOSA_TRAIN] = w_train;
        t->step[LOSA_PHASE_LOSA_TRAIN] = w_train / T;
        add(t->busy[LOSA_PHASE_LOSA_TRAIN], busy_train, pp, 1);
        t->step[LOSA_PHASE_LOSA_EVAL] = losa_evals > 0 ? t->wall[LOSA_PHASE_LOSA_EVAL] / losa_evals : 0;
    }
    if (rt->touch_gbs > 0) { /* fresh pages per run of a phase (losa_memory touched) */
        double touch_s[pp * LOSA_N_PHASES];
        for (int s = 0; s < pp; s++) {
            losa_memory m;
            losa_memory_plan(rs, c, pp, dp, s, 0, &m);
            for (int q = 0; q < LOSA_N_PHASES; q++)
                touch_s[s * LOSA_N_PHASES + q] = (double)m.touched[q] / (rt->touch_gbs * 1e9);
        }
        double runs[LOSA_N_PHASES] = {
            [LOSA_PHASE_DENSE_EVAL] = t->wall[LOSA_PHASE_DENSE_EVAL] > 0 ? evals : 0,
            [LOSA_PHASE_PRUNE] = 1, [LOSA_PHASE_LORA_TRAIN] = 1, [LOSA_PHASE_DENSE_REF] = 1,
            [LOSA_PHASE_GRAMS] = T, [LOSA_PHASE_LOSA_PRUNE] = T, [LOSA_PHASE_LOSA_TRAIN] = T,
            [LOSA_PHASE_LOSA_EVAL] = t->wall[LOSA_PHASE_LOSA_EVAL] > 0 ? losa_evals : 0};
        for (int q = 0; q < LOSA_N_PHASES; q++)
            if (t->wall[q] > 0 && runs[q] > 0) touch_phase(t, (losa_phase)q, touch_s, pp, runs[q]);
    }
    for (int q = 0; q < LOSA_N_PHASES; q++) t->total += t->wall[q];
}
