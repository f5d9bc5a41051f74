/* Perplexity through the pipeline (see include/eval.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "eval.h"
#include "kernels.h"

size_t eval_ppl_bytes(const model_config *c, int n_layers, int has_head, int64_t nw, int S,
                      int B)
{
    if (B > nw) B = (int)(nw > 0 ? nw : 1);
    return model_acts_bytes(c, n_layers, has_head, B, S, MODEL_ACTS_NOSAVE) +
           core_alloc_bytes((size_t)(nw > 0 ? nw : 1), sizeof(double)) +
           2 * (size_t)B * S * sizeof(int);
}

losa_status eval_ppl(dist_ctx *d, const model_stage *s, const int *ids,
                     int64_t n, int S, int B, int max_windows,
                     eval_ppl_result *r)
{
    memset(r, 0, sizeof *r);
    if (S < 2) return core_err(LOSA_ERR_ARG, "perplexity: seqlen %d must be >= 2", S);
    if (S > s->cfg.max_seq_len)
        return core_err(LOSA_ERR_ARG, "perplexity: seqlen %d exceeds the model's max_seq_len %d",
                        S, s->cfg.max_seq_len);
    int nw = (int)(n / S);
    if (max_windows > 0 && nw > max_windows) nw = max_windows;
    if (nw == 0)
        return core_err(LOSA_ERR_ARG, "perplexity: text has %lld tokens, fewer than one window of %d",
                        (long long)n, S);
    if (B > nw) B = nw;
    double t0 = core_time();
    int dp = dist_n_replicas(d), rep = dist_replica(d);
    /* this replica's windows: w = rep, rep + dp, ...; in batches of B */
    int mine = (nw - rep + dp - 1) / dp;
    if (mine < 0) mine = 0;
    model_acts a;
    losa_status st = model_acts_build(&a, s, B, S, 0);
    if (st != LOSA_OK) return st;
    double *win_nll = core_calloc(nw, sizeof(double));
    int *tok = core_malloc((size_t)B * S, sizeof(int)), *tgt = core_malloc((size_t)B * S, sizeof(int));
    core_progress p;
    core_progress_start(&p, "ppl windows", "tok", nw);
    int nb = (mine + B - 1) / B;
    for (int bi = 0; bi < nb; bi++) {
        int b0 = bi * B, bc = mine - b0 < B ? mine - b0 : B;
        for (int b = 0; b < bc; b++) {
            int w = rep + (b0 + b) * dp;
            const int *src = ids + (int64_t)w * S;
            memcpy(tok + b * S, src, sizeof(int) * S);
            for (int t = 0; t < S; t++) tgt[b * S + t] = t + 1 < S ? src[t + 1] : -1;
        }
        model_pipeline_forward(d, &a, s, tok, bc, S, bi);
        if (s->has_head) {
            int V = s->cfg.vocab_size;
            for (int b = 0; b < bc; b++) {
                double sum = 0;
                for (int t = 0; t < S - 1; t++)
                    sum += kern_nll_row(a.logits + ((int64_t)b * S + t) * V,
                                               tgt[b * S + t], V);
                win_nll[rep + (b0 + b) * dp] = sum;
            }
        }
        if (s->has_embed && rep == 0)
            core_progress_update(&p, (int64_t)(b0 + bc) * dp > nw ? nw : (b0 + bc) * dp,
                                 (int64_t)(b0 + bc) * dp * S, NULL);
    }
    /* exactly one rank holds each window's value: the world sum is exact */
    dist_sum_doubles(d, win_nll, nw);
    double total = 0;
    for (int w = 0; w < nw; w++) total += win_nll[w];
    if (s->has_embed && rep == 0) core_progress_end(&p, (int64_t)nw * S);
    r->nll_sum = total;
    r->predicted = (int64_t)nw * (S - 1);
    r->ppl = exp(total / r->predicted);
    r->tokens = n;
    r->windows = nw;
    r->seqlen = S;
    r->seconds = core_time() - t0;
    free(tok);
    free(tgt);
    core_free(win_nll);
    model_acts_free(&a);
    return isfinite(r->ppl) ? LOSA_OK
                            : core_err(LOSA_ERR_NUMERIC, "perplexity is not finite (NLL sum %g)", total);
}
