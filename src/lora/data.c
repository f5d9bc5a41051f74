/* lora data: instruction (Alpaca) and plain-text training sets, tokenized
 * once into one flat id array; seeded shuffling, optionally length-grouped
 * (HF group_by_length); padded micro-batches with the padding (and
 * optionally the prompt) excluded from the loss. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "lora.h"

/* The standard Alpaca prompt templates (Stanford alpaca, train.py). */
static const char *alpaca_with_input =
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n%s\n\n### Input:\n%s\n\n### Response:\n";
static const char *alpaca_no_input =
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n%s\n\n### Response:\n";

char *lora_alpaca_prompt(const char *instruction, const char *input)
{
    int with = input && input[0];
    size_t n = strlen(alpaca_with_input) + strlen(instruction) + (with ? strlen(input) : 0) + 1;
    char *p = core_calloc(n, 1);
    if (with) snprintf(p, n, alpaca_with_input, instruction, input);
    else snprintf(p, n, alpaca_no_input, instruction);
    return p;
}

static void ds_push(lora_dataset *ds, const int *ids, int64_t n, int64_t resp)
{
    if (ds->n + 1 >= ds->cap_seq) {
        ds->cap_seq = ds->cap_seq ? 2 * ds->cap_seq : 256;
        ds->off = realloc(ds->off, sizeof(int64_t) * (ds->cap_seq + 1));
        ds->resp = realloc(ds->resp, sizeof(int) * ds->cap_seq);
        LOSA_CHECK(ds->off && ds->resp);
        if (ds->n == 0) ds->off[0] = 0;
    }
    if (ds->off[ds->n] + n > ds->cap_ids) {
        while (ds->off[ds->n] + n > ds->cap_ids) ds->cap_ids = ds->cap_ids ? 2 * ds->cap_ids : 65536;
        ds->ids = realloc(ds->ids, sizeof(int) * ds->cap_ids);
        LOSA_CHECK(ds->ids);
    }
    memcpy(ds->ids + ds->off[ds->n], ids, sizeof(int) * n);
    ds->resp[ds->n] = (int)resp;
    ds->off[ds->n + 1] = ds->off[ds->n] + n;
    ds->n++;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* one JSON object (Alpaca or {"text"}) -> one example */
static losa_status add_object(lora_dataset *ds, const cJSON *o, lora_data_format fmt,
                              const tok_tokenizer *tk, int max_len, const char *name,
                              int64_t rec)
{
    losa_status s;
    int *ids = NULL, *pids = NULL;
    int64_t n = 0, np = 0;
    if (!cJSON_IsObject(o))
        return core_err(LOSA_ERR_FORMAT, "%s: record %lld: expected a JSON object", name,
                        (long long)rec);
    if (fmt == LORA_DATA_ALPACA) {
        const char *ins = jstr(o, "instruction"), *inp = jstr(o, "input"),
                   *out = jstr(o, "output");
        if (!ins || !out)
            return core_err(LOSA_ERR_FORMAT, "%s: record %lld: Alpaca needs string fields "
                            "'instruction' and 'output'", name, (long long)rec);
        char *prompt = lora_alpaca_prompt(ins, inp);
        size_t lp = strlen(prompt), lo = strlen(out);
        char *full = core_calloc(lp + lo + 1, 1);
        memcpy(full, prompt, lp);
        memcpy(full + lp, out, lo + 1);
        /* as Stanford alpaca: the full example tokenized once; the prompt
         * length from tokenizing the prompt alone */
        s = tok_encode(tk, full, lp + lo, 1, 1, &ids, &n);
        if (s == LOSA_OK) s = tok_encode(tk, prompt, lp, 1, 0, &pids, &np);
        free(prompt);
        core_free(full);
    } else {
        const char *t = jstr(o, "text");
        if (!t)
            return core_err(LOSA_ERR_FORMAT, "%s: record %lld: expected a string field 'text'",
                            name, (long long)rec);
        s = tok_encode(tk, t, strlen(t), 1, 1, &ids, &n);
    }
    if (s == LOSA_OK && n >= 2) ds_push(ds, ids, n < max_len ? n : max_len, np);
    free(ids);
    free(pids);
    return s;
}

losa_status lora_data_parse(lora_dataset *ds, const char *name, const char *text, size_t len,
                            lora_data_format fmt, const tok_tokenizer *tk, int max_len)
{
    memset(ds, 0, sizeof *ds);
    if (max_len < 2) return core_err(LOSA_ERR_ARG, "data: max length must be >= 2");
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
        i++;
    int is_json = i < len && (text[i] == '[' || text[i] == '{');
    losa_status s = LOSA_OK;
    if (!is_json) {
        if (fmt == LORA_DATA_ALPACA)
            return core_err(LOSA_ERR_FORMAT, "%s: Alpaca data must be a JSON array or JSONL",
                            name);
        /* plain text: one token stream cut into windows of max_len */
        int *ids;
        int64_t n;
        s = tok_encode(tk, text, len, 1, 1, &ids, &n);
        for (int64_t o = 0; s == LOSA_OK && o + 1 < n; o += max_len)
            ds_push(ds, ids + o, n - o < max_len ? n - o : max_len, 0);
        if (s == LOSA_OK) free(ids);
    } else if (text[i] == '[') {
        cJSON *arr = cJSON_ParseWithLength(text, len);
        if (!cJSON_IsArray(arr)) {
            cJSON_Delete(arr);
            return core_err(LOSA_ERR_FORMAT, "%s: malformed JSON array", name);
        }
        const cJSON *first = cJSON_GetArrayItem(arr, 0);
        if (fmt == LORA_DATA_AUTO)
            fmt = first && jstr(first, "instruction") ? LORA_DATA_ALPACA : LORA_DATA_TEXT;
        int64_t rec = 0;
        const cJSON *o;
        cJSON_ArrayForEach(o, arr)
        {
            s = add_object(ds, o, fmt, tk, max_len, name, rec++);
            if (s != LOSA_OK) break;
        }
        cJSON_Delete(arr);
    } else {
        /* JSONL */
        int64_t line = 0;
        for (size_t p = 0; p < len && s == LOSA_OK;) {
            size_t e = p;
            while (e < len && text[e] != '\n') e++;
            line++;
            size_t q = p;
            while (q < e && (text[q] == ' ' || text[q] == '\r' || text[q] == '\t')) q++;
            if (q < e) {
                cJSON *o = cJSON_ParseWithLength(text + p, e - p);
                if (!o) s = core_err(LOSA_ERR_FORMAT, "%s: line %lld: malformed JSON", name,
                                     (long long)line);
                if (s == LOSA_OK && fmt == LORA_DATA_AUTO)
                    fmt = jstr(o, "instruction") ? LORA_DATA_ALPACA : LORA_DATA_TEXT;
                if (s == LOSA_OK) s = add_object(ds, o, fmt, tk, max_len, name, line);
                cJSON_Delete(o);
            }
            p = e + 1;
        }
    }
    ds->format = fmt;
    if (s == LOSA_OK && ds->n == 0) s = core_err(LOSA_ERR_FORMAT, "%s: no training examples", name);
    if (s != LOSA_OK) lora_data_free(ds);
    return s;
}

void lora_data_free(lora_dataset *ds)
{
    if (!ds) return;
    free(ds->ids);
    free(ds->off);
    free(ds->resp);
    memset(ds, 0, sizeof *ds);
}

void lora_data_order(int64_t n, uint64_t seed, int64_t epoch, int64_t *perm)
{
    core_rng r;
    core_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch + 1);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = (int64_t)(core_rng_u64(&r) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* one entry of a megabatch being sorted: ties broken by position = stable */
typedef struct {
    int64_t len, pos, idx;
} len_entry;

static int len_entry_cmp(const void *a, const void *b)
{
    const len_entry *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

void lora_length_group(const int64_t *lengths, int64_t n, int64_t batch, int64_t *order)
{
    if (n < 2 || batch < 1) return;
    int64_t mult = n / (4 * batch);
    if (mult > 50) mult = 50;
    if (mult < 1) mult = 1;
    int64_t M = mult * batch, best = 0;
    len_entry *e = core_calloc((size_t)(M < n ? M : n), sizeof(len_entry));
    for (int64_t a = 0; a < n; a += M) {
        int64_t k = n - a < M ? n - a : M;
        for (int64_t i = 0; i < k; i++)
            e[i] = (len_entry){lengths[order[a + i]], i, order[a + i]};
        qsort(e, (size_t)k, sizeof *e, len_entry_cmp);
        for (int64_t i = 0; i < k; i++) order[a + i] = e[i].idx;
        /* the first megabatch whose head is strictly the longest so far */
        if (lengths[order[a]] > lengths[order[best]]) best = a;
    }
    int64_t t = order[0];
    order[0] = order[best];
    order[best] = t;
    core_free(e);
}

void lora_length_grouped_order(const int64_t *lengths, int64_t n, int64_t batch, uint64_t seed,
                               int64_t epoch, int64_t *order)
{
    lora_data_order(n, seed, epoch, order);
    lora_length_group(lengths, n, batch, order);
}

void lora_data_epoch_order(const lora_dataset *ds, int64_t first, int64_t m, int64_t group_batch,
                           uint64_t seed, int64_t epoch, int64_t *perm)
{
    if (group_batch <= 0) {
        lora_data_order(m, seed, epoch, perm);
        return;
    }
    int64_t *len = core_calloc((size_t)(m > 0 ? m : 1), sizeof(int64_t));
    for (int64_t i = 0; i < m; i++) len[i] = ds->off[first + i + 1] - ds->off[first + i];
    lora_length_grouped_order(len, m, group_batch, seed, epoch, perm);
    core_free(len);
}

void lora_data_batch(const lora_dataset *ds, const int64_t *idx, int B, int T, int pad_id,
                     int response_only, int *tokens, int *targets)
{
    for (int b = 0; b < B; b++) {
        int *tk = tokens + (int64_t)b * T, *tg = targets + (int64_t)b * T;
        int64_t e = idx[b], n = ds->off[e + 1] - ds->off[e];
        const int *ids = ds->ids + ds->off[e];
        if (n > T) n = T;
        int64_t from = response_only ? ds->resp[e] : 0; /* first predicted token index */
        for (int t = 0; t < T; t++) {
            tk[t] = t < n ? ids[t] : pad_id;
            tg[t] = (t + 1 < n && t + 1 >= from) ? ids[t + 1] : -1;
        }
    }
}
