/* losa: the decisions of the LoSA method (ALGORITHM.md sections 2, 3, 5) —
 * the cubic sparsity schedule, CKA between layer representations, the
 * layer-sparsity allocators (rmi = bounded LP on RMI importances,
 * mi_proportional, uniform), the error-driven rank allocator — and the
 * collective step that turns every stage's measurements into one decision.
 * Pure functions except losa_collective_step. */
#ifndef LOSA_LOSA_H
#define LOSA_LOSA_H

#include "core.h"
#include "deck.h"
#include "lora.h"
#include "prune.h"
#include "tok.h"

struct dist_ctx;

/* s_t = s - s (1 - t/T)^3, t = 1..T. */
double losa_schedule(double s, int t, int T);
/* LP bound half-width: 0.01 if s_t <= 0.5, 0.02 if <= 0.6, 0.03 if <= 0.7,
 * 0.04 if <= 0.8, else 0.05. */
double losa_delta(double s_t);

/* CKA matrix (n_rep x n_rep) from centred Gram matrices grams (n_rep, n, n):
 * CKA(i,j) = <K~i, K~j>_F / (||K~i||_F ||K~j||_F). */
void losa_cka(double *cka, const double *grams, int n_rep, int n);

typedef enum {
    LOSA_ALLOC_RMI = 0,
    LOSA_ALLOC_MI_PROPORTIONAL,
    LOSA_ALLOC_UNIFORM
} losa_alloc;
losa_status losa_alloc_from_string(const char *s, losa_alloc *a);
const char *losa_alloc_str(losa_alloc a);

/* RMI importances from the layers' CKA (L x L, layers only):
 * red_i = sum_{j != i} CKA(i,j), red_i /= sum_k red_k, imp_i = exp(-beta red_i). */
void losa_rmi_importance(double *imp, const double *cka, int L, double beta);
/* Bounded LP: minimise sum imp_i x_i s.t. mean x = s_t and
 * s_t - delta <= x_i <= s_t + delta (bounds clipped to [0, 0.99]), solved in
 * closed form: every layer at the lower bound, then the least important
 * layers filled to the upper bound first (ties: lower index first). */
void losa_alloc_lp(double *x, const double *imp, int L, double s_t, double delta);
/* The same LP with per-layer floors (a layer already sparser than s_t - delta
 * cannot get denser): lower bound max(s_t - delta, floor_i).  If the floors
 * alone exceed the mean, x = lower bounds. */
void losa_alloc_lp_floor(double *x, const double *imp, int L, double s_t, double delta,
                         const double *floor_);
/* MI-proportional: density_l proportional to mi_l (CKA of layer l's input
 * with the final output), normalised so that mean sparsity is exactly s_t
 * after clipping to [s_t - delta, s_t + delta] (bisection on the scale). */
void losa_alloc_mi_proportional(double *x, const double *mi, int L, double s_t,
                                double delta);

/* Ranks proportional to err with mean R: round(err_l / mean(err) * R),
 * clipped to [rmin, rmax], then +1 to the largest errors (descending, cyclic)
 * or -1 to the smallest (ascending, cyclic) until sum = R * L exactly
 * (when feasible).  Ties: lower index first. */
void losa_alloc_ranks(int *rank, const double *err, int L, int R, int rmin, int rmax);

/* How the ranks are brought to the exact total after rounding and clipping:
 * EXACT (losa) = losa_alloc_ranks; ONE_PASS (the reference code's
 * allocate_ranks) = round half to even (numpy's round), clip to
 * [rmin, rmax], then ONE pass of +-1 over the layers that can move (+1 in
 * descending error order while the sum is short, -1 in ascending order
 * while it is over; ties: lower index first): the total may stay off. */
typedef enum { LOSA_REBALANCE_EXACT = 0, LOSA_REBALANCE_ONE_PASS } losa_rebalance;
void losa_alloc_ranks_mode(int *rank, const double *err, int L, int R, int rmin, int rmax,
                           losa_rebalance mode);

/* Ranks above the adapter's rows (lora.r_max):
 * REDISTRIBUTE (losa): the allocator's upper bound is min(rank_max, r_max),
 *   so the surplus of a clipped layer goes to the others (EXACT) and every
 *   allocated rank is trained;
 * SLICE (reference: r = 8 rows, slice [:rank]): the allocator's bound is
 *   rank_max, the adapter uses min(rank, r_max) rows, nothing redistributed. */
typedef enum { LOSA_RANK_CAP_REDISTRIBUTE = 0, LOSA_RANK_CAP_SLICE } losa_rank_cap;
/* Upper bound given to the rank allocator. */
int losa_rank_bound(losa_rank_cap cap, int rank_max, int r_max);
/* Active adapter rows of each layer for allocated ranks (L). */
void losa_rank_active(int *active, const int *rank, int L, losa_rank_cap cap, int r_max);

/* Which training examples step t (1..T) sees:
 * LOSA: a stream over the whole set in seeded epoch orders, steps take
 *   consecutive stretches (every example once per epoch);
 * REFERENCE (the reference script's train[t*n : (t+1)*n], last step
 *   train[(T-1)*n : (T-1)*n + n_last]): fixed index ranges in file order,
 *   clipped to the set (examples 0..n-1 are never seen, the range of step
 *   T-1 is seen twice), shuffled within the step by the seeded order. */
typedef enum { LOSA_TRAIN_SLICES_LOSA = 0, LOSA_TRAIN_SLICES_REFERENCE } losa_train_slices;
/* REFERENCE: first index and count of step t's range, clipped to [0, n). */
void losa_train_slice(int t, int T, int64_t n_step, int64_t n_last, int64_t n, int64_t *first,
                      int64_t *count);

/* Every switch between losa's behaviour and the reference code's
 * (losa.compat and the keys it sets; README "Differences from the
 * reference code").  A key the deck sets wins over losa.compat. */
typedef struct {
    int reference;               /* losa.compat = reference */
    int sparsity_floor;          /* losa.sparsity_floor (reference 0) */
    losa_rebalance rebalance;    /* losa.rank_rebalance (reference one_pass) */
    losa_rank_cap rank_cap;      /* losa.rank_cap (reference slice) */
    int rank_max;                /* losa.rank_max: allocator bound (16) */
    losa_train_slices slices;    /* data.train_slices (reference reference) */
    int group_by_length;         /* data.group_by_length (reference 1) */
} losa_compat;
/* Not collective.  Fills c from the deck; with losa.compat = reference also
 * lc->r_max = 8 (its LoRA r) and tc->seed = 42 (HF TrainingArguments'
 * default) unless the deck sets lora.r_max / train.seed. */
void losa_compat_from_deck(const deck *dk, losa_compat *c, lora_train_config *tc,
                           lora_config *lc);

/* The decision of one LoSA step for every layer. */
typedef struct {
    int L;
    double s_t;
    double *sparsity;   /* (L) */
    double *importance; /* (L) (rmi) */
    double *cka;        /* (L+1, L+1) layers + final output */
    int *rank;          /* (L) allocated */
    int *rank_active;   /* (L) adapter rows used (losa_rank_active) */
} losa_decision;
void losa_decision_init(losa_decision *dc, int L);
void losa_decision_free(losa_decision *dc);

/* Layer sparsity of step t from the (L+1, n, n) centred Gram matrices
 * (every rank holds all of them after calib_layer_grams): fills
 * dc->s_t, cka, importance, sparsity.  floor_ (L) = current layer sparsity
 * (or NULL): no layer is asked to become denser.  Not collective (same inputs -> same
 * result on every rank). */
void losa_decide_sparsity(losa_decision *dc, losa_alloc a, const double *grams,
                          int n, double s, int t, int T, double beta,
                          const double *floor_);

/* The collective step (collective over the world): every stage passes the
 * reconstruction errors of ITS OWN layers in err_local (L, zero elsewhere,
 * replica 0 only non-zero); they are summed, rank 0 computes the ranks and
 * broadcasts them so every rank applies the same decision. */
void losa_collective_ranks(struct dist_ctx *d, losa_decision *dc,
                           const double *err_local, int R, int rmin, int rmax,
                           int fixed_rank, losa_rebalance mode);

/* Collective (world).  io: a store created on rank 0 (NULL elsewhere).
 * Rank 0 writes config, tokenizer and every stage (the first replica's),
 * receiving one stage at a time from its owner, then commits (or discards
 * on error).  Errors agreed. */
struct io_store;
losa_status losa_store_write_model(struct dist_ctx *d, struct io_store *io,
                                   const model_stage *s, const tok_tokenizer *tok,
                                   const char *source);

/* Collective (world), before a command writes the store out (losa prune,
 * losa finetune): out must not be the input store in (the same file through
 * any spelling or symlink), and rank 0 takes the lock out.lock for the life
 * of the command (core_lock_acquire: a second writer fails at once, naming
 * the holder; release with core_lock_release on every rank).  Errors,
 * prefixed with where (deck, key), agreed. */
losa_status losa_store_lock_output(struct dist_ctx *d, const char *out, const char *in,
                                   const char *where, core_lock *lk);

/* ---------------------------------------------------------------- run
 * `losa run DECK.ini`: the whole method and its baselines (src/losa/run.c).
 * mode prune: one-shot pruning at the target; lora: one-shot pruning then
 * masked LoRA with a fixed rank on the whole training budget; losa: the
 * method; compare: all three on the same calibration and training data. */
typedef enum {
    LOSA_MODE_PRUNE = 0, LOSA_MODE_LORA, LOSA_MODE_LOSA, LOSA_MODE_COMPARE, LOSA_N_MODES
} losa_mode;

typedef struct {
    double ppl, sparsity, seconds, train_seconds, prune_seconds;
    double *loss;       /* training loss per optimizer step (lora) */
    int64_t n_loss;
} losa_result;

/* Per-step metrics of the LoSA loop, (T, ...) row-major, rank 0 writes. */
typedef struct {
    double *s_t;        /* (T) */
    double *sparsity;   /* (T, L) allocated */
    double *measured;   /* (T, L) measured after pruning */
    double *importance; /* (T, L) */
    double *cka;        /* (T, L+1, L+1) */
    double *recon;      /* (T, L) reconstruction errors */
    int *rank;          /* (T, L) allocated */
    int *rank_active;   /* (T, L) adapter rows used */
    double *ppl;        /* (T) perplexity after the step (NaN if not measured) */
    double *loss;       /* (T, loss_cap) training loss per optimizer step */
    int *loss_len;      /* (T) */
    int64_t loss_cap;
    double *secs;       /* (T, 4) grams+allocation, prune, train, eval */
    double *elapsed;    /* (T, 2) LoSA-phase and whole-run seconds at the end
                           of the step, summed over the invocations */
} losa_history;

typedef struct {
    struct dist_ctx *d;
    const deck *dk;
    const char *deck_name;
    const char *store;      /* dense model store */
    char dir[1024];         /* run directory */
    losa_mode mode;
    model_config cfg;
    tok_tokenizer tok;
    prune_config pc;        /* method, target sparsity, N:M, SparseGPT knobs */
    losa_alloc alloc;
    losa_compat compat;
    int rank_fixed;
    double beta;
    int T, N, S, rmi_n;     /* steps, calibration windows, tokens per window */
    int *calib;             /* (N, S) calibration tokens (every rank) */
    int *eval_ids;          /* perplexity text (every rank) or NULL */
    int64_t n_eval;
    int eval_S, eval_B, eval_maxw, eval_each_step;
    lora_dataset ds;
    lora_train_config tc;
    lora_config lc;
    int response_only;
    int64_t samples_step, samples_last;
    int stop_after;         /* testing: fail after this LoSA step (0 = never) */
    int dense_on_disk;      /* dense reference outputs in the stage's HDF5 shard */
    core_lock lock;         /* rank 0: output.dir/.lock (losa_run_prepare) */
    int invocations;        /* of losa run on this run directory, this one included */
    double prev_run_s, prev_losa_s; /* seconds of earlier invocations kept by the resume point */
    /* results */
    double t0, dense_ppl;
    double *prune_recon;    /* (L) */
    losa_result res[LOSA_N_MODES];
    int have[LOSA_N_MODES];
    losa_history hist;
} losa_run;

/* The [train] and [lora] sections of a deck (train.seqlen, batch,
 * grad_accum, lr, weight_decay, warmup_ratio, max_grad_norm, beta1, beta2,
 * eps, seed, recompute; lora.r_max, rank, alpha, r0, dropout; the adapter
 * seed is train.seed) over the defaults; the schedule stays the default. */
void losa_train_configs(const deck *dk, lora_train_config *tc, lora_config *lc);
/* Not collective: settings from the deck (validated). */
losa_status losa_run_settings(losa_run *r, const deck *dk, const char *deck_name);
/* Collective, after losa_run_settings and dist_set_layout, before any data
 * is loaded.  The run directory output.dir: refused if it is not a
 * directory, or holds files but is not a run directory (no run.h5, no
 * ckpt/; the files jobs/losa_job.sh writes before the run are allowed), or
 * if model.store is its model.h5; created if missing; locked (rank 0 holds
 * output.dir/.lock until losa_run_free; a second command fails at once
 * naming the holder).  A run directory holding results (run.h5, ckpt/base.h5
 * or a complete step) must have been made with the same resolved deck,
 * except output-only keys and, while steps remain, train.lr, and with the
 * same layout (pp x dp); the error names every differing key with both
 * values.  Errors agreed. */
losa_status losa_run_prepare(losa_run *r);
/* Collective: everything; r->cfg, tok, calib, eval_ids, ds must be loaded. */
losa_status losa_run_execute(losa_run *r);
void losa_run_free(losa_run *r);

#endif
