/* cli: the losa subcommands.  Each cmd_<name> runs on every rank (they are
 * collective over MPI_COMM_WORLD), parses its own arguments, and returns 0 on
 * success.  Errors are agreed with dist_agree() so every rank stops together
 * and rank 0 prints one line. */
#ifndef LOSA_CLI_H
#define LOSA_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "core.h"
#include "dist.h"

typedef int (*cli_cmd_fn)(dist_ctx *d, int argc, char **argv);

int cmd_import(dist_ctx *d, int argc, char **argv);
int cmd_info(dist_ctx *d, int argc, char **argv);
int cmd_eval(dist_ctx *d, int argc, char **argv);
int cmd_generate(dist_ctx *d, int argc, char **argv);
int cmd_bench(dist_ctx *d, int argc, char **argv);
int cmd_prune(dist_ctx *d, int argc, char **argv);
int cmd_finetune(dist_ctx *d, int argc, char **argv);
int cmd_run(dist_ctx *d, int argc, char **argv);
int cmd_export(dist_ctx *d, int argc, char **argv);
int cmd_synth(dist_ctx *d, int argc, char **argv);
int cmd_plan(dist_ctx *d, int argc, char **argv);
int cmd_sparsify(dist_ctx *d, int argc, char **argv);

/* Shared option helpers. */
/* Returns the value after flag at argv[*i] ("--flag V" or "--flag=V"), or NULL
 * if argv[*i] is not that flag; advances *i past a separate value. */
const char *cli_opt(int argc, char **argv, int *i, const char *flag);
/* Report a failure on every rank: agrees on status s and prints the message
 * once (rank 0): "losa <cmd>: <message>".  Returns the exit code (0 if OK). */
int cli_fail(dist_ctx *d, const char *cmd, losa_status s);
/* Rank 0 prints "losa <cmd>: <message>" on stderr; the message is kept for
 * the --json error object.  Not collective.  Returns rc. */
int cli_error(dist_ctx *d, const char *cmd, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Strict numbers for flag values: the whole string must be one decimal
 * integer (or finite number) in [lo, hi]; else LOSA_ERR_ARG with
 * "<flag>: expected an integer in [lo, hi], got '<s>'".  *out is written
 * only on success.  Not collective. */
losa_status cli_int(const char *flag, const char *s, long lo, long hi, int *out);
losa_status cli_u64(const char *flag, const char *s, uint64_t *out);
losa_status cli_double(const char *flag, const char *s, double lo, double hi, double *out);
losa_status cli_float(const char *flag, const char *s, double lo, double hi, float *out);
/* "AsepB" with A and B strict integers in [lo, hi] ("4096x11008", "2:4"). */
losa_status cli_int_pair(const char *flag, const char *s, char sep, long lo, long hi, int *a,
                         int *b);
/* A fraction in [0, 1) (sparsity, dropout). */
losa_status cli_fraction(const char *flag, const char *s, double *out);

/* --help and --json, seen by main before dispatch (help.c). */
typedef struct {
    const char *flag;  /* "--seqlen" */
    const char *arg;   /* "S", or NULL for a switch */
    const char *def;   /* default, or NULL */
    const char *desc;
} cli_flag;
typedef struct {
    const char *name;     /* "eval", "bench sparse" */
    const char *usage;    /* after "losa " */
    const char *summary;  /* one line */
    const cli_flag *flags; /* ends with {NULL} */
} cli_help;
/* The help of command cmd (sub: the bench sub-benchmark or NULL), or NULL. */
const cli_help *cli_help_find(const char *cmd, const char *sub);
void cli_help_print(FILE *f, const cli_help *h);
/* The list of commands (losa help). */
void cli_help_list(FILE *f);
/* 1 if arg is a flag of h that takes a separate value ("--seqlen", not
 * "--seqlen=64"). */
int cli_help_takes_value(const cli_help *h, const char *arg);
/* --json error objects: main tells whether --json was given; after a
 * failure with no JSON object printed, rank 0 prints
 * {"error": "<last message>", "code": rc} on stdout. */
void cli_json_mode(int on);
void cli_json_error(dist_ctx *d, int rc);



#include "deck.h"
#include "kernels.h"
#include "model.h"
#include "tok.h"

/* Collective: rank 0 reads the file, everyone receives its bytes. */
losa_status cli_bcast_file(dist_ctx *d, const char *path, char **data,
                           size_t *size);
/* Collective: read deck `path` (rank 0), parse on every rank, apply every
 * "--set k=v" of argv; errors agreed. */
losa_status cli_load_deck(dist_ctx *d, const char *path, int argc, char **argv,
                          deck **dk);
/* Collective: open the store, build this rank's stage in d's layout, read
 * its weights (and the tokenizer, if tok != NULL). */
losa_status cli_load_model(dist_ctx *d, const char *path, model_stage *st,
                           tok_tokenizer *tok);
/* The same with the stage built in dtype t (model_stage_build_dtype): bf16
 * reads a bf16 store's maps as they are and rounds an fp32 store's map by
 * map, never holding the fp32 maps, then packs them and the head for the
 * forward (model_stage_pack_bf16); logs as cli_stage_to_bf16. */
losa_status cli_load_model_dtype(dist_ctx *d, const char *path, model_dtype t, model_stage *st,
                                 tok_tokenizer *tok);
/* The same without packing: a bf16 stage keeps its plain row-major maps
 * and head rows, the layout pruning, merging and store writes need
 * (the forward multiplies them with kern_gemm_bf16w).  fp32: cli_load_model.
 * Logs the bf16 maps and the non-zero weights that rounded to zero. */
losa_status cli_load_model_plain(dist_ctx *d, const char *path, model_dtype t, model_stage *st,
                                 tok_tokenizer *tok);
/* Collective: the stage's maps to bf16.  decode = 0: the forward's layout,
 * maps and head packed for the GEMM engine (model_stage_pack_bf16); decode
 * = 1: plain maps and the head in bf16 rows (model_stage_to_bf16),
 * for the decode step's matvecs and the prefill.  Logs the weights
 * and the non-zero weights that rounded to zero (summed over ranks); frees
 * the stage on failure. */
losa_status cli_stage_to_bf16(dist_ctx *d, model_stage *st, int decode);
/* Collective: sparse copies of st's maps (model_sparse_build_from), taking
 * the copies kept in the store at path (/sparse, `losa sparsify`) instead
 * of converting them; the store is not opened for MODEL_SPARSE_OFF.  Errors
 * agreed. */
losa_status cli_sparse_build(dist_ctx *d, const char *path, const model_stage *st,
                             model_sparse *sp, model_sparse_mode mode, int batch,
                             sparse_format fmt);
/* Collective: rank 0 tokenizes the file, every rank gets the ids. */
losa_status cli_tokenize_file(dist_ctx *d, const tok_tokenizer *tok,
                              const char *path, int bos, int **ids, int64_t *n);
/* Rank 0 prints the one JSON object of --json output on stdout. */
void cli_json_print(dist_ctx *d, const char *json);
/* The same from a cJSON object, which is then freed. */
struct cJSON;
void cli_json_emit(dist_ctx *d, struct cJSON *o);
/* A run directory stands for its model.h5; else the path itself. */
losa_status cli_resolve_store(const char *src, char *store, size_t n);

/* This machine's sgemm GFLOP/s on (M,N,K), best over min_seconds
 * (bench_forward.c; the peak the benches report fractions of). */
double bench_sgemm_gflops(int M, int N, int K, double min_seconds);
/* The physical peak GFLOP/s of this rank's GEMM threads: a register-only
 * FMA (bf16 = 0) or vdpbf16ps (bf16 = 1) microkernel, best over seconds;
 * 0 when the CPU lacks the instructions (bench_peak.c). */
double bench_peak_gflops(int bf16, double seconds);
/* The seam's GEMM accounting over a bench's timed steps: kern_gemm_stats
 * gathered over steps steps that took seconds in all. */
typedef struct {
    kern_gemm_stats gemm;
    int steps;
    double seconds;
} bench_matrix;
/* Measures both peaks and adds to o (when not NULL) the keys shared by
 * bench forward / train: dtype, gemm, sgemm_gflops, fraction_of_peak
 * (achieved / sgemm), peak_gflops_f32, peak_gflops_bf16 (null without
 * AVX512-BF16), fraction_of_physical_peak (achieved / the peak of dtype);
 * with mx the split of the steps' time at the GEMM seam: matrix_seconds
 * (inside the kern_gemm* calls, per step), matrix_gflops (their flops over
 * their seconds), matrix_fraction_of_physical_peak (matrix_gflops / the
 * peak of dtype) and matrix_share (matrix_seconds / the step's seconds),
 * null when no GEMM time was measured; logs them on rank 0. */
struct cJSON;
void bench_json_peak(struct cJSON *o, double achieved, double sgemm, const char *dtype,
                     const bench_matrix *mx);
/* With json: a new object with bench_json_peak's keys and tokens_per_s,
 * rate_key (the achieved GFLOP/s), batch, seqlen, seconds; else NULL (the
 * peaks are still measured and logged). */
struct cJSON *bench_rate_json(int json, double achieved, double sgemm, const char *dtype,
                              const bench_matrix *mx, const char *rate_key, double tps, int B,
                              int T, double seconds);

/* The minillama shapes the benches use without --model (D 256, F 768, H 8,
 * Hkv 4, V 32000), and such a model with seeded random weights (or the
 * store at path model when given). */
model_config bench_minillama_config(int n_layers);
losa_status bench_model(dist_ctx *d, const char *model, int n_layers, model_stage *st);
/* The options bench forward and bench train share: --model, --batch,
 * --seqlen, --iters (callers preset the defaults).  bench_shape_opt: when
 * argv[*i] is one of them, parses it (advancing *i), sets *s and returns 1.
 * bench_shape_fit: an explicit --seqlen beyond the model's max_seq_len is
 * an error, the default is capped to it. */
typedef struct {
    const char *model;
    int B, T, iters, T_set;
} bench_shape;
int bench_shape_opt(int argc, char **argv, int *i, bench_shape *sh, losa_status *s);
losa_status bench_shape_fit(bench_shape *sh, const model_config *c);

/* Shared by the sparse and decode benches (bench_util.c; rank 0 only). */
/* Sleep 0.15 s so that the spinning workers of the other thread pool
 * (OpenBLAS pthreads vs OpenMP) go to sleep before a timed call. */
void bench_settle(void);
/* Evict the last-level cache (touch 128 MB): init / flush / free.  The
 * flush writes by default (the cache is left full of dirty lines, whose
 * write-back a timed call may pay as it streams); after
 * bench_flush_read_only(1) it only reads (clean lines, as after the
 * previous layer's weights in a decode).  On the loaded 2-core VM the best
 * 2:4 call time did not differ measurably between the two. */
void bench_flush_init(void);
void bench_flush_read_only(int on);
void bench_cache_flush(void);
void bench_flush_free(void);
/* Median of x[0..n) (sorts x). */
double bench_median(double *x, int n);
/* STREAM-like triad a = b + s c (3 x 128 MB) and read-only streaming (xor
 * of 256 MB) bandwidth in GB/s, best of reps, all OpenMP threads. */
double bench_triad_gbs(int reps);
double bench_read_gbs(int reps);
/* GB/s of core_calloc on 256 MB of fresh pages (the page faults and the
 * zeroing a run pays for every buffer it allocates), best of reps. */
double bench_first_touch_gbs(int reps);
/* Magnitude pruning in place of W (n values): zero |w| at or below the
 * sp-quantile estimated from 2^20 samples drawn with r (so pruning a pruned
 * matrix at a higher sparsity equals pruning the original), or with nm the
 * 2 smallest of every 4 consecutive values (2:4). */
void bench_prune_matrix(float *W, int64_t n, double sp, int nm, core_rng *r);
/* x[i] = std * N(0, 1), threads filling chunks of 2^20 values from streams
 * seeded by (seed, chunk): the same values for any thread count. */
void bench_fill_normal(float *x, int64_t n, float std, uint64_t seed);

/* bench sub-benchmarks (each in its own file; cmd_bench dispatches). */
int bench_forward(dist_ctx *d, int argc, char **argv);
int bench_train(dist_ctx *d, int argc, char **argv);
int bench_prune(dist_ctx *d, int argc, char **argv);
int bench_sparse(dist_ctx *d, int argc, char **argv);
int bench_decode(dist_ctx *d, int argc, char **argv);
#include "lora.h"
/* Not collective: the head and loss of one training micro-batch in layers,
 * measured with this process's GEMM threads (bench_pipeline.c); *fwd_share
 * (may be NULL) the layers' forward share as bench_step_shares. */
double bench_head_cost_layers(const model_config *c, const lora_config *lc,
                              const lora_train_config *tc, int iters, double *fwd_share);
/* Of one single-process training step's stats on n_layers layers: *head
 * the head and loss in layers (over a layer's share of the rest of the
 * step's busy time, the step's own work included, as model_stage_cost's
 * layer) and *fwd the layers' forward steps over their busy time less the
 * step's own work (update_seconds); 0 when not measurable. */
void bench_step_shares(const lora_step_stats *ss, int n_layers, double *head, double *fwd);
int bench_pipeline(dist_ctx *d, int argc, char **argv);
#endif
