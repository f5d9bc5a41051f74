/* Zero-shot multiple-choice scoring, lm-evaluation-harness style (the rule
 * in include/eval.h): the requests of a task (tasks.c) through the
 * pipeline, log-likelihoods of the continuations, acc and acc_norm. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "eval.h"
#include "kernels.h"

/* ---- scoring through the pipeline ---- */
typedef struct {
    int n, idx;
} zs_order;

static int zs_order_cmp(const void *a, const void *b)
{
    const zs_order *x = a, *y = b;
    if (x->n != y->n) return x->n > y->n ? -1 : 1;
    return x->idx - y->idx;
}

losa_status eval_loglik(dist_ctx *d, const model_stage *s, const eval_request *req,
                        int n_req, int batch_tokens, double *ll)
{
    memset(ll, 0, sizeof(double) * (size_t)n_req);
    if (n_req == 0) return LOSA_OK;
    int Tcap = 1, V = s->cfg.vocab_size;
    for (int i = 0; i < n_req; i++) {
        if (req[i].n < 2 || req[i].n_cont < 1 || req[i].n_cont > req[i].n - 1)
            return core_err(LOSA_ERR_INTERNAL, "zero-shot: request %d has %d tokens, %d scored",
                            i, req[i].n, req[i].n_cont);
        if (req[i].n - 1 > Tcap) Tcap = req[i].n - 1;
    }
    if (Tcap > s->cfg.max_seq_len)
        return core_err(LOSA_ERR_ARG, "zero-shot: a request of %d tokens exceeds max_seq_len %d",
                        Tcap, s->cfg.max_seq_len);
    int Bcap = batch_tokens / Tcap;
    if (Bcap < 1) Bcap = 1;
    if (Bcap > 64) Bcap = 64;
    if (Bcap > n_req) Bcap = n_req;
    zs_order *ord = core_malloc((size_t)n_req, sizeof *ord);
    for (int i = 0; i < n_req; i++) ord[i] = (zs_order){req[i].n, i};
    qsort(ord, n_req, sizeof *ord, zs_order_cmp);
    model_acts a;
    losa_status st = model_acts_build(&a, s, Bcap, Tcap, 0);
    if (st != LOSA_OK) {
        free(ord);
        return st;
    }
    int *tok = core_malloc((size_t)Bcap * Tcap, sizeof(int)); /* (B,T) */
    int dp = dist_n_replicas(d), rep = dist_replica(d), nb = (n_req + Bcap - 1) / Bcap;
    int show = s->has_embed && rep == 0;
    core_progress p;
    if (show) core_progress_start(&p, "zero-shot requests", "tok", n_req);
    int64_t done_tok = 0;
    for (int bi = rep; bi < nb; bi += dp) {
        int i0 = bi * Bcap, bc = n_req - i0 < Bcap ? n_req - i0 : Bcap;
        int T = ord[i0].n - 1; /* longest of the batch (sorted) */
        for (int b = 0; b < bc; b++) {
            const eval_request *r = &req[ord[i0 + b].idx];
            int nin = r->n - 1;
            memcpy(tok + (size_t)b * T, r->tokens, sizeof(int) * nin);
            for (int t = nin; t < T; t++) tok[(size_t)b * T + t] = 0; /* right pad */
        }
        model_pipeline_forward(d, &a, s, tok, bc, T, bi); /* seq: the batch */
        if (s->has_head) {
            for (int b = 0; b < bc; b++) {
                const eval_request *r = &req[ord[i0 + b].idx];
                int nin = r->n - 1;
                double sum = 0;
                for (int j = nin - r->n_cont; j < nin; j++)
                    sum -= kern_nll_row(a.logits + ((int64_t)b * T + j) * V, r->tokens[j + 1], V);
                ll[ord[i0 + b].idx] = sum;
            }
        }
        if (show) { /* this replica's share, scaled to the whole */
            done_tok += (int64_t)bc * T;
            int64_t done = (int64_t)(bi + dp) * Bcap;
            core_progress_update(&p, done > n_req ? n_req : done, done_tok * dp, NULL);
        }
    }
    if (show) core_progress_end(&p, done_tok * dp);
    /* exactly one rank (a last stage) holds each request's value */
    dist_sum_doubles(d, ll, n_req);
    free(tok);
    free(ord);
    model_acts_free(&a);
    for (int i = 0; i < n_req; i++)
        if (!isfinite(ll[i]))
            return core_err(LOSA_ERR_NUMERIC, "zero-shot: log-likelihood of request %d is %g", i, ll[i]);
    return LOSA_OK;
}

void eval_task_result_free(eval_task_result *r)
{
    if (!r) return;
    free(r->ll);
    r->ll = NULL;
}

void eval_mc_score(const double *ll, const eval_task *t, eval_task_result *r)
{
    int n = t->n_items, k = 0;
    double hit = 0, hit_norm = 0;
    for (int i = 0; i < n; i++) {
        const eval_item *it = &t->items[i];
        int best = 0, best_norm = 0;
        double bv = -INFINITY, bn = -INFINITY;
        for (int c = 0; c < it->n_choices; c++) {
            double v = ll[k + c], vn = v / (it->norm_bytes[c] > 0 ? it->norm_bytes[c] : 1);
            if (v > bv) { bv = v; best = c; }
            if (vn > bn) { bn = vn; best_norm = c; }
        }
        hit += best == it->gold;
        hit_norm += best_norm == it->gold;
        k += it->n_choices;
    }
    snprintf(r->name, sizeof r->name, "%s", t->name);
    r->n = n;
    r->acc = n ? hit / n : 0;
    r->acc_norm = n ? hit_norm / n : 0;
    r->acc_stderr = n > 1 ? sqrt(r->acc * (1 - r->acc) / (n - 1)) : 0;
    r->acc_norm_stderr = n > 1 ? sqrt(r->acc_norm * (1 - r->acc_norm) / (n - 1)) : 0;
}

losa_status eval_task_run(dist_ctx *d, const model_stage *s, const tok_tokenizer *tok,
                          const eval_task *t, int batch_tokens, eval_task_result *r)
{
    memset(r, 0, sizeof *r);
    double t0 = core_time();
    eval_request *req = NULL;
    int n_req = 0;
    losa_status st = eval_task_requests(t, tok, s->cfg.max_seq_len, &req, &n_req);
    st = dist_agree(d, st);
    if (st != LOSA_OK) return st;
    double *ll = core_malloc((size_t)(n_req ? n_req : 1), sizeof(double));
    st = eval_loglik(d, s, req, n_req, batch_tokens, ll);
    eval_requests_free(req, n_req);
    if (st != LOSA_OK) {
        free(ll);
        return st;
    }
    eval_mc_score(ll, t, r);
    r->ll = ll;
    r->n_requests = n_req;
    r->seconds = core_time() - t0;
    return LOSA_OK;
}
