/* Shared pieces of the subcommands: decks (rank 0 reads, everyone parses the
 * same text), loading a model store into this rank's stage, the tokenizer,
 * reading and tokenizing text files. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <limits.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kernels.h"
#include "io.h"
#include "losa.h"

losa_status cli_bcast_file(dist_ctx *d, const char *path, char **data,
                           size_t *size)
{
    return dist_read_file(d, path, data, size);
}

losa_status cli_load_deck(dist_ctx *d, const char *path, int argc, char **argv,
                          deck **dk)
{
    char *text;
    size_t n;
    *dk = NULL;
    losa_status s = cli_bcast_file(d, path, &text, &n);
    if (s != LOSA_OK) return s;
    s = deck_parse_n(dk, path, text, n);
    free(text);
    for (int i = 1; s == LOSA_OK && i < argc; i++) {
        const char *v = cli_opt(argc, argv, &i, "--set");
        if (v) s = deck_set(*dk, v);
    }
    /* every rank parsed the same text: they agree, but keep the contract */
    s = dist_agree(d, s);
    if (s != LOSA_OK) deck_free(dk);
    return s;
}

losa_status cli_load_model(dist_ctx *d, const char *path, model_stage *st,
                           tok_tokenizer *tok)
{
    return cli_load_model_dtype(d, path, MODEL_DTYPE_F32, st, tok);
}

/* The bf16 line of cli_stage_to_bf16 / cli_load_model_dtype: the maps' and
 * the head's weights, the packed bytes (summed over the stages of one
 * replica) and the non-zero weights that became zero. */
static void cli_log_bf16(dist_ctx *d, int64_t lost, const model_stage *st, const char *how)
{
    double head = st->has_head && st->head_bf16 ? (double)st->cfg.vocab_size * st->cfg.dim : 0;
    double v[4] = {(double)lost, (double)st->n_params_bf16 - head, head, (double)st->bytes_bf16};
    dist_sum_doubles(d, v, 4); /* every replica holds the model */
    for (int i = 0; i < 4; i++) v[i] /= dist_n_replicas(d);
    char layout[64];
    if (st->bf16_packed) snprintf(layout, sizeof layout, "packed for the %s GEMM", kern_gemm_engine());
    else snprintf(layout, sizeof layout, "plain rows");
    core_log("bf16 maps: %.0f weights, head: %.0f weights (%.1f MB %s, %s), "
             "%.0f non-zero weights rounded to zero; embedding and norms stay fp32\n", v[1], v[2],
             v[3] / 1e6, layout, how, v[0]);
}

/* The stage of this rank in dtype t read from path (plain layout);
 * *lost: map weights of an fp32 store that rounded to zero (this rank). */
static losa_status load_stage(dist_ctx *d, const char *path, model_dtype t, model_stage *st,
                              tok_tokenizer *tok, int64_t *lost)
{
    io_store *io = NULL;
    model_config c;
    *lost = 0;
    memset(st, 0, sizeof *st);
    losa_status s = io_store_open(&io, path);
    if (s == LOSA_OK) s = io_store_read_config(io, &c);
    if (s == LOSA_OK && dist_n_stages(d) > c.n_layers)
        s = core_err(LOSA_ERR_ARG, "%s: %d pipeline stages for a model with %d layers "
                     "(run with at most %d ranks per replica)", path, dist_n_stages(d),
                     c.n_layers, c.n_layers);
    if (s == LOSA_OK)
        s = model_stage_build_dtype(st, &c, dist_stage(d), dist_n_stages(d), dist_stage_layers(d), t);
    if (s == LOSA_OK) s = io_store_read_stage_lost(io, st, lost);
    if (s == LOSA_OK && tok) s = io_store_read_tokenizer(io, tok);
    io_store_close(&io);
    s = dist_agree(d, s);
    if (s != LOSA_OK) model_stage_free(st);
    return s;
}

losa_status cli_load_model_dtype(dist_ctx *d, const char *path, model_dtype t, model_stage *st,
                                 tok_tokenizer *tok)
{
    int64_t lost = 0;
    losa_status s = load_stage(d, path, t, st, tok, &lost);
    if (s != LOSA_OK || t != MODEL_DTYPE_BF16) return s;
    /* the plain bf16 maps and head rows packed for the engine */
    int64_t lost2 = 0;
    s = dist_agree(d, model_stage_pack_bf16(st, &lost2));
    if (s != LOSA_OK) {
        model_stage_free(st);
        return s;
    }
    cli_log_bf16(d, lost + lost2, st, "maps read as bf16, no fp32 copy");
    return LOSA_OK;
}

losa_status cli_load_model_plain(dist_ctx *d, const char *path, model_dtype t, model_stage *st,
                                 tok_tokenizer *tok)
{
    int64_t lost = 0;
    losa_status s = load_stage(d, path, t, st, tok, &lost);
    if (s != LOSA_OK || t != MODEL_DTYPE_BF16) return s;
    double v[2] = {(double)lost, (double)st->n_params_bf16};
    dist_sum_doubles(d, v, 2); /* every replica holds the model */
    for (int k = 0; k < 2; k++) v[k] /= dist_n_replicas(d);
    core_log("bf16 maps and head: %.0f weights (%.1f MB, plain row-major, no fp32 copy), %.0f "
             "non-zero weights rounded to zero; embedding and norms stay fp32\n", v[1],
             v[1] * 2 / 1e6, v[0]);
    return LOSA_OK;
}

losa_status cli_stage_to_bf16(dist_ctx *d, model_stage *st, int decode)
{
    int64_t lost = 0;
    losa_status s = decode ? model_stage_to_bf16(st, &lost) : model_stage_pack_bf16(st, &lost);
    s = dist_agree(d, s);
    if (s != LOSA_OK) {
        model_stage_free(st);
        return s;
    }
    cli_log_bf16(d, lost, st, "fp32 copies freed");
    return LOSA_OK;
}

/* model_sparse_source_fn over an open store. */
static losa_status cli_sparse_source(void *ctx, int gl, model_map m, sparse_matrix *out,
                                     int *found)
{
    io_store *io = ctx;
    char name[256];
    io_sparse_name(name, sizeof name, gl, model_map_name(m));
    *found = 0;
    if (!io_store_has(io, name)) return LOSA_OK;
    losa_status s = io_store_read_sparse(io, name, out);
    *found = s == LOSA_OK;
    return s;
}

losa_status cli_sparse_build(dist_ctx *d, const char *path, const model_stage *st,
                             model_sparse *sp, model_sparse_mode mode, int batch,
                             sparse_format fmt)
{
    io_store *io = NULL;
    losa_status s = LOSA_OK;
    if (mode != MODEL_SPARSE_OFF) s = io_store_open(&io, path);
    if (s == LOSA_OK) {
        int stored = io && io_store_has(io, "/sparse");
        s = model_sparse_build_from(sp, st, mode, batch, fmt, stored ? cli_sparse_source : NULL,
                                    io);
    } else {
        memset(sp, 0, sizeof *sp);
    }
    io_store_close(&io);
    s = dist_agree(d, s);
    if (s != LOSA_OK) model_sparse_free(sp);
    return s;
}

losa_status cli_tokenize_file(dist_ctx *d, const tok_tokenizer *tok,
                              const char *path, int bos, int **ids, int64_t *n)
{
    return losa_tokenize_file(d, tok, path, bos, ids, n);
}

/* Prints (rank 0) and frees the one JSON object of --json output.  cJSON
 * copies string bytes as they are, so bytes that are not UTF-8 (generated
 * text, arguments, file names) are replaced by U+FFFD here: every string
 * byte >= 0x80 is inside a string, so the repair keeps the structure. */
void cli_json_emit(dist_ctx *d, cJSON *o)
{
    char *js = cJSON_PrintUnformatted(o);
    char *ok = js ? core_utf8_repair(js, strlen(js), NULL) : NULL;
    cli_json_print(d, ok ? ok : "{}");
    free(ok);
    free(js);
    cJSON_Delete(o);
}

/* A run directory stands for its model.h5. */
losa_status cli_resolve_store(const char *src, char *store, size_t n)
{
    struct stat sb;
    if (stat(src, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(store, n, "%s/model.h5", src);
        if (stat(store, &sb) != 0)
            return core_err(LOSA_ERR_IO, "%s: missing (a run directory holds the final model "
                            "there once the run has finished)", store);
    } else {
        snprintf(store, n, "%s", src);
    }
    return LOSA_OK;
}

/* --json mode (set by main), whether an object was printed, and the last
 * error message a command reported (for the error object). */
static int json_on, json_done;
static char last_error[1200];

/* JSON output: rank 0 prints exactly one object on stdout. */
void cli_json_print(dist_ctx *d, const char *json)
{
    json_done = 1;
    if (dist_rank(d) != 0) return;
    fputs(json, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

void cli_json_mode(int on)
{
    json_on = on;
}

void cli_json_error(dist_ctx *d, int rc)
{
    if (!json_on || json_done || rc == 0) return;
    const char *msg = last_error[0] ? last_error : core_errmsg();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg && msg[0] ? msg : "failed");
    cJSON_AddNumberToObject(o, "code", rc);
    cli_json_emit(d, o);
}

int cli_fail(dist_ctx *d, const char *cmd, losa_status s)
{
    losa_status g = dist_agree(d, s);
    if (g == LOSA_OK) return 0;
    snprintf(last_error, sizeof last_error, "%s", core_errmsg());
    if (dist_rank(d) == 0) fprintf(stderr, "losa %s: %s\n", cmd, last_error);
    return 1;
}

int cli_error(dist_ctx *d, const char *cmd, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    if (dist_rank(d) == 0) fprintf(stderr, "losa%s%s: %s\n", cmd ? " " : "", cmd ? cmd : "",
                                   last_error);
    return rc;
}

/* Strict numbers: one token, nothing before or after it. */
static int plain_start(const char *s)
{
    return s && s[0] && !isspace((unsigned char)s[0]);
}

losa_status cli_int(const char *flag, const char *s, long lo, long hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long x = plain_start(s) ? strtol(s, &end, 10) : 0;
    if (!end || end == s || *end || errno == ERANGE || x < lo || x > hi || x < INT_MIN ||
        x > INT_MAX)
        return core_err(LOSA_ERR_ARG, "%s: expected an integer in [%ld, %ld], got '%s'", flag,
                        lo, hi, s ? s : "");
    *out = (int)x;
    return LOSA_OK;
}

losa_status cli_u64(const char *flag, const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = s && isdigit((unsigned char)s[0]) ? strtoull(s, &end, 10) : 0;
    if (!end || end == s || *end || errno == ERANGE)
        return core_err(LOSA_ERR_ARG, "%s: expected an integer in [0, %llu], got '%s'", flag,
                        (unsigned long long)UINT64_MAX, s ? s : "");
    *out = (uint64_t)x;
    return LOSA_OK;
}

losa_status cli_double(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double x = plain_start(s) ? strtod(s, &end) : 0;
    if (!end || end == s || *end || errno == ERANGE || !isfinite(x) || x < lo || x > hi)
        return core_err(LOSA_ERR_ARG, "%s: expected a number in [%g, %g], got '%s'", flag, lo,
                        hi, s ? s : "");
    *out = x;
    return LOSA_OK;
}

losa_status cli_int_pair(const char *flag, const char *s, char sep, long lo, long hi, int *a,
                         int *b)
{
    char head[32];
    const char *x = s ? strchr(s, sep) : NULL;
    size_t n = x ? (size_t)(x - s) : 0;
    int u = 0, w = 0;
    if (x && n < sizeof head) {
        memcpy(head, s, n);
        head[n] = 0;
    }
    if (!x || n >= sizeof head || cli_int(flag, head, lo, hi, &u) != LOSA_OK ||
        cli_int(flag, x + 1, lo, hi, &w) != LOSA_OK)
        return core_err(LOSA_ERR_ARG, "%s: expected A%cB with integers in [%ld, %ld], got '%s'",
                        flag, sep, lo, hi, s ? s : "");
    *a = u;
    *b = w;
    return LOSA_OK;
}

losa_status cli_fraction(const char *flag, const char *s, double *out)
{
    double x = 0;
    if (cli_double(flag, s, 0, 1, &x) != LOSA_OK || x >= 1)
        return core_err(LOSA_ERR_ARG, "%s: expected a number in [0, 1), got '%s'", flag,
                        s ? s : "");
    *out = x;
    return LOSA_OK;
}

losa_status cli_float(const char *flag, const char *s, double lo, double hi, float *out)
{
    double x = 0;
    losa_status st = cli_double(flag, s, lo, hi, &x);
    if (st == LOSA_OK) *out = (float)x;
    return st;
}
