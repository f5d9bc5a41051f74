/* kernels: the math of the LLaMA decoder as forward/backward pairs (llm.c
 * argument order: outputs, values saved for backward, inputs, weights,
 * dimensions).  Backward functions ACCUMULATE (+=) into their outputs.
 * N = B*T rows; all tensors row-major fp32.  No MPI, no HDF5, no allocation.
 * Every fast kernel has a plain _ref twin (src/kernels/kernels_ref.c,
 * declared at the end) used by the tests.
 */
#ifndef LOSA_KERNELS_H
#define LOSA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Element-wise loops longer than this run on the OpenMP threads (the GEMM
 * engine's pool under oneDNN); each element is computed as in a serial loop
 * and sums keep their serial order, so results do not depend on the thread
 * count. */
#define KERN_PAR_MIN 32768

/* out (N,D) = inp / rms(inp) * w ;  rstd (N) = 1/sqrt(mean(inp^2) + eps) */
void kern_rmsnorm_forward(float *out, float *rstd, const float *inp,
                          const float *w, int64_t N, int D, float eps);
/* dinp (N,D) += d/dinp ; w is frozen (no dw). */
void kern_rmsnorm_backward(float *dinp, const float *dout, const float *inp,
                           const float *w, const float *rstd, int64_t N, int D);

/* ---- GEMM engine (src/kernels/gemm.c): every dense matrix product of the
 * decoder goes through kern_gemm.  C (M,N) = alpha op(A) op(B) + beta C,
 * row-major, op(X) = X^T when its flag is set, leading dimensions as in
 * CBLAS (A is (M,K) or, transposed, stored (K,M) with rows of lda).  The
 * engine is chosen at build time: oneDNN's matmul (make GEMM=onednn, the
 * default; primitives cached per shape) or cblas_sgemm (make GEMM=blas).
 * Not collective.  Threads: OpenMP's (onednn) or OpenBLAS's (blas); called
 * from serial code. */
void kern_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
               int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* "onednn" or "blas". */
const char *kern_gemm_engine(void);
/* Threads of the GEMM engine (and of OpenMP): set / get. */
void kern_gemm_threads(int n);
int kern_gemm_threads_get(void);
/* Primitive cache: entries live, created and evicted since the start (all 0
 * for blas). */
void kern_gemm_cache_stats(int64_t *live, int64_t *created, int64_t *evicted);
/* The seam's own accounting, per process, every engine: the matrix products
 * of the kern_gemm* entries of this section (2 M N K each; a pair counts
 * both), their calls, and the wall seconds the calling threads spent inside
 * them (engine, A's bf16 rounding, a packed B's unpacking; an entry calling
 * another counted once).  The benches read it to split a step into its
 * matrix work and the rest.  Reset and read from serial code. */
typedef struct {
    double flops, seconds;
    int64_t calls;
} kern_gemm_stats;
void kern_gemm_stats_reset(void);
/* Bytes of the thread-local scratch the bf16 products keep (grown on
 * demand, never freed) once they have run with at most `rows` rows of A:
 * k_w the largest K of kern_gemm_bf16w / bf16p / bf16w2 / bf16p_shared (and
 * the larger operand width of kern_gemm_bf16r when r), k_a the largest K
 * of kern_gemm_bf16a (0: not used).  oneDNN: the bf16 copy of A (and of
 * bf16r's B); CBLAS: the fp32 block of B and bf16a's fp32 A.  For plans. */
size_t kern_gemm_bf16_scratch_bytes(int64_t rows, int64_t k_w, int64_t k_a, int r);
void kern_gemm_stats_get(kern_gemm_stats *st);

/* bf16 weights (include/model.h MODEL_DTYPE_BF16): C (M,N) fp32 =
 * alpha A op(B) + beta C with A (M,K) fp32 (rows of lda, not transposed)
 * and B bf16 ((K,N), or (N,K) when tb, rows of ldb), fp32 accumulation.
 * oneDNN: A rounded to bf16 (round to nearest even) into a thread-local
 * scratch and a bf16 x bf16 -> f32 matmul primitive (cached like
 * kern_gemm's, the dtype in the key).  CBLAS: A kept fp32, B converted to
 * fp32 a block of 256 output columns at a time, then cblas_sgemm.  So per
 * entry |C - alpha A op(bf16 B) - beta C0| <= |alpha| sum_k |a_k b_k|
 * (2^-8 + gamma_K) + (few) u32 |beta C0| on either engine.  Not collective;
 * threads and parallel regions as kern_gemm. */
void kern_gemm_bf16w(int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const uint16_t *B, int64_t ldb, float beta, float *C,
                     int64_t ldc);
/* The same with A already bf16 (M,K), rows of lda: no rounding pass.
 * oneDNN: the bf16 x bf16 -> f32 primitive kern_gemm_bf16w uses after its
 * rounding (the same key when lda = K), so kern_gemm_bf16a(A) equals
 * kern_gemm_bf16w(float(A)) bit for bit; CBLAS: A widened to fp32 (exact)
 * into a thread-local scratch, then kern_gemm_bf16w's path.  Bound as
 * kern_gemm_bf16w without A's rounding.  Threads as kern_gemm. */
void kern_gemm_bf16a(int tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t *A,
                     int64_t lda, const uint16_t *B, int64_t ldb, float beta, float *C,
                     int64_t ldc);
/* kern_gemm's C = alpha op(A) op(B) + beta C (transposes and leading
 * dimensions as there) on fp32 operands both rounded to bf16 (round to
 * nearest even, each an error <= 2^-8 relative), fp32 accumulation: for
 * products of two activations, e.g. a bf16 run's weight gradients
 * dout^T inp, at the bf16 rate.  Bound: kern_gemm_bf16w's with the two
 * roundings, |C - exact| <= (2 2^-8 + gamma_K) |alpha| |A||B| + ... .
 * oneDNN: both rounded into thread-local scratch, the bf16 primitive;
 * CBLAS: exactly kern_gemm (unrounded: no bf16 product to gain from).
 * Threads as kern_gemm. */
void kern_gemm_bf16r(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc);
/* Two kern_gemm_bf16w products of one A: C1 = alpha A op(B1) + beta1 C1,
 * C2 = alpha A op(B2) + beta2 C2 (B1, B2 of one shape and ldb; C1, C2 of
 * one ldc; C2 must not overlap A).  Bit for bit the two kern_gemm_bf16w
 * calls; oneDNN rounds A to bf16 once for both. */
void kern_gemm_bf16w2(int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const uint16_t *B1, const uint16_t *B2, int64_t ldb,
                      float beta1, float *C1, float beta2, float *C2, int64_t ldc);
/* Packed bf16 weights: W (N,K) bf16 (the map y = x W^T: N outputs, K
 * inputs) held in the layout the engine's bf16 product reads without a
 * reorder, packed once (kern_bf16_pack) and multiplied as often as wanted
 * (kern_gemm_bf16p).  oneDNN: the layout its matmul picks for weights (K,N)
 * with format_tag any, one per shape (N, K) for the whole process (on
 * AVX512-BF16 blocks of 16 K x 64 N with K pairs interleaved, K padded to
 * 32 and N to 64 with zeros; the same for every row count M); CBLAS: plain
 * row-major (N,K).  The packed values are the plain ones permuted: packing
 * rounds nothing. */
/* Bytes of W (N,K) packed (>= 2 N K: the layout's padding). */
size_t kern_bf16_packed_bytes(int64_t N, int64_t K);
/* dst (kern_bf16_packed_bytes(N, K) bytes) = W (N,K) plain row-major, packed;
 * kern_bf16_unpack is the inverse (for whatever needs the plain layout:
 * writing a store, a transposed product).  Not collective; call from serial
 * code (OpenMP threads inside). */
void kern_bf16_pack(uint16_t *dst, const uint16_t *W, int64_t N, int64_t K);
void kern_bf16_unpack(uint16_t *W, const uint16_t *src, int64_t N, int64_t K);
/* C (M,N) fp32 = alpha A W^T + beta C: A (M,K) fp32 (rows of lda), W (N,K)
 * packed by kern_bf16_pack.  oneDNN: A rounded to bf16 into scratch once
 * per call (oneDNN 2.6 has no f32 x bf16 matmul), then a bf16 x bf16 -> f32
 * matmul primitive on the packed weights (cached per shape like kern_gemm's;
 * if the primitive refused the layout at some M, the weights would be
 * unpacked per call: right, slow).  CBLAS: exactly kern_gemm_bf16w with
 * tb = 1.  Same bound as kern_gemm_bf16w; and the same products as
 * kern_gemm_bf16w(1, ...) on the plain W, summed in fp32 in an order the
 * engine chooses.  Not collective; threads as kern_gemm. */
void kern_gemm_bf16p(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const uint16_t *Wp, float beta, float *C, int64_t ldc);
/* Several products of one input, for the maps that share it (q, k, v of
 * ln1; gate, up of ln2): C_j (M,N_j) = A W_j^T for j < n, A (M,K) fp32 (rows
 * of lda), W_j (N_j,K) packed by kern_bf16_pack, C_j dense (rows of N_j).
 * The same results, bit for bit, as n calls kern_gemm_bf16p(M, N_j, K, 1,
 * A, lda, W_j, 0, C_j, N_j); oneDNN rounds A to bf16 once for all n (the
 * scratch is the thread's, so the C_j must not alias A).  Not collective;
 * threads as kern_gemm. */
void kern_gemm_bf16p_shared(int n, int64_t M, int64_t K, const float *A, int64_t lda,
                            const uint16_t *const *Wp, const int64_t *N, float *const *C);
/* bf16 bits of x, round to nearest even (NaN stays NaN, +-0 stays +-0,
 * overflow goes to +-inf). */
static inline uint16_t kern_bf16_round(float x)
{
    union { float f; uint32_t u; } v = {x};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}
static inline float kern_bf16_value(uint16_t b)
{
    union { uint32_t u; float f; } v = {(uint32_t)b << 16};
    return v.f;
}
/* y = bf16(x), n entries; returns how many non-zero x became (+-)0 (below
 * bf16's smallest subnormal).  OpenMP threads above KERN_PAR_MIN. */
int64_t kern_bf16_from_f32(uint16_t *y, const float *x, int64_t n);
/* The same, except that a non-zero x whose rounding is (+-)0 becomes the
 * smallest bf16 subnormal of its sign (+-2^-133, an error below 2^-133):
 * y == 0 exactly where x == 0, so a zero set (a pruning mask) survives the
 * rounding.  Returns how many were so raised.  OpenMP as above. */
int64_t kern_bf16_from_f32_nz(uint16_t *y, const float *x, int64_t n);
void kern_bf16_to_f32(float *y, const uint16_t *x, int64_t n);

/* out (N,OC) = inp (N,IC) @ W^T, W (OC,IC)  (beta = 0) */
void kern_matmul_forward(float *out, const float *inp, const float *w,
                         int64_t N, int IC, int OC);
/* out (N,OC) += inp (N,IC) @ W^T */
void kern_matmul_forward_acc(float *out, const float *inp, const float *w,
                             int64_t N, int IC, int OC);
/* dinp (N,IC) += dout (N,OC) @ W */
void kern_matmul_backward_inp(float *dinp, const float *dout, const float *w,
                              int64_t N, int IC, int OC);
/* dw (OC,IC) += dout^T (OC,N) @ inp (N,IC) */
void kern_matmul_backward_w(float *dw, const float *dout, const float *inp,
                            int64_t N, int IC, int OC);

/* RoPE tables: cos/sin (T, hd/2), freq_i = theta^(-2i/hd). */
void kern_rope_tables(float *cos_t, float *sin_t, int T, int hd, float theta);
/* In place on x (B,T,nh,hd), rotate-half convention: pairs (i, i + hd/2). */
void kern_rope_forward(float *x, const float *cos_t, const float *sin_t, int B,
                       int T, int nh, int hd);
/* In place: dx = R^T dx (the inverse rotation). */
void kern_rope_backward(float *dx, const float *cos_t, const float *sin_t, int B,
                        int T, int nh, int hd);

/* Grouped-query causal attention, tiled (src/kernels/attention.c): no
 * (T, T) matrix is formed; memory is linear in T.
 * q (B,T,H*hd), k/v (B,T,Hkv*hd) -> out (B,T,H*hd); lse (B,H,T): each
 * query row's log-sum-exp of its scaled scores, kept for backward. */
void kern_attention_forward(float *out, float *lse, const float *q, const float *k,
                            const float *v, int B, int T, int H, int Hkv, int hd);
/* dq, dk, dv += ...; out and lse as the forward returned them (the
 * probabilities are recomputed block by block). */
void kern_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                             const float *lse, const float *q, const float *k, const float *v,
                             int B, int T, int H, int Hkv, int hd);

/* out (n) = silu(gate) * up */
void kern_swiglu_forward(float *out, const float *gate, const float *up,
                         int64_t n);
void kern_swiglu_backward(float *dgate, float *dup, const float *dout,
                          const float *gate, const float *up, int64_t n);
/* The same, written onto 0.0f: bit for bit kern_swiglu_backward on zeroed
 * dgate and dup, without zeroing them first. */
void kern_swiglu_backward_set(float *dgate, float *dup, const float *dout,
                              const float *gate, const float *up, int64_t n);

/* out (N,D) = embed[tokens] */
void kern_embed_forward(float *out, const int *tokens, const float *embed,
                        int64_t N, int D);
/* x (n) = +0.0f: memset over the OpenMP threads (the backward's per-layer
 * gradient buffers, megabytes each, were zeroed by one thread). */
void kern_zero(float *x, int64_t n);
/* x (n) += y */
void kern_add_inplace(float *x, const float *y, int64_t n);

/* Per row of logits (N,V): returns -log softmax(logits)[target] (double);
 * rows with target < 0 give 0. */
double kern_nll_row(const float *logits, int target, int V);
/* dlogits (N,V) += scale * (softmax(logits) - onehot(target)); rows with
 * target < 0 untouched.  Returns the summed NLL of the rows. */
double kern_crossentropy_forward_backward(float *dlogits, const float *logits,
                                          const int *targets, int64_t N, int V,
                                          float scale);
/* dlogits (N,V) = scale * (softmax(logits) - onehot(target)), rows with
 * target < 0 set to 0: every entry written, bit for bit what
 * kern_crossentropy_forward_backward adds to a zeroed dlogits (0.0f + each
 * term, in its order), without the zeroing pass over N V floats (in
 * parallel, not a serial memset).  Returns the same summed NLL. */
double kern_crossentropy_forward_backward_set(float *dlogits, const float *logits,
                                              const int *targets, int64_t N, int V,
                                              float scale);
/* dlogits (N,V) bf16 = bf16(scale * (softmax(logits) - onehot(target))):
 * exactly kern_bf16_round of what kern_crossentropy_forward_backward adds to
 * a zeroed fp32 dlogits (bit for bit); rows with target < 0 set to 0 (every
 * entry written).  Returns the summed NLL, equal to the fp32 kernel's.  For
 * a bf16 head's backward (kern_gemm_bf16a reads it without a rounding pass). */
double kern_crossentropy_forward_backward_bf16(uint16_t *dlogits, const float *logits,
                                               const int *targets, int64_t N, int V,
                                               float scale);

/* ---- _ref twins: textbook formulas in double precision, libm exp/sin/cos,
 * no BLAS and no tables (src/kernels/kernels_ref.c).  Same contracts as the
 * kernels above, except where noted. ---- */
void kern_matmul_forward_ref(float *out, const float *inp, const float *w,
                             int64_t N, int IC, int OC);
void kern_matmul_backward_inp_ref(float *dinp, const float *dout, const float *w,
                                  int64_t N, int IC, int OC);
void kern_matmul_backward_w_ref(float *dw, const float *dout, const float *inp,
                                int64_t N, int IC, int OC);
void kern_rmsnorm_forward_ref(float *out, float *rstd, const float *inp,
                              const float *w, int64_t N, int D, float eps);
/* Recomputes rstd from inp and eps. */
void kern_rmsnorm_backward_ref(float *dinp, const float *dout, const float *inp,
                               const float *w, int64_t N, int D, float eps);
/* Angles t * theta^(-2i/hd) per element instead of kern_rope_tables. */
void kern_rope_forward_ref(float *x, int B, int T, int nh, int hd, float theta);
void kern_rope_backward_ref(float *dx, int B, int T, int nh, int hd, float theta);
void kern_attention_forward_ref(float *out, const float *q, const float *k,
                                const float *v, int B, int T, int H, int Hkv,
                                int hd);
/* Recomputes the probabilities from q and k (no saved att, no scratch). */
void kern_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                                 const float *q, const float *k, const float *v, int B,
                                 int T, int H, int Hkv, int hd);
void kern_swiglu_forward_ref(float *out, const float *gate, const float *up, int64_t n);
void kern_swiglu_backward_ref(float *dgate, float *dup, const float *dout,
                              const float *gate, const float *up, int64_t n);
double kern_nll_row_ref(const float *logits, int target, int V);
double kern_crossentropy_forward_backward_ref(float *dlogits, const float *logits,
                                              const int *targets, int64_t N, int V,
                                              float scale);

#endif
