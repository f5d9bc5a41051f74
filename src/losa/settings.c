/* settings: every deck key parsed and validated in one function, the one of
 * its section (see include/settings.h). */
#include "settings.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ where */

void settings_where(const deck *dk, const char *key, char *buf, size_t n)
{
    int line = deck_key_line(dk, key);
    if (line > 0) snprintf(buf, n, "%s:%d: %s", deck_name(dk), line, key);
    else if (line == 0) snprintf(buf, n, "--set %s", key);
    else snprintf(buf, n, "%s: %s (default)", deck_name(dk), key);
}

/* core_err(code, "<where>: <message>"); the message may quote core_errmsg(). */
static losa_status where_err(const char *where, losa_status code, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return core_err(code, "%s: %s", where, msg);
}

losa_status settings_file_err(const settings_file *f, losa_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    losa_status s = where_err(f->where, code, fmt, ap);
    va_end(ap);
    return s;
}

/* An error about key, prefixed with where the deck set it. */
__attribute__((format(printf, 4, 5)))
static losa_status key_err(const deck *dk, const char *key, losa_status code, const char *fmt, ...)
{
    char where[SETTINGS_WHERE_MAX];
    settings_where(dk, key, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    losa_status s = where_err(where, code, fmt, ap);
    va_end(ap);
    return s;
}

/* ------------------------------------------------------------ values */

/* losa.compat = reference (the one reader of the key). */
static int compat_reference(const deck *dk)
{
    return !strcmp(deck_str(dk, "losa.compat"), "reference");
}

/* The reference code's value of key (deck_schema .ref) when losa.compat =
 * reference and the deck does not set key; else NULL: the deck's value or
 * losa's default applies. */
static const char *compat_value(const deck *dk, const char *key)
{
    const deck_key *k = deck_schema_key(key);
    if (!k || !k->ref || deck_is_set(dk, key) || !compat_reference(dk)) return NULL;
    return k->ref;
}

char *settings_deck_dump(const deck *dk, const char *sections)
{
    return deck_dump(dk, sections, compat_reference(dk));
}

/* The typed getters of this file: the deck's, through losa.compat. */
static int64_t get_int(const deck *dk, const char *key)
{
    const char *v = compat_value(dk, key);
    return v ? strtoll(v, NULL, 10) : deck_int(dk, key);
}

static double get_float(const deck *dk, const char *key)
{
    const char *v = compat_value(dk, key);
    return v ? strtod(v, NULL) : deck_float(dk, key);
}

static int get_bool(const deck *dk, const char *key)
{
    const char *v = compat_value(dk, key);
    return v ? !strcmp(v, "true") || !strcmp(v, "1") : deck_bool(dk, key);
}

static const char *get_str(const deck *dk, const char *key)
{
    const char *v = compat_value(dk, key);
    return v ? v : deck_str(dk, key);
}

static void get_file(const deck *dk, const char *key, settings_file *f)
{
    f->path = get_str(dk, key);
    settings_where(dk, key, f->where, sizeof f->where);
}

/* ------------------------------------------------------------ sections */

losa_status model_settings_from_deck(const deck *dk, unsigned need, model_settings *m)
{
    memset(m, 0, sizeof *m);
    get_file(dk, "model.store", &m->store);
    m->config = get_str(dk, "model.config");
    char where[SETTINGS_WHERE_MAX];
    settings_where(dk, "model.dtype", where, sizeof where);
    losa_status s = model_dtype_from_string(get_str(dk, "model.dtype"), where, &m->dtype);
    if (s != LOSA_OK) return s;
    if (need & SETTINGS_MODEL_STORE) return deck_check_required(dk, "model");
    if ((need & SETTINGS_MODEL_ANY) && !m->config[0] && !m->store.path[0])
        return core_err(LOSA_ERR_ARG, "%s: model.store or model.config: one is required",
                        deck_name(dk));
    return LOSA_OK;
}

losa_status data_settings_from_deck(const deck *dk, const model_config *cfg, unsigned need,
                                    data_settings *s)
{
    memset(s, 0, sizeof *s);
    get_file(dk, "data.calib", &s->calib);
    s->calib_n = (int)get_int(dk, "data.calib_n");
    s->calib_seqlen = (int)get_int(dk, "data.calib_seqlen");
    calib_draw_default(&s->draw, (uint64_t)get_int(dk, "data.calib_seed"));
    s->draw.sampler = !strcmp(get_str(dk, "data.calib_sampler"), "python") ? CALIB_SAMPLER_PYTHON
                                                                           : CALIB_SAMPLER_LOSA;
    s->draw.bos = (int)get_int(dk, "data.calib_bos");
    s->draw.eos = (int)get_int(dk, "data.calib_eos");
    get_file(dk, "data.train", &s->train);
    s->train_format = lora_data_format_from_string(get_str(dk, "data.train_format"));
    s->response_only = get_bool(dk, "data.response_only");
    s->train_slices = !strcmp(get_str(dk, "data.train_slices"), "reference")
                          ? LOSA_TRAIN_SLICES_REFERENCE : LOSA_TRAIN_SLICES_LOSA;
    s->group_by_length = get_bool(dk, "data.group_by_length");
    get_file(dk, "data.eval_text", &s->eval_text);
    if ((need & SETTINGS_CALIB) && !s->calib.path[0])
        return settings_file_err(&s->calib, LOSA_ERR_ARG, "a calibration corpus is required "
                                 "(JSONL with a 'text' field, or plain text)");
    if ((need & SETTINGS_TRAIN) && !s->train.path[0])
        return settings_file_err(&s->train, LOSA_ERR_ARG, "training data is required (Alpaca "
                                 "JSON / JSONL, or plain text / JSONL with a 'text' field)");
    if (cfg && (need & SETTINGS_CALIB) && s->calib_seqlen > cfg->max_seq_len)
        return key_err(dk, "data.calib_seqlen", LOSA_ERR_ARG, "%d tokens exceed the model's "
                       "max_seq_len %d", s->calib_seqlen, cfg->max_seq_len);
    return LOSA_OK;
}

/* prune.layer_sparsity against the model's L layers: exactly L values in
 * [0, 1), malloc'd into *x (NULL when the key is empty). */
static losa_status layer_list(const deck *dk, const char *key, int L, double **x)
{
    const char *ls = get_str(dk, key);
    *x = NULL;
    if (!*ls) return LOSA_OK;
    int cap = 2;
    for (const char *p = ls; *p; p++) cap += *p == ',';
    double *tmp = core_calloc((size_t)(cap > L ? cap : L), sizeof(double));
    int k = deck_float_list(ls, tmp, cap);
    losa_status s = LOSA_OK;
    if (k < 0)
        s = key_err(dk, key, LOSA_ERR_ARG, "expected a comma list of %d numbers, got '%s'", L, ls);
    else if (k != L)
        s = key_err(dk, key, LOSA_ERR_ARG, "%d values for a model with %d layers (expected "
                    "exactly %d)", k, L, L);
    for (int l = 0; s == LOSA_OK && l < L; l++)
        if (!(tmp[l] >= 0 && tmp[l] < 1))
            s = key_err(dk, key, LOSA_ERR_ARG, "value %d (layer %d) = %g is outside [0, 1)", l + 1,
                        l, tmp[l]);
    if (s == LOSA_OK) *x = tmp;
    else core_free(tmp);
    return s;
}

losa_status prune_settings_from_deck(const deck *dk, const model_config *cfg, prune_settings *p)
{
    prune_settings_free(p);
    prune_config *pc = &p->pc;
    prune_config_default(pc);
    losa_status s = prune_method_from_string(get_str(dk, "prune.method"), &pc->method);
    if (s != LOSA_OK) return key_err(dk, "prune.method", s, "%s", core_errmsg());
    p->pattern = get_str(dk, "prune.pattern");
    if (prune_pattern_parse(p->pattern, &pc->nm_n, &pc->nm_m))
        return key_err(dk, "prune.pattern", LOSA_ERR_ARG, "expected 'unstructured' or 'N:M' with "
                       "0 < N < M (e.g. 2:4, 4:8), got '%s'", p->pattern);
    /* N:M: every layer at N/M (prune.sparsity does not apply) */
    pc->sparsity = pc->nm_m ? (double)pc->nm_n / pc->nm_m : get_float(dk, "prune.sparsity");
    pc->blocksize = (int)get_int(dk, "prune.blocksize");
    pc->percdamp = get_float(dk, "prune.percdamp");
    if (pc->nm_m > 0 && pc->method == PRUNE_METHOD_SPARSEGPT && pc->blocksize % pc->nm_m)
        return key_err(dk, "prune.blocksize", LOSA_ERR_ARG, "%d is not a multiple of M = %d of "
                       "the %d:%d pattern", pc->blocksize, pc->nm_m, pc->nm_n, pc->nm_m);
    if (pc->nm_m > 0 && *get_str(dk, "prune.layer_sparsity"))
        return key_err(dk, "prune.layer_sparsity", LOSA_ERR_ARG, "per-layer sparsities do not "
                       "apply to the N:M pattern %s", p->pattern);
    if (!cfg) return LOSA_OK;
    if ((s = layer_list(dk, "prune.layer_sparsity", cfg->n_layers, &p->layer_sparsity)) != LOSA_OK)
        return s;
    for (int m = 0; pc->nm_m > 0 && m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(cfg, (model_map)m, &o, &i);
        if (i % pc->nm_m)
            return key_err(dk, "prune.pattern", LOSA_ERR_ARG, "input width %d of %s is not a "
                           "multiple of M = %d", i, model_map_name((model_map)m), pc->nm_m);
    }
    return LOSA_OK;
}

void prune_settings_free(prune_settings *p)
{
    core_free(p->layer_sparsity);
    memset(p, 0, sizeof *p);
}

static const char *const mode_names[LOSA_N_MODES] = {"prune", "lora", "losa", "compare"};

const char *losa_mode_str(losa_mode m) { return m < LOSA_N_MODES ? mode_names[m] : "?"; }

losa_status losa_settings_from_deck(const deck *dk, losa_settings *s)
{
    memset(s, 0, sizeof *s);
    const char *mode = get_str(dk, "losa.mode");
    s->mode = LOSA_MODE_LOSA;
    for (int m = 0; m < LOSA_N_MODES; m++)
        if (!strcmp(mode, mode_names[m])) s->mode = (losa_mode)m;
    s->steps = (int)get_int(dk, "losa.steps");
    losa_status st = losa_alloc_from_string(get_str(dk, "losa.allocator"), &s->allocator);
    if (st != LOSA_OK) return key_err(dk, "losa.allocator", st, "%s", core_errmsg());
    s->rank_fixed = !strcmp(get_str(dk, "losa.rank_policy"), "fixed");
    losa_compat *c = &s->compat;
    c->reference = compat_reference(dk);
    c->sparsity_floor = get_bool(dk, "losa.sparsity_floor");
    c->rebalance = !strcmp(get_str(dk, "losa.rank_rebalance"), "one_pass")
                       ? LOSA_REBALANCE_ONE_PASS : LOSA_REBALANCE_EXACT;
    c->rank_cap = !strcmp(get_str(dk, "losa.rank_cap"), "slice") ? LOSA_RANK_CAP_SLICE
                                                                : LOSA_RANK_CAP_REDISTRIBUTE;
    c->rank_max = (int)get_int(dk, "losa.rank_max");
    s->beta = get_float(dk, "losa.beta");
    s->rmi_n = (int)get_int(dk, "losa.rmi_n");
    s->dense_on_disk = !strcmp(get_str(dk, "losa.dense_ref"), "disk");
    s->samples_step = get_int(dk, "losa.samples_per_step");
    s->samples_last = get_int(dk, "losa.last_step_samples");
    return LOSA_OK;
}

losa_status train_settings_from_deck(const deck *dk, const model_config *cfg, train_settings *s)
{
    lora_train_config *tc = &s->tc;
    lora_train_config_default(tc);
    tc->T = (int)get_int(dk, "train.seqlen");
    tc->B = (int)get_int(dk, "train.batch");
    tc->grad_accum = (int)get_int(dk, "train.grad_accum");
    tc->steps = get_int(dk, "train.steps");
    tc->lr = (float)get_float(dk, "train.lr");
    tc->weight_decay = (float)get_float(dk, "train.weight_decay");
    tc->warmup_ratio = (float)get_float(dk, "train.warmup_ratio");
    tc->max_grad_norm = (float)get_float(dk, "train.max_grad_norm");
    tc->beta1 = (float)get_float(dk, "train.beta1");
    tc->beta2 = (float)get_float(dk, "train.beta2");
    tc->eps = (float)get_float(dk, "train.eps");
    tc->seed = (uint64_t)get_int(dk, "train.seed");
    tc->ckpt = get_bool(dk, "train.recompute");
    if (cfg && tc->T > cfg->max_seq_len)
        return key_err(dk, "train.seqlen", LOSA_ERR_ARG, "%d tokens exceed the model's "
                       "max_seq_len %d", tc->T, cfg->max_seq_len);
    return LOSA_OK;
}

losa_status lora_settings_from_deck(const deck *dk, const train_settings *t, lora_settings *s)
{
    lora_config *lc = &s->lc;
    lora_config_default(lc);
    lc->r_max = (int)get_int(dk, "lora.r_max");
    lc->rank = (int)get_int(dk, "lora.rank");
    lc->alpha = (float)get_float(dk, "lora.alpha");
    lc->r0 = (float)get_float(dk, "lora.r0");
    lc->dropout = (float)get_float(dk, "lora.dropout");
    const char *b = get_str(dk, "lora.delta_buffers");
    lc->buffers = !strcmp(b, "persistent")  ? LORA_BUFFERS_PERSISTENT
                  : !strcmp(b, "transient") ? LORA_BUFFERS_TRANSIENT
                                            : LORA_BUFFERS_AUTO;
    lc->mb_tokens = (int64_t)t->tc.B * t->tc.T;
    lc->seed = t->tc.seed;
    if (lc->rank > lc->r_max)
        return key_err(dk, "lora.rank", LOSA_ERR_ARG, "%d exceeds lora.r_max %d", lc->rank,
                       lc->r_max);
    return LOSA_OK;
}

losa_status eval_settings_from_deck(const deck *dk, const model_config *cfg,
                                    const data_settings *data, eval_settings *s)
{
    memset(s, 0, sizeof *s);
    s->seqlen = (int)get_int(dk, "eval.seqlen");
    s->batch = (int)get_int(dk, "eval.batch");
    s->max_windows = (int)get_int(dk, "eval.max_windows");
    s->each_step = get_bool(dk, "eval.each_step");
    s->dense = get_bool(dk, "eval.dense");
    s->zeroshot = get_str(dk, "eval.zeroshot");
    s->limit = (int)get_int(dk, "eval.limit");
    int text = data->eval_text.path[0] != 0;
    if (s->dense && !text)
        return key_err(dk, "eval.dense", LOSA_ERR_ARG, "the dense perplexity needs data.eval_text");
    if (cfg && text && s->seqlen > cfg->max_seq_len)
        return key_err(dk, "eval.seqlen", LOSA_ERR_ARG, "%d tokens exceed the model's "
                       "max_seq_len %d", s->seqlen, cfg->max_seq_len);
    return LOSA_OK;
}

losa_status parallel_settings_from_deck(const deck *dk, parallel_settings *s)
{
    s->pp = (int)get_int(dk, "parallel.pp");
    s->dp = (int)get_int(dk, "parallel.dp");
    s->schedule = !strcmp(get_str(dk, "parallel.schedule"), "gpipe") ? LORA_SCHEDULE_GPIPE
                                                                     : LORA_SCHEDULE_1F1B;
    s->head_cost_layers = get_float(dk, "parallel.head_cost_layers");
    settings_where(dk, "parallel.pp", s->where, sizeof s->where);
    return LOSA_OK;
}

losa_status parallel_settings_layout(const parallel_settings *s, int ranks,
                                     const model_config *cfg, int *pp, int *dp)
{
    if (s->pp == 0 && ranks % s->dp)
        return core_err(LOSA_ERR_ARG, "%s: %d ranks are not a multiple of parallel.dp %d",
                        s->where, ranks, s->dp);
    int p = s->pp ? s->pp : ranks / s->dp;
    if (p * s->dp != ranks)
        return core_err(LOSA_ERR_ARG, "%s: parallel layout pp %d x dp %d != %d ranks", s->where,
                        p, s->dp, ranks);
    if (cfg && p > cfg->n_layers)
        return core_err(LOSA_ERR_ARG, "%s: %d pipeline stages: more stages than the model's %d "
                        "layers", s->where, p, cfg->n_layers);
    *pp = p;
    *dp = s->dp;
    return LOSA_OK;
}

losa_status output_settings_from_deck(const deck *dk, unsigned need, output_settings *s)
{
    get_file(dk, "output.dir", &s->dir);
    get_file(dk, "output.store", &s->store);
    if ((need & SETTINGS_OUTPUT_DIR) && !s->dir.path[0])
        return settings_file_err(&s->dir, LOSA_ERR_ARG, "a run directory is required");
    if ((need & SETTINGS_OUTPUT_STORE) && !s->store.path[0])
        return settings_file_err(&s->store, LOSA_ERR_ARG, "the output store's path is required");
    return LOSA_OK;
}

/* ------------------------------------------------------------ losa run */

losa_status run_settings_from_deck(const deck *dk, const model_config *cfg, unsigned need,
                                   run_settings *rs)
{
    losa_status s = model_settings_from_deck(dk, need, &rs->model);
    if (s == LOSA_OK) s = losa_settings_from_deck(dk, &rs->losa);
    unsigned dneed = need & ~(unsigned)SETTINGS_TRAIN_BY_MODE;
    if ((need & SETTINGS_TRAIN_BY_MODE) && rs->losa.mode != LOSA_MODE_PRUNE) dneed |= SETTINGS_TRAIN;
    if (s == LOSA_OK) s = data_settings_from_deck(dk, cfg, dneed, &rs->data);
    if (s == LOSA_OK) s = prune_settings_from_deck(dk, cfg, &rs->prune);
    if (s == LOSA_OK) s = train_settings_from_deck(dk, cfg, &rs->train);
    if (s == LOSA_OK) s = lora_settings_from_deck(dk, &rs->train, &rs->lora);
    if (s == LOSA_OK) s = eval_settings_from_deck(dk, cfg, &rs->data, &rs->eval);
    if (s == LOSA_OK) s = parallel_settings_from_deck(dk, &rs->parallel);
    if (s == LOSA_OK) s = output_settings_from_deck(dk, need, &rs->output);
    if (s != LOSA_OK) return s;
    /* N:M fixes every layer's sparsity: the layer allocator has no freedom */
    if (rs->prune.pc.nm_m) rs->losa.allocator = LOSA_ALLOC_UNIFORM;
    if (rs->losa.beta == 0)
        rs->losa.beta = rs->prune.pc.method == PRUNE_METHOD_SPARSEGPT ? LOSA_BETA_SPARSEGPT
                                                                      : LOSA_BETA_WANDA;
    if (rs->losa.rmi_n > rs->data.calib_n) rs->losa.rmi_n = rs->data.calib_n;
    rs->train.tc.schedule = rs->parallel.schedule;
    return LOSA_OK;
}

void run_settings_free(run_settings *rs) { prune_settings_free(&rs->prune); }
