/* Masked LoRA: whole-model adapter gradients vs an independent torch
 * reference (tests/ref/lora_grad_ref.py, float64 autograd), with and without
 * dropout; activation checkpointing bit-identical to stored activations;
 * merge/unmerge on a magnitude-pruned model (non-zero count unchanged,
 * unmerge inverts merge within fp32 rounding); the transient dense forms
 * against the persistent ones (test_buffers); AdamW and the LR schedule
 * against hand-derived values; adapter + optimizer state HDF5 round trip. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "lora.h"
#include "model.h"
#include "test_util.h"
#include "stage_bf16_values.h"
#include "tok.h"

static const model_config tiny = {.dim = 32, .hidden_dim = 48, .n_layers = 3, .n_heads = 4,
                                  .n_kv_heads = 2, .vocab_size = 37, .max_seq_len = 16,
                                  .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                                  .tie_embeddings = 0, .bos_id = 1, .eos_id = 2};

static const char *tmpdir(void)
{
    return getenv("LOSA_TEST_TMP") ? getenv("LOSA_TEST_TMP") : "/tmp";
}

/* Per-matrix magnitude pruning: zero the fraction `sp` of smallest |w|. */
static int cmp_abs(const void *a, const void *b)
{
    float x = fabsf(*(const float *)a), y = fabsf(*(const float *)b);
    return (x > y) - (x < y);
}
static void prune_stage(model_stage *s, float sp)
{
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&s->cfg, m, &o, &i);
            int64_t n = (int64_t)o * i, k = (int64_t)(sp * n);
            float *w = s->layers[l].w[m], *c = malloc(sizeof(float) * n);
            memcpy(c, w, sizeof(float) * n);
            qsort(c, n, sizeof(float), cmp_abs);
            float thr = fabsf(c[k > 0 ? k - 1 : 0]);
            int64_t z = 0;
            for (int64_t e = 0; e < n && k > 0; e++)
                if (fabsf(w[e]) <= thr && z < k) { w[e] = 0.0f; z++; }
            free(c);
        }
}
static int64_t count_nnz(const float *w, int64_t n)
{
    int64_t c = 0;
    for (int64_t e = 0; e < n; e++) c += w[e] != 0.0f;
    return c;
}

static void randomize_B(lora_adapters *ad, uint64_t seed, float sd)
{
    core_rng r;
    core_rng_seed(&r, seed);
    for (int k = 0; k < ad->n_layers * MODEL_N_MAPS; k++) {
        int o, i;
        model_map_shape(&ad->mcfg, k % MODEL_N_MAPS, &o, &i);
        for (int64_t e = 0; e < (int64_t)o * ad->cfg.r_max; e++)
            ad->B[k][e] = sd * core_rng_normal(&r);
    }
}

/* forward + backward of one micro-batch on a whole-model stage; grads of A, B
 * left in ad->grads; returns scale * sum NLL. */
static double grads_once(model_stage *s, lora_adapters *ad, const int *tok, const int *tgt,
                         int B, int T, float scale, int ckpt, uint64_t dseed)
{
    model_acts a, rec;
    model_bwd g;
    model_acts_build(&a, s, B, T, ckpt ? MODEL_ACTS_NOSAVE : MODEL_ACTS_SAVE);
    model_bwd_build(&g, s, B, T);
    a.drop_p = ad->cfg.dropout;
    a.drop_seed = dseed;
    int64_t ND = (int64_t)B * T * s->cfg.dim, n;
    float *xin = ckpt ? malloc(sizeof(float) * ND * s->n_layers) : NULL;
    lora_grad_zero(ad);
    model_stage_embed(&a, s, tok, B, T);
    if (ckpt) model_stage_forward_ckpt(&a, xin, s, B, T);
    else for (int l = 0; l < s->n_layers; l++) model_layer_forward(&a, s, l, B, T);
    model_stage_head(&a, s, B, T);
    double nll = model_head_backward(&g, g.dx, &a, s, tgt, B, T, scale, &n);
    if (ckpt) {
        model_acts_build(&rec, s, B, T, MODEL_ACTS_SAVE_ONE);
        rec.drop_p = a.drop_p;
        rec.drop_seed = a.drop_seed;
        model_stage_backward_ckpt(&g, g.dx, &rec, xin, s, B, T);
        model_acts_free(&rec);
    } else {
        model_stage_backward(&g, g.dx, &a, s, B, T);
    }
    lora_grad_project(ad, s);
    free(xin);
    model_bwd_free(&g);
    model_acts_free(&a);
    return nll * scale;
}

static int write_fixture(const char *path, const model_stage *s, const lora_adapters *ad,
                         const int *tok, const int *tgt, int B, int T, float lscale,
                         uint64_t dseed)
{
    const model_config *c = &s->cfg;
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    int drop = ad->cfg.dropout > 0;
    int32_t hdr[13] = {1, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                       c->vocab_size, T, B, c->tie_embeddings, ad->cfg.r_max, drop, 0};
    float fl[4] = {c->rms_eps, c->rope_theta, ad->scale, lscale};
    fwrite("LGRF", 1, 4, f);
    fwrite(hdr, 4, 12, f);
    fwrite(fl, 4, 4, f);
    fwrite(s->params, sizeof(float), s->n_params, f);
    fwrite(ad->rank, sizeof(int), ad->n_layers, f);
    for (int k = 0; k < ad->n_layers * MODEL_N_MAPS; k++) {
        int o, i;
        model_map_shape(c, k % MODEL_N_MAPS, &o, &i);
        fwrite(ad->A[k], sizeof(float), (size_t)ad->cfg.r_max * i, f);
        fwrite(ad->B[k], sizeof(float), (size_t)ad->cfg.r_max * o, f);
    }
    fwrite(tok, sizeof(int), (size_t)B * T, f);
    fwrite(tgt, sizeof(int), (size_t)B * T, f);
    if (drop) {
        float keep = 1.0f / (1.0f - ad->cfg.dropout);
        for (int k = 0; k < ad->n_layers * MODEL_N_MAPS; k++) {
            int o, i, m = k % MODEL_N_MAPS;
            model_map_shape(c, m, &o, &i);
            for (int64_t e = 0; e < (int64_t)B * T * i; e++) {
                float v = model_drop_keep(dseed, s->layer0 + k / MODEL_N_MAPS, m, e,
                                          ad->cfg.dropout) ? keep : 0.0f;
                fwrite(&v, sizeof v, 1, f);
            }
        }
    }
    fclose(f);
    return 0;
}

/* whole-model gradients against torch */
static void test_reference(float dropout, const char *tag)
{
    model_stage s;
    lora_adapters ad;
    lora_config lc;
    lora_config_default(&lc);
    lc.dropout = dropout;
    lc.rank = 5;
    int B = 2, T = 9;
    model_stage_build(&s, &tiny, 0, 1);
    model_stage_randomize(&s, 11, 0.3f);
    prune_stage(&s, 0.5f);
    TEST_CHECK(lora_adapters_build(&ad, &s, &lc) == LOSA_OK, "adapters");
    lora_set_rank(&ad, 1, 3);
    lora_set_rank(&ad, 2, 16);
    randomize_B(&ad, 5, 0.2f);
    lora_delta_update(&ad, &s);
    int tok[18], tgt[18];
    core_rng r;
    core_rng_seed(&r, 17);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(core_rng_u64(&r) % tiny.vocab_size);
    int nt = 0;
    for (int i = 0; i < B * T; i++) {
        int t = i % T;
        tgt[i] = (t + 1 < T && i % 4 != 1) ? tok[i + 1] : -1; /* some ignored */
        nt += tgt[i] >= 0;
    }
    float lscale = 1.0f / nt;
    uint64_t dseed = 99;
    double loss = grads_once(&s, &ad, tok, tgt, B, T, lscale, 0, dseed);
    char fx[512], out[512], cmd[1200];
    snprintf(fx, sizeof fx, "%s/lora_grad_%s.bin", tmpdir(), tag);
    snprintf(out, sizeof out, "%s/lora_grad_%s.out", tmpdir(), tag);
    TEST_CHECK(write_fixture(fx, &s, &ad, tok, tgt, B, T, lscale, dseed) == 0, "fixture");
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/lora_grad_ref.py %s %s", fx, out);
    int rc = system(cmd);
    TEST_CHECK(rc == 0, "torch reference failed (%s)", tag);
    FILE *f = fopen(out, "rb");
    if (rc != 0 || !f) goto done;
    double rloss;
    TEST_CHECK(fread(&rloss, 8, 1, f) == 1, "read loss");
    TEST_NEAR(loss, rloss, 1e-5, "loss vs torch");
    float *ref = malloc(sizeof(float) * ad.n_params);
    TEST_CHECK(fread(ref, sizeof(float), ad.n_params, f) == ad.n_params, "read grads");
    /* grads layout equals the fixture order: per layer, per map A then B */
    double worst = 0;
    for (int k = 0; k < ad.n_layers * MODEL_N_MAPS; k++) {
        int o, i;
        model_map_shape(&tiny, k % MODEL_N_MAPS, &o, &i);
        size_t off = ad.gA[k] - ad.grads;
        double ea = test_max_rel(ad.gA[k], ref + off, (long)ad.cfg.r_max * i);
        double eb = test_max_rel(ad.gB[k], ref + off + (size_t)ad.cfg.r_max * i,
                                 (long)ad.cfg.r_max * o);
        worst = fmax(worst, fmax(ea, eb));
    }
    double maxg = 0;
    for (size_t e = 0; e < ad.n_params; e++) maxg = fmax(maxg, fabs(ref[e]));
    fprintf(stderr, "%s: loss %.9g (torch %.9g); adapter grads max rel err per tensor %.2e "
                    "(max |g| %.3g)\n", tag, loss, rloss, worst, maxg);
    TEST_CHECK(worst <= 1e-4 && maxg > 0, "%s: adapter grads rel err %.3g > 1e-4", tag, worst);
    free(ref);
    fclose(f);
done:
    /* checkpointing: recomputed activations give bit-identical gradients */
    {
        float *g0 = malloc(sizeof(float) * ad.n_params);
        memcpy(g0, ad.grads, sizeof(float) * ad.n_params);
        double l2 = grads_once(&s, &ad, tok, tgt, B, T, lscale, 1, dseed);
        TEST_CHECK(l2 == loss, "%s: ckpt loss differs", tag);
        TEST_CHECK(memcmp(g0, ad.grads, sizeof(float) * ad.n_params) == 0,
                   "%s: checkpointed gradients differ from stored-activation gradients", tag);
        free(g0);
    }
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
}

static void test_merge(void)
{
    model_stage s;
    lora_adapters ad;
    lora_config lc;
    lora_config_default(&lc);
    model_stage_build(&s, &tiny, 0, 1);
    model_stage_randomize(&s, 3, 0.2f);
    prune_stage(&s, 0.5f);
    lora_adapters_build(&ad, &s, &lc);
    randomize_B(&ad, 8, 0.1f);
    lora_delta_update(&ad, &s);
    float *w0 = malloc(sizeof(float) * s.n_params);
    memcpy(w0, s.params, sizeof(float) * s.n_params);
    int64_t nnz0[16][MODEL_N_MAPS], changed = lora_merge(&ad, &s);
    int same_nnz = 1, moved = 0, zero_ok = 1;
    double maxerr = 0;
    for (int l = 0; l < s.n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&tiny, m, &o, &i);
            int64_t n = (int64_t)o * i;
            const float *W0 = w0 + (s.layers[l].w[m] - s.params);
            nnz0[l][m] = count_nnz(W0, n);
            same_nnz &= count_nnz(s.layers[l].w[m], n) == nnz0[l][m];
            TEST_CHECK(nnz0[l][m] * 2 == n, "pruned to 50%%: %lld of %lld", (long long)nnz0[l][m],
                       (long long)n);
            for (int64_t e = 0; e < n; e++) {
                moved += s.layers[l].w[m][e] != W0[e];
                zero_ok &= (W0[e] == 0.0f) == (s.layers[l].w[m][e] == 0.0f);
            }
        }
    TEST_CHECK(changed == 0 && same_nnz && zero_ok, "merge changed the sparsity pattern");
    TEST_CHECK(moved > 0, "merge moved no weight");
    /* forward of merged model == forward with the adapter path (dropout 0) */
    model_acts a;
    int tok[16] = {3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 2, 4, 6, 8, 10, 12};
    model_acts_build(&a, &s, 2, 8, MODEL_ACTS_NOSAVE);
    model_stage_forward(&a, &s, tok, 2, 8);
    float *lm = malloc(sizeof(float) * 16 * tiny.vocab_size);
    memcpy(lm, a.logits, sizeof(float) * 16 * tiny.vocab_size);
    int64_t uc = lora_unmerge(&ad, &s);
    for (size_t e = 0; e < s.n_params; e++) {
        double d = fabs((double)s.params[e] - w0[e]);
        double ulp = nextafterf(fabsf(w0[e]) + fabsf(ad.scale), FLT_MAX) -
                     (fabsf(w0[e]) + fabsf(ad.scale));
        (void)ulp;
        maxerr = fmax(maxerr, d / fmax(fabs(w0[e]), 1e-30));
        if (w0[e] == 0.0f) zero_ok &= s.params[e] == 0.0f;
    }
    fprintf(stderr, "merge/unmerge: nnz unchanged in %d maps, %d weights moved, unmerge max "
                    "rel err %.2e\n", s.n_layers * MODEL_N_MAPS, moved, maxerr);
    TEST_CHECK(uc == 0 && zero_ok, "unmerge changed the sparsity pattern");
    /* W + D - D: one rounding of the sum, one of the difference: |err| <= ulp(W + D) */
    TEST_CHECK(maxerr < 1e-5, "unmerge is not the inverse of merge: rel err %.3g", maxerr);
    a.drop_p = 0;
    model_stage_forward(&a, &s, tok, 2, 8);
    double e = test_max_rel(a.logits, lm, 16 * tiny.vocab_size);
    fprintf(stderr, "merged forward vs adapter-path forward: rel err %.2e\n", e);
    TEST_CHECK(e < 1e-5, "merged logits differ from adapter logits: %.3g", e);
    free(lm);
    free(w0);
    model_acts_free(&a);
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
}

/* A pruned tiny model with adapters in form b (ranks 5, 3, 16; random B). */
static void buffers_model(model_stage *s, lora_adapters *ad, lora_buffers b, float dropout)
{
    lora_config lc;
    lora_config_default(&lc);
    lc.dropout = dropout;
    lc.rank = 5;
    lc.buffers = b;
    model_stage_build(s, &tiny, 0, 1);
    model_stage_randomize(s, 11, 0.3f);
    prune_stage(s, 0.5f);
    TEST_CHECK(lora_adapters_build(ad, s, &lc) == LOSA_OK, "adapters");
    TEST_CHECK(ad->transient == (b == LORA_BUFFERS_TRANSIENT), "form %s", lora_buffers_name(b));
    lora_set_rank(ad, 1, 3);
    lora_set_rank(ad, 2, 16);
    randomize_B(ad, 5, 0.2f);
    lora_delta_update(ad, s);
}

/* M micro-batches (tokens (M, B, T)) into ad->grads: zero, forward and
 * backward each, project. */
static double grads_step(model_stage *s, lora_adapters *ad, const int *tok, const int *tgt, int M,
                         int B, int T, float scale)
{
    model_acts a;
    model_bwd g;
    model_acts_build(&a, s, B, T, MODEL_ACTS_SAVE);
    model_bwd_build(&g, s, B, T);
    a.drop_p = ad->cfg.dropout;
    double nll = 0;
    int64_t n;
    lora_grad_zero(ad);
    for (int k = 0; k < M; k++) {
        a.drop_seed = 99 + k;
        model_stage_embed(&a, s, tok + k * B * T, B, T);
        for (int l = 0; l < s->n_layers; l++) model_layer_forward(&a, s, l, B, T);
        model_stage_head(&a, s, B, T);
        nll += model_head_backward(&g, g.dx, &a, s, tgt + k * B * T, B, T, scale, &n);
        model_stage_backward(&g, g.dx, &a, s, B, T);
    }
    lora_grad_project(ad, s);
    model_bwd_free(&g);
    model_acts_free(&a);
    return nll;
}

/* Transient vs persistent dense forms (include/lora.h):
 *  - one micro-batch: the same arithmetic (forms, forward, backward, one
 *    projection): loss and dA, dB bit-identical, with and without dropout,
 *    and merge / unmerge give bit-identical weights;
 *  - M = 4 micro-batches: persistent projects the fp32 sum of the dDelta_k,
 *    transient sums the projections of each.  Each term scale G_k[o,j]
 *    A[r,j] of dB[o,r] meets at most M - 1 additions over k, one product,
 *    i - 1 additions over j and the scaling in either order, so each result
 *    is within gamma_{i+M+1} sum_k sum_j |scale G_k[o,j] A[r,j]| of the
 *    exact sum (gamma_n = n u / (1 - n u), u = 2^-24) and the two within
 *    twice that; dA[r,j] likewise with o in place of i.  G_k is the masked
 *    dDelta of micro-batch k alone (persistent, one micro-batch). */
static void test_buffers(float dropout)
{
    enum { M = 4, B = 2, T = 9 };
    model_stage sp, st;
    lora_adapters ap, at;
    buffers_model(&sp, &ap, LORA_BUFFERS_PERSISTENT, dropout);
    buffers_model(&st, &at, LORA_BUFFERS_TRANSIENT, dropout);
    int tok[M * B * T], tgt[M * B * T];
    core_rng r;
    core_rng_seed(&r, 23);
    for (int i = 0; i < M * B * T; i++) tok[i] = (int)(core_rng_u64(&r) % tiny.vocab_size);
    for (int i = 0; i < M * B * T; i++) tgt[i] = i % T + 1 < T ? tok[i + 1] : -1;
    float sc = 1.0f / (M * B * (T - 1));
    size_t np = ap.n_params;
    double lp = grads_step(&sp, &ap, tok, tgt, 1, B, T, sc);
    double lt = grads_step(&st, &at, tok, tgt, 1, B, T, sc);
    TEST_CHECK(lp == lt && !memcmp(ap.grads, at.grads, sizeof(float) * np),
               "dropout %g: one micro-batch: transient gradients differ from persistent", dropout);
    /* the bound for M micro-batches from each one's masked dDelta */
    double *bnd = calloc(np, sizeof(double));
    for (int k = 0; k < M; k++) {
        grads_step(&sp, &ap, tok + k * B * T, tgt + k * B * T, 1, B, T, sc);
        for (int q = 0; q < ap.n_layers * MODEL_N_MAPS; q++) {
            int o, i, R = ap.cfg.r_max, rk = ap.rank[q / MODEL_N_MAPS];
            model_map_shape(&tiny, q % MODEL_N_MAPS, &o, &i);
            const float *G = ap.ddelta + ap.w_off[q];
            double *bA = bnd + (ap.gA[q] - ap.grads), *bB = bnd + (ap.gB[q] - ap.grads);
            double gA = (o + M + 1) * 0x1p-24 / (1 - (o + M + 1) * 0x1p-24);
            double gB = (i + M + 1) * 0x1p-24 / (1 - (i + M + 1) * 0x1p-24);
            for (int oo = 0; oo < o; oo++)
                for (int j = 0; j < i; j++)
                    for (int rr = 0; rr < rk; rr++) {
                        double g = fabs((double)ap.scale * G[(int64_t)oo * i + j]);
                        bB[oo * R + rr] += 2 * gB * g * fabs(ap.A[q][rr * i + j]);
                        bA[rr * i + j] += 2 * gA * g * fabs(ap.B[q][oo * R + rr]);
                    }
        }
    }
    grads_step(&sp, &ap, tok, tgt, M, B, T, sc);
    grads_step(&st, &at, tok, tgt, M, B, T, sc);
    size_t over = 0, differ = 0;
    double worst = 0;
    for (size_t e = 0; e < np; e++) {
        double d = fabs((double)ap.grads[e] - at.grads[e]);
        differ += d > 0;
        over += d > bnd[e];
        if (bnd[e] > 0) worst = fmax(worst, d / bnd[e]);
    }
    fprintf(stderr, "dropout %g: transient vs persistent, %d micro-batches: %zu of %zu gradients "
            "differ, at most %.3f of the derived bound\n", dropout, M, differ, np, worst);
    TEST_CHECK(over == 0, "dropout %g: %zu gradients beyond the derived bound", dropout, over);
    /* merge / unmerge, the transient one forming each map's Delta on the way */
    int64_t cp = lora_merge(&ap, &sp), ct = lora_merge(&at, &st);
    int same = cp == ct && !memcmp(sp.params, st.params, sizeof(float) * sp.n_params);
    cp = lora_unmerge(&ap, &sp);
    ct = lora_unmerge(&at, &st);
    same &= cp == ct && !memcmp(sp.params, st.params, sizeof(float) * sp.n_params);
    TEST_CHECK(same && at.attached && st.adapter == &at.path,
               "dropout %g: transient merge / unmerge differ from persistent", dropout);
    free(bnd);
    lora_adapters_free(&ap, &sp);
    lora_adapters_free(&at, &st);
    model_stage_free(&sp);
    model_stage_free(&st);
}

static void test_adamw_schedule(void)
{
    /* schedule: total 10, warmup 0.3 -> W = 3 */
    TEST_NEAR(lora_lr_at(1.0f, 0.3f, 10, 0), 1.0 / 3, 1e-7, "lr warmup step 0");
    TEST_NEAR(lora_lr_at(1.0f, 0.3f, 10, 2), 1.0, 1e-7, "lr end of warmup");
    TEST_NEAR(lora_lr_at(1.0f, 0.3f, 10, 3), 1.0, 1e-7, "lr decay start");
    TEST_NEAR(lora_lr_at(1.0f, 0.3f, 10, 9), 1.0 / 7, 1e-7, "lr last step");
    TEST_NEAR(lora_lr_at(2.0f, 0.0f, 4, 2), 1.0, 1e-7, "lr no warmup");
    /* AdamW on one element by hand: two steps, decoupled decay */
    model_config c = tiny;
    c.n_layers = 1;
    model_stage s;
    lora_adapters ad;
    lora_config lc;
    lora_config_default(&lc);
    lc.rank = 2;
    model_stage_build(&s, &c, 0, 1);
    model_stage_randomize(&s, 1, 0.2f);
    lora_adapters_build(&ad, &s, &lc);
    lora_adamw o = {.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                    .weight_decay = 0.1f};
    float *p = &ad.A[0][1], p0 = *p, *pin = &ad.A[0][2 * 32]; /* row 2: inactive */
    float pin0 = *pin;
    double m = 0, v = 0, x = p0, g[2] = {0.5, -0.2};
    for (int t = 1; t <= 2; t++) {
        memset(ad.grads, 0, sizeof(float) * ad.n_params);
        ad.gA[0][1] = (float)g[t - 1];
        ad.gA[0][2 * 32] = 1.0f;
        lora_adamw_step(&ad, &o, 0.5f);
        double gg = 0.5 * g[t - 1];
        x -= 0.01 * 0.1 * x;
        m = 0.9 * m + 0.1 * gg;
        v = 0.999 * v + 0.001 * gg * gg;
        x -= 0.01 * (m / (1 - pow(0.9, t))) / (sqrt(v / (1 - pow(0.999, t))) + 1e-8);
    }
    TEST_NEAR(*p, x, 1e-6, "AdamW two steps vs hand formula");
    TEST_CHECK(*pin == pin0, "row beyond the active rank must not move");
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
}

static void test_io(void)
{
    model_stage s;
    lora_adapters ad, ad2;
    lora_config lc;
    lora_config_default(&lc);
    model_stage_build(&s, &tiny, 0, 1);
    model_stage_randomize(&s, 1, 0.2f);
    lora_adapters_build(&ad, &s, &lc);
    randomize_B(&ad, 4, 0.3f);
    for (size_t e = 0; e < ad.n_params; e++) {
        ad.m[e] = 0.001f * (float)e;
        ad.v[e] = 1e-6f * (float)(e % 97);
    }
    lora_set_rank(&ad, 2, 11);
    ad.step = 17;
    char path[512];
    snprintf(path, sizeof path, "%s/lora_io.h5", tmpdir());
    TEST_CHECK(io_adapters_write(path, 1, &ad, &tiny) == LOSA_OK, "write: %s", core_errmsg());
    lc.seed = 999;
    model_stage s2;
    model_stage_build(&s2, &tiny, 0, 1);
    lora_adapters_build(&ad2, &s2, &lc);
    TEST_CHECK(io_adapters_read(path, &ad2, &tiny) == LOSA_OK, "read: %s", core_errmsg());
    TEST_CHECK(memcmp(ad.params, ad2.params, sizeof(float) * ad.n_params) == 0, "params");
    TEST_CHECK(memcmp(ad.m, ad2.m, sizeof(float) * ad.n_params) == 0, "adam m");
    TEST_CHECK(memcmp(ad.v, ad2.v, sizeof(float) * ad.n_params) == 0, "adam v");
    TEST_CHECK(ad2.rank[2] == 11 && ad2.rank[0] == 8 && ad2.step == 17, "rank/step");
    /* shape mismatch is an error, not a crash */
    model_config bad = tiny;
    bad.hidden_dim = 64;
    model_stage s3;
    lora_adapters ad3;
    model_stage_build(&s3, &bad, 0, 1);
    lora_adapters_build(&ad3, &s3, &lc);
    TEST_CHECK(io_adapters_read(path, &ad3, &bad) != LOSA_OK, "mismatch must fail");
    fprintf(stderr, "io: %s\n", core_errmsg());
    lora_adapters_free(&ad3, &s3);
    model_stage_free(&s3);
    lora_adapters_free(&ad, &s);
    lora_adapters_free(&ad2, &s2);
    model_stage_free(&s);
    model_stage_free(&s2);
}


/* Alpaca rendering, truncation, padding and response-only targets with the
 * real Llama-2 tokenizer (ids checked against the tokenizer itself). */
static void test_data(void)
{
    char *p1 = lora_alpaca_prompt("Add 2 and 3.", "");
    TEST_CHECK(!strcmp(p1, "Below is an instruction that describes a task. Write a response "
                           "that appropriately completes the request.\n\n### Instruction:\n"
                           "Add 2 and 3.\n\n### Response:\n"), "template without input");
    char *p2 = lora_alpaca_prompt("Add.", "2, 3");
    TEST_CHECK(!strcmp(p2, "Below is an instruction that describes a task, paired with an input "
                           "that provides further context. Write a response that appropriately "
                           "completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n"
                           "2, 3\n\n### Response:\n"), "template with input");
    const char *dir = getenv("LOSA_DATA");
    char path[600];
    snprintf(path, sizeof path, "%s/models/minillama/tokenizer.json", dir ? dir : "../shared/data");
    tok_tokenizer tk;
    memset(&tk, 0, sizeof tk);
    if (tok_load_hf_json(&tk, path) != LOSA_OK) {
        TEST_CHECK(0, "tokenizer %s: %s", path, core_errmsg());
        free(p1); free(p2);
        return;
    }
    const char *json = "[{\"instruction\": \"Add 2 and 3.\", \"input\": \"\", \"output\": \"5\"},\n"
                       " {\"instruction\": \"Add.\", \"input\": \"2, 3\", \"output\": \"The sum is 5.\"}]";
    lora_dataset ds;
    TEST_CHECK(lora_data_parse(&ds, "inline", json, strlen(json), LORA_DATA_AUTO, &tk, 64) ==
               LOSA_OK, "parse: %s", core_errmsg());
    TEST_CHECK(ds.n == 2 && ds.format == LORA_DATA_ALPACA, "2 alpaca examples");
    /* example 0 = encode(prompt + output) with BOS, EOS; prompt part = encode(prompt) */
    int *ids, *pids;
    int64_t n, np;
    char full[400];
    snprintf(full, sizeof full, "%s5", p1);
    tok_encode(&tk, full, strlen(full), 1, 1, &ids, &n);
    tok_encode(&tk, p1, strlen(p1), 1, 0, &pids, &np);
    TEST_CHECK(ds.off[1] == n && memcmp(ds.ids, ids, sizeof(int) * n) == 0, "example ids");
    TEST_CHECK(ds.resp[0] == np && ids[n - 1] == tk.eos_id && ids[0] == tk.bos_id,
               "response start %d vs %lld", ds.resp[0], (long long)np);
    int T = (int)n + 3, tok[2 * 128], tgt[2 * 128];
    int64_t idx[2] = {0, 1};
    lora_data_batch(&ds, idx, 1, T, 0, 1, tok, tgt);
    int ok = 1, counted = 0;
    for (int t = 0; t < T; t++) {
        int want = (t + 1 < n && t + 1 >= np) ? ids[t + 1] : -1;
        ok &= tgt[t] == want && tok[t] == (t < n ? ids[t] : 0);
        counted += tgt[t] >= 0;
    }
    /* response-only: the targets are exactly the response tokens and EOS */
    TEST_CHECK(ok && counted == n - np, "response-only targets (%d counted, want %lld)", counted,
               (long long)(n - np));
    lora_data_batch(&ds, idx, 1, T, 0, 0, tok, tgt);
    counted = 0;
    for (int t = 0; t < T; t++) counted += tgt[t] >= 0;
    TEST_CHECK(counted == n - 1, "full-sequence targets: %d (want %lld), padding ignored",
               counted, (long long)(n - 1));
    lora_data_free(&ds);
    /* truncation to max_len; JSONL {"text"} */
    const char *jl = "{\"text\": \"one two three four five six seven eight nine ten\"}\n\n"
                     "{\"text\": \"hi\"}\n";
    TEST_CHECK(lora_data_parse(&ds, "inline.jsonl", jl, strlen(jl), LORA_DATA_AUTO, &tk, 6) ==
               LOSA_OK, "jsonl text");
    TEST_CHECK(ds.n == 2 && ds.format == LORA_DATA_TEXT && ds.off[1] == 6 && ds.ids[0] == 1,
               "truncated to 6 tokens with BOS");
    lora_data_free(&ds);
    const char *bad = "[{\"instruction\": 3}]";
    TEST_CHECK(lora_data_parse(&ds, "bad.json", bad, strlen(bad), LORA_DATA_ALPACA, &tk, 8) !=
               LOSA_OK, "malformed record rejected");
    fprintf(stderr, "data: %s\n", core_errmsg());
    /* seeded shuffling: a permutation, reproducible, epoch-dependent */
    int64_t a[50], b[50], c2[50];
    lora_data_order(50, 3, 0, a);
    lora_data_order(50, 3, 0, b);
    lora_data_order(50, 3, 1, c2);
    int perm = 1, seen[50] = {0};
    for (int i = 0; i < 50; i++) seen[a[i]]++;
    for (int i = 0; i < 50; i++) perm &= seen[i] == 1;
    TEST_CHECK(perm && !memcmp(a, b, sizeof a) && memcmp(a, c2, sizeof a), "shuffle");
    free(ids); free(pids); free(p1); free(p2);
    tok_free(&tk);
}

/* Merge / unmerge on a bf16 stage (model_stage_to_bf16 of a 50%-pruned
 * model): W' = bf16(W + Delta), Delta = scale (B A) ⊙ M from the bf16 mask.
 * Hand-made in layer 1's wq with rank 1 (Delta[o][i] = scale B[o][0]
 * A[0][i], scale 2, every factor a power of two times 3 or 1, so Delta is
 * exact in fp32):
 *   (0,0): W = 2^-133 (bf16's smallest subnormal), Delta = -0.75 x 2^-133:
 *          W + Delta = 2^-135 < 2^-134, rounds to zero: counted;
 *   (0,1): W = 2^-133, Delta = -0.25 x 2^-133: 0.75 x 2^-133 rounds to
 *          2^-133 (bits 0x0001): stays non-zero;
 *   (1,2): W = 0.25, Delta = -0.25: exact cancellation: counted.
 * So lora_merge returns 2; every pruned weight stays exactly zero; every
 * other kept weight is non-zero and within bf16 rounding of the float64
 * W + Delta: |W' - x| <= 2^-8 |x| (nearest even: half a bf16 ulp, 8
 * significant bits) + 1e-6 (fp32 GEMM and sum
 * of r <= 16 terms of size < 0.1: far below).  Unmerge: the three entries
 * keep their merged values (the zeros are out of the mask now, (0,1)
 * becomes bf16(1.25 x 2^-133) = 2^-133), pruned stay zero, the rest is
 * within two roundings: |W'' - W| <= 2^-8 (|W'| + |W''|) + 2e-6. */
static void test_merge_bf16(void)
{
    model_stage s;
    lora_adapters ad;
    lora_config lc;
    lora_config_default(&lc);
    model_stage_build(&s, &tiny, 0, 1);
    model_stage_randomize(&s, 5, 0.2f);
    prune_stage(&s, 0.5f);
    lora_adapters_build(&ad, &s, &lc);
    randomize_B(&ad, 9, 0.1f);
    const int L1 = 1, k1 = L1 * MODEL_N_MAPS + MODEL_MAP_Q, in = tiny.dim, R = lc.r_max;
    TEST_CHECK(lora_set_rank(&ad, L1, 1) == LOSA_OK && ad.scale == 2.0f, "rank 1, scale %g", ad.scale);
    float *Wq = s.layers[L1].w[MODEL_MAP_Q];
    const float t133 = ldexpf(1.0f, -133);
    Wq[0 * in + 0] = t133;
    Wq[0 * in + 1] = t133;
    Wq[1 * in + 2] = 0.25f;
    ad.B[k1][0 * R] = 0.5f;
    ad.B[k1][1 * R] = 0.5f;
    ad.A[k1][0] = -0.75f * t133; /* Delta(0,0) = 2 x 0.5 x A = -0.75 x 2^-133 */
    ad.A[k1][1] = -0.25f * t133;
    ad.A[k1][2] = -0.25f;        /* Delta(1,2) = -0.25 */
    lora_delta_update(&ad, &s);
    int64_t lost_conv = -1;
    TEST_CHECK(model_stage_to_bf16(&s, &lost_conv) == LOSA_OK && lost_conv == 0,
               "to bf16 (%lld lost)", (long long)lost_conv);
    uint16_t *w0 = malloc(sizeof(uint16_t) * s.n_params_bf16);
    memcpy(w0, s.params_bf16, sizeof(uint16_t) * s.n_params_bf16);
    core_log_quiet(0); /* the warning lines go to the log (layer 1 wq) */
    int64_t changed = lora_merge(&ad, &s);
    core_log_quiet(1);
    TEST_CHECK(changed == 2, "bf16 merge: 2 kept weights rounded to zero, got %lld", (long long)changed);
    const uint16_t *Q = s.layers[L1].wb[MODEL_MAP_Q];
    TEST_CHECK(Q[0] == 0 || Q[0] == 0x8000, "(0,0): 2^-133 - 0.75 x 2^-133 rounds to zero: %#x", Q[0]);
    TEST_CHECK(Q[1] == 0x0001, "(0,1): 0.75 x 2^-133 rounds to 2^-133: %#x", Q[1]);
    TEST_CHECK((Q[in + 2] & 0x7fff) == 0, "(1,2): 0.25 - 0.25 is zero: %#x", Q[in + 2]);
    /* every other weight against float64 */
    int pruned_ok = 1, kept_ok = 1;
    double worst = 0;
    int64_t off = 0;
    for (int l = 0; l < s.n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i, k = l * MODEL_N_MAPS + m, r = ad.rank[l];
            model_map_shape(&tiny, m, &o, &i);
            const uint16_t *W = s.layers[l].wb[m], *W0 = w0 + off;
            off += (int64_t)o * i;
            for (int a = 0; a < o; a++)
                for (int b = 0; b < i; b++) {
                    int64_t e = (int64_t)a * i + b;
                    if ((W0[e] & 0x7fff) == 0) {
                        pruned_ok &= (W[e] & 0x7fff) == 0;
                        continue;
                    }
                    if (k == k1 && (e == 0 || e == 1 || e == in + 2)) continue;
                    double x = (double)kern_bf16_value(W0[e]);
                    for (int j = 0; j < r; j++)
                        x += (double)ad.scale * ad.B[k][(int64_t)a * R + j] * ad.A[k][(int64_t)j * i + b];
                    double d = fabs((double)kern_bf16_value(W[e]) - x);
                    kept_ok &= (W[e] & 0x7fff) != 0 && d <= ldexp(fabs(x), -8) + 1e-6;
                    if (d > worst) worst = d;
                }
        }
    printf("bf16 merge: %lld kept weights rounded to zero (the 2 hand-made), worst |W' - (W + "
           "Delta)| of the rest %.3g\n", (long long)changed, worst);
    TEST_CHECK(pruned_ok, "bf16 merge: every pruned weight stays exactly zero");
    TEST_CHECK(kept_ok, "bf16 merge: every other kept weight non-zero and within 2^-8 |x| + 1e-6 of "
               "float64 W + Delta (worst %.3g)", worst);
    /* unmerge */
    uint16_t *w1 = malloc(sizeof(uint16_t) * s.n_params_bf16);
    memcpy(w1, s.params_bf16, sizeof(uint16_t) * s.n_params_bf16);
    int64_t back = lora_unmerge(&ad, &s);
    TEST_CHECK(back == 0 && ad.attached, "bf16 unmerge: no kept weight lost (%lld), re-attached",
               (long long)back);
    TEST_CHECK((Q[0] & 0x7fff) == 0 && Q[1] == 0x0001 && (Q[in + 2] & 0x7fff) == 0,
               "unmerge: the two lost weights stay zero, (0,1) = 2^-133: %#x %#x %#x", Q[0], Q[1],
               Q[in + 2]);
    int un_ok = 1;
    for (size_t e = 0; e < s.n_params_bf16; e++) {
        if ((w1[e] & 0x7fff) == 0) {
            un_ok &= (s.params_bf16[e] & 0x7fff) == 0;
            continue;
        }
        double a = kern_bf16_value(w0[e]), b = kern_bf16_value(s.params_bf16[e]);
        double m1 = kern_bf16_value(w1[e]);
        un_ok &= fabs(b - a) <= ldexp(fabs(m1) + fabs(b), -8) + 2e-6;
    }
    TEST_CHECK(un_ok, "bf16 unmerge: W within two bf16 roundings of the original, zeros kept");
    free(w0);
    free(w1);
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
}


/* The bf16 training step (model.dtype = bf16) against the float64 torch
 * reference on the bf16-rounded weights.  The stage's maps and head are
 * rounded to bf16 values first (kept fp32 for the fixture), so the
 * reference sees exactly the frozen weights the bf16 stage holds
 * (model_stage_to_bf16 is then exact: 0 lost).  What the bf16 step rounds
 * beyond the reference, each a relative perturbation <= u = 2^-8 (bf16:
 * 8 significant bits, round to nearest even) of one operand of a product:
 *   forward, per layer: the 4 inputs (ln1, atty, ln2, hid) of the maps
 *     rounded inside kern_gemm_bf16w, and the 7 maps' W_eff = bf16(W +
 *     Delta) (with dropout: Delta = bf16(Delta) on the branch, W exact):
 *     at most 2u of the product's sum |x||w| per map output; head: its
 *     input, u;
 *   backward, per layer: the same two per backward-input product (dy
 *     rounded, W_eff rounded); head: dlogits rounded, u;
 *   dDelta = dy^T drop(x): both operands rounded (kern_gemm_bf16r), 2u of
 *     the sums |dy||x|, fp32 accumulation; the projection onto dA, dB: fp32.
 * To first order the perturbations add along the path with no growth
 * (RMSNorm renormalises each layer's input; weights N(0, 0.3) keep the
 * sums |x||w| of the size of the outputs): the logits within (8 L + 1) u
 * of their largest magnitude (per layer 4 groups of maps, two roundings
 * each; the head one), and the adapter gradients, products of
 * forward activations and backward signals, within (8 L + 1) u + (8 L + 1)
 * u + 2u = (16 L + 4) u of each tensor's largest entry: 0.203 at L = 3,
 * the bound checked per tensor.  The loss: log-softmax moves by at most
 * 2 max|dlogit|, so |dloss| <= 2 (8 L + 1) u max|logit|.  The fp32 path on
 * the same weights stays within 1e-4 (test_reference): the bf16 error seen
 * is the rounding's, and a defect of the bf16 path (mask, dropout branch,
 * a form of the wrong map, transposed product) moves the gradients by
 * O(1) of their size. */
static void test_reference_bf16(float dropout, lora_buffers buffers, const char *tag)
{
    model_stage s;
    lora_adapters ad;
    lora_config lc;
    lora_config_default(&lc);
    lc.dropout = dropout;
    lc.rank = 5;
    lc.buffers = buffers;
    int B = 2, T = 9;
    model_stage_build(&s, &tiny, 0, 1);
    model_stage_randomize(&s, 11, 0.3f);
    prune_stage(&s, 0.5f);
    test_stage_round_bf16(&s);
    TEST_CHECK(lora_adapters_build(&ad, &s, &lc) == LOSA_OK, "adapters");
    lora_set_rank(&ad, 1, 3);
    lora_set_rank(&ad, 2, 16);
    randomize_B(&ad, 5, 0.2f);
    lora_delta_update(&ad, &s);
    int tok[18], tgt[18];
    core_rng r;
    core_rng_seed(&r, 17);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(core_rng_u64(&r) % tiny.vocab_size);
    int nt = 0;
    for (int i = 0; i < B * T; i++) {
        int t = i % T;
        tgt[i] = (t + 1 < T && i % 4 != 1) ? tok[i + 1] : -1;
        nt += tgt[i] >= 0;
    }
    float lscale = 1.0f / nt;
    uint64_t dseed = 99;
    char fx[512], out[512], cmd[1200];
    snprintf(fx, sizeof fx, "%s/lora_grad_bf16_%s.bin", tmpdir(), tag);
    snprintf(out, sizeof out, "%s/lora_grad_bf16_%s.out", tmpdir(), tag);
    TEST_CHECK(write_fixture(fx, &s, &ad, tok, tgt, B, T, lscale, dseed) == 0, "fixture");
    /* the largest logit magnitude of the reference weights (fp32 path) */
    model_acts a0;
    model_acts_build(&a0, &s, B, T, MODEL_ACTS_NOSAVE);
    a0.drop_p = 0;
    model_stage_forward(&a0, &s, tok, B, T);
    double maxlogit = 0;
    for (int64_t e = 0; e < (int64_t)B * T * tiny.vocab_size; e++)
        maxlogit = fmax(maxlogit, fabs(a0.logits[e]));
    model_acts_free(&a0);
    /* the stage in bf16 (plain maps and head rows), the adapters' forms
     * rebuilt from the bf16 weights */
    int64_t lost = -1;
    TEST_CHECK(model_stage_to_bf16(&s, &lost) == LOSA_OK && lost == 0 &&
                   s.layers[0].w[0] == NULL && s.head == NULL && s.head_bf16,
               "%s: to bf16 (%lld lost)", tag, (long long)lost);
    lora_delta_update(&ad, &s);
    double loss = grads_once(&s, &ad, tok, tgt, B, T, lscale, 0, dseed);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/lora_grad_ref.py %s %s", fx, out);
    int rc = system(cmd);
    TEST_CHECK(rc == 0, "torch reference failed (%s)", tag);
    FILE *f = fopen(out, "rb");
    if (rc != 0 || !f) goto done;
    const int L = tiny.n_layers;
    const double u = 1.0 / 256.0, gbound = (16.0 * L + 4) * u;
    double rloss, lbound = 2.0 * (8.0 * L + 1) * u * maxlogit;
    TEST_CHECK(fread(&rloss, 8, 1, f) == 1, "read loss");
    float *ref = malloc(sizeof(float) * ad.n_params);
    TEST_CHECK(fread(ref, sizeof(float), ad.n_params, f) == ad.n_params, "read grads");
    double worst = 0, maxg = 0;
    for (int k = 0; k < ad.n_layers * MODEL_N_MAPS; k++) {
        int o, i;
        model_map_shape(&tiny, k % MODEL_N_MAPS, &o, &i);
        size_t off = ad.gA[k] - ad.grads;
        double ea = test_max_rel(ad.gA[k], ref + off, (long)ad.cfg.r_max * i);
        double eb = test_max_rel(ad.gB[k], ref + off + (size_t)ad.cfg.r_max * i,
                                 (long)ad.cfg.r_max * o);
        worst = fmax(worst, fmax(ea, eb));
    }
    for (size_t e = 0; e < ad.n_params; e++) maxg = fmax(maxg, fabs(ref[e]));
    fprintf(stderr, "%s (bf16): loss %.9g (torch %.9g, |diff| %.3g, bound %.3g); adapter grads "
                    "max rel err per tensor %.3g (bound %.3g, max |g| %.3g)\n", tag, loss, rloss,
            fabs(loss - rloss), lbound, worst, gbound, maxg);
    TEST_CHECK(fabs(loss - rloss) <= lbound, "%s: bf16 loss %.9g vs torch %.9g", tag, loss, rloss);
    TEST_CHECK(worst <= gbound && maxg > 0, "%s: bf16 adapter grads rel err %.3g > %.3g", tag,
               worst, gbound);
    TEST_CHECK(strcmp(kern_gemm_engine(), "onednn") || worst > 1e-4,
               "%s: bf16 grads as close as fp32 (%.3g): bf16 products not run", tag, worst);
    free(ref);
    fclose(f);
done:
    { /* checkpointing: the recomputed bf16 layers give the same bits */
        float *g0 = malloc(sizeof(float) * ad.n_params);
        memcpy(g0, ad.grads, sizeof(float) * ad.n_params);
        double l2 = grads_once(&s, &ad, tok, tgt, B, T, lscale, 1, dseed);
        TEST_CHECK(l2 == loss && memcmp(g0, ad.grads, sizeof(float) * ad.n_params) == 0,
                   "%s: bf16 checkpointed loss / gradients differ", tag);
        free(g0);
    }
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
}

/* A few optimizer steps on a bf16 stage (one repeated batch, lr 1e-2,
 * through lora_trainer) lower the loss; then the merge keeps the zero set
 * exactly the mask: every pruned weight still exactly zero, every kept one
 * non-zero (lora_merge counts none rounded to zero). */
static void test_train_bf16(lora_buffers buffers)
{
    model_stage s;
    lora_adapters ad;
    lora_trainer tr;
    lora_config lc;
    lora_config_default(&lc);
    lc.buffers = buffers;
    model_stage_build(&s, &tiny, 0, 1);
    model_stage_randomize(&s, 4, 0.3f);
    prune_stage(&s, 0.5f);
    TEST_CHECK(model_stage_to_bf16(&s, NULL) == LOSA_OK, "to bf16");
    TEST_CHECK(lora_adapters_build(&ad, &s, &lc) == LOSA_OK, "adapters on a bf16 stage");
    lora_train_config tc;
    lora_train_config_default(&tc);
    tc.B = 2;
    tc.T = 12;
    tc.grad_accum = 1;
    tc.steps = 12;
    tc.lr = 1e-2f;
    tc.warmup_ratio = 0;
    TEST_CHECK(lora_trainer_build(&tr, NULL, &s, &ad, &tc) == LOSA_OK, "trainer on a bf16 stage");
    uint16_t *w0 = malloc(sizeof(uint16_t) * s.n_params_bf16);
    memcpy(w0, s.params_bf16, sizeof(uint16_t) * s.n_params_bf16);
    int tok[24], tgt[24];
    for (int i = 0; i < 24; i++) tok[i] = (i * 7 + 3) % tiny.vocab_size;
    for (int i = 0; i < 24; i++) tgt[i] = i % 12 == 11 ? -1 : tok[i + 1];
    double first = 0, last = 0;
    for (int k = 0; k < tc.steps; k++) {
        lora_step_stats st;
        TEST_CHECK(lora_train_step(&tr, tok, tgt, &st) == LOSA_OK, "bf16 step %d: %s", k, core_errmsg());
        if (k == 0) first = st.loss;
        last = st.loss;
    }
    fprintf(stderr, "bf16 training (%s): loss %.4f -> %.4f over %lld steps\n",
            lora_buffers_name(buffers), first, last, (long long)tc.steps);
    TEST_CHECK(isfinite(last) && last < first - 0.1,
               "bf16 training did not lower the loss (%.4f -> %.4f)", first, last);
    TEST_CHECK(memcmp(w0, s.params_bf16, sizeof(uint16_t) * s.n_params_bf16) == 0,
               "training changed the frozen bf16 weights");
    int64_t changed = lora_merge(&ad, &s);
    int64_t moved = 0, zero_ok = 1;
    for (size_t e = 0; e < s.n_params_bf16; e++) {
        zero_ok &= ((w0[e] & 0x7fff) == 0) == ((s.params_bf16[e] & 0x7fff) == 0);
        moved += w0[e] != s.params_bf16[e];
    }
    TEST_CHECK(changed == 0 && zero_ok && moved > 0, "bf16 merge after training: zero set is not "
               "the mask (%lld counted, %lld moved)", (long long)changed, (long long)moved);
    free(w0);
    lora_trainer_free(&tr);
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
}

int main(void)
{
    core_log_quiet(1);
    test_reference(0.0f, "nodrop");
    test_reference(0.1f, "drop");
    test_merge();
    test_merge_bf16();
    test_reference_bf16(0.0f, LORA_BUFFERS_PERSISTENT, "nodrop");
    test_reference_bf16(0.1f, LORA_BUFFERS_PERSISTENT, "drop");
    test_reference_bf16(0.1f, LORA_BUFFERS_TRANSIENT, "drop_transient");
    test_train_bf16(LORA_BUFFERS_PERSISTENT);
    test_train_bf16(LORA_BUFFERS_TRANSIENT);
    test_buffers(0.0f);
    test_buffers(0.1f);
    test_adamw_schedule();
    test_io();
    test_data();
    return test_finish("test_lora");
}
