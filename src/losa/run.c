/* losa run: the LoSA pipeline (ALGORITHM.md sections 2-5) and its baselines
 * on the same calibration and training data, with a checkpoint after every
 * LoSA step and a run directory from which every number of a paper table
 * can be read (rundir.c).  This file: the driver, the one-shot pruning and
 * +LoRA baselines, the training phase and the measurements the phases
 * share.  Collective (world) throughout. */
#include "run_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"

/* ------------------------------------------------------------ measurements */

double losa_run_sparsity(dist_ctx *d, const model_stage *s)
{
    int64_t n;
    double v[2] = {0, 0};
    if (dist_replica(d) == 0) {
        v[0] = (double)calib_stage_zeros(s, &n);
        v[1] = (double)n;
    }
    dist_sum_doubles(d, v, 2);
    return v[0] / v[1];
}

void losa_run_layer_sparsities(dist_ctx *d, const model_stage *s, double *x)
{
    int L = s->cfg.n_layers;
    memset(x, 0, sizeof(double) * L);
    if (dist_replica(d) == 0)
        for (int l = 0; l < s->n_layers; l++) x[s->layer0 + l] = calib_layer_sparsity(s, l);
    dist_sum_doubles(d, x, L);
}

double losa_run_ppl(losa_run *r, const model_stage *s, double *seconds)
{
    const eval_settings *e = &r->set->eval;
    if (seconds) *seconds = 0;
    if (!r->in->eval_ids) return NAN;
    eval_ppl_result res;
    double t0 = core_time();
    losa_status st = eval_ppl(r->d, s, r->in->eval_ids, r->in->n_eval, e->seqlen, e->batch,
                              e->max_windows, &res);
    if (seconds) *seconds = core_time() - t0;
    return st == LOSA_OK ? res.ppl : NAN;
}

losa_status losa_run_reload_dense(losa_run *r, model_stage *s)
{
    io_store *io = NULL;
    losa_status st = io_store_open(&io, r->set->model.store.path);
    if (st == LOSA_OK) st = io_store_read_stage(io, s);
    io_store_close(&io);
    return dist_agree(r->d, st);
}

static double mean_of(const double *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return n ? s / n : NAN;
}

/* ------------------------------------------------------------ training */

/* The examples of optimizer step `step` into idx (per): the stream is the
 * dataset (or examples first .. first + range_n - 1) repeated in seeded
 * epoch orders (perm holds the current epoch's, *epoch its number). */
static void step_examples(losa_run *r, int64_t first, int64_t range_n, int64_t step, int64_t per,
                          int64_t *perm, int64_t *epoch, int64_t *idx)
{
    const run_settings *rs = r->set;
    int64_t m = range_n > 0 ? range_n : r->in->ds.n, base = range_n > 0 ? first : 0;
    for (int64_t j = 0; j < per; j++) {
        int64_t p = (range_n > 0 ? 0 : first) + step * per + j, e = p / m;
        if (e != *epoch)
            lora_data_epoch_order(&r->in->ds, base, m, rs->data.group_by_length ? per : 0,
                                  rs->train.tc.seed, *epoch = e, perm);
        idx[j] = base + perm[p % m];
    }
}

/* Tokens of an optimizer step's micro-batches. */
static size_t step_tokens(const lora_train_config *tc)
{
    return (size_t)tc->B * tc->grad_accum * tc->T;
}

size_t losa_run_train_bytes(const lora_train_config *tc)
{
    return core_alloc_bytes(step_tokens(tc) * 2, sizeof(int));
}

losa_status losa_run_train(losa_run *r, model_stage *s, lora_adapters *ad, int64_t first,
                           int64_t range_n, int64_t n_examples, uint64_t seed, const char *label,
                           double **loss, int64_t *n_steps, double *seconds)
{
    const run_settings *rs = r->set;
    lora_train_config tc = rs->train.tc;
    int64_t per = (int64_t)tc.B * tc.grad_accum;
    tc.steps = (n_examples + per - 1) / per;
    tc.seed = seed;
    *n_steps = tc.steps;
    *loss = core_calloc(tc.steps > 0 ? (size_t)tc.steps : 1, sizeof(double));
    memset(ad->m, 0, sizeof(float) * ad->n_params);
    memset(ad->v, 0, sizeof(float) * ad->n_params);
    ad->step = 0;
    lora_trainer tr;
    double t0 = core_time();
    losa_status st = lora_trainer_build(&tr, r->d, s, ad, &tc);
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    int64_t nt = (int64_t)step_tokens(&tc), epoch = -1;
    int *tok = core_calloc((size_t)nt * 2, sizeof(int)), *tgt = tok + nt;
    int64_t *perm = core_calloc((size_t)(r->in->ds.n + per), sizeof(int64_t)), *idx = perm + r->in->ds.n;
    core_progress pg;
    core_progress_start(&pg, label, "tok", tc.steps);
    for (int64_t step = 0; step < tc.steps && st == LOSA_OK; step++) {
        /* test hook (LOSA_FAULT_NAN = "<label>:<step>"): one adapter weight
         * of the first stage poisoned before that optimizer step */
        char at[96];
        snprintf(at, sizeof at, "%s:%lld", label, (long long)step);
        if (r->hooks.nan_at[0] && !strcmp(r->hooks.nan_at, at) && s->has_embed) {
            ad->A[0][0] = NAN;
            lora_delta_update(ad, s);
        }
        step_examples(r, first, range_n, step, per, perm, &epoch, idx);
        for (int mb = 0; mb < tc.grad_accum; mb++)
            lora_data_batch(&r->in->ds, idx + (int64_t)mb * tc.B, tc.B, tc.T, s->cfg.eos_id,
                            rs->data.response_only, tok + mb * (int64_t)tc.B * tc.T,
                            tgt + mb * (int64_t)tc.B * tc.T);
        lora_step_stats ss;
        st = lora_train_step(&tr, tok, tgt, &ss);
        if (st != LOSA_OK) {
            char msg[900];
            snprintf(msg, sizeof msg, "%s", core_errmsg());
            core_err(st, "%s: %s (the last complete checkpoint is kept: resume with a lower "
                     "learning rate, e.g. --set train.lr=...)", label, msg);
            break;
        }
        (*loss)[step] = ss.loss;
        char extra[96];
        snprintf(extra, sizeof extra, "loss %.4f lr %.2e", ss.loss, ss.lr);
        core_progress_update(&pg, step + 1, (step + 1) * nt, extra);
    }
    core_progress_end(&pg, tc.steps * nt);
    core_free(tok);
    core_free(perm);
    lora_trainer_free(&tr);
    *seconds = core_time() - t0;
    return dist_agree(r->d, st);
}

/* ------------------------------------------------------------ baselines */

/* One-shot pruning at the target (or prune.layer_sparsity), in place. */
static losa_status phase_prune(losa_run *r, model_stage *s, losa_result *res)
{
    const prune_settings *ps = &r->set->prune;
    const data_settings *ds = &r->set->data;
    calib_prune_opts o = {.pc = ps->pc, .layer_sparsity = ps->layer_sparsity,
                          .chunk = LOSA_CALIB_CHUNK};
    calib_prune_result pr;
    double t0 = core_time();
    core_log("== prune: %s, %s, sparsity %.3f%s\n", prune_method_str(ps->pc.method), ps->pattern,
             ps->pc.sparsity, ps->layer_sparsity ? " (per-layer sparsity)" : "");
    losa_status st = calib_prune_model(r->d, s, r->in->calib, ds->calib_n, ds->calib_seqlen, &o,
                                       NULL, &pr);
    if (st == LOSA_OK) {
        res->prune_seconds = core_time() - t0;
        res->sparsity = losa_run_sparsity(r->d, s);
        res->ppl = losa_run_ppl(r, s, &res->eval_seconds);
        res->seconds = core_time() - t0;
        memcpy(r->out.prune_recon, pr.recon_err, sizeof(double) * r->in->cfg.n_layers);
        core_log("   pruned: sparsity %.4f  ppl %.4f  (%.1fs)\n", res->sparsity, res->ppl,
                 res->seconds);
    }
    calib_result_free(&pr);
    return st;
}

/* Masked LoRA with fixed rank on the pruned model, total training budget. */
static losa_status phase_lora(losa_run *r, model_stage *s, losa_result *res)
{
    const run_settings *rs = r->set;
    lora_adapters ad;
    double t0 = core_time();
    int64_t zeros0 = calib_stage_zeros(s, NULL);
    losa_status st = lora_adapters_build(&ad, s, &rs->lora.lc);
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    int64_t total = (int64_t)(rs->losa.steps - 1) * rs->losa.samples_step + rs->losa.samples_last;
    core_log("== +LoRA: rank %d on %lld examples\n", rs->lora.lc.rank, (long long)total);
    st = losa_run_train(r, s, &ad, 0, 0, total, rs->train.tc.seed * LOSA_SEED_MUL + LOSA_SEED_LORA,
                        "+LoRA train", &res->loss, &res->n_loss, &res->train_seconds);
    if (st == LOSA_OK) {
        int64_t flips = lora_merge(&ad, s);
        int64_t z = calib_stage_zeros(s, NULL);
        if (flips != 0 || z != zeros0)
            st = core_err(LOSA_ERR_INTERNAL, "+LoRA merge changed the sparsity pattern (%lld flips)",
                          (long long)flips);
    }
    lora_adapters_free(&ad, s);
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    res->sparsity = losa_run_sparsity(r->d, s);
    res->ppl = losa_run_ppl(r, s, &res->eval_seconds);
    res->seconds = core_time() - t0;
    int64_t n = res->n_loss, k = n < 10 ? n : 10; /* the first and last 10 losses */
    core_log("   +LoRA: loss %.4f -> %.4f  ppl %.4f  (%.1fs)\n", mean_of(res->loss, k),
             mean_of(res->loss + (n - k), k), res->ppl, res->seconds);
    return LOSA_OK;
}

/* ------------------------------------------------------------ driver */

void losa_run_init(losa_run *r, dist_ctx *d, const deck *dk, const run_settings *rs,
                   const losa_inputs *in, const losa_hooks *h)
{
    memset(r, 0, sizeof *r);
    r->d = d;
    r->dk = dk;
    r->set = rs;
    r->in = in;
    if (h) r->hooks = *h;
    r->lock.fd = -1;
    r->out.dense_ppl = NAN;
}

/* The baselines of modes prune, lora and compare (from ckpt/base.h5 when a
 * compare run resumes), after the dense perplexity. */
static losa_status run_baselines(losa_run *r, model_stage *s)
{
    losa_mode mode = r->set->losa.mode;
    losa_results *o = &r->out;
    losa_status st = LOSA_OK;
    int base = (mode == LOSA_MODE_COMPARE || mode == LOSA_MODE_PRUNE) && losa_rundir_load_base(r);
    if (!base) {
        core_log("== dense model\n");
        o->dense_ppl = losa_run_ppl(r, s, &o->dense_eval_s);
        core_log("   dense ppl %.4f\n", o->dense_ppl);
    } else {
        core_log("== baselines from %s/ckpt/base.h5 (resumed run)\n", r->set->output.dir.path);
    }
    if (mode != LOSA_MODE_LOSA && !base) {
        st = phase_prune(r, s, &o->res[LOSA_MODE_PRUNE]);
        o->have[LOSA_MODE_PRUNE] = 1;
        if (st == LOSA_OK && mode != LOSA_MODE_PRUNE) {
            st = phase_lora(r, s, &o->res[LOSA_MODE_LORA]);
            o->have[LOSA_MODE_LORA] = 1;
        }
        if (st == LOSA_OK && mode == LOSA_MODE_COMPARE) st = losa_rundir_save_base(r);
    } else if (base) {
        o->have[LOSA_MODE_PRUNE] = 1;
        o->have[LOSA_MODE_LORA] = mode == LOSA_MODE_COMPARE;
    }
    return st;
}

losa_status losa_run_execute(losa_run *r)
{
    const run_settings *rs = r->set;
    dist_ctx *d = r->d;
    losa_mode mode = rs->losa.mode;
    int L = r->in->cfg.n_layers;
    /* this invocation's seconds count from the process's start: its set-up
     * (MPI start, the inputs read and tokenized) is part of the run */
    r->out.t0 = core_time_origin();
    r->out.setup_tokenize_s = r->in->load_seconds;
    int64_t per = (int64_t)rs->train.tc.B * rs->train.tc.grad_accum;
    int64_t most = rs->losa.samples_last > rs->losa.samples_step ? rs->losa.samples_last
                                                                 : rs->losa.samples_step;
    /* a phase of n examples takes ceil(n / per) <= n / per + 1 optimizer steps */
    losa_history_init(&r->hist, rs->losa.steps, L, most / per + 2);
    r->out.prune_recon = core_calloc((size_t)L, sizeof(double));
    r->out.dense_ppl = NAN;

    losa_status st = LOSA_OK;
    char ck[1300];
    snprintf(ck, sizeof ck, "%s/ckpt", rs->output.dir.path);
    if (dist_rank(d) == 0 && losa_mkdir_p(ck) != 0)
        st = core_err(LOSA_ERR_IO, "%s: cannot create the run directory: %s", ck, strerror(errno));
    if (st == LOSA_OK && dist_rank(d) == 0) st = losa_rundir_write_state(r);
    if ((st = dist_agree(d, st)) != LOSA_OK) return st;

    model_stage s;
    /* model.dtype = bf16: the maps and the head in bf16 (plain), read as
     * they are from a bf16 store, rounded from an fp32 one (no fp32 copy) */
    double ts = core_time();
    st = model_stage_for_rank_dtype(&s, &r->in->cfg, d, rs->model.dtype);
    if (st == LOSA_OK) st = losa_run_reload_dense(r, &s);
    if ((st = dist_agree(d, st)) != LOSA_OK) return st;
    r->out.setup_store_s = core_time() - ts;
    r->out.setup_s = core_time() - r->out.t0; /* the first phase starts */
    st = run_baselines(r, &s);
    const char *source = "losa prune";
    if (st == LOSA_OK && (mode == LOSA_MODE_LOSA || mode == LOSA_MODE_COMPARE)) {
        if (mode == LOSA_MODE_COMPARE) st = losa_run_reload_dense(r, &s);
        if (st == LOSA_OK) st = losa_phase_losa(r, &s, &r->out.res[LOSA_MODE_LOSA]);
        r->out.have[LOSA_MODE_LOSA] = 1;
        source = "losa run (LoSA, merged)";
    } else if (mode == LOSA_MODE_LORA) {
        source = "losa run (pruned + masked LoRA, merged)";
    }
    if (st == LOSA_OK) st = losa_rundir_write_model(r, &s, source);
    if (st == LOSA_OK && dist_rank(d) == 0) st = losa_rundir_write_run_file(r);
    st = dist_agree(d, st);
    model_stage_free(&s);
    return st;
}

void losa_run_free(losa_run *r)
{
    losa_history_free(&r->hist);
    for (int m = 0; m < LOSA_N_MODES; m++) core_free(r->out.res[m].loss);
    core_free(r->out.prune_recon);
    memset(&r->out, 0, sizeof r->out);
    core_lock_release(&r->lock); /* rank 0 holds it; a no-op elsewhere */
}
