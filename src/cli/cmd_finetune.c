/* losa finetune DECK.ini [--set section.key=value ...]
 *
 * Masked-LoRA fine-tuning of a (possibly pruned) model store through the
 * pipeline (one stage per rank), then merge: the output store holds the
 * adapted weights with exactly the input's non-zero pattern, the tokenizer,
 * and the training log (/finetune/{loss,lr,grad_norm,tokens_per_s}, the
 * resolved deck as /finetune/deck).  Adapters and AdamW state go to
 * <output.store>.lora.h5.  Collective (world). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cli.h"
#include "io.h"
#include "lora.h"
#include "losa.h"
#include "settings.h"

/* The sections of the deck losa finetune reads. */
typedef struct {
    model_settings model;
    data_settings data;
    output_settings output;
    train_settings train;
    lora_settings lora;
} finetune_settings;

/* cfg: NULL before the model is known (see include/settings.h). */
static losa_status finetune_settings_from_deck(const deck *dk, const model_config *cfg,
                                               finetune_settings *fs)
{
    losa_status s = model_settings_from_deck(dk, SETTINGS_MODEL_STORE, &fs->model);
    if (s == LOSA_OK) s = data_settings_from_deck(dk, cfg, SETTINGS_TRAIN, &fs->data);
    if (s == LOSA_OK) s = output_settings_from_deck(dk, SETTINGS_OUTPUT_STORE, &fs->output);
    if (s == LOSA_OK) s = train_settings_from_deck(dk, cfg, &fs->train);
    if (s == LOSA_OK) s = lora_settings_from_deck(dk, &fs->train, &fs->lora);
    return s;
}

/* tc->steps optimizer steps over the epochs of ds (grouped by length with
 * data.group_by_length); log (4, steps): loss, lr, gradient norm, tokens/s. */
static losa_status finetune_loop(lora_trainer *tr, const lora_dataset *ds, const data_settings *dset,
                                 const lora_train_config *tc, int eos_id, double *log)
{
    int64_t nmb = (int64_t)tc->grad_accum * tc->B, nt = nmb * tc->T;
    int *tok = core_calloc((size_t)nt * 2, sizeof(int)), *tgt = tok + nt;
    int64_t *perm = core_calloc((size_t)(ds->n + nmb), sizeof(int64_t)), *idx = perm + ds->n;
    int64_t cursor = 0, epoch = 0, group = dset->group_by_length ? nmb : 0;
    lora_data_epoch_order(ds, 0, ds->n, group, tc->seed, epoch, perm);
    core_progress pg;
    core_progress_start(&pg, "finetune", "tok", tc->steps);
    losa_status s = LOSA_OK;
    for (int64_t step = 0; step < tc->steps && s == LOSA_OK; step++) {
        for (int64_t j = 0; j < nmb; j++) {
            if (cursor == ds->n) {
                lora_data_epoch_order(ds, 0, ds->n, group, tc->seed, ++epoch, perm);
                cursor = 0;
            }
            idx[j] = perm[cursor++];
        }
        for (int mb = 0; mb < tc->grad_accum; mb++)
            lora_data_batch(ds, idx + (int64_t)mb * tc->B, tc->B, tc->T, eos_id,
                            dset->response_only, tok + mb * (int64_t)tc->B * tc->T,
                            tgt + mb * (int64_t)tc->B * tc->T);
        lora_step_stats ss;
        s = lora_train_step(tr, tok, tgt, &ss);
        if (s != LOSA_OK) break;
        log[step] = ss.loss;
        log[tc->steps + step] = ss.lr;
        log[2 * tc->steps + step] = ss.grad_norm;
        log[3 * tc->steps + step] = (double)nt / ss.seconds;
        char extra[128];
        snprintf(extra, sizeof extra, "loss %.4f lr %.2e |g| %.3f", ss.loss, ss.lr,
                 ss.grad_norm);
        core_progress_update(&pg, step + 1, (step + 1) * nt, extra);
    }
    core_progress_end(&pg, tc->steps * nt);
    core_free(tok);
    core_free(perm);
    return s;
}

/* Adapters and optimizer state to apath (stage by stage), the merge (its
 * zeros checked against zeros0), then the training log and every stage
 * into output.store (rank 0 writes). */
static losa_status finetune_save(dist_ctx *d, const deck *dk, const char *out, const char *apath,
                                 lora_adapters *ad, model_stage *st, const tok_tokenizer *tk,
                                 const double *log, int64_t steps, double zeros0)
{
    losa_status s = LOSA_OK;
    for (int p = 0; p < dist_n_stages(d); p++) {
        if (dist_stage(d) == p) s = io_adapters_write(apath, p == 0, ad, &st->cfg);
        dist_barrier(d);
    }
    s = dist_agree(d, s);
    /* merge and check the sparsity pattern */
    int64_t flips = lora_merge(ad, st);
    double z[2] = {(double)calib_stage_zeros(st, NULL), (double)flips};
    dist_sum_doubles(d, z, 2);
    core_log("finetune: merged: %.0f zero weights (before %.0f), %.0f pattern changes\n", z[0],
             zeros0, z[1]);
    if (s == LOSA_OK && z[0] != zeros0)
        s = core_err(LOSA_ERR_INTERNAL, "merge changed the number of zeros (%.0f -> %.0f)",
                     zeros0, z[0]);
    /* rank 0: the training log into the new store, then every stage */
    io_store *io = NULL;
    if ((s = dist_agree(d, s)) == LOSA_OK && dist_rank(d) == 0) {
        int64_t shp[1] = {steps};
        char *dump = settings_deck_dump(dk, NULL);
        s = io_store_create(&io, out);
        if (s == LOSA_OK) s = io_store_write_doubles(io, "/finetune/loss", log, 1, shp);
        if (s == LOSA_OK) s = io_store_write_doubles(io, "/finetune/lr", log + steps, 1, shp);
        if (s == LOSA_OK)
            s = io_store_write_doubles(io, "/finetune/grad_norm", log + 2 * steps, 1, shp);
        if (s == LOSA_OK)
            s = io_store_write_doubles(io, "/finetune/tokens_per_s", log + 3 * steps, 1, shp);
        if (s == LOSA_OK) s = io_store_write_string(io, "/finetune/deck", dump ? dump : "");
        free(dump);
    }
    if ((s = dist_agree(d, s)) != LOSA_OK) {
        io_store_close(&io);
        return s;
    }
    return losa_store_write_model(d, io, st, tk, "losa finetune (merged masked LoRA)");
}

int cmd_finetune(dist_ctx *d, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return cli_error(d, "finetune", 2, "DECK.ini: missing (usage: losa finetune DECK.ini "
                         "[--set section.key=value ...] [--json])");
    double t0 = core_time();
    int json = 0;
    losa_status s = LOSA_OK;
    for (int i = 2; i < argc && s == LOSA_OK; i++) {
        const char *v;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if ((v = cli_opt(argc, argv, &i, "--set"))) continue;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa finetune DECK.ini "
                          "[--set section.key=value ...] [--json])", argv[i]);
    }
    if (cli_fail(d, "finetune", s)) return 1;
    deck *dk = NULL;
    finetune_settings fs;
    memset(&fs, 0, sizeof fs);
    s = cli_load_deck(d, argv[1], argc - 1, argv + 1, &dk);
    if (s == LOSA_OK) s = finetune_settings_from_deck(dk, NULL, &fs);
    if (cli_fail(d, "finetune", s)) { deck_free(&dk); return 1; }
    /* the output store: not the input, one writer at a time (until return) */
    const char *out = fs.output.store.path;
    core_lock lock;
    s = losa_store_lock_output(d, out, fs.model.store.path, fs.output.store.where, &lock);
    if (cli_fail(d, "finetune", s)) { deck_free(&dk); return 1; }

    model_stage st;
    tok_tokenizer tk;
    memset(&tk, 0, sizeof tk);
    s = cli_load_model_plain(d, fs.model.store.path, fs.model.dtype, &st, &tk);
    if (s != LOSA_OK) s = settings_file_err(&fs.model.store, s, "%s", core_errmsg());
    if (cli_fail(d, "finetune", s)) { core_lock_release(&lock); deck_free(&dk); return 1; }
    s = finetune_settings_from_deck(dk, &st.cfg, &fs);
    lora_train_config tc = fs.train.tc;
    const lora_config *lc = &fs.lora.lc;
    lora_dataset ds;
    memset(&ds, 0, sizeof ds);
    if ((s = dist_agree(d, s)) == LOSA_OK) s = losa_load_train(d, &tk, &fs.data, tc.T, &ds);
    int64_t per_step = (int64_t)tc.B * tc.grad_accum;
    if (tc.steps == 0) tc.steps = (ds.n + per_step - 1) / (per_step ? per_step : 1);
    lora_adapters ad;
    lora_trainer tr;
    memset(&ad, 0, sizeof ad);
    memset(&tr, 0, sizeof tr);
    if (s == LOSA_OK) s = lora_adapters_build(&ad, &st, lc);
    if ((s = dist_agree(d, s)) == LOSA_OK) s = lora_trainer_build(&tr, d, &st, &ad, &tc);
    int rc = cli_fail(d, "finetune", s);
    if (rc) goto out;

    double zeros0 = (double)calib_stage_zeros(&st, NULL);
    dist_sum_doubles(d, &zeros0, 1);
    core_log("finetune: %lld examples (%s), %lld steps of %d x %d x %d tokens, lora r %d/%d "
             "alpha %g r0 %g dropout %g, %d stage(s), %.0f zero weights\n", (long long)ds.n,
             ds.format == LORA_DATA_ALPACA ? "alpaca" : "text", (long long)tc.steps,
             tc.grad_accum, tc.B, tc.T, lc->rank, lc->r_max, lc->alpha, lc->r0, lc->dropout,
             dist_n_stages(d), zeros0);
    double *log = core_calloc(4 * (size_t)tc.steps, sizeof(double));
    char apath[1200];
    snprintf(apath, sizeof apath, "%s.lora.h5", out);
    rc = cli_fail(d, "finetune", finetune_loop(&tr, &ds, &fs.data, &tc, st.cfg.eos_id, log));
    if (rc == 0)
        rc = cli_fail(d, "finetune", finetune_save(d, dk, out, apath, &ad, &st, &tk, log,
                                                   tc.steps, zeros0));
    if (rc == 0) core_log("finetune: wrote %s (merged model + training log) and %s\n", out, apath);
    if (rc == 0 && json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "store", out);
        cJSON_AddStringToObject(o, "adapters", apath);
        cJSON_AddNumberToObject(o, "steps", (double)tc.steps);
        if (tc.steps > 0 && isfinite(log[tc.steps - 1]))
            cJSON_AddNumberToObject(o, "loss", log[tc.steps - 1]);
        cJSON_AddNumberToObject(o, "seconds", core_time() - t0);
        cli_json_emit(d, o);
    }
    core_free(log);
out:
    lora_trainer_free(&tr);
    lora_adapters_free(&ad, &st);
    lora_data_free(&ds);
    tok_free(&tk);
    model_stage_free(&st);
    core_lock_release(&lock);
    deck_free(&dk);
    return rc;
}
