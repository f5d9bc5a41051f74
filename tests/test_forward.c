/* Forward pass of a random tiny LLaMA (grouped-query attention, untied head)
 * against the independent numpy reference tests/ref/llama_ref.py (float64),
 * plus the fast kernels against their _ref twins.  bf16 maps
 * (model_stage_pack_bf16): the maps are first rounded to bf16 in the fp32
 * stage, the reference runs on those values, then the stage is converted
 * (exactly: the values are bf16 already) and its logits compared. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "model.h"
#include "test_util.h"
#include "stage_bf16_values.h"

static int run_reference(const model_stage *s, const int *tokens, int B, int T,
                         float *logits, const char *tag)
{
    const model_config *c = &s->cfg;
    const char *tmp = getenv("LOSA_TEST_TMP") ? getenv("LOSA_TEST_TMP") : "/tmp";
    char fx[512], out[512], cmd[1500];
    snprintf(fx, sizeof fx, "%s/forward_%s.bin", tmp, tag);
    snprintf(out, sizeof out, "%s/forward_%s.out", tmp, tag);
    FILE *f = fopen(fx, "wb");
    if (!f) return 1;
    int32_t hdr[10] = {1, c->dim, c->hidden_dim, c->n_layers, c->n_heads,
                       c->n_kv_heads, c->vocab_size, T, B, c->tie_embeddings};
    float fl[2] = {c->rms_eps, c->rope_theta};
    fwrite("LREF", 1, 4, f);
    fwrite(hdr, 4, 10, f);
    fwrite(fl, 4, 2, f);
    fwrite(s->params, sizeof(float), s->n_params, f);
    fwrite(tokens, sizeof(int), (size_t)B * T, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/llama_ref.py %s %s", fx, out);
    if (system(cmd) != 0) return 1;
    f = fopen(out, "rb");
    if (!f) return 1;
    size_t n = (size_t)B * T * c->vocab_size;
    size_t got = fread(logits, sizeof(float), n, f);
    fclose(f);
    return got != n;
}

static void check_model(model_config c, int B, int T, const char *tag)
{
    model_stage s;
    model_acts a;
    TEST_CHECK(model_stage_build(&s, &c, 0, 1) == LOSA_OK, "build");
    model_stage_randomize(&s, 7, 0.15f);
    TEST_CHECK(model_acts_build(&a, &s, B, T, 0) == LOSA_OK, "acts");
    /* every buffer on a 64-byte line (the decode kernels' x), whatever B * T
     * (3 x 7: odd, the per-position rstd used to shift the buffers after it) */
    const float *bufs[] = {a.x, a.tmp, a.logits, a.xin, a.ln1, a.rstd1, a.q, a.k, a.v, a.att,
                           a.atty, a.xres, a.ln2, a.rstd2, a.gate, a.up, a.hid, a.xdrop};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        TEST_CHECK(((uintptr_t)bufs[i] & 63) == 0, "%s: activation buffer %zu not 64-byte aligned",
                   tag, i);
    int *tok = malloc(sizeof(int) * B * T);
    core_rng r;
    core_rng_seed(&r, 3);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(core_rng_u64(&r) % c.vocab_size);
    model_stage_forward(&a, &s, tok, B, T);
    size_t n = (size_t)B * T * c.vocab_size;
    float *ref = malloc(sizeof(float) * n);
    int rc = run_reference(&s, tok, B, T, ref, tag);
    TEST_CHECK(rc == 0, "reference script failed (%s)", tag);
    if (rc == 0) {
        double e = test_max_rel(a.logits, ref, (long)n);
        fprintf(stderr, "%s: logits max rel err vs numpy = %.3g\n", tag, e);
        TEST_CHECK(e <= 1e-4, "%s logits rel err %.3g > 1e-4", tag, e);
    }
    /* the saved-activation path gives the same logits bit for bit */
    model_acts a2;
    TEST_CHECK(model_acts_build(&a2, &s, B, T, 1) == LOSA_OK, "acts save");
    model_stage_forward(&a2, &s, tok, B, T);
    TEST_CHECK(memcmp(a2.logits, a.logits, sizeof(float) * n) == 0,
               "%s: save=1 path differs from save=0", tag);
    model_acts_free(&a2);
    free(ref);
    free(tok);
    model_acts_free(&a);
    model_stage_free(&s);
}

static void check_kernels(void)
{
    int B = 2, T = 9, H = 4, Hkv = 2, hd = 8;
    int qs = H * hd, ks = Hkv * hd;
    float *q = malloc(sizeof(float) * B * T * qs), *k = malloc(sizeof(float) * B * T * ks);
    float *v = malloc(sizeof(float) * B * T * ks);
    float *o1 = malloc(sizeof(float) * B * T * qs), *o2 = malloc(sizeof(float) * B * T * qs);
    float *lse = malloc(sizeof(float) * B * H * T);
    core_rng r;
    core_rng_seed(&r, 11);
    for (int i = 0; i < B * T * qs; i++) q[i] = core_rng_normal(&r);
    for (int i = 0; i < B * T * ks; i++) k[i] = core_rng_normal(&r), v[i] = core_rng_normal(&r);
    kern_attention_forward(o1, lse, q, k, v, B, T, H, Hkv, hd);
    kern_attention_forward_ref(o2, q, k, v, B, T, H, Hkv, hd);
    double e = test_max_rel(o1, o2, B * T * qs);
    TEST_CHECK(e < 1e-5, "attention vs ref: %.3g", e);
    /* lse of row i = log sum_{j <= i} exp(q_i . k_j / sqrt(hd)), in double */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double sum = 0;
                for (int j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int d = 0; d < hd; d++)
                        dot += (double)q[(b * T + i) * qs + h * hd + d] *
                               k[(b * T + j) * ks + (h / (H / Hkv)) * hd + d];
                    sum += exp(dot / sqrt((double)hd));
                }
                TEST_NEAR(lse[(b * H + h) * T + i], log(sum), 1e-5, "attention lse");
            }
    int N = 13, IC = 17, OC = 11;
    float *x = malloc(sizeof(float) * N * IC), *w = malloc(sizeof(float) * OC * IC);
    float *y1 = malloc(sizeof(float) * N * OC), *y2 = malloc(sizeof(float) * N * OC);
    for (int i = 0; i < N * IC; i++) x[i] = core_rng_normal(&r);
    for (int i = 0; i < OC * IC; i++) w[i] = core_rng_normal(&r);
    kern_matmul_forward(y1, x, w, N, IC, OC);
    kern_matmul_forward_ref(y2, x, w, N, IC, OC);
    TEST_CHECK(test_max_rel(y1, y2, N * OC) < 1e-5, "matmul vs ref");
    free(q); free(k); free(v); free(o1); free(o2); free(lse);
    free(x); free(w); free(y1); free(y2);
}

/* The vectorised exp inside the softmax and log-sum-exp (expf_neg): against
 * libm's exp in double over [-100, 0] (relative error < 3e-7 by its
 * polynomial, plus the float rounding of the sum: 1e-6 is loose), and a NaN
 * or infinite logit gives a NaN loss instead of a finite number (and, under
 * UBSan in test_asan, no undefined shift or conversion on the way). */
static void check_exp_nan(void)
{
    enum { V = 1000 };
    float *l = malloc(sizeof(float) * V), *d = calloc(V, sizeof(float));
    for (int j = 0; j < V; j++) l[j] = -100.0f * j / (V - 1);
    double s = 0;
    for (int j = 0; j < V; j++) s += exp((double)l[j]);
    double want = log(s) - l[7];
    TEST_NEAR(kern_nll_row(l, 7, V), want, 1e-6, "nll_row vs libm");
    l[3] = NAN;
    TEST_CHECK(isnan(kern_nll_row(l, 7, V)), "NaN logit: nll %g", kern_nll_row(l, 7, V));
    int tgt = 7;
    double ce = kern_crossentropy_forward_backward(d, l, &tgt, 1, V, 1.0f);
    TEST_CHECK(isnan(ce), "NaN logit: cross-entropy %g", ce);
    l[3] = -INFINITY;
    TEST_CHECK(isfinite(kern_nll_row(l, 7, V)), "-inf logit: nll finite");
    free(l);
    free(d);
}

/* bf16 stage vs the float64 reference of its bf16-rounded weights (the
 * maps and the head; tied, the embedding the head shares).  The only
 * rounding beyond fp32 is each product's input activation rounded to bf16
 * (oneDNN; relative <= 2^-8 per entry), at 4 inputs per layer (ln1, atty,
 * ln2, hid) and the head's input.  To first order each is a relative
 * perturbation <= 2^-8 of the product's sum_k |x_k w_k|, so with no growth
 * through the layers (RMSNorm renormalises; weights N(0, 0.15)) the logits
 * move by at most (4 L + 1) 2^-8 relative to their largest magnitude: 0.051
 * at L = 3, the bound checked; the fp32 bound (1e-4) above is its floor. */
static void check_model_bf16(model_config c, int B, int T, const char *tag)
{
    model_stage s;
    model_acts a;
    TEST_CHECK(model_stage_build(&s, &c, 0, 1) == LOSA_OK, "build");
    model_stage_randomize(&s, 11, 0.15f);
    test_stage_round_bf16(&s);
    int *tok = malloc(sizeof(int) * B * T);
    for (int i = 0; i < B * T; i++) tok[i] = (i * 17 + 5) % c.vocab_size;
    size_t n = (size_t)B * T * c.vocab_size;
    float *ref = malloc(sizeof(float) * n);
    int rc = run_reference(&s, tok, B, T, ref, tag);
    TEST_CHECK(rc == 0, "reference script failed (%s)", tag);
    size_t n32 = s.n_params;
    int64_t lost = -1;
    TEST_CHECK(model_stage_pack_bf16(&s, &lost) == LOSA_OK && lost == 0, "to bf16");
    TEST_CHECK(s.dtype == MODEL_DTYPE_BF16 && s.layers[0].w[0] == NULL && s.layers[0].wb[0] &&
                   s.head == NULL && s.head_bf16,
               "bf16 stage: fp32 maps and head gone");
    /* tied: the fp32 embedding stays beside the bf16 head */
    size_t nhead = (size_t)c.vocab_size * c.dim, want = n32 + (c.tie_embeddings ? nhead : 0);
    TEST_CHECK(s.n_params + s.n_params_bf16 == want, "params repacked: %zu + %zu != %zu",
               s.n_params, s.n_params_bf16, want);
    TEST_CHECK(s.bytes_bf16 >= 2 * s.n_params_bf16, "bf16 block %zu bytes for %zu weights",
               s.bytes_bf16, s.n_params_bf16);
    /* the plan's figure is what the stage holds */
    size_t held = core_alloc_bytes(s.bytes_bf16, 1) + core_alloc_bytes(s.n_params, sizeof(float)) +
                  core_alloc_bytes((size_t)s.n_layers, sizeof(model_layer));
    TEST_CHECK(model_stage_bf16_bytes(&c, 0, 1, NULL) == held, "model_stage_bf16_bytes %zu != held %zu",
               model_stage_bf16_bytes(&c, 0, 1, NULL), held);
    TEST_CHECK(model_acts_build(&a, &s, B, T, 0) == LOSA_OK, "acts");
    model_stage_forward(&a, &s, tok, B, T);
    if (rc == 0) {
        double e = test_max_rel(a.logits, ref, (long)n), bound = (4.0 * c.n_layers + 1) / 256.0;
        fprintf(stderr, "%s: bf16 logits max rel err vs numpy = %.3g (bound %.3g)\n", tag, e,
                bound);
        TEST_CHECK(e <= bound, "%s bf16 logits rel err %.3g > %.3g", tag, e, bound);
        TEST_CHECK(strcmp(kern_gemm_engine(), "onednn") || e > 1e-6,
                   "%s: oneDNN bf16 logits equal the fp32 reference (%.3g): bf16 path not run",
                   tag, e);
    }
    /* the same stage with its maps unpacked in place (bf16_packed 0: the
     * plain layout element-wise users hold) runs kern_gemm_bf16w: the same
     * products, so the same bound against the reference */
    for (int l = 0; l < s.n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&c, m, &o, &i);
            uint16_t *w = malloc(sizeof(uint16_t) * (size_t)o * i);
            kern_bf16_unpack(w, s.layers[l].wb[m], o, i);
            memcpy(s.layers[l].wb[m], w, sizeof(uint16_t) * (size_t)o * i);
            free(w);
        }
    { /* the head too: its layout follows bf16_packed */
        size_t nh = (size_t)c.vocab_size * c.dim;
        uint16_t *w = malloc(sizeof(uint16_t) * nh);
        kern_bf16_unpack(w, s.head_bf16, c.vocab_size, c.dim);
        memcpy(s.head_bf16, w, sizeof(uint16_t) * nh);
        free(w);
    }
    s.bf16_packed = 0;
    float *packed = malloc(sizeof(float) * n);
    memcpy(packed, a.logits, sizeof(float) * n);
    model_stage_forward(&a, &s, tok, B, T);
    if (rc == 0) {
        double e = test_max_rel(a.logits, ref, (long)n), bound = (4.0 * c.n_layers + 1) / 256.0;
        fprintf(stderr, "%s: plain bf16 maps: max rel err vs numpy = %.3g, vs packed %.3g\n", tag,
                e, test_max_rel(a.logits, packed, (long)n));
        TEST_CHECK(e <= bound, "%s plain bf16 logits rel err %.3g > %.3g", tag, e, bound);
    }
    free(packed);
    model_bwd g; /* training takes the plain bf16 layout (test_lora), not the packed one */
    TEST_CHECK(model_bwd_build(&g, &s, B, T) == LOSA_OK, "backward takes a plain bf16 stage");
    model_bwd_free(&g);
    free(ref);
    free(tok);
    model_acts_free(&a);
    model_stage_free(&s);
}

/* The head alone, fp32 (before model_stage_pack_bf16) vs bf16 (after), on the
 * same residual stream x: both apply the same fp32 final RMSNorm (the same
 * code on the same values: the same xn in a.tmp), then
 *   fp32: l_j = fl(sum_k xn_k h_jk)           |l_j - exact| <= gamma_D S_j
 *   bf16: l_j = fl(sum_k bf(xn_k) bf(h_jk))   each factor relative <= u
 *         (u = 2^-8, round to nearest even), products exact in fp32, so
 *         |l_j - exact| <= ((1+u)^2 - 1 + gamma_D (1+u)^2) S_j
 * with S_j = sum_k |xn_k h_jk|; their difference within the sum of the two:
 *   (2u + u^2 + gamma_D ((1+u)^2 + 1)) S_j, checked entry by entry. */
static void check_head_bf16(model_config c, int B, int T)
{
    model_stage s;
    model_acts a;
    TEST_CHECK(model_stage_build(&s, &c, 0, 1) == LOSA_OK, "build");
    model_stage_randomize(&s, 5, 0.15f);
    TEST_CHECK(model_acts_build(&a, &s, B, T, 0) == LOSA_OK, "acts");
    int64_t N = (int64_t)B * T, D = c.dim, V = c.vocab_size;
    for (int64_t e = 0; e < N * D; e++) a.x[e] = (float)((e * 7919 % 1000) / 250.0 - 2.0);
    float *x0 = malloc(sizeof(float) * N * D), *l32 = malloc(sizeof(float) * N * V);
    float *h = malloc(sizeof(float) * V * D), *xn = malloc(sizeof(float) * N * D);
    memcpy(x0, a.x, sizeof(float) * N * D);
    memcpy(h, s.head, sizeof(float) * V * D);
    model_stage_head(&a, &s, B, T);
    memcpy(l32, a.logits, sizeof(float) * N * V);
    memcpy(xn, a.tmp, sizeof(float) * N * D);
    TEST_CHECK(model_stage_pack_bf16(&s, NULL) == LOSA_OK && s.head_bf16, "head to bf16");
    memcpy(a.x, x0, sizeof(float) * N * D);
    model_stage_head(&a, &s, B, T);
    TEST_CHECK(!memcmp(xn, a.tmp, sizeof(float) * N * D), "the final norm is the same fp32 code");
    const double u = 1.0 / 256, g = test_gamma((double)D, 1.0 / 16777216.0);
    int64_t bad = 0, same = 0;
    double worst = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < V; j++) {
            double S = 0;
            for (int64_t k = 0; k < D; k++) S += fabs((double)xn[i * D + k] * h[j * D + k]);
            double bound = (2 * u + u * u + g * ((1 + u) * (1 + u) + 1)) * S;
            double d = fabs((double)a.logits[i * V + j] - l32[i * V + j]);
            bad += !(d <= bound);
            same += d == 0;
            if (S > 0 && d / S > worst) worst = d / S;
        }
    fprintf(stderr, "bf16 head (%s): max |l16 - l32| / S = %.3g (bound %.3g), %lld of %lld equal\n",
            c.tie_embeddings ? "tied" : "untied", worst, 2 * u + u * u + g * ((1 + u) * (1 + u) + 1),
            (long long)same, (long long)(N * V));
    TEST_CHECK(bad == 0, "bf16 head: %lld logits off the bound", (long long)bad);
    TEST_CHECK(strcmp(kern_gemm_engine(), "onednn") || same < N * V, "bf16 head did not run");
    free(x0), free(l32), free(h), free(xn);
    model_acts_free(&a);
    model_stage_free(&s);
}

int main(void)
{
    check_exp_nan();
    check_kernels();
    model_config c = {.dim = 64, .hidden_dim = 96, .n_layers = 3, .n_heads = 8,
                      .n_kv_heads = 2, .vocab_size = 50, .max_seq_len = 32,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 0,
                      .bos_id = 1, .eos_id = 2};
    check_model(c, 2, 16, "gqa_untied");
    c.tie_embeddings = 1;
    c.n_kv_heads = 8;
    check_model(c, 3, 7, "mha_tied");
    c.tie_embeddings = 0;
    c.n_kv_heads = 2;
    check_model_bf16(c, 2, 16, "gqa_bf16");
    c.tie_embeddings = 1;
    check_model_bf16(c, 2, 9, "gqa_tied_bf16");
    check_head_bf16(c, 2, 9);
    c.tie_embeddings = 0;
    c.vocab_size = 1000;
    c.dim = 256;
    c.n_heads = 8;
    check_head_bf16(c, 3, 11);
    return test_finish("test_forward");
}
