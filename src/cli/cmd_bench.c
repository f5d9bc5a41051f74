/* losa bench <what>: dispatch to the benchmark of each module. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_bench(dist_ctx *d, int argc, char **argv)
{
    static const struct { const char *name; cli_cmd_fn fn; } b[] = {
        {"forward", bench_forward}, {"train", bench_train}, {"prune", bench_prune},
        {"sparse", bench_sparse}, {"decode", bench_decode}, {"pipeline", bench_pipeline},
    };
    if (argc >= 2)
        for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
            if (!strcmp(argv[1], b[i].name)) return b[i].fn(d, argc - 1, argv + 1);
    return cli_error(d, "bench", 2, "%s%s%s (usage: losa bench forward|train|prune|sparse|"
                     "decode|pipeline [options] [--json]; losa bench <what> --help)",
                     argc >= 2 ? "unknown benchmark '" : "which benchmark?",
                     argc >= 2 ? argv[1] : "", argc >= 2 ? "'" : "");
}
