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
    s = cli_load_deck(d, argv[1], argc - 1, argv + 1, &dk);
    if (s == LOSA_OK) s = deck_check_required(dk, "model");
    if (s == LOSA_OK && !deck_str(dk, "data.train")[0])
        s = core_err(LOSA_ERR_ARG, "%s: data.train: a training data file is required", argv[1]);
    if (s == LOSA_OK && !deck_str(dk, "output.store")[0])
        s = core_err(LOSA_ERR_ARG, "%s: output.store: an output store path is required", argv[1]);
    if (cli_fail(d, "finetune", s)) { deck_free(&dk); return 1; }
    /* the output store: not the input, one writer at a time (until return) */
    core_lock lock;
    char where[1200];
    snprintf(where, sizeof where, "%s: output.store", argv[1]);
    s = losa_store_lock_output(d, deck_str(dk, "output.store"), deck_str(dk, "model.store"), where,
                               &lock);
    if (cli_fail(d, "finetune", s)) { deck_free(&dk); return 1; }

    model_stage st;
    tok_tokenizer tk;
    memset(&tk, 0, sizeof tk);
    s = cli_load_model(d, deck_str(dk, "model.store"), &st, &tk);
    if (cli_fail(d, "finetune", s)) { core_lock_release(&lock); deck_free(&dk); return 1; }
    lora_train_config tc;
    lora_config lc;
    losa_train_configs(dk, &tc, &lc);
    int response_only = deck_bool(dk, "data.response_only");
    if (tc.T > st.cfg.max_seq_len)
        s = core_err(LOSA_ERR_ARG, "%s: train.seqlen %d exceeds the model's max_seq_len %d",
                     argv[1], tc.T, st.cfg.max_seq_len);
    lora_dataset ds;
    memset(&ds, 0, sizeof ds);
    if ((s = dist_agree(d, s)) == LOSA_OK) s = lora_data_load(d, deck_str(dk, "data.train"), lora_data_format_from_string(deck_str(dk, "data.train_format")), &tk, tc.T, &ds);
    int64_t per_step = (int64_t)tc.B * tc.grad_accum;
    tc.steps = deck_int(dk, "train.steps");
    if (tc.steps == 0) tc.steps = (ds.n + per_step - 1) / (per_step ? per_step : 1);
    lora_adapters ad;
    lora_trainer tr;
    memset(&ad, 0, sizeof ad);
    memset(&tr, 0, sizeof tr);
    if (s == LOSA_OK) s = lora_adapters_build(&ad, &st, &lc);
    if ((s = dist_agree(d, s)) == LOSA_OK) s = lora_trainer_build(&tr, d, &st, &ad, &tc);
    if (cli_fail(d, "finetune", s)) goto out;

    double zeros0 = (double)calib_stage_zeros(&st, NULL);
    dist_sum_doubles(d, &zeros0, 1);
    core_log("finetune: %lld examples (%s), %lld steps of %d x %d x %d tokens, lora r %d/%d "
             "alpha %g r0 %g dropout %g, %d stage(s), %.0f zero weights\n", (long long)ds.n,
             ds.format == LORA_DATA_ALPACA ? "alpaca" : "text", (long long)tc.steps,
             tc.grad_accum, tc.B, tc.T, lc.rank, lc.r_max, lc.alpha, lc.r0, lc.dropout,
             dist_n_stages(d), zeros0);
    double *log = calloc(4 * tc.steps, sizeof(double));
    int64_t nmb = (int64_t)tc.grad_accum * tc.B, nt = nmb * tc.T;
    int *tok = malloc(sizeof(int) * nt), *tgt = malloc(sizeof(int) * nt);
    int64_t *perm = malloc(sizeof(int64_t) * ds.n), *idx = malloc(sizeof(int64_t) * nmb);
    int64_t cursor = 0, epoch = 0, group = deck_bool(dk, "data.group_by_length") ? nmb : 0;
    lora_data_epoch_order(&ds, 0, ds.n, group, tc.seed, epoch, perm);
    core_progress pg;
    core_progress_start(&pg, "finetune", "tok", tc.steps);
    for (int64_t step = 0; step < tc.steps && s == LOSA_OK; step++) {
        for (int64_t j = 0; j < nmb; j++) {
            if (cursor == ds.n) {
                lora_data_epoch_order(&ds, 0, ds.n, group, tc.seed, ++epoch, perm);
                cursor = 0;
            }
            idx[j] = perm[cursor++];
        }
        for (int mb = 0; mb < tc.grad_accum; mb++)
            lora_data_batch(&ds, idx + (int64_t)mb * tc.B, tc.B, tc.T, st.cfg.eos_id,
                            response_only, tok + mb * (int64_t)tc.B * tc.T,
                            tgt + mb * (int64_t)tc.B * tc.T);
        lora_step_stats ss;
        s = lora_train_step(&tr, tok, tgt, &ss);
        if (s != LOSA_OK) break;
        log[step] = ss.loss;
        log[tc.steps + step] = ss.lr;
        log[2 * tc.steps + step] = ss.grad_norm;
        log[3 * tc.steps + step] = (double)nt / ss.seconds;
        char extra[128];
        snprintf(extra, sizeof extra, "loss %.4f lr %.2e |g| %.3f", ss.loss, ss.lr,
                 ss.grad_norm);
        core_progress_update(&pg, step + 1, (step + 1) * nt, extra);
    }
    core_progress_end(&pg, tc.steps * nt);
    free(tok); free(tgt); free(perm); free(idx);
    if (cli_fail(d, "finetune", s)) { free(log); goto out; }

    /* adapters + optimizer state, stage by stage */
    char apath[1200];
    snprintf(apath, sizeof apath, "%s.lora.h5", deck_str(dk, "output.store"));
    for (int p = 0; p < dist_n_stages(d); p++) {
        if (dist_stage(d) == p) s = io_adapters_write(apath, p == 0, &ad, &st.cfg);
        dist_barrier(d);
    }
    s = dist_agree(d, s);
    /* merge and check the sparsity pattern */
    int64_t flips = lora_merge(&ad, &st);
    double z[2] = {(double)calib_stage_zeros(&st, NULL), (double)flips};
    dist_sum_doubles(d, z, 2);
    core_log("finetune: merged: %.0f zero weights (before %.0f), %.0f pattern changes\n", z[0],
             zeros0, z[1]);
    if (s == LOSA_OK && z[0] != zeros0)
        s = core_err(LOSA_ERR_INTERNAL, "merge changed the number of zeros (%.0f -> %.0f)",
                     zeros0, z[0]);
    /* rank 0: the training log into the new store, then every stage */
    io_store *io = NULL;
    const char *out = deck_str(dk, "output.store");
    if ((s = dist_agree(d, s)) == LOSA_OK && dist_rank(d) == 0) {
        int64_t shp[1] = {tc.steps};
        char *dump = deck_dump(dk, NULL);
        s = io_store_create(&io, out);
        if (s == LOSA_OK) s = io_store_write_doubles(io, "/finetune/loss", log, 1, shp);
        if (s == LOSA_OK) s = io_store_write_doubles(io, "/finetune/lr", log + tc.steps, 1, shp);
        if (s == LOSA_OK)
            s = io_store_write_doubles(io, "/finetune/grad_norm", log + 2 * tc.steps, 1, shp);
        if (s == LOSA_OK)
            s = io_store_write_doubles(io, "/finetune/tokens_per_s", log + 3 * tc.steps, 1, shp);
        if (s == LOSA_OK) s = io_store_write_string(io, "/finetune/deck", dump ? dump : "");
        free(dump);
    }
    if ((s = dist_agree(d, s)) == LOSA_OK) {
        s = losa_store_write_model(d, io, &st, &tk, "losa finetune (merged masked LoRA)");
        if (s == LOSA_OK)
            core_log("finetune: wrote %s (merged model + training log) and %s\n", out, apath);
        if (s == LOSA_OK && json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "store", out);
            cJSON_AddStringToObject(o, "adapters", apath);
            cJSON_AddNumberToObject(o, "steps", (double)tc.steps);
            if (tc.steps > 0 && isfinite(log[tc.steps - 1]))
                cJSON_AddNumberToObject(o, "loss", log[tc.steps - 1]);
            cJSON_AddNumberToObject(o, "seconds", core_time() - t0);
            cli_json_emit(d, o);
        }
    } else {
        io_store_close(&io);
    }
    free(log);
    cli_fail(d, "finetune", s);
out:
    lora_trainer_free(&tr);
    lora_adapters_free(&ad, &st);
    lora_data_free(&ds);
    tok_free(&tk);
    model_stage_free(&st);
    core_lock_release(&lock);
    deck_free(&dk);
    return s == LOSA_OK ? 0 : 1;
}
