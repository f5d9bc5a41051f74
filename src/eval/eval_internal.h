/* eval internals shared by text.c (string buffer, TSV, HellaSwag text) and
 * tasks.c (task files, items, requests).  Not part of the public API. */
#ifndef LOSA_EVAL_INTERNAL_H
#define LOSA_EVAL_INTERNAL_H

#include <stddef.h>

/* A growing byte string, always NUL-terminated once anything was added. */
typedef struct {
    char *p;
    size_t n, cap;
} eval_buf;

void eval_buf_add(eval_buf *b, const char *s, size_t n);
void eval_buf_addc(eval_buf *b, char c);
/* The string (never NULL), ownership to the caller; b is left empty. */
char *eval_buf_take(eval_buf *b);

/* Python's str.isspace for ASCII bytes. */
int eval_isspace(unsigned char c);

#endif
