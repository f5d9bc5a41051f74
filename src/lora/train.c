/* lora training loop through the pipeline (GPipe schedule).
 *
 * One optimizer step = grad_accum micro-batches (B x T each):
 *   forward phase:  every micro-batch flows stage to stage; the last stage
 *                   computes the loss and its gradient at once (so only one
 *                   logits buffer is needed) and keeps dL/dx of the top.
 *   backward phase: micro-batches in the same order flow back; each stage
 *                   accumulates dDelta of its own maps.
 *   update:         dA, dB from dDelta; the global gradient norm is summed
 *                   per global layer over the pipeline (every layer lives on
 *                   exactly one rank, so the all-reduce of an (L) vector is
 *                   exact) and then in layer order: identical for any P;
 *                   clip; AdamW; re-form Delta.
 * With one stage (or d == NULL) each micro-batch does forward then backward
 * with one activation buffer; the arithmetic and the accumulation order are
 * those of the pipeline, so loss curves are bit-identical for any P. */
#include <math.h>
#include <string.h>

#include "dist.h"
#include "lora.h"

#define TAG_BWD 16384

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
}

losa_status lora_trainer_build(lora_trainer *tr, dist_ctx *d, model_stage *s,
                               lora_adapters *ad, const lora_train_config *c)
{
    memset(tr, 0, sizeof *tr);
    if (c->B < 1 || c->T < 2 || c->grad_accum < 1 || c->grad_accum >= TAG_BWD || c->steps < 1)
        return core_err(LOSA_ERR_ARG,
                        "train: need batch >= 1, seqlen >= 2, 1 <= grad_accum < %d, steps >= 1 "
                        "(got %d, %d, %d, %lld)", TAG_BWD, c->B, c->T, c->grad_accum,
                        (long long)c->steps);
    if (!(c->lr >= 0) || !(c->warmup_ratio >= 0 && c->warmup_ratio <= 1) ||
        !(c->max_grad_norm >= 0) || !(c->weight_decay >= 0))
        return core_err(LOSA_ERR_ARG, "train: lr, weight_decay, max_grad_norm must be >= 0 and "
                                      "warmup_ratio in [0, 1]");
    if (d && dist_n_replicas(d) != 1)
        return core_err(LOSA_ERR_UNSUPPORTED, "train: data-parallel replicas (dp %d) are not "
                                              "supported yet; use pp = ranks",
                        dist_n_replicas(d));
    if (!ad->attached) return core_err(LOSA_ERR_ARG, "train: adapters are not attached (merged?)");
    tr->cfg = *c;
    tr->d = d;
    tr->s = s;
    tr->ad = ad;
    int pipelined = d && dist_n_stages(d) > 1;
    tr->n_acts = pipelined ? c->grad_accum : 1;
    tr->acts = core_calloc(tr->n_acts, sizeof(model_acts));
    int64_t ND = (int64_t)c->B * c->T * s->cfg.dim;
    losa_status st = LOSA_OK;
    for (int i = 0; i < tr->n_acts && st == LOSA_OK; i++)
        st = model_acts_build(&tr->acts[i], s, c->B, c->T,
                              c->ckpt ? MODEL_ACTS_NOSAVE : MODEL_ACTS_SAVE);
    if (st == LOSA_OK && c->ckpt) {
        st = model_acts_build(&tr->rec, s, c->B, c->T, MODEL_ACTS_SAVE_ONE);
        tr->xin = core_calloc((size_t)(tr->n_acts * s->n_layers * ND), sizeof(float));
    }
    if (st == LOSA_OK) st = model_bwd_build(&tr->g, s, c->B, c->T);
    tr->dxtop = core_calloc((size_t)(tr->n_acts * ND), sizeof(float));
    tr->layer_sq = core_calloc(s->cfg.n_layers, sizeof(double));
    if (st != LOSA_OK) lora_trainer_free(tr);
    return st;
}

void lora_trainer_free(lora_trainer *tr)
{
    if (!tr) return;
    for (int i = 0; i < tr->n_acts && tr->acts; i++) model_acts_free(&tr->acts[i]);
    core_free(tr->acts);
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

/* forward of micro-batch mb through this stage; the last stage adds the loss
 * gradient.  Returns the NLL sum (last stage) */
static double step_forward(lora_trainer *tr, int mb, const int *tok, const int *tgt,
                           float scale)
{
    const lora_train_config *c = &tr->cfg;
    model_stage *s = tr->s;
    int ai = tr->n_acts > 1 ? mb : 0, B = c->B, T = c->T;
    int64_t ND = (int64_t)B * T * s->cfg.dim;
    model_acts *a = &tr->acts[ai];
    a->drop_p = tr->ad->cfg.dropout;
    a->drop_seed = drop_seed(c->seed, tr->step, mb);
    if (s->has_embed) model_stage_embed(a, s, tok, B, T);
    else dist_recv_prev(tr->d, a->x, ND, mb);
    if (c->ckpt)
        model_stage_forward_ckpt(a, tr->xin + (int64_t)ai * s->n_layers * ND, s, B, T);
    else
        for (int l = 0; l < s->n_layers; l++) model_layer_forward(a, s, l, B, T);
    double nll = 0;
    if (s->has_head) {
        int64_t n;
        model_stage_head(a, s, B, T);
        nll = model_head_backward(&tr->g, tr->dxtop + ai * ND, a, s, tgt, B, T, scale, &n);
    } else {
        dist_send_next(tr->d, a->x, ND, mb);
    }
    return nll;
}

static void step_backward(lora_trainer *tr, int mb)
{
    const lora_train_config *c = &tr->cfg;
    model_stage *s = tr->s;
    int ai = tr->n_acts > 1 ? mb : 0, B = c->B, T = c->T;
    int64_t ND = (int64_t)B * T * s->cfg.dim;
    float *dx = tr->dxtop + ai * ND;
    model_acts *a = &tr->acts[ai];
    if (!s->has_head) dist_recv_next(tr->d, dx, ND, TAG_BWD + mb);
    if (c->ckpt) {
        tr->rec.drop_p = a->drop_p;
        tr->rec.drop_seed = a->drop_seed;
        model_stage_backward_ckpt(&tr->g, dx, &tr->rec,
                                  tr->xin + (int64_t)ai * s->n_layers * ND, s, B, T);
    } else {
        model_stage_backward(&tr->g, dx, a, s, B, T);
    }
    if (!s->has_embed) dist_send_prev(tr->d, dx, ND, TAG_BWD + mb);
}

losa_status lora_train_step(lora_trainer *tr, const int *tokens, const int *targets,
                            lora_step_stats *st)
{
    const lora_train_config *c = &tr->cfg;
    model_stage *s = tr->s;
    lora_adapters *ad = tr->ad;
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
    lora_grad_zero(ad);
    double nll = 0;
    for (int mb = 0; mb < M; mb++) {
        nll += step_forward(tr, mb, tokens + mb * N, targets + mb * N, scale);
        if (tr->n_acts == 1) step_backward(tr, mb);
    }
    if (tr->n_acts > 1)
        for (int mb = 0; mb < M; mb++) step_backward(tr, mb);
    lora_grad_project(ad, s);
    /* global gradient norm: exact per-layer all-reduce, then layer order */
    memset(tr->layer_sq, 0, sizeof(double) * L);
    for (int l = 0; l < s->n_layers; l++) tr->layer_sq[s->layer0 + l] = lora_grad_sumsq(ad, l);
    if (tr->d && dist_n_stages(tr->d) > 1) {
        dist_sum_doubles(tr->d, tr->layer_sq, L);
        dist_bcast_from_last(tr->d, &nll, sizeof nll);
    }
    double sq = 0;
    for (int l = 0; l < L; l++) sq += tr->layer_sq[l];
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
    lora_adamw_step(ad, &opt, gs);
    lora_delta_update(ad, s);
    if (st) {
        st->loss = nll / (double)ntok;
        st->n_targets = ntok;
        st->grad_norm = norm;
        st->lr = opt.lr;
        st->seconds = core_time() - t0;
    }
    tr->step++;
    return LOSA_OK;
}
