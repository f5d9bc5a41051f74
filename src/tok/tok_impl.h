/* tok internals shared by tok.c (tables, encode, decode) and tok_load.c
 * (file readers).  Not part of the public API. */
#ifndef LOSA_TOK_IMPL_H
#define LOSA_TOK_IMPL_H

#include "tok.h"

/* Open-addressing map from piece bytes to id over a (blob, offsets) pair.
 * slots hold id + 1 (0 = empty); capacity is a power of two >= 2 * count. */
typedef struct {
    int32_t *slots;
    uint64_t mask;
} tok_strmap;

uint64_t tok_hash_bytes(const char *s, size_t n);
losa_status tok_strmap_init(tok_strmap *m, int64_t count);
void tok_strmap_free(tok_strmap *m);
/* Insert id (keeps the first id if the same bytes are inserted twice). */
void tok_strmap_put(tok_strmap *m, const char *blob, const int64_t *offsets, int id);
/* -1 if absent. */
int tok_strmap_get(const tok_strmap *m, const char *blob, const int64_t *offsets,
                   const char *s, size_t n);

/* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's whitespace symbol. */
#define TOK_SPACE_SYM "\xe2\x96\x81"
#define TOK_SPACE_SYM_LEN 3

#endif
