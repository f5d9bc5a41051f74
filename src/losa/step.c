/* The LoSA phase of `losa run` (ALGORITHM.md section 2).  Step t (1..T):
 * the adapted weights are merged, the layer sparsities decided from the
 * representations (CKA -> RMI -> bounded LP) and the model pruned to them
 * against the dense reference outputs; the adapters are unmerged under the
 * new mask, the ranks decided from the reconstruction errors (mean
 * losa_rank_mean(t)), and the adapters trained on the step's examples.  A
 * checkpoint after every step; a run resumes after the last complete one.
 * Collective (world) throughout. */
#include "run_internal.h"
#include "kernels.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* Dense reference outputs on disk: one dataset per layer, (Nmine*S, D), in
 * the stage's (and replica's) shard; read back one layer at a time. */
typedef struct {
    io_store *io;        /* while writing, then reading */
    float *buf;          /* (Nmine*S, D) one layer */
    int64_t shape[2];
    int layer0;
    char path[1300];
} dense_disk;

static losa_status dense_sink(void *ctx, int l, const float *X)
{
    dense_disk *dd = ctx;
    char name[64];
    snprintf(name, sizeof name, "/dense/%d", dd->layer0 + l);
    return io_store_write_tensor(dd->io, name, X, 2, dd->shape);
}

static losa_status dense_disk_write(losa_run *r, const model_stage *s, dense_disk *dd)
{
    dist_ctx *d = r->d;
    const data_settings *ds = &r->set->data;
    int Nm = calib_windows_mine(d, ds->calib_n);
    dd->shape[0] = (int64_t)(Nm > 0 ? Nm : 1) * ds->calib_seqlen;
    dd->shape[1] = s->cfg.dim;
    dd->layer0 = s->layer0;
    snprintf(dd->path, sizeof dd->path, "%s/ckpt/dense_%d_%d.h5", r->set->output.dir.path,
             dist_stage(d), dist_replica(d));
    losa_status st = io_store_create(&dd->io, dd->path);
    if (st == LOSA_OK)
        st = io_store_reserve(dd->io, dd->shape[0] * dd->shape[1] * 4 * s->n_layers +
                                          H5_PER_DATASET * s->n_layers + H5_TENSOR_FILE);
    if ((st = dist_agree(d, st)) != LOSA_OK) {
        io_store_close(&dd->io);
        return st;
    }
    st = calib_dense_stream(d, s, r->in->calib, ds->calib_n, ds->calib_seqlen, LOSA_CALIB_CHUNK,
                            dense_sink, dd);
    if (st == LOSA_OK) st = io_store_commit(&dd->io);
    else io_store_close(&dd->io);
    if (st == LOSA_OK) st = io_store_open(&dd->io, dd->path);
    dd->buf = core_calloc((size_t)(dd->shape[0] * dd->shape[1]), sizeof(float));
    core_log("   dense reference outputs: %s (%.1f MB per layer)\n", dd->path,
             dd->shape[0] * dd->shape[1] * 4 / 1e6);
    return dist_agree(d, st);
}

static const float *dense_disk_layer(void *ctx, int l)
{
    dense_disk *dd = ctx;
    char name[64];
    snprintf(name, sizeof name, "/dense/%d", dd->layer0 + l);
    return io_store_read_tensor(dd->io, name, dd->buf, 2, dd->shape) == LOSA_OK ? dd->buf : NULL;
}

static void dense_disk_close(dense_disk *dd)
{
    io_store_close(&dd->io);
    core_free(dd->buf);
    dd->buf = NULL;
}

/* What the loop carries from step to step. */
typedef struct {
    lora_adapters ad;
    float *dense;         /* dense reference outputs of the stage's layers in memory, or */
    dense_disk disk;      /* ... in its HDF5 shard (losa.dense_ref = disk) */
    double *grams;        /* (L+1, n, n) centred Gram matrices, n = losa.rmi_n */
    double *cur;          /* (L) current layer sparsities */
    double *err_local;    /* (L) reconstruction errors of this stage's layers */
    losa_decision dc;
    uint16_t *keep;       /* bf16 maps before the step's merge (step_keep_weights), or NULL */
    int64_t stream;       /* training examples the steps took so far */
    double t_start;       /* core_time() at the start of the phase */
} losa_loop;

static void loop_free(losa_loop *lp, model_stage *s)
{
    losa_decision_free(&lp->dc);
    core_free(lp->grams);
    core_free(lp->dense);
    dense_disk_close(&lp->disk);
    lora_adapters_free(&lp->ad, s);
    core_free(lp->keep);
    memset(lp, 0, sizeof *lp);
}

/* model.dtype = bf16 with a pruner that leaves the kept weights as they are
 * (magnitude, Wanda): the weights of the stage's maps (the head of the
 * plain bf16 block after them does not move), kept from before the step's
 * merge so that step_ranks applies the new mask to them instead of
 * unmerging: bf16(bf16(W + Delta) - Delta) need not be W, so the unmerge
 * would move a kept weight by up to an ulp every step, while the exact
 * result of "prune W + Delta, take Delta back" for these pruners is W under
 * the new mask.  SparseGPT updates the kept weights (the unmerge is the
 * definition there) and fp32's unmerge moves them only by fp32 rounding:
 * 0 (the unmerge).  Not collective. */
static int64_t step_keep_weights(const run_settings *rs, const model_config *c, int n_layers)
{
    int keeps = rs->prune.pc.method == PRUNE_METHOD_MAGNITUDE ||
                rs->prune.pc.method == PRUNE_METHOD_WANDA;
    return rs->model.dtype == MODEL_DTYPE_BF16 && keeps ? model_map_weights(c) * n_layers : 0;
}

size_t losa_step_keep_bytes(const run_settings *rs, const model_config *c, int n_layers)
{
    int64_t n = step_keep_weights(rs, c, n_layers);
    return n > 0 ? core_alloc_bytes((size_t)n, sizeof(uint16_t)) : 0;
}

/* The copy of the maps an evaluation between bf16 steps (eval.each_step)
 * takes and puts back (losa_step's evaluation), every pruner. */
static int64_t eval_keep_weights(const run_settings *rs, const model_config *c, int n_layers)
{
    return rs->model.dtype == MODEL_DTYPE_BF16 && rs->eval.each_step
               ? model_map_weights(c) * n_layers : 0;
}

size_t losa_eval_keep_bytes(const run_settings *rs, const model_config *c, int n_layers)
{
    int64_t n = eval_keep_weights(rs, c, n_layers);
    return n > 0 ? core_alloc_bytes((size_t)n, sizeof(uint16_t)) : 0;
}

/* After pruning the merged maps (plain bf16 block, maps first): every map
 * weight the pruner kept (non-zero) is the one kept from before the merge,
 * every other the pruner's zero. */
static void keep_apply_mask(model_stage *s, const uint16_t *keep, int64_t n)
{
    uint16_t *w = s->params_bf16;
    LOSA_CHECK(s->dtype == MODEL_DTYPE_BF16 && !s->bf16_packed);
#pragma omp parallel for simd schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t e = 0; e < n; e++) w[e] = (w[e] & 0x7fffu) != 0 ? keep[e] : w[e];
}

/* The last usable checkpoint into s, ad and the history: a damaged one is
 * set aside and the step before tried; if none is left after a damaged
 * one, from the start (dense weights, fresh adapters, empty history).
 * *done = the steps done. */
static losa_status resume(losa_run *r, model_stage *s, lora_adapters *ad, int *done)
{
    dist_ctx *d = r->d;
    losa_status st = LOSA_OK;
    int t = dist_rank(d) == 0 ? losa_ckpt_last(r) : 0, damaged = 0;
    dist_bcast(d, &t, sizeof t, 0);
    while (t > 0 && (st = losa_ckpt_read(r, t, s, ad)) != LOSA_OK) {
        damaged = 1;
        st = dist_rank(d) == 0 ? losa_ckpt_set_aside(r, t) : LOSA_OK;
        if ((st = dist_agree(d, st)) != LOSA_OK) return st;
        t = dist_rank(d) == 0 ? losa_ckpt_last(r) : 0;
        dist_bcast(d, &t, sizeof t, 0);
    }
    *done = t;
    if (damaged && t == 0) {
        lora_adapters_free(ad, s);
        losa_history_reset(&r->hist);
        st = losa_run_reload_dense(r, s);
        if (st == LOSA_OK) st = lora_adapters_build(ad, s, &r->set->lora.lc);
        return dist_agree(d, st);
    }
    if (t > 0) {
        core_log("== LoSA: resuming after step %d of %d (%s/ckpt/step_%d)\n", t,
                 r->set->losa.steps, r->set->output.dir.path, t);
        lora_delta_update(ad, s);
        lora_attach(ad, s);
        /* the time of the earlier invocations up to that step */
        double prev[LOSA_N_ELAPSED];
        memcpy(prev, r->hist.elapsed + (t - 1) * LOSA_N_ELAPSED, sizeof prev);
        dist_bcast(d, prev, sizeof prev, 0);
        r->out.prev_losa_s = prev[LOSA_ELAPSED_LOSA];
        r->out.prev_run_s = prev[LOSA_ELAPSED_RUN];
    }
    return LOSA_OK;
}

/* Dense reference outputs of this stage's layers, in memory or in the
 * stage's HDF5 shard ckpt/dense_<stage>_<replica>.h5 (losa.dense_ref =
 * disk).  fresh: s still holds the dense weights (no step done), used with
 * the adapters detached; on resume they are recomputed from a dense copy
 * read back from the store (deterministic: the same outputs). */
static losa_status dense_refs(losa_run *r, losa_loop *lp, model_stage *s, int fresh)
{
    const data_settings *ds = &r->set->data;
    model_stage dense_st, *src = s;
    memset(&dense_st, 0, sizeof dense_st);
    losa_status st = LOSA_OK;
    if (fresh) {
        lora_detach(&lp->ad, s);
    } else {
        st = model_stage_for_rank_dtype(&dense_st, &r->in->cfg, r->d, r->set->model.dtype);
        if (st == LOSA_OK) st = losa_run_reload_dense(r, &dense_st);
        src = &dense_st;
    }
    if (st == LOSA_OK && r->set->losa.dense_on_disk) st = dense_disk_write(r, src, &lp->disk);
    else if (st == LOSA_OK)
        st = calib_dense_outputs(r->d, src, r->in->calib, ds->calib_n, ds->calib_seqlen,
                                 LOSA_CALIB_CHUNK, &lp->dense);
    model_stage_free(&dense_st);
    if (fresh) lora_attach(&lp->ad, s);
    return dist_agree(r->d, st);
}

/* Step t's layer sparsities (lp->dc), after merging the adapters: the
 * pruner sees the adapted weights. */
static losa_status step_decide(losa_run *r, model_stage *s, losa_loop *lp, int t)
{
    const run_settings *rs = r->set;
    int L = r->in->cfg.n_layers;
    int64_t nk = step_keep_weights(rs, &s->cfg, s->n_layers);
    if (nk > 0) {
        core_free(lp->keep);
        lp->keep = core_malloc((size_t)nk, sizeof(uint16_t));
        memcpy(lp->keep, s->params_bf16, sizeof(uint16_t) * (size_t)nk);
    }
    lora_merge(&lp->ad, s);
    losa_status st = calib_layer_grams(r->d, s, r->in->calib, rs->losa.rmi_n,
                                       rs->data.calib_seqlen, LOSA_CALIB_CHUNK, lp->grams);
    losa_run_layer_sparsities(r->d, s, lp->cur);
    losa_decide_sparsity(&lp->dc, rs->losa.allocator, lp->grams, rs->losa.rmi_n,
                         rs->prune.pc.sparsity, t, rs->losa.steps, rs->losa.beta,
                         rs->losa.compat.sparsity_floor ? lp->cur : NULL);
    core_log("== LoSA step %d/%d: s_t %.4f, layer sparsity", t, rs->losa.steps, lp->dc.s_t);
    for (int l = 0; l < L; l++) core_log(" %.3f", lp->dc.sparsity[l]);
    core_log("\n");
    return st;
}

/* After pruning: unmerge with the new mask (W_eff = W + Delta (.) M_new is
 * the pruned merged weight; training continues from the same A, B) or,
 * with the maps kept from before the merge (step_keep_weights), the new
 * mask applied to them; then the ranks from the reconstruction errors (the
 * collective step). */
static losa_status step_ranks(losa_run *r, model_stage *s, losa_loop *lp,
                              const calib_prune_result *pr, int t)
{
    const run_settings *rs = r->set;
    const losa_compat *c = &rs->losa.compat;
    const lora_config *lc = &rs->lora.lc;
    int L = r->in->cfg.n_layers;
    if (lp->keep) {
        keep_apply_mask(s, lp->keep, step_keep_weights(rs, &s->cfg, s->n_layers));
        core_free(lp->keep);
        lp->keep = NULL;
        lora_attach(&lp->ad, s);
        lora_delta_update(&lp->ad, s);
    } else {
        lora_delta_update(&lp->ad, s);
        lora_unmerge(&lp->ad, s);
    }
    memset(lp->err_local, 0, sizeof(double) * L);
    if (dist_replica(r->d) == 0)
        for (int l = 0; l < s->n_layers; l++)
            lp->err_local[s->layer0 + l] = pr->recon_err[s->layer0 + l];
    int R = losa_rank_mean(t);
    losa_collective_ranks(r->d, &lp->dc, lp->err_local, R, LOSA_RANK_MIN,
                          losa_rank_bound(c->rank_cap, c->rank_max, lc->r_max),
                          rs->losa.rank_fixed ? lc->rank : 0, c->rebalance);
    losa_rank_active(lp->dc.rank_active, lp->dc.rank, L, c->rank_cap, lc->r_max);
    losa_status st = LOSA_OK;
    for (int l = 0; l < s->n_layers && st == LOSA_OK; l++)
        st = lora_set_rank(&lp->ad, l, lp->dc.rank_active[s->layer0 + l]);
    lora_delta_update(&lp->ad, s);
    core_log("   ranks");
    for (int l = 0; l < L; l++) core_log(" %d", lp->dc.rank[l]);
    core_log("  (mean %d)\n", R);
    return st;
}

/* Step t's training on its examples: the next stretch of the stream, or
 * (data.train_slices = reference) the reference script's fixed range. */
static losa_status step_train(losa_run *r, model_stage *s, losa_loop *lp, int t, double **loss,
                              int64_t *nl, double *seconds)
{
    const run_settings *rs = r->set;
    int T = rs->losa.steps;
    int64_t n_t = t < T ? rs->losa.samples_step : rs->losa.samples_last, first = lp->stream;
    int64_t range_n = 0;
    losa_status st = LOSA_OK;
    if (rs->data.train_slices == LOSA_TRAIN_SLICES_REFERENCE) {
        losa_train_slice(t, T, rs->losa.samples_step, rs->losa.samples_last, r->in->ds.n, &first,
                         &n_t);
        range_n = n_t;
        if (n_t == 0)
            st = core_err(LOSA_ERR_ARG, "data.train_slices = reference: step %d's range starts at "
                          "example %lld but data.train has only %lld", t, (long long)first,
                          (long long)r->in->ds.n);
    }
    char label[64];
    snprintf(label, sizeof label, "LoSA step %d train", t);
    uint64_t seed = rs->train.tc.seed * LOSA_SEED_MUL + LOSA_SEED_STEP + t;
    if (st == LOSA_OK)
        st = losa_run_train(r, s, &lp->ad, first, range_n, n_t, seed, label, loss, nl, seconds);
    lp->stream += n_t;
    return st;
}

/* Step t's row of the history (identical on every rank; rank 0 writes it). */
static void step_record(losa_run *r, const losa_loop *lp, int t, const calib_prune_result *pr,
                        double ppl, const double *loss, int64_t nl,
                        const double secs[LOSA_N_SECS])
{
    losa_history *h = &r->hist;
    const losa_decision *dc = &lp->dc;
    int64_t L = h->L, k = t - 1;
    h->s_t[k] = dc->s_t;
    memcpy(h->sparsity + k * L, dc->sparsity, sizeof(double) * L);
    memcpy(h->measured + k * L, pr->sparsity, sizeof(double) * L);
    memcpy(h->importance + k * L, dc->importance, sizeof(double) * L);
    memcpy(h->cka + k * (L + 1) * (L + 1), dc->cka, sizeof(double) * (L + 1) * (L + 1));
    memcpy(h->recon + k * L, pr->recon_err, sizeof(double) * L);
    memcpy(h->rank + k * L, dc->rank, sizeof(int) * L);
    memcpy(h->rank_active + k * L, dc->rank_active, sizeof(int) * L);
    h->ppl[k] = ppl;
    h->loss_len[k] = (int)(nl < h->loss_cap ? nl : h->loss_cap);
    for (int64_t i = 0; i < h->loss_len[k]; i++) h->loss[k * h->loss_cap + i] = loss ? loss[i] : NAN;
    memcpy(h->secs + k * LOSA_N_SECS, secs, sizeof(double) * LOSA_N_SECS);
    double *el = h->elapsed + k * LOSA_N_ELAPSED;
    el[LOSA_ELAPSED_LOSA] = r->out.prev_losa_s + (core_time() - lp->t_start);
    el[LOSA_ELAPSED_RUN] = r->out.prev_run_s + (core_time() - r->out.t0);
}

/* LoSA step t (1..T), then its checkpoint. */
static losa_status losa_step(losa_run *r, model_stage *s, losa_loop *lp, int t)
{
    const run_settings *rs = r->set;
    dist_ctx *d = r->d;
    double tg = core_time();
    losa_status st = step_decide(r, s, lp, t);
    double tp = core_time();
    calib_prune_opts o = {.pc = rs->prune.pc, .layer_sparsity = lp->dc.sparsity,
                          .chunk = LOSA_CALIB_CHUNK,
                          .dense_layer = rs->losa.dense_on_disk ? dense_disk_layer : NULL,
                          .dense_ctx = &lp->disk};
    calib_prune_result pr;
    memset(&pr, 0, sizeof pr);
    if (st == LOSA_OK)
        st = calib_prune_model(d, s, r->in->calib, rs->data.calib_n, rs->data.calib_seqlen, &o,
                               lp->dense, &pr);
    if (st != LOSA_OK) {
        calib_result_free(&pr);
        return st;
    }
    st = step_ranks(r, s, lp, &pr, t);
    double tt = core_time();
    /* test hook (LOSA_FAULT_KILL): the last rank dies in the middle of step t */
    if (r->hooks.kill_step == t && dist_rank(d) == dist_size(d) - 1) raise(SIGKILL);
    double *loss = NULL, train_s = 0;
    int64_t nl = 0;
    if (st == LOSA_OK) st = step_train(r, s, lp, t, &loss, &nl, &train_s);
    double te = core_time(), ppl = NAN;
    if (st == LOSA_OK && rs->eval.each_step && t < rs->losa.steps) {
        /* bf16: merge then unmerge round twice (bf16(bf16(W + D) - D) need
         * not be W), so an evaluation would move the weights: the maps are
         * copied before the merge and put back instead of unmerged (the
         * plain block's maps: the head's rows after them do not move) */
        uint16_t *keep = NULL;
        size_t nk = 0;
        if (s->dtype == MODEL_DTYPE_BF16) {
            nk = sizeof(uint16_t) * (size_t)eval_keep_weights(rs, &s->cfg, s->n_layers);
            keep = core_malloc(nk > 0 ? nk : 1, 1);
            memcpy(keep, s->params_bf16, nk);
        }
        lora_merge(&lp->ad, s);
        ppl = losa_run_ppl(r, s, NULL);
        if (keep) {
            memcpy(s->params_bf16, keep, nk);
            core_free(keep);
            lora_attach(&lp->ad, s);
            lora_delta_update(&lp->ad, s);
        } else lora_unmerge(&lp->ad, s);
        core_log("   step %d: ppl %.4f\n", t, ppl);
    }
    double secs[LOSA_N_SECS] = {[LOSA_SECS_DECIDE] = tp - tg, [LOSA_SECS_PRUNE] = tt - tp,
                                [LOSA_SECS_TRAIN] = train_s, [LOSA_SECS_EVAL] = core_time() - te};
    step_record(r, lp, t, &pr, ppl, loss, nl, secs);
    core_free(loss);
    calib_result_free(&pr);
    if (st == LOSA_OK) st = losa_ckpt_write(r, t, s, &lp->ad);
    if (st == LOSA_OK && r->hooks.stop_after == t) {
        core_log("== stopping after step %d as asked (--stop-after)\n", t);
        st = core_err(LOSA_ERR_ARG, "stopped after step %d (--stop-after); run again to resume", t);
    }
    return dist_agree(d, st);
}

/* The final merge (an ordinary sparse model, no adapter at inference: the
 * pattern must not change) and the numbers of the LoSA model. */
static losa_status losa_finish(losa_run *r, model_stage *s, losa_loop *lp, losa_result *res)
{
    dist_ctx *d = r->d;
    losa_status st = LOSA_OK;
    int64_t z0 = calib_stage_zeros(s, NULL);
    int64_t flips = lora_merge(&lp->ad, s);
    double v[2] = {(double)flips, (double)(calib_stage_zeros(s, NULL) - z0)};
    if (dist_replica(d) != 0) v[0] = v[1] = 0;
    dist_sum_doubles(d, v, 2);
    if (v[0] != 0 || v[1] != 0)
        st = core_err(LOSA_ERR_INTERNAL, "final merge changed the sparsity pattern (%g flips)", v[0]);
    res->sparsity = losa_run_sparsity(d, s);
    res->ppl = losa_run_ppl(r, s, &res->eval_seconds);
    res->seconds = r->out.prev_losa_s + (core_time() - lp->t_start); /* over the invocations */
    res->train_seconds = 0;
    for (int t = 0; t < r->hist.T; t++)
        res->train_seconds += r->hist.secs[t * LOSA_N_SECS + LOSA_SECS_TRAIN];
    core_log("   LoSA: sparsity %.4f  ppl %.4f  (%.1fs)\n", res->sparsity, res->ppl, res->seconds);
    return st;
}

/* Doubles of the loop's one block: grams (L+1, n, n), cur (L), err_local (L). */
static size_t loop_doubles(int L, int n) { return (size_t)(L + 1) * n * n + 2 * (size_t)L; }

size_t losa_loop_bytes(int L, int n) { return core_alloc_bytes(loop_doubles(L, n), sizeof(double)); }

losa_status losa_phase_losa(losa_run *r, model_stage *s, losa_result *res)
{
    const run_settings *rs = r->set;
    dist_ctx *d = r->d;
    int L = r->in->cfg.n_layers, T = rs->losa.steps, n = rs->losa.rmi_n;
    losa_loop lp;
    memset(&lp, 0, sizeof lp);
    lp.t_start = core_time();
    losa_status st = lora_adapters_build(&lp.ad, s, &rs->lora.lc);
    if ((st = dist_agree(d, st)) != LOSA_OK) return st;
    int done = 0;
    st = resume(r, s, &lp.ad, &done);
    if (st == LOSA_OK) st = dense_refs(r, &lp, s, done == 0);
    if (st == LOSA_OK) {
        lp.grams = core_calloc(loop_doubles(L, n), sizeof(double));
        lp.cur = lp.grams + (size_t)(L + 1) * n * n;
        lp.err_local = lp.cur + L;
        losa_decision_init(&lp.dc, L);
        for (int t = 1; t <= done; t++) lp.stream += t < T ? rs->losa.samples_step : rs->losa.samples_last;
    }
    for (int t = done + 1; t <= T && st == LOSA_OK; t++) st = losa_step(r, s, &lp, t);
    if (st == LOSA_OK) st = losa_finish(r, s, &lp, res);
    loop_free(&lp, s);
    return dist_agree(d, st);
}
