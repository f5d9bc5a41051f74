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

/* Pipeline point-to-point within this replica (blocking). */
void dist_send_next(dist_ctx *d, const float *x, size_t n, int tag);
void dist_recv_prev(dist_ctx *d, float *x, size_t n, int tag);
void dist_send_prev(dist_ctx *d, const float *x, size_t n, int tag);
void dist_recv_next(dist_ctx *d, float *x, size_t n, int tag);
/* Non-blocking send to the next/prev stage; dist_wait_sends completes all. */
void dist_isend_next(dist_ctx *d, const float *x, size_t n, int tag);
void dist_isend_prev(dist_ctx *d, const float *x, size_t n, int tag);
void dist_wait_sends(dist_ctx *d);

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
/* Broadcast within this replica's pipeline from stage root. */
void dist_bcast_pipe(dist_ctx *d, void *buf, size_t bytes, int root);
void dist_sum_floats_stage(dist_ctx *d, float *x, size_t n); /* over replicas */
void dist_barrier(dist_ctx *d);
/* Collective (world): rank 0 reads the whole file, every rank receives its
 * bytes (NUL-terminated, malloc'd); errors agreed. */
losa_status dist_read_file(dist_ctx *d, const char *path, char **data, size_t *size);
void dist_abort(int code);

#endif
