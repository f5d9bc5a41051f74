/* losa prune DECK.ini [--set section.key=value ...] [--json]
 *
 * One-shot pruning of a dense model store (magnitude, Wanda or SparseGPT;
 * unstructured or N:M), layer-sequential through the pipeline
 * (calib_prune_model), then the pruned store is written (output.store) and,
 * if data.eval_text is set, its perplexity is measured.
 *
 * Collective (world).  Order, so that every bad input fails before any work:
 *   1. deck: the settings of [model], [data], [output], [prune], [eval],
 *      [parallel] (include/settings.h), the layout;
 *   2. model store (config gives L): the settings again with the model
 *      (prune.layer_sparsity count, N:M widths, lengths vs max_seq_len);
 *   3. calibration windows drawn on rank 0 (calib_sample: too few usable
 *      documents is an error here) and broadcast; eval text tokenized;
 *   4. output store created (temporary name) on rank 0;
 * then the optional dense perplexity, pruning, the store (every stage's
 * layers gathered to rank 0 one stage at a time), the pruned perplexity.
 * model.dtype = bf16: the stage holds its maps and head in bf16 (plain
 * layout, read as they are from a bf16 store, rounded from an fp32 one:
 * the output store's /head is then the rounded head), the forward
 * multiplies in bf16, the pruners work on fp32 widenings of one input's
 * maps at a time (calib_prune_layer_maps) and the store is written bf16.
 * Errors name the deck, the line (or --set) and the key. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cli.h"
#include "eval.h"
#include "io.h"
#include "losa.h"
#include "settings.h"

/* The sections of the deck losa prune reads. */
typedef struct {
    model_settings model;
    data_settings data;
    output_settings output;
    prune_settings prune;
    eval_settings eval;
    parallel_settings parallel;
} prune_cmd_settings;

/* cfg: NULL before the model is known (see include/settings.h). */
static losa_status prune_cmd_settings_from_deck(const deck *dk, const model_config *cfg,
                                                prune_cmd_settings *ps)
{
    losa_status s = model_settings_from_deck(dk, SETTINGS_MODEL_STORE, &ps->model);
    if (s == LOSA_OK) s = data_settings_from_deck(dk, cfg, SETTINGS_CALIB, &ps->data);
    if (s == LOSA_OK) s = output_settings_from_deck(dk, SETTINGS_OUTPUT_STORE, &ps->output);
    if (s == LOSA_OK) s = prune_settings_from_deck(dk, cfg, &ps->prune);
    if (s == LOSA_OK) s = eval_settings_from_deck(dk, cfg, &ps->data, &ps->eval);
    if (s == LOSA_OK) s = parallel_settings_from_deck(dk, &ps->parallel);
    return s;
}

/* One losa prune: what it read, made and measured. */
typedef struct {
    prune_cmd_settings set;
    core_lock lock;
    model_stage st;
    tok_tokenizer tok;
    int *tokens;          /* (N, S) calibration windows */
    int *eval_ids;        /* perplexity text or NULL */
    int64_t n_eval;
    io_store *io;         /* the output store (rank 0) until written */
    char pattern[32];
    double calib_s, prune_s, total_sp, sums[4];
    eval_ppl_result dense_r, pruned_r;
    calib_prune_result pr;
} prune_job;

static void prune_job_free(prune_job *j)
{
    if (j->io) io_store_close(&j->io);
    calib_result_free(&j->pr);
    core_free(j->tokens);
    free(j->eval_ids);
    tok_free(&j->tok);
    model_stage_free(&j->st);
    prune_settings_free(&j->set.prune);
    core_lock_release(&j->lock);
}

/* Steps 1-4 (see the top of the file); 0 or the exit code, reported. */
static int prune_setup(dist_ctx *d, const deck *dk, prune_job *j)
{
    prune_cmd_settings *ps = &j->set;
    int pp = 0, dp = 0;
    losa_status s = prune_cmd_settings_from_deck(dk, NULL, ps);
    if (s == LOSA_OK) s = parallel_settings_layout(&ps->parallel, dist_size(d), NULL, &pp, &dp);
    if (s == LOSA_OK) s = dist_set_layout(d, pp, dp);
    if (cli_fail(d, "prune", s)) return 1;
    /* the output store: not the input, one writer at a time (until return) */
    if (cli_fail(d, "prune", losa_store_lock_output(d, ps->output.store.path, ps->model.store.path,
                                                    ps->output.store.where, &j->lock)))
        return 1;
    s = cli_load_model_plain(d, ps->model.store.path, ps->model.dtype, &j->st, &j->tok);
    if (s != LOSA_OK) s = settings_file_err(&ps->model.store, s, "%s", core_errmsg());
    if (s == LOSA_OK) s = prune_cmd_settings_from_deck(dk, &j->st.cfg, ps);
    if (cli_fail(d, "prune", s)) return 1;
    double t = core_time();
    if (cli_fail(d, "prune", losa_load_calib(d, &j->tok, &ps->data, &j->tokens))) return 1;
    j->calib_s = core_time() - t;
    s = losa_load_eval_text(d, &j->tok, &ps->data, &ps->eval, &j->eval_ids, &j->n_eval);
    if (cli_fail(d, "prune", s)) return 1;
    s = LOSA_OK;
    if (dist_rank(d) == 0 && (s = io_store_create(&j->io, ps->output.store.path)) != LOSA_OK)
        s = settings_file_err(&ps->output.store, s, "%s", core_errmsg());
    return cli_fail(d, "prune", s);
}

/* The dense perplexity (eval.dense), pruning, the store, the pruned
 * perplexity; 0 or the exit code, reported. */
static int prune_work(dist_ctx *d, prune_job *j)
{
    const prune_cmd_settings *ps = &j->set;
    const prune_config *pc = &ps->prune.pc;
    const eval_settings *e = &ps->eval;
    int L = j->st.cfg.n_layers, N = ps->data.calib_n, S = ps->data.calib_seqlen, rc = 0;
    if (e->dense) {
        rc = cli_fail(d, "prune", eval_ppl(d, &j->st, j->eval_ids, j->n_eval, e->seqlen, e->batch,
                                           e->max_windows, &j->dense_r));
        if (rc) return rc;
        core_log("dense perplexity %.4f (%d windows of %d, %.1fs)\n", j->dense_r.ppl,
                 j->dense_r.windows, e->seqlen, j->dense_r.seconds);
    }
    core_log("pruning: %s %s%s, %d windows of %d tokens\n", prune_method_str(pc->method),
             j->pattern, pc->nm_m ? "" : (ps->prune.layer_sparsity ? " (per-layer sparsity)" : ""),
             N, S);
    calib_prune_opts o = {.pc = *pc, .layer_sparsity = ps->prune.layer_sparsity,
                          .chunk = LOSA_CALIB_CHUNK};
    double t = core_time();
    rc = cli_fail(d, "prune", calib_prune_model(d, &j->st, j->tokens, N, S, &o, NULL, &j->pr));
    j->prune_s = core_time() - t;
    if (rc) return rc;
    for (int l = 0; l < L; l++) j->total_sp += j->pr.sparsity[l] / L; /* equal-sized layers */
    double *sums = j->sums;
    sums[0] = j->pr.forward_s, sums[1] = j->pr.stats_s, sums[2] = j->pr.prune_s;
    sums[3] = j->pr.sgpt.hinv_s;
    dist_sum_doubles(d, sums, 4);
    core_log("layer  sparsity  reconstruction error\n");
    for (int l = 0; l < L; l++) core_log("%5d  %8.4f  %.5g\n", l, j->pr.sparsity[l], j->pr.recon_err[l]);
    core_log("pruned: total sparsity %.4f, %.1fs (forward %.1fs, statistics %.1fs, "
             "pruners %.1fs, summed over ranks)\n", j->total_sp, j->prune_s, sums[0], sums[1], sums[2]);
    if (j->st.dtype == MODEL_DTYPE_BF16)
        core_log("bf16: pruned on fp32 widenings of one input's maps at a time, rounded back; "
                 "%lld kept weights below bf16's smallest subnormal stored as +-2^-133\n",
                 (long long)j->pr.bf16_raised);
    char source[512];
    snprintf(source, sizeof source, "losa prune %s %s of %s", prune_method_str(pc->method),
             j->pattern, ps->model.store.path);
    losa_status s = losa_store_write_model(d, j->io, &j->st, &j->tok, source);
    j->io = NULL;
    if ((rc = cli_fail(d, "prune", s))) return rc;
    core_log("wrote %s\n", ps->output.store.path);
    if (!j->eval_ids) return 0;
    rc = cli_fail(d, "prune", eval_ppl(d, &j->st, j->eval_ids, j->n_eval, e->seqlen, e->batch,
                                       e->max_windows, &j->pruned_r));
    if (rc == 0)
        core_log("pruned perplexity %.4f (%d windows of %d, %.1fs)\n", j->pruned_r.ppl,
                 j->pruned_r.windows, e->seqlen, j->pruned_r.seconds);
    return rc;
}

static cJSON *json_doubles(const double *x, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(x[i]));
    return a;
}

static void prune_json(dist_ctx *d, const prune_job *j, double t_start)
{
    const prune_cmd_settings *ps = &j->set;
    int L = j->st.cfg.n_layers;
    cJSON *o = cJSON_CreateObject();
    if (ps->eval.dense) cJSON_AddNumberToObject(o, "dense_ppl", j->dense_r.ppl);
    if (j->eval_ids) cJSON_AddNumberToObject(o, "pruned_ppl", j->pruned_r.ppl);
    cJSON_AddNumberToObject(o, "sparsity", j->total_sp);
    cJSON_AddItemToObject(o, "layer_sparsity", json_doubles(j->pr.sparsity, L));
    cJSON_AddItemToObject(o, "recon_err", json_doubles(j->pr.recon_err, L));
    cJSON_AddNumberToObject(o, "seconds", core_time() - t_start);
    cJSON_AddNumberToObject(o, "calib_seconds", j->calib_s);
    cJSON_AddNumberToObject(o, "prune_seconds", j->prune_s);
    cJSON *b = cJSON_AddObjectToObject(o, "breakdown");
    cJSON_AddNumberToObject(b, "forward_s", j->sums[0]);
    cJSON_AddNumberToObject(b, "stats_s", j->sums[1]);
    cJSON_AddNumberToObject(b, "pruners_s", j->sums[2]);
    cJSON_AddNumberToObject(b, "hinv_s", j->sums[3]);
    if (j->eval_ids) cJSON_AddNumberToObject(o, "eval_seconds", j->pruned_r.seconds);
    cJSON_AddStringToObject(o, "out", ps->output.store.path);
    cJSON_AddStringToObject(o, "method", prune_method_str(ps->prune.pc.method));
    cJSON_AddStringToObject(o, "pattern", j->pattern);
    cJSON_AddStringToObject(o, "dtype", model_dtype_name(j->st.dtype));
    cJSON_AddNumberToObject(o, "bf16_raised", (double)j->pr.bf16_raised);
    cJSON_AddNumberToObject(o, "calib_n", ps->data.calib_n);
    cJSON_AddNumberToObject(o, "calib_seqlen", ps->data.calib_seqlen);
    cJSON_AddNumberToObject(o, "ranks", dist_size(d));
    cli_json_emit(d, o);
}

int cmd_prune(dist_ctx *d, int argc, char **argv)
{
    double t_start = core_time();
    const char *deck_path = NULL;
    int json = 0;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        const char *v;
        if ((v = cli_opt(argc, argv, &i, "--set"))) continue;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] != '-' && !deck_path) deck_path = argv[i];
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa prune DECK.ini "
                          "[--set section.key=value ...] [--json])", argv[i]);
    }
    if (s == LOSA_OK && !deck_path)
        s = core_err(LOSA_ERR_ARG, "usage: losa prune DECK.ini [--set section.key=value ...] [--json]");
    if (cli_fail(d, "prune", s)) return 1;
    deck *dk = NULL;
    if (cli_fail(d, "prune", cli_load_deck(d, deck_path, argc, argv, &dk))) return 1;
    prune_job j;
    memset(&j, 0, sizeof j);
    j.lock.fd = -1;
    int rc = prune_setup(d, dk, &j);
    if (rc == 0) {
        const prune_config *pc = &j.set.prune.pc;
        if (pc->nm_m > 0) snprintf(j.pattern, sizeof j.pattern, "%d:%d", pc->nm_n, pc->nm_m);
        else snprintf(j.pattern, sizeof j.pattern, "unstructured");
        char *dump = settings_deck_dump(dk, "model,data,prune,eval,parallel,output");
        core_log("losa prune: %s, %d ranks (pp %d x dp %d)\n%s\n", deck_path, dist_size(d),
                 dist_n_stages(d), dist_n_replicas(d), dump);
        free(dump);
        rc = prune_work(d, &j);
    }
    if (rc == 0 && json) prune_json(d, &j, t_start);
    prune_job_free(&j);
    deck_free(&dk);
    return rc;
}
