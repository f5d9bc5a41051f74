/* losa import SRC --out STORE.h5 [--tokenizer tokenizer.bin] [--dtype keep|fp32|bf16] [--json]
 *   SRC a directory: Hugging Face LLaMA/Mistral (config.json, safetensors,
 *   tokenizer.json); SRC a file: llama2.c checkpoint (needs --tokenizer).
 *   --dtype (io_import_dtype, include/io.h): keep (default) stores a BF16
 *   checkpoint's maps, embedding and head as bf16, an F32 one as fp32;
 *   fp32 / bf16 force the dtype.  llama2.c checkpoints are fp32 (bf16 is
 *   refused for them).
 * Collective: rank 0 imports, every rank agrees on the outcome. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "io.h"

static losa_status import_run(const char *src, const char *out, const char *tokp,
                              io_import_dtype want, model_config *c, model_dtype *got)
{
    *got = MODEL_DTYPE_F32;
    struct stat sb;
    if (stat(src, &sb) != 0)
        return core_err(LOSA_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    struct stat so;
    if (stat(out, &so) == 0 && S_ISDIR(so.st_mode))
        return core_err(LOSA_ERR_ARG, "--out %s: is a directory (expected the path of the "
                                      "store file to write)", out);
    losa_status s;
    if (S_ISDIR(sb.st_mode)) {
        if (tokp)
            return core_err(LOSA_ERR_ARG,
                            "--tokenizer: not used for a HF directory (%s has tokenizer.json)",
                            src);
        s = io_import_hf_dtype(src, out, want, got);
    } else {
        if (!tokp)
            return core_err(LOSA_ERR_ARG,
                            "%s: --tokenizer: required for a llama2.c checkpoint", src);
        if (want == IO_IMPORT_BF16)
            return core_err(LOSA_ERR_ARG, "--dtype bf16: not available for a llama2.c "
                            "checkpoint (%s, fp32; expected keep or fp32)", src);
        s = io_import_llama2c(src, tokp, out);
    }
    if (s != LOSA_OK) return s;
    io_store *st = NULL;
    s = io_store_open(&st, out);
    if (s == LOSA_OK) s = io_store_read_config(st, c);
    io_store_close(&st);
    return s;
}

int cmd_import(dist_ctx *d, int argc, char **argv)
{
    const char *src = NULL, *out = NULL, *tokp = NULL, *v;
    int json = 0;
    io_import_dtype want = IO_IMPORT_KEEP;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--out"))) out = v;
        else if ((v = cli_opt(argc, argv, &i, "--tokenizer"))) tokp = v;
        else if ((v = cli_opt(argc, argv, &i, "--dtype"))) {
            if (!strcmp(v, "keep")) want = IO_IMPORT_KEEP;
            else if (!strcmp(v, "fp32")) want = IO_IMPORT_FP32;
            else if (!strcmp(v, "bf16")) want = IO_IMPORT_BF16;
            else s = core_err(LOSA_ERR_ARG, "--dtype: '%s' (expected keep, fp32 or bf16)", v);
        }
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            s = core_err(LOSA_ERR_ARG,
                         "%s: unknown option or missing value (usage: losa import SRC "
                         "--out STORE.h5 [--tokenizer tokenizer.bin] [--dtype keep|fp32|bf16] "
                         "[--json])",
                         argv[i]);
        else if (!src) src = argv[i];
        else s = core_err(LOSA_ERR_ARG, "%s: only one source is accepted", argv[i]);
    }
    if (s == LOSA_OK && !src)
        s = core_err(LOSA_ERR_ARG, "SRC: missing (usage: losa import SRC --out STORE.h5 "
                                   "[--tokenizer tokenizer.bin] [--json])");
    if (s == LOSA_OK && !out) s = core_err(LOSA_ERR_ARG, "--out: missing (the store to write)");
    model_config c;
    model_dtype got = MODEL_DTYPE_F32;
    double t0 = core_time();
    if (s == LOSA_OK && dist_rank(d) == 0) s = import_run(src, out, tokp, want, &c, &got);
    int rc = cli_fail(d, "import", s);
    if (rc) return rc;
    if (dist_rank(d) == 0) {
        double secs = core_time() - t0;
        int64_t np = model_param_count(&c);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "out", out);
            cJSON_AddStringToObject(o, "source", src);
            cJSON_AddStringToObject(o, "format", tokp ? "llama2c" : "hf");
            cJSON_AddNumberToObject(o, "params", (double)np);
            cJSON_AddNumberToObject(o, "layers", c.n_layers);
            cJSON_AddNumberToObject(o, "dim", c.dim);
            cJSON_AddNumberToObject(o, "vocab_size", c.vocab_size);
            cJSON_AddStringToObject(o, "dtype", model_dtype_name(got));
            cJSON_AddNumberToObject(o, "seconds", secs);
            cli_json_emit(d, o);
        } else {
            printf("imported %s -> %s: %d layers, dim %d, vocab %d, %lld parameters "
                   "(%.1fM), %s weights, in %.2fs\n",
                   src, out, c.n_layers, c.dim, c.vocab_size, (long long)np, np / 1e6,
                   model_dtype_name(got), secs);
        }
        fflush(stdout);
    }
    return 0;
}
