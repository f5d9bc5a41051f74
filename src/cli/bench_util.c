/* bench util: what the sparse and decode benches share: pauses between the
 * OpenMP and OpenBLAS thread pools, the cache flush, medians, streaming
 * bandwidth and the magnitude pruning of random test matrices. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

void bench_settle(void)
{
    /* OpenBLAS spins 2^28 cycles (~0.1 s) before sleeping */
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static float *flush_buf;
static size_t flush_n;
static volatile float flush_sink;
static int flush_read; /* bench_flush_read_only */

void bench_flush_init(void)
{
    if (flush_buf) return;
    flush_n = (size_t)1 << 25; /* 128 MB > L3 */
    flush_buf = core_calloc(flush_n, sizeof(float));
    /* written once: a read-only flush of never-written calloc pages would
     * read the one shared zero page and evict nothing */
    for (size_t i = 0; i < flush_n; i += 16) flush_buf[i] = (float)(i & 1024);
}

void bench_flush_read_only(int on)
{
    flush_read = on;
}

void bench_flush_free(void)
{
    core_free(flush_buf);
    flush_buf = NULL;
}

void bench_cache_flush(void)
{
    float acc = 0; /* one thread: no OpenMP spinning next to OpenBLAS threads */
    if (flush_read)
        for (size_t i = 0; i < flush_n; i += 16) acc += flush_buf[i];
    else
        for (size_t i = 0; i < flush_n; i += 16) {
            flush_buf[i] += 1.0f;
            acc += flush_buf[i];
        }
    flush_sink = acc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *x, int n)
{
    if (n <= 0) return 0.0;
    qsort(x, (size_t)n, sizeof x[0], cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

double bench_triad_gbs(int reps)
{
    size_t n = (size_t)1 << 25; /* 128 MB per array */
    float *a = core_calloc(n, sizeof(float)), *b = core_calloc(n, sizeof(float));
    float *c = core_calloc(n, sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        a[i] = 0.0f;
        b[i] = 1.0f;
        c[i] = 2.0f;
    }
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = core_time();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0f * c[i];
        double t = core_time() - t0;
        if (r > 0 && t < best) best = t;
    }
    flush_sink = a[n / 2];
    core_free(a);
    core_free(b);
    core_free(c);
    return 3.0 * n * sizeof(float) / best / 1e9;
}

double bench_read_gbs(int reps)
{
    size_t n = (size_t)1 << 26;
    uint32_t *a = core_calloc(n, sizeof(uint32_t));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (uint32_t)i;
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = core_time();
        uint32_t acc = 0;
#pragma omp parallel for reduction(^ : acc) schedule(static)
        for (size_t i = 0; i < n; i++) acc ^= a[i];
        double t = core_time() - t0;
        flush_sink = (float)acc;
        if (r > 0 && t < best) best = t;
    }
    core_free(a);
    return n * sizeof(uint32_t) / best / 1e9;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void bench_prune_matrix(float *W, int64_t n, double sp, int nm, core_rng *r)
{
    if (nm) { /* drop the 2 smallest of every 4 */
#pragma omp parallel for schedule(static)
        for (int64_t g = 0; g < n / 4 * 4; g += 4)
            for (int k = 0; k < 2; k++) {
                int jmin = -1;
                for (int j = 0; j < 4; j++)
                    if (W[g + j] != 0.0f && (jmin < 0 || fabsf(W[g + j]) < fabsf(W[g + jmin])))
                        jmin = j;
                if (jmin >= 0) W[g + jmin] = 0.0f;
            }
        return;
    }
    int ns = 1 << 20;
    float *smp = core_malloc((size_t)ns, sizeof(float));
    for (int i = 0; i < ns; i++) smp[i] = fabsf(W[core_rng_u64(r) % (uint64_t)n]);
    qsort(smp, (size_t)ns, sizeof(float), cmp_float);
    float thr = smp[(int)(sp * (ns - 1))];
    core_free(smp);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        if (fabsf(W[i]) <= thr) W[i] = 0.0f;
}

void bench_fill_normal(float *x, int64_t n, float std, uint64_t seed)
{
    int64_t ch = 1 << 20;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < (n + ch - 1) / ch; b++) {
        core_rng r;
        core_rng_seed(&r, seed * 1000003ull + (uint64_t)b);
        int64_t e = (b + 1) * ch < n ? (b + 1) * ch : n;
        for (int64_t i = b * ch; i < e; i++) x[i] = std * core_rng_normal(&r);
    }
}

double bench_first_touch_gbs(int reps)
{
    size_t bytes = (size_t)256 << 20;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = core_time();
        float *p = core_calloc(bytes / sizeof(float), sizeof(float)); /* fresh pages, zeroed */
        double t = core_time() - t0;
        flush_sink = p[bytes / sizeof(float) / 2];
        core_free(p);
        if (t < best) best = t;
    }
    return (double)bytes / best / 1e9;
}

void bench_step_shares(const lora_step_stats *ss, int n_layers, double *head, double *fwd)
{
    /* a layer's share of the rest of the step (the step's own work in it) */
    double layer = (ss->busy_seconds - ss->head_seconds - ss->embed_seconds) / n_layers,
           mb = layer * n_layers - ss->update_seconds; /* the layers' micro-batches */
    *head = layer > 0 ? ss->head_seconds / layer : 0;
    /* losa plan runs the step's own work after the pipeline's micro-batches */
    *fwd = layer > 0 && mb > 0 ? (ss->forward_seconds - ss->head_seconds - ss->embed_seconds) / mb
                               : 0;
}
