/* model: LLaMA-family decoder organised as pipeline stages.
 *
 * Structs are split by lifetime (llama2.c): model_config (hyper-parameters),
 * model_stage (read-only weights of the layers one rank owns, one allocation),
 * model_acts (activations and scratch for one micro-batch, one allocation).
 * A process with all layers is simply a single stage (PP = 1).
 *
 * Weights are row-major (out, in): y = x W^T.  RoPE uses the rotate-half
 * convention (HF); llama2.c checkpoints are permuted at import.
 */
#ifndef LOSA_MODEL_H
#define LOSA_MODEL_H

#include "core.h"
#include "sparse.h"

typedef struct {
    int dim;          /* D */
    int hidden_dim;   /* F */
    int n_layers;     /* L */
    int n_heads;      /* H */
    int n_kv_heads;   /* Hkv */
    int vocab_size;   /* V */
    int max_seq_len;
    float rms_eps;
    float rope_theta;
    int tie_embeddings; /* head shares the embedding matrix */
    int bos_id, eos_id;
} model_config;

static inline int model_head_size(const model_config *c) { return c->dim / c->n_heads; }
static inline int model_kv_dim(const model_config *c)
{
    return c->n_kv_heads * (c->dim / c->n_heads);
}
/* Validates ranges and divisibility; sets core_err naming `what`. */
losa_status model_config_check(const model_config *c, const char *what);
int64_t model_param_count(const model_config *c);
/* Weights of one layer's 7 linear maps (sum of out x in). */
int64_t model_map_weights(const model_config *c);

/* The 7 linear maps of a layer, in a fixed order used everywhere. */
typedef enum {
    MODEL_MAP_Q = 0, MODEL_MAP_K, MODEL_MAP_V, MODEL_MAP_O,
    MODEL_MAP_GATE, MODEL_MAP_UP, MODEL_MAP_DOWN, MODEL_N_MAPS
} model_map;
const char *model_map_name(model_map m); /* "wq", "wk", ... (store names) */
/* out x in shape of map m. */
void model_map_shape(const model_config *c, model_map m, int *out, int *in);

/* Matrix FLOPs (2 per multiply-add; what the GEMMs and the attention
 * blocks compute) of n_layers layers (plus the head if has_head) over B
 * sequences of T tokens: the one count that `losa bench` divides by its
 * seconds and `losa plan` divides by a rate, so that a measured rate
 * projects back to seconds.  Attention: causal, T (T + 1) / 2 (query, key)
 * pairs per head, 4 hd per pair forward (scores, weighted sum), 10 hd
 * backward (scores recomputed, dV, dP, dQ, dK).
 * Training (masked LoRA of rank r on every map, frozen base): forward 1
 * product per map (2 with LoRA dropout), backward dx as many, dDelta 1,
 * and per micro-batch 3 (out x in x r) products per map (Delta = B A, dB,
 * dA); recompute: the forward again in the backward; the head forward and
 * backward dx. */
double model_forward_flops(const model_config *c, int n_layers, int has_head, int64_t B, int64_t T);
double model_train_flops(const model_config *c, int n_layers, int has_head, int64_t B, int64_t T,
                         int r, int dropout, int recompute);

/* The inputs the maps read, one calibration statistic each (the one table
 * of which map reads which input): q, k, v read the attention-norm output
 * (ln1), o the attention output (atty), gate and up the ffn-norm output
 * (ln2), down the SwiGLU output (hid).  Input g is (B,T,width g). */
typedef enum {
    MODEL_INPUT_QKV = 0, MODEL_INPUT_O, MODEL_INPUT_GATE_UP, MODEL_INPUT_DOWN, MODEL_N_INPUTS
} model_input;
model_input model_map_input(model_map m);
/* Width of input g: the `in` of the maps that read it (D, D, D, F). */
int model_input_width(const model_config *c, model_input g);

/* Adapter path of one linear map during training, owned by the lora
 * module (see include/lora.h):
 *   delta  = scale * (B[:, :r] A[:r, :]) ⊙ M      (out, in)
 *   weff   = W + delta                             (out, in)
 *   ddelta    dL/dDelta = dy^T drop(x)             (out, in), by backward
 * On a bf16 stage (plain maps) the products read the bf16 forms instead:
 *   weffb  = bf16(W + delta), deltab = bf16(delta) (round to nearest even;
 *   zero wherever M is), multiplied with fp32 accumulation
 *   (kern_gemm_bf16w); ddelta stays fp32. */
typedef struct {
    const float *delta;        /* (out,in) */
    const float *weff;         /* (out,in) used when acts dropout is 0 */
    float *ddelta;             /* (out,in) written by model_layer_backward */
    const uint16_t *weffb;     /* (out,in) bf16 stage: bf16(weff), dropout 0 */
    const uint16_t *deltab;    /* (out,in) bf16 stage: bf16(delta), dropout p */
} model_adapter_map;

/* The adapter path of a stage (NULL in model_stage: plain W; the forward is
 * then exactly y = x W^T), set by the lora module while its adapters are
 * attached.  map(ctx, l, m): map m of stage layer l, formed by then (a
 * transient form builds it on demand into scratch valid until the next
 * call).  grad: NULL = backward accumulates dL/dDelta into ddelta over the
 * micro-batches (persistent buffers, consumed once per optimizer step);
 * else backward overwrites ddelta with this micro-batch's dL/dDelta and
 * calls grad(ctx, l, m), which consumes it at once. */
typedef struct model_adapter {
    const model_adapter_map *(*map)(void *ctx, int l, model_map m);
    void (*grad)(void *ctx, int l, model_map m);
    void *ctx;
} model_adapter;

/* Precision of the stage's frozen map weights (model_stage_to_bf16). */
typedef enum { MODEL_DTYPE_F32 = 0, MODEL_DTYPE_BF16 } model_dtype;
const char *model_dtype_name(model_dtype t); /* "fp32", "bf16" */
/* "fp32" | "bf16"; core_err naming `what` (the flag or deck key) otherwise. */
losa_status model_dtype_from_string(const char *v, const char *what, model_dtype *t);

typedef struct {
    float *attn_norm;          /* (D) */
    float *w[MODEL_N_MAPS];    /* wq (D,D) wk (kvD,D) wv (kvD,D) wo (D,D)
                                  w_gate (F,D) w_up (F,D) w_down (D,F);
                                  NULL when the stage is bf16 */
    uint16_t *wb[MODEL_N_MAPS];/* the same in bf16 (MODEL_DTYPE_BF16), else
                                  NULL: packed for the engine (kern_bf16_pack)
                                  when the stage's bf16_packed, else plain */
    float *ffn_norm;           /* (D) */
} model_layer;

typedef struct {
    model_config cfg;
    int stage, n_stages;       /* this stage's index and the pipeline length */
    int layer0, n_layers;      /* global index of first layer, layers held */
    int has_embed, has_head;   /* first stage: embedding; last: norm + head */
    float *embed;              /* (V, D) first stage (and last if tied) */
    float *final_norm;         /* (D) last stage */
    float *head;               /* (V, D) last stage; == embed if tied; NULL
                                  when the head is bf16 (head_bf16: every
                                  bf16 stage but model_stage_to_bf16_maps') */
    model_layer *layers;       /* n_layers */
    float *params;             /* the one parameter block */
    size_t n_params;           /* floats in the block */
    /* MODEL_DTYPE_BF16: the maps (layer by layer in map order) and, on the
     * last stage, the head live in params_bf16, plain row-major
     * (model_stage_build_dtype, model_stage_to_bf16: n_params_bf16 weights,
     * the head's rows after the maps; model_stage_to_bf16_maps: the maps
     * only, the head fp32) or, with bf16_packed (model_stage_pack_bf16),
     * each packed for the GEMM engine (kern_bf16_pack, from a 64-byte
     * boundary): n_params_bf16 weights in bytes_bf16 bytes (2 per weight
     * plus the layout's padding).  params holds the rest in fp32:
     * embedding, norms (and, tied, the embedding the head was rounded
     * from: the lookup stays fp32, the head product reads the bf16 copy). */
    model_dtype dtype;
    uint16_t *params_bf16;
    size_t n_params_bf16, bytes_bf16;
    uint16_t *head_bf16;       /* (V, D) bf16, last stage, else NULL (the
                                  head fp32 in head): packed when
                                  bf16_packed (model_stage_pack_bf16), else
                                  plain rows (the forward's and backward's
                                  kern_gemm_bf16w, the decode matvec, store
                                  writes) */
    int bf16_packed;           /* 1: wb[] hold the packed layout (set by
                                  model_stage_pack_bf16); 0: plain row-major
                                  (element-wise users: store write, merge) */
    /* Optional sparse copies of the maps (sparse_maps.c, model_sparse_build):
     * when set, every linear map that has one and is profitable at that
     * row count runs on the sparse kernels.  Not owned; NULL = dense. */
    const struct model_sparse *sparse;
    /* The training adapters' path (model_adapter), NULL = none.  Not owned. */
    const model_adapter *adapter;
} model_stage;

/* ---- the stage split: one cost model for the planner and the run ----
 *
 * A stage of n layers costs n * layer, plus embed on the first stage and head
 * on the last (head = final norm, head GEMM, softmax / cross-entropy over the
 * V logits and their backward).  Units: any, the same for the three fields
 * (model_stage_cost_train: FLOP-equivalents per training micro-batch). */
typedef struct {
    double layer;   /* one decoder layer */
    double layer_fwd; /* of layer, its forward (the rest is its backward and
                       * the adapters' per-step work; 0: not known) */
    double layer_step; /* of layer, the adapters' per-step work (done once per
                        * optimizer step, outside the pipeline: its 1 / M
                        * share per micro-batch) */
    double embed;   /* the embedding (first stage) */
    double head;    /* final norm + head + loss (last stage) */
} model_stage_cost;

/* Elementwise (memory- and exp-bound) work in FLOP-equivalents per byte:
 * the ratio of the GEMM rate to the rate of the norm / softmax / mask loops.
 * Fitted on the dev node (2 shared cores: sgemm about 98 GFLOP/s on one,
 * the elementwise loops about 3 GB/s) to minillama's head-to-layer time
 * ratio of training measured by `losa bench pipeline` (stage busy times at
 * 1 x 128 tokens, 8 micro-batches: 2.7 to 4 layers depending on the
 * machine's load, median about 3.3). */
#define MODEL_FLOPS_PER_BYTE 35.0

/* Modelled cost of training one micro-batch of B x T tokens, M
 * micro-batches per optimizer step (masked LoRA of rank r, dropout on or
 * off, recompute = activation checkpointing): model_train_flops plus
 * MODEL_FLOPS_PER_BYTE x the bytes of the elementwise passes (layer: norms,
 * RoPE, residuals, SwiGLU, dropout copies forward and backward, and about
 * 11 passes over each map's (out x in) adapter buffers per optimizer step,
 * i.e. / M per micro-batch: the persistent dense forms; the transient ones
 * formed per micro-batch are not modelled; head: about 5 passes over the V
 * logits per token (GEMM output, max, exp-sum, dlogits, backward read);
 * embed: the row copy).  Deterministic in its arguments.  Not collective. */
void model_stage_cost_train(const model_config *c, int64_t B, int64_t T, int64_t M, int r,
                            int dropout, int recompute, model_stage_cost *k);
/* A training micro-batch of a stage of count layers under k (first: with
 * the embedding; last: with the head and loss), as the trainer runs it:
 * *fwd its forward step (the layers' forwards, the embedding, the head with
 * the loss's backward), *bwd the layers' backwards, and *step the
 * adapters' per-step work, once an optimizer step of M micro-batches (after
 * them).  fwd_share > 0: a layer's forward is that share of its
 * micro-batch less the per-step work (bench train's layer_forward_share),
 * else k->layer_fwd.  Both `losa plan`'s time model and `bench pipeline`'s
 * bubble model split a stage with it. */
void model_stage_train_parts(const model_stage_cost *k, int count, int first, int last, int M,
                             double fwd_share, double *fwd, double *bwd, double *step);
/* The cost model_split_layers uses when the caller has no training shape:
 * model_stage_cost_train at B 1, T min(max_seq_len, 2048), M 1, r 16,
 * dropout. */
void model_stage_cost_default(const model_config *c, model_stage_cost *k);

/* Contiguous split of L layers into P stages (1 <= P <= L, every stage at
 * least one layer) minimising the largest stage cost under k; among the
 * splits that reach it, the one that gives earlier stages the most layers
 * (front-loaded).  Exact, deterministic in (L, P, k).  Fills first[p],
 * count[p] for p < P. */
void model_split_stages(int L, int P, const model_stage_cost *k, int *first, int *count);
/* model_split_stages with model_stage_cost_default (the split of commands
 * that do not train: eval, generate, prune, synth). */
void model_split_layers(const model_config *c, int P, int *first, int *count);

/* Allocate the stage's parameter block (zeroed) and set the pointers;
 * the layers of stage `stage` in model_split_layers. */
losa_status model_stage_build(model_stage *s, const model_config *c, int stage,
                              int n_stages);
/* The same with the split given as layers per stage, count (n_stages),
 * summing to L, every entry >= 1 (NULL: model_split_layers). */
losa_status model_stage_build_split(model_stage *s, const model_config *c, int stage,
                                    int n_stages, const int *count);
/* Bytes model_stage_build_split allocates for stage `stage` of n_stages. */
size_t model_stage_bytes(const model_config *c, int stage, int n_stages, const int *count);
/* The stage (split count as above) built directly in dtype t (bf16: the
 * maps and the head's rows in the bf16 block, zeroed, the rest fp32: the
 * layout model_stage_to_bf16 leaves, without the fp32 maps or head ever
 * allocated; io_store_read_stage fills it, a tied head rounded from the
 * embedding) and its bytes (fp32: model_stage_bytes; bf16: the resident
 * size of a bf16 stage, 2 bytes per map and head weight).  Not
 * collective. */
losa_status model_stage_build_dtype(model_stage *s, const model_config *c, int stage,
                                    int n_stages, const int *count, model_dtype t);
size_t model_stage_bytes_dtype(const model_config *c, int stage, int n_stages, const int *count,
                               model_dtype t);
/* Bytes the same stage holds after model_stage_to_bf16 (the bf16 block with
 * the engine's layout padding, the fp32 rest, the layer table): for plans. */
size_t model_stage_bf16_bytes(const model_config *c, int stage, int n_stages, const int *count);
void model_stage_free(model_stage *s);
/* Convert the stage's 7 maps per layer and the head (last stage) to bf16
 * (round to nearest even: zeros stay zero) into one plain row-major bf16
 * block (the head's rows after the maps), and repack params without them
 * (the fp32 maps and head are freed; a tied head's embedding stays fp32 for
 * the lookup): the layout a stage built in bf16 has
 * (model_stage_build_dtype) and the element-wise users read (store writes,
 * lora_merge, the decode matvec).  Embedding and norms stay fp32.  *n_lost
 * (if not NULL): non-zero weights that became zero.  A bf16 stage with a
 * bf16 head is returned as it is.  Not collective. */
losa_status model_stage_to_bf16(model_stage *s, int64_t *n_lost);
/* The same with the head left fp32 (the maps only): `losa bench train
 * --head fp32`'s comparison.  Such a stage can be packed, not converted
 * again. */
losa_status model_stage_to_bf16_maps(model_stage *s, int64_t *n_lost);
/* The forward's bf16 layout: the 7 maps per layer and the head (last stage)
 * in bf16 (an fp32 stage's rounded to nearest even, a plain bf16 stage's
 * as they are, an fp32 head of model_stage_to_bf16_maps rounded), each
 * packed once for the GEMM engine
 * (kern_bf16_pack) into one bf16 block (bf16_packed), and params repacked
 * without them (the fp32 copies are freed; a tied head's embedding stays for
 * the lookup).  What stays fp32: the embedding (a lookup, no product), the
 * RMSNorm weights, every activation between the maps (the map inputs are
 * rounded to bf16 only inside each product, kern_gemm_bf16p), the
 * accumulation of every product, attention and the logits.  *n_lost (if not
 * NULL): non-zero weights that became zero here.  Peak memory during the
 * call: the old blocks, the packed block and one plain bf16 copy of the
 * largest matrix.  Only the forward (model_stage_forward, eval) runs on a
 * packed stage; backward, adapters, decode, pruning and store writes need
 * fp32 or plain bf16 (checked).  A packed stage is returned as it is.  Not
 * collective. */
losa_status model_stage_pack_bf16(model_stage *s, int64_t *n_lost);
/* LOSA_OK on an fp32 stage; else core_err naming `what` (a path that
 * needs the fp32 maps: the sparse copies). */
losa_status model_stage_require_f32(const model_stage *s, const char *what);
/* LOSA_OK unless the stage's bf16 weights are packed for the engine
 * (model_stage_pack_bf16); else core_err naming `what` (a path that reads
 * the weights element by element: store writes, merge, decode). */
losa_status model_stage_require_plain(const model_stage *s, const char *what);
/* Seeded random weights (tests, synthetic stores): N(0, std) for matrices,
 * 1 + N(0, 0.1) for norms.  Same values for a layer whatever the staging
 * (each tensor is seeded from (seed, global layer, tensor)). */
void model_stage_randomize(model_stage *s, uint64_t seed, float std);

/* Activations of one micro-batch (B x T) through one stage.  Sized once by
 * model_acts_build; forward never allocates.  Per layer l the values saved
 * for a backward pass are kept (x_in, rstd, normalised inputs, q/k/v, att,
 * ...); forward-only users pass save = 0 and get one layer's worth. */
/* model_acts_build save modes */
enum {
    MODEL_ACTS_NOSAVE = 0,     /* inference: one slot, attention scratch only */
    MODEL_ACTS_SAVE = 1,       /* every layer's activations kept (backward) */
    MODEL_ACTS_SAVE_ONE = 2    /* one slot with everything a backward needs
                                  (activation checkpointing: recompute) */
};

typedef struct {
    int B, T;                  /* capacity */
    int save;                  /* MODEL_ACTS_* */
    /* adapter dropout (training): the adapter branch sees drop(x) with
     * elements zeroed with probability drop_p (and the rest scaled by
     * 1/(1-drop_p)); the mask is a hash of (drop_seed, global layer, map,
     * element), so backward regenerates it instead of storing it. */
    float drop_p;
    uint64_t drop_seed;
    float *xdrop;              /* (B,T,max(D,F)) scratch for drop(x) */
    float *x;                  /* (B,T,D) the residual stream (stage input/output) */
    float *logits;             /* (B,T,V) last stage */
    float *rope_cos, *rope_sin;/* (T, hd/2) */
    /* per layer (index l*stride when save, else one slot) */
    float *ln1;    /* (B,T,D) attn_norm output */
    float *rstd1;  /* (B,T) */
    float *q;      /* (B,T,D) after RoPE */
    float *k;      /* (B,T,kvD) after RoPE */
    float *v;      /* (B,T,kvD) */
    float *att;    /* (B,H,T) log-sum-exp of each query row's scores */
    float *atty;   /* (B,T,D) attention output before wo */
    float *xres;   /* (B,T,D) residual after attention (input to ffn norm) */
    float *ln2;    /* (B,T,D) */
    float *rstd2;  /* (B,T) */
    float *gate;   /* (B,T,F) pre-activation */
    float *up;     /* (B,T,F) */
    float *hid;    /* (B,T,F) silu(gate) * up */
    float *xin;    /* (B,T,D) layer input (saved for backward) */
    float *tmp;    /* (B,T,D) scratch */
    float *mem;    /* the one activation block */
    size_t n_floats;
} model_acts;

/* Pointers to one layer's slot of saved activations. */
typedef struct {
    float *xin, *ln1, *rstd1, *q, *k, *v, *att, *atty, *xres, *ln2, *rstd2,
        *gate, *up, *hid;
} model_layer_acts;
model_layer_acts model_acts_layer(const model_acts *a, const model_stage *s,
                                  int l, int B, int T);
/* Input g of the layer's maps in la (ln1, atty, ln2 or hid). */
const float *model_layer_input(const model_layer_acts *la, model_input g);

losa_status model_acts_build(model_acts *a, const model_stage *s, int B, int T,
                             int save);
/* The same without logits (a->logits NULL, even on the last stage): for
 * passes that run layers only (calibration, Gram matrices). */
losa_status model_acts_build_layers(model_acts *a, const model_stage *s, int B, int T,
                                    int save);
void model_acts_free(model_acts *a);
/* Bytes of one activation block of a stage of n_layers layers: logits
 * (B,T,V) when logits (model_acts_build on the last stage), none for
 * model_acts_build_layers.  Planning and building use this one function. */
size_t model_acts_bytes(const model_config *c, int n_layers, int logits, int B, int T,
                        int save);

/* One layer forward on a->x in place (B x T tokens, positions 0..T-1).
 * With a->save = MODEL_ACTS_SAVE, layer l's activations go to slot l (kept
 * for backward); otherwise every layer reuses slot 0. */
void model_layer_forward(model_acts *a, const model_stage *s, int l, int B,
                         int T);
/* Pieces of the stage forward: embedding (first stage) and final norm +
 * head (last stage, into a->logits). */
void model_stage_embed(model_acts *a, const model_stage *s, const int *tokens,
                       int B, int T);
void model_stage_head(model_acts *a, const model_stage *s, int B, int T);
/* The stage forward up to the head: the first stage embeds tokens (B,T)
 * into a->x, every stage runs its layers on a->x (model_stage_forward
 * without model_stage_head; bench forward times the two apart). */
void model_stage_forward_layers(model_acts *a, const model_stage *s, const int *tokens, int B,
                                int T);
/* Stage forward: first stage embeds tokens (B,T) into a->x; every stage runs
 * its layers on a->x; the last stage computes a->logits (B,T,V).
 * Not collective: the caller moves a->x between stages (model/pipeline.c). */
void model_stage_forward(model_acts *a, const model_stage *s, const int *tokens,
                         int B, int T);

/* ---- the stage door (stage_io.c): every message between pipeline stages ----
 *
 * Activations go from stage p to p+1, and their gradients from p+1 back to
 * p, only through these functions: blocking point-to-point over this
 * replica's pipeline communicator (src/dist).  A message is N token rows of
 * the residual stream, (N, D) floats; the two neighbours make matching calls
 * with the same N, tag and seq.  Not collective.  A call is a no-op on the
 * stage that has no such neighbour (receiving the input on the first stage,
 * sending the output on the last, the gradient twins likewise), so a
 * schedule can run the same calls on every stage.
 *
 * Tags: one per message kind, each the base of a block of
 * MODEL_STAGE_TAG_SPAN tags inside the range MPI guarantees (0..32767,
 * MPI_TAG_UB >= 32767).  A sequence number (micro-batch, batch, decode step)
 * enters the tag through model_stage_tag_seq only, modulo the span.  Wrapping
 * is safe: messages between two ranks on one communicator do not overtake
 * each other, and both neighbours post each kind in the same order; the tag
 * catches a mismatched pair of calls. */
#define MODEL_STAGE_TAG_SPAN 8192
typedef enum {
    /* activations to the next stage; seq: micro-batch (train), batch
     * (perplexity, zero-shot), step (generate) */
    MODEL_STAGE_TAG_FORWARD = 0 * MODEL_STAGE_TAG_SPAN,
    /* dL/d(stage input) to the previous stage; seq: micro-batch (train) */
    MODEL_STAGE_TAG_BACKWARD = 1 * MODEL_STAGE_TAG_SPAN,
    /* calibration windows through a pass of the calib module */
    MODEL_STAGE_TAG_CALIB = 2 * MODEL_STAGE_TAG_SPAN,
    /* calib: the dense reference stream sent beside the pruned one */
    MODEL_STAGE_TAG_CALIB_DENSE = 3 * MODEL_STAGE_TAG_SPAN,
} model_stage_tag;
/* The MPI tag of message kind tag with sequence number seq >= 0:
 * tag + seq mod MODEL_STAGE_TAG_SPAN, in 0..32767. */
int model_stage_tag_seq(model_stage_tag tag, int64_t seq);

struct dist_ctx;
/* Forward: x (N, D) from the previous stage (no-op on the first stage) /
 * to the next stage (no-op on the last). */
void model_stage_recv_input(struct dist_ctx *d, const model_stage *s, float *x, int64_t N,
                            model_stage_tag tag, int64_t seq);
void model_stage_send_output(struct dist_ctx *d, const model_stage *s, const float *x,
                             int64_t N, model_stage_tag tag, int64_t seq);
/* Backward (tag MODEL_STAGE_TAG_BACKWARD): dx (N, D) = dL/d(stage output)
 * from the next stage (no-op on the last) / dL/d(stage input) to the
 * previous stage (no-op on the first). */
void model_stage_recv_output_grad(struct dist_ctx *d, const model_stage *s, float *dx,
                                  int64_t N, int64_t seq);
void model_stage_send_input_grad(struct dist_ctx *d, const model_stage *s, const float *dx,
                                 int64_t N, int64_t seq);
/* The paired exchanges of a 1F1B steady state (one MPI_Sendrecv each, which
 * cannot deadlock): send the output x (forward, fseq) to the next stage and
 * receive dx = dL/d(output) (backward, bseq) from it; send dx = dL/d(input)
 * (backward, bseq) to the previous stage and receive the next input x
 * (forward, fseq) from it.  No-op without that neighbour. */
void model_stage_send_output_recv_grad(struct dist_ctx *d, const model_stage *s,
                                       const float *x, int64_t fseq, float *dx, int64_t bseq,
                                       int64_t N);
void model_stage_send_input_grad_recv_input(struct dist_ctx *d, const model_stage *s,
                                            const float *dx, int64_t bseq, float *x,
                                            int64_t fseq, int64_t N);

/* ---- pipeline (collective over this replica's stages) ---- */
/* One micro-batch through the pipeline: the first stage embeds tokens (B,T),
 * middle stages receive a->x from the previous stage and send it on, the last
 * stage leaves logits (B,T,V) in a->logits.  seq numbers the micro-batches
 * (MODEL_STAGE_TAG_FORWARD). */
void model_pipeline_forward(struct dist_ctx *d, model_acts *a,
                            const model_stage *s, const int *tokens, int B,
                            int T, int seq);
/* model_stage_build_split for this rank's stage in d's layout, with d's
 * split (dist_stage_layers; NULL there: model_split_layers). */
losa_status model_stage_for_rank(model_stage *s, const model_config *c,
                                 struct dist_ctx *d);
/* The same built in dtype t (model_stage_build_dtype: bf16 plain maps). */
losa_status model_stage_for_rank_dtype(model_stage *s, const model_config *c,
                                       struct dist_ctx *d, model_dtype t);

/* ---- sparse maps (sparse_maps.c): which maps run on the sparse kernels ---- */

typedef enum {
    MODEL_SPARSE_AUTO = 0, /* maps where sparse_profitable_at(format, density, batch,
                              resident) */
    MODEL_SPARSE_ON,       /* every map, at every batch size */
    MODEL_SPARSE_OFF,      /* none (dense BLAS) */
} model_sparse_mode;
const char *model_sparse_mode_name(model_sparse_mode m); /* "auto", "on", "off" */
losa_status model_sparse_mode_from_string(const char *str, model_sparse_mode *m);

/* Sparse copies (include/sparse.h formats) of a stage's 7 maps per layer. */
typedef struct model_sparse {
    model_sparse_mode mode;
    int n_layers;
    sparse_matrix *mat;        /* (n_layers, MODEL_N_MAPS); fmt unset if absent */
    unsigned char *has;        /* (n_layers, MODEL_N_MAPS) 1 if converted */
    double *density;           /* (n_layers, MODEL_N_MAPS) non-zero fraction */
    int n_converted;           /* maps converted (or loaded) */
    int n_loaded;              /* of those, copies taken from a source */
    size_t bytes;              /* bytes of the sparse copies */
    size_t dense_bytes;        /* fp32 bytes of the converted maps */
    int resident;              /* the stage's maps fit the L2 caches
                                  (sparse_cache_resident): AUTO decides
                                  with sparse_profitable_at(fmt, density,
                                  rows, resident) */
} model_sparse;

/* Convert the maps of s: AUTO converts a map when
 * sparse_profitable_at(format, density, batch, resident) (batch = rows per call the caller
 * expects: 1 for decode, B*T for prefill), ON converts all, OFF none.
 * Maps are converted to fmt, a 2:4 map asked as fp32 bitmap to the 2:4
 * format (sparse_format_for).
 * Later calls use a converted map at N rows when mode is ON or
 * sparse_profitable_at(format, density, N, resident).  The caller attaches it with
 * s->sparse = sp and detaches before model_sparse_free. */
losa_status model_sparse_build(model_sparse *sp, const model_stage *s,
                               model_sparse_mode mode, int batch, sparse_format fmt);
/* Where ready-made copies come from (the store's /sparse group, see
 * cli_sparse_build): for map m of global layer gl, fill *out and set
 * *found = 1, or leave *found = 0 to have the map converted. */
typedef losa_status (*model_sparse_source_fn)(void *ctx, int gl, model_map m,
                                              sparse_matrix *out, int *found);
/* model_sparse_build taking each wanted map from src when it has one (any
 * format; fmt is used for the maps it lacks).  A found copy must have the
 * map's shape and its non-zero count, else LOSA_ERR_FORMAT (stale copy).
 * src NULL: exactly model_sparse_build. */
losa_status model_sparse_build_from(model_sparse *sp, const model_stage *s,
                                    model_sparse_mode mode, int batch, sparse_format fmt,
                                    model_sparse_source_fn src, void *ctx);
void model_sparse_free(model_sparse *sp);
/* The sparse copy of map m of layer l if it has one and it pays at N rows
 * (the one model_sparse_linear uses), else NULL. */
const sparse_matrix *model_sparse_map(const model_sparse *sp, int l, model_map m, int64_t N);
/* y (N,out) = x (N,in) W^T with the sparse copy of map m of layer l if it
 * has one and it pays at N rows; returns 0 (y untouched) otherwise. */
int model_sparse_linear(float *y, const float *x, const model_sparse *sp, int l,
                        model_map m, int64_t N);

/* ---- decode: KV cache, incremental generation (decode.c) ----
 *
 * Generation runs a prompt once through model_stage_prefill (filling the KV
 * cache) and then one token per model_stage_decode_step.  The results equal
 * model_stage_forward on the whole prefix within fp32 rounding. */

/* Keys (after RoPE) and values of every position seen so far, for every
 * layer of one stage: one allocation. */
typedef struct {
    int max_T;                 /* capacity in positions */
    int n_layers, kv_dim, head_size;
    float *k, *v;              /* (n_layers, max_T, kvD) */
    float *rope_cos, *rope_sin;/* (max_T, hd/2) */
    float *scores;             /* (H, max_T) attention scratch */
    float *mem;
    size_t n_floats;
} model_kv_cache;

/* max_T <= cfg.max_seq_len. */
losa_status model_kv_cache_build(model_kv_cache *kv, const model_stage *s, int max_T);
void model_kv_cache_free(model_kv_cache *kv);

/* Prompt tokens (T) through the stage, positions 0..T-1, filling the cache:
 * first stage embeds, every stage runs its layers on a->x (1,T,D), the last
 * stage leaves logits (1,T,V) in a->logits.  a built with B = 1, T >= T. */
void model_stage_prefill(model_acts *a, model_kv_cache *kv, const model_stage *s,
                         const int *tokens, int T);
/* One token at position pos (the cache holds 0..pos-1): first stage embeds
 * token, else a->x (1,D) holds the previous stage's output; k/v of pos are
 * stored; the last stage leaves logits (V) in a->logits. */
void model_stage_decode_step(model_acts *a, model_kv_cache *kv, const model_stage *s,
                             int token, int pos);
/* Pipeline variants (collective over this replica's stages, like
 * model_pipeline_forward): activations flow through the stage door,
 * MODEL_STAGE_TAG_FORWARD with sequence number seq (the step). */
void model_pipeline_prefill(struct dist_ctx *d, model_acts *a, model_kv_cache *kv,
                            const model_stage *s, const int *tokens, int T, int seq);
void model_pipeline_decode_step(struct dist_ctx *d, model_acts *a, model_kv_cache *kv,
                                const model_stage *s, int token, int pos, int seq);

/* ---- backward (training; gradients w.r.t. activations and adapters only:
 * base weights, norms, embeddings and head are frozen) ---- */

/* Dropout mask element: 1 if element i of map m's adapter input in global
 * layer gl is kept.  Deterministic in (seed, gl, m, i): a splitmix64
 * finaliser of a unique counter, top 24 bits -> [0,1).  Inline so that the
 * mask loops vectorise. */
static inline int model_drop_keep(uint64_t seed, int gl, int m, int64_t i, float p)
{
    uint64_t z = seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)gl << 48) ^
                 ((uint64_t)m << 44) ^ (uint64_t)i;
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}
/* The dropout of map m's adapter input in global layer gl, elements 0..n-1
 * of the (N, in) input, 1/(1-p) on the kept (model_drop_keep's mask, the
 * same values):  forward  xd = drop(x);  backward  xd = drop(x) and
 * dx += drop(dtmp) (dtmp = dy Delta, the branch's gradient).  OpenMP
 * threads above KERN_PAR_MIN; vectorised with AVX-512 where the CPU has it. */
void model_drop_forward(float *xd, const float *x, uint64_t seed, int gl, int m, int64_t n,
                        float p);
void model_drop_backward(float *dx, float *xd, const float *dtmp, const float *x, uint64_t seed,
                         int gl, int m, int64_t n, float p);
/* y (N,out) = x W^T [+ drop(x) delta^T]: the linear map m of layer l with its
 * adapter path.  Used by forward; exposed for tests. */
void model_linear_forward(float *y, const float *x, const model_acts *a,
                          const model_stage *s, int l, model_map m, int64_t N);

/* Scratch for one micro-batch's backward through one stage (one block). */
typedef struct {
    int B, T;                  /* capacity */
    float *dx;                 /* (B,T,D) gradient of the residual stream */
    float *dln;                /* (B,T,D) */
    float *datty;              /* (B,T,D) */
    float *dq;                 /* (B,T,D) */
    float *dk, *dv;            /* (B,T,kvD) */
    float *dgate, *dup, *dhid; /* (B,T,F) */
    float *dtmp;               /* (B,T,max(D,F)) dy delta on the dropout path */
    float *dlogits;            /* (B,T,V) last stage */
    float *rstdf;              /* (B,T) final norm */
    float *mem;
    size_t n_floats;
} model_bwd;
losa_status model_bwd_build(model_bwd *g, const model_stage *s, int B, int T);
/* Bytes model_bwd_build allocates (dlogits (B,T,V) on the last stage). */
size_t model_bwd_bytes(const model_config *c, int has_head, int B, int T);
void model_bwd_free(model_bwd *g);

/* Backward of layer l: dx (B,T,D) holds dL/d(layer output) on entry and
 * dL/d(layer input) on return.  Uses the activations saved in a's slot for l
 * (a->save MODEL_ACTS_SAVE, or MODEL_ACTS_SAVE_ONE right after recomputing
 * layer l).  dL/dDelta of each map goes to the adapter path (s->adapter). */
void model_layer_backward(model_bwd *g, float *dx, const model_acts *a,
                          const model_stage *s, int l, int B, int T);
/* Last stage: loss and its gradient.  a->logits and a->x as left by the
 * forward; targets (B,T) (< 0: ignored).  Loss = scale * sum of NLL; writes
 * dL/d(a->x before the final norm) into dx (overwrites).  Returns the
 * unscaled NLL sum; *n = counted targets. */
double model_head_backward(model_bwd *g, float *dx, const model_acts *a,
                           const model_stage *s, const int *targets, int B, int T,
                           float scale, int64_t *n);

/* Activation checkpointing: run the stage's layers forward on a->x
 * (a: MODEL_ACTS_NOSAVE) keeping only each layer's input in xin_all
 * (n_layers, B,T,D); backward recomputes layer l into r (MODEL_ACTS_SAVE_ONE)
 * from xin_all[l] and back-propagates through it. */
void model_stage_forward_ckpt(model_acts *a, float *xin_all, const model_stage *s,
                              int B, int T);
void model_stage_backward_ckpt(model_bwd *g, float *dx, model_acts *r,
                               const float *xin_all, const model_stage *s, int B,
                               int T);
/* Backward through all layers of the stage (a: MODEL_ACTS_SAVE). */
void model_stage_backward(model_bwd *g, float *dx, const model_acts *a,
                          const model_stage *s, int B, int T);

#endif
