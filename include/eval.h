/* eval: perplexity (and, later, zero-shot scoring) through the pipeline. */
#ifndef LOSA_EVAL_H
#define LOSA_EVAL_H

#include "core.h"
#include "model.h"

struct dist_ctx;

typedef struct {
    double ppl;
    double nll_sum;      /* sum of token NLLs */
    int64_t predicted;   /* positions predicted */
    int64_t tokens;      /* tokens of the text (with BOS) */
    int windows;
    int seqlen;
    double seconds;
} eval_ppl_result;

/* Perplexity by the pruning literature's protocol (ALGORITHM.md section 6):
 * ids (n) is the whole text tokenized once with BOS; it is cut into
 * non-overlapping windows of S tokens (the tail shorter than S dropped);
 * the mean NLL over the S-1 predicted positions of every window; exp.
 * Collective (world): every rank passes the same ids; windows are split
 * among DP replicas and flow through the PP stages in micro-batches of B
 * windows.  The result (identical on every rank, independent of the
 * layout) is summed per window in window order.  max_windows > 0 limits
 * the evaluation to the first windows. */
losa_status eval_ppl(struct dist_ctx *d, const model_stage *s, const int *ids,
                     int64_t n, int S, int B, int max_windows,
                     eval_ppl_result *r);

#endif
