/* Greedy generation on the real stories260K model (imported from
 * $LOSA_DATA), 200 steps from "Once upon a time":
 *  - KV-cache decode gives the same tokens as full recomputation of the
 *    prefix at every step, and logits within rel 1e-5;
 *  - with every map magnitude-pruned to 70% (prune_magnitude), the sparse
 *    path (every map on sparse kernels) gives the same tokens as the dense
 *    KV-cache path and logits within rel 1e-5. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "model.h"
#include "prune.h"
#include "test_util.h"
#include "tok.h"

#define STEPS 200

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* Greedy: ids[0..n) prompt, fills ids[n..n+STEPS) and the logits of every
 * step (STEPS, V).  full = 1: full forward of the prefix each step. */
static void generate(model_stage *s, int *ids, int n, float *lg, int full)
{
    int V = s->cfg.vocab_size, cap = n + STEPS;
    model_acts a;
    model_kv_cache kv;
    model_acts_build(&a, s, 1, full ? cap : n, 0);
    model_kv_cache_build(&kv, s, cap);
    for (int k = 0, len = n; k < STEPS; k++, len++) {
        const float *row;
        if (full) {
            model_stage_forward(&a, s, ids, 1, len);
            row = a.logits + (int64_t)(len - 1) * V;
        } else if (k == 0) {
            model_stage_prefill(&a, &kv, s, ids, len);
            row = a.logits + (int64_t)(len - 1) * V;
        } else {
            model_stage_decode_step(&a, &kv, s, ids[len - 1], len - 1);
            row = a.logits;
        }
        memcpy(lg + (int64_t)k * V, row, sizeof(float) * V);
        ids[len] = argmax(row, V);
    }
    model_acts_free(&a);
    model_kv_cache_free(&kv);
}

static void compare(const char *what, const int *ids_a, const int *ids_b, const float *la,
                    const float *lb, int n, int V)
{
    int first = -1;
    for (int k = 0; k < STEPS; k++)
        if (ids_a[n + k] != ids_b[n + k]) { first = k; break; }
    TEST_CHECK(first < 0, "%s: tokens differ from step %d", what, first);
    double worst = 0;
    for (int k = 0; k < STEPS; k++) {
        double e = test_max_rel(la + (int64_t)k * V, lb + (int64_t)k * V, V);
        if (e > worst) worst = e;
    }
    fprintf(stderr, "%s: %d greedy tokens identical: %s, max rel logits error %.3g\n", what,
            STEPS, first < 0 ? "yes" : "no", worst);
    TEST_CHECK(worst <= 1e-5, "%s: logits rel %.3g", what, worst);
}

int main(void)
{
    const char *data = getenv("LOSA_DATA"), *tmp = getenv("LOSA_TEST_TMP");
    if (!data || !tmp) {
        fprintf(stderr, "LOSA_DATA and LOSA_TEST_TMP must be set (tests/run.sh)\n");
        return 1;
    }
    char ckpt[1024], tokp[1024], path[1024];
    snprintf(ckpt, sizeof ckpt, "%s/models/stories260K/stories260K.bin", data);
    snprintf(tokp, sizeof tokp, "%s/models/stories260K/tok512.bin", data);
    snprintf(path, sizeof path, "%s/test_sparse_generate.%d.h5", tmp, (int)getpid());
    TEST_CHECK(io_import_llama2c(ckpt, tokp, path) == LOSA_OK, "import: %s", core_errmsg());
    io_store *io = NULL;
    model_config c;
    model_stage s;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    TEST_CHECK(io_store_open(&io, path) == LOSA_OK, "open");
    TEST_CHECK(io_store_read_config(io, &c) == LOSA_OK, "config");
    model_stage_build(&s, &c, 0, 1);
    TEST_CHECK(io_store_read_stage(io, &s) == LOSA_OK, "stage");
    TEST_CHECK(io_store_read_tokenizer(io, &tok) == LOSA_OK, "tokenizer");
    io_store_close(&io);
    unlink(path);
    if (test_failures) return test_finish("test_sparse_generate");

    const char *prompt = "Once upon a time";
    int *p = NULL;
    int64_t n = 0;
    TEST_CHECK(tok_encode(&tok, prompt, strlen(prompt), 1, 0, &p, &n) == LOSA_OK, "encode");
    int V = c.vocab_size, cap = (int)n + STEPS;
    TEST_CHECK(cap <= c.max_seq_len, "context %d", c.max_seq_len);
    int *ids[3];
    float *lg[3];
    for (int k = 0; k < 3; k++) {
        ids[k] = malloc(sizeof(int) * cap);
        memcpy(ids[k], p, sizeof(int) * n);
        lg[k] = malloc(sizeof(float) * STEPS * V);
    }
    /* dense: full recompute vs KV cache */
    generate(&s, ids[0], (int)n, lg[0], 1);
    generate(&s, ids[1], (int)n, lg[1], 0);
    compare("dense KV cache vs full recompute", ids[1], ids[0], lg[1], lg[0], (int)n, V);
    char *text = NULL;
    size_t tl;
    tok_decode(&tok, ids[1] + n, 40, &text, &tl);
    fprintf(stderr, "text: %.*s...\n", (int)tl, text);
    free(text);

    /* pruned to 70% by magnitude: dense KV vs sparse KV (every map sparse) */
    for (int l = 0; l < s.n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&c, m, &o, &i);
            TEST_CHECK(prune_magnitude(s.layers[l].w[m], o, i, 0.7, 0, 0) == LOSA_OK, "prune");
        }
    generate(&s, ids[0], (int)n, lg[0], 0);
    model_sparse sp;
    TEST_CHECK(model_sparse_build(&sp, &s, MODEL_SPARSE_ON, 1, SPARSE_FORMAT_BITMAP) == LOSA_OK,
               "sparse build");
    TEST_CHECK(sp.n_converted == s.n_layers * MODEL_N_MAPS, "converted %d", sp.n_converted);
    s.sparse = &sp;
    generate(&s, ids[2], (int)n, lg[2], 0);
    s.sparse = NULL;
    compare("70% pruned: sparse vs dense (KV cache)", ids[2], ids[0], lg[2], lg[0], (int)n, V);
    /* auto at batch 1: density 0.3 is profitable -> every map converted */
    model_sparse_free(&sp);
    model_sparse_build(&sp, &s, MODEL_SPARSE_AUTO, 1, SPARSE_FORMAT_BITMAP);
    TEST_CHECK(sp.n_converted == s.n_layers * MODEL_N_MAPS, "auto converted %d", sp.n_converted);
    model_sparse_free(&sp);

    for (int k = 0; k < 3; k++) {
        free(ids[k]);
        free(lg[k]);
    }
    free(p);
    tok_free(&tok);
    model_stage_free(&s);
    return test_finish("test_sparse_generate");
}
