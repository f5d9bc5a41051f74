/* sparse: AVX2+FMA and AVX-512 kernels, compiled with per-function target
 * attributes and chosen at run time by sparse.c.
 *
 * Decode (matvec, memory-bound): one row at a time, the packed non-zeros of
 * every 16 inputs are expanded to a dense vector with vexpandps (AVX-512)
 * or a permute table (AVX2, 8 inputs per byte of the bitmap) and FMA'd with
 * x; CSR gathers x.  Threads take blocks of rows (dynamic schedule).
 *
 * Prefill (matmul, compute-bound): X is transposed to XT (in, ldt) so that
 * one input column holds the batch contiguously.  For each non-zero w(o, i)
 * the kernel broadcasts w and FMAs it with up to 128 (AVX-512) / 64 (AVX2)
 * batch values of XT row i into register accumulators of YT row o; input
 * columns are processed in chunks of SPARSE_KC so that the chunk of XT
 * stays in L2 while W streams.  Each weight is loaded once per batch block.
 */
#include "sparse_impl.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,avx512dq,avx2,fma,bmi,bmi2,popcnt")))
#define T256 __attribute__((target("avx2,fma,bmi,bmi2,popcnt")))
#define INLINE static inline __attribute__((always_inline))

/* Work threshold (weights) below which kernels stay on one thread. */
#define SPARSE_PAR_MIN (1 << 18)
#ifndef SPARSE_NV
#define SPARSE_NV 8 /* prefill: vectors of batch lanes per register block (<= 8) */
#endif
#ifndef SPARSE_MV_ROWS
#define SPARSE_MV_ROWS 64 /* decode: rows per dynamically scheduled block (a multiple of
                             16: threads do not share lines of y) */
#endif
#ifndef SPARSE_MV_BLOCK
#define SPARSE_MV_BLOCK 256 /* sparse decode: the largest block of rows (matvec_rows) */
#endif
/* On the 2-core Zen 4, where the 2:4 kernels' calls took 1.2-1.8x less
 * time without their prefetch (idle machine, old and new binaries
 * alternating; sparse_nm_x86.c has the loaded paired medians), the bitmap
 * kernels built with SPARSE_PF = 0 and SPARSE_PF_BF16 = 0 were no faster:
 * 70% fp32 bitmap, call time with / without prefetch, median of 5 runs of
 * bench sparse --decode-only --rounds 9 alternating the two binaries on
 * an idle machine, 0.95 / 1.00 / 1.01 (4096 x 4096 / 11008 x 4096 / 4096
 * x 11008), bf16 values 0.93 / 1.04 / 0.89 (3 runs); so they keep it. */
#ifndef SPARSE_PF
#define SPARSE_PF 1024 /* floats of software prefetch distance (4 KB of fp32 values; 0: none) */
#endif
#ifndef SPARSE_PF_BF16
#define SPARSE_PF_BF16 1024 /* bf16 values of software prefetch distance (2 KB; 0: none) */
#endif
#ifndef SPARSE_PF_MASK
#define SPARSE_PF_MASK 1024 /* bitmap words of software prefetch distance (2 KB) */
#endif

/* Rows of the calling thread in blocks of 16, so that neighbouring threads
 * do not share lines of y (sparse_impl.h; the 2:4 kernels use it too). */
void sparse_thread_rows(int out, int *o0, int *o1)
{
#ifdef _OPENMP
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    int t = 0, nt = 1;
#endif
    int nb = (out + 15) / 16;
    int b0 = (int)((int64_t)nb * t / nt), b1 = (int)((int64_t)nb * (t + 1) / nt);
    *o0 = b0 * 16 < out ? b0 * 16 : out;
    *o1 = b1 * 16 < out ? b1 * 16 : out;
}

/* ------------------------------------------------------------ AVX-512 */

/* Expands keep a dependence on their destination register: vexpandps and
 * vpexpandw with zero-masking ({z}) still wait for the register's old value
 * on AMD Zen 5 (as a merge would), so with the compiler's register reuse
 * every expand of a step waited for the one of the previous step (decode
 * at 9-20 Gweights/s per core from L2 instead of 25).  Merging into a
 * register zeroed by an idiom (vpxord, resolved at rename) breaks the
 * chain; zreg512 gives such a register, and ld512 keeps the source in a
 * register (the compiler would fold the load into the memory form of the
 * expand, itself slower). */
INLINE T512 __m512i zreg512(void)
{
    __m512i z;
    __asm__ volatile("vpxord %0, %0, %0" : "=v"(z)); /* volatile: one per use */
    return z;
}

INLINE T512 __m512i ld512(const void *p)
{
    __m512i t = _mm512_loadu_si512(p);
    __asm__("" : "+v"(t));
    return t;
}

INLINE T512 __m512 expand_f32(__mmask16 k, const float *v)
{
    return _mm512_mask_expand_ps(_mm512_castsi512_ps(zreg512()), k, _mm512_castsi512_ps(ld512(v)));
}

/* Software prefetch of the values a step of 64 inputs reads (v .. v + n - 1,
 * n <= 64), SPARSE_PF floats ahead, and of the bitmap words m at the start
 * of every cache line of them (w % 32 == 0), SPARSE_PF_MASK words ahead.
 * The hardware prefetcher alone streams these arrays at a third of the
 * bandwidth (one thread, 4096 x 4096 at 70%: 10 GB/s against 29 for dense
 * fp32 rows), so the software prefetch must cover every line: a step reads
 * 76 bytes at 70% sparsity, so one prefetch per step (as before) left about
 * one line in five to a demand miss.  Prefetching both ends of the step's
 * values, shifted by the distance, covers every line of up to 2 lines per
 * step; 16% less time per call at 2 threads (best of 9 x 15 calls, 4096 x
 * 4096, 70%), 10% at one thread.  A second level (prefetcht2 8-32 KB ahead)
 * or a distance of 2 or 8 KB did not help. */
INLINE void prefetch64(const uint16_t *m, int w, const float *v, int n)
{
    if (SPARSE_PF <= 0) return;
    _mm_prefetch((const char *)(v + SPARSE_PF), _MM_HINT_T0);
    _mm_prefetch((const char *)(v + SPARSE_PF + n), _MM_HINT_T0);
    if (!(w & 31)) _mm_prefetch((const char *)(m + w + SPARSE_PF_MASK), _MM_HINT_T0);
}

/* The packed fp32 values of 64 inputs (bitmap words k, 16 bits each)
 * expanded to e[0..3]; *pv advances past them.  Offsets come from popcounts
 * of the mask prefix, so the only loop-carried dependence is one add.
 * What bounds it from L2 on AMD Zen 4 (2-core VM, 3.6 GHz, 256 x 4096 at
 * 30 % density, one thread, best of 300 passes): about 14 cycles per 64
 * inputs, 16.7 G inputs/s = 22 GB/s of the format per core, so with 2
 * threads the kernel becomes the limit only above about 45 GB/s of memory
 * bandwidth (from memory, with its prefetches, it reached 33-34 GB/s).
 * Loops of the step's parts alone: 4 vexpandps zmm 6.1 cycles, 4 kmov GPR
 * -> k 4.2 (one per cycle, on the expands' pipes: the two together 8.4),
 * with the 4 value loads and FMAs 11.7-12.3, with the 4 loads of x
 * 12.3-12.7.  Variants measured in the same process, all slower or equal:
 * a masked load in place of the expand (wrong values; the bound without
 * the shuffle) equal; vpermps with indices from vpopcntd of the mask
 * prefix (no expand) 0.9x; the masks from vptestmd of broadcast bitmap
 * words (no GPR -> k moves) 0.9x; 8-lane ymm expands 0.6x; two rows per
 * load of x equal; 32-byte value loads where no 16 inputs hold more than
 * 8 values (a branch per step) 0.8x.  Every zmm expand (vpexpandb/w/d,
 * vexpandps) costs the same 1.5 cycles there, so an expand yields 64
 * bytes whatever its lanes: fp32 values need one per 16 inputs where bf16
 * needs one per 32 (the bf16 kernel's advantage), and splitting fp32 into
 * 16-bit halves would not help.  On Zen 5 (full-width 512-bit pipes) the
 * same kernel ran 25 G inputs/s per core from L2. */
INLINE T512 void expand64_f32(uint64_t k, const float **pv, __m512 e[4])
{
    const float *v = *pv;
    int p1 = __builtin_popcountll(k & 0xffffull), p2 = __builtin_popcountll(k & 0xffffffffull);
    int p3 = __builtin_popcountll(k & 0xffffffffffffull);
    e[0] = expand_f32((__mmask16)k, v);
    e[1] = expand_f32((__mmask16)(k >> 16), v + p1);
    e[2] = expand_f32((__mmask16)(k >> 32), v + p2);
    e[3] = expand_f32((__mmask16)(k >> 48), v + p3);
    *pv = v + __builtin_popcountll(k);
}

/* The same for the row-interleaved layout (sparse_matrix.ilptr): the
 * bitmap words m lie just before the values v in the one stream, so the
 * values' prefetch covers them, but for the lines of the row's bitmap,
 * which the stream skips at a row's start: those are prefetched there.
 * Against the separate bitmap and values arrays (the same kernel, the
 * same sums: bit-identical results), 70% fp32, the three 7B shapes,
 * 200-300 rotating calls per variant after a 128 MB read flush in one
 * process, shared VM at load 5-7: at 2 threads the best call 8-20%
 * shorter (two runs; e.g. 0.448 / 1.196 / 1.475 ms against 0.555 /
 * 1.496 / 1.611 ms) and the threads' CPU time per call (less disturbed
 * by preemption than wall time) lower by a paired median of 9-20%; at 1
 * thread the best call 9-14% shorter.  Median wall times at 2 threads
 * were dominated by the other jobs' preemption (10-15 ms a call) and
 * told nothing.  Two steps per iteration or one prefetch per step did
 * not change it; prefetchnta was no better. */
INLINE void prefetch64_il(const float *v, int n)
{
    if (SPARSE_PF <= 0) return;
    _mm_prefetch((const char *)(v + SPARSE_PF), _MM_HINT_T0);
    _mm_prefetch((const char *)(v + SPARSE_PF + n), _MM_HINT_T0);
}

INLINE void prefetch_row_il(const uint16_t *m, const float *v)
{
    if (SPARSE_PF <= 0) return;
    for (const char *p = (const char *)m; p < (const char *)v; p += 64)
        _mm_prefetch(p + sizeof(float) * SPARSE_PF, _MM_HINT_T0);
}

/* One row; il: the row-interleaved layout (its prefetches). */
INLINE T512 float row512_bitmap_f32(const uint16_t *m, const float *v, const float *x, int in,
                                    int nw, const int il)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int wf = in / 16, w = 0;
    if (il) prefetch_row_il(m, v);
    for (; w + 4 <= wf; w += 4) { /* 4 words (64 inputs) per step */
        uint64_t k;
        memcpy(&k, m + w, 8);
        if (il) prefetch64_il(v, __builtin_popcountll(k));
        else prefetch64(m, w, v, __builtin_popcountll(k));
        __m512 e[4];
        expand64_f32(k, &v, e);
        a0 = _mm512_fmadd_ps(e[0], _mm512_loadu_ps(x + 16 * w), a0);
        a1 = _mm512_fmadd_ps(e[1], _mm512_loadu_ps(x + 16 * w + 16), a1);
        a2 = _mm512_fmadd_ps(e[2], _mm512_loadu_ps(x + 16 * w + 32), a2);
        a3 = _mm512_fmadd_ps(e[3], _mm512_loadu_ps(x + 16 * w + 48), a3);
    }
    for (; w < nw; w++) {
        unsigned k = m[w];
        __m512 v0 = expand_f32((__mmask16)k, v);
        v += __builtin_popcount(k);
        __m512 xv = w < wf ? _mm512_loadu_ps(x + 16 * w) : _mm512_maskz_loadu_ps((__mmask16)k, x + 16 * w);
        a0 = _mm512_fmadd_ps(v0, xv, a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

INLINE T512 __m512 bf16x16_512(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* x reordered for the BF16 kernel: within every 32 inputs the even ones,
 * then the odd ones (the order in which a 32-value vpexpandw, read as 16
 * dwords, holds them: dword i = bf16 of input 2i in its low half, of input
 * 2i + 1 in its high half):
 *   xp[32b + i] = x[32b + 2i], xp[32b + 16 + i] = x[32b + 2i + 1]
 * for the first n32 blocks of 32 (two vpermt2ps per block: the scalar loop
 * cost about as much as 30 rows of a 70% matrix, paid per row block). */
T512 static void bf16_order_x(float *xp, const float *x, int n32)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int64_t b = 0; b < n32; b++) {
        __m512 lo = _mm512_loadu_ps(x + 32 * b), hi = _mm512_loadu_ps(x + 32 * b + 16);
        _mm512_storeu_ps(xp + 32 * b, _mm512_permutex2var_ps(lo, ev, hi));
        _mm512_storeu_ps(xp + 32 * b + 16, _mm512_permutex2var_ps(lo, od, hi));
    }
}

INLINE T512 __m512i expand_bf16(__mmask32 k, const uint16_t *v)
{
    return _mm512_mask_expand_epi16(zreg512(), k, ld512(v));
}

/* BF16 values: 64 inputs per step, two 32-value vpexpandw; bf16 is the top
 * half of an fp32, so the even inputs of a dword pair are the dword shifted
 * left by 16 and the odd ones the dword with its low half cleared (no
 * shuffle), in the order of bf16_order_x: xp is x in that order for the
 * full steps, x itself serves the remaining words. */
T512 static float row512_bitmap_bf16(const uint16_t *m, const uint16_t *v, const float *x,
                                     const float *xp, int in, int nw)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    int wf = in / 16, w = 0;
    for (; w + 4 <= wf; w += 4) {
        uint64_t k;
        memcpy(&k, m + w, 8);
        if (SPARSE_PF_BF16 > 0) _mm_prefetch((const char *)(v + SPARSE_PF_BF16), _MM_HINT_T0);
        int p2 = __builtin_popcountll(k & 0xffffffffull);
        __m512i e0 = expand_bf16((__mmask32)k, v), e1 = expand_bf16((__mmask32)(k >> 32), v + p2);
        v += __builtin_popcountll(k);
        a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(e0, 16)),
                             _mm512_loadu_ps(xp + 16 * w), a0);
        a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(e0, hi)),
                             _mm512_loadu_ps(xp + 16 * w + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(e1, 16)),
                             _mm512_loadu_ps(xp + 16 * w + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(e1, hi)),
                             _mm512_loadu_ps(xp + 16 * w + 48), a3);
    }
    for (; w < nw; w++) {
        unsigned k = m[w];
        __m256i h0 = _mm256_maskz_expand_epi16((__mmask16)k, _mm256_loadu_si256((const void *)v));
        v += __builtin_popcount(k);
        a0 = _mm512_fmadd_ps(bf16x16_512(h0), _mm512_maskz_loadu_ps((__mmask16)k, x + 16 * w),
                             a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* Per-thread scratch (grows, kept for the thread; 64-byte aligned): the
 * reordered x, one slot per matrix of a group (sparse_matvec_group), and
 * the calling thread's aligned copy of x (matvec_rows, XA_SLOT). */
static _Thread_local float *xp_buf[SPARSE_GROUP_MAX + 1];
static _Thread_local size_t xp_cap[SPARSE_GROUP_MAX + 1];
#define XA_SLOT SPARSE_GROUP_MAX

static float *xp_scratch(int slot, size_t n)
{
    if (n > xp_cap[slot]) {
        core_free(xp_buf[slot]);
        xp_cap[slot] = n + 1024;
        xp_buf[slot] = core_calloc(xp_cap[slot], sizeof(float));
    }
    return xp_buf[slot];
}

T512 static float row512_csr(const sparse_matrix *s, int64_t o, const float *x)
{
    const float *v = s->vals;
    int64_t p = s->rowptr[o], e = s->rowptr[o + 1];
    __m512 a0 = _mm512_setzero_ps();
    for (; p + 16 <= e; p += 16) {
        __m512i ix = s->idx16
                         ? _mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)(s->idx16 + p)))
                         : _mm512_loadu_si512((const void *)(s->idx32 + p));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + p), _mm512_i32gather_ps(ix, x, 4), a0);
    }
    if (p < e) {
        __mmask16 k = (__mmask16)((1u << (e - p)) - 1);
        __m512i ix = s->idx16 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, s->idx16 + p))
                              : _mm512_maskz_loadu_epi32(k, s->idx32 + p);
        __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, ix, x, 4);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, v + p), xv, a0);
    }
    return _mm512_reduce_add_ps(a0);
}

/* y[o] = (acc ? y[o] : 0) + row o . x for o in [o0, o1); s unpanelled;
 * xp: x in the order of bf16_order_x (prep512) for a BF16 bitmap. */
T512 static void rows512(float *y, const sparse_matrix *s, const float *x, const float *xp,
                         int o0, int o1, int acc)
{
    if (s->fmt == SPARSE_FORMAT_NM24) {
        sparse_nm_rows512(y, s, x, o0, o1, acc);
        return;
    }
    for (int64_t o = o0; o < o1; o++) {
        float r = 0.0f;
        switch (s->fmt) {
        case SPARSE_FORMAT_BITMAP:
            if (s->ilptr)
                r = row512_bitmap_f32(sparse_row_mask(s, o), sparse_row_vals(s, o), x, s->in,
                                      s->nw, 1);
            else
                r = row512_bitmap_f32(sparse_row_mask(s, o), sparse_row_vals(s, o), x, s->in,
                                      s->nw, 0);
            break;
        case SPARSE_FORMAT_BITMAP_BF16:
            r = row512_bitmap_bf16(sparse_row_mask(s, o), sparse_row_vals(s, o), x, xp, s->in,
                                   s->nw);
            break;
        case SPARSE_FORMAT_CSR: r = row512_csr(s, o, x); break;
        case SPARSE_FORMAT_NM24: break; /* sparse_nm_rows512 above */
        }
        y[o] = acc ? y[o] + r : r;
    }
}

typedef void (*rows_fn)(float *y, const sparse_matrix *s, const float *x, const float *xp,
                        int o0, int o1, int acc);
/* The calling thread's copy of x prepared for the rows function (NULL: x
 * as it is), made once per call and thread, at [c0, c0 + in) for every
 * piece starting at input c0. */
typedef const float *(*prep_fn)(const sparse_matrix *s, const float *x, int slot);

/* prep_fn of rows512: a BF16 bitmap reads x reordered (bf16_order_x) in
 * the full 64-input steps of every piece; the reorder was done per row
 * block and panel before (16-32 times per call and thread). */
T512 static const float *prep512(const sparse_matrix *s, const float *x, int slot)
{
    if (s->fmt != SPARSE_FORMAT_BITMAP_BF16) return NULL;
    float *b = xp_scratch(slot, (size_t)s->in);
    for (int p = 0; p < sparse_npieces(s); p++) {
        int c0;
        const sparse_matrix *q = sparse_piece(s, p, &c0);
        bf16_order_x(b + c0, x + c0, q->in / 64 * 2);
    }
    return b;
}

/* The matvec driver: threads take blocks of rows from a
 * shared counter (dynamic schedule), each block through every panel of a
 * panelled matrix (no barrier: a block's rows belong to one thread, so a
 * row's result does not depend on the thread count or the schedule).  A
 * static half per thread made a call wait for the later of the two
 * threads, and a worker woken from sleep (after a pause between calls) or
 * sharing its core with another process starts late: on the shared 2-core
 * VM under load 8, the second thread of an OpenMP region entered after a
 * single-threaded 128 MB cache flush started a median 4.7 ms after the
 * first (p25 2.1 ms), against about 0.3 ms for a whole 4096 x 4096 70%
 * call at memory speed.  Now the thread that runs takes the blocks the
 * late one has not reached.
 * Blocks are SPARSE_MV_BLOCK rows, halved down to SPARSE_MV_ROWS while
 * there are fewer than 4 per thread: every block starts a new stretch of
 * values and bitmap in each panel, whose first lines the software prefetch
 * (prefetch64) has not covered, so 256-row blocks took 5-12% less time per
 * call than 64-row ones at 2 threads (best of 7-9 x 15 calls, 70% fp32,
 * the three 7B shapes; 128 and 512 in between / no better); prefetching
 * the start of the next panel at each block instead did not help. */
static int matvec_block(const sparse_matrix *s, int nt)
{
    int blk = SPARSE_MV_BLOCK;
    while (blk > SPARSE_MV_ROWS && (s->out + blk - 1) / blk < 4 * nt) blk /= 2;
    return blk;
}

/* y[k] = s[k] x for k < n (sparse_matvec_group): the blocks of every
 * matrix, in order, on one dynamic schedule, so that a thread done with
 * one matrix's blocks goes on with the next one's instead of waiting at
 * the end of its region for the other's last block (one fork, join and
 * tail per group instead of per matrix).  Each matrix has the blocks it
 * has alone, and each row is computed as alone. */
static void matvec_rows(float *const *y, const sparse_matrix *const *s, int n, const float *x0,
                        rows_fn rows, prep_fn prep)
{
#ifdef _OPENMP
    int nt = omp_get_max_threads();
#else
    int nt = 1;
#endif
    int blk[SPARSE_GROUP_MAX], first[SPARSE_GROUP_MAX + 1];
    int64_t work = 0;
    first[0] = 0;
    for (int k = 0; k < n; k++) {
        blk[k] = matvec_block(s[k], nt);
        first[k + 1] = first[k] + (s[k]->out + blk[k] - 1) / blk[k];
        work += (int64_t)s[k]->out * s[k]->in;
    }
    /* x not on a 64-byte line: the threads read a copy that is (the
     * calling thread's scratch), since every 64-byte load of x would
     * otherwise span two lines (fp32 bitmap, 70%, 1024 x 4096, one thread,
     * x 16 bytes off a line: 15-20% slower).  The group shares in. */
    const float *x = x0;
    if ((uintptr_t)x0 & 63) {
        float *b = xp_scratch(XA_SLOT, (size_t)s[0]->in);
        memcpy(b, x0, (size_t)s[0]->in * sizeof(float));
        x = b;
    }
#pragma omp parallel if (work > SPARSE_PAR_MIN)
    {
        const float *xp[SPARSE_GROUP_MAX];
        for (int k = 0; k < n; k++) xp[k] = prep ? prep(s[k], x, k) : NULL;
#pragma omp for schedule(dynamic, 1) nowait
        for (int g = 0; g < first[n]; g++) {
            int k = 0;
            while (g >= first[k + 1]) k++;
            const sparse_matrix *m = s[k];
            int o0 = (g - first[k]) * blk[k];
            int o1 = o0 + blk[k] < m->out ? o0 + blk[k] : m->out;
            for (int p = 0; p < sparse_npieces(m); p++) {
                int c0;
                const sparse_matrix *q = sparse_piece(m, p, &c0);
                rows(y[k], q, x + c0, xp[k] ? xp[k] + c0 : NULL, o0, o1, p > 0);
            }
        }
    }
}

void sparse_matvec_group_avx512(float *const *y, const sparse_matrix *const *s, int n,
                                const float *x)
{
    matvec_rows(y, s, n, x, rows512, prep512);
}

/* Small batches (2-16 rows of X) on the fp32 bitmap: the matvec kernel
 * for up to 8 vectors at once, so that every row of W is read from memory
 * and expanded once per 8 vectors (the transposed prefill kernel below
 * pays a transpose and, like OpenBLAS at small N, loses the memory-bound
 * advantage).  Y[n * ldy + o] (+)= row o . X[n * ldx + i]. */
INLINE T512 void rows512_multi_nb(float *Y, int64_t ldy, const sparse_matrix *s,
                                  const float *X, int64_t ldx, int o0, int o1, int acc,
                                  const int nb)
{
    int nw = s->nw, wf = s->in / 16;
    for (int64_t o = o0; o < o1; o++) {
        const uint16_t *m = sparse_row_mask(s, o);
        const float *v = sparse_row_vals(s, o);
        __m512 a[8], b[8];
        for (int n = 0; n < nb; n++) a[n] = b[n] = _mm512_setzero_ps();
        int w = 0;
        for (; w + 4 <= wf; w += 4) {
            uint64_t k;
            memcpy(&k, m + w, 8);
            prefetch64(m, w, v, __builtin_popcountll(k));
            __m512 e[4];
            expand64_f32(k, &v, e);
            for (int n = 0; n < nb; n++) {
                const float *xn = X + n * ldx + 16 * w;
                a[n] = _mm512_fmadd_ps(e[0], _mm512_loadu_ps(xn), a[n]);
                b[n] = _mm512_fmadd_ps(e[1], _mm512_loadu_ps(xn + 16), b[n]);
                a[n] = _mm512_fmadd_ps(e[2], _mm512_loadu_ps(xn + 32), a[n]);
                b[n] = _mm512_fmadd_ps(e[3], _mm512_loadu_ps(xn + 48), b[n]);
            }
        }
        for (; w < nw; w++) {
            unsigned k = m[w];
            __m512 e0 = expand_f32((__mmask16)k, v);
            v += __builtin_popcount(k);
            for (int n = 0; n < nb; n++) {
                const float *xn = X + n * ldx + 16 * w;
                __m512 xv = w < wf ? _mm512_loadu_ps(xn) : _mm512_maskz_loadu_ps((__mmask16)k, xn);
                a[n] = _mm512_fmadd_ps(e0, xv, a[n]);
            }
        }
        for (int n = 0; n < nb; n++) {
            float r = _mm512_reduce_add_ps(_mm512_add_ps(a[n], b[n]));
            float *y = Y + n * ldy + o;
            *y = acc ? *y + r : r;
        }
    }
}

T512 static void rows512_multi(float *Y, int64_t ldy, const sparse_matrix *s, const float *X,
                               int64_t ldx, int nb, int o0, int o1, int acc)
{
    if (s->fmt == SPARSE_FORMAT_NM24) {
        sparse_nm_rows512_multi(Y, ldy, s, X, ldx, nb, o0, o1, acc);
        return;
    }
#define NB_CALL(n) rows512_multi_nb(Y, ldy, s, X, ldx, o0, o1, acc, n)
    SPARSE_NB_DISPATCH(nb, NB_CALL)
#undef NB_CALL
}

void sparse_matmul_small_avx512(float *Y, const sparse_matrix *s, const float *X, int N)
{
#pragma omp parallel if ((int64_t)s->out * s->in > SPARSE_PAR_MIN)
    {
        int o0, o1;
        sparse_thread_rows(s->out, &o0, &o1);
        for (int n0 = 0; n0 < N; n0 += 8) {
            int nb = N - n0 < 8 ? N - n0 : 8;
            float *y = Y + (int64_t)n0 * s->out;
            const float *x = X + (int64_t)n0 * s->in;
            for (int p = 0; p < sparse_npieces(s); p++) {
                int c0;
                const sparse_matrix *q = sparse_piece(s, p, &c0);
                rows512_multi(y, s->out, q, x + c0, s->in, nb, o0, o1, p > 0);
            }
        }
    }
}

/* The dense matvec driver (fp32 or bf16 W, by the rows function): blocks
 * of SPARSE_MV_ROWS rows on a dynamic schedule (matvec_rows' blocks are
 * larger: its panels restart their prefetch streams per block). */
typedef void (*dense_rows_fn)(float *y, const void *W, int64_t in, const float *x, int o0,
                              int o1);

static void dense_matvec(float *y, const void *W, int out, int in, const float *x,
                         dense_rows_fn rows)
{
    int nblk = (out + SPARSE_MV_ROWS - 1) / SPARSE_MV_ROWS;
#pragma omp parallel for schedule(dynamic, 1) if ((int64_t)out * in > SPARSE_PAR_MIN)
    for (int b = 0; b < nblk; b++)
        rows(y, W, in, x, b * SPARSE_MV_ROWS,
             b * SPARSE_MV_ROWS + SPARSE_MV_ROWS < out ? b * SPARSE_MV_ROWS + SPARSE_MV_ROWS : out);
}

/* The per-ISA vector wrappers of sparse_x86_tmpl.h, AVX-512. */
#define VWRAP(SUF, TGT, VT, PRE)                                                        \
    typedef VT vec##SUF;                                                                \
    INLINE TGT VT vzero##SUF(void) { return PRE##_setzero_ps(); }                      \
    INLINE TGT VT vset1##SUF(float a) { return PRE##_set1_ps(a); }                     \
    INLINE TGT VT vload##SUF(const float *p) { return PRE##_loadu_ps(p); }             \
    INLINE TGT void vstore##SUF(float *p, VT a) { PRE##_storeu_ps(p, a); }             \
    INLINE TGT VT vfmadd##SUF(VT a, VT b, VT c) { return PRE##_fmadd_ps(a, b, c); }

VWRAP(512, T512, __m512, _mm512)
INLINE T512 __m512 vload_n512(const float *p, int n)
{
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
INLINE T512 float vhsum512(__m512 a) { return _mm512_reduce_add_ps(a); }
INLINE T512 __m512 vload_bf16512(const uint16_t *p)
{
    return bf16x16_512(_mm256_loadu_si256((const void *)p));
}
INLINE T512 __m512 vload_bf16_n512(const uint16_t *p, int n)
{
    return bf16x16_512(_mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1), p));
}

#define VTGT T512
#define VL 16
#define VSUF(name) name##512
#define VDENSE_MATVEC sparse_dense_matvec_avx512
#define VDENSE_MATVEC_BF16 sparse_dense_matvec_bf16_avx512
#include "sparse_x86_tmpl.h"

#define MM_ROWS(NAME, TGT, ROWFN, NVMAX)                                            \
    TGT static void NAME(float *YT, const sparse_matrix *s, const float *XT, int ldt,   \
                         int64_t *rowoff, int o0, int o1, int bb, int c0, int c1,       \
                         int nv)                                                        \
    {                                                                                   \
        for (int64_t o = o0; o < o1; o++) {                                             \
            float *yt = YT + o * ldt + bb;                                              \
            switch (nv) {                                                               \
            case 1: ROWFN(yt, s, XT + bb, ldt, o, rowoff + o, c0, c1, 1); break;        \
            case 2: ROWFN(yt, s, XT + bb, ldt, o, rowoff + o, c0, c1, 2); break;        \
            case 3: ROWFN(yt, s, XT + bb, ldt, o, rowoff + o, c0, c1, 3); break;        \
            case 4: ROWFN(yt, s, XT + bb, ldt, o, rowoff + o, c0, c1, 4); break;        \
            case 5: ROWFN(yt, s, XT + bb, ldt, o, rowoff + o, c0, c1, 5); break;        \
            case 6: ROWFN(yt, s, XT + bb, ldt, o, rowoff + o, c0, c1, 6); break;        \
            case 7: ROWFN(yt, s, XT + bb, ldt, o, rowoff + o, c0, c1, 7); break;        \
            default: ROWFN(yt, s, XT + bb, ldt, o, rowoff + o, c0, c1, NVMAX); break;   \
            }                                                                           \
        }                                                                               \
    }

MM_ROWS(mm512_rows, T512, mm_row512, 8)

#define MM_DRIVER(NAME, ROWS, LANES)                                                    \
    void NAME(float *YT, const sparse_matrix *s, const float *XT, int ldt, int64_t *rowoff) \
    {                                                                                   \
        _Pragma("omp parallel if ((int64_t)s->out * s->in * ldt > SPARSE_PAR_MIN)")      \
        {                                                                               \
            int o0, o1;                                                                 \
            sparse_thread_rows(s->out, &o0, &o1);                                              \
            for (int bb = 0; bb < ldt; bb += SPARSE_NV * (LANES)) {                     \
                int nv = (ldt - bb) / (LANES) < SPARSE_NV ? (ldt - bb) / (LANES) : SPARSE_NV; \
                for (int o = o0; o < o1; o++) rowoff[o] = s->rowptr[o];                 \
                for (int c0 = 0; c0 < s->in; c0 += SPARSE_KC) {                         \
                    int c1 = c0 + SPARSE_KC < s->in ? c0 + SPARSE_KC : s->in;           \
                    ROWS(YT, s, XT, ldt, rowoff, o0, o1, bb, c0, c1, nv);               \
                }                                                                       \
            }                                                                           \
        }                                                                               \
    }

MM_DRIVER(sparse_matmul_t_avx512, mm512_rows, 16)

/* --------------------------------------------------------------- AVX2 */

/* perm[b][j]: for bitmap byte b, the packed position of lane j, or the
 * sign bit alone if bit j is unset: vpermps reads the low 3 bits, and the
 * sign bit selects zero in a blend (one lookup per 8 inputs instead of
 * computing the lane mask from b: broadcast, and, compare). */
static int32_t perm_lut[256][8] __attribute__((aligned(32)));

__attribute__((constructor)) static void perm_lut_init(void)
{
    for (int b = 0; b < 256; b++) {
        int c = 0;
        for (int j = 0; j < 8; j++) perm_lut[b][j] = (b >> j & 1) ? c++ : INT32_MIN;
    }
}

INLINE T256 __m256 expand8_f32(unsigned b, __m256 packed)
{
    __m256i idx = _mm256_load_si256((const void *)perm_lut[b]);
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(packed, idx), _mm256_setzero_ps(),
                            _mm256_castsi256_ps(idx));
}

INLINE T256 float hsum256(__m256 a)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* The 8 packed values at *pv (fp32, or bf16 widened) for bitmap byte b;
 * *pv advances past the popcount of b. */
INLINE T256 __m256 packed8(int bf, const float **pf, const uint16_t **ph, unsigned b)
{
    __m256 p;
    if (bf) {
        p = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)*ph)), 16));
        *ph += __builtin_popcount(b);
    } else {
        p = _mm256_loadu_ps(*pf);
        *pf += __builtin_popcount(b);
    }
    return p;
}

INLINE T256 __m256i lanes_below(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

T256 static float row256_bitmap(const uint16_t *m, const void *vals, int bf, const float *x,
                                int in)
{
    const float *vf = vals;
    const uint16_t *vh = vals;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int wf = in / 16, w = 0;
    for (; w + 2 <= wf; w += 2) { /* 32 inputs, 4 bytes of bitmap per step */
        uint32_t k = (uint32_t)m[w] | (uint32_t)m[w + 1] << 16;
        const float *xw = x + 16 * w;
        a0 = _mm256_fmadd_ps(expand8_f32(k & 0xff, packed8(bf, &vf, &vh, k & 0xff)),
                             _mm256_loadu_ps(xw), a0);
        a1 = _mm256_fmadd_ps(expand8_f32(k >> 8 & 0xff, packed8(bf, &vf, &vh, k >> 8 & 0xff)),
                             _mm256_loadu_ps(xw + 8), a1);
        a2 = _mm256_fmadd_ps(expand8_f32(k >> 16 & 0xff, packed8(bf, &vf, &vh, k >> 16 & 0xff)),
                             _mm256_loadu_ps(xw + 16), a2);
        a3 = _mm256_fmadd_ps(expand8_f32(k >> 24, packed8(bf, &vf, &vh, k >> 24)),
                             _mm256_loadu_ps(xw + 24), a3);
    }
    for (int c = 16 * w; c < in; c += 8) { /* tail: fewer than 32 inputs */
        unsigned b = (m[c / 16] >> (c % 16)) & 0xff;
        __m256 xv = _mm256_maskload_ps(x + c, lanes_below(in - c));
        a0 = _mm256_fmadd_ps(expand8_f32(b, packed8(bf, &vf, &vh, b)), xv, a0);
    }
    return hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

T256 static float row256_csr(const sparse_matrix *s, int64_t o, const float *x)
{
    const float *v = s->vals;
    int64_t p = s->rowptr[o], e = s->rowptr[o + 1];
    __m256 a0 = _mm256_setzero_ps();
    for (; p + 8 <= e; p += 8) {
        __m256i ix = s->idx16 ? _mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)(s->idx16 + p)))
                              : _mm256_loadu_si256((const void *)(s->idx32 + p));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + p), _mm256_i32gather_ps(x, ix, 4), a0);
    }
    float acc = 0.0f;
    for (; p < e; p++) acc += v[p] * x[s->idx16 ? s->idx16[p] : s->idx32[p]];
    return hsum256(a0) + acc;
}

T256 static void rows256(float *y, const sparse_matrix *s, const float *x, const float *xp,
                         int o0, int o1, int acc)
{
    (void)xp; /* no prep_fn */
    if (s->fmt == SPARSE_FORMAT_NM24) {
        sparse_nm_rows256(y, s, x, o0, o1, acc);
        return;
    }
    int bf = s->fmt == SPARSE_FORMAT_BITMAP_BF16;
    for (int64_t o = o0; o < o1; o++) {
        float r;
        if (s->fmt == SPARSE_FORMAT_CSR) {
            r = row256_csr(s, o, x);
        } else {
            r = row256_bitmap(sparse_row_mask(s, o), sparse_row_vals(s, o), bf, x, s->in);
        }
        y[o] = acc ? y[o] + r : r;
    }
}

void sparse_matvec_group_avx2(float *const *y, const sparse_matrix *const *s, int n,
                              const float *x)
{
    matvec_rows(y, s, n, x, rows256, NULL);
}

/* The per-ISA vector wrappers of sparse_x86_tmpl.h, AVX2; dense_rows256
 * serves the sparse path's unpruned maps and head on CPUs without AVX-512. */
VWRAP(256, T256, __m256, _mm256)
INLINE T256 __m256 vload_n256(const float *p, int n) { return _mm256_maskload_ps(p, lanes_below(n)); }
INLINE T256 float vhsum256(__m256 a) { return hsum256(a); }
INLINE T256 __m256 bf16x8_256(__m128i h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
INLINE T256 __m256 vload_bf16256(const uint16_t *p)
{
    return bf16x8_256(_mm_loadu_si128((const void *)p));
}
INLINE T256 __m256 vload_bf16_n256(const uint16_t *p, int n) /* n < 8: no read past p[n-1] */
{
    uint16_t t[8] = {0};
    memcpy(t, p, sizeof(uint16_t) * (size_t)n);
    return vload_bf16256(t);
}

#define VTGT T256
#define VL 8
#define VSUF(name) name##256
#define VDENSE_MATVEC sparse_dense_matvec_avx2
#define VDENSE_MATVEC_BF16 sparse_dense_matvec_bf16_avx2
#include "sparse_x86_tmpl.h"

MM_ROWS(mm256_rows, T256, mm_row256, 8)
MM_DRIVER(sparse_matmul_t_avx2, mm256_rows, 8)

#endif
