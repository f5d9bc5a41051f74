/* FLOP counts of the decoder (include/model.h). */
#include "model.h"

/* per token: 2 x the maps' weights */
static double maps_flops(const model_config *c) { return 2.0 * (double)model_map_weights(c); }

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

void model_stage_cost_train(const model_config *c, int64_t B, int64_t T, int64_t M, int r,
                            int dropout, int recompute, model_stage_cost *k)
{
    double N = (double)B * T, D = c->dim, F = c->hidden_dim, kv = model_kv_dim(c),
           V = c->vocab_size, maps = maps_flops(c) / 2;
    /* elementwise floats per token of one layer forward: norms 2 x 2D, map
     * outputs 3D + 2kvD + 2F, RoPE 2 (D + kvD), attention output D,
     * residuals 6D, SwiGLU 3F, dropout copies of the inputs 2 (3D + F);
     * backward about twice that, recompute once more */
    double fwd = 22 * D + 4 * kv + 7 * F;
    /* the persistent adapters' per-step passes over each map's (out x in)
     * floats (src/lora/adapters.c): dDelta zeroed (1); lora_grad_project
     * masks it (W and dDelta read, dDelta written: 3) and reads it in each
     * of its two GEMMs (2); lora_delta_update writes Delta in a GEMM, then
     * reads W and Delta, writes Delta and W_eff (5): 11 */
    double step_bytes = 4 * 11 * maps / (double)M,
           layer_bytes = 4 * N * fwd * (3 + (recompute ? 1 : 0)) + step_bytes;
    double head_bytes = 4 * N * (5 * V + 6 * D);
    k->layer = model_train_flops(c, 1, 0, B, T, r, dropout, recompute) +
               MODEL_FLOPS_PER_BYTE * layer_bytes;
    /* the forward of model_train_flops (maps, twice with dropout, and the
     * attention) and one of the (3 + recompute) elementwise passes */
    k->layer_fwd = N * maps_flops(c) * (dropout ? 2 : 1) + B * attention_flops(c, T) +
                   MODEL_FLOPS_PER_BYTE * 4 * N * fwd;
    k->layer_step = MODEL_FLOPS_PER_BYTE * step_bytes;
    k->head = model_train_flops(c, 0, 1, B, T, r, dropout, recompute) +
              MODEL_FLOPS_PER_BYTE * head_bytes;
    k->embed = MODEL_FLOPS_PER_BYTE * 4 * N * 2 * D;
}

void model_stage_train_parts(const model_stage_cost *k, int count, int first, int last, int M,
                             double fwd_share, double *fwd, double *bwd, double *step)
{
    double lf = fwd_share > 0 ? fwd_share * (k->layer - k->layer_step) : k->layer_fwd;
    *fwd = count * lf + (first ? k->embed : 0) + (last ? k->head : 0);
    *bwd = count * (k->layer - lf - k->layer_step);
    *step = count * k->layer_step * M;
}

void model_stage_cost_default(const model_config *c, model_stage_cost *k)
{
    int T = c->max_seq_len < 2048 ? c->max_seq_len : 2048;
    model_stage_cost_train(c, 1, T, 1, 16, 1, 0, k);
}
