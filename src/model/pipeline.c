/* Pipeline drivers: move a micro-batch's activations stage to stage.
 * Collective over the pipeline communicator of the caller's replica. */
#include "model.h"

#include <string.h>

#include "dist.h"

void model_pipeline_forward(dist_ctx *d, model_acts *a, const model_stage *s,
                            const int *tokens, int B, int T, int tag)
{
    size_t n = (size_t)B * T * s->cfg.dim;
    LOSA_CHECK(B <= a->B && T <= a->T);
    if (s->has_embed) model_stage_embed(a, s, tokens, B, T);
    else dist_recv_prev(d, a->x, n, tag);
    for (int l = 0; l < s->n_layers; l++) model_layer_forward(a, s, l, B, T);
    if (s->has_head) model_stage_head(a, s, B, T);
    else dist_send_next(d, a->x, n, tag);
}

losa_status model_stage_for_rank(model_stage *s, const model_config *c,
                                 dist_ctx *d)
{
    return model_stage_build(s, c, dist_stage(d), dist_n_stages(d));
}
