// ranks: 1 2 4
/* Pipeline-parallel forward: logits and NLL of several micro-batches through
 * P stages are bit-identical to a single-stage model computed on one rank. */
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "model.h"
#include "test_util.h"

int main(int argc, char **argv)
{
    dist_ctx *d;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) return 1;
    model_config c = {.dim = 48, .hidden_dim = 80, .n_layers = 5, .n_heads = 6,
                      .n_kv_heads = 3, .vocab_size = 70, .max_seq_len = 32,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 0,
                      .bos_id = 1, .eos_id = 2};
    int B = 2, T = 12, MB = 3;
    model_stage s, full;
    model_acts a, af;
    TEST_CHECK(model_stage_for_rank(&s, &c, d) == LOSA_OK, "stage");
    model_stage_randomize(&s, 5, 0.2f);
    model_acts_build(&a, &s, B, T, 0);
    int *tok = malloc(sizeof(int) * MB * B * T);
    core_rng r;
    core_rng_seed(&r, 9);
    for (int i = 0; i < MB * B * T; i++) tok[i] = (int)(core_rng_u64(&r) % c.vocab_size);
    size_t nl = (size_t)B * T * c.vocab_size;
    float *logits = malloc(sizeof(float) * nl * MB);
    for (int m = 0; m < MB; m++) {
        model_pipeline_forward(d, &a, &s, tok + m * B * T, B, T, m);
        if (s.has_head) memcpy(logits + m * nl, a.logits, sizeof(float) * nl);
    }
    if (s.has_head) {
        model_stage_build(&full, &c, 0, 1);
        model_stage_randomize(&full, 5, 0.2f);
        model_acts_build(&af, &full, B, T, 0);
        for (int m = 0; m < MB; m++) {
            model_stage_forward(&af, &full, tok + m * B * T, B, T);
            TEST_CHECK(memcmp(af.logits, logits + m * nl, sizeof(float) * nl) == 0,
                       "micro-batch %d: pipeline logits differ from one stage (P=%d)",
                       m, dist_n_stages(d));
        }
        fprintf(stderr, "P=%d stage %d layers %d..%d: logits bit-identical\n",
                dist_n_stages(d), dist_stage(d), s.layer0, s.layer0 + s.n_layers - 1);
        model_acts_free(&af);
        model_stage_free(&full);
    }
    /* every layer is owned by exactly one stage */
    double owned = s.n_layers;
    dist_sum_doubles(d, &owned, 1);
    TEST_CHECK(owned == c.n_layers, "layers owned %g != %d", owned, c.n_layers);
    double fails = test_failures;
    dist_sum_doubles(d, &fails, 1);
    test_failures = (int)fails;
    free(tok);
    free(logits);
    model_acts_free(&a);
    model_stage_free(&s);
    int rc = dist_rank(d) == 0 ? test_finish("test_pipeline") : (test_failures != 0);
    dist_finalize(&d);
    return rc;
}
