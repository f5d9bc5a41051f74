/* losa <command> --help: one table per command of the flags it accepts, with
 * their defaults.  main prints them before dispatch (so the commands need not
 * handle --help), and uses them to tell a flag's value from a flag when it
 * looks for --help / --json.  tests/test_cli_help.sh checks that every flag a
 * command's source parses appears in its table. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define JSON_FLAG {"--json", NULL, NULL, "print one JSON object on stdout (progress stays on stderr); "\
                   "on failure {\"error\": ..., \"code\": N}"}
#define SET_FLAG {"--set", "section.key=value", NULL, "override a deck key (repeatable; the "\
                  "deck's own validation applies)"}
#define END {NULL, NULL, NULL, NULL}

static const cli_flag f_import[] = {
    {"--out", "STORE.h5", NULL, "the store to write (required)"},
    {"--tokenizer", "tokenizer.bin", NULL, "llama2.c tokenizer (required for a llama2.c "
                                           "checkpoint; a HF directory has tokenizer.json)"},
    {"--dtype", "keep|fp32|bf16", "keep", "weight dtype of the store: keep stores a BF16 "
                                          "checkpoint's maps, embedding and head as bf16 "
                                          "(bit for bit), an F32 one as fp32; norms are fp32"},
    JSON_FLAG, END};
static const cli_flag f_info[] = {JSON_FLAG, END};
static const cli_flag f_eval[] = {
    {"--model", "STORE.h5", NULL, "model store or run directory (required)"},
    {"--ppl", "TEXT", NULL, "text file for perplexity"},
    {"--seqlen", "S", "256", "perplexity window in tokens, 2..1048576"},
    {"--batch", "B", "8", "windows per forward call, 1..65536"},
    {"--max-windows", "N", "0 (all)", "evaluate only the first N windows"},
    {"--zeroshot", "TASKS", NULL, "comma-separated zero-shot tasks (input/tasks/)"},
    {"--limit", "K", "0 (all)", "items per zero-shot task"},
    {"--sparse", "auto|on|off", "auto", "sparse kernels where they pay (auto), for every map "
                                        "(on), or dense only (off); bf16: off only"},
    {"--dtype", "fp32|bf16", "fp32", "precision of the layers' 7 maps and the head: bf16 holds "
                                     "them in bf16 (fp32 copies freed) and multiplies with fp32 "
                                     "accumulation; embedding, norms and activations stay fp32"},
    JSON_FLAG, END};
static const cli_flag f_generate[] = {
    {"--model", "STORE.h5", NULL, "model store or run directory (required)"},
    {"--prompt", "TEXT", "\"\"", "prompt text"},
    {"--steps", "N", "128", "tokens to generate; prompt + N must fit in the model's "
                            "max_seq_len (refused otherwise)"},
    {"--temperature", "T", "0 (greedy)", "sampling temperature, 0..100"},
    {"--seed", "S", "0", "sampling seed, 0..2^64-1"},
    {"--sparse", "auto|on|off", "auto", "sparse kernels where they pay at batch 1 (auto), for "
                                        "every map (on), or dense only (off); bf16: off only"},
    {"--dtype", "fp32|bf16", "fp32", "precision of the weights decode reads: bf16 holds the 7 "
                                     "maps in bf16 (fp32 copy freed) and a bf16 copy of the "
                                     "head, multiplied with fp32 accumulation"},
    JSON_FLAG, END};
static const cli_flag f_bench[] = {JSON_FLAG, END};
static const cli_flag f_bench_forward[] = {
    {"--model", "STORE.h5", "random 6-layer minillama", "model store to time"},
    {"--batch", "B", "8", "sequences per forward, 1..65536"},
    {"--seqlen", "T", "256", "tokens per sequence, 2..1048576 (at most the model's "
                             "max_seq_len)"},
    {"--iters", "K", "5", "timed forwards (best is reported), 1..1000000"},
    {"--dtype", "fp32|bf16", "fp32", "precision of the maps and head (as losa eval --dtype)"},
    {"--text", "FILE", "none", "with --model: also time the store's tokenizer on FILE as a "
                               "run's perplexity text (tokenize_bytes_per_s, for losa plan's "
                               "set-up: the files' bytes over their seconds)"},
    {"--calib", "FILE", "none", "the same for a calibration set (JSONL documents or text)"},
    {"--train", "FILE", "none", "the same for a training set (Alpaca / text records, cut to "
                                "--seqlen)"},
    JSON_FLAG, END};
static const cli_flag f_bench_train[] = {
    {"--model", "STORE.h5", "random 6-layer minillama, 50% pruned", "model store to time"},
    {"--batch", "B", "4", "sequences per step, 1..65536"},
    {"--seqlen", "T", "256", "tokens per sequence, 2..1048576"},
    {"--iters", "K", "3", "timed steps, 1..1000000"},
    {"--dropout", "P", "0.1", "LoRA dropout, 0 <= P < 1"},
    {"--recompute", NULL, "off", "activation recomputation in the backward"},
    {"--delta-buffers", "auto|persistent|transient", "auto",
     "where the adapters' dense forms live (deck key lora.delta_buffers)"},
    {"--dtype", "fp32|bf16", "fp32", "precision of the frozen maps: bf16 multiplies "
                                     "them in bf16 with fp32 accumulation; adapters, gradients "
                                     "and AdamW stay fp32"},
    {"--head", "fp32|bf16", "--dtype", "precision of the head with --dtype bf16 (the run's is "
                                       "bf16; fp32 for comparison)"},
    JSON_FLAG, END};
static const cli_flag f_bench_prune[] = {
    {"--model", "STORE.h5", "random minillama layer", "model store"},
    {"--layer", "l", "0", "layer of --model to prune"},
    {"--n", "N", "64", "calibration windows, 1..1000000"},
    {"--seqlen", "S", "256", "tokens per window, 2..1048576"},
    {"--sparsity", "s", "0.5", "target sparsity, 0 <= s < 1"},
    {"--pattern", "unstructured|N:M", "unstructured", "sparsity pattern"},
    JSON_FLAG, END};
static const cli_flag f_bench_sparse[] = {
    {"--quick", NULL, "off", "small shapes and one sparsity (seconds, for tests)"},
    {"--reps", "K", "4 (2 prefill; --quick 2/1)", "best-of-K calls per timing, 1..1000000"},
    {"--rounds", "R", "7 (3 prefill; --quick 3/1)", "paired rounds per case, 1..1000000"},
    {"--shape", "OUTxIN", "LLaMA-2-7B shapes", "one matrix shape"},
    {"--sparsity", "S", "0.5,0.6,0.7,0.8", "one unstructured sparsity, 0 <= S < 1"},
    {"--prefill-batch", "N", "128 (--quick 16)", "prefill batch, 2..4096"},
    {"--decode-only", NULL, "off", "skip the prefill batch"},
    {"--format", "F", "all", "time only the sparse format F (bitmap, bitmap-bf16, csr, 2:4)"},
    {"--flush", "write|read", "write",
     "cache flush before each timed call: write (dirty lines) or read only (clean lines)"},
    JSON_FLAG, END};
static const cli_flag f_bench_decode[] = {
    {"--config", "CONFIG.json", "input/llama2-7b.json", "HF config.json giving the layer shapes"},
    {"--quick", NULL, "off", "a small model (D 512, F 1376, V 4000; seconds, for tests)"},
    {"--layers", "A,B", "2,4", "the two depths whose difference is timed, 1 <= A < B <= 1000"},
    {"--sparsity", "S", "0.7", "unstructured sparsity of the bitmap cases, 0 <= S < 1"},
    {"--prompt", "P", "8", "prompt tokens prefilled before the timed steps, 1..1024"},
    {"--steps", "N", "16", "timed decode steps (median), 1..4096"},
    {"--rounds", "R", "5", "paired rounds over every case and depth, 1..64"},
    {"--dtype", "fp32|bf16", "fp32", "bf16 adds the case dense-bf16: unpruned maps and head in "
                                     "bf16, as generate --dtype bf16 decodes"},
    JSON_FLAG, END};
static const cli_flag f_bench_pipeline[] = {
    {"--model", "STORE.h5", "random 6-layer minillama, 50% pruned", "model store"},
    {"--batch", "B", "1", "sequences per micro-batch, 1..65536"},
    {"--seqlen", "T", "128", "tokens per sequence, 2..1048576"},
    {"--micro", "M", "8", "micro-batches per step, 1..65536"},
    {"--iters", "K", "2", "timed steps per layout (the best is reported), 1..1000000"},
    {"--warmup", "W", "2", "untimed steps per layout first (first touch, GEMM primitives, "
     "the exchanges' first use), 0..1000000"},
    {"--split", "LIST", "cost", "2-stage splits to time, comma-separated: cost (the run's, by "
     "the cost model), params (by parameter count, as before), or layers A+B"},
    {"--head-cost-layers", "H", "measured", "the head + loss in layers for the cost split and "
     "the models (0: the cost model's)"},
    JSON_FLAG, END};
static const cli_flag f_prune[] = {SET_FLAG, JSON_FLAG, END};
static const cli_flag f_finetune[] = {SET_FLAG, JSON_FLAG, END};
static const cli_flag f_run[] = {
    SET_FLAG,
    {"--stop-after", "T", "0 (never)", "testing: stop with an error after LoSA step T, 0..1000"},
    JSON_FLAG, END};
static const cli_flag f_export[] = {
    {"--out", "DIR", NULL, "the directory to write (required; must not exist or be empty)"},
    {"--dtype", "bf16|f32", "bf16", "weight type of model.safetensors"},
    JSON_FLAG, END};
static const cli_flag f_synth[] = {
    {"--config", "CONFIG.json", NULL, "HF config.json giving the layer shapes (required)"},
    {"--layers", "K", NULL, "layers to write, 1..100000 (required)"},
    {"--out", "STORE.h5", NULL, "the store to write (required)"},
    {"--seed", "S", "0", "weight seed, 0..2^64-1"},
    {"--tokenizer", "tokenizer.json", "a byte-level stand-in", "tokenizer to store"},
    JSON_FLAG, END};
static const cli_flag f_plan[] = {
    SET_FLAG,
    {"--ranks", "N", "parallel.pp x parallel.dp", "plan for N ranks (pp = N / parallel.dp), "
                                                  "1..1000000"},
    {"--mem-per-rank", "BYTES", "this machine's physical memory",
     "memory one rank may use (suffixes K, M, G, T: powers of 1024); the plan warns "
     "when a rank's peak exceeds it"},
    {"--bench", "FILE", "none", "the --json of `losa bench forward`, `bench train` or `bench "
                                "prune` run on the target node with one rank's threads: its rates "
                                "project the time (repeatable, up to 4)"},
    {"--gflops", "G", "sgemm measured now, x0.5 for forward and training",
     "one rate per rank (GFLOP/s) for every kind of work"},
    {"--touch-gbs", "G", "a bench forward JSON's first_touch_gbs, else 4",
     "GB/s at which a rank touches freshly allocated memory (each pass or step allocates its "
     "buffers); 0: not counted"},
    {"--net-gbps", "G", "100", "point-to-point bandwidth, Gbit/s"},
    {"--net-latency-us", "U", "2", "latency per message, microseconds"},
    {"--eval-tokens", "N", "data.eval tokenized with model.store's tokenizer",
     "tokens of the perplexity text"},
    JSON_FLAG, END};
static const cli_flag f_sparsify[] = {
    {"--format", "bitmap|bitmap-bf16|csr|2:4", "bitmap",
     "format of the kept copies (2:4 maps asked as bitmap are kept as 2:4)"},
    {"--all", NULL, "off", "keep every map, not only those where sparse kernels pay"},
    JSON_FLAG, END};

static const cli_help helps[] = {
    {"import", "import SRC --out STORE.h5 [--tokenizer tokenizer.bin] [--dtype keep|fp32|bf16] [--json]",
     "HF safetensors dir or llama2.c checkpoint -> HDF5 store", f_import},
    {"info", "info STORE.h5|RUN_DIR [--json]", "what a store or run dir holds", f_info},
    {"eval", "eval --model STORE.h5 [--ppl TEXT] [--zeroshot TASKS] [options]",
     "perplexity / zero-shot evaluation", f_eval},
    {"generate", "generate --model STORE.h5 [options]", "sample text", f_generate},
    {"bench", "bench forward|train|prune|sparse|decode|pipeline [options]",
     "benchmarks (forward, train, prune, sparse, decode, pipeline); losa bench <what> --help",
     f_bench},
    {"bench forward", "bench forward [options]",
     "forward tokens/s and GFLOP/s against this machine's sgemm and physical "
     "peak, and the share and GFLOP/s of its GEMM calls (one rank)", f_bench_forward},
    {"bench train", "bench train [options]",
     "masked-LoRA training step tokens/s, GFLOP/s against the physical peak, "
     "and the share and GFLOP/s of its GEMM calls (one rank)", f_bench_train},
    {"bench prune", "bench prune [options]",
     "Wanda and SparseGPT seconds for one layer (one rank)", f_bench_prune},
    {"bench sparse", "bench sparse [options]",
     "dense vs sparse kernels on LLaMA-2-7B shapes", f_bench_sparse},
    {"bench decode", "bench decode [options]",
     "end-to-end decode time per layer: dense fp32 vs sparse formats", f_bench_decode},
    {"bench pipeline", "bench pipeline [options]",
     "training tokens/s of 1 rank x 2 threads vs 2-stage pipeline vs 2 replicas",
     f_bench_pipeline},
    {"prune", "prune DECK.ini [--set section.key=value ...] [--json]",
     "one-shot pruning (DECK.ini)", f_prune},
    {"finetune", "finetune DECK.ini [--set section.key=value ...] [--json]",
     "masked LoRA fine-tuning (DECK.ini)", f_finetune},
    {"run", "run DECK.ini [--set section.key=value ...] [--json]",
     "the LoSA pipeline (DECK.ini)", f_run},
    {"export", "export RUN_DIR|STORE.h5 --out DIR [--dtype bf16|f32] [--json]",
     "run dir or store -> HF safetensors", f_export},
    {"synth", "synth --config CONFIG.json --layers K --out STORE.h5 [options]",
     "synthetic store with real layer shapes", f_synth},
    {"plan", "plan DECK.ini [--set section.key=value ...] [--ranks N] [--mem-per-rank BYTES] "
             "[--bench FILE] [--gflops G] [--touch-gbs G] [--net-gbps G] [--net-latency-us U] [--json]",
     "memory, FLOP, communication and time plan for a deck, and the fastest layout", f_plan},
    {"sparsify", "sparsify STORE.h5|RUN_DIR [--format F] [--all] [--json]",
     "keep sparse copies of the pruned maps in the store", f_sparsify},
};
#define N_HELPS (sizeof helps / sizeof helps[0])

const cli_help *cli_help_find(const char *cmd, const char *sub)
{
    char name[64];
    if (sub) snprintf(name, sizeof name, "%s %s", cmd, sub);
    for (size_t i = 0; sub && i < N_HELPS; i++)
        if (!strcmp(helps[i].name, name)) return &helps[i];
    for (size_t i = 0; i < N_HELPS; i++)
        if (!strcmp(helps[i].name, cmd)) return &helps[i];
    return NULL;
}

/* Prints text from column `col`, breaking lines at blanks before `width`. */
static void wrap(FILE *f, const char *text, int col, int width)
{
    const char *p = text;
    int at = col;
    while (*p) {
        size_t w = strcspn(p, " ");
        if (at > col && at + 1 + (int)w > width) {
            fprintf(f, "\n%*s", col, "");
            at = col;
        } else if (at > col) {
            fputc(' ', f);
            at++;
        }
        fwrite(p, 1, w, f);
        at += (int)w;
        p += w;
        while (*p == ' ') p++;
    }
    fputc('\n', f);
}

void cli_help_print(FILE *f, const cli_help *h)
{
    fprintf(f, "usage: losa %s\n\n%s\n", h->usage, h->summary);
    if (!strcmp(h->name, "bench")) {
        fprintf(f, "\nbenchmarks:\n");
        for (size_t i = 0; i < N_HELPS; i++)
            if (!strncmp(helps[i].name, "bench ", 6))
                fprintf(f, "  %-10s %s\n", helps[i].name + 6, helps[i].summary);
    }
    fprintf(f, "\noptions:\n");
    for (const cli_flag *x = h->flags; x->flag; x++) {
        char lhs[96];
        snprintf(lhs, sizeof lhs, "%s%s%s", x->flag, x->arg ? " " : "", x->arg ? x->arg : "");
        char text[512];
        snprintf(text, sizeof text, "%s%s%s%s", x->desc, x->def ? " [default: " : "",
                 x->def ? x->def : "", x->def ? "]" : "");
        fprintf(f, "  %-26s ", lhs);
        wrap(f, text, 29, 92);
    }
    fprintf(f, "  %-26s %s\n", "-h, --help", "print this help and exit");
    if (!strcmp(h->name, "run") || !strcmp(h->name, "prune") || !strcmp(h->name, "finetune") ||
        !strcmp(h->name, "plan"))
        fprintf(f, "\nDeck keys with their types, ranges and defaults: input/README.md "
                   "(an example deck: input/default.ini).\n");
    fprintf(f, "\nrun under MPI: mpirun -np P build/losa %s ...\n", h->name);
}

void cli_help_list(FILE *f)
{
    fprintf(f, "usage: losa <command> [args] [--json]\n\ncommands:\n");
    for (size_t i = 0; i < N_HELPS; i++)
        if (!strchr(helps[i].name, ' '))
            fprintf(f, "  %-9s %s\n", helps[i].name, helps[i].summary);
    fprintf(f, "  %-9s %s\n", "help", "losa help <command>: the flags of a command");
    fprintf(f, "\nlosa <command> --help prints a command's flags and defaults.\n"
               "run under MPI: mpirun -np P build/losa <command> ...\n");
}

int cli_help_takes_value(const cli_help *h, const char *arg)
{
    if (!h) return 0;
    for (const cli_flag *x = h->flags; x->flag; x++)
        if (x->arg && !strcmp(x->flag, arg)) return 1;
    return 0;
}
