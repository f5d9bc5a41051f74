/* What `losa run` keeps resident on one rank, phase by phase (see
 * include/losa.h), added up from the size functions of the modules that
 * allocate: the plan calls them, it does not copy their formulas. */
#include "run_internal.h"

#include <string.h>

#include "eval.h"
#include "kernels.h"

static const char *phase_names[LOSA_N_PHASES] = {
    "setup", "dense_eval", "prune", "lora_train", "dense_ref", "grams", "losa_prune", "losa_train",
    "losa_eval", "write_model"};

const char *losa_phase_name(losa_phase p)
{
    return p >= 0 && p < LOSA_N_PHASES ? phase_names[p] : "unknown";
}

/* The buffers of one rank's run (what each phase adds on top of the
 * resident parts). */
typedef struct {
    size_t eval, prune1, train, dense_pass, grams_pass, prune, write;
    size_t gemm_scratch; /* included in each of the above but write */
} phase_adds;

static phase_adds adds_of(const run_settings *rs, const model_config *c, int pp, int dp,
                          int stage, int replica, const int *count)
{
    int nl = count[stage];
    const data_settings *ds = &rs->data;
    const eval_settings *es = &rs->eval;
    const lora_train_config *tc = &rs->train.tc;
    int has_head = stage == pp - 1, N = ds->calib_n, S = ds->calib_seqlen;
    int Nm = calib_windows_of(N, dp, replica), chunk = LOSA_CALIB_CHUNK;
    phase_adds a = {0};
    /* perplexity: max_windows windows at most (0: all, at least a batch) */
    int64_t nw = es->max_windows > 0 ? es->max_windows : es->batch;
    a.eval = eval_ppl_bytes(c, nl, has_head, nw, es->seqlen, es->batch);
    a.prune1 = calib_prune_bytes(c, nl, N, Nm, S, chunk, &rs->prune.pc, 0, dp, rs->model.dtype);
    a.prune = calib_prune_bytes(c, nl, N, Nm, S, chunk, &rs->prune.pc, 1, dp, rs->model.dtype);
    int n_mb = lora_trainer_n_mb(tc->grad_accum, dp, replica);
    int in_flight = lora_trainer_in_flight(rs->parallel.schedule, pp, stage, n_mb);
    a.train = lora_trainer_bytes(c, nl, has_head, in_flight, tc) +
              losa_run_train_bytes(tc);
    a.dense_pass = calib_dense_stream_bytes(c, nl, Nm, S, chunk);
    a.grams_pass = calib_layer_grams_bytes(c, nl, rs->losa.rmi_n, S, chunk);
    /* bf16: the GEMM engine's thread-local scratch (kern_gemm_bf16_scratch_bytes)
     * grows to the largest product's and stays: counted in every phase, at
     * the run's largest row count (training micro-batch, evaluation batch,
     * calibration chunk) */
    if (rs->model.dtype == MODEL_DTYPE_BF16) {
        int64_t ev = (int64_t)es->batch * es->seqlen, ca = (int64_t)chunk * S,
                mb = (int64_t)tc->B * tc->T, kw = c->dim > c->hidden_dim ? c->dim : c->hidden_dim;
        int train = rs->losa.mode != LOSA_MODE_PRUNE;
        int64_t rows = ev > ca ? ev : ca;
        if (train && mb > rows) rows = mb;
        size_t scr = kern_gemm_bf16_scratch_bytes(rows, kw, has_head ? c->vocab_size : 0, train);
        a.eval += scr;
        a.prune1 += scr;
        a.train += scr;
        a.dense_pass += scr;
        a.grams_pass += scr;
        a.prune += scr;
        a.gemm_scratch = scr;
    }
    for (int p = 0; p < pp; p++) { /* losa_store_write_model: another stage in transit */
        size_t b = p == stage ? 0 : model_stage_bytes_dtype(c, p, pp, count, rs->model.dtype);
        if (b > a.write) a.write = b;
    }
    return a;
}

void losa_memory_plan(const run_settings *rs, const model_config *c, int pp, int dp, int stage,
                      int replica, losa_memory *m)
{
    memset(m, 0, sizeof *m);
    int first[pp], count[pp];
    losa_stage_split(rs, c, pp, first, count);
    int nl = count[stage], mode = rs->losa.mode, N = rs->data.calib_n;
    int S = rs->data.calib_seqlen, Nm = calib_windows_of(N, dp, replica);
    int baseline = mode != LOSA_MODE_LOSA, lora = mode == LOSA_MODE_LORA || mode == LOSA_MODE_COMPARE;
    int losa = mode == LOSA_MODE_LOSA || mode == LOSA_MODE_COMPARE;
    int ppl = rs->data.eval_text.path && rs->data.eval_text.path[0];
    phase_adds a = adds_of(rs, c, pp, dp, stage, replica, count);
    /* model.dtype = bf16: the stage as model_stage_build_dtype allocates it
     * (maps and head 2 bytes per weight, embedding and norms fp32) */
    m->weights = model_stage_bytes_dtype(c, stage, pp, count, rs->model.dtype);
    m->inputs = core_alloc_bytes((size_t)N * S, sizeof(int));
    const lora_config *lc = &rs->lora.lc;
    m->buffers = lora_buffers_resolve(lc, c, nl);
    m->adapters = mode != LOSA_MODE_PRUNE ? lora_adapters_bytes(c, nl, lc) : 0;
    m->attached = mode != LOSA_MODE_PRUNE ? lora_adapters_attached_bytes(c, nl, lc) : 0;
    m->dense_ref = !losa ? 0
                   : rs->losa.dense_on_disk ? calib_dense_outputs_bytes(c, 1, Nm, S)
                                            : calib_dense_outputs_bytes(c, nl, Nm, S);
    m->grams = losa ? losa_loop_bytes(c->n_layers, rs->losa.rmi_n) : 0;
    m->prune = a.prune;
    m->gemm_scratch = a.gemm_scratch;
    m->train = a.train + m->attached; /* training runs attached */
    m->eval = a.eval;
    size_t base = m->weights + m->inputs, loop = base + m->adapters + m->dense_ref + m->grams;
    size_t *ph = m->phase;
    ph[LOSA_PHASE_SETUP] = base; /* the stage read; no phase's buffers yet */
    if (ppl) ph[LOSA_PHASE_DENSE_EVAL] = base + a.eval;
    if (baseline) ph[LOSA_PHASE_PRUNE] = base + a.prune1;
    if (lora) ph[LOSA_PHASE_LORA_TRAIN] = base + m->adapters + m->train;
    if (losa) {
        ph[LOSA_PHASE_DENSE_REF] = base + m->adapters + m->dense_ref + a.dense_pass;
        /* bf16 magnitude / Wanda: the maps kept from the merge (before
         * the Grams) to the new mask (after the pruning) */
        size_t keep = losa_step_keep_bytes(rs, c, nl);
        ph[LOSA_PHASE_GRAMS] = loop + a.grams_pass + keep;
        ph[LOSA_PHASE_LOSA_PRUNE] = loop + a.prune + keep;
        ph[LOSA_PHASE_LOSA_TRAIN] = loop + m->train;
        if (ppl) ph[LOSA_PHASE_LOSA_EVAL] = loop + a.eval + losa_eval_keep_bytes(rs, c, nl);
    }
    ph[LOSA_PHASE_WRITE] = base + a.write;
    size_t *tb = m->touched;
    tb[LOSA_PHASE_DENSE_EVAL] = tb[LOSA_PHASE_LOSA_EVAL] = a.eval;
    if (losa) tb[LOSA_PHASE_LOSA_EVAL] += losa_eval_keep_bytes(rs, c, nl);
    tb[LOSA_PHASE_PRUNE] = a.prune1;
    tb[LOSA_PHASE_LORA_TRAIN] = tb[LOSA_PHASE_LOSA_TRAIN] = m->train;
    tb[LOSA_PHASE_DENSE_REF] = m->dense_ref + a.dense_pass;
    tb[LOSA_PHASE_GRAMS] = a.grams_pass + (losa ? losa_step_keep_bytes(rs, c, nl) : 0);
    tb[LOSA_PHASE_LOSA_PRUNE] = a.prune + (losa ? losa_step_keep_bytes(rs, c, nl) : 0);
    for (int p = 0; p < LOSA_N_PHASES; p++)
        if (!ph[p]) tb[p] = 0;
    for (int p = 0; p < LOSA_N_PHASES; p++)
        if (ph[p] > m->peak) {
            m->peak = ph[p];
            m->peak_phase = (losa_phase)p;
        }
}
