/* losa eval --model STORE.h5 --ppl TEXT [--seqlen S] [--batch B]
 *           [--max-windows N] [--zeroshot TASKS [--limit K]]
 *           [--sparse auto|on|off] [--dtype fp32|bf16] [--json]
 * --sparse: the forward uses sparse_matmul for the maps where it pays at
 * B*S rows per call (auto), for every map (on), or dense sgemm (off).
 * --dtype bf16: the layers' maps are converted to bf16 after loading
 * (model_stage_to_bf16; embedding, norms and head stay fp32) and multiplied
 * by kern_gemm_bf16w; no sparse copies (auto means off, on is refused). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "eval.h"

/* ---- --zeroshot: task and data paths, the environment ---- */

/* Directory of the executable's parent (the repo when run as build/losa). */
static int zs_exe_root(char *buf, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *sl = strrchr(exe, '/');
        if (!sl) return 0;
        *sl = 0;
    }
    snprintf(buf, cap, "%s", exe[0] ? exe : "/");
    return 1;
}

/* out = a + b (truncated to cap). */
static void zs_join(char *out, size_t cap, const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > cap - 1) na = cap - 1;
    if (nb > cap - 1 - na) nb = cap - 1 - na;
    memmove(out, a, na);
    memcpy(out + na, b, nb);
    out[na + nb] = 0;
}

static void zs_resolve_task(const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (strchr(name, '/') || (n > 4 && !strcmp(name + n - 4, ".ini"))) {
        zs_join(out, cap, name, "");
        return;
    }
    char root[PATH_MAX] = "", file[PATH_MAX], cand[3][PATH_MAX];
    int nc = 0;
    zs_join(file, sizeof file, name, ".ini");
    const char *env = getenv("LOSA_TASKS");
    if (env && env[0]) {
        zs_join(cand[nc], sizeof cand[0], env, "/");
        zs_join(cand[nc], sizeof cand[0], cand[nc], file);
        nc++;
    }
    if (zs_exe_root(root, sizeof root)) {
        zs_join(cand[nc], sizeof cand[0], root, "/input/tasks/");
        zs_join(cand[nc], sizeof cand[0], cand[nc], file);
        nc++;
    }
    zs_join(cand[nc++], sizeof cand[0], "input/tasks/", file);
    for (int i = 0; i < nc; i++)
        if (access(cand[i], R_OK) == 0) {
            zs_join(out, cap, cand[i], "");
            return;
        }
    zs_join(out, cap, cand[nc - 1], ""); /* the error will name it */
}

static void zs_resolve_data_dir(char *out, size_t cap)
{
    const char *env = getenv("LOSA_DATA");
    char root[PATH_MAX];
    if (env && env[0]) zs_join(out, cap, env, "");
    else if (zs_exe_root(root, sizeof root)) {
        zs_join(out, cap, root, "/../shared/data");
        if (access(out, R_OK) != 0) zs_join(out, cap, "../shared/data", "");
    } else zs_join(out, cap, "../shared/data", "");
}

/* Debugging aid ($LOSA_ZS_DUMP=FILE): rank 0 appends every request as one
 * JSON line {task, item, choice, context, continuation, norm_bytes, gold,
 * tokens, n_cont, ll} (tests/ref/zs_prompts.py checks them). */
static losa_status zs_dump(const char *file, const model_stage *s, const tok_tokenizer *tok,
                           const eval_task *t, const double *ll)
{
    eval_request *req = NULL;
    int n_req = 0;
    losa_status st = eval_task_requests(t, tok, s->cfg.max_seq_len, &req, &n_req);
    if (st != LOSA_OK) return st;
    FILE *f = fopen(file, "a");
    if (!f) {
        eval_requests_free(req, n_req);
        return core_err(LOSA_ERR_IO, "LOSA_ZS_DUMP: cannot open %s", file);
    }
    int k = 0;
    for (int i = 0; i < t->n_items; i++)
        for (int c = 0; c < t->items[i].n_choices; c++, k++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "task", t->name);
            cJSON_AddNumberToObject(o, "item", i);
            cJSON_AddNumberToObject(o, "choice", c);
            cJSON_AddStringToObject(o, "context", t->items[i].context[c]);
            cJSON_AddStringToObject(o, "continuation", t->items[i].cont[c]);
            cJSON_AddNumberToObject(o, "norm_bytes", t->items[i].norm_bytes[c]);
            cJSON_AddNumberToObject(o, "gold", t->items[i].gold);
            cJSON_AddItemToObject(o, "tokens", cJSON_CreateIntArray(req[k].tokens, req[k].n));
            cJSON_AddNumberToObject(o, "n_cont", req[k].n_cont);
            cJSON_AddNumberToObject(o, "ll", ll[k]);
            char *js = cJSON_PrintUnformatted(o);
            fprintf(f, "%s\n", js);
            free(js);
            cJSON_Delete(o);
        }
    eval_requests_free(req, n_req);
    return fclose(f) == 0 ? LOSA_OK : core_err(LOSA_ERR_IO, "LOSA_ZS_DUMP: writing %s failed", file);
}

/* Collective: --zeroshot a,b,c: each name is a task file (input/tasks/<name>.ini,
 * found via $LOSA_TASKS, the executable's ../input/tasks or ./input/tasks;
 * or a path to an .ini); data files are resolved against $LOSA_DATA (else
 * ../shared/data beside the repo).  Adds "tasks" {name: {acc, acc_norm,
 * acc_stderr, acc_norm_stderr, n, seconds}} and "mean_acc" to out. */
static losa_status eval_zeroshot(dist_ctx *d, const model_stage *s, const tok_tokenizer *tok,
                                 const char *tasks, int limit, cJSON *out)
{
    if (tok->n_vocab > s->cfg.vocab_size)
        return core_err(LOSA_ERR_FORMAT, "zero-shot: tokenizer has %d ids, the model %d",
                        tok->n_vocab, s->cfg.vocab_size);
    char data_dir[PATH_MAX];
    if (dist_rank(d) == 0) zs_resolve_data_dir(data_dir, sizeof data_dir);
    dist_bcast(d, data_dir, sizeof data_dir, 0);
    char *list = core_strdup(tasks), *save = NULL;
    cJSON *jt = cJSON_CreateObject();
    double acc_sum = 0;
    int n_tasks = 0;
    losa_status st = LOSA_OK;
    for (char *name = strtok_r(list, ",", &save); st == LOSA_OK && name;
         name = strtok_r(NULL, ",", &save)) {
        if (!name[0]) continue;
        char path[PATH_MAX];
        if (dist_rank(d) == 0) zs_resolve_task(name, path, sizeof path);
        dist_bcast(d, path, sizeof path, 0);
        eval_task t;
        eval_task_result r;
        if ((st = eval_task_load(d, &t, path, data_dir, limit)) != LOSA_OK) break;
        core_log("zero-shot %s: %d items (%s)\n", t.name, t.n_items, path);
        st = eval_task_run(d, s, tok, &t, 2048, &r);
        if (st == LOSA_OK) {
            core_log("zero-shot %-14s acc %.4f +- %.4f  acc_norm %.4f +- %.4f  (n=%d, %.1fs)\n",
                     r.name, r.acc, r.acc_stderr, r.acc_norm, r.acc_norm_stderr, r.n, r.seconds);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "acc", r.acc);
            cJSON_AddNumberToObject(o, "acc_norm", r.acc_norm);
            cJSON_AddNumberToObject(o, "acc_stderr", r.acc_stderr);
            cJSON_AddNumberToObject(o, "acc_norm_stderr", r.acc_norm_stderr);
            cJSON_AddNumberToObject(o, "n", r.n);
            cJSON_AddNumberToObject(o, "seconds", r.seconds);
            cJSON_DeleteItemFromObjectCaseSensitive(jt, r.name);
            cJSON_AddItemToObject(jt, r.name, o);
            acc_sum += r.acc;
            n_tasks++;
            const char *dump = getenv("LOSA_ZS_DUMP");
            if (dump && dump[0] && dist_rank(d) == 0) st = zs_dump(dump, s, tok, &t, r.ll);
            st = dist_agree(d, st);
        }
        eval_task_result_free(&r);
        eval_task_free(&t);
    }
    free(list);
    if (st == LOSA_OK && n_tasks == 0) st = core_err(LOSA_ERR_ARG, "--zeroshot: no task names in '%s'", tasks);
    if (st != LOSA_OK) {
        cJSON_Delete(jt);
        return st;
    }
    cJSON_AddItemToObject(out, "tasks", jt);
    cJSON_AddNumberToObject(out, "mean_acc", acc_sum / n_tasks);
    core_log("zero-shot mean acc over %d tasks: %.4f\n", n_tasks, acc_sum / n_tasks);
    return LOSA_OK;
}

/* ---- the command ---- */

int cmd_eval(dist_ctx *d, int argc, char **argv)
{
    const char *model = NULL, *ppl = NULL, *zs = NULL, *v;
    int S = 256, B = 8, maxw = 0, json = 0, limit = 0;
    model_sparse_mode smode = MODEL_SPARSE_AUTO;
    model_dtype dtype = MODEL_DTYPE_F32;
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
        else if ((v = cli_opt(argc, argv, &i, "--dtype"))) s = model_dtype_from_string(v, "--dtype", &dtype);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa eval --model STORE.h5 "
                          "--ppl TEXT [--seqlen S] [--batch B] [--max-windows N] "
                          "[--zeroshot TASKS] [--limit K] [--sparse auto|on|off] [--dtype fp32|bf16] "
                          "[--json])", argv[i]);
    }
    if (s == LOSA_OK && !model) s = core_err(LOSA_ERR_ARG, "--model STORE.h5 is required");
    if (s == LOSA_OK && !ppl && !zs) s = core_err(LOSA_ERR_ARG, "nothing to do: give --ppl TEXT and/or --zeroshot TASKS");
    if (s == LOSA_OK && (S < 2 || B < 1)) s = core_err(LOSA_ERR_ARG, "--seqlen must be >= 2 and --batch >= 1");
    if (cli_fail(d, "eval", s)) return 1;
    model_stage st;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    if (cli_fail(d, "eval", cli_load_model(d, model, &st, &tok))) return 1;
    if (dtype == MODEL_DTYPE_BF16 && cli_fail(d, "eval", cli_stage_to_bf16(d, &st, 0))) return 1;
    if (dtype == MODEL_DTYPE_BF16 && smode == MODEL_SPARSE_AUTO) smode = MODEL_SPARSE_OFF;
    int dense_bf16 = dtype == MODEL_DTYPE_BF16 && smode == MODEL_SPARSE_OFF;
    /* sparse copies of the maps that pay at B*S rows per forward call */
    model_sparse sp;
    double t_sp = core_time();
    memset(&sp, 0, sizeof sp);
    if (!dense_bf16 &&
        cli_fail(d, "eval", cli_sparse_build(d, model, &st, &sp, smode, B * S, SPARSE_FORMAT_BITMAP)))
        return 1;
    t_sp = core_time() - t_sp;
    st.sparse = dense_bf16 ? NULL : &sp;
    double nconv = sp.n_converted, nld = sp.n_loaded;
    dist_sum_doubles(d, &nconv, 1);
    dist_sum_doubles(d, &nld, 1);
    nconv /= dist_n_replicas(d);
    nld /= dist_n_replicas(d);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "sparse", model_sparse_mode_name(smode));
    cJSON_AddStringToObject(out, "dtype", model_dtype_name(dtype));
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
    if (rc == 0 && zs) rc = cli_fail(d, "eval", eval_zeroshot(d, &st, &tok, zs, limit, out));
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
