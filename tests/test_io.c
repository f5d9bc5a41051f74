/* io: model store round trip (stagings P = 1, 2, 3 re-read the same tensors,
 * tied and untied), shape-mismatch and missing-dataset messages, atomic
 * create/commit/close, tokenizer and generic dataset round trips, fp16/bf16
 * conversion; imports of minillama (HF, BF16) and stories260K (llama2.c)
 * compared exactly with independent numpy readers (tests/ref/). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "../src/io/io_internal.h"
#include "test_util.h"

static char tmpdir[2048];
static void test_stories_golden(const char *path);

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

static model_config small_config(int tie)
{
    model_config c = {.dim = 16, .hidden_dim = 40, .n_layers = 3, .n_heads = 4,
                      .n_kv_heads = 2, .vocab_size = 50, .max_seq_len = 32,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                      .tie_embeddings = tie, .bos_id = 1, .eos_id = 2};
    return c;
}

static int same(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

/* Compare stage s (of a staging) with the full model f, tensor by tensor. */
static void compare_stage(const model_stage *s, const model_stage *f, const char *what)
{
    const model_config *c = &f->cfg;
    int64_t V = c->vocab_size, D = c->dim;
    if (s->has_embed || (s->has_head && c->tie_embeddings))
        TEST_CHECK(s->embed && same(s->embed, f->embed, V * D), "%s: embed", what);
    else
        TEST_CHECK(s->embed == NULL, "%s: embed should not be held", what);
    for (int l = 0; l < s->n_layers; l++) {
        const model_layer *a = &s->layers[l], *b = &f->layers[s->layer0 + l];
        TEST_CHECK(same(a->attn_norm, b->attn_norm, D), "%s: layer %d attn_norm", what,
                   s->layer0 + l);
        TEST_CHECK(same(a->ffn_norm, b->ffn_norm, D), "%s: layer %d ffn_norm", what,
                   s->layer0 + l);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            TEST_CHECK(same(a->w[m], b->w[m], (int64_t)o * i), "%s: layer %d %s", what,
                       s->layer0 + l, model_map_name((model_map)m));
        }
    }
    if (s->has_head) {
        TEST_CHECK(same(s->final_norm, f->final_norm, D), "%s: final_norm", what);
        TEST_CHECK(same(s->head, f->head, V * D), "%s: head", what);
    }
}

static void test_store_roundtrip(int tie)
{
    model_config c = small_config(tie);
    model_stage full;
    TEST_CHECK(model_stage_build(&full, &c, 0, 1) == LOSA_OK, "build: %s", core_errmsg());
    model_stage_randomize(&full, 42, 0.05f);
    char path[2300];
    snprintf(path, sizeof path, "%s/rt%d.h5", tmpdir, tie);
    unlink(path);
    io_store *st = NULL;
    losa_status s = io_store_create(&st, path);
    TEST_CHECK(s == LOSA_OK, "create: %s", core_errmsg());
    char tmp[2400];
    core_tmpname(tmp, sizeof tmp, path);
    TEST_CHECK(file_exists(tmp) && !file_exists(path), "writes go to the temporary %s", tmp);
    TEST_CHECK(io_store_write_config(st, &c, "test:random") == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(io_store_write_stage(st, &full) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(io_store_commit(&st) == LOSA_OK, "commit: %s", core_errmsg());
    TEST_CHECK(st == NULL, "commit clears the handle");
    TEST_CHECK(file_exists(path) && !file_exists(tmp), "committed: %s present, temp gone", path);

    TEST_CHECK(io_store_open(&st, path) == LOSA_OK, "open: %s", core_errmsg());
    if (!st) return;
    model_config r;
    TEST_CHECK(io_store_read_config(st, &r) == LOSA_OK, "read config: %s", core_errmsg());
    TEST_CHECK(r.dim == c.dim && r.hidden_dim == c.hidden_dim && r.n_layers == c.n_layers &&
                   r.n_heads == c.n_heads && r.n_kv_heads == c.n_kv_heads &&
                   r.vocab_size == c.vocab_size && r.max_seq_len == c.max_seq_len &&
                   r.rms_eps == c.rms_eps && r.rope_theta == c.rope_theta &&
                   r.tie_embeddings == c.tie_embeddings && r.bos_id == c.bos_id &&
                   r.eos_id == c.eos_id,
               "config round trip (tie %d)", tie);
    TEST_CHECK(io_store_has(st, "/head") == !tie, "/head present iff untied (tie %d)", tie);
    TEST_CHECK(io_store_has(st, "/layers/2/w_down") && !io_store_has(st, "/layers/3/wq") &&
                   !io_store_has(st, "/nothing/here"),
               "io_store_has");
    char *src = NULL;
    TEST_CHECK(io_store_read_string(st, "/source", &src) == LOSA_OK && src &&
                   !strcmp(src, "test:random"),
               "source attribute: %s", src ? src : core_errmsg());
    free(src);
    for (int P = 1; P <= 3; P++) {
        int layers_seen = 0;
        for (int p = 0; p < P; p++) {
            model_stage sp;
            TEST_CHECK(model_stage_build(&sp, &r, p, P) == LOSA_OK, "%s", core_errmsg());
            /* poison so that a tensor not read would show */
            for (size_t i = 0; i < sp.n_params; i++) sp.params[i] = -12345.0f;
            s = io_store_read_stage(st, &sp);
            TEST_CHECK(s == LOSA_OK, "read stage %d/%d: %s", p, P, core_errmsg());
            char what[64];
            snprintf(what, sizeof what, "tie %d P %d stage %d", tie, P, p);
            compare_stage(&sp, &full, what);
            layers_seen += sp.n_layers;
            model_stage_free(&sp);
        }
        TEST_CHECK(layers_seen == c.n_layers, "P %d covers every layer", P);
    }
    io_store_close(&st);
    TEST_CHECK(st == NULL && file_exists(path), "closing a read store keeps the file");
    model_stage_free(&full);
}

static void test_store_errors(void)
{
    model_config c = small_config(0);
    model_stage full;
    model_stage_build(&full, &c, 0, 1);
    model_stage_randomize(&full, 7, 0.05f);
    char path[2300], tmp[2400];

    /* uncommitted store: closing removes the temporary, nothing at path */
    snprintf(path, sizeof path, "%s/uncommitted.h5", tmpdir);
    unlink(path);
    io_store *st = NULL;
    io_store_create(&st, path);
    io_store_write_config(st, &c, "x");
    io_store_write_stage(st, &full);
    core_tmpname(tmp, sizeof tmp, path);
    TEST_CHECK(file_exists(tmp), "temporary exists while writing");
    io_store_close(&st);
    TEST_CHECK(!file_exists(tmp) && !file_exists(path), "uncommitted close leaves nothing");

    /* wrong shape and missing dataset */
    snprintf(path, sizeof path, "%s/bad.h5", tmpdir);
    io_store_create(&st, path);
    io_store_write_config(st, &c, "x");
    io_store_write_stage(st, &full);
    int64_t bad[2] = {16, 8}; /* wk is (kvD, D) = (8, 16) */
    io_store_write_tensor(st, "/layers/1/wk", full.layers[1].w[MODEL_MAP_K], 2, bad);
    TEST_CHECK(io_store_commit(&st) == LOSA_OK, "%s", core_errmsg());

    io_store_open(&st, path);
    model_stage sp;
    model_stage_build(&sp, &c, 0, 1);
    losa_status s = io_store_read_stage(st, &sp);
    const char *m = core_errmsg();
    TEST_CHECK(s == LOSA_ERR_FORMAT && strstr(m, path) && strstr(m, "/layers/1/wk") &&
                   strstr(m, "expected shape (8, 16), found (16, 8)"),
               "shape mismatch message: %s", m);
    int64_t want[2] = {16, 16};
    float *buf = core_calloc(256, sizeof(float));
    s = io_store_read_tensor(st, "/layers/1/wk", buf, 2, want);
    m = core_errmsg();
    TEST_CHECK(s == LOSA_ERR_FORMAT && strstr(m, path) && strstr(m, "/layers/1/wk") &&
                   strstr(m, "expected shape (16, 16), found (16, 8)"),
               "shape mismatch message: %s", m);
    int64_t one[1] = {256};
    s = io_store_read_tensor(st, "/layers/1/wk", buf, 1, one);
    m = core_errmsg();
    TEST_CHECK(s == LOSA_ERR_FORMAT && strstr(m, "expected shape (256), found (16, 8)"),
               "rank mismatch message: %s", m);
    s = io_store_read_tensor(st, "/layers/9/wq", buf, 2, want);
    m = core_errmsg();
    TEST_CHECK(s == LOSA_ERR_FORMAT && strstr(m, path) && strstr(m, "/layers/9/wq") &&
                   strstr(m, "missing"),
               "missing dataset message: %s", m);
    core_free(buf);
    io_store_close(&st);
    TEST_CHECK(file_exists(path), "read-only close keeps the file");
    model_stage_free(&sp);

    /* a store without /final_norm: the last stage names it */
    snprintf(path, sizeof path, "%s/nofinal.h5", tmpdir);
    io_store_create(&st, path);
    io_store_write_config(st, &c, "x");
    model_stage s0;
    model_stage_build(&s0, &c, 0, 2); /* writes embed + first layers only */
    io_store_write_stage(st, &s0);
    io_store_commit(&st);
    io_store_open(&st, path);
    model_stage_build(&sp, &c, 0, 2);
    TEST_CHECK(io_store_read_stage(st, &sp) == LOSA_OK, "first stage reads: %s", core_errmsg());
    model_stage_free(&sp);
    model_stage_build(&sp, &c, 1, 2);
    s = io_store_read_stage(st, &sp);
    m = core_errmsg();
    TEST_CHECK(s == LOSA_ERR_FORMAT && strstr(m, "missing") && strstr(m, "/layers/"),
               "last stage missing its layers: %s", m);
    model_stage_free(&sp);
    model_stage_free(&s0);
    io_store_close(&st);

    /* open errors */
    s = io_store_open(&st, "/nonexistent/x.h5");
    TEST_CHECK(s == LOSA_ERR_IO && strstr(core_errmsg(), "/nonexistent/x.h5"), "%s",
               core_errmsg());
    model_stage_free(&full);
}

static void test_generic_and_tokenizer(void)
{
    char path[2300];
    snprintf(path, sizeof path, "%s/generic.h5", tmpdir);
    io_store *st = NULL;
    io_store_create(&st, path);
    double d[6] = {1.5, -2.25, 3e100, 0, 1e-300, 7};
    int iv[4] = {1, -2, 3, 2147483647};
    int64_t sd[2] = {2, 3}, si[1] = {4};
    TEST_CHECK(io_store_write_doubles(st, "/metrics/ppl", d, 2, sd) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(io_store_write_ints(st, "/metrics/steps", iv, 1, si) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(io_store_write_string(st, "/run/deck", "a = 1\nb = two\n") == LOSA_OK, "%s",
               core_errmsg());
    TEST_CHECK(io_store_write_string(st, "note", "root attr") == LOSA_OK, "%s", core_errmsg());

    /* a tokenizer by hand: 6 pieces, merges a+b -> ab, U+2581 + ab -> U+2581 ab */
    tok_tokenizer t = {0};
    const char *pieces[6] = {"<unk>", "a", "b", "ab", "\xe2\x96\x81", "\xe2\x96\x81" "ab"};
    t.kind = TOK_KIND_MERGES;
    t.n_vocab = 6;
    t.offsets = calloc(7, sizeof(int64_t));
    t.scores = calloc(6, sizeof(float));
    size_t tot = 0;
    for (int i = 0; i < 6; i++) tot += strlen(pieces[i]);
    t.blob = calloc(tot, 1);
    for (int i = 0; i < 6; i++) {
        size_t n = strlen(pieces[i]);
        memcpy(t.blob + t.offsets[i], pieces[i], n);
        t.offsets[i + 1] = t.offsets[i] + (int64_t)n;
        t.scores[i] = -0.5f * i;
    }
    t.n_merges = 2;
    t.merges = calloc(4, sizeof(int32_t));
    t.merges[0] = 1; t.merges[1] = 2; t.merges[2] = 4; t.merges[3] = 3;
    t.bos_id = 1; t.eos_id = 2; t.unk_id = 0; t.byte_fallback = 0; t.add_dummy_prefix = 1;
    TEST_CHECK(io_store_write_tokenizer(st, &t) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(io_store_commit(&st) == LOSA_OK, "%s", core_errmsg());

    io_store_open(&st, path);
    double d2[6] = {0};
    int i2[4] = {0};
    TEST_CHECK(io_store_read_doubles(st, "/metrics/ppl", d2, 2, sd) == LOSA_OK &&
                   !memcmp(d, d2, sizeof d),
               "doubles round trip");
    TEST_CHECK(io_store_read_ints(st, "/metrics/steps", i2, 1, si) == LOSA_OK &&
                   !memcmp(iv, i2, sizeof iv),
               "ints round trip");
    int nd = 0;
    int64_t sh[IO_MAX_DIMS];
    TEST_CHECK(io_store_tensor_shape(st, "/metrics/ppl", &nd, sh) == LOSA_OK && nd == 2 &&
                   sh[0] == 2 && sh[1] == 3,
               "shape query");
    char *s1 = NULL, *s2 = NULL;
    TEST_CHECK(io_store_read_string(st, "/run/deck", &s1) == LOSA_OK && s1 &&
                   !strcmp(s1, "a = 1\nb = two\n"),
               "string attribute");
    TEST_CHECK(io_store_read_string(st, "/note", &s2) == LOSA_OK && s2 &&
                   !strcmp(s2, "root attr"),
               "root string attribute");
    free(s1);
    free(s2);
    tok_tokenizer u;
    losa_status s = io_store_read_tokenizer(st, &u);
    TEST_CHECK(s == LOSA_OK, "read tokenizer: %s", core_errmsg());
    if (s == LOSA_OK) {
        TEST_CHECK(u.kind == t.kind && u.n_vocab == 6 && u.n_merges == 2 && u.bos_id == 1 &&
                       u.eos_id == 2 && u.unk_id == 0 && u.byte_fallback == 0 &&
                       u.add_dummy_prefix == 1,
                   "tokenizer attributes");
        TEST_CHECK(!memcmp(u.offsets, t.offsets, 7 * sizeof(int64_t)) &&
                       !memcmp(u.blob, t.blob, tot) &&
                       !memcmp(u.scores, t.scores, 6 * sizeof(float)) &&
                       !memcmp(u.merges, t.merges, 4 * sizeof(int32_t)),
                   "tokenizer arrays");
        tok_free(&u);
    }
    io_store_close(&st);
    free(t.offsets); free(t.scores); free(t.blob); free(t.merges);
}

static void test_half(void)
{
    TEST_CHECK(io_f16_to_f32(0x3C00) == 1.0f, "f16 1");
    TEST_CHECK(io_f16_to_f32(0xC000) == -2.0f, "f16 -2");
    TEST_CHECK(io_f16_to_f32(0x7BFF) == 65504.0f, "f16 max");
    TEST_CHECK(io_f16_to_f32(0x0400) == ldexpf(1, -14), "f16 min normal");
    TEST_CHECK(io_f16_to_f32(0x0001) == ldexpf(1, -24), "f16 min subnormal");
    TEST_CHECK(io_f16_to_f32(0x83FF) == -ldexpf(1023, -24), "f16 max subnormal, negative");
    TEST_CHECK(io_f16_to_f32(0x3555) == 0.333251953125f, "f16 1/3");
    TEST_CHECK(isinf(io_f16_to_f32(0x7C00)) && isnan(io_f16_to_f32(0x7E00)), "f16 inf/nan");
    TEST_CHECK(signbit(io_f16_to_f32(0x8000)) && io_f16_to_f32(0x8000) == 0, "f16 -0");
    TEST_CHECK(io_bf16_to_f32(0x3F80) == 1.0f && io_bf16_to_f32(0xC049) == -3.140625f,
               "bf16");
}

/* Load OUT_DIR/<file>.f32 written by a reference script. */
static float *load_ref(const char *dir, const char *file, int64_t n)
{
    char p[2600];
    snprintf(p, sizeof p, "%s/%s.f32", dir, file);
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    float *x = core_calloc((size_t)n + 1, sizeof(float));
    size_t got = fread(x, sizeof(float), (size_t)n + 1, f);
    fclose(f);
    if ((int64_t)got != n) { core_free(x); return NULL; }
    return x;
}

/* Read store tensor name (ndim, shape) and compare exactly with the reference. */
static void compare_ref(io_store *st, const char *name, int ndim, int64_t s0, int64_t s1,
                        const char *dir, const char *ref)
{
    int64_t sh[2] = {s0, s1}, n = s0 * (ndim == 2 ? s1 : 1);
    float *x = core_calloc((size_t)n, sizeof(float));
    losa_status s = io_store_read_tensor(st, name, x, ndim, sh);
    TEST_CHECK(s == LOSA_OK, "%s: %s", name, core_errmsg());
    float *r = load_ref(dir, ref, n);
    TEST_CHECK(r != NULL, "reference %s/%s.f32", dir, ref);
    if (s == LOSA_OK && r) {
        double e = test_max_rel(x, r, n);
        int64_t nz = 0;
        for (int64_t i = 0; i < n; i++) nz += r[i] != 0;
        fprintf(stderr, "  %-28s %8lld values, max rel diff %.3g, nonzero %lld\n", name,
                (long long)n, e, (long long)nz);
        TEST_CHECK(e == 0 && nz > 0, "%s: exact match with numpy (max rel %.3g)", name, e);
    }
    core_free(x);
    core_free(r);
}

/* The tokenizer read back from the store encodes text like the original. */
static void compare_tokenizers(const tok_tokenizer *a, const tok_tokenizer *b,
                               const char *what)
{
    const char *text = "Once upon a time, the quick brown fox read 3.14 \xc3\xa9t\xc3\xa9s!";
    int *ia = NULL, *ib = NULL;
    int64_t na = 0, nb = 0;
    losa_status s1 = tok_encode(a, text, strlen(text), 1, 0, &ia, &na);
    losa_status s2 = tok_encode(b, text, strlen(text), 1, 0, &ib, &nb);
    TEST_CHECK(s1 == LOSA_OK && s2 == LOSA_OK && na == nb && na > 5 &&
                   !memcmp(ia, ib, (size_t)na * sizeof(int)),
               "%s: store tokenizer encodes like the source (%lld vs %lld ids)", what,
               (long long)na, (long long)nb);
    free(ia);
    free(ib);
}

static void test_import_minillama(const char *data)
{
    char src[2300], out[2300], ref[2300], cmd[8000];
    snprintf(src, sizeof src, "%s/models/minillama", data);
    snprintf(out, sizeof out, "%s/minillama.h5", tmpdir);
    snprintf(ref, sizeof ref, "%s/minillama_ref", tmpdir);
    unlink(out);
    double t0 = core_time();
    losa_status s = io_import_hf(src, out);
    TEST_CHECK(s == LOSA_OK, "import minillama: %s", core_errmsg());
    if (s != LOSA_OK) return;
    fprintf(stderr, "  minillama imported in %.2fs\n", core_time() - t0);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tests/ref/safetensors_ref.py '%s/model.safetensors' '%s' "
             "model.embed_tokens.weight model.layers.0.self_attn.q_proj.weight "
             "model.layers.3.self_attn.k_proj.weight model.layers.5.mlp.down_proj.weight "
             "model.layers.2.post_attention_layernorm.weight model.norm.weight "
             "lm_head.weight >/dev/null",
             src, ref);
    TEST_CHECK(system(cmd) == 0, "reference script: %s", cmd);
    io_store *st = NULL;
    TEST_CHECK(io_store_open(&st, out) == LOSA_OK, "%s", core_errmsg());
    if (!st) return;
    model_config c;
    TEST_CHECK(io_store_read_config(st, &c) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(c.dim == 256 && c.hidden_dim == 768 && c.n_layers == 6 && c.n_heads == 8 &&
                   c.n_kv_heads == 4 && c.vocab_size == 32000 && c.max_seq_len == 256 &&
                   c.rms_eps == 1e-5f && c.rope_theta == 10000.0f && !c.tie_embeddings &&
                   c.bos_id == 1 && c.eos_id == 2,
               "minillama config");
    /* 2 V D + L (2 D + 2 D^2 + 2 kvD D + 3 F D) + D */
    TEST_CHECK(model_param_count(&c) == 21105920, "params %lld",
               (long long)model_param_count(&c));
    compare_ref(st, "/embed", 2, 32000, 256, ref, "model.embed_tokens.weight");
    compare_ref(st, "/layers/0/wq", 2, 256, 256, ref, "model.layers.0.self_attn.q_proj.weight");
    compare_ref(st, "/layers/3/wk", 2, 128, 256, ref, "model.layers.3.self_attn.k_proj.weight");
    compare_ref(st, "/layers/5/w_down", 2, 256, 768, ref, "model.layers.5.mlp.down_proj.weight");
    compare_ref(st, "/layers/2/ffn_norm", 1, 256, 0, ref,
                "model.layers.2.post_attention_layernorm.weight");
    compare_ref(st, "/final_norm", 1, 256, 0, ref, "model.norm.weight");
    compare_ref(st, "/head", 2, 32000, 256, ref, "lm_head.weight");
    tok_tokenizer t;
    s = io_store_read_tokenizer(st, &t);
    TEST_CHECK(s == LOSA_OK && t.n_vocab == 32000 && t.kind == TOK_KIND_MERGES,
               "minillama tokenizer: %s", s == LOSA_OK ? "bad fields" : core_errmsg());
    if (s == LOSA_OK) {
        tok_tokenizer t0;
        char tp[2400];
        snprintf(tp, sizeof tp, "%s/tokenizer.json", src);
        TEST_CHECK(tok_load_hf_json(&t0, tp) == LOSA_OK, "%s", core_errmsg());
        compare_tokenizers(&t, &t0, "minillama");
        tok_free(&t0);
        tok_free(&t);
    }
    io_store_close(&st);
}

static void test_import_stories(const char *data)
{
    char ckpt[2300], tokp[2300], out[2300], ref[2300], cmd[8000];
    snprintf(ckpt, sizeof ckpt, "%s/models/stories260K/stories260K.bin", data);
    snprintf(tokp, sizeof tokp, "%s/models/stories260K/tok512.bin", data);
    snprintf(out, sizeof out, "%s/stories260K.h5", tmpdir);
    snprintf(ref, sizeof ref, "%s/stories_ref", tmpdir);
    unlink(out);
    losa_status s = io_import_llama2c(ckpt, tokp, out);
    TEST_CHECK(s == LOSA_OK, "import stories260K: %s", core_errmsg());
    if (s != LOSA_OK) return;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/llama2c_ref.py '%s' '%s'", ckpt, ref);
    TEST_CHECK(system(cmd) == 0, "reference script (checks RoPE permutation): %s", cmd);
    io_store *st = NULL;
    io_store_open(&st, out);
    if (!st) return;
    model_config c;
    TEST_CHECK(io_store_read_config(st, &c) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(c.dim == 64 && c.hidden_dim == 172 && c.n_layers == 5 && c.n_heads == 8 &&
                   c.n_kv_heads == 4 && c.vocab_size == 512 && c.max_seq_len == 512 &&
                   c.tie_embeddings == 1 && c.rms_eps == 1e-5f,
               "stories260K config");
    TEST_CHECK(!io_store_has(st, "/head"), "tied: no /head");
    tok_tokenizer t, t0;
    TEST_CHECK(io_store_read_tokenizer(st, &t) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(tok_load_llama2c(&t0, tokp, 512) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(t.kind == TOK_KIND_SCORES && t.n_vocab == 512, "stories tokenizer fields");
    compare_tokenizers(&t, &t0, "stories260K");
    tok_free(&t);
    tok_free(&t0);
    compare_ref(st, "/embed", 2, 512, 64, ref, "embed");
    compare_ref(st, "/final_norm", 1, 64, 0, ref, "final_norm");
    char name[64], rn[64];
    static const char *what[] = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down",
                                 "attn_norm", "ffn_norm"};
    for (int l = 0; l < 5; l += 4)
        for (int k = 0; k < 9; k++) {
            int o = 64, i = 64, nd = 2;
            if (k == 1 || k == 2) o = 32;
            if (k == 4 || k == 5) o = 172;
            if (k == 6) i = 172;
            if (k >= 7) nd = 1;
            io_layer_name(name, sizeof name, l, what[k]);
            snprintf(rn, sizeof rn, "l%d_%s", l, what[k]);
            compare_ref(st, name, nd, o, i, ref, rn);
        }
    io_store_close(&st);
    test_stories_golden(out);
}

/* End to end: greedy decoding of the imported stories260K from BOS must
 * reproduce karpathy's reference story (PROVENANCE.md) -- this fails if the
 * q/k rows were not permuted to the rotate-half RoPE convention. */
static void test_stories_golden(const char *path)
{
    static const char *ref =
        "Once upon a time, there was a little girl named Lily. She loved to play "
        "outside in the park. One day, she saw a big, red ball. She wanted to play "
        "with it, but it was too high.";
    io_store *st = NULL;
    if (io_store_open(&st, path) != LOSA_OK) {
        TEST_CHECK(0, "%s", core_errmsg());
        return;
    }
    model_config c;
    model_stage s;
    model_acts a;
    tok_tokenizer t;
    io_store_read_config(st, &c);
    TEST_CHECK(model_stage_build(&s, &c, 0, 1) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(io_store_read_stage(st, &s) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(io_store_read_tokenizer(st, &t) == LOSA_OK, "%s", core_errmsg());
    io_store_close(&st);
    enum { N = 56 };
    TEST_CHECK(model_acts_build(&a, &s, 1, N, 0) == LOSA_OK, "%s", core_errmsg());
    int ids[N];
    ids[0] = c.bos_id;
    for (int n = 1; n < N; n++) {
        model_stage_forward(&a, &s, ids, 1, n);
        const float *lg = a.logits + (int64_t)(n - 1) * c.vocab_size;
        int best = 0;
        for (int v = 1; v < c.vocab_size; v++)
            if (lg[v] > lg[best]) best = v;
        ids[n] = best;
    }
    char *text = NULL;
    size_t len = 0;
    TEST_CHECK(tok_decode(&t, ids + 1, N - 1, &text, &len) == LOSA_OK, "%s", core_errmsg());
    if (text) {
        size_t m = len < strlen(ref) ? len : strlen(ref);
        fprintf(stderr, "  stories260K greedy: %.*s\n", (int)len, text);
        TEST_CHECK(m >= 100 && strncmp(text, ref, m) == 0,
                   "greedy decode matches the reference story for %zu chars", m);
    }
    free(text);
    tok_free(&t);
    model_acts_free(&a);
    model_stage_free(&s);
}

/* bf16 stages and stores: a stage built directly in bf16
 * (model_stage_build_dtype) read from an fp32 store equals
 * model_stage_to_bf16 of the fp32 stage bit for bit and counts the same
 * lost weights (one planted value 1e-41, below bf16's smallest subnormal
 * 2^-133 ~ 9.2e-41, and one planted zero that stays zero); written back, the
 * maps and the head are bf16 datasets (root dtype bf16) that an fp32 stage
 * widens exactly and a bf16 stage takes as they are (the head: bf16 of the
 * input's bit for bit; tied: the head's rows are the fp32 embedding
 * rounded, the embedding stays fp32); the bf16 size function is the fp32
 * one minus the maps' and head's 2 bytes per weight (up to
 * core_alloc_bytes' rounding of each block). */
static void test_bf16_stage(int tie)
{
    model_config c = small_config(tie);
    model_stage full, ref, b;
    TEST_CHECK(model_stage_build(&full, &c, 0, 1) == LOSA_OK, "build: %s", core_errmsg());
    model_stage_randomize(&full, 7, 0.05f);
    full.layers[1].w[MODEL_MAP_UP][3] = 1e-41f; /* rounds to zero in bf16 */
    full.layers[2].w[MODEL_MAP_Q][5] = 0.0f;
    char a32[2300], a16[2300];
    snprintf(a32, sizeof a32, "%s/bf16_src.h5", tmpdir);
    snprintf(a16, sizeof a16, "%s/bf16_out.h5", tmpdir);
    io_store *st = NULL;
    TEST_CHECK(io_store_create(&st, a32) == LOSA_OK && io_store_write_config(st, &c, "t") == LOSA_OK &&
               io_store_write_stage(st, &full) == LOSA_OK && io_store_commit(&st) == LOSA_OK,
               "fp32 store: %s", core_errmsg());
    /* reference: the fp32 stage converted */
    TEST_CHECK(model_stage_build(&ref, &c, 0, 1) == LOSA_OK, "build ref");
    TEST_CHECK(io_store_open(&st, a32) == LOSA_OK && io_store_read_stage(st, &ref) == LOSA_OK,
               "read ref: %s", core_errmsg());
    io_store_close(&st);
    int64_t lost_ref = -1, lost = -1;
    TEST_CHECK(model_stage_to_bf16(&ref, &lost_ref) == LOSA_OK && lost_ref == 1,
               "to_bf16 loses the planted value: %lld", (long long)lost_ref);
    /* direct bf16 stage from the fp32 store */
    TEST_CHECK(model_stage_build_dtype(&b, &c, 0, 1, NULL, MODEL_DTYPE_BF16) == LOSA_OK &&
               b.dtype == MODEL_DTYPE_BF16 && b.n_params_bf16 == ref.n_params_bf16 &&
               b.n_params == ref.n_params, "bf16 build: %zu/%zu vs %zu/%zu", b.n_params_bf16,
               b.n_params, ref.n_params_bf16, ref.n_params);
    TEST_CHECK(io_store_open(&st, a32) == LOSA_OK && io_store_read_stage_lost(st, &b, &lost) == LOSA_OK,
               "read into bf16: %s", core_errmsg());
    io_store_close(&st);
    TEST_CHECK(lost == 1, "read rounds with the same count: %lld", (long long)lost);
    TEST_CHECK(!memcmp(b.params_bf16, ref.params_bf16, ref.n_params_bf16 * 2) &&
               !memcmp(b.params, ref.params, ref.n_params * 4),
               "direct bf16 load == model_stage_to_bf16, bit for bit");
    /* write the bf16 stage; read it back both ways */
    TEST_CHECK(io_store_create(&st, a16) == LOSA_OK && io_store_write_config(st, &c, "t") == LOSA_OK &&
               io_store_write_stage(st, &b) == LOSA_OK && io_store_commit(&st) == LOSA_OK,
               "bf16 store: %s", core_errmsg());
    model_dtype d1 = MODEL_DTYPE_F32, d2 = MODEL_DTYPE_BF16, d3 = MODEL_DTYPE_F32;
    TEST_CHECK(io_store_open(&st, a16) == LOSA_OK && io_store_read_dtype(st, &d1) == LOSA_OK &&
               io_store_tensor_dtype(st, "/layers/0/w_down", &d3) == LOSA_OK &&
               io_store_tensor_dtype(st, "/embed", &d2) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(d1 == MODEL_DTYPE_BF16 && d3 == MODEL_DTYPE_BF16 && d2 == MODEL_DTYPE_F32,
               "root dtype bf16, maps bf16, embed fp32: %d %d %d", d1, d3, d2);
    model_stage w32, w16;
    TEST_CHECK(model_stage_build(&w32, &c, 0, 1) == LOSA_OK && io_store_read_stage(st, &w32) == LOSA_OK,
               "fp32 stage reads the bf16 store: %s", core_errmsg());
    TEST_CHECK(model_stage_build_dtype(&w16, &c, 0, 1, NULL, MODEL_DTYPE_BF16) == LOSA_OK &&
               io_store_read_stage_lost(st, &w16, &lost) == LOSA_OK && lost == 0,
               "bf16 stage reads the bf16 store: %s", core_errmsg());
    io_store_close(&st);
    TEST_CHECK(!memcmp(w16.params_bf16, ref.params_bf16, ref.n_params_bf16 * 2),
               "bf16 maps come back as written");
    int ok = 1;
    const uint16_t *q = ref.params_bf16;
    for (int l = 0; l < c.n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&c, (model_map)m, &o, &i);
            for (int64_t k = 0; k < (int64_t)o * i; k++, q++) {
                uint32_t u = (uint32_t)*q << 16, v;
                memcpy(&v, &w32.layers[l].w[m][k], 4);
                ok &= u == v;
            }
        }
    TEST_CHECK(ok, "fp32 stage: every map weight is the exact widening of the bf16 bits");
    TEST_CHECK(w32.layers[2].w[MODEL_MAP_Q][5] == 0.0f && w32.layers[1].w[MODEL_MAP_UP][3] == 0.0f,
               "the zero and the lost value are zero");
    int64_t VD = (int64_t)c.vocab_size * c.dim;
    TEST_CHECK(same(w32.embed, full.embed, VD), "embedding stays fp32");
    int hok = b.head == NULL && b.head_bf16 && w16.head_bf16 && ref.head_bf16 &&
              !memcmp(w16.head_bf16, b.head_bf16, (size_t)VD * 2);
    for (int64_t k = 0; hok && k < VD; k++) {
        uint16_t want = kern_bf16_round(full.head[k]); /* tied: full.head == full.embed */
        hok = b.head_bf16[k] == want && (tie || w32.head[k] == kern_bf16_value(want));
    }
    TEST_CHECK(hok, "head held in bf16: bf16(input head) bit for bit, written and read back "
               "(tie %d)", tie);
    if (!tie) {
        model_dtype dh = MODEL_DTYPE_F32;
        TEST_CHECK(io_store_open(&st, a16) == LOSA_OK &&
                   io_store_tensor_dtype(st, "/head", &dh) == LOSA_OK && dh == MODEL_DTYPE_BF16,
                   "the head is written as a bf16 dataset");
        io_store_close(&st);
    }
    /* sizes: the allocation's blocks */
    size_t b32 = model_stage_bytes(&c, 0, 1, NULL), b16 = model_stage_bytes_dtype(&c, 0, 1, NULL, MODEL_DTYPE_BF16);
    size_t want = core_alloc_bytes(b.n_params, 4) + core_alloc_bytes(b.n_params_bf16, 2) +
                  core_alloc_bytes((size_t)c.n_layers, sizeof(model_layer));
    TEST_CHECK(b16 == want && b32 == core_alloc_bytes(full.n_params, 4) +
               core_alloc_bytes((size_t)c.n_layers, sizeof(model_layer)),
               "size functions = the blocks built: %zu vs %zu", b16, want);
    model_stage_free(&full);
    model_stage_free(&ref);
    model_stage_free(&b);
    model_stage_free(&w32);
    model_stage_free(&w16);
}

int main(void)
{
    core_log_quiet(1);
    const char *tt = getenv("LOSA_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_io", tt ? tt : "/tmp");
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", tmpdir);
    if (system(cmd) != 0) return 1;
    const char *data = getenv("LOSA_DATA");

    test_half();
    test_store_roundtrip(0);
    test_store_roundtrip(1);
    test_store_errors();
    test_generic_and_tokenizer();
    test_bf16_stage(0);
    test_bf16_stage(1);
    TEST_CHECK(data != NULL, "LOSA_DATA set");
    if (data) {
        test_import_minillama(data);
        test_import_stories(data);
    }
    return test_finish("test_io");
}
