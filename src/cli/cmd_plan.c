/* losa plan DECK.ini [--set k=v ...] [--ranks N] [--mem-per-rank BYTES] [--json]
 * Sizing without the weights: for the deck's model (model.config, a HF
 * config.json, or the config of model.store; no tensor is read) and layout
 * (parallel.pp x parallel.dp, or --ranks N), per rank the memory of each
 * kind, the FLOPs of each phase and the communication volume of each phase.
 *
 * Memory (bytes per rank): losa_memory_plan (include/losa.h), which adds
 * up the size functions of the modules that allocate (model_stage_bytes_dtype:
 * with model.dtype = bf16 the maps count 2 bytes per weight,
 * lora_adapters_bytes, lora_trainer_bytes, calib_prune_bytes,
 * calib_dense_outputs_bytes, eval_ppl_bytes, ...) phase by phase of
 * `losa run`: resident weights, adapters (with their optimizer state),
 * dense reference outputs and Gram matrices, plus what the phase adds
 * (the pruner's statistics, Hessians and streams; the training's
 * activations of the micro-batches in flight, backward scratch and
 * logits; the perplexity's activations).  peak = the largest phase, named
 * by peak_phase; every phase's total is in the JSON.  MPI's, HDF5's and
 * BLAS's own memory (some 30 MB a process) is not in it.
 * FLOPs (per rank): 2 per multiply-add; a layer's forward costs
 * 2 x (map params) + 4 x T x D per token (scores and weighted sum, full
 * T x T, no causal saving), the head 2 x V x D per token.  Backward with
 * frozen base weights: ~1 forward for dX, plus the adapters' 6 r (in+out).
 * Communication (bytes sent per rank; all-reduce as a ring 2 (n-1)/n).
 * Memory check: the peak of every rank against --mem-per-rank (K/M/G/T =
 * 2^10..2^40 as SLURM's --mem; default this machine's physical memory): a
 * rank over it is a warning on stderr naming the worst rank and stage, by
 * how much, and the fewest ranks (more stages, same parallel.dp) whose peak
 * fits; --json adds mem_per_rank, fits and ranks_to_fit.  Exit stays 0:
 * a plan is advice, also for a machine other than this one.
 * Collective: rank 0 computes and prints; errors agreed. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cli.h"
#include "io.h"
#include "plan.h"
#include "settings.h"

typedef struct {
    int rank, stage, replica, layer0, n_layers;
    losa_memory mem;
    double flops_calib, flops_sparsegpt, flops_train_step, flops_eval_token;
    double comm_pipeline_per_microbatch, comm_calib_pipeline, comm_grad_allreduce,
        comm_hessian_allreduce, comm_gram_allreduce;
} plan_rank;

typedef struct {
    model_config c;
    run_settings rs;
    int pp, dp, ranks;
    int B, T, accum, r_max, calib_n, calib_S, rmi_n, eval_B, eval_T, gpipe, train_mode;
    int sparsegpt;
    plan_rank *r; /* (ranks) */
    model_dtype store_dtype; /* model.store's maps (plan_config) */
    losa_rates rates;
    char why[1280];  /* the time model's assumptions */
    losa_time *time;
} plan;

static double ring(double bytes, int n) { return n > 1 ? 2.0 * (n - 1) / n * bytes : 0; }

static void plan_compute(plan *p)
{
    const model_config *c = &p->c;
    int PP = p->pp, DP = p->dp, L = c->n_layers;
    int first[PP], count[PP];
    losa_stage_split(&p->rs, c, PP, first, count);
    double D = c->dim, F = c->hidden_dim, V = c->vocab_size, kv = model_kv_dim(c);
    double maps = 0, adapter_layer = 0, adapter_fl = 0;
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(c, (model_map)m, &o, &i);
        maps += (double)o * i;
        adapter_layer += (double)p->r_max * (i + o) * 4;
        adapter_fl += 2.0 * p->r_max * (i + o);
    }
    /* per micro-batch, per rank: micro-batches of a step split over replicas */
    int mb = (p->accum + DP - 1) / DP;
    for (int k = 0; k < p->ranks; k++) {
        plan_rank *r = &p->r[k];
        int s = k % PP;
        r->rank = k;
        r->stage = s;
        r->replica = k / PP;
        r->layer0 = first[s];
        r->n_layers = count[s];
        int has_head = s == PP - 1;
        double nl = count[s];
        losa_memory_plan(&p->rs, c, PP, DP, s, r->replica, &r->mem);
        /* FLOPs */
        double tok_calib = (double)p->calib_n * p->calib_S / DP;
        double fwd_layer_tok = 2 * maps + 4.0 * p->calib_S * D;
        /* calibration: the dense and the pruned stream through every layer */
        r->flops_calib = 2 * tok_calib * fwd_layer_tok * nl;
        if (p->sparsegpt) {
            /* per layer: Hessians (syrk, n in^2 per input group: qkv, o,
             * gate/up in D; down in F), 4 Cholesky-type O(in^3/3) steps of
             * which the DP replicas share the work, the OBS sweep 2 out in^2
             * on the replica's rows */
            double hs = tok_calib * (3 * D * D + F * F);
            double chol = (4.0 / 3.0) * (3 * D * D * D + F * F * F) / DP;
            double sweep = 0;
            for (int m = 0; m < MODEL_N_MAPS; m++) {
                int o, i;
                model_map_shape(c, (model_map)m, &o, &i);
                sweep += 2.0 * o * (double)i * i / DP;
            }
            r->flops_sparsegpt = nl * (hs + chol + sweep);
        }
        double tok_step = (double)mb * p->B * p->T;
        double fwd_tok = nl * (2 * maps + 4.0 * p->T * D + adapter_fl) + (has_head ? 2 * V * D : 0);
        double bwd_tok = nl * (2 * maps + 8.0 * p->T * D + 2 * adapter_fl) + (has_head ? 2 * V * D : 0);
        r->flops_train_step = p->train_mode ? tok_step * (fwd_tok + bwd_tok) : 0;
        r->flops_eval_token = nl * (2 * maps + 4.0 * p->eval_T * D) + (has_head ? 2 * V * D : 0);
        /* communication */
        double act_mb = 4.0 * p->B * p->T * D;
        r->comm_pipeline_per_microbatch =
            (s < PP - 1 ? act_mb : 0) + (p->train_mode && s > 0 ? act_mb : 0);
        r->comm_calib_pipeline = s < PP - 1 ? 2 * 4.0 * tok_calib * D : 0;
        r->comm_grad_allreduce = p->train_mode ? ring(nl * adapter_layer, DP) : 0;
        r->comm_hessian_allreduce =
            ring(nl * 8 * (p->sparsegpt ? 3 * D * D + F * F : 0) + nl * 8 * (3 * D + F), DP);
        r->comm_gram_allreduce = ring(8.0 * (L + 1) * p->rmi_n * p->rmi_n, p->ranks);
        (void)kv;
    }
}

/* The model's configuration: model.config (a HF config.json) or the
 * config of model.store (no weights read); *dtype the store's maps (what a
 * run's set-up reads; fp32 with model.config). */
static losa_status plan_config(const model_settings *m, model_config *c, model_dtype *dtype)
{
    *dtype = MODEL_DTYPE_F32;
    if (m->config[0]) return io_hf_config_read(m->config, c);
    io_store *st = NULL;
    losa_status s = io_store_open(&st, m->store.path);
    if (s == LOSA_OK) s = io_store_read_config(st, c);
    if (s == LOSA_OK && io_store_read_dtype(st, dtype) != LOSA_OK) *dtype = MODEL_DTYPE_F32;
    io_store_close(&st);
    return s;
}

static losa_status plan_setup(const deck *dk, int ranks_opt, plan *p)
{
    memset(p, 0, sizeof *p);
    run_settings *rs = &p->rs;
    losa_status s = run_settings_from_deck(dk, NULL, SETTINGS_MODEL_ANY, rs);
    if (s == LOSA_OK) s = plan_config(&rs->model, &p->c, &p->store_dtype);
    if (s == LOSA_OK) s = run_settings_from_deck(dk, &p->c, SETTINGS_MODEL_ANY, rs);
    parallel_settings par = rs->parallel;
    int ranks = par.pp * par.dp;
    if (s == LOSA_OK && ranks_opt > 0) { /* --ranks N: keep parallel.dp, pp = N / dp */
        par.pp = 0;
        snprintf(par.where, sizeof par.where, "--ranks %d", ranks_opt);
        ranks = ranks_opt;
    } else if (s == LOSA_OK && par.pp == 0) {
        s = core_err(LOSA_ERR_ARG, "%s: 0 (ranks / dp): give --ranks N or set the number of "
                     "pipeline stages", par.where);
    }
    if (s == LOSA_OK) s = parallel_settings_layout(&par, ranks, &p->c, &p->pp, &p->dp);
    if (s != LOSA_OK) return s;
    p->ranks = ranks;
    p->B = rs->train.tc.B;
    p->T = rs->train.tc.T;
    p->accum = rs->train.tc.grad_accum;
    p->r_max = rs->lora.lc.r_max;
    p->calib_n = rs->data.calib_n;
    p->calib_S = rs->data.calib_seqlen;
    p->rmi_n = rs->losa.rmi_n;
    p->eval_B = rs->eval.batch;
    p->eval_T = rs->eval.seqlen;
    p->gpipe = rs->parallel.schedule == LORA_SCHEDULE_GPIPE;
    p->train_mode = rs->losa.mode != LOSA_MODE_PRUNE;
    p->sparsegpt = rs->prune.pc.method == PRUNE_METHOD_SPARSEGPT;
    p->r = calloc((size_t)ranks, sizeof *p->r);
    if (!p->r) return core_err(LOSA_ERR_NOMEM, "plan: out of memory for %d ranks", ranks);
    plan_compute(p);
    return LOSA_OK;
}

/* Memory available per rank: --mem-per-rank or the machine's. */
typedef struct {
    double bytes;
    int from_option;
    int worst;        /* rank with the largest peak */
    int n_over;       /* ranks whose peak exceeds bytes */
    int ranks_to_fit; /* fewest ranks (same dp, more stages) that fit; 0: none */
} plan_mem;

/* "64G", "1.5T", "8000000000", "512MiB": K/M/G/T are powers of 1024. */
static losa_status plan_parse_bytes(const char *v, double *out)
{
    char *end;
    double x = strtod(v, &end);
    double mul = 1;
    if (end != v) {
        const char *u = "KMGT";
        const char *at = *end ? strchr(u, end[0] & ~0x20) : NULL;
        if (at && *end) {
            for (const char *q = u; q <= at; q++) mul *= 1024;
            end++;
            if (*end == 'i' && end[1] == 'B') end += 2;
            else if (*end == 'B') end++;
        } else if (*end == 'B') {
            end++;
        }
    }
    if (end == v || *end || !(x > 0) || x * mul > 1e18)
        return core_err(LOSA_ERR_ARG, "--mem-per-rank: expected bytes > 0 with an optional "
                        "suffix K, M, G or T (e.g. 64G), got '%s'", v);
    *out = x * mul;
    return LOSA_OK;
}

static int plan_worst(const plan *p)
{
    int w = 0;
    for (int k = 1; k < p->ranks; k++)
        if (p->r[k].mem.peak > p->r[w].mem.peak) w = k;
    return w;
}

static void plan_mem_check(const plan *p, plan_mem *m)
{
    m->worst = plan_worst(p);
    m->n_over = 0;
    for (int k = 0; k < p->ranks; k++) m->n_over += (double)p->r[k].mem.peak > m->bytes;
    m->ranks_to_fit = m->n_over ? 0 : p->ranks;
    /* more stages (parallel.dp kept): each holds fewer layers */
    for (int pp = p->pp + 1; m->n_over && pp <= p->c.n_layers; pp++) {
        plan q = *p;
        q.pp = pp;
        q.ranks = pp * p->dp;
        q.r = calloc((size_t)q.ranks, sizeof *q.r);
        if (!q.r) break;
        plan_compute(&q);
        int fits = (double)q.r[plan_worst(&q)].mem.peak <= m->bytes;
        free(q.r);
        if (fits) {
            m->ranks_to_fit = pp * p->dp;
            break;
        }
    }
}

static void plan_mem_warn(const plan *p, const plan_mem *m)
{
    if (!m->n_over) return;
    const plan_rank *r = &p->r[m->worst];
    char hint[200];
    if (m->ranks_to_fit)
        snprintf(hint, sizeof hint, "use more ranks: %d (%d stages x parallel.dp %d, --ranks "
                 "%d) fit", m->ranks_to_fit, m->ranks_to_fit / p->dp, p->dp, m->ranks_to_fit);
    else
        snprintf(hint, sizeof hint, "even one layer per stage (%d ranks) does not fit: lower "
                 "train.batch, train.seqlen or data.calib_n", p->c.n_layers * p->dp);
    fprintf(stderr, "plan: warning: rank %d (stage %d, layers %d-%d) needs %.3f GB at peak, "
            "%.3f GB more than the %.3f GB per rank available (%s); %d of %d ranks do not "
            "fit; %s\n", r->rank, r->stage, r->layer0, r->layer0 + r->n_layers - 1,
            (double)r->mem.peak / 1e9, ((double)r->mem.peak - m->bytes) / 1e9, m->bytes / 1e9,
            m->from_option ? "--mem-per-rank" : "this machine's memory; set --mem-per-rank",
            m->n_over, p->ranks, hint);
}

static void plan_print(const plan *p)
{
    const model_config *c = &p->c;
    printf("model: D %d F %d L %d H %d Hkv %d V %d, %lld parameters (%.2f GB fp32)\n", c->dim,
           c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
           (long long)model_param_count(c), model_param_count(c) * 4e-9);
    printf("weights: model.dtype = %s (%s)\n", model_dtype_name(p->rs.model.dtype),
           p->rs.model.dtype == MODEL_DTYPE_BF16
               ? "the layers' maps and the head 2 bytes per weight; embedding and norms fp32; "
                 "adapters and optimizer state fp32: a bf16 stage as model_stage_build_dtype "
                 "allocates it"
               : "4 bytes per weight");
    printf("layout: %d ranks = %d stages x %d replicas; micro-batch %d x %d, %d per step\n",
           p->ranks, p->pp, p->dp, p->B, p->T, p->accum);
    {
        model_stage_cost k;
        losa_stage_cost(&p->rs, c, &k);
        printf("stage split: layers");
        for (int s = 0; s < p->pp; s++) printf("%s%d", s ? "+" : " ", p->r[s].n_layers);
        printf(" (balanced by the cost model at the micro-batch: head + loss = %.2f layers, "
               "embedding = %.3f layers; losa run builds and records this split)\n",
               k.head / k.layer, k.embed / k.layer);
    }
    printf("adapters' dense forms (lora.delta_buffers = %s): %s on rank 0\n",
           lora_buffers_name(p->rs.lora.lc.buffers), lora_buffers_name(p->r[0].mem.buffers));
    printf("%5s %5s %5s %7s | %8s %8s %8s %8s | %8s %8s %8s | %8s %-11s | %8s %8s %8s | %8s "
           "%8s %8s %8s\n", "rank", "stage", "repl", "layers", "weights", "adapter", "dense_ref",
           "grams", "+prune", "+train", "+eval", "peak", "(phase)", "GF_calib", "GF_sgpt",
           "GF_step", "MB_pipe", "MB_grad", "MB_hess", "MB_gram");
    double G = 1e9, M = 1e6;
    size_t peak = 0;
    for (int k = 0; k < p->ranks; k++) {
        const plan_rank *r = &p->r[k];
        const losa_memory *m = &r->mem;
        char ly[32];
        snprintf(ly, sizeof ly, "%d-%d", r->layer0, r->layer0 + r->n_layers - 1);
        printf("%5d %5d %5d %7s | %7.3fG %7.3fG %7.3fG %7.3fG | %7.3fG %7.3fG %7.3fG | %7.3fG "
               "%-11s | %8.1f %8.1f %8.1f | %8.2f %8.2f %8.2f %8.2f\n",
               r->rank, r->stage, r->replica, ly, m->weights / G, m->adapters / G,
               m->dense_ref / G, m->grams / G, m->prune / G, m->train / G, m->eval / G,
               m->peak / G, losa_phase_name(m->peak_phase), r->flops_calib / G,
               r->flops_sparsegpt / G, r->flops_train_step / G,
               r->comm_pipeline_per_microbatch / M, r->comm_grad_allreduce / M,
               r->comm_hessian_allreduce / M, r->comm_gram_allreduce / M);
        if (m->peak > peak) peak = m->peak;
    }
    printf("peak per rank: %.3f GB (memory in GB = 1e9 bytes, resident in the run's largest "
           "phase; +prune/+train/+eval: what a LoSA step's phase adds; GF = 1e9 FLOPs; MB = "
           "1e6 bytes sent)\n", peak / G);
}

static void plan_print_mem(const plan *p, const plan_mem *m)
{
    printf("memory per rank: %.3f GB (%s): %s\n", m->bytes / 1e9,
           m->from_option ? "--mem-per-rank" : "this machine's memory",
           m->n_over ? "DOES NOT FIT (see the warning)" : "fits");
    (void)p;
}

static char *plan_json(const plan *p, const plan_mem *mem)
{
    const model_config *c = &p->c;
    cJSON *o = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddNumberToObject(m, "dim", c->dim);
    cJSON_AddNumberToObject(m, "hidden_dim", c->hidden_dim);
    cJSON_AddNumberToObject(m, "n_layers", c->n_layers);
    cJSON_AddNumberToObject(m, "n_heads", c->n_heads);
    cJSON_AddNumberToObject(m, "n_kv_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(m, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(m, "n_params", (double)model_param_count(c));
    cJSON_AddStringToObject(m, "dtype", model_dtype_name(p->rs.model.dtype));
    cJSON *l = cJSON_AddObjectToObject(o, "layout");
    cJSON_AddNumberToObject(l, "ranks", p->ranks);
    cJSON_AddNumberToObject(l, "pp", p->pp);
    cJSON_AddNumberToObject(l, "dp", p->dp);
    {
        model_stage_cost k;
        losa_stage_cost(&p->rs, c, &k);
        int sl[p->pp];
        for (int s = 0; s < p->pp; s++) sl[s] = p->r[s].n_layers;
        cJSON_AddItemToObject(l, "stage_layers", cJSON_CreateIntArray(sl, p->pp));
        cJSON_AddNumberToObject(l, "head_cost_layers", k.head / k.layer);
        cJSON_AddNumberToObject(l, "embed_cost_layers", k.embed / k.layer);
    }
    cJSON *arr = cJSON_AddArrayToObject(o, "ranks");
    double peak = 0;
    for (int k = 0; k < p->ranks; k++) {
        const plan_rank *r = &p->r[k];
        cJSON *e = cJSON_CreateObject();
        const losa_memory *mm = &r->mem;
        const struct { const char *k; double v; } f[] = {
            {"rank", r->rank}, {"stage", r->stage}, {"replica", r->replica},
            {"layer0", r->layer0}, {"n_layers", r->n_layers},
            {"weights_bytes", mm->weights}, {"inputs_bytes", mm->inputs},
            {"adapter_bytes", mm->adapters}, {"dense_ref_bytes", mm->dense_ref},
            {"grams_bytes", mm->grams}, {"prune_bytes", mm->prune},
            {"activation_bytes", mm->train}, {"eval_activation_bytes", mm->eval},
            {"peak_bytes", mm->peak},
        };
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            cJSON_AddNumberToObject(e, f[i].k, f[i].v);
        cJSON_AddStringToObject(e, "peak_phase", losa_phase_name(mm->peak_phase));
        cJSON_AddStringToObject(e, "delta_buffers", lora_buffers_name(mm->buffers));
        cJSON_AddNumberToObject(e, "adapter_scratch_bytes", mm->attached);
        cJSON_AddNumberToObject(e, "gemm_scratch_bytes", mm->gemm_scratch);
        cJSON *ph = cJSON_AddObjectToObject(e, "phase_bytes");
        for (int q = 0; q < LOSA_N_PHASES; q++)
            if (mm->phase[q]) cJSON_AddNumberToObject(ph, losa_phase_name(q), mm->phase[q]);
        cJSON *fl = cJSON_AddObjectToObject(e, "flops");
        cJSON_AddNumberToObject(fl, "calib", r->flops_calib);
        cJSON_AddNumberToObject(fl, "sparsegpt", r->flops_sparsegpt);
        cJSON_AddNumberToObject(fl, "train_step", r->flops_train_step);
        cJSON_AddNumberToObject(fl, "eval_token", r->flops_eval_token);
        if (p->time) plan_time_rank_json(e, p->time, r->stage);
        cJSON *cm = cJSON_AddObjectToObject(e, "comm_bytes");
        cJSON_AddNumberToObject(cm, "pipeline_per_microbatch", r->comm_pipeline_per_microbatch);
        cJSON_AddNumberToObject(cm, "calib_pipeline", r->comm_calib_pipeline);
        cJSON_AddNumberToObject(cm, "grad_allreduce", r->comm_grad_allreduce);
        cJSON_AddNumberToObject(cm, "hessian_allreduce", r->comm_hessian_allreduce);
        cJSON_AddNumberToObject(cm, "gram_allreduce", r->comm_gram_allreduce);
        cJSON_AddItemToArray(arr, e);
        if (mm->peak > peak) peak = mm->peak;
    }
    cJSON_AddNumberToObject(o, "peak_bytes_per_rank", peak);
    cJSON_AddNumberToObject(o, "mem_per_rank", mem->bytes);
    cJSON_AddStringToObject(o, "mem_per_rank_source",
                            mem->from_option ? "--mem-per-rank" : "physical memory");
    cJSON_AddBoolToObject(o, "fits", mem->n_over == 0);
    cJSON_AddNumberToObject(o, "ranks_over", mem->n_over);
    cJSON_AddNumberToObject(o, "ranks_to_fit", mem->ranks_to_fit);
    if (p->time) {
        plan_time_json(o, p->time, p->why);
        plan_layout cur = plan_layout_eval(&p->rs, c, p->pp, p->dp, p->B, p->accum, &p->rates,
                                           mem->bytes);
        plan_advise_json(o, &p->rs, c, p->ranks, &p->rates, mem->bytes, &cur);
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return txt;
}

/* Not collective.  The tokens of data.eval: --eval-tokens, else the file
 * tokenized with model.store's tokenizer, else its bytes / 4 (said in
 * the assumptions); 0 without data.eval. */
static int64_t plan_eval_tokens(const plan *p, int64_t opt, char *note, size_t n)
{
    const run_settings *rs = &p->rs;
    const char *path = rs->data.eval_text.path;
    note[0] = 0;
    if (opt >= 0) return opt;
    if (!path[0]) return 0;
    char *text = NULL;
    size_t got = 0;
    if (core_read_file(path, &text, &got) != LOSA_OK) return 0;
    int64_t cnt = got / 4;
    snprintf(note, n, " (data.eval: %lld bytes / 4)", (long long)got);
    io_store *st = NULL;
    tok_tokenizer tk;
    memset(&tk, 0, sizeof tk);
    if (rs->model.store.path[0] && io_store_open(&st, rs->model.store.path) == LOSA_OK &&
        io_store_read_tokenizer(st, &tk) == LOSA_OK) {
        int *ids = NULL;
        int64_t k = 0;
        if (tok_encode(&tk, text, got, 1, 0, &ids, &k) == LOSA_OK) {
            cnt = k;
            note[0] = 0;
        }
        free(ids);
    }
    tok_free(&tk);
    io_store_close(&st);
    free(text);
    return cnt;
}

/* Not collective.  Bytes of the files a run tokenizes in its set-up: the
 * calibration set, the perplexity text, the training set (not in mode
 * prune); a file that cannot be read counts 0. */
static int64_t plan_text_bytes(const plan *p)
{
    const run_settings *rs = &p->rs;
    const char *files[3] = {rs->data.calib.path, rs->data.eval_text.path,
                            rs->losa.mode != LOSA_MODE_PRUNE ? rs->data.train.path : ""};
    int64_t n = 0;
    for (int i = 0; i < 3; i++) {
        struct stat sb;
        if (files[i][0] && stat(files[i], &sb) == 0) n += (int64_t)sb.st_size;
    }
    return n;
}

int cmd_plan(dist_ctx *d, int argc, char **argv)
{
    const char *path = NULL, *v;
    int json = 0, ranks = 0;
    plan_mem mem = {0};
    plan_time_opts to;
    plan_time_opts_default(&to);
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        int taken = 0;
        if ((v = cli_opt(argc, argv, &i, "--set"))) continue; /* cli_load_deck applies */
        else if ((s = plan_time_opt(&to, argc, argv, &i, &taken)) != LOSA_OK || taken) continue;
        else if ((v = cli_opt(argc, argv, &i, "--ranks"))) s = cli_int("--ranks", v, 1, 1000000, &ranks);
        else if ((v = cli_opt(argc, argv, &i, "--mem-per-rank"))) {
            s = plan_parse_bytes(v, &mem.bytes);
            mem.from_option = 1;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            s = core_err(LOSA_ERR_ARG, "%s: unknown option (usage: losa plan DECK.ini "
                         "[--set k=v ...] [--ranks N] [--mem-per-rank BYTES] [--bench FILE] [--gflops G] "
                         "[--net-gbps G] [--net-latency-us U] [--eval-tokens N] [--json])", argv[i]);
        else if (!path) path = argv[i];
        else s = core_err(LOSA_ERR_ARG, "%s: only one deck is accepted", argv[i]);
    }
    if (s == LOSA_OK && !path)
        s = core_err(LOSA_ERR_ARG, "DECK.ini: missing (usage: losa plan DECK.ini [--set k=v "
                     "...] [--ranks N] [--json])");
    int rc = cli_fail(d, "plan", s);
    if (rc) return rc;
    deck *dk = NULL;
    s = cli_load_deck(d, path, argc, argv, &dk);
    rc = cli_fail(d, "plan", s);
    if (rc) return rc;
    plan p;
    memset(&p, 0, sizeof p);
    if (dist_rank(d) == 0) s = plan_setup(dk, ranks, &p);
    rc = cli_fail(d, "plan", s);
    if (rc == 0 && dist_rank(d) == 0) {
        if (!mem.from_option)
            mem.bytes = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE);
        plan_mem_check(&p, &mem);
        char note[120];
        int64_t et = plan_eval_tokens(&p, to.eval_tokens, note, sizeof note);
        s = plan_rates(&to, et, plan_text_bytes(&p), &p.rates, p.why, sizeof p.why);
        p.rates.store_dtype = p.store_dtype;
        if (s == LOSA_OK && p.pp <= LOSA_TIME_MAX_STAGES) {
            strncat(p.why, note, sizeof p.why - strlen(p.why) - 1);
            p.time = core_malloc(1, sizeof *p.time);
            losa_time_plan(&p.rs, &p.c, p.pp, p.dp, &p.rates, p.time);
        }
    }
    if (rc == 0) rc = cli_fail(d, "plan", dist_agree(d, s));
    if (rc == 0 && dist_rank(d) == 0) {
        if (json) {
            char *txt = plan_json(&p, &mem);
            cli_json_print(d, txt);
            free(txt);
        } else {
            plan_print(&p);
            plan_print_mem(&p, &mem);
            if (p.time) {
                plan_time_print(p.time, p.why);
                plan_layout cur = plan_layout_eval(&p.rs, &p.c, p.pp, p.dp, p.B, p.accum,
                                                   &p.rates, mem.bytes);
                plan_advise_print(&p.rs, &p.c, p.ranks, &p.rates, mem.bytes, &cur);
            }
        }
        fflush(stdout);
        plan_mem_warn(&p, &mem);
    }
    free(p.r);
    core_free(p.time);
    run_settings_free(&p.rs);
    deck_free(&dk);
    return rc;
}
