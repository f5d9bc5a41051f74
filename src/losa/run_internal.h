/* The pieces of `losa run` shared by its files (private to src/losa):
 *   run.c     the driver, the one-shot pruning and +LoRA baselines, the
 *             training phase, measurements;
 *   step.c    the LoSA phase: resume, the step, the final merge;
 *   ckpt.c    the per-step history and the checkpoints ckpt/step_<t>/;
 *   rundir.c  the run directory: checks and lock, ckpt/state.h5,
 *             ckpt/base.h5, run.h5, model.h5.
 * Collective unless said; every stage writes its own checkpoint shards,
 * rank 0 the run files. */
#ifndef LOSA_RUN_INTERNAL_H
#define LOSA_RUN_INTERNAL_H

#include "calib.h"
#include "dist.h"
#include "io.h"
#include "losa.h"
#include "settings.h"

/* HDF5's own bytes, for io_store_reserve: < 1 KB per dataset (~600 B
 * measured), 16 KB for the superblock and groups of a small file, 64 KB of
 * slack for a file of tensors. */
#define H5_PER_DATASET 1024LL
#define H5_SMALL_FILE (16 << 10)
#define H5_TENSOR_FILE (64 << 10)

/* Not collective: mkdir -p; 0 or -1 (errno set). */
int losa_mkdir_p(const char *path);

/* ---- run.c */
/* Fraction of zeros over the 7 maps of every layer. */
double losa_run_sparsity(dist_ctx *d, const model_stage *s);
/* Layer sparsities of every layer (L) on every rank. */
void losa_run_layer_sparsities(dist_ctx *d, const model_stage *s, double *x);
/* Perplexity of s on the evaluation text (NaN without one); *seconds (if
 * not NULL): the pass's wall seconds (0 without a text). */
double losa_run_ppl(losa_run *r, const model_stage *s, double *seconds);
/* The dense weights of this rank's stage back from model.store. */
losa_status losa_run_reload_dense(losa_run *r, model_stage *s);
/* One training phase of n_examples examples from stream position first
 * (range_n > 0: within examples first .. first + range_n - 1), with a
 * fresh AdamW state and schedule, dropout seeded by seed.  *loss (optimizer
 * steps, malloc'd) is filled on every rank.  *seconds: the phase's wall
 * seconds, building the trainer (allocating its buffers) and freeing it
 * included (losa plan counts their first touch in the training phase). */
losa_status losa_run_train(losa_run *r, model_stage *s, lora_adapters *ad, int64_t first,
                           int64_t range_n, int64_t n_examples, uint64_t seed, const char *label,
                           double **loss, int64_t *n_steps, double *seconds);

/* Bytes losa_run_train allocates beside the trainer (the step's tokens and
 * targets; the epoch order, a few bytes per training example, is not
 * counted). */
size_t losa_run_train_bytes(const lora_train_config *tc);

/* ---- step.c */
/* The LoSA loop (ALGORITHM.md section 2) on s, resuming after the last
 * complete checkpoint; res gets the final model's numbers. */
losa_status losa_phase_losa(losa_run *r, model_stage *s, losa_result *res);
/* Bytes the LoSA loop keeps beside adapters and reference outputs: the
 * (L+1, n, n) Gram matrices and two (L) vectors. */
size_t losa_loop_bytes(int L, int n);
/* Bytes of the copy of the stage's bf16 maps a LoSA step keeps from its
 * merge to the pruner's new mask (model.dtype = bf16, magnitude or Wanda;
 * else 0): n_layers layers of c. */
size_t losa_step_keep_bytes(const run_settings *rs, const model_config *c, int n_layers);
/* Bytes of the copy of the maps an evaluation between bf16 LoSA steps
 * (eval.each_step) holds: losa_plan's evaluation phase. */
size_t losa_eval_keep_bytes(const run_settings *rs, const model_config *c, int n_layers);

/* ---- ckpt.c */
/* Not collective.  The history of T steps of L layers, loss_cap optimizer
 * steps kept per step, in one allocation, reset to "no step done". */
void losa_history_init(losa_history *h, int T, int L, int64_t loss_cap);
void losa_history_reset(losa_history *h);
void losa_history_free(losa_history *h);
/* Bytes of the history datasets in an HDF5 file, with its metadata. */
int64_t losa_history_bytes(const losa_history *h);
/* Rank 0: /losa/steps_done = upto and the /losa/steps/ datasets. */
losa_status losa_history_write(const losa_history *h, io_store *io, int upto);
/* Rank 0: the last step with a COMPLETE marker (0 if none). */
int losa_ckpt_last(const losa_run *r);
/* Shards of every stage, the history (rank 0), then the COMPLETE marker. */
losa_status losa_ckpt_write(losa_run *r, int t, model_stage *s, lora_adapters *ad);
losa_status losa_ckpt_read(losa_run *r, int t, model_stage *s, lora_adapters *ad);
/* Rank 0: a damaged step_<t> renamed step_<t>.damaged.<n>, with a warning
 * naming the last error. */
losa_status losa_ckpt_set_aside(losa_run *r, int t);

/* ---- rundir.c */
/* Rank 0: the deck, layout and invocation count into ckpt/state.h5. */
losa_status losa_rundir_write_state(losa_run *r);
/* Rank 0: run.h5, the run file of every number of the run. */
losa_status losa_rundir_write_run_file(losa_run *r);
/* The whole model into output.dir/model.h5 (rank 0 writes). */
losa_status losa_rundir_write_model(losa_run *r, const model_stage *s, const char *source);
/* The baselines (dense, pruned, +LoRA) into ckpt/base.h5 (rank 0), and
 * back: 1 on every rank if they were read. */
losa_status losa_rundir_save_base(losa_run *r);
int losa_rundir_load_base(losa_run *r);

#endif
