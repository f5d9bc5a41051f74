/* losa plan's time model and layout advisor (plan_time.c, plan_advise.c). */
#ifndef LOSA_CLI_PLAN_H
#define LOSA_CLI_PLAN_H

#include "losa.h"
#include "settings.h"

struct cJSON;

#define PLAN_MAX_BENCH 4
typedef struct {
    const char *bench[PLAN_MAX_BENCH]; /* --bench FILE ... */
    int n_bench;
    double gflops;                     /* --gflops (0: not given) */
    double net_gbps, net_latency_us;   /* --net-gbps, --net-latency-us */
    int64_t eval_tokens;               /* --eval-tokens (-1: count data.eval) */
    double touch_gbs; /* --touch-gbs (< 0: from --bench, else PLAN_DEFAULT_TOUCH_GBS) */
} plan_time_opts;
/* First touch of fresh memory assumed without --touch-gbs or a bench
 * forward JSON (GB/s per rank; 4.5 measured on a Zen 4 VM, 2 cores). */
#define PLAN_DEFAULT_TOUCH_GBS 4.0

void plan_time_opts_default(plan_time_opts *o);
/* argv[*i] one of the time options: parsed (*taken = 1), else *taken = 0. */
losa_status plan_time_opt(plan_time_opts *o, int argc, char **argv, int *i, int *taken);
/* The rates of the options (reads the --bench files; may time an sgemm);
 * eval_tokens and text_bytes: the run's sizes (losa_rates); why: the
 * assumptions in one line. */
losa_status plan_rates(const plan_time_opts *o, int64_t eval_tokens, int64_t text_bytes,
                       losa_rates *rt, char *why, size_t n);
void plan_time_print(const losa_time *t, const char *why);
void plan_time_json(struct cJSON *o, const losa_time *t, const char *why);
void plan_time_rank_json(struct cJSON *e, const losa_time *t, int stage);

/* One layout with the same optimizer math: pp x dp ranks, micro-batches of
 * B sequences, accum per optimizer step (B x accum = the deck's). */
typedef struct {
    int pp, dp, B, accum;
    double seconds;   /* projected wall of the run */
    double setup;     /* ... of which the set-up (LOSA_PHASE_SETUP) */
    double peak;      /* bytes, the largest rank */
    int fits;
} plan_layout;

/* Every layout of `ranks` ranks (pp divides ranks, pp <= layers; B divides
 * the sequences per step), projected; out sorted fastest first, up to max;
 * returns the count.  Not collective. */
int plan_layouts(const run_settings *rs, const model_config *c, int ranks, const losa_rates *rt,
                 double mem_per_rank, plan_layout *out, int max);
/* The fastest feasible layout for ranks, or seconds = 0 if none. */
plan_layout plan_best_layout(const run_settings *rs, const model_config *c, int ranks,
                             const losa_rates *rt, double mem_per_rank);
/* Prints the advice for `ranks` (the deck's layout cur among them). */
void plan_advise_print(const run_settings *rs, const model_config *c, int ranks,
                       const losa_rates *rt, double mem_per_rank, const plan_layout *cur);
void plan_advise_json(struct cJSON *o, const run_settings *rs, const model_config *c, int ranks,
                      const losa_rates *rt, double mem_per_rank, const plan_layout *cur);
/* The deck's layout, projected. */
plan_layout plan_layout_eval(const run_settings *rs, const model_config *c, int pp, int dp, int B,
                             int accum, const losa_rates *rt, double mem_per_rank);

#endif
