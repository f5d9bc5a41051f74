/* dist: everything MPI.  The layout: P ranks = PP pipeline stages x DP
 * replicas; rank = replica * PP + stage.  Communicators are built once in
 * dist_init and named: pipe (one replica's stages, ordered by stage) and
 * stage (the replicas of one stage).  No other module includes mpi.h.
 */
#ifndef LOSA_DIST_H
#define LOSA_DIST_H

#include "core.h"

typedef struct dist_ctx dist_ctx; /* opaque */

/* Collective over MPI_COMM_WORLD: MPI_Init + layout. pp*dp must equal the
 * world size; dp = 0 means "world size / pp"; pp = 0 means "world size". */
losa_status dist_init(int *argc, char ***argv, dist_ctx **d);
/* Collective: (re)build the layout's communicators. */
losa_status dist_set_layout(dist_ctx *d, int pp, int dp);
void dist_finalize(dist_ctx **d);

int dist_rank(const dist_ctx *d);
int dist_size(const dist_ctx *d);
int dist_stage(const dist_ctx *d);     /* 0..PP-1 */
int dist_n_stages(const dist_ctx *d);  /* PP */
int dist_replica(const dist_ctx *d);   /* 0..DP-1 */
int dist_n_replicas(const dist_ctx *d);/* DP */
/* The layout's stage split: layers per stage, count (PP) copied (NULL: the
 * model's default split).  dist_set_layout resets it to NULL.  Not
 * collective, but every rank must set the same split. */
void dist_set_stage_layers(dist_ctx *d, const int *count);
const int *dist_stage_layers(const dist_ctx *d); /* (PP) or NULL */

/* Pipeline point-to-point within this replica (blocking). */
void dist_send_next(dist_ctx *d, const float *x, size_t n, int tag);
void dist_recv_prev(dist_ctx *d, float *x, size_t n, int tag);
void dist_send_prev(dist_ctx *d, const float *x, size_t n, int tag);
void dist_recv_next(dist_ctx *d, float *x, size_t n, int tag);
/* Pipeline exchange with one neighbour (deadlock-free pairing for 1F1B):
 * send x (n floats, tag stag) to the next/prev stage and receive y (m floats,
 * tag rtag) from the same stage. */
void dist_sendrecv_next(dist_ctx *d, const float *x, size_t n, int stag, float *y, size_t m,
                        int rtag);
void dist_sendrecv_prev(dist_ctx *d, const float *x, size_t n, int stag, float *y, size_t m,
                        int rtag);

/* Collective (world): every rank passes its status; returns the first
 * non-OK status of the lowest failing rank, and that rank's message is
 * broadcast so every rank can print the same one line. */
losa_status dist_agree(dist_ctx *d, losa_status s);
/* Collective (world) broadcasts from world rank root. */
void dist_bcast(dist_ctx *d, void *buf, size_t bytes, int root);
/* Broadcast from the last stage to all stages of this pipeline. */
void dist_bcast_from_last(dist_ctx *d, void *buf, size_t bytes);
/* Sums (world) */
void dist_sum_doubles(dist_ctx *d, double *x, int n);
void dist_sum_doubles_stage(dist_ctx *d, double *x, size_t n); /* over replicas */
void dist_sum_floats_stage(dist_ctx *d, float *x, size_t n); /* over replicas */
void dist_barrier(dist_ctx *d);
/* Barrier (world) that sleeps while waiting (1 ms polls) instead of
 * spinning: lets the other ranks use this rank's core (benchmarks). */
void dist_barrier_idle(dist_ctx *d);
/* Collective (world): rank 0 reads the whole file, every rank receives its
 * bytes (NUL-terminated, malloc'd); errors agreed. */
losa_status dist_read_file(dist_ctx *d, const char *path, char **data, size_t *size);

/* ---- SparseGPT over a stage's replicas (src/dist/scalapack.c) ----------- */
#include "prune.h"

/* Collective over this rank's stage (its DP replicas).  H (in, in) symmetric,
 * equal on every replica (already all-reduced).  Same result as
 * prune_sparsegpt_prepare_hinv: dead inputs, damping percdamp*mean(diag),
 * Hinv_upper (in, in) row-major = U, U^T U = (H + damp I)^{-1}, strict lower
 * triangle 0 -- computed with ScaLAPACK (pdpotrf, pdpotri, pdpotrf) on a
 * BLACS grid over the stage communicator (block size nb; <= 0 picks 64) and
 * returned on every replica.  One replica, or in <= the local limit
 * (dist_sparsegpt_hinv_local): LAPACK (prune_sparsegpt_prepare_hinv) on
 * every replica, its status reduced over the stage.
 * LOSA_ERR_NUMERIC (on every replica) if a factorisation fails. */
/* Widths up to DIST_HINV_LOCAL_MAX (and one replica): every replica runs
 * the LAPACK path on its own copy instead (the one-rank result exactly, no
 * messages): at minillama's widths 256-768 ScaLAPACK over 2 replicas was
 * slower than one rank (losa_prune 1.97 s vs 1.50 s on a quiet 2-core
 * node; hinv 33 s vs 0.6 s on a loaded one, its fine-grained messages
 * starved).  dist_sparsegpt_hinv_nb always takes ScaLAPACK (P > 1). */
#define DIST_HINV_LOCAL_MAX 2048
int dist_sparsegpt_hinv_local(int in, int P);
/* Maps of up to DIST_ROWS_LOCAL_MAX weights (and one replica): every
 * replica sweeps all rows itself.  Split, each column block of an
 * unstructured sweep costs three blocking collectives over the replicas
 * (dist_select_stage: all of them wait for the slowest) plus the gather of
 * W, to save (P - 1) / P of 2 out bs in FLOPs of sweep (at most 67 MFLOP
 * a block here) while the block's mask selection is not split at all: at
 * minillama's maps (at most 768 x 256) on 2 replicas the split's masks
 * took 0.5-0.7 s a layer against 0.05 s on one rank (a loaded 2-core node;
 * the sweep it saved 0.02 s). */
#define DIST_ROWS_LOCAL_MAX ((int64_t)1 << 18)
int dist_sparsegpt_rows_local(int out, int in, int P);
losa_status dist_sparsegpt_hinv(dist_ctx *d, const double *H /* (in, in) */, int in,
                                double percdamp, double *Hinv_upper /* (in, in) out */,
                                unsigned char *dead /* (in) out, or NULL */);
losa_status dist_sparsegpt_hinv_nb(dist_ctx *d, const double *H, int in, double percdamp,
                                   double *Hinv_upper, unsigned char *dead, int nb);

/* Contiguous split of out rows over n parts: part p holds [*row0, *row0 + *nrows). */
void dist_rows_split(int out, int n, int p, int *row0, int *nrows);

/* Collective over this rank's stage.  The SparseGPT column sweep of W
 * (out, in), equal on every replica on entry, with the rows split over the
 * replicas (dist_rows_split); unstructured selection uses dist_select_stage;
 * the pruned rows are all-gathered so W is the whole pruned matrix on every
 * replica on return (bit-identical to prune_sparsegpt_rows on one process).
 * A small W (dist_sparsegpt_rows_local) is swept whole by every replica
 * (prune_sparsegpt_rows on its own copy, the one-rank result exactly), its
 * status reduced over the stage.
 * t (or NULL): this replica's timings; t->loss the whole W's. */
losa_status dist_sparsegpt_rows(dist_ctx *d, float *W /* (out, in) */, int out, int in,
                                const double *Hinv_upper /* (in, in) */,
                                const unsigned char *dead /* (in) or NULL */,
                                double sparsity, int nm_n, int nm_m, int blocksize,
                                prune_sparsegpt_timing *t);
/* dist_sparsegpt_rows with the rows split whatever the size (P > 1). */
losa_status dist_sparsegpt_rows_split(dist_ctx *d, float *W, int out, int in,
                                      const double *Hinv_upper, const unsigned char *dead,
                                      double sparsity, int nm_n, int nm_m, int blocksize,
                                      prune_sparsegpt_timing *t);
/* Scratch bytes the two calls allocate on one of P replicas (the most of
 * any replica; P = 1: the local pruner's): ScaLAPACK's local blocks of the
 * (in, in) matrix (a small Hessian: the local factorisation's); the sweep
 * of the replica's rows and the block scores gathered for the selection
 * (a small map, dist_sparsegpt_rows_local: the whole map's sweep). */
size_t dist_sparsegpt_hinv_bytes(int in, int P);
size_t dist_sparsegpt_rows_bytes(int out, int in, int blocksize, int P);
/* The SparseGPT hooks of prune_group over this rank's stage (ctx = d):
 * dist_sparsegpt_hinv and dist_sparsegpt_rows.  Collective in the same
 * sense. */
prune_sparsegpt_hooks dist_sparsegpt_hooks(dist_ctx *d);

/* prune_select_fn over the stage: ctx is the dist_ctx; the rows of all
 * replicas must be contiguous in replica order (as dist_rows_split).  The
 * block's scores are all-gathered and every replica selects the same k-th
 * (score, index) pair. */
losa_status dist_select_stage(void *ctx, const double *score, int nrows, int count,
                              int64_t row0, int64_t k_global, prune_threshold *thr);

#endif
