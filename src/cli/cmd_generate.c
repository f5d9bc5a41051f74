/* losa generate --model STORE.h5 [--prompt TEXT] [--steps N]
 *               [--temperature T] [--seed S] [--json]
 * Greedy (T = 0) or temperature sampling through the pipeline; the last
 * stage picks each token and broadcasts it to the pipeline. */
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

int cmd_generate(dist_ctx *d, int argc, char **argv)
{
    const char *model = NULL, *prompt = "", *v;
    int steps = 128, json = 0;
    float temp = 0.0f;
    uint64_t seed = 0;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--model"))) model = v;
        else if ((v = cli_opt(argc, argv, &i, "--prompt"))) prompt = v;
        else if ((v = cli_opt(argc, argv, &i, "--steps"))) steps = atoi(v);
        else if ((v = cli_opt(argc, argv, &i, "--temperature"))) temp = (float)atof(v);
        else if ((v = cli_opt(argc, argv, &i, "--seed"))) seed = strtoull(v, NULL, 10);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa generate --model STORE.h5 "
                          "[--prompt TEXT] [--steps N] [--temperature T] [--seed S] [--json])", argv[i]);
    }
    if (s == LOSA_OK && !model) s = core_err(LOSA_ERR_ARG, "--model STORE.h5 is required");
    if (s == LOSA_OK && steps < 1) s = core_err(LOSA_ERR_ARG, "--steps must be >= 1");
    if (cli_fail(d, "generate", s)) return 1;
    model_stage st;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    if (cli_fail(d, "generate", cli_load_model(d, model, &st, &tok))) return 1;
    int *ids = NULL;
    int64_t n = 0;
    s = tok_encode(&tok, prompt, strlen(prompt), 1, 0, &ids, &n);
    if (s == LOSA_OK && n + steps > st.cfg.max_seq_len) {
        steps = st.cfg.max_seq_len - (int)n;
        if (steps < 1) s = core_err(LOSA_ERR_ARG, "prompt of %lld tokens fills the context (%d)",
                                    (long long)n, st.cfg.max_seq_len);
    }
    if (cli_fail(d, "generate", s)) return 1;
    int cap = (int)n + steps;
    ids = realloc(ids, sizeof(int) * cap);
    model_acts a;
    if (cli_fail(d, "generate", model_acts_build(&a, &st, 1, cap, 0))) return 1;
    core_rng rng;
    core_rng_seed(&rng, seed);
    double t0 = core_time();
    int len = (int)n;
    for (int k = 0; k < steps; k++) {
        /* full recompute of the prefix each step (no KV cache here) */
        model_pipeline_forward(d, &a, &st, ids, 1, len, k);
        int next = 0;
        if (st.has_head) next = sample(a.logits + (int64_t)(len - 1) * st.cfg.vocab_size,
                                       st.cfg.vocab_size, temp, &rng);
        dist_bcast_from_last(d, &next, sizeof next);
        ids[len++] = next;
        if (next == st.cfg.eos_id) break;
        if (dist_rank(d) == 0 && !json) {
            char buf[8];
            size_t pl;
            const char *p = tok_piece_text(&tok, ids[len - 2], next, buf, &pl);
            fwrite(p, 1, pl, stdout);
            fflush(stdout);
        }
    }
    double secs = core_time() - t0;
    char *text = NULL;
    size_t tl = 0;
    tok_decode(&tok, ids + n, len - n, &text, &tl);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "prompt", prompt);
        cJSON_AddStringToObject(o, "text", text ? text : "");
        cJSON_AddNumberToObject(o, "tokens", len - (int)n);
        cJSON_AddNumberToObject(o, "seconds", secs);
        cJSON_AddNumberToObject(o, "tokens_per_s", (len - n) / (secs > 0 ? secs : 1));
        char *js = cJSON_PrintUnformatted(o);
        cli_json_print(d, js);
        free(js);
        cJSON_Delete(o);
    } else if (dist_rank(d) == 0) {
        printf("\n");
        core_log("%d tokens in %.2fs (%.1f tokens/s)\n", len - (int)n, secs, (len - n) / (secs > 0 ? secs : 1));
    }
    free(text);
    free(ids);
    model_acts_free(&a);
    tok_free(&tok);
    model_stage_free(&st);
    return 0;
}
