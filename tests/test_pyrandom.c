/* CPython-identical calibration draws (calib_pyrng, data.calib_sampler =
 * python).
 *  1. calib_pyrng against /usr/bin/python3's `random`, run now: for seeds 0,
 *     42, 2**32 + 5 and 123456789012, the sequences random.randint(a, b)
 *     over small and large ranges (up to 2**62, i.e. > 2**32, which takes
 *     two 32-bit words per draw and the rejection loop) and
 *     random.getrandbits(k) for k = 1..64, interleaved in one stream: every
 *     value equal.  Plus one pasted constant (random.seed(0);
 *     random.getrandbits(32) = 3626764237 in CPython 3.11).
 *  2. calib_sample_draw with the python sampler against
 *     tests/ref/get_c4_ref.py (the get_c4 / get_wikitext2 protocol written
 *     with CPython's random) over the same documents tokenized by losa with
 *     the stories260K tokenizer: the shipped C4 sample (JSONL) with
 *     BOS only and with BOS + EOS, seeds 0 and 4, and WikiText-2 test (one
 *     plain document): every window equal, token for token; and BOS + EOS
 *     documents end in EOS, so some windows differ from the BOS-only draw.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "test_util.h"

/* ---------------------------------------------------------------- 1 */

typedef struct {
    int bits; /* > 0: getrandbits(bits), else randint(a, b) */
    int64_t a, b;
} draw;

static const draw draws[] = {
    {0, 0, 9}, {0, 0, 999}, {0, 1, 6}, {0, -3, 3}, {0, 0, 4294967296LL},
    {0, 5, 1099511627779LL}, {0, 0, 4611686018427387904LL}, {0, 0, 0},
    {1, 0, 0}, {7, 0, 0}, {31, 0, 0}, {32, 0, 0}, {33, 0, 0}, {48, 0, 0}, {63, 0, 0},
    {64, 0, 0}, {0, 0, 999999}, {0, 17, 17 + 3000000000LL},
};
enum { NDRAW = sizeof draws / sizeof draws[0], ROUNDS = 60 };

static void check_rng_against_python(uint64_t seed)
{
    char script[4096];
    int n = snprintf(script, sizeof script,
                     "import random\nrandom.seed(%llu)\nD=[", (unsigned long long)seed);
    for (int i = 0; i < NDRAW; i++)
        n += snprintf(script + n, sizeof script - n, "(%d,%lld,%lld),", draws[i].bits,
                      (long long)draws[i].a, (long long)draws[i].b);
    n += snprintf(script + n, sizeof script - n,
                  "]\nfor _ in range(%d):\n"
                  "    for k,a,b in D:\n"
                  "        print(random.getrandbits(k) if k else random.randint(a,b))\n",
                  ROUNDS);
    char path[512], cmd[1024];
    snprintf(path, sizeof path, "%s/pyrandom_%llu.py",
             getenv("LOSA_TEST_TMP") ? getenv("LOSA_TEST_TMP") : "/tmp",
             (unsigned long long)seed);
    FILE *f = fopen(path, "w");
    TEST_CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s", path);
    FILE *p = popen(cmd, "r");
    TEST_CHECK(p != NULL, "cannot run %s", cmd);
    if (!p) return;
    calib_pyrng g;
    calib_pyrng_seed(&g, seed);
    int got = 0, bad = 0;
    char line[128];
    for (int r = 0; r < ROUNDS; r++)
        for (int i = 0; i < NDRAW; i++) {
            if (!fgets(line, sizeof line, p)) break;
            got++;
            if (draws[i].bits) {
                uint64_t py = strtoull(line, NULL, 10), c = calib_pyrng_getrandbits(&g, draws[i].bits);
                if (py != c && bad++ < 5)
                    fprintf(stderr, "seed %llu round %d getrandbits(%d): python %llu, C %llu\n",
                            (unsigned long long)seed, r, draws[i].bits, (unsigned long long)py,
                            (unsigned long long)c);
            } else {
                int64_t py = strtoll(line, NULL, 10), c = calib_pyrng_randint(&g, draws[i].a, draws[i].b);
                if (py != c && bad++ < 5)
                    fprintf(stderr, "seed %llu round %d randint(%lld, %lld): python %lld, C %lld\n",
                            (unsigned long long)seed, r, (long long)draws[i].a,
                            (long long)draws[i].b, (long long)py, (long long)c);
            }
        }
    int rc = pclose(p);
    TEST_CHECK(rc == 0 && got == ROUNDS * NDRAW, "python ran (rc %d) and gave %d of %d values",
               rc, got, ROUNDS * NDRAW);
    TEST_CHECK(bad == 0, "seed %llu: %d of %d draws differ from CPython", (unsigned long long)seed,
               bad, got);
    printf("seed %llu: %d draws equal to CPython's\n", (unsigned long long)seed, got - bad);
}

static void check_rng_constants(void)
{
    /* random.seed(0); random.getrandbits(32) (CPython, any platform) */
    calib_pyrng g;
    calib_pyrng_seed(&g, 0);
    uint32_t x = calib_pyrng_u32(&g);
    TEST_CHECK(x == 3626764237U, "seed 0 first word %u", x);
}

/* ---------------------------------------------------------------- 2 */

static int write_docs(const char *path, int **docs, const int64_t *dlen, int ndoc)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int32_t n = ndoc;
    fwrite(&n, 4, 1, f);
    for (int i = 0; i < ndoc; i++) {
        int32_t l = (int32_t)dlen[i];
        fwrite(&l, 4, 1, f);
        fwrite(docs[i], sizeof(int), (size_t)l, f);
    }
    return fclose(f);
}

/* windows of calib_sample_draw vs get_c4_ref.py; returns 1 if equal */
static int check_windows(const tok_tokenizer *tok, const char *corpus, const char *text,
                         size_t len, const char *mode, int N, int S, uint64_t seed, int bos,
                         int eos, int *win)
{
    calib_draw cd = {.sampler = CALIB_SAMPLER_PYTHON, .seed = seed, .bos = bos, .eos = eos};
    losa_status st = calib_sample_draw(tok, corpus, text, len, N, S, &cd, win);
    TEST_CHECK(st == LOSA_OK, "calib_sample_draw %s: %s", corpus, core_errmsg());
    if (st != LOSA_OK) return 0;
    int **docs, ndoc;
    int64_t *dlen;
    st = calib_docs_tokenize(tok, corpus, text, len, bos, eos, &docs, &dlen, &ndoc);
    TEST_CHECK(st == LOSA_OK, "tokenize %s", corpus);
    if (st != LOSA_OK) return 0;
    if (eos)
        for (int i = 0; i < ndoc; i++)
            TEST_CHECK(docs[i][dlen[i] - 1] == tok->eos_id, "document %d ends in EOS", i);
    char path[512], cmd[1200];
    snprintf(path, sizeof path, "%s/pyrandom_docs.bin",
             getenv("LOSA_TEST_TMP") ? getenv("LOSA_TEST_TMP") : "/tmp");
    TEST_CHECK(write_docs(path, docs, dlen, ndoc) == 0, "write %s", path);
    calib_docs_free(docs, dlen, ndoc);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/get_c4_ref.py %s %s %d %llu %d", path,
             mode, N, (unsigned long long)seed, S);
    FILE *p = popen(cmd, "r");
    if (!p) return 0;
    int64_t total = (int64_t)N * S, got = 0, diff = 0;
    long v;
    while (got < total && fscanf(p, "%ld", &v) == 1) {
        if (v != win[got] && diff++ < 3)
            fprintf(stderr, "%s seed %llu: window %lld token %lld: python %ld, C %d\n", corpus,
                    (unsigned long long)seed, (long long)(got / S), (long long)(got % S), v,
                    win[got]);
        got++;
    }
    int rc = pclose(p);
    TEST_CHECK(rc == 0 && got == total, "%s: get_c4_ref.py gave %lld of %lld ids (rc %d)", corpus,
               (long long)got, (long long)total, rc);
    TEST_CHECK(diff == 0, "%s seed %llu bos %d eos %d: %lld of %lld ids differ", corpus,
               (unsigned long long)seed, bos, eos, (long long)diff, (long long)total);
    printf("%s (%s) seed %llu bos %d eos %d: %d windows of %d equal to get_c4_ref.py\n", corpus,
           mode, (unsigned long long)seed, bos, eos, N, S);
    return diff == 0 && got == total;
}

static void check_calib_windows(void)
{
    const char *data = getenv("LOSA_DATA");
    TEST_CHECK(data != NULL, "LOSA_DATA set");
    if (!data) return;
    char tp[1024], c4[1024], wk[1024];
    snprintf(tp, sizeof tp, "%s/models/stories260K/tok512.bin", data);
    snprintf(c4, sizeof c4, "%s/text/c4/c4-train.00000-of-01024.first1000.jsonl", data);
    snprintf(wk, sizeof wk, "%s/text/wikitext2/wiki.test.raw", data);
    tok_tokenizer tok;
    TEST_CHECK(tok_load_llama2c(&tok, tp, 512) == LOSA_OK, "%s", core_errmsg());
    char *text = NULL;
    size_t len = 0;
    TEST_CHECK(core_read_file(c4, &text, &len) == LOSA_OK, "%s", core_errmsg());
    enum { N = 64, S = 512 };
    int *w0 = malloc(sizeof(int) * N * S), *w1 = malloc(sizeof(int) * N * S);
    check_windows(&tok, c4, text, len, "c4", N, S, 0, 1, 0, w0);
    check_windows(&tok, c4, text, len, "c4", N, S, 4, 1, 0, w0);
    check_windows(&tok, c4, text, len, "c4", N, S, 4, 1, 1, w1);
    /* with EOS appended every document is one token longer: the draws
     * (and so the windows) must not all coincide with the BOS-only ones */
    TEST_CHECK(memcmp(w0, w1, sizeof(int) * N * S) != 0, "calib_eos changes the windows");
    /* the losa sampler draws other windows from the same documents */
    calib_draw cl;
    calib_draw_default(&cl, 4);
    TEST_CHECK(calib_sample_draw(&tok, c4, text, len, N, S, &cl, w1) == LOSA_OK, "losa sampler");
    TEST_CHECK(memcmp(w0, w1, sizeof(int) * N * S) != 0, "losa and python samplers differ");
    free(text);
    TEST_CHECK(core_read_file(wk, &text, &len) == LOSA_OK, "%s", core_errmsg());
    check_windows(&tok, wk, text, len, "wikitext2", 16, 128, 42, 1, 0, w0);
    free(text);
    free(w0);
    free(w1);
    tok_free(&tok);
}

int main(void)
{
    check_rng_constants();
    const uint64_t seeds[] = {0, 42, 4294967301ULL /* 2**32 + 5 */, 123456789012ULL};
    for (int i = 0; i < 4; i++) check_rng_against_python(seeds[i]);
    check_calib_windows();
    return test_finish("test_pyrandom");
}
