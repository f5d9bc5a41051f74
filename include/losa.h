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

/* Every switch between losa's behaviour and the reference code's in the
 * LoSA decisions (losa.compat and the [losa] keys it sets; README
 * "Differences from the reference code"; the [data], [train] and [lora]
 * keys it sets are in their sections' settings).  Filled by
 * losa_settings_from_deck (include/settings.h); a key the deck sets wins
 * over losa.compat. */
typedef struct {
    int reference;               /* losa.compat = reference */
    int sparsity_floor;          /* losa.sparsity_floor (reference 0) */
    losa_rebalance rebalance;    /* losa.rank_rebalance (reference one_pass) */
    losa_rank_cap rank_cap;      /* losa.rank_cap (reference slice) */
    int rank_max;                /* losa.rank_max: allocator bound (16) */
} losa_compat;

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

/* ---------------------------------------------------------------- constants
 * Constants of the method (the paper, ALGORITHM.md, and its reference
 * code) and of losa's own passes, named once. */
#define LOSA_RANK_BASE 6          /* mean rank of LoSA step t: LOSA_RANK_BASE + (t - 1) */
#define LOSA_RANK_MIN 1           /* smallest rank the allocator gives a layer */
#define LOSA_BETA_WANDA 1.0       /* losa.beta = 0: RMI temperature for magnitude / Wanda */
#define LOSA_BETA_SPARSEGPT 100.0 /* ... and for SparseGPT */
#define LOSA_CALIB_CHUNK 8        /* calibration windows per forward chunk of every pass */
/* Seeds of the training phases from train.seed: the +LoRA baseline
 * seed * LOSA_SEED_MUL + LOSA_SEED_LORA, LoSA step t
 * seed * LOSA_SEED_MUL + LOSA_SEED_STEP + t. */
#define LOSA_SEED_MUL 7919
#define LOSA_SEED_LORA 1
#define LOSA_SEED_STEP 100

/* Mean rank R_t of LoSA step t (1..T). */
static inline int losa_rank_mean(int t) { return LOSA_RANK_BASE + (t - 1); }

/* ---------------------------------------------------------------- run
 * `losa run DECK.ini`: the whole method and its baselines (src/losa/run.c
 * the driver and baselines, step.c the LoSA step, ckpt.c checkpoints and
 * history, rundir.c the run directory and its files, inputs.c loading).
 * mode prune: one-shot pruning at the target (or prune.layer_sparsity);
 * lora: one-shot pruning then masked LoRA with a fixed rank on the whole
 * training budget; losa: the method; compare: all three on the same
 * calibration and training data.
 * Objects by lifetime: the settings (struct run_settings,
 * include/settings.h: the deck parsed once), the loaded inputs
 * (losa_inputs), the test hooks (losa_hooks, from the command line), and
 * the run (losa_run: results and the per-step history, made and freed by
 * the run). */
typedef enum {
    LOSA_MODE_PRUNE = 0, LOSA_MODE_LORA, LOSA_MODE_LOSA, LOSA_MODE_COMPARE, LOSA_N_MODES
} losa_mode;

struct model_settings;
struct data_settings;
struct eval_settings;
struct run_settings;

/* Inputs of a run, loaded once (src/losa/inputs.c). */
typedef struct {
    model_config cfg;   /* of model.store */
    tok_tokenizer tok;
    int *calib;         /* (N, S) calibration windows (every rank) */
    int *eval_ids;      /* (n_eval) perplexity text (every rank) or NULL */
    int64_t n_eval;
    lora_dataset ds;    /* training examples (modes other than prune) */
    double load_seconds; /* losa_inputs_load_data's wall seconds (reading and
                            tokenizing the calibration, perplexity and training
                            files: rank 0 tokenizes, the others wait) */
} losa_inputs;

/* Collective: the configuration and tokenizer of model.store on every
 * rank; errors prefixed with where model.store was set, agreed. */
losa_status losa_inputs_read_model(struct dist_ctx *d, const struct model_settings *m,
                                   losa_inputs *in);
/* Collective, after losa_inputs_read_model: the calibration windows, the
 * perplexity text (if data.eval_text) and the training examples (modes
 * other than prune).  Errors agreed. */
losa_status losa_inputs_load_data(struct dist_ctx *d, const struct run_settings *rs,
                                  losa_inputs *in);
void losa_inputs_free(losa_inputs *in);
/* The pieces, also for losa prune and finetune.  Collective; errors
 * prefixed with where the file's key was set, agreed.
 * Calibration windows (N, S), malloc'd into *tokens. */
losa_status losa_load_calib(struct dist_ctx *d, const tok_tokenizer *tok,
                            const struct data_settings *ds, int **tokens);
/* The perplexity text with BOS (at least one window of eval.seqlen);
 * *ids = NULL, *n = 0 when data.eval_text is not set. */
losa_status losa_load_eval_text(struct dist_ctx *d, const tok_tokenizer *tok,
                                const struct data_settings *ds, const struct eval_settings *es,
                                int **ids, int64_t *n);
/* Training examples of data.train (format data.train_format), T tokens at
 * most. */
losa_status losa_load_train(struct dist_ctx *d, const tok_tokenizer *tok,
                            const struct data_settings *ds, int T, lora_dataset *out);
/* Collective: rank 0 reads and tokenizes path (bos: with BOS), every rank
 * gets the ids (malloc'd). */
losa_status losa_tokenize_file(struct dist_ctx *d, const tok_tokenizer *tok, const char *path,
                               int bos, int **ids, int64_t *n);

/* Test hooks, given by the command line (the run reads no environment). */
typedef struct {
    int stop_after;   /* --stop-after t: stop with an error after LoSA step t (0 = never) */
    int kill_step;    /* LOSA_FAULT_KILL=t: the last rank SIGKILLs itself in the middle of
                         LoSA step t (0 = never) */
    char nan_at[96];  /* LOSA_FAULT_NAN="<phase label>:<step>": one adapter weight of the
                         first stage set to NaN before that optimizer step ("" = never) */
} losa_hooks;

typedef struct {
    double ppl, sparsity, seconds, train_seconds, prune_seconds;
    double eval_seconds; /* the perplexity pass of the result's model alone */
    double *loss;       /* training loss per optimizer step (lora) */
    int64_t n_loss;
} losa_result;

/* Results of a run (rank 0 writes them; every rank holds them). */
typedef struct {
    double t0;          /* the start of this invocation (core_time_origin: before MPI
                           starts), so its seconds include the set-up */
    double dense_ppl;
    double dense_eval_s; /* the dense perplexity pass */
    /* set-up of this invocation, before the first phase: everything
     * (MPI start, the deck, the inputs, the stage read from the store),
     * of which reading and tokenizing the text files (losa_inputs
     * load_seconds) and allocating and reading the stage */
    double setup_s, setup_tokenize_s, setup_store_s;
    double *prune_recon; /* (L) reconstruction errors of the one-shot pruning */
    losa_result res[LOSA_N_MODES];
    int have[LOSA_N_MODES];
    int invocations;    /* of losa run on this run directory, this one included */
    double prev_run_s, prev_losa_s; /* seconds of earlier invocations kept by the resume point */
} losa_results;

/* Columns of losa_history .secs (seconds of a step's phases) and .elapsed. */
enum { LOSA_SECS_DECIDE = 0, LOSA_SECS_PRUNE, LOSA_SECS_TRAIN, LOSA_SECS_EVAL, LOSA_N_SECS };
enum { LOSA_ELAPSED_LOSA = 0, LOSA_ELAPSED_RUN, LOSA_N_ELAPSED };

/* Per-step metrics of the LoSA loop, (T, ...) row-major, rank 0 writes;
 * one allocation (block) holds them all. */
typedef struct {
    int T, L;
    int64_t loss_cap;   /* optimizer steps kept per LoSA step */
    double *s_t;        /* (T) */
    double *sparsity;   /* (T, L) allocated */
    double *measured;   /* (T, L) measured after pruning */
    double *importance; /* (T, L) */
    double *cka;        /* (T, L+1, L+1) */
    double *recon;      /* (T, L) reconstruction errors */
    double *ppl;        /* (T) perplexity after the step (NaN if not measured) */
    double *loss;       /* (T, loss_cap) training loss per optimizer step */
    double *secs;       /* (T, LOSA_N_SECS) grams+allocation, prune, train, eval */
    double *elapsed;    /* (T, LOSA_N_ELAPSED) LoSA-phase and whole-run seconds at
                           the end of the step, summed over the invocations */
    int *rank;          /* (T, L) allocated */
    int *rank_active;   /* (T, L) adapter rows used */
    int *loss_len;      /* (T) */
    void *block;        /* the allocation */
} losa_history;

typedef struct {
    struct dist_ctx *d;
    const deck *dk;                 /* the resolved deck: into the run files, checked on
                                       resume */
    const struct run_settings *set;
    const losa_inputs *in;
    losa_hooks hooks;
    core_lock lock;                 /* rank 0: output.dir/.lock (losa_run_prepare) */
    losa_results out;
    losa_history hist;
} losa_run;

/* Not collective: a run of the settings rs (parsed from dk) on the inputs
 * in (loaded after losa_run_prepare), with the test hooks h (NULL: none). */
void losa_run_init(losa_run *r, struct dist_ctx *d, const deck *dk,
                   const struct run_settings *rs, const losa_inputs *in, const losa_hooks *h);
/* Collective, after dist_set_layout and losa_inputs_read_model, before any
 * data is loaded.  The run directory output.dir: refused if it is not a
 * directory, or holds files but is not a run directory (no run.h5, no
 * ckpt/; the files jobs/losa_job.sh writes before the run are allowed), or
 * if model.store is its model.h5; created if missing; locked (rank 0 holds
 * output.dir/.lock until losa_run_free; a second command fails at once
 * naming the holder).  A run directory holding results (run.h5, ckpt/base.h5
 * or a complete step) must have been made with the same resolved deck,
 * except keys of no result (DECK_NO_RESULT) and, while steps remain, the
 * resumable ones (DECK_RESUMABLE: train.lr), and with the same layout
 * (pp x dp); the error names every differing key with both values.  Errors
 * agreed. */
losa_status losa_run_prepare(losa_run *r);
/* Collective: everything; the inputs must be loaded. */
losa_status losa_run_execute(losa_run *r);
void losa_run_free(losa_run *r);

/* ---------------------------------------------------------------- memory
 * What `losa run` keeps resident on one rank (src/losa/memory.c), from the
 * size functions of the modules that allocate (model_stage_bytes,
 * lora_adapters_bytes, lora_trainer_bytes, calib_prune_bytes, ...), so
 * `losa plan` adds up exactly what the run allocates.  Resident from the
 * start: the stage's weights and the calibration windows; through the LoSA
 * phase: the adapters, the dense reference outputs and the Gram matrices;
 * on top, what each phase adds (training: the activations, backward
 * scratch and logits of the micro-batches in flight, and the adapters'
 * transient scratch, which is freed while they are merged).  The peak is the largest phase.  Not
 * counted: the training examples and the perplexity text (not known before
 * they are read; a few MB for the decks in input/), the tokenizer, MPI's,
 * HDF5's and BLAS's own buffers, and, when a run resumes, the dense copy
 * of the stage (one more `weights`) while the reference outputs are
 * recomputed. */
typedef enum {
    LOSA_PHASE_SETUP = 0,      /* before the first phase: MPI start, the text files
                                  tokenized, the stage allocated and read */
    LOSA_PHASE_DENSE_EVAL,     /* perplexity of the dense (and pruned) model */
    LOSA_PHASE_PRUNE,          /* one-shot pruning (modes prune, lora, compare) */
    LOSA_PHASE_LORA_TRAIN,     /* +LoRA training (modes lora, compare) */
    LOSA_PHASE_DENSE_REF,      /* LoSA: the dense reference outputs */
    LOSA_PHASE_GRAMS,          /* LoSA step: the Gram matrices (CKA) */
    LOSA_PHASE_LOSA_PRUNE,     /* LoSA step: pruning against the reference */
    LOSA_PHASE_LOSA_TRAIN,     /* LoSA step: training */
    LOSA_PHASE_LOSA_EVAL,      /* LoSA: perplexity after a step, of the final model */
    LOSA_PHASE_WRITE,          /* model.h5: another stage's weights in transit */
    LOSA_N_PHASES
} losa_phase;
const char *losa_phase_name(losa_phase p); /* "setup", "dense_eval", "prune", ... */

typedef struct {
    size_t weights, inputs;       /* resident throughout */
    size_t adapters;              /* the masked adapters (lora_adapters_bytes) */
    size_t attached;              /* their transient scratch, while training */
    lora_buffers buffers;         /* lora.delta_buffers as resolved for the stage */
    size_t dense_ref;             /* reference outputs (or one layer's: losa.dense_ref = disk) */
    size_t grams;                 /* the LoSA loop's Gram matrices */
    size_t gemm_scratch;          /* bf16: the GEMM engine's kept scratch
                                     (kern_gemm_bf16_scratch_bytes), in every
                                     phase's prune / train / eval / passes */
    size_t prune, train, eval;    /* what a LoSA step's pruning, training (with the
                                     attached scratch), perplexity add */
    size_t phase[LOSA_N_PHASES];  /* resident bytes in each phase (0: not in this mode) */
    size_t touched[LOSA_N_PHASES]; /* bytes one run of the phase allocates afresh (a
                                      pass, a step): the first touch of new pages costs
                                      time (losa_rates.touch_gbs) */
    size_t peak;                  /* the largest phase */
    losa_phase peak_phase;
} losa_memory;

/* Not collective.  The memory of the rank holding stage `stage` of pp in
 * replica `replica` of dp, for the settings rs (run_settings_from_deck
 * with the model's configuration c). */
void losa_memory_plan(const struct run_settings *rs, const model_config *c, int pp, int dp,
                      int stage, int replica, losa_memory *m);

/* ---- time (src/losa/time_model.c) ----
 * The seconds of `losa run` phase by phase (the phases of losa_memory).
 * Compute: the FLOPs of model_forward_flops / model_train_flops divided by
 * the rank's rate for that kind of work, measured by `losa bench forward`
 * (forward passes: perplexity, calibration, dense references, Grams) and
 * `losa bench train` (training steps; both count FLOPs with the same
 * functions, so a measured rate projects back to seconds; the median
 * step's rate), the pruners' rates of `losa bench prune` (SparseGPT's
 * statistics and solve as FLOPs of losa_pruner_flops, masks per weight;
 * without it the dense GEMM rate and LOSA_DEFAULT_MASK_WPS), and the first
 * touch of the buffers each pass or step allocates (losa_memory touched
 * bytes at touch_gbs).  A training
 * micro-batch of the whole model at the training rate is shared among the
 * stages in proportion to their costs under losa_stage_cost (the cost the
 * split balances: the head and loss weigh their elementwise work too).
 * Forward passes: the layers at the layers' rate and the head at the
 * head's when bench forward timed them apart (the calibration passes,
 * dense references and Grams run no head).  Pipeline:
 * perplexity and training overlap the stages (perplexity: m micro-batches with stage
 * times t_s: sum t_s + (m - 1) max t_s; training: the trainer's schedule,
 * lora_schedule_seconds, with each stage's forward and backward of a
 * micro-batch (the layers' forward share as bench train measured it,
 * train_fwd_share, else the cost model's) and then the adapters' per-step
 * work (model_stage_cost layer_step: every stage at once, the one with the
 * most layers holds the others); equal stages give (m + pp - 1)
 * slots, the fill and drain bubble; one blocking exchange per micro-batch
 * and neighbour), the
 * calibration passes run the stages one after the other.  Replicas: a
 * SparseGPT layer splits its sweep and update (rows) but not its mask
 * selection (every replica selects over all rows' gathered scores) nor a
 * small Hessian's factorisation, and pays the per-block score gathers,
 * the gather of W and the statistics' all-reduces; a small map
 * (dist_sparsegpt_rows_local) is swept whole on every replica, one status
 * all-reduce and no split.  Network: a
 * message costs latency + bytes / bandwidth, an all-reduce is a ring of
 * 2 (n - 1) messages of bytes / n, an all-gather n - 1 of bytes / n.
 * Set-up (before the first phase): the start of the process and MPI
 * (start_s), the text files (calibration, perplexity, training: text_bytes)
 * tokenized on rank 0 while the others wait (tokenize_bps), then every
 * rank's stage allocated and read from the store (its bytes in the store's
 * dtype, model_stage_bytes_dtype, at store_gbs); without bench rates the
 * LOSA_DEFAULT_* below.  Not modelled: I/O of the checkpoints and the
 * model file, the decisions' own small work. */
typedef struct {
    double fwd_gflops;     /* forward passes, per rank (bench forward) */
    double layer_gflops;   /* the layers' share of a forward (bench forward
                            * layers_gflops_median; 0: fwd_gflops): the
                            * calibration passes run no head */
    double head_gflops;    /* the head's share (head_gflops_median; 0: fwd_gflops) */
    double train_gflops;   /* training steps, per rank (bench train) */
    double train_fwd_share; /* of a layer's training micro-batch less the
                            * per-step work, the forward step's share (bench
                            * train layer_forward_share; 0:
                            * model_stage_cost_train's layer_fwd) */
    double gemm_gflops;    /* dense GEMM, per rank */
    /* The pruners (`losa bench prune --json`; without it: stats and solve at
     * gemm_gflops, masks at LOSA_DEFAULT_MASK_WPS): */
    double prune_stats_gflops; /* SparseGPT's X^T X (losa_pruner_flops stats) */
    double prune_hinv_gflops;  /* SparseGPT's factorisations (0: prune_solve_gflops) */
    double prune_solve_gflops; /* SparseGPT's sweep and update (with hinv: all three) */
    double mask_wps[2];        /* weights scored and selected per second:
                                * [0] Wanda / magnitude, [1] SparseGPT */
    double touch_gbs;      /* first touch of fresh memory, GB/s per rank (bench
                            * forward first_touch_gbs; 0: not counted) */
    double net_gbps;       /* point-to-point bandwidth, Gbit/s */
    double net_latency_us; /* per message */
    int64_t eval_tokens;   /* tokens of data.eval (0: no perplexity) */
    /* the set-up (`losa bench forward --json`; 0: LOSA_DEFAULT_*): */
    double start_s;        /* the process's and MPI's start (start_seconds) */
    double store_gbs;      /* a stage allocated and read from the store, GB/s of its
                            * resident bytes (store_load_gbs) */
    double tokenize_bps;   /* text bytes tokenized per second (tokenize_bytes_per_s,
                            * with --text, --calib or --train) */
    model_dtype store_dtype; /* the store's maps (what the set-up reads) */
    int64_t text_bytes;    /* bytes of the files the run tokenizes (data.calib,
                            * data.eval_text, data.train outside mode prune) */
} losa_rates;

/* The set-up's rates without a bench forward JSON that has them (measured
 * on the 2-core Zen 4 VM: 0.25-0.37 s to start one rank's MPI, 4.3e6 bytes
 * per second through minillama's 32000-token tokenizer; the store rate
 * assumed). */
#define LOSA_DEFAULT_START_S 0.3
#define LOSA_DEFAULT_STORE_GBS 1.0
#define LOSA_DEFAULT_TOKENIZE_BPS 4e6

/* The assumed mask rate without a bench prune JSON (weights per second per
 * rank; measured 2.1e7 for both methods on a minillama layer, one Zen 4 core). */
#define LOSA_DEFAULT_MASK_WPS 2e7

/* SparseGPT's FLOPs for one layer of c from `tokens` calibration tokens:
 * *stats the four inputs' X^T X, *hinv the factorisations (Cholesky,
 * inverse, Cholesky per input: 4/3 in^3 each), *sweep the OBS sweep with
 * its updates. */
void losa_pruner_flops(const model_config *c, double tokens, double *stats, double *hinv,
                       double *sweep);

#define LOSA_TIME_MAX_STAGES 256
typedef struct {
    int pp;
    double busy[LOSA_N_PHASES][LOSA_TIME_MAX_STAGES]; /* seconds a rank of stage s works */
    double wall[LOSA_N_PHASES];  /* wall seconds of the phase over the run */
    double step[LOSA_N_PHASES];  /* LoSA phases: wall seconds per step */
    double total;                /* the run's wall seconds */
} losa_time;

/* Not collective.  The stage split of a run of settings rs on pp stages:
 * model_split_stages under model_stage_cost_train at the run's training
 * micro-batch (train.batch x train.seqlen, lora.r_max, lora.dropout,
 * train.ckpt; the head and loss at parallel.head_cost_layers x the layer
 * when set, a measured cost).  The one split `losa run` builds its stages with (recorded
 * in the run files as /run/stage_layers, checked on resume) and `losa plan`
 * sizes and times them with. */
void losa_stage_split(const struct run_settings *rs, const model_config *c, int pp, int *first,
                      int *count);
/* The stage costs losa_stage_split splits by. */
void losa_stage_cost(const struct run_settings *rs, const model_config *c, model_stage_cost *k);

/* Not collective.  pp <= LOSA_TIME_MAX_STAGES. */
/* The set-up's rates left at 0 set to the LOSA_DEFAULT_* (the plan prints
 * which were assumed). */
void losa_rates_setup_defaults(losa_rates *rt);
void losa_time_plan(const struct run_settings *rs, const model_config *c, int pp, int dp,
                    const losa_rates *rt, losa_time *t);

#endif
