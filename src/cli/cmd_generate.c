/* losa generate --model STORE.h5 [--prompt TEXT] [--steps N]
 *               [--temperature T] [--seed S] [--sparse auto|on|off]
 *               [--dtype fp32|bf16] [--json]
 * Greedy (T = 0) or temperature sampling through the pipeline; the last
 * stage picks each token and broadcasts it to the pipeline.  The prompt is
 * prefilled once into a KV cache, then one decode step per token.
 * --sparse: sparse kernels for the maps where they pay at batch 1 (auto),
 * for every map (on), or dense BLAS only (off).
 * --dtype bf16: the maps are converted to bf16 after loading
 * (model_stage_to_bf16, as in eval) and the decode step reads them and a
 * bf16 copy of the head with the bf16-weight matvec
 * (sparse_dense_matvec_bf16); the prefill runs the bf16 forward with the
 * same bf16 head rows.  No sparse copies (auto means off, on is refused). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int sample(const float *logits, int V, float temp, core_rng *r)
{
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temp <= 0) return best;
    double sum = 0, mx = logits[best];
    for (int i = 0; i < V; i++) sum += exp((logits[i] - mx) / temp);
    double u = core_rng_uniform(r) * sum, acc = 0;
    for (int i = 0; i < V; i++) {
        acc += exp((logits[i] - mx) / temp);
        if (acc >= u) return i;
    }
    return V - 1;
}

typedef struct {
    const char *model, *prompt;
    int steps, json;
    float temp;
    uint64_t seed;
    model_sparse_mode smode;
    model_dtype dtype;
} gen_args;

static losa_status gen_args_parse(gen_args *g, int argc, char **argv)
{
    *g = (gen_args){.prompt = "", .steps = 128, .smode = MODEL_SPARSE_AUTO};
    losa_status s = LOSA_OK;
    const char *v;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--model"))) g->model = v;
        else if ((v = cli_opt(argc, argv, &i, "--prompt"))) g->prompt = v;
        else if ((v = cli_opt(argc, argv, &i, "--steps"))) s = cli_int("--steps", v, 1, 1048576, &g->steps);
        else if ((v = cli_opt(argc, argv, &i, "--temperature"))) s = cli_float("--temperature", v, 0, 100, &g->temp);
        else if ((v = cli_opt(argc, argv, &i, "--seed"))) s = cli_u64("--seed", v, &g->seed);
        else if ((v = cli_opt(argc, argv, &i, "--sparse"))) s = model_sparse_mode_from_string(v, &g->smode);
        else if ((v = cli_opt(argc, argv, &i, "--dtype"))) s = model_dtype_from_string(v, "--dtype", &g->dtype);
        else if (!strcmp(argv[i], "--json")) g->json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa generate --model STORE.h5 "
                          "[--prompt TEXT] [--steps N] [--temperature T] [--seed S] "
                          "[--sparse auto|on|off] [--dtype fp32|bf16] [--json])", argv[i]);
    }
    if (s == LOSA_OK && !g->model) s = core_err(LOSA_ERR_ARG, "--model STORE.h5 is required");
    return s;
}

/* The sparse maps' counts over the model (every replica counts once). */
typedef struct { double conv, maps, loaded, build_s, resident; } gen_sparse_counts;

static gen_sparse_counts gen_sparse_count(dist_ctx *d, const model_stage *st, const model_sparse *sp)
{
    gen_sparse_counts c = {sp->n_converted, (double)st->n_layers * MODEL_N_MAPS, sp->n_loaded, 0,
                           sp->resident};
    double v[4] = {c.conv, c.maps, c.loaded, c.resident};
    dist_sum_doubles(d, v, 4);
    c.conv = v[0] / dist_n_replicas(d);
    c.maps = v[1] / dist_n_replicas(d);
    c.loaded = v[2] / dist_n_replicas(d);
    c.resident = v[3] / dist_n_replicas(d);
    return c;
}

/* Prefill the n prompt tokens of ids, then sample up to steps tokens (into
 * ids, capacity n + steps), printing them unless --json.  Returns the new
 * length; *t_prefill the prefill time. */
static int gen_loop(dist_ctx *d, const gen_args *g, model_stage *st, tok_tokenizer *tok,
                    model_acts *a, model_kv_cache *kv, int *ids, int n, double *t_prefill)
{
    core_rng rng;
    core_rng_seed(&rng, g->seed);
    double t0 = core_time();
    int len = n;
    for (int k = 0; k < g->steps; k++) {
        /* prompt once into the KV cache, then one position per step */
        if (k == 0) model_pipeline_prefill(d, a, kv, st, ids, len, k);
        else model_pipeline_decode_step(d, a, kv, st, ids[len - 1], len - 1, k);
        int next = 0;
        if (st->has_head) {
            const float *lg = k == 0 ? a->logits + (int64_t)(len - 1) * st->cfg.vocab_size : a->logits;
            next = sample(lg, st->cfg.vocab_size, g->temp, &rng);
        }
        dist_bcast_from_last(d, &next, sizeof next);
        if (k == 0) *t_prefill = core_time() - t0;
        ids[len++] = next;
        if (next == st->cfg.eos_id) break;
        if (dist_rank(d) == 0 && !g->json) {
            char buf[8];
            size_t pl;
            const char *p = tok_piece_text(tok, ids[len - 2], next, buf, &pl);
            fwrite(p, 1, pl, stdout);
            fflush(stdout);
        }
    }
    return len;
}

static void gen_report(dist_ctx *d, const gen_args *g, const char *text, int ntok, double secs,
                       double t_prefill, const gen_sparse_counts *c)
{
    if (g->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "prompt", g->prompt);
        cJSON_AddStringToObject(o, "text", text ? text : "");
        cJSON_AddNumberToObject(o, "tokens", ntok);
        cJSON_AddNumberToObject(o, "seconds", secs);
        cJSON_AddNumberToObject(o, "tokens_per_s", ntok / (secs > 0 ? secs : 1));
        cJSON_AddNumberToObject(o, "prefill_s", t_prefill);
        cJSON_AddNumberToObject(o, "decode_tokens_per_s",
                                ntok > 1 && secs > t_prefill ? (ntok - 1) / (secs - t_prefill) : 0);
        cJSON_AddStringToObject(o, "sparse", model_sparse_mode_name(g->smode));
        cJSON_AddStringToObject(o, "dtype", model_dtype_name(g->dtype));
        cJSON_AddNumberToObject(o, "sparse_maps", c->conv);
        cJSON_AddNumberToObject(o, "sparse_stored", c->loaded);
        cJSON_AddNumberToObject(o, "sparse_build_s", c->build_s);
        /* stages whose maps fit their threads' L2 caches: --sparse auto
         * decodes those from cache (sparse_profitable_at, resident) */
        cJSON_AddNumberToObject(o, "sparse_cache_resident_stages", c->resident);
        cJSON_AddNumberToObject(o, "maps", c->maps);
        cli_json_emit(d, o);
    } else if (dist_rank(d) == 0) {
        printf("\n");
        core_log("%d tokens in %.2fs (%.1f tokens/s)\n", ntok, secs, ntok / (secs > 0 ? secs : 1));
    }
}

int cmd_generate(dist_ctx *d, int argc, char **argv)
{
    gen_args g;
    if (cli_fail(d, "generate", gen_args_parse(&g, argc, argv))) return 1;
    model_stage st;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    if (cli_fail(d, "generate", cli_load_model(d, g.model, &st, &tok))) return 1;
    if (g.dtype == MODEL_DTYPE_BF16 && cli_fail(d, "generate", cli_stage_to_bf16(d, &st, 1))) {
        tok_free(&tok);
        return 1;
    }
    if (g.dtype == MODEL_DTYPE_BF16 && g.smode == MODEL_SPARSE_AUTO) g.smode = MODEL_SPARSE_OFF;
    int *ids = NULL;
    int64_t n = 0;
    losa_status s = tok_encode(&tok, g.prompt, strlen(g.prompt), 1, 0, &ids, &n);
    if (s == LOSA_OK && n >= st.cfg.max_seq_len)
        s = core_err(LOSA_ERR_ARG, "--prompt: %lld tokens fill the model's context of %d",
                     (long long)n, st.cfg.max_seq_len);
    else if (s == LOSA_OK && n + g.steps > st.cfg.max_seq_len)
        s = core_err(LOSA_ERR_ARG, "--steps: %d exceeds the maximum %lld for this model "
                     "(max_seq_len %d - %lld prompt tokens)", g.steps,
                     (long long)(st.cfg.max_seq_len - n), st.cfg.max_seq_len, (long long)n);
    if (cli_fail(d, "generate", s)) return 1;
    int cap = (int)n + g.steps;
    int *grown = realloc(ids, sizeof(int) * cap);
    if (!grown) {
        free(ids);
        return cli_fail(d, "generate", core_err(LOSA_ERR_NOMEM, "out of memory (%d token ids)", cap));
    }
    ids = grown;
    model_acts a;
    model_kv_cache kv;
    model_sparse sp;
    memset(&kv, 0, sizeof kv);
    /* copies kept in the store (losa sparsify) are read, the rest converted */
    double t_sp = core_time();
    memset(&sp, 0, sizeof sp);
    /* bf16: no sparse copies (off; on is refused by model_sparse_build) */
    if (!(g.dtype == MODEL_DTYPE_BF16 && g.smode == MODEL_SPARSE_OFF) &&
        cli_fail(d, "generate", cli_sparse_build(d, g.model, &st, &sp, g.smode, 1, SPARSE_FORMAT_BITMAP)))
        return 1;
    t_sp = core_time() - t_sp;
    s = model_kv_cache_build(&kv, &st, cap);
    if (s == LOSA_OK) s = model_acts_build(&a, &st, 1, (int)n, 0);
    if (cli_fail(d, "generate", s)) return 1;
    /* no copy (off, or auto finding none that pays): the dense path as it
     * is, OpenBLAS for every map and the head */
    st.sparse = sp.n_converted ? &sp : NULL;
    gen_sparse_counts c = gen_sparse_count(d, &st, &sp);
    c.build_s = t_sp;
    if (dist_rank(d) == 0 && !g.json)
        core_log("sparse %s: %.0f of %.0f maps on sparse kernels (%s), %.0f read from the store\n",
                 model_sparse_mode_name(g.smode), c.conv, c.maps, sparse_isa_name(sparse_get_isa()),
                 c.loaded);
    double t0 = core_time(), t_prefill = 0;
    int len = gen_loop(d, &g, &st, &tok, &a, &kv, ids, (int)n, &t_prefill);
    double secs = core_time() - t0;
    char *text = NULL;
    size_t tl = 0;
    tok_decode(&tok, ids + n, len - n, &text, &tl);
    /* byte-fallback pieces may leave partial or invalid UTF-8 (and NUL):
     * U+FFFD for those, so that the JSON text is valid and complete */
    char *utf8 = text ? core_utf8_repair(text, tl, NULL) : NULL;
    gen_report(d, &g, utf8, len - (int)n, secs, t_prefill, &c);
    free(utf8);
    free(text);
    free(ids);
    st.sparse = NULL;
    model_acts_free(&a);
    model_kv_cache_free(&kv);
    model_sparse_free(&sp);
    tok_free(&tok);
    model_stage_free(&st);
    return 0;
}
