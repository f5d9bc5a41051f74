/* sparse: internal declarations shared by the format code and the ISA
 * kernels (sparse_x86.c). */
#ifndef LOSA_SPARSE_IMPL_H
#define LOSA_SPARSE_IMPL_H

#include "kernels.h" /* kern_bf16_round / kern_bf16_value */
#include "sparse.h"

/* Values arrays are padded by this many elements so that vector loads past
 * the last non-zero stay inside the allocation. */
#define SPARSE_VAL_PAD 64

/* Batches up to this many rows run the multi-vector matvec (fp32 bitmap,
 * AVX-512) instead of the transposed prefill kernel. */
#ifndef SPARSE_SMALL_N
#define SPARSE_SMALL_N 16
#endif

/* switch (nb) calling CALL(n) with the constant n = nb for nb 1..7 and 8
 * otherwise, so that a kernel's loops over its nb vectors unroll. */
#define SPARSE_NB_DISPATCH(nb, CALL)                                                    \
    switch (nb) {                                                                       \
    case 1: CALL(1); break;                                                             \
    case 2: CALL(2); break;                                                             \
    case 3: CALL(3); break;                                                             \
    case 4: CALL(4); break;                                                             \
    case 5: CALL(5); break;                                                             \
    case 6: CALL(6); break;                                                             \
    case 7: CALL(7); break;                                                             \
    default: CALL(8); break;                                                            \
    }

/* Prefill blocking: input columns per chunk (multiple of 64) so that the
 * chunk of X^T stays in L2 while every row of W streams through it. */
#ifndef SPARSE_KC
#define SPARSE_KC 128
#endif


/* The unpanelled pieces of s, for the kernels: s itself, or its column
 * panels; piece p covers inputs *c0 .. *c0 + in - 1. */
static inline int sparse_npieces(const sparse_matrix *s) { return s->npanel ? s->npanel : 1; }

static inline const sparse_matrix *sparse_piece(const sparse_matrix *s, int p, int *c0)
{
    *c0 = s->npanel ? s->pcol[p] : 0;
    return s->npanel ? &s->panel[p] : s;
}

/* Rows of a BITMAP* matrix in either layout (sparse_matrix.ilptr): the
 * nw bitmap words of row o and its packed values (float or bf16). */
static inline int64_t sparse_il_mask_bytes(const sparse_matrix *s)
{ /* fp32 values start on 4 bytes */
    return s->fmt == SPARSE_FORMAT_BITMAP_BF16 ? (int64_t)s->nw * 2 : ((int64_t)s->nw * 2 + 3) / 4 * 4;
}

static inline const uint16_t *sparse_row_mask(const sparse_matrix *s, int64_t o)
{
    return s->ilptr ? (const uint16_t *)((const char *)s->mask + s->ilptr[o])
                    : s->mask + o * s->nw;
}

static inline const void *sparse_row_vals(const sparse_matrix *s, int64_t o)
{
    if (s->ilptr) return (const char *)s->mask + s->ilptr[o] + sparse_il_mask_bytes(s);
    return s->fmt == SPARSE_FORMAT_BITMAP_BF16 ? (const void *)((const uint16_t *)s->vals + s->rowptr[o])
                                               : (const void *)((const float *)s->vals + s->rowptr[o]);
}

/* Transposes for prefill: XT (in, ldt) <- X (N, in) with zero padding of
 * columns N..ldt-1; Y (N, out) <- YT (out, ldt).  Threaded. */
void sparse_transpose_in(float *XT, int ldt, const float *X, int N, int in);
void sparse_transpose_out(float *Y, const float *YT, int ldt, int N, int out);

/* The 2:4 format (sparse_nm.c): fill an allocated NM24 matrix from a 2:4
 * W; the checks of its rows; the reference row product and the scatter of
 * a row into w (in,); a panel's non-zeros and arrays (inputs c0 .. c1 - 1,
 * c0 a multiple of 16). */
void sparse_nm_fill(sparse_matrix *s, const float *W);
losa_status sparse_nm_check_rows(const sparse_matrix *s, const char *where);
float sparse_nm_row_dot(const sparse_matrix *s, int64_t o, const float *x);
void sparse_nm_scatter_row(float *w, const sparse_matrix *s, int64_t o);
int64_t sparse_nm_panel_nnz(const sparse_matrix *s, int c0, int c1);
void sparse_nm_panel_fill(sparse_matrix *q, const sparse_matrix *s, int c0);
/* Y (N, out) = X W^T for a 2:4 matrix, N >= 2 (sparse_nm_x86.c: AVX-512
 * gathers of up to 8 vectors per read of W; else one matvec per row). */
void sparse_nm_matmul(float *Y, const sparse_matrix *s, const float *X, int N);

#if defined(__x86_64__)
/* 2:4 rows o0 .. o1 - 1 of an unpanelled piece (rows_fn of the drivers). */
void sparse_nm_rows512(float *y, const sparse_matrix *s, const float *x, int o0, int o1, int acc);
void sparse_nm_rows256(float *y, const sparse_matrix *s, const float *x, int o0, int o1, int acc);
void sparse_matvec_group_avx2(float *const *y, const sparse_matrix *const *s, int n,
                              const float *x);
void sparse_matvec_group_avx512(float *const *y, const sparse_matrix *const *s, int n,
                                const float *x);
/* Y (N, out) = X W^T for small N (SPARSE_SMALL_N), fp32 bitmap; also any N
 * of the 2:4 format (sparse_nm_matmul). */
void sparse_matmul_small_avx512(float *Y, const sparse_matrix *s, const float *X, int N);
/* Y[n * ldy + o] (+)= row o . X[n * ldx] for nb <= 8 vectors, rows [o0, o1)
 * of an unpanelled 2:4 piece (AVX-512; sparse_matmul_small_avx512's rows). */
void sparse_nm_rows512_multi(float *Y, int64_t ldy, const sparse_matrix *s, const float *X,
                             int64_t ldx, int nb, int o0, int o1, int acc);
void sparse_dense_matvec_avx512(float *y, const float *W, int out, int in, const float *x);
void sparse_dense_matvec_avx2(float *y, const float *W, int out, int in, const float *x);
void sparse_dense_matvec_bf16_avx512(float *y, const uint16_t *W, int out, int in,
                                     const float *x);
void sparse_dense_matvec_bf16_avx2(float *y, const uint16_t *W, int out, int in, const float *x);
/* YT (out, ldt) = W XT, XT (in, ldt), ldt a multiple of 16 (padded zeros). */
void sparse_matmul_t_avx2(float *YT, const sparse_matrix *s, const float *XT, int ldt,
                          int64_t *rowoff);
void sparse_matmul_t_avx512(float *YT, const sparse_matrix *s, const float *XT, int ldt,
                            int64_t *rowoff);
#endif

/* Rows [o0, o1) of out for the calling OpenMP thread, in blocks of 16. */
void sparse_thread_rows(int out, int *o0, int *o1);

#endif
