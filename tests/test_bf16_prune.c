// ranks: 1 2
/* test_bf16_prune: pruning a bf16 stage (issue 14, model.dtype = bf16 for
 * losa prune / run).  A small random model (D 64, F 96, L 2, H 4, Hkv 2,
 * V 512) whose maps are bf16 values, held twice: as an fp32 stage (the
 * exact widening) and as a plain bf16 stage with the same bits.
 *  - kern_bf16_from_f32_nz: round to nearest even, except that a non-zero
 *    whose rounding is +-0 becomes +-2^-133 (hand-derived bit patterns);
 *  - the per-layer entry point calib_prune_layer_maps with the same
 *    statistics on both stages, magnitude / Wanda / SparseGPT, unstructured
 *    and 2:4: the bf16 mask is exactly the fp32 one; magnitude and Wanda
 *    keep the kept weights bit for bit; SparseGPT's kept weights are the
 *    fp32 result rounded to nearest even, bit for bit (the bf16 path
 *    widens exactly and runs the same fp32 code on the same shapes in the
 *    same process: the same arithmetic); sparsity exact by the counting
 *    rules of include/prune.h; no weight raised;
 *  - calib_prune_model on the bf16 stage in every layout of the world
 *    (P stages; 1 stage x P replicas): the stage stays plain bf16, the
 *    measured sparsity is the target, magnitude's masks and bits are those
 *    of the fp32 magnitude pruner on the widening (magnitude reads no
 *    data); then losa_store_write_model and read back: root dtype bf16,
 *    every rank's maps bit-identical to its stage (bf16 read), the zero set
 *    identical through the fp32 (widening) read;
 *  - the memory plan: calib_prune_bytes of a bf16 stage is the fp32 one
 *    plus the fp32 scratch of the widest input group (gate + up here). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calib.h"
#include "dist.h"
#include "io.h"
#include "kernels.h"
#include "losa.h"
#include "model.h"
#include "prune.h"
#include "test_util.h"
#include "tok.h"

enum { NWIN = 4, SEQ = 16, CHUNK = 2, NTOK = 512, BS = 32 };

static model_config test_config(void)
{
    model_config c = {.dim = 64, .hidden_dim = 96, .n_layers = 2, .n_heads = 4,
                      .n_kv_heads = 2, .vocab_size = 512, .max_seq_len = 32,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 0,
                      .bos_id = 1, .eos_id = 2};
    return c;
}

typedef struct {
    prune_method method;
    double sp;
    int nm_n, nm_m;
} test_case;

static prune_config case_config(const test_case *tc)
{
    prune_config pc;
    prune_config_default(&pc);
    pc.method = tc->method;
    pc.sparsity = tc->sp;
    pc.nm_n = tc->nm_n;
    pc.nm_m = tc->nm_m;
    pc.blocksize = BS; /* D 64 = 2 blocks, F 96 = 3 */
    return pc;
}

static const char *case_name(const test_case *tc, char *buf, size_t n)
{
    snprintf(buf, n, "%s %s", prune_method_str(tc->method), tc->nm_m ? "2:4" : "unstructured");
    return buf;
}

/* fp32 stage f with bf16-exact maps, and the plain bf16 stage b of the same
 * split holding the same bits (embedding, norms and head equal). */
static void make_pair(const model_config *c, int stage, int n_stages, model_stage *f,
                      model_stage *b)
{
    model_stage *both[2] = {f, b};
    for (int k = 0; k < 2; k++) {
        LOSA_CHECK(model_stage_build(both[k], c, stage, n_stages) == LOSA_OK);
        model_stage_randomize(both[k], 7, 0.12f);
        for (int l = 0; l < both[k]->n_layers; l++)
            for (int m = 0; m < MODEL_N_MAPS; m++) {
                int o, i;
                model_map_shape(c, m, &o, &i);
                float *w = both[k]->layers[l].w[m];
                for (int64_t e = 0; e < (int64_t)o * i; e++)
                    w[e] = kern_bf16_value(kern_bf16_round(w[e]));
            }
    }
    int64_t lost = -1;
    LOSA_CHECK(model_stage_to_bf16(b, &lost) == LOSA_OK && lost == 0);
}

/* Distance in bf16 ulps of two finite bf16 patterns (sign-magnitude). */
static int64_t ulps(uint16_t a, uint16_t b)
{
    int64_t x = a & 0x8000u ? -(int64_t)(a & 0x7fffu) : (int64_t)a;
    int64_t y = b & 0x8000u ? -(int64_t)(b & 0x7fffu) : (int64_t)b;
    return x > y ? x - y : y - x;
}

/* The zeros the counting rules of include/prune.h give one (out, in) map. */
static int64_t want_zeros(const test_case *tc, int out, int in)
{
    if (tc->nm_m) return (int64_t)out * in / tc->nm_m * tc->nm_n;
    if (tc->method != PRUNE_METHOD_SPARSEGPT) return prune_count((int64_t)out * in, tc->sp);
    int64_t z = 0; /* per block of BS columns */
    for (int i1 = 0; i1 < in; i1 += BS) {
        int count = in - i1 < BS ? in - i1 : BS;
        z += prune_count((int64_t)out * count, tc->sp);
    }
    return z;
}

static void test_round_nz(void)
{
    /* 2^-134 is half the smallest bf16 subnormal: a tie, to even = 0 */
    const float x[] = {0.0f, -0.0f, 1e-41f, -1e-41f, 0x1p-134f, 0x1.8p-134f, 1.0f, -3.0f};
    const uint16_t want[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x0001, 0x0001, 0x3f80, 0xc040};
    uint16_t y[8], z[8];
    int64_t raised = kern_bf16_from_f32_nz(y, x, 8);
    int64_t lost = kern_bf16_from_f32(z, x, 8);
    for (int k = 0; k < 8; k++)
        TEST_CHECK(y[k] == want[k], "nz %d: %a -> 0x%04x, want 0x%04x", k, (double)x[k], y[k],
                   want[k]);
    /* raised: 1e-41, -1e-41, 2^-134 (1.5 * 2^-134 rounds up to 2^-133 on its own) */
    TEST_CHECK(raised == 3, "raised %lld, want 3", (long long)raised);
    TEST_CHECK(lost == 3 && z[2] == 0 && z[3] == 0x8000 && z[5] == 0x0001,
               "kern_bf16_from_f32: lost %lld", (long long)lost);
}

/* Statistics of each input from random correlated activations. */
static void make_inputs(const model_config *c, prune_stats st[MODEL_N_INPUTS],
                        prune_input x[MODEL_N_INPUTS], double *hinv, unsigned char *dead)
{
    core_rng r;
    core_rng_seed(&r, 99);
    for (int g = 0; g < MODEL_N_INPUTS; g++) {
        int W = model_input_width(c, g);
        float *X = core_calloc((size_t)NTOK * W, sizeof(float));
        for (int j = 0; j < W; j++) {
            float scale = 0.2f + 2.0f * core_rng_uniform(&r);
            for (int t = 0; t < NTOK; t++) X[(int64_t)t * W + j] = scale * core_rng_normal(&r);
        }
        for (int t = 0; t < NTOK; t++) /* neighbours correlated: H not diagonal */
            for (int j = W - 1; j > 0; j--) X[(int64_t)t * W + j] += 0.5f * X[(int64_t)t * W + j - 1];
        LOSA_CHECK(prune_stats_init(&st[g], W, 1) == LOSA_OK);
        LOSA_CHECK(prune_stats_accumulate(&st[g], X, NTOK) == LOSA_OK);
        LOSA_CHECK(prune_stats_finalize(&st[g]) == LOSA_OK);
        x[g] = (prune_input){.in = W, .colsq = st[g].colsq, .H = st[g].H, .hinv = hinv,
                             .dead = dead};
        core_free(X);
    }
}

/* calib_prune_layer_maps on the fp32 widening and on the bf16 stage. */
static void test_layer_maps(const model_config *c, const test_case *tc)
{
    char name[64];
    case_name(tc, name, sizeof name);
    prune_config pc = case_config(tc);
    model_stage f, b;
    make_pair(c, 0, 1, &f, &b);
    prune_stats st[MODEL_N_INPUTS];
    prune_input x[MODEL_N_INPUTS];
    int F = c->hidden_dim;
    double *hinv = core_calloc((size_t)F * F, sizeof(double));
    unsigned char *dead = core_calloc((size_t)F, 1);
    make_inputs(c, st, x, hinv, dead);
    int64_t raised = 0, mism = 0, worst = 0, bad_zeros = 0, changed = 0, nm_bad = 0;
    for (int l = 0; l < c->n_layers; l++) {
        TEST_CHECK(calib_prune_layer_maps(&f, l, &pc, tc->sp, x, NULL, NULL, NULL) == LOSA_OK,
                   "%s fp32: %s", name, core_errmsg());
        TEST_CHECK(calib_prune_layer_maps(&b, l, &pc, tc->sp, x, NULL, NULL, &raised) == LOSA_OK,
                   "%s bf16: %s", name, core_errmsg());
    }
    model_stage orig, unused;
    make_pair(c, 0, 1, &unused, &orig); /* the bits before pruning */
    model_stage_free(&unused);
    for (int l = 0; l < c->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(c, m, &o, &i);
            int64_t n = (int64_t)o * i, z = 0;
            const float *wf = f.layers[l].w[m];
            const uint16_t *wb = b.layers[l].wb[m], *w0 = orig.layers[l].wb[m];
            float *wide = core_calloc((size_t)n, sizeof(float));
            kern_bf16_to_f32(wide, wb, n);
            for (int64_t e = 0; e < n; e++) {
                int zb = (wb[e] & 0x7fffu) == 0;
                z += zb;
                mism += zb != (wf[e] == 0.0f);
                int64_t u = ulps(wb[e], kern_bf16_round(wf[e]));
                if (u > worst) worst = u;
                if (!zb && tc->method != PRUNE_METHOD_SPARSEGPT) changed += wb[e] != w0[e];
            }
            bad_zeros += z != want_zeros(tc, o, i);
            if (tc->nm_m) nm_bad += prune_nm_check(wide, o, i, tc->nm_n, tc->nm_m);
            core_free(wide);
        }
    fprintf(stderr, "  layer maps %-22s mask mismatches %lld, max ulps vs rounded fp32 %lld, "
            "raised %lld\n", name, (long long)mism, (long long)worst, (long long)raised);
    TEST_CHECK(mism == 0, "%s: %lld mask entries differ from the fp32 widening's", name,
               (long long)mism);
    /* magnitude / Wanda only zero weights: the rest keep their bits; SparseGPT's
     * updates are the fp32 ones rounded, bit for bit */
    TEST_CHECK(worst == 0,
               "%s: kept weights %lld ulps from the rounded fp32 result", name, (long long)worst);
    TEST_CHECK(changed == 0, "%s: %lld kept weights changed", name, (long long)changed);
    TEST_CHECK(bad_zeros == 0, "%s: %lld maps off the counting rule's zeros", name,
               (long long)bad_zeros);
    TEST_CHECK(nm_bad == 0, "%s: %lld groups break 2:4", name, (long long)nm_bad);
    TEST_CHECK(raised == 0, "%s: %lld weights raised (none is that small)", name, (long long)raised);
    for (int g = 0; g < MODEL_N_INPUTS; g++) prune_stats_free(&st[g]);
    core_free(hinv);
    core_free(dead);
    model_stage_free(&orig);
    model_stage_free(&f);
    model_stage_free(&b);
}

/* calib_prune_model on bf16 in layout pp x dp, then the store round trip. */
static void test_model(dist_ctx *d, const model_config *c, const test_case *tc, int pp, int dp,
                       const int *tokens, const tok_tokenizer *tok, const char *tmp)
{
    char name[64], path[1200];
    case_name(tc, name, sizeof name);
    TEST_CHECK(dist_set_layout(d, pp, dp) == LOSA_OK, "layout %dx%d", pp, dp);
    model_stage f, b;
    make_pair(c, dist_stage(d), dist_n_stages(d), &f, &b);
    calib_prune_opts o = {.pc = case_config(tc), .chunk = CHUNK};
    calib_prune_result res;
    losa_status st = calib_prune_model(d, &b, tokens, NWIN, SEQ, &o, NULL, &res);
    TEST_CHECK(st == LOSA_OK, "%s pp %d dp %d: %s", name, pp, dp, core_errmsg());
    TEST_CHECK(b.dtype == MODEL_DTYPE_BF16 && !b.bf16_packed, "%s: stage no longer plain bf16",
               name);
    TEST_CHECK(res.bf16_raised == 0, "%s: raised %lld", name, (long long)res.bf16_raised);
    int64_t per_layer = 0, want = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int oo, ii;
        model_map_shape(c, m, &oo, &ii);
        per_layer += (int64_t)oo * ii;
        want += want_zeros(tc, oo, ii);
    }
    for (int l = 0; l < c->n_layers; l++)
        TEST_CHECK(res.sparsity[l] == (double)want / per_layer, "%s pp %d dp %d layer %d: "
                   "sparsity %.9f, want %.9f", name, pp, dp, l, res.sparsity[l],
                   (double)want / per_layer);
    if (tc->method == PRUNE_METHOD_MAGNITUDE) {
        prune_input x[MODEL_N_INPUTS];
        for (int g = 0; g < MODEL_N_INPUTS; g++)
            x[g] = (prune_input){.in = model_input_width(c, g)};
        int64_t diff = 0;
        for (int l = 0; l < f.n_layers; l++) {
            LOSA_CHECK(calib_prune_layer_maps(&f, l, &o.pc, tc->sp, x, NULL, NULL, NULL) == LOSA_OK);
            for (int m = 0; m < MODEL_N_MAPS; m++) {
                int oo, ii;
                model_map_shape(c, m, &oo, &ii);
                for (int64_t e = 0; e < (int64_t)oo * ii; e++)
                    diff += b.layers[l].wb[m][e] != kern_bf16_round(f.layers[l].w[m][e]);
            }
        }
        TEST_CHECK(diff == 0, "%s pp %d dp %d: %lld weights differ from fp32 magnitude on the "
                   "widening", name, pp, dp, (long long)diff);
    }
    /* the store: written by rank 0 from every stage, read back on every rank */
    snprintf(path, sizeof path, "%s/test_bf16_prune.%d.h5", tmp, (int)getpid());
    dist_bcast(d, path, sizeof path, 0);
    io_store *io = NULL;
    st = LOSA_OK;
    if (dist_rank(d) == 0) st = io_store_create(&io, path);
    if ((st = dist_agree(d, st)) == LOSA_OK)
        st = losa_store_write_model(d, io, &b, tok, "test_bf16_prune");
    TEST_CHECK(st == LOSA_OK, "%s: store write: %s", name, core_errmsg());
    model_stage rb, rf;
    memset(&rb, 0, sizeof rb);
    memset(&rf, 0, sizeof rf);
    model_dtype dt = MODEL_DTYPE_F32;
    st = io_store_open(&io, path);
    if (st == LOSA_OK) st = io_store_read_dtype(io, &dt);
    if (st == LOSA_OK)
        st = model_stage_build_dtype(&rb, c, dist_stage(d), dist_n_stages(d), NULL,
                                     MODEL_DTYPE_BF16);
    if (st == LOSA_OK) st = io_store_read_stage(io, &rb);
    if (st == LOSA_OK) st = model_stage_build(&rf, c, dist_stage(d), dist_n_stages(d));
    if (st == LOSA_OK) st = io_store_read_stage(io, &rf);
    io_store_close(&io);
    TEST_CHECK(st == LOSA_OK, "%s: read back (rank %d): %s", name, dist_rank(d), core_errmsg());
    TEST_CHECK(dt == MODEL_DTYPE_BF16, "%s: store dtype %s", name, model_dtype_name(dt));
    if (st == LOSA_OK) {
        int64_t zb = calib_stage_zeros(&b, NULL), zf = calib_stage_zeros(&rf, NULL);
        TEST_CHECK(rb.n_params_bf16 == b.n_params_bf16 &&
                       !memcmp(rb.params_bf16, b.params_bf16, sizeof(uint16_t) * b.n_params_bf16),
                   "%s pp %d dp %d: bf16 maps read back differ", name, pp, dp);
        TEST_CHECK(zf == zb && calib_stage_zeros(&rb, NULL) == zb,
                   "%s: zeros %lld in the stage, %lld read as fp32", name, (long long)zb,
                   (long long)zf);
    }
    model_stage_free(&rb);
    model_stage_free(&rf);
    dist_barrier(d); /* every rank has read it */
    if (dist_rank(d) == 0) unlink(path);
    calib_result_free(&res);
    model_stage_free(&f);
    model_stage_free(&b);
}

static void test_memory(const model_config *c)
{
    int D = c->dim, F = c->hidden_dim, kv = model_kv_dim(c);
    int64_t qkv = (int64_t)D * D + 2LL * kv * D, gu = 2LL * F * D; /* the widest group */
    size_t widen = core_alloc_bytes((size_t)(gu > qkv ? gu : qkv), sizeof(float));
    TEST_CHECK(calib_prune_widen_bytes(c, MODEL_DTYPE_BF16) == widen &&
                   calib_prune_widen_bytes(c, MODEL_DTYPE_F32) == 0,
               "widen bytes %zu, want %zu", calib_prune_widen_bytes(c, MODEL_DTYPE_BF16), widen);
    prune_config pc;
    prune_config_default(&pc);
    for (int mth = 0; mth < PRUNE_METHOD_COUNT; mth++) {
        pc.method = (prune_method)mth;
        size_t a = calib_prune_bytes(c, 2, NWIN, NWIN, SEQ, CHUNK, &pc, 0, 1, MODEL_DTYPE_F32);
        size_t b = calib_prune_bytes(c, 2, NWIN, NWIN, SEQ, CHUNK, &pc, 0, 1, MODEL_DTYPE_BF16);
        TEST_CHECK(b == a + widen, "%s: plan bf16 %zu = fp32 %zu + %zu", prune_method_str(pc.method),
                   b, a, widen);
    }
}

int main(int argc, char **argv)
{
    dist_ctx *d;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) return 1;
    core_log_quiet(1);
    int P = dist_size(d), rank = dist_rank(d);
    model_config c = test_config();
    const char *data = getenv("LOSA_DATA"), *tmp = getenv("LOSA_TEST_TMP");
    if (!tmp) tmp = "/tmp";
    char tokp[1024];
    snprintf(tokp, sizeof tokp, "%s/models/stories260K/tok512.bin", data ? data : "../shared/data");
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    TEST_CHECK(tok_load_llama2c(&tok, tokp, c.vocab_size) == LOSA_OK, "tokenizer: %s",
               core_errmsg());
    const test_case cases[] = {
        {PRUNE_METHOD_MAGNITUDE, 0.6, 0, 0}, {PRUNE_METHOD_WANDA, 0.55, 0, 0},
        {PRUNE_METHOD_SPARSEGPT, 0.5, 0, 0}, {PRUNE_METHOD_MAGNITUDE, 0.5, 2, 4},
        {PRUNE_METHOD_WANDA, 0.5, 2, 4},     {PRUNE_METHOD_SPARSEGPT, 0.5, 2, 4},
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    if (rank == 0) {
        test_round_nz();
        test_memory(&c);
        for (int k = 0; k < nc; k++) test_layer_maps(&c, &cases[k]);
    }
    int *tokens = malloc(sizeof(int) * NWIN * SEQ);
    core_rng r;
    core_rng_seed(&r, 2026);
    for (int i = 0; i < NWIN * SEQ; i++) tokens[i] = (int)(core_rng_u64(&r) % c.vocab_size);
    int layouts[2][2] = {{P, 1}, {1, P}}, nl = P > 1 ? 2 : 1;
    for (int k = 0; k < nc; k++)
        for (int li = 0; li < nl; li++)
            test_model(d, &c, &cases[k], layouts[li][0], layouts[li][1], tokens, &tok, tmp);
    free(tokens);
    tok_free(&tok);
    double fails = test_failures;
    dist_sum_doubles(d, &fails, 1);
    test_failures = (int)fails;
    int rc = test_finish("test_bf16_prune");
    dist_finalize(&d);
    return rc;
}
