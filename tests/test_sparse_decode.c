// ranks: 1 2 3
/* KV-cache decode and the sparse model path on a random GQA model whose 7
 * maps per layer are magnitude-pruned to 70%:
 *  - prefill logits are bit-identical to model_stage_forward (same kernels);
 *  - the logits of every decode step (teacher-forced tokens) equal the last
 *    row of a full forward on the whole prefix (rel 1e-5), dense and sparse
 *    (mode on: every map sparse, prefill through sparse_matmul too);
 *  - through the pipeline (1, 2, 3 stages) the decode logits equal the
 *    single-stage ones;
 *  - a 2:4-pruned model: every map in the 2:4 format, decode as above;
 *  - bf16 decode (generate --dtype bf16: maps and a head copy in bf16,
 *    sparse_dense_matvec_bf16) equals the fp32 decode of a model whose
 *    maps and head hold the same bf16-rounded values (rel 1e-5: the same
 *    products, other summation order), every position decoded from pos 0;
 *  - model_sparse_build auto/on/off converts the expected maps. */
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "kernels.h"
#include "model.h"
#include "prune.h"
#include "test_util.h"
#include "stage_bf16_values.h"

static void prune_stage(model_stage *s, double sp)
{
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&s->cfg, m, &o, &i);
            TEST_CHECK(prune_magnitude(s->layers[l].w[m], o, i, sp, 0, 0) == LOSA_OK, "prune");
        }
}

/* ref[t] = logits of position t from full forwards of the prefixes of tok
 * (the prompt T0 at once, then one position more per forward). */
static void forward_ref(float *ref, model_stage *s, const int *tok, int T0, int T)
{
    int V = s->cfg.vocab_size;
    model_acts af;
    model_acts_build(&af, s, 1, T, 0);
    for (int t = T0; t <= T; t++) {
        model_stage_forward(&af, s, tok, 1, t);
        if (t == T0) memcpy(ref, af.logits, sizeof(float) * T0 * V);
        else memcpy(ref + (int64_t)(t - 1) * V, af.logits + (int64_t)(t - 1) * V, sizeof(float) * V);
    }
    model_acts_free(&af);
}

/* Prefill T0 tokens, decode up to T on s (with sparse copies sp or dense):
 * logits into got (T, V); returns the max relative error against ref. */
static double decode_rel(float *got, model_stage *s, const model_sparse *sp, const int *tok,
                         int T0, int T, const float *ref)
{
    int V = s->cfg.vocab_size;
    s->sparse = sp;
    model_kv_cache kv;
    model_acts a;
    TEST_CHECK(model_kv_cache_build(&kv, s, T) == LOSA_OK, "kv build");
    model_acts_build(&a, s, 1, T0, 0);
    model_stage_prefill(&a, &kv, s, tok, T0);
    memcpy(got, a.logits, sizeof(float) * T0 * V);
    for (int pos = T0; pos < T; pos++) {
        model_stage_decode_step(&a, &kv, s, tok[pos], pos);
        memcpy(got + (int64_t)pos * V, a.logits, sizeof(float) * V);
    }
    double worst = 0;
    for (int t = 0; t < T; t++) {
        double e = test_max_rel(got + (int64_t)t * V, ref + (int64_t)t * V, V);
        if (e > worst) worst = e;
    }
    s->sparse = NULL;
    model_acts_free(&a);
    model_kv_cache_free(&kv);
    return worst;
}

int main(int argc, char **argv)
{
    dist_ctx *d;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) return 1;
    model_config c = {.dim = 64, .hidden_dim = 136, .n_layers = 3, .n_heads = 4,
                      .n_kv_heads = 2, .vocab_size = 97, .max_seq_len = 40,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 0,
                      .bos_id = 1, .eos_id = 2};
    int T0 = 6, T = 24, V = c.vocab_size; /* prompt T0, then decode up to T */
    int *tok = malloc(sizeof(int) * T);
    core_rng r;
    core_rng_seed(&r, 11);
    for (int i = 0; i < T; i++) tok[i] = (int)(core_rng_u64(&r) % V);

    /* ---- single stage (every rank computes it; the reference) ---- */
    model_stage full;
    model_stage_build(&full, &c, 0, 1);
    model_stage_randomize(&full, 3, 0.3f);
    prune_stage(&full, 0.7);
    float *ref = malloc(sizeof(float) * T * V); /* ref[t] = logits of position t */
    forward_ref(ref, &full, tok, T0, T);

    float *got = malloc(sizeof(float) * T * V);
    for (int mode = 0; mode < 2; mode++) { /* 0 dense, 1 sparse (on) */
        model_sparse sp;
        TEST_CHECK(model_sparse_build(&sp, &full, mode ? MODEL_SPARSE_ON : MODEL_SPARSE_OFF, 1,
                                      SPARSE_FORMAT_BITMAP) == LOSA_OK, "sparse build");
        TEST_CHECK(sp.n_converted == (mode ? 3 * MODEL_N_MAPS : 0), "converted %d", sp.n_converted);
        double worst = decode_rel(got, &full, mode ? &sp : NULL, tok, T0, T, ref);
        if (!mode)
            TEST_CHECK(memcmp(got, ref, sizeof(float) * T0 * V) == 0,
                       "dense prefill logits not bit-identical to the full forward");
        if (dist_rank(d) == 0)
            fprintf(stderr, "%s: max rel error of decode logits vs full forward: %.3g\n",
                    mode ? "sparse" : "dense", worst);
        TEST_CHECK(worst <= 1e-5, "%s decode logits rel %.3g", mode ? "sparse" : "dense", worst);
        model_sparse_free(&sp);
    }

    /* 2:4: every map pruned 2:4 is held in the 2:4 format (asked as fp32
     * bitmap) and decodes like the full forward */
    {
        model_stage s24;
        model_stage_build(&s24, &c, 0, 1);
        model_stage_randomize(&s24, 4, 0.3f);
        for (int l = 0; l < s24.n_layers; l++)
            for (int m = 0; m < MODEL_N_MAPS; m++) {
                int o, i;
                model_map_shape(&c, m, &o, &i);
                TEST_CHECK(prune_magnitude(s24.layers[l].w[m], o, i, 0.5, 2, 4) == LOSA_OK, "2:4");
            }
        float *ref24 = malloc(sizeof(float) * T * V);
        forward_ref(ref24, &s24, tok, T0, T);
        model_sparse sp;
        TEST_CHECK(model_sparse_build(&sp, &s24, MODEL_SPARSE_ON, 1, SPARSE_FORMAT_BITMAP) ==
                       LOSA_OK, "2:4 sparse build");
        int n24 = 0;
        for (int k = 0; k < 3 * MODEL_N_MAPS; k++) n24 += sp.mat[k].fmt == SPARSE_FORMAT_NM24;
        TEST_CHECK(n24 == 3 * MODEL_N_MAPS, "%d of %d maps in the 2:4 format", n24,
                   3 * MODEL_N_MAPS);
        double worst = decode_rel(got, &s24, &sp, tok, T0, T, ref24);
        if (dist_rank(d) == 0)
            fprintf(stderr, "2:4: max rel error of decode logits vs full forward: %.3g\n", worst);
        TEST_CHECK(worst <= 1e-5, "2:4 decode logits rel %.3g", worst);
        model_sparse_free(&sp);
        free(ref24);
        model_stage_free(&s24);
    }

    /* bf16 decode vs fp32 decode on the bf16-rounded weights.  Both run
     * every position through model_stage_decode_step from pos 0 (the
     * prefill of a bf16 stage rounds activations to bf16 in oneDNN's
     * matmul, which this equality would not cover); the embedding and norms
     * are fp32 in both, so the two differ only in summation order. */
    {
        model_stage sb, rb;
        model_stage_build(&sb, &c, 0, 1);
        model_stage_build(&rb, &c, 0, 1);
        memcpy(sb.params, full.params, sizeof(float) * full.n_params);
        memcpy(rb.params, full.params, sizeof(float) * full.n_params);
        TEST_CHECK(model_stage_to_bf16(&sb, NULL) == LOSA_OK && sb.head_bf16 && !sb.head &&
                       !sb.layers[0].w[0] && sb.layers[0].wb[0],
                   "bf16 stage with a bf16 head");
        /* a plain bf16 stage (maps and head rows, the layout losa run
         * holds) packs for the forward to the same bits as an fp32 stage
         * packed directly; converting it again is a no-op, and a maps-only
         * stage (model_stage_to_bf16_maps: head fp32) is not converted
         * again */
        {
            model_stage pb, pf;
            model_stage_build(&pb, &c, 0, 1);
            model_stage_build(&pf, &c, 0, 1);
            memcpy(pb.params, full.params, sizeof(float) * full.n_params);
            memcpy(pf.params, full.params, sizeof(float) * full.n_params);
            TEST_CHECK(model_stage_to_bf16(&pb, NULL) == LOSA_OK && pb.head_bf16 && !pb.head &&
                           model_stage_to_bf16(&pb, NULL) == LOSA_OK &&
                           model_stage_pack_bf16(&pb, NULL) == LOSA_OK && pb.bf16_packed &&
                           model_stage_pack_bf16(&pf, NULL) == LOSA_OK &&
                           pb.bytes_bf16 == pf.bytes_bf16 && pb.n_params == pf.n_params &&
                           !memcmp(pb.params_bf16, pf.params_bf16, pb.bytes_bf16) &&
                           !memcmp(pb.params, pf.params, sizeof(float) * pb.n_params),
                       "plain bf16 stage (head rows) packed == fp32 stage packed, bit for bit");
            model_stage_free(&pb);
            model_stage_free(&pf);
            model_stage_build(&pb, &c, 0, 1);
            memcpy(pb.params, full.params, sizeof(float) * full.n_params);
            TEST_CHECK(model_stage_to_bf16_maps(&pb, NULL) == LOSA_OK && pb.head && !pb.head_bf16 &&
                           model_stage_to_bf16(&pb, NULL) == LOSA_ERR_ARG,
                       "a maps-only bf16 stage is not converted again");
            model_stage_free(&pb);
        }
        test_stage_round_bf16(&rb);
        float *gb = malloc(sizeof(float) * T * V), *gr = malloc(sizeof(float) * T * V);
        model_stage *ss[2] = {&sb, &rb};
        float *gg[2] = {gb, gr};
        for (int q = 0; q < 2; q++) {
            model_kv_cache kv;
            model_acts a;
            TEST_CHECK(model_kv_cache_build(&kv, ss[q], T) == LOSA_OK, "kv build (%s)",
                       q ? "fp32" : "bf16");
            model_acts_build(&a, ss[q], 1, 1, 0);
            for (int pos = 0; pos < T; pos++) {
                model_stage_decode_step(&a, &kv, ss[q], tok[pos], pos);
                memcpy(gg[q] + (int64_t)pos * V, a.logits, sizeof(float) * V);
            }
            model_acts_free(&a);
            model_kv_cache_free(&kv);
        }
        double worst = 0;
        for (int t = 0; t < T; t++) {
            double e = test_max_rel(gb + (int64_t)t * V, gr + (int64_t)t * V, V);
            if (e > worst) worst = e;
        }
        if (dist_rank(d) == 0)
            fprintf(stderr, "bf16 decode vs fp32 decode on the rounded weights: max rel %.3g\n",
                    worst);
        TEST_CHECK(worst <= 1e-5, "bf16 decode logits rel %.3g", worst);
        free(gb);
        free(gr);
        model_stage_free(&sb);
        model_stage_free(&rb);
    }

    /* auto: 70% -> density 0.3 converts at batch 1; a dense map does not */
    {
        model_sparse sp;
        float *w0 = full.layers[1].w[MODEL_MAP_UP];
        int o, i;
        model_map_shape(&c, MODEL_MAP_UP, &o, &i);
        float *save = malloc(sizeof(float) * o * i);
        memcpy(save, w0, sizeof(float) * o * i);
        for (int64_t k = 0; k < (int64_t)o * i; k++) w0[k] = 0.5f + (float)(k % 7);
        model_sparse_build(&sp, &full, MODEL_SPARSE_AUTO, 1, SPARSE_FORMAT_BITMAP);
        TEST_CHECK(sp.n_converted == 3 * MODEL_N_MAPS - 1 && !sp.has[MODEL_N_MAPS + MODEL_MAP_UP],
                   "auto converted %d maps", sp.n_converted);
        TEST_CHECK(sp.bytes < sp.dense_bytes / 2, "sparse bytes %zu vs dense %zu", sp.bytes,
                   sp.dense_bytes);
        model_sparse_free(&sp);
        model_sparse_build(&sp, &full, MODEL_SPARSE_OFF, 1, SPARSE_FORMAT_BITMAP);
        TEST_CHECK(sp.n_converted == 0, "off converted %d", sp.n_converted);
        model_sparse_free(&sp);
        memcpy(w0, save, sizeof(float) * o * i);
        free(save);
        model_sparse_mode m;
        TEST_CHECK(model_sparse_mode_from_string("on", &m) == LOSA_OK && m == MODEL_SPARSE_ON, "on");
        TEST_CHECK(model_sparse_mode_from_string("yes", &m) != LOSA_OK, "bad mode rejected");
        model_kv_cache kv;
        TEST_CHECK(model_kv_cache_build(&kv, &full, c.max_seq_len + 1) != LOSA_OK,
                   "cache longer than max_seq_len rejected");
    }

    /* ---- pipeline: this rank's stage, dense then sparse ---- */
    for (int mode = 0; mode < 2; mode++) {
        model_stage s;
        TEST_CHECK(model_stage_for_rank(&s, &c, d) == LOSA_OK, "stage");
        model_stage_randomize(&s, 3, 0.3f);
        prune_stage(&s, 0.7);
        model_sparse sp;
        model_sparse_build(&sp, &s, mode ? MODEL_SPARSE_ON : MODEL_SPARSE_OFF, 1,
                           SPARSE_FORMAT_BITMAP);
        s.sparse = &sp;
        model_kv_cache kv;
        model_acts a;
        model_kv_cache_build(&kv, &s, T);
        model_acts_build(&a, &s, 1, T0, 0);
        model_pipeline_prefill(d, &a, &kv, &s, tok, T0, 0);
        if (s.has_head) memcpy(got, a.logits, sizeof(float) * T0 * V);
        for (int pos = T0; pos < T; pos++) {
            model_pipeline_decode_step(d, &a, &kv, &s, tok[pos], pos, pos);
            if (s.has_head) memcpy(got + (int64_t)pos * V, a.logits, sizeof(float) * V);
        }
        if (s.has_head) {
            double e = test_max_rel(got, ref, (long)T * V);
            fprintf(stderr, "pipeline %d stages, %s: max rel %.3g\n", s.n_stages,
                    mode ? "sparse" : "dense", e);
            TEST_CHECK(e <= 1e-5, "pipeline (%d stages) %s logits rel %.3g", s.n_stages,
                       mode ? "sparse" : "dense", e);
        }
        s.sparse = NULL;
        model_acts_free(&a);
        model_kv_cache_free(&kv);
        model_sparse_free(&sp);
        model_stage_free(&s);
    }

    free(ref);
    free(got);
    free(tok);
    model_stage_free(&full);
    double f = test_failures;
    dist_sum_doubles(d, &f, 1);
    test_failures = (int)f;
    int rc = dist_rank(d) == 0 ? test_finish("test_sparse_decode") : (test_failures != 0);
    dist_finalize(&d);
    return rc;
}
