/* losa run: the LoSA pipeline (ALGORITHM.md sections 2-5) and its baselines
 * on the same calibration and training data, with a checkpoint after every
 * LoSA step and a run directory from which every number of a paper table
 * can be read.  Collective (world) throughout; rank 0 writes the run files,
 * every stage writes its own checkpoint shards.
 *
 * Run directory (deck key output.dir):
 *   run.h5                  deck, git revision, layout, seeds, metrics
 *   model.h5                the final sparse model (a model store)
 *   .lock                   held by rank 0 while a command uses the directory
 *   ckpt/state.h5           deck, layout, invocation count of the last start
 *                           (a resume is checked against it)
 *   ckpt/base.h5            dense / pruned / +LoRA results (compare mode)
 *   ckpt/step_<t>/          stage_<s>.h5 (weights), lora_<s>.h5 (adapters),
 *                           metrics.h5 (rank 0), COMPLETE (written last);
 *                           step_<t>.damaged.<n>: one found unreadable, set aside
 */
#include "losa.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "calib.h"
#include "deck.h"
#include "dist.h"
#include "eval.h"
#include "io.h"
#include "lora.h"

/* ------------------------------------------------------------ settings */

void losa_train_configs(const deck *dk, lora_train_config *tc, lora_config *lc)
{
    lora_train_config_default(tc);
    tc->T = (int)deck_int(dk, "train.seqlen");
    tc->B = (int)deck_int(dk, "train.batch");
    tc->grad_accum = (int)deck_int(dk, "train.grad_accum");
    tc->lr = (float)deck_float(dk, "train.lr");
    tc->weight_decay = (float)deck_float(dk, "train.weight_decay");
    tc->warmup_ratio = (float)deck_float(dk, "train.warmup_ratio");
    tc->max_grad_norm = (float)deck_float(dk, "train.max_grad_norm");
    tc->beta1 = (float)deck_float(dk, "train.beta1");
    tc->beta2 = (float)deck_float(dk, "train.beta2");
    tc->eps = (float)deck_float(dk, "train.eps");
    tc->seed = (uint64_t)deck_int(dk, "train.seed");
    tc->ckpt = deck_bool(dk, "train.recompute");
    lora_config_default(lc);
    lc->r_max = (int)deck_int(dk, "lora.r_max");
    lc->rank = (int)deck_int(dk, "lora.rank");
    lc->alpha = (float)deck_float(dk, "lora.alpha");
    lc->r0 = (float)deck_float(dk, "lora.r0");
    lc->dropout = (float)deck_float(dk, "lora.dropout");
    lc->seed = tc->seed;
}

losa_status losa_run_settings(losa_run *r, const deck *dk, const char *deck_name)
{
    losa_status s = LOSA_OK;
    memset(&r->pc, 0, sizeof r->pc);
    r->dk = dk;
    r->deck_name = deck_name;
    r->store = deck_str(dk, "model.store");
    const char *mode = deck_str(dk, "losa.mode");
    r->mode = !strcmp(mode, "prune") ? LOSA_MODE_PRUNE : !strcmp(mode, "lora") ? LOSA_MODE_LORA
              : !strcmp(mode, "compare") ? LOSA_MODE_COMPARE : LOSA_MODE_LOSA;
    if ((s = prune_method_from_string(deck_str(dk, "prune.method"), &r->pc.method)) != LOSA_OK)
        return s;
    if (prune_pattern_parse(deck_str(dk, "prune.pattern"), &r->pc.nm_n, &r->pc.nm_m) != 0)
        return core_err(LOSA_ERR_ARG, "%s: prune.pattern: expected 'unstructured' or N:M with "
                        "0 < N < M, got '%s'", deck_name, deck_str(dk, "prune.pattern"));
    r->pc.sparsity = r->pc.nm_m ? (double)r->pc.nm_n / r->pc.nm_m : deck_float(dk, "prune.sparsity");
    r->pc.blocksize = (int)deck_int(dk, "prune.blocksize");
    r->pc.percdamp = deck_float(dk, "prune.percdamp");
    r->N = (int)deck_int(dk, "data.calib_n");
    r->S = (int)deck_int(dk, "data.calib_seqlen");
    r->rmi_n = (int)deck_int(dk, "losa.rmi_n");
    if (r->rmi_n > r->N) r->rmi_n = r->N;
    r->T = (int)deck_int(dk, "losa.steps");
    if ((s = losa_alloc_from_string(deck_str(dk, "losa.allocator"), &r->alloc)) != LOSA_OK)
        return s;
    if (r->pc.nm_m && r->alloc != LOSA_ALLOC_UNIFORM) {
        /* N:M fixes every layer's sparsity: the layer allocator has no freedom */
        r->alloc = LOSA_ALLOC_UNIFORM;
    }
    r->rank_fixed = !strcmp(deck_str(dk, "losa.rank_policy"), "fixed");
    r->beta = deck_float(dk, "losa.beta");
    if (r->beta == 0) r->beta = r->pc.method == PRUNE_METHOD_SPARSEGPT ? 100.0 : 1.0;
    r->samples_step = deck_int(dk, "losa.samples_per_step");
    r->samples_last = deck_int(dk, "losa.last_step_samples");
    losa_train_configs(dk, &r->tc, &r->lc);
    losa_compat_from_deck(dk, &r->compat, &r->tc, &r->lc);
    r->tc.schedule = !strcmp(deck_str(dk, "parallel.schedule"), "gpipe") ? LORA_SCHEDULE_GPIPE
                                                                       : LORA_SCHEDULE_1F1B;
    r->response_only = deck_bool(dk, "data.response_only");
    if (r->lc.rank > r->lc.r_max)
        return core_err(LOSA_ERR_ARG, "%s: lora.rank %d exceeds lora.r_max %d", deck_name,
                        r->lc.rank, r->lc.r_max);
    r->eval_S = (int)deck_int(dk, "eval.seqlen");
    r->eval_B = (int)deck_int(dk, "eval.batch");
    r->eval_maxw = (int)deck_int(dk, "eval.max_windows");
    r->eval_each_step = deck_bool(dk, "eval.each_step");
    r->dense_on_disk = !strcmp(deck_str(dk, "losa.dense_ref"), "disk");
    snprintf(r->dir, sizeof r->dir, "%s", deck_str(dk, "output.dir"));
    if (!r->dir[0]) return core_err(LOSA_ERR_ARG, "%s: output.dir: a run directory is required", deck_name);
    if (!deck_str(dk, "data.calib")[0])
        return core_err(LOSA_ERR_ARG, "%s: data.calib: a calibration corpus is required", deck_name);
    if (r->mode != LOSA_MODE_PRUNE && !deck_str(dk, "data.train")[0])
        return core_err(LOSA_ERR_ARG, "%s: data.train: training data is required for mode %s",
                        deck_name, mode);
    return LOSA_OK;
}

/* ------------------------------------------------------------ helpers */

/* Collective: fraction of zeros over the 7 maps of every layer. */
static double model_sparsity(dist_ctx *d, const model_stage *s)
{
    int64_t n;
    double v[2] = {0, 0};
    if (dist_replica(d) == 0) {
        v[0] = (double)calib_stage_zeros(s, &n);
        v[1] = (double)n;
    }
    dist_sum_doubles(d, v, 2);
    return v[0] / v[1];
}

/* Collective: layer sparsities of every layer (L) on every rank. */
static void layer_sparsities(dist_ctx *d, const model_stage *s, double *x)
{
    int L = s->cfg.n_layers;
    memset(x, 0, sizeof(double) * L);
    if (dist_replica(d) == 0)
        for (int l = 0; l < s->n_layers; l++) x[s->layer0 + l] = calib_layer_sparsity(s, l);
    dist_sum_doubles(d, x, L);
}

static double run_ppl(losa_run *r, const model_stage *s)
{
    if (!r->eval_ids) return NAN;
    eval_ppl_result e;
    losa_status st = eval_ppl(r->d, s, r->eval_ids, r->n_eval, r->eval_S, r->eval_B,
                              r->eval_maxw, &e);
    return st == LOSA_OK ? e.ppl : NAN;
}

static losa_status reload_dense(losa_run *r, model_stage *s)
{
    io_store *io = NULL;
    losa_status st = io_store_open(&io, r->store);
    if (st == LOSA_OK) st = io_store_read_stage(io, s);
    io_store_close(&io);
    return dist_agree(r->d, st);
}

static int mkdir_p(const char *path)
{
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Collective: one training phase of n_examples examples starting at stream
 * position first (the stream is the dataset repeated in seeded epoch
 * orders), with a fresh AdamW state and schedule, dropout seeded by seed.
 * loss (optimizer steps) is filled on every rank; returns steps taken. */
static losa_status train_phase(losa_run *r, model_stage *s, lora_adapters *ad, int64_t first,
                               int64_t range_n, int64_t n_examples, uint64_t seed, const char *label,
                               double **loss, int64_t *n_steps, double *seconds)
{
    lora_train_config tc = r->tc;
    int64_t per = (int64_t)tc.B * tc.grad_accum;
    tc.steps = (n_examples + per - 1) / per;
    tc.seed = seed;
    *n_steps = tc.steps;
    *loss = calloc(tc.steps > 0 ? tc.steps : 1, sizeof(double));
    memset(ad->m, 0, sizeof(float) * ad->n_params);
    memset(ad->v, 0, sizeof(float) * ad->n_params);
    ad->step = 0;
    lora_trainer tr;
    losa_status st = lora_trainer_build(&tr, r->d, s, ad, &tc);
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    int64_t n = r->ds.n, nt = per * tc.T;
    int *tok = malloc(sizeof(int) * nt), *tgt = malloc(sizeof(int) * nt);
    int64_t *perm = malloc(sizeof(int64_t) * n), *idx = malloc(sizeof(int64_t) * per);
    int64_t epoch = -1;
    double t0 = core_time();
    core_progress pg;
    core_progress_start(&pg, label, "tok", tc.steps);
    /* fault injection for the tests: LOSA_FAULT_NAN="<label>:<step>" poisons
     * one adapter weight of the first stage before that optimizer step */
    const char *fault = getenv("LOSA_FAULT_NAN");
    for (int64_t step = 0; step < tc.steps && st == LOSA_OK; step++) {
        char want[96];
        snprintf(want, sizeof want, "%s:%lld", label, (long long)step);
        if (fault && !strcmp(fault, want) && s->has_embed) {
            ad->A[0][0] = NAN;
            lora_delta_update(ad, s);
        }
        for (int64_t j = 0; j < per; j++) {
            /* range_n > 0: examples first .. first + range_n - 1 only */
            int64_t m = range_n > 0 ? range_n : n, p = (range_n > 0 ? 0 : first) + step * per + j;
            int64_t e = p / m;
            if (e != epoch)
                lora_data_epoch_order(&r->ds, range_n > 0 ? first : 0, m,
                                      r->compat.group_by_length ? per : 0, r->tc.seed, epoch = e, perm);
            idx[j] = (range_n > 0 ? first : 0) + perm[p % m];
        }
        for (int mb = 0; mb < tc.grad_accum; mb++)
            lora_data_batch(&r->ds, idx + (int64_t)mb * tc.B, tc.B, tc.T, s->cfg.eos_id,
                            r->response_only, tok + mb * (int64_t)tc.B * tc.T,
                            tgt + mb * (int64_t)tc.B * tc.T);
        lora_step_stats ss;
        st = lora_train_step(&tr, tok, tgt, &ss);
        if (st != LOSA_OK) {
            char msg[900];
            snprintf(msg, sizeof msg, "%s", core_errmsg());
            core_err(st, "%s: %s (the last complete checkpoint is kept: resume with a lower "
                     "learning rate, e.g. --set train.lr=...)", label, msg);
            break;
        }
        (*loss)[step] = ss.loss;
        char extra[96];
        snprintf(extra, sizeof extra, "loss %.4f lr %.2e", ss.loss, ss.lr);
        core_progress_update(&pg, step + 1, (step + 1) * nt, extra);
    }
    core_progress_end(&pg, tc.steps * nt);
    *seconds = core_time() - t0;
    free(tok);
    free(tgt);
    free(perm);
    free(idx);
    lora_trainer_free(&tr);
    return dist_agree(r->d, st);
}

static double mean_of(const double *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return n ? s / n : NAN;
}

/* ------------------------------------------------------------ run directory */

/* Keys that may differ from the run's recorded deck: they change no result
 * (output paths, settings of other commands, where the dense reference
 * outputs are kept: test_run checks disk == memory), or, while LoSA steps
 * remain, the learning rate (resume after a numerical stop).  parallel.pp /
 * dp are checked as the resolved layout instead. */
static const char *const resume_free_keys[] = {
    "output.dir", "output.store", "model.config", "eval.dense", "eval.zeroshot",
    "eval.limit", "train.steps", "losa.dense_ref", "parallel.pp", "parallel.dp", NULL};
static const char *const resume_open_keys[] = {"train.lr", NULL};

static int in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (!strcmp(*l, k)) return 1;
    return 0;
}

static int is_path_key(const char *k)
{
    return !strcmp(k, "model.store") || !strcmp(k, "data.calib") || !strcmp(k, "data.train") ||
           !strcmp(k, "data.eval_text");
}

/* Appends "key A (run) -> B (now)" to msg for every key that differs. */
static int deck_diff(const deck *now, const deck *was, int finished, char *msg, size_t n)
{
    int nd = 0;
    size_t len = strlen(msg);
    for (int i = 0; i < deck_schema_len; i++) {
        const deck_key *k = &deck_schema[i];
        if (in_list(resume_free_keys, k->key)) continue;
        if (!finished && in_list(resume_open_keys, k->key)) continue;
        const char *a = deck_str(was, k->key), *b = deck_str(now, k->key);
        int same;
        if (!a || !b) same = a == b;
        else if (k->type == DECK_INT) same = deck_int(was, k->key) == deck_int(now, k->key);
        else if (k->type == DECK_FLOAT) same = deck_float(was, k->key) == deck_float(now, k->key);
        else if (k->type == DECK_BOOL) same = deck_bool(was, k->key) == deck_bool(now, k->key);
        else same = !strcmp(a, b) || (is_path_key(k->key) && core_same_file(a, b));
        if (same) continue;
        if (len < n) len += (size_t)snprintf(msg + len, n - len, "%s%s %s (run) -> %s (now)",
                                             nd ? ", " : "", k->key, a ? a : "-", b ? b : "-");
        nd++;
    }
    return nd;
}

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

/* Files that jobs/losa_job.sh writes into output.dir before starting the
 * command, and the lock file: they do not make a directory foreign. */
static int is_job_file(const char *name)
{
    static const char *const ok[] = {".", "..", ".lock", "deck.ini", "overrides.txt", "job.txt",
                                      "result.json", "losa.log", NULL};
    return in_list(ok, name);
}

/* Rank 0: 1 if the run directory holds results that depend on the deck. */
static int has_results(const char *dir)
{
    char p[1300];
    snprintf(p, sizeof p, "%s/run.h5", dir);
    if (exists(p)) return 1;
    snprintf(p, sizeof p, "%s/ckpt/base.h5", dir);
    if (exists(p)) return 1;
    snprintf(p, sizeof p, "%s/ckpt", dir);
    DIR *dd = opendir(p);
    int found = 0;
    struct dirent *e;
    while (dd && !found && (e = readdir(dd))) {
        int t;
        char tail;
        if (sscanf(e->d_name, "step_%d%c", &t, &tail) == 1) {
            snprintf(p, sizeof p, "%s/ckpt/%s/COMPLETE", dir, e->d_name);
            found = exists(p);
        }
    }
    if (dd) closedir(dd);
    return found;
}

/* Rank 0: the recorded deck text and layout of the run in dir:
 * ckpt/state.h5 (written when a run starts), else run.h5 (runs finished by
 * an older losa).  Returns 0 if neither records them. */
static int recorded_settings(const char *dir, char **deck_txt, int *pp, int *dp, int *inv)
{
    char p[1300];
    io_store *io = NULL;
    *deck_txt = NULL;
    *pp = *dp = *inv = 0;
    snprintf(p, sizeof p, "%s/ckpt/state.h5", dir);
    if (exists(p) && io_store_open(&io, p) == LOSA_OK) {
        int ok = io_store_read_string(io, "/run/deck", deck_txt) == LOSA_OK &&
                 io_store_read_attr_int(io, "/run/pp", pp) == LOSA_OK &&
                 io_store_read_attr_int(io, "/run/dp", dp) == LOSA_OK &&
                 io_store_read_attr_int(io, "/run/invocations", inv) == LOSA_OK;
        io_store_close(&io);
        if (ok) return 1;
        free(*deck_txt);
        *deck_txt = NULL;
    }
    snprintf(p, sizeof p, "%s/run.h5", dir);
    if (exists(p) && io_store_open(&io, p) == LOSA_OK) {
        char *lay = NULL;
        int ok = io_store_read_string(io, "/run/deck", deck_txt) == LOSA_OK &&
                 io_store_read_string(io, "/run/layout", &lay) == LOSA_OK &&
                 sscanf(lay, "pp %d x dp %d", pp, dp) == 2;
        if (ok && io_store_read_attr_int(io, "/run/invocations", inv) != LOSA_OK) *inv = 1;
        free(lay);
        io_store_close(&io);
        if (ok) return 1;
        free(*deck_txt);
        *deck_txt = NULL;
    }
    return 0;
}

static losa_status prepare_rank0(losa_run *r)
{
    const char *dir = r->dir;
    char p[1300], what[1200];
    struct stat sb;
    snprintf(what, sizeof what, "output.dir %s", dir);
    if (stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return core_err(LOSA_ERR_ARG, "%s: %s: exists and is not a directory", r->deck_name, what);
    if (mkdir_p(dir) != 0)
        return core_err(LOSA_ERR_IO, "%s: cannot create the run directory: %s", what, strerror(errno));
    snprintf(p, sizeof p, "%s/.lock", dir);
    losa_status st = core_lock_acquire(&r->lock, p, what);
    if (st != LOSA_OK) return st;
    snprintf(p, sizeof p, "%s/run.h5", dir);
    int finished = exists(p);
    snprintf(p, sizeof p, "%s/ckpt", dir);
    if (!finished && !is_dir(p)) {
        /* not a run directory: it must hold nothing of somebody else's */
        DIR *dd = opendir(dir);
        struct dirent *e;
        char first[256] = "";
        int n = 0;
        while (dd && (e = readdir(dd)))
            if (!is_job_file(e->d_name) && n++ == 0) snprintf(first, sizeof first, "%s", e->d_name);
        if (dd) closedir(dd);
        if (n > 0)
            return core_err(LOSA_ERR_ARG, "%s: %s holds '%s'%s but is not a losa run directory "
                            "(no run.h5, no ckpt/): choose a new or empty directory", r->deck_name,
                            what, first, n > 1 ? " and other files" : "");
    }
    snprintf(p, sizeof p, "%s/model.h5", dir);
    if (core_same_file(r->store, p))
        return core_err(LOSA_ERR_ARG, "%s: model.store %s is the run's own output %s: the input "
                        "would be overwritten; choose another output.dir", r->deck_name, r->store, p);
    char *txt = NULL;
    int pp, dp, inv;
    int recorded = recorded_settings(dir, &txt, &pp, &dp, &inv);
    r->invocations = recorded ? inv + 1 : 1;
    if (!has_results(dir)) { /* nothing that depends on the settings yet */
        free(txt);
        return LOSA_OK;
    }
    if (!recorded) {
        core_log("warning: %s records no settings (made by an older losa): the deck and the "
                 "layout of the resume are not checked\n", what);
        return LOSA_OK;
    }
    if (pp != dist_n_stages(r->d) || dp != dist_n_replicas(r->d)) {
        free(txt);
        return core_err(LOSA_ERR_ARG, "%s: layout changed: %d ranks now (pp %d x dp %d), %d in the "
                        "run (pp %d x dp %d): resume with the run's layout or choose another "
                        "output.dir", what, dist_size(r->d), dist_n_stages(r->d),
                        dist_n_replicas(r->d), pp * dp, pp, dp);
    }
    deck *was = NULL;
    char rec[1400];
    snprintf(rec, sizeof rec, "%s (recorded deck)", dir);
    st = deck_parse(&was, rec, txt);
    free(txt);
    if (st != LOSA_OK) {
        char m[1024];
        snprintf(m, sizeof m, "%s", core_errmsg());
        return core_err(LOSA_ERR_FORMAT, "%s: the run's recorded deck cannot be read (%s): "
                        "choose another output.dir", what, m);
    }
    char diff[900] = "";
    int nd = deck_diff(r->dk, was, finished, diff, sizeof diff);
    deck_free(&was);
    if (nd > 0)
        return core_err(LOSA_ERR_ARG, "%s: the run was made with other settings: %s; %s",
                        what, diff, finished ? "the run is finished (rerunning it would only "
                        "relabel it): choose another output.dir"
                        : "resume with the run's values (only train.lr may change) or choose "
                        "another output.dir");
    return LOSA_OK;
}

losa_status losa_run_prepare(losa_run *r)
{
    losa_status st = LOSA_OK;
    r->lock.fd = -1;
    r->lock.path[0] = 0;
    if (dist_rank(r->d) == 0) st = prepare_rank0(r);
    return dist_agree(r->d, st);
}

/* Rank 0, when the work starts: the deck, layout and invocation count of
 * this invocation into ckpt/state.h5 (what the next resume is checked
 * against). */
static losa_status write_state(losa_run *r)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/ckpt/state.h5", r->dir);
    io_store *io = NULL;
    char *deck_txt = deck_dump(r->dk, NULL), layout[128];
    snprintf(layout, sizeof layout, "pp %d x dp %d (%d ranks)", dist_n_stages(r->d),
             dist_n_replicas(r->d), dist_size(r->d));
    losa_status s = io_store_create(&io, path);
    if (s == LOSA_OK) s = io_store_reserve(io, (int64_t)strlen(deck_txt) + (256 << 10));
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/deck", deck_txt);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/layout", layout);
    if (s == LOSA_OK) s = io_store_write_attr_int(io, "/run/pp", dist_n_stages(r->d));
    if (s == LOSA_OK) s = io_store_write_attr_int(io, "/run/dp", dist_n_replicas(r->d));
    if (s == LOSA_OK) s = io_store_write_attr_int(io, "/run/invocations", r->invocations);
    if (s == LOSA_OK) s = io_store_commit(&io);
    io_store_close(&io);
    free(deck_txt);
    return s;
}

/* ------------------------------------------------------------ checkpoints */

static void step_dir(const losa_run *r, int t, char *buf, size_t n)
{
    snprintf(buf, n, "%s/ckpt/step_%d", r->dir, t);
}

/* Rank 0: the last step with a COMPLETE marker (0 if none). */
static int last_complete(const losa_run *r)
{
    for (int t = r->T; t >= 1; t--) {
        char p[1300];
        step_dir(r, t, p, sizeof p);
        strcat(p, "/COMPLETE");
        if (access(p, F_OK) == 0) return t;
    }
    return 0;
}

static losa_status write_marker(const char *path)
{
    char tmp[1400];
    core_tmpname(tmp, sizeof tmp, path);
    FILE *f = fopen(tmp, "w");
    if (!f) return core_err(LOSA_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    int ok = fprintf(f, "complete\n") > 0;
    ok &= fclose(f) == 0;
    if (!ok) {
        unlink(tmp);
        return core_err(LOSA_ERR_IO, "%s: write failed", tmp);
    }
    return core_commit_file(tmp, path);
}

/* Metrics of LoSA steps 1..t (rank 0 holds them in r->hist): one table of
 * datasets serves writing and reading. */
typedef struct {
    const char *name;
    double *d; /* or */
    int *i;
    int ndim;
    int64_t shape[3];
} metric_ds;

static int metric_table(losa_run *r, metric_ds *m)
{
    int64_t L = r->cfg.n_layers, T = r->T;
    losa_history *h = &r->hist;
    metric_ds t[] = {
        {"/losa/steps/s_t", h->s_t, NULL, 1, {T}},
        {"/losa/steps/layer_sparsity", h->sparsity, NULL, 2, {T, L}},
        {"/losa/steps/measured_sparsity", h->measured, NULL, 2, {T, L}},
        {"/losa/steps/importance", h->importance, NULL, 2, {T, L}},
        {"/losa/steps/cka", h->cka, NULL, 3, {T, L + 1, L + 1}},
        {"/losa/steps/recon_err", h->recon, NULL, 2, {T, L}},
        {"/losa/steps/rank", NULL, h->rank, 2, {T, L}},
        {"/losa/steps/rank_active", NULL, h->rank_active, 2, {T, L}},
        {"/losa/steps/ppl", h->ppl, NULL, 1, {T}},
        {"/losa/steps/loss", h->loss, NULL, 2, {T, h->loss_cap}},
        {"/losa/steps/loss_len", NULL, h->loss_len, 1, {T}},
        {"/losa/steps/seconds", h->secs, NULL, 2, {T, 4}},
    };
    int n = (int)(sizeof t / sizeof t[0]);
    memcpy(m, t, sizeof t);
    return n;
}

static losa_status write_metrics(losa_run *r, io_store *io, int upto)
{
    metric_ds m[16];
    int n = metric_table(r, m);
    int64_t one[1] = {1};
    double up = upto;
    losa_status s = io_store_write_doubles(io, "/losa/steps_done", &up, 1, one);
    for (int k = 0; k < n && s == LOSA_OK; k++)
        s = m[k].d ? io_store_write_doubles(io, m[k].name, m[k].d, m[k].ndim, m[k].shape)
                   : io_store_write_ints(io, m[k].name, m[k].i, m[k].ndim, m[k].shape);
    int64_t sh2[2] = {r->T, 2};
    if (s == LOSA_OK) s = io_store_write_doubles(io, "/losa/steps/elapsed", r->hist.elapsed, 2, sh2);
    return s;
}

static losa_status read_metrics(losa_run *r, io_store *io)
{
    metric_ds m[16];
    int n = metric_table(r, m);
    losa_status s = LOSA_OK;
    for (int k = 0; k < n && s == LOSA_OK; k++)
        s = m[k].d ? io_store_read_doubles(io, m[k].name, m[k].d, m[k].ndim, m[k].shape)
                   : io_store_read_ints(io, m[k].name, m[k].i, m[k].ndim, m[k].shape);
    /* elapsed seconds: absent in checkpoints of an older losa (then the
     * steps' own phase times stand for them) */
    int64_t sh2[2] = {r->T, 2};
    if (s == LOSA_OK && io_store_has(io, "/losa/steps/elapsed"))
        s = io_store_read_doubles(io, "/losa/steps/elapsed", r->hist.elapsed, 2, sh2);
    else if (s == LOSA_OK) {
        double sum = 0;
        for (int t = 0; t < r->T; t++) {
            for (int j = 0; j < 4; j++) sum += r->hist.secs[t * 4 + j];
            r->hist.elapsed[t * 2] = r->hist.elapsed[t * 2 + 1] = sum;
        }
    }
    return s;
}

/* Bytes of the metrics datasets (write_metrics: steps_done and the table,
 * rank and loss_len int32) plus HDF5's own metadata: < 1 KB per dataset
 * (~600 B measured) and 16 KB for the superblock and groups. */
static int64_t history_bytes(const losa_run *r)
{
    int64_t T = r->T, L = r->cfg.n_layers;
    /* + the 2 elapsed columns and rank_active per step; 1 KB per dataset
     * (14) + slack */
    return 8 * (1 + T * (8 + 5 * L + (L + 1) * (L + 1) + r->hist.loss_cap)) + 4 * T * (L + 1) +
           1024 * 14 + (16 << 10);
}

/* Collective: shards of every stage, metrics (rank 0), then the marker. */
static losa_status write_checkpoint(losa_run *r, int t, model_stage *s, lora_adapters *ad)
{
    char dir[1300], path[1400];
    step_dir(r, t, dir, sizeof dir);
    losa_status st = LOSA_OK;
    if (dist_rank(r->d) == 0 && mkdir_p(dir) != 0)
        st = core_err(LOSA_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    if (dist_replica(r->d) == 0) {
        io_store *io = NULL;
        snprintf(path, sizeof path, "%s/stage_%d.h5", dir, dist_stage(r->d));
        st = io_store_create(&io, path);
        if (st == LOSA_OK) st = io_store_reserve(io, (int64_t)s->n_params * 4 + 1024LL * (9 * s->n_layers + 8) + (64 << 10));
        if (st == LOSA_OK) st = io_store_write_config(io, &s->cfg, "losa run checkpoint shard");
        if (st == LOSA_OK) st = io_store_write_stage(io, s);
        if (st == LOSA_OK) st = io_store_commit(&io);
        io_store_close(&io);
        if (st == LOSA_OK) {
            char tmp[1500];
            snprintf(path, sizeof path, "%s/lora_%d.h5", dir, dist_stage(r->d));
            core_tmpname(tmp, sizeof tmp, path);
            st = io_adapters_write(tmp, 1, ad, &s->cfg);
            if (st == LOSA_OK) st = core_commit_file(tmp, path);
            else unlink(tmp);
        }
    }
    if (st == LOSA_OK && dist_rank(r->d) == 0) {
        io_store *io = NULL;
        snprintf(path, sizeof path, "%s/metrics.h5", dir);
        st = io_store_create(&io, path);
        if (st == LOSA_OK) st = io_store_reserve(io, history_bytes(r));
        if (st == LOSA_OK) st = write_metrics(r, io, t);
        if (st == LOSA_OK) st = io_store_commit(&io);
        io_store_close(&io);
    }
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    if (dist_rank(r->d) == 0) {
        snprintf(path, sizeof path, "%s/COMPLETE", dir);
        st = write_marker(path);
    }
    return dist_agree(r->d, st);
}

static losa_status read_checkpoint(losa_run *r, int t, model_stage *s, lora_adapters *ad)
{
    char dir[1300], path[1400];
    step_dir(r, t, dir, sizeof dir);
    io_store *io = NULL;
    snprintf(path, sizeof path, "%s/stage_%d.h5", dir, dist_stage(r->d));
    losa_status st = io_store_open(&io, path);
    if (st == LOSA_OK) st = io_store_read_stage(io, s);
    io_store_close(&io);
    snprintf(path, sizeof path, "%s/lora_%d.h5", dir, dist_stage(r->d));
    if (st == LOSA_OK) st = io_adapters_read(path, ad, &s->cfg);
    if (st == LOSA_OK && dist_rank(r->d) == 0) {
        snprintf(path, sizeof path, "%s/metrics.h5", dir);
        st = io_store_open(&io, path);
        if (st == LOSA_OK) st = read_metrics(r, io);
        io_store_close(&io);
    }
    return dist_agree(r->d, st);
}

/* Rank 0: a damaged checkpoint step_<t> is renamed step_<t>.damaged.<n>
 * (kept for a look, never read again) with a warning naming the error. */
static losa_status set_aside(losa_run *r, int t)
{
    char dir[1300], to[1400], why[1024];
    snprintf(why, sizeof why, "%s", core_errmsg());
    step_dir(r, t, dir, sizeof dir);
    for (int n = 1; n < 1000; n++) {
        snprintf(to, sizeof to, "%s.damaged.%d", dir, n);
        if (access(to, F_OK) == 0) continue;
        if (rename(dir, to) != 0)
            return core_err(LOSA_ERR_IO, "%s: damaged checkpoint (%s) cannot be set aside: %s", dir,
                            why, strerror(errno));
        core_log("warning: checkpoint %s is damaged (%s): kept as %s; resuming from the step "
                 "before\n", dir, why, to);
        return LOSA_OK;
    }
    return core_err(LOSA_ERR_IO, "%s: damaged checkpoint (%s) and too many set aside", dir, why);
}

/* The per-step history back to "no step done". */
static void history_reset(losa_run *r)
{
    losa_history *h = &r->hist;
    int64_t T = r->T, L = r->cfg.n_layers;
    memset(h->s_t, 0, sizeof(double) * T);
    memset(h->sparsity, 0, sizeof(double) * T * L);
    memset(h->measured, 0, sizeof(double) * T * L);
    memset(h->importance, 0, sizeof(double) * T * L);
    memset(h->cka, 0, sizeof(double) * T * (L + 1) * (L + 1));
    memset(h->recon, 0, sizeof(double) * T * L);
    memset(h->rank, 0, sizeof(int) * T * L);
    memset(h->loss, 0, sizeof(double) * T * h->loss_cap);
    memset(h->loss_len, 0, sizeof(int) * T);
    memset(h->secs, 0, sizeof(double) * T * 4);
    memset(h->elapsed, 0, sizeof(double) * T * 2);
    for (int64_t t = 0; t < T; t++) h->ppl[t] = NAN;
}

/* ------------------------------------------------------------ phases */

/* One-shot pruning at the target (uniform), in place. */
static losa_status phase_prune(losa_run *r, model_stage *s, losa_result *res)
{
    calib_prune_opts o = {.pc = r->pc, .layer_sparsity = NULL, .chunk = 8};
    calib_prune_result pr;
    double t0 = core_time();
    core_log("== prune: %s, %s, sparsity %.3f\n", prune_method_str(r->pc.method),
             deck_str(r->dk, "prune.pattern"), r->pc.sparsity);
    losa_status st = calib_prune_model(r->d, s, r->calib, r->N, r->S, &o, NULL, &pr);
    if (st == LOSA_OK) {
        res->prune_seconds = core_time() - t0;
        res->sparsity = model_sparsity(r->d, s);
        res->ppl = run_ppl(r, s);
        res->seconds = core_time() - t0;
        memcpy(r->prune_recon, pr.recon_err, sizeof(double) * r->cfg.n_layers);
        core_log("   pruned: sparsity %.4f  ppl %.4f  (%.1fs)\n", res->sparsity, res->ppl,
                 res->seconds);
    }
    calib_result_free(&pr);
    return st;
}

/* Masked LoRA with fixed rank on the pruned model, total training budget. */
static losa_status phase_lora(losa_run *r, model_stage *s, losa_result *res)
{
    lora_adapters ad;
    double t0 = core_time();
    int64_t zeros0 = calib_stage_zeros(s, NULL);
    losa_status st = lora_adapters_build(&ad, s, &r->lc);
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    int64_t total = (int64_t)(r->T - 1) * r->samples_step + r->samples_last;
    core_log("== +LoRA: rank %d on %lld examples\n", r->lc.rank, (long long)total);
    st = train_phase(r, s, &ad, 0, 0, total, r->tc.seed * 7919 + 1, "+LoRA train", &res->loss,
                     &res->n_loss, &res->train_seconds);
    if (st == LOSA_OK) {
        int64_t flips = lora_merge(&ad, s);
        int64_t z = calib_stage_zeros(s, NULL);
        if (flips != 0 || z != zeros0)
            st = core_err(LOSA_ERR_INTERNAL, "+LoRA merge changed the sparsity pattern (%lld flips)",
                          (long long)flips);
    }
    lora_adapters_free(&ad, s);
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    res->sparsity = model_sparsity(r->d, s);
    res->ppl = run_ppl(r, s);
    res->seconds = core_time() - t0;
    core_log("   +LoRA: loss %.4f -> %.4f  ppl %.4f  (%.1fs)\n", mean_of(res->loss, 10 < res->n_loss ? 10 : res->n_loss),
             mean_of(res->loss + (res->n_loss > 10 ? res->n_loss - 10 : 0), res->n_loss > 10 ? 10 : res->n_loss),
             res->ppl, res->seconds);
    return LOSA_OK;
}

/* Dense reference outputs on disk: one dataset per layer, (Nmine*S, D), in
 * the stage's (and replica's) shard; read back one layer at a time. */
typedef struct {
    io_store *io;        /* while writing, then reading */
    float *buf;          /* (Nmine*S, D) one layer */
    int64_t shape[2];
    int layer0;
    char path[1300];
} dense_disk;

static losa_status dense_sink(void *ctx, int l, const float *X)
{
    dense_disk *dd = ctx;
    char name[64];
    snprintf(name, sizeof name, "/dense/%d", dd->layer0 + l);
    return io_store_write_tensor(dd->io, name, X, 2, dd->shape);
}

static losa_status dense_disk_write(losa_run *r, const model_stage *s, dense_disk *dd)
{
    dist_ctx *d = r->d;
    int Nm = calib_windows_mine(d, r->N);
    dd->shape[0] = (int64_t)(Nm > 0 ? Nm : 1) * r->S;
    dd->shape[1] = s->cfg.dim;
    dd->layer0 = s->layer0;
    snprintf(dd->path, sizeof dd->path, "%s/ckpt/dense_%d_%d.h5", r->dir, dist_stage(d),
             dist_replica(d));
    losa_status st = io_store_create(&dd->io, dd->path);
    if (st == LOSA_OK)
        st = io_store_reserve(dd->io, dd->shape[0] * dd->shape[1] * 4 * s->n_layers + 1024LL * s->n_layers + (64 << 10));
    if ((st = dist_agree(d, st)) != LOSA_OK) {
        io_store_close(&dd->io);
        return st;
    }
    st = calib_dense_stream(d, s, r->calib, r->N, r->S, 8, dense_sink, dd);
    if (st == LOSA_OK) st = io_store_commit(&dd->io);
    else io_store_close(&dd->io);
    if (st == LOSA_OK) st = io_store_open(&dd->io, dd->path);
    dd->buf = core_calloc((size_t)(dd->shape[0] * dd->shape[1]), sizeof(float));
    core_log("   dense reference outputs: %s (%.1f MB per layer)\n", dd->path,
             dd->shape[0] * dd->shape[1] * 4 / 1e6);
    return dist_agree(d, st);
}

static const float *dense_disk_layer(void *ctx, int l)
{
    dense_disk *dd = ctx;
    char name[64];
    snprintf(name, sizeof name, "/dense/%d", dd->layer0 + l);
    return io_store_read_tensor(dd->io, name, dd->buf, 2, dd->shape) == LOSA_OK ? dd->buf : NULL;
}

static void dense_disk_close(dense_disk *dd)
{
    io_store_close(&dd->io);
    core_free(dd->buf);
    dd->buf = NULL;
}

/* The LoSA loop (ALGORITHM.md section 2), resuming after step t0. */
static losa_status phase_losa(losa_run *r, model_stage *s, losa_result *res)
{
    dist_ctx *d = r->d;
    int L = r->cfg.n_layers, T = r->T, N = r->N, S = r->S;
    losa_history *h = &r->hist;
    lora_adapters ad;
    double t_start = core_time();
    losa_status st = lora_adapters_build(&ad, s, &r->lc);
    if ((st = dist_agree(d, st)) != LOSA_OK) return st;
    int done = dist_rank(d) == 0 ? last_complete(r) : 0, damaged = 0;
    dist_bcast(d, &done, sizeof done, 0);
    while (done > 0 && (st = read_checkpoint(r, done, s, &ad)) != LOSA_OK) {
        /* a damaged checkpoint (truncated or missing file): kept under
         * another name, the step before is tried */
        damaged = 1;
        st = dist_rank(d) == 0 ? set_aside(r, done) : LOSA_OK;
        if ((st = dist_agree(d, st)) != LOSA_OK) {
            lora_adapters_free(&ad, s);
            return st;
        }
        done = dist_rank(d) == 0 ? last_complete(r) : 0;
        dist_bcast(d, &done, sizeof done, 0);
    }
    if (damaged && done == 0) {
        /* nothing usable left: from the start (dense weights, fresh
         * adapters, empty history) */
        lora_adapters_free(&ad, s);
        history_reset(r);
        st = reload_dense(r, s);
        if (st == LOSA_OK) st = lora_adapters_build(&ad, s, &r->lc);
        if ((st = dist_agree(d, st)) != LOSA_OK) {
            lora_adapters_free(&ad, s);
            return st;
        }
    }
    if (done > 0) {
        core_log("== LoSA: resuming after step %d of %d (%s/ckpt/step_%d)\n", done, T, r->dir, done);
        lora_delta_update(&ad, s);
        lora_attach(&ad, s);
        /* the time of the earlier invocations up to that step */
        double prev[2] = {h->elapsed[(done - 1) * 2], h->elapsed[(done - 1) * 2 + 1]};
        dist_bcast(d, prev, sizeof prev, 0);
        r->prev_losa_s = prev[0];
        r->prev_run_s = prev[1];
    }
    /* dense reference outputs of this stage's layers (recomputed on resume
     * from the dense store: deterministic), in memory or in the stage's
     * HDF5 shard ckpt/dense_<stage>_<replica>.h5 (losa.dense_ref = disk) */
    float *dense = NULL;
    dense_disk dk_ref;
    memset(&dk_ref, 0, sizeof dk_ref);
    model_stage dense_st;
    memset(&dense_st, 0, sizeof dense_st);
    st = model_stage_for_rank(&dense_st, &r->cfg, d);
    if (st == LOSA_OK) st = reload_dense(r, &dense_st);
    if (st == LOSA_OK && r->dense_on_disk) st = dense_disk_write(r, &dense_st, &dk_ref);
    else if (st == LOSA_OK) st = calib_dense_outputs(d, &dense_st, r->calib, N, S, 8, &dense);
    model_stage_free(&dense_st);
    if ((st = dist_agree(d, st)) != LOSA_OK) {
        lora_adapters_free(&ad, s);
        return st;
    }
    double *grams = calloc((size_t)(L + 1) * r->rmi_n * r->rmi_n, sizeof(double));
    double *cur = calloc(L, sizeof(double)), *err_local = calloc(L, sizeof(double));
    losa_decision dc;
    losa_decision_init(&dc, L);
    int64_t stream = 0;
    for (int t = 1; t <= done; t++) stream += t < T ? r->samples_step : r->samples_last;
    for (int t = done + 1; t <= T && st == LOSA_OK; t++) {
        double tg = core_time();
        /* merge: W <- W + Delta (the pruner sees the adapted weights) */
        lora_merge(&ad, s);
        st = calib_layer_grams(d, s, r->calib, r->rmi_n, S, 8, grams);
        layer_sparsities(d, s, cur);
        losa_decide_sparsity(&dc, r->alloc, grams, r->rmi_n, r->pc.sparsity, t, T, r->beta,
                             r->compat.sparsity_floor ? cur : NULL);
        double tp = core_time();
        core_log("== LoSA step %d/%d: s_t %.4f, layer sparsity", t, T, dc.s_t);
        for (int l = 0; l < L; l++) core_log(" %.3f", dc.sparsity[l]);
        core_log("\n");
        calib_prune_opts o = {.pc = r->pc, .layer_sparsity = dc.sparsity, .chunk = 8,
                              .dense_layer = r->dense_on_disk ? dense_disk_layer : NULL,
                              .dense_ctx = &dk_ref};
        calib_prune_result pr;
        memset(&pr, 0, sizeof pr);
        if (st == LOSA_OK) st = calib_prune_model(d, s, r->calib, N, S, &o, dense, &pr);
        if (st != LOSA_OK) {
            calib_result_free(&pr);
            break;
        }
        /* unmerge with the new mask: W_eff = W + Delta (.) M_new is the
         * pruned merged weight; training continues from the same A, B */
        lora_delta_update(&ad, s);
        lora_unmerge(&ad, s);
        /* ranks from the reconstruction errors (the collective step) */
        memset(err_local, 0, sizeof(double) * L);
        if (dist_replica(d) == 0)
            for (int l = 0; l < s->n_layers; l++) err_local[s->layer0 + l] = pr.recon_err[s->layer0 + l];
        int R = 6 + (t - 1);
        losa_collective_ranks(d, &dc, err_local, R, 1,
                              losa_rank_bound(r->compat.rank_cap, r->compat.rank_max, r->lc.r_max),
                              r->rank_fixed ? r->lc.rank : 0, r->compat.rebalance);
        losa_rank_active(dc.rank_active, dc.rank, L, r->compat.rank_cap, r->lc.r_max);
        for (int l = 0; l < s->n_layers && st == LOSA_OK; l++)
            st = lora_set_rank(&ad, l, dc.rank_active[s->layer0 + l]);
        lora_delta_update(&ad, s);
        double tt = core_time();
        core_log("   ranks");
        for (int l = 0; l < L; l++) core_log(" %d", dc.rank[l]);
        core_log("  (mean %d)\n", R);
        /* fault injection for the tests: LOSA_FAULT_KILL=<t> makes the last
         * rank SIGKILL itself here, in the middle of step t */
        const char *kill_at = getenv("LOSA_FAULT_KILL");
        if (kill_at && atoi(kill_at) == t && dist_rank(d) == dist_size(d) - 1) raise(SIGKILL);
        int64_t n_t = t < T ? r->samples_step : r->samples_last, first = stream, range_n = 0;
        if (r->compat.slices == LOSA_TRAIN_SLICES_REFERENCE) {
            losa_train_slice(t, T, r->samples_step, r->samples_last, r->ds.n, &first, &n_t);
            range_n = n_t;
            if (n_t == 0 && st == LOSA_OK)
                st = core_err(LOSA_ERR_ARG, "data.train_slices = reference: step %d's range starts at "
                              "example %lld but data.train has only %lld", t, (long long)first,
                              (long long)r->ds.n);
        }
        double *loss = NULL, train_s = 0;
        int64_t nl = 0;
        char label[64];
        snprintf(label, sizeof label, "LoSA step %d train", t);
        if (st == LOSA_OK)
            st = train_phase(r, s, &ad, first, range_n, n_t, r->tc.seed * 7919 + 100 + t, label, &loss, &nl, &train_s);
        stream += n_t;
        double te = core_time(), ppl = NAN;
        if (st == LOSA_OK && r->eval_each_step && t < T) {
            lora_merge(&ad, s);
            ppl = run_ppl(r, s);
            lora_unmerge(&ad, s);
            core_log("   step %d: ppl %.4f\n", t, ppl);
        }
        /* history (identical on every rank; rank 0 writes it) */
        int k = t - 1;
        h->s_t[k] = dc.s_t;
        memcpy(h->sparsity + (int64_t)k * L, dc.sparsity, sizeof(double) * L);
        memcpy(h->measured + (int64_t)k * L, pr.sparsity, sizeof(double) * L);
        memcpy(h->importance + (int64_t)k * L, dc.importance, sizeof(double) * L);
        memcpy(h->cka + (int64_t)k * (L + 1) * (L + 1), dc.cka, sizeof(double) * (L + 1) * (L + 1));
        memcpy(h->recon + (int64_t)k * L, pr.recon_err, sizeof(double) * L);
        memcpy(h->rank + (int64_t)k * L, dc.rank, sizeof(int) * L);
        memcpy(h->rank_active + (int64_t)k * L, dc.rank_active, sizeof(int) * L);
        h->ppl[k] = ppl;
        h->loss_len[k] = (int)(nl < h->loss_cap ? nl : h->loss_cap);
        for (int64_t i = 0; i < h->loss_len[k]; i++) h->loss[(int64_t)k * h->loss_cap + i] = loss ? loss[i] : NAN;
        h->secs[k * 4 + 0] = tp - tg;
        h->secs[k * 4 + 1] = tt - tp;
        h->secs[k * 4 + 2] = train_s;
        h->secs[k * 4 + 3] = core_time() - te;
        h->elapsed[k * 2 + 0] = r->prev_losa_s + (core_time() - t_start);
        h->elapsed[k * 2 + 1] = r->prev_run_s + (core_time() - r->t0);
        free(loss);
        calib_result_free(&pr);
        if (st == LOSA_OK) st = write_checkpoint(r, t, s, &ad);
        if (st == LOSA_OK && r->stop_after == t) {
            core_log("== stopping after step %d as asked (--stop-after)\n", t);
            st = core_err(LOSA_ERR_ARG, "stopped after step %d (--stop-after); run again to resume", t);
        }
        st = dist_agree(d, st);
    }
    if (st == LOSA_OK) {
        /* final merge: an ordinary sparse model, no adapter at inference */
        int64_t z0 = calib_stage_zeros(s, NULL);
        int64_t flips = lora_merge(&ad, s);
        double v[2] = {(double)flips, (double)(calib_stage_zeros(s, NULL) - z0)};
        if (dist_replica(d) != 0) v[0] = v[1] = 0;
        dist_sum_doubles(d, v, 2);
        if (v[0] != 0 || v[1] != 0)
            st = core_err(LOSA_ERR_INTERNAL, "final merge changed the sparsity pattern (%g flips)", v[0]);
        res->sparsity = model_sparsity(d, s);
        res->ppl = run_ppl(r, s);
        res->seconds = r->prev_losa_s + (core_time() - t_start); /* over the invocations */
        res->train_seconds = 0;
        for (int t = 0; t < T; t++) res->train_seconds += h->secs[t * 4 + 2];
        core_log("   LoSA: sparsity %.4f  ppl %.4f  (%.1fs)\n", res->sparsity, res->ppl, res->seconds);
    }
    losa_decision_free(&dc);
    free(grams);
    free(cur);
    free(err_local);
    core_free(dense);
    dense_disk_close(&dk_ref);
    lora_adapters_free(&ad, s);
    return dist_agree(d, st);
}

/* ------------------------------------------------------------ outputs */

static losa_status write_scalar(io_store *io, const char *name, double v)
{
    int64_t one[1] = {1};
    return io_store_write_doubles(io, name, &v, 1, one);
}

static losa_status write_result(io_store *io, const char *grp, const losa_result *x)
{
    char n[128];
    losa_status s = LOSA_OK;
#define W(key, val) \
    if (s == LOSA_OK) { snprintf(n, sizeof n, "/%s/%s", grp, key); s = write_scalar(io, n, val); }
    W("ppl", x->ppl);
    W("sparsity", x->sparsity);
    W("seconds", x->seconds);
    W("train_seconds", x->train_seconds);
    W("prune_seconds", x->prune_seconds);
#undef W
    if (s == LOSA_OK && x->n_loss > 0) {
        int64_t sh[1] = {x->n_loss};
        snprintf(n, sizeof n, "/%s/loss", grp);
        s = io_store_write_doubles(io, n, x->loss, 1, sh);
    }
    return s;
}

static losa_status read_result(io_store *io, const char *grp, losa_result *x)
{
    char n[128];
    int64_t one[1] = {1};
    losa_status s = LOSA_OK;
#define R(key, dst) \
    if (s == LOSA_OK) { snprintf(n, sizeof n, "/%s/%s", grp, key); s = io_store_read_doubles(io, n, &dst, 1, one); }
    R("ppl", x->ppl);
    R("sparsity", x->sparsity);
    R("seconds", x->seconds);
    R("train_seconds", x->train_seconds);
    R("prune_seconds", x->prune_seconds);
#undef R
    snprintf(n, sizeof n, "/%s/loss", grp);
    if (s == LOSA_OK && io_store_has(io, n)) {
        int nd;
        int64_t sh[IO_MAX_DIMS];
        s = io_store_tensor_shape(io, n, &nd, sh);
        if (s == LOSA_OK) {
            x->n_loss = sh[0];
            x->loss = calloc(sh[0], sizeof(double));
            s = io_store_read_doubles(io, n, x->loss, 1, sh);
        }
    }
    return s;
}

static char *git_revision(void)
{
    char exe[1024], cmd[1200], buf[64] = "unknown";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(cmd, sizeof cmd, "git -C '%s/..' rev-parse HEAD 2>/dev/null", exe);
        FILE *p = popen(cmd, "r");
        if (p) {
            if (fgets(buf, sizeof buf, p)) buf[strcspn(buf, "\n")] = 0;
            else snprintf(buf, sizeof buf, "unknown");
            pclose(p);
        }
    }
    return strdup(buf);
}

/* External links /shards/stage_<p> and /shards/lora_<p> to the last
 * checkpoint's per-stage shard files (paths relative to the run directory),
 * so h5py / h5dump see one tree: run.h5['shards/stage_0/layers/0/wq']. */
static losa_status link_shards(losa_run *r, io_store *io)
{
    losa_status s = LOSA_OK;
    for (int p = 0; p < dist_n_stages(r->d) && s == LOSA_OK; p++) {
        char link[64], file[128];
        snprintf(link, sizeof link, "/shards/stage_%d", p);
        snprintf(file, sizeof file, "ckpt/step_%d/stage_%d.h5", r->T, p);
        s = io_store_link_external(io, link, file, "/");
        snprintf(link, sizeof link, "/shards/lora_%d", p);
        snprintf(file, sizeof file, "ckpt/step_%d/lora_%d.h5", r->T, p);
        if (s == LOSA_OK) s = io_store_link_external(io, link, file, "/");
    }
    return s;
}

static losa_status write_run_file(losa_run *r)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/run.h5", r->dir);
    io_store *io = NULL;
    char *deck_txt = deck_dump(r->dk, NULL), *rev = git_revision(), layout[128], seeds[128];
    snprintf(layout, sizeof layout, "pp %d x dp %d (%d ranks)", dist_n_stages(r->d),
             dist_n_replicas(r->d), dist_size(r->d));
    snprintf(seeds, sizeof seeds, "calib %lld, train %llu", (long long)deck_int(r->dk, "data.calib_seed"),
             (unsigned long long)r->tc.seed);
    losa_status s = io_store_create(&io, path);
    if (s == LOSA_OK) s = io_store_reserve(io, history_bytes(r) + (int64_t)strlen(deck_txt) + strlen(r->store) + strlen(r->deck_name) + 8 * (r->res[LOSA_MODE_PRUNE].n_loss + r->res[LOSA_MODE_LORA].n_loss + r->res[LOSA_MODE_LOSA].n_loss + r->cfg.n_layers) + 1024 * (32 + 2 * dist_n_stages(r->d)) + (16 << 10));
    if (s == LOSA_OK) s = io_store_write_config(io, &r->cfg, r->store);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/deck", deck_txt);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/deck_file", r->deck_name);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/git_revision", rev);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/layout", layout);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/seeds", seeds);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/mode", deck_str(r->dk, "losa.mode"));
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/method", prune_method_str(r->pc.method));
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/pattern", deck_str(r->dk, "prune.pattern"));
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/model", r->store);
    if (s == LOSA_OK) s = write_scalar(io, "/run/target_sparsity", r->pc.sparsity);
    if (s == LOSA_OK) s = write_scalar(io, "/dense/ppl", r->dense_ppl);
    if (s == LOSA_OK && r->have[LOSA_MODE_PRUNE]) s = write_result(io, "prune", &r->res[LOSA_MODE_PRUNE]);
    if (s == LOSA_OK && r->have[LOSA_MODE_PRUNE]) {
        int64_t sh[1] = {r->cfg.n_layers};
        s = io_store_write_doubles(io, "/prune/recon_err", r->prune_recon, 1, sh);
    }
    if (s == LOSA_OK && r->have[LOSA_MODE_LORA]) s = write_result(io, "lora", &r->res[LOSA_MODE_LORA]);
    if (s == LOSA_OK && r->have[LOSA_MODE_LOSA]) s = write_result(io, "losa", &r->res[LOSA_MODE_LOSA]);
    if (s == LOSA_OK && r->have[LOSA_MODE_LOSA]) s = write_metrics(r, io, r->T);
    if (s == LOSA_OK && r->have[LOSA_MODE_LOSA]) s = link_shards(r, io);
    if (s == LOSA_OK) s = write_scalar(io, "/final/dense_ppl", r->dense_ppl);
    if (s == LOSA_OK) s = write_scalar(io, "/final/seconds", r->prev_run_s + (core_time() - r->t0));
    if (s == LOSA_OK) s = write_scalar(io, "/final/invocation_seconds", core_time() - r->t0);
    if (s == LOSA_OK) s = io_store_write_attr_int(io, "/run/invocations", r->invocations);
    if (s == LOSA_OK) s = io_store_commit(&io);
    io_store_close(&io);
    free(deck_txt);
    free(rev);
    return s;
}

/* Collective: the whole model to run_dir/model.h5 (rank 0 writes). */
static losa_status write_model(losa_run *r, const model_stage *s, const char *source)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/model.h5", r->dir);
    io_store *io = NULL;
    losa_status st = LOSA_OK;
    if (dist_rank(r->d) == 0) {
        st = io_store_create(&io, path);
        if (st == LOSA_OK)
            st = io_store_reserve(io, (int64_t)model_param_count(&s->cfg) * 4 +
                                          r->tok.offsets[r->tok.n_vocab] * 2 + 16LL * r->tok.n_vocab +
                                          8LL * r->tok.n_merges + 1024LL * (9 * s->cfg.n_layers + 16) + (64 << 10));
    }
    if ((st = dist_agree(r->d, st)) != LOSA_OK) {
        io_store_close(&io);
        return st;
    }
    return losa_store_write_model(r->d, io, s, &r->tok, source);
}

static losa_status save_base(losa_run *r)
{
    if (dist_rank(r->d) != 0) return dist_agree(r->d, LOSA_OK);
    char path[1300];
    snprintf(path, sizeof path, "%s/ckpt/base.h5", r->dir);
    io_store *io = NULL;
    losa_status s = io_store_create(&io, path);
    if (s == LOSA_OK) s = io_store_reserve(io, 8LL * (r->res[LOSA_MODE_PRUNE].n_loss + r->res[LOSA_MODE_LORA].n_loss + r->cfg.n_layers + 11) + 1024 * 14 + (16 << 10));
    if (s == LOSA_OK) s = write_scalar(io, "/dense/ppl", r->dense_ppl);
    if (s == LOSA_OK) s = write_result(io, "prune", &r->res[LOSA_MODE_PRUNE]);
    if (s == LOSA_OK) {
        int64_t sh[1] = {r->cfg.n_layers};
        s = io_store_write_doubles(io, "/prune/recon_err", r->prune_recon, 1, sh);
    }
    if (s == LOSA_OK && r->have[LOSA_MODE_LORA]) s = write_result(io, "lora", &r->res[LOSA_MODE_LORA]);
    if (s == LOSA_OK) s = write_scalar(io, "/final/elapsed", r->prev_run_s + (core_time() - r->t0));
    if (s == LOSA_OK) s = io_store_commit(&io);
    io_store_close(&io);
    return dist_agree(r->d, s);
}

static int load_base(losa_run *r)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/ckpt/base.h5", r->dir);
    int ok = 0;
    if (dist_rank(r->d) == 0 && access(path, F_OK) == 0) {
        io_store *io = NULL;
        int64_t one[1] = {1}, sh[1] = {r->cfg.n_layers};
        losa_status s = io_store_open(&io, path);
        if (s == LOSA_OK) s = io_store_read_doubles(io, "/dense/ppl", &r->dense_ppl, 1, one);
        if (s == LOSA_OK) s = read_result(io, "prune", &r->res[LOSA_MODE_PRUNE]);
        if (s == LOSA_OK) s = io_store_read_doubles(io, "/prune/recon_err", r->prune_recon, 1, sh);
        if (s == LOSA_OK && r->mode == LOSA_MODE_COMPARE) s = read_result(io, "lora", &r->res[LOSA_MODE_LORA]);
        if (s == LOSA_OK && io_store_has(io, "/final/elapsed"))
            s = io_store_read_doubles(io, "/final/elapsed", &r->prev_run_s, 1, one);
        io_store_close(&io);
        ok = s == LOSA_OK;
    }
    dist_bcast(r->d, &ok, sizeof ok, 0);
    return ok;
}

/* ------------------------------------------------------------ driver */

losa_status losa_run_execute(losa_run *r)
{
    dist_ctx *d = r->d;
    int L = r->cfg.n_layers, T = r->T;
    r->t0 = core_time();
    losa_history *h = &r->hist;
    int64_t per = (int64_t)r->tc.B * r->tc.grad_accum;
    h->loss_cap = (r->samples_last > r->samples_step ? r->samples_last : r->samples_step) / per + 2;
    h->s_t = calloc(T, sizeof(double));
    h->sparsity = calloc((size_t)T * L, sizeof(double));
    h->measured = calloc((size_t)T * L, sizeof(double));
    h->importance = calloc((size_t)T * L, sizeof(double));
    h->cka = calloc((size_t)T * (L + 1) * (L + 1), sizeof(double));
    h->recon = calloc((size_t)T * L, sizeof(double));
    h->rank = calloc((size_t)T * L, sizeof(int));
    h->rank_active = calloc((size_t)T * L, sizeof(int));
    h->ppl = calloc(T, sizeof(double));
    h->loss = calloc((size_t)T * h->loss_cap, sizeof(double));
    h->loss_len = calloc(T, sizeof(int));
    h->secs = calloc((size_t)T * 4, sizeof(double));
    h->elapsed = calloc((size_t)T * 2, sizeof(double));
    r->prune_recon = calloc(L, sizeof(double));
    for (int t = 0; t < T; t++) h->ppl[t] = NAN;
    r->dense_ppl = NAN;

    losa_status st = LOSA_OK;
    char ck[1300];
    snprintf(ck, sizeof ck, "%s/ckpt", r->dir);
    if (dist_rank(d) == 0 && mkdir_p(ck) != 0)
        st = core_err(LOSA_ERR_IO, "%s: cannot create the run directory: %s", ck, strerror(errno));
    if (st == LOSA_OK && dist_rank(d) == 0) st = write_state(r);
    if ((st = dist_agree(d, st)) != LOSA_OK) return st;

    model_stage s;
    if ((st = model_stage_for_rank(&s, &r->cfg, d)) == LOSA_OK) st = reload_dense(r, &s);
    if ((st = dist_agree(d, st)) != LOSA_OK) return st;

    int base = (r->mode == LOSA_MODE_COMPARE || r->mode == LOSA_MODE_PRUNE) && load_base(r);
    if (!base) {
        core_log("== dense model\n");
        r->dense_ppl = run_ppl(r, &s);
        core_log("   dense ppl %.4f\n", r->dense_ppl);
    } else {
        core_log("== baselines from %s/ckpt/base.h5 (resumed run)\n", r->dir);
    }
    if (r->mode != LOSA_MODE_LOSA && !base) {
        st = phase_prune(r, &s, &r->res[LOSA_MODE_PRUNE]);
        r->have[LOSA_MODE_PRUNE] = 1;
        if (st == LOSA_OK && r->mode != LOSA_MODE_PRUNE) {
            st = phase_lora(r, &s, &r->res[LOSA_MODE_LORA]);
            r->have[LOSA_MODE_LORA] = 1;
        }
        if (st == LOSA_OK && r->mode == LOSA_MODE_COMPARE) st = save_base(r);
    } else if (base) {
        r->have[LOSA_MODE_PRUNE] = 1;
        r->have[LOSA_MODE_LORA] = r->mode == LOSA_MODE_COMPARE;
    }
    const char *source = "losa prune";
    if (st == LOSA_OK && (r->mode == LOSA_MODE_LOSA || r->mode == LOSA_MODE_COMPARE)) {
        if (r->mode == LOSA_MODE_COMPARE) st = reload_dense(r, &s);
        if (st == LOSA_OK) st = phase_losa(r, &s, &r->res[LOSA_MODE_LOSA]);
        r->have[LOSA_MODE_LOSA] = 1;
        source = "losa run (LoSA, merged)";
    } else if (r->mode == LOSA_MODE_LORA) {
        source = "losa run (pruned + masked LoRA, merged)";
    }
    if (st == LOSA_OK) st = write_model(r, &s, source);
    if (st == LOSA_OK && dist_rank(d) == 0) st = write_run_file(r);
    st = dist_agree(d, st);
    model_stage_free(&s);
    return st;
}

void losa_run_free(losa_run *r)
{
    losa_history *h = &r->hist;
    free(h->s_t); free(h->sparsity); free(h->measured); free(h->importance); free(h->cka);
    free(h->recon); free(h->rank); free(h->rank_active); free(h->ppl); free(h->loss);
    free(h->loss_len); free(h->secs); free(h->elapsed);
    for (int m = 0; m < LOSA_N_MODES; m++) free(r->res[m].loss);
    free(r->prune_recon);
    free(r->calib);
    free(r->eval_ids);
    lora_data_free(&r->ds);
    tok_free(&r->tok);
    memset(h, 0, sizeof *h);
    core_lock_release(&r->lock); /* rank 0 holds it; a no-op elsewhere */
}
