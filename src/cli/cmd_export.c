/* losa export RUN_DIR|STORE.h5 --out DIR [--dtype bf16|f32] [--json]
 *   Writes a Hugging Face LLaMA directory (config.json, model.safetensors,
 *   tokenizer.json, tokenizer_config.json) from a model store; a run
 *   directory means RUN_DIR/model.h5.  DIR must not exist (or be empty); it
 *   appears complete or not at all.
 * Collective: rank 0 exports, every rank agrees on the outcome. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "io.h"

#define EXPORT_USAGE "usage: losa export RUN_DIR|STORE.h5 --out DIR [--dtype bf16|f32] [--json]"


int cmd_export(dist_ctx *d, int argc, char **argv)
{
    const char *src = NULL, *out = NULL, *dts = "bf16", *v;
    int json = 0;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--out"))) out = v;
        else if ((v = cli_opt(argc, argv, &i, "--dtype"))) dts = v;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            s = core_err(LOSA_ERR_ARG, "%s: unknown option or missing value (%s)", argv[i],
                         EXPORT_USAGE);
        else if (!src) src = argv[i];
        else s = core_err(LOSA_ERR_ARG, "%s: only one store is accepted", argv[i]);
    }
    if (s == LOSA_OK && !src) s = core_err(LOSA_ERR_ARG, "STORE: missing (%s)", EXPORT_USAGE);
    if (s == LOSA_OK && !out)
        s = core_err(LOSA_ERR_ARG, "--out: missing (the directory to write)");
    io_export_dtype dt = IO_EXPORT_BF16;
    if (s == LOSA_OK) {
        if (!strcmp(dts, "bf16")) dt = IO_EXPORT_BF16;
        else if (!strcmp(dts, "f32")) dt = IO_EXPORT_F32;
        else s = core_err(LOSA_ERR_ARG, "--dtype: %s (expected bf16 or f32)", dts);
    }
    char store[4200] = "";
    io_export_stats es;
    memset(&es, 0, sizeof es);
    double t0 = core_time();
    if (s == LOSA_OK && dist_rank(d) == 0) s = cli_resolve_store(src, store, sizeof store);
    if (s == LOSA_OK && dist_rank(d) == 0) s = io_export_hf(store, out, dt, &es);
    int rc = cli_fail(d, "export", s);
    if (rc) return rc;
    if (dist_rank(d) == 0) {
        double secs = core_time() - t0;
        double sp = es.map_size ? (double)es.map_zeros / (double)es.map_size : 0.0;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "out", out);
            cJSON_AddStringToObject(o, "store", store);
            cJSON_AddStringToObject(o, "dtype", dt == IO_EXPORT_BF16 ? "bf16" : "f32");
            cJSON_AddNumberToObject(o, "tensors", es.n_tensors);
            cJSON_AddNumberToObject(o, "params", (double)es.n_weights);
            cJSON_AddNumberToObject(o, "bytes", (double)es.st_bytes);
            cJSON_AddNumberToObject(o, "zeros", (double)es.map_zeros);
            cJSON_AddNumberToObject(o, "sparsity", sp);
            cJSON_AddNumberToObject(o, "merges", es.n_merges);
            cJSON_AddNumberToObject(o, "seconds", secs);
            cli_json_emit(d, o);
        } else {
            printf("exported %s -> %s: %d tensors, %lld parameters, %s, %.1f MB, sparsity "
                   "%.4f of the linear maps, %d merges, in %.2fs\n",
                   store, out, es.n_tensors, (long long)es.n_weights,
                   dt == IO_EXPORT_BF16 ? "bf16" : "f32", es.st_bytes / 1e6, sp, es.n_merges,
                   secs);
        }
        fflush(stdout);
    }
    return 0;
}
