// ranks: 1 2 4
/* Data-parallel x pipeline training: 10 optimizer steps of masked LoRA
 * (grad_accum 6, dropout 0.1, clipping active) on a random tiny pruned model
 * for every layout (PP, DP) with PP x DP = ranks — (1,1); (2,1), (1,2);
 * (4,1), (2,2), (1,4) — and both pipeline schedules, against one process
 * holding the whole model (computed in-process on every rank):
 *   - pure pipeline layouts: loss and gradient-norm curves bit-identical;
 *   - DP > 1: within 1e-5 relative (the all-reduce of dA, dB sums the
 *     replicas' partial gradients in another order); DP 4 with grad_accum 6
 *     gives replicas 2, 2, 1, 1 micro-batches (the remainder case);
 *   - 1F1B and GPipe bit-identical to each other in every layout;
 *   - the replicas of a stage hold bit-identical adapters after training;
 *   - grad_accum 1 with DP 2 (one replica idle) still matches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "lora.h"
#include "model.h"
#include "test_util.h"
#include "train_fixture.h"

#define STEPS 10

/* 10 steps; curve = loss (STEPS) then grad norm (STEPS); *hash = a checksum
 * of this rank's adapter parameters. */
static void run(dist_ctx *d, const model_config *c, const lora_train_config *tc, const int *tok,
                const int *tgt, double *curve, double *hash)
{
    model_stage s;
    lora_adapters ad;
    fixture_model(d, c, &s, &ad);
    lora_trainer tr;
    TEST_CHECK(lora_trainer_build(&tr, d, &s, &ad, tc) == LOSA_OK, "trainer: %s", core_errmsg());
    if (d && dist_n_stages(d) > 1) { /* activation buffers: in-flight micro-batches only */
        int m = tr.n_mb, PP = dist_n_stages(d), want = tc->schedule == LORA_SCHEDULE_GPIPE ? m
                                                      : (PP - dist_stage(d) < m ? PP - dist_stage(d) : m);
        TEST_CHECK(tr.n_acts == (want > 0 ? want : 1), "stage %d: %d activation buffers, want %d",
                   dist_stage(d), tr.n_acts, want);
    }
    fixture_train(&tr, tc, tok, tgt, 3, STEPS, curve);
    double h = 0;
    for (size_t i = 0; i < ad.n_params; i++) h += (double)ad.params[i] * (double)((i % 97) + 1);
    *hash = h;
    lora_trainer_free(&tr);
    lora_adapters_free(&ad, &s);
    model_stage_free(&s);
}

int main(int argc, char **argv)
{
    dist_ctx *d;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) return 1;
    int P = dist_size(d);
    model_config c = fixture_config(4);
    lora_train_config tc;
    fixture_train_config(&tc, 6, STEPS);
    int64_t per = (int64_t)tc.grad_accum * tc.B * tc.T, n = 3 * per;
    int *tok, *tgt;
    fixture_tokens(n, tc.T, c.vocab_size, &tok, &tgt);
    double ref[2 * STEPS], ref1[2 * STEPS], h;
    run(NULL, &c, &tc, tok, tgt, ref, &h);
    lora_train_config tc1 = tc;
    tc1.grad_accum = 1;
    run(NULL, &c, &tc1, tok, tgt, ref1, &h);

    for (int pp = P; pp >= 1; pp /= 2) {
        int dp = P / pp;
        if (pp > c.n_layers || pp * dp != P) continue;
        TEST_CHECK(dist_set_layout(d, pp, dp) == LOSA_OK, "layout %d x %d", pp, dp);
        double cur[2][2 * STEPS], hash[2];
        for (int sch = 0; sch < 2; sch++) {
            lora_train_config t = tc;
            t.schedule = sch ? LORA_SCHEDULE_GPIPE : LORA_SCHEDULE_1F1B;
            t.ckpt = sch; /* GPipe run with activation checkpointing */
            run(d, &c, &t, tok, tgt, cur[sch], &hash[sch]);
        }
        double w = fixture_max_rel(cur[0], ref, 2 * STEPS);
        int same = memcmp(cur[0], ref, sizeof ref) == 0;
        int same_sched = memcmp(cur[0], cur[1], sizeof ref) == 0 && hash[0] == hash[1];
        /* replicas of a stage hold the same adapters */
        double hv[8] = {0};
        hv[dist_replica(d)] = hash[0];
        dist_sum_doubles_stage(d, hv, (size_t)dp);
        int rep_eq = 1;
        for (int k = 1; k < dp; k++) rep_eq &= hv[k] == hv[0];
        if (dist_rank(d) == 0)
            fprintf(stderr, "(PP,DP)=(%d,%d): loss %.6f -> %.6f; vs one process: %s (max rel "
                    "%.2e); 1F1B vs GPipe: %s\n", pp, dp, cur[0][0], cur[0][STEPS - 1],
                    same ? "bit-identical" : "differs", w, same_sched ? "bit-identical" : "DIFFER");
        if (dp == 1) TEST_CHECK(same, "(%d,%d) differs from one process (max rel %.3g)", pp, dp, w);
        else TEST_CHECK(w <= 1e-5, "(%d,%d) vs one process: max rel %.3g > 1e-5", pp, dp, w);
        TEST_CHECK(same_sched, "(%d,%d): 1F1B and GPipe differ", pp, dp);
        TEST_CHECK(rep_eq, "(%d,%d): replicas of stage %d hold different adapters", pp, dp,
                   dist_stage(d));
        TEST_CHECK(cur[0][STEPS - 1] < cur[0][0] - 0.05, "(%d,%d) loss did not decrease", pp, dp);
        if (dp == 2) { /* grad_accum 1: replica 1 has no micro-batch */
            double c1[2 * STEPS];
            run(d, &c, &tc1, tok, tgt, c1, &h);
            double w1 = fixture_max_rel(c1, ref1, 2 * STEPS);
            if (dist_rank(d) == 0)
                fprintf(stderr, "(PP,DP)=(%d,%d) grad_accum 1: max rel %.2e\n", pp, dp, w1);
            TEST_CHECK(w1 <= 1e-5, "(%d,%d) grad_accum 1: max rel %.3g", pp, dp, w1);
        }
    }
    double fails = test_failures;
    dist_sum_doubles(d, &fails, 1);
    test_failures = (int)fails;
    free(tok);
    free(tgt);
    int rc = dist_rank(d) == 0 ? test_finish("test_train_dp") : (test_failures != 0);
    dist_finalize(&d);
    return rc;
}
