/* losa eval --model STORE.h5 --ppl TEXT [--seqlen S] [--batch B]
 *           [--max-windows N] [--zeroshot TASKS [--limit K]]
 *           [--sparse auto|on|off] [--json]
 * --sparse: the forward uses sparse_matmul for the maps where it pays at
 * B*S rows per call (auto), for every map (on), or dense sgemm (off). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval.h"

int cmd_eval(dist_ctx *d, int argc, char **argv)
{
    const char *model = NULL, *ppl = NULL, *zs = NULL, *v;
    int S = 256, B = 8, maxw = 0, json = 0, limit = 0;
    model_sparse_mode smode = MODEL_SPARSE_AUTO;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--model"))) model = v;
        else if ((v = cli_opt(argc, argv, &i, "--ppl"))) ppl = v;
        else if ((v = cli_opt(argc, argv, &i, "--seqlen"))) s = cli_int("--seqlen", v, 2, 1048576, &S);
        else if ((v = cli_opt(argc, argv, &i, "--batch"))) s = cli_int("--batch", v, 1, 65536, &B);
        else if ((v = cli_opt(argc, argv, &i, "--max-windows"))) s = cli_int("--max-windows", v, 0, 1000000000, &maxw);
        else if ((v = cli_opt(argc, argv, &i, "--zeroshot"))) zs = v;
        else if ((v = cli_opt(argc, argv, &i, "--limit"))) s = cli_int("--limit", v, 0, 1000000000, &limit);
        else if ((v = cli_opt(argc, argv, &i, "--sparse"))) s = model_sparse_mode_from_string(v, &smode);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa eval --model STORE.h5 "
                          "--ppl TEXT [--seqlen S] [--batch B] [--max-windows N] "
                          "[--zeroshot TASKS] [--limit K] [--sparse auto|on|off] [--json])", argv[i]);
    }
    if (s == LOSA_OK && !model) s = core_err(LOSA_ERR_ARG, "--model STORE.h5 is required");
    if (s == LOSA_OK && !ppl && !zs) s = core_err(LOSA_ERR_ARG, "nothing to do: give --ppl TEXT and/or --zeroshot TASKS");
    if (s == LOSA_OK && (S < 2 || B < 1)) s = core_err(LOSA_ERR_ARG, "--seqlen must be >= 2 and --batch >= 1");
    if (cli_fail(d, "eval", s)) return 1;
    model_stage st;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    if (cli_fail(d, "eval", cli_load_model(d, model, &st, &tok))) return 1;
    /* sparse copies of the maps that pay at B*S rows per forward call */
    model_sparse sp;
    double t_sp = core_time();
    if (cli_fail(d, "eval", cli_sparse_build(d, model, &st, &sp, smode, B * S, SPARSE_FORMAT_BITMAP)))
        return 1;
    t_sp = core_time() - t_sp;
    st.sparse = &sp;
    double nconv = sp.n_converted, nld = sp.n_loaded;
    dist_sum_doubles(d, &nconv, 1);
    dist_sum_doubles(d, &nld, 1);
    nconv /= dist_n_replicas(d);
    nld /= dist_n_replicas(d);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "sparse", model_sparse_mode_name(smode));
    cJSON_AddNumberToObject(out, "sparse_maps", nconv);
    cJSON_AddNumberToObject(out, "sparse_stored", nld);
    cJSON_AddNumberToObject(out, "sparse_build_s", t_sp);
    int rc = 0;
    if (ppl) {
        int *ids = NULL;
        int64_t n = 0;
        eval_ppl_result r;
        s = cli_tokenize_file(d, &tok, ppl, 1, &ids, &n);
        if (s == LOSA_OK) s = eval_ppl(d, &st, ids, n, S, B, maxw, &r);
        free(ids);
        if ((rc = cli_fail(d, "eval", s)) == 0) {
            core_log("perplexity %.4f  (%d windows of %d tokens, %lld tokens, %.1fs)\n", r.ppl,
                     r.windows, r.seqlen, (long long)r.tokens, r.seconds);
            cJSON_AddNumberToObject(out, "ppl", r.ppl);
            cJSON_AddNumberToObject(out, "tokens", (double)r.tokens);
            cJSON_AddNumberToObject(out, "seqlen", r.seqlen);
            cJSON_AddNumberToObject(out, "windows", r.windows);
            cJSON_AddNumberToObject(out, "seconds", r.seconds);
        }
    }
    if (rc == 0 && zs) rc = cli_fail(d, "eval", eval_zeroshot_cli(d, &st, &tok, zs, limit, out));
    if (rc == 0 && json) {
        char *js = cJSON_PrintUnformatted(out);
        cli_json_print(d, js);
        free(js);
    }
    cJSON_Delete(out);
    st.sparse = NULL;
    model_sparse_free(&sp);
    tok_free(&tok);
    model_stage_free(&st);
    return rc;
}
