/* Sparse copies kept in a store (io_store_write_sparse / io_store_read_sparse,
 * io_store_copy, model_sparse_build_from):
 *  - a matrix read back equals sparse_matrix_from_dense of the same weights
 *    field by field and byte by byte, for bitmap, bitmap-bf16, CSR with
 *    uint16 and uint32 indices, empty rows, full rows, 2:4 (in the bitmap
 *    formats and the 2:4 format, widths 64 and 36), nnz = 0, widths not a
 *    multiple of 16;
 *  - corrupted groups (bitmap bits vs rowptr, a bit past the last column,
 *    decreasing rowptr, CSR column out of range, wrong dataset length, bad
 *    format name, missing group) are refused with LOSA_ERR_FORMAT;
 *  - io_store_copy copies root attributes and groups and skips the one named;
 *  - model_sparse_build_from with a source holding every map gives the same
 *    matrices as model_sparse_build and counts them loaded; a stale copy
 *    (other weights) is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "model.h"
#include "sparse.h"
#include "test_util.h"

static char tmpdir[2048];

/* W (out, in) random with the given fraction of zeros; row 0 empty and
 * row 1 full when out >= 3; nm: prune every group of 4 to 2 non-zeros. */
static void make_weights(float *W, int out, int in, double zeros, int nm, uint64_t seed)
{
    core_rng r;
    core_rng_seed(&r, seed);
    for (int64_t k = 0; k < (int64_t)out * in; k++) {
        float v = (float)(core_rng_uniform(&r) * 2.0 - 1.0);
        W[k] = core_rng_uniform(&r) < zeros ? 0.0f : (v == 0.0f ? 0.5f : v);
    }
    if (nm)
        for (int64_t o = 0; o < out; o++)
            for (int g = 0; g + 4 <= in; g += 4) {
                W[o * in + g + 1] = 0.0f;
                W[o * in + g + 3] = 0.0f;
            }
    if (out >= 3 && !nm) {
        for (int i = 0; i < in; i++) W[i] = 0.0f;
        for (int i = 0; i < in; i++) W[in + i] = 0.25f + (float)i;
    }
}

/* 1 if a and b are equal field by field and array by array. */
static int same_matrix(const sparse_matrix *a, const sparse_matrix *b)
{
    if (a->fmt != b->fmt || a->out != b->out || a->in != b->in || a->nw != b->nw ||
        a->nm_n != b->nm_n || a->nm_m != b->nm_m || a->nnz != b->nnz)
        return 0;
    size_t nnz = (size_t)a->nnz;
    if (memcmp(a->rowptr, b->rowptr, ((size_t)a->out + 1) * sizeof(int64_t))) return 0;
    size_t vb = a->fmt == SPARSE_FORMAT_BITMAP_BF16 ? 2 : 4;
    if (sparse_matrix_nvals(a) != sparse_matrix_nvals(b) ||
        memcmp(a->vals, b->vals, (size_t)sparse_matrix_nvals(a) * vb))
        return 0;
    if (!a->mask != !b->mask || !a->idx16 != !b->idx16 || !a->idx32 != !b->idx32) return 0;
    if (a->mask && memcmp(a->mask, b->mask, (size_t)a->out * a->nw * 2)) return 0;
    if (a->idx16 && memcmp(a->idx16, b->idx16, nnz * 2)) return 0;
    if (a->idx32 && memcmp(a->idx32, b->idx32, nnz * 4)) return 0;
    return 1;
}

/* The 2:4 format: written, read back equal, the same matvec. */
static void test_roundtrip_nm(void)
{
    static const int shapes[][2] = {{16, 64}, {5, 36}};
    char path[2200], name[64];
    snprintf(path, sizeof path, "%s/rt_nm.h5", tmpdir);
    sparse_matrix ref[2];
    io_store *st = NULL;
    TEST_CHECK(io_store_create(&st, path) == LOSA_OK, "create %s", path);
    for (int k = 0; k < 2; k++) {
        int out = shapes[k][0], in = shapes[k][1];
        float *W = malloc(sizeof(float) * (size_t)out * in);
        make_weights(W, out, in, 0.3, 1, 200 + k);
        TEST_CHECK(sparse_matrix_from_dense(&ref[k], W, out, in, SPARSE_FORMAT_NM24) == LOSA_OK,
                   "from_dense 2:4 %dx%d: %s", out, in, core_errmsg());
        snprintf(name, sizeof name, "/sparse/layers/%d/nm", k);
        TEST_CHECK(io_store_write_sparse(st, name, &ref[k]) == LOSA_OK, "write %s", name);
        free(W);
    }
    TEST_CHECK(io_store_commit(&st) == LOSA_OK, "commit");
    TEST_CHECK(io_store_open(&st, path) == LOSA_OK, "open");
    for (int k = 0; k < 2; k++) {
        sparse_matrix got;
        snprintf(name, sizeof name, "/sparse/layers/%d/nm", k);
        losa_status s = io_store_read_sparse(st, name, &got);
        TEST_CHECK(s == LOSA_OK, "read %s: %s", name, core_errmsg());
        if (s != LOSA_OK) continue;
        TEST_CHECK(got.fmt == SPARSE_FORMAT_NM24 && same_matrix(&got, &ref[k]),
                   "%s (2:4) equals from_dense", name);
        int out = shapes[k][0], in = shapes[k][1];
        float *x = malloc(sizeof(float) * in), *y0 = malloc(sizeof(float) * out);
        float *y1 = malloc(sizeof(float) * out);
        for (int i = 0; i < in; i++) x[i] = (float)((i * 37) % 11) - 5.0f;
        sparse_matvec(y0, &ref[k], x);
        sparse_matvec(y1, &got, x);
        TEST_CHECK(!memcmp(y0, y1, sizeof(float) * out), "%s matvec identical", name);
        free(x);
        free(y0);
        free(y1);
        sparse_matrix_free(&got);
        sparse_matrix_free(&ref[k]);
    }
    io_store_close(&st);
}

static void test_roundtrip(void)
{
    static const struct { int out, in; double zeros; int nm; } shapes[] = {
        {7, 20, 0.7, 0}, {16, 64, 0.5, 1}, {33, 129, 0.9, 0}, {2, 48, 1.0, 0},
        {3, 70000, 0.95, 0}, {9, 16, 0.0, 0},
    };
    const int ns = (int)(sizeof shapes / sizeof shapes[0]);
    const sparse_format fmts[] = {SPARSE_FORMAT_BITMAP, SPARSE_FORMAT_BITMAP_BF16,
                                  SPARSE_FORMAT_CSR};
    char path[2200], name[64];
    snprintf(path, sizeof path, "%s/rt.h5", tmpdir);
    sparse_matrix ref[6][3];
    io_store *st = NULL;
    TEST_CHECK(io_store_create(&st, path) == LOSA_OK, "create %s", path);
    for (int k = 0; k < ns; k++) {
        int out = shapes[k].out, in = shapes[k].in;
        float *W = malloc(sizeof(float) * (size_t)out * in);
        make_weights(W, out, in, shapes[k].zeros, shapes[k].nm, 100 + k);
        for (int f = 0; f < 3; f++) {
            TEST_CHECK(sparse_matrix_from_dense(&ref[k][f], W, out, in, fmts[f]) == LOSA_OK,
                       "from_dense %d %d", k, f);
            snprintf(name, sizeof name, "/sparse/layers/%d/%s", k, sparse_format_name(fmts[f]));
            TEST_CHECK(io_store_write_sparse(st, name, &ref[k][f]) == LOSA_OK, "write %s", name);
        }
        free(W);
    }
    /* rewriting a group in another format replaces it (no stale datasets) */
    TEST_CHECK(io_store_write_sparse(st, "/sparse/re", &ref[0][2]) == LOSA_OK, "write re csr");
    TEST_CHECK(io_store_write_sparse(st, "/sparse/re", &ref[0][0]) == LOSA_OK, "write re bitmap");
    TEST_CHECK(io_store_commit(&st) == LOSA_OK, "commit");
    TEST_CHECK(ref[1][0].nm_n == 2 && ref[1][0].nm_m == 4, "2:4 detected (%d:%d)",
               ref[1][0].nm_n, ref[1][0].nm_m);
    TEST_CHECK(ref[3][0].nnz == 0 && ref[4][2].idx32 && ref[0][2].idx16, "cases covered");

    TEST_CHECK(io_store_open(&st, path) == LOSA_OK, "open");
    for (int k = 0; k < ns; k++)
        for (int f = 0; f < 3; f++) {
            sparse_matrix got;
            snprintf(name, sizeof name, "/sparse/layers/%d/%s", k, sparse_format_name(fmts[f]));
            losa_status s = io_store_read_sparse(st, name, &got);
            TEST_CHECK(s == LOSA_OK, "read %s: %s", name, core_errmsg());
            if (s != LOSA_OK) continue;
            TEST_CHECK(same_matrix(&got, &ref[k][f]), "%s equals from_dense (%dx%d %s)", name,
                       shapes[k].out, shapes[k].in, sparse_format_name(fmts[f]));
            /* and computes the same: the kernels read every array */
            float *x = malloc(sizeof(float) * shapes[k].in);
            float *y0 = malloc(sizeof(float) * shapes[k].out);
            float *y1 = malloc(sizeof(float) * shapes[k].out);
            for (int i = 0; i < shapes[k].in; i++) x[i] = (float)((i * 37) % 11) - 5.0f;
            sparse_matvec(y0, &ref[k][f], x);
            sparse_matvec(y1, &got, x);
            TEST_CHECK(!memcmp(y0, y1, sizeof(float) * shapes[k].out), "%s matvec identical", name);
            free(x);
            free(y0);
            free(y1);
            sparse_matrix_free(&got);
        }
    sparse_matrix got;
    TEST_CHECK(io_store_read_sparse(st, "/sparse/re", &got) == LOSA_OK &&
                   same_matrix(&got, &ref[0][0]),
               "rewritten group holds the last matrix");
    sparse_matrix_free(&got);
    TEST_CHECK(!io_store_has(st, "/sparse/re/idx"), "no stale idx after rewrite");
    io_store_close(&st);
    for (int k = 0; k < ns; k++)
        for (int f = 0; f < 3; f++) sparse_matrix_free(&ref[k][f]);
    test_roundtrip_nm();
}

/* Each case writes a good group and then damages it. */
static void test_corrupt(void)
{
    char path[2200];
    snprintf(path, sizeof path, "%s/bad.h5", tmpdir);
    float W[7 * 20];
    make_weights(W, 7, 20, 0.6, 0, 7);
    sparse_matrix bm, csr;
    sparse_matrix_from_dense(&bm, W, 7, 20, SPARSE_FORMAT_BITMAP);
    sparse_matrix_from_dense(&csr, W, 7, 20, SPARSE_FORMAT_CSR);
    io_store *st = NULL;
    TEST_CHECK(io_store_create(&st, path) == LOSA_OK, "create");
    int mask[7 * 2], rp[8], idx[200];
    int64_t msh[2] = {7, 2}, r8 = 8, nnz = csr.nnz;
    /* 1: one more bit in row 2 than rowptr counts (bit 0 of row 2 is free?) */
    io_store_write_sparse(st, "/b1", &bm);
    for (int k = 0; k < 14; k++) mask[k] = bm.mask[k];
    int row = 2, bit = 0;
    while (mask[row * 2] >> bit & 1) bit++;
    mask[row * 2] |= 1 << bit;
    io_store_write_ints(st, "/b1/mask", mask, 2, msh);
    /* 2: a bit past column 19 (word 1 bit 4+) with a bit of row 2 removed so
     * that the counts still agree */
    io_store_write_sparse(st, "/b2", &bm);
    for (int k = 0; k < 14; k++) mask[k] = bm.mask[k];
    for (row = 2; row < 7 && !bm.mask[row * 2]; row++) {}
    for (bit = 0; !(mask[row * 2] >> bit & 1); bit++) {}
    mask[row * 2] &= ~(1 << bit);
    mask[row * 2 + 1] |= 1 << 6;
    io_store_write_ints(st, "/b2/mask", mask, 2, msh);
    /* 3: decreasing rowptr */
    io_store_write_sparse(st, "/b3", &bm);
    for (int k = 0; k < 8; k++) rp[k] = (int)bm.rowptr[k];
    int t = rp[3];
    rp[3] = rp[4];
    rp[4] = t;
    if (rp[3] == rp[4]) rp[3]++;
    io_store_write_ints(st, "/b3/rowptr", rp, 1, &r8);
    /* 4: CSR column 20 (>= in) */
    io_store_write_sparse(st, "/b4", &csr);
    for (int64_t k = 0; k < nnz; k++) idx[k] = csr.idx16[k];
    idx[nnz - 1] = 20;
    io_store_write_ints(st, "/b4/idx", idx, 1, &nnz);
    /* 5: vals shorter than nnz */
    io_store_write_sparse(st, "/b5", &bm);
    int64_t shorter = bm.nnz - 1;
    io_store_write_tensor(st, "/b5/vals", bm.vals, 1, &shorter);
    /* 6: unknown format */
    io_store_write_sparse(st, "/b6", &bm);
    io_store_write_string(st, "/b6/format", "dense");
    /* 7: CSR columns not increasing in a row (row 1 is full) */
    io_store_write_sparse(st, "/b7", &csr);
    for (int64_t k = 0; k < nnz; k++) idx[k] = csr.idx16[k];
    t = idx[csr.rowptr[1]];
    idx[csr.rowptr[1]] = idx[csr.rowptr[1] + 1];
    idx[csr.rowptr[1] + 1] = t;
    io_store_write_ints(st, "/b7/idx", idx, 1, &nnz);
    /* 8: nnz attribute beyond out * in */
    io_store_write_sparse(st, "/b8", &bm);
    io_store_write_attr_int(st, "/b8/nnz", 7 * 20 + 1);
    TEST_CHECK(io_store_commit(&st) == LOSA_OK, "commit");
    TEST_CHECK(io_store_open(&st, path) == LOSA_OK, "open");
    const char *what[] = {"/b1", "/b2", "/b3", "/b4", "/b5", "/b6", "/b7", "/b8", "/none"};
    for (int k = 0; k < 9; k++) {
        sparse_matrix s;
        losa_status r = io_store_read_sparse(st, what[k], &s);
        TEST_CHECK(r == LOSA_ERR_FORMAT, "%s refused (status %d)", what[k], (int)r);
        TEST_CHECK(s.rowptr == NULL && s.vals == NULL, "%s: nothing left allocated", what[k]);
        if (r != LOSA_OK)
            TEST_CHECK(strstr(core_errmsg(), what[k]) && strstr(core_errmsg(), path),
                       "message names file and group: %s", core_errmsg());
    }
    io_store_close(&st);
    sparse_matrix_free(&bm);
    sparse_matrix_free(&csr);
}

static void test_copy(void)
{
    char a[2200], b[2200];
    snprintf(a, sizeof a, "%s/copy_src.h5", tmpdir);
    snprintf(b, sizeof b, "%s/copy_dst.h5", tmpdir);
    io_store *st = NULL, *in = NULL;
    float x[6] = {1, 2, 3, 4, 5, 6}, y[6] = {0};
    int64_t sh[2] = {2, 3};
    io_store_create(&st, a);
    io_store_write_attr_int(st, "/answer", 42);
    io_store_write_string(st, "/source", "unit test");
    io_store_write_tensor(st, "/layers/0/wq", x, 2, sh);
    io_store_write_tensor(st, "/embed", x, 2, sh);
    io_store_write_string(st, "/sparse/format", "bitmap");
    TEST_CHECK(io_store_commit(&st) == LOSA_OK, "commit source");
    TEST_CHECK(io_store_open(&in, a) == LOSA_OK, "open source");
    io_store_create(&st, b);
    TEST_CHECK(io_store_copy(st, in, "/sparse") == LOSA_OK, "copy: %s", core_errmsg());
    io_store_close(&in);
    TEST_CHECK(io_store_commit(&st) == LOSA_OK, "commit copy");
    TEST_CHECK(io_store_open(&st, b) == LOSA_OK, "open copy");
    int v = 0;
    char *src = NULL;
    TEST_CHECK(io_store_read_attr_int(st, "/answer", &v) == LOSA_OK && v == 42, "root int attr");
    TEST_CHECK(io_store_read_string(st, "/source", &src) == LOSA_OK && src &&
                   !strcmp(src, "unit test"), "root string attr");
    free(src);
    TEST_CHECK(io_store_read_tensor(st, "/layers/0/wq", y, 2, sh) == LOSA_OK &&
                   !memcmp(x, y, sizeof x), "nested dataset copied");
    TEST_CHECK(io_store_has(st, "/embed") && !io_store_has(st, "/sparse"), "skip honoured");
    io_store_close(&st);
}

typedef struct {
    io_store *st;
    const char *prefix; /* group the copies live under ("" = root) */
    int calls;
} src_ctx;

static losa_status store_source(void *ctx, int gl, model_map m, sparse_matrix *out, int *found)
{
    src_ctx *c = ctx;
    char name[128], full[256];
    io_sparse_name(name, sizeof name, gl, model_map_name(m));
    snprintf(full, sizeof full, "%s%s", c->prefix, name);
    c->calls++;
    *found = 0;
    if (!io_store_has(c->st, full)) return LOSA_OK;
    losa_status s = io_store_read_sparse(c->st, full, out);
    *found = s == LOSA_OK;
    return s;
}

static void test_model_source(void)
{
    model_config c = {.dim = 32, .hidden_dim = 48, .n_layers = 2, .n_heads = 4,
                      .n_kv_heads = 2, .vocab_size = 40, .max_seq_len = 16,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 1,
                      .bos_id = 1, .eos_id = 2};
    model_stage s;
    TEST_CHECK(model_stage_build(&s, &c, 0, 1) == LOSA_OK, "stage");
    model_stage_randomize(&s, 5, 0.1f);
    for (int l = 0; l < s.n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&c, (model_map)m, &o, &i);
            for (int64_t k = 0; k < (int64_t)o * i; k++)
                if (k % 10 < 7) s.layers[l].w[m][k] = 0.0f; /* 70% zeros */
        }
    model_sparse ref, got;
    TEST_CHECK(model_sparse_build(&ref, &s, MODEL_SPARSE_ON, 1, SPARSE_FORMAT_BITMAP) == LOSA_OK,
               "reference build");
    char path[2200], name[128];
    snprintf(path, sizeof path, "%s/model_src.h5", tmpdir);
    io_store *st = NULL;
    io_store_create(&st, path);
    /* layer 0 all maps, layer 1 only wq: the rest must be converted */
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        io_sparse_name(name, sizeof name, 0, model_map_name((model_map)m));
        io_store_write_sparse(st, name, &ref.mat[m]);
    }
    io_sparse_name(name, sizeof name, 1, "wq");
    io_store_write_sparse(st, name, &ref.mat[MODEL_N_MAPS + MODEL_MAP_Q]);
    /* a stale copy: layer 1 wk from other weights */
    sparse_matrix other;
    int o, i;
    model_map_shape(&c, MODEL_MAP_K, &o, &i);
    float *W = calloc((size_t)o * i, sizeof(float));
    W[3] = 1.0f;
    sparse_matrix_from_dense(&other, W, o, i, SPARSE_FORMAT_BITMAP);
    io_store_write_sparse(st, "/stale/sparse/layers/1/wk", &other);
    sparse_matrix_free(&other);
    free(W);
    io_store_commit(&st);
    io_store_open(&st, path);
    src_ctx ctx = {st, "", 0};
    losa_status r = model_sparse_build_from(&got, &s, MODEL_SPARSE_ON, 1, SPARSE_FORMAT_BITMAP,
                                            store_source, &ctx);
    TEST_CHECK(r == LOSA_OK, "build_from: %s", core_errmsg());
    TEST_CHECK(got.n_loaded == MODEL_N_MAPS + 1 && got.n_converted == 2 * MODEL_N_MAPS,
               "loaded %d converted %d", got.n_loaded, got.n_converted);
    TEST_CHECK(ctx.calls == 2 * MODEL_N_MAPS, "source asked for every wanted map (%d)", ctx.calls);
    int same = got.bytes == ref.bytes && got.dense_bytes == ref.dense_bytes;
    for (int k = 0; k < 2 * MODEL_N_MAPS; k++)
        same = same && got.has[k] && same_matrix(&got.mat[k], &ref.mat[k]) &&
               got.density[k] == ref.density[k];
    TEST_CHECK(same, "matrices, densities and byte counts equal to model_sparse_build");
    model_sparse_free(&got);
    /* OFF asks nothing */
    ctx.calls = 0;
    model_sparse_build_from(&got, &s, MODEL_SPARSE_OFF, 1, SPARSE_FORMAT_BITMAP, store_source, &ctx);
    TEST_CHECK(ctx.calls == 0 && got.n_converted == 0, "off: no source calls");
    model_sparse_free(&got);
    /* a stale copy (layer 1 wk of other weights) is refused, nothing kept */
    src_ctx bad = {st, "/stale", 0};
    r = model_sparse_build_from(&got, &s, MODEL_SPARSE_ON, 1, SPARSE_FORMAT_BITMAP, store_source,
                                &bad);
    TEST_CHECK(r == LOSA_ERR_FORMAT && strstr(core_errmsg(), "stale") &&
                   strstr(core_errmsg(), "layer 1 wk"), "stale copy refused: %s", core_errmsg());
    TEST_CHECK(got.mat == NULL && got.n_converted == 0, "stale: nothing left");
    io_store_close(&st);
    model_sparse_free(&ref);
    model_stage_free(&s);
}

int main(void)
{
    core_log_quiet(1);
    const char *tt = getenv("LOSA_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_sparse_store", tt ? tt : "/tmp");
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", tmpdir);
    if (system(cmd) != 0) return 1;
    test_roundtrip();
    test_corrupt();
    test_copy();
    test_model_source();
    return test_finish("test_sparse_store");
}
