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

/* Collective: the whole model on rank 0 (every stage broadcasts its layers). */
void model_gather_full(dist_ctx *d, const model_stage *s, model_stage *full)
{
    const model_config *c = &s->cfg;
    int P = dist_n_stages(d), first[P], count[P];
    model_split_layers(c, P, first, count);
    if (dist_rank(d) == 0) LOSA_CHECK(model_stage_build(full, c, 0, 1) == LOSA_OK);
    int64_t D = c->dim, V = c->vocab_size;
    size_t lp = (size_t)(s->layers[0].ffn_norm - s->layers[0].attn_norm) + D;
    float *buf = core_calloc(lp + V * D, sizeof(float));
    for (int p = 0; p < P; p++)
        for (int l = 0; l < count[p]; l++) {
            int gl = first[p] + l;
            if (dist_stage(d) == p) memcpy(buf, s->layers[l].attn_norm, sizeof(float) * lp);
            dist_bcast(d, buf, sizeof(float) * lp, p);
            if (dist_rank(d) == 0) memcpy(full->layers[gl].attn_norm, buf, sizeof(float) * lp);
        }
    /* embedding from stage 0 (rank 0 has it); norm + head from the last */
    if (dist_rank(d) == 0) memcpy(full->embed, s->embed, sizeof(float) * V * D);
    size_t nh = D + (c->tie_embeddings ? 0 : V * D);
    if (s->has_head) {
        memcpy(buf, s->final_norm, sizeof(float) * D);
        if (!c->tie_embeddings) memcpy(buf + D, s->head, sizeof(float) * V * D);
    }
    dist_bcast(d, buf, sizeof(float) * nh, P - 1);
    if (dist_rank(d) == 0) {
        memcpy(full->final_norm, buf, sizeof(float) * D);
        if (!c->tie_embeddings) memcpy(full->head, buf + D, sizeof(float) * V * D);
    }
    core_free(buf);
}

