/* sparse: AVX-512 and AVX2 kernels of the 2:4 format (SPARSE_FORMAT_NM24,
 * include/sparse.h), chosen at run time like sparse_x86.c's.
 *
 * The value slots are used as stored (two per group of 4 inputs, fixed
 * stride), and x is gathered to them: slot j of a block of 8 groups (32
 * inputs) multiplies x[4 (j / 2) + p_j], p_j the 2-bit position in bits
 * 2j, 2j + 1 of the block's 32 bits of positions.  AVX-512: the 16 indices
 * are one variable shift of the broadcast bits, AND 3, OR 4 (j / 2)
 * (vpternlogd), and one vpermt2ps picks the 16 x values out of the 32
 * inputs held in two registers; then one FMA with 16 slots.  No popcount,
 * no data-dependent address: per 32 inputs 64 bytes of slots and 4 of
 * positions (dense fp32: 128).  AVX2: 4 groups per step, two vpermps (one
 * per 8 inputs) and a blend.
 */
#include "sparse_impl.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,bmi2")))
#define T256 __attribute__((target("avx2,fma,bmi2")))
#define INLINE static inline __attribute__((always_inline))

/* Software prefetch distance in slots (floats) ahead of the current block,
 * 0: none (the default).  With SPARSE_NM_PF > 0, every line of the slots
 * and the positions SPARSE_NM_PF slots ahead, across the end of the row
 * into the next one (rows are stored one after the other).  On a Zen 5 VM
 * 1024 (4 KB) gave a 10-20% better best call than one prefetch per 256
 * bytes; on the 2-core Zen 4 (AVX-512) the hardware prefetcher alone is
 * faster: no prefetch against 1024, batch-1 decode, 50% 2:4, the two
 * binaries alternating (bench sparse --decode-only --rounds 7, 6 pairs per
 * shape, shared machine under load 2-3.5): sparse call time old / new,
 * paired median 1.31 / 1.32 / 2.07 (6 of 6 pairs each), best call 1.32 /
 * 1.22 / 1.80 on 4096 x 4096 / 11008 x 4096 / 4096 x 11008; 256 slots
 * (1 KB) was no better than 1024 (0.89-1.12 on the best call).  A
 * row-interleaved layout like the bitmap panels' (each row's positions
 * then its slots, one stream per row, 64-byte aligned rows) was slower
 * here than the two arrays, with or without prefetch (paired 0.66-0.92
 * without), and is not used for 2:4; so were two rows per step sharing
 * the x loads (paired 0.53-0.64). */
#ifndef SPARSE_NM_PF
#define SPARSE_NM_PF 0
#endif

/* ------------------------------------------------------------ AVX-512 */

/* The x index of each of the 16 slots of a block from its 32 position bits. */
INLINE T512 __m512i nm_idx512(uint32_t bits)
{
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    __m512i t = _mm512_srlv_epi32(_mm512_set1_epi32((int)bits), sh);
    return _mm512_ternarylogic_epi32(t, _mm512_set1_epi32(3), base, 0xEA); /* (t & 3) | base */
}

/* Prefetch (none if SPARSE_NM_PF is 0) of the `lines` cache lines of slots
 * at v + SPARSE_NM_PF and, when c (the input of m and v in the row) starts
 * a line of positions (512 inputs), of the positions of those slots
 * (m + SPARSE_NM_PF / 8: 8 slots per 16-bit word). */
INLINE void nm_prefetch(const uint16_t *m, const float *v, int c, int lines)
{
    if (!SPARSE_NM_PF) return;
    for (int l = 0; l < lines; l++)
        _mm_prefetch((const char *)(v + SPARSE_NM_PF + 16 * l), _MM_HINT_T0);
    if (!(c & 511)) _mm_prefetch((const char *)(m + SPARSE_NM_PF / 8), _MM_HINT_T0);
}

INLINE T512 uint32_t nm_bits(const uint16_t *m)
{
    uint32_t b;
    memcpy(&b, m, 4);
    return b;
}

/* Row . x over the `in` inputs of a row (in % 4 == 0): m its position
 * words, v its in / 2 slots. */
T512 static float nm_row512(const uint16_t *m, const float *v, const float *x, int in)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int c = 0;
    for (; c + 128 <= in; c += 128) {
        const float *vc = v + c / 2, *xc = x + c;
        const uint16_t *mc = m + c / 16;
        nm_prefetch(mc, vc, c, 4);
        __m512i i0 = nm_idx512(nm_bits(mc)), i1 = nm_idx512(nm_bits(mc + 2));
        __m512i i2 = nm_idx512(nm_bits(mc + 4)), i3 = nm_idx512(nm_bits(mc + 6));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(vc),
                             _mm512_permutex2var_ps(_mm512_loadu_ps(xc), i0,
                                                    _mm512_loadu_ps(xc + 16)), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(vc + 16),
                             _mm512_permutex2var_ps(_mm512_loadu_ps(xc + 32), i1,
                                                    _mm512_loadu_ps(xc + 48)), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(vc + 32),
                             _mm512_permutex2var_ps(_mm512_loadu_ps(xc + 64), i2,
                                                    _mm512_loadu_ps(xc + 80)), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(vc + 48),
                             _mm512_permutex2var_ps(_mm512_loadu_ps(xc + 96), i3,
                                                    _mm512_loadu_ps(xc + 112)), a3);
    }
    for (; c + 32 <= in; c += 32)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + c / 2),
                             _mm512_permutex2var_ps(_mm512_loadu_ps(x + c),
                                                    nm_idx512(nm_bits(m + c / 16)),
                                                    _mm512_loadu_ps(x + c + 16)), a0);
    if (c < in) { /* 4..28 inputs: masked loads, no read past the row or x */
        int rem = in - c;
        uint32_t bits = m[c / 16] | (rem > 16 ? (uint32_t)m[c / 16 + 1] << 16 : 0u);
        __mmask16 klo = (__mmask16)(rem >= 16 ? 0xffffu : (1u << rem) - 1);
        __mmask16 khi = (__mmask16)(rem > 16 ? (1u << (rem - 16)) - 1 : 0u);
        __mmask16 kv = (__mmask16)((1u << (rem / 2)) - 1);
        __m512 xg = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(klo, x + c), nm_idx512(bits),
                                           _mm512_maskz_loadu_ps(khi, x + c + 16));
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(kv, v + c / 2), xg, a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* y[o] (+)= row o . x for o in [o0, o1) with the row kernel ROWFN; one
 * definition per ISA (rows_fn of sparse_x86.c's drivers). */
#define NM_ROWS(NAME, TGT, ROWFN)                                                       \
    TGT void NAME(float *y, const sparse_matrix *s, const float *x, int o0, int o1, int acc) \
    {                                                                                   \
        for (int64_t o = o0; o < o1; o++) {                                             \
            float r = ROWFN(s->mask + o * s->nw, (const float *)s->vals + o * (s->in / 2), \
                            x, s->in);                                                  \
            y[o] = acc ? y[o] + r : r;                                                  \
        }                                                                               \
    }

NM_ROWS(sparse_nm_rows512, T512, nm_row512)

/* nb (<= 8) vectors at once: the positions of a block are decoded once and
 * the slots read once for all of them.  Y[n * ldy + o] (+)= row o . X[n * ldx]. */
INLINE T512 void nm_rows512_multi_nb(float *Y, int64_t ldy, const sparse_matrix *s,
                                     const float *X, int64_t ldx, int o0, int o1, int acc,
                                     const int nb)
{
    int in = s->in, in32 = in / 32 * 32;
    for (int64_t o = o0; o < o1; o++) {
        const uint16_t *m = s->mask + o * s->nw;
        const float *v = (const float *)s->vals + o * (in / 2);
        __m512 a[8];
        for (int n = 0; n < nb; n++) a[n] = _mm512_setzero_ps();
        for (int c = 0; c < in; c += 32) {
            int rem = in - c < 32 ? in - c : 32;
            uint32_t bits = rem > 16 ? nm_bits(m + c / 16) : m[c / 16];
            __mmask16 klo = (__mmask16)(rem >= 16 ? 0xffffu : (1u << rem) - 1);
            __mmask16 khi = (__mmask16)(rem == 32 ? 0xffffu : rem > 16 ? (1u << (rem - 16)) - 1 : 0u);
            __mmask16 kv = (__mmask16)(rem == 32 ? 0xffffu : (1u << (rem / 2)) - 1);
            __m512i idx = nm_idx512(bits);
            __m512 vv = c < in32 ? _mm512_loadu_ps(v + c / 2) : _mm512_maskz_loadu_ps(kv, v + c / 2);
            for (int n = 0; n < nb; n++) {
                const float *xn = X + n * ldx + c;
                __m512 lo = c < in32 ? _mm512_loadu_ps(xn) : _mm512_maskz_loadu_ps(klo, xn);
                __m512 hi = c < in32 ? _mm512_loadu_ps(xn + 16) : _mm512_maskz_loadu_ps(khi, xn + 16);
                a[n] = _mm512_fmadd_ps(vv, _mm512_permutex2var_ps(lo, idx, hi), a[n]);
            }
        }
        for (int n = 0; n < nb; n++) {
            float r = _mm512_reduce_add_ps(a[n]), *y = Y + n * ldy + o;
            *y = acc ? *y + r : r;
        }
    }
}

T512 void sparse_nm_rows512_multi(float *Y, int64_t ldy, const sparse_matrix *s, const float *X,
                                  int64_t ldx, int nb, int o0, int o1, int acc)
{
#define NB_CALL(n) nm_rows512_multi_nb(Y, ldy, s, X, ldx, o0, o1, acc, n)
    SPARSE_NB_DISPATCH(nb, NB_CALL)
#undef NB_CALL
}

/* ---------------------------------------------------------------- AVX2 */

/* The 8 x values of the 8 slots of 4 groups (16 inputs at x). */
INLINE T256 __m256 nm_gather256(unsigned bits, __m256 xlo, __m256 xhi)
{
    const __m256i sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i base = _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4);
    __m256i t = _mm256_srlv_epi32(_mm256_set1_epi32((int)bits), sh);
    __m256i idx = _mm256_or_si256(_mm256_and_si256(t, _mm256_set1_epi32(3)), base);
    return _mm256_blend_ps(_mm256_permutevar8x32_ps(xlo, idx), _mm256_permutevar8x32_ps(xhi, idx),
                           0xF0);
}

INLINE T256 __m256i nm_lanes_below(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

T256 static float nm_row256(const uint16_t *m, const float *v, const float *x, int in)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int c = 0;
    for (; c + 32 <= in; c += 32) {
        nm_prefetch(m + c / 16, v + c / 2, c, 1); /* 64 bytes of slots per step */
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + c / 2),
                             nm_gather256(m[c / 16], _mm256_loadu_ps(x + c),
                                          _mm256_loadu_ps(x + c + 8)), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + c / 2 + 8),
                             nm_gather256(m[c / 16 + 1], _mm256_loadu_ps(x + c + 16),
                                          _mm256_loadu_ps(x + c + 24)), a1);
    }
    for (; c < in; c += 16) { /* 16, or 4..12 at the end: masked loads */
        int rem = in - c < 16 ? in - c : 16;
        __m256 xlo = _mm256_maskload_ps(x + c, nm_lanes_below(rem));
        __m256 xhi = _mm256_maskload_ps(x + c + 8, nm_lanes_below(rem - 8));
        __m256 vv = _mm256_maskload_ps(v + c / 2, nm_lanes_below(rem / 2));
        a0 = _mm256_fmadd_ps(vv, nm_gather256(m[c / 16], xlo, xhi), a0);
    }
    __m256 a = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

NM_ROWS(sparse_nm_rows256, T256, nm_row256)

#endif

void sparse_nm_matmul(float *Y, const sparse_matrix *s, const float *X, int N)
{
#if defined(__x86_64__)
    if (sparse_get_isa() == SPARSE_ISA_AVX512) { /* the small-batch driver, 2:4 rows */
        sparse_matmul_small_avx512(Y, s, X, N);
        return;
    }
#endif
    for (int64_t n = 0; n < N; n++) sparse_matvec(Y + n * s->out, s, X + n * s->in);
}
