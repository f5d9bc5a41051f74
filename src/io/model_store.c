/* io model store: the model layout of include/io.h on the HDF5 layer
 * (h5.c): the configuration as root attributes, a stage's tensors, the
 * tokenizer. */
#include "io_h5.h"
#include "io_internal.h"
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

/* 1: every weight fp32; 2: bf16 tensors possible (root attribute dtype, see
 * include/io.h).  A store with no bf16 tensor is still written as version 1,
 * so older builds keep reading fp32 stores; they refuse a bf16 one by its
 * version instead of failing on a dataset type. */
#define IO_FORMAT_VERSION 1
#define IO_FORMAT_VERSION_BF16 2

void io_layer_name(char *buf, size_t n, int layer, const char *what)
{
    snprintf(buf, n, "/layers/%d/%s", layer, what);
}

/* ---- config ----------------------------------------------------------------- */

losa_status io_store_write_config(io_store *st, const model_config *c,
                                  const char *source)
{
    LOSA_CHECK(st->writable);
    hid_t root = H5Gopen2(st->file, "/", H5P_DEFAULT);
    losa_status s = LOSA_OK;
    const struct { const char *k; int v; } ints[] = {
        {"format_version", IO_FORMAT_VERSION}, {"dim", c->dim},
        {"hidden_dim", c->hidden_dim}, {"n_layers", c->n_layers},
        {"n_heads", c->n_heads}, {"n_kv_heads", c->n_kv_heads},
        {"vocab_size", c->vocab_size}, {"max_seq_len", c->max_seq_len},
        {"tie_embeddings", c->tie_embeddings}, {"bos_id", c->bos_id},
        {"eos_id", c->eos_id},
    };
    for (size_t i = 0; s == LOSA_OK && i < sizeof ints / sizeof ints[0]; i++)
        s = io_attr_write_int(st, root, ints[i].k, ints[i].v);
    if (s == LOSA_OK)
        s = io_attr_write_double(st, root, "rms_eps", io_float_shortest(c->rms_eps));
    if (s == LOSA_OK)
        s = io_attr_write_double(st, root, "rope_theta", io_float_shortest(c->rope_theta));
    if (s == LOSA_OK) s = io_attr_write_str(st, root, "source", source ? source : "");
    H5Gclose(root);
    return s;
}

losa_status io_store_read_config(io_store *st, model_config *c)
{
    memset(c, 0, sizeof *c);
    hid_t root = H5Gopen2(st->file, "/", H5P_DEFAULT);
    int ver = 0;
    losa_status s = io_attr_read_int(st, root, "/", "format_version", &ver);
    if (s == LOSA_OK && ver != IO_FORMAT_VERSION && ver != IO_FORMAT_VERSION_BF16)
        s = core_err(LOSA_ERR_UNSUPPORTED, "%s: format_version %d (this build reads %d and %d)",
                     st->path, ver, IO_FORMAT_VERSION, IO_FORMAT_VERSION_BF16);
    struct { const char *k; int *v; } ints[] = {
        {"dim", &c->dim}, {"hidden_dim", &c->hidden_dim},
        {"n_layers", &c->n_layers}, {"n_heads", &c->n_heads},
        {"n_kv_heads", &c->n_kv_heads}, {"vocab_size", &c->vocab_size},
        {"max_seq_len", &c->max_seq_len}, {"tie_embeddings", &c->tie_embeddings},
        {"bos_id", &c->bos_id}, {"eos_id", &c->eos_id},
    };
    for (size_t i = 0; s == LOSA_OK && i < sizeof ints / sizeof ints[0]; i++)
        s = io_attr_read_int(st, root, "/", ints[i].k, ints[i].v);
    double eps = 0, theta = 0;
    if (s == LOSA_OK) s = io_attr_read(st, root, "/", "rms_eps", H5T_NATIVE_DOUBLE, &eps);
    if (s == LOSA_OK)
        s = io_attr_read(st, root, "/", "rope_theta", H5T_NATIVE_DOUBLE, &theta);
    H5Gclose(root);
    if (s != LOSA_OK) return s;
    c->rms_eps = (float)eps;
    c->rope_theta = (float)theta;
    return io_config_check(c, st->path);
}

/* ---- dtype ------------------------------------------------------------------ */

losa_status io_store_write_dtype(io_store *st, model_dtype t)
{
    LOSA_CHECK(st->writable);
    hid_t root = H5Gopen2(st->file, "/", H5P_DEFAULT);
    losa_status s = io_attr_write_str(st, root, "dtype", model_dtype_name(t));
    if (s == LOSA_OK && t == MODEL_DTYPE_BF16)
        s = io_attr_write_int(st, root, "format_version", IO_FORMAT_VERSION_BF16);
    H5Gclose(root);
    return s;
}

losa_status io_store_read_dtype(io_store *st, model_dtype *t)
{
    *t = MODEL_DTYPE_F32;
    hid_t root = H5Gopen2(st->file, "/", H5P_DEFAULT);
    losa_status s = LOSA_OK;
    if (H5Aexists(root, "dtype") > 0) {
        char *v = NULL;
        s = io_attr_read_str(st, root, "/", "dtype", &v);
        if (s == LOSA_OK && !strcmp(v, "bf16")) *t = MODEL_DTYPE_BF16;
        else if (s == LOSA_OK && strcmp(v, "fp32"))
            s = core_err(LOSA_ERR_FORMAT, "%s: root attribute dtype: '%s' (expected fp32 or "
                         "bf16)", st->path, v);
        free(v);
    }
    H5Gclose(root);
    return s;
}

/* ---- stages ----------------------------------------------------------------- */

/* One tensor of a stage: fp32 (x) or, for the maps and head of a bf16
 * stage, bf16 (xb, x NULL). */
typedef struct {
    const char *name;
    float *x;
    uint16_t *xb;
    int ndim;
    const int64_t *shape;
} io_stage_tensor;

/* Visit every tensor the stage owns. */
typedef losa_status (*io_tensor_fn)(io_store *st, const io_stage_tensor *t, void *ctx);

static losa_status io_stage_visit(io_store *st, const model_stage *s, io_tensor_fn fn, void *ctx)
{
    const model_config *c = &s->cfg;
    int64_t V = c->vocab_size, D = c->dim;
    losa_status r = LOSA_OK;
    int64_t vd[2] = {V, D}, d1[1] = {D};
    if (s->has_embed || (s->has_head && c->tie_embeddings)) {
        LOSA_CHECK(s->embed != NULL);
        r = fn(st, &(io_stage_tensor){"/embed", s->embed, NULL, 2, vd}, ctx);
    }
    char name[256];
    for (int l = 0; r == LOSA_OK && l < s->n_layers; l++) {
        const model_layer *ly = &s->layers[l];
        int g = s->layer0 + l;
        io_layer_name(name, sizeof name, g, "attn_norm");
        r = fn(st, &(io_stage_tensor){name, ly->attn_norm, NULL, 1, d1}, ctx);
        for (int m = 0; r == LOSA_OK && m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            int64_t sh[2] = {o, i};
            io_layer_name(name, sizeof name, g, model_map_name((model_map)m));
            LOSA_CHECK((ly->w[m] != NULL) != (ly->wb[m] != NULL));
            r = fn(st, &(io_stage_tensor){name, ly->w[m], ly->wb[m], 2, sh}, ctx);
        }
        if (r == LOSA_OK) {
            io_layer_name(name, sizeof name, g, "ffn_norm");
            r = fn(st, &(io_stage_tensor){name, ly->ffn_norm, NULL, 1, d1}, ctx);
        }
    }
    if (r == LOSA_OK && s->has_head) {
        r = fn(st, &(io_stage_tensor){"/final_norm", s->final_norm, NULL, 1, d1}, ctx);
        if (r == LOSA_OK && !c->tie_embeddings) {
            LOSA_CHECK((s->head != NULL) != (s->head_bf16 != NULL));
            r = fn(st, &(io_stage_tensor){"/head", s->head, s->head_bf16, 2, vd}, ctx);
        }
    }
    return r;
}

/* ctx: the stage.  A bf16 stage's fp32 matrices (the embedding; the head
 * of model_stage_to_bf16_maps) are written in bf16 when every value is a
 * bf16 value (lossless: they were read from a bf16 store), so a bf16 store
 * pruned in bf16 keeps its size; norms (1-D) stay fp32. */
static losa_status io_write_fn(io_store *st, const io_stage_tensor *t, void *ctx)
{
    const model_stage *s = ctx;
    if (t->xb) return io_store_write_tensor_bf16(st, t->name, t->xb, t->ndim, t->shape);
    if (s->dtype == MODEL_DTYPE_BF16 && t->ndim == 2) {
        int64_t n = t->shape[0] * t->shape[1], e = 0;
        uint16_t *b = core_malloc((size_t)n, sizeof(uint16_t)); /* one matrix */
        for (; e < n; e++) {
            b[e] = kern_bf16_round(t->x[e]);
            if (!(kern_bf16_value(b[e]) == t->x[e])) break; /* not bf16 (or NaN): fp32 */
        }
        losa_status r = e == n ? io_store_write_tensor_bf16(st, t->name, b, t->ndim, t->shape)
                               : LOSA_ERR_ARG;
        core_free(b);
        if (e == n) return r;
    }
    return io_store_write_tensor(st, t->name, t->x, t->ndim, t->shape);
}

/* fp32 slots take either stored dtype (bf16 widens exactly); a bf16 slot
 * (a map or the head of a bf16 stage) takes bf16 data as is and rounds fp32 data to
 * nearest even (kern_bf16_from_f32, as model_stage_to_bf16), counting the
 * non-zeros that became zero into *(int64_t *)ctx. */
static losa_status io_read_fn(io_store *st, const io_stage_tensor *t, void *ctx)
{
    if (!t->xb) return io_store_read_tensor(st, t->name, t->x, t->ndim, t->shape);
    model_dtype dt = MODEL_DTYPE_F32;
    losa_status s = io_store_tensor_dtype(st, t->name, &dt);
    if (s != LOSA_OK) return s;
    if (dt == MODEL_DTYPE_BF16) return io_store_read_tensor_bf16(st, t->name, t->xb, t->ndim, t->shape);
    int64_t n = t->shape[0] * t->shape[1];
    float *x = core_malloc((size_t)n, sizeof(float)); /* one map */
    s = io_store_read_tensor(st, t->name, x, t->ndim, t->shape);
    if (s == LOSA_OK) *(int64_t *)ctx += kern_bf16_from_f32(t->xb, x, n);
    core_free(x);
    return s;
}

losa_status io_store_read_stage_lost(io_store *st, model_stage *s, int64_t *n_lost)
{
    int64_t lost = 0;
    losa_status r = model_stage_require_plain(s, "store read");
    if (r == LOSA_OK) r = io_stage_visit(st, s, io_read_fn, &lost);
    /* a tied head held in bf16: the rows are the embedding rounded (as
     * model_stage_to_bf16 rounds it), the embedding stays fp32 */
    if (r == LOSA_OK && s->has_head && s->head_bf16 && s->cfg.tie_embeddings)
        lost += kern_bf16_from_f32(s->head_bf16, s->embed,
                                   (int64_t)s->cfg.vocab_size * s->cfg.dim);
    if (n_lost) *n_lost = lost;
    return r;
}

losa_status io_store_read_stage(io_store *st, model_stage *s)
{
    int64_t lost = 0;
    losa_status r = io_store_read_stage_lost(st, s, &lost);
    if (r == LOSA_OK && lost > 0)
        core_log("warning: %s: %lld non-zero map or head weights of stage %d rounded to zero in "
                 "bf16\n",
                 st->path, (long long)lost, s->stage);
    return r;
}

losa_status io_store_write_stage(io_store *st, const model_stage *s)
{
    losa_status r = model_stage_require_plain(s, "store write");
    if (r == LOSA_OK) r = io_stage_visit(st, s, io_write_fn, (void *)s);
    return r != LOSA_OK ? r : io_store_write_dtype(st, s->dtype);
}

/* ---- tokenizer -------------------------------------------------------------- */

losa_status io_store_write_tokenizer(io_store *st, const tok_tokenizer *t)
{
    LOSA_CHECK(st->writable);
    LOSA_CHECK(t->n_vocab > 0 && t->offsets && t->scores);
    hid_t g = io_group_open(st, "/tokenizer", 1);
    if (g < 0) return core_err(LOSA_ERR_IO, "%s: cannot create group /tokenizer", st->tmp);
    const struct { const char *k; int v; } ints[] = {
        {"kind", t->kind}, {"n_vocab", t->n_vocab}, {"bos_id", t->bos_id},
        {"eos_id", t->eos_id}, {"unk_id", t->unk_id},
        {"byte_fallback", t->byte_fallback}, {"add_dummy_prefix", t->add_dummy_prefix},
    };
    losa_status s = LOSA_OK;
    for (size_t i = 0; s == LOSA_OK && i < sizeof ints / sizeof ints[0]; i++)
        s = io_attr_write_int(st, g, ints[i].k, ints[i].v);
    H5Oclose(g);
    int64_t V = t->n_vocab, nb = t->offsets[V], v1 = V + 1;
    if (s == LOSA_OK)
        s = io_write_dataset(st, "/tokenizer/blob", H5T_STD_U8LE, H5T_NATIVE_UINT8,
                             nb ? (const void *)t->blob : (const void *)"", 1, &nb);
    if (s == LOSA_OK)
        s = io_write_dataset(st, "/tokenizer/offsets", H5T_STD_I64LE, H5T_NATIVE_INT64,
                             t->offsets, 1, &v1);
    if (s == LOSA_OK)
        s = io_write_dataset(st, "/tokenizer/scores", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                             t->scores, 1, &V);
    if (s == LOSA_OK && t->n_merges > 0) {
        int64_t sh[2] = {t->n_merges, 2};
        s = io_write_dataset(st, "/tokenizer/merges", H5T_STD_I32LE, H5T_NATIVE_INT32,
                             t->merges, 2, sh);
    }
    return s;
}

losa_status io_store_read_tokenizer(io_store *st, tok_tokenizer *t)
{
    memset(t, 0, sizeof *t);
    hid_t g = io_group_open(st, "/tokenizer", 0);
    if (g < 0) return core_err(LOSA_ERR_FORMAT, "%s: group /tokenizer is missing", st->path);
    struct { const char *k; int *v; } ints[] = {
        {"kind", &t->kind}, {"n_vocab", &t->n_vocab}, {"bos_id", &t->bos_id},
        {"eos_id", &t->eos_id}, {"unk_id", &t->unk_id},
        {"byte_fallback", &t->byte_fallback}, {"add_dummy_prefix", &t->add_dummy_prefix},
    };
    losa_status s = LOSA_OK;
    for (size_t i = 0; s == LOSA_OK && i < sizeof ints / sizeof ints[0]; i++)
        s = io_attr_read_int(st, g, "/tokenizer", ints[i].k, ints[i].v);
    H5Oclose(g);
    if (s != LOSA_OK) return s;
    if (t->n_vocab <= 0 || (t->kind != TOK_KIND_MERGES && t->kind != TOK_KIND_SCORES))
        return core_err(LOSA_ERR_FORMAT, "%s: /tokenizer: kind %d / n_vocab %d invalid",
                        st->path, t->kind, t->n_vocab);
    int64_t V = t->n_vocab, v1 = V + 1;
    t->offsets = core_calloc((size_t)v1, sizeof(int64_t));
    t->scores = core_calloc((size_t)V, sizeof(float));
    s = io_read_dataset(st, "/tokenizer/offsets", H5T_INTEGER, H5T_NATIVE_INT64,
                        t->offsets, 1, &v1);
    if (s == LOSA_OK)
        s = io_read_dataset(st, "/tokenizer/scores", H5T_FLOAT, H5T_NATIVE_FLOAT,
                            t->scores, 1, &V);
    if (s == LOSA_OK) {
        int ok = t->offsets[0] == 0;
        for (int64_t i = 0; ok && i < V; i++) ok = t->offsets[i + 1] >= t->offsets[i];
        if (!ok)
            s = core_err(LOSA_ERR_FORMAT,
                         "%s: dataset /tokenizer/offsets: not a non-decreasing list from 0",
                         st->path);
    }
    if (s == LOSA_OK) {
        int64_t nb = t->offsets[V];
        t->blob = core_calloc((size_t)nb + 1, 1);
        s = io_read_dataset(st, "/tokenizer/blob", H5T_INTEGER, H5T_NATIVE_UINT8,
                            t->blob, 1, &nb);
    }
    if (s == LOSA_OK && io_path_exists(st->file, "/tokenizer/merges")) {
        int nd = 0;
        int64_t sh[IO_MAX_DIMS];
        s = io_store_tensor_shape(st, "/tokenizer/merges", &nd, sh);
        if (s == LOSA_OK && (nd != 2 || sh[1] != 2 || sh[0] > INT32_MAX))
            s = core_err(LOSA_ERR_FORMAT, "%s: dataset /tokenizer/merges: expected (n, 2)",
                         st->path);
        if (s == LOSA_OK) {
            t->n_merges = (int)sh[0];
            t->merges = core_calloc((size_t)sh[0] * 2, sizeof(int32_t));
            s = io_read_dataset(st, "/tokenizer/merges", H5T_INTEGER, H5T_NATIVE_INT32,
                                t->merges, 2, sh);
        }
        for (int64_t i = 0; s == LOSA_OK && i < 2 * (int64_t)t->n_merges; i++)
            if (t->merges[i] < 0 || t->merges[i] >= t->n_vocab)
                s = core_err(LOSA_ERR_FORMAT,
                             "%s: dataset /tokenizer/merges: id %d outside vocab %d",
                             st->path, t->merges[i], t->n_vocab);
    }
    if (s == LOSA_OK) s = tok_build(t);
    if (s != LOSA_OK) tok_free(t);
    return s;
}
