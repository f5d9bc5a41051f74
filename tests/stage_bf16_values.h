/* Test helper: an fp32 stage whose 7 maps and head hold bf16 values (each
 * weight rounded to nearest even and widened back, in place), the
 * reference a bf16 stage of the same weights must agree with. */
#ifndef LOSA_TEST_STAGE_BF16_VALUES_H
#define LOSA_TEST_STAGE_BF16_VALUES_H

#include "kernels.h"
#include "model.h"

static void test_stage_round_bf16(model_stage *s)
{
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&s->cfg, m, &o, &i);
            float *w = s->layers[l].w[m];
            for (int64_t e = 0; e < (int64_t)o * i; e++) w[e] = kern_bf16_value(kern_bf16_round(w[e]));
        }
    if (s->has_head && s->head)
        for (int64_t e = 0; e < (int64_t)s->cfg.vocab_size * s->cfg.dim; e++)
            s->head[e] = kern_bf16_value(kern_bf16_round(s->head[e]));
}

#endif
