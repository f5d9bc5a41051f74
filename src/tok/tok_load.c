/* tok: readers for Hugging Face tokenizer.json (SentencePiece-style BPE) and
 * llama2.c tokenizer.bin.  Both fill the flat fields of tok_tokenizer and
 * call tok_build().  Errors name the file and the key. */
#include "tok_impl.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Re-issue the last error with the file name in front. */
static losa_status tok_err_file(losa_status s, const char *path)
{
    char msg[900];
    snprintf(msg, sizeof msg, "%s", core_errmsg());
    return core_err(s, "%s: %s", path, msg);
}

/* ---------------------------------------------------------------- llama2.c */

losa_status tok_load_llama2c_mem(tok_tokenizer *t, const char *path, const char *data,
                                 size_t size, int vocab_size)
{
    memset(t, 0, sizeof *t);
    losa_status st;
    if (size < 4) {
        return core_err(LOSA_ERR_IO, "%s: truncated: %zu bytes, no max_token_length header",
                        path, size);
    }
    int32_t max_len;
    memcpy(&max_len, data, 4);
    if (max_len <= 0 || max_len > 4096) {
        return core_err(LOSA_ERR_FORMAT, "%s: max_token_length = %d (expected 1..4096)", path,
                        max_len);
    }
    /* Pass 1: count entries (vocab_size <= 0 means all) and blob bytes. */
    size_t o = 4;
    int64_t nblob = 0;
    int V = 0;
    while (o < size && (vocab_size <= 0 || V < vocab_size)) {
        if (size - o < 8) break;
        int32_t n;
        memcpy(&n, data + o + 4, 4);
        if (n < 0 || n > max_len) {
                return core_err(LOSA_ERR_FORMAT, "%s: token %d: length %d (expected 0..%d)", path,
                            V, n, max_len);
        }
        if (size - o - 8 < (size_t)n) break;
        for (int32_t j = 0; j < n; j++) nblob += data[o + 8 + j] == ' ' ? TOK_SPACE_SYM_LEN : 1;
        o += 8 + (size_t)n;
        V++;
    }
    if (vocab_size > 0 && V < vocab_size) {
        return core_err(LOSA_ERR_IO, "%s: truncated: token %d of %d incomplete at byte %zu "
                        "(file has %zu bytes)", path, V, vocab_size, o, size);
    }
    if (o != size) {
        if (vocab_size <= 0)
            return core_err(LOSA_ERR_IO, "%s: truncated: partial token %d at byte %zu", path, V, o);
        return core_err(LOSA_ERR_FORMAT, "%s: %zu bytes left after %d tokens (vocab_size "
                        "mismatch?)", path, size - o, vocab_size);
    }
    if (V < 3) {
        return core_err(LOSA_ERR_FORMAT, "%s: %d tokens (expected <unk>, <s>, </s> and more)",
                        path, V);
    }

    /* Pass 2: fill, with ' ' -> U+2581 so the pieces are SentencePiece's. */
    t->kind = TOK_KIND_SCORES;
    t->n_vocab = V;
    t->blob = malloc((size_t)nblob + 1);
    t->offsets = malloc(((size_t)V + 1) * sizeof(int64_t));
    t->scores = malloc((size_t)V * sizeof(float));
    if (!t->blob || !t->offsets || !t->scores) {
        tok_free(t);
        return core_err(LOSA_ERR_NOMEM, "%s: out of memory for %d tokens", path, V);
    }
    o = 4;
    int64_t k = 0;
    for (int i = 0; i < V; i++) {
        int32_t n;
        memcpy(&t->scores[i], data + o, 4);
        memcpy(&n, data + o + 4, 4);
        t->offsets[i] = k;
        for (int32_t j = 0; j < n; j++) {
            char c = data[o + 8 + j];
            if (c == ' ') {
                memcpy(t->blob + k, TOK_SPACE_SYM, TOK_SPACE_SYM_LEN);
                k += TOK_SPACE_SYM_LEN;
            } else {
                t->blob[k++] = c;
            }
        }
        o += 8 + (size_t)n;
    }
    t->offsets[V] = k;
    t->unk_id = 0; /* llama2.c convention */
    t->bos_id = 1;
    t->eos_id = 2;
    t->add_dummy_prefix = 1;
    /* Byte fallback when all 256 <0xNN> pieces are present. */
    int nbytes = 0;
    for (int i = 0; i < V; i++) {
        int64_t n = t->offsets[i + 1] - t->offsets[i];
        const char *s = t->blob + t->offsets[i];
        if (n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') nbytes++;
    }
    t->byte_fallback = nbytes == 256;
    st = tok_build(t);
    if (st != LOSA_OK) {
        st = tok_err_file(st, path);
        tok_free(t);
    }
    return st;
}

losa_status tok_load_llama2c(tok_tokenizer *t, const char *path, int vocab_size)
{
    memset(t, 0, sizeof *t);
    char *data;
    size_t size;
    losa_status st = core_read_file(path, &data, &size);
    if (st != LOSA_OK) return st;
    st = tok_load_llama2c_mem(t, path, data, size, vocab_size);
    free(data);
    return st;
}

/* ---------------------------------------------------------------- tokenizer.json */

static const char *tok_json_type(const cJSON *o)
{
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

static int tok_json_str_is(const cJSON *o, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

/* One normalizer: Prepend U+2581 or Replace " " -> U+2581. */
static losa_status tok_json_normalizer(const cJSON *n, const char *path, const char *key,
                                       int *prepend, int *replace)
{
    const char *ty = tok_json_type(n);
    if (ty && strcmp(ty, "Prepend") == 0 && tok_json_str_is(n, "prepend", TOK_SPACE_SYM)) {
        *prepend = 1;
        return LOSA_OK;
    }
    if (ty && strcmp(ty, "Replace") == 0 && tok_json_str_is(n, "content", TOK_SPACE_SYM)) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        if (tok_json_str_is(pat, "String", " ")) {
            *replace = 1;
            return LOSA_OK;
        }
    }
    return core_err(LOSA_ERR_UNSUPPORTED,
                    "%s: %s: type \"%s\" not supported (expected Prepend \"\u2581\" or Replace "
                    "\" \" -> \"\u2581\", the SentencePiece normalizer)",
                    path, key, ty ? ty : "(none)");
}

/* model: a BPE object with a vocab object and a merges array (or none). */
static losa_status tok_json_model(const cJSON *root, const char *path, const cJSON **model,
                                  const cJSON **vocab, const cJSON **merges)
{
    *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(*model))
        return core_err(LOSA_ERR_FORMAT, "%s: model: missing (expected an object)", path);
    const char *mtype = tok_json_type(*model);
    if (mtype && strcmp(mtype, "BPE") != 0)
        return core_err(LOSA_ERR_UNSUPPORTED,
                        "%s: model.type: \"%s\" not supported (expected \"BPE\", "
                        "SentencePiece style)", path, mtype);
    *vocab = cJSON_GetObjectItemCaseSensitive(*model, "vocab");
    *merges = cJSON_GetObjectItemCaseSensitive(*model, "merges");
    if (!cJSON_IsObject(*vocab))
        return core_err(LOSA_ERR_FORMAT, "%s: model.vocab: missing (expected an object "
                        "piece -> id)", path);
    if (*merges && !cJSON_IsArray(*merges) && !cJSON_IsNull(*merges))
        return core_err(LOSA_ERR_FORMAT, "%s: model.merges: expected an array", path);
    return LOSA_OK;
}

/* A pre_tokenizer Sequence is accepted when it holds exactly one Metaspace:
 * then *pre becomes that entry and *ty "Metaspace"; otherwise *ty and
 * prekey name the offending entry (a ByteLevel one first). */
static void tok_json_pre_sequence(const cJSON **pre, const char **ty, char *prekey, size_t cap)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(*pre, "pretokenizers");
    int i = 0, bad = -1, bad_is_byte = 0, n = cJSON_GetArraySize(list);
    const cJSON *e, *bad_e = NULL;
    cJSON_ArrayForEach(e, list) {
        const char *ety = tok_json_type(e);
        int ok = n == 1 && ety && strcmp(ety, "Metaspace") == 0;
        int is_byte = ety && strcmp(ety, "ByteLevel") == 0;
        if (!ok && (bad < 0 || (is_byte && !bad_is_byte))) {
            bad = i;
            bad_e = e;
            bad_is_byte = is_byte;
        }
        i++;
    }
    if (n == 1 && bad < 0) {
        *pre = cJSON_GetArrayItem(list, 0);
        *ty = "Metaspace";
    } else if (bad >= 0) {
        snprintf(prekey, cap, "pre_tokenizer.pretokenizers[%d].type", bad);
        *ty = tok_json_type(bad_e);
    }
}

/* Whitespace handling by the pre_tokenizer: null, or Metaspace U+2581
 * without split (replace; prepend from prepend_scheme / add_prefix_space). */
static losa_status tok_json_pre_tokenizer(const cJSON *root, const char *path, int *prepend,
                                          int *replace)
{
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    char prekey[64] = "pre_tokenizer.type";
    if (!pre || cJSON_IsNull(pre)) return LOSA_OK;
    const char *ty = tok_json_type(pre);
    if (ty && strcmp(ty, "Sequence") == 0) tok_json_pre_sequence(&pre, &ty, prekey, sizeof prekey);
    const cJSON *split = cJSON_GetObjectItemCaseSensitive(pre, "split");
    if (!ty || strcmp(ty, "Metaspace") != 0 || !tok_json_str_is(pre, "replacement", TOK_SPACE_SYM)
        || cJSON_IsTrue(split))
        return core_err(LOSA_ERR_UNSUPPORTED,
                        "%s: %s: \"%s\" not supported (expected null or "
                        "Metaspace \"\u2581\" without split; byte-level BPE as in "
                        "LLaMA-3 / GPT-2 is not supported)", path, prekey, ty ? ty : "(none)");
    *replace = 1;
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(pre, "prepend_scheme");
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space");
    if (cJSON_IsString(scheme))
        *prepend = strcmp(scheme->valuestring, "never") != 0;
    else
        *prepend = aps ? cJSON_IsTrue(aps) : 1;
    return LOSA_OK;
}

/* Whitespace handling by the normalizer: one, or a Sequence of them. */
static losa_status tok_json_normalizers(const cJSON *root, const char *path, int *prepend,
                                        int *replace)
{
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (!norm || cJSON_IsNull(norm)) return LOSA_OK;
    const char *ty = tok_json_type(norm);
    if (!ty || strcmp(ty, "Sequence") != 0)
        return tok_json_normalizer(norm, path, "normalizer.type", prepend, replace);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
    if (!cJSON_IsArray(list))
        return core_err(LOSA_ERR_FORMAT, "%s: normalizer.normalizers: expected an array", path);
    int i = 0;
    const cJSON *n;
    cJSON_ArrayForEach(n, list) {
        char key[64];
        snprintf(key, sizeof key, "normalizer.normalizers[%d].type", i++);
        losa_status st = tok_json_normalizer(n, path, key, prepend, replace);
        if (st != LOSA_OK) return st;
    }
    return LOSA_OK;
}

/* The number of ids (largest id + 1 of vocab and added_tokens), dense: not
 * more than the entries (checked before allocating V pointers, so an id of
 * 1e8 cannot ask for 800 MB). */
static losa_status tok_json_n_ids(const cJSON *vocab, const cJSON *added, const char *path,
                                  int *n_ids)
{
    if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
        return core_err(LOSA_ERR_FORMAT, "%s: added_tokens: expected an array", path);
    int V = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e8)
            return core_err(LOSA_ERR_FORMAT, "%s: model.vocab[\"%s\"]: expected an id >= 0",
                            path, it->string);
        if (it->valueint + 1 > V) V = it->valueint + 1;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e8 ||
            !cJSON_IsString(content))
            return core_err(LOSA_ERR_FORMAT, "%s: added_tokens: expected {id >= 0, content}",
                            path);
        if (id->valueint + 1 > V) V = id->valueint + 1;
    }
    if (V == 0) return core_err(LOSA_ERR_FORMAT, "%s: model.vocab: empty", path);
    int nent = cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added);
    if (V > nent)
        return core_err(LOSA_ERR_FORMAT, "%s: model.vocab: id %d but only %d entries "
                        "(expected dense ids 0..%d)", path, V - 1, nent, nent - 1);
    *n_ids = V;
    return LOSA_OK;
}

/* piece[V]: the piece of every id (vocab, then added_tokens agreeing with
 * it); every id exactly once. */
static losa_status tok_json_piece_table(const cJSON *vocab, const cJSON *added, int V,
                                        const char *path, const char **piece)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (piece[it->valueint])
            return core_err(LOSA_ERR_FORMAT, "%s: model.vocab: id %d used twice", path,
                            it->valueint);
        piece[it->valueint] = it->string;
    }
    cJSON_ArrayForEach(it, added) {
        int id = cJSON_GetObjectItemCaseSensitive(it, "id")->valueint;
        const char *c = cJSON_GetObjectItemCaseSensitive(it, "content")->valuestring;
        if (piece[id] && strcmp(piece[id], c) != 0)
            return core_err(LOSA_ERR_FORMAT, "%s: added_tokens: id %d is \"%s\" but "
                            "model.vocab has \"%s\"", path, id, c, piece[id]);
        piece[id] = c;
    }
    for (int i = 0; i < V; i++)
        if (!piece[i])
            return core_err(LOSA_ERR_FORMAT, "%s: model.vocab: id %d missing (expected dense "
                            "ids 0..%d)", path, i, V - 1);
    return LOSA_OK;
}

/* The flat fields kind, n_vocab, blob, offsets, scores (zero) from the
 * pieces. */
static losa_status tok_json_blob(tok_tokenizer *t, const char **piece, int V, const char *path)
{
    int64_t nblob = 0;
    for (int i = 0; i < V; i++) nblob += (int64_t)strlen(piece[i]);
    t->kind = TOK_KIND_MERGES;
    t->n_vocab = V;
    t->blob = malloc((size_t)nblob + 1);
    t->offsets = malloc(((size_t)V + 1) * sizeof(int64_t));
    t->scores = calloc((size_t)V, sizeof(float));
    if (!t->blob || !t->offsets || !t->scores)
        return core_err(LOSA_ERR_NOMEM, "%s: out of memory for %d pieces", path, V);
    int64_t k = 0;
    for (int i = 0; i < V; i++) {
        size_t n = strlen(piece[i]);
        t->offsets[i] = k;
        memcpy(t->blob + k, piece[i], n);
        k += (int64_t)n;
    }
    t->offsets[V] = k;
    return LOSA_OK;
}

/* One merge: "left right" (one space) or [left, right]; -1 if neither. */
static int tok_json_merge_pair(const cJSON *it, const char **a, size_t *na, const char **b,
                               size_t *nb)
{
    if (cJSON_IsString(it)) {
        const char *sp = strchr(it->valuestring, ' ');
        if (!sp || strchr(sp + 1, ' ')) return -1;
        *a = it->valuestring;
        *na = (size_t)(sp - *a);
        *b = sp + 1;
        *nb = strlen(*b);
        return 0;
    }
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
        cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
        *a = cJSON_GetArrayItem(it, 0)->valuestring;
        *b = cJSON_GetArrayItem(it, 1)->valuestring;
        *na = strlen(*a);
        *nb = strlen(*b);
        return 0;
    }
    return -1;
}

/* t->merges from the merges array (rank = position), ids through map. */
static losa_status tok_json_merges(tok_tokenizer *t, const cJSON *merges, const tok_strmap *map,
                                   const char *path)
{
    int nm = cJSON_GetArraySize(merges);
    t->merges = malloc(((size_t)nm + 1) * 2 * sizeof(int32_t));
    if (!t->merges) return core_err(LOSA_ERR_NOMEM, "%s: out of memory for %d merges", path, nm);
    int r = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, merges) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if (tok_json_merge_pair(it, &a, &na, &b, &nb))
            return core_err(LOSA_ERR_FORMAT, "%s: model.merges[%d]: expected \"left right\" "
                            "or [left, right]", path, r);
        int ia = tok_strmap_get(map, t->blob, t->offsets, a, na);
        int ib = tok_strmap_get(map, t->blob, t->offsets, b, nb);
        if (ia < 0 || ib < 0)
            return core_err(LOSA_ERR_FORMAT, "%s: model.merges[%d]: \"%.*s\" not in "
                            "model.vocab", path, r, ia < 0 ? (int)na : (int)nb, ia < 0 ? a : b);
        t->merges[2 * r] = ia;
        t->merges[2 * r + 1] = ib;
        r++;
    }
    t->n_merges = r;
    return LOSA_OK;
}

/* No scores in tokenizer.json: give each merged piece -(rank + 1) (its
 * first merge), 0 elsewhere, so that score order follows rank order. */
static losa_status tok_json_merge_scores(tok_tokenizer *t, const tok_strmap *map,
                                         const char *path)
{
    char *cat = malloc((size_t)t->offsets[t->n_vocab] * 2 + 1);
    if (!cat) return core_err(LOSA_ERR_NOMEM, "%s: out of memory", path);
    for (int i = t->n_merges - 1; i >= 0; i--) {
        int a = t->merges[2 * i], b = t->merges[2 * i + 1];
        int64_t na = t->offsets[a + 1] - t->offsets[a], nb = t->offsets[b + 1] - t->offsets[b];
        memcpy(cat, t->blob + t->offsets[a], (size_t)na);
        memcpy(cat + na, t->blob + t->offsets[b], (size_t)nb);
        int m = tok_strmap_get(map, t->blob, t->offsets, cat, (size_t)(na + nb));
        if (m >= 0) t->scores[m] = -(float)(i + 1);
    }
    free(cat);
    return LOSA_OK;
}

/* Special ids and flags, the merges and their scores (pieces looked up
 * through a map of all pieces). */
static losa_status tok_json_specials_merges(tok_tokenizer *t, const cJSON *model,
                                            const cJSON *merges, int prepend, const char *path)
{
    tok_strmap map;
    losa_status st = tok_strmap_init(&map, t->n_vocab);
    if (st != LOSA_OK) return st;
    for (int i = 0; i < t->n_vocab; i++) tok_strmap_put(&map, t->blob, t->offsets, i);
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    t->unk_id = cJSON_IsString(unk) ? tok_strmap_get(&map, t->blob, t->offsets, unk->valuestring,
                                                     strlen(unk->valuestring))
                                    : -1;
    t->bos_id = tok_strmap_get(&map, t->blob, t->offsets, "<s>", 3);
    t->eos_id = tok_strmap_get(&map, t->blob, t->offsets, "</s>", 4);
    t->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    t->add_dummy_prefix = prepend;
    st = tok_json_merges(t, merges, &map, path);
    if (st == LOSA_OK) st = tok_json_merge_scores(t, &map, path);
    tok_strmap_free(&map);
    return st;
}

/* Everything after parsing; root is freed by the caller, t on error. */
static losa_status tok_json_fill(tok_tokenizer *t, const cJSON *root, const char *path)
{
    const cJSON *model = NULL, *vocab = NULL, *merges = NULL;
    losa_status st = tok_json_model(root, path, &model, &vocab, &merges);
    if (st != LOSA_OK) return st;
    /* whitespace handling: normalizer (Prepend + Replace) or Metaspace */
    int prepend = 0, replace = 0;
    st = tok_json_pre_tokenizer(root, path, &prepend, &replace);
    if (st == LOSA_OK) st = tok_json_normalizers(root, path, &prepend, &replace);
    if (st != LOSA_OK) return st;
    if (!replace)
        return core_err(LOSA_ERR_UNSUPPORTED,
                        "%s: normalizer: no Replace \" \" -> \"\u2581\" (expected the "
                        "SentencePiece normalizer or a Metaspace pre_tokenizer)", path);
    /* ids: vocab plus added_tokens; dense 0..V-1 */
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    int V = 0;
    st = tok_json_n_ids(vocab, added, path, &V);
    if (st != LOSA_OK) return st;
    const char **piece = calloc((size_t)V, sizeof *piece);
    if (!piece) return core_err(LOSA_ERR_NOMEM, "%s: out of memory", path);
    st = tok_json_piece_table(vocab, added, V, path, piece);
    if (st == LOSA_OK) st = tok_json_blob(t, piece, V, path);
    free(piece);
    if (st == LOSA_OK) st = tok_json_specials_merges(t, model, merges, prepend, path);
    if (st != LOSA_OK) return st;
    st = tok_build(t);
    if (st != LOSA_OK) st = tok_err_file(st, path);
    return st;
}

losa_status tok_load_hf_json(tok_tokenizer *t, const char *path)
{
    memset(t, 0, sizeof *t);
    char *data;
    size_t size;
    losa_status st = core_read_file(path, &data, &size);
    if (st != LOSA_OK) return st;
    st = tok_load_hf_json_text(t, path, data, size);
    free(data);
    return st;
}

losa_status tok_load_hf_json_text(tok_tokenizer *t, const char *path, const char *data,
                                  size_t size)
{
    memset(t, 0, sizeof *t);
    losa_status st;
    cJSON *root = cJSON_ParseWithLength(data, size);
    if (!root || !cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        long long off = at && at >= data && at <= data + size ? (long long)(at - data) : -1;
        cJSON_Delete(root);
        if (off >= 0)
            return core_err(LOSA_ERR_FORMAT, "%s: malformed JSON near byte %lld (expected a "
                            "tokenizer.json object)", path, off);
        return core_err(LOSA_ERR_FORMAT, "%s: malformed JSON (expected a tokenizer.json object)",
                        path);
    }
    st = tok_json_fill(t, root, path);
    cJSON_Delete(root);
    if (st != LOSA_OK) tok_free(t);
    return st;
}
