/* test_sparse_nm: the 2:4 format (SPARSE_FORMAT_NM24).
 *  - a hand-made row gives the documented slots and position nibbles;
 *  - for 2:4 matrices of many shapes (widths with 4..28 inputs past the
 *    last block of 32, rows more than a thread block, column panels): the
 *    check passes, nnz and bytes are as documented, to_dense gives W back
 *    bit for bit, and Y = X W^T from the scalar reference and every
 *    compiled ISA path, batches 1..33, is within the fp32 bound of a
 *    double-precision loop over the dense W: any order of summing K
 *    products with rounding unit u errs by at most gamma_K sum |w x|
 *    (Higham 3.1; test_util.h), with K = in (the in / 2 slots, each a
 *    product and an add);
 *  - sparse_format_for picks 2:4 for a 2:4 W asked as fp32 bitmap, at the
 *    batches where its kernels pay (1, 8; not 128);
 *  - from_dense refuses a W that is not 2:4, and the check refuses
 *    positions out of order, a position past the last group and a row
 *    count that does not match its slots (LOSA_ERR_FORMAT). */
#include <string.h>

#include "sparse.h"
#include "sparse_check.h"
#include "test_util.h"

/* W (out, in) 2:4: each group of 4 keeps 0, 1 or 2 non-zeros at random
 * positions (mostly 2), values N(0, 1). */
static void make_24(float *W, int out, int in, core_rng *r)
{
    for (int64_t k = 0; k < (int64_t)out * in; k += 4) {
        for (int j = 0; j < 4; j++) W[k + j] = 0.0f;
        uint64_t u = core_rng_u64(r);
        int keep = u % 8 == 0 ? 0 : u % 8 == 1 ? 1 : 2;
        for (int q = 0; q < keep; q++) {
            int j = (int)((u >> (8 + 4 * q)) % 4);
            float v = core_rng_normal(r);
            W[k + j] = v == 0.0f ? 1.0f : v;
        }
    }
}

static const int kBatches[] = {1, 2, 5, 8, 9, 33};
#define check_kernels(s, W, X, out, in, what) \
    sparse_check_kernels(s, W, X, out, in, what, kBatches, (int)(sizeof kBatches / sizeof kBatches[0]))

static void run_case(int out, int in, core_rng *r)
{
    float *W = malloc(sizeof(float) * out * in), *Wr = malloc(sizeof(float) * out * in);
    float *X = malloc(sizeof(float) * 33 * in);
    make_24(W, out, in, r);
    for (int64_t i = 0; i < 33LL * in; i++) X[i] = core_rng_normal(r);
    int64_t nnz = 0;
    for (int64_t i = 0; i < (int64_t)out * in; i++) nnz += W[i] != 0.0f;
    static const int widths[] = {-1, 16, 48, 0}; /* -1: unpanelled */
    for (int k = 0; k < 4; k++) {
        char what[160];
        snprintf(what, sizeof what, "2:4 (%d,%d) panels %d", out, in, widths[k]);
        sparse_matrix s;
        losa_status st = sparse_matrix_from_dense(&s, W, out, in, SPARSE_FORMAT_NM24);
        if (st == LOSA_OK && widths[k] >= 0) st = sparse_matrix_panel(&s, widths[k]);
        TEST_CHECK(st == LOSA_OK, "%s: %s", what, core_errmsg());
        if (st != LOSA_OK) continue;
        TEST_CHECK(sparse_matrix_check(&s, what) == LOSA_OK, "%s: check: %s", what, core_errmsg());
        TEST_CHECK(s.nnz == nnz && s.nm_n == 2 && s.nm_m == 4, "%s: nnz %lld vs %lld", what,
                   (long long)s.nnz, (long long)nnz);
        if (widths[k] < 0) {
            size_t expect = (size_t)out * ((in + 15) / 16) * 2 + (size_t)out * (in / 2) * 4;
            TEST_CHECK(sparse_matrix_bytes(&s) == expect && sparse_matrix_nvals(&s) ==
                           (int64_t)out * (in / 2),
                       "%s: bytes %zu vs %zu", what, sparse_matrix_bytes(&s), expect);
        }
        sparse_matrix_to_dense(Wr, &s);
        TEST_CHECK(!memcmp(Wr, W, sizeof(float) * out * in), "%s: to_dense differs", what);
        check_kernels(&s, W, X, out, in, what);
        sparse_matrix_free(&s);
    }
    free(W);
    free(Wr);
    free(X);
}

static void test_hand(void)
{
    /* group 0: non-zeros at 1 and 3; group 1: one at 0, slot 2 at the
     * lowest free position 1; groups 2, 3: empty -> positions 0, 1 */
    float w[16] = {0, 1.5f, 0, -2, 3, 0, 0, 0};
    sparse_matrix s;
    TEST_CHECK(sparse_matrix_from_dense(&s, w, 1, 16, SPARSE_FORMAT_NM24) == LOSA_OK, "hand");
    const float *v = s.vals;
    TEST_CHECK(s.mask[0] == (0xD | 0x4 << 4 | 0x4 << 8 | 0x4 << 12) && v[0] == 1.5f &&
                   v[1] == -2.0f && v[2] == 3.0f && v[3] == 0.0f && s.nnz == 3 &&
                   s.rowptr[1] == 3,
               "hand: mask %#x slots %g %g %g %g nnz %lld", s.mask[0], v[0], v[1], v[2], v[3],
               (long long)s.nnz);
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = (float)(i + 1);
    float y = 0;
    sparse_matvec(&y, &s, x);
    TEST_CHECK(y == 1.5f * 2 - 2.0f * 4 + 3.0f * 5, "hand: y %g", y);
    /* damaged copies are refused */
    s.mask[0] = (uint16_t)((s.mask[0] & ~0xFu) | 0x5); /* p0 == p1 == 1 */
    TEST_CHECK(sparse_matrix_check(&s, "hand") == LOSA_ERR_FORMAT, "p0 == p1 refused");
    s.mask[0] = 0xD | 0x4 << 4 | 0x4 << 8 | 0x4 << 12;
    s.rowptr[1] = 2;
    s.nnz = 2;
    TEST_CHECK(sparse_matrix_check(&s, "hand") == LOSA_ERR_FORMAT, "row count refused");
    sparse_matrix_free(&s);
    float w20[20] = {0};
    TEST_CHECK(sparse_matrix_from_dense(&s, w20, 1, 20, SPARSE_FORMAT_NM24) == LOSA_OK, "20");
    s.mask[1] |= 0x4 << 4; /* group 5 of a 5-group row */
    TEST_CHECK(sparse_matrix_check(&s, "20") == LOSA_ERR_FORMAT, "group past the row refused");
    sparse_matrix_free(&s);
    float w3[8] = {1, 1, 1, 0, 1, 0, 0, 0};
    TEST_CHECK(sparse_matrix_from_dense(&s, w3, 1, 8, SPARSE_FORMAT_NM24) == LOSA_ERR_ARG,
               "3 non-zeros in a group refused");
    sparse_matrix_free(&s);
    TEST_CHECK(sparse_matrix_from_dense(&s, w3, 1, 6, SPARSE_FORMAT_NM24) == LOSA_ERR_ARG,
               "inputs not a multiple of 4 refused");
    sparse_matrix_free(&s);
    float w24[8] = {1, 0, 0, 1, 0, 0, 0, 0};
    TEST_CHECK(sparse_format_for(w24, 1, 8, SPARSE_FORMAT_BITMAP, 1) == SPARSE_FORMAT_NM24 &&
                   sparse_format_for(w24, 1, 8, SPARSE_FORMAT_BITMAP, 8) == SPARSE_FORMAT_NM24 &&
                   sparse_format_for(w24, 1, 8, SPARSE_FORMAT_BITMAP, 128) == SPARSE_FORMAT_BITMAP &&
                   sparse_format_for(w3, 1, 8, SPARSE_FORMAT_BITMAP, 1) == SPARSE_FORMAT_BITMAP &&
                   sparse_format_for(w24, 1, 8, SPARSE_FORMAT_BITMAP_BF16, 1) ==
                       SPARSE_FORMAT_BITMAP_BF16,
               "sparse_format_for");
    sparse_format f;
    TEST_CHECK(sparse_format_from_string("2:4", &f) == LOSA_OK && f == SPARSE_FORMAT_NM24 &&
                   !strcmp(sparse_format_name(SPARSE_FORMAT_NM24), "2:4"),
               "name 2:4");
}

int main(void)
{
    core_rng r;
    core_rng_seed(&r, 2024);
    test_hand();
    static const int shapes[][2] = {{1, 4},   {5, 8},    {3, 20},   {7, 36},   {17, 44},
                                    {9, 32},  {33, 200}, {64, 1024}, {40, 1100}, {13, 3000},
                                    {1030, 516}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        run_case(shapes[k][0], shapes[k][1], &r);
    return test_finish("test_sparse_nm");
}
