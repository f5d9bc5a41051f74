/* lora training loop through the pipeline, data-parallel replicas of it.
 *
 * One optimizer step = grad_accum micro-batches (B x T each).  With DP
 * replicas, replica r takes the micro-batches r, r+DP, r+2DP, ... (global
 * indices: dropout masks and tags depend on the global index only).
 * Each replica's pipeline runs one of two schedules over its micro-batches:
 *   1F1B (default): stage p of PP runs min(PP-p-1, m) warm-up forwards, then
 *                   one forward + one backward per micro-batch (steady
 *                   state), then the remaining backwards (cool-down); only
 *                   min(PP-p, m) micro-batches are in flight, so the stage
 *                   keeps that many activation buffers.  The neighbour
 *                   exchanges of the steady state are paired send+receive
 *                   (model_stage_send_output_recv_grad and its twin), which
 *                   cannot deadlock.
 *   GPipe:          all forwards, then all backwards (m buffers).
 * Either way the last stage computes the loss and its gradient right after
 * the forward (one logits buffer), and every stage runs its backwards in
 * micro-batch order, so dDelta accumulates in the same order: the two
 * schedules give bit-identical results.
 *   update: dA, dB from dDelta (linear in dDelta), all-reduced within the
 *           stage's replicas (DP > 1: the reduction order differs from one
 *           replica, results agree to rounding); the global gradient norm is
 *           summed per global layer (replica 0 of every stage contributes its
 *           layers, so the all-reduce of the (L) vector is exact) and then in
 *           layer order; the NLL sum over the replicas' last stages; clip;
 *           AdamW; re-form Delta.
 * With one stage (or d == NULL) each micro-batch does forward then backward
 * with one activation buffer; the arithmetic and the accumulation order are
 * those of the pipeline, so loss curves are bit-identical for any PP. */
#include <math.h>
#include <string.h>

#include "dist.h"
#include "lora.h"

void lora_train_config_default(lora_train_config *c)
{
    memset(c, 0, sizeof *c);
    c->B = 4;
    c->T = 256;
    c->grad_accum = 2;
    c->steps = 100;
    c->lr = 2e-4f;
    c->weight_decay = 0.001f;
    c->warmup_ratio = 0.3f;
    c->max_grad_norm = 0.3f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->seed = 1;
    c->ckpt = 0;
    c->schedule = LORA_SCHEDULE_1F1B;
}

int lora_trainer_n_mb(int grad_accum, int DP, int replica)
{
    return grad_accum > replica ? (grad_accum - replica + DP - 1) / DP : 0;
}

int lora_trainer_in_flight(int schedule, int PP, int stage, int n_mb)
{
    int n = PP == 1 ? 1 : schedule == LORA_SCHEDULE_GPIPE ? n_mb
                                                          : (PP - stage < n_mb ? PP - stage : n_mb);
    return n < 1 ? 1 : n;
}

size_t lora_trainer_bytes(const model_config *c, int n_layers, int has_head, int n_acts,
                          const lora_train_config *tc)
{
    int B = tc->B, T = tc->T;
    size_t ND = (size_t)B * T * c->dim;
    size_t n = core_alloc_bytes(tc->grad_accum, sizeof(int)) +
               core_alloc_bytes(n_acts, sizeof(model_acts)) +
               n_acts * model_acts_bytes(c, n_layers, has_head, B, T,
                                         tc->ckpt ? MODEL_ACTS_NOSAVE : MODEL_ACTS_SAVE) +
               model_bwd_bytes(c, has_head, B, T) + core_alloc_bytes(n_acts * ND, sizeof(float)) +
               core_alloc_bytes(c->n_layers + 1, sizeof(double));
    if (tc->ckpt)
        n += model_acts_bytes(c, n_layers, 0, B, T, MODEL_ACTS_SAVE_ONE) +
             core_alloc_bytes(n_acts * n_layers * ND, sizeof(float));
    return n;
}

losa_status lora_trainer_build(lora_trainer *tr, dist_ctx *d, model_stage *s,
                               lora_adapters *ad, const lora_train_config *c)
{
    memset(tr, 0, sizeof *tr);
    if (c->B < 1 || c->T < 2 || c->grad_accum < 1 || c->steps < 1)
        return core_err(LOSA_ERR_ARG,
                        "train: need batch >= 1, seqlen >= 2, grad_accum >= 1, steps >= 1 "
                        "(got %d, %d, %d, %lld)", c->B, c->T, c->grad_accum,
                        (long long)c->steps);
    if (!(c->lr >= 0) || !(c->warmup_ratio >= 0 && c->warmup_ratio <= 1) ||
        !(c->max_grad_norm >= 0) || !(c->weight_decay >= 0))
        return core_err(LOSA_ERR_ARG, "train: lr, weight_decay, max_grad_norm must be >= 0 and "
                                      "warmup_ratio in [0, 1]");
    if (c->schedule != LORA_SCHEDULE_1F1B && c->schedule != LORA_SCHEDULE_GPIPE)
        return core_err(LOSA_ERR_ARG, "train: unknown pipeline schedule %d", c->schedule);
    if (!ad->attached) return core_err(LOSA_ERR_ARG, "train: adapters are not attached (merged?)");
    tr->cfg = *c;
    tr->d = d;
    tr->s = s;
    tr->ad = ad;
    int PP = d ? dist_n_stages(d) : 1, DP = d ? dist_n_replicas(d) : 1;
    int rep = d ? dist_replica(d) : 0, p = d ? dist_stage(d) : 0;
    tr->mbs = core_calloc(c->grad_accum, sizeof(int));
    for (int mb = rep; mb < c->grad_accum; mb += DP) tr->mbs[tr->n_mb++] = mb;
    LOSA_CHECK(tr->n_mb == lora_trainer_n_mb(c->grad_accum, DP, rep));
    tr->n_acts = lora_trainer_in_flight(c->schedule, PP, p, tr->n_mb);
    tr->acts = core_calloc(tr->n_acts, sizeof(model_acts));
    int64_t ND = (int64_t)c->B * c->T * s->cfg.dim;
    losa_status st = LOSA_OK;
    for (int i = 0; i < tr->n_acts && st == LOSA_OK; i++)
        st = model_acts_build(&tr->acts[i], s, c->B, c->T,
                              c->ckpt ? MODEL_ACTS_NOSAVE : MODEL_ACTS_SAVE);
    if (st == LOSA_OK && c->ckpt) {
        st = model_acts_build_layers(&tr->rec, s, c->B, c->T, MODEL_ACTS_SAVE_ONE);
        tr->xin = core_calloc((size_t)(tr->n_acts * s->n_layers * ND), sizeof(float));
    }
    if (st == LOSA_OK) st = model_bwd_build(&tr->g, s, c->B, c->T);
    tr->dxtop = core_calloc((size_t)(tr->n_acts * ND), sizeof(float));
    tr->layer_sq = core_calloc(s->cfg.n_layers + 1, sizeof(double));
    if (st != LOSA_OK) lora_trainer_free(tr);
    return st;
}

void lora_trainer_free(lora_trainer *tr)
{
    if (!tr) return;
    for (int i = 0; i < tr->n_acts && tr->acts; i++) model_acts_free(&tr->acts[i]);
    core_free(tr->acts);
    core_free(tr->mbs);
    model_acts_free(&tr->rec);
    model_bwd_free(&tr->g);
    core_free(tr->xin);
    core_free(tr->dxtop);
    core_free(tr->layer_sq);
    memset(tr, 0, sizeof *tr);
}

static uint64_t drop_seed(uint64_t seed, int64_t step, int mb)
{
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + (uint64_t)step * 0xD1B54A32D192ED03ull +
                 (uint64_t)mb * 0x8CB92BA72F3D8DD7ull + 1;
    z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
    return z ^ (z >> 29);
}

/* Micro-batch j of this replica (global index tr->mbs[j]) lives in
 * activation slot j % n_acts while in flight. */
static model_acts *slot_acts(lora_trainer *tr, int j) { return &tr->acts[j % tr->n_acts]; }
static float *slot_x(lora_trainer *tr, int j) { return slot_acts(tr, j)->x; }
static float *slot_dx(lora_trainer *tr, int j)
{
    return tr->dxtop + (int64_t)(j % tr->n_acts) * tr->cfg.B * tr->cfg.T * tr->s->cfg.dim;
}
static float *slot_xin(lora_trainer *tr, int j)
{
    return tr->xin + (int64_t)(j % tr->n_acts) * tr->s->n_layers * tr->cfg.B * tr->cfg.T *
                         tr->s->cfg.dim;
}

/* Forward of local micro-batch j through this stage: the first stage embeds,
 * other stages find their input in slot_x (received by the caller); the last
 * stage adds the loss gradient into slot_dx.  Returns the NLL sum (last
 * stage, else 0).  No communication. */
static double fwd_compute(lora_trainer *tr, int j, const int *tokens, const int *targets,
                          float scale)
{
    const lora_train_config *c = &tr->cfg;
    model_stage *s = tr->s;
    int mb = tr->mbs[j], B = c->B, T = c->T;
    int64_t N = (int64_t)B * T;
    double t0 = core_time();
    model_acts *a = slot_acts(tr, j);
    a->drop_p = tr->ad->cfg.dropout;
    a->drop_seed = drop_seed(c->seed, tr->step, mb);
    if (s->has_embed) model_stage_embed(a, s, tokens + mb * N, B, T);
    double t1 = core_time();
    tr->embed_busy += t1 - t0;
    if (c->ckpt) model_stage_forward_ckpt(a, slot_xin(tr, j), s, B, T);
    else
        for (int l = 0; l < s->n_layers; l++) model_layer_forward(a, s, l, B, T);
    double nll = 0;
    if (s->has_head) {
        int64_t n;
        double th = core_time();
        model_stage_head(a, s, B, T);
        nll = model_head_backward(&tr->g, slot_dx(tr, j), a, s, targets + mb * N, B, T, scale, &n);
        tr->head_busy += core_time() - th;
    }
    tr->busy += core_time() - t0;
    tr->fwd_busy += core_time() - t0;
    return nll;
}

/* Backward of local micro-batch j: the gradient at the stage top is in
 * slot_dx (computed by the head or received by the caller); on return it
 * holds the gradient at the stage input.  No communication. */
static void bwd_compute(lora_trainer *tr, int j)
{
    const lora_train_config *c = &tr->cfg;
    model_stage *s = tr->s;
    double t0 = core_time();
    model_acts *a = slot_acts(tr, j);
    if (c->ckpt) {
        tr->rec.drop_p = a->drop_p;
        tr->rec.drop_seed = a->drop_seed;
        model_stage_backward_ckpt(&tr->g, slot_dx(tr, j), &tr->rec, slot_xin(tr, j), s, c->B, c->T);
    } else {
        model_stage_backward(&tr->g, slot_dx(tr, j), a, s, c->B, c->T);
    }
    tr->busy += core_time() - t0;
}

/* The stage door for local micro-batch j (sequence number: its global
 * index); each call is a no-op on the stage without that neighbour. */
static int64_t slot_rows(const lora_trainer *tr) { return (int64_t)tr->cfg.B * tr->cfg.T; }
static void recv_fwd(lora_trainer *tr, int j)
{
    model_stage_recv_input(tr->d, tr->s, slot_x(tr, j), slot_rows(tr), MODEL_STAGE_TAG_FORWARD,
                           tr->mbs[j]);
}
static void send_fwd(lora_trainer *tr, int j)
{
    model_stage_send_output(tr->d, tr->s, slot_x(tr, j), slot_rows(tr), MODEL_STAGE_TAG_FORWARD,
                            tr->mbs[j]);
}
static void recv_bwd(lora_trainer *tr, int j)
{
    model_stage_recv_output_grad(tr->d, tr->s, slot_dx(tr, j), slot_rows(tr), tr->mbs[j]);
}
static void send_bwd(lora_trainer *tr, int j)
{
    model_stage_send_input_grad(tr->d, tr->s, slot_dx(tr, j), slot_rows(tr), tr->mbs[j]);
}

static double run_gpipe(lora_trainer *tr, const int *tok, const int *tgt, float scale)
{
    double nll = 0;
    for (int j = 0; j < tr->n_mb; j++) {
        recv_fwd(tr, j);
        nll += fwd_compute(tr, j, tok, tgt, scale);
        send_fwd(tr, j);
    }
    for (int j = 0; j < tr->n_mb; j++) {
        recv_bwd(tr, j);
        bwd_compute(tr, j);
        send_bwd(tr, j);
    }
    return nll;
}

static double run_1f1b(lora_trainer *tr, const int *tok, const int *tgt, float scale)
{
    int PP = dist_n_stages(tr->d), p = dist_stage(tr->d), m = tr->n_mb;
    int w = PP - p - 1 < m ? PP - p - 1 : m, rem = m - w;
    int64_t N = slot_rows(tr);
    double nll = 0;
    for (int j = 0; j < w; j++) { /* warm-up */
        recv_fwd(tr, j);
        nll += fwd_compute(tr, j, tok, tgt, scale);
        send_fwd(tr, j);
    }
    if (rem > 0) recv_fwd(tr, w);
    for (int i = 0; i < rem; i++) { /* steady state: forward w+i, backward i */
        int j = w + i;
        nll += fwd_compute(tr, j, tok, tgt, scale);
        model_stage_send_output_recv_grad(tr->d, tr->s, slot_x(tr, j), tr->mbs[j],
                                          slot_dx(tr, i), tr->mbs[i], N);
        bwd_compute(tr, i);
        if (i == rem - 1) send_bwd(tr, i);
        else model_stage_send_input_grad_recv_input(tr->d, tr->s, slot_dx(tr, i), tr->mbs[i],
                                                    slot_x(tr, j + 1), tr->mbs[j + 1], N);
    }
    for (int i = rem; i < m; i++) { /* cool-down */
        recv_bwd(tr, i);
        bwd_compute(tr, i);
        send_bwd(tr, i);
    }
    return nll;
}

/* ---- the schedule's wall (lora_schedule_seconds) ----
 * Each stage's program is the list of operations run_1f1b / run_gpipe
 * execute on it: a compute (seconds) or a blocking exchange of one or two
 * messages (a send, a receive, or the paired send+receive).  A message
 * completes x after both its sender and its receiver have reached it; an
 * exchange ends when its messages have.  Message ids: (direction, link,
 * micro-batch), link p between stages p and p + 1. */
typedef struct {
    double cost; /* compute seconds (n == 0) */
    int n;       /* messages: 0, 1 or 2 */
    int id[2];
    int send[2]; /* 1: this stage sends it; 0: receives it */
} sched_op;

typedef struct {
    sched_op *op;
    int n;
    int PP, m, p;
} sched_prog;

static int sched_id(const sched_prog *g, int bwd, int link, int j)
{
    return (bwd * (g->PP - 1) + link) * g->m + j;
}
static void sched_compute(sched_prog *g, double s) { g->op[g->n++] = (sched_op){.cost = s}; }
/* one exchange of up to two messages (a missing neighbour's are dropped) */
static void sched_xchg(sched_prog *g, int n, const int *bwd, const int *send, const int *j)
{
    sched_op o = {0};
    for (int k = 0; k < n; k++) {
        /* forward: p sends to p + 1 (link p); backward: p sends to p - 1 (link p - 1) */
        int to_next = bwd[k] ? !send[k] : send[k], link = to_next ? g->p : g->p - 1;
        if (link < 0 || link >= g->PP - 1) continue;
        o.id[o.n] = sched_id(g, bwd[k], link, j[k]);
        o.send[o.n++] = send[k];
    }
    if (o.n) g->op[g->n++] = o;
}
static void sched_one(sched_prog *g, int bwd, int send, int j) { sched_xchg(g, 1, &bwd, &send, &j); }

/* Stage p's program under schedule over m micro-batches (run_1f1b,
 * run_gpipe; one stage: forward, backward per micro-batch). */
static void sched_program(sched_prog *g, int schedule, double f, double b)
{
    int PP = g->PP, p = g->p, m = g->m;
    enum { FWD = 0, BWD = 1, RECV = 0, SEND = 1 };
    if (PP == 1) {
        for (int j = 0; j < m; j++) sched_compute(g, f), sched_compute(g, b);
    } else if (schedule == LORA_SCHEDULE_GPIPE) {
        for (int j = 0; j < m; j++)
            sched_one(g, FWD, RECV, j), sched_compute(g, f), sched_one(g, FWD, SEND, j);
        for (int j = 0; j < m; j++)
            sched_one(g, BWD, RECV, j), sched_compute(g, b), sched_one(g, BWD, SEND, j);
    } else {
        int w = PP - p - 1 < m ? PP - p - 1 : m, rem = m - w;
        for (int j = 0; j < w; j++)
            sched_one(g, FWD, RECV, j), sched_compute(g, f), sched_one(g, FWD, SEND, j);
        if (rem > 0) sched_one(g, FWD, RECV, w);
        for (int i = 0; i < rem; i++) {
            int j = w + i;
            sched_compute(g, f);
            /* model_stage_send_output_recv_grad: none on the last stage */
            int b1[2] = {FWD, BWD}, s1[2] = {SEND, RECV}, j1[2] = {j, i};
            if (p < PP - 1) sched_xchg(g, 2, b1, s1, j1);
            sched_compute(g, b);
            if (i == rem - 1) {
                sched_one(g, BWD, SEND, i);
            } else if (p > 0) { /* model_stage_send_input_grad_recv_input */
                int b2[2] = {BWD, FWD}, s2[2] = {SEND, RECV}, j2[2] = {i, j + 1};
                sched_xchg(g, 2, b2, s2, j2);
            }
        }
        for (int i = rem; i < m; i++)
            sched_one(g, BWD, RECV, i), sched_compute(g, b), sched_one(g, BWD, SEND, i);
    }
}

double lora_schedule_seconds(int schedule, int PP, int m, const double *f, const double *b,
                             double x, const double *u)
{
    if (PP < 1 || m < 1) return 0;
    int nid = 2 * (PP > 1 ? PP - 1 : 1) * m;
    sched_prog *g = core_calloc((size_t)PP, sizeof *g);
    int *pc = core_calloc((size_t)PP, sizeof *pc);
    double *t = core_calloc((size_t)PP, sizeof *t);
    double *post = core_calloc((size_t)2 * nid, sizeof *post); /* [recv, send] x id */
    for (int i = 0; i < 2 * nid; i++) post[i] = -1;
    for (int p = 0; p < PP; p++) {
        g[p] = (sched_prog){.op = core_calloc((size_t)(6 * m + 2), sizeof(sched_op)),
                            .PP = PP, .m = m, .p = p};
        sched_program(&g[p], schedule, f[p], b[p]);
    }
    /* advance every stage as far as it can until all are done (the code's
     * pairing cannot deadlock, so each sweep makes progress) */
    int left = PP, progress = 1;
    while (left > 0 && progress) {
        progress = 0;
        left = 0;
        for (int p = 0; p < PP; p++) {
            while (pc[p] < g[p].n) {
                const sched_op *o = &g[p].op[pc[p]];
                if (o->n == 0) {
                    t[p] += o->cost;
                    pc[p]++, progress = 1;
                    continue;
                }
                double end = t[p];
                int ready = 1;
                for (int k = 0; k < o->n; k++) {
                    double *mine = &post[o->send[k] * nid + o->id[k]],
                           other = post[(1 - o->send[k]) * nid + o->id[k]];
                    if (*mine < 0) *mine = t[p], progress = 1;
                    if (other < 0) ready = 0;
                    else end = fmax(end, fmax(*mine, other) + x);
                }
                if (!ready) break;
                t[p] = end;
                pc[p]++, progress = 1;
            }
            left += pc[p] < g[p].n;
        }
    }
    LOSA_CHECK(left == 0);
    double wall = 0, upd = 0;
    for (int p = 0; p < PP; p++) {
        wall = fmax(wall, t[p]), core_free(g[p].op);
        if (u) upd = fmax(upd, u[p]);
    }
    core_free(g);
    core_free(pc);
    core_free(t);
    core_free(post);
    return wall + upd;
}

/* The step's own work since t0: busy, and of it the update's. */
static void upd_add(lora_trainer *tr, double t0)
{
    double dt = core_time() - t0;
    tr->busy += dt;
    tr->upd_busy += dt;
}

losa_status lora_train_step(lora_trainer *tr, const int *tokens, const int *targets,
                            lora_step_stats *st)
{
    const lora_train_config *c = &tr->cfg;
    model_stage *s = tr->s;
    lora_adapters *ad = tr->ad;
    dist_ctx *d = tr->d;
    double t0 = core_time();
    int M = c->grad_accum, L = s->cfg.n_layers;
    int64_t N = (int64_t)c->B * c->T, ntok = 0;
    for (int64_t i = 0; i < M * N; i++) {
        if (tokens[i] < 0 || tokens[i] >= s->cfg.vocab_size || targets[i] >= s->cfg.vocab_size)
            return core_err(LOSA_ERR_ARG, "train: token id %d / target %d outside the vocabulary "
                                          "(%d)", tokens[i], targets[i], s->cfg.vocab_size);
        ntok += targets[i] >= 0;
    }
    if (ntok == 0) return core_err(LOSA_ERR_ARG, "train: step %lld has no target tokens",
                                   (long long)tr->step);
    float scale = (float)(1.0 / (double)ntok);
    double tz = core_time();
    lora_grad_zero(ad); /* compute too: the stage's dense dDelta when persistent */
    tr->busy = tr->upd_busy = core_time() - tz;
    tr->head_busy = tr->embed_busy = tr->fwd_busy = 0;
    double nll = 0;
    if (!d || dist_n_stages(d) == 1) {
        for (int j = 0; j < tr->n_mb; j++) {
            nll += fwd_compute(tr, j, tokens, targets, scale);
            bwd_compute(tr, j);
        }
    } else if (c->schedule == LORA_SCHEDULE_GPIPE) {
        nll = run_gpipe(tr, tokens, targets, scale);
    } else {
        nll = run_1f1b(tr, tokens, targets, scale);
    }
    double tp = core_time();
    lora_grad_project(ad, s);
    if (d) dist_sum_floats_stage(d, ad->grads, ad->n_params); /* over the replicas */
    upd_add(tr, tp);
    /* global gradient norm: exact per-layer all-reduce (replica 0 of each
     * stage contributes), then layer order; the NLL of every replica's last
     * stage in the same vector */
    double *v = tr->layer_sq;
    memset(v, 0, sizeof(double) * (L + 1));
    tp = core_time();
    if (!d || dist_replica(d) == 0)
        for (int l = 0; l < s->n_layers; l++) v[s->layer0 + l] = lora_grad_sumsq(ad, l);
    upd_add(tr, tp);
    v[L] = nll;
    if (d && dist_size(d) > 1) dist_sum_doubles(d, v, L + 1);
    nll = v[L];
    double sq = 0;
    for (int l = 0; l < L; l++) sq += v[l];
    double norm = sqrt(sq);
    float gs = 1.0f;
    if (c->max_grad_norm > 0 && norm > c->max_grad_norm)
        gs = (float)(c->max_grad_norm / (norm + 1e-6));
    lora_adamw opt = {.lr = lora_lr_at(c->lr, c->warmup_ratio, c->steps, tr->step),
                      .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->eps,
                      .weight_decay = c->weight_decay};
    if (!isfinite(norm) || !isfinite(nll)) {
        /* stop before the update: name the first layer whose adapter
         * gradient is not finite (the same on every rank) */
        int bad = -1;
        for (int l = 0; l < L && bad < 0; l++)
            if (!isfinite(tr->layer_sq[l])) bad = l;
        if (bad >= 0)
            return core_err(LOSA_ERR_NUMERIC, "train: optimizer step %lld: non-finite adapter "
                            "gradient in layer %d (loss %g); no update applied",
                            (long long)tr->step, bad, nll / (double)ntok);
        return core_err(LOSA_ERR_NUMERIC, "train: optimizer step %lld: non-finite loss %g; no "
                        "update applied", (long long)tr->step, nll / (double)ntok);
    }
    tp = core_time();
    lora_adamw_step(ad, &opt, gs);
    lora_delta_update(ad, s);
    upd_add(tr, tp);
    if (st) {
        st->loss = nll / (double)ntok;
        st->n_targets = ntok;
        st->grad_norm = norm;
        st->lr = opt.lr;
        st->seconds = core_time() - t0;
        st->busy_seconds = tr->busy;
        st->head_seconds = tr->head_busy;
        st->embed_seconds = tr->embed_busy;
        st->forward_seconds = tr->fwd_busy;
        st->update_seconds = tr->upd_busy;
    }
    tr->step++;
    return LOSA_OK;
}
