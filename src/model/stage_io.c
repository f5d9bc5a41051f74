/* The stage door: every message between pipeline stages (activations
 * forward, their gradients backward) with its named tag (include/model.h).
 * The transport is src/dist's blocking point-to-point over the pipeline
 * communicator of this rank's replica. */
#include "model.h"

#include "dist.h"

/* the last kind's block ends inside MPI's guaranteed tag range */
_Static_assert(MODEL_STAGE_TAG_CALIB_DENSE + MODEL_STAGE_TAG_SPAN - 1 <= 32767,
               "stage tags exceed MPI_TAG_UB's guaranteed 32767");

int model_stage_tag_seq(model_stage_tag tag, int64_t seq)
{
    LOSA_CHECK(tag >= 0 && tag % MODEL_STAGE_TAG_SPAN == 0 &&
               tag <= MODEL_STAGE_TAG_CALIB_DENSE && seq >= 0);
    return (int)tag + (int)(seq % MODEL_STAGE_TAG_SPAN);
}

/* floats in a message of N token rows */
static size_t rows(const model_stage *s, int64_t N)
{
    LOSA_CHECK(N >= 0);
    return (size_t)N * (size_t)s->cfg.dim;
}

void model_stage_recv_input(dist_ctx *d, const model_stage *s, float *x, int64_t N,
                            model_stage_tag tag, int64_t seq)
{
    if (!s->has_embed) dist_recv_prev(d, x, rows(s, N), model_stage_tag_seq(tag, seq));
}

void model_stage_send_output(dist_ctx *d, const model_stage *s, const float *x, int64_t N,
                             model_stage_tag tag, int64_t seq)
{
    if (!s->has_head) dist_send_next(d, x, rows(s, N), model_stage_tag_seq(tag, seq));
}

void model_stage_recv_output_grad(dist_ctx *d, const model_stage *s, float *dx, int64_t N,
                                  int64_t seq)
{
    if (!s->has_head)
        dist_recv_next(d, dx, rows(s, N), model_stage_tag_seq(MODEL_STAGE_TAG_BACKWARD, seq));
}

void model_stage_send_input_grad(dist_ctx *d, const model_stage *s, const float *dx,
                                 int64_t N, int64_t seq)
{
    if (!s->has_embed)
        dist_send_prev(d, dx, rows(s, N), model_stage_tag_seq(MODEL_STAGE_TAG_BACKWARD, seq));
}

void model_stage_send_output_recv_grad(dist_ctx *d, const model_stage *s, const float *x,
                                       int64_t fseq, float *dx, int64_t bseq, int64_t N)
{
    if (s->has_head) return;
    size_t n = rows(s, N);
    dist_sendrecv_next(d, x, n, model_stage_tag_seq(MODEL_STAGE_TAG_FORWARD, fseq), dx, n,
                       model_stage_tag_seq(MODEL_STAGE_TAG_BACKWARD, bseq));
}

void model_stage_send_input_grad_recv_input(dist_ctx *d, const model_stage *s,
                                            const float *dx, int64_t bseq, float *x,
                                            int64_t fseq, int64_t N)
{
    if (s->has_embed) return;
    size_t n = rows(s, N);
    dist_sendrecv_prev(d, dx, n, model_stage_tag_seq(MODEL_STAGE_TAG_BACKWARD, bseq), x, n,
                       model_stage_tag_seq(MODEL_STAGE_TAG_FORWARD, fseq));
}
