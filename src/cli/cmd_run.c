/* losa run DECK.ini [--set section.key=value ...] [--json]
 * The LoSA pipeline and its baselines (src/losa/run.c); resumes from the
 * last complete checkpoint of an existing run directory. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calib.h"
#include "cli.h"
#include "plan.h"
#include "io.h"
#include "losa.h"
#include "settings.h"

static void print_table(const losa_results *o, prune_method method)
{
    static const char *const suffix[LOSA_N_MODES] = {"", "+LoRA", "+LoSA", ""};
    core_log("\n%-14s %12s %10s %10s\n", "model", "ppl", "sparsity", "seconds");
    core_log("%-14s %12.4f %10.4f %10s\n", "dense", o->dense_ppl, 0.0, "-");
    for (int m = LOSA_MODE_PRUNE; m <= LOSA_MODE_LOSA; m++) {
        if (!o->have[m]) continue;
        char n[32];
        snprintf(n, sizeof n, "%s%s", prune_method_str(method), suffix[m]);
        core_log("%-14s %12.4f %10.4f %10.1f\n", n, o->res[m].ppl, o->res[m].sparsity,
                 o->res[m].seconds);
    }
}

static void json_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

/* The test hooks of the run, from the command line and the environment:
 * read here, at the boundary, and handed to the run (its loop reads no
 * environment). */
static void run_hooks(int stop_after, losa_hooks *h)
{
    memset(h, 0, sizeof *h);
    h->stop_after = stop_after;
    const char *v = getenv("LOSA_FAULT_KILL");
    if (v) h->kill_step = atoi(v);
    v = getenv("LOSA_FAULT_NAN");
    if (v) snprintf(h->nan_at, sizeof h->nan_at, "%s", v);
}

/* Collective: the settings (checked again once the model's configuration
 * is known), the model's configuration and tokenizer, the layout. */
static losa_status run_setup(dist_ctx *d, const deck *dk, run_settings *rs, losa_inputs *in)
{
    losa_status s = run_settings_from_deck(dk, NULL, SETTINGS_RUN, rs);
    if ((s = dist_agree(d, s)) == LOSA_OK) s = losa_inputs_read_model(d, &rs->model, in);
    if (s == LOSA_OK) s = run_settings_from_deck(dk, &in->cfg, SETTINGS_RUN, rs);
    int pp = 0, dp = 0;
    if (s == LOSA_OK)
        s = parallel_settings_layout(&rs->parallel, dist_size(d), &in->cfg, &pp, &dp);
    if ((s = dist_agree(d, s)) == LOSA_OK) s = dist_set_layout(d, pp, dp);
    return dist_agree(d, s);
}

static void run_json(dist_ctx *d, const losa_run *r)
{
    const losa_results *o = &r->out;
    cJSON *j = cJSON_CreateObject();
    json_num(j, "dense_ppl", o->dense_ppl);
    if (o->have[LOSA_MODE_PRUNE]) json_num(j, "pruned_ppl", o->res[LOSA_MODE_PRUNE].ppl);
    if (o->have[LOSA_MODE_LORA]) json_num(j, "lora_ppl", o->res[LOSA_MODE_LORA].ppl);
    if (o->have[LOSA_MODE_LOSA]) json_num(j, "losa_ppl", o->res[LOSA_MODE_LOSA].ppl);
    int last = o->have[LOSA_MODE_LOSA] ? LOSA_MODE_LOSA : o->have[LOSA_MODE_LORA] ? LOSA_MODE_LORA
                                                                                : LOSA_MODE_PRUNE;
    json_num(j, "sparsity", o->res[last].sparsity);
    json_num(j, "seconds", core_time() - o->t0);
    cJSON_AddStringToObject(j, "run_dir", r->set->output.dir.path);
    cli_json_emit(d, j);
}

/* Rank 0, once: a warning when the deck's layout is projected more than
 * LAYOUT_WARN_RATIO x slower than the fastest layout of the same ranks that
 * fits this machine's memory (losa plan's advisor, nominal rates: only the
 * ratio matters, so the set-up, in the default rates' seconds and nearly
 * the same for every layout, is left out of it). */
#define LAYOUT_WARN_RATIO 1.5
static void layout_warning(const run_settings *rs, const losa_inputs *in, int pp, int dp)
{
    if (pp > LOSA_TIME_MAX_STAGES) return;
    plan_time_opts o; /* losa plan's network defaults */
    plan_time_opts_default(&o);
    losa_rates rt = {.fwd_gflops = 100, .train_gflops = 100, .gemm_gflops = 100,
                     .net_gbps = o.net_gbps, .net_latency_us = o.net_latency_us,
                     .eval_tokens = in->n_eval};
    double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE) / (pp * dp);
    plan_layout cur = plan_layout_eval(rs, &in->cfg, pp, dp, rs->train.tc.B, rs->train.tc.grad_accum,
                                       &rt, 0);
    plan_layout best = plan_best_layout(rs, &in->cfg, pp * dp, &rt, mem);
    double cw = cur.seconds - cur.setup, bw = best.seconds - best.setup;
    if (bw > 0 && cw > LAYOUT_WARN_RATIO * bw)
        core_log("warning: layout pp %d x dp %d, micro-batch %d x %d per step is projected %.1fx "
                 "slower than pp %d x dp %d, micro-batch %d x %d (the same optimizer step): "
                 "--set parallel.pp=%d --set parallel.dp=%d --set train.batch=%d "
                 "--set train.grad_accum=%d (losa plan DECK --ranks %d shows the layouts)\n",
                 pp, dp, rs->train.tc.B, rs->train.tc.grad_accum, cw / bw,
                 best.pp, best.dp, best.B, best.accum, best.pp, best.dp, best.B, best.accum,
                 pp * dp);
}

int cmd_run(dist_ctx *d, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return cli_error(d, "run", 2, "DECK.ini: missing (usage: losa run DECK.ini "
                         "[--set section.key=value ...] [--json])");
    int json = 0, stop_after = 0;
    losa_status s = LOSA_OK;
    for (int i = 2; i < argc && s == LOSA_OK; i++) {
        const char *v;
        if (!strcmp(argv[i], "--json")) json = 1;
        else if ((v = cli_opt(argc, argv, &i, "--set"))) continue;
        else if ((v = cli_opt(argc, argv, &i, "--stop-after"))) s = cli_int("--stop-after", v, 0, 1000, &stop_after);
        else s = core_err(LOSA_ERR_ARG, "unknown argument '%s' (usage: losa run DECK.ini "
                          "[--set section.key=value ...] [--json])", argv[i]);
    }
    if (cli_fail(d, "run", s)) return 1;
    deck *dk = NULL;
    run_settings rs;
    losa_inputs in;
    losa_hooks hooks;
    losa_run r;
    memset(&rs, 0, sizeof rs);
    memset(&in, 0, sizeof in);
    run_hooks(stop_after, &hooks);
    s = cli_load_deck(d, argv[1], argc - 1, argv + 1, &dk);
    if (s == LOSA_OK) s = run_setup(d, dk, &rs, &in);
    losa_run_init(&r, d, dk, &rs, &in, &hooks);
    /* the run directory: checked, locked, same settings as the run it holds */
    if ((s = dist_agree(d, s)) == LOSA_OK) s = losa_run_prepare(&r);
    if ((s = dist_agree(d, s)) == LOSA_OK) s = losa_inputs_load_data(d, &rs, &in);
    int rc = cli_fail(d, "run", s);
    if (rc == 0 && dist_rank(d) == 0) layout_warning(&rs, &in, dist_n_stages(d), dist_n_replicas(d));
    if (rc == 0) rc = cli_fail(d, "run", losa_run_execute(&r));
    if (rc == 0) {
        print_table(&r.out, rs.prune.pc.method);
        core_log("run directory: %s (run.h5, model.h5)\n", rs.output.dir.path);
        if (json) run_json(d, &r);
    }
    losa_run_free(&r);
    losa_inputs_free(&in);
    run_settings_free(&rs);
    deck_free(&dk);
    return rc;
}
