/* Import a llama2.c legacy (version 0) checkpoint + tokenizer.bin.
 *
 * Layout: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size (negative: separate classifier), seq_len), then fp32 arrays
 * token_embedding (V,D), rms_att (L,D), wq (L,D,D), wk (L,kvD,D),
 * wv (L,kvD,D), wo (L,D,D), rms_ffn (L,D), w1 (L,F,D), w2 (L,D,F),
 * w3 (L,F,D), rms_final (D), freq_cis_real/imag (T, hd/2) each (unused),
 * [classifier (V,D)].  w1 = gate, w2 = down, w3 = up.
 *
 * llama2.c's RoPE rotates interleaved pairs (2i, 2i+1) of each head; ours
 * rotates (i, i + hd/2).  The rows of wq (and wk, per kv head) are permuted
 * so that new row i = old row 2i and new row i + hd/2 = old row 2i + 1: the
 * rotated pairs then land where rotate-half expects them, and q.k within a
 * head is unchanged because q and k get the same permutation. */
#include "io.h"
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Permute the rows of w (n_heads*hd, in) from interleaved to rotate-half. */
static void l2c_permute_rows(float *w, float *tmp, int n_heads, int hd, int in)
{
    for (int h = 0; h < n_heads; h++) {
        float *blk = w + (int64_t)h * hd * in; /* (hd, in) */
        memcpy(tmp, blk, (size_t)hd * in * sizeof(float));
        for (int i = 0; i < hd / 2; i++) {
            memcpy(blk + (int64_t)i * in, tmp + (int64_t)(2 * i) * in,
                   (size_t)in * sizeof(float));
            memcpy(blk + (int64_t)(i + hd / 2) * in, tmp + (int64_t)(2 * i + 1) * in,
                   (size_t)in * sizeof(float));
        }
    }
}

losa_status io_import_llama2c(const char *ckpt, const char *tokenizer_bin,
                              const char *out_path)
{
    int fd = open(ckpt, O_RDONLY);
    if (fd < 0) return core_err(LOSA_ERR_IO, "%s: cannot open: %s", ckpt, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return core_err(LOSA_ERR_IO, "%s: not a regular file", ckpt);
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    int32_t h[7];
    if (fsize < sizeof h) {
        close(fd);
        return core_err(LOSA_ERR_FORMAT, "%s: header: %llu bytes, expected at least 28",
                        ckpt, (unsigned long long)fsize);
    }
    losa_status s = io_pread_all(fd, ckpt, h, sizeof h, 0);
    if (s != LOSA_OK) { close(fd); return s; }
    model_config c;
    s = io_l2c_header_parse(ckpt, h, fsize, &c);
    if (s != LOSA_OK) { close(fd); return s; }
    int shared = c.tie_embeddings;
    int64_t V = c.vocab_size, D = c.dim, F = c.hidden_dim, L = c.n_layers;
    int64_t kvD = model_kv_dim(&c), hd = model_head_size(&c);
    /* offsets (in floats, after the header) of each array */
    int64_t o_emb = 0, o_att = o_emb + V * D, o_wq = o_att + L * D;
    int64_t o_wk = o_wq + L * D * D, o_wv = o_wk + L * kvD * D;
    int64_t o_wo = o_wv + L * kvD * D, o_ffn = o_wo + L * D * D;
    int64_t o_w1 = o_ffn + L * D, o_w2 = o_w1 + L * F * D, o_w3 = o_w2 + L * D * F;
    int64_t o_fin = o_w3 + L * F * D, o_freq = o_fin + D;
    int64_t o_cls = o_freq + (int64_t)c.max_seq_len * hd; /* real + imag, T x hd/2 each */

    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    s = tok_load_llama2c(&tok, tokenizer_bin, c.vocab_size);
    if (s != LOSA_OK) { close(fd); return s; }
    /* the store must not replace the checkpoint or the tokenizer it reads */
    s = io_out_not_input(out_path, ckpt);
    if (s == LOSA_OK) s = io_out_not_input(out_path, tokenizer_bin);
    if (s != LOSA_OK) { tok_free(&tok); close(fd); return s; }

    io_store *st = NULL;
    s = io_store_create(&st, out_path);
    if (s == LOSA_OK) {
        char source[4200];
        snprintf(source, sizeof source, "llama2c:%s", ckpt);
        s = io_store_write_config(st, &c, source);
    }
    if (s == LOSA_OK) s = io_store_write_dtype(st, MODEL_DTYPE_F32); /* fp32 checkpoints */
    /* largest array copied: (V,D), (F,D) / (D,F) or (D,D) (F < D is legal) */
    int64_t maxr = V > F ? V : F;
    if (D > maxr) maxr = D;
    int64_t maxn = maxr * D;
    float *buf = core_calloc((size_t)maxn, sizeof(float));
    float *tmp = core_calloc((size_t)(hd * D), sizeof(float));
    char name[64];
    /* COPY(store name, float offset, rows, cols (0: a vector), heads to
     * permute (0: none)): read, check finite, permute, write. */
#define COPY(NAME, OFF, R, C, PH)                                               \
    do {                                                                        \
        if (s != LOSA_OK) break;                                                \
        int64_t sh_[2] = {R, C}, n_ = (R) * ((C) ? (C) : 1);                     \
        s = io_pread_all(fd, ckpt, buf, (size_t)n_ * sizeof(float),              \
                         sizeof h + 4 * (uint64_t)(OFF));                        \
        for (int64_t j_ = 0; s == LOSA_OK && j_ < n_; j_++)                      \
            if (!isfinite(buf[j_]))                                             \
                s = core_err(LOSA_ERR_NUMERIC, "%s: %s: non-finite value at %lld", \
                             ckpt, NAME, (long long)j_);                       \
        if (s == LOSA_OK && (PH)) l2c_permute_rows(buf, tmp, PH, (int)hd, (int)(C)); \
        if (s == LOSA_OK) s = io_store_write_tensor(st, NAME, buf, (C) ? 2 : 1, sh_); \
    } while (0)
    COPY("/embed", o_emb, V, D, 0);
    for (int64_t l = 0; l < L; l++) {
        static const char *what[] = {"attn_norm", "wq", "wk", "wv", "wo",
                                     "ffn_norm", "w_gate", "w_up", "w_down"};
        const int64_t off[] = {o_att + l * D, o_wq + l * D * D, o_wk + l * kvD * D,
                               o_wv + l * kvD * D, o_wo + l * D * D, o_ffn + l * D,
                               o_w1 + l * F * D, o_w3 + l * F * D, o_w2 + l * D * F};
        const int64_t rows[] = {D, D, kvD, kvD, D, D, F, F, D};
        const int64_t cols[] = {0, D, D, D, D, 0, D, D, F};
        const int perm[] = {0, c.n_heads, c.n_kv_heads, 0, 0, 0, 0, 0, 0};
        for (int k = 0; k < 9; k++) {
            io_layer_name(name, sizeof name, (int)l, what[k]);
            COPY(name, off[k], rows[k], cols[k], perm[k]);
        }
    }
    COPY("/final_norm", o_fin, D, 0, 0);
    if (!shared) COPY("/head", o_cls, V, D, 0);
#undef COPY
    if (s == LOSA_OK) s = io_store_write_tokenizer(st, &tok);
    if (s == LOSA_OK) s = io_store_commit(&st);
    io_store_close(&st);
    core_free(buf);
    core_free(tmp);
    tok_free(&tok);
    close(fd);
    return s;
}
