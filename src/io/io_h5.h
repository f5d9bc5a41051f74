/* io internals: the HDF5 layer (h5.c) under the model store (model_store.c)
 * and its sparse copies (sparse_store.c).  The only header with HDF5 types;
 * the rest of io (safetensors, importers, export) sees io_store through
 * include/io.h only.  Not part of the public API.
 *
 * Messages name st->path when reading and st->tmp (the temporary file being
 * written) when writing. */
#ifndef LOSA_IO_H5_H
#define LOSA_IO_H5_H

#include <hdf5.h>

#include "io.h"

struct io_store {
    hid_t file;
    int writable;
    char path[4096];
    char tmp[4200]; /* temporary name while writing */
};

/* 1 if every component of the path name exists as a link. */
int io_path_exists(hid_t file, const char *name);
/* The group (or other object) at obj ("/" or "": the root); created, with
 * the groups on its path, when create and absent.  < 0 on failure. */
hid_t io_group_open(io_store *st, const char *obj, int create);

/* Create (replacing any existing) dataset name of file type ftype, groups on
 * the path created, and write x given in memory type mtype. */
losa_status io_write_dataset(io_store *st, const char *name, hid_t ftype, hid_t mtype,
                             const void *x, int ndim, const int64_t *shape);
/* Open dataset name, check its type class (cls), rank and shape equal
 * (ndim, shape), read it as mtype into x. */
losa_status io_read_dataset(io_store *st, const char *name, H5T_class_t cls, hid_t mtype,
                            void *x, int ndim, const int64_t *shape);
/* The dataset exists with exactly this shape (checked before allocating
 * from attributes). */
losa_status io_dataset_check_shape(io_store *st, const char *name, int ndim,
                                   const int64_t *shape);

/* Scalar attributes of object obj (replaced if present). */
losa_status io_attr_write(io_store *st, hid_t obj, const char *key, hid_t ftype, hid_t mtype,
                          const void *v);
losa_status io_attr_write_int(io_store *st, hid_t obj, const char *key, int v);
losa_status io_attr_write_double(io_store *st, hid_t obj, const char *key, double v);
/* Variable-length UTF-8 (h5py reads it as str). */
losa_status io_attr_write_str(io_store *st, hid_t obj, const char *key, const char *s);
/* A scalar numeric attribute converted to mtype; where names the object in
 * messages. */
losa_status io_attr_read(io_store *st, hid_t obj, const char *where, const char *key,
                         hid_t mtype, void *v);
losa_status io_attr_read_int(io_store *st, hid_t obj, const char *where, const char *key,
                             int *v);
/* String attribute (fixed or variable length) -> malloc'd copy in *out. */
losa_status io_attr_read_str(io_store *st, hid_t obj, const char *where, const char *key,
                             char **out);

#endif
