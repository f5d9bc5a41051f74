/* io h5: the HDF5 layer of the store (include/io.h): file lifecycle
 * (temporary name, space reservation, atomic commit), datasets and
 * attributes by path, external links, and the copy of a whole store.  It
 * knows nothing of models: model_store.c and sparse_store.c build the
 * layout on top.  Serial HDF5 API; a store is written by one rank, read by
 * any number of ranks. */
#include "io_h5.h"
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void io_hdf5_quiet(void)
{
    static int done = 0;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* we report errors ourselves */
        done = 1;
    }
}

static hid_t io_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    /* lock when the file system can; do not fail where it cannot (NFS, Lustre) */
    H5Pset_file_locking(fapl, 1, 1);
#endif
    return fapl;
}

const char *io_store_path(const io_store *st) { return st->path; }

losa_status io_store_create(io_store **stp, const char *path)
{
    io_hdf5_quiet();
    *stp = NULL;
    io_store *st = core_calloc(1, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    core_tmpname(st->tmp, sizeof st->tmp, path);
    hid_t fapl = io_fapl();
    st->file = H5Fcreate(st->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (st->file < 0) {
        losa_status s = core_err(LOSA_ERR_IO, "%s: cannot create (temporary %s): %s",
                                 path, st->tmp, strerror(errno));
        unlink(st->tmp);
        free(st);
        return s;
    }
    st->writable = 1;
    *stp = st;
    return LOSA_OK;
}

/* HDF5 1.10 cannot survive a failed flush: after H5Fclose (or H5Fflush)
 * fails, e.g. on a full disk, the file is left half torn down and any later
 * close crashes, including the one HDF5 does itself at exit (from
 * MPI_Finalize).  So a store is never closed into a full disk:
 *   - commit first reserves the file's whole extent plus a margin for the
 *     metadata written at close (fallocate, size unchanged); if that finds
 *     no space, the store is discarded instead;
 *   - discard truncates the temporary before closing it (its content is
 *     thrown away anyway), so the few metadata blocks close writes fit. */
static void io_store_discard(io_store *st)
{
    if (truncate(st->tmp, 0) != 0) { /* already gone: nothing to free */ }
    H5Fclose(st->file);
    unlink(st->tmp);
}

#define IO_RESERVE_MARGIN(size) ((off_t)(size) / 1024 + ((off_t)64 << 10))

/* 0 if the space for the file's extent (its end of allocation, metadata not
 * yet written included) + a margin is reserved, or the file system cannot
 * reserve; else errno (ENOSPC). */
static int io_store_reserve_extent(io_store *st)
{
    hsize_t size = 0;
    if (H5Fget_filesize(st->file, &size) < 0) return 0;
    int fd = open(st->tmp, O_WRONLY);
    if (fd < 0) return errno;
    int e = 0;
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)size + IO_RESERVE_MARGIN(size)) != 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS)
        e = errno;
    close(fd);
    return e;
}

/* Give back the reserved blocks past the end of the closed file. */
void io_release_path(const char *path)
{
    int fd = open(path, O_WRONLY);
    struct stat sb;
    if (fd < 0) return;
    /* everything past the end: the margin and any io_reserve_path extent */
    if (fstat(fd, &sb) == 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                         sb.st_size, (off_t)1 << 40) != 0) {
        /* not supported: at most the margin stays allocated */
    }
    /* ext4 punches nothing past the end of the file: truncating to the same
     * size is what drops blocks fallocate'd past it (KEEP_SIZE) */
    if (fstat(fd, &sb) == 0 && ftruncate(fd, sb.st_size) != 0) { /* keep the blocks */ }
    close(fd);
}

losa_status io_store_commit(io_store **stp)
{
    io_store *st = *stp;
    if (!st) return core_err(LOSA_ERR_INTERNAL, "io_store_commit: no store");
    LOSA_CHECK(st->writable);
    losa_status s = LOSA_OK;
    int e = io_store_reserve_extent(st);
    if (e != 0) {
        s = core_err(LOSA_ERR_IO, "%s: cannot write %s: %s; %s is unchanged", st->path,
                     st->tmp, strerror(e), st->path);
        io_store_discard(st);
    } else if (H5Fclose(st->file) < 0) {
        s = core_err(LOSA_ERR_IO, "%s: closing %s failed (disk full?); %s is unchanged",
                     st->path, st->tmp, st->path);
        unlink(st->tmp);
    } else {
        io_release_path(st->tmp);
        s = core_commit_file(st->tmp, st->path);
    }
    free(st);
    *stp = NULL;
    return s;
}

losa_status io_store_open(io_store **stp, const char *path)
{
    io_hdf5_quiet();
    *stp = NULL;
    if (access(path, R_OK) != 0)
        return core_err(LOSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) return core_err(LOSA_ERR_FORMAT, "%s: not an HDF5 file", path);
    io_store *st = core_calloc(1, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    hid_t fapl = io_fapl();
    st->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (st->file < 0) {
        free(st);
        return core_err(LOSA_ERR_IO, "%s: cannot open as HDF5", path);
    }
    *stp = st;
    return LOSA_OK;
}

/* HDF5 1.10 cannot recover from a failed H5Fclose (ENOSPC while flushing):
 * the file stays half-open and the library's shutdown crashes on it.  So
 * writers reserve the space up front: fallocate(KEEP_SIZE) of the expected
 * size on the temporary file turns a full file system into a clean error
 * before HDF5 writes anything (sec2 truncates to the real size at close). */
losa_status io_reserve_path(const char *path, int64_t bytes)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0) return core_err(LOSA_ERR_IO, "%s: cannot open to reserve space: %s", path, strerror(errno));
    int r = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)bytes);
    int e = errno;
    close(fd);
    if (r != 0 && e != EOPNOTSUPP && e != ENOSYS)
        return core_err(LOSA_ERR_IO, "%s: cannot reserve %.1f MB: %s", path, bytes / 1e6, strerror(e));
    return LOSA_OK;
}

losa_status io_store_reserve(io_store *st, int64_t bytes)
{
    LOSA_CHECK(st && st->writable);
    return io_reserve_path(st->tmp, bytes);
}

void io_store_close(io_store **stp)
{
    if (!stp || !*stp) return;
    io_store *st = *stp;
    if (st->writable) io_store_discard(st); /* never committed: leave nothing behind */
    else H5Fclose(st->file);
    free(st);
    *stp = NULL;
}

/* ---- paths ---------------------------------------------------------------- */

/* 1 if every component of the absolute/relative path exists as a link. */
int io_path_exists(hid_t file, const char *name)
{
    char buf[1024];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, name, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (!(i == 1 && buf[0] == '/') && H5Lexists(file, buf, H5P_DEFAULT) <= 0)
                return 0;
            buf[i] = c;
        }
    }
    return 1;
}

int io_store_has(io_store *st, const char *name) { return io_path_exists(st->file, name); }

static hid_t io_lcpl(void)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    return lcpl;
}

/* Create (replacing any existing) dataset name of file type ftype and write
 * x given in memory type mtype. */
losa_status io_write_dataset(io_store *st, const char *name, hid_t ftype,
                             hid_t mtype, const void *x, int ndim,
                             const int64_t *shape)
{
    LOSA_CHECK(st->writable);
    LOSA_CHECK(ndim >= 1 && ndim <= IO_MAX_DIMS);
    hsize_t dims[IO_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        LOSA_CHECK(shape[i] >= 0);
        dims[i] = (hsize_t)shape[i];
    }
    if (io_path_exists(st->file, name)) H5Ldelete(st->file, name, H5P_DEFAULT);
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    hid_t lcpl = io_lcpl();
    hid_t ds = H5Dcreate2(st->file, name, ftype, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    H5Sclose(space);
    if (ds < 0)
        return core_err(LOSA_ERR_IO, "%s: cannot create dataset %s", st->tmp, name);
    herr_t e = H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Dclose(ds);
    if (e < 0)
        return core_err(LOSA_ERR_IO, "%s: cannot write dataset %s (disk full?)",
                        st->tmp, name);
    return LOSA_OK;
}

/* Opens dataset name for reading; the error names the file and dataset. */
static losa_status io_dataset_open(io_store *st, const char *name, hid_t *ds)
{
    if (!io_path_exists(st->file, name))
        return core_err(LOSA_ERR_FORMAT, "%s: dataset %s is missing", st->path, name);
    *ds = H5Dopen2(st->file, name, H5P_DEFAULT);
    if (*ds < 0) return core_err(LOSA_ERR_FORMAT, "%s: %s is not a dataset", st->path, name);
    return LOSA_OK;
}

/* Open dataset name, check its rank and shape equal (ndim, shape), read it as
 * mtype into x.  cls: expected HDF5 type class. */
losa_status io_read_dataset(io_store *st, const char *name, H5T_class_t cls,
                            hid_t mtype, void *x, int ndim,
                            const int64_t *shape)
{
    hid_t ds = -1;
    losa_status open = io_dataset_open(st, name, &ds);
    if (open != LOSA_OK) return open;
    hid_t ft = H5Dget_type(ds);
    H5T_class_t fc = H5Tget_class(ft);
    H5Tclose(ft);
    if (fc != cls) {
        H5Dclose(ds);
        return core_err(LOSA_ERR_FORMAT, "%s: dataset %s: expected %s values", st->path,
                        name, cls == H5T_FLOAT ? "floating-point" : "integer");
    }
    hid_t space = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(space);
    hsize_t dims[IO_MAX_DIMS] = {0};
    int ok = nd == ndim && nd <= IO_MAX_DIMS;
    if (nd > 0 && nd <= IO_MAX_DIMS) H5Sget_simple_extent_dims(space, dims, NULL);
    for (int i = 0; ok && i < nd; i++) ok = (int64_t)dims[i] == shape[i];
    H5Sclose(space);
    if (!ok) {
        char want[256], got[256];
        int64_t found[IO_MAX_DIMS];
        int fn = nd < 0 ? 0 : nd > IO_MAX_DIMS ? IO_MAX_DIMS : nd;
        for (int i = 0; i < fn; i++) found[i] = (int64_t)dims[i];
        io_fmt_shape(want, sizeof want, ndim, shape);
        io_fmt_shape(got, sizeof got, fn, found);
        H5Dclose(ds);
        return core_err(LOSA_ERR_FORMAT,
                        "%s: dataset %s: expected shape %s, found %s", st->path, name,
                        want, got);
    }
    herr_t e = H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Dclose(ds);
    if (e < 0)
        return core_err(LOSA_ERR_IO, "%s: dataset %s: read failed", st->path, name);
    return LOSA_OK;
}

losa_status io_store_write_tensor(io_store *st, const char *name, const float *x,
                                  int ndim, const int64_t *shape)
{
    return io_write_dataset(st, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, x, ndim, shape);
}

/* ---- bf16 tensors ----------------------------------------------------------
 * A bf16 tensor is a 16-bit unsigned integer dataset (the bf16 bit
 * patterns: the upper half of the fp32 word) carrying the string attribute
 * dtype = "bf16".  HDF5 has no bf16 type and h5py would read a custom 2-byte
 * float as IEEE half, so the bits are kept as integers that any reader can
 * widen exactly: ((uint32) bits << 16) viewed as float32. */
#define IO_BF16_ATTR "dtype"

losa_status io_store_write_tensor_bf16(io_store *st, const char *name, const uint16_t *x,
                                       int ndim, const int64_t *shape)
{
    losa_status s = io_write_dataset(st, name, H5T_STD_U16LE, H5T_NATIVE_UINT16, x, ndim,
                                     shape);
    if (s != LOSA_OK) return s;
    hid_t ds = H5Dopen2(st->file, name, H5P_DEFAULT);
    if (ds < 0) return core_err(LOSA_ERR_IO, "%s: cannot reopen dataset %s", st->tmp, name);
    s = io_attr_write_str(st, ds, IO_BF16_ATTR, "bf16");
    H5Dclose(ds);
    return s;
}

/* The stored dtype of dataset ds (name, for messages): fp32 for a floating
 * point dataset, bf16 for a 2-byte unsigned integer one marked dtype = bf16;
 * anything else is LOSA_ERR_FORMAT naming the file, dataset and what was
 * found. */
static losa_status io_dataset_dtype(io_store *st, hid_t ds, const char *name, model_dtype *t)
{
    hid_t ft = H5Dget_type(ds);
    H5T_class_t fc = H5Tget_class(ft);
    size_t sz = H5Tget_size(ft);
    H5T_sign_t sg = fc == H5T_INTEGER ? H5Tget_sign(ft) : H5T_SGN_ERROR;
    H5Tclose(ft);
    if (fc == H5T_FLOAT) {
        *t = MODEL_DTYPE_F32;
        return LOSA_OK;
    }
    char *mark = NULL;
    if (fc == H5T_INTEGER && sz == 2 && sg == H5T_SGN_NONE && H5Aexists(ds, IO_BF16_ATTR) > 0 &&
        io_attr_read_str(st, ds, name, IO_BF16_ATTR, &mark) == LOSA_OK && !strcmp(mark, "bf16")) {
        free(mark);
        *t = MODEL_DTYPE_BF16;
        return LOSA_OK;
    }
    free(mark);
    return core_err(LOSA_ERR_FORMAT, "%s: dataset %s: expected floating-point values (or "
                    "uint16 bf16 bits with attribute dtype = \"bf16\")", st->path, name);
}

losa_status io_store_tensor_dtype(io_store *st, const char *name, model_dtype *t)
{
    hid_t ds = -1;
    losa_status s = io_dataset_open(st, name, &ds);
    if (s != LOSA_OK) return s;
    s = io_dataset_dtype(st, ds, name, t);
    H5Dclose(ds);
    return s;
}

/* bf16 -> fp32 in place: x holds n uint16 bit patterns in its upper half
 * (bytes [2n, 4n)) and receives n floats.  Forward order is safe: float i
 * (bytes [4i, 4i+4)) overwrites only bf16 slots j <= i, already read. */
static void io_bf16_widen_in_place(float *x, int64_t n)
{
    const uint16_t *b = (const uint16_t *)x + n;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)b[i] << 16;
        memcpy(&x[i], &u, 4);
    }
}

losa_status io_store_read_tensor(io_store *st, const char *name, float *x, int ndim,
                                 const int64_t *shape)
{
    model_dtype t = MODEL_DTYPE_F32;
    losa_status s = io_store_tensor_dtype(st, name, &t);
    if (s != LOSA_OK) return s;
    if (t == MODEL_DTYPE_F32)
        return io_read_dataset(st, name, H5T_FLOAT, H5T_NATIVE_FLOAT, x, ndim, shape);
    /* bf16: read the bits into the upper half of x, widen exactly */
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    s = io_read_dataset(st, name, H5T_INTEGER, H5T_NATIVE_UINT16, (uint16_t *)x + n, ndim,
                        shape);
    if (s == LOSA_OK) io_bf16_widen_in_place(x, n);
    return s;
}

losa_status io_store_read_tensor_bf16(io_store *st, const char *name, uint16_t *x, int ndim,
                                      const int64_t *shape)
{
    model_dtype t = MODEL_DTYPE_F32;
    losa_status s = io_store_tensor_dtype(st, name, &t);
    if (s != LOSA_OK) return s;
    if (t != MODEL_DTYPE_BF16)
        return core_err(LOSA_ERR_FORMAT, "%s: dataset %s: expected bf16 (found fp32)",
                        st->path, name);
    return io_read_dataset(st, name, H5T_INTEGER, H5T_NATIVE_UINT16, x, ndim, shape);
}

losa_status io_store_write_doubles(io_store *st, const char *name, const double *x,
                                   int ndim, const int64_t *shape)
{
    return io_write_dataset(st, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, x, ndim, shape);
}

losa_status io_store_write_ints(io_store *st, const char *name, const int *x, int ndim,
                                const int64_t *shape)
{
    return io_write_dataset(st, name, H5T_STD_I32LE, H5T_NATIVE_INT, x, ndim, shape);
}

losa_status io_store_read_doubles(io_store *st, const char *name, double *x, int ndim,
                                  const int64_t *shape)
{
    return io_read_dataset(st, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, x, ndim, shape);
}

losa_status io_store_read_ints(io_store *st, const char *name, int *x, int ndim,
                               const int64_t *shape)
{
    return io_read_dataset(st, name, H5T_INTEGER, H5T_NATIVE_INT, x, ndim, shape);
}

losa_status io_store_tensor_shape(io_store *st, const char *name, int *ndim,
                                  int64_t *shape)
{
    hid_t ds = -1;
    losa_status open = io_dataset_open(st, name, &ds);
    if (open != LOSA_OK) return open;
    hid_t space = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(space);
    losa_status s = LOSA_OK;
    if (nd < 0 || nd > IO_MAX_DIMS) {
        s = core_err(LOSA_ERR_FORMAT, "%s: dataset %s: rank %d unsupported", st->path,
                     name, nd);
    } else {
        hsize_t dims[IO_MAX_DIMS];
        H5Sget_simple_extent_dims(space, dims, NULL);
        *ndim = nd;
        for (int i = 0; i < nd; i++) shape[i] = (int64_t)dims[i];
    }
    H5Sclose(space);
    H5Dclose(ds);
    return s;
}

losa_status io_dataset_check_shape(io_store *st, const char *name, int ndim,
                                   const int64_t *shape)
{
    int nd = 0;
    int64_t sh[IO_MAX_DIMS];
    losa_status s = io_store_tensor_shape(st, name, &nd, sh);
    if (s != LOSA_OK) return s;
    int ok = nd == ndim;
    for (int i = 0; ok && i < nd; i++) ok = sh[i] == shape[i];
    if (!ok) {
        char want[256], got[256];
        io_fmt_shape(want, sizeof want, ndim, shape);
        io_fmt_shape(got, sizeof got, nd, sh);
        return core_err(LOSA_ERR_FORMAT, "%s: dataset %s: expected shape %s, found %s",
                        st->path, name, want, got);
    }
    return LOSA_OK;
}

/* ---- attributes ----------------------------------------------------------- */

/* Object (group, created if needed) at obj; attribute named key. */
hid_t io_group_open(io_store *st, const char *obj, int create)
{
    if (!strcmp(obj, "/") || !obj[0]) return H5Gopen2(st->file, "/", H5P_DEFAULT);
    if (io_path_exists(st->file, obj)) return H5Oopen(st->file, obj, H5P_DEFAULT);
    if (!create) return -1;
    hid_t lcpl = io_lcpl();
    hid_t g = H5Gcreate2(st->file, obj, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    return g;
}

losa_status io_attr_write(io_store *st, hid_t obj, const char *key, hid_t ftype,
                          hid_t mtype, const void *v)
{
    if (H5Aexists(obj, key) > 0) H5Adelete(obj, key);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, key, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(sp);
    if (a < 0) return core_err(LOSA_ERR_IO, "%s: cannot create attribute %s", st->tmp, key);
    herr_t e = H5Awrite(a, mtype, v);
    H5Aclose(a);
    if (e < 0) return core_err(LOSA_ERR_IO, "%s: cannot write attribute %s", st->tmp, key);
    return LOSA_OK;
}

losa_status io_attr_write_int(io_store *st, hid_t obj, const char *key, int v)
{
    return io_attr_write(st, obj, key, H5T_STD_I32LE, H5T_NATIVE_INT, &v);
}

losa_status io_attr_write_double(io_store *st, hid_t obj, const char *key,
                                 double v)
{
    return io_attr_write(st, obj, key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

losa_status io_attr_write_str(io_store *st, hid_t obj, const char *key,
                              const char *s)
{
    if (H5Aexists(obj, key) > 0) H5Adelete(obj, key);
    /* variable-length UTF-8: h5py reads it as str */
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, key, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(sp);
    herr_t e = a < 0 ? -1 : H5Awrite(a, t, &s);
    if (a >= 0) H5Aclose(a);
    H5Tclose(t);
    if (e < 0) return core_err(LOSA_ERR_IO, "%s: cannot write attribute %s", st->tmp, key);
    return LOSA_OK;
}

/* Reads a scalar numeric attribute (converted to mtype). where names the
 * object in messages. */
losa_status io_attr_read(io_store *st, hid_t obj, const char *where,
                         const char *key, hid_t mtype, void *v)
{
    if (H5Aexists(obj, key) <= 0)
        return core_err(LOSA_ERR_FORMAT, "%s: %s: attribute %s is missing", st->path,
                        where, key);
    hid_t a = H5Aopen(obj, key, H5P_DEFAULT);
    hid_t sp = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    hid_t ft = H5Aget_type(a);
    H5T_class_t c = H5Tget_class(ft);
    H5Tclose(ft);
    herr_t e = -1;
    if (np == 1 && (c == H5T_INTEGER || c == H5T_FLOAT)) e = H5Aread(a, mtype, v);
    H5Aclose(a);
    if (e < 0)
        return core_err(LOSA_ERR_FORMAT, "%s: %s: attribute %s: expected one number",
                        st->path, where, key);
    return LOSA_OK;
}

losa_status io_attr_read_int(io_store *st, hid_t obj, const char *where,
                             const char *key, int *v)
{
    return io_attr_read(st, obj, where, key, H5T_NATIVE_INT, v);
}

/* String attribute (fixed or variable length) -> malloc'd copy. */
losa_status io_attr_read_str(io_store *st, hid_t obj, const char *where,
                             const char *key, char **out)
{
    *out = NULL;
    if (H5Aexists(obj, key) <= 0)
        return core_err(LOSA_ERR_FORMAT, "%s: %s: attribute %s is missing", st->path,
                        where, key);
    hid_t a = H5Aopen(obj, key, H5P_DEFAULT);
    hid_t ft = H5Aget_type(a);
    losa_status s = LOSA_OK;
    if (H5Tget_class(ft) != H5T_STRING) {
        s = core_err(LOSA_ERR_FORMAT, "%s: %s: attribute %s: expected a string", st->path,
                     where, key);
    } else if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        char *p = NULL;
        if (H5Aread(a, mt, &p) < 0 || !p) {
            s = core_err(LOSA_ERR_IO, "%s: %s: attribute %s: read failed", st->path, where, key);
        } else {
            *out = core_strdup(p);
            H5free_memory(p);
        }
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(ft);
        char *p = core_calloc(n + 1, 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, n + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (H5Aread(a, mt, p) < 0) {
            free(p);
            s = core_err(LOSA_ERR_IO, "%s: %s: attribute %s: read failed", st->path, where, key);
        } else {
            *out = p;
        }
        H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return s;
}

/* Split "/a/b/key" into object "/a/b" and key; "key" or "/key" -> root. */
static void io_split_attr(const char *name, char *obj, size_t n, const char **key)
{
    const char *slash = strrchr(name, '/');
    if (!slash || slash == name) {
        snprintf(obj, n, "/");
        *key = slash ? slash + 1 : name;
    } else {
        size_t len = (size_t)(slash - name);
        if (len >= n) len = n - 1;
        memcpy(obj, name, len);
        obj[len] = '\0';
        *key = slash + 1;
    }
}

/* An attribute named by path: "/a/b/key" is attribute key of group /a/b
 * ("key" or "/key": of the root). */
typedef struct {
    char obj[1024];  /* the group's path */
    const char *key; /* points into the name */
    hid_t g;
} io_attr_at;

/* Opens the group of attribute path name (created when writing, which
 * needs a writable store); on error the status names the file and group. */
static losa_status io_attr_at_open(io_store *st, const char *name, int write, io_attr_at *a)
{
    if (write) LOSA_CHECK(st->writable);
    io_split_attr(name, a->obj, sizeof a->obj, &a->key);
    a->g = io_group_open(st, a->obj, write);
    if (a->g >= 0) return LOSA_OK;
    if (write) return core_err(LOSA_ERR_IO, "%s: cannot create group %s", st->tmp, a->obj);
    return core_err(LOSA_ERR_FORMAT, "%s: group %s is missing", st->path, a->obj);
}

/* Closes the group; returns s (the status of the attribute operation). */
static losa_status io_attr_at_close(io_attr_at *a, losa_status s)
{
    H5Oclose(a->g);
    return s;
}

losa_status io_store_write_string(io_store *st, const char *name, const char *s)
{
    io_attr_at a;
    losa_status r = io_attr_at_open(st, name, 1, &a);
    return r != LOSA_OK ? r : io_attr_at_close(&a, io_attr_write_str(st, a.g, a.key, s));
}

losa_status io_store_read_string(io_store *st, const char *name, char **s)
{
    io_attr_at a;
    *s = NULL;
    losa_status r = io_attr_at_open(st, name, 0, &a);
    return r != LOSA_OK ? r : io_attr_at_close(&a, io_attr_read_str(st, a.g, a.obj, a.key, s));
}

losa_status io_store_write_attr_int(io_store *st, const char *name, int v)
{
    io_attr_at a;
    losa_status r = io_attr_at_open(st, name, 1, &a);
    return r != LOSA_OK ? r : io_attr_at_close(&a, io_attr_write_int(st, a.g, a.key, v));
}

losa_status io_store_read_attr_int(io_store *st, const char *name, int *v)
{
    io_attr_at a;
    losa_status r = io_attr_at_open(st, name, 0, &a);
    return r != LOSA_OK ? r : io_attr_at_close(&a, io_attr_read_int(st, a.g, a.obj, a.key, v));
}

/* ---- external links ------------------------------------------------------- */

losa_status io_store_link_external(io_store *st, const char *link_name, const char *file,
                                   const char *obj)
{
    LOSA_CHECK(st->writable);
    if (io_path_exists(st->file, link_name) && H5Ldelete(st->file, link_name, H5P_DEFAULT) < 0)
        return core_err(LOSA_ERR_IO, "%s: cannot replace link %s", st->tmp, link_name);
    hid_t lcpl = io_lcpl();
    herr_t e = H5Lcreate_external(file, obj, st->file, link_name, lcpl, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (e < 0)
        return core_err(LOSA_ERR_IO, "%s: cannot create external link %s -> %s:%s", st->tmp,
                        link_name, file, obj);
    return LOSA_OK;
}

/* ---- copy of a whole store ------------------------------------------------ */

/* Root attribute visitor state for io_store_copy. */
typedef struct {
    io_store *dst;
    losa_status s;
} io_copy_ctx;

static herr_t io_copy_attr(hid_t loc, const char *key, const H5A_info_t *info, void *op)
{
    (void)info;
    io_copy_ctx *c = op;
    hid_t a = H5Aopen(loc, key, H5P_DEFAULT);
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    size_t n = (size_t)H5Sget_simple_extent_npoints(sp) * H5Tget_size(t);
    void *buf = core_calloc(n, 1);
    hid_t root = H5Gopen2(c->dst->file, "/", H5P_DEFAULT);
    hid_t b = -1;
    herr_t e = -1;
    if (H5Aread(a, t, buf) >= 0) {
        if (H5Aexists(root, key) > 0) H5Adelete(root, key);
        b = H5Acreate2(root, key, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (b >= 0) e = H5Awrite(b, t, buf);
    }
    /* variable-length strings were allocated by HDF5 inside buf */
    if (e >= 0 && (H5Tdetect_class(t, H5T_VLEN) > 0 || H5Tis_variable_str(t) > 0))
        H5Dvlen_reclaim(t, sp, H5P_DEFAULT, buf);
    if (b >= 0) H5Aclose(b);
    H5Gclose(root);
    free(buf);
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    if (e < 0) {
        c->s = core_err(LOSA_ERR_IO, "%s: cannot copy root attribute %s", c->dst->tmp, key);
        return -1;
    }
    return 0;
}

static herr_t io_copy_link(hid_t loc, const char *name, const H5L_info_t *info, void *op)
{
    (void)info;
    io_copy_ctx *c = op;
    hid_t ocpl = H5Pcreate(H5P_OBJECT_COPY);
    herr_t e = H5Ocopy(loc, name, c->dst->file, name, ocpl, H5P_DEFAULT);
    H5Pclose(ocpl);
    if (e < 0) {
        c->s = core_err(LOSA_ERR_IO, "%s: cannot copy /%s (disk full?)", c->dst->tmp, name);
        return -1;
    }
    return 0;
}

losa_status io_store_copy(io_store *dst, io_store *src, const char *skip)
{
    LOSA_CHECK(dst->writable);
    io_copy_ctx c = {dst, LOSA_OK};
    hid_t root = H5Gopen2(src->file, "/", H5P_DEFAULT);
    hsize_t idx = 0;
    herr_t e = H5Aiterate2(root, H5_INDEX_NAME, H5_ITER_INC, &idx, io_copy_attr, &c);
    H5Gclose(root);
    if (e < 0 && c.s == LOSA_OK)
        c.s = core_err(LOSA_ERR_IO, "%s: cannot read the root attributes", src->path);
    /* every top-level object except skip, by name order */
    hsize_t n = 0;
    H5G_info_t gi;
    if (c.s == LOSA_OK && H5Gget_info_by_name(src->file, "/", &gi, H5P_DEFAULT) >= 0) n = gi.nlinks;
    for (hsize_t i = 0; c.s == LOSA_OK && i < n; i++) {
        char name[1024];
        ssize_t len = H5Lget_name_by_idx(src->file, "/", H5_INDEX_NAME, H5_ITER_INC, i, name,
                                         sizeof name, H5P_DEFAULT);
        if (len < 0 || (size_t)len >= sizeof name) {
            c.s = core_err(LOSA_ERR_FORMAT, "%s: cannot list the root group", src->path);
            break;
        }
        if (skip && !strcmp(name, skip[0] == '/' ? skip + 1 : skip)) continue;
        H5L_info_t li;
        if (H5Lget_info(src->file, name, &li, H5P_DEFAULT) < 0) {
            c.s = core_err(LOSA_ERR_FORMAT, "%s: /%s: cannot read link", src->path, name);
            break;
        }
        if (li.type == H5L_TYPE_HARD) {
            io_copy_link(src->file, name, &li, &c);
        } else {
            /* soft and external links stay links (H5Lcopy works within one file only) */
            char val[2048];
            const char *ef = NULL, *eo = NULL;
            unsigned fl = 0;
            herr_t le = li.u.val_size <= sizeof val
                            ? H5Lget_val(src->file, name, val, sizeof val, H5P_DEFAULT) : -1;
            if (le >= 0 && li.type == H5L_TYPE_SOFT)
                le = H5Lcreate_soft(val, dst->file, name, H5P_DEFAULT, H5P_DEFAULT);
            else if (le >= 0 && li.type == H5L_TYPE_EXTERNAL &&
                     H5Lunpack_elink_val(val, li.u.val_size, &fl, &ef, &eo) >= 0)
                le = H5Lcreate_external(ef, eo, dst->file, name, H5P_DEFAULT, H5P_DEFAULT);
            else
                le = -1;
            if (le < 0) c.s = core_err(LOSA_ERR_IO, "%s: cannot copy link /%s", dst->tmp, name);
        }
    }
    return c.s;
}
