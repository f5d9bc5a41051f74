/* The shape options bench forward and bench train share (cli.h,
 * bench_shape): --model, --batch, --seqlen, --iters, and the cap of the
 * sequence length at the model's max_seq_len. */
#include "cli.h"

int bench_shape_opt(int argc, char **argv, int *i, bench_shape *sh, losa_status *s)
{
    const char *v;
    if ((v = cli_opt(argc, argv, i, "--model"))) sh->model = v;
    else if ((v = cli_opt(argc, argv, i, "--batch"))) *s = cli_int("--batch", v, 1, 65536, &sh->B);
    else if ((v = cli_opt(argc, argv, i, "--seqlen"))) {
        *s = cli_int("--seqlen", v, 2, 1048576, &sh->T);
        sh->T_set = 1;
    } else if ((v = cli_opt(argc, argv, i, "--iters")))
        *s = cli_int("--iters", v, 1, 1000000, &sh->iters);
    else return 0;
    return 1;
}

losa_status bench_shape_fit(bench_shape *sh, const model_config *c)
{
    if (sh->T > c->max_seq_len && sh->T_set) /* the default is capped, an explicit T is not */
        return core_err(LOSA_ERR_ARG, "--seqlen: %d exceeds the model's max_seq_len %d", sh->T,
                        c->max_seq_len);
    if (sh->T > c->max_seq_len) sh->T = c->max_seq_len;
    return LOSA_OK;
}
