/* tok: SentencePiece-compatible BPE tokenizers (LLaMA-2 / Mistral family).
 *
 * Two sources give one in-memory form:
 *   - Hugging Face tokenizer.json, model type BPE with the SentencePiece
 *     normalizer (Prepend + Replace " " -> U+2581) and byte fallback: merges
 *     are ranked pairs (rank = position in the merges list).
 *   - llama2.c tokenizer.bin: pieces with scores; the pair (a, b) may merge if
 *     the concatenated piece exists, with priority = its score.
 * Encoding is a priority queue over adjacent pairs (best rank first, leftmost
 * among equals), O(n log n) in the text length.
 *
 * The flat fields below are all that is stored (io writes them to the model
 * store); tok_build() derives the lookup tables from them.
 */
#ifndef LOSA_TOK_H
#define LOSA_TOK_H

#include "core.h"

typedef enum {
    TOK_KIND_MERGES = 1, /* ranked merge list (tokenizer.json BPE) */
    TOK_KIND_SCORES = 2  /* merge priority = score of merged piece (llama2.c) */
} tok_kind;

typedef struct {
    int kind;             /* tok_kind */
    int n_vocab;          /* V */
    char *blob;           /* all pieces' bytes, concatenated */
    int64_t *offsets;     /* (V+1) piece i = blob[offsets[i] .. offsets[i+1]) */
    float *scores;        /* (V) */
    int n_merges;
    int32_t *merges;      /* (n_merges, 2) left id, right id; rank = row */
    int bos_id, eos_id, unk_id;
    int byte_fallback;    /* <0xNN> pieces exist for unknown bytes */
    int add_dummy_prefix; /* prepend U+2581 to the text */
    void *priv;           /* lookup tables built by tok_build */
} tok_tokenizer;

/* Load from tokenizer.json.  Errors name the file and the key. */
losa_status tok_load_hf_json(tok_tokenizer *t, const char *path);
/* Load llama2.c tokenizer.bin with vocab_size entries. */
losa_status tok_load_llama2c(tok_tokenizer *t, const char *path, int vocab_size);
/* The same from memory (size bytes of the file's content; path only names
 * it in messages): for tests and fuzzing. */
losa_status tok_load_hf_json_text(tok_tokenizer *t, const char *path, const char *text,
                                  size_t size);
losa_status tok_load_llama2c_mem(tok_tokenizer *t, const char *path, const char *data,
                                 size_t size, int vocab_size);
/* Build lookup tables from the flat fields (after reading them from a store). */
losa_status tok_build(tok_tokenizer *t);
void tok_free(tok_tokenizer *t);

/* Encode len bytes of text.  bos/eos: add those ids.  *ids is malloc'd. */
losa_status tok_encode(const tok_tokenizer *t, const char *text, size_t len,
                       int bos, int eos, int **ids, int64_t *n);
/* Decode ids to text (byte fallback pieces become bytes, U+2581 -> space,
 * the dummy-prefix space after BOS/at the start removed).  *text malloc'd. */
losa_status tok_decode(const tok_tokenizer *t, const int *ids, int64_t n,
                       char **text, size_t *len);
/* The bytes that id contributes after prev (for streaming generation). */
const char *tok_piece_text(const tok_tokenizer *t, int prev, int id, char buf[8],
                           size_t *len);

#endif
