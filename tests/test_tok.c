/* test_tok: tokenizer against independent references.
 *
 * 1. The whole WikiText-2 test string, encoded as ONE sequence, with the
 *    Llama-2 tokenizer.json (ranked merges) and the llama2.c tokenizer.bin
 *    (scores), must equal the ids of the official SentencePiece library
 *    (tests/ref/sp_ids.py, run here at test time), and so must 15 edge cases.
 * 2. decode(encode(x)) == x on the whole file and the edge cases; streaming
 *    tok_piece_text() gives the same bytes.
 * 3. stories260K tok512.bin against the naive Python score-BPE in sp_ids.py.
 * 4. A hand-made tokenizer.json (single Replace normalizer, [a, b] merges, no
 *    byte fallback) with hand-derived ids; rebuilding from the flat fields.
 * 5. Bad input: missing file, truncated tokenizer.bin, malformed JSON,
 *    WordPiece and ByteLevel tokenizer.json: right status, file in message.
 */
#include "tok.h"
#include "test_util.h"

#include <stdint.h>
#include <string.h>

static char data_dir[512], tmp_dir[512];

typedef struct {
    uint32_t tag, flags;
    char *text;
    size_t len;
    int32_t *ids;
    int64_t n;
} ref_case;

static int ref_read(const char *path, ref_case **cases_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char magic[4];
    uint32_t ver, nc;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "TOKF", 4) || fread(&ver, 4, 1, f) != 1 ||
        ver != 1 || fread(&nc, 4, 1, f) != 1) {
        fclose(f);
        return -1;
    }
    ref_case *c = calloc(nc, sizeof *c);
    for (uint32_t i = 0; i < nc; i++) {
        uint64_t tl, n;
        if (fread(&c[i].tag, 4, 1, f) != 1 || fread(&c[i].flags, 4, 1, f) != 1 ||
            fread(&tl, 8, 1, f) != 1) break;
        c[i].text = malloc(tl + 1);
        if (fread(c[i].text, 1, tl, f) != tl || fread(&n, 8, 1, f) != 1) break;
        c[i].text[tl] = 0;
        c[i].len = tl;
        c[i].ids = malloc((n + 1) * 4);
        if (fread(c[i].ids, 4, n, f) != n) break;
        c[i].n = (int64_t)n;
    }
    fclose(f);
    *cases_out = c;
    return (int)nc;
}

/* Mismatching positions (plus the length difference). */
static int64_t count_mismatch(const int *a, int64_t na, const int32_t *b, int64_t nb,
                              int64_t *first)
{
    int64_t m = 0, n = na < nb ? na : nb;
    *first = -1;
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) {
            if (*first < 0) *first = i;
            m++;
        }
    if (na != nb && *first < 0) *first = n;
    return m + (na > nb ? na - nb : nb - na);
}

static void check_roundtrip(const tok_tokenizer *t, const char *text, size_t len, const char *what)
{
    int *ids;
    int64_t n;
    losa_status st = tok_encode(t, text, len, 1, 0, &ids, &n);
    TEST_CHECK(st == LOSA_OK, "%s: encode: %s", what, core_errmsg());
    if (st != LOSA_OK) return;
    char *back;
    size_t blen;
    st = tok_decode(t, ids, n, &back, &blen);
    TEST_CHECK(st == LOSA_OK && blen == len && memcmp(back, text, len) == 0,
               "%s: decode(encode(x)) != x (%zu vs %zu bytes)", what, blen, len);
    /* streaming, as generation does it */
    char *s = malloc(len + 64), buf[8];
    size_t k = 0;
    for (int64_t i = 1; i < n && k <= len; i++) {
        size_t pl;
        const char *p = tok_piece_text(t, ids[i - 1], ids[i], buf, &pl);
        if (k + pl > len + 32) break;
        memcpy(s + k, p, pl);
        k += pl;
    }
    TEST_CHECK(k == len && memcmp(s, text, len) == 0, "%s: tok_piece_text stream differs", what);
    free(s);
    free(back);
    free(ids);
}

static void check_case(const tok_tokenizer *t, const ref_case *c, const char *what, int report)
{
    int *ids;
    int64_t n;
    double t0 = core_time();
    losa_status st = tok_encode(t, c->text, c->len, 0, 0, &ids, &n);
    double dt = core_time() - t0;
    TEST_CHECK(st == LOSA_OK, "%s: %s", what, core_errmsg());
    if (st != LOSA_OK) return;
    int64_t first, mis = count_mismatch(ids, n, c->ids, c->n, &first);
    TEST_CHECK(mis == 0, "%s: %lld ids vs %lld expected, %lld mismatches, first at %lld", what,
               (long long)n, (long long)c->n, (long long)mis, (long long)first);
    if (report)
        printf("%s: %zu bytes -> %lld ids (reference %lld), %lld mismatches, encode %.3f s "
               "(%.2f MB/s)\n", what, c->len, (long long)n, (long long)c->n, (long long)mis, dt,
               c->len / dt / 1e6);
    free(ids);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    TEST_CHECK(f && fwrite(data, 1, n, f) == n, "cannot write %s", path);
    if (f) fclose(f);
}

static void check_bad(losa_status got, losa_status want, const char *file, const char *key,
                      const char *what)
{
    const char *msg = core_errmsg();
    TEST_CHECK(got == want, "%s: status %s, expected %s (%s)", what, losa_status_str(got),
               losa_status_str(want), msg);
    TEST_CHECK(strstr(msg, file) != NULL, "%s: message lacks the file name: %s", what, msg);
    if (key) TEST_CHECK(strstr(msg, key) != NULL, "%s: message lacks '%s': %s", what, key, msg);
    printf("  %-22s -> %s: %s\n", what, losa_status_str(got), msg);
}

static void test_hand_made(void)
{
    /* No dummy prefix (single Replace), merges as pairs, no byte fallback. */
    const char *json =
        "{\"added_tokens\":[{\"id\":1,\"content\":\"<s>\"},{\"id\":2,\"content\":\"</s>\"}],"
        "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
        "\"content\":\"\u2581\"},\"pre_tokenizer\":null,"
        "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":false,"
        "\"vocab\":{\"<unk>\":0,\"\u2581\":3,\"a\":4,\"b\":5,\"\u2581a\":6,\"ab\":7,"
        "\"\u2581ab\":8},"
        "\"merges\":[[\"\u2581\",\"a\"],[\"a\",\"b\"],[\"\u2581a\",\"b\"]]}}";
    char path[700];
    snprintf(path, sizeof path, "%s/tok_hand.json", tmp_dir);
    write_file(path, json, strlen(json));
    tok_tokenizer t;
    losa_status st = tok_load_hf_json(&t, path);
    TEST_CHECK(st == LOSA_OK, "hand-made json: %s", core_errmsg());
    if (st != LOSA_OK) return;
    TEST_CHECK(t.n_vocab == 9 && t.bos_id == 1 && t.eos_id == 2 && t.unk_id == 0 &&
                   !t.byte_fallback && !t.add_dummy_prefix && t.n_merges == 3,
               "hand-made json fields");
    struct { const char *text; int n; int ids[8]; } cases[] = {
        {"ab a", 2, {7, 6}},         /* "▁a" (rank 0) before "ab" (rank 1) */
        {"ab xa", 4, {7, 3, 0, 4}},  /* x unknown -> unk */
        {"xyab", 2, {0, 7}},         /* unknown run fused into one unk */
        {"aab", 2, {4, 7}},
        {" ab", 1, {8}},             /* no dummy prefix: "▁ab": ▁a (rank 0), ▁ab (rank 2) */
        {"  ab", 2, {3, 8}},         /* "▁▁ab": ▁a at 1 (rank 0), then ▁ab (rank 2) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int *ids;
        int64_t n;
        st = tok_encode(&t, cases[i].text, strlen(cases[i].text), 1, 1, &ids, &n);
        int ok = st == LOSA_OK && n == cases[i].n + 2 && ids[0] == 1 && ids[n - 1] == 2;
        for (int j = 0; ok && j < cases[i].n; j++) ok = ids[j + 1] == cases[i].ids[j];
        TEST_CHECK(ok, "hand-made json: encode \"%s\"", cases[i].text);
        if (st == LOSA_OK) free(ids);
    }
    int ids[3] = {1, 7, 6};
    char *back;
    size_t blen;
    st = tok_decode(&t, ids, 3, &back, &blen);
    TEST_CHECK(st == LOSA_OK && blen == 4 && memcmp(back, "ab a", 4) == 0,
               "hand-made json: decode without dummy prefix keeps text");
    if (st == LOSA_OK) free(back);
    tok_free(&t);
}

/* A copy of the flat fields only, as the io module fills them from a store. */
static void test_rebuild(const tok_tokenizer *src, const ref_case *c, const char *what)
{
    tok_tokenizer t = *src;
    int64_t nb = src->offsets[src->n_vocab];
    t.priv = NULL;
    t.blob = malloc((size_t)nb);
    memcpy(t.blob, src->blob, (size_t)nb);
    t.offsets = malloc(((size_t)t.n_vocab + 1) * 8);
    memcpy(t.offsets, src->offsets, ((size_t)t.n_vocab + 1) * 8);
    t.scores = malloc((size_t)t.n_vocab * 4);
    memcpy(t.scores, src->scores, (size_t)t.n_vocab * 4);
    t.merges = NULL;
    if (t.n_merges) {
        t.merges = malloc((size_t)t.n_merges * 8);
        memcpy(t.merges, src->merges, (size_t)t.n_merges * 8);
    }
    losa_status st = tok_build(&t);
    TEST_CHECK(st == LOSA_OK, "%s: tok_build from flat fields: %s", what, core_errmsg());
    if (st == LOSA_OK) check_case(&t, c, what, 0);
    tok_free(&t);
}

static void test_bad_input(const char *bin512)
{
    tok_tokenizer t;
    char path[700];
    printf("bad input:\n");
    snprintf(path, sizeof path, "%s/no_such_tokenizer.json", tmp_dir);
    check_bad(tok_load_hf_json(&t, path), LOSA_ERR_IO, path, NULL, "missing json");
    snprintf(path, sizeof path, "%s/no_such_tokenizer.bin", tmp_dir);
    check_bad(tok_load_llama2c(&t, path, 512), LOSA_ERR_IO, path, NULL, "missing bin");

    /* truncated tokenizer.bin: the real tok512.bin cut in the middle */
    char *data;
    size_t size;
    TEST_CHECK(core_read_file(bin512, &data, &size) == LOSA_OK, "read %s", bin512);
    snprintf(path, sizeof path, "%s/tok512_truncated.bin", tmp_dir);
    write_file(path, data, size / 2);
    check_bad(tok_load_llama2c(&t, path, 512), LOSA_ERR_IO, path, "truncated", "truncated bin");
    write_file(path, data, 2);
    check_bad(tok_load_llama2c(&t, path, 512), LOSA_ERR_IO, path, "truncated", "2-byte bin");
    check_bad(tok_load_llama2c(&t, bin512, 500), LOSA_ERR_FORMAT, bin512, "vocab_size",
              "vocab_size too small");
    free(data);

    snprintf(path, sizeof path, "%s/tok_malformed.json", tmp_dir);
    const char *bad = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,, }";
    write_file(path, bad, strlen(bad));
    check_bad(tok_load_hf_json(&t, path), LOSA_ERR_FORMAT, path, "JSON", "malformed json");

    snprintf(path, sizeof path, "%s/tok_wordpiece.json", tmp_dir);
    const char *wp = "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
                     "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\","
                     "\"vocab\":{\"[UNK]\":0,\"a\":1,\"##b\":2}}}";
    write_file(path, wp, strlen(wp));
    check_bad(tok_load_hf_json(&t, path), LOSA_ERR_UNSUPPORTED, path, "model.type", "WordPiece");

    snprintf(path, sizeof path, "%s/tok_bytelevel.json", tmp_dir);
    const char *bl = "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\","
                     "\"pretokenizers\":[{\"type\":\"Split\"},{\"type\":\"ByteLevel\"}]},"
                     "\"model\":{\"type\":\"BPE\",\"byte_fallback\":false,"
                     "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}}";
    write_file(path, bl, strlen(bl));
    check_bad(tok_load_hf_json(&t, path), LOSA_ERR_UNSUPPORTED, path, "pre_tokenizer",
              "ByteLevel (LLaMA-3)");
    const char *bl2 = "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    write_file(path, bl2, strlen(bl2));
    check_bad(tok_load_hf_json(&t, path), LOSA_ERR_UNSUPPORTED, path, "ByteLevel",
              "ByteLevel (GPT-2)");

    snprintf(path, sizeof path, "%s/tok_badmerge.json", tmp_dir);
    const char *bm = "{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
                     "\"content\":\"\u2581\"},"
                     "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
                     "\"merges\":[\"a c\"]}}";
    write_file(path, bm, strlen(bm));
    check_bad(tok_load_hf_json(&t, path), LOSA_ERR_FORMAT, path, "model.merges[0]",
              "merge not in vocab");
}

int main(void)
{
    const char *d = getenv("LOSA_DATA"), *tmp = getenv("LOSA_TEST_TMP");
    snprintf(data_dir, sizeof data_dir, "%s", d ? d : "../shared/data");
    snprintf(tmp_dir, sizeof tmp_dir, "%s", tmp ? tmp : "/tmp");
    char json[700], bin[700], bin512[700], ref[700], cmd[2200];
    snprintf(json, sizeof json, "%s/models/llama2-tokenizer/tokenizer.json", data_dir);
    snprintf(bin, sizeof bin, "%s/models/llama2-tokenizer/tokenizer.bin", data_dir);
    snprintf(bin512, sizeof bin512, "%s/models/stories260K/tok512.bin", data_dir);
    snprintf(ref, sizeof ref, "%s/tok_ref.bin", tmp_dir);

    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/sp_ids.py '%s' '%s'", data_dir, ref);
    TEST_CHECK(system(cmd) == 0, "reference script failed: %s", cmd);
    ref_case *cases = NULL;
    int nc = ref_read(ref, &cases);
    TEST_CHECK(nc > 0, "cannot read %s", ref);
    if (nc <= 0) return test_finish("test_tok");
    TEST_CHECK(cases[0].n == 341468, "sentencepiece gave %lld ids for WikiText-2 test "
               "(expected 341468)", (long long)cases[0].n);

    tok_tokenizer tj, tb, t512;
    double t0 = core_time();
    losa_status sj = tok_load_hf_json(&tj, json);
    double tload_json = core_time() - t0;
    t0 = core_time();
    losa_status sb = tok_load_llama2c(&tb, bin, 32000);
    double tload_bin = core_time() - t0;
    losa_status s512 = tok_load_llama2c(&t512, bin512, 512);
    TEST_CHECK(sj == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(sb == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(s512 == LOSA_OK, "%s", core_errmsg());
    if (sj || sb || s512) return test_finish("test_tok");
    printf("loaded tokenizer.json in %.3f s (V %d, %d merges), tokenizer.bin in %.3f s (V %d)\n",
           tload_json, tj.n_vocab, tj.n_merges, tload_bin, tb.n_vocab);
    TEST_CHECK(tj.n_vocab == 32000 && tj.bos_id == 1 && tj.eos_id == 2 && tj.unk_id == 0 &&
                   tj.byte_fallback && tj.add_dummy_prefix && tj.kind == TOK_KIND_MERGES,
               "tokenizer.json fields");
    TEST_CHECK(tb.n_vocab == 32000 && tb.byte_fallback && tb.kind == TOK_KIND_SCORES,
               "tokenizer.bin fields");
    TEST_CHECK(t512.n_vocab == 512 && t512.byte_fallback, "tok512.bin fields");

    for (int i = 0; i < nc; i++) {
        ref_case *c = &cases[i];
        char what[64];
        if (c->tag == 1) {
            snprintf(what, sizeof what, i == 0 ? "wikitext2 json" : "edge %d json", i);
            check_case(&tj, c, what, i == 0);
            snprintf(what, sizeof what, i == 0 ? "wikitext2 llama2c" : "edge %d llama2c", i);
            check_case(&tb, c, what, i == 0);
            if (c->flags & 1) {
                check_roundtrip(&tj, c->text, c->len, what);
                check_roundtrip(&tb, c->text, c->len, what);
            }
        } else {
            snprintf(what, sizeof what, "tok512 case %d", i);
            check_case(&t512, c, what, 1);
            if (c->flags & 1) check_roundtrip(&t512, c->text, c->len, what);
        }
    }
    /* bytes that are not UTF-8 survive through byte fallback */
    const char raw[] = "\xff\xfe abc \xc3 \xe6\x97 end\x80";
    check_roundtrip(&tj, raw, sizeof raw - 1, "invalid utf-8 json");
    check_roundtrip(&tb, raw, sizeof raw - 1, "invalid utf-8 llama2c");
    check_roundtrip(&t512, raw, sizeof raw - 1, "invalid utf-8 tok512");

    /* empty text: only the requested specials */
    int *ids;
    int64_t n;
    TEST_CHECK(tok_encode(&tj, "", 0, 1, 1, &ids, &n) == LOSA_OK && n == 2 && ids[0] == 1 &&
                   ids[1] == 2, "empty text with bos+eos");
    free(ids);

    test_rebuild(&tj, &cases[1 + 14], "rebuilt json");
    test_rebuild(&tb, &cases[1 + 14], "rebuilt llama2c");
    test_hand_made();
    test_bad_input(bin512);

    tok_free(&tj);
    tok_free(&tb);
    tok_free(&t512);
    for (int i = 0; i < nc; i++) {
        free(cases[i].text);
        free(cases[i].ids);
    }
    free(cases);
    return test_finish("test_tok");
}
