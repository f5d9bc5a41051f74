/* The GEMM engine behind the kern_matmul_* seam (include/kernels.h):
 * C (M,N) = alpha op(A) op(B) + beta C, row-major, CBLAS conventions.
 *
 * Built with -DLOSA_GEMM_ONEDNN (make GEMM=onednn, the default): oneDNN's
 * matmul primitive.  A primitive is made for one (transposes, M, N, K,
 * leading dimensions, alpha, beta, thread count) and kept in a small table
 * (KERN_GEMM_CACHE entries, least recently used evicted), so a training run
 * creates each shape's primitive once: the decoder has a few dozen shapes
 * (maps, head, adapters, attention per sequence length).  alpha is an
 * output scale and beta a sum post-op, both fixed in the primitive.
 *
 * Threading: oneDNN (Debian's build) runs on OpenMP, so a call from serial
 * code uses the caller's omp_get_max_threads() threads (OMP_NUM_THREADS;
 * kern_gemm_threads sets it), the same pool as the OpenMP loops of the other
 * kernels, and a call from inside an OpenMP parallel region would run on
 * the calling thread alone (no caller does that today: the tiled attention
 * calls cblas_sgemm on blocks small enough to stay single-threaded).  The
 * thread count (or "inside a region") is
 * part of the key: oneDNN fixes its work split when the primitive is made.
 * Each thread has its own table (thread-local: engine, stream, primitives,
 * memory objects whose data handles are set per call), so no lock is
 * needed; under MPI each rank is one process with its own tables and pool.
 *
 * Without it (make GEMM=blas): cblas_sgemm, threads from OpenBLAS
 * (OPENBLAS_NUM_THREADS); not called from parallel regions (OpenBLAS's
 * pthreads pool would be shared by the callers). */
#include "kernels.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "core.h"

/* Thread-local scratch, grown on demand and kept: scratch_a the bf16 copy
 * of A (oneDNN) or the fp32 block of B (CBLAS) of the bf16 products;
 * scratch_w a packed B unpacked (oneDNN's fallback, see entry_make). */
typedef struct {
    void *p;
    size_t bytes;
} kern_scratch;
static _Thread_local kern_scratch scratch_a;

static void *scratch_get(kern_scratch *s, size_t bytes)
{
    if (bytes > s->bytes) {
        core_free(s->p);
        s->p = core_malloc(bytes, 1);
        s->bytes = bytes;
    }
    return s->p;
}


/* The seam's accounting (kern_gemm_stats): 2 M N K per product and the wall
 * seconds inside the outermost entry on its calling thread (an entry that
 * calls another, e.g. kern_gemm_bf16w2 -> kern_gemm_bf16w, counts once, by
 * the thread-local depth).  Process-wide sums, added atomically: two clock
 * reads and three atomic adds per call, against products of 10^5 flops or
 * more.  Calls made concurrently from a parallel region (none today) would
 * add overlapping seconds. */
static double stat_flops, stat_seconds;
static int64_t stat_calls;
static _Thread_local int stat_depth;

static double gemm_flops(int64_t M, int64_t N, int64_t K)
{
    return M > 0 && N > 0 && K > 0 ? 2.0 * (double)M * (double)N * (double)K : 0.0;
}

static double stat_enter(void)
{
    return stat_depth++ ? 0.0 : core_time();
}

static void stat_leave(double t0, double flops)
{
    if (--stat_depth) return;
    double dt = core_time() - t0;
#pragma omp atomic
    stat_flops += flops;
#pragma omp atomic
    stat_seconds += dt;
#pragma omp atomic
    stat_calls++;
}

void kern_gemm_stats_reset(void)
{
#pragma omp atomic write
    stat_flops = 0;
#pragma omp atomic write
    stat_seconds = 0;
#pragma omp atomic write
    stat_calls = 0;
}

void kern_gemm_stats_get(kern_gemm_stats *st)
{
#pragma omp atomic read
    st->flops = stat_flops;
#pragma omp atomic read
    st->seconds = stat_seconds;
#pragma omp atomic read
    st->calls = stat_calls;
}

#ifdef LOSA_GEMM_ONEDNN
#if defined(__has_include) && !__has_include(<oneapi/dnnl/dnnl.h>)
#error "oneDNN's <oneapi/dnnl/dnnl.h> was not found: install libdnnl-dev (Debian), point DNNL_DIR at your site's oneDNN, or build with 'make GEMM=blas'"
#endif
#include <oneapi/dnnl/dnnl.h>

static _Thread_local kern_scratch scratch_w;
static _Thread_local kern_scratch scratch_b; /* kern_gemm_bf16r's bf16 B */

#define KERN_GEMM_CACHE 256          /* primitives kept */
#define KERN_GEMM_SLOTS 512          /* hash slots (power of 2, > cache) */

typedef struct {
    int64_t m, n, k, lda, ldb, ldc;
    uint32_t alpha, beta;            /* float bits */
    int ta, tb, nthr;
    int bf16;                        /* 1: A and B bf16 (kern_gemm_bf16w); 2: B in
                                        its packed layout (kern_gemm_bf16p) */
} gemm_key;

typedef struct {
    gemm_key key;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;           /* descriptors fixed, handles set per call */
    /* bf16 == 2 when oneDNN refused the packed layout for this call (or
     * offered only its reference kernel): B is unpacked per call into
     * scratch_w (wplain) by this reorder, then a plain bf16 primitive */
    dnnl_primitive_t unpack;
    dnnl_memory_t wpacked, wplain;
    uint64_t used;                   /* LRU tick; 0 = free */
} gemm_entry;

static _Thread_local struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    gemm_entry e[KERN_GEMM_CACHE];
    int16_t slot[KERN_GEMM_SLOTS];   /* entry index + 1, 0 empty */
    uint64_t tick;
    int64_t created, evicted;
} gc;

#define DNNL_OK(x) dnnl_ok((x), #x, __LINE__)
static void dnnl_ok(dnnl_status_t s, const char *what, int line)
{
    if (s == dnnl_success) return;
    char msg[256];
    snprintf(msg, sizeof msg, "oneDNN status %d in %s", (int)s, what);
    core_fatal(__FILE__, line, msg);
}

static uint64_t key_hash(const gemm_key *k)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the key's bytes */
    const unsigned char *p = (const unsigned char *)k;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* A (M,K) as stored: rows of lda (or its transpose); strides in elements. */
static void md_2d(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int trans, int64_t ld,
                  dnnl_data_type_t dt)
{
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    DNNL_OK(dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides));
}

static void engine_init(void)
{
    if (gc.engine) return;
    DNNL_OK(dnnl_engine_create(&gc.engine, dnnl_cpu, 0));
    DNNL_OK(dnnl_stream_create(&gc.stream, gc.engine, dnnl_stream_default_flags));
}

/* W (N,K) bf16 row-major as oneDNN's weights (K,N): strides (1, K). */
static void md_plain_w(dnnl_memory_desc_t *md, int64_t n, int64_t k)
{
    md_2d(md, k, n, 1, k, dnnl_bf16);
}

/* ---- packed bf16 weights: one layout per weight shape (N, K), process-wide.
 * The layout is the one oneDNN's matmul picks for its weights (K, N) when
 * asked with format_tag any (src bf16 (KERN_BF16_PACK_M, K), dst f32), fixed
 * at the first use of the shape, so that kern_bf16_pack and every later
 * kern_gemm_bf16p of that shape agree.  On AVX512-BF16 (oneDNN 2.6,
 * brg:avx512_core_bf16) it is BA16a64b2a for every M tried (1..4096): blocks
 * of 16 K x 64 N with K pairs interleaved, K padded to 32 and N to 64
 * (zeros).  No bf16 matmul at all: the plain layout. */
#define KERN_BF16_PACK_M 1024
#define KERN_BF16_LAYOUTS 64
static struct {
    int64_t n, k;
    dnnl_memory_desc_t md;
} layouts[KERN_BF16_LAYOUTS];
static int n_layouts;

static dnnl_status_t matmul_pd(dnnl_primitive_desc_t *pd, const dnnl_memory_desc_t *ma,
                               const dnnl_memory_desc_t *mb, const dnnl_memory_desc_t *mc,
                               float alpha, float beta)
{
    dnnl_matmul_desc_t desc;
    DNNL_OK(dnnl_matmul_desc_init(&desc, ma, mb, NULL, mc));
    dnnl_primitive_attr_t attr;
    DNNL_OK(dnnl_primitive_attr_create(&attr));
    if (alpha != 1.0f) DNNL_OK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha));
    if (beta != 0.0f) {
        dnnl_post_ops_t po;
        DNNL_OK(dnnl_post_ops_create(&po));
        DNNL_OK(dnnl_post_ops_append_sum(po, beta));
        DNNL_OK(dnnl_primitive_attr_set_post_ops(attr, po));
        DNNL_OK(dnnl_post_ops_destroy(po));
    }
    dnnl_status_t st = dnnl_primitive_desc_create(pd, &desc, attr, gc.engine, NULL);
    DNNL_OK(dnnl_primitive_attr_destroy(attr));
    return st;
}

static const dnnl_memory_desc_t *bf16_layout(int64_t n, int64_t k)
{
    const dnnl_memory_desc_t *r = NULL;
    engine_init();
#pragma omp critical(kern_bf16_layout)
    {
        for (int i = 0; i < n_layouts && !r; i++)
            if (layouts[i].n == n && layouts[i].k == k) r = &layouts[i].md;
        if (!r) {
            if (n_layouts == KERN_BF16_LAYOUTS)
                core_fatal(__FILE__, __LINE__, "more than 64 packed bf16 weight shapes");
            dnnl_memory_desc_t ma, mb, mc, *md = &layouts[n_layouts].md;
            dnnl_dims_t dw = {k, n};
            md_2d(&ma, KERN_BF16_PACK_M, k, 0, k, dnnl_bf16);
            DNNL_OK(dnnl_memory_desc_init_by_tag(&mb, 2, dw, dnnl_bf16, dnnl_format_tag_any));
            md_2d(&mc, KERN_BF16_PACK_M, n, 0, n, dnnl_f32);
            dnnl_primitive_desc_t pd;
            if (matmul_pd(&pd, &ma, &mb, &mc, 1.0f, 0.0f) == dnnl_success) {
                *md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
                DNNL_OK(dnnl_primitive_desc_destroy(pd));
            } else {
                md_plain_w(md, n, k);
            }
            layouts[n_layouts].n = n;
            layouts[n_layouts].k = k;
            r = md;
            n_layouts++; /* published last: readers scan below n_layouts */
        }
    }
    return r;
}

static void entry_make(gemm_entry *e, const gemm_key *k, float alpha, float beta)
{
    dnnl_memory_desc_t ma, mb, mc;
    dnnl_data_type_t dt = k->bf16 ? dnnl_bf16 : dnnl_f32;
    md_2d(&ma, k->m, k->k, k->ta, k->lda, dt);
    if (k->bf16 == 2) mb = *bf16_layout(k->n, k->k);
    else md_2d(&mb, k->k, k->n, k->tb, k->ldb, dt);
    md_2d(&mc, k->m, k->n, 0, k->ldc, dnnl_f32);
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = matmul_pd(&pd, &ma, &mb, &mc, alpha, beta);
    if (st == dnnl_success && k->bf16 == 2) {
        /* a reference kernel takes any layout, at a hundredth of the speed
         * (oneDNN 2.6 does so for packed weights with a strided C) */
        const char *impl = "";
        DNNL_OK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
        if (!strncmp(impl, "ref", 3)) {
            DNNL_OK(dnnl_primitive_desc_destroy(pd));
            st = dnnl_unimplemented;
        }
    }
    if (st != dnnl_success && k->bf16 == 2) {
        /* the packed layout refused (or only by a reference kernel) for this
         * call: unpack per call, then the plain bf16 primitive (right, slower) */
        dnnl_memory_desc_t mp = mb;
        md_plain_w(&mb, k->n, k->k);
        st = matmul_pd(&pd, &ma, &mb, &mc, alpha, beta);
        dnnl_primitive_desc_t rpd;
        DNNL_OK(dnnl_reorder_primitive_desc_create(&rpd, &mp, gc.engine, &mb, gc.engine, NULL));
        DNNL_OK(dnnl_primitive_create(&e->unpack, rpd));
        DNNL_OK(dnnl_primitive_desc_destroy(rpd));
        DNNL_OK(dnnl_memory_create(&e->wpacked, &mp, gc.engine, DNNL_MEMORY_NONE));
        DNNL_OK(dnnl_memory_create(&e->wplain, &mb, gc.engine, DNNL_MEMORY_NONE));
    }
    DNNL_OK(st);
    DNNL_OK(dnnl_primitive_create(&e->prim, pd));
    DNNL_OK(dnnl_primitive_desc_destroy(pd));
    DNNL_OK(dnnl_memory_create(&e->a, &ma, gc.engine, DNNL_MEMORY_NONE));
    DNNL_OK(dnnl_memory_create(&e->b, &mb, gc.engine, DNNL_MEMORY_NONE));
    DNNL_OK(dnnl_memory_create(&e->c, &mc, gc.engine, DNNL_MEMORY_NONE));
    e->key = *k;
    gc.created++;
}

static void entry_drop(gemm_entry *e)
{
    dnnl_primitive_destroy(e->prim);
    if (e->unpack) {
        dnnl_primitive_destroy(e->unpack);
        dnnl_memory_destroy(e->wpacked);
        dnnl_memory_destroy(e->wplain);
    }
    dnnl_memory_destroy(e->a);
    dnnl_memory_destroy(e->b);
    dnnl_memory_destroy(e->c);
    memset(e, 0, sizeof *e);
}

/* Re-index the live entries (after an eviction: open addressing has no
 * cheap delete, and evictions are rare). */
static void slots_rebuild(void)
{
    memset(gc.slot, 0, sizeof gc.slot);
    for (int i = 0; i < KERN_GEMM_CACHE; i++) {
        if (!gc.e[i].used) continue;
        uint64_t s = key_hash(&gc.e[i].key);
        while (gc.slot[s & (KERN_GEMM_SLOTS - 1)]) s++;
        gc.slot[s & (KERN_GEMM_SLOTS - 1)] = (int16_t)(i + 1);
    }
}

static gemm_entry *entry_get(const gemm_key *k, float alpha, float beta)
{
    engine_init();
    uint64_t s = key_hash(k);
    for (int idx; (idx = gc.slot[s & (KERN_GEMM_SLOTS - 1)]); s++)
        if (!memcmp(&gc.e[idx - 1].key, k, sizeof *k)) {
            gc.e[idx - 1].used = ++gc.tick;
            return &gc.e[idx - 1];
        }
    int victim = 0; /* a free entry, else the least recently used */
    for (int i = 0; i < KERN_GEMM_CACHE; i++)
        if (gc.e[i].used < gc.e[victim].used) victim = i;
    gemm_entry *e = &gc.e[victim];
    if (e->used) {
        entry_drop(e);
        slots_rebuild();
        gc.evicted++;
        s = key_hash(k);
        while (gc.slot[s & (KERN_GEMM_SLOTS - 1)]) s++;
    }
    entry_make(e, k, alpha, beta);
    e->used = ++gc.tick;
    gc.slot[s & (KERN_GEMM_SLOTS - 1)] = (int16_t)(victim + 1);
    return e;
}

static void gemm_onednn(int ta, int tb, int bf16, int64_t M, int64_t N, int64_t K, float alpha,
                        const void *A, int64_t lda, const void *B, int64_t ldb, float beta,
                        float *C, int64_t ldc)
{
    gemm_key k;
    memset(&k, 0, sizeof k); /* padding bytes take part in hash and compare */
    k.m = M, k.n = N, k.k = K, k.lda = lda, k.ldb = ldb, k.ldc = ldc;
    memcpy(&k.alpha, &alpha, 4);
    memcpy(&k.beta, &beta, 4);
    k.ta = ta, k.tb = tb, k.nthr = omp_in_parallel() ? -1 : omp_get_max_threads();
    k.bf16 = bf16;
    gemm_entry *e = entry_get(&k, alpha, beta);
    DNNL_OK(dnnl_memory_set_data_handle(e->a, (void *)A));
    if (e->unpack) { /* B packed, the primitive wants it plain */
        void *w = scratch_get(&scratch_w, sizeof(uint16_t) * (size_t)(N * K));
        DNNL_OK(dnnl_memory_set_data_handle(e->wpacked, (void *)B));
        DNNL_OK(dnnl_memory_set_data_handle(e->wplain, w));
        dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, e->wpacked}, {DNNL_ARG_TO, e->wplain}};
        DNNL_OK(dnnl_primitive_execute(e->unpack, gc.stream, 2, r));
        B = w;
    }
    DNNL_OK(dnnl_memory_set_data_handle(e->b, (void *)B));
    DNNL_OK(dnnl_memory_set_data_handle(e->c, C));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b},
                               {DNNL_ARG_DST, e->c}};
    DNNL_OK(dnnl_primitive_execute(e->prim, gc.stream, 3, args));
    DNNL_OK(dnnl_stream_wait(gc.stream));
}

void kern_gemm_cache_stats(int64_t *live, int64_t *created, int64_t *evicted)
{
    int64_t n = 0;
    for (int i = 0; i < KERN_GEMM_CACHE; i++) n += gc.e[i].used != 0;
    if (live) *live = n;
    if (created) *created = gc.created;
    if (evicted) *evicted = gc.evicted;
}

const char *kern_gemm_engine(void) { return "onednn"; }

int kern_gemm_threads_get(void) { return omp_get_max_threads(); }

#else /* CBLAS */

void kern_gemm_cache_stats(int64_t *live, int64_t *created, int64_t *evicted)
{
    if (live) *live = 0;
    if (created) *created = 0;
    if (evicted) *evicted = 0;
}

const char *kern_gemm_engine(void) { return "blas"; }

int kern_gemm_threads_get(void) { return openblas_get_num_threads(); }
#endif

/* Both pools in both builds: the other kernels' OpenMP loops, and OpenBLAS
 * (still used outside the decoder, e.g. SparseGPT, decode's sgemv). */
void kern_gemm_threads(int n)
{
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

static void gemm_run(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
#ifdef LOSA_GEMM_ONEDNN
    if (K <= 0) { /* oneDNN refuses empty reductions: C = beta C */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    gemm_onednn(ta, tb, 0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    LOSA_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && lda <= INT32_MAX &&
               ldb <= INT32_MAX && ldc <= INT32_MAX);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
#endif
}

void kern_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
               int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    double t0 = stat_enter();
    gemm_run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    stat_leave(t0, gemm_flops(M, N, K));
}

int64_t kern_bf16_from_f32(uint16_t *y, const float *x, int64_t n)
{
    int64_t lost = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : lost) if (n > KERN_PAR_MIN)
    for (int64_t e = 0; e < n; e++) {
        y[e] = kern_bf16_round(x[e]);
        lost += x[e] != 0.0f && (y[e] & 0x7fff) == 0;
    }
    return lost;
}

int64_t kern_bf16_from_f32_nz(uint16_t *y, const float *x, int64_t n)
{
    int64_t raised = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : raised) if (n > KERN_PAR_MIN)
    for (int64_t e = 0; e < n; e++) {
        uint16_t b = kern_bf16_round(x[e]);
        int tiny = x[e] != 0.0f && (b & 0x7fff) == 0;
        y[e] = tiny ? (uint16_t)(b | 1u) : b; /* b is +-0: +-2^-133 keeps the sign */
        raised += tiny;
    }
    return raised;
}

void kern_bf16_to_f32(float *y, const uint16_t *x, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t e = 0; e < n; e++) y[e] = kern_bf16_value(x[e]);
}

#ifndef LOSA_GEMM_ONEDNN
/* CBLAS: B converted to fp32 a block of KERN_BF16_BLOCK output columns at a
 * time (scratch (nb,K) or (K,nb)), A kept fp32. */
#define KERN_BF16_BLOCK 256
static void gemm_bf16w_blas(int tb, int64_t M, int64_t N, int64_t K, float alpha,
                            const float *A, int64_t lda, const uint16_t *B, int64_t ldb,
                            float beta, float *C, int64_t ldc)
{
    int64_t nb = N < KERN_BF16_BLOCK ? N : KERN_BF16_BLOCK;
    float *W = scratch_get(&scratch_a, sizeof(float) * (size_t)(nb * K));
    for (int64_t j0 = 0; j0 < N; j0 += nb) {
        int64_t n = N - j0 < nb ? N - j0 : nb;
        int64_t rows = tb ? n : K, cols = tb ? K : n, off = tb ? j0 * ldb : j0;
#pragma omp parallel for schedule(static) if (rows * cols > KERN_PAR_MIN)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) W[r * cols + c] = kern_bf16_value(B[off + r * ldb + c]);
        kern_gemm(0, tb, M, n, K, alpha, A, lda, W, tb ? K : n, beta, C + j0, ldc);
    }
}
#endif

#ifdef LOSA_GEMM_ONEDNN
/* One row of a_to_bf16: kern_bf16_round in a loop the compiler vectorises
 * (the clones: the build targets plain x86-64; gcc 12 if-converts the
 * inline function's NaN branch, as it did the written-out copy). */
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
static void row_to_bf16(uint16_t *y, const float *x, int64_t K)
{
#pragma omp simd
    for (int64_t k = 0; k < K; k++) y[k] = kern_bf16_round(x[k]);
}

/* A (M,K) fp32 rows of lda rounded to bf16 into the thread's scratch (one
 * parallel loop over all rows, not a region per row). */
static const uint16_t *a_to_bf16(int64_t M, int64_t K, const float *A, int64_t lda)
{
    uint16_t *Ab = scratch_get(&scratch_a, sizeof(uint16_t) * (size_t)(M * K));
#pragma omp parallel for schedule(static) if (M * K > KERN_PAR_MIN)
    for (int64_t i = 0; i < M; i++) row_to_bf16(Ab + i * K, A + i * lda, K);
    return Ab;
}
#endif

static void bf16w_run(int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const uint16_t *B, int64_t ldb, float beta, float *C,
                      int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = beta C */
        kern_gemm(0, tb, M, N, 0, alpha, A, lda, NULL, ldb, beta, C, ldc);
        return;
    }
#ifdef LOSA_GEMM_ONEDNN
    gemm_onednn(0, tb, 1, M, N, K, alpha, a_to_bf16(M, K, A, lda), K, B, ldb, beta, C, ldc);
#else
    gemm_bf16w_blas(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void kern_gemm_bf16w(int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const uint16_t *B, int64_t ldb, float beta, float *C,
                     int64_t ldc)
{
    double t0 = stat_enter();
    bf16w_run(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    stat_leave(t0, gemm_flops(M, N, K));
}

/* kern_gemm_bf16r: both fp32 operands rounded to bf16 (as stored: rows x
 * cols of ld, each rounded row to a contiguous row), then the bf16 x bf16
 * -> f32 primitive with the caller's transposes. */
static void bf16r_run(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                      float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = beta C */
        kern_gemm(ta, tb, M, N, 0, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#ifdef LOSA_GEMM_ONEDNN
    int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    uint16_t *Bb = scratch_get(&scratch_b, sizeof(uint16_t) * (size_t)(br * bc));
#pragma omp parallel for schedule(static) if (br * bc > KERN_PAR_MIN)
    for (int64_t r = 0; r < br; r++) row_to_bf16(Bb + r * bc, B + r * ldb, bc);
    gemm_onednn(ta, tb, 1, M, N, K, alpha, a_to_bf16(ar, ac, A, lda), ac, Bb, bc, beta, C, ldc);
#else
    /* CBLAS has no bf16 product: the fp32 one on the unrounded operands
     * (within the bound; no speed to gain from rounding) */
    kern_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void kern_gemm_bf16r(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc)
{
    double t0 = stat_enter();
    bf16r_run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    stat_leave(t0, gemm_flops(M, N, K));
}

#ifndef LOSA_GEMM_ONEDNN
static _Thread_local kern_scratch scratch_af; /* kern_gemm_bf16a's fp32 A (CBLAS) */
#endif

static void bf16a_run(int tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t *A,
                      int64_t lda, const uint16_t *B, int64_t ldb, float beta, float *C,
                      int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = beta C */
        kern_gemm(0, tb, M, N, 0, alpha, NULL, lda, NULL, ldb, beta, C, ldc);
        return;
    }
#ifdef LOSA_GEMM_ONEDNN
    gemm_onednn(0, tb, 1, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    float *Af = scratch_get(&scratch_af, sizeof(float) * (size_t)(M * K));
#pragma omp parallel for schedule(static) if (M * K > KERN_PAR_MIN)
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < K; k++) Af[i * K + k] = kern_bf16_value(A[i * lda + k]);
    gemm_bf16w_blas(tb, M, N, K, alpha, Af, K, B, ldb, beta, C, ldc);
#endif
}

void kern_gemm_bf16a(int tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t *A,
                     int64_t lda, const uint16_t *B, int64_t ldb, float beta, float *C,
                     int64_t ldc)
{
    double t0 = stat_enter();
    bf16a_run(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    stat_leave(t0, gemm_flops(M, N, K));
}

#ifdef LOSA_GEMM_ONEDNN
/* W (N,K) plain <-> packed (the shape's layout), one oneDNN reorder: a pure
 * permutation of the bf16 values (the padding of dst zeroed first). */
static void bf16_reorder(void *dst, const void *src, int64_t N, int64_t K, int pack)
{
    const dnnl_memory_desc_t *mp = bf16_layout(N, K);
    dnnl_memory_desc_t mu;
    md_plain_w(&mu, N, K);
    const dnnl_memory_desc_t *from = pack ? &mu : mp, *to = pack ? mp : &mu;
    if (pack) memset(dst, 0, dnnl_memory_desc_get_size(mp));
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t r;
    dnnl_memory_t ms, md;
    DNNL_OK(dnnl_reorder_primitive_desc_create(&pd, from, gc.engine, to, gc.engine, NULL));
    DNNL_OK(dnnl_primitive_create(&r, pd));
    DNNL_OK(dnnl_primitive_desc_destroy(pd));
    DNNL_OK(dnnl_memory_create(&ms, from, gc.engine, (void *)src));
    DNNL_OK(dnnl_memory_create(&md, to, gc.engine, dst));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    DNNL_OK(dnnl_primitive_execute(r, gc.stream, 2, args));
    DNNL_OK(dnnl_stream_wait(gc.stream));
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(md);
    dnnl_primitive_destroy(r);
}
#endif

size_t kern_bf16_packed_bytes(int64_t N, int64_t K)
{
    if (N <= 0 || K <= 0) return 0;
#ifdef LOSA_GEMM_ONEDNN
    return dnnl_memory_desc_get_size(bf16_layout(N, K));
#else
    return sizeof(uint16_t) * (size_t)(N * K);
#endif
}

/* kern_bf16_pack (to_packed = 1) and kern_bf16_unpack (0). */
static void bf16_relayout(uint16_t *dst, const uint16_t *src, int64_t N, int64_t K, int to_packed)
{
    if (N <= 0 || K <= 0) return;
#ifdef LOSA_GEMM_ONEDNN
    bf16_reorder(dst, src, N, K, to_packed);
#else
    (void)to_packed;
    memcpy(dst, src, sizeof(uint16_t) * (size_t)(N * K));
#endif
}

void kern_bf16_pack(uint16_t *dst, const uint16_t *W, int64_t N, int64_t K)
{
    bf16_relayout(dst, W, N, K, 1);
}

void kern_bf16_unpack(uint16_t *W, const uint16_t *src, int64_t N, int64_t K)
{
    bf16_relayout(W, src, N, K, 0);
}

static void bf16p_run(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const uint16_t *Wp, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = beta C */
        kern_gemm(0, 1, M, N, 0, alpha, A, lda, NULL, 1, beta, C, ldc);
        return;
    }
#ifdef LOSA_GEMM_ONEDNN
    gemm_onednn(0, 1, 2, M, N, K, alpha, a_to_bf16(M, K, A, lda), K, Wp, K, beta, C, ldc);
#else
    gemm_bf16w_blas(1, M, N, K, alpha, A, lda, Wp, K, beta, C, ldc);
#endif
}

void kern_gemm_bf16p(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const uint16_t *Wp, float beta, float *C, int64_t ldc)
{
    double t0 = stat_enter();
    bf16p_run(M, N, K, alpha, A, lda, Wp, beta, C, ldc);
    stat_leave(t0, gemm_flops(M, N, K));
}

static void bf16w2_run(int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const uint16_t *B1, const uint16_t *B2, int64_t ldb,
                       float beta1, float *C1, float beta2, float *C2, int64_t ldc)
{
#ifdef LOSA_GEMM_ONEDNN
    if (M > 0 && N > 0 && K > 0) { /* A rounded once, both products on it */
        const uint16_t *Ab = a_to_bf16(M, K, A, lda);
        gemm_onednn(0, tb, 1, M, N, K, alpha, Ab, K, B1, ldb, beta1, C1, ldc);
        gemm_onednn(0, tb, 1, M, N, K, alpha, Ab, K, B2, ldb, beta2, C2, ldc);
        return;
    }
#endif
    kern_gemm_bf16w(tb, M, N, K, alpha, A, lda, B1, ldb, beta1, C1, ldc);
    kern_gemm_bf16w(tb, M, N, K, alpha, A, lda, B2, ldb, beta2, C2, ldc);
}

void kern_gemm_bf16w2(int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const uint16_t *B1, const uint16_t *B2, int64_t ldb,
                      float beta1, float *C1, float beta2, float *C2, int64_t ldc)
{
    double t0 = stat_enter();
    bf16w2_run(tb, M, N, K, alpha, A, lda, B1, B2, ldb, beta1, C1, beta2, C2, ldc);
    stat_leave(t0, 2 * gemm_flops(M, N, K));
}

static void bf16p_shared_run(int n, int64_t M, int64_t K, const float *A, int64_t lda,
                             const uint16_t *const *Wp, const int64_t *N, float *const *C)
{
#ifdef LOSA_GEMM_ONEDNN
    if (M > 0 && K > 0) {
        const uint16_t *Ab = a_to_bf16(M, K, A, lda);
        for (int j = 0; j < n; j++)
            if (N[j] > 0) gemm_onednn(0, 1, 2, M, N[j], K, 1.0f, Ab, K, Wp[j], K, 0.0f, C[j], N[j]);
        return;
    }
#endif
    for (int j = 0; j < n; j++) kern_gemm_bf16p(M, N[j], K, 1.0f, A, lda, Wp[j], 0.0f, C[j], N[j]);
}

void kern_gemm_bf16p_shared(int n, int64_t M, int64_t K, const float *A, int64_t lda,
                            const uint16_t *const *Wp, const int64_t *N, float *const *C)
{
    double t0 = stat_enter(), flops = 0;
    for (int j = 0; j < n; j++) flops += gemm_flops(M, N[j], K);
    bf16p_shared_run(n, M, K, A, lda, Wp, N, C);
    stat_leave(t0, flops);
}

size_t kern_gemm_bf16_scratch_bytes(int64_t rows, int64_t k_w, int64_t k_a, int r)
{
#ifdef LOSA_GEMM_ONEDNN
    (void)k_a; /* bf16 A: no copy */
    size_t a = core_alloc_bytes((size_t)(rows * k_w), sizeof(uint16_t)); /* scratch_a */
    return r ? 2 * a : a; /* kern_gemm_bf16r's B: scratch_b, as large */
#else
    (void)r; /* kern_gemm_bf16r is kern_gemm here */
    return core_alloc_bytes((size_t)(KERN_BF16_BLOCK * k_w), sizeof(float)) + /* B's block */
           (k_a > 0 ? core_alloc_bytes((size_t)(rows * k_a), sizeof(float)) : 0); /* bf16a's A */
#endif
}
