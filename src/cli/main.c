/* losa: git-style entry point.  Every subcommand runs under MPI (one rank
 * is fine).  Subcommands not built yet are weak stubs that say so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define STUB(name)                                                          \
    __attribute__((weak)) int cmd_##name(dist_ctx *d, int argc, char **argv) \
    {                                                                       \
        (void)argc; (void)argv;                                             \
        if (dist_rank(d) == 0)                                              \
            fprintf(stderr, "losa " #name ": not available in this build\n"); \
        return 2;                                                           \
    }
STUB(import) STUB(info) STUB(eval) STUB(generate) STUB(bench) STUB(prune)
STUB(finetune) STUB(run) STUB(export) STUB(synth) STUB(plan) STUB(sparsify)

static const struct { const char *name; cli_cmd_fn fn; const char *help; } cmds[] = {
    {"import", cmd_import, "HF safetensors dir or llama2.c checkpoint -> HDF5 store"},
    {"info", cmd_info, "what a store or run dir holds"},
    {"eval", cmd_eval, "perplexity / zero-shot evaluation"},
    {"generate", cmd_generate, "sample text"},
    {"bench", cmd_bench, "benchmarks (forward, train, prune, sparse, pipeline)"},
    {"prune", cmd_prune, "one-shot pruning (DECK.ini)"},
    {"finetune", cmd_finetune, "masked LoRA fine-tuning (DECK.ini)"},
    {"run", cmd_run, "the LoSA pipeline (DECK.ini)"},
    {"export", cmd_export, "run dir or store -> HF safetensors"},
    {"synth", cmd_synth, "synthetic store with real layer shapes"},
    {"plan", cmd_plan, "memory / FLOP / communication plan for a deck"},
    {"sparsify", cmd_sparsify, "keep sparse copies of the pruned maps in the store"},
};

static void usage(void)
{
    fprintf(stderr, "usage: losa <command> [args] [--json]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(stderr, "  %-9s %s\n", cmds[i].name, cmds[i].help);
    fprintf(stderr, "\nrun under MPI: mpirun -np P build/losa <command> ...\n");
}

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

int cli_fail(dist_ctx *d, const char *cmd, losa_status s)
{
    losa_status g = dist_agree(d, s);
    if (g == LOSA_OK) return 0;
    if (dist_rank(d) == 0) fprintf(stderr, "losa %s: %s\n", cmd, core_errmsg());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    dist_ctx *d = NULL;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) {
        fprintf(stderr, "losa: %s\n", core_errmsg());
        return 1;
    }
    int rc = -1;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) rc = cmds[i].fn(d, argc - 1, argv + 1);
    if (rc == -1) {
        if (dist_rank(d) == 0) {
            fprintf(stderr, "losa: unknown command '%s'\n", argv[1]);
            usage();
        }
        rc = 2;
    }
    dist_finalize(&d);
    return rc;
}
