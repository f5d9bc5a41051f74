/* Writing a pipeline-distributed model into one store. */
#include "dist.h"
#include "io.h"
#include "losa.h"

/* Collective.  Rank 0 writes config, tokenizer and every stage (the first
 * replica's), receiving one stage at a time by broadcast from its owner
 * (world rank = stage index in the layout rank = replica * PP + stage). */
losa_status losa_store_write_model(dist_ctx *d, io_store *io, const model_stage *s,
                                   const tok_tokenizer *tok, const char *source)
{
    losa_status st = LOSA_OK;
    if (dist_rank(d) == 0) {
        st = io_store_write_config(io, &s->cfg, source);
        if (st == LOSA_OK) st = io_store_write_tokenizer(io, tok);
    }
    for (int p = 0; p < dist_n_stages(d); p++) {
        model_stage tmp;
        const model_stage *src = s;
        if (dist_rank(d) != p) {
            LOSA_CHECK(model_stage_build(&tmp, &s->cfg, p, dist_n_stages(d)) == LOSA_OK);
            src = &tmp;
        }
        dist_bcast(d, src->params, sizeof(float) * src->n_params, p);
        if (dist_rank(d) == 0 && st == LOSA_OK) st = io_store_write_stage(io, src);
        if (src != s) model_stage_free(&tmp);
    }
    if (dist_rank(d) == 0 && st == LOSA_OK) st = io_store_commit(&io);
    else if (dist_rank(d) == 0) io_store_close(&io);
    return dist_agree(d, st);
}

