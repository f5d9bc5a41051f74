/* data.group_by_length: lora_length_group / lora_length_grouped_order /
 * lora_data_epoch_order (the HF Trainer's group_by_length order,
 * transformers get_length_grouped_indices, on losa's permutation).
 *  1. Hand-derived cases: megabatch size mult * batch with
 *     mult = min(n / (4 batch), 50) (at least 1), each megabatch sorted by
 *     length descending with ties in permutation order, the head of the
 *     FIRST megabatch holding the longest example swapped to position 0;
 *     the reference script's 1000- and 6000-example steps of 4 x 2 give
 *     megabatches of 248 and 400 examples.
 *  2. Invariants on seeded random inputs with many ties: the output is a
 *     permutation; lengths non-increasing inside every megabatch except at
 *     the swapped head; the overall longest first; only the two swapped
 *     heads change megabatch.
 *  3. Against tests/ref/length_group_ref.py, an independent Python
 *     version of the HF function with torch.argmax (given our permutation
 *     in place of torch.randperm): every order equal.
 *  4. Padding a pad-to-longest collator (HF's) adds per micro-batch of
 *     B = 4: sorting a megabatch minimises the sum of its batch maxima
 *     (the k-th largest batch maximum of any order is at least the
 *     (kB)-th largest length, which the sorted order attains), so every
 *     megabatch the swap does not touch pads at most as much as in the
 *     permutation, and on a long-tailed length set the total drops.
 *  5. lora_data_epoch_order on a dataset range: the plain seeded shuffle
 *     for group 0, the grouped order of the range's lengths otherwise. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora.h"
#include "test_util.h"

static int same(const int64_t *a, const int64_t *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static int64_t mega_size(int64_t n, int64_t batch)
{
    int64_t mult = n / (4 * batch);
    return (mult > 50 ? 50 : mult < 1 ? 1 : mult) * batch;
}

/* ---------------------------------------------------------------- 1 */

static void check_hand(void)
{
    /* n 10, batch 1: mult 10/4 = 2, megabatches {0,1} {2,3} {4,5} {6,7}
     * {8,9} of the identity permutation, sorted: [1,0] [2,3] (tie: 2 first)
     * [4,5] [7,6] [8,9]; heads 7 5 9 8 9: the first 9 is megabatch 2
     * (position 4), swapped with position 0. */
    const int64_t len_a[10] = {3, 7, 5, 5, 9, 2, 4, 8, 9, 1};
    const int64_t want_a[10] = {4, 0, 2, 3, 1, 5, 7, 6, 8, 9};
    int64_t o[10];
    for (int i = 0; i < 10; i++) o[i] = i;
    lora_length_group(len_a, 10, 1, o);
    TEST_CHECK(same(o, want_a, 10), "case a: %lld %lld %lld %lld %lld ...", (long long)o[0],
               (long long)o[1], (long long)o[2], (long long)o[3], (long long)o[4]);
    /* n 11, batch 1: mult 2, five megabatches of 2 and a last one of 1
     * holding the longest (length 12, example 5):
     * perm [10 3 | 7 0 | 9 1 | 4 8 | 2 6 | 5] -> [3 10 | 7 0 | 1 9 | 4 8 |
     * 6 2 | 5], heads 6 6 4 2 3 12 -> swap positions 0 and 10. */
    const int64_t len_b[11] = {4, 4, 1, 6, 2, 12, 3, 6, 0, 2, 5};
    int64_t ob[11] = {10, 3, 7, 0, 9, 1, 4, 8, 2, 6, 5};
    const int64_t want_b[11] = {5, 10, 7, 0, 1, 9, 4, 8, 6, 2, 3};
    lora_length_group(len_b, 11, 1, ob);
    TEST_CHECK(same(ob, want_b, 11), "case b: %lld %lld %lld ... %lld", (long long)ob[0],
               (long long)ob[1], (long long)ob[2], (long long)ob[10]);
    /* n < 4 batch: one megabatch of everything */
    const int64_t len_c[5] = {2, 9, 9, 1, 5};
    int64_t oc[5] = {3, 2, 0, 1, 4};
    const int64_t want_c[5] = {2, 1, 4, 0, 3};
    lora_length_group(len_c, 5, 8, oc);
    TEST_CHECK(same(oc, want_c, 5), "case c: %lld %lld %lld %lld %lld", (long long)oc[0],
               (long long)oc[1], (long long)oc[2], (long long)oc[3], (long long)oc[4]);
    /* the reference's steps, batch 4 x 2 = 8: n 1000 -> mult 31, M 248
     * (megabatches at 0 248 496 744 992, the last of 8); n 6000 -> mult
     * min(187, 50) = 50, M 400.  lengths[e] = e, identity permutation:
     * every megabatch reversed, then the head of the last (the longest,
     * n - 1) swapped with the first head. */
    const int64_t ns[2] = {1000, 6000}, Ms[2] = {248, 400};
    for (int c = 0; c < 2; c++) {
        int64_t n = ns[c], M = Ms[c];
        int64_t *len = malloc(sizeof(int64_t) * n), *ord = malloc(sizeof(int64_t) * n),
                *want = malloc(sizeof(int64_t) * n);
        for (int64_t i = 0; i < n; i++) len[i] = ord[i] = i;
        int64_t last = 0;
        for (int64_t a = 0; a < n; a += M) {
            int64_t k = n - a < M ? n - a : M;
            for (int64_t i = 0; i < k; i++) want[a + i] = a + k - 1 - i;
            last = a;
        }
        int64_t t = want[0];
        want[0] = want[last];
        want[last] = t;
        lora_length_group(len, n, 8, ord);
        TEST_CHECK(mega_size(n, 8) == M, "n %lld: megabatch %lld", (long long)n, (long long)M);
        TEST_CHECK(same(ord, want, n), "n %lld batch 8: megabatches of %lld", (long long)n,
                   (long long)M);
        TEST_CHECK(ord[0] == n - 1 && ord[last] == M - 1, "n %lld: heads %lld %lld", (long long)n,
                   (long long)ord[0], (long long)ord[last]);
        free(len);
        free(ord);
        free(want);
    }
    /* the seeded version = the seeded shuffle, then grouped */
    int64_t p[10], q[10];
    lora_data_order(10, 42, 3, p);
    lora_length_group(len_a, 10, 1, p);
    lora_length_grouped_order(len_a, 10, 1, 42, 3, q);
    TEST_CHECK(same(p, q, 10), "lora_length_grouped_order = lora_data_order + group");
}

/* ---------------------------------------------------------------- 2 */

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* mega[i] = megabatch (0, 1, ...) of position i's example in the
 * permutation perm, read at the example's position in g: the megabatches of
 * g that hold an example from another megabatch of perm are the swapped ones */
static int64_t *megabatch_of(const int64_t *perm, int64_t n, int64_t M)
{
    int64_t *where = malloc(sizeof(int64_t) * (n ? n : 1));
    for (int64_t i = 0; i < n; i++) where[perm[i]] = i / M;
    return where;
}

static void check_invariants(const int64_t *len, int64_t n, int64_t batch, const int64_t *perm,
                             const int64_t *g)
{
    int64_t M = mega_size(n, batch), maxlen = 0;
    int64_t *seen = calloc(n ? n : 1, sizeof(int64_t)), *where = megabatch_of(perm, n, M);
    int ok_perm = 1, ok_sort = 1, heads_up = 0, moved = 0;
    for (int64_t i = 0; i < n; i++) {
        if (g[i] < 0 || g[i] >= n || seen[g[i]]++) ok_perm = 0;
        if (len[i] > maxlen) maxlen = len[i];
    }
    for (int64_t a = 0; ok_perm && a < n; a += M) {
        int64_t k = n - a < M ? n - a : M;
        for (int64_t i = a + 1; i + 1 < a + k; i++) /* after the head: non-increasing */
            if (len[g[i]] < len[g[i + 1]]) ok_sort = 0;
        if (k > 1 && len[g[a]] < len[g[a + 1]]) heads_up++; /* a swapped-in head */
        for (int64_t i = a; i < a + k; i++) moved += where[g[i]] != a / M;
    }
    TEST_CHECK(ok_perm, "n %lld batch %lld: output is a permutation", (long long)n, (long long)batch);
    TEST_CHECK(ok_sort && heads_up <= 1, "n %lld batch %lld: megabatches sorted descending "
               "after the head (%d heads shorter than the next)", (long long)n, (long long)batch,
               heads_up);
    TEST_CHECK(n == 0 || len[g[0]] == maxlen, "n %lld batch %lld: longest first (%lld vs %lld)",
               (long long)n, (long long)batch, (long long)len[g[0]], (long long)maxlen);
    TEST_CHECK(moved == 0 || moved == 2, "n %lld batch %lld: %d examples changed megabatch",
               (long long)n, (long long)batch, moved);
    free(seen);
    free(where);
}

static void check_random(void)
{
    const int64_t ns[] = {1, 2, 7, 33, 64, 100, 257, 1000, 3001};
    const int64_t bs[] = {1, 2, 3, 8};
    uint64_t s = 12345;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof bs / sizeof bs[0]; b++) {
            int64_t n = ns[a], batch = bs[b];
            int64_t *len = malloc(sizeof(int64_t) * n), *perm = malloc(sizeof(int64_t) * n),
                    *g = malloc(sizeof(int64_t) * n);
            for (int64_t i = 0; i < n; i++) len[i] = 1 + (int64_t)(lcg(&s) % 20); /* ties */
            lora_data_order(n, s, 0, perm);
            memcpy(g, perm, sizeof(int64_t) * n);
            lora_length_group(len, n, batch, g);
            check_invariants(len, n, batch, perm, g);
            free(len);
            free(perm);
            free(g);
        }
}

/* ---------------------------------------------------------------- 3 */

static void check_python(void)
{
    const char *tmp = getenv("LOSA_TEST_TMP") ? getenv("LOSA_TEST_TMP") : "/tmp";
    char in_path[512], cmd[1200];
    snprintf(in_path, sizeof in_path, "%s/length_group_cases.txt", tmp);
    const int64_t ns[] = {1, 5, 31, 32, 100, 333, 1000, 6000};
    const int64_t bs[] = {1, 4, 8};
    enum { NC = 8 * 3 };
    int64_t *outs[NC], nn[NC];
    FILE *f = fopen(in_path, "w");
    TEST_CHECK(f != NULL, "cannot write %s", in_path);
    if (!f) return;
    uint64_t s = 777;
    int c = 0;
    for (int a = 0; a < 8; a++)
        for (int b = 0; b < 3; b++, c++) {
            int64_t n = ns[a], batch = bs[b];
            int64_t *len = malloc(sizeof(int64_t) * n), *g = malloc(sizeof(int64_t) * n);
            /* lengths of few distinct values (ties), or spread (c odd) */
            for (int64_t i = 0; i < n; i++)
                len[i] = c % 2 ? 2 + (int64_t)(lcg(&s) % 1000) : 1 + (int64_t)(lcg(&s) % 6);
            lora_data_order(n, (uint64_t)c, 0, g);
            fprintf(f, "%lld %lld\n", (long long)n, (long long)batch);
            for (int64_t i = 0; i < n; i++) fprintf(f, "%lld%c", (long long)len[i], i + 1 < n ? ' ' : '\n');
            for (int64_t i = 0; i < n; i++) fprintf(f, "%lld%c", (long long)g[i], i + 1 < n ? ' ' : '\n');
            lora_length_group(len, n, batch, g);
            outs[c] = g;
            nn[c] = n;
            free(len);
        }
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/length_group_ref.py %s", in_path);
    FILE *p = popen(cmd, "r");
    TEST_CHECK(p != NULL, "cannot run %s", cmd);
    int equal = 0;
    for (c = 0; p && c < NC; c++) {
        int ok = 1;
        for (int64_t i = 0; i < nn[c]; i++) {
            long long v;
            if (fscanf(p, "%lld", &v) != 1) {
                ok = 0;
                break;
            }
            ok &= v == outs[c][i]; /* read the whole case: no broken pipe */
        }
        TEST_CHECK(ok, "case %d (n %lld): C order differs from the Python reference", c,
                   (long long)nn[c]);
        equal += ok;
    }
    if (p) TEST_CHECK(pclose(p) == 0, "%s failed", cmd);
    fprintf(stderr, "  python reference: %d of %d orders equal\n", equal, NC);
    for (c = 0; c < NC; c++) free(outs[c]);
}

/* ---------------------------------------------------------------- 4 */

/* tokens a pad-to-longest collator adds to micro-batches of B over
 * order[a .. a + k) */
static int64_t padding(const int64_t *len, const int64_t *order, int64_t a, int64_t k, int64_t B)
{
    int64_t pad = 0;
    for (int64_t b = a; b < a + k; b += B) {
        int64_t e = b + B < a + k ? b + B : a + k, mx = 0, sum = 0;
        for (int64_t i = b; i < e; i++) {
            mx = len[order[i]] > mx ? len[order[i]] : mx;
            sum += len[order[i]];
        }
        pad += (e - b) * mx - sum;
    }
    return pad;
}

static void check_padding(void)
{
    enum { N = 1000, GROUP = 8, B = 4 };
    int64_t len[N], perm[N], g[N];
    uint64_t s = 99;
    /* long-tailed lengths as instruction data: 20 + a product of uniforms */
    for (int i = 0; i < N; i++)
        len[i] = 20 + (int64_t)((lcg(&s) % 1000) * (lcg(&s) % 1000) / 1000);
    lora_data_order(N, 7, 0, perm);
    memcpy(g, perm, sizeof g);
    lora_length_group(len, N, GROUP, g);
    int64_t M = mega_size(N, GROUP), pg = 0, pp = 0, worse = 0, untouched = 0;
    int64_t *where = megabatch_of(perm, N, M);
    for (int64_t a = 0; a < N; a += M) {
        int64_t k = N - a < M ? N - a : M, moved = 0;
        for (int64_t i = a; i < a + k; i++) moved += where[g[i]] != a / M;
        int64_t x = padding(len, g, a, k, B), y = padding(len, perm, a, k, B);
        pg += x;
        pp += y;
        if (!moved && k % B == 0) {
            untouched++;
            worse += x > y;
        }
    }
    free(where);
    TEST_CHECK(worse == 0 && untouched > 0, "%lld of %lld megabatches the swap leaves alone pad "
               "more when sorted", (long long)worse, (long long)untouched);
    TEST_CHECK(pg < pp, "grouped padding %lld vs ungrouped %lld", (long long)pg, (long long)pp);
    fprintf(stderr, "  padding per micro-batch of %d (n %d, groups of %d, megabatch %lld): "
            "ungrouped %.1f, grouped %.1f tokens\n", B, N, GROUP, (long long)M,
            (double)pp / (N / B), (double)pg / (N / B));
}

/* ---------------------------------------------------------------- 5 */

static void check_dataset(void)
{
    enum { N = 40, FIRST = 5, M = 30 };
    lora_dataset ds;
    memset(&ds, 0, sizeof ds);
    int64_t off[N + 1], len[M], a[M], b[M];
    off[0] = 0;
    uint64_t s = 3;
    for (int e = 0; e < N; e++) off[e + 1] = off[e] + 2 + (int64_t)(lcg(&s) % 50);
    ds.n = N;
    ds.off = off;
    for (int i = 0; i < M; i++) len[i] = off[FIRST + i + 1] - off[FIRST + i];
    lora_data_epoch_order(&ds, FIRST, M, 0, 11, 2, a);
    lora_data_order(M, 11, 2, b);
    TEST_CHECK(same(a, b, M), "group 0: the seeded shuffle");
    lora_data_epoch_order(&ds, FIRST, M, 4, 11, 2, a);
    lora_length_grouped_order(len, M, 4, 11, 2, b);
    TEST_CHECK(same(a, b, M), "group 4: grouped by the range's lengths");
}

int main(void)
{
    check_hand();
    check_random();
    check_python();
    check_padding();
    check_dataset();
    return test_finish("test_group_by_length");
}
