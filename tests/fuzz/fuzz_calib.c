/* Fuzz the calibration reader calib_sample (src/calib/calib.c) with the real
 * stories260K tokenizer (tok512.bin from $LOSA_DATA).  Input: byte 0 picks
 * JSONL (odd) or plain text, byte 1 the window count N (0..7), byte 2 the
 * window length S (1..32), then the corpus.  On success every token of the
 * (N, S) windows is a vocabulary id, and nothing is written past them; on
 * failure the status is a format or argument error with a message. */
#include "fuzz_util.h"
#include "calib.h"
#include "tok.h"

static tok_tokenizer *fuzz_tokenizer(void)
{
    static tok_tokenizer t;
    static int loaded;
    if (!loaded) {
        char path[4096];
        snprintf(path, sizeof path, "%s/models/stories260K/tok512.bin", fuzz_data_dir());
        if (tok_load_llama2c(&t, path, 512) != LOSA_OK) {
            fprintf(stderr, "fuzz_calib: %s (set LOSA_DATA)\n", core_errmsg());
            abort();
        }
        loaded = 1;
    }
    return &t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    const tok_tokenizer *t = fuzz_tokenizer();
    if (size < 3) return 0;
    int jsonl = data[0] & 1, N = data[1] % 8, S = 1 + data[2] % 32;
    int *tokens = malloc(sizeof(int) * (size_t)(N * S + 1));
    tokens[N * S] = 0x5a5a5a5a; /* guard */
    losa_status s = calib_sample(t, jsonl ? "fuzz.jsonl" : "fuzz.txt", (const char *)data + 3,
                                 size - 3, N, S, 1234, tokens);
    if (s != LOSA_OK) {
        FUZZ_ASSERT(s == LOSA_ERR_FORMAT || s == LOSA_ERR_ARG);
        FUZZ_ASSERT(core_errmsg()[0] != '\0');
    } else {
        for (int i = 0; i < N * S; i++) FUZZ_ASSERT(tokens[i] >= 0 && tokens[i] < t->n_vocab);
    }
    FUZZ_ASSERT(tokens[N * S] == 0x5a5a5a5a);
    free(tokens);
    return 0;
}
