/* Fuzz the llama2.c checkpoint import (src/io/import_llama2c.c).  The input
 * is the checkpoint file (7 int32 header + fp32 arrays).  A matching
 * tokenizer.bin with |vocab_size| entries is made on the fly, and the whole
 * import runs into a store under $TMPDIR (default /dev/shm): a failure must
 * leave neither the output nor its temporary; a success must give a store
 * whose config equals the header and whose tensors read back. */
#include "fuzz_util.h"
#include "io.h"
#include "io/io_internal.h"

#include <sys/stat.h>

static void make_tokenizer(fuzz_file *f, int V)
{
    size_t cap = 4 + (size_t)V * 24, n = 0;
    char *b = malloc(cap);
    int32_t maxlen = 16;
    memcpy(b, &maxlen, 4);
    n = 4;
    for (int i = 0; i < V; i++) {
        char piece[16];
        int32_t len = i == 0 ? snprintf(piece, sizeof piece, "<unk>")
                    : i == 1 ? snprintf(piece, sizeof piece, "<s>")
                    : i == 2 ? snprintf(piece, sizeof piece, "</s>")
                             : snprintf(piece, sizeof piece, "t%d", i);
        float score = -(float)i;
        memcpy(b + n, &score, 4);
        memcpy(b + n + 4, &len, 4);
        memcpy(b + n + 8, piece, (size_t)len);
        n += 8 + (size_t)len;
    }
    fuzz_file_set(f, b, n);
    free(b);
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file ckpt, tokf;
    static char out[512], tmp[600];
    fuzz_quiet();
    fuzz_file_init(&ckpt, "fuzz_ckpt.bin");
    fuzz_file_init(&tokf, "fuzz_tok.bin");
    if (!out[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(out, sizeof out, "%s/losa-fuzz-l2c-%d.h5", dir && *dir ? dir : "/dev/shm",
                 (int)getpid());
        core_tmpname(tmp, sizeof tmp, out);
    }
    fuzz_file_set(&ckpt, data, size);
    int32_t h[7] = {0};
    memcpy(h, data, size < sizeof h ? size : sizeof h);
    int V = h[5] == INT32_MIN ? 0 : h[5] < 0 ? -h[5] : h[5];
    make_tokenizer(&tokf, V >= 3 && V <= 4096 ? V : 3);

    model_config c;
    losa_status hs = size >= sizeof h ? io_l2c_header_parse("ckpt", h, size, &c) : LOSA_ERR_FORMAT;
    losa_status s = io_import_llama2c(ckpt.path, tokf.path, out);
    if (s != LOSA_OK) {
        FUZZ_ASSERT(core_errmsg()[0] != '\0');
        FUZZ_ASSERT(!exists(out) && !exists(tmp));
        /* a valid header with a fitting tokenizer fails only on non-finite weights */
        if (hs == LOSA_OK && V >= 3 && V <= 4096) FUZZ_ASSERT(s == LOSA_ERR_NUMERIC);
        return 0;
    }
    FUZZ_ASSERT(hs == LOSA_OK && exists(out) && !exists(tmp));
    io_store *st = NULL;
    FUZZ_ASSERT(io_store_open(&st, out) == LOSA_OK);
    model_config r;
    FUZZ_ASSERT(io_store_read_config(st, &r) == LOSA_OK);
    FUZZ_ASSERT(r.dim == c.dim && r.hidden_dim == c.hidden_dim && r.n_layers == c.n_layers &&
                r.n_heads == c.n_heads && r.n_kv_heads == c.n_kv_heads &&
                r.vocab_size == c.vocab_size && r.tie_embeddings == c.tie_embeddings);
    model_stage stage;
    FUZZ_ASSERT(model_stage_build(&stage, &r, 0, 1) == LOSA_OK);
    FUZZ_ASSERT(io_store_read_stage(st, &stage) == LOSA_OK);
    tok_tokenizer t;
    FUZZ_ASSERT(io_store_read_tokenizer(st, &t) == LOSA_OK && t.n_vocab == V);
    tok_free(&t);
    model_stage_free(&stage);
    io_store_close(&st);
    unlink(out);
    return 0;
}
