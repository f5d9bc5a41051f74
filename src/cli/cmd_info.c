/* losa info STORE.h5 [--json]: configuration, per-layer shapes, parameter
 * count, sparsity (fraction of exact zeros over the 7 linear maps) per layer
 * and in total.  Collective: rank 0 reads (one map at a time), every rank
 * agrees on the outcome. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "io.h"

typedef struct {
    model_config c;
    char *source;
    int tok_vocab;            /* 0 if the store has no tokenizer */
    int64_t (*zeros)[MODEL_N_MAPS]; /* (L, 7) exact zeros per map */
    int64_t map_size[MODEL_N_MAPS];
    char *sparse_format;      /* of the copies in /sparse (losa sparsify); NULL if none */
    int sparse_maps;
} info_result;

static losa_status info_read(const char *path, info_result *r)
{
    io_store *st = NULL;
    losa_status s = io_store_open(&st, path);
    if (s != LOSA_OK) return s;
    s = io_store_read_config(st, &r->c);
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
            s = io_store_read_tensor(st, name, buf, 2, sh);
            int64_t z = 0;
            for (int64_t k = 0; s == LOSA_OK && k < r->map_size[m]; k++) z += buf[k] == 0.0f;
            r->zeros[l][m] = z;
        }
    core_free(buf);
    io_store_close(&st);
    return s;
}

static void info_print_json(const char *path, const info_result *r)
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
        s = core_err(LOSA_ERR_ARG, "STORE: missing (usage: losa info STORE.h5 [--json])");
    info_result r;
    memset(&r, 0, sizeof r);
    if (s == LOSA_OK && dist_rank(d) == 0) s = info_read(path, &r);
    int rc = cli_fail(d, "info", s);
    if (!rc && dist_rank(d) == 0) {
        if (json) info_print_json(path, &r);
        else info_print_text(path, &r);
        fflush(stdout);
    }
    free(r.source);
    free(r.sparse_format);
    free(r.zeros);
    return rc;
}
