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
#include "train_fixture.h"

#define STEPS 20

static void run(dist_ctx *d, const model_config *c, const lora_train_config *tc,
                const int *tok, const int *tgt, double *curve, model_stage *s,
                lora_adapters *ad)
{
    fixture_model(d, c, s, ad);
    lora_trainer tr;
    TEST_CHECK(lora_trainer_build(&tr, d, s, ad, tc) == LOSA_OK, "trainer: %s", core_errmsg());
    fixture_train(&tr, tc, tok, tgt, 4, STEPS, curve);
    lora_trainer_free(&tr);
}

int main(int argc, char **argv)
{
    dist_ctx *d;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) return 1;
    model_config c = fixture_config(5);
    lora_train_config tc;
    fixture_train_config(&tc, 3, STEPS);
    int64_t per = (int64_t)tc.grad_accum * tc.B * tc.T, n = 4 * per;
    int *tok, *tgt;
    fixture_tokens(n, tc.T, c.vocab_size, &tok, &tgt);
    double curve[2 * STEPS], ref[2 * STEPS];
    model_stage s, sr;
    lora_adapters ad, adr;
    tc.ckpt = 1;
    run(d, &c, &tc, tok, tgt, curve, &s, &ad);
    tc.ckpt = 0;
    run(NULL, &c, &tc, tok, tgt, ref, &sr, &adr);
    int same = memcmp(curve, ref, sizeof curve) == 0;
    double worst = fixture_max_rel(curve, ref, 2 * STEPS);
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
