/* Grouped-query causal attention, tiled (flash-style): the (T, T) score
 * matrix is never formed.  Queries and keys go in blocks of ATT_BLOCK rows;
 * the forward keeps a running maximum and sum per query row (online
 * softmax) and saves only the row's log-sum-exp, from which the backward
 * recomputes each block of probabilities.  Memory beyond q, k, v, out is
 * O(B H T) for the log-sum-exps and O(ATT_BLOCK (ATT_BLOCK + hd)) scratch
 * per thread, instead of the (B, H, T, T) probabilities of the plain
 * version (kern_attention_*_ref, the twin the tests compare with).
 *
 * Work is split over (batch, kv head) pairs with OpenMP: every pair owns
 * its rows of dk / dv and of the grouped query heads' dq, so no two
 * threads write the same element and the result does not depend on the
 * thread count (each pair's arithmetic is sequential and fixed).  The
 * forward's block products are vectorised loops (tile_4x32, on K transposed
 * once per pair); the backward's are cblas_sgemm calls with fixed shapes,
 * small enough (block^2 hd <= 2^18 multiply-adds, att_block) that a threaded
 * BLAS runs them on the calling thread: OpenBLAS starts its own threads
 * above that size, which inside this parallel region made hd = 128 twenty
 * times slower. */
#include "kernels.h"
#include "kern_internal.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define ATT_BLOCK 64

/* Scratch of one thread: scores / probabilities (BLOCK x BLOCK), their
 * gradient, the block's output accumulator (BLOCK x hd), running max / sum
 * and the backward's row dot products. */
typedef struct {
    float *s, *ds, *acc, *m, *l, *dd;
    int bs; /* rows and columns of a block (att_block), <= ATT_BLOCK */
    float *kt;      /* forward: the group's K transposed (hd, kt_ld), grown */
    size_t kt_n;
} att_scratch;

/* The block size for head size hd: the largest power of two <= ATT_BLOCK
 * with bs^2 hd <= 2^18 (OpenBLAS's one-thread limit, m n k <= 65536 x 4). */
static int att_block(int hd)
{
    int bs = ATT_BLOCK;
    while (bs > 8 && (int64_t)bs * bs * hd > (1 << 18)) bs /= 2;
    return bs;
}

static att_scratch scratch_alloc(int hd)
{
    const size_t bb = (size_t)ATT_BLOCK * ATT_BLOCK, bh = (size_t)ATT_BLOCK * hd;
    float *p = core_malloc(2 * bb + bh + 3 * ATT_BLOCK, sizeof(float));
    return (att_scratch){.s = p, .ds = p + bb, .acc = p + 2 * bb, .m = p + 2 * bb + bh,
                         .l = p + 2 * bb + bh + ATT_BLOCK, .dd = p + 2 * bb + bh + 2 * ATT_BLOCK,
                         .bs = att_block(hd)};
}

/* The forward's block products, vectorised in place of cblas_sgemm (whose
 * call and packing cost more than the arithmetic on blocks this small):
 * C (R, W) (=, or += when add) A (R, kd) B (kd, W), rows of lda, ldb, ldc,
 * R = 4 or 1, W = 32 or 16; each entry a chain of fused multiply-adds over
 * k = 0, 1, ... in order (fmaf: the same bits in every clone, for every
 * tile shape and whatever the thread count), R x W accumulators in
 * registers (4 x 32: eight independent vector chains). */
#define TILE_FN(R, W)                                                                      \
    static inline __attribute__((always_inline)) void tile_##R##x##W(                      \
        float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,  \
        int kd, int add)                                                                  \
    {                                                                                     \
        float acc[R][W];                                                                  \
        for (int i = 0; i < R; i++)                                                       \
            for (int j = 0; j < W; j++) acc[i][j] = add ? c[i * ldc + j] : 0.0f;          \
        for (int k = 0; k < kd; k++) {                                                    \
            const float *bk = b + k * ldb;                                                \
            for (int i = 0; i < R; i++) {                                                 \
                float av = a[i * lda + k];                                                \
                _Pragma("omp simd") for (int j = 0; j < W; j++)                           \
                    acc[i][j] = fmaf(av, bk[j], acc[i][j]);                               \
            }                                                                             \
        }                                                                                 \
        for (int i = 0; i < R; i++)                                                       \
            for (int j = 0; j < W; j++) c[i * ldc + j] = acc[i][j];                       \
    }
TILE_FN(4, 32)
TILE_FN(1, 32)
TILE_FN(4, 16)
TILE_FN(1, 16)
#undef TILE_FN

/* The same for W = 8, R = 8 or 1 (8 x 8: eight independent 8-wide chains,
 * for the P V columns of head sizes 8, 24, 40, ...), on vectors written
 * out: GCC 12 fully unrolls an 8-iteration loop before it vectorises loops,
 * and the loop form above then ran scalar (vfmaddss in the profile).  Vector
 * arithmetic has no fused multiply-add short of target intrinsics, and
 * -std=c11 does not contract, so each step is a rounded product and a
 * rounded sum (the same bits in every clone, but not those of the fmaf
 * tiles: a head size of 8 or 24 sums P V in products rounded once more,
 * a relative change of 2^-24 per term, well inside the tests' bounds). */
typedef float att_v8 __attribute__((vector_size(32), aligned(4)));
#define TILE8_FN(R)                                                                        \
    static inline __attribute__((always_inline)) void tile_##R##x8(                        \
        float *c, int64_t ldc, const float *a, int64_t lda, const float *b, int64_t ldb,  \
        int kd, int add)                                                                  \
    {                                                                                     \
        att_v8 acc[R];                                                                    \
        for (int i = 0; i < R; i++)                                                       \
            acc[i] = add ? *(const att_v8 *)(c + i * ldc) : (att_v8){0};                  \
        for (int k = 0; k < kd; k++) {                                                    \
            att_v8 bk = *(const att_v8 *)(b + k * ldb);                                   \
            for (int i = 0; i < R; i++) acc[i] += a[i * lda + k] * bk;                    \
        }                                                                                 \
        for (int i = 0; i < R; i++) *(att_v8 *)(c + i * ldc) = acc[i];                    \
    }
TILE8_FN(8)
TILE8_FN(1)
#undef TILE8_FN

/* C (rows, w) as the tiles above, any rows, w = 32, 16 or 8. */
static inline __attribute__((always_inline)) void tile_rows(float *c, int64_t ldc, const float *a,
                                                           int64_t lda, const float *b,
                                                           int64_t ldb, int kd, int rows, int w,
                                                           int add)
{
    int i = 0;
    if (w == 8) {
        for (; i + 8 <= rows; i += 8) tile_8x8(c + i * ldc, ldc, a + i * lda, lda, b, ldb, kd, add);
        for (; i < rows; i++) tile_1x8(c + i * ldc, ldc, a + i * lda, lda, b, ldb, kd, add);
        return;
    }
    for (; i + 4 <= rows; i += 4)
        if (w == 32) tile_4x32(c + i * ldc, ldc, a + i * lda, lda, b, ldb, kd, add);
        else tile_4x16(c + i * ldc, ldc, a + i * lda, lda, b, ldb, kd, add);
    for (; i < rows; i++)
        if (w == 32) tile_1x32(c + i * ldc, ldc, a + i * lda, lda, b, ldb, kd, add);
        else tile_1x16(c + i * ldc, ldc, a + i * lda, lda, b, ldb, kd, add);
}

/* s (ni x nj, ld ATT_BLOCK) = scale * Q_i K_j^T */
static void block_scores(float *s, const float *qi, int qs, const float *kj, int ks, int ni,
                         int nj, int hd, float scale)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, nj, hd, scale, qi, qs, kj, ks, 0.0f,
                s, ATT_BLOCK);
}

/* Columns a query row may see in the key block starting at j0: all of them
 * below the diagonal block, up to and including the row itself on it. */
static inline int visible(int i, int j0, int nj)
{
    int n = i - j0 + 1;
    return n < nj ? n : nj;
}

/* One query block [i0, i0 + ni) of one head: out rows and their lse.  kt
 * is the head's K transposed (hd, ktl), zero beyond T. */
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
static void forward_block(float *ob, float *lse, const float *qb, const float *kt, int64_t ktl,
                          const float *vb, int qs, int ks, int i0, int ni, int hd, float scale,
                          att_scratch *w)
{
    const int hd32 = hd / 32 * 32, hd16 = hd / 16 * 16, hd8 = hd / 8 * 8;
    for (int r = 0; r < ni; r++) w->m[r] = -FLT_MAX, w->l[r] = 0.0f;
    memset(w->acc, 0, sizeof(float) * (size_t)ni * hd);
    for (int j0 = 0; j0 < i0 + ni; j0 += w->bs) {
        int nj = i0 + ni - j0 < w->bs ? i0 + ni - j0 : w->bs;
        /* S = Q_i K_j^T (scaled below), 32 columns at a time (those past nj
         * come from K^T's zero padding and are never read; ATT_BLOCK is a
         * multiple of 32) */
        for (int c0 = 0; c0 < nj; c0 += 32)
            tile_rows(w->s + c0, ATT_BLOCK, qb + (int64_t)i0 * qs, qs, kt + j0 + c0, ktl, hd, ni,
                      32, 0);
        for (int r = 0; r < ni; r++) {
            float *row = w->s + (int64_t)r * ATT_BLOCK;
            int n = visible(i0 + r, j0, nj);
            float mx = w->m[r];
#pragma omp simd
            for (int c = 0; c < n; c++) row[c] *= scale;
#pragma omp simd reduction(max : mx)
            for (int c = 0; c < n; c++) mx = row[c] > mx ? row[c] : mx;
            float corr = expf_neg(w->m[r] - mx), sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int c = 0; c < n; c++) {
                row[c] = expf_neg(row[c] - mx);
                sum += row[c];
            }
            for (int c = n; c < nj; c++) row[c] = 0.0f;
            w->l[r] = w->l[r] * corr + sum;
            w->m[r] = mx;
            float *a = w->acc + (int64_t)r * hd;
#pragma omp simd
            for (int d = 0; d < hd; d++) a[d] *= corr;
        }
        /* acc += P V_j: 32 columns of hd at a time, then 16, then 8 (head
         * sizes 8 and 24 would otherwise run one element at a time), the
         * rest (hd not a multiple of 8) one by one; every entry sums over
         * the key positions in order (the 8-wide tiles without fusing, see
         * tile_8x8) */
        const float *vj = vb + (int64_t)j0 * ks;
        for (int d0 = 0; d0 < hd32; d0 += 32)
            tile_rows(w->acc + d0, hd, w->s, ATT_BLOCK, vj + d0, ks, nj, ni, 32, 1);
        if (hd16 > hd32) tile_rows(w->acc + hd32, hd, w->s, ATT_BLOCK, vj + hd32, ks, nj, ni, 16, 1);
        if (hd8 > hd16) tile_rows(w->acc + hd16, hd, w->s, ATT_BLOCK, vj + hd16, ks, nj, ni, 8, 1);
        for (int r = 0; r < ni; r++)
            for (int d = hd8; d < hd; d++) {
                float t = w->acc[(int64_t)r * hd + d];
                for (int c = 0; c < nj; c++)
                    t = fmaf(w->s[(int64_t)r * ATT_BLOCK + c], vj[(int64_t)c * ks + d], t);
                w->acc[(int64_t)r * hd + d] = t;
            }
    }
    for (int r = 0; r < ni; r++) {
        float inv = 1.0f / w->l[r], *o = ob + (int64_t)(i0 + r) * qs;
        const float *a = w->acc + (int64_t)r * hd;
        for (int d = 0; d < hd; d++) o[d] = a[d] * inv;
        lse[i0 + r] = w->m[r] + logf(w->l[r]);
    }
}

/* The arguments of one call, and the work of one (batch, kv head) pair. */
typedef struct {
    float *out, *dq, *dk, *dv, *lse;
    const float *dout, *q, *k, *v;
    int B, T, H, Hkv, hd;
} att_call;
typedef void (*att_group_fn)(const att_call *c, int b, int kh, att_scratch *w);

/* fn over the (batch, kv head) pairs, in parallel when there is enough work. */
static void each_group(const att_call *c, att_group_fn fn)
{
    int64_t n = (int64_t)c->B * c->Hkv, grp = c->H / c->Hkv;
#pragma omp parallel if (n > 1 && (int64_t)c->T * c->T * c->hd * grp > (1 << 18))
    {
        att_scratch w = scratch_alloc(c->hd);
#pragma omp for schedule(dynamic)
        for (int64_t bk = 0; bk < n; bk++) fn(c, (int)(bk / c->Hkv), (int)(bk % c->Hkv), &w);
        core_free(w.s);
        core_free(w.kt);
    }
}

static void forward_group(const att_call *c, int b, int kh, att_scratch *w)
{
    const int T = c->T, hd = c->hd, qs = c->H * hd, ks = c->Hkv * hd, grp = c->H / c->Hkv;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *kb = c->k + (int64_t)b * T * ks + kh * hd, *vb = c->v + (int64_t)b * T * ks + kh * hd;
    /* K^T (hd, ktl) for the group's heads, zero in the columns past T that
     * the last block's 32-wide tiles read */
    const int64_t ktl = ((int64_t)T + 31) / 32 * 32 + 32;
    size_t need = (size_t)(hd * ktl);
    if (need > w->kt_n) {
        core_free(w->kt);
        w->kt = core_malloc(need, sizeof(float));
        w->kt_n = need;
    }
    for (int d = 0; d < hd; d++) {
        float *row = w->kt + d * ktl;
        for (int t = 0; t < T; t++) row[t] = kb[(int64_t)t * ks + d];
        memset(row + T, 0, sizeof(float) * (size_t)(ktl - T));
    }
    for (int h = kh * grp; h < (kh + 1) * grp; h++)
        for (int i0 = 0; i0 < T; i0 += w->bs)
            forward_block(c->out + (int64_t)b * T * qs + h * hd, c->lse + ((int64_t)b * c->H + h) * T,
                          c->q + (int64_t)b * T * qs + h * hd, w->kt, ktl, vb, qs, ks, i0,
                          T - i0 < w->bs ? T - i0 : w->bs, hd, scale, w);
}

void kern_attention_forward(float *out, float *lse, const float *q, const float *k,
                            const float *v, int B, int T, int H, int Hkv, int hd)
{
    att_call c = {.out = out, .lse = lse, .q = q, .k = k, .v = v,
                  .B = B, .T = T, .H = H, .Hkv = Hkv, .hd = hd};
    each_group(&c, forward_group);
}

/* One (query block, key block) pair of one head's backward. */
typedef struct {
    const float *qb, *kb, *vb, *dob, *lse;
    float *dqb, *dkb, *dvb;
    int qs, ks, hd;
    float scale;
} att_head;

__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
static void backward_pair(const att_head *a, int i0, int ni, int j0, int nj, att_scratch *w)
{
    const int qs = a->qs, ks = a->ks, hd = a->hd;
    block_scores(w->s, a->qb + (int64_t)i0 * qs, qs, a->kb + (int64_t)j0 * ks, ks, ni, nj, hd,
                 a->scale);
    for (int r = 0; r < ni; r++) { /* P = exp(S - lse), 0 above the diagonal */
        float *row = w->s + (int64_t)r * ATT_BLOCK, l = a->lse[i0 + r];
        int n = visible(i0 + r, j0, nj);
#pragma omp simd
        for (int c = 0; c < n; c++) row[c] = expf_neg(row[c] - l);
        for (int c = n; c < nj; c++) row[c] = 0.0f;
    }
    /* dV_j += P^T dO_i ; dP = dO_i V_j^T */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nj, hd, ni, 1.0f, w->s, ATT_BLOCK,
                a->dob + (int64_t)i0 * qs, qs, 1.0f, a->dvb + (int64_t)j0 * ks, ks);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, nj, hd, 1.0f,
                a->dob + (int64_t)i0 * qs, qs, a->vb + (int64_t)j0 * ks, ks, 0.0f, w->ds,
                ATT_BLOCK);
    /* dS = scale P (dP - D_i), D_i = sum_j P_ij dP_ij = dO_i . O_i */
    for (int r = 0; r < ni; r++) {
        const float *p = w->s + (int64_t)r * ATT_BLOCK;
        float *d = w->ds + (int64_t)r * ATT_BLOCK, di = w->dd[r];
#pragma omp simd
        for (int c = 0; c < nj; c++) d[c] = a->scale * p[c] * (d[c] - di);
    }
    /* dQ_i += dS K_j ; dK_j += dS^T Q_i */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, hd, nj, 1.0f, w->ds, ATT_BLOCK,
                a->kb + (int64_t)j0 * ks, ks, 1.0f, a->dqb + (int64_t)i0 * qs, qs);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nj, hd, ni, 1.0f, w->ds, ATT_BLOCK,
                a->qb + (int64_t)i0 * qs, qs, 1.0f, a->dkb + (int64_t)j0 * ks, ks);
}

static void backward_head(const att_head *a, const float *ob, int T, att_scratch *w)
{
    for (int i0 = 0; i0 < T; i0 += w->bs) {
        int ni = T - i0 < w->bs ? T - i0 : w->bs;
        for (int r = 0; r < ni; r++) {
            const float *o = ob + (int64_t)(i0 + r) * a->qs, *g = a->dob + (int64_t)(i0 + r) * a->qs;
            float dot = 0.0f;
            for (int d = 0; d < a->hd; d++) dot += o[d] * g[d];
            w->dd[r] = dot;
        }
        for (int j0 = 0; j0 < i0 + ni; j0 += w->bs)
            backward_pair(a, i0, ni, j0, i0 + ni - j0 < w->bs ? i0 + ni - j0 : w->bs, w);
    }
}

static void backward_group(const att_call *c, int b, int kh, att_scratch *w)
{
    const int T = c->T, hd = c->hd, qs = c->H * hd, ks = c->Hkv * hd, grp = c->H / c->Hkv;
    int64_t qo = (int64_t)b * T * qs, ko = (int64_t)b * T * ks + kh * hd;
    for (int h = kh * grp; h < (kh + 1) * grp; h++) {
        att_head a = {.qb = c->q + qo + h * hd, .kb = c->k + ko, .vb = c->v + ko,
                      .dob = c->dout + qo + h * hd, .lse = c->lse + ((int64_t)b * c->H + h) * T,
                      .dqb = c->dq + qo + h * hd, .dkb = c->dk + ko, .dvb = c->dv + ko,
                      .qs = qs, .ks = ks, .hd = hd, .scale = 1.0f / sqrtf((float)hd)};
        backward_head(&a, c->out + qo + h * hd, T, w);
    }
}

void kern_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                             const float *lse, const float *q, const float *k, const float *v,
                             int B, int T, int H, int Hkv, int hd)
{
    /* out and lse are only read: the casts keep one argument struct */
    att_call c = {.out = (float *)out, .lse = (float *)lse, .dq = dq, .dk = dk, .dv = dv,
                  .dout = dout, .q = q, .k = k, .v = v, .B = B, .T = T, .H = H, .Hkv = Hkv,
                  .hd = hd};
    each_group(&c, backward_group);
}
