/* io: LoRA adapters and AdamW state in HDF5 (layout in include/lora.h).
 * Plain HDF5 calls so that it does not depend on the store internals. */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "lora.h"

static const char *map_short[MODEL_N_MAPS] = {"q", "k", "v", "o", "gate", "up", "down"};

static losa_status h5err(const char *path, const char *what)
{
    return core_err(LOSA_ERR_IO, "%s: %s", path, what);
}

static int attr_write(hid_t obj, const char *name, hid_t type, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, type, v) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int attr_read(hid_t obj, const char *name, hid_t type, void *v)
{
    if (H5Aexists(obj, name) <= 0) return 1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    int rc = a < 0 || H5Aread(a, type, v) < 0;
    if (a >= 0) H5Aclose(a);
    return rc;
}

static int dset_write(hid_t g, const char *name, const float *x, hsize_t d0, hsize_t d1)
{
    hsize_t dims[2] = {d0, d1};
    if (H5Lexists(g, name, H5P_DEFAULT) > 0) H5Ldelete(g, name, H5P_DEFAULT);
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t ds = H5Dcreate2(g, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    return rc;
}

/* Reads a strided (d0 x d1) block (row stride ld) after checking the shape.
 * Returns 0 ok, 1 missing/io error, 2 shape mismatch. */
static int dset_read(hid_t g, const char *name, float *x, hsize_t d0, hsize_t d1)
{
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0) return 1;
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0) return 1;
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2] = {0, 0};
    int nd = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    int rc = 0;
    if (nd != 2 || dims[0] != d0 || dims[1] != d1) rc = 2;
    else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0) rc = 1;
    H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

static hid_t group_open(hid_t f, const char *name, int create)
{
    if (H5Lexists(f, name, H5P_DEFAULT) > 0) return H5Gopen2(f, name, H5P_DEFAULT);
    return create ? H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
}

losa_status io_adapters_write(const char *path, int create, const lora_adapters *ad,
                              const model_config *c)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = create ? H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)
                     : H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return h5err(path, create ? "cannot create the adapter file"
                                         : "cannot open the adapter file for writing");
    losa_status st = LOSA_OK;
    hid_t root = group_open(f, "/lora", 1), lay = root >= 0 ? group_open(root, "layers", 1) : -1;
    if (lay < 0) st = h5err(path, "cannot create /lora/layers");
    if (st == LOSA_OK && create) {
        long long step = ad->step;
        int nl = c->n_layers;
        if (attr_write(root, "r_max", H5T_NATIVE_INT, &ad->cfg.r_max) ||
            attr_write(root, "alpha", H5T_NATIVE_FLOAT, &ad->cfg.alpha) ||
            attr_write(root, "r0", H5T_NATIVE_FLOAT, &ad->cfg.r0) ||
            attr_write(root, "dropout", H5T_NATIVE_FLOAT, &ad->cfg.dropout) ||
            attr_write(root, "step", H5T_NATIVE_LLONG, &step) ||
            attr_write(root, "n_layers", H5T_NATIVE_INT, &nl))
            st = h5err(path, "cannot write /lora attributes");
    }
    int R = ad->cfg.r_max;
    for (int l = 0; l < ad->n_layers && st == LOSA_OK; l++) {
        char name[64];
        snprintf(name, sizeof name, "%d", ad->layer0 + l);
        hid_t g = group_open(lay, name, 1);
        if (g < 0 || attr_write(g, "rank", H5T_NATIVE_INT, &ad->rank[l])) {
            st = h5err(path, "cannot write a layer group");
        }
        for (int m = 0; m < MODEL_N_MAPS && st == LOSA_OK; m++) {
            int o, i, k = l * MODEL_N_MAPS + m;
            model_map_shape(c, m, &o, &i);
            size_t oa = ad->A[k] - ad->params, ob = ad->B[k] - ad->params;
            const struct { const char *suf; const float *base; size_t off; int d0, d1; } t[6] = {
                {"A", ad->params, oa, R, i}, {"B", ad->params, ob, o, R},
                {"mA", ad->m, oa, R, i},     {"vA", ad->v, oa, R, i},
                {"mB", ad->m, ob, o, R},     {"vB", ad->v, ob, o, R}};
            for (int j = 0; j < 6 && st == LOSA_OK; j++) {
                snprintf(name, sizeof name, "%s_%s", map_short[m], t[j].suf);
                if (dset_write(g, name, t[j].base + t[j].off, t[j].d0, t[j].d1))
                    st = h5err(path, "cannot write an adapter dataset");
            }
        }
        if (g >= 0) H5Gclose(g);
    }
    if (lay >= 0) H5Gclose(lay);
    if (root >= 0) H5Gclose(root);
    if (H5Fclose(f) < 0 && st == LOSA_OK) st = h5err(path, "error closing the adapter file");
    return st;
}

losa_status io_adapters_read(const char *path, lora_adapters *ad, const model_config *c)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return h5err(path, "cannot open the adapter file");
    losa_status st = LOSA_OK;
    hid_t root = group_open(f, "/lora", 0), lay = root >= 0 ? group_open(root, "layers", 0) : -1;
    int R = 0;
    long long step = 0;
    if (lay < 0) st = h5err(path, "no /lora/layers group (not an adapter file)");
    else if (attr_read(root, "r_max", H5T_NATIVE_INT, &R) ||
             attr_read(root, "step", H5T_NATIVE_LLONG, &step))
        st = h5err(path, "/lora: missing attribute r_max or step");
    else if (R != ad->cfg.r_max)
        st = core_err(LOSA_ERR_FORMAT, "%s: /lora: r_max %d, expected %d", path, R,
                      ad->cfg.r_max);
    for (int l = 0; l < ad->n_layers && st == LOSA_OK; l++) {
        char name[64];
        snprintf(name, sizeof name, "%d", ad->layer0 + l);
        hid_t g = group_open(lay, name, 0);
        int rank = 0;
        if (g < 0 || attr_read(g, "rank", H5T_NATIVE_INT, &rank) || rank < 1 || rank > R)
            st = core_err(LOSA_ERR_FORMAT, "%s: /lora/layers/%s: missing group or bad rank",
                          path, name);
        else
            ad->rank[l] = rank;
        for (int m = 0; m < MODEL_N_MAPS && st == LOSA_OK; m++) {
            int o, i, k = l * MODEL_N_MAPS + m;
            model_map_shape(c, m, &o, &i);
            size_t oa = ad->A[k] - ad->params, ob = ad->B[k] - ad->params;
            struct { const char *suf; float *base; size_t off; int d0, d1; } t[6] = {
                {"A", ad->params, oa, R, i}, {"B", ad->params, ob, o, R},
                {"mA", ad->m, oa, R, i},     {"vA", ad->v, oa, R, i},
                {"mB", ad->m, ob, o, R},     {"vB", ad->v, ob, o, R}};
            for (int j = 0; j < 6 && st == LOSA_OK; j++) {
                char dn[64];
                snprintf(dn, sizeof dn, "%s_%s", map_short[m], t[j].suf);
                int rc = dset_read(g, dn, t[j].base + t[j].off, t[j].d0, t[j].d1);
                if (rc == 2)
                    st = core_err(LOSA_ERR_FORMAT, "%s: /lora/layers/%s/%s: expected shape "
                                  "(%d, %d)", path, name, dn, t[j].d0, t[j].d1);
                else if (rc)
                    st = core_err(LOSA_ERR_FORMAT, "%s: /lora/layers/%s/%s: missing or "
                                  "unreadable", path, name, dn);
            }
        }
        if (g >= 0) H5Gclose(g);
    }
    if (st == LOSA_OK) ad->step = step;
    if (lay >= 0) H5Gclose(lay);
    if (root >= 0) H5Gclose(root);
    H5Fclose(f);
    return st;
}
