/* Writing a pipeline-distributed model into one store. */
#include "dist.h"
#include "io.h"
#include "losa.h"

/* Collective.  Rank 0 writes config, tokenizer and every stage (the first
 * replica's), receiving one stage at a time by broadcast from its owner
 * (world rank = stage index in the layout rank = replica * PP + stage).  A
 * bf16 stage (plain layout) travels as its fp32 block and its bf16 block
 * (maps and, on the last stage, the head rows), and is written with the
 * maps and the head in bf16 (root attribute dtype = bf16). */
losa_status losa_store_write_model(dist_ctx *d, io_store *io, const model_stage *s,
                                   const tok_tokenizer *tok, const char *source)
{
    losa_status st = dist_agree(d, model_stage_require_plain(s, "store write"));
    if (st != LOSA_OK) {
        if (dist_rank(d) == 0) io_store_close(&io);
        return st;
    }
    if (dist_rank(d) == 0) {
        st = io_store_write_config(io, &s->cfg, source);
        if (st == LOSA_OK) st = io_store_write_tokenizer(io, tok);
    }
    for (int p = 0; p < dist_n_stages(d); p++) {
        model_stage tmp;
        const model_stage *src = s;
        if (dist_rank(d) != p) {
            LOSA_CHECK(model_stage_build_dtype(&tmp, &s->cfg, p, dist_n_stages(d),
                                               dist_stage_layers(d), s->dtype) == LOSA_OK);
            src = &tmp;
        }
        dist_bcast(d, src->params, sizeof(float) * src->n_params, p);
        if (src->dtype == MODEL_DTYPE_BF16)
            dist_bcast(d, src->params_bf16, sizeof(uint16_t) * src->n_params_bf16, p);
        if (dist_rank(d) == 0 && st == LOSA_OK) st = io_store_write_stage(io, src);
        if (src != s) model_stage_free(&tmp);
    }
    if (dist_rank(d) == 0 && st == LOSA_OK) st = io_store_commit(&io);
    else if (dist_rank(d) == 0) io_store_close(&io);
    return dist_agree(d, st);
}

losa_status losa_store_lock_output(dist_ctx *d, const char *out, const char *in, const char *where,
                                   core_lock *lk)
{
    lk->fd = -1;
    lk->path[0] = 0;
    losa_status st = LOSA_OK;
    if (dist_rank(d) == 0) {
        char path[1100], what[1200];
        snprintf(what, sizeof what, "output store %s", out);
        snprintf(path, sizeof path, "%s.lock", out);
        if (core_same_file(out, in))
            st = core_err(LOSA_ERR_ARG, "%s: %s is the input model.store %s: it would be "
                          "overwritten; choose another output path", where, out, in);
        else
            st = core_lock_acquire(lk, path, what);
    }
    st = dist_agree(d, st);
    if (st != LOSA_OK) core_lock_release(lk);
    return st;
}
