/* The stage split (model_split_stages): hand-derived cases, and every
 * (L <= 9, P <= L) case with pseudo-random costs against an independent
 * brute force over all compositions of L into P positive parts (the
 * smallest largest stage cost; among those, the lexicographically largest
 * layer counts: the front-loaded tie rule of include/model.h).  Then the
 * modelled cost on the minillama shape and model_stage_build_split. */
#include <string.h>

#include "model.h"
#include "test_util.h"

static void split(int L, int P, double layer, double embed, double head, int *count)
{
    model_stage_cost k = {.layer = layer, .embed = embed, .head = head};
    int first[P];
    model_split_stages(L, P, &k, first, count);
    int at = 0;
    for (int p = 0; p < P; p++) { /* first[] is the running sum of count[] */
        TEST_CHECK(first[p] == at, "L %d P %d: first[%d] %d, expected %d", L, P, p, first[p], at);
        at += count[p];
    }
    TEST_CHECK(at == L, "L %d P %d: %d layers assigned", L, P, at);
}

static int same(const int *a, const int *b, int n) { return !memcmp(a, b, sizeof(int) * n); }

static double max_cost(const int *n, int P, double layer, double embed, double head)
{
    double m = 0;
    for (int p = 0; p < P; p++) {
        double c = n[p] * layer + (p == 0 ? embed : 0) + (p == P - 1 ? head : 0);
        m = c > m ? c : m;
    }
    return m;
}

/* Brute force: all compositions of L into P parts >= 1, in lexicographically
 * decreasing order, so the first that reaches the minimum is the answer. */
static void brute(int L, int P, double layer, double embed, double head, int *best)
{
    int n[P];
    double bm = INFINITY;
    /* start at (L-P+1, 1, ..., 1), the lexicographically largest */
    n[0] = L - P + 1;
    for (int p = 1; p < P; p++) n[p] = 1;
    for (;;) {
        double m = max_cost(n, P, layer, embed, head);
        if (m < bm * (1 - 1e-12)) {
            bm = m;
            memcpy(best, n, sizeof(int) * P);
        }
        /* next composition in decreasing lexicographic order: find the last
         * position q < P-1 with n[q] > 1, decrement it and put the rest of
         * the suffix at q+1 */
        int q = P - 2;
        while (q >= 0 && n[q] == 1) q--;
        if (q < 0) break;
        int rest = 0;
        for (int p = q + 1; p < P; p++) rest += n[p];
        n[q]--;
        rest++;
        n[q + 1] = rest - (P - q - 2);
        for (int p = q + 2; p < P; p++) n[p] = 1;
    }
}

int main(void)
{
    int c[16];
    /* L 6, P 2, head 2.5 layers: 4+2 costs (4, 4.5), 5+1 (5, 3.5), 3+3
     * (3, 5.5): 4+2 */
    split(6, 2, 1, 0, 2.5, c);
    TEST_CHECK(c[0] == 4 && c[1] == 2, "head 2.5: %d+%d, expected 4+2", c[0], c[1]);
    /* head 10.4 layers (the old V*D/(layer params) charge of minillama): the
     * last stage costs >= 11.4 whatever it holds; front-loaded: 5+1 */
    split(6, 2, 1, 0, 10.4, c);
    TEST_CHECK(c[0] == 5 && c[1] == 1, "head 10.4: %d+%d, expected 5+1", c[0], c[1]);
    /* head 3.5: 4+2 (4, 5.5) vs 5+1 (5, 4.5): 5+1 */
    split(6, 2, 1, 0, 3.5, c);
    TEST_CHECK(c[0] == 5 && c[1] == 1, "head 3.5: %d+%d, expected 5+1", c[0], c[1]);
    /* no ends: 3+3 */
    split(6, 2, 1, 0, 0, c);
    TEST_CHECK(c[0] == 3 && c[1] == 3, "no head: %d+%d, expected 3+3", c[0], c[1]);
    /* L 8, P 4, embed 0.5, head 1.5: total 10, so max >= 2.5; cap 2.5 fits
     * 2+2+2+1 = 7 < 8 layers; cap 3 fits, front-loaded 2,3,2,1 (2.5, 3, 2, 2.5) */
    split(8, 4, 1, 0.5, 1.5, c);
    TEST_CHECK(c[0] == 2 && c[1] == 3 && c[2] == 2 && c[3] == 1,
               "L8 P4: %d,%d,%d,%d, expected 2,3,2,1", c[0], c[1], c[2], c[3]);
    /* P 1 and P L */
    split(5, 1, 1, 3, 7, c);
    TEST_CHECK(c[0] == 5, "P 1: %d", c[0]);
    split(5, 5, 1, 3, 7, c);
    TEST_CHECK(c[0] == 1 && c[4] == 1 && c[2] == 1, "P L: all ones");
    /* scale invariance: costs in other units give the same split */
    int c2[16];
    split(6, 2, 1e9, 0, 2.5e9, c2);
    TEST_CHECK(c2[0] == 4 && c2[1] == 2, "scaled: %d+%d", c2[0], c2[1]);

    /* brute force on pseudo-random costs (xorshift, fixed seed), including
     * exact ties (integer costs) */
    uint64_t x = 88172645463325252ull;
    int cases = 0, bad = 0;
    for (int L = 1; L <= 9; L++)
        for (int P = 1; P <= L; P++)
            for (int t = 0; t < 12; t++) {
                double u[3];
                for (int i = 0; i < 3; i++) {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    u[i] = (double)(x >> 11) / 9007199254740992.0;
                }
                double layer = t % 2 ? 1 + 3 * u[0] : 1, embed = t % 2 ? 4 * u[1] : (int)(4 * u[1]),
                       head = t % 2 ? 8 * u[2] : (int)(8 * u[2]);
                int got[16], want[16];
                split(L, P, layer, embed, head, got);
                brute(L, P, layer, embed, head, want);
                cases++;
                if (!same(got, want, P)) {
                    bad++;
                    TEST_CHECK(0, "L %d P %d layer %g embed %g head %g: split differs from the "
                               "brute force (max %g vs %g)", L, P, layer, embed, head,
                               max_cost(got, P, layer, embed, head),
                               max_cost(want, P, layer, embed, head));
                }
            }
    printf("brute force: %d cases, %d differ\n", cases, bad);

    /* the modelled cost on minillama's shape at losa bench pipeline's
     * micro-batch (1 x 128, 8 per step, r 16, dropout): the head is charged
     * 3-4.5 layers (measured 2.7-4 on the dev node, median about 3.3; the
     * old split by parameters charged 10.4), so 2 stages split 5+1: 4+2
     * would cost 2 + head > 5 */
    model_config m = {.dim = 256, .hidden_dim = 768, .n_layers = 6, .n_heads = 8,
                      .n_kv_heads = 4, .vocab_size = 32000, .max_seq_len = 256};
    model_stage_cost k;
    model_stage_cost_train(&m, 1, 128, 8, 16, 1, 0, &k);
    double ratio = k.head / k.layer;
    printf("minillama B 1 T 128: head = %.2f layers, embed = %.3f layers\n", ratio,
           k.embed / k.layer);
    TEST_CHECK(ratio > 3 && ratio < 4.5, "head %.2f layers, expected 3..4.5", ratio);
    int first[2];
    model_split_stages(6, 2, &k, first, c);
    TEST_CHECK(c[0] == 5 && c[1] == 1, "minillama: %d+%d, expected 5+1", c[0], c[1]);
    /* 3 stages: head h in (3, 4.5): 4+1+1 costs (4, 1, 1 + h), 3+2+1 (3, 2,
     * 1 + h), 2+2+2 (2, 2, 2 + h): the largest is 1 + h for the first two,
     * front-loaded 4+1+1 */
    int c3[3], f3[3];
    model_split_stages(6, 3, &k, f3, c3);
    TEST_CHECK(c3[0] == 4 && c3[1] == 1 && c3[2] == 1, "minillama 3 stages: %d+%d+%d, expected "
               "4+1+1", c3[0], c3[1], c3[2]);

    /* model_stage_build_split: the given counts, and a bad split refused */
    m.rms_eps = 1e-5f;
    m.rope_theta = 1e4f;
    m.vocab_size = 64;
    model_stage s;
    int sp[2] = {2, 4};
    TEST_CHECK(model_stage_build_split(&s, &m, 1, 2, sp) == LOSA_OK, "build");
    TEST_CHECK(s.layer0 == 2 && s.n_layers == 4 && s.has_head, "stage 1: layer0 %d n %d",
               s.layer0, s.n_layers);
    TEST_CHECK(model_stage_bytes(&m, 1, 2, sp) >= s.n_params * sizeof(float), "bytes");
    model_stage_free(&s);
    int badsp[2] = {2, 3};
    TEST_CHECK(model_stage_build_split(&s, &m, 0, 2, badsp) != LOSA_OK, "5 of 6 layers refused");
    model_stage_free(&s);
    return test_finish("test_split");
}
