/* calib: calibration data and the layer-sequential passes over it through
 * the pipeline — pruning (ALGORITHM.md section 4), dense reference outputs
 * and reconstruction errors (section 5), layer-input Gram matrices (3).
 *
 * Layer-sequential: layer l is pruned with statistics of the inputs that
 * the already-pruned layers 0..l-1 produce; after pruning its outputs are
 * recomputed with the pruned weights and handed on.  Within a layer q/k/v
 * share one input (attn-norm output), o sees the attention output, gate/up
 * share the ffn-norm output and down sees the SwiGLU output; all statistics
 * of a layer come from one forward pass of the not-yet-pruned layer (as in
 * the Wanda / SparseGPT code).  Under PP stages the calibration activations
 * flow stage to stage; DP replicas split the windows (window w belongs to
 * replica w % DP) and reduce their statistics within the stage.  Wanda
 * column norms are summed per window in window order, so masks do not
 * depend on the layout.
 */
#ifndef LOSA_CALIB_H
#define LOSA_CALIB_H

#include "core.h"
#include "model.h"
#include "prune.h"
#include "tok.h"

struct dist_ctx;

/* ---------------------------------------------------------------- CPython RNG
 * calib_pyrng reproduces CPython's `random` module exactly (MT19937, the
 * generator Wanda / SparseGPT / LoSA draw their calibration windows with):
 *   calib_pyrng_seed(g, s)        == random.seed(s)   (int s >= 0: key = the
 *                                    32-bit words of s, least significant
 *                                    first; s = 0 -> key [0]; init_by_array)
 *   calib_pyrng_getrandbits(g, k) == random.getrandbits(k), 0 <= k <= 64
 *                                    (k > 32: 32-bit draws assembled least
 *                                    significant word first)
 *   calib_pyrng_randbelow(g, n)   == random._randbelow(n): getrandbits(
 *                                    n.bit_length()) redrawn while >= n
 *   calib_pyrng_randint(g, a, b)  == random.randint(a, b) = a + _randbelow(b-a+1)
 * Not collective; no allocation. */
typedef struct {
    uint32_t mt[624];
    int idx;
} calib_pyrng;
void calib_pyrng_seed(calib_pyrng *g, uint64_t seed);
uint32_t calib_pyrng_u32(calib_pyrng *g);
uint64_t calib_pyrng_getrandbits(calib_pyrng *g, int k);
uint64_t calib_pyrng_randbelow(calib_pyrng *g, uint64_t n);
int64_t calib_pyrng_randint(calib_pyrng *g, int64_t a, int64_t b);

/* How calibration windows are drawn (deck keys data.calib_seed,
 * data.calib_sampler, data.calib_bos, data.calib_eos):
 *  - sampler LOSA: losa's own generator (core_rng);
 *  - sampler PYTHON: exactly the draws of the Wanda / SparseGPT `get_c4`
 *    (CPython `random`, calib_pyrng): random.seed(seed); per window
 *    { do doc = randint(0, ndoc - 1) while len(doc) <= S;
 *      j = randint(0, len(doc) - S - 1); window = doc[j : j + S] };
 *    for plain text (one document) only j is drawn (get_wikitext2);
 *  - bos / eos: add the tokenizer's BOS / EOS ids to each document before
 *    windowing (the HF LLaMA tokenizer adds BOS; the LoSA reference script
 *    sets add_eos_token too). */
typedef enum { CALIB_SAMPLER_LOSA = 0, CALIB_SAMPLER_PYTHON } calib_sampler;
typedef struct {
    calib_sampler sampler;
    uint64_t seed;
    int bos, eos;
} calib_draw;
/* losa defaults: sampler LOSA, BOS only. */
void calib_draw_default(calib_draw *cd, uint64_t seed);
/* From a deck: data_settings_from_deck (include/settings.h). */

/* Draw N windows of S tokens with a seed: pick a random document longer
 * than S tokens, then a random window in it (the Wanda / SparseGPT
 * protocol).  calib_sample uses calib_draw_default(seed).
 * text: JSONL with a "text" field per line (name ends in .jsonl / .json), or
 * plain text (one document).  Not collective.  Errors before any work when
 * fewer usable documents (or, for one plain document, distinct windows)
 * than N exist. */
losa_status calib_sample(const tok_tokenizer *tok, const char *path,
                         const char *text, size_t len, int N, int S,
                         uint64_t seed, int *tokens /* (N,S) */);
losa_status calib_sample_draw(const tok_tokenizer *tok, const char *path,
                              const char *text, size_t len, int N, int S,
                              const calib_draw *cd, int *tokens /* (N,S) */);

/* The documents of a calibration corpus tokenized as calib_sample_draw
 * does (JSONL: one per line with a 'text' field; plain text: one): *docs
 * (ndoc) malloc'd id arrays of lengths *dlen.  Free with calib_docs_free.
 * Not collective. */
losa_status calib_docs_tokenize(const tok_tokenizer *tok, const char *path, const char *text,
                                size_t len, int bos, int eos, int ***docs, int64_t **dlen,
                                int *ndoc);
void calib_docs_free(int **docs, int64_t *dlen, int ndoc);

/* Collective (world): rank 0 reads path and draws the windows
 * (calib_sample_draw), every rank receives tokens (N,S). */
losa_status calib_load_windows(struct dist_ctx *d, const tok_tokenizer *tok,
                               const char *path, int N, int S, const calib_draw *cd,
                               int *tokens);

typedef struct {
    prune_config pc;              /* method, N:M, blocksize, percdamp */
    const double *layer_sparsity; /* (L) global layers; NULL = pc.sparsity */
    int chunk;                    /* windows per forward chunk (>= 1) */
    /* dense reference outputs of stage layer l (Nmine,S,D), valid until the
     * next call (e.g. read from the stage's HDF5 shard); used when the
     * dense_out argument is NULL; NULL = compute them on the fly */
    const float *(*dense_layer)(void *ctx, int l);
    void *dense_ctx;
} calib_prune_opts;

typedef struct {
    double *recon_err;      /* (L) every layer (gathered to all ranks) */
    double *sparsity;       /* (L) measured fraction of zeros of the 7 maps */
    double stats_s, prune_s, forward_s, total_s; /* this rank's phases */
    prune_sparsegpt_timing sgpt; /* summed SparseGPT breakdown (this rank) */
    int64_t bf16_raised;    /* bf16 stage: kept weights below bf16's smallest
                               subnormal stored as +-2^-133 instead of zero
                               (calib_prune_layer_maps), every stage */
} calib_prune_result;

/* Collective (world).  Prunes every layer of this rank's stage in place
 * (fp32 or plain bf16, see calib_prune_layer_maps; the calibration forward
 * is the stage's own: bf16 products on a bf16 stage).
 * tokens (N,S) identical on every rank.  dense_out: this stage's dense
 * reference outputs, (n_layers, Nmine, S, D) as given by
 * calib_dense_outputs, or NULL to compute them on the fly from a dense
 * stream (then the stage's layers must still be dense).  r->recon_err and
 * r->sparsity are allocated (L) and must be freed with calib_result_free. */
losa_status calib_prune_model(struct dist_ctx *d, model_stage *s,
                              const int *tokens, int N, int S,
                              const calib_prune_opts *o, const float *dense_out,
                              calib_prune_result *r);
void calib_result_free(calib_prune_result *r);
/* Bytes calib_prune_model allocates on a rank whose stage has n_layers
 * layers and whose replica (of P) holds Nm of the N windows; have_ref: the
 * dense reference outputs are given (no dense stream of its own).  The
 * largest scratch of the pruners (calib_prune_layer_bytes) included. */
size_t calib_prune_bytes(const model_config *c, int n_layers, int N, int Nm, int S, int chunk,
                         const prune_config *pc, int have_ref, int P, model_dtype t);

/* The one per-layer prune entry point: the 7 maps of stage layer l to
 * sparsity sp with pc's method and pattern, input by input
 * (model_map_input; prune_group): x[g] is input g's statistics and
 * SparseGPT work.  hk: where SparseGPT runs (NULL: this process;
 * dist_sparsegpt_hooks(d): over the stage's replicas, whose select hook
 * picks each block's threshold over all of them).  Errors name the global
 * layer and the map.  t (or NULL) adds the pruners' times.  Collective
 * exactly when hk is.
 * A bf16 stage (plain layout; packed is refused): the maps of one input
 * (q, k, v; o; gate, up; down) are widened exactly into one fp32 scratch
 * (calib_prune_widen_bytes), pruned there by the same fp32 code (Wanda
 * norms, SparseGPT Hessians as for fp32) and rounded back to nearest even
 * (kern_bf16_from_f32_nz): the mask is exactly the one the pruner picks on
 * the fp32 widening of the weights, magnitude and Wanda keep the kept
 * weights bit for bit, SparseGPT's updated weights are its fp32 result
 * rounded; a kept weight below bf16's smallest subnormal is stored as
 * +-2^-133 (never zero), counted into *raised (if not NULL) and named in a
 * warning (layer, map). */
losa_status calib_prune_layer_maps(model_stage *s, int l, const prune_config *pc, double sp,
                                   const prune_input x[MODEL_N_INPUTS],
                                   const prune_sparsegpt_hooks *hk, prune_sparsegpt_timing *t,
                                   int64_t *raised);
/* The most scratch it allocates while it runs (SparseGPT over P replicas;
 * the prune_input work is the caller's), with the bf16 widening when t is
 * bf16. */
size_t calib_prune_layer_bytes(const model_config *c, const prune_config *pc, int P,
                               model_dtype t);
/* The fp32 scratch a stage of dtype t widens one input's maps into (0 for
 * fp32): the weights of the largest group (gate + up, or q + k + v). */
size_t calib_prune_widen_bytes(const model_config *c, model_dtype t);

/* Windows of this replica: count, and the global index of the i-th;
 * calib_windows_of: the count of replica `replica` of dp. */
int calib_windows_mine(struct dist_ctx *d, int N);
int calib_windows_of(int N, int dp, int replica);
int calib_window_index(struct dist_ctx *d, int i);

/* Collective (world).  Dense outputs of every layer of this stage on this
 * replica's windows: *out (n_layers, Nmine, S, D), one allocation
 * (core_free).  The model is unchanged. */
losa_status calib_dense_outputs(struct dist_ctx *d, const model_stage *s,
                                const int *tokens, int N, int S, int chunk,
                                float **out);
/* Bytes of *out for a stage of n_layers layers and Nm windows. */
size_t calib_dense_outputs_bytes(const model_config *c, int n_layers, int Nm, int S);

/* Collective (world).  The same pass handing each layer's outputs
 * (Nmine,S,D) to sink (e.g. to write them to disk); stops calling sink after
 * its first error, but the pipeline still drains. */
typedef losa_status (*calib_layer_sink)(void *ctx, int l, const float *X);
losa_status calib_dense_stream(struct dist_ctx *d, const model_stage *s,
                               const int *tokens, int N, int S, int chunk,
                               calib_layer_sink sink, void *ctx);
/* Bytes the pass allocates (activations of a chunk, the stream). */
size_t calib_dense_stream_bytes(const model_config *c, int n_layers, int Nm, int S, int chunk);

/* Collective (world).  Centred Gram matrices K~ = H X X^T H (N x N, double)
 * of the input of every layer, and of the final layer's output (index L),
 * X flattened per window to (S*D).  grams (L+1, N, N) on every rank.
 * Requires DP == 1 or replicas to hold all windows (computed on replica 0
 * and broadcast). */
losa_status calib_layer_grams(struct dist_ctx *d, const model_stage *s,
                              const int *tokens, int N, int S, int chunk,
                              double *grams);
/* Bytes the pass allocates (grams is the caller's). */
size_t calib_layer_grams_bytes(const model_config *c, int n_layers, int N, int S, int chunk);

/* Centred Gram matrix G (n,n) = H X X^T H of X (n, m), H = I - 11^T/n;
 * tmp: (n,n) float scratch.  X X^T by sgemm on the calling thread (the
 * same bits for any OPENBLAS_NUM_THREADS), centring in double. */
void calib_centred_gram(double *G, const float *X, int n, int64_t m, float *tmp);

/* Fraction of exact zeros (+-0) over the 7 maps of a layer (fp32 or plain
 * bf16 stage). */
double calib_layer_sparsity(const model_stage *s, int l);
/* Zeros over the 7 maps of every layer of the stage; *total (or NULL) gets
 * the number of weights. */
int64_t calib_stage_zeros(const model_stage *s, int64_t *total);

#endif
