/* dist: MPI layout (PP stages x DP replicas), pipeline point-to-point,
 * error agreement, reductions.  The only module that calls MPI. */
#include "dist.h"
#include "dist_internal.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dist_ctx {
    int rank, size;
    int pp, dp, stage, replica;
    MPI_Comm pipe;  /* one replica's stages; rank in pipe == stage */
    MPI_Comm stage_comm; /* the replicas of one stage; rank == replica */
    int *split;     /* (pp) layers per stage, NULL = the model's default */
};

static void abort_hook(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

losa_status dist_init(int *argc, char ***argv, dist_ctx **d)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(argc, argv) != MPI_SUCCESS)
        return core_err(LOSA_ERR_MPI, "MPI_Init failed");
    dist_ctx *c = core_calloc(1, sizeof *c);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->pipe = c->stage_comm = MPI_COMM_NULL;
    core_log_init(c->rank);
    core_set_abort_hook(abort_hook);
    *d = c;
    return dist_set_layout(c, c->size, 1);
}

losa_status dist_set_layout(dist_ctx *d, int pp, int dp)
{
    if (pp <= 0 && dp <= 0) pp = d->size, dp = 1;
    if (pp <= 0) pp = d->size / dp;
    if (dp <= 0) dp = d->size / pp;
    if (pp * dp != d->size)
        return core_err(LOSA_ERR_ARG, "parallel layout: pp %d x dp %d != %d ranks", pp, dp,
                        d->size);
    if (d->pipe != MPI_COMM_NULL) MPI_Comm_free(&d->pipe);
    if (d->stage_comm != MPI_COMM_NULL) MPI_Comm_free(&d->stage_comm);
    core_free(d->split);
    d->split = NULL;
    d->pp = pp;
    d->dp = dp;
    d->stage = d->rank % pp;
    d->replica = d->rank / pp;
    MPI_Comm_split(MPI_COMM_WORLD, d->replica, d->stage, &d->pipe);
    MPI_Comm_split(MPI_COMM_WORLD, d->stage, d->replica, &d->stage_comm);
    return LOSA_OK;
}

void dist_finalize(dist_ctx **d)
{
    if (!d || !*d) return;
    if ((*d)->pipe != MPI_COMM_NULL) MPI_Comm_free(&(*d)->pipe);
    if ((*d)->stage_comm != MPI_COMM_NULL) MPI_Comm_free(&(*d)->stage_comm);
    core_free((*d)->split);
    core_free(*d);
    *d = NULL;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

int dist_rank(const dist_ctx *d) { return d->rank; }
int dist_size(const dist_ctx *d) { return d->size; }
int dist_stage(const dist_ctx *d) { return d->stage; }
int dist_n_stages(const dist_ctx *d) { return d->pp; }
int dist_replica(const dist_ctx *d) { return d->replica; }
int dist_n_replicas(const dist_ctx *d) { return d->dp; }

void dist_set_stage_layers(dist_ctx *d, const int *count)
{
    core_free(d->split);
    d->split = NULL;
    if (!count) return;
    d->split = core_calloc((size_t)d->pp, sizeof(int));
    memcpy(d->split, count, sizeof(int) * (size_t)d->pp);
}

const int *dist_stage_layers(const dist_ctx *d) { return d->split; }
MPI_Comm dist_comm_stage(const dist_ctx *d) { return d->stage_comm; }

/* Large messages are sent in chunks of at most 2^30 floats (int counts). */
#define CHUNK ((size_t)1 << 30)

static void p2p(dist_ctx *d, float *x, size_t n, int peer, int tag, int send)
{
    for (size_t off = 0; off < n || (n == 0 && off == 0); off += CHUNK) {
        int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
        if (send) MPI_Send(x + off, cnt, MPI_FLOAT, peer, tag, d->pipe);
        else MPI_Recv(x + off, cnt, MPI_FLOAT, peer, tag, d->pipe, MPI_STATUS_IGNORE);
        if (n == 0) break;
    }
}

void dist_send_next(dist_ctx *d, const float *x, size_t n, int tag)
{
    LOSA_CHECK(d->stage + 1 < d->pp);
    p2p(d, (float *)x, n, d->stage + 1, tag, 1);
}
void dist_recv_prev(dist_ctx *d, float *x, size_t n, int tag)
{
    LOSA_CHECK(d->stage > 0);
    p2p(d, x, n, d->stage - 1, tag, 0);
}
void dist_send_prev(dist_ctx *d, const float *x, size_t n, int tag)
{
    LOSA_CHECK(d->stage > 0);
    p2p(d, (float *)x, n, d->stage - 1, tag, 1);
}
void dist_recv_next(dist_ctx *d, float *x, size_t n, int tag)
{
    LOSA_CHECK(d->stage + 1 < d->pp);
    p2p(d, x, n, d->stage + 1, tag, 0);
}

static void sendrecv(dist_ctx *d, const float *x, size_t n, int stag, float *y, size_t m,
                     int rtag, int peer)
{
    if (n > CHUNK || m > CHUNK) { /* huge messages: ordered halves */
        MPI_Request rq;
        LOSA_CHECK(m <= CHUNK);
        MPI_Irecv(y, (int)m, MPI_FLOAT, peer, rtag, d->pipe, &rq);
        p2p(d, (float *)x, n, peer, stag, 1);
        MPI_Wait(&rq, MPI_STATUS_IGNORE);
        return;
    }
    MPI_Sendrecv(x, (int)n, MPI_FLOAT, peer, stag, y, (int)m, MPI_FLOAT, peer, rtag, d->pipe,
                 MPI_STATUS_IGNORE);
}
void dist_sendrecv_next(dist_ctx *d, const float *x, size_t n, int stag, float *y, size_t m,
                        int rtag)
{
    LOSA_CHECK(d->stage + 1 < d->pp);
    sendrecv(d, x, n, stag, y, m, rtag, d->stage + 1);
}
void dist_sendrecv_prev(dist_ctx *d, const float *x, size_t n, int stag, float *y, size_t m,
                        int rtag)
{
    LOSA_CHECK(d->stage > 0);
    sendrecv(d, x, n, stag, y, m, rtag, d->stage - 1);
}

losa_status dist_agree(dist_ctx *d, losa_status s)
{
    /* lowest failing rank wins; its status and message go to everyone */
    int mine = s != LOSA_OK ? d->rank : d->size, first;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == d->size) return LOSA_OK;
    char msg[1024];
    int st = (int)s;
    if (d->rank == first) snprintf(msg, sizeof msg, "%s", core_errmsg());
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD);
    MPI_Bcast(&st, 1, MPI_INT, first, MPI_COMM_WORLD);
    if (d->size > 1 && first != 0 && d->rank == 0) {
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "(rank %d) %s", first, msg);
        core_err((losa_status)st, "%s", tmp);
    } else {
        core_err((losa_status)st, "%s", msg);
    }
    return (losa_status)st;
}

void dist_bcast(dist_ctx *d, void *buf, size_t bytes, int root)
{
    (void)d;
    for (size_t off = 0; off < bytes || (bytes == 0 && off == 0); off += CHUNK) {
        int cnt = (int)(bytes - off < CHUNK ? bytes - off : CHUNK);
        MPI_Bcast((char *)buf + off, cnt, MPI_BYTE, root, MPI_COMM_WORLD);
        if (bytes == 0) break;
    }
}

void dist_bcast_from_last(dist_ctx *d, void *buf, size_t bytes)
{
    LOSA_CHECK(bytes < ((size_t)1 << 31));
    MPI_Bcast(buf, (int)bytes, MPI_BYTE, d->pp - 1, d->pipe);
}

void dist_sum_doubles(dist_ctx *d, double *x, int n)
{
    (void)d;
    MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void dist_sum_floats_stage(dist_ctx *d, float *x, size_t n)
{
    if (d->dp == 1) return;
    for (size_t off = 0; off < n; off += CHUNK) {
        int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
        MPI_Allreduce(MPI_IN_PLACE, x + off, cnt, MPI_FLOAT, MPI_SUM, d->stage_comm);
    }
}

void dist_sum_doubles_stage(dist_ctx *d, double *x, size_t n)
{
    if (d->dp == 1) return;
    for (size_t off = 0; off < n; off += CHUNK) {
        int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
        MPI_Allreduce(MPI_IN_PLACE, x + off, cnt, MPI_DOUBLE, MPI_SUM, d->stage_comm);
    }
}

void dist_barrier(dist_ctx *d)
{
    (void)d;
    MPI_Barrier(MPI_COMM_WORLD);
}

void dist_barrier_idle(dist_ctx *d)
{
    (void)d;
    MPI_Request rq;
    int done = 0;
    MPI_Ibarrier(MPI_COMM_WORLD, &rq);
    while (MPI_Test(&rq, &done, MPI_STATUS_IGNORE), !done) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

losa_status dist_read_file(dist_ctx *d, const char *path, char **data, size_t *size)
{
    losa_status s = LOSA_OK;
    uint64_t n = 0;
    *data = NULL;
    *size = 0;
    if (d->rank == 0) {
        s = core_read_file(path, data, size);
        n = s == LOSA_OK ? *size : 0;
    }
    if ((s = dist_agree(d, s)) != LOSA_OK) {
        free(*data);
        *data = NULL;
        return s;
    }
    dist_bcast(d, &n, sizeof n, 0);
    if (d->rank != 0) {
        *data = core_calloc(n + 1, 1); /* NUL-terminated */
    }
    dist_bcast(d, *data, n, 0);
    *size = n;
    return LOSA_OK;
}
