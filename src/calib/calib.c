/* calib: calibration windows and the layer-sequential passes (see
 * include/calib.h). */
#include "calib.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "kernels.h"

/* ---------------------------------------------------------------- data */

static int is_jsonl(const char *path)
{
    size_t n = strlen(path);
    return (n > 6 && !strcmp(path + n - 6, ".jsonl")) || (n > 5 && !strcmp(path + n - 5, ".json"));
}

void calib_draw_default(calib_draw *cd, uint64_t seed)
{
    cd->sampler = CALIB_SAMPLER_LOSA;
    cd->seed = seed;
    cd->bos = 1;
    cd->eos = 0;
}

void calib_docs_free(int **docs, int64_t *dlen, int ndoc)
{
    for (int i = 0; i < ndoc; i++) free(docs[i]);
    core_free(docs);
    core_free(dlen);
}

losa_status calib_docs_tokenize(const tok_tokenizer *tok, const char *path, const char *text,
                                size_t len, int bos, int eos, int ***docs_out,
                                int64_t **dlen_out, int *ndoc_out)
{
    int ndoc = 0, cap = 256;
    int **docs = core_calloc(cap, sizeof(int *));
    int64_t *dlen = core_calloc(cap, sizeof(int64_t));
    losa_status st = LOSA_OK;
    if (is_jsonl(path)) {
        const char *p = text, *end = text + len;
        int line = 0;
        while (p < end && st == LOSA_OK) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
            line++;
            if (ll > 0 && !(ll == 1 && p[0] == '\r')) {
                cJSON *j = cJSON_ParseWithLength(p, ll);
                cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "text") : NULL;
                if (!j) st = core_err(LOSA_ERR_FORMAT, "%s:%d: malformed JSON line", path, line);
                else if (!cJSON_IsString(t))
                    st = core_err(LOSA_ERR_FORMAT, "%s:%d: no string field 'text'", path, line);
                else {
                    if (ndoc == cap) {
                        cap *= 2;
                        docs = realloc(docs, sizeof(int *) * cap);
                        dlen = realloc(dlen, sizeof(int64_t) * cap);
                        LOSA_CHECK(docs && dlen);
                    }
                    const char *s = t->valuestring;
                    st = tok_encode(tok, s, strlen(s), bos, eos, &docs[ndoc], &dlen[ndoc]);
                    if (st == LOSA_OK) ndoc++;
                }
                cJSON_Delete(j);
            }
            p += ll + 1;
        }
    } else {
        st = tok_encode(tok, text, len, bos, eos, &docs[0], &dlen[0]);
        if (st == LOSA_OK) ndoc = 1;
    }
    if (st != LOSA_OK) {
        calib_docs_free(docs, dlen, ndoc);
        docs = NULL;
        dlen = NULL;
        ndoc = 0;
    }
    *docs_out = docs;
    *dlen_out = dlen;
    *ndoc_out = ndoc;
    return st;
}

losa_status calib_sample(const tok_tokenizer *tok, const char *path,
                         const char *text, size_t len, int N, int S,
                         uint64_t seed, int *tokens)
{
    calib_draw cd;
    calib_draw_default(&cd, seed);
    return calib_sample_draw(tok, path, text, len, N, S, &cd, tokens);
}

losa_status calib_sample_draw(const tok_tokenizer *tok, const char *path,
                              const char *text, size_t len, int N, int S,
                              const calib_draw *cd, int *tokens)
{
    int **docs, ndoc;
    int64_t *dlen;
    int jsonl = is_jsonl(path);
    losa_status st = calib_docs_tokenize(tok, path, text, len, cd->bos, cd->eos, &docs, &dlen,
                                         &ndoc);
    if (st != LOSA_OK) return st;
    int usable = 0;
    for (int i = 0; i < ndoc; i++) usable += dlen[i] > S;
    if (!jsonl) {
        if (dlen[0] - S < N)
            st = core_err(LOSA_ERR_ARG, "%s: %lld tokens give only %lld windows of %d tokens; "
                          "%d calibration windows asked", path, (long long)dlen[0],
                          (long long)(dlen[0] > S ? dlen[0] - S : 0), S, N);
    } else if (usable < N) {
        st = core_err(LOSA_ERR_ARG, "%s: only %d of %d documents are longer than %d tokens; "
                      "%d calibration windows asked (lower data.calib_n or data.calib_seqlen)",
                      path, usable, ndoc, S, N);
    }
    if (st == LOSA_OK && cd->sampler == CALIB_SAMPLER_PYTHON) {
        /* random.seed(seed); get_c4 (JSONL) / get_wikitext2 (one document) */
        calib_pyrng g;
        calib_pyrng_seed(&g, cd->seed);
        for (int k = 0; k < N; k++) {
            int doc = 0;
            if (jsonl)
                do doc = (int)calib_pyrng_randint(&g, 0, ndoc - 1);
                while (dlen[doc] <= S);
            int64_t i = calib_pyrng_randint(&g, 0, dlen[doc] - S - 1);
            memcpy(tokens + (int64_t)k * S, docs[doc] + i, sizeof(int) * S);
        }
    } else if (st == LOSA_OK) {
        core_rng r;
        core_rng_seed(&r, cd->seed);
        for (int k = 0; k < N; k++) {
            int doc;
            do doc = (int)(core_rng_u64(&r) % (uint64_t)ndoc);
            while (dlen[doc] <= S);
            int64_t i = (int64_t)(core_rng_u64(&r) % (uint64_t)(dlen[doc] - S));
            memcpy(tokens + (int64_t)k * S, docs[doc] + i, sizeof(int) * S);
        }
    }
    calib_docs_free(docs, dlen, ndoc);
    return st;
}

losa_status calib_load_windows(dist_ctx *d, const tok_tokenizer *tok, const char *path,
                               int N, int S, const calib_draw *cd, int *tokens)
{
    losa_status s = LOSA_OK;
    if (dist_rank(d) == 0) {
        char *text = NULL;
        size_t len = 0;
        s = core_read_file(path, &text, &len);
        if (s == LOSA_OK) s = calib_sample_draw(tok, path, text, len, N, S, cd, tokens);
        free(text);
    }
    if ((s = dist_agree(d, s)) != LOSA_OK) return s;
    dist_bcast(d, tokens, sizeof(int) * (size_t)N * S, 0);
    return LOSA_OK;
}

/* ---------------------------------------------------------------- helpers */

int calib_windows_of(int N, int dp, int replica)
{
    return N > replica ? (N - replica + dp - 1) / dp : 0;
}

int calib_windows_mine(dist_ctx *d, int N)
{
    return calib_windows_of(N, dist_n_replicas(d), dist_replica(d));
}

int calib_window_index(dist_ctx *d, int i) { return dist_replica(d) + i * dist_n_replicas(d); }

/* Exact zeros (+-0) of n bf16 weights. */
static int64_t bf16_zeros(const uint16_t *x, int64_t n)
{
    int64_t z = 0;
    for (int64_t i = 0; i < n; i++) z += (x[i] & 0x7fffu) == 0;
    return z;
}

static int64_t layer_zeros(const model_stage *s, int l, int64_t *n)
{
    int64_t z = 0;
    *n = 0;
    LOSA_CHECK(!s->bf16_packed); /* element by element: fp32 or the plain bf16 layout */
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(&s->cfg, m, &o, &i);
        int64_t k = (int64_t)o * i;
        z += s->layers[l].wb[m] ? bf16_zeros(s->layers[l].wb[m], k)
                                : prune_count_zeros(s->layers[l].w[m], k);
        *n += k;
    }
    return z;
}

double calib_layer_sparsity(const model_stage *s, int l)
{
    int64_t n, z = layer_zeros(s, l, &n);
    return (double)z / n;
}

int64_t calib_stage_zeros(const model_stage *s, int64_t *total)
{
    int64_t z = 0, t = 0;
    for (int l = 0; l < s->n_layers; l++) {
        int64_t n;
        z += layer_zeros(s, l, &n);
        t += n;
    }
    if (total) *total = t;
    return z;
}

/* The stage's input stream X (Nm,S,D) for windows w(0..Nm-1): embeddings on
 * the first stage, else received through the stage door (tag: the stream's
 * kind, MODEL_STAGE_TAG_CALIB or _CALIB_DENSE). */
static void stream_in(dist_ctx *d, const model_stage *s, float *X, const int *tokens,
                      int Nm, int S, int all, model_stage_tag tag)
{
    int64_t D = s->cfg.dim;
    if (s->has_embed) {
        for (int i = 0; i < Nm; i++) {
            int w = all ? i : calib_window_index(d, i);
            kern_embed_forward(X + (int64_t)i * S * D, tokens + (int64_t)w * S, s->embed, S, (int)D);
        }
    } else {
        model_stage_recv_input(d, s, X, (int64_t)Nm * S, tag, 0);
    }
}

/* The stage's output stream X (Nm,S,D) to the next stage (none on the last). */
static void stream_out(dist_ctx *d, const model_stage *s, const float *X, int Nm, int S,
                       model_stage_tag tag)
{
    model_stage_send_output(d, s, X, (int64_t)Nm * S, tag, 0);
}

/* Run layer l on X (Nm,S,D) in chunks of windows.  cb(ctx, acts, first
 * window, count) sees each chunk's activations; write_back stores the
 * outputs into X. */
typedef void (*chunk_fn)(void *ctx, model_acts *a, int w0, int nw);
static void layer_pass(model_acts *a, const model_stage *s, int l, float *X, int Nm,
                       int S, int chunk, chunk_fn cb, void *ctx, int write_back)
{
    int64_t D = s->cfg.dim;
    for (int w0 = 0; w0 < Nm; w0 += chunk) {
        int nw = Nm - w0 < chunk ? Nm - w0 : chunk;
        float *x = X + (int64_t)w0 * S * D;
        memcpy(a->x, x, sizeof(float) * nw * S * D);
        model_layer_forward(a, s, l, nw, S);
        if (cb) cb(ctx, a, w0, nw);
        if (write_back) memcpy(x, a->x, sizeof(float) * nw * S * D);
    }
}

/* ---------------------------------------------------------------- prune */

typedef struct {
    const model_stage *s;
    dist_ctx *d;
    int S, want_h;
    double *wcolsq[MODEL_N_INPUTS]; /* (N, width) per-window column sums of squares */
    prune_stats hs[MODEL_N_INPUTS]; /* Hessians (SparseGPT) */
} stats_ctx;

static void stats_cb(void *vctx, model_acts *a, int w0, int nw)
{
    stats_ctx *c = vctx;
    model_layer_acts la = model_acts_layer(a, c->s, 0, a->B, a->T);
    for (int g = 0; g < MODEL_N_INPUTS; g++) {
        int W = model_input_width(&c->s->cfg, g);
        const float *in = model_layer_input(&la, g);
        for (int i = 0; i < nw; i++) {
            const float *x = in + (int64_t)i * c->S * W;
            double *cs = c->wcolsq[g] + (int64_t)calib_window_index(c->d, w0 + i) * W;
            for (int t = 0; t < c->S; t++)
                for (int j = 0; j < W; j++)
                    cs[j] += (double)x[(int64_t)t * W + j] * x[(int64_t)t * W + j];
        }
        if (c->want_h) prune_stats_accumulate(&c->hs[g], in, (int64_t)nw * c->S);
    }
}

typedef struct {
    const float *dense; /* (Nm,S,D) dense outputs of this layer */
    double *dd, *ee;
    int S, D;
} recon_ctx;

static void recon_cb(void *vctx, model_acts *a, int w0, int nw)
{
    recon_ctx *c = vctx;
    prune_recon_accumulate(c->dense + (int64_t)w0 * c->S * c->D, a->x, (int64_t)nw * c->S, c->D,
                           c->dd, c->ee);
}

void calib_result_free(calib_prune_result *r)
{
    if (!r) return;
    core_free(r->recon_err);
    core_free(r->sparsity);
    r->recon_err = r->sparsity = NULL;
}

/* Weights of the largest group of maps that read one input (q, k, v or
 * gate, up): the fp32 scratch a bf16 stage's group is widened into. */
static int64_t widest_group(const model_config *c)
{
    int64_t most = 0;
    for (int g = 0; g < MODEL_N_INPUTS; g++) {
        int64_t w = 0;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            if ((int)model_map_input(m) != g) continue;
            int o, i;
            model_map_shape(c, m, &o, &i);
            w += (int64_t)o * i;
        }
        if (w > most) most = w;
    }
    return most;
}

size_t calib_prune_widen_bytes(const model_config *c, model_dtype t)
{
    return t == MODEL_DTYPE_BF16 ? core_alloc_bytes((size_t)widest_group(c), sizeof(float)) : 0;
}

losa_status calib_prune_layer_maps(model_stage *s, int l, const prune_config *pc, double sp,
                                   const prune_input x[MODEL_N_INPUTS],
                                   const prune_sparsegpt_hooks *hk, prune_sparsegpt_timing *t,
                                   int64_t *raised)
{
    losa_status st = model_stage_require_plain(s, "pruning");
    int bf16 = s->dtype == MODEL_DTYPE_BF16;
    /* bf16: one group's maps widened (exactly) into this fp32 scratch,
     * pruned there, rounded back (calib_prune_widen_bytes) */
    float *wide = bf16 && st == LOSA_OK ? core_malloc((size_t)widest_group(&s->cfg), sizeof(float))
                                        : NULL;
    for (int g = 0; g < MODEL_N_INPUTS && st == LOSA_OK; g++) {
        float *W[MODEL_N_MAPS];
        int out[MODEL_N_MAPS], in[MODEL_N_MAPS], maps[MODEL_N_MAPS], n = 0, failed;
        int64_t off = 0;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            if ((int)model_map_input(m) != g) continue;
            model_map_shape(&s->cfg, m, &out[n], &in[n]);
            int64_t k = (int64_t)out[n] * in[n];
            if (bf16) {
                W[n] = wide + off;
                kern_bf16_to_f32(W[n], s->layers[l].wb[m], k);
                off += k;
            } else {
                W[n] = s->layers[l].w[m];
            }
            maps[n++] = m;
        }
        st = prune_group(pc, sp, W, out, n, &x[g], hk, t, &failed);
        for (int k = 0; bf16 && st == LOSA_OK && k < n; k++) {
            /* round to nearest even; a kept weight below bf16's range stays
             * non-zero (the zero set is the pruner's) and is counted */
            int64_t up = kern_bf16_from_f32_nz(s->layers[l].wb[maps[k]], W[k],
                                               (int64_t)out[k] * in[k]);
            if (up > 0)
                core_log("warning: pruning (bf16): layer %d %s: %lld kept weights below bf16's "
                         "smallest subnormal stored as +-2^-133 (not zero: the mask is exact)\n",
                         s->layer0 + l, model_map_name(maps[k]), (long long)up);
            if (raised) *raised += up;
        }
        if (st != LOSA_OK) {
            char msg[900];
            snprintf(msg, sizeof msg, "%s", core_errmsg());
            if (failed >= 0)
                core_err(st, "layer %d %s: %s", s->layer0 + l, model_map_name(maps[failed]), msg);
            else
                core_err(st, "layer %d: %s", s->layer0 + l, msg);
        }
    }
    core_free(wide);
    return st;
}

size_t calib_prune_layer_bytes(const model_config *c, const prune_config *pc, int P,
                               model_dtype t)
{
    size_t most = 0;
    for (int g = 0; g < MODEL_N_INPUTS; g++) {
        int in = model_input_width(c, g);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            if ((int)model_map_input(m) != g) continue;
            int o, i;
            model_map_shape(c, m, &o, &i);
            size_t b = pc->method == PRUNE_METHOD_SPARSEGPT
                           ? dist_sparsegpt_rows_bytes(o, in, pc->blocksize, P)
                           : prune_group_bytes(pc, &o, 1, in);
            if (b > most) most = b;
        }
        if (pc->method == PRUNE_METHOD_SPARSEGPT && dist_sparsegpt_hinv_bytes(in, P) > most)
            most = dist_sparsegpt_hinv_bytes(in, P);
    }
    return most + calib_prune_widen_bytes(c, t);
}

/* The sizes of one calib_prune_model call's buffers (prune_work). */
typedef struct {
    int Nm, chunk;             /* this replica's windows, windows per pass */
    int want_h, need_stats;    /* SparseGPT Hessians; column statistics (not magnitude) */
    size_t xn;                 /* floats of a stream (Nm,S,D) */
    size_t wtot;               /* the widths of the inputs added up */
    size_t wsum;               /* doubles of the per-window column sums of every input (N wtot) */
    int wmax;                  /* the widest input */
} prune_dims;

static prune_dims prune_dims_of(const model_config *c, int N, int Nm, int S, int chunk,
                                prune_method method)
{
    prune_dims p = {.Nm = Nm, .chunk = chunk > 0 ? chunk : 8,
                    .want_h = method == PRUNE_METHOD_SPARSEGPT,
                    .need_stats = method != PRUNE_METHOD_MAGNITUDE};
    if (p.chunk > Nm) p.chunk = Nm > 0 ? Nm : 1;
    p.xn = (size_t)(Nm > 0 ? Nm : 1) * S * c->dim;
    for (int g = 0; g < MODEL_N_INPUTS; g++) {
        int W = model_input_width(c, g);
        p.wtot += W;
        if (W > p.wmax) p.wmax = W;
    }
    p.wsum = (size_t)N * p.wtot;
    return p;
}

size_t calib_prune_bytes(const model_config *c, int n_layers, int N, int Nm, int S, int chunk,
                         const prune_config *pc, int have_ref, int P, model_dtype t)
{
    prune_dims p = prune_dims_of(c, N, Nm, S, chunk, pc->method);
    size_t b = model_acts_bytes(c, n_layers, 0, p.chunk, S, MODEL_ACTS_NOSAVE) +
               core_alloc_bytes(p.xn, sizeof(float)) * (have_ref ? 1 : 2) +
               core_alloc_bytes(p.wtot, sizeof(double)) +
               2 * core_alloc_bytes(c->dim, sizeof(double));
    if (p.need_stats) b += core_alloc_bytes(p.wsum, sizeof(double));
    if (p.want_h) {
        for (int g = 0; g < MODEL_N_INPUTS; g++) b += prune_stats_bytes(model_input_width(c, g), 1);
        b += core_alloc_bytes((size_t)p.wmax * p.wmax, sizeof(double)) +
             core_alloc_bytes(p.wmax, 1);
    }
    return b + calib_prune_layer_bytes(c, pc, P, t);
}

/* The buffers of one calib_prune_model call, sized once. */
typedef struct {
    prune_dims p;
    model_acts a;              /* (chunk, S) forward-only, no logits */
    int S;                     /* window length */
    float *Xp;                 /* (Nm,S,D) pruned stream */
    float *Xd;                 /* (Nm,S,D) dense stream, or NULL (reference given) */
    stats_ctx sc;
    double *wblock;            /* the per-window column sums of every input */
    double *colsq;             /* (sum of the widths) mean squares of every input */
    double *dd, *ee;           /* (D) reconstruction sums */
    double *hinv;              /* (wmax, wmax) SparseGPT inverse Hessian factor */
    unsigned char *dead;       /* (wmax) SparseGPT dead inputs */
} prune_work;

/* Everything but w->a (built first by the caller).  Returns the status of
 * the Hessian set-up; the buffers are complete either way. */
static losa_status prune_work_alloc(prune_work *w, dist_ctx *d, const model_stage *s, int N,
                                    int have_ref)
{
    const prune_dims *p = &w->p;
    int D = s->cfg.dim;
    losa_status st = LOSA_OK;
    w->Xp = core_calloc(p->xn, sizeof(float));
    w->Xd = have_ref ? NULL : core_calloc(p->xn, sizeof(float));
    w->sc = (stats_ctx){.s = s, .d = d, .S = w->S, .want_h = p->want_h};
    w->wblock = p->need_stats ? core_calloc(p->wsum, sizeof(double)) : NULL;
    size_t off = 0;
    for (int g = 0; g < MODEL_N_INPUTS && p->need_stats; g++) {
        int W = model_input_width(&s->cfg, g);
        w->sc.wcolsq[g] = w->wblock + off;
        off += (size_t)N * W;
        if (p->want_h && st == LOSA_OK) st = prune_stats_init(&w->sc.hs[g], W, 1);
    }
    w->colsq = core_calloc(p->wtot, sizeof(double));
    w->dd = core_calloc(D, sizeof(double));
    w->ee = core_calloc(D, sizeof(double));
    w->hinv = p->want_h ? core_calloc((size_t)p->wmax * p->wmax, sizeof(double)) : NULL;
    w->dead = p->want_h ? core_calloc(p->wmax, 1) : NULL;
    return st;
}

static void prune_work_free(prune_work *w)
{
    for (int g = 0; g < MODEL_N_INPUTS && w->p.want_h; g++) prune_stats_free(&w->sc.hs[g]);
    core_free(w->wblock);
    core_free(w->colsq);
    core_free(w->dd);
    core_free(w->ee);
    core_free(w->hinv);
    core_free(w->dead);
    core_free(w->Xp);
    core_free(w->Xd);
    model_acts_free(&w->a);
}

/* Prune the maps of layer l to sparsity sp from the statistics gathered in
 * w (all N windows): Wanda's column means from the per-window sums in window
 * order (layout independent), SparseGPT over the stage's replicas. */
static losa_status prune_layer_maps(prune_work *w, dist_ctx *d, model_stage *s, int l, int N,
                                    double sp, const calib_prune_opts *o, calib_prune_result *r)
{
    prune_input x[MODEL_N_INPUTS];
    double *colsq = w->colsq;
    for (int g = 0; g < MODEL_N_INPUTS; g++) {
        int W = model_input_width(&s->cfg, g);
        x[g] = (prune_input){.in = W, .colsq = colsq, .hinv = w->hinv, .dead = w->dead,
                             .H = w->p.want_h ? w->sc.hs[g].H : NULL};
        if (w->p.need_stats) {
            memset(colsq, 0, sizeof(double) * W);
            for (int k = 0; k < N; k++)
                for (int j = 0; j < W; j++) colsq[j] += w->sc.wcolsq[g][(int64_t)k * W + j];
            for (int j = 0; j < W; j++) colsq[j] /= (double)N * w->S;
        }
        colsq += W;
    }
    prune_sparsegpt_hooks hk = dist_sparsegpt_hooks(d);
    return calib_prune_layer_maps(s, l, &o->pc, sp, x, &hk, &r->sgpt, &r->bf16_raised);
}

/* Layer l: the dense stream's forward, the statistics of the pruned
 * stream's inputs (summed over the stage's replicas), the pruning, and the
 * pruned layer's forward with its reconstruction error against the dense
 * outputs.  The collectives run whatever the status. */
static losa_status prune_layer(prune_work *w, dist_ctx *d, model_stage *s, int l, int N,
                               const calib_prune_opts *o, const float *dense_out,
                               calib_prune_result *r)
{
    losa_status st = LOSA_OK;
    int gl = s->layer0 + l, D = s->cfg.dim, Nm = w->p.Nm, S = w->S, chunk = w->p.chunk;
    double sp = o->layer_sparsity ? o->layer_sparsity[gl] : o->pc.sparsity;
    const float *dense_l = dense_out ? dense_out + (int64_t)l * Nm * S * D
                           : o->dense_layer ? o->dense_layer(o->dense_ctx, l) : w->Xd;
    if (!dense_l)
        st = core_err(LOSA_ERR_IO, "layer %d: dense reference outputs unavailable: %s", gl,
                      core_errmsg());
    double t = core_time(), f0 = r->forward_s, s0 = r->stats_s, p0 = r->prune_s;
    prune_sparsegpt_timing g0 = r->sgpt;
    if (w->Xd) layer_pass(&w->a, s, l, w->Xd, Nm, S, chunk, NULL, NULL, 1);
    if (w->p.need_stats) {
        memset(w->wblock, 0, sizeof(double) * w->p.wsum);
        for (int g = 0; g < MODEL_N_INPUTS && w->p.want_h; g++) prune_stats_reset(&w->sc.hs[g]);
        layer_pass(&w->a, s, l, w->Xp, Nm, S, chunk, stats_cb, &w->sc, 0);
    }
    r->forward_s += core_time() - t;
    t = core_time();
    /* statistics of all windows: disjoint per-window rows -> exact sum */
    if (w->p.need_stats) {
        dist_sum_doubles_stage(d, w->wblock, w->p.wsum);
        for (int g = 0; g < MODEL_N_INPUTS && w->p.want_h; g++) {
            dist_sum_doubles_stage(d, w->sc.hs[g].raw, (size_t)w->sc.hs[g].n_raw);
            if (st == LOSA_OK) st = prune_stats_finalize(&w->sc.hs[g]);
        }
    }
    r->stats_s += core_time() - t;
    t = core_time();
    if (st == LOSA_OK) st = prune_layer_maps(w, d, s, l, N, sp, o, r);
    r->prune_s += core_time() - t;
    t = core_time();
    memset(w->dd, 0, sizeof(double) * D);
    memset(w->ee, 0, sizeof(double) * D);
    recon_ctx rc = {.dense = dense_l, .dd = w->dd, .ee = w->ee, .S = S, .D = D};
    if (st == LOSA_OK) layer_pass(&w->a, s, l, w->Xp, Nm, S, chunk, recon_cb, &rc, 1);
    dist_sum_doubles_stage(d, w->dd, D);
    dist_sum_doubles_stage(d, w->ee, D);
    r->forward_s += core_time() - t;
    if (dist_replica(d) == 0) {
        r->recon_err[gl] = prune_recon_combine(w->dd, w->ee, D);
        r->sparsity[gl] = calib_layer_sparsity(s, l);
    }
    core_log("  layer %2d: sparsity %.4f  reconstruction error %.4g  (rank 0: forward %.3f s, "
             "statistics %.3f s, pruning %.3f s", gl, r->sparsity[gl], r->recon_err[gl],
             r->forward_s - f0, r->stats_s - s0, r->prune_s - p0);
    if (r->sgpt.total_s > g0.total_s)
        core_log(": factorisations %.3f, masks %.3f, sweep %.3f, update %.3f s",
                 r->sgpt.hinv_s - g0.hinv_s, r->sgpt.mask_s - g0.mask_s,
                 r->sgpt.sweep_s - g0.sweep_s, r->sgpt.update_s - g0.update_s);
    core_log(")\n");
    return st;
}

losa_status calib_prune_model(dist_ctx *d, model_stage *s, const int *tokens, int N,
                              int S, const calib_prune_opts *o, const float *dense_out,
                              calib_prune_result *r)
{
    int L = s->cfg.n_layers;
    prune_work w = {.p = prune_dims_of(&s->cfg, N, calib_windows_mine(d, N), S, o->chunk,
                                       o->pc.method),
                    .S = S};
    int Nm = w.p.Nm;
    memset(r, 0, sizeof *r);
    r->recon_err = core_calloc(L, sizeof(double));
    r->sparsity = core_calloc(L, sizeof(double));
    double t_all = core_time();
    losa_status st = model_acts_build_layers(&w.a, s, w.p.chunk, S, 0);
    if (st != LOSA_OK) return st;
    st = prune_work_alloc(&w, d, s, N, dense_out || o->dense_layer);
    stream_in(d, s, w.Xp, tokens, Nm, S, 0, MODEL_STAGE_TAG_CALIB);
    if (w.Xd && s->has_embed) memcpy(w.Xd, w.Xp, sizeof(float) * w.p.xn);
    else if (w.Xd) stream_in(d, s, w.Xd, tokens, Nm, S, 0, MODEL_STAGE_TAG_CALIB_DENSE);
    for (int l = 0; l < s->n_layers && st == LOSA_OK; l++)
        st = prune_layer(&w, d, s, l, N, o, dense_out, r);
    /* a failing stage still forwards its stream so the pipeline drains */
    stream_out(d, s, w.Xp, Nm, S, MODEL_STAGE_TAG_CALIB);
    if (w.Xd) stream_out(d, s, w.Xd, Nm, S, MODEL_STAGE_TAG_CALIB_DENSE);
    st = dist_agree(d, st);
    dist_sum_doubles(d, r->recon_err, L);
    dist_sum_doubles(d, r->sparsity, L);
    double raised = dist_replica(d) == 0 ? (double)r->bf16_raised : 0; /* replicas agree */
    dist_sum_doubles(d, &raised, 1);
    r->bf16_raised = (int64_t)raised;
    prune_work_free(&w);
    r->total_s = core_time() - t_all;
    return st;
}

/* ---------------------------------------------------------------- dense */

/* Windows per forward chunk of a pass over n windows (at least 1). */
static int pass_chunk(int chunk, int n)
{
    if (chunk > n) chunk = n;
    return chunk < 1 ? 1 : chunk;
}

/* Floats of one layer's outputs over Nm windows (at least one window). */
static size_t stream_floats(const model_config *c, int Nm, int S)
{
    return (size_t)(Nm > 0 ? Nm : 1) * S * c->dim;
}

size_t calib_dense_stream_bytes(const model_config *c, int n_layers, int Nm, int S, int chunk)
{
    return model_acts_bytes(c, n_layers, 0, pass_chunk(chunk, Nm), S, MODEL_ACTS_NOSAVE) +
           core_alloc_bytes(stream_floats(c, Nm, S), sizeof(float));
}

size_t calib_dense_outputs_bytes(const model_config *c, int n_layers, int Nm, int S)
{
    return core_alloc_bytes(stream_floats(c, Nm, S) * (n_layers > 0 ? n_layers : 1),
                            sizeof(float));
}

losa_status calib_dense_stream(dist_ctx *d, const model_stage *s, const int *tokens, int N,
                               int S, int chunk, calib_layer_sink sink, void *ctx)
{
    int Nm = calib_windows_mine(d, N);
    size_t per = stream_floats(&s->cfg, Nm, S);
    chunk = pass_chunk(chunk, Nm);
    model_acts a;
    losa_status st = model_acts_build_layers(&a, s, chunk, S, 0);
    if (st != LOSA_OK) return st;
    float *X = core_calloc(per, sizeof(float));
    stream_in(d, s, X, tokens, Nm, S, 0, MODEL_STAGE_TAG_CALIB);
    for (int l = 0; l < s->n_layers; l++) {
        layer_pass(&a, s, l, X, Nm, S, chunk, NULL, NULL, 1);
        if (st == LOSA_OK) st = sink(ctx, l, X);
    }
    stream_out(d, s, X, Nm, S, MODEL_STAGE_TAG_CALIB);
    core_free(X);
    model_acts_free(&a);
    return st;
}

typedef struct {
    float *out;
    int64_t per;
} mem_sink;

static losa_status to_memory(void *ctx, int l, const float *X)
{
    mem_sink *m = ctx;
    memcpy(m->out + (int64_t)l * m->per, X, sizeof(float) * m->per);
    return LOSA_OK;
}

losa_status calib_dense_outputs(dist_ctx *d, const model_stage *s, const int *tokens,
                                int N, int S, int chunk, float **out)
{
    int Nm = calib_windows_mine(d, N);
    mem_sink m = {.per = (int64_t)stream_floats(&s->cfg, Nm, S)};
    m.out = core_calloc(m.per * (s->n_layers > 0 ? s->n_layers : 1), sizeof(float));
    *out = m.out;
    return calib_dense_stream(d, s, tokens, N, S, chunk, to_memory, &m);
}

/* ---------------------------------------------------------------- grams */

void calib_centred_gram(double *G, const float *X, int n, int64_t m, float *tmp)
{
    /* X X^T on the calling thread: the product is tiny next to the layer
     * forwards around it (n x n outputs), and OpenBLAS's pthreads pool,
     * woken between the OpenMP forwards, kept spinning after the call and
     * took the cores from the next layer's threads (the grams pass several
     * times slower with 2 threads than with 1).  One thread also makes
     * the Gram independent of OPENBLAS_NUM_THREADS (OpenBLAS splits a long
     * K over its threads: other roundings), so a 1-rank run and a 2-rank
     * run, one thread a rank, agree bit for bit. */
    int nt = openblas_get_num_threads(), ont = omp_get_max_threads();
    openblas_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, (int)m, 1.0f, X, (int)m, X,
                (int)m, 0.0f, tmp, n);
    openblas_set_num_threads(nt);
    omp_set_num_threads(ont); /* an OpenMP-built OpenBLAS sets OpenMP's count too */
    double *rm = core_calloc(n, sizeof(double)), all = 0;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) rm[i] += tmp[i * n + j];
        rm[i] /= n;
        all += rm[i];
    }
    all /= n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) G[i * n + j] = tmp[i * n + j] - rm[i] - rm[j] + all;
    core_free(rm);
}

size_t calib_layer_grams_bytes(const model_config *c, int n_layers, int N, int S, int chunk)
{
    return model_acts_bytes(c, n_layers, 0, pass_chunk(chunk, N), S, MODEL_ACTS_NOSAVE) +
           core_alloc_bytes(stream_floats(c, N, S), sizeof(float)) +
           core_alloc_bytes((size_t)N * N, sizeof(float)) + core_alloc_bytes(N, sizeof(double));
}

losa_status calib_layer_grams(dist_ctx *d, const model_stage *s, const int *tokens, int N,
                              int S, int chunk, double *grams)
{
    int L = s->cfg.n_layers;
    int64_t D = s->cfg.dim, m = (int64_t)S * D;
    if (m > 2147483647LL) return core_err(LOSA_ERR_ARG, "gram: S*D %lld too large", (long long)m);
    chunk = pass_chunk(chunk, N);
    model_acts a;
    losa_status st = model_acts_build_layers(&a, s, chunk, S, 0);
    if (st != LOSA_OK) return st;
    float *X = core_calloc(stream_floats(&s->cfg, N, S), sizeof(float));
    float *tmp = core_calloc((size_t)N * N, sizeof(float));
    memset(grams, 0, sizeof(double) * (size_t)(L + 1) * N * N);
    int mine = dist_replica(d) == 0;
    /* every replica streams all windows (the pass is small: rmi_n windows) */
    stream_in(d, s, X, tokens, N, S, 1, MODEL_STAGE_TAG_CALIB);
    for (int l = 0; l < s->n_layers; l++) {
        if (mine) calib_centred_gram(grams + (int64_t)(s->layer0 + l) * N * N, X, N, m, tmp);
        layer_pass(&a, s, l, X, N, S, chunk, NULL, NULL, 1);
    }
    if (s->has_head && mine) calib_centred_gram(grams + (int64_t)L * N * N, X, N, m, tmp);
    stream_out(d, s, X, N, S, MODEL_STAGE_TAG_CALIB);
    dist_sum_doubles(d, grams, (L + 1) * N * N);
    core_free(X);
    core_free(tmp);
    model_acts_free(&a);
    return LOSA_OK;
}
