/* model: config checks, pipeline stages (one parameter block per stage),
 * activations (one block per micro-batch shape) and the forward pass. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static const char *map_names[MODEL_N_MAPS] = {"wq", "wk", "wv", "wo",
                                              "w_gate", "w_up", "w_down"};

const char *model_map_name(model_map m) { return map_names[m]; }

void model_map_shape(const model_config *c, model_map m, int *out, int *in)
{
    int D = c->dim, F = c->hidden_dim, kv = model_kv_dim(c);
    switch (m) {
    case MODEL_MAP_Q: case MODEL_MAP_O: *out = D; *in = D; break;
    case MODEL_MAP_K: case MODEL_MAP_V: *out = kv; *in = D; break;
    case MODEL_MAP_GATE: case MODEL_MAP_UP: *out = F; *in = D; break;
    case MODEL_MAP_DOWN: *out = D; *in = F; break;
    default: LOSA_CHECK(0);
    }
}

static const model_input map_inputs[MODEL_N_MAPS] = {
    MODEL_INPUT_QKV, MODEL_INPUT_QKV, MODEL_INPUT_QKV, MODEL_INPUT_O,
    MODEL_INPUT_GATE_UP, MODEL_INPUT_GATE_UP, MODEL_INPUT_DOWN};

model_input model_map_input(model_map m)
{
    LOSA_CHECK(m >= 0 && m < MODEL_N_MAPS);
    return map_inputs[m];
}

int model_input_width(const model_config *c, model_input g)
{
    for (int m = 0; m < MODEL_N_MAPS; m++)
        if (map_inputs[m] == g) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            return i;
        }
    LOSA_CHECK(0 && "no map reads this input");
    return 0;
}

const float *model_layer_input(const model_layer_acts *la, model_input g)
{
    const float *in[MODEL_N_INPUTS] = {la->ln1, la->atty, la->ln2, la->hid};
    LOSA_CHECK(g >= 0 && g < MODEL_N_INPUTS);
    return in[g];
}

losa_status model_config_check(const model_config *c, const char *what)
{
#define REQ(cond, ...) \
    if (!(cond)) return core_err(LOSA_ERR_FORMAT, __VA_ARGS__)
    REQ(c->dim > 0 && c->hidden_dim > 0 && c->n_layers > 0 && c->n_heads > 0 &&
            c->n_kv_heads > 0 && c->vocab_size > 0,
        "%s: dimensions must be positive (dim %d, hidden %d, layers %d, heads %d, "
        "kv heads %d, vocab %d)", what, c->dim, c->hidden_dim, c->n_layers,
        c->n_heads, c->n_kv_heads, c->vocab_size);
    REQ(c->dim % c->n_heads == 0, "%s: dim %d is not a multiple of n_heads %d",
        what, c->dim, c->n_heads);
    REQ((c->dim / c->n_heads) % 2 == 0, "%s: head size %d must be even (RoPE)",
        what, c->dim / c->n_heads);
    REQ(c->n_heads % c->n_kv_heads == 0,
        "%s: n_heads %d is not a multiple of n_kv_heads %d", what, c->n_heads,
        c->n_kv_heads);
    REQ(c->max_seq_len > 0, "%s: max_seq_len must be positive (got %d)", what,
        c->max_seq_len);
    REQ(c->rms_eps > 0 && isfinite(c->rms_eps), "%s: rms_eps must be > 0", what);
    REQ(c->rope_theta > 0 && isfinite(c->rope_theta), "%s: rope_theta must be > 0", what);
    REQ(c->bos_id >= 0 && c->bos_id < c->vocab_size && c->eos_id >= 0 &&
            c->eos_id < c->vocab_size,
        "%s: bos_id %d / eos_id %d outside the vocabulary (%d)", what, c->bos_id,
        c->eos_id, c->vocab_size);
#undef REQ
    return LOSA_OK;
}

int64_t model_map_weights(const model_config *c)
{
    int64_t n = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, m, &o, &i);
        n += (int64_t)o * i;
    }
    return n;
}

static int64_t layer_params(const model_config *c) { return 2 * (int64_t)c->dim + model_map_weights(c); }

int64_t model_param_count(const model_config *c)
{
    int64_t n = (int64_t)c->vocab_size * c->dim + c->dim + layer_params(c) * c->n_layers;
    if (!c->tie_embeddings) n += (int64_t)c->vocab_size * c->dim;
    return n;
}

/* Cost of stage p of P holding n layers under k. */
static double stage_cost(const model_stage_cost *k, int P, int p, int n)
{
    return n * k->layer + (p == 0 ? k->embed : 0) + (p == P - 1 ? k->head : 0);
}

/* Front-loaded assignment under a cap: stage p takes the most layers whose
 * cost fits under cap while leaving one layer for each later stage; the
 * last takes the rest.  Returns 1 if every stage fits.  With equal layer
 * costs a split under the cap exists iff this one fits (taking more layers
 * early never makes a later stage's cost larger). */
static int split_under(int L, int P, const model_stage_cost *k, double cap, int *count)
{
    double tol = 1e-12 * (cap > 0 ? cap : 1);
    int left = L;
    for (int p = 0; p < P - 1; p++) {
        double room = cap + tol - (p == 0 ? k->embed : 0);
        int n = room >= k->layer ? (int)floor(room / k->layer) : 0;
        if (n > left - (P - 1 - p)) n = left - (P - 1 - p);
        /* floor may be one off when room / layer is an integer up to rounding */
        while (n > 1 && stage_cost(k, P, p, n) > cap + tol) n--;
        if (n < 1 || stage_cost(k, P, p, n) > cap + tol) return 0;
        count[p] = n;
        left -= n;
    }
    count[P - 1] = left;
    return left >= 1 && stage_cost(k, P, P - 1, left) <= cap + tol;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void model_split_stages(int L, int P, const model_stage_cost *k, int *first, int *count)
{
    LOSA_CHECK(P >= 1 && P <= L);
    LOSA_CHECK(k->layer > 0 && k->embed >= 0 && k->head >= 0 && isfinite(k->layer) &&
               isfinite(k->embed) && isfinite(k->head));
    /* The optimal largest cost is the cost of some stage: n * layer plus the
     * extras of stage 0, of stage P-1 or of neither (a single stage has
     * both).  Feasibility is monotone in the cap: binary search over the
     * sorted candidates. */
    int nc = 0;
    double *cand = core_calloc((size_t)3 * L, sizeof(double));
    for (int n = 1; n <= L; n++) {
        if (P == 1) { cand[nc++] = stage_cost(k, 1, 0, n); continue; }
        cand[nc++] = n * k->layer;
        cand[nc++] = n * k->layer + k->embed;
        cand[nc++] = n * k->layer + k->head;
    }
    qsort(cand, (size_t)nc, sizeof(double), cmp_double);
    int lo = 0, hi = nc - 1, tmp[P];
    LOSA_CHECK(split_under(L, P, k, cand[hi], tmp)); /* L layers in one stage's cost fit */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (split_under(L, P, k, cand[mid], tmp)) hi = mid;
        else lo = mid + 1;
    }
    double best = cand[lo];
    core_free(cand);
    LOSA_CHECK(split_under(L, P, k, best, count));
    first[0] = 0;
    for (int q = 1; q < P; q++) first[q] = first[q - 1] + count[q - 1];
}

void model_split_layers(const model_config *c, int P, int *first, int *count)
{
    model_stage_cost k;
    model_stage_cost_default(c, &k);
    model_split_stages(c->n_layers, P, &k, first, count);
}

/* The split of n_stages stages: count, or model_split_layers when NULL. */
static void split_of(const model_config *c, int n_stages, const int *count, int *first, int *out)
{
    if (!count) {
        model_split_layers(c, n_stages, first, out);
        return;
    }
    first[0] = 0;
    for (int q = 0; q < n_stages; q++) {
        out[q] = count[q];
        if (q > 0) first[q] = first[q - 1] + count[q - 1];
    }
}

/* Floats of a stage's parameter block: its layers, the embedding on the
 * first stage (and the last when tied), final norm and head on the last. */
static size_t stage_floats(const model_config *c, int n_layers, int has_embed, int has_head)
{
    int64_t D = c->dim, V = c->vocab_size;
    int need_embed = has_embed || (has_head && c->tie_embeddings);
    size_t n = 0;
    if (need_embed) n += V * D;
    n += (size_t)layer_params(c) * n_layers;
    if (has_head) n += D + (c->tie_embeddings ? 0 : V * D);
    return n;
}

/* Weights of the 7 maps of n_layers layers (the bf16 block of a bf16 stage). */
static int64_t stage_map_weights(const model_config *c, int n_layers)
{
    return model_map_weights(c) * n_layers;
}

/* Weights of the plain bf16 block of a bf16 stage (model_stage_build_dtype,
 * model_stage_to_bf16): the maps, then the head's rows on the last stage
 * (a tied head's too: its fp32 embedding stays for the lookup). */
static int64_t stage_bf16_weights(const model_config *c, int n_layers, int has_head)
{
    return stage_map_weights(c, n_layers) + (has_head ? (int64_t)c->vocab_size * c->dim : 0);
}

size_t model_stage_bytes(const model_config *c, int stage, int n_stages, const int *split)
{
    return model_stage_bytes_dtype(c, stage, n_stages, split, MODEL_DTYPE_F32);
}

/* fp32: model_stage_build's block; bf16: model_stage_build_dtype's (and
 * model_stage_to_bf16's result): the fp32 rest and the bf16 maps and head. */
size_t model_stage_bytes_dtype(const model_config *c, int stage, int n_stages, const int *split,
                               model_dtype t)
{
    int first[n_stages], count[n_stages];
    split_of(c, n_stages, split, first, count);
    int nl = count[stage];
    int has_head = stage == n_stages - 1;
    size_t nf = stage_floats(c, nl, stage == 0, has_head), nb = 0;
    if (t == MODEL_DTYPE_BF16) {
        nb = (size_t)stage_bf16_weights(c, nl, has_head);
        nf -= nb - (has_head && c->tie_embeddings ? (size_t)c->vocab_size * c->dim : 0);
        nb = core_alloc_bytes(nb > 0 ? nb : 1, sizeof(uint16_t));
    }
    return core_alloc_bytes(nf > 0 ? nf : 1, sizeof(float)) + nb +
           core_alloc_bytes(nl > 0 ? nl : 1, sizeof(model_layer));
}

/* Bytes of W (o,i) packed, rounded up to 64 so every matrix of the block
 * starts on a cache line. */
static size_t packed_slot(int64_t o, int64_t i)
{
    return (kern_bf16_packed_bytes(o, i) + 63) & ~(size_t)63;
}

/* The bf16 block of a stage (model_stage_pack_bf16): each map of n_layers
 * layers, then the head, packed; *n_weights: the weights in it. */
static size_t bf16_block_bytes(const model_config *c, int n_layers, int has_head,
                               int64_t *n_weights)
{
    size_t bytes = 0;
    int64_t n = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, m, &o, &i);
        bytes += packed_slot(o, i) * (size_t)n_layers;
        n += (int64_t)o * i * n_layers;
    }
    if (has_head) {
        bytes += packed_slot(c->vocab_size, c->dim);
        n += (int64_t)c->vocab_size * c->dim;
    }
    if (n_weights) *n_weights = n;
    return bytes;
}

size_t model_stage_bf16_bytes(const model_config *c, int stage, int n_stages, const int *split)
{
    int first[n_stages], count[n_stages];
    split_of(c, n_stages, split, first, count);
    int nl = count[stage], has_head = stage == n_stages - 1;
    int64_t nb = 0;
    size_t block = bf16_block_bytes(c, nl, has_head, &nb);
    /* fp32 rest: everything but the bf16 weights (a tied head's embedding stays) */
    size_t tied_embed = has_head && c->tie_embeddings ? (size_t)c->vocab_size * c->dim : 0;
    size_t rest = stage_floats(c, nl, stage == 0, has_head) - (size_t)nb + tied_embed;
    return core_alloc_bytes(block > 0 ? block : 1, 1) +
           core_alloc_bytes(rest > 0 ? rest : 1, sizeof(float)) +
           core_alloc_bytes(nl > 0 ? nl : 1, sizeof(model_layer));
}

/* Allocate stage `stage` of n_stages (layers per stage: split, NULL =
 * model_split_layers) in dtype t and set the pointers: fp32 one block of
 * every parameter; bf16 the maps in a bf16 block (layer by layer in map
 * order) and the rest in the fp32 block.  Both zeroed. */
static losa_status stage_build(model_stage *s, const model_config *c, int stage, int n_stages,
                               const int *split, model_dtype t)
{
    memset(s, 0, sizeof *s);
    s->cfg = *c;
    if (n_stages < 1 || n_stages > c->n_layers || stage < 0 || stage >= n_stages)
        return core_err(LOSA_ERR_ARG,
                        "pipeline: %d stages for %d layers (need 1 <= stages <= layers)",
                        n_stages, c->n_layers);
    if (split) {
        int sum = 0, ok = 1;
        for (int q = 0; q < n_stages; q++) {
            ok = ok && split[q] >= 1;
            sum += split[q];
        }
        if (!ok || sum != c->n_layers)
            return core_err(LOSA_ERR_ARG, "pipeline: stage split of %d stages holds %d layers "
                            "(expected %d, every stage >= 1)", n_stages, sum, c->n_layers);
    }
    int first[n_stages], count[n_stages];
    split_of(c, n_stages, split, first, count);
    s->stage = stage;
    s->n_stages = n_stages;
    s->layer0 = first[stage];
    s->n_layers = count[stage];
    s->has_embed = stage == 0;
    s->has_head = stage == n_stages - 1;
    s->dtype = t;
    int64_t D = c->dim, V = c->vocab_size;
    int need_embed = s->has_embed || (s->has_head && c->tie_embeddings);
    size_t n = stage_floats(c, s->n_layers, s->has_embed, s->has_head), nb = 0;
    if (t == MODEL_DTYPE_BF16) {
        /* the maps and the head's rows in bf16 (a tied head's embedding
         * stays fp32 for the lookup) */
        nb = (size_t)stage_bf16_weights(c, s->n_layers, s->has_head);
        n -= nb - (s->has_head && c->tie_embeddings ? (size_t)(V * D) : 0);
        s->params_bf16 = core_calloc(nb > 0 ? nb : 1, sizeof(uint16_t));
        s->n_params_bf16 = nb;
        s->bytes_bf16 = sizeof(uint16_t) * nb; /* plain: 2 bytes a weight */
    }
    s->params = core_calloc(n > 0 ? n : 1, sizeof(float));
    s->n_params = n;
    s->layers = core_calloc(s->n_layers > 0 ? s->n_layers : 1, sizeof(model_layer));
    float *p = s->params;
    uint16_t *q = s->params_bf16;
    if (need_embed) { s->embed = p; p += V * D; }
    for (int l = 0; l < s->n_layers; l++) {
        model_layer *ly = &s->layers[l];
        ly->attn_norm = p; p += D;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, m, &o, &i);
            if (t == MODEL_DTYPE_BF16) { ly->wb[m] = q; q += (int64_t)o * i; }
            else { ly->w[m] = p; p += (int64_t)o * i; }
        }
        ly->ffn_norm = p; p += D;
    }
    if (s->has_head) {
        s->final_norm = p; p += D;
        if (t == MODEL_DTYPE_BF16) { s->head_bf16 = q; q += V * D; }
        else if (c->tie_embeddings) s->head = s->embed;
        else { s->head = p; p += V * D; }
    }
    LOSA_CHECK((size_t)(p - s->params) == n &&
               (t == MODEL_DTYPE_BF16 ? (size_t)(q - s->params_bf16) : 0) == nb);
    return LOSA_OK;
}

losa_status model_stage_build(model_stage *s, const model_config *c, int stage,
                              int n_stages)
{
    return stage_build(s, c, stage, n_stages, NULL, MODEL_DTYPE_F32);
}

losa_status model_stage_build_split(model_stage *s, const model_config *c, int stage,
                                    int n_stages, const int *split)
{
    return stage_build(s, c, stage, n_stages, split, MODEL_DTYPE_F32);
}

losa_status model_stage_build_dtype(model_stage *s, const model_config *c, int stage,
                                    int n_stages, const int *split, model_dtype t)
{
    return stage_build(s, c, stage, n_stages, split, t);
}

void model_stage_free(model_stage *s)
{
    if (!s) return;
    core_free(s->params);
    core_free(s->params_bf16);
    core_free(s->layers);
    memset(s, 0, sizeof *s);
}

losa_status model_stage_require_plain(const model_stage *s, const char *what)
{
    if (!s->bf16_packed) return LOSA_OK;
    return core_err(LOSA_ERR_ARG, "%s: the stage's bf16 weights are packed for the GEMM engine "
                    "(forward only); it needs the plain layout", what);
}

losa_status model_stage_require_f32(const model_stage *s, const char *what)
{
    if (s->dtype == MODEL_DTYPE_F32) return LOSA_OK;
    return core_err(LOSA_ERR_ARG, "%s: not available with %s weights (the sparse kernels read "
                    "fp32 maps); use fp32", what, model_dtype_name(s->dtype));
}

const char *model_dtype_name(model_dtype t) { return t == MODEL_DTYPE_BF16 ? "bf16" : "fp32"; }

losa_status model_dtype_from_string(const char *v, const char *what, model_dtype *t)
{
    if (!strcmp(v, "fp32")) *t = MODEL_DTYPE_F32;
    else if (!strcmp(v, "bf16")) *t = MODEL_DTYPE_BF16;
    else return core_err(LOSA_ERR_ARG, "%s: '%s' (expected fp32 or bf16)", what, v);
    return LOSA_OK;
}

/* Copy n floats from *src to *dst when src is set; point src at the copy. */
static void repack(float **dst, float **src, int64_t n)
{
    if (!*src) return;
    memcpy(*dst, *src, sizeof(float) * (size_t)n);
    *src = *dst;
    *dst += n;
}

/* W (o,i) fp32 -> bf16 (round to nearest even, plain, into tmp) -> packed
 * at *dst; *dst advances by its slot.  Returns the non-zeros lost. */
static int64_t pack_one(uint16_t **dst, uint16_t *tmp, const float *w, int64_t o, int64_t i)
{
    int64_t lost = kern_bf16_from_f32(tmp, w, o * i);
    kern_bf16_pack(*dst, tmp, o, i);
    *dst = (uint16_t *)((char *)*dst + packed_slot(o, i));
    return lost;
}

/* The one walk of model_stage_to_bf16 (packed = 0, head = 1: plain
 * row-major maps and head rows, the layout of model_stage_build_dtype),
 * model_stage_to_bf16_maps (packed = 0, head = 0: the head stays fp32) and
 * model_stage_pack_bf16 (packed = 1: the maps and the head, fp32 or a plain
 * bf16 stage's rows, packed for the engine).  head_bf16's layout follows
 * bf16_packed. */
static losa_status stage_bf16(model_stage *s, int packed, int head, int64_t *n_lost)
{
    if (n_lost) *n_lost = 0;
    if (s->dtype == MODEL_DTYPE_BF16 && (!packed || s->bf16_packed) &&
        (!head || !s->has_head || s->head_bf16))
        return LOSA_OK;
    const model_config *c = &s->cfg;
    int plain = s->dtype == MODEL_DTYPE_BF16, head16 = (packed || head) && s->has_head;
    /* a plain bf16 stage whose head was left fp32 (model_stage_to_bf16_maps)
     * gains bf16 head rows only on the way to packed */
    if (plain && !packed)
        return core_err(LOSA_ERR_ARG, "model_stage_to_bf16: the stage's maps are already bf16 "
                        "and its head fp32 (convert an fp32 stage)");
    int64_t D = c->dim, V = c->vocab_size, nall = 0, lost = 0, wmax = 0;
    size_t bytes;
    if (packed) bytes = bf16_block_bytes(c, s->n_layers, s->has_head, &nall);
    else {
        nall = stage_map_weights(c, s->n_layers) + (head16 ? V * D : 0);
        bytes = sizeof(uint16_t) * (size_t)nall;
    }
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, m, &o, &i);
        if ((int64_t)o * i > wmax) wmax = (int64_t)o * i;
    }
    int64_t nhead = head16 ? V * D : 0, nmap = nall - nhead;
    if (nhead > wmax) wmax = nhead;
    uint16_t *b = core_calloc(bytes > 0 ? bytes : 1, 1), *q = b;
    /* the rounding scratch of pack_one: every fp32 map, or the fp32 head */
    int head_f32 = head16 && !s->head_bf16;
    uint16_t *tmp = packed && !plain ? core_malloc(wmax > 0 ? (size_t)wmax : 1, sizeof(uint16_t))
                    : packed && head_f32 ? core_malloc((size_t)nhead, sizeof(uint16_t)) : NULL;
    int tied = s->has_head && s->head == s->embed;
    /* the fp32 block loses the maps (an fp32 stage's) and the head when it
     * held one of its own (untied, not yet in bf16 rows) */
    size_t nrest = s->n_params - (size_t)(plain ? 0 : nmap) -
                   (size_t)(head_f32 && !tied ? nhead : 0);
    float *rest = core_malloc(nrest > 0 ? nrest : 1, sizeof(float)), *p = rest;
    repack(&p, &s->embed, s->embed ? V * D : 0);
    for (int l = 0; l < s->n_layers; l++) {
        model_layer *ly = &s->layers[l];
        repack(&p, &ly->attn_norm, D);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, m, &o, &i);
            if (!packed) { /* plain: rounded in place of the block */
                lost += kern_bf16_from_f32(q, ly->w[m], (int64_t)o * i);
                ly->wb[m] = q;
                q += (int64_t)o * i;
            } else if (plain) { /* already bf16: packed as it is */
                kern_bf16_pack(q, ly->wb[m], o, i);
                ly->wb[m] = q;
                q = (uint16_t *)((char *)q + packed_slot(o, i));
            } else {
                ly->wb[m] = q;
                lost += pack_one(&q, tmp, ly->w[m], o, i);
            }
            ly->w[m] = NULL;
        }
        repack(&p, &ly->ffn_norm, D);
    }
    repack(&p, &s->final_norm, s->final_norm ? D : 0);
    if (head16) {
        uint16_t *rows = s->head_bf16; /* a plain bf16 stage's head rows (old block) */
        s->head_bf16 = q;
        if (packed && rows) { /* already bf16: packed as it is */
            kern_bf16_pack(q, rows, V, D);
            q = (uint16_t *)((char *)q + packed_slot(V, D));
        } else if (packed) lost += pack_one(&q, tmp, s->head, V, D);
        else {
            lost += kern_bf16_from_f32(q, s->head, V * D);
            q += V * D;
        }
        s->head = NULL; /* tied: the embedding stays fp32 for the lookup */
    } else if (tied) s->head = s->embed;
    else repack(&p, &s->head, s->head ? V * D : 0);
    LOSA_CHECK((size_t)(p - rest) == nrest && (size_t)((char *)q - (char *)b) == bytes);
    core_free(tmp);
    core_free(s->params);
    core_free(s->params_bf16); /* the plain bf16 maps (and head) of a plain bf16 stage */
    s->params = rest;
    s->n_params = nrest;
    s->params_bf16 = b;
    s->n_params_bf16 = (size_t)nall;
    s->bytes_bf16 = bytes;
    s->bf16_packed = packed;
    s->dtype = MODEL_DTYPE_BF16;
    if (n_lost) *n_lost = lost;
    return LOSA_OK;
}

losa_status model_stage_to_bf16(model_stage *s, int64_t *n_lost) { return stage_bf16(s, 0, 1, n_lost); }

losa_status model_stage_to_bf16_maps(model_stage *s, int64_t *n_lost)
{
    return stage_bf16(s, 0, 0, n_lost);
}

losa_status model_stage_pack_bf16(model_stage *s, int64_t *n_lost) { return stage_bf16(s, 1, 1, n_lost); }

static void fill_normal(float *x, int64_t n, uint64_t seed, float mean, float std)
{
    core_rng r;
    core_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = mean + std * core_rng_normal(&r);
}

void model_stage_randomize(model_stage *s, uint64_t seed, float std)
{
    const model_config *c = &s->cfg;
    int64_t D = c->dim, V = c->vocab_size;
    uint64_t base = seed * 1000003ull;
    if (s->embed) fill_normal(s->embed, V * D, base + 1, 0, std);
    for (int l = 0; l < s->n_layers; l++) {
        model_layer *ly = &s->layers[l];
        uint64_t g = base + 100 + 16ull * (s->layer0 + l);
        fill_normal(ly->attn_norm, D, g, 1.0f, 0.1f);
        fill_normal(ly->ffn_norm, D, g + 1, 1.0f, 0.1f);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, m, &o, &i);
            fill_normal(ly->w[m], (int64_t)o * i, g + 2 + m, 0, std);
        }
    }
    if (s->has_head) {
        fill_normal(s->final_norm, D, base + 2, 1.0f, 0.1f);
        if (!c->tie_embeddings) fill_normal(s->head, V * D, base + 3, 0, std);
    }
}

/* The layout of one activation block (model_acts_build): the residual
 * stream and scratch, logits when asked, the RoPE tables, one slot per
 * saved layer (or one), and the dropout scratch.  Every buffer starts on a
 * 64-byte line (16 floats), so the row vectors a decode step hands to the
 * matvec kernels are aligned whatever B and T are (a 1-float rstd per
 * position used to shift the buffers after it; the fp32 bitmap decode
 * kernel, whose zmm loads of x then split cache lines, ran 15-20% slower
 * per call, one thread, 1024 x 4096 at 70%).  Fills a's pointers into
 * a->mem when a is not NULL; returns the block's size in floats. */
static size_t acts_layout(model_acts *a, const model_config *c, int n_layers, int logits,
                          int64_t B, int64_t T, int save)
{
    int64_t N = B * T, D = c->dim, F = c->hidden_dim, kv = model_kv_dim(c);
    int64_t H = c->n_heads, hd = model_head_size(c);
    int64_t slots = save == MODEL_ACTS_SAVE ? (n_layers > 0 ? n_layers : 1) : 1;
    int64_t wmax = F > D ? F : D;
    size_t off = 0;
#define TAKE(field, cnt)                                                                       \
    do {                                                                                       \
        if (a) a->field = a->mem + off;                                                        \
        off += ((size_t)(cnt) + 15) & ~(size_t)15;                                             \
    } while (0)
    TAKE(x, N * D);
    TAKE(tmp, N * D);
    if (logits) TAKE(logits, N * c->vocab_size);
    TAKE(rope_cos, T * hd / 2);
    TAKE(rope_sin, T * hd / 2);
    TAKE(xin, N * D * slots);
    TAKE(ln1, N * D * slots);
    TAKE(rstd1, N * slots);
    TAKE(q, N * D * slots);
    TAKE(k, N * kv * slots);
    TAKE(v, N * kv * slots);
    TAKE(att, B * H * T * slots); /* log-sum-exps (tiled attention) */
    TAKE(atty, N * D * slots);
    TAKE(xres, N * D * slots);
    TAKE(ln2, N * D * slots);
    TAKE(rstd2, N * slots);
    TAKE(gate, N * F * slots);
    TAKE(up, N * F * slots);
    TAKE(hid, N * F * slots);
    TAKE(xdrop, N * wmax);
#undef TAKE
    return off;
}

size_t model_acts_bytes(const model_config *c, int n_layers, int logits, int B, int T, int save)
{
    return core_alloc_bytes(acts_layout(NULL, c, n_layers, logits, B, T, save), sizeof(float));
}

static losa_status acts_build(model_acts *a, const model_stage *s, int B, int T, int save,
                              int logits)
{
    memset(a, 0, sizeof *a);
    const model_config *c = &s->cfg;
    if (T > c->max_seq_len)
        return core_err(LOSA_ERR_ARG, "sequence length %d exceeds the model's max_seq_len %d",
                        T, c->max_seq_len);
    size_t n = acts_layout(NULL, c, s->n_layers, logits, B, T, save);
    a->mem = core_calloc(n, sizeof(float));
    a->n_floats = n;
    a->B = B;
    a->T = T;
    a->save = save;
    acts_layout(a, c, s->n_layers, logits, B, T, save);
    kern_rope_tables(a->rope_cos, a->rope_sin, T, (int)model_head_size(c), c->rope_theta);
    return LOSA_OK;
}

losa_status model_acts_build(model_acts *a, const model_stage *s, int B, int T,
                             int save)
{
    return acts_build(a, s, B, T, save, s->has_head);
}

losa_status model_acts_build_layers(model_acts *a, const model_stage *s, int B, int T,
                                    int save)
{
    return acts_build(a, s, B, T, save, 0);
}

void model_acts_free(model_acts *a)
{
    if (!a) return;
    core_free(a->mem);
    memset(a, 0, sizeof *a);
}

model_layer_acts model_acts_layer(const model_acts *a, const model_stage *s,
                                  int l, int B, int T)
{
    const model_config *c = &s->cfg;
    int64_t N = (int64_t)B * T, D = c->dim, F = c->hidden_dim, kv = model_kv_dim(c);
    /* strides use the capacity (a->B, a->T) so slots never move */
    int64_t Nc = (int64_t)a->B * a->T;
    int64_t attc = (int64_t)a->B * c->n_heads * a->T;
    int64_t i = a->save == MODEL_ACTS_SAVE ? l : 0;
    (void)N;
    model_layer_acts la = {
        .xin = a->xin + i * Nc * D, .ln1 = a->ln1 + i * Nc * D,
        .rstd1 = a->rstd1 + i * Nc, .q = a->q + i * Nc * D,
        .k = a->k + i * Nc * kv, .v = a->v + i * Nc * kv,
        .att = a->att + i * attc, .atty = a->atty + i * Nc * D,
        .xres = a->xres + i * Nc * D, .ln2 = a->ln2 + i * Nc * D,
        .rstd2 = a->rstd2 + i * Nc, .gate = a->gate + i * Nc * F,
        .up = a->up + i * Nc * F, .hid = a->hid + i * Nc * F,
    };
    return la;
}

/* The dropout loops a block of DROP_BLOCK elements at a time (e0: the
 * block's first element): model_drop_keep's 64-bit hash vectorises with
 * AVX-512 (vpmullq, x86-64-v4), not with the baseline's SSE2. */
#define DROP_BLOCK 4096
__attribute__((target_clones("arch=x86-64-v4", "default")))
static void drop_fwd_block(float *xd, const float *x, uint64_t seed, int gl, int m, int64_t e0,
                           int64_t n, float p, float keep)
{
#pragma omp simd
    for (int64_t e = 0; e < n; e++)
        xd[e] = model_drop_keep(seed, gl, m, e0 + e, p) ? x[e] * keep : 0.0f;
}

__attribute__((target_clones("arch=x86-64-v4", "default")))
static void drop_bwd_block(float *dx, float *xd, const float *dtmp, const float *x,
                           uint64_t seed, int gl, int m, int64_t e0, int64_t n, float p,
                           float keep)
{
#pragma omp simd
    for (int64_t e = 0; e < n; e++) {
        int k = model_drop_keep(seed, gl, m, e0 + e, p);
        dx[e] += k ? dtmp[e] * keep : 0.0f;
        xd[e] = k ? x[e] * keep : 0.0f;
    }
}

void model_drop_forward(float *xd, const float *x, uint64_t seed, int gl, int m, int64_t n,
                        float p)
{
    float keep = 1.0f / (1.0f - p);
    int64_t nb = (n + DROP_BLOCK - 1) / DROP_BLOCK;
#pragma omp parallel for schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t e0 = b * DROP_BLOCK, len = n - e0 < DROP_BLOCK ? n - e0 : DROP_BLOCK;
        drop_fwd_block(xd + e0, x + e0, seed, gl, m, e0, len, p, keep);
    }
}

void model_drop_backward(float *dx, float *xd, const float *dtmp, const float *x, uint64_t seed,
                         int gl, int m, int64_t n, float p)
{
    float keep = 1.0f / (1.0f - p);
    int64_t nb = (n + DROP_BLOCK - 1) / DROP_BLOCK;
#pragma omp parallel for schedule(static) if (n > KERN_PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t e0 = b * DROP_BLOCK, len = n - e0 < DROP_BLOCK ? n - e0 : DROP_BLOCK;
        drop_bwd_block(dx + e0, xd + e0, dtmp + e0, x + e0, seed, gl, m, e0, len, p, keep);
    }
}

/* a->xdrop (N,i) = drop(x): map m of stage layer l's adapter input. */
static void drop_input(const model_acts *a, const float *x, const model_stage *s, int l,
                       model_map m, int64_t N, int i)
{
    model_drop_forward(a->xdrop, x, a->drop_seed, s->layer0 + l, m, N * i, a->drop_p);
}

/* y (N,out) = x W^T, plus the masked adapter when the layer carries one:
 *   dropout 0:  y = x (W + Delta)^T          one GEMM with weff
 *   dropout p:  y = x W^T + drop(x) Delta^T  two GEMMs (drop(x) in a->xdrop)
 * Delta comes from the lora module (s->adapter).  bf16 stage: the same
 * products on the bf16 forms (W, weffb, deltab; kern_gemm_bf16w, or the
 * packed W without adapters). */
void model_linear_forward(float *y, const float *x, const model_acts *a,
                          const model_stage *s, int l, model_map m, int64_t N)
{
    const model_layer *ly = &s->layers[l];
    const model_adapter_map *ad = s->adapter ? s->adapter->map(s->adapter->ctx, l, m) : NULL;
    int o, i;
    model_map_shape(&s->cfg, m, &o, &i);
    if (ly->wb[m] && ad) { /* bf16 stage in training: plain maps (lora_adapters_build) */
        LOSA_CHECK(!s->bf16_packed);
        if (a->drop_p <= 0.0f) {
            kern_gemm_bf16w(1, N, o, i, 1.0f, x, i, ad->weffb, i, 0.0f, y, o);
        } else {
            drop_input(a, x, s, l, m, N, i);
            kern_gemm_bf16w(1, N, o, i, 1.0f, x, i, ly->wb[m], i, 0.0f, y, o);
            kern_gemm_bf16w(1, N, o, i, 1.0f, a->xdrop, i, ad->deltab, i, 1.0f, y, o);
        }
    } else if (ly->wb[m]) { /* bf16 stage (sparse copies refused) */
        if (s->bf16_packed) kern_gemm_bf16p(N, o, i, 1.0f, x, i, ly->wb[m], 0.0f, y, o);
        else kern_gemm_bf16w(1, N, o, i, 1.0f, x, i, ly->wb[m], i, 0.0f, y, o);
    } else if (!ad) {
        /* sparse copy of W (sparse_maps.c) when attached and profitable at N */
        if (s->sparse && model_sparse_linear(y, x, s->sparse, l, m, N)) return;
        kern_matmul_forward(y, x, ly->w[m], N, i, o);
    } else if (a->drop_p <= 0.0f) {
        kern_matmul_forward(y, x, ad->weff, N, i, o);
    } else {
        drop_input(a, x, s, l, m, N, i);
        kern_matmul_forward(y, x, ly->w[m], N, i, o);
        kern_matmul_forward_acc(y, a->xdrop, ad->delta, N, i, o);
    }
}

/* y[j] (N,out_j) = x W_j^T for the n maps m[j] that read the same x (q, k,
 * v; gate, up): on a packed bf16 stage without adapters one
 * kern_gemm_bf16p_shared (x rounded to bf16 once, not once per map), else
 * model_linear_forward map by map.  The same results either way. */
static void linear_forward_shared(float *const *y, const model_map *m, int n, const float *x,
                                  const model_acts *a, const model_stage *s, int l, int64_t N)
{
    const model_layer *ly = &s->layers[l];
    int shared = s->bf16_packed && !s->adapter && n <= 3;
    for (int j = 0; j < n && shared; j++) shared = ly->wb[m[j]] != NULL;
    if (!shared) {
        for (int j = 0; j < n; j++) model_linear_forward(y[j], x, a, s, l, m[j], N);
        return;
    }
    const uint16_t *w[3];
    int64_t out[3];
    int o, i = 0;
    for (int j = 0; j < n; j++) {
        model_map_shape(&s->cfg, m[j], &o, &i);
        w[j] = ly->wb[m[j]];
        out[j] = o;
    }
    kern_gemm_bf16p_shared(n, N, i, x, i, w, out, y);
}

void model_layer_forward(model_acts *a, const model_stage *s, int l, int B,
                         int T)
{
    const model_config *c = &s->cfg;
    const model_layer *ly = &s->layers[l];
    model_layer_acts la = model_acts_layer(a, s, l, B, T);
    int64_t N = (int64_t)B * T, D = c->dim, F = c->hidden_dim;
    int H = c->n_heads, Hkv = c->n_kv_heads, hd = model_head_size(c);
    if (a->save) memcpy(la.xin, a->x, sizeof(float) * N * D);
    kern_rmsnorm_forward(la.ln1, la.rstd1, a->x, ly->attn_norm, N, (int)D, c->rms_eps);
    linear_forward_shared((float *const[]){la.q, la.k, la.v},
                          (const model_map[]){MODEL_MAP_Q, MODEL_MAP_K, MODEL_MAP_V}, 3, la.ln1,
                          a, s, l, N);
    kern_rope_forward(la.q, a->rope_cos, a->rope_sin, B, T, H, hd);
    kern_rope_forward(la.k, a->rope_cos, a->rope_sin, B, T, Hkv, hd);
    kern_attention_forward(la.atty, la.att, la.q, la.k, la.v, B, T, H, Hkv, hd);
    model_linear_forward(a->tmp, la.atty, a, s, l, MODEL_MAP_O, N);
    kern_add_inplace(a->x, a->tmp, N * D);
    if (a->save) memcpy(la.xres, a->x, sizeof(float) * N * D);
    kern_rmsnorm_forward(la.ln2, la.rstd2, a->x, ly->ffn_norm, N, (int)D, c->rms_eps);
    linear_forward_shared((float *const[]){la.gate, la.up},
                          (const model_map[]){MODEL_MAP_GATE, MODEL_MAP_UP}, 2, la.ln2, a, s, l,
                          N);
    kern_swiglu_forward(la.hid, la.gate, la.up, N * F);
    model_linear_forward(a->tmp, la.hid, a, s, l, MODEL_MAP_DOWN, N);
    kern_add_inplace(a->x, a->tmp, N * D);
}

void model_stage_embed(model_acts *a, const model_stage *s, const int *tokens,
                       int B, int T)
{
    LOSA_CHECK(s->has_embed);
    kern_embed_forward(a->x, tokens, s->embed, (int64_t)B * T, s->cfg.dim);
}

void model_stage_head(model_acts *a, const model_stage *s, int B, int T)
{
    const model_config *c = &s->cfg;
    LOSA_CHECK(s->has_head && a->logits);
    int64_t N = (int64_t)B * T;
    kern_rmsnorm_forward(a->tmp, NULL, a->x, s->final_norm, N, c->dim, c->rms_eps);
    if (s->head_bf16 && s->bf16_packed)
        kern_gemm_bf16p(N, c->vocab_size, c->dim, 1.0f, a->tmp, c->dim, s->head_bf16, 0.0f,
                        a->logits, c->vocab_size);
    else if (s->head_bf16)
        kern_gemm_bf16w(1, N, c->vocab_size, c->dim, 1.0f, a->tmp, c->dim, s->head_bf16, c->dim,
                        0.0f, a->logits, c->vocab_size);
    else
        kern_matmul_forward(a->logits, a->tmp, s->head, N, c->dim, c->vocab_size);
}

void model_stage_forward(model_acts *a, const model_stage *s, const int *tokens,
                         int B, int T)
{
    model_stage_forward_layers(a, s, tokens, B, T);
    if (s->has_head) model_stage_head(a, s, B, T);
}

void model_stage_forward_layers(model_acts *a, const model_stage *s, const int *tokens, int B,
                                int T)
{
    LOSA_CHECK(B <= a->B && T <= a->T);
    if (s->has_embed) model_stage_embed(a, s, tokens, B, T);
    for (int l = 0; l < s->n_layers; l++) model_layer_forward(a, s, l, B, T);
}
