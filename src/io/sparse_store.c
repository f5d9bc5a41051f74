/* io sparse store: sparse copies of the maps (/sparse, losa sparsify;
 * layout in include/io.h) on the HDF5 layer (h5.c). */
#include "io_h5.h"
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>

/* The datasets of a stored sparse_matrix: rowptr (int64, out + 1), vals
 * (float32, or the uint16 bits of bf16; sparse_matrix_nvals: nnz, or the
 * out * in / 2 slots of 2:4), then idx (csr: uint16 when idx16 is set,
 * else uint32; nnz) or mask (uint16, (out, nw)).  x points into s (NULL
 * before it is allocated). */
typedef struct {
    const char *name;
    hid_t ftype, mtype;
    H5T_class_t cls;
    void *x;
    int ndim;
    int64_t shape[2];
} io_sparse_ds;

static void io_sparse_datasets(const sparse_matrix *s, io_sparse_ds ds[3])
{
    int64_t nnz = s->nnz, nvals = sparse_matrix_nvals(s);
    ds[0] = (io_sparse_ds){"rowptr", H5T_STD_I64LE, H5T_NATIVE_INT64, H5T_INTEGER, s->rowptr, 1,
                           {(int64_t)s->out + 1, 0}};
    if (s->fmt == SPARSE_FORMAT_BITMAP_BF16)
        ds[1] = (io_sparse_ds){"vals", H5T_STD_U16LE, H5T_NATIVE_UINT16, H5T_INTEGER, s->vals, 1,
                               {nnz, 0}};
    else
        ds[1] = (io_sparse_ds){"vals", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, H5T_FLOAT, s->vals, 1,
                               {nvals, 0}};
    if (s->fmt != SPARSE_FORMAT_CSR)
        ds[2] = (io_sparse_ds){"mask", H5T_STD_U16LE, H5T_NATIVE_UINT16, H5T_INTEGER, s->mask, 2,
                               {s->out, s->nw}};
    else if (s->idx16)
        ds[2] = (io_sparse_ds){"idx", H5T_STD_U16LE, H5T_NATIVE_UINT16, H5T_INTEGER, s->idx16, 1,
                               {nnz, 0}};
    else
        ds[2] = (io_sparse_ds){"idx", H5T_STD_U32LE, H5T_NATIVE_UINT32, H5T_INTEGER, s->idx32, 1,
                               {nnz, 0}};
}

losa_status io_store_write_sparse(io_store *st, const char *group, const sparse_matrix *s)
{
    LOSA_CHECK(st->writable);
    LOSA_CHECK(s->rowptr && s->vals && s->out > 0 && s->in > 0);
    /* replace whatever the group held (another format's datasets) */
    if (io_path_exists(st->file, group) && H5Ldelete(st->file, group, H5P_DEFAULT) < 0)
        return core_err(LOSA_ERR_IO, "%s: cannot replace group %s", st->tmp, group);
    hid_t g = io_group_open(st, group, 1);
    if (g < 0) return core_err(LOSA_ERR_IO, "%s: cannot create group %s", st->tmp, group);
    losa_status r = io_attr_write_str(st, g, "format", sparse_format_name(s->fmt));
    const struct { const char *k; int v; } ints[] = {
        {"out", s->out}, {"in", s->in}, {"nw", s->nw}, {"nm_n", s->nm_n}, {"nm_m", s->nm_m},
    };
    for (size_t i = 0; r == LOSA_OK && i < sizeof ints / sizeof ints[0]; i++)
        r = io_attr_write_int(st, g, ints[i].k, ints[i].v);
    if (r == LOSA_OK) r = io_attr_write(st, g, "nnz", H5T_STD_I64LE, H5T_NATIVE_INT64, &s->nnz);
    H5Oclose(g);
    io_sparse_ds ds[3];
    io_sparse_datasets(s, ds);
    char name[1200];
    for (int i = 0; r == LOSA_OK && i < 3; i++) {
        snprintf(name, sizeof name, "%s/%s", group, ds[i].name);
        r = io_write_dataset(st, name, ds[i].ftype, ds[i].mtype, ds[i].x, ds[i].ndim,
                             ds[i].shape);
    }
    return r;
}

/* The attributes of a stored sparse_matrix into h (no arrays): format, out,
 * in, nw, nm_n, nm_m, nnz, checked consistent (where names the group). */
static losa_status io_sparse_header(io_store *st, const char *group, const char *where,
                                    sparse_matrix *h)
{
    hid_t g = io_group_open(st, group, 0);
    if (g < 0) return core_err(LOSA_ERR_FORMAT, "%s: group is missing", where);
    char *fname = NULL;
    int64_t nnz = -1;
    losa_status r = io_attr_read_str(st, g, group, "format", &fname);
    struct { const char *k; int *v; } ints[] = {
        {"out", &h->out}, {"in", &h->in}, {"nw", &h->nw}, {"nm_n", &h->nm_n}, {"nm_m", &h->nm_m},
    };
    for (size_t i = 0; r == LOSA_OK && i < sizeof ints / sizeof ints[0]; i++)
        r = io_attr_read_int(st, g, group, ints[i].k, ints[i].v);
    if (r == LOSA_OK) r = io_attr_read(st, g, group, "nnz", H5T_NATIVE_INT64, &nnz);
    H5Oclose(g);
    h->fmt = SPARSE_FORMAT_BITMAP;
    if (r == LOSA_OK && sparse_format_from_string(fname, &h->fmt) != LOSA_OK)
        r = core_err(LOSA_ERR_FORMAT, "%s: attribute format: '%s' (expected bitmap, "
                     "bitmap-bf16, csr or 2:4)", where, fname);
    free(fname);
    int out = h->out, in = h->in, nw = h->nw;
    int nm = h->fmt == SPARSE_FORMAT_NM24;
    if (r == LOSA_OK && (out <= 0 || in <= 0 || nw != (in + 15) / 16 || nnz < 0 ||
                         nnz > (int64_t)out * in || (nm && (in % 4 || nnz > (int64_t)out * in / 2))))
        r = core_err(LOSA_ERR_FORMAT, "%s: attributes out %d, in %d, nw %d, nnz %lld: "
                     "inconsistent", where, out, in, nw, (long long)nnz);
    h->nnz = nnz;
    return r;
}

losa_status io_store_read_sparse(io_store *st, const char *group, sparse_matrix *s)
{
    memset(s, 0, sizeof *s);
    char where[4096 + 1100];
    snprintf(where, sizeof where, "%s: %s", st->path, group);
    sparse_matrix h;
    memset(&h, 0, sizeof h);
    losa_status r = io_sparse_header(st, group, where, &h);
    /* every dataset has the shape the attributes imply before anything is
     * allocated from them */
    io_sparse_ds ds[3];
    io_sparse_datasets(&h, ds);
    char name[1200];
    for (int i = 0; r == LOSA_OK && i < 3; i++) {
        snprintf(name, sizeof name, "%s/%s", group, ds[i].name);
        r = io_dataset_check_shape(st, name, ds[i].ndim, ds[i].shape);
    }
    if (r == LOSA_OK) r = sparse_matrix_alloc(s, h.fmt, h.out, h.in, h.nnz);
    if (r != LOSA_OK) return r;
    s->nm_n = h.nm_n;
    s->nm_m = h.nm_m;
    io_sparse_datasets(s, ds);
    for (int i = 0; r == LOSA_OK && i < 3; i++) {
        snprintf(name, sizeof name, "%s/%s", group, ds[i].name);
        r = io_read_dataset(st, name, ds[i].cls, ds[i].mtype, ds[i].x, ds[i].ndim, ds[i].shape);
    }
    if (r == LOSA_OK) r = sparse_matrix_check(s, where);
    if (r != LOSA_OK) sparse_matrix_free(s);
    return r;
}

void io_sparse_name(char *buf, size_t n, int layer, const char *map)
{
    snprintf(buf, n, "/sparse/layers/%d/%s", layer, map);
}