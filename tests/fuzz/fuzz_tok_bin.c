/* Fuzz the llama2.c tokenizer.bin reader (src/tok/tok_load.c).  Input: a
 * 2-byte little-endian vocab_size (0 = all entries; what the checkpoint
 * header would ask for), then the file.  After a successful load the
 * tokenizer encodes, decodes and streams as in fuzz_tok_json. */
#include "fuzz_util.h"
#include "tok.h"

#define FUZZ_TOK_NO_MAIN
#include "fuzz_tok_json.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    if (size < 2) return 0;
    int vocab = data[0] | data[1] << 8;
    tok_tokenizer t;
    losa_status s = tok_load_llama2c_mem(&t, "tokenizer.bin", (const char *)data + 2, size - 2,
                                         vocab);
    if (s != LOSA_OK) {
        FUZZ_ASSERT(core_errmsg()[0] != '\0' && t.priv == NULL && t.blob == NULL);
        return 0;
    }
    FUZZ_ASSERT(t.n_vocab >= 3 && (vocab == 0 || t.n_vocab == vocab));
    fuzz_tok_consume(&t);
    tok_free(&t);
    return 0;
}
