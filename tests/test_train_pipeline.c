// ranks: 1 2 4
/* Masked-LoRA training through the pipeline: 20 optimizer steps (GPipe,
 * grad_accum 3, dropout 0.1, gradient clipping active, warmup + decay) on a
 * random tiny pruned model give the same loss curve and the same adapters for
 * P = 1, 2, 4 as one process holding the whole model (required: bit-identical;
 * the arithmetic per layer and the reduction orders are the same).  The
 * pipeline run uses activation checkpointing, the reference does not.  Both
 * forms of the adapters' dense buffers (lora.delta_buffers persistent and
 * transient): each stage projects its maps' dDelta in micro-batch order in
 * either, so each is bit-identical to its own one-process run.
 * lora_schedule_seconds (the time model's wall of those schedules) on
 * hand-derived cases: equal stages fill (m + P - 1) slots under 1F1B and
 * GPipe; 2 stages, 2 micro-batches: stage 0 runs F0 F1 B0 B1, stage 1 F0 B0
 * F1 B1, so wall = max(2 f0, f0 + t1) + max(b0, t1) + b0 (t = f + b); one
 * micro-batch on 2 stages crosses the link twice (x each). */
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
                lora_adapters *ad, lora_buffers b)
{
    fixture_model_buffers(d, c, s, ad, b);
    lora_trainer tr;
    TEST_CHECK(lora_trainer_build(&tr, d, s, ad, tc) == LOSA_OK, "trainer: %s", core_errmsg());
    fixture_train(&tr, tc, tok, tgt, 4, STEPS, curve);
    lora_trainer_free(&tr);
}

static void check_schedule(void)
{
    double f[4] = {1, 1, 1, 1}, b[4] = {2, 2, 2, 2};
    for (int P = 1; P <= 4; P++)
        for (int m = 1; m <= 8; m++)
            for (int sc = LORA_SCHEDULE_1F1B; sc <= LORA_SCHEDULE_GPIPE; sc++)
                TEST_NEAR(lora_schedule_seconds(sc, P, m, f, b, 0, NULL), (m + P - 1) * 3.0, 1e-12,
                          "equal stages: (m + P - 1) slots");
    /* a slower last stage: max(1, 2.5) + max(1, 2) + 1 */
    double f1[2] = {0.5, 1}, b1[2] = {1, 1};
    TEST_NEAR(lora_schedule_seconds(LORA_SCHEDULE_1F1B, 2, 2, f1, b1, 0, NULL), 5.5, 1e-12,
              "2 stages, m 2, slow last stage");
    /* a slower first stage whose forward covers stage 1's micro-batch:
     * max(4, 3) + max(1, 1) + 1 = 6 = 2 t0, no bubble (sum t + max t = 7) */
    double f2[2] = {2, 0.5}, b2[2] = {1, 0.5};
    TEST_NEAR(lora_schedule_seconds(LORA_SCHEDULE_1F1B, 2, 2, f2, b2, 0, NULL), 6.0, 1e-12,
              "2 stages, m 2, slow first stage");
    TEST_NEAR(lora_schedule_seconds(LORA_SCHEDULE_1F1B, 2, 1, f, b, 0.1, NULL), 6.2, 1e-12,
              "2 stages, 1 micro-batch, 2 exchanges");
    /* the step's own work after the micro-batches: the slowest stage's */
    double u[2] = {0.25, 0.75};
    TEST_NEAR(lora_schedule_seconds(LORA_SCHEDULE_1F1B, 2, 2, f1, b1, 0, u), 5.5 + 0.75, 1e-12,
              "2 stages, m 2, update 0.25 / 0.75 s: + 0.75");
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
    for (int b = LORA_BUFFERS_PERSISTENT; b <= LORA_BUFFERS_TRANSIENT; b++) {
        const char *bn = lora_buffers_name(b);
        model_stage s, sr;
        lora_adapters ad, adr;
        tc.ckpt = 1;
        run(d, &c, &tc, tok, tgt, curve, &s, &ad, b);
        tc.ckpt = 0;
        run(NULL, &c, &tc, tok, tgt, ref, &sr, &adr, b);
        int same = memcmp(curve, ref, sizeof curve) == 0;
        double worst = fixture_max_rel(curve, ref, 2 * STEPS);
        if (dist_rank(d) == 0) {
            fprintf(stderr, "%s P=%d loss: step 0 %.6f  step 9 %.6f  step 19 %.6f (grad norm "
                    "%.4f -> %.4f)\n", bn, dist_n_stages(d), curve[0], curve[9],
                    curve[STEPS - 1], curve[STEPS], curve[2 * STEPS - 1]);
            fprintf(stderr, "%s P=%d vs one process: %s (max rel diff %.2e)\n", bn,
                    dist_n_stages(d), same ? "bit-identical" : "differs", worst);
        }
        TEST_CHECK(same, "%s P=%d loss/grad-norm curve differs from one process (max rel %.3g)",
                   bn, dist_n_stages(d), worst);
        TEST_CHECK(curve[STEPS - 1] < curve[0] - 0.05 && curve[STEPS - 2] < curve[1],
                   "%s: loss did not decrease: %.5f -> %.5f", bn, curve[0], curve[STEPS - 1]);
        /* this rank's adapters equal the reference's layers */
        int eq = 1;
        for (int l = 0; l < ad.n_layers; l++) {
            int gl = s.layer0 + l;
            size_t len = (size_t)(ad.A[(l + 1) * MODEL_N_MAPS - 1] - ad.A[l * MODEL_N_MAPS]);
            eq &= memcmp(ad.A[l * MODEL_N_MAPS], adr.A[gl * MODEL_N_MAPS], sizeof(float) * len) == 0;
        }
        TEST_CHECK(eq, "%s rank %d: adapters differ from the one-process run", bn, dist_rank(d));
        lora_adapters_free(&ad, &s);
        lora_adapters_free(&adr, &sr);
        model_stage_free(&s);
        model_stage_free(&sr);
    }
    if (dist_rank(d) == 0) check_schedule();
    double fails = test_failures;
    dist_sum_doubles(d, &fails, 1);
    test_failures = (int)fails;
    free(tok);
    free(tgt);
    int rc = dist_rank(d) == 0 ? test_finish("test_train_pipeline") : (test_failures != 0);
    dist_finalize(&d);
    return rc;
}
