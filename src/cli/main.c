/* losa: git-style entry point.  Every subcommand runs under MPI (one rank
 * is fine); each cmd_<name> is in src/cli/cmd_<name>.c.
 * --help / -h of any command and `losa help` are answered here from the
 * tables of help.c, before MPI starts (rank 0 of a launch prints).  With
 * --json, a failing command that printed no JSON object gets one here:
 * {"error": "<message>", "code": <exit code>} (cli_json_error). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The one-line summaries and the flags are in help.c. */
static const struct { const char *name; cli_cmd_fn fn; } cmds[] = {
    {"import", cmd_import}, {"info", cmd_info}, {"eval", cmd_eval},
    {"generate", cmd_generate}, {"bench", cmd_bench}, {"prune", cmd_prune},
    {"finetune", cmd_finetune}, {"run", cmd_run}, {"export", cmd_export},
    {"synth", cmd_synth}, {"plan", cmd_plan}, {"sparsify", cmd_sparsify},
};

const char *cli_opt(int argc, char **argv, int *i, const char *flag)
{
    size_t n = strlen(flag);
    if (strncmp(argv[*i], flag, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != '\0') return NULL;
    if (*i + 1 >= argc) return NULL;
    (*i)++;
    return argv[*i];
}

static int is_help(const char *a)
{
    return !strcmp(a, "--help") || !strcmp(a, "-h");
}

/* This process's rank as the launcher (mpirun, srun) tells it, before MPI is
 * initialized; 0 outside a launcher. */
static int launcher_rank(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
}

/* losa help [COMMAND [BENCHMARK]]: needs no MPI (rank 0 of a launch prints). */
static int help_cmd(int argc, char **argv)
{
    int r0 = launcher_rank() == 0;
    if (argc < 3) {
        if (r0) cli_help_list(stdout);
        return 0;
    }
    const cli_help *h = cli_help_find(argv[2], argc > 3 ? argv[3] : NULL);
    if (!h) {
        if (r0) fprintf(stderr, "losa help: unknown command '%s' (losa help lists the commands)\n",
                        argv[2]);
        return 2;
    }
    if (r0) cli_help_print(stdout, h);
    return 0;
}

int main(int argc, char **argv)
{
    core_time_origin_set(); /* the run's set-up seconds count from here */
    if (argc < 2) {
        cli_help_list(stderr);
        return 2;
    }
    if (is_help(argv[1])) {
        if (launcher_rank() == 0) cli_help_list(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "help")) return help_cmd(argc, argv);
    cli_cmd_fn fn = NULL;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) fn = cmds[i].fn;
    /* --help and --json anywhere among the arguments, not as a flag's value */
    const cli_help *h = cli_help_find(argv[1], argc > 2 ? argv[2] : NULL);
    int help = 0, json = 0;
    for (int i = h && strchr(h->name, ' ') ? 3 : 2; i < argc && !help; i++) {
        if (is_help(argv[i])) help = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (cli_help_takes_value(h, argv[i])) i++;
    }
    if (fn && h && help) { /* before MPI: instant, and works without a launcher */
        if (launcher_rank() == 0) cli_help_print(stdout, h);
        return 0;
    }
    core_alloc_init();
    dist_ctx *d = NULL;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) {
        fprintf(stderr, "losa: %s\n", core_errmsg());
        return 1;
    }
    cli_json_mode(json);
    int rc;
    if (!fn || !h)
        rc = cli_error(d, NULL, 2, "unknown command '%s' (losa help lists the commands)", argv[1]);
    else
        rc = fn(d, argc - 1, argv + 1);
    cli_json_error(d, rc);
    fflush(stdout);
    dist_finalize(&d);
    return rc;
}
