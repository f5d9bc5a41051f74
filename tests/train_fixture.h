/* The tiny pruned model, training configuration and token stream shared by
 * the pipeline and data-parallel masked-LoRA training tests (header-only:
 * each test is one translation unit; include after test_util.h). */
#ifndef LOSA_TRAIN_FIXTURE_H
#define LOSA_TRAIN_FIXTURE_H

#include "dist.h"
#include "lora.h"
#include "model.h"

static inline model_config fixture_config(int n_layers)
{
    model_config c = {.dim = 32, .hidden_dim = 56, .n_layers = n_layers, .n_heads = 4,
                      .n_kv_heads = 2, .vocab_size = 41, .max_seq_len = 16,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 0,
                      .bos_id = 1, .eos_id = 2};
    return c;
}

/* B 2, T 10, lr 3e-3 with warmup, clipping at 0.5 (active), seed 7. */
static inline void fixture_train_config(lora_train_config *tc, int grad_accum, int steps)
{
    lora_train_config_default(tc);
    tc->B = 2;
    tc->T = 10;
    tc->grad_accum = grad_accum;
    tc->steps = steps;
    tc->lr = 3e-3f;
    tc->max_grad_norm = 0.5f;
    tc->warmup_ratio = 0.2f;
    tc->seed = 7;
}

/* n random tokens and their targets (the next token; the last position of
 * every T-window and some padding ignored: -1).  Free both. */
static inline void fixture_tokens(int64_t n, int T, int vocab, int **tok, int **tgt)
{
    *tok = malloc(sizeof(int) * n);
    *tgt = malloc(sizeof(int) * n);
    core_rng r;
    core_rng_seed(&r, 5);
    for (int64_t i = 0; i < n; i++) (*tok)[i] = (int)(core_rng_u64(&r) % vocab);
    for (int64_t i = 0; i < n; i++)
        (*tgt)[i] = (i % T == T - 1 || ((i / T) % 5 == 4 && i % T > 5)) ? -1 : (*tok)[i + 1];
}

/* This rank's stage (the whole model when d is NULL): random weights,
 * a deterministic 50% pattern from the weights themselves (|w| < median of
 * a normal, 0.6745 sd -> 0), adapters of rank 6 set to ranks 2..6 by layer. */
static inline void fixture_model_buffers(dist_ctx *d, const model_config *c, model_stage *s,
                                         lora_adapters *ad, lora_buffers b)
{
    lora_config lc;
    lora_config_default(&lc);
    lc.rank = 6;
    lc.buffers = b;
    if (d) TEST_CHECK(model_stage_for_rank(s, c, d) == LOSA_OK, "stage");
    else model_stage_build(s, c, 0, 1);
    model_stage_randomize(s, 21, 0.2f);
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < MODEL_N_MAPS; m++) {
            int o, i;
            model_map_shape(&s->cfg, m, &o, &i);
            for (int64_t e = 0; e < (int64_t)o * i; e++)
                if (fabsf(s->layers[l].w[m][e]) < 0.6745f * 0.2f) s->layers[l].w[m][e] = 0.0f;
        }
    TEST_CHECK(lora_adapters_build(ad, s, &lc) == LOSA_OK, "adapters");
    for (int l = 0; l < s->n_layers; l++) lora_set_rank(ad, l, 2 + (s->layer0 + l) % 5);
    lora_delta_update(ad, s);
}
/* ... with the dense forms lora_config_default gives (auto: persistent). */
static inline void fixture_model(dist_ctx *d, const model_config *c, model_stage *s,
                                 lora_adapters *ad)
{
    fixture_model_buffers(d, c, s, ad, LORA_BUFFERS_AUTO);
}

/* steps optimizer steps cycling over nchunk chunks of the token stream;
 * curve = loss (steps values) then grad norm (steps values). */
static inline void fixture_train(lora_trainer *tr, const lora_train_config *tc, const int *tok,
                                 const int *tgt, int nchunk, int steps, double *curve)
{
    int64_t per = (int64_t)tc->grad_accum * tc->B * tc->T;
    for (int st = 0; st < steps; st++) {
        lora_step_stats ss;
        losa_status rc = lora_train_step(tr, tok + (st % nchunk) * per, tgt + (st % nchunk) * per,
                                         &ss);
        TEST_CHECK(rc == LOSA_OK, "step %d: %s", st, core_errmsg());
        curve[st] = ss.loss;
        curve[steps + st] = ss.grad_norm;
    }
}

/* max_i |x_i - r_i| / |r_i| */
static inline double fixture_max_rel(const double *x, const double *r, int n)
{
    double w = 0;
    for (int i = 0; i < n; i++) w = fmax(w, fabs(x[i] - r[i]) / fabs(r[i]));
    return w;
}

#endif
