/* Export a model store as a Hugging Face LLaMA directory: config.json,
 * model.safetensors (F32 or BF16), tokenizer.json, tokenizer_config.json.
 *
 * Everything is written into "<out>.tmp.<pid>/" (each file fsync'd), and the
 * directory is renamed into place only when all four files are complete; on
 * any error the temporary directory is removed.  The store is read one
 * tensor at a time (one fp32 buffer of the largest tensor), so memory stays
 * at one tensor plus a small conversion chunk.
 *
 * The store's weights are (out, in) row-major with rotate-half RoPE, which is
 * exactly the HF layout: tensors are written unpermuted. */
#include "io.h"
#include "io_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXP_CHUNK (1 << 20)          /* elements per conversion chunk */

/* ---- bf16 ---------------------------------------------------------------- */

uint16_t io_f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t h = kern_bf16_round(x); /* round to nearest, ties to even; NaN stays NaN */
    /* a tiny non-zero (|x| < 2^-134) must not become a zero: keep the mask */
    if ((h & 0x7fffu) == 0 && (u & 0x7fffffffu) != 0) h = (uint16_t)((u >> 16 & 0x8000u) | 1u);
    return h;
}

/* ---- the directory ------------------------------------------------------------- */

static const char *exp_files[] = {"config.json", "model.safetensors", "tokenizer.json",
                                  "tokenizer_config.json"};
#define EXP_N_FILES (sizeof exp_files / sizeof exp_files[0])

static void exp_tmp_remove(const char *tmp)
{
    char p[PATH_MAX + 64];
    for (size_t i = 0; i < EXP_N_FILES; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, exp_files[i]);
        unlink(p);
    }
    rmdir(tmp);
}

/* Close f after flush + fsync; the message names path. */
static losa_status exp_file_close(FILE *f, const char *path)
{
    int bad = fflush(f) != 0 || ferror(f);
    int e = errno;
    if (!bad && fsync(fileno(f)) != 0) {
        bad = 1;
        e = errno;
    }
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) return core_err(LOSA_ERR_IO, "%s: write failed: %s", path, strerror(e));
    return LOSA_OK;
}

/* Write text (NUL-terminated) to dir/name. */
static losa_status exp_write_text(const char *dir, const char *name, const char *text)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) return core_err(LOSA_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
    size_t n = strlen(text);
    if (fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF) {
        int e = errno;
        fclose(f);
        return core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(e));
    }
    return exp_file_close(f, p);
}

static char *exp_config_json(const model_config *c, io_export_dtype dt)
{
    cJSON *o = cJSON_CreateObject();
    const char *arch[1] = {"LlamaForCausalLM"};
    cJSON_AddItemToObject(o, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_AddStringToObject(o, "model_type", "llama");
    cJSON_AddNumberToObject(o, "hidden_size", c->dim);
    cJSON_AddNumberToObject(o, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", model_head_size(c));
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_seq_len);
    cJSON_AddNumberToObject(o, "rms_norm_eps", io_float_shortest(c->rms_eps));
    cJSON_AddNumberToObject(o, "rope_theta", io_float_shortest(c->rope_theta));
    cJSON_AddNullToObject(o, "rope_scaling");
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddFalseToObject(o, "attention_bias");
    cJSON_AddFalseToObject(o, "mlp_bias");
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_embeddings != 0);
    cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
    cJSON_AddNumberToObject(o, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(o, "torch_dtype", dt == IO_EXPORT_BF16 ? "bfloat16" : "float32");
    cJSON_AddTrueToObject(o, "use_cache");
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    return txt;
}

static char *exp_tokenizer_config_json(const model_config *c, const tok_tokenizer *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tokenizer_class", "LlamaTokenizerFast");
    cJSON_AddBoolToObject(o, "add_bos_token", t->bos_id >= 0);
    cJSON_AddFalseToObject(o, "add_eos_token");
    if (t->bos_id >= 0) cJSON_AddStringToObject(o, "bos_token", "<s>");
    if (t->eos_id >= 0) cJSON_AddStringToObject(o, "eos_token", "</s>");
    if (t->unk_id >= 0) cJSON_AddStringToObject(o, "unk_token", "<unk>");
    cJSON_AddNullToObject(o, "pad_token");
    cJSON_AddNumberToObject(o, "model_max_length", c->max_seq_len);
    cJSON_AddFalseToObject(o, "clean_up_tokenization_spaces");
    cJSON_AddTrueToObject(o, "legacy");
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    return txt;
}

/* The safetensors header of the tensors it[n] (in that order, offsets in
 * that order), as text (malloc'd, NULL when out of memory); *data_bytes:
 * the size of the data area. */
static char *exp_st_header(const io_hf_tensor *it, int n, io_export_dtype dt,
                           uint64_t *data_bytes)
{
    size_t esz = dt == IO_EXPORT_BF16 ? 2 : 4;
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(h, "__metadata__"), "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(h, it[i].hf);
        cJSON_AddStringToObject(e, "dtype", dt == IO_EXPORT_BF16 ? "BF16" : "F32");
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < it[i].ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)it[i].shape[d]));
        uint64_t end = off + (uint64_t)io_hf_tensor_numel(&it[i]) * esz;
        cJSON *ofs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(ofs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(ofs, cJSON_CreateNumber((double)end));
        off = end;
    }
    char *htxt = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    *data_bytes = off;
    return htxt;
}

/* The data of one tensor: read from the store into x, checked finite (and,
 * for bf16, within its range; hb: a chunk of EXP_CHUNK), zeros of the maps
 * counted, written to f (named p). */
static losa_status exp_st_tensor(io_store *st, const io_hf_tensor *it, io_export_dtype dt,
                                 float *x, uint16_t *hb, FILE *f, const char *p,
                                 io_export_stats *stats)
{
    int64_t n = io_hf_tensor_numel(it);
    losa_status s = io_store_read_tensor(st, it->store, x, it->ndim, it->shape);
    if (s != LOSA_OK) return s;
    int64_t z = 0;
    for (int64_t j = 0; j < n; j++) {
        if (!isfinite(x[j]))
            return core_err(LOSA_ERR_NUMERIC, "%s: %s: non-finite value at element %lld",
                            io_store_path(st), it->store, (long long)j);
        z += x[j] == 0.0f;
    }
    if (it->is_map) {
        stats->map_zeros += z;
        stats->map_size += n;
    }
    if (dt == IO_EXPORT_F32) {
        if (fwrite(x, sizeof(float), (size_t)n, f) != (size_t)n)
            s = core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(errno));
    } else {
        for (int64_t j0 = 0; s == LOSA_OK && j0 < n; j0 += EXP_CHUNK) {
            int64_t m = n - j0 < EXP_CHUNK ? n - j0 : EXP_CHUNK;
            for (int64_t j = 0; j < m; j++) {
                hb[j] = io_f32_to_bf16(x[j0 + j]);
                if ((hb[j] & 0x7f80u) == 0x7f80u) /* finite fp32 beyond bf16's range */
                    s = core_err(LOSA_ERR_NUMERIC,
                                 "%s: %s: element %lld = %g overflows bf16 (use --dtype f32)",
                                 io_store_path(st), it->store, (long long)(j0 + j),
                                 (double)x[j0 + j]);
            }
            if (s == LOSA_OK && fwrite(hb, sizeof(uint16_t), (size_t)m, f) != (size_t)m)
                s = core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(errno));
        }
    }
    stats->n_weights += n;
    stats->n_tensors++;
    return s;
}

/* model.safetensors: header (tensors in HF order, offsets in that order,
 * padded with spaces to a multiple of 8), then the data, one tensor at a time. */
static losa_status exp_write_safetensors(io_store *st, const model_config *c,
                                         io_export_dtype dt, const char *dir,
                                         io_export_stats *stats)
{
    io_hf_tensor *it = core_calloc((size_t)IO_HF_MAX_TENSORS(c), sizeof *it);
    int n_items = io_hf_tensors(c, it);
    int64_t maxn = 0;
    for (int i = 0; i < n_items; i++)
        if (io_hf_tensor_numel(&it[i]) > maxn) maxn = io_hf_tensor_numel(&it[i]);
    uint64_t off = 0;
    char *htxt = exp_st_header(it, n_items, dt, &off);
    if (!htxt) {
        free(it);
        return core_err(LOSA_ERR_NOMEM, "export: out of memory printing the header");
    }
    uint64_t hlen = strlen(htxt), hpad = (hlen + 7) / 8 * 8;

    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    losa_status s = LOSA_OK;
    FILE *f = fopen(p, "wb");
    if (!f) s = core_err(LOSA_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)(hpad >> (8 * b)); /* little endian */
    if (s == LOSA_OK && (fwrite(len8, 1, 8, f) != 8 || fwrite(htxt, 1, hlen, f) != hlen))
        s = core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(errno));
    for (uint64_t k = hlen; s == LOSA_OK && k < hpad; k++)
        if (fputc(' ', f) == EOF) s = core_err(LOSA_ERR_IO, "%s: write failed: %s", p, strerror(errno));
    free(htxt);

    float *x = s == LOSA_OK ? core_calloc((size_t)maxn, sizeof(float)) : NULL;
    uint16_t *hb = s == LOSA_OK && dt == IO_EXPORT_BF16
                       ? core_calloc(EXP_CHUNK, sizeof(uint16_t)) : NULL;
    for (int i = 0; s == LOSA_OK && i < n_items; i++)
        s = exp_st_tensor(st, &it[i], dt, x, hb, f, p, stats);
    core_free(x);
    core_free(hb);
    if (f) {
        losa_status sc = exp_file_close(f, p);
        if (s == LOSA_OK) s = sc;
    }
    stats->st_bytes = (int64_t)(8 + hpad + off);
    free(it);
    return s;
}

/* out must not exist, or be an empty directory. */
static losa_status exp_check_out(const char *out)
{
    struct stat sb;
    if (stat(out, &sb) != 0) {
        if (errno == ENOENT) return LOSA_OK;
        return core_err(LOSA_ERR_IO, "%s: cannot stat: %s", out, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode))
        return core_err(LOSA_ERR_IO, "%s: exists and is not a directory (--out must be a new "
                        "directory)", out);
    DIR *d = opendir(out);
    if (!d) return core_err(LOSA_ERR_IO, "%s: cannot open: %s", out, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) && empty)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    if (!empty)
        return core_err(LOSA_ERR_IO, "%s: exists and is not empty (remove it or choose "
                        "another --out)", out);
    return LOSA_OK;
}

losa_status io_export_hf(const char *store_path, const char *out_dir, io_export_dtype dt,
                         io_export_stats *stats)
{
    io_export_stats dummy;
    if (!stats) stats = &dummy;
    memset(stats, 0, sizeof *stats);
    const uint16_t one = 1;
    unsigned char lo;
    memcpy(&lo, &one, 1);
    if (lo != 1)
        return core_err(LOSA_ERR_UNSUPPORTED, "export: big-endian hosts are not supported "
                        "(safetensors is little-endian)");
    if (dt != IO_EXPORT_F32 && dt != IO_EXPORT_BF16)
        return core_err(LOSA_ERR_ARG, "export: dtype %d (expected f32 or bf16)", (int)dt);
    /* out without trailing slashes (so that "<out>.tmp.<pid>" is a sibling) */
    char out[PATH_MAX];
    if (!out_dir || !*out_dir || strlen(out_dir) >= sizeof out)
        return core_err(LOSA_ERR_ARG, "--out: empty or too long");
    snprintf(out, sizeof out, "%s", out_dir);
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = 0;

    /* Read and check everything that can fail before creating anything. */
    io_store *st = NULL;
    model_config c;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    char *cfg = NULL, *tokj = NULL, *tokc = NULL;
    losa_status s = io_store_open(&st, store_path);
    if (s == LOSA_OK) s = io_store_read_config(st, &c);
    if (s == LOSA_OK && !io_store_has(st, "/tokenizer"))
        s = core_err(LOSA_ERR_FORMAT, "%s: no /tokenizer (an HF directory needs "
                     "tokenizer.json)", store_path);
    if (s == LOSA_OK) s = io_store_read_tokenizer(st, &tok);
    if (s == LOSA_OK && tok.n_vocab > c.vocab_size)
        s = core_err(LOSA_ERR_FORMAT, "%s: tokenizer has %d pieces, more than vocab_size %d",
                     store_path, tok.n_vocab, c.vocab_size);
    if (s == LOSA_OK) s = io_tokenizer_hf_json(&tok, &tokj, &stats->n_merges);
    if (s == LOSA_OK) {
        cfg = exp_config_json(&c, dt);
        tokc = exp_tokenizer_config_json(&c, &tok);
        if (!cfg || !tokc) s = core_err(LOSA_ERR_NOMEM, "export: out of memory");
    }
    if (s == LOSA_OK) s = exp_check_out(out);

    char tmp[PATH_MAX + 32];
    core_tmpname(tmp, sizeof tmp, out);
    int made = 0;
    if (s == LOSA_OK) {
        if (mkdir(tmp, 0755) != 0)
            s = core_err(LOSA_ERR_IO, "%s: cannot create the output directory (%s): %s", out,
                         tmp, strerror(errno));
        else made = 1;
    }
    if (s == LOSA_OK) s = exp_write_text(tmp, "config.json", cfg);
    if (s == LOSA_OK) s = exp_write_text(tmp, "tokenizer.json", tokj);
    if (s == LOSA_OK) s = exp_write_text(tmp, "tokenizer_config.json", tokc);
    if (s == LOSA_OK) s = exp_write_safetensors(st, &c, dt, tmp, stats);
    if (s == LOSA_OK && rename(tmp, out) != 0)
        s = core_err(LOSA_ERR_IO, "%s: cannot rename %s into place: %s", out, tmp,
                     strerror(errno));
    if (s == LOSA_OK) { /* make the rename durable: fsync the parent directory */
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", out);
        char *sl = strrchr(parent, '/');
        if (!sl) snprintf(parent, sizeof parent, ".");
        else if (sl == parent) parent[1] = 0;
        else *sl = 0;
        DIR *d = opendir(parent);
        if (d) {
            fsync(dirfd(d));
            closedir(d);
        }
    } else if (made) {
        exp_tmp_remove(tmp);
    }
    cJSON_free(cfg);
    cJSON_free(tokj);
    cJSON_free(tokc);
    tok_free(&tok);
    io_store_close(&st);
    return s;
}
