/* sparse: compact formats for pruned weight matrices and fast CPU kernels.
 *
 * A weight matrix W (out, in) is row-major fp32 and is applied as y = x W^T
 * (x (in,) -> y (out,)), like every linear layer of the model.  Pruned W has
 * 50-90% exact zeros, unstructured or N:M (2:4, 4:8).
 *
 * Formats (chosen by bytes read per weight, since batch-1 decode is
 * memory-bound):
 *   SPARSE_FORMAT_BITMAP  one bit per weight (uint16 word per 16 inputs) +
 *                         the non-zero values packed row by row.  Bytes per
 *                         weight: 1/8 + 4 * density.  At 70% sparsity 1.33 B
 *                         (dense fp32: 4 B).  Kernels expand the packed values
 *                         with AVX-512 vexpandps (or an AVX2 permute table).
 *                         N:M patterns can use this format too (the detected
 *                         pattern is recorded in nm_n/nm_m); 2:4 decodes
 *                         faster in SPARSE_FORMAT_NM24 (the same bytes, no
 *                         popcounts or expands).
 *   SPARSE_FORMAT_BITMAP_BF16  the same with BF16 values (round to nearest
 *                         even), fp32 accumulate: 1/8 + 2 * density bytes.
 *                         Lossy (relative 2^-9 per weight); opt-in.
 *   SPARSE_FORMAT_CSR     row pointers int64, column indices uint16 when
 *                         in <= 65536 (else uint32), fp32 values: bytes per
 *                         weight (2 or 4 + 4) * density.  Better than the
 *                         bitmap only above ~92% sparsity.
 *   SPARSE_FORMAT_NM24    2:4 only (every group of 4 consecutive inputs has
 *                         at most 2 non-zeros; in % 4 == 0): per group two
 *                         fp32 value slots (a zero fills a slot a group does
 *                         not use) and their positions p0 < p1 in 0..3, a
 *                         nibble p0 | p1 << 2 (mask word w holds groups
 *                         4w..4w+3, group 4w+k in bits 4k..4k+3).  Fixed
 *                         stride: row o's slots start at o * in / 2, no
 *                         popcounts; the kernels gather x by the positions
 *                         (vpermt2ps over 32 inputs) and FMA the slots as
 *                         they are.  Bytes per weight: 1/8 + 2 (dense fp32
 *                         4: at most 1.88x fewer).  rowptr counts the real
 *                         non-zeros (checks, stores), the kernels do not
 *                         read it.
 *
 * For the kernels, model_sparse_build splits bitmap matrices into column
 * panels (sparse_matrix_panel) so that x stays in L1 while rows stream.
 *
 * Kernels pick AVX-512, AVX2+FMA or scalar code at run time
 * (__builtin_cpu_supports); LOSA_SPARSE_ISA=scalar|avx2|avx512 (or
 * sparse_set_isa) forces a lower path.  They use OpenMP threads over row
 * blocks (OMP_NUM_THREADS).  Not collective; no MPI.
 */
#ifndef LOSA_SPARSE_H
#define LOSA_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

typedef enum {
    SPARSE_FORMAT_BITMAP = 0,
    SPARSE_FORMAT_BITMAP_BF16,
    SPARSE_FORMAT_CSR,
    SPARSE_FORMAT_NM24,
} sparse_format;

typedef enum {
    SPARSE_ISA_SCALAR = 0,
    SPARSE_ISA_AVX2,   /* AVX2 + FMA */
    SPARSE_ISA_AVX512, /* AVX-512 F (+ VBMI2 for BF16 values) */
} sparse_isa;

typedef struct sparse_matrix {
    sparse_format fmt;
    int out, in;        /* shape of the dense W (out, in) */
    int nw;             /* bitmap words per row: ceil(in / 16) */
    int nm_n, nm_m;     /* N:M pattern found by from_dense (0, 0 if none) */
    int64_t nnz;
    int64_t *rowptr;    /* (out + 1) offsets into vals / idx (NM24: non-zero counts) */
    uint16_t *mask;     /* BITMAP*: (out, nw) bit j of word w = input 16 w + j;
                           NM24: (out, nw) nibble k of word w = group 4 w + k */
    void *vals;         /* (nvals + pad) float or uint16 (bf16) values */
    uint16_t *idx16;    /* CSR: (nnz) column indices when in <= 65536 */
    uint32_t *idx32;    /* CSR: (nnz) otherwise */
    /* Execution layout (sparse_matrix_panel): npanel > 0 column panels,
     * each an ordinary (out, pcol[p+1] - pcol[p]) matrix of the same
     * format holding inputs pcol[p] .. pcol[p+1] - 1; then rowptr, mask,
     * vals and idx* of the whole matrix are NULL. */
    int npanel;
    int *pcol;                   /* (npanel + 1), pcol[0] = 0, pcol[npanel] = in */
    struct sparse_matrix *panel; /* (npanel) */
    /* Row-interleaved layout (the panels sparse_matrix_panel makes of a
     * BITMAP* matrix; NULL otherwise): (out + 1) byte offsets into mask,
     * which then holds every row's nw bitmap words (fp32: padded to 4 bytes)
     * followed by its values; vals is NULL.  A thread's block of rows is
     * one sequential stream instead of two (bitmap and values), which
     * decodes faster (sparse_x86.c, prefetch_row_il). */
    int64_t *ilptr;
} sparse_matrix;

/* Build s from the dense W (out, in); zeros are exact (== 0.0f) entries.
 * Returns LOSA_ERR_ARG for bad shapes or format, or a W that is not 2:4
 * for SPARSE_FORMAT_NM24. Free with sparse_matrix_free. */
losa_status sparse_matrix_from_dense(sparse_matrix *s, const float *W /* (out, in) */,
                                     int out, int in, sparse_format fmt);
void sparse_matrix_free(sparse_matrix *s);
/* Rearrange a bitmap matrix into column panels of `width` inputs (rounded
 * up to a multiple of 16; width <= 0: the default, panels of at most
 * SPARSE_PANEL_MAX inputs of equal width), so that the block of x a panel
 * multiplies stays in L1 while its rows stream from memory: rows longer
 * than that otherwise evict x and re-read it from L2 for every row (at
 * 4096 x 11008, 70% sparse, decode ran at 21 GB/s instead of 36 GB/s).
 * Results are those of the unpanelled matrix up to fp32 summation order.
 * A matrix of one panel, a CSR matrix and an already panelled one are
 * left as they are.  The panels of a BITMAP* matrix are in the
 * row-interleaved layout (ilptr).  The panelled form is for the kernels,
 * to_dense and check; the store writes the unpanelled form.  LOSA_ERR_ARG for a bad
 * width. */
#define SPARSE_PANEL_MAX 2816
losa_status sparse_matrix_panel(sparse_matrix *s, int width);
/* Values stored: nnz, or for NM24 two slots per group (out * in / 2). */
int64_t sparse_matrix_nvals(const sparse_matrix *s);
/* The format to hold W (out, in) in when fmt is asked for calls of `batch`
 * rows: NM24 for a 2:4 W when fmt is BITMAP and the 2:4 kernels pay at that
 * batch (the same values, fewer bytes, no popcounts), else fmt. */
sparse_format sparse_format_for(const float *W /* (out, in) */, int out, int in,
                                sparse_format fmt, int batch);
/* Allocate s for an (out, in) matrix of format fmt with nnz non-zeros:
 * every array zeroed and padded as sparse_matrix_from_dense pads it
 * (idx16 when in <= 65536), nm_n = nm_m = 0.  For readers that fill the
 * arrays (io_store_read_sparse); validate the result with
 * sparse_matrix_check.  LOSA_ERR_ARG for a bad shape, format or nnz. */
losa_status sparse_matrix_alloc(sparse_matrix *s, sparse_format fmt, int out, int in,
                                int64_t nnz);
/* Structural check of a filled matrix, so that the kernels stay inside
 * their arrays: rowptr runs from 0 to nnz without decreasing; BITMAP*: the
 * bits of row o count rowptr[o+1] - rowptr[o] and no bit is set past
 * column in - 1; CSR: indices of a row strictly increase and are < in;
 * NM24: in % 4 == 0, (nm_n, nm_m) = (2, 4), p0 < p1 in every group, zero
 * nibbles past the last group, and the non-zero slots of row o count
 * rowptr[o+1] - rowptr[o]; (nm_n, nm_m) is (0, 0), (2, 4) or (4, 8).  LOSA_ERR_FORMAT naming where
 * (e.g. the file and group) and what. */
losa_status sparse_matrix_check(const sparse_matrix *s, const char *where);
/* "bitmap", "bitmap-bf16", "csr", "2:4" */
const char *sparse_format_name(sparse_format f);
losa_status sparse_format_from_string(const char *str, sparse_format *f);
/* Expand back to dense (BF16 values come back rounded). */
void sparse_matrix_to_dense(float *W /* (out, in) */, const sparse_matrix *s);
/* Bytes of the format that one matvec reads (all arrays; NM24 without
 * rowptr, which its kernels do not read). */
size_t sparse_matrix_bytes(const sparse_matrix *s);
/* Fraction of non-zero entries of W (n values). */
double sparse_density(const float *W, int64_t n);
/* 1 if every group of m consecutive inputs of every row has >= n zeros
 * (in % m == 0 required). */
int sparse_is_nm(const float *W /* (out, in) */, int out, int in, int n, int m);

/* y (out,) = W x, x (in,): batch-1 decode. */
void sparse_matvec(float *y /* (out) */, const sparse_matrix *s, const float *x /* (in) */);
/* y[k] (s[k]->out,) = W_k x for k < n (1 <= n <= SPARSE_GROUP_MAX), the
 * matrices sharing x and in (a layer's q, k, v; gate, up): one OpenMP
 * region whose threads take the row blocks of all of them, so that a
 * thread done with one matrix goes on with the next instead of waiting
 * for the other's last block at the end of each call.  Each y[k] is
 * sparse_matvec(y[k], s[k], x) bit for bit. */
#define SPARSE_GROUP_MAX 3
void sparse_matvec_group(float *const *y, const sparse_matrix *const *s, int n,
                         const float *x /* (in) */);
/* Dense y (out,) = W (out, in) x with the same OpenMP threads as the sparse
 * kernels: for the unpruned maps (and the head) of a model decoding on the
 * sparse path, so that OpenMP and OpenBLAS worker threads do not fight
 * for the cores between calls. */
void sparse_dense_matvec(float *y /* (out) */, const float *W /* (out, in) */, int out, int in,
                         const float *x /* (in) */);
/* The same with bf16 weights (the head and maps of a bf16 decode): each
 * weight widened exactly to fp32, products and sums in fp32 FMA (AVX-512 /
 * AVX2; scalar fallback).  Error against the exact sum over the bf16
 * values: at most about (in / lanes + lanes) * 2^-24 * sum |w x|. */
void sparse_dense_matvec_bf16(float *y /* (out) */, const uint16_t *W /* (out, in) bf16 */,
                              int out, int in, const float *x /* (in) */);
/* Y (N, out) = X W^T, X (N, in): prefill.  Uses a scratch of
 * (in + out) * roundup(N, 16) floats allocated per call. */
void sparse_matmul(float *Y /* (N, out) */, const sparse_matrix *s,
                   const float *X /* (N, in) */, int N);

/* Plain scalar references (single thread), used by tests. */
void sparse_matvec_ref(float *y, const sparse_matrix *s, const float *x);
void sparse_matmul_ref(float *Y, const sparse_matrix *s, const float *X, int N);

/* ISA selection: best supported by this CPU, capped by LOSA_SPARSE_ISA. */
sparse_isa sparse_isa_best(void);
int sparse_isa_supported(sparse_isa isa);
/* Force a path (for tests/bench); returns the previous one.  Forcing an
 * unsupported ISA leaves the current one and returns -1. */
int sparse_set_isa(sparse_isa isa);
sparse_isa sparse_get_isa(void);
const char *sparse_isa_name(sparse_isa isa);

/* Decision helper for generate/eval: 1 if the sparse kernels on a matrix
 * of format fmt are expected to beat dense OpenBLAS at this density
 * (fraction of non-zeros) and batch (rows per call), from the speed-ups
 * `losa bench sparse` measured (table in sparse.c, with a 10% margin). */
int sparse_profitable(sparse_format fmt, double density, int batch);
/* The same for maps whose weights stay in the cores' caches between calls
 * (resident = 1: a model small enough, sparse_cache_resident): there the
 * dense kernel is not memory-bound, so the bytes saved count for less and
 * batch-1 decode pays only at lower densities (table in sparse.c). */
int sparse_profitable_at(sparse_format fmt, double density, int batch, int resident);
/* 1 if `bytes` of fp32 weights, read in turn by `threads` threads, fit
 * their L2 caches (sysconf's L2 size per core; 1 MB if unknown;
 * environment LOSA_SPARSE_L2 = bytes overrides it, for tests).  It counts
 * one L2 per thread: where threads share an L2 (SMT siblings, E-core
 * clusters, several ranks on the cores of one node) it can call a model
 * resident that is not, and auto then keeps dense maps that would pay. */
int sparse_cache_resident(size_t bytes, int threads);

#endif
