/* inputs: what a command reads before it works — the model's configuration
 * and tokenizer, calibration windows, the perplexity text, training
 * examples — each error prefixed with where the deck named the file (see
 * include/losa.h).  Collective throughout; errors agreed. */
#include "losa.h"

#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "dist.h"
#include "io.h"
#include "settings.h"

/* s (agreed) with the message prefixed by where the file f was set. */
static losa_status about(const settings_file *f, losa_status s)
{
    return s == LOSA_OK ? s : settings_file_err(f, s, "%s", core_errmsg());
}

losa_status losa_tokenize_file(dist_ctx *d, const tok_tokenizer *tok, const char *path, int bos,
                               int **ids, int64_t *n)
{
    char *text;
    size_t len;
    *ids = NULL;
    *n = 0;
    losa_status s = dist_read_file(d, path, &text, &len);
    if (s != LOSA_OK) return s;
    int64_t cnt = 0;
    if (dist_rank(d) == 0) s = tok_encode(tok, text, len, bos, 0, ids, &cnt);
    free(text);
    if ((s = dist_agree(d, s)) != LOSA_OK) return s;
    dist_bcast(d, &cnt, sizeof cnt, 0);
    if (dist_rank(d) != 0) *ids = malloc(sizeof(int) * (cnt ? cnt : 1));
    LOSA_CHECK(*ids != NULL);
    dist_bcast(d, *ids, sizeof(int) * cnt, 0);
    *n = cnt;
    return LOSA_OK;
}

losa_status losa_load_calib(dist_ctx *d, const tok_tokenizer *tok, const data_settings *ds,
                            int **tokens)
{
    *tokens = core_calloc((size_t)ds->calib_n * ds->calib_seqlen, sizeof(int));
    losa_status s = calib_load_windows(d, tok, ds->calib.path, ds->calib_n, ds->calib_seqlen,
                                       &ds->draw, *tokens);
    return about(&ds->calib, s);
}

losa_status losa_load_eval_text(dist_ctx *d, const tok_tokenizer *tok, const data_settings *ds,
                                const eval_settings *es, int **ids, int64_t *n)
{
    *ids = NULL;
    *n = 0;
    if (!ds->eval_text.path[0]) return LOSA_OK;
    losa_status s = losa_tokenize_file(d, tok, ds->eval_text.path, 1, ids, n);
    if (s == LOSA_OK && *n < es->seqlen)
        s = core_err(LOSA_ERR_ARG, "%s: %lld tokens, fewer than one window of eval.seqlen %d",
                     ds->eval_text.path, (long long)*n, es->seqlen);
    return about(&ds->eval_text, s);
}

losa_status losa_load_train(dist_ctx *d, const tok_tokenizer *tok, const data_settings *ds, int T,
                            lora_dataset *out)
{
    return about(&ds->train, lora_data_load(d, ds->train.path, ds->train_format, tok, T, out));
}

losa_status losa_inputs_read_model(dist_ctx *d, const model_settings *m, losa_inputs *in)
{
    io_store *io = NULL;
    losa_status s = io_store_open(&io, m->store.path);
    if (s == LOSA_OK) s = io_store_read_config(io, &in->cfg);
    if (s == LOSA_OK) s = io_store_read_tokenizer(io, &in->tok);
    io_store_close(&io);
    return about(&m->store, dist_agree(d, s));
}

losa_status losa_inputs_load_data(dist_ctx *d, const run_settings *rs, losa_inputs *in)
{
    double t0 = core_time();
    losa_status s = losa_load_calib(d, &in->tok, &rs->data, &in->calib);
    if (s == LOSA_OK)
        s = losa_load_eval_text(d, &in->tok, &rs->data, &rs->eval, &in->eval_ids, &in->n_eval);
    if (s == LOSA_OK && rs->losa.mode != LOSA_MODE_PRUNE)
        s = losa_load_train(d, &in->tok, &rs->data, rs->train.tc.T, &in->ds);
    in->load_seconds = core_time() - t0;
    return s;
}

void losa_inputs_free(losa_inputs *in)
{
    core_free(in->calib);
    free(in->eval_ids);
    lora_data_free(&in->ds);
    tok_free(&in->tok);
    memset(in, 0, sizeof *in);
}
