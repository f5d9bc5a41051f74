/* Regression tests for the inputs in tests/fuzz/regress/ (each crashed or
 * misbehaved before its fix; see the README there).  Every input goes to the
 * same entry point as its fuzz harness and the outcome is asserted: a clean
 * error with the expected status and message, or - for the one valid input -
 * a store whose tensors equal the file's values.  Under `make test-asan`
 * the old heap/stack overflows would abort this test. */
#include "core.h"
#include "deck.h"
#include "io.h"
#include "tok.h"
#include "test_util.h"
#include "../src/io/io_internal.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *slurp(const char *rel, size_t *n)
{
    char *d = NULL;
    if (core_read_file(rel, &d, n) != LOSA_OK) {
        fprintf(stderr, "cannot read %s (run from the repo root)\n", rel);
        exit(1);
    }
    return d;
}

/* hidden_dim 4 < dim 8, vocab 3, unshared classifier: imports, and w_down
 * (D,F) and the permuted wq rows equal the file's floats. */
static void test_l2c_hidden_lt_dim(void)
{
    const char *ck = "tests/fuzz/regress/llama2c/hidden_lt_dim.bin";
    const char *tt = getenv("LOSA_TEST_TMP");
    char dir[3000], tokp[3100], out[3100];
    snprintf(dir, sizeof dir, "%s/fuzz_regress", tt && *tt ? tt : "/tmp");
    mkdir(dir, 0755);
    snprintf(tokp, sizeof tokp, "%s/tok3.bin", dir);
    snprintf(out, sizeof out, "%s/hidden_lt_dim.h5", dir);
    FILE *f = fopen(tokp, "wb");
    int32_t maxlen = 8;
    fwrite(&maxlen, 4, 1, f);
    const char *p[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) {
        float sc = 0;
        int32_t n = (int32_t)strlen(p[i]);
        fwrite(&sc, 4, 1, f);
        fwrite(&n, 4, 1, f);
        fwrite(p[i], 1, (size_t)n, f);
    }
    fclose(f);
    unlink(out);
    losa_status s = io_import_llama2c(ck, tokp, out);
    TEST_CHECK(s == LOSA_OK, "import: %s", core_errmsg());
    if (s != LOSA_OK) return;
    size_t n;
    char *raw = slurp(ck, &n);
    const float *w = (const float *)(raw + 28);
    enum { D = 8, F = 4, V = 3, hd = 4, kvD = 4 };
    /* float offsets: emb V*D, rms_att D, wq D*D, wk kvD*D, wv, wo D*D,
     * rms_ffn D, w1 F*D, w2 D*F, ... */
    int64_t o_wq = V * D + D, o_w2 = o_wq + D * D + 2 * kvD * D + D * D + D + F * D;
    io_store *st;
    TEST_CHECK(io_store_open(&st, out) == LOSA_OK, "%s", core_errmsg());
    model_config c;
    TEST_CHECK(io_store_read_config(st, &c) == LOSA_OK && c.dim == D && c.hidden_dim == F &&
                   c.vocab_size == V && !c.tie_embeddings,
               "config dim %d hidden %d vocab %d", c.dim, c.hidden_dim, c.vocab_size);
    float x[D * D];
    int64_t sh[2] = {D, F};
    TEST_CHECK(io_store_read_tensor(st, "/layers/0/w_down", x, 2, sh) == LOSA_OK, "%s",
               core_errmsg());
    TEST_CHECK(memcmp(x, w + o_w2, sizeof(float) * D * F) == 0, "w_down equals the file's w2");
    int64_t sq[2] = {D, D};
    TEST_CHECK(io_store_read_tensor(st, "/layers/0/wq", x, 2, sq) == LOSA_OK, "%s",
               core_errmsg());
    int ok = 1; /* head h: new row i = old row 2i, new row i + hd/2 = old row 2i + 1 */
    for (int h = 0; h < D / hd; h++)
        for (int i = 0; i < hd / 2; i++)
            ok &= !memcmp(x + (h * hd + i) * D, w + o_wq + (h * hd + 2 * i) * D, D * 4) &&
                  !memcmp(x + (h * hd + i + hd / 2) * D, w + o_wq + (h * hd + 2 * i + 1) * D,
                          D * 4);
    TEST_CHECK(ok, "wq rows are the file's rows in rotate-half order");
    io_store_close(&st);
    free(raw);
    unlink(out);
    unlink(tokp);
}

static void test_l2c_huge_dims(void)
{
    size_t n;
    char *raw = slurp("tests/fuzz/regress/llama2c/huge_dims.bin", &n);
    int32_t h[7];
    memcpy(h, raw, sizeof h);
    model_config c;
    losa_status s = io_l2c_header_parse("huge_dims.bin", h, 1u << 20, &c);
    TEST_CHECK(s == LOSA_ERR_UNSUPPORTED && strstr(core_errmsg(), "dim = 1073741824"),
               "status %d: %s", s, core_errmsg());
    free(raw);
}

/* deck input: deck text, NUL, --set assignments separated by NULs. */
static losa_status deck_case(const char *rel, deck **dk, losa_status *set_status)
{
    size_t n;
    char *raw = slurp(rel, &n);
    losa_status s = deck_parse(dk, rel, raw);
    *set_status = LOSA_OK;
    for (size_t at = strlen(raw) + 1; s == LOSA_OK && at < n; at += strlen(raw + at) + 1) {
        losa_status ss = deck_set(*dk, raw + at);
        if (ss != LOSA_OK) *set_status = ss;
    }
    free(raw);
    return s;
}

static void test_deck_cases(void)
{
    deck *dk = NULL;
    losa_status ss;
    /* a 191-character value fits "store =<value>" but not the dumped
     * "store = <value>": refused at parse time */
    TEST_CHECK(deck_case("tests/fuzz/regress/deck/long_parsed_value", &dk, &ss) == LOSA_ERR_ARG &&
                   strstr(core_errmsg(), "limit of a deck line"),
               "long parsed value refused: %s", core_errmsg());
    deck_free(&dk);
    /* "store =;": the ';' opens a comment as it would once dumped, so the
     * value is empty and dump -> parse -> dump is stable */
    TEST_CHECK(deck_case("tests/fuzz/regress/deck/leading_semicolon", &dk, &ss) == LOSA_OK,
               "leading ';' deck parses: %s", core_errmsg());
    if (dk) {
        TEST_CHECK(!strcmp(deck_str(dk, "model.store"), ""), "';' value is a comment: '%s'",
                   deck_str(dk, "model.store"));
        char *d1 = deck_dump(dk, NULL, 0);
        deck *again = NULL;
        TEST_CHECK(deck_parse(&again, "dump", d1) == LOSA_OK, "dump parses");
        char *d2 = again ? deck_dump(again, NULL, 0) : NULL;
        TEST_CHECK(d2 && !strcmp(d1, d2), "dump stable across re-parse");
        free(d1);
        free(d2);
        deck_free(&again);
        deck_free(&dk);
    }
    TEST_CHECK(deck_case("tests/fuzz/regress/deck/long_set", &dk, &ss) == LOSA_OK &&
                   ss == LOSA_ERR_ARG && strstr(core_errmsg(), "limit of a deck line"),
               "3000-character --set value refused: %s", core_errmsg());
    TEST_CHECK(dk && !deck_is_set(dk, "data.calib"), "the refused value left the deck as it was");
    /* the longest value allowed (198 = "calib = " + 190) dumps and reads back */
    char v[300] = "data.calib=";
    memset(v + 11, 'y', 190);
    v[201] = 0;
    TEST_CHECK(dk && deck_set(dk, v) == LOSA_OK, "190-character value: %s", core_errmsg());
    if (dk) {
        char *d = deck_dump(dk, NULL, 0);
        deck *again = NULL;
        TEST_CHECK(deck_parse(&again, "dump", d) == LOSA_OK &&
                       !strcmp(deck_str(again, "data.calib"), deck_str(dk, "data.calib")) &&
                       strlen(deck_str(again, "data.calib")) == 190,
                   "dump reads back: %s", core_errmsg());
        deck_free(&again);
        free(d);
        v[200] = 'y';
        v[201] = 'y';
        v[202] = 0;
        TEST_CHECK(deck_set(dk, v) == LOSA_ERR_ARG, "191 characters refused");
        deck_free(&dk);
    }
    char longline[400];
    snprintf(longline, sizeof longline, "[model]\nstore = %0250d\n", 0);
    TEST_CHECK(deck_parse(&dk, "long.ini", longline) == LOSA_ERR_ARG &&
                   strstr(core_errmsg(), "long.ini:2: line longer than 198"),
               "a 258-character deck line: %s", core_errmsg());
    TEST_CHECK(deck_case("tests/fuzz/regress/deck/set_newline", &dk, &ss) == LOSA_OK &&
                   ss == LOSA_ERR_ARG && strstr(core_errmsg(), "control character 0x0a"),
               "newline in --set refused: %s", core_errmsg());
    TEST_CHECK(dk && !deck_is_set(dk, "data.calib"), "the refused value left the deck as it was");
    deck_free(&dk);
    TEST_CHECK(deck_case("tests/fuzz/regress/deck/set_comment", &dk, &ss) == LOSA_OK &&
                   ss == LOSA_ERR_ARG && strstr(core_errmsg(), "starts a comment"),
               "' #' in --set refused: %s", core_errmsg());
    deck_free(&dk);
    /* allowed neighbours: '#' inside a word, trailing blanks trimmed */
    TEST_CHECK(deck_parse(&dk, "x", "[model]\nstore = a\n") == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(deck_set(dk, "data.calib=c#4.jsonl  ") == LOSA_OK &&
                   !strcmp(deck_str(dk, "data.calib"), "c#4.jsonl"),
               "'%s'", deck_str(dk, "data.calib"));
    deck_free(&dk);
}

static void test_tok_huge_id(void)
{
    size_t n;
    char *raw = slurp("tests/fuzz/regress/tok_json/huge_id", &n);
    tok_tokenizer t;
    losa_status s = tok_load_hf_json_text(&t, "huge_id", raw, n);
    TEST_CHECK(s == LOSA_ERR_FORMAT && strstr(core_errmsg(), "id 99999999 but only 1 entries"),
               "status %d: %s", s, core_errmsg());
    free(raw);
}

static void test_hf_many_layers(void)
{
    size_t n;
    char *raw = slurp("tests/fuzz/regress/hf_config/many_layers", &n);
    model_config c;
    losa_status s = io_hf_config_parse("many_layers", raw, n, &c);
    TEST_CHECK(s == LOSA_ERR_UNSUPPORTED && strstr(core_errmsg(), "n_layers = 1073741824"),
               "status %d: %s", s, core_errmsg());
    free(raw);
}

int main(void)
{
    core_log_quiet(1);
    test_l2c_hidden_lt_dim();
    test_l2c_huge_dims();
    test_deck_cases();
    test_tok_huge_id();
    test_hf_many_layers();
    return test_finish("test_fuzz_regress");
}
