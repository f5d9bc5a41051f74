/* losa plan: the layout advisor.  For P ranks, every (pp, dp, B, accum)
 * with pp x dp = P, pp <= layers and B x accum = the deck's sequences per
 * optimizer step (identical optimizer math: the loss is a token mean over
 * the whole step), projected by losa_time_plan and sized by
 * losa_memory_plan; the fastest that fits is the advice. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plan.h"

plan_layout plan_layout_eval(const run_settings *rs, const model_config *c, int pp, int dp, int B,
                             int accum, const losa_rates *rt, double mem_per_rank)
{
    run_settings r = *rs;
    r.train.tc.B = B;
    r.train.tc.grad_accum = accum;
    plan_layout l = {.pp = pp, .dp = dp, .B = B, .accum = accum};
    losa_time *t = core_malloc(1, sizeof *t);
    losa_time_plan(&r, c, pp, dp, rt, t);
    l.seconds = t->total;
    l.setup = t->wall[LOSA_PHASE_SETUP];
    core_free(t);
    for (int s = 0; s < pp; s++) {
        losa_memory m;
        losa_memory_plan(&r, c, pp, dp, s, 0, &m);
        if ((double)m.peak > l.peak) l.peak = (double)m.peak;
    }
    l.fits = mem_per_rank <= 0 || l.peak <= mem_per_rank;
    return l;
}

static int by_time(const void *a, const void *b)
{
    const plan_layout *x = a, *y = b;
    if (x->fits != y->fits) return y->fits - x->fits;
    return (x->seconds > y->seconds) - (x->seconds < y->seconds);
}

int plan_layouts(const run_settings *rs, const model_config *c, int ranks, const losa_rates *rt,
                 double mem_per_rank, plan_layout *out, int max)
{
    int G = rs->train.tc.B * rs->train.tc.grad_accum, n = 0;
    for (int pp = 1; pp <= ranks && pp <= c->n_layers && pp <= LOSA_TIME_MAX_STAGES; pp++) {
        if (ranks % pp) continue;
        for (int B = 1; B <= G && n < max; B++)
            if (G % B == 0)
                out[n++] = plan_layout_eval(rs, c, pp, ranks / pp, B, G / B, rt, mem_per_rank);
    }
    qsort(out, (size_t)n, sizeof *out, by_time);
    return n;
}

#define PLAN_MAX_LAYOUTS 4096

plan_layout plan_best_layout(const run_settings *rs, const model_config *c, int ranks,
                             const losa_rates *rt, double mem_per_rank)
{
    plan_layout *all = core_malloc(PLAN_MAX_LAYOUTS, sizeof *all), best = {0};
    int n = plan_layouts(rs, c, ranks, rt, mem_per_rank, all, PLAN_MAX_LAYOUTS);
    if (n > 0 && all[0].fits) best = all[0];
    core_free(all);
    return best;
}

static void set_line(const plan_layout *l, char *buf, size_t n)
{
    snprintf(buf, n, "--set parallel.pp=%d --set parallel.dp=%d --set train.batch=%d "
             "--set train.grad_accum=%d", l->pp, l->dp, l->B, l->accum);
}

/* Projected best time for 1, 2, 4, ... ranks up to `ranks` (and ranks). */
static int scaling(const run_settings *rs, const model_config *c, int ranks, const losa_rates *rt,
                   double mem, int *p, double *sec, int max)
{
    int n = 0;
    for (int q = 1; n < max; q = q * 2 > ranks && q < ranks ? ranks : q * 2) {
        plan_layout b = plan_best_layout(rs, c, q, rt, mem);
        p[n] = q;
        sec[n++] = b.seconds;
        if (q >= ranks) break;
    }
    return n;
}

void plan_advise_print(const run_settings *rs, const model_config *c, int ranks,
                       const losa_rates *rt, double mem_per_rank, const plan_layout *cur)
{
    plan_layout *all = core_malloc(PLAN_MAX_LAYOUTS, sizeof *all);
    int n = plan_layouts(rs, c, ranks, rt, mem_per_rank, all, PLAN_MAX_LAYOUTS);
    printf("layouts of %d ranks with the same optimizer step (%d sequences):\n", ranks,
           rs->train.tc.B * rs->train.tc.grad_accum);
    printf("  %4s %4s %5s %6s %12s %10s %s\n", "pp", "dp", "batch", "accum", "wall_s", "peak_GB",
           "");
    for (int i = 0; i < n && i < 12; i++) {
        const plan_layout *l = &all[i];
        int is_cur = l->pp == cur->pp && l->dp == cur->dp && l->B == cur->B && l->accum == cur->accum;
        printf("  %4d %4d %5d %6d %12.1f %10.3f %s%s\n", l->pp, l->dp, l->B, l->accum, l->seconds,
               l->peak / 1e9, l->fits ? "" : "does not fit ", i == 0 && l->fits ? "<- fastest" :
               is_cur ? "<- the deck" : "");
    }
    if (n > 12) printf("  ... %d more\n", n - 12);
    if (n > 0 && all[0].fits) {
        char line[200];
        set_line(&all[0], line, sizeof line);
        printf("advice: %s  (%.2fx the deck's projected speed)\n", line, cur->seconds / all[0].seconds);
        int p[32];
        double sec[32];
        int k = scaling(rs, c, ranks, rt, 0, p, sec, 32);
        printf("scaling (fastest layout per rank count, memory aside): ");
        int useful = 1;
        for (int i = 0; i < k; i++) {
            printf("%s%d ranks %.0f s (efficiency %.2f)", i ? ", " : "", p[i], sec[i],
                   sec[0] / (sec[i] * p[i]));
            if (i > 0 && sec[i] < 0.95 * sec[i - 1]) useful = p[i];
        }
        printf("\n");
        if (useful < ranks)
            printf("note: beyond %d ranks the projected time improves by less than 5%% per "
                   "doubling at %d sequences per step: the pipeline bubble and the replicas' "
                   "share of the step limit what more ranks add\n", useful,
                   rs->train.tc.B * rs->train.tc.grad_accum);
    } else {
        printf("advice: no layout of %d ranks fits the memory per rank\n", ranks);
    }
    core_free(all);
}

void plan_advise_json(cJSON *o, const run_settings *rs, const model_config *c, int ranks,
                      const losa_rates *rt, double mem_per_rank, const plan_layout *cur)
{
    plan_layout best = plan_best_layout(rs, c, ranks, rt, mem_per_rank);
    cJSON *a = cJSON_AddObjectToObject(o, "advice");
    cJSON_AddNumberToObject(a, "deck_seconds", cur->seconds);
    if (best.seconds > 0) {
        char line[200];
        set_line(&best, line, sizeof line);
        cJSON_AddNumberToObject(a, "pp", best.pp);
        cJSON_AddNumberToObject(a, "dp", best.dp);
        cJSON_AddNumberToObject(a, "batch", best.B);
        cJSON_AddNumberToObject(a, "grad_accum", best.accum);
        cJSON_AddNumberToObject(a, "seconds", best.seconds);
        cJSON_AddNumberToObject(a, "peak_bytes", best.peak);
        cJSON_AddStringToObject(a, "set", line);
        plan_layout one = plan_best_layout(rs, c, 1, rt, 0); /* memory aside */
        if (one.seconds > 0)
            cJSON_AddNumberToObject(a, "parallel_efficiency", one.seconds / (best.seconds * ranks));
    }
}
