/* Every deck key losa understands: section.key, type, default (NULL =
 * required), range, choices, help with units.  Keys equal struct fields of
 * the modules that use them.  Add a key here to make it legal in decks. */
#include "deck.h"

#define BIG 1e18
const deck_key deck_schema[] = {
    /* [model] */
    {"model.store", DECK_STRING, NULL, 0, 0, NULL, "HDF5 model store written by 'losa import'"},
    {"model.config", DECK_STRING, "", 0, 0, NULL, "HF config.json used by 'losa plan' instead of the store's config (no weights read)"},
    /* [data] */
    {"data.calib", DECK_STRING, "", 0, 0, NULL, "calibration corpus: JSONL with a 'text' field, or plain text"},
    {"data.calib_n", DECK_INT, "128", 1, 1e6, NULL, "calibration windows N"},
    {"data.calib_seqlen", DECK_INT, "256", 2, 1e6, NULL, "tokens per calibration window S"},
    {"data.calib_seed", DECK_INT, "0", 0, BIG, NULL, "seed for drawing calibration windows (reference: 4)"},
    {"data.calib_sampler", DECK_CHOICE, "losa", 0, 0, "losa|python", "how windows are drawn: losa's generator, or exactly CPython's random.seed/randint draws of the Wanda/SparseGPT get_c4 (default python under losa.compat = reference)"},
    {"data.calib_bos", DECK_INT, "1", 0, 1, NULL, "1 = add BOS to each calibration document before windowing (HF LLaMA tokenizer default)"},
    {"data.calib_eos", DECK_INT, "0", 0, 1, NULL, "1 = add EOS to each calibration document before windowing (default 1 under losa.compat = reference: its tokenizer has add_eos_token)"},
    {"data.train", DECK_STRING, "", 0, 0, NULL, "training data: Alpaca JSON/JSONL or plain text / JSONL 'text'"},
    {"data.train_format", DECK_CHOICE, "auto", 0, 0, "auto|alpaca|text", "how to read data.train"},
    {"data.response_only", DECK_BOOL, "false", 0, 0, NULL, "loss on the response tokens only (Alpaca)"},
    {"data.train_slices", DECK_CHOICE, "losa", 0, 0, "losa|reference", "training examples per LoSA step: losa = a seeded stream over the whole set; reference = the reference script's fixed ranges [t*n, (t+1)*n), last [(T-1)*n, (T-1)*n + n_last) (reference)"},
    {"data.group_by_length", DECK_BOOL, "false", 0, 0, NULL, "order each epoch's examples as the HF Trainer's group_by_length: megabatches of up to 50 optimizer steps (train.batch x grad_accum examples each) sorted by length, longest first (reference: true)"},
    {"data.eval_text", DECK_STRING, "", 0, 0, NULL, "perplexity text (WikiText-2 test as the papers use)"},
    /* [prune] */
    {"prune.method", DECK_CHOICE, "wanda", 0, 0, "magnitude|wanda|sparsegpt", "pruner"},
    {"prune.sparsity", DECK_FLOAT, "0.5", 0, 0.99, NULL, "target fraction of zero weights (ignored for N:M)"},
    {"prune.pattern", DECK_STRING, "unstructured", 0, 0, NULL, "'unstructured' or 'N:M' (e.g. 2:4, 4:8)"},
    {"prune.layer_sparsity", DECK_STRING, "", 0, 0, NULL, "optional per-layer sparsities 's0,s1,...' (L values)"},
    {"prune.blocksize", DECK_INT, "128", 1, 1e6, NULL, "SparseGPT column block size"},
    {"prune.percdamp", DECK_FLOAT, "0.01", 0, 1, NULL, "SparseGPT dampening, fraction of mean diag(H)"},
    /* [losa] */
    {"losa.compat", DECK_CHOICE, "losa", 0, 0, "losa|reference", "reference = the defaults of the official LoSA script for every key below marked 'reference' that the deck does not set (README: differences from the reference code)"},
    {"losa.mode", DECK_CHOICE, "losa", 0, 0, "prune|lora|losa|compare", "what 'losa run' does"},
    {"losa.steps", DECK_INT, "5", 1, 1000, NULL, "LoSA steps T"},
    {"losa.allocator", DECK_CHOICE, "rmi", 0, 0, "rmi|mi_proportional|uniform", "layer sparsity allocator"},
    {"losa.rank_policy", DECK_CHOICE, "error", 0, 0, "error|fixed", "per-layer rank from reconstruction error, or fixed"},
    {"losa.sparsity_floor", DECK_BOOL, "true", 0, 0, NULL, "never ask a layer to become denser than it is (reference: false, the LP has no floor)"},
    {"losa.rank_max", DECK_INT, "16", 1, 4096, NULL, "upper bound of the allocated rank (reference 16)"},
    {"losa.rank_cap", DECK_CHOICE, "redistribute", 0, 0, "redistribute|slice", "ranks above lora.r_max: redistribute = bound the allocator by r_max, surplus to other layers; slice = allocate up to rank_max, adapter uses min(rank, r_max) rows (reference)"},
    {"losa.rank_rebalance", DECK_CHOICE, "exact", 0, 0, "exact|one_pass", "after rounding/clipping: +-1 until the mean rank is exact, or one +-1 pass with numpy rounding (reference)"},
    {"losa.beta", DECK_FLOAT, "0", 0, 1e6, NULL, "importance temperature (0 = 1 for wanda, 100 for sparsegpt)"},
    {"losa.rmi_n", DECK_INT, "64", 2, 1e6, NULL, "calibration samples for the layer-importance pass"},
    {"losa.dense_ref", DECK_CHOICE, "memory", 0, 0, "memory|disk", "dense reference outputs kept in memory or in the stage's HDF5 shard (N x S x D floats per layer)"},
    {"losa.samples_per_step", DECK_INT, "1000", 1, 1e9, NULL, "training samples per LoSA step"},
    {"losa.last_step_samples", DECK_INT, "6000", 1, 1e9, NULL, "training samples in the last step"},
    /* [train] */
    {"train.seqlen", DECK_INT, "256", 2, 1e6, NULL, "max tokens per training sequence"},
    {"train.batch", DECK_INT, "4", 1, 1e6, NULL, "sequences per micro-batch"},
    {"train.grad_accum", DECK_INT, "2", 1, 1e6, NULL, "micro-batches per optimizer step"},
    {"train.steps", DECK_INT, "0", 0, 1e9, NULL, "optimizer steps (0 = one epoch of the data)"},
    {"train.lr", DECK_FLOAT, "2e-4", 0, 1, NULL, "peak learning rate"},
    {"train.weight_decay", DECK_FLOAT, "0.001", 0, 1, NULL, "AdamW decoupled weight decay"},
    {"train.warmup_ratio", DECK_FLOAT, "0.3", 0, 1, NULL, "fraction of steps with linear warmup"},
    {"train.max_grad_norm", DECK_FLOAT, "0.3", 0, 1e6, NULL, "global gradient-norm clip (0 = off)"},
    {"train.beta1", DECK_FLOAT, "0.9", 0, 1, NULL, "AdamW beta1"},
    {"train.beta2", DECK_FLOAT, "0.999", 0, 1, NULL, "AdamW beta2"},
    {"train.eps", DECK_FLOAT, "1e-8", 0, 1, NULL, "AdamW epsilon"},
    {"train.seed", DECK_INT, "0", 0, BIG, NULL, "seed for shuffling and dropout (reference: 42, the HF Trainer default)"},
    {"train.recompute", DECK_BOOL, "false", 0, 0, NULL, "recompute layer activations in backward (checkpointing)"},
    /* [lora] */
    {"lora.r_max", DECK_INT, "16", 1, 4096, NULL, "adapter rows allocated per map (reference: 8, its LoRA r)"},
    {"lora.rank", DECK_INT, "8", 1, 4096, NULL, "active rank (fixed policy / first step)"},
    {"lora.alpha", DECK_FLOAT, "16", 0, 1e6, NULL, "LoRA alpha"},
    {"lora.r0", DECK_FLOAT, "8", 1e-9, 1e6, NULL, "rank in scale = alpha / r0"},
    {"lora.dropout", DECK_FLOAT, "0.1", 0, 0.99, NULL, "dropout on the adapter input"},
    /* [eval] */
    {"eval.seqlen", DECK_INT, "256", 2, 1e6, NULL, "perplexity window S"},
    {"eval.batch", DECK_INT, "8", 1, 1e6, NULL, "windows per micro-batch"},
    {"eval.max_windows", DECK_INT, "0", 0, 1e9, NULL, "evaluate only the first windows (0 = all)"},
    {"eval.each_step", DECK_BOOL, "true", 0, 0, NULL, "perplexity after every LoSA step"},
    {"eval.dense", DECK_BOOL, "false", 0, 0, NULL, "also measure the dense model's perplexity (prune)"},
    {"eval.zeroshot", DECK_STRING, "", 0, 0, NULL, "comma-separated task names (input/tasks/*.ini)"},
    {"eval.limit", DECK_INT, "0", 0, 1e9, NULL, "items per zero-shot task (0 = all)"},
    /* [parallel] */
    {"parallel.pp", DECK_INT, "0", 0, 1e6, NULL, "pipeline stages (0 = ranks / dp)"},
    {"parallel.dp", DECK_INT, "1", 1, 1e6, NULL, "data-parallel replicas"},
    {"parallel.schedule", DECK_CHOICE, "1f1b", 0, 0, "1f1b|gpipe", "training pipeline schedule"},
    /* [output] */
    {"output.dir", DECK_STRING, "", 0, 0, NULL, "run directory"},
    {"output.store", DECK_STRING, "", 0, 0, NULL, "output model store (prune / finetune)"},
};
const int deck_schema_len = sizeof deck_schema / sizeof deck_schema[0];
