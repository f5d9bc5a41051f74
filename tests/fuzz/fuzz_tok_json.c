/* Fuzz the tokenizer.json reader (src/tok/tok_load.c).  After a successful
 * load: encode short strings (ASCII, UTF-8, invalid UTF-8), check every id
 * is in the vocabulary, decode, and stream the pieces. */
#include "fuzz_util.h"
#include "tok.h"

void fuzz_tok_consume(const tok_tokenizer *t); /* shared with fuzz_tok_bin */

void fuzz_tok_consume(const tok_tokenizer *t)
{
    static const char *texts[] = {"Hello world", " a  b\n\nc ", "caf\xc3\xa9 \xe2\x96\x81x",
                                  "\xff\xfe\x80 broken \xe2\x96", ""};
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        int *ids = NULL;
        int64_t n = 0;
        int bos = t->bos_id >= 0, eos = t->eos_id >= 0 && k % 2;
        losa_status s = tok_encode(t, texts[k], strlen(texts[k]), bos, eos, &ids, &n);
        if (s != LOSA_OK) {
            /* only a missing byte fallback and unk may refuse a text */
            FUZZ_ASSERT(s == LOSA_ERR_ARG && !t->byte_fallback && t->unk_id < 0);
            continue;
        }
        for (int64_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < t->n_vocab);
        char *back = NULL;
        size_t len = 0;
        FUZZ_ASSERT(tok_decode(t, ids, n, &back, &len) == LOSA_OK);
        FUZZ_ASSERT(strlen(back) <= len);
        char buf[8];
        int prev = -1;
        for (int64_t i = 0; i < n; i++) {
            size_t pl;
            const char *p = tok_piece_text(t, prev, ids[i], buf, &pl);
            FUZZ_ASSERT(p != NULL);
            prev = ids[i];
        }
        free(back);
        free(ids);
    }
    int bad[2] = {-1, t->n_vocab};
    char *out;
    size_t len;
    FUZZ_ASSERT(tok_decode(t, bad, 1, &out, &len) == LOSA_ERR_ARG);
    FUZZ_ASSERT(tok_decode(t, bad + 1, 1, &out, &len) == LOSA_ERR_ARG);
}

#ifndef FUZZ_TOK_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    tok_tokenizer t;
    losa_status s = tok_load_hf_json_text(&t, "tokenizer.json", (const char *)data, size);
    if (s != LOSA_OK) {
        FUZZ_ASSERT(core_errmsg()[0] != '\0' && t.priv == NULL && t.blob == NULL);
        return 0;
    }
    FUZZ_ASSERT(t.n_vocab > 0 && t.priv != NULL);
    fuzz_tok_consume(&t);
    tok_free(&t);
    return 0;
}
#endif
