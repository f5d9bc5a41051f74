/* cli: the losa subcommands.  Each cmd_<name> runs on every rank (they are
 * collective over MPI_COMM_WORLD), parses its own arguments, and returns 0 on
 * success.  Errors are agreed with dist_agree() so every rank stops together
 * and rank 0 prints one line. */
#ifndef LOSA_CLI_H
#define LOSA_CLI_H

#include "core.h"
#include "dist.h"

typedef int (*cli_cmd_fn)(dist_ctx *d, int argc, char **argv);

int cmd_import(dist_ctx *d, int argc, char **argv);
int cmd_info(dist_ctx *d, int argc, char **argv);
int cmd_eval(dist_ctx *d, int argc, char **argv);
int cmd_generate(dist_ctx *d, int argc, char **argv);
int cmd_bench(dist_ctx *d, int argc, char **argv);
int cmd_prune(dist_ctx *d, int argc, char **argv);
int cmd_finetune(dist_ctx *d, int argc, char **argv);
int cmd_run(dist_ctx *d, int argc, char **argv);
int cmd_export(dist_ctx *d, int argc, char **argv);
int cmd_synth(dist_ctx *d, int argc, char **argv);
int cmd_plan(dist_ctx *d, int argc, char **argv);

/* Shared option helpers. */
/* Returns the value after flag at argv[*i] ("--flag V" or "--flag=V"), or NULL
 * if argv[*i] is not that flag; advances *i past a separate value. */
const char *cli_opt(int argc, char **argv, int *i, const char *flag);
/* Report a failure on every rank: agrees on status s and prints the message
 * once (rank 0): "losa <cmd>: <message>".  Returns the exit code (0 if OK). */
int cli_fail(dist_ctx *d, const char *cmd, losa_status s);



/* bench sub-benchmarks (each in its own file; cmd_bench dispatches). */
int bench_forward(dist_ctx *d, int argc, char **argv);
int bench_train(dist_ctx *d, int argc, char **argv);
int bench_prune(dist_ctx *d, int argc, char **argv);
int bench_sparse(dist_ctx *d, int argc, char **argv);
int bench_pipeline(dist_ctx *d, int argc, char **argv);
#endif
