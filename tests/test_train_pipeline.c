// ranks: 1 2 4
/* Masked-LoRA training through the pipeline: 20 optimizer steps (GPipe,
 * grad_accum 3, dropout 0.1, gradient clipping active, warmup + decay) on a
 * random tiny pruned model give the same loss curve and the same adapters for
 * P = 1, 2, 4 as one process holding the whole model (required: bit-identical;
 * the arithmetic per layer and the reduction orders are the same).  The
 * pipeline run uses activation checkpointing, the reference does not. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "lora.h"
#include "model.h"
#include "test_util.h"

#define STEPS 20

static void prune_half(model_stage *s)
{
    /* deterministic 50% pattern from the weights themselves: |w| < median
     * of a normal (0.6745 sd) -> 0 */
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&s->cfg, m, &o, &i);
            for (int64_t e = 0; e < (int64_t)o * i; e++)
                if (fabsf(s->layers[l].w[m][e]) < 0.6745f * 0.2f) s->layers[l].w[m][e] = 0.0f;
        }
}

static void run(dist_ctx *d, const model_config *c, const lora_train_config *tc,
                const int *tok, const int *tgt, double *curve, model_stage *s,
                lora_adapters *ad)
{
    lora_config lc;
    lora_config_default(&lc);
    lc.rank = 6;
    if (d) TEST_CHECK(model_stage_for_rank(s, c, d) == LOSA_OK, "stage");
    else model_stage_build(s, c, 0, 1);
    model_stage_randomize(s, 21, 0.2f);
    prune_half(s);
    TEST_CHECK(lora_adapters_build(ad, s, &lc) == LOSA_OK, "adapters");
    for (int l = 0; l < s->n_layers; l++) lora_set_rank(ad, l, 2 + (s->layer0 + l) % 5);
    lora_delta_update(ad, s);
    lora_trainer tr;
    TEST_CHECK(lora_trainer_build(&tr, d, s, ad, tc) == LOSA_OK, "trainer: %s", core_errmsg());
    int64_t per = (int64_t)tc->grad_accum * tc->B * tc->T;
    for (int st = 0; st < STEPS; st++) {
        lora_step_stats ss;
        losa_status rc = lora_train_step(&tr, tok + (st % 4) * per, tgt + (st % 4) * per, &ss);
        TEST_CHECK(rc == LOSA_OK, "step %d: %s", st, core_errmsg());
        curve[st] = ss.loss;
        curve[STEPS + st] = ss.grad_norm;
    }
    lora_trainer_free(&tr);
}

int main(int argc, char **argv)
{
    dist_ctx *d;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) return 1;
    model_config c = {.dim = 32, .hidden_dim = 56, .n_layers = 5, .n_heads = 4,
                      .n_kv_heads = 2, .vocab_size = 41, .max_seq_len = 16,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 0,
                      .bos_id = 1, .eos_id = 2};
    lora_train_config tc;
    lora_train_config_default(&tc);
    tc.B = 2;
    tc.T = 10;
    tc.grad_accum = 3;
    tc.steps = STEPS;
    tc.lr = 3e-3f;
    tc.max_grad_norm = 0.5f;
    tc.warmup_ratio = 0.2f;
    tc.seed = 7;
    int64_t per = (int64_t)tc.grad_accum * tc.B * tc.T, n = 4 * per;
    int *tok = malloc(sizeof(int) * n), *tgt = malloc(sizeof(int) * n);
    core_rng r;
    core_rng_seed(&r, 5);
    for (int64_t i = 0; i < n; i++) tok[i] = (int)(core_rng_u64(&r) % c.vocab_size);
    for (int64_t i = 0; i < n; i++) /* next token; last position and some padding ignored */
        tgt[i] = (i % tc.T == tc.T - 1 || ((i / tc.T) % 5 == 4 && i % tc.T > 5)) ? -1 : tok[i + 1];
    double curve[2 * STEPS], ref[2 * STEPS];
    model_stage s, sr;
    lora_adapters ad, adr;
    tc.ckpt = 1;
    run(d, &c, &tc, tok, tgt, curve, &s, &ad);
    tc.ckpt = 0;
    run(NULL, &c, &tc, tok, tgt, ref, &sr, &adr);
    int same = memcmp(curve, ref, sizeof curve) == 0;
    double worst = 0;
    for (int i = 0; i < 2 * STEPS; i++) worst = fmax(worst, fabs(curve[i] - ref[i]) / fabs(ref[i]));
    if (dist_rank(d) == 0) {
        fprintf(stderr, "P=%d loss: step 0 %.6f  step 9 %.6f  step 19 %.6f (grad norm %.4f -> "
                "%.4f)\n", dist_n_stages(d), curve[0], curve[9], curve[STEPS - 1],
                curve[STEPS], curve[2 * STEPS - 1]);
        fprintf(stderr, "P=%d vs one process: %s (max rel diff %.2e)\n", dist_n_stages(d),
                same ? "bit-identical" : "differs", worst);
    }
    TEST_CHECK(same, "P=%d loss/grad-norm curve differs from one process (max rel %.3g)",
               dist_n_stages(d), worst);
    TEST_CHECK(curve[STEPS - 1] < curve[0] - 0.05 && curve[STEPS - 2] < curve[1],
               "loss did not decrease: %.5f -> %.5f", curve[0], curve[STEPS - 1]);
    /* this rank's adapters equal the reference's layers */
    int eq = 1;
    for (int l = 0; l < ad.n_layers; l++) {
        int gl = s.layer0 + l;
        size_t len = (size_t)(ad.A[(l + 1) * MODEL_N_MAPS - 1] - ad.A[l * MODEL_N_MAPS]);
        eq &= memcmp(ad.A[l * MODEL_N_MAPS], adr.A[gl * MODEL_N_MAPS], sizeof(float) * len) == 0;
    }
    TEST_CHECK(eq, "rank %d: adapters differ from the one-process run", dist_rank(d));
    double fails = test_failures;
    dist_sum_doubles(d, &fails, 1);
    test_failures = (int)fails;
    lora_adapters_free(&ad, &s);
    lora_adapters_free(&adr, &sr);
    model_stage_free(&s);
    model_stage_free(&sr);
    free(tok);
    free(tgt);
    int rc = dist_rank(d) == 0 ? test_finish("test_train_pipeline") : (test_failures != 0);
    dist_finalize(&d);
    return rc;
}
