/* tok: lookup tables, BPE encoding and decoding (SentencePiece semantics).
 *
 * Encoding (tok_encode):
 *   1. normalize: optional dummy prefix U+2581, every ' ' -> U+2581;
 *   2. split into UTF-8 characters, each a symbol in a doubly linked list;
 *      a character that is not a piece is "unknown" (never merges);
 *   3. every adjacent pair that may merge goes into a binary min-heap keyed
 *      by (priority, start offset of the left symbol): priority = merge rank
 *      (TOK_KIND_MERGES) or -score of the merged piece (TOK_KIND_SCORES), so
 *      the best pair pops first and the leftmost wins among equals;
 *   4. pop, skip stale entries (lazy invalidation: the left symbol must still
 *      be alive, still be followed by the same right symbol, and the two
 *      must still span the same bytes), merge, push the two new neighbour
 *      pairs.  Each merge removes one symbol and adds at most two entries, so
 *      the heap holds O(n) entries and the whole encode is O(n log n);
 *   5. unknown characters become <0xNN> byte pieces (byte_fallback) or unk
 *      (consecutive unknown characters fused into one unk).
 * Control pieces (bos, eos, unk) and <0xNN> byte pieces never take part in
 * merges or character lookup, as in SentencePiece.
 */
#include "tok_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- maps */

uint64_t tok_hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t tok_cap_pow2(int64_t count)
{
    uint64_t cap = 16;
    while (cap < (uint64_t)count * 2) cap <<= 1;
    return cap;
}

losa_status tok_strmap_init(tok_strmap *m, int64_t count)
{
    uint64_t cap = tok_cap_pow2(count);
    m->slots = calloc(cap, sizeof(int32_t));
    if (!m->slots)
        return core_err(LOSA_ERR_NOMEM, "tokenizer: cannot allocate %llu map slots",
                        (unsigned long long)cap);
    m->mask = cap - 1;
    return LOSA_OK;
}

void tok_strmap_free(tok_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = 0;
}

static int tok_piece_eq(const char *blob, const int64_t *offsets, int id, const char *s,
                        size_t n)
{
    int64_t a = offsets[id], b = offsets[id + 1];
    return (size_t)(b - a) == n && memcmp(blob + a, s, n) == 0;
}

void tok_strmap_put(tok_strmap *m, const char *blob, const int64_t *offsets, int id)
{
    const char *s = blob + offsets[id];
    size_t n = (size_t)(offsets[id + 1] - offsets[id]);
    uint64_t h = tok_hash_bytes(s, n) & m->mask;
    while (m->slots[h]) {
        if (tok_piece_eq(blob, offsets, m->slots[h] - 1, s, n)) return;
        h = (h + 1) & m->mask;
    }
    m->slots[h] = id + 1;
}

int tok_strmap_get(const tok_strmap *m, const char *blob, const int64_t *offsets,
                   const char *s, size_t n)
{
    uint64_t h = tok_hash_bytes(s, n) & m->mask;
    while (m->slots[h]) {
        int id = m->slots[h] - 1;
        if (tok_piece_eq(blob, offsets, id, s, n)) return id;
        h = (h + 1) & m->mask;
    }
    return -1;
}

/* ---------------------------------------------------------------- tables */

typedef struct {
    tok_strmap pieces;     /* normal pieces only (no control, no <0xNN>) */
    uint64_t *pair_keys;   /* (pair_cap) (left << 32 | right) + 1, 0 = empty */
    int32_t *pair_rank;    /* (pair_cap) */
    int32_t *pair_id;      /* (pair_cap) merged piece */
    uint64_t pair_mask;
    int32_t byte_id[256];  /* <0xNN> piece of each byte, -1 if absent */
    uint8_t *is_byte;      /* (V) 1 for <0xNN> pieces */
    char *dec_blob;        /* decoded bytes of every piece */
    int64_t *dec_off;      /* (V+1) */
} tok_priv;

static uint64_t tok_pair_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    return k ^ (k >> 33);
}

static void tok_priv_free(tok_priv *p)
{
    if (!p) return;
    tok_strmap_free(&p->pieces);
    free(p->pair_keys);
    free(p->pair_rank);
    free(p->pair_id);
    free(p->is_byte);
    free(p->dec_blob);
    free(p->dec_off);
    free(p);
}

static int tok_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Byte value of a "<0xNN>" piece, or -1. */
static int tok_byte_piece(const char *s, int64_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = tok_hexval(s[3]), lo = tok_hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int tok_is_control(const tok_tokenizer *t, int id)
{
    return id == t->bos_id || id == t->eos_id || id == t->unk_id;
}

/* The flat fields are consistent: kind, offsets, special ids, merges. */
static losa_status tok_check_fields(const tok_tokenizer *t)
{
    if (t->kind != TOK_KIND_MERGES && t->kind != TOK_KIND_SCORES)
        return core_err(LOSA_ERR_FORMAT, "tokenizer: kind: %d (expected %d merges or %d scores)",
                        t->kind, TOK_KIND_MERGES, TOK_KIND_SCORES);
    int V = t->n_vocab;
    if (V <= 0 || !t->blob || !t->offsets || !t->scores)
        return core_err(LOSA_ERR_FORMAT, "tokenizer: n_vocab %d or blob/offsets/scores missing", V);
    if (t->offsets[0] != 0)
        return core_err(LOSA_ERR_FORMAT, "tokenizer: offsets[0] = %lld (expected 0)",
                        (long long)t->offsets[0]);
    for (int i = 0; i < V; i++)
        if (t->offsets[i + 1] < t->offsets[i])
            return core_err(LOSA_ERR_FORMAT, "tokenizer: offsets not increasing at piece %d", i);
    int ids[3] = {t->bos_id, t->eos_id, t->unk_id};
    const char *names[3] = {"bos_id", "eos_id", "unk_id"};
    for (int k = 0; k < 3; k++)
        if (ids[k] < -1 || ids[k] >= V)
            return core_err(LOSA_ERR_FORMAT, "tokenizer: %s = %d (expected -1 or 0..%d)",
                            names[k], ids[k], V - 1);
    if (t->n_merges < 0 || (t->n_merges > 0 && !t->merges))
        return core_err(LOSA_ERR_FORMAT, "tokenizer: n_merges = %d without merges", t->n_merges);
    return LOSA_OK;
}

/* Normal pieces into the map, <0xNN> pieces by byte, and the decoded text
 * of every piece (U+2581 -> ' ', unk as " U+2047 ", bos / eos invisible). */
static losa_status tok_priv_pieces(const tok_tokenizer *t, tok_priv *p)
{
    int V = t->n_vocab;
    losa_status st = tok_strmap_init(&p->pieces, V);
    p->is_byte = calloc((size_t)V, 1);
    p->dec_off = malloc(((size_t)V + 1) * sizeof(int64_t));
    p->dec_blob = malloc((size_t)t->offsets[V] + 8 * (size_t)V + 1);
    if (st != LOSA_OK || !p->is_byte || !p->dec_off || !p->dec_blob)
        return core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory building tables");
    for (int b = 0; b < 256; b++) p->byte_id[b] = -1;
    int64_t dn = 0;
    for (int i = 0; i < V; i++) {
        const char *s = t->blob + t->offsets[i];
        int64_t n = t->offsets[i + 1] - t->offsets[i];
        int b = tok_byte_piece(s, n);
        p->dec_off[i] = dn;
        if (b >= 0) {
            p->is_byte[i] = 1;
            if (p->byte_id[b] < 0) p->byte_id[b] = i;
            p->dec_blob[dn++] = (char)b;
            continue;
        }
        if (i == t->unk_id) { /* SentencePiece shows unk as " U+2047 " */
            memcpy(p->dec_blob + dn, " \xe2\x81\x87 ", 5);
            dn += 5;
            continue;
        }
        if (tok_is_control(t, i)) continue; /* bos / eos: invisible */
        if (n > 0) tok_strmap_put(&p->pieces, t->blob, t->offsets, i);
        for (int64_t j = 0; j < n;) {
            if (j + TOK_SPACE_SYM_LEN <= n && memcmp(s + j, TOK_SPACE_SYM, TOK_SPACE_SYM_LEN) == 0) {
                p->dec_blob[dn++] = ' ';
                j += TOK_SPACE_SYM_LEN;
            } else {
                p->dec_blob[dn++] = s[j++];
            }
        }
    }
    p->dec_off[V] = dn;
    if (t->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (p->byte_id[b] < 0)
                return core_err(LOSA_ERR_FORMAT,
                                "tokenizer: byte_fallback set but piece <0x%02X> is missing", b);
    return LOSA_OK;
}

/* Ranked pairs (TOK_KIND_MERGES): (left, right) -> (rank, merged piece);
 * the merged piece must be a normal piece; the first (best) rank wins. */
static losa_status tok_priv_pairs(const tok_tokenizer *t, tok_priv *p)
{
    int V = t->n_vocab;
    uint64_t cap = tok_cap_pow2(t->n_merges);
    p->pair_mask = cap - 1;
    p->pair_keys = calloc(cap, sizeof(uint64_t));
    p->pair_rank = malloc(cap * sizeof(int32_t));
    p->pair_id = malloc(cap * sizeof(int32_t));
    char *cat = malloc((size_t)t->offsets[V] * 2 + 1);
    losa_status st = LOSA_OK;
    if (!p->pair_keys || !p->pair_rank || !p->pair_id || !cat)
        st = core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory for %d merges", t->n_merges);
    for (int r = 0; st == LOSA_OK && r < t->n_merges; r++) {
        int a = t->merges[2 * r], b = t->merges[2 * r + 1];
        if (a < 0 || a >= V || b < 0 || b >= V) {
            st = core_err(LOSA_ERR_FORMAT, "tokenizer: merge %d: ids (%d, %d) out of 0..%d",
                          r, a, b, V - 1);
            break;
        }
        int64_t na = t->offsets[a + 1] - t->offsets[a], nb = t->offsets[b + 1] - t->offsets[b];
        memcpy(cat, t->blob + t->offsets[a], (size_t)na);
        memcpy(cat + na, t->blob + t->offsets[b], (size_t)nb);
        int m = tok_strmap_get(&p->pieces, t->blob, t->offsets, cat, (size_t)(na + nb));
        if (m < 0) {
            st = core_err(LOSA_ERR_FORMAT,
                          "tokenizer: merge %d (%d + %d): merged piece \"%.*s\" is not a "
                          "normal piece of the vocabulary", r, a, b, (int)(na + nb), cat);
            break;
        }
        uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
        uint64_t h = tok_pair_hash(key) & p->pair_mask;
        while (p->pair_keys[h] && p->pair_keys[h] != key) h = (h + 1) & p->pair_mask;
        if (!p->pair_keys[h]) {
            p->pair_keys[h] = key;
            p->pair_rank[h] = r;
            p->pair_id[h] = m;
        }
    }
    free(cat);
    return st;
}

losa_status tok_build(tok_tokenizer *t)
{
    if (t->priv) {
        tok_priv_free(t->priv);
        t->priv = NULL;
    }
    losa_status st = tok_check_fields(t);
    if (st != LOSA_OK) return st;
    tok_priv *p = calloc(1, sizeof *p);
    if (!p) return core_err(LOSA_ERR_NOMEM, "tokenizer: out of memory");
    st = tok_priv_pieces(t, p);
    if (st == LOSA_OK && t->kind == TOK_KIND_MERGES && t->n_merges > 0) st = tok_priv_pairs(t, p);
    if (st != LOSA_OK) {
        tok_priv_free(p);
        return st;
    }
    t->priv = p;
    return LOSA_OK;
}

void tok_free(tok_tokenizer *t)
{
    if (!t) return;
    tok_priv_free(t->priv);
    free(t->blob);
    free(t->offsets);
    free(t->scores);
    free(t->merges);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- encode */

typedef struct {
    int64_t start;      /* byte offset in the normalized text */
    int64_t prev, next; /* linked list, -1 at the ends */
    int32_t len;        /* bytes; 0 once merged into its left neighbour */
    int32_t id;         /* piece id, -1 unknown character */
} tok_sym;

typedef struct {
    double prio;  /* lower pops first */
    int64_t left; /* symbol index (its start orders equal priorities) */
    int64_t pos;  /* start of left symbol */
    int32_t size; /* len(left) + len(right) when pushed */
    int32_t id;   /* merged piece */
} tok_cand;

typedef struct {
    tok_cand *a;
    int64_t n, cap;
} tok_heap;

static int tok_cand_less(const tok_cand *x, const tok_cand *y)
{
    return x->prio < y->prio || (x->prio == y->prio && x->pos < y->pos);
}

static int tok_heap_push(tok_heap *h, tok_cand c)
{
    if (h->n == h->cap) {
        int64_t cap = h->cap ? 2 * h->cap : 1024;
        tok_cand *a = realloc(h->a, (size_t)cap * sizeof *a);
        if (!a) return -1;
        h->a = a;
        h->cap = cap;
    }
    int64_t i = h->n++;
    while (i > 0) {
        int64_t up = (i - 1) / 2;
        if (!tok_cand_less(&c, &h->a[up])) break;
        h->a[i] = h->a[up];
        i = up;
    }
    h->a[i] = c;
    return 0;
}

static tok_cand tok_heap_pop(tok_heap *h)
{
    tok_cand top = h->a[0], last = h->a[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && tok_cand_less(&h->a[c + 1], &h->a[c])) c++;
        if (!tok_cand_less(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0) h->a[i] = last;
    return top;
}

/* Push the pair (l, next of l) if it may merge.  -1 on out-of-memory. */
static int tok_try_pair(const tok_tokenizer *t, const char *norm, const tok_sym *sym,
                        tok_heap *h, int64_t l)
{
    const tok_priv *p = t->priv;
    if (l < 0) return 0;
    int64_t r = sym[l].next;
    if (r < 0 || sym[l].id < 0 || sym[r].id < 0) return 0;
    tok_cand c = {.left = l, .pos = sym[l].start, .size = sym[l].len + sym[r].len};
    if (t->kind == TOK_KIND_MERGES) {
        if (!p->pair_keys) return 0;
        uint64_t key = (((uint64_t)(uint32_t)sym[l].id << 32) | (uint32_t)sym[r].id) + 1;
        uint64_t s = tok_pair_hash(key) & p->pair_mask;
        while (p->pair_keys[s] && p->pair_keys[s] != key) s = (s + 1) & p->pair_mask;
        if (!p->pair_keys[s]) return 0;
        c.prio = p->pair_rank[s];
        c.id = p->pair_id[s];
    } else {
        int m = tok_strmap_get(&p->pieces, t->blob, t->offsets, norm + sym[l].start,
                               (size_t)c.size);
        if (m < 0) return 0;
        c.prio = -(double)t->scores[m];
        c.id = m;
    }
    return tok_heap_push(h, c);
}

/* Pop and merge until the heap is empty.  -1 on out-of-memory. */
static int tok_heap_drain(const tok_tokenizer *t, const char *norm, tok_sym *sym, tok_heap *h)
{
    while (h->n > 0) {
        tok_cand c = tok_heap_pop(h);
        int64_t l = c.left, r = sym[l].next;
        if (sym[l].len == 0 || r < 0 || sym[l].len + sym[r].len != c.size) continue; /* stale */
        sym[l].len = c.size;
        sym[l].id = c.id;
        sym[l].next = sym[r].next;
        if (sym[r].next >= 0) sym[sym[r].next].prev = l;
        sym[r].len = 0;
        if (tok_try_pair(t, norm, sym, h, sym[l].prev) || tok_try_pair(t, norm, sym, h, l))
            return -1;
    }
    return 0;
}

/* Length of the UTF-8 character at s (1 for an invalid lead or truncated
 * sequence: the byte stands alone). */
static int tok_utf8_len(const unsigned char *s, size_t n)
{
    int k = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 1;
    if ((size_t)k > n) return 1;
    for (int i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80) return 1;
    return k;
}

losa_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, int bos, int eos,
                       int **ids, int64_t *n)
{
    *ids = NULL;
    *n = 0;
    const tok_priv *p = t->priv;
    if (!p) return core_err(LOSA_ERR_ARG, "tok_encode: tokenizer not built (call tok_build)");
    if (bos && t->bos_id < 0) return core_err(LOSA_ERR_ARG, "tok_encode: tokenizer has no bos");
    if (eos && t->eos_id < 0) return core_err(LOSA_ERR_ARG, "tok_encode: tokenizer has no eos");

    /* 1. normalize */
    size_t nspace = 0;
    for (size_t i = 0; i < len; i++) nspace += text[i] == ' ';
    size_t nn = len + 2 * nspace + (len > 0 && t->add_dummy_prefix ? TOK_SPACE_SYM_LEN : 0);
    char *norm = malloc(nn + 1);
    tok_sym *sym = malloc((nn + 1) * sizeof *sym);
    int *out = malloc((nn + 2) * sizeof *out);
    tok_heap h = {0};
    losa_status st = LOSA_OK;
    if (!norm || !sym || !out) {
        st = core_err(LOSA_ERR_NOMEM, "tok_encode: out of memory for %zu bytes", len);
        goto done;
    }
    size_t k = 0;
    if (len > 0 && t->add_dummy_prefix) {
        memcpy(norm, TOK_SPACE_SYM, TOK_SPACE_SYM_LEN);
        k = TOK_SPACE_SYM_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(norm + k, TOK_SPACE_SYM, TOK_SPACE_SYM_LEN);
            k += TOK_SPACE_SYM_LEN;
        } else {
            norm[k++] = text[i];
        }
    }

    /* 2. characters -> symbols */
    int64_t ns = 0;
    for (size_t i = 0; i < nn;) {
        int cl = tok_utf8_len((const unsigned char *)norm + i, nn - i);
        tok_sym *s = &sym[ns];
        s->start = (int64_t)i;
        s->len = cl;
        s->prev = ns - 1;
        s->next = i + cl < nn ? ns + 1 : -1;
        s->id = tok_strmap_get(&p->pieces, t->blob, t->offsets, norm + i, (size_t)cl);
        ns++;
        i += cl;
    }

    /* 3-4. merge best pairs first.  No pair with an unknown character ever
     * merges, so the runs between unknown characters (newlines, for one) are
     * independent: each gets its own small heap, which gives the same result
     * as one global heap and stays in cache. */
    for (int64_t seg = 0; seg < ns;) {
        int64_t end = seg;
        while (end < ns && sym[end].id >= 0) end++;
        h.n = 0;
        for (int64_t i = seg; i + 1 < end; i++)
            if (tok_try_pair(t, norm, sym, &h, i)) goto oom;
        seg = end + 1;
        if (tok_heap_drain(t, norm, sym, &h)) goto oom;
    }

    /* 5. emit */
    int64_t m = 0;
    if (bos) out[m++] = t->bos_id;
    for (int64_t i = ns > 0 ? 0 : -1; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) {
            out[m++] = sym[i].id;
        } else if (t->byte_fallback) {
            for (int32_t j = 0; j < sym[i].len; j++)
                out[m++] = p->byte_id[(unsigned char)norm[sym[i].start + j]];
        } else if (t->unk_id < 0) {
            st = core_err(LOSA_ERR_ARG, "tok_encode: character at byte %lld is not in the "
                          "vocabulary and the tokenizer has neither byte fallback nor unk",
                          (long long)sym[i].start);
            goto done;
        } else if (m == 0 || out[m - 1] != t->unk_id || sym[sym[i].prev].id >= 0) {
            out[m++] = t->unk_id; /* fuse runs of unknown characters */
        }
    }
    if (eos) out[m++] = t->eos_id;
    *ids = out;
    *n = m;
    out = NULL;
    goto done;
oom:
    st = core_err(LOSA_ERR_NOMEM, "tok_encode: out of memory (heap of %lld pairs)", (long long)h.n);
done:
    free(norm);
    free(sym);
    free(out);
    free(h.a);
    return st;
}

/* ---------------------------------------------------------------- decode */

/* Decoded bytes of id; strip = drop a leading space (dummy prefix). */
static const char *tok_dec(const tok_tokenizer *t, int id, int strip, size_t *len)
{
    const tok_priv *p = t->priv;
    const char *s = p->dec_blob + p->dec_off[id];
    size_t n = (size_t)(p->dec_off[id + 1] - p->dec_off[id]);
    if (strip && t->add_dummy_prefix && !p->is_byte[id] && !tok_is_control(t, id) && n > 0 &&
        s[0] == ' ') {
        s++;
        n--;
    }
    *len = n;
    return s;
}

losa_status tok_decode(const tok_tokenizer *t, const int *ids, int64_t n, char **text,
                       size_t *len)
{
    *text = NULL;
    *len = 0;
    const tok_priv *p = t->priv;
    if (!p) return core_err(LOSA_ERR_ARG, "tok_decode: tokenizer not built (call tok_build)");
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return core_err(LOSA_ERR_ARG, "tok_decode: id %d at position %lld out of 0..%d",
                            ids[i], (long long)i, t->n_vocab - 1);
        total += (size_t)(p->dec_off[ids[i] + 1] - p->dec_off[ids[i]]);
    }
    char *s = malloc(total + 1);
    if (!s) return core_err(LOSA_ERR_NOMEM, "tok_decode: out of memory for %zu bytes", total);
    size_t k = 0;
    int at_start = 1;
    for (int64_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id == t->bos_id) {
            at_start = 1;
            continue;
        }
        if (id == t->eos_id) continue;
        size_t pn;
        const char *ps = tok_dec(t, id, at_start, &pn);
        memcpy(s + k, ps, pn);
        k += pn;
        at_start = 0;
    }
    s[k] = '\0';
    *text = s;
    *len = k;
    return LOSA_OK;
}

const char *tok_piece_text(const tok_tokenizer *t, int prev, int id, char buf[8], size_t *len)
{
    (void)buf; /* every piece's bytes live in the decoded table */
    *len = 0;
    if (!t->priv || id < 0 || id >= t->n_vocab) return "";
    return tok_dec(t, id, prev < 0 || prev == t->bos_id, len);
}
