/* The per-step history of the LoSA loop and the checkpoints of `losa run`:
 *   ckpt/step_<t>/   stage_<s>.h5 (weights), lora_<s>.h5 (adapters),
 *                    metrics.h5 (rank 0: the history of steps 1..t),
 *                    COMPLETE (written last);
 *   step_<t>.damaged.<n>: one found unreadable, set aside. */
#include "run_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ history */

void losa_history_init(losa_history *h, int T, int L, int64_t loss_cap)
{
    memset(h, 0, sizeof *h);
    h->T = T;
    h->L = L;
    h->loss_cap = loss_cap;
    int64_t t = T, l = L;
    /* doubles: s_t, 4 x (L) tables, cka, ppl, loss, secs, elapsed; ints:
     * rank, rank_active, loss_len (after the doubles: aligned) */
    int64_t nd = t * (1 + 4 * l + (l + 1) * (l + 1) + 1 + loss_cap + LOSA_N_SECS + LOSA_N_ELAPSED);
    int64_t ni = t * (2 * l + 1);
    h->block = core_calloc((size_t)(nd * (int64_t)sizeof(double) + ni * (int64_t)sizeof(int)), 1);
    double *p = h->block;
    h->s_t = p, p += t;
    h->sparsity = p, p += t * l;
    h->measured = p, p += t * l;
    h->importance = p, p += t * l;
    h->cka = p, p += t * (l + 1) * (l + 1);
    h->recon = p, p += t * l;
    h->ppl = p, p += t;
    h->loss = p, p += t * loss_cap;
    h->secs = p, p += t * LOSA_N_SECS;
    h->elapsed = p, p += t * LOSA_N_ELAPSED;
    int *q = (int *)p;
    h->rank = q, q += t * l;
    h->rank_active = q, q += t * l;
    h->loss_len = q;
    losa_history_reset(h);
}

void losa_history_reset(losa_history *h)
{
    memset(h->block, 0, (size_t)((char *)(h->loss_len + h->T) - (char *)h->block));
    for (int t = 0; t < h->T; t++) h->ppl[t] = NAN;
}

void losa_history_free(losa_history *h)
{
    core_free(h->block);
    memset(h, 0, sizeof *h);
}

/* The history's datasets: one table serves writing and reading. */
typedef struct {
    const char *name;
    double *d; /* or */
    int *i;
    int ndim;
    int64_t shape[3];
} metric_ds;

static int metric_table(const losa_history *h, metric_ds *m)
{
    int64_t L = h->L, T = h->T;
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
        {"/losa/steps/seconds", h->secs, NULL, 2, {T, LOSA_N_SECS}},
    };
    int n = (int)(sizeof t / sizeof t[0]);
    memcpy(m, t, sizeof t);
    return n;
}

losa_status losa_history_write(const losa_history *h, io_store *io, int upto)
{
    metric_ds m[16];
    int n = metric_table(h, m);
    int64_t one[1] = {1};
    double up = upto;
    losa_status s = io_store_write_doubles(io, "/losa/steps_done", &up, 1, one);
    for (int k = 0; k < n && s == LOSA_OK; k++)
        s = m[k].d ? io_store_write_doubles(io, m[k].name, m[k].d, m[k].ndim, m[k].shape)
                   : io_store_write_ints(io, m[k].name, m[k].i, m[k].ndim, m[k].shape);
    int64_t sh2[2] = {h->T, LOSA_N_ELAPSED};
    if (s == LOSA_OK) s = io_store_write_doubles(io, "/losa/steps/elapsed", h->elapsed, 2, sh2);
    return s;
}

static losa_status history_read(losa_history *h, io_store *io)
{
    metric_ds m[16];
    int n = metric_table(h, m);
    losa_status s = LOSA_OK;
    for (int k = 0; k < n && s == LOSA_OK; k++)
        s = m[k].d ? io_store_read_doubles(io, m[k].name, m[k].d, m[k].ndim, m[k].shape)
                   : io_store_read_ints(io, m[k].name, m[k].i, m[k].ndim, m[k].shape);
    /* elapsed seconds: absent in checkpoints of an older losa (then the
     * steps' own phase times stand for them) */
    int64_t sh2[2] = {h->T, LOSA_N_ELAPSED};
    if (s == LOSA_OK && io_store_has(io, "/losa/steps/elapsed"))
        s = io_store_read_doubles(io, "/losa/steps/elapsed", h->elapsed, 2, sh2);
    else if (s == LOSA_OK) {
        double sum = 0;
        for (int t = 0; t < h->T; t++) {
            for (int j = 0; j < LOSA_N_SECS; j++) sum += h->secs[t * LOSA_N_SECS + j];
            h->elapsed[t * LOSA_N_ELAPSED + LOSA_ELAPSED_LOSA] = sum;
            h->elapsed[t * LOSA_N_ELAPSED + LOSA_ELAPSED_RUN] = sum;
        }
    }
    return s;
}

int64_t losa_history_bytes(const losa_history *h)
{
    int64_t T = h->T, L = h->L;
    /* steps_done and the table (rank and loss_len int32), the 2 elapsed
     * columns and rank_active per step; 1 KB per dataset (14) + slack */
    return 8 * (1 + T * (8 + 5 * L + (L + 1) * (L + 1) + h->loss_cap)) + 4 * T * (L + 1) +
           H5_PER_DATASET * 14 + H5_SMALL_FILE;
}

/* ------------------------------------------------------------ checkpoints */

static void step_dir(const losa_run *r, int t, char *buf, size_t n)
{
    snprintf(buf, n, "%s/ckpt/step_%d", r->set->output.dir.path, t);
}

int losa_ckpt_last(const losa_run *r)
{
    for (int t = r->set->losa.steps; t >= 1; t--) {
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

/* This stage's weights and adapters into dir (the first replica writes; a
 * bf16 stage's maps in bf16, read back into a bf16 stage as they are). */
static losa_status write_shards(losa_run *r, const char *dir, model_stage *s, lora_adapters *ad)
{
    char path[1400], tmp[1500];
    io_store *io = NULL;
    snprintf(path, sizeof path, "%s/stage_%d.h5", dir, dist_stage(r->d));
    losa_status st = io_store_create(&io, path);
    if (st == LOSA_OK)
        st = io_store_reserve(io, (int64_t)s->n_params * 4 + (int64_t)s->n_params_bf16 * 2 +
                                      H5_PER_DATASET * (9 * s->n_layers + 8) + H5_TENSOR_FILE);
    if (st == LOSA_OK) st = io_store_write_config(io, &s->cfg, "losa run checkpoint shard");
    if (st == LOSA_OK) st = io_store_write_stage(io, s);
    if (st == LOSA_OK) st = io_store_commit(&io);
    io_store_close(&io);
    if (st != LOSA_OK) return st;
    snprintf(path, sizeof path, "%s/lora_%d.h5", dir, dist_stage(r->d));
    core_tmpname(tmp, sizeof tmp, path);
    st = io_adapters_write(tmp, 1, ad, &s->cfg);
    if (st == LOSA_OK) st = core_commit_file(tmp, path);
    else unlink(tmp);
    return st;
}

losa_status losa_ckpt_write(losa_run *r, int t, model_stage *s, lora_adapters *ad)
{
    char dir[1300], path[1400];
    step_dir(r, t, dir, sizeof dir);
    losa_status st = LOSA_OK;
    if (dist_rank(r->d) == 0 && losa_mkdir_p(dir) != 0)
        st = core_err(LOSA_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    if ((st = dist_agree(r->d, st)) != LOSA_OK) return st;
    if (dist_replica(r->d) == 0) st = write_shards(r, dir, s, ad);
    if (st == LOSA_OK && dist_rank(r->d) == 0) {
        io_store *io = NULL;
        snprintf(path, sizeof path, "%s/metrics.h5", dir);
        st = io_store_create(&io, path);
        if (st == LOSA_OK) st = io_store_reserve(io, losa_history_bytes(&r->hist));
        if (st == LOSA_OK) st = losa_history_write(&r->hist, io, t);
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

losa_status losa_ckpt_read(losa_run *r, int t, model_stage *s, lora_adapters *ad)
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
        if (st == LOSA_OK) st = history_read(&r->hist, io);
        io_store_close(&io);
    }
    return dist_agree(r->d, st);
}

losa_status losa_ckpt_set_aside(losa_run *r, int t)
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
