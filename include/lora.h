/* lora: masked dynamic-rank LoRA adapters on the 7 linear maps of every
 * layer a stage holds, AdamW, the learning-rate schedule, training data and
 * the training loop through the pipeline.
 *
 * Masked LoRA (ALGORITHM.md section 1).  Per map with frozen W (out,in) and
 * mask M = (W != 0):   W_eff = W + Delta,  Delta = scale * (B[:, :r] A[:r, :]) ⊙ M
 * A (r_max,in) Kaiming-uniform (bound 1/sqrt(in)), B (out,r_max) zero,
 * scale = alpha / r0, r = active rank of the layer (rows >= r are kept but
 * frozen, so the rank can change between phases without losing them).
 *
 * Efficient formulation: the mask forbids the usual low-rank shortcut
 * x A^T B^T, so the delta of a map is formed densely (one (out x r x in)
 * GEMM, then ⊙ M, and W_eff = W + Delta):
 *   forward   dropout 0: y = x W_eff^T                 1 GEMM (as the base model)
 *             dropout p: y = x W^T + drop(x) Delta^T   2 GEMMs
 *   backward  dx += dy W_eff        (dropout p: dy W + (dy Delta) ⊙ mask/(1-p))
 *             dDelta = dy^T drop(x)                    1 GEMM per map
 *   project   G = dDelta ⊙ M,  dB[:, :r] += scale G A[:r]^T,  dA[:r] += scale B[:, :r]^T G
 *             (two thin GEMMs with r <= 16).
 * Where the dense (out x in) forms live (lora.delta_buffers):
 *   persistent  Delta, W_eff and dDelta of every map of the stage (3 x the
 *               stage's map weights), Delta / W_eff formed once per
 *               optimizer step (lora_delta_update), dDelta accumulated over
 *               the step's micro-batches and projected once
 *               (lora_grad_project);
 *   transient   one map's Delta, W_eff and dDelta (3 x the largest map),
 *               allocated while the adapters are attached: a map's forms
 *               are built when the forward or backward reaches it, and
 *               each micro-batch's dDelta is projected onto dA, dB at once.
 *               Per micro-batch and map this adds two formations and one
 *               projection, O(out in r) against the micro-batch's
 *               O(out in B T): little at real micro-batches, measurable
 *               at tiny ones;
 *   auto        lora_buffers_resolve: persistent when the micro-batch is
 *               below LORA_TRANSIENT_MIN_TOKENS tokens and the stage's
 *               three blocks fit in LORA_PERSISTENT_MAX_BYTES, else
 *               transient.
 * The arithmetic of forward, backward and the projection is the same in
 * both; with several micro-batches per step the transient form sums the
 * projections instead of projecting the sum (rounding differs).
 *
 * bf16 stage (model.dtype = bf16; plain maps, model_stage_to_bf16; a stage
 * packed for the engine is refused): W stays frozen in bf16; A, B, their
 * gradients and AdamW state stay fp32 (master weights), Delta and dDelta
 * fp32.  The products read bf16 forms (bf16_forms): W_eff = bf16(W +
 * Delta) and, with dropout, bf16(Delta), round to nearest even, zero
 * where M is (M = the bf16 W != 0), both in the o*i floats a map's weff
 * takes (2 x o*i bf16 values; same bytes as fp32), formed where and when
 * the fp32 W_eff would be.  Forward and backward-input products run as
 * kern_gemm_bf16w (bf16 x bf16, fp32 accumulation; the activation or dy
 * rounded to bf16 inside); dDelta = dy^T drop(x) is kern_gemm_bf16r (dy
 * and drop(x) rounded to bf16 once, fp32 accumulation into the fp32
 * dDelta) and the projection fp32 GEMMs.  The head: in bf16 rows when
 * the stage has them (every bf16 stage of run and finetune:
 * model_stage_build_dtype, model_stage_to_bf16; head_bf16, forward and
 * backward-input in bf16), else fp32 (model_stage_to_bf16_maps, bench
 * train --head fp32).
 *
 * Memory, one allocation per kind: params (A,B), grads, AdamW m, v (each
 * sum over maps of r_max*(in+out)); the dense blocks delta, weff, ddelta
 * as above.
 */
#ifndef LOSA_LORA_H
#define LOSA_LORA_H

#include "core.h"
#include "model.h"
#include "tok.h"

struct dist_ctx;

/* lora.delta_buffers (see the header comment). */
typedef enum {
    LORA_BUFFERS_AUTO = 0, LORA_BUFFERS_PERSISTENT, LORA_BUFFERS_TRANSIENT
} lora_buffers;
const char *lora_buffers_name(lora_buffers b); /* "auto", "persistent", "transient" */
/* auto: persistent only below this many tokens per micro-batch (B x T) ...
 * Measured (bench train, minillama, one micro-batch per step, 1 thread):
 * transient costs +20% of the step at 16 tokens, +15..30% at 64, +5..30%
 * at 256, +3% at 1024, so under 1% from here on (it scales as 1/tokens). */
#define LORA_TRANSIENT_MIN_TOKENS 4096
/* ... and when the stage's three persistent blocks take at most this
 * (beyond it the memory matters more: 3 x the stage's weights). */
#define LORA_PERSISTENT_MAX_BYTES ((size_t)1 << 30)

typedef struct {
    int r_max;        /* rows of A / columns of B (16) */
    int rank;         /* initial active rank of every layer (8) */
    float alpha, r0;  /* scale = alpha / r0 (16 / 8 = 2) */
    float dropout;    /* on the adapter input (0.1) */
    uint64_t seed;    /* init of A */
    lora_buffers buffers; /* where the dense forms live (auto) */
    int64_t mb_tokens;    /* tokens of a training micro-batch, for auto (0: unknown) */
} lora_config;
void lora_config_default(lora_config *c);
/* The form lc->buffers gives a stage of n_layers layers (auto resolved). */
lora_buffers lora_buffers_resolve(const lora_config *lc, const model_config *c, int n_layers);

typedef struct {
    lora_config cfg;
    model_config mcfg;           /* the model's shapes */
    float scale;                 /* alpha / r0 */
    int layer0, n_layers;        /* the stage's layers (global index of first) */
    int *rank;                   /* (n_layers) active rank, 1 <= r <= r_max */
    float **A, **B;              /* [l*7+m] -> A (r_max,in), B (out,r_max) in params */
    float **gA, **gB;            /* same in grads */
    float *params, *grads, *m, *v; /* (n_params) each */
    size_t n_params;
    int transient;               /* resolved cfg.buffers == LORA_BUFFERS_TRANSIENT */
    float *delta, *weff, *ddelta;/* (n_w) each: persistent: every map (out,in) in stage
                                    order; transient: one map, while attached */
    size_t n_w;
    size_t *w_off;               /* [l*7+m] offset of map in the persistent blocks */
    model_adapter_map *maps;     /* [l*7+m] persistent: the map's three forms */
    model_adapter_map tmap;      /* transient: the scratch */
    int formed;                  /* transient: map l*7+m formed in the scratch (-1: none) */
    model_stage *s;              /* the stage attached to */
    model_adapter path;          /* s->adapter while attached */
    int64_t step;                /* AdamW steps taken */
    int attached;                /* s->adapter set */
} lora_adapters;

/* Not collective.  Allocates and initialises the adapters of stage s (A
 * seeded per (seed, global layer, map), so equal whatever the staging), forms
 * Delta and attaches the adapter path to s (forward/backward then use it). */
losa_status lora_adapters_build(lora_adapters *ad, model_stage *s, const lora_config *c);
/* Bytes lora_adapters_build allocates for a stage of n_layers layers, and
 * the transient scratch allocated while attached (0 when persistent). */
size_t lora_adapters_bytes(const model_config *c, int n_layers, const lora_config *lc);
size_t lora_adapters_attached_bytes(const model_config *c, int n_layers, const lora_config *lc);
void lora_adapters_free(lora_adapters *ad, model_stage *s);
/* Active rank of stage layer l (1..r_max).  Call lora_delta_update after. */
losa_status lora_set_rank(lora_adapters *ad, int l, int r);
/* After A, B, a rank or W changed: Delta = scale (B[:, :r] A[:r]) ⊙ M and
 * W_eff = W + Delta for every map (persistent), or formed again when next
 * used (transient). */
void lora_delta_update(lora_adapters *ad, const model_stage *s);
/* Attach / detach the adapter path (s->adapter; transient: the scratch is
 * allocated / freed). */
void lora_attach(lora_adapters *ad, model_stage *s);
void lora_detach(lora_adapters *ad, model_stage *s);
/* Merge W += Delta (detaches; the stage is then a plain model with the same
 * non-zero pattern) and unmerge W -= Delta (re-attaches).  Delta must not
 * change in between.  Returns the number of weights whose zero/non-zero
 * status changed (0 unless W + Delta hits exactly 0).
 * bf16 stage (model_stage.dtype): W' = bf16(W +- Delta), round to nearest
 * even, Delta formed from the bf16 weights' mask: pruned weights stay
 * exactly zero; kept weights whose sum rounds to zero (|W + Delta| <=
 * 2^-134, or exact cancellation) are counted in the return value and
 * named (layer, map) in a warning line.  Unmerge then restores W within
 * bf16 rounding, not bit for bit (two roundings). */
int64_t lora_merge(lora_adapters *ad, model_stage *s);
int64_t lora_unmerge(lora_adapters *ad, model_stage *s);

/* Start an optimizer step's gradient: zero dDelta (persistent) or dA, dB
 * (transient). */
void lora_grad_zero(lora_adapters *ad);
/* After the step's backwards: dA, dB (grads) from the accumulated dDelta
 * (persistent; transient: already done map by map); entries outside the
 * active rank are zero. */
void lora_grad_project(lora_adapters *ad, const model_stage *s);
/* Sum of squares of layer l's adapter gradients (double). */
double lora_grad_sumsq(const lora_adapters *ad, int l);

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} lora_adamw;
/* One AdamW step (decoupled weight decay, bias correction) on the active
 * slices of A and B, with gradients multiplied by grad_scale first (clipping). */
void lora_adamw_step(lora_adapters *ad, const lora_adamw *opt, float grad_scale);

/* Linear warmup over ceil(warmup_ratio * total) steps then linear decay to 0:
 * lr(s) = lr * (s+1)/W for s < W, lr * (total - s)/(total - W) after
 * (s = 0-based optimizer step). */
float lora_lr_at(float lr, float warmup_ratio, int64_t total, int64_t s);

/* ---- training through the pipeline ---- */
typedef struct {
    int B, T;               /* micro-batch */
    int grad_accum;         /* micro-batches per optimizer step */
    int64_t steps;          /* optimizer steps (schedule length) */
    float lr, weight_decay, warmup_ratio, max_grad_norm; /* max_grad_norm 0: off */
    float beta1, beta2, eps;
    uint64_t seed;          /* dropout masks */
    int ckpt;               /* 1: activation checkpointing */
    int schedule;           /* LORA_SCHEDULE_1F1B (default) or _GPIPE */
} lora_train_config;
enum { LORA_SCHEDULE_1F1B = 0, LORA_SCHEDULE_GPIPE = 1 };
void lora_train_config_default(lora_train_config *c);

typedef struct {
    double loss;            /* mean NLL over the step's counted targets */
    int64_t n_targets;
    double grad_norm;       /* global, before clipping */
    float lr;
    double seconds;
    double busy_seconds;    /* this rank's compute time (bubble measurement) */
    double head_seconds;    /* of which the head and loss, forward and backward */
    double embed_seconds;   /* of which the embedding */
    double forward_seconds; /* of which the forward steps (embedding, layers,
                             * and on the last stage the head and loss with
                             * their backward); the rest of the micro-batches'
                             * busy is their backwards */
    double update_seconds;  /* of which the step's own work outside the
                             * micro-batches, every stage at once (not
                             * pipelined): the gradient's zeroing, its
                             * projection and sum over the replicas, the
                             * norms, the optimizer and the Delta update */
} lora_step_stats;

typedef struct {
    lora_train_config cfg;
    struct dist_ctx *d;     /* NULL: single process, whole model */
    model_stage *s;
    lora_adapters *ad;
    int n_mb;               /* this replica's micro-batches of a step */
    int *mbs;               /* (n_mb) their indices: replica + j * DP */
    int n_acts;             /* activation slots: in-flight micro-batches */
    model_acts *acts;       /* (n_acts) */
    model_acts rec;         /* MODEL_ACTS_SAVE_ONE recompute (ckpt) */
    float *xin;             /* (n_acts, n_layers, B,T,D) layer inputs (ckpt) */
    float *dxtop;           /* (n_acts, B,T,D) gradient arriving at the stage top */
    model_bwd g;
    double *layer_sq;       /* (L+1) per global layer grad sum of squares, NLL */
    double busy;            /* this rank's compute seconds in the last step */
    double head_busy, embed_busy; /* of which the head + loss, the embedding */
    double fwd_busy;        /* of which the forward steps (fwd_compute) */
    double upd_busy;        /* of which the step's own work (update_seconds) */
    int64_t step;
} lora_trainer;

/* Collective over d's world (or d == NULL for one process holding the
 * whole model).  With DP replicas, replica r takes micro-batches r, r+DP, ...
 * of every step (any grad_accum; a replica may get none); the adapter
 * gradients dA, dB are all-reduced within each stage's replicas. */
losa_status lora_trainer_build(lora_trainer *tr, struct dist_ctx *d, model_stage *s,
                               lora_adapters *ad, const lora_train_config *c);
/* Micro-batches of a step that replica `replica` of DP takes (replica,
 * replica + DP, ...), and the activation buffers a stage keeps for them:
 * the micro-batches in flight (1F1B: min(PP - stage, n_mb); GPipe: n_mb;
 * one stage: 1; at least 1). */
int lora_trainer_n_mb(int grad_accum, int DP, int replica);
int lora_trainer_in_flight(int schedule, int PP, int stage, int n_mb);
/* Seconds of one optimizer step's m micro-batches through PP stages under
 * `schedule`, as lora_train_step runs them (run_1f1b / run_gpipe: the same
 * order of forwards, backwards and blocking exchanges on every stage):
 * stage p's forward of a micro-batch takes f[p] seconds (the last stage's
 * includes the head and the loss's backward, which its forward step runs),
 * its backward b[p]; an exchange with a neighbour completes x seconds after
 * both ranks reach it (a paired send+receive in x: both directions at
 * once).  Then the step's own work, u[p] seconds on stage p (NULL: none;
 * lora_step_stats update_seconds: every stage zeroes its gradient before
 * its first micro-batch and does the rest after its last, the gradient
 * norm's all-reduce in it waiting for the slowest; counted here as max u
 * after the schedule, exact when the first stage, which ends the 1F1B
 * schedule, also has the most).  The wall from the first forward to the
 * end of the step.  Not collective. */
double lora_schedule_seconds(int schedule, int PP, int m, const double *f, const double *b,
                             double x, const double *u);
/* Bytes lora_trainer_build allocates for a stage of n_layers layers (the
 * last stage: has_head) keeping n_acts micro-batches in flight. */
size_t lora_trainer_bytes(const model_config *c, int n_layers, int has_head, int n_acts,
                          const lora_train_config *tc);
void lora_trainer_free(lora_trainer *tr);
/* Collective.  One optimizer step on grad_accum micro-batches:
 * tokens, targets (grad_accum, B, T) equal on all ranks (target < 0 ignored;
 * targets[t] is the token to predict at position t).  Loss = mean NLL over
 * all counted targets of the step.  Stats equal on all ranks. */
losa_status lora_train_step(lora_trainer *tr, const int *tokens, const int *targets,
                            lora_step_stats *st);

/* ---- training data (src/lora/data.c) ----
 * Alpaca JSON array / JSONL (instruction, input, output) rendered with the
 * standard Alpaca prompt template, tokenized as BOS prompt output EOS with the
 * prompt length kept for response-only loss; {"text"} JSON/JSONL records
 * (BOS text EOS); or plain text (one stream cut into max_len windows).
 * Every example is truncated to max_len tokens. */
typedef enum { LORA_DATA_AUTO = 0, LORA_DATA_ALPACA, LORA_DATA_TEXT } lora_data_format;
typedef struct {
    int64_t n;              /* examples */
    int *ids;               /* all examples' tokens, concatenated */
    int64_t *off;           /* (n+1) example e = ids[off[e] .. off[e+1]) */
    int *resp;              /* (n) index of the first response token (0: all) */
    lora_data_format format;/* resolved format */
    int64_t cap_seq, cap_ids;
} lora_dataset;
/* The Alpaca prompt for one record (input may be NULL or ""); malloc'd. */
char *lora_alpaca_prompt(const char *instruction, const char *input);
/* Not collective.  name is used in error messages. */
losa_status lora_data_parse(lora_dataset *ds, const char *name, const char *text, size_t len,
                            lora_data_format fmt, const tok_tokenizer *tk,
                            int max_len);
void lora_data_free(lora_dataset *ds);
/* "auto" | "alpaca" | "text" */
lora_data_format lora_data_format_from_string(const char *f);
/* Collective (world): rank 0 reads and tokenizes path, the dataset's flat
 * arrays are broadcast; errors agreed. */
losa_status lora_data_load(struct dist_ctx *d, const char *path, lora_data_format fmt,
                           const tok_tokenizer *tk, int T, lora_dataset *ds);
/* Seeded permutation of 0..n-1 for an epoch (same on every rank). */
void lora_data_order(int64_t n, uint64_t seed, int64_t epoch, int64_t *perm);
/* Length grouping (data.group_by_length), as the HF Trainer's
 * group_by_length sampler (transformers trainer_pt_utils
 * get_length_grouped_indices) orders the examples of an epoch: a random
 * permutation order[0..n) is cut into megabatches of M = mult * batch
 * consecutive entries, mult = min(n / (4 batch), 50) and at least 1 (the
 * last megabatch holds the rest); each megabatch is sorted by length
 * descending (stable: equal lengths keep their order); then the head of the
 * first megabatch whose head is the longest (the first such) is swapped
 * with order[0], so the longest example comes first.  lengths[e] is the
 * length of example e (0 <= order[i] < n).  In place; not collective. */
void lora_length_group(const int64_t *lengths, int64_t n, int64_t batch, int64_t *order);
/* lora_data_order(n, seed, epoch) then lora_length_group: the random
 * permutation is losa's, not torch's. */
void lora_length_grouped_order(const int64_t *lengths, int64_t n, int64_t batch, uint64_t seed,
                               int64_t epoch, int64_t *order);
/* The epoch order of examples first .. first + m - 1 of ds, as offsets
 * 0..m-1 from first: group_batch 0 = lora_data_order (seeded shuffle);
 * group_batch > 0 = lora_length_grouped_order over their lengths (tokens as
 * stored: after truncation to the training length) in groups of
 * group_batch, the examples of one optimizer step (B x grad_accum, whatever
 * the data-parallel layout).  Same on every rank. */
void lora_data_epoch_order(const lora_dataset *ds, int64_t first, int64_t m, int64_t group_batch,
                           uint64_t seed, int64_t epoch, int64_t *perm);
/* Micro-batch of examples idx[0..B): tokens (B,T) padded with pad_id,
 * targets (B,T) = next token, -1 on padding, after the end, and (with
 * response_only) on the prompt. */
void lora_data_batch(const lora_dataset *ds, const int64_t *idx, int B, int T, int pad_id,
                     int response_only, int *tokens, int *targets);

/* ---- HDF5 (src/io/adapters.c) ----
 * /lora attributes r_max, alpha, r0, dropout, step, n_layers;
 * /lora/layers/<gl>: attribute rank; datasets <map>_A (r_max,in), <map>_B
 * (out,r_max), and with optimizer state <map>_mA, <map>_vA, <map>_mB, <map>_vB.
 * Not collective: a pipeline writes stage by stage (create = 1 on the first,
 * then the others append their layers in turn). */
losa_status io_adapters_write(const char *path, int create, const lora_adapters *ad,
                              const model_config *c);
/* Reads into built adapters of the same shapes; call lora_delta_update after. */
losa_status io_adapters_read(const char *path, lora_adapters *ad, const model_config *c);

#endif
