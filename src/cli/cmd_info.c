/* losa info STORE.h5 | RUN_DIR [--json]: for a store, configuration,
 * weight dtype (the root attribute; the stored dtype of the maps, embedding
 * and head as found, "mixed" when the maps differ) and bytes on disk,
 * per-layer shapes, parameter count, sparsity (fraction of exact zeros over
 * the 7 linear maps) per layer and in total.  For a run directory (losa
 * run's output.dir), the run as recorded in run.h5 (deck file, mode, the
 * settings that differ from the defaults, layout, git revision, seeds,
 * results), the LoSA steps with a complete checkpoint, then model.h5 as a
 * store; what the directory lacks is said.  Collective: rank 0 reads (one
 * map at a time), every rank agrees on the outcome. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "io.h"
#include "settings.h"

typedef struct {
    model_config c;
    char *source;
    int tok_vocab;            /* 0 if the store has no tokenizer */
    int64_t (*zeros)[MODEL_N_MAPS]; /* (L, 7) exact zeros per map */
    int64_t map_size[MODEL_N_MAPS];
    char *sparse_format;      /* of the copies in /sparse (losa sparsify); NULL if none */
    int sparse_maps;
    model_dtype dtype;        /* root attribute dtype (absent: fp32) */
    const char *maps_dtype;   /* stored dtype of every map: "fp32", "bf16" or "mixed" */
    const char *embed_dtype, *head_dtype; /* "" when absent (tied head) */
    int64_t file_bytes;       /* size of the store file */
} info_result;

/* The stored dtype of tensor name as a string ("" if absent). */
static losa_status info_tensor_dtype(io_store *st, const char *name, const char **out)
{
    *out = "";
    if (!io_store_has(st, name)) return LOSA_OK;
    model_dtype t;
    losa_status s = io_store_tensor_dtype(st, name, &t);
    if (s == LOSA_OK) *out = model_dtype_name(t);
    return s;
}

static losa_status info_read(const char *path, info_result *r)
{
    io_store *st = NULL;
    losa_status s = io_store_open(&st, path);
    if (s != LOSA_OK) return s;
    s = io_store_read_config(st, &r->c);
    struct stat sb;
    r->file_bytes = stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
    if (s == LOSA_OK) s = io_store_read_dtype(st, &r->dtype);
    if (s == LOSA_OK) s = info_tensor_dtype(st, "/embed", &r->embed_dtype);
    if (s == LOSA_OK) s = info_tensor_dtype(st, "/head", &r->head_dtype);
    if (s == LOSA_OK && io_store_read_string(st, "/source", &r->source) != LOSA_OK)
        r->source = strdup("");
    if (s == LOSA_OK && io_store_has(st, "/tokenizer/offsets")) {
        int nd = 0;
        int64_t sh[IO_MAX_DIMS];
        if (io_store_tensor_shape(st, "/tokenizer/offsets", &nd, sh) == LOSA_OK && nd == 1)
            r->tok_vocab = (int)(sh[0] - 1);
    }
    if (s == LOSA_OK && io_store_has(st, "/sparse") &&
        io_store_read_string(st, "/sparse/format", &r->sparse_format) == LOSA_OK)
        io_store_read_attr_int(st, "/sparse/maps", &r->sparse_maps);
    float *buf = NULL;
    if (s == LOSA_OK) {
        const model_config *c = &r->c;
        int64_t maxn = 0;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, (model_map)m, &o, &i);
            r->map_size[m] = (int64_t)o * i;
            if (r->map_size[m] > maxn) maxn = r->map_size[m];
        }
        buf = core_calloc((size_t)maxn, sizeof(float));
        r->zeros = calloc((size_t)c->n_layers, sizeof *r->zeros);
    }
    char name[64];
    for (int l = 0; s == LOSA_OK && l < r->c.n_layers; l++)
        for (int m = 0; s == LOSA_OK && m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&r->c, (model_map)m, &o, &i);
            int64_t sh[2] = {o, i};
            io_layer_name(name, sizeof name, l, model_map_name((model_map)m));
            const char *dt = "";
            s = info_tensor_dtype(st, name, &dt);
            if (s == LOSA_OK) s = io_store_read_tensor(st, name, buf, 2, sh);
            if (!r->maps_dtype) r->maps_dtype = dt;
            else if (strcmp(r->maps_dtype, dt)) r->maps_dtype = "mixed";
            int64_t z = 0;
            for (int64_t k = 0; s == LOSA_OK && k < r->map_size[m]; k++) z += buf[k] == 0.0f;
            r->zeros[l][m] = z;
        }
    core_free(buf);
    io_store_close(&st);
    return s;
}

static cJSON *info_json(const char *path, const info_result *r)
{
    const model_config *c = &r->c;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "store", path);
    cJSON_AddStringToObject(o, "source", r->source ? r->source : "");
    cJSON *cf = cJSON_AddObjectToObject(o, "config");
    const struct { const char *k; double v; } f[] = {
        {"dim", c->dim}, {"hidden_dim", c->hidden_dim}, {"n_layers", c->n_layers},
        {"n_heads", c->n_heads}, {"n_kv_heads", c->n_kv_heads},
        {"vocab_size", c->vocab_size}, {"max_seq_len", c->max_seq_len},
        {"rms_eps", c->rms_eps}, {"rope_theta", c->rope_theta},
        {"tie_embeddings", c->tie_embeddings}, {"bos_id", c->bos_id},
        {"eos_id", c->eos_id},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        cJSON_AddNumberToObject(cf, f[i].k, f[i].v);
    cJSON_AddNumberToObject(o, "params", (double)model_param_count(c));
    cJSON_AddStringToObject(o, "dtype", model_dtype_name(r->dtype));
    cJSON *dts = cJSON_AddObjectToObject(o, "dtypes");
    cJSON_AddStringToObject(dts, "maps", r->maps_dtype ? r->maps_dtype : "");
    cJSON_AddStringToObject(dts, "embed", r->embed_dtype ? r->embed_dtype : "");
    cJSON_AddStringToObject(dts, "head", r->head_dtype ? r->head_dtype : "");
    cJSON_AddNumberToObject(o, "file_bytes", (double)r->file_bytes);
    cJSON_AddNumberToObject(o, "tokenizer_vocab", r->tok_vocab);
    cJSON *maps = cJSON_AddObjectToObject(o, "map_shapes");
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int oo, ii;
        model_map_shape(c, (model_map)m, &oo, &ii);
        int sh[2] = {oo, ii};
        cJSON_AddItemToObject(maps, model_map_name((model_map)m), cJSON_CreateIntArray(sh, 2));
    }
    cJSON *layers = cJSON_AddArrayToObject(o, "layers");
    int64_t tz = 0, tn = 0;
    for (int l = 0; l < c->n_layers; l++) {
        cJSON *ly = cJSON_CreateObject();
        cJSON_AddNumberToObject(ly, "layer", l);
        cJSON *sp = cJSON_AddObjectToObject(ly, "sparsity");
        int64_t z = 0, n = 0;
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            cJSON_AddNumberToObject(sp, model_map_name((model_map)m),
                                    (double)r->zeros[l][m] / (double)r->map_size[m]);
            z += r->zeros[l][m];
            n += r->map_size[m];
        }
        cJSON_AddNumberToObject(ly, "total", (double)z / (double)n);
        cJSON_AddItemToArray(layers, ly);
        tz += z;
        tn += n;
    }
    cJSON_AddNumberToObject(o, "sparsity", (double)tz / (double)tn);
    cJSON_AddNumberToObject(o, "zeros", (double)tz);
    cJSON_AddNumberToObject(o, "map_params", (double)tn);
    cJSON_AddStringToObject(o, "sparse_format", r->sparse_format ? r->sparse_format : "");
    cJSON_AddNumberToObject(o, "sparse_maps", r->sparse_maps);
    return o;
}

static void info_json_print(cJSON *o)
{
    char *txt = cJSON_PrintUnformatted(o);
    printf("%s\n", txt);
    cJSON_free(txt);
    cJSON_Delete(o);
}

static void info_print_text(const char *path, const info_result *r)
{
    const model_config *c = &r->c;
    int64_t np = model_param_count(c);
    printf("store        %s\n", path);
    printf("source       %s\n", r->source ? r->source : "");
    printf("config       dim %d  hidden_dim %d  n_layers %d  n_heads %d  n_kv_heads %d\n",
           c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads);
    printf("             vocab_size %d  max_seq_len %d  rms_eps %g  rope_theta %g\n",
           c->vocab_size, c->max_seq_len, c->rms_eps, c->rope_theta);
    printf("             tie_embeddings %d  bos_id %d  eos_id %d\n", c->tie_embeddings,
           c->bos_id, c->eos_id);
    printf("parameters   %lld (%.2fM)\n", (long long)np, np / 1e6);
    printf("dtype        %s (maps %s, embedding %s, head %s; norms fp32)\n",
           model_dtype_name(r->dtype), r->maps_dtype ? r->maps_dtype : "-",
           r->embed_dtype && r->embed_dtype[0] ? r->embed_dtype : "-",
           r->head_dtype && r->head_dtype[0] ? r->head_dtype : "tied");
    printf("file         %lld bytes (%.1f MB)\n", (long long)r->file_bytes, r->file_bytes / 1e6);
    printf("tokenizer    %s", r->tok_vocab ? "" : "none\n");
    if (r->tok_vocab) printf("%d pieces\n", r->tok_vocab);
    printf("layer shapes (out, in), every layer:");
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, (model_map)m, &o, &i);
        printf(" %s (%d, %d)", model_map_name((model_map)m), o, i);
    }
    printf("; attn_norm, ffn_norm (%d)\n\nsparsity (fraction of exact zeros)\nlayer", c->dim);
    for (int m = 0; m < MODEL_N_MAPS; m++) printf(" %8s", model_map_name((model_map)m));
    printf(" %8s\n", "layer");
    int64_t tz = 0, tn = 0;
    for (int l = 0; l < c->n_layers; l++) {
        int64_t z = 0, n = 0;
        printf("%5d", l);
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            printf(" %8.4f", (double)r->zeros[l][m] / (double)r->map_size[m]);
            z += r->zeros[l][m];
            n += r->map_size[m];
        }
        printf(" %8.4f\n", (double)z / (double)n);
        tz += z;
        tn += n;
    }
    printf("total        %.4f (%lld of %lld map weights are zero)\n", (double)tz / (double)tn,
           (long long)tz, (long long)tn);
    if (r->sparse_format)
        printf("sparse       %d maps kept as %s (losa sparsify)\n", r->sparse_maps, r->sparse_format);
}

/* ---- run directories -------------------------------------------------- */

static const char *const info_groups[] = {"prune", "lora", "losa"};
static const char *const info_fields[] = {"ppl", "sparsity", "seconds", "train_seconds",
                                          "prune_seconds"};
#define INFO_NG 3
#define INFO_NF 5

typedef struct {
    int has_run, has_model, has_ckpt;
    char *deck, *deck_file, *git, *layout, *seeds, *mode, *method, *pattern, *store;
    double target_sparsity, dense_ppl, seconds, steps_done;
    int have_target, have_dense, have_seconds, have_steps_done;
    int have[INFO_NG][INFO_NF];
    double res[INFO_NG][INFO_NF];
    int steps;               /* losa.steps of the deck; 0 when the mode has none */
    int n_complete, last_complete; /* ckpt/step_<t>/COMPLETE */
    deck *dk;                /* the recorded deck, parsed (NULL if absent) */
    info_result model;
} run_info;

static int info_scalar(io_store *st, const char *name, double *x)
{
    int64_t one[1] = {1};
    return io_store_has(st, name) && io_store_read_doubles(st, name, x, 1, one) == LOSA_OK;
}

static void info_count_steps(const char *dir, run_info *ri)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/ckpt", dir);
    DIR *d = opendir(p);
    if (!d) return;
    ri->has_ckpt = 1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int t;
        char tail;
        if (sscanf(e->d_name, "step_%d%c", &t, &tail) != 1 || t < 1) continue;
        snprintf(p, sizeof p, "%s/ckpt/%s/COMPLETE", dir, e->d_name);
        if (access(p, F_OK) != 0) continue;
        ri->n_complete++;
        if (t > ri->last_complete) ri->last_complete = t;
    }
    closedir(d);
}

static losa_status info_read_run(const char *dir, run_info *ri)
{
    char p[4200];
    info_count_steps(dir, ri);
    snprintf(p, sizeof p, "%s/run.h5", dir);
    losa_status s = LOSA_OK;
    if (access(p, F_OK) == 0) {
        io_store *st = NULL;
        s = io_store_open(&st, p);
        if (s != LOSA_OK) return s;
        ri->has_run = 1;
        struct { const char *k; char **v; } str[] = {
            {"/run/deck", &ri->deck}, {"/run/deck_file", &ri->deck_file},
            {"/run/git_revision", &ri->git}, {"/run/layout", &ri->layout},
            {"/run/seeds", &ri->seeds}, {"/run/mode", &ri->mode},
            {"/run/method", &ri->method}, {"/run/pattern", &ri->pattern},
            {"/run/model", &ri->store},
        };
        for (size_t i = 0; i < sizeof str / sizeof str[0]; i++)
            if (io_store_read_string(st, str[i].k, str[i].v) != LOSA_OK) *str[i].v = NULL;
        ri->have_target = info_scalar(st, "/run/target_sparsity", &ri->target_sparsity);
        ri->have_dense = info_scalar(st, "/dense/ppl", &ri->dense_ppl);
        ri->have_seconds = info_scalar(st, "/final/seconds", &ri->seconds);
        ri->have_steps_done = info_scalar(st, "/losa/steps_done", &ri->steps_done);
        for (int g = 0; g < INFO_NG; g++)
            for (int f = 0; f < INFO_NF; f++) {
                snprintf(p, sizeof p, "/%s/%s", info_groups[g], info_fields[f]);
                ri->have[g][f] = info_scalar(st, p, &ri->res[g][f]);
            }
        io_store_close(&st);
        if (!ri->deck)
            return core_err(LOSA_ERR_FORMAT, "%s/run.h5: no /run/deck: not a run file of "
                            "'losa run'", dir);
        snprintf(p, sizeof p, "%s/run.h5:/run/deck", dir);
        s = deck_parse(&ri->dk, p, ri->deck);
        if (s != LOSA_OK) return s;
        losa_settings ls;
        if ((s = losa_settings_from_deck(ri->dk, &ls)) != LOSA_OK) return s;
        if (ls.mode == LOSA_MODE_LOSA || ls.mode == LOSA_MODE_COMPARE) ri->steps = ls.steps;
    }
    snprintf(p, sizeof p, "%s/model.h5", dir);
    if (access(p, F_OK) == 0) {
        s = info_read(p, &ri->model);
        if (s != LOSA_OK) return s;
        ri->has_model = 1;
    }
    if (!ri->has_run && !ri->has_model && !ri->n_complete)
        return core_err(LOSA_ERR_ARG, "%s: a directory but not a run directory (no run.h5, "
                        "model.h5 or ckpt/step_<t>/COMPLETE); losa info takes a model store "
                        "(.h5) or the output.dir of 'losa run'", dir);
    return LOSA_OK;
}

static void run_info_free(run_info *ri)
{
    char **str[] = {&ri->deck, &ri->deck_file, &ri->git, &ri->layout, &ri->seeds,
                    &ri->mode, &ri->method, &ri->pattern, &ri->store};
    for (size_t i = 0; i < sizeof str / sizeof str[0]; i++) free(*str[i]);
    deck_free(&ri->dk);
    free(ri->model.source);
    free(ri->model.sparse_format);
    free(ri->model.zeros);
}

/* Keys of the recorded deck whose value differs from the schema's default
 * (required keys always). */
static int info_changed(const deck *dk, int i)
{
    const deck_key *k = &deck_schema[i];
    return !k->def || strcmp(deck_str(dk, k->key), k->def) != 0;
}

static const char *nz(const char *s) { return s ? s : "?"; }

static void info_run_missing(const char *dir, const run_info *ri, char *buf, size_t n)
{
    buf[0] = 0;
    if (!ri->has_run)
        snprintf(buf, n, "no run.h5: the run has not finished (%d LoSA step%s complete in "
                 "%s/ckpt); 'losa run' with the same deck resumes it", ri->n_complete,
                 ri->n_complete == 1 ? "" : "s", dir);
    else if (!ri->has_model)
        snprintf(buf, n, "no model.h5 (mode %s writes none, or it was removed)", nz(ri->mode));
}

static void info_print_run_text(const char *dir, const run_info *ri)
{
    char miss[600];
    info_run_missing(dir, ri, miss, sizeof miss);
    printf("run directory %s\n", dir);
    if (ri->has_run) {
        printf("deck         %s (as run, after --set: %s/run.h5 /run/deck)\n", nz(ri->deck_file),
               dir);
        printf("mode         %s: %s %s", nz(ri->mode), nz(ri->method), nz(ri->pattern));
        if (ri->have_target) printf(", target sparsity %g", ri->target_sparsity);
        printf("\nmodel store  %s\nlayout       %s\ngit          %s\nseeds        %s\n",
               nz(ri->store), nz(ri->layout), nz(ri->git), nz(ri->seeds));
        printf("settings     (keys that differ from the defaults, input/README.md)\n");
        for (int i = 0; i < deck_schema_len; i++)
            if (info_changed(ri->dk, i))
                printf("             %s = %s\n", deck_schema[i].key,
                       deck_str(ri->dk, deck_schema[i].key));
    }
    if (ri->steps > 0)
        printf("steps        %d of %d LoSA steps complete%s\n", ri->n_complete, ri->steps,
               ri->last_complete ? "" : " (none checkpointed)");
    else if (ri->has_run)
        printf("steps        none (mode %s has no LoSA steps)\n", nz(ri->mode));
    else
        printf("steps        %d LoSA step%s complete (last: ckpt/step_%d)\n", ri->n_complete,
               ri->n_complete == 1 ? "" : "s", ri->last_complete);
    if (ri->has_run) {
        printf("results      %-6s %12s %9s %10s\n", "", "perplexity", "sparsity", "seconds");
        if (ri->have_dense) printf("             %-6s %12.4f\n", "dense", ri->dense_ppl);
        for (int g = 0; g < INFO_NG; g++) {
            if (!ri->have[g][0]) continue;
            printf("             %-6s %12.4f %9.4f %10.1f\n", info_groups[g], ri->res[g][0],
                   ri->res[g][1], ri->res[g][2]);
        }
        if (ri->have_seconds) printf("             total %34.1f\n", ri->seconds);
    }
    if (miss[0]) printf("missing      %s\n", miss);
    if (ri->has_model) {
        char p[4200];
        snprintf(p, sizeof p, "%s/model.h5", dir);
        printf("\n");
        info_print_text(p, &ri->model);
    }
}

static cJSON *info_run_json(const char *dir, const run_info *ri)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "run_dir", dir);
    cJSON_AddBoolToObject(o, "run_file", ri->has_run);
    if (ri->has_run) {
        struct { const char *k; const char *v; } str[] = {
            {"deck_file", ri->deck_file}, {"mode", ri->mode}, {"method", ri->method},
            {"pattern", ri->pattern}, {"model_store", ri->store}, {"layout", ri->layout},
            {"git_revision", ri->git}, {"seeds", ri->seeds}, {"deck", ri->deck},
        };
        for (size_t i = 0; i < sizeof str / sizeof str[0]; i++)
            cJSON_AddStringToObject(o, str[i].k, nz(str[i].v));
        if (ri->have_target) cJSON_AddNumberToObject(o, "target_sparsity", ri->target_sparsity);
        cJSON *set = cJSON_AddObjectToObject(o, "settings");
        for (int i = 0; i < deck_schema_len; i++)
            if (info_changed(ri->dk, i))
                cJSON_AddStringToObject(set, deck_schema[i].key,
                                        deck_str(ri->dk, deck_schema[i].key));
        cJSON *res = cJSON_AddObjectToObject(o, "results");
        if (ri->have_dense) cJSON_AddNumberToObject(cJSON_AddObjectToObject(res, "dense"), "ppl",
                                                    ri->dense_ppl);
        for (int g = 0; g < INFO_NG; g++) {
            if (!ri->have[g][0]) continue;
            cJSON *gr = cJSON_AddObjectToObject(res, info_groups[g]);
            for (int f = 0; f < INFO_NF; f++)
                if (ri->have[g][f]) cJSON_AddNumberToObject(gr, info_fields[f], ri->res[g][f]);
        }
        if (ri->have_seconds) cJSON_AddNumberToObject(o, "seconds", ri->seconds);
    }
    cJSON_AddNumberToObject(o, "steps", ri->steps);
    cJSON_AddNumberToObject(o, "steps_complete", ri->n_complete);
    cJSON_AddNumberToObject(o, "last_complete_step", ri->last_complete);
    char miss[600];
    info_run_missing(dir, ri, miss, sizeof miss);
    cJSON_AddStringToObject(o, "missing", miss);
    if (ri->has_model) {
        char p[4200];
        snprintf(p, sizeof p, "%s/model.h5", dir);
        cJSON_AddItemToObject(o, "model", info_json(p, &ri->model));
    } else {
        cJSON_AddNullToObject(o, "model");
    }
    return o;
}

int cmd_info(dist_ctx *d, int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            s = core_err(LOSA_ERR_ARG, "%s: unknown option (usage: losa info STORE.h5 [--json])",
                         argv[i]);
        else if (!path) path = argv[i];
        else s = core_err(LOSA_ERR_ARG, "%s: only one store is accepted", argv[i]);
    }
    if (s == LOSA_OK && !path)
        s = core_err(LOSA_ERR_ARG, "STORE: missing (usage: losa info STORE.h5|RUN_DIR [--json])");
    info_result r;
    memset(&r, 0, sizeof r);
    run_info ri;
    memset(&ri, 0, sizeof ri);
    struct stat sb;
    int is_dir = s == LOSA_OK && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (s == LOSA_OK && dist_rank(d) == 0) s = is_dir ? info_read_run(path, &ri) : info_read(path, &r);
    int rc = cli_fail(d, "info", s);
    if (!rc && dist_rank(d) == 0) {
        if (is_dir && json) info_json_print(info_run_json(path, &ri));
        else if (is_dir) info_print_run_text(path, &ri);
        else if (json) info_json_print(info_json(path, &r));
        else info_print_text(path, &r);
        fflush(stdout);
    }
    run_info_free(&ri);
    free(r.source);
    free(r.sparse_format);
    free(r.zeros);
    return rc;
}
