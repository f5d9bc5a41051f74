/* FLOP counts of the decoder (include/model.h). */
#include "model.h"

/* per token: 2 x the maps' weights */
static double maps_flops(const model_config *c)
{
    double f = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, (model_map)m, &o, &i);
        f += 2.0 * o * i;
    }
    return f;
}

/* per sequence and layer: the forward attention over the causal pairs */
static double attention_flops(const model_config *c, int64_t T)
{
    return 4.0 * model_head_size(c) * c->n_heads * (double)T * (double)(T + 1) / 2;
}

double model_forward_flops(const model_config *c, int n_layers, int has_head, int64_t B, int64_t T)
{
    double N = (double)B * T;
    double f = n_layers * (N * maps_flops(c) + B * attention_flops(c, T));
    return f + (has_head ? 2.0 * N * c->vocab_size * c->dim : 0);
}

double model_train_flops(const model_config *c, int n_layers, int has_head, int64_t B, int64_t T,
                         int r, int dropout, int recompute)
{
    double N = (double)B * T, maps = N * maps_flops(c), att = B * attention_flops(c, T);
    double fwd = maps * (dropout ? 2 : 1) + att;
    double layer = fwd + maps * (dropout ? 2 : 1) + maps + 2.5 * att + 3.0 * r * maps_flops(c);
    if (recompute) layer += fwd;
    return n_layers * layer + (has_head ? 2 * 2.0 * N * c->vocab_size * c->dim : 0);
}
