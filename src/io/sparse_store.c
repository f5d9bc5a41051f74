/* io sparse store: sparse copies of the maps (/sparse, losa sparsify;
 * layout in include/io.h) on the HDF5 layer (h5.c). */
#include "io_h5.h"
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>


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
    char name[1200];
    int64_t o1 = (int64_t)s->out + 1, nnz = s->nnz, msh[2] = {s->out, s->nw};
    if (r == LOSA_OK) {
        snprintf(name, sizeof name, "%s/rowptr", group);
        r = io_write_dataset(st, name, H5T_STD_I64LE, H5T_NATIVE_INT64, s->rowptr, 1, &o1);
    }
    if (r == LOSA_OK) {
        snprintf(name, sizeof name, "%s/vals", group);
        if (s->fmt == SPARSE_FORMAT_BITMAP_BF16)
            r = io_write_dataset(st, name, H5T_STD_U16LE, H5T_NATIVE_UINT16, s->vals, 1, &nnz);
        else
            r = io_write_dataset(st, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, s->vals, 1, &nnz);
    }
    if (r == LOSA_OK && s->fmt == SPARSE_FORMAT_CSR) {
        snprintf(name, sizeof name, "%s/idx", group);
        if (s->idx16)
            r = io_write_dataset(st, name, H5T_STD_U16LE, H5T_NATIVE_UINT16, s->idx16, 1, &nnz);
        else
            r = io_write_dataset(st, name, H5T_STD_U32LE, H5T_NATIVE_UINT32, s->idx32, 1, &nnz);
    } else if (r == LOSA_OK) {
        snprintf(name, sizeof name, "%s/mask", group);
        r = io_write_dataset(st, name, H5T_STD_U16LE, H5T_NATIVE_UINT16, s->mask, 2, msh);
    }
    return r;
}

losa_status io_store_read_sparse(io_store *st, const char *group, sparse_matrix *s)
{
    memset(s, 0, sizeof *s);
    char where[4096 + 1100];
    snprintf(where, sizeof where, "%s: %s", st->path, group);
    hid_t g = io_group_open(st, group, 0);
    if (g < 0) return core_err(LOSA_ERR_FORMAT, "%s: group is missing", where);
    char *fname = NULL;
    int out = 0, in = 0, nw = 0, nm_n = 0, nm_m = 0;
    int64_t nnz = -1;
    losa_status r = io_attr_read_str(st, g, group, "format", &fname);
    struct { const char *k; int *v; } ints[] = {
        {"out", &out}, {"in", &in}, {"nw", &nw}, {"nm_n", &nm_n}, {"nm_m", &nm_m},
    };
    for (size_t i = 0; r == LOSA_OK && i < sizeof ints / sizeof ints[0]; i++)
        r = io_attr_read_int(st, g, group, ints[i].k, ints[i].v);
    if (r == LOSA_OK) r = io_attr_read(st, g, group, "nnz", H5T_NATIVE_INT64, &nnz);
    H5Oclose(g);
    sparse_format fmt = SPARSE_FORMAT_BITMAP;
    if (r == LOSA_OK && sparse_format_from_string(fname, &fmt) != LOSA_OK)
        r = core_err(LOSA_ERR_FORMAT, "%s: attribute format: '%s' (expected bitmap, "
                     "bitmap-bf16 or csr)", where, fname);
    free(fname);
    if (r == LOSA_OK && (out <= 0 || in <= 0 || nw != (in + 15) / 16 || nnz < 0 ||
                         nnz > (int64_t)out * in))
        r = core_err(LOSA_ERR_FORMAT, "%s: attributes out %d, in %d, nw %d, nnz %lld: "
                     "inconsistent", where, out, in, nw, (long long)nnz);
    /* every dataset has the shape the attributes imply before anything is
     * allocated from them */
    char name[1200];
    int csr = fmt == SPARSE_FORMAT_CSR;
    int64_t o1 = (int64_t)out + 1, msh[2] = {out, nw};
    if (r == LOSA_OK) {
        snprintf(name, sizeof name, "%s/rowptr", group);
        r = io_dataset_check_shape(st, name, 1, &o1);
    }
    if (r == LOSA_OK) {
        snprintf(name, sizeof name, "%s/vals", group);
        r = io_dataset_check_shape(st, name, 1, &nnz);
    }
    if (r == LOSA_OK) {
        snprintf(name, sizeof name, "%s/%s", group, csr ? "idx" : "mask");
        r = csr ? io_dataset_check_shape(st, name, 1, &nnz)
                : io_dataset_check_shape(st, name, 2, msh);
    }
    if (r == LOSA_OK) r = sparse_matrix_alloc(s, fmt, out, in, nnz);
    if (r != LOSA_OK) return r;
    s->nm_n = nm_n;
    s->nm_m = nm_m;
    snprintf(name, sizeof name, "%s/rowptr", group);
    r = io_read_dataset(st, name, H5T_INTEGER, H5T_NATIVE_INT64, s->rowptr, 1, &o1);
    if (r == LOSA_OK) {
        snprintf(name, sizeof name, "%s/vals", group);
        if (fmt == SPARSE_FORMAT_BITMAP_BF16)
            r = io_read_dataset(st, name, H5T_INTEGER, H5T_NATIVE_UINT16, s->vals, 1, &nnz);
        else
            r = io_read_dataset(st, name, H5T_FLOAT, H5T_NATIVE_FLOAT, s->vals, 1, &nnz);
    }
    if (r == LOSA_OK && csr) {
        snprintf(name, sizeof name, "%s/idx", group);
        if (s->idx16)
            r = io_read_dataset(st, name, H5T_INTEGER, H5T_NATIVE_UINT16, s->idx16, 1, &nnz);
        else
            r = io_read_dataset(st, name, H5T_INTEGER, H5T_NATIVE_UINT32, s->idx32, 1, &nnz);
    } else if (r == LOSA_OK) {
        snprintf(name, sizeof name, "%s/mask", group);
        r = io_read_dataset(st, name, H5T_INTEGER, H5T_NATIVE_UINT16, s->mask, 2, msh);
    }
    if (r == LOSA_OK) r = sparse_matrix_check(s, where);
    if (r != LOSA_OK) sparse_matrix_free(s);
    return r;
}

void io_sparse_name(char *buf, size_t n, int layer, const char *map)
{
    snprintf(buf, n, "/sparse/layers/%d/%s", layer, map);
}