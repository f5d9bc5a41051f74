/* losa sparsify STORE.h5|RUN_DIR [--format bitmap|bitmap-bf16|csr|2:4] [--all] [--json]
 *   Keeps sparse copies of the pruned linear maps in the store (/sparse,
 *   layout in include/io.h), so that `losa generate` / `losa eval` read them
 *   instead of converting every map at each load.  A map is kept when
 *   sparse_profitable(format, density, 1) (the batch-1 decode decision), or every
 *   map with --all.  bitmap (default), csr and 2:4 are exact (a 2:4 map
 *   asked as bitmap is kept in the 2:4 format; --format 2:4 refuses a map
 *   that is not 2:4); bitmap-bf16 rounds the values, and generate / eval use
 *   the stored copies as they are.
 *   The store is rewritten whole: everything it holds except an old /sparse
 *   is copied into a temporary file next to it, the copies are added, and
 *   the file is renamed over the store; on any error the store is unchanged.
 *   A run directory means RUN_DIR/model.h5.
 * Collective: rank 0 works (one map in memory at a time), every rank agrees
 * on the outcome. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "io.h"

#define SPARSIFY_USAGE \
    "usage: losa sparsify STORE.h5|RUN_DIR [--format bitmap|bitmap-bf16|csr|2:4] [--all] [--json]"

typedef struct {
    int maps, kept;           /* maps in the model, maps kept sparse */
    int kept_nm;              /* of those, in the 2:4 format (sparse_format_for) */
    char format[32];          /* of the kept copies: fmt, "2:4" or "<fmt>+2:4" */
    int64_t sparse_bytes;     /* bytes of the kept copies (sparse_matrix_bytes) */
    int64_t dense_bytes;      /* fp32 bytes of the kept maps */
    int64_t size_before, size_after;
} sparsify_stats;


/* Every map of in, converted where wanted, into out. */
static losa_status sparsify_maps(io_store *in, io_store *out, const model_config *c,
                                 sparse_format fmt, int all, sparsify_stats *r)
{
    int64_t maxn = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, (model_map)m, &o, &i);
        if ((int64_t)o * i > maxn) maxn = (int64_t)o * i;
    }
    float *W = core_calloc((size_t)maxn, sizeof(float)); /* (out, in) of one map */
    losa_status s = LOSA_OK;
    char name[256];
    for (int l = 0; s == LOSA_OK && l < c->n_layers; l++)
        for (int m = 0; s == LOSA_OK && m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            int64_t sh[2] = {o, i};
            io_layer_name(name, sizeof name, l, model_map_name((model_map)m));
            s = io_store_read_tensor(in, name, W, 2, sh);
            if (s != LOSA_OK) break;
            r->maps++;
            sparse_format f = sparse_format_for(W, o, i, fmt, 1);
            if (!all && !sparse_profitable(f, sparse_density(W, (int64_t)o * i), 1)) continue;
            sparse_matrix sm;
            s = sparse_matrix_from_dense(&sm, W, o, i, f);
            if (s != LOSA_OK) { /* name the map (the message is copied: core_err reuses it) */
                char msg[600];
                snprintf(msg, sizeof msg, "%s", core_errmsg());
                s = core_err(s, "layer %d %s: %s", l, model_map_name((model_map)m), msg);
                break;
            }
            io_sparse_name(name, sizeof name, l, model_map_name((model_map)m));
            s = io_store_write_sparse(out, name, &sm);
            r->kept++;
            r->kept_nm += sm.fmt == SPARSE_FORMAT_NM24;
            r->sparse_bytes += (int64_t)sparse_matrix_bytes(&sm);
            r->dense_bytes += (int64_t)o * i * (int64_t)sizeof(float);
            sparse_matrix_free(&sm);
        }
    core_free(W);
    if (r->kept_nm == 0 || fmt == SPARSE_FORMAT_NM24)
        snprintf(r->format, sizeof r->format, "%s", sparse_format_name(fmt));
    else if (r->kept_nm == r->kept)
        snprintf(r->format, sizeof r->format, "2:4");
    else
        snprintf(r->format, sizeof r->format, "%s+2:4", sparse_format_name(fmt));
    if (s == LOSA_OK) s = io_store_write_string(out, "/sparse/format", r->format);
    if (s == LOSA_OK) s = io_store_write_attr_int(out, "/sparse/maps", r->kept);
    if (s == LOSA_OK) s = io_store_write_attr_int(out, "/sparse/all", all);
    return s;
}

static int64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

/* Rank 0: the whole rewrite of store. */
static losa_status sparsify_store(const char *store, sparse_format fmt, int all,
                                  sparsify_stats *r)
{
    io_store *in = NULL, *out = NULL;
    model_config c;
    r->size_before = file_size(store);
    losa_status s = io_store_open(&in, store);
    if (s == LOSA_OK) s = io_store_read_config(in, &c);
    if (s == LOSA_OK) s = io_store_create(&out, store);
    if (s == LOSA_OK) s = io_store_copy(out, in, "/sparse");
    if (s == LOSA_OK) s = sparsify_maps(in, out, &c, fmt, all, r);
    io_store_close(&in);
    if (s == LOSA_OK) s = io_store_commit(&out);
    io_store_close(&out); /* after a failure: removes the temporary file */
    r->size_after = file_size(store);
    return s;
}

/* Rank 0: one writer at a time: the run directory's lock (shared with losa
 * run) when src is a run directory, else store.lock. */
static losa_status sparsify_lock(const char *src, const char *store, core_lock *lk)
{
    struct stat sb;
    char path[1100], what[1200];
    if (stat(src, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(path, sizeof path, "%s/.lock", src);
        snprintf(what, sizeof what, "run directory %s", src);
    } else {
        snprintf(path, sizeof path, "%s.lock", store);
        snprintf(what, sizeof what, "store %s", store);
    }
    return core_lock_acquire(lk, path, what);
}

int cmd_sparsify(dist_ctx *d, int argc, char **argv)
{
    const char *src = NULL, *v;
    int json = 0, all = 0;
    sparse_format fmt = SPARSE_FORMAT_BITMAP;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--format"))) s = sparse_format_from_string(v, &fmt);
        else if (!strcmp(argv[i], "--all")) all = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            s = core_err(LOSA_ERR_ARG, "%s: unknown option or missing value (%s)", argv[i],
                         SPARSIFY_USAGE);
        else if (!src) src = argv[i];
        else s = core_err(LOSA_ERR_ARG, "%s: only one store is accepted", argv[i]);
    }
    if (s == LOSA_OK && !src) s = core_err(LOSA_ERR_ARG, "STORE: missing (%s)", SPARSIFY_USAGE);
    char store[4200] = "";
    sparsify_stats r;
    memset(&r, 0, sizeof r);
    double t0 = core_time();
    if (s == LOSA_OK && dist_rank(d) == 0) s = cli_resolve_store(src, store, sizeof store);
    core_lock lock = {.fd = -1};
    if (s == LOSA_OK && dist_rank(d) == 0) s = sparsify_lock(src, store, &lock);
    if (s == LOSA_OK && dist_rank(d) == 0) s = sparsify_store(store, fmt, all, &r);
    core_lock_release(&lock);
    int rc = cli_fail(d, "sparsify", s);
    if (rc || dist_rank(d) != 0) return rc;
    double secs = core_time() - t0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "store", store);
        cJSON_AddStringToObject(o, "format", r.format);
        cJSON_AddBoolToObject(o, "all", all);
        cJSON_AddNumberToObject(o, "maps", r.maps);
        cJSON_AddNumberToObject(o, "sparse_maps", r.kept);
        cJSON_AddNumberToObject(o, "sparse_bytes", (double)r.sparse_bytes);
        cJSON_AddNumberToObject(o, "dense_bytes", (double)r.dense_bytes);
        cJSON_AddNumberToObject(o, "file_bytes_before", (double)r.size_before);
        cJSON_AddNumberToObject(o, "file_bytes_after", (double)r.size_after);
        cJSON_AddNumberToObject(o, "seconds", secs);
        cli_json_emit(d, o);
    } else {
        core_log("%s: %d of %d maps kept as %s (%.1f MB for %.1f MB dense), file %.1f -> %.1f MB, "
                 "%.2fs\n", store, r.kept, r.maps, r.format, r.sparse_bytes / 1e6,
                 r.dense_bytes / 1e6, r.size_before / 1e6, r.size_after / 1e6, secs);
    }
    return 0;
}
