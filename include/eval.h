/* eval: perplexity and zero-shot scoring through the pipeline.  A library:
 * it reads no environment and no command line (losa eval resolves task and
 * data paths, src/cli/cmd_eval.c). */
#ifndef LOSA_EVAL_H
#define LOSA_EVAL_H

#include "core.h"
#include "model.h"
#include "tok.h"

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
/* Bytes eval_ppl allocates on a stage of n_layers layers (the last:
 * has_head) for nw windows of S tokens in batches of B (B is cut to nw). */
size_t eval_ppl_bytes(const model_config *c, int n_layers, int has_head, int64_t nw, int S,
                      int B);

/* ---- zero-shot multiple-choice evaluation (src/eval/tasks.c: task files,
 * items and requests; src/eval/zeroshot.c: scoring) ----
 *
 * Scoring follows lm-evaluation-harness's loglikelihood requests.  An item
 * has C choices; choice c is one request (context_c, continuation_c):
 *   mode mc:      context_c = the item's context, continuation_c =
 *                 target_delimiter + choice text c;
 *   mode partial: context_c = the context template with option c filled in
 *                 (WinoGrande), continuation_c = target_delimiter + the
 *                 shared continuation.
 * Tokens (the rule, as lm-eval's _encode_pair with a BOS-prepending
 * SentencePiece tokenizer): trailing spaces of the context move to the
 * front of the continuation; ctx = encode(BOS, context); whole =
 * encode(BOS, context + continuation); cont = whole[len(ctx):]; the
 * sequence scored is ctx + cont.  (If whole is not longer than ctx, the
 * last token of whole is the continuation and the rest the context.)
 * If the sequence exceeds max_seq_len + 1 tokens it is cut from the left.
 * ll_c = sum of log p(cont token | everything before it).
 * acc = [argmax_c ll_c == gold]; acc_norm = [argmax_c ll_c / bytes_c ==
 * gold] where bytes_c is the UTF-8 length of choice text c (without the
 * delimiter; for partial mode, of the option-filled context, as lm-eval's
 * doc_to_choice); first maximum wins ties.  Standard errors are the sample
 * standard error of the mean, sqrt(p (1 - p) / (n - 1)).
 */
typedef struct {
    int *tokens;       /* (n) context + continuation ids */
    int n;             /* tokens */
    int n_cont;        /* the last n_cont tokens are scored */
} eval_request;

typedef struct {
    char name[64];
    int n;                     /* items scored */
    double acc, acc_norm, acc_stderr, acc_norm_stderr;
    double seconds;
    int n_requests;
    double *ll;                /* (n_requests) log-likelihoods, item-major
                                  (malloc'd; eval_task_result_free) */
} eval_task_result;
void eval_task_result_free(eval_task_result *r);

/* One multiple-choice item, as strings (UTF-8), after templating. */
typedef struct {
    int n_choices;
    char **context;    /* (n_choices) (all equal in mode mc) */
    char **cont;       /* (n_choices) continuation, delimiter included */
    int *norm_bytes;   /* (n_choices) bytes of the choice text (acc_norm) */
    int gold;
} eval_item;

typedef struct {
    char name[64];
    char path[1024];   /* the task file */
    int n_items;
    eval_item *items;
} eval_task;

/* Not collective: parse the task file text (ini_name names it in errors)
 * and the data file bytes; keep the first `limit` items (0: all).  Task
 * file keys: see input/tasks/README.md. */
losa_status eval_task_parse(eval_task *t, const char *ini_name,
                            const char *ini_text, const char *data_name,
                            const char *data, size_t data_len, int limit);
/* Collective (world): rank 0 reads the task file and its data file (data
 * = path relative to data_dir unless absolute), every rank parses. */
losa_status eval_task_load(struct dist_ctx *d, eval_task *t, const char *ini_path,
                           const char *data_dir, int limit);
void eval_task_free(eval_task *t);

/* Not collective: the requests of the task (item-major), tokenized by the
 * rule above and cut to at most max_seq_len + 1 tokens.  *req malloc'd. */
losa_status eval_task_requests(const eval_task *t, const tok_tokenizer *tok,
                               int max_seq_len, eval_request **req, int *n_req);
void eval_requests_free(eval_request *req, int n);

/* Collective (world): ll[i] = summed log-probability of request i's
 * continuation.  Requests (equal on all ranks) are sorted by length and
 * packed into micro-batches of at most batch_tokens tokens (B x T, right
 * padded); the packing does not depend on the layout; micro-batches are
 * dealt round-robin to the DP replicas and flow through the PP stages.
 * Every rank gets all ll, identical for any layout. */
losa_status eval_loglik(struct dist_ctx *d, const model_stage *s,
                        const eval_request *req, int n_req, int batch_tokens,
                        double *ll);

/* acc / acc_norm / stderrs of n_items items from the request lls
 * (item-major, n_choices[i] each). */
void eval_mc_score(const double *ll, const eval_task *t, eval_task_result *r);

/* Collective: load nothing; tokenize, score, fill r (r->ll kept). */
losa_status eval_task_run(struct dist_ctx *d, const model_stage *s,
                          const tok_tokenizer *tok, const eval_task *t,
                          int batch_tokens, eval_task_result *r);

/* Helpers exposed for tests. */
/* A tab-separated table with a header row, csv-module quoting: a field
 * starting with '"' is quoted, "" inside is one '"', quoted fields may hold
 * tabs and newlines; \r\n or \n ends a record. */
typedef struct {
    int n_cols, n_rows;        /* rows exclude the header */
    char **cells;              /* ((n_rows + 1) * n_cols) row-major, row 0 =
                                  header; malloc'd strings */
} eval_table;
losa_status eval_tsv_parse(eval_table *tab, const char *text, size_t len,
                           const char *what);
void eval_table_free(eval_table *tab);
/* lm-eval's HellaSwag preprocess(): strip, " [title]" -> ". ", drop
 * "[...]" spans, "  " -> " ".  Returns a malloc'd string. */
char *eval_hellaswag_preprocess(const char *text);
/* Python's str.capitalize() for ASCII letters (other bytes kept). */
char *eval_capitalize(const char *text);

#endif
