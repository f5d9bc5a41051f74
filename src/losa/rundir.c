/* The run directory of `losa run` (deck key output.dir):
 *   run.h5                  deck, git revision, layout, seeds, metrics
 *   model.h5                the final sparse model (a model store)
 *   .lock                   held by rank 0 while a command uses the directory
 *   ckpt/state.h5           deck, layout, invocation count of the last start
 *                           (a resume is checked against it)
 *   ckpt/base.h5            dense / pruned / +LoRA results (compare mode)
 *   ckpt/step_<t>/          the checkpoints (ckpt.c)
 * Checks before any work (losa_run_prepare) and the files of results. */
#include "run_internal.h"

#include <dirent.h>
#include <math.h>
#include <errno.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int losa_mkdir_p(const char *path)
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

static const char *run_dir(const losa_run *r) { return r->set->output.dir.path; }

/* ------------------------------------------------------------ checks */

/* Appends "key A (run) -> B (now)" to msg for every key that differs,
 * except keys of no result and, while steps remain (!finished), the
 * resumable ones (deck_schema flags); paths name the same file or not. */
static int deck_diff(const deck *now, const deck *was, int finished, char *msg, size_t n)
{
    int nd = 0;
    size_t len = strlen(msg);
    for (int i = 0; i < deck_schema_len; i++) {
        const deck_key *k = &deck_schema[i];
        if (k->flags & DECK_NO_RESULT) continue;
        if (!finished && (k->flags & DECK_RESUMABLE)) continue;
        const char *a = deck_str(was, k->key), *b = deck_str(now, k->key);
        int same;
        if (!a || !b) same = a == b;
        else if (k->type == DECK_INT) same = deck_int(was, k->key) == deck_int(now, k->key);
        else if (k->type == DECK_FLOAT) same = deck_float(was, k->key) == deck_float(now, k->key);
        else if (k->type == DECK_BOOL) same = deck_bool(was, k->key) == deck_bool(now, k->key);
        else same = !strcmp(a, b) || ((k->flags & DECK_PATH) && core_same_file(a, b));
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
    for (const char *const *l = ok; *l; l++)
        if (!strcmp(*l, name)) return 1;
    return 0;
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
/* Rank 0: the stage split recorded in the run file at path (/run/stage_layers,
 * pp entries) into count; 0 if absent (runs of an older losa) or of
 * another length. */
static int recorded_split(const char *path, int pp, int *count)
{
    io_store *io = NULL;
    int nd = 0, ok = 0;
    int64_t shape[IO_MAX_DIMS];
    if (!exists(path) || io_store_open(&io, path) != LOSA_OK) return 0;
    if (io_store_tensor_shape(io, "/run/stage_layers", &nd, shape) == LOSA_OK && nd == 1 &&
        shape[0] == pp)
        ok = io_store_read_ints(io, "/run/stage_layers", count, 1, shape) == LOSA_OK;
    io_store_close(&io);
    return ok;
}

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

/* Rank 0: a directory that is neither new, nor empty, nor a run directory
 * (only the job script's files allowed) is refused. */
static losa_status check_foreign(const losa_run *r, const char *what)
{
    DIR *dd = opendir(run_dir(r));
    struct dirent *e;
    char first[256] = "";
    int n = 0;
    while (dd && (e = readdir(dd)))
        if (!is_job_file(e->d_name) && n++ == 0) snprintf(first, sizeof first, "%s", e->d_name);
    if (dd) closedir(dd);
    if (n > 0)
        return core_err(LOSA_ERR_ARG, "%s: %s holds '%s'%s but is not a losa run directory "
                        "(no run.h5, no ckpt/): choose a new or empty directory",
                        deck_name(r->dk), what, first, n > 1 ? " and other files" : "");
    return LOSA_OK;
}

/* Rank 0: the recorded deck txt (freed here) and layout pp x dp against
 * this run's. */
static losa_status check_same_run(const losa_run *r, const char *what, char *txt, int pp, int dp,
                                  int finished)
{
    if (pp != dist_n_stages(r->d) || dp != dist_n_replicas(r->d)) {
        free(txt);
        return core_err(LOSA_ERR_ARG, "%s: layout changed: %d ranks now (pp %d x dp %d), %d in "
                        "the run (pp %d x dp %d): resume with the run's layout or choose "
                        "another output.dir", what, dist_size(r->d), dist_n_stages(r->d),
                        dist_n_replicas(r->d), pp * dp, pp, dp);
    }
    /* the split: the same (a change of the cost model must not re-split a
     * run whose shards hold the old stages) */
    int rec_split[pp], found = 0;
    const int *now = dist_stage_layers(r->d);
    const char *files[2] = {"ckpt/state.h5", "run.h5"};
    for (int f = 0; f < 2 && !found; f++) {
        char p[1300];
        snprintf(p, sizeof p, "%s/%s", run_dir(r), files[f]);
        found = recorded_split(p, pp, rec_split);
    }
    for (int q = 0; found && now && q < pp; q++)
        if (rec_split[q] != now[q]) {
            char a[256] = "", b[256] = "";
            for (int i = 0; i < pp; i++) {
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%d", i ? "," : "", now[i]);
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%d", i ? "," : "", rec_split[i]);
            }
            free(txt);
            return core_err(LOSA_ERR_ARG, "%s: stage split changed: layers per stage %s now, "
                            "%s in the run (/run/stage_layers): resume with the run's "
                            "parallel.head_cost_layers and the losa that made the run, or "
                            "choose another output.dir", what, a, b);
        }
    deck *was = NULL;
    char rec[1400];
    snprintf(rec, sizeof rec, "%s (recorded deck)", run_dir(r));
    losa_status st = deck_parse(&was, rec, txt);
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

static losa_status prepare_rank0(losa_run *r)
{
    const char *dir = run_dir(r), *store = r->set->model.store.path;
    char p[1300], what[1200];
    struct stat sb;
    snprintf(what, sizeof what, "output.dir %s", dir);
    if (stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return core_err(LOSA_ERR_ARG, "%s: %s: exists and is not a directory", deck_name(r->dk),
                        what);
    if (losa_mkdir_p(dir) != 0)
        return core_err(LOSA_ERR_IO, "%s: cannot create the run directory: %s", what, strerror(errno));
    snprintf(p, sizeof p, "%s/.lock", dir);
    losa_status st = core_lock_acquire(&r->lock, p, what);
    if (st != LOSA_OK) return st;
    snprintf(p, sizeof p, "%s/run.h5", dir);
    int finished = exists(p);
    snprintf(p, sizeof p, "%s/ckpt", dir);
    if (!finished && !is_dir(p) && (st = check_foreign(r, what)) != LOSA_OK) return st;
    snprintf(p, sizeof p, "%s/model.h5", dir);
    if (core_same_file(store, p))
        return core_err(LOSA_ERR_ARG, "%s: model.store %s is the run's own output %s: the input "
                        "would be overwritten; choose another output.dir", deck_name(r->dk), store, p);
    char *txt = NULL;
    int pp, dp, inv;
    int recorded = recorded_settings(dir, &txt, &pp, &dp, &inv);
    r->out.invocations = recorded ? inv + 1 : 1;
    if (!has_results(dir)) { /* nothing that depends on the settings yet */
        free(txt);
        return LOSA_OK;
    }
    if (!recorded) {
        core_log("warning: %s records no settings (made by an older losa): the deck and the "
                 "layout of the resume are not checked\n", what);
        return LOSA_OK;
    }
    return check_same_run(r, what, txt, pp, dp, finished);
}

losa_status losa_run_prepare(losa_run *r)
{
    losa_status st = LOSA_OK;
    r->lock.fd = -1;
    r->lock.path[0] = 0;
    /* the run's stage split (the planner's, losa_stage_split): every rank
     * computes the same from the same settings */
    int pp = dist_n_stages(r->d), first[pp], count[pp];
    losa_stage_split(r->set, &r->in->cfg, pp, first, count);
    dist_set_stage_layers(r->d, count);
    if (dist_rank(r->d) == 0) st = prepare_rank0(r);
    return dist_agree(r->d, st);
}

/* ------------------------------------------------------------ files */

static void layout_text(const losa_run *r, char *buf, size_t n)
{
    snprintf(buf, n, "pp %d x dp %d (%d ranks)", dist_n_stages(r->d), dist_n_replicas(r->d),
             dist_size(r->d));
}

/* /run/stage_layers: layers per stage (pp ints) of the run's split. */
static losa_status write_split(const losa_run *r, io_store *io)
{
    const int *sp = dist_stage_layers(r->d); /* set by losa_run_prepare */
    LOSA_CHECK(sp != NULL);
    int64_t n = dist_n_stages(r->d);
    return io_store_write_ints(io, "/run/stage_layers", sp, 1, &n);
}

losa_status losa_rundir_write_state(losa_run *r)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/ckpt/state.h5", run_dir(r));
    io_store *io = NULL;
    char *deck_txt = settings_deck_dump(r->dk, NULL), layout[128];
    layout_text(r, layout, sizeof layout);
    losa_status s = io_store_create(&io, path);
    if (s == LOSA_OK) s = io_store_reserve(io, (int64_t)strlen(deck_txt) + (256 << 10));
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/deck", deck_txt);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/layout", layout);
    if (s == LOSA_OK) s = io_store_write_attr_int(io, "/run/pp", dist_n_stages(r->d));
    if (s == LOSA_OK) s = io_store_write_attr_int(io, "/run/dp", dist_n_replicas(r->d));
    if (s == LOSA_OK) s = write_split(r, io);
    if (s == LOSA_OK) s = io_store_write_attr_int(io, "/run/invocations", r->out.invocations);
    if (s == LOSA_OK) s = io_store_commit(&io);
    io_store_close(&io);
    free(deck_txt);
    return s;
}

static losa_status write_scalar(io_store *io, const char *name, double v)
{
    int64_t one[1] = {1};
    return io_store_write_doubles(io, name, &v, 1, one);
}

/* The scalars of a losa_result as /<group>/<key> in run.h5 (write and read
 * the same list); an optional key is absent from the files of an older
 * losa (read as NaN). */
static const struct {
    const char *key;
    size_t off;
    int optional;
} result_scalars[] = {
    {"ppl", offsetof(losa_result, ppl), 0},
    {"sparsity", offsetof(losa_result, sparsity), 0},
    {"seconds", offsetof(losa_result, seconds), 0},
    {"train_seconds", offsetof(losa_result, train_seconds), 0},
    {"prune_seconds", offsetof(losa_result, prune_seconds), 0},
    {"eval_seconds", offsetof(losa_result, eval_seconds), 1},
};
#define N_RESULT_SCALARS (sizeof result_scalars / sizeof result_scalars[0])

static losa_status write_result(io_store *io, const char *grp, const losa_result *x)
{
    char n[128];
    losa_status s = LOSA_OK;
    for (size_t k = 0; k < N_RESULT_SCALARS && s == LOSA_OK; k++) {
        snprintf(n, sizeof n, "/%s/%s", grp, result_scalars[k].key);
        s = write_scalar(io, n, *(const double *)((const char *)x + result_scalars[k].off));
    }
    if (s == LOSA_OK && x->n_loss > 0) {
        int64_t sh[1] = {x->n_loss};
        snprintf(n, sizeof n, "/%s/loss", grp);
        s = io_store_write_doubles(io, n, x->loss, 1, sh);
    }
    return s;
}

/* One scalar a file of an older losa may lack: NaN then. */
static losa_status read_optional(io_store *io, const char *name, double *v)
{
    int64_t one[1] = {1};
    *v = NAN;
    return io_store_has(io, name) ? io_store_read_doubles(io, name, v, 1, one) : LOSA_OK;
}

static losa_status read_result(io_store *io, const char *grp, losa_result *x)
{
    char n[128];
    int64_t one[1] = {1};
    losa_status s = LOSA_OK;
    for (size_t k = 0; k < N_RESULT_SCALARS && s == LOSA_OK; k++) {
        snprintf(n, sizeof n, "/%s/%s", grp, result_scalars[k].key);
        double *v = (double *)((char *)x + result_scalars[k].off);
        s = result_scalars[k].optional ? read_optional(io, n, v)
                                       : io_store_read_doubles(io, n, v, 1, one);
    }
    snprintf(n, sizeof n, "/%s/loss", grp);
    if (s == LOSA_OK && io_store_has(io, n)) {
        int nd;
        int64_t sh[IO_MAX_DIMS];
        s = io_store_tensor_shape(io, n, &nd, sh);
        if (s == LOSA_OK) {
            x->n_loss = sh[0];
            x->loss = core_calloc((size_t)sh[0], sizeof(double));
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
    int T = r->set->losa.steps;
    for (int p = 0; p < dist_n_stages(r->d) && s == LOSA_OK; p++) {
        char link[64], file[128];
        snprintf(link, sizeof link, "/shards/stage_%d", p);
        snprintf(file, sizeof file, "ckpt/step_%d/stage_%d.h5", T, p);
        s = io_store_link_external(io, link, file, "/");
        snprintf(link, sizeof link, "/shards/lora_%d", p);
        snprintf(file, sizeof file, "ckpt/step_%d/lora_%d.h5", T, p);
        if (s == LOSA_OK) s = io_store_link_external(io, link, file, "/");
    }
    return s;
}

/* Bytes of run.h5 for io_store_reserve. */
static int64_t run_file_bytes(const losa_run *r, size_t deck_len)
{
    const losa_result *res = r->out.res;
    int64_t doubles = res[LOSA_MODE_PRUNE].n_loss + res[LOSA_MODE_LORA].n_loss +
                      res[LOSA_MODE_LOSA].n_loss + r->in->cfg.n_layers;
    return losa_history_bytes(&r->hist) + (int64_t)deck_len + strlen(r->set->model.store.path) +
           strlen(deck_name(r->dk)) + 8 * doubles +
           H5_PER_DATASET * (40 + 2 * dist_n_stages(r->d)) + H5_SMALL_FILE;
}

/* The /run/ strings: what ran, with which settings, where. */
static losa_status write_run_strings(losa_run *r, io_store *io, const char *deck_txt)
{
    const run_settings *rs = r->set;
    char *rev = git_revision(), layout[128], seeds[128];
    layout_text(r, layout, sizeof layout);
    snprintf(seeds, sizeof seeds, "calib %llu, train %llu",
             (unsigned long long)rs->data.draw.seed, (unsigned long long)rs->train.tc.seed);
    losa_status s = io_store_write_string(io, "/run/deck", deck_txt);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/deck_file", deck_name(r->dk));
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/git_revision", rev);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/layout", layout);
    if (s == LOSA_OK) s = write_split(r, io);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/seeds", seeds);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/mode", losa_mode_str(rs->losa.mode));
    if (s == LOSA_OK)
        s = io_store_write_string(io, "/run/method", prune_method_str(rs->prune.pc.method));
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/pattern", rs->prune.pattern);
    if (s == LOSA_OK) s = io_store_write_string(io, "/run/model", rs->model.store.path);
    free(rev);
    return s;
}

losa_status losa_rundir_write_run_file(losa_run *r)
{
    const losa_results *o = &r->out;
    char path[1300];
    snprintf(path, sizeof path, "%s/run.h5", run_dir(r));
    io_store *io = NULL;
    char *deck_txt = settings_deck_dump(r->dk, NULL);
    losa_status s = io_store_create(&io, path);
    if (s == LOSA_OK) s = io_store_reserve(io, run_file_bytes(r, strlen(deck_txt)));
    if (s == LOSA_OK) s = io_store_write_config(io, &r->in->cfg, r->set->model.store.path);
    if (s == LOSA_OK) s = write_run_strings(r, io, deck_txt);
    if (s == LOSA_OK) s = write_scalar(io, "/run/target_sparsity", r->set->prune.pc.sparsity);
    if (s == LOSA_OK) s = write_scalar(io, "/dense/ppl", o->dense_ppl);
    if (s == LOSA_OK) s = write_scalar(io, "/dense/eval_seconds", o->dense_eval_s);
    /* this invocation's set-up, before the first phase (included in
     * /final/seconds and /final/invocation_seconds) */
    if (s == LOSA_OK) s = write_scalar(io, "/setup/seconds", o->setup_s);
    if (s == LOSA_OK) s = write_scalar(io, "/setup/tokenize_seconds", o->setup_tokenize_s);
    if (s == LOSA_OK) s = write_scalar(io, "/setup/store_seconds", o->setup_store_s);
    if (s == LOSA_OK && o->have[LOSA_MODE_PRUNE]) s = write_result(io, "prune", &o->res[LOSA_MODE_PRUNE]);
    if (s == LOSA_OK && o->have[LOSA_MODE_PRUNE]) {
        int64_t sh[1] = {r->in->cfg.n_layers};
        s = io_store_write_doubles(io, "/prune/recon_err", o->prune_recon, 1, sh);
    }
    if (s == LOSA_OK && o->have[LOSA_MODE_LORA]) s = write_result(io, "lora", &o->res[LOSA_MODE_LORA]);
    if (s == LOSA_OK && o->have[LOSA_MODE_LOSA]) s = write_result(io, "losa", &o->res[LOSA_MODE_LOSA]);
    if (s == LOSA_OK && o->have[LOSA_MODE_LOSA]) s = losa_history_write(&r->hist, io, r->set->losa.steps);
    if (s == LOSA_OK && o->have[LOSA_MODE_LOSA]) s = link_shards(r, io);
    if (s == LOSA_OK) s = write_scalar(io, "/final/dense_ppl", o->dense_ppl);
    if (s == LOSA_OK) s = write_scalar(io, "/final/seconds", o->prev_run_s + (core_time() - o->t0));
    if (s == LOSA_OK) s = write_scalar(io, "/final/invocation_seconds", core_time() - o->t0);
    if (s == LOSA_OK) s = io_store_write_attr_int(io, "/run/invocations", o->invocations);
    if (s == LOSA_OK) s = io_store_commit(&io);
    io_store_close(&io);
    free(deck_txt);
    return s;
}

losa_status losa_rundir_write_model(losa_run *r, const model_stage *s, const char *source)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/model.h5", run_dir(r));
    const tok_tokenizer *tok = &r->in->tok;
    io_store *io = NULL;
    losa_status st = LOSA_OK;
    if (dist_rank(r->d) == 0) {
        st = io_store_create(&io, path);
        if (st == LOSA_OK)
            st = io_store_reserve(io, (int64_t)model_param_count(&s->cfg) * 4 +
                                          tok->offsets[tok->n_vocab] * 2 + 16LL * tok->n_vocab +
                                          8LL * tok->n_merges +
                                          H5_PER_DATASET * (9 * s->cfg.n_layers + 16) + H5_TENSOR_FILE);
    }
    if ((st = dist_agree(r->d, st)) != LOSA_OK) {
        io_store_close(&io);
        return st;
    }
    return losa_store_write_model(r->d, io, s, tok, source);
}

losa_status losa_rundir_save_base(losa_run *r)
{
    if (dist_rank(r->d) != 0) return dist_agree(r->d, LOSA_OK);
    const losa_results *o = &r->out;
    char path[1300];
    snprintf(path, sizeof path, "%s/ckpt/base.h5", run_dir(r));
    io_store *io = NULL;
    losa_status s = io_store_create(&io, path);
    if (s == LOSA_OK)
        s = io_store_reserve(io, 8LL * (o->res[LOSA_MODE_PRUNE].n_loss + o->res[LOSA_MODE_LORA].n_loss +
                                        r->in->cfg.n_layers + 14) + H5_PER_DATASET * 17 + H5_SMALL_FILE);
    if (s == LOSA_OK) s = write_scalar(io, "/dense/ppl", o->dense_ppl);
    if (s == LOSA_OK) s = write_scalar(io, "/dense/eval_seconds", o->dense_eval_s);
    if (s == LOSA_OK) s = write_result(io, "prune", &o->res[LOSA_MODE_PRUNE]);
    if (s == LOSA_OK) {
        int64_t sh[1] = {r->in->cfg.n_layers};
        s = io_store_write_doubles(io, "/prune/recon_err", o->prune_recon, 1, sh);
    }
    if (s == LOSA_OK && o->have[LOSA_MODE_LORA]) s = write_result(io, "lora", &o->res[LOSA_MODE_LORA]);
    if (s == LOSA_OK) s = write_scalar(io, "/final/elapsed", o->prev_run_s + (core_time() - o->t0));
    if (s == LOSA_OK) s = io_store_commit(&io);
    io_store_close(&io);
    return dist_agree(r->d, s);
}

int losa_rundir_load_base(losa_run *r)
{
    losa_results *o = &r->out;
    char path[1300];
    snprintf(path, sizeof path, "%s/ckpt/base.h5", run_dir(r));
    int ok = 0;
    if (dist_rank(r->d) == 0 && access(path, F_OK) == 0) {
        io_store *io = NULL;
        int64_t one[1] = {1}, sh[1] = {r->in->cfg.n_layers};
        losa_status s = io_store_open(&io, path);
        if (s == LOSA_OK) s = io_store_read_doubles(io, "/dense/ppl", &o->dense_ppl, 1, one);
        if (s == LOSA_OK) s = read_optional(io, "/dense/eval_seconds", &o->dense_eval_s);
        if (s == LOSA_OK) s = read_result(io, "prune", &o->res[LOSA_MODE_PRUNE]);
        if (s == LOSA_OK) s = io_store_read_doubles(io, "/prune/recon_err", o->prune_recon, 1, sh);
        if (s == LOSA_OK && r->set->losa.mode == LOSA_MODE_COMPARE)
            s = read_result(io, "lora", &o->res[LOSA_MODE_LORA]);
        if (s == LOSA_OK && io_store_has(io, "/final/elapsed"))
            s = io_store_read_doubles(io, "/final/elapsed", &o->prev_run_s, 1, one);
        io_store_close(&io);
        ok = s == LOSA_OK;
    }
    dist_bcast(r->d, &ok, sizeof ok, 0);
    return ok;
}
