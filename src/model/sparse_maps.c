/* model/sparse_maps: which linear maps of a stage run on the sparse kernels
 * (include/sparse.h) and their sparse copies.  The policy: mode ON uses
 * every map at every row count, AUTO a map where
 * sparse_profitable_at(format, density, rows, resident), resident when the
 * stage's maps fit the L2 caches of the threads, OFF none.  Every forward asks here
 * (model_sparse_linear) when a stage has copies attached (s->sparse). */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "model.h"

static const char *mode_names[] = {"auto", "on", "off"};

const char *model_sparse_mode_name(model_sparse_mode m)
{
    return (unsigned)m < 3 ? mode_names[m] : "?";
}

losa_status model_sparse_mode_from_string(const char *str, model_sparse_mode *m)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(str, mode_names[i])) {
            *m = (model_sparse_mode)i;
            return LOSA_OK;
        }
    return core_err(LOSA_ERR_ARG, "--sparse: expected auto, on or off, got '%s'", str);
}

losa_status model_sparse_build(model_sparse *sp, const model_stage *s,
                               model_sparse_mode mode, int batch, sparse_format fmt)
{
    return model_sparse_build_from(sp, s, mode, batch, fmt, NULL, NULL);
}

/* The sparse copy of map m of layer l (density dens) into *mat: taken from
 * src when it has one (*found = 1; checked against the map's shape and
 * non-zero count), else converted from the dense weights in format fmt
 * (the 2:4 format for a 2:4 map asked as fp32 bitmap where it pays at
 * batch, sparse_format_for);
 * then given its kernel panel. */
static losa_status map_copy(sparse_matrix *mat, const model_stage *s, int l, model_map m,
                            double dens, sparse_format fmt, int batch,
                            model_sparse_source_fn src, void *ctx, int *found)
{
    int o, i, gl = s->layer0 + l;
    model_map_shape(&s->cfg, m, &o, &i);
    int64_t ni = (int64_t)o * i;
    *found = 0;
    losa_status st = src ? src(ctx, gl, m, mat, found) : LOSA_OK;
    if (st == LOSA_OK && *found &&
        (mat->out != o || mat->in != i || (double)mat->nnz / (double)ni != dens)) {
        st = core_err(LOSA_ERR_FORMAT, "sparse copy of layer %d %s: shape (%d, %d), "
                      "%lld non-zeros; the weights have (%d, %d), %.0f (stale copy: "
                      "run losa sparsify again)", gl, model_map_name(m), mat->out, mat->in,
                      (long long)mat->nnz, o, i, dens * (double)ni);
        sparse_matrix_free(mat);
    }
    if (st == LOSA_OK && !*found)
        st = sparse_matrix_from_dense(mat, s->layers[l].w[m], o, i,
                                      sparse_format_for(s->layers[l].w[m], o, i, fmt, batch));
    if (st == LOSA_OK) st = sparse_matrix_panel(mat, 0); /* for the kernels */
    return st;
}

losa_status model_sparse_build_from(model_sparse *sp, const model_stage *s,
                                    model_sparse_mode mode, int batch, sparse_format fmt,
                                    model_sparse_source_fn src, void *ctx)
{
    memset(sp, 0, sizeof *sp);
    if (model_stage_require_f32(s, "sparse maps (--sparse)") != LOSA_OK) return LOSA_ERR_ARG;
    if ((unsigned)mode > MODEL_SPARSE_OFF)
        return core_err(LOSA_ERR_ARG, "sparse model: bad mode %d", (int)mode);
    sp->mode = mode;
    sp->n_layers = s->n_layers;
    size_t n = (size_t)(s->n_layers > 0 ? s->n_layers : 1) * MODEL_N_MAPS;
    sp->mat = core_calloc(n, sizeof(sparse_matrix));
    sp->has = core_calloc(n, 1);
    sp->density = core_calloc(n, sizeof(double));
    /* the stage's fp32 map bytes, read every decode step */
    size_t maps = (size_t)s->n_layers * (size_t)model_map_weights(&s->cfg) * sizeof(float);
#ifdef _OPENMP
    sp->resident = sparse_cache_resident(maps, omp_get_max_threads());
#else
    sp->resident = sparse_cache_resident(maps, 1);
#endif
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i, found;
            model_map_shape(&s->cfg, m, &o, &i);
            size_t k = (size_t)l * MODEL_N_MAPS + m;
            double dens = sparse_density(s->layers[l].w[m], (int64_t)o * i);
            sp->density[k] = dens;
            if (mode == MODEL_SPARSE_OFF) continue;
            sparse_format f = sparse_format_for(s->layers[l].w[m], o, i, fmt, batch);
            if (mode == MODEL_SPARSE_AUTO && !sparse_profitable_at(f, dens, batch, sp->resident))
                continue;
            losa_status st = map_copy(&sp->mat[k], s, l, (model_map)m, dens, fmt, batch, src,
                                      ctx, &found);
            if (st != LOSA_OK) {
                model_sparse_free(sp);
                return st;
            }
            /* a stored copy may be in another format than the one converted */
            if (mode == MODEL_SPARSE_AUTO &&
                !sparse_profitable_at(sp->mat[k].fmt, dens, batch, sp->resident)) {
                sparse_matrix_free(&sp->mat[k]);
                continue;
            }
            sp->has[k] = 1;
            sp->n_converted++;
            sp->n_loaded += found;
            sp->bytes += sparse_matrix_bytes(&sp->mat[k]);
            sp->dense_bytes += (size_t)o * i * sizeof(float);
        }
    return LOSA_OK;
}

void model_sparse_free(model_sparse *sp)
{
    if (!sp) return;
    if (sp->mat && sp->has)
        for (int k = 0; k < sp->n_layers * MODEL_N_MAPS; k++)
            if (sp->has[k]) sparse_matrix_free(&sp->mat[k]);
    core_free(sp->mat);
    core_free(sp->has);
    core_free(sp->density);
    memset(sp, 0, sizeof *sp);
}

const sparse_matrix *model_sparse_map(const model_sparse *sp, int l, model_map m, int64_t N)
{
    size_t k = (size_t)l * MODEL_N_MAPS + m;
    if (!sp || l >= sp->n_layers || !sp->has[k]) return NULL;
    if (sp->mode != MODEL_SPARSE_ON &&
        !sparse_profitable_at(sp->mat[k].fmt, sp->density[k], (int)N, sp->resident))
        return NULL;
    return &sp->mat[k];
}

int model_sparse_linear(float *y, const float *x, const model_sparse *sp, int l,
                        model_map m, int64_t N)
{
    const sparse_matrix *mat = model_sparse_map(sp, l, m, N);
    if (!mat) return 0;
    if (N == 1) sparse_matvec(y, mat, x);
    else sparse_matmul(y, mat, x, (int)N);
    return 1;
}
