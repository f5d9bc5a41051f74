/* losa run DECK.ini [--set section.key=value ...] [--json]
 * The LoSA pipeline and its baselines (src/losa/run.c); resumes from the
 * last complete checkpoint of an existing run directory. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cli.h"
#include "io.h"
#include "losa.h"

/* Collective: config and tokenizer of a store on every rank. */
static losa_status read_config_tok(dist_ctx *d, const char *path, model_config *c,
                                   tok_tokenizer *tok)
{
    io_store *io = NULL;
    losa_status s = io_store_open(&io, path);
    if (s == LOSA_OK) s = io_store_read_config(io, c);
    if (s == LOSA_OK) s = io_store_read_tokenizer(io, tok);
    io_store_close(&io);
    return dist_agree(d, s);
}

static void print_table(const losa_run *r)
{
    const char *m = prune_method_str(r->pc.method);
    core_log("\n%-14s %12s %10s %10s\n", "model", "ppl", "sparsity", "seconds");
    core_log("%-14s %12.4f %10.4f %10s\n", "dense", r->dense_ppl, 0.0, "-");
    if (r->have[LOSA_MODE_PRUNE])
        core_log("%-14s %12.4f %10.4f %10.1f\n", m, r->res[0].ppl, r->res[0].sparsity, r->res[0].seconds);
    if (r->have[LOSA_MODE_LORA]) {
        char n[32];
        snprintf(n, sizeof n, "%s+LoRA", m);
        core_log("%-14s %12.4f %10.4f %10.1f\n", n, r->res[1].ppl, r->res[1].sparsity, r->res[1].seconds);
    }
    if (r->have[LOSA_MODE_LOSA]) {
        char n[32];
        snprintf(n, sizeof n, "%s+LoSA", m);
        core_log("%-14s %12.4f %10.4f %10.1f\n", n, r->res[2].ppl, r->res[2].sparsity, r->res[2].seconds);
    }
}

static void json_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

int cmd_run(dist_ctx *d, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return cli_error(d, "run", 2, "DECK.ini: missing (usage: losa run DECK.ini "
                         "[--set section.key=value ...] [--json])");
    int json = 0, stop_after = 0;
    losa_status s = LOSA_OK;
    for (int i = 2; i < argc && s == LOSA_OK; i++) {
        const char *v;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if ((v = cli_opt(argc, argv, &i, "--set"))) continue;
        else if ((v = cli_opt(argc, argv, &i, "--stop-after"))) s = cli_int("--stop-after", v, 0, 1000, &stop_after);
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa run DECK.ini "
                          "[--set section.key=value ...] [--json])", argv[i]);
    }
    if (cli_fail(d, "run", s)) return 1;
    deck *dk = NULL;
    losa_run r;
    memset(&r, 0, sizeof r);
    r.d = d;
    r.stop_after = stop_after;
    s = cli_load_deck(d, argv[1], argc - 1, argv + 1, &dk);
    if (s == LOSA_OK) s = deck_check_required(dk, "model");
    if (s == LOSA_OK) s = losa_run_settings(&r, dk, argv[1]);
    s = dist_agree(d, s);
    if (s == LOSA_OK) s = read_config_tok(d, r.store, &r.cfg, &r.tok);
    if (s == LOSA_OK) {
        int pp = (int)deck_int(dk, "parallel.pp"), dp = (int)deck_int(dk, "parallel.dp");
        if (pp == 0) pp = dist_size(d) / dp;
        if (pp * dp != dist_size(d))
            s = core_err(LOSA_ERR_ARG, "%s: parallel.pp %d x parallel.dp %d != %d ranks", argv[1],
                         pp, dp, dist_size(d));
        else if (pp > r.cfg.n_layers)
            s = core_err(LOSA_ERR_ARG, "%s: %d pipeline stages for %d layers", argv[1], pp,
                         r.cfg.n_layers);
        if ((s = dist_agree(d, s)) == LOSA_OK) s = dist_set_layout(d, pp, dp);
    }
    if (s == LOSA_OK && r.S > r.cfg.max_seq_len)
        s = core_err(LOSA_ERR_ARG, "%s: data.calib_seqlen %d exceeds the model's max_seq_len %d",
                     argv[1], r.S, r.cfg.max_seq_len);
    if (s == LOSA_OK && r.tc.T > r.cfg.max_seq_len)
        s = core_err(LOSA_ERR_ARG, "%s: train.seqlen %d exceeds the model's max_seq_len %d",
                     argv[1], r.tc.T, r.cfg.max_seq_len);
    if (s == LOSA_OK && deck_str(dk, "data.eval_text")[0] && r.eval_S > r.cfg.max_seq_len)
        s = core_err(LOSA_ERR_ARG, "%s: eval.seqlen %d exceeds the model's max_seq_len %d",
                     argv[1], r.eval_S, r.cfg.max_seq_len);
    /* the run directory: checked, locked, same settings as the run it holds */
    if ((s = dist_agree(d, s)) == LOSA_OK) s = losa_run_prepare(&r);
    if ((s = dist_agree(d, s)) == LOSA_OK) {
        r.calib = malloc(sizeof(int) * (size_t)r.N * r.S);
        calib_draw cd;
        calib_draw_from_deck(dk, &cd);
        s = calib_load_windows(d, &r.tok, deck_str(dk, "data.calib"), r.N, r.S, &cd, r.calib);
    }
    if (s == LOSA_OK && deck_str(dk, "data.eval_text")[0]) {
        s = cli_tokenize_file(d, &r.tok, deck_str(dk, "data.eval_text"), 1, &r.eval_ids, &r.n_eval);
        if (s == LOSA_OK && r.n_eval < r.eval_S)
            s = core_err(LOSA_ERR_ARG, "%s: data.eval_text %s: %lld tokens, fewer than one window "
                         "of eval.seqlen %d", argv[1], deck_str(dk, "data.eval_text"),
                         (long long)r.n_eval, r.eval_S);
    }
    if (s == LOSA_OK && r.mode != LOSA_MODE_PRUNE)
        s = lora_data_load(d, deck_str(dk, "data.train"),
                           lora_data_format_from_string(deck_str(dk, "data.train_format")),
                           &r.tok, r.tc.T, &r.ds);
    if (cli_fail(d, "run", s)) {
        losa_run_free(&r);
        deck_free(&dk);
        return 1;
    }
    s = losa_run_execute(&r);
    int rc = cli_fail(d, "run", s);
    if (rc == 0) {
        print_table(&r);
        core_log("run directory: %s (run.h5, model.h5)\n", r.dir);
    }
    if (rc == 0 && json) {
        cJSON *o = cJSON_CreateObject();
        json_num(o, "dense_ppl", r.dense_ppl);
        if (r.have[LOSA_MODE_PRUNE]) json_num(o, "pruned_ppl", r.res[LOSA_MODE_PRUNE].ppl);
        if (r.have[LOSA_MODE_LORA]) json_num(o, "lora_ppl", r.res[LOSA_MODE_LORA].ppl);
        if (r.have[LOSA_MODE_LOSA]) json_num(o, "losa_ppl", r.res[LOSA_MODE_LOSA].ppl);
        int last = r.have[LOSA_MODE_LOSA] ? LOSA_MODE_LOSA : r.have[LOSA_MODE_LORA] ? LOSA_MODE_LORA
                                                                                  : LOSA_MODE_PRUNE;
        json_num(o, "sparsity", r.res[last].sparsity);
        json_num(o, "seconds", core_time() - r.t0);
        cJSON_AddStringToObject(o, "run_dir", r.dir);
        cli_json_emit(d, o);
    }
    losa_run_free(&r);
    deck_free(&dk);
    return rc;
}
