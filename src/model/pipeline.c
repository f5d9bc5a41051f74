/* Pipeline drivers: move a micro-batch's activations stage to stage.
 * Collective over the pipeline communicator of the caller's replica. */
#include "model.h"

#include "dist.h"

void model_pipeline_forward(dist_ctx *d, model_acts *a, const model_stage *s,
                            const int *tokens, int B, int T, int seq)
{
    int64_t N = (int64_t)B * T;
    LOSA_CHECK(B <= a->B && T <= a->T);
    if (s->has_embed) model_stage_embed(a, s, tokens, B, T);
    else model_stage_recv_input(d, s, a->x, N, MODEL_STAGE_TAG_FORWARD, seq);
    for (int l = 0; l < s->n_layers; l++) model_layer_forward(a, s, l, B, T);
    if (s->has_head) model_stage_head(a, s, B, T);
    else model_stage_send_output(d, s, a->x, N, MODEL_STAGE_TAG_FORWARD, seq);
}

losa_status model_stage_for_rank(model_stage *s, const model_config *c,
                                 dist_ctx *d)
{
    return model_stage_build_split(s, c, dist_stage(d), dist_n_stages(d), dist_stage_layers(d));
}

losa_status model_stage_for_rank_dtype(model_stage *s, const model_config *c, dist_ctx *d,
                                       model_dtype t)
{
    return model_stage_build_dtype(s, c, dist_stage(d), dist_n_stages(d), dist_stage_layers(d), t);
}
