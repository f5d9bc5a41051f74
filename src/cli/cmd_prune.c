/* losa prune DECK.ini [--set section.key=value ...] [--json]
 *
 * One-shot pruning of a dense model store (magnitude, Wanda or SparseGPT;
 * unstructured or N:M), layer-sequential through the pipeline
 * (calib_prune_model), then the pruned store is written (output.store) and,
 * if data.eval_text is set, its perplexity is measured.
 *
 * Collective (world).  Order, so that every bad input fails before any work:
 *   1. deck: keys, ranges, prune.pattern, prune.layer_sparsity values;
 *   2. model store (config gives L): layer_sparsity count, N:M divisibility,
 *      calibration S against max_seq_len;
 *   3. calibration windows drawn on rank 0 (calib_sample: too few usable
 *      documents is an error here) and broadcast; eval text tokenized;
 *   4. output store created (temporary name) on rank 0;
 * then the optional dense perplexity, pruning, the store (every stage's
 * layers gathered to rank 0 one stage at a time), the pruned perplexity.
 * Errors name the deck, the line (or --set) and the key. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cli.h"
#include "losa.h"
#include "eval.h"
#include "io.h"

/* "DECK:LINE: key" for key, or "--set key" if the last --set names it, or
 * "DECK: key" (default value) — the prefix of a validation message. */
static void prune_key_where(char *buf, size_t n, const char *deck_path, int argc,
                            char **argv, const char *key)
{
    size_t lk = strlen(key);
    int set_last = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = NULL;
        if (!strncmp(argv[i], "--set=", 6)) a = argv[i] + 6;
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) a = argv[++i];
        if (a && !strncmp(a, key, lk) && (a[lk] == '=' || isspace((unsigned char)a[lk])))
            set_last = 1;
    }
    if (set_last) {
        snprintf(buf, n, "--set %s", key);
        return;
    }
    const char *dot = strchr(key, '.');
    char *text = NULL;
    size_t len = 0;
    int line = 0, found = 0;
    if (dot && core_read_file(deck_path, &text, &len) == LOSA_OK) {
        int ls = (int)(dot - key), insec = 0, ln = 0;
        for (char *p = text; p && *p; ln++) {
            char *nl = strchr(p, '\n');
            if (nl) *nl = 0;
            while (isspace((unsigned char)*p)) p++;
            if (*p == '[') insec = !strncmp(p + 1, key, ls) && p[1 + ls] == ']';
            else if (insec && !strncmp(p, dot + 1, strlen(dot + 1))) {
                const char *q = p + strlen(dot + 1);
                while (*q == ' ' || *q == '\t') q++;
                if (*q == '=' || *q == ':') line = ln + 1, found = 1;
            }
            p = nl ? nl + 1 : NULL;
        }
    }
    free(text);
    if (found) snprintf(buf, n, "%s:%d: %s", deck_path, line, key);
    else snprintf(buf, n, "%s: %s (default)", deck_path, key);
}

typedef struct {
    const char *deck_path;
    int argc;
    char **argv;
} prune_where_ctx;

#define WHERE(w, key)                                                         \
    (prune_key_where(wbuf, sizeof wbuf, (w)->deck_path, (w)->argc, (w)->argv, key), wbuf)

/* Step 1: deck values that need no model. */
static losa_status prune_check_deck(const deck *dk, const prune_where_ctx *w,
                                    prune_config *pc)
{
    char wbuf[1400];
    prune_config_default(pc);
    losa_status s = deck_check_required(dk, "model");
    if (s != LOSA_OK) return s;
    if (!*deck_str(dk, "data.calib"))
        return core_err(LOSA_ERR_ARG, "%s: a calibration corpus is required (JSONL with a "
                        "'text' field, or plain text)", WHERE(w, "data.calib"));
    if (!*deck_str(dk, "output.store"))
        return core_err(LOSA_ERR_ARG, "%s: the pruned store's path is required",
                        WHERE(w, "output.store"));
    if ((s = prune_method_from_string(deck_str(dk, "prune.method"), &pc->method)) != LOSA_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", core_errmsg());
        return core_err(s, "%s: %s", WHERE(w, "prune.method"), msg);
    }
    pc->sparsity = deck_float(dk, "prune.sparsity");
    if (!(pc->sparsity >= 0 && pc->sparsity < 1))
        return core_err(LOSA_ERR_ARG, "%s: %g is outside [0, 1)", WHERE(w, "prune.sparsity"),
                        pc->sparsity);
    const char *pat = deck_str(dk, "prune.pattern");
    if (prune_pattern_parse(pat, &pc->nm_n, &pc->nm_m))
        return core_err(LOSA_ERR_ARG, "%s: expected 'unstructured' or 'N:M' with "
                        "0 < N < M (e.g. 2:4, 4:8), got '%s'", WHERE(w, "prune.pattern"), pat);
    pc->blocksize = (int)deck_int(dk, "prune.blocksize");
    pc->percdamp = deck_float(dk, "prune.percdamp");
    if (pc->nm_m > 0 && pc->method == PRUNE_METHOD_SPARSEGPT && pc->blocksize % pc->nm_m)
        return core_err(LOSA_ERR_ARG, "%s: %d is not a multiple of M = %d of the %d:%d pattern",
                        WHERE(w, "prune.blocksize"), pc->blocksize, pc->nm_m, pc->nm_n, pc->nm_m);
    if (pc->nm_m > 0 && *deck_str(dk, "prune.layer_sparsity"))
        return core_err(LOSA_ERR_ARG, "%s: per-layer sparsities do not apply to the N:M "
                        "pattern %s", WHERE(w, "prune.layer_sparsity"), pat);
    return LOSA_OK;
}

/* Step 2: values that need the model's configuration. */
static losa_status prune_check_model(const deck *dk, const prune_where_ctx *w,
                                     const prune_config *pc, const model_config *c,
                                     double *layer_sp /* (L) */, int *have_layer_sp)
{
    char wbuf[1400];
    int L = c->n_layers;
    const char *ls = deck_str(dk, "prune.layer_sparsity");
    *have_layer_sp = 0;
    if (*ls) {
        int cap = 2;
        for (const char *p = ls; *p; p++) cap += *p == ',';
        double *tmp = calloc((size_t)cap, sizeof(double));
        int k = deck_float_list(ls, tmp, cap);
        losa_status s = LOSA_OK;
        if (k < 0)
            s = core_err(LOSA_ERR_ARG, "%s: expected a comma list of %d numbers, got '%s'",
                         WHERE(w, "prune.layer_sparsity"), L, ls);
        else if (k != L)
            s = core_err(LOSA_ERR_ARG, "%s: %d values for a model with %d layers (expected "
                         "exactly %d)", WHERE(w, "prune.layer_sparsity"), k, L, L);
        for (int l = 0; s == LOSA_OK && l < L; l++)
            if (!(tmp[l] >= 0 && tmp[l] < 1))
                s = core_err(LOSA_ERR_ARG, "%s: value %d (layer %d) = %g is outside [0, 1)",
                             WHERE(w, "prune.layer_sparsity"), l + 1, l, tmp[l]);
        if (s == LOSA_OK) memcpy(layer_sp, tmp, sizeof(double) * L);
        free(tmp);
        if (s != LOSA_OK) return s;
        *have_layer_sp = 1;
    }
    if (pc->nm_m > 0) {
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            if (i % pc->nm_m)
                return core_err(LOSA_ERR_ARG, "%s: input width %d of %s is not a multiple of "
                                "M = %d", WHERE(w, "prune.pattern"), i,
                                model_map_name((model_map)m), pc->nm_m);
        }
    }
    int S = (int)deck_int(dk, "data.calib_seqlen");
    if (S > c->max_seq_len)
        return core_err(LOSA_ERR_ARG, "%s: %d tokens exceed the model's max_seq_len %d",
                        WHERE(w, "data.calib_seqlen"), S, c->max_seq_len);
    return LOSA_OK;
}

/* Collective.  Calibration windows, errors prefixed with where data.calib
 * was set. */
static losa_status prune_calib_tokens(dist_ctx *d, const deck *dk, const prune_where_ctx *w,
                                      const tok_tokenizer *tok, int N, int S, int *tokens)
{
    char wbuf[1400];
    calib_draw cd;
    calib_draw_from_deck(dk, &cd);
    losa_status s = calib_load_windows(d, tok, deck_str(dk, "data.calib"), N, S, &cd, tokens);
    if (s != LOSA_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", core_errmsg());
        core_err(s, "%s: %s", WHERE(w, "data.calib"), msg);
    }
    return s;
}

static cJSON *json_doubles(const double *x, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(x[i]));
    return a;
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
    prune_where_ctx w = {deck_path, argc, argv};
    char wbuf[1400];

    /* 1. deck */
    deck *dk = NULL;
    if (cli_fail(d, "prune", cli_load_deck(d, deck_path, argc, argv, &dk))) return 1;
    prune_config pc;
    s = prune_check_deck(dk, &w, &pc);
    if (s == LOSA_OK) s = dist_set_layout(d, (int)deck_int(dk, "parallel.pp"),
                                          (int)deck_int(dk, "parallel.dp"));
    if (cli_fail(d, "prune", s)) {
        deck_free(&dk);
        return 1;
    }
    int N = (int)deck_int(dk, "data.calib_n"), S = (int)deck_int(dk, "data.calib_seqlen");
    int eS = (int)deck_int(dk, "eval.seqlen"), eB = (int)deck_int(dk, "eval.batch");
    int eMax = (int)deck_int(dk, "eval.max_windows");
    const char *eval_text = deck_str(dk, "data.eval_text");
    const char *out_path = deck_str(dk, "output.store");
    const char *model_path = deck_str(dk, "model.store");
    int want_dense = deck_bool(dk, "eval.dense");
    if (want_dense && !*eval_text) {
        s = core_err(LOSA_ERR_ARG, "%s: the dense perplexity needs data.eval_text",
                     WHERE(&w, "eval.dense"));
        if (cli_fail(d, "prune", s)) {
            deck_free(&dk);
            return 1;
        }
    }
    /* the output store: not the input, one writer at a time (until return) */
    core_lock lock;
    if (cli_fail(d, "prune", losa_store_lock_output(d, out_path, model_path,
                                                    WHERE(&w, "output.store"), &lock))) {
        deck_free(&dk);
        return 1;
    }

    /* 2. model */
    model_stage st;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    s = cli_load_model(d, model_path, &st, &tok);
    if (s != LOSA_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", core_errmsg());
        s = core_err(s, "%s: %s", WHERE(&w, "model.store"), msg);
        cli_fail(d, "prune", s);
        core_lock_release(&lock);
        deck_free(&dk);
        return 1;
    }
    const model_config *c = &st.cfg;
    int L = c->n_layers;
    double *layer_sp = calloc((size_t)L, sizeof(double));
    int have_layer_sp = 0;
    s = prune_check_model(dk, &w, &pc, c, layer_sp, &have_layer_sp);
    if (s == LOSA_OK && eS > c->max_seq_len && *eval_text)
        s = core_err(LOSA_ERR_ARG, "%s: %d tokens exceed the model's max_seq_len %d",
                     WHERE(&w, "eval.seqlen"), eS, c->max_seq_len);
    int rc = cli_fail(d, "prune", s);

    /* 3. calibration windows and evaluation text */
    int *tokens = NULL, *eval_ids = NULL;
    int64_t n_eval = 0;
    double t_calib = core_time(), calib_s = 0;
    if (rc == 0) {
        tokens = malloc(sizeof(int) * (size_t)N * S);
        rc = cli_fail(d, "prune", prune_calib_tokens(d, dk, &w, &tok, N, S, tokens));
        calib_s = core_time() - t_calib;
    }
    if (rc == 0 && *eval_text) {
        s = cli_tokenize_file(d, &tok, eval_text, 1, &eval_ids, &n_eval);
        if (s == LOSA_OK && n_eval < eS)
            s = core_err(LOSA_ERR_ARG, "%s: %lld tokens, fewer than one window of eval.seqlen %d",
                         eval_text, (long long)n_eval, eS);
        if (s != LOSA_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", core_errmsg());
            s = core_err(s, "%s: %s", WHERE(&w, "data.eval_text"), msg);
        }
        rc = cli_fail(d, "prune", s);
    }
    /* 4. output store (temporary name until committed) */
    io_store *io = NULL;
    if (rc == 0) {
        s = LOSA_OK;
        if (dist_rank(d) == 0 && (s = io_store_create(&io, out_path)) != LOSA_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", core_errmsg());
            s = core_err(s, "%s: %s", WHERE(&w, "output.store"), msg);
        }
        rc = cli_fail(d, "prune", s);
    }
    char pattern[32];
    if (pc.nm_m > 0) snprintf(pattern, sizeof pattern, "%d:%d", pc.nm_n, pc.nm_m);
    else snprintf(pattern, sizeof pattern, "unstructured");
    if (rc == 0) {
        char *dump = deck_dump(dk, "model,data,prune,eval,parallel,output");
        core_log("losa prune: %s, %d ranks (pp %d x dp %d)\n%s\n", deck_path, dist_size(d),
                 dist_n_stages(d), dist_n_replicas(d), dump);
        free(dump);
    }

    eval_ppl_result dense_r = {0}, pruned_r = {0};
    if (rc == 0 && want_dense) {
        rc = cli_fail(d, "prune", eval_ppl(d, &st, eval_ids, n_eval, eS, eB, eMax, &dense_r));
        if (rc == 0)
            core_log("dense perplexity %.4f (%d windows of %d, %.1fs)\n", dense_r.ppl,
                     dense_r.windows, eS, dense_r.seconds);
    }

    /* pruning */
    calib_prune_result pr;
    memset(&pr, 0, sizeof pr);
    double prune_s = 0;
    if (rc == 0) {
        core_log("pruning: %s %s%s, %d windows of %d tokens\n", prune_method_str(pc.method),
                 pattern, pc.nm_m ? "" : (have_layer_sp ? " (per-layer sparsity)" : ""), N, S);
        calib_prune_opts o = {.pc = pc, .layer_sparsity = have_layer_sp ? layer_sp : NULL,
                              .chunk = 8};
        double t = core_time();
        rc = cli_fail(d, "prune", calib_prune_model(d, &st, tokens, N, S, &o, NULL, &pr));
        prune_s = core_time() - t;
    }
    double total_sp = 0, sums[4] = {0};
    if (rc == 0) {
        for (int l = 0; l < L; l++) total_sp += pr.sparsity[l] / L; /* equal-sized layers */
        sums[0] = pr.forward_s, sums[1] = pr.stats_s, sums[2] = pr.prune_s;
        sums[3] = pr.sgpt.hinv_s;
        dist_sum_doubles(d, sums, 4);
        core_log("layer  sparsity  reconstruction error\n");
        for (int l = 0; l < L; l++)
            core_log("%5d  %8.4f  %.5g\n", l, pr.sparsity[l], pr.recon_err[l]);
        core_log("pruned: total sparsity %.4f, %.1fs (forward %.1fs, statistics %.1fs, "
                 "pruners %.1fs, summed over ranks)\n", total_sp, prune_s, sums[0], sums[1], sums[2]);
        char source[512];
        snprintf(source, sizeof source, "losa prune %s %s of %s", prune_method_str(pc.method),
                 pattern, model_path);
        s = losa_store_write_model(d, io, &st, &tok, source);
        io = NULL;
        rc = cli_fail(d, "prune", s);
        if (rc == 0) core_log("wrote %s\n", out_path);
    }
    if (io) io_store_close(&io);
    if (rc == 0 && *eval_text) {
        rc = cli_fail(d, "prune", eval_ppl(d, &st, eval_ids, n_eval, eS, eB, eMax, &pruned_r));
        if (rc == 0)
            core_log("pruned perplexity %.4f (%d windows of %d, %.1fs)\n", pruned_r.ppl,
                     pruned_r.windows, eS, pruned_r.seconds);
    }
    if (rc == 0 && json) {
        cJSON *j = cJSON_CreateObject();
        if (want_dense) cJSON_AddNumberToObject(j, "dense_ppl", dense_r.ppl);
        if (*eval_text) cJSON_AddNumberToObject(j, "pruned_ppl", pruned_r.ppl);
        cJSON_AddNumberToObject(j, "sparsity", total_sp);
        cJSON_AddItemToObject(j, "layer_sparsity", json_doubles(pr.sparsity, L));
        cJSON_AddItemToObject(j, "recon_err", json_doubles(pr.recon_err, L));
        cJSON_AddNumberToObject(j, "seconds", core_time() - t_start);
        cJSON_AddNumberToObject(j, "calib_seconds", calib_s);
        cJSON_AddNumberToObject(j, "prune_seconds", prune_s);
        cJSON *b = cJSON_AddObjectToObject(j, "breakdown");
        cJSON_AddNumberToObject(b, "forward_s", sums[0]);
        cJSON_AddNumberToObject(b, "stats_s", sums[1]);
        cJSON_AddNumberToObject(b, "pruners_s", sums[2]);
        cJSON_AddNumberToObject(b, "hinv_s", sums[3]);
        if (*eval_text) cJSON_AddNumberToObject(j, "eval_seconds", pruned_r.seconds);
        cJSON_AddStringToObject(j, "out", out_path);
        cJSON_AddStringToObject(j, "method", prune_method_str(pc.method));
        cJSON_AddStringToObject(j, "pattern", pattern);
        cJSON_AddNumberToObject(j, "calib_n", N);
        cJSON_AddNumberToObject(j, "calib_seqlen", S);
        cJSON_AddNumberToObject(j, "ranks", dist_size(d));
        cli_json_emit(d, j);
    }
    calib_result_free(&pr);
    free(tokens);
    free(eval_ids);
    free(layer_sp);
    tok_free(&tok);
    model_stage_free(&st);
    core_lock_release(&lock);
    deck_free(&dk);
    return rc;
}
