/* The physical peak the benches report fractions of: a register-only
 * microkernel of independent multiply-add chains on all the rank's GEMM
 * threads (kern_gemm_threads_get), measured in the same run as the bench.
 *   f32:  16 chains of vfmadd (512-bit on AVX-512, else 256-bit AVX2+FMA),
 *         2 flops per lane per instruction;
 *   bf16: 16 chains of vdpbf16ps (AVX512-BF16): per 32-bit lane, two bf16
 *         products added into an fp32 accumulator: 4 flops per lane.
 * 16 chains cover the latency of 2 pipes x 4+ cycles (and 8 more), so the
 * loop runs at the issue rate: no memory operand, no dependency stalls.
 * GFLOP/s = threads x iterations x flops per iteration / wall time of the
 * parallel region, best of repeated rounds of ~50 ms within the budget. */
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "cli.h"
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define CHAINS 16
/* Runs each chain iters times; returns the flops done (0 when the CPU lacks
 * the instructions).  The accumulators go to a volatile sink so that the
 * loop is kept. */
__attribute__((target("avx512f"))) static double fma512(int64_t iters)
{
    __m512 acc[CHAINS];
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], x, y);
    __m512 s = acc[0];
    for (int j = 1; j < CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * CHAINS * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma256(int64_t iters)
{
    __m256 acc[CHAINS];
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm256_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
    __m256 s = acc[0];
    for (int j = 1; j < CHAINS; j++) s = _mm256_add_ps(s, acc[j]);
    float v[8];
    _mm256_storeu_ps(v, s);
    volatile float sink = v[0];
    (void)sink;
    return (double)iters * CHAINS * 8 * 2;
}

/* bf16 operands 2^-8 (bits 0x3b80): products 2^-16, no overflow, no
 * denormals over any run length. */
__attribute__((target("avx512f,avx512bf16"))) static double dpbf16(int64_t iters)
{
    __m512 acc[CHAINS];
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3b80);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < iters; i++)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, a);
    __m512 s = acc[0];
    for (int j = 1; j < CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * CHAINS * 16 * 4;
}

static double (*peak_kernel(int bf16))(int64_t)
{
    __builtin_cpu_init();
    if (bf16) return __builtin_cpu_supports("avx512bf16") ? dpbf16 : NULL;
    if (__builtin_cpu_supports("avx512f")) return fma512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return fma256;
    return NULL;
}
#else
static double (*peak_kernel(int bf16))(int64_t)
{
    (void)bf16;
    return NULL;
}
#endif

double bench_peak_gflops(int bf16, double seconds)
{
    double (*kern)(int64_t) = peak_kernel(bf16);
    if (!kern) return 0;
    int nt = kern_gemm_threads_get();
    int64_t iters = 1 << 16;
    double best = 0, t_all = core_time();
    do {
        double flops = 0, t = core_time();
#pragma omp parallel num_threads(nt) reduction(+ : flops)
        flops += kern(iters);
        t = core_time() - t;
        if (flops / t / 1e9 > best) best = flops / t / 1e9;
        if (t < 0.05) iters *= 2; /* rounds of >= 50 ms: start-up cost negligible */
    } while (core_time() - t_all < seconds);
    return best;
}

/* fraction_of_physical_peak: of the bf16 peak for a bf16 run (its products
 * run on vdpbf16ps), of the f32 peak otherwise; null without that peak.
 * The matrix_* keys divide the same step time at the GEMM seam: what the
 * products reach while they run, and how much of the step they are. */
void bench_json_peak(struct cJSON *o, double achieved, double sgemm, const char *dtype,
                     const bench_matrix *mx)
{
    double f32 = bench_peak_gflops(0, 0.5), bf16 = bench_peak_gflops(1, 0.5);
    int is_bf16 = !strcmp(dtype, "bf16");
    double peak = is_bf16 ? bf16 : f32;
    core_log("physical peak (%d threads): f32 %.1f GFLOP/s, bf16 %.1f GFLOP/s%s; fraction of "
             "the %s peak %.2f (%s GEMM)\n", kern_gemm_threads_get(), f32, bf16,
             bf16 > 0 ? "" : " (no AVX512-BF16)", is_bf16 ? "bf16" : "f32",
             peak > 0 ? achieved / peak : 0, kern_gemm_engine());
    int has_mx = mx && mx->steps > 0 && mx->gemm.seconds > 0 && mx->seconds > 0;
    double mx_s = 0, mx_gf = 0, mx_share = 0;
    if (has_mx) {
        mx_s = mx->gemm.seconds / mx->steps;
        mx_gf = mx->gemm.flops / mx->gemm.seconds / 1e9;
        mx_share = mx->gemm.seconds / mx->seconds;
        core_log("GEMM seam: %.4f s of %.4f s per step (share %.2f, %lld calls), %.1f GFLOP/s "
                 "while in it; fraction of the %s peak %.2f\n", mx_s, mx->seconds / mx->steps,
                 mx_share, (long long)(mx->gemm.calls / mx->steps), mx_gf,
                 is_bf16 ? "bf16" : "f32", peak > 0 ? mx_gf / peak : 0);
    }
    if (!o) return;
    cJSON_AddStringToObject(o, "dtype", dtype);
    cJSON_AddStringToObject(o, "gemm", kern_gemm_engine());
    cJSON_AddNumberToObject(o, "sgemm_gflops", sgemm);
    cJSON_AddNumberToObject(o, "fraction_of_peak", achieved / sgemm);
    if (f32 > 0) cJSON_AddNumberToObject(o, "peak_gflops_f32", f32);
    else cJSON_AddNullToObject(o, "peak_gflops_f32");
    if (bf16 > 0) cJSON_AddNumberToObject(o, "peak_gflops_bf16", bf16);
    else cJSON_AddNullToObject(o, "peak_gflops_bf16");
    if (peak > 0) cJSON_AddNumberToObject(o, "fraction_of_physical_peak", achieved / peak);
    else cJSON_AddNullToObject(o, "fraction_of_physical_peak");
    if (!mx) return;
    if (has_mx) {
        cJSON_AddNumberToObject(o, "matrix_seconds", mx_s);
        cJSON_AddNumberToObject(o, "matrix_gflops", mx_gf);
        cJSON_AddNumberToObject(o, "matrix_share", mx_share);
    } else {
        cJSON_AddNullToObject(o, "matrix_seconds");
        cJSON_AddNullToObject(o, "matrix_gflops");
        cJSON_AddNullToObject(o, "matrix_share");
    }
    if (has_mx && peak > 0) cJSON_AddNumberToObject(o, "matrix_fraction_of_physical_peak", mx_gf / peak);
    else cJSON_AddNullToObject(o, "matrix_fraction_of_physical_peak");
}

cJSON *bench_rate_json(int json, double achieved, double sgemm, const char *dtype,
                       const bench_matrix *mx, const char *rate_key, double tps, int B, int T,
                       double seconds)
{
    cJSON *o = json ? cJSON_CreateObject() : NULL;
    bench_json_peak(o, achieved, sgemm, dtype, mx);
    if (o) {
        cJSON_AddNumberToObject(o, "tokens_per_s", tps);
        cJSON_AddNumberToObject(o, rate_key, achieved);
        cJSON_AddNumberToObject(o, "batch", B);
        cJSON_AddNumberToObject(o, "seqlen", T);
        cJSON_AddNumberToObject(o, "seconds", seconds);
    }
    return o;
}
