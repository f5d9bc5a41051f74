/* Every deck key losa understands: section.key, type, default (NULL =
 * required), range, choices, help with units, the reference code's default
 * (losa.compat = reference) and what the key is for (DECK_NO_RESULT: may
 * differ when a run resumes; DECK_RESUMABLE: may change while LoSA steps
 * remain; DECK_PATH: compared as files).  Keys equal struct fields of the
 * modules that use them.  Add a key here to make it legal in decks, and
 * parse it in the settings function of its section (src/losa/settings.c). */
#include "deck.h"

#define BIG 1e18
const deck_key deck_schema[] = {
    /* [model] */
    {"model.store", DECK_STRING, NULL, 0, 0, NULL, "HDF5 model store written by 'losa import'", NULL, DECK_PATH},
    {"model.config", DECK_STRING, "", 0, 0, NULL, "HF config.json used by 'losa plan' instead of the store's config (no weights read)", NULL, DECK_NO_RESULT},
    {"model.dtype", DECK_CHOICE, "fp32", 0, 0, "fp32|bf16", "precision of the frozen base weights; bf16: losa prune, run and finetune hold the maps and the head in bf16 (multiplied in bf16, fp32 accumulation), prune fp32 widenings of the maps (exact masks) and write bf16 stores; losa plan sizes a bf16 stage (maps and head 2 bytes per weight)", NULL, 0},
    /* [data] */
    {"data.calib", DECK_STRING, "", 0, 0, NULL, "calibration corpus: JSONL with a 'text' field, or plain text", NULL, DECK_PATH},
    {"data.calib_n", DECK_INT, "128", 1, 1e6, NULL, "calibration windows N", NULL, 0},
    {"data.calib_seqlen", DECK_INT, "256", 2, 1e6, NULL, "tokens per calibration window S", NULL, 0},
    {"data.calib_seed", DECK_INT, "0", 0, BIG, NULL, "seed for drawing calibration windows (reference: 4)", "4", 0},
    {"data.calib_sampler", DECK_CHOICE, "losa", 0, 0, "losa|python", "how windows are drawn: losa's generator, or exactly CPython's random.seed/randint draws of the Wanda/SparseGPT get_c4 (default python under losa.compat = reference)", "python", 0},
    {"data.calib_bos", DECK_INT, "1", 0, 1, NULL, "1 = add BOS to each calibration document before windowing (HF LLaMA tokenizer default)", "1", 0},
    {"data.calib_eos", DECK_INT, "0", 0, 1, NULL, "1 = add EOS to each calibration document before windowing (default 1 under losa.compat = reference: its tokenizer has add_eos_token)", "1", 0},
    {"data.train", DECK_STRING, "", 0, 0, NULL, "training data: Alpaca JSON/JSONL or plain text / JSONL 'text'", NULL, DECK_PATH},
    {"data.train_format", DECK_CHOICE, "auto", 0, 0, "auto|alpaca|text", "how to read data.train", NULL, 0},
    {"data.response_only", DECK_BOOL, "false", 0, 0, NULL, "loss on the response tokens only (Alpaca)", NULL, 0},
    {"data.train_slices", DECK_CHOICE, "losa", 0, 0, "losa|reference", "training examples per LoSA step: losa = a seeded stream over the whole set; reference = the reference script's fixed ranges [t*n, (t+1)*n), last [(T-1)*n, (T-1)*n + n_last) (reference)", "reference", 0},
    {"data.group_by_length", DECK_BOOL, "false", 0, 0, NULL, "order each epoch's examples as the HF Trainer's group_by_length: megabatches of up to 50 optimizer steps (train.batch x grad_accum examples each) sorted by length, longest first (reference: true)", "true", 0},
    {"data.eval_text", DECK_STRING, "", 0, 0, NULL, "perplexity text (WikiText-2 test as the papers use)", NULL, DECK_PATH},
    /* [prune] */
    {"prune.method", DECK_CHOICE, "wanda", 0, 0, "magnitude|wanda|sparsegpt", "pruner", NULL, 0},
    {"prune.sparsity", DECK_FLOAT, "0.5", 0, 0.99, NULL, "target fraction of zero weights (ignored for N:M)", NULL, 0},
    {"prune.pattern", DECK_STRING, "unstructured", 0, 0, NULL, "'unstructured' or 'N:M' (e.g. 2:4, 4:8)", NULL, 0},
    {"prune.layer_sparsity", DECK_STRING, "", 0, 0, NULL, "optional per-layer sparsities 's0,s1,...' (L values)", NULL, 0},
    {"prune.blocksize", DECK_INT, "128", 1, 1e6, NULL, "SparseGPT column block size", NULL, 0},
    {"prune.percdamp", DECK_FLOAT, "0.01", 0, 1, NULL, "SparseGPT dampening, fraction of mean diag(H)", NULL, 0},
    /* [losa] */
    {"losa.compat", DECK_CHOICE, "losa", 0, 0, "losa|reference", "reference = the defaults of the official LoSA script for every key below marked 'reference' that the deck does not set (README: differences from the reference code)", NULL, 0},
    {"losa.mode", DECK_CHOICE, "losa", 0, 0, "prune|lora|losa|compare", "what 'losa run' does", NULL, 0},
    {"losa.steps", DECK_INT, "5", 1, 1000, NULL, "LoSA steps T", NULL, 0},
    {"losa.allocator", DECK_CHOICE, "rmi", 0, 0, "rmi|mi_proportional|uniform", "layer sparsity allocator", NULL, 0},
    {"losa.rank_policy", DECK_CHOICE, "error", 0, 0, "error|fixed", "per-layer rank from reconstruction error, or fixed", NULL, 0},
    {"losa.sparsity_floor", DECK_BOOL, "true", 0, 0, NULL, "never ask a layer to become denser than it is (reference: false, the LP has no floor)", "false", 0},
    {"losa.rank_max", DECK_INT, "16", 1, 4096, NULL, "upper bound of the allocated rank (reference 16)", NULL, 0},
    {"losa.rank_cap", DECK_CHOICE, "redistribute", 0, 0, "redistribute|slice", "ranks above lora.r_max: redistribute = bound the allocator by r_max, surplus to other layers; slice = allocate up to rank_max, adapter uses min(rank, r_max) rows (reference)", "slice", 0},
    {"losa.rank_rebalance", DECK_CHOICE, "exact", 0, 0, "exact|one_pass", "after rounding/clipping: +-1 until the mean rank is exact, or one +-1 pass with numpy rounding (reference)", "one_pass", 0},
    {"losa.beta", DECK_FLOAT, "0", 0, 1e6, NULL, "importance temperature (0 = 1 for wanda, 100 for sparsegpt)", NULL, 0},
    {"losa.rmi_n", DECK_INT, "64", 2, 1e6, NULL, "calibration samples for the layer-importance pass", NULL, 0},
    {"losa.dense_ref", DECK_CHOICE, "memory", 0, 0, "memory|disk", "dense reference outputs kept in memory or in the stage's HDF5 shard (N x S x D floats per layer)", NULL, DECK_NO_RESULT},
    {"losa.samples_per_step", DECK_INT, "1000", 1, 1e9, NULL, "training samples per LoSA step", NULL, 0},
    {"losa.last_step_samples", DECK_INT, "6000", 1, 1e9, NULL, "training samples in the last step", NULL, 0},
    /* [train] */
    {"train.seqlen", DECK_INT, "256", 2, 1e6, NULL, "max tokens per training sequence", NULL, 0},
    {"train.batch", DECK_INT, "4", 1, 1e6, NULL, "sequences per micro-batch", NULL, 0},
    {"train.grad_accum", DECK_INT, "2", 1, 1e6, NULL, "micro-batches per optimizer step", NULL, 0},
    {"train.steps", DECK_INT, "0", 0, 1e9, NULL, "optimizer steps (0 = one epoch of the data)", NULL, DECK_NO_RESULT},
    {"train.lr", DECK_FLOAT, "2e-4", 0, 1, NULL, "peak learning rate", NULL, DECK_RESUMABLE},
    {"train.weight_decay", DECK_FLOAT, "0.001", 0, 1, NULL, "AdamW decoupled weight decay", NULL, 0},
    {"train.warmup_ratio", DECK_FLOAT, "0.3", 0, 1, NULL, "fraction of steps with linear warmup", NULL, 0},
    {"train.max_grad_norm", DECK_FLOAT, "0.3", 0, 1e6, NULL, "global gradient-norm clip (0 = off)", NULL, 0},
    {"train.beta1", DECK_FLOAT, "0.9", 0, 1, NULL, "AdamW beta1", NULL, 0},
    {"train.beta2", DECK_FLOAT, "0.999", 0, 1, NULL, "AdamW beta2", NULL, 0},
    {"train.eps", DECK_FLOAT, "1e-8", 0, 1, NULL, "AdamW epsilon", NULL, 0},
    {"train.seed", DECK_INT, "0", 0, BIG, NULL, "seed for shuffling and dropout (reference: 42, the HF Trainer default)", "42", 0},
    {"train.recompute", DECK_BOOL, "false", 0, 0, NULL, "recompute layer activations in backward (checkpointing)", NULL, 0},
    /* [lora] */
    {"lora.r_max", DECK_INT, "16", 1, 4096, NULL, "adapter rows allocated per map (reference: 8, its LoRA r)", "8", 0},
    {"lora.rank", DECK_INT, "8", 1, 4096, NULL, "active rank (fixed policy / first step)", NULL, 0},
    {"lora.alpha", DECK_FLOAT, "16", 0, 1e6, NULL, "LoRA alpha", NULL, 0},
    {"lora.r0", DECK_FLOAT, "8", 1e-9, 1e6, NULL, "rank in scale = alpha / r0", NULL, 0},
    {"lora.dropout", DECK_FLOAT, "0.1", 0, 0.99, NULL, "dropout on the adapter input", NULL, 0},
    {"lora.delta_buffers", DECK_CHOICE, "auto", 0, 0, "auto|persistent|transient", "where the adapters' dense (out x in) Delta, W_eff and dDelta live: persistent = every map of the stage (3 x its weights), formed once per optimizer step; transient = one map at a time, formed when computed, each micro-batch's dDelta projected at once (3 x the largest map); auto = persistent below 4096 tokens per micro-batch when the three blocks take <= 1 GiB, else transient", NULL, 0},
    /* [eval] */
    {"eval.seqlen", DECK_INT, "256", 2, 1e6, NULL, "perplexity window S", NULL, 0},
    {"eval.batch", DECK_INT, "8", 1, 1e6, NULL, "windows per micro-batch", NULL, 0},
    {"eval.max_windows", DECK_INT, "0", 0, 1e9, NULL, "evaluate only the first windows (0 = all)", NULL, 0},
    {"eval.each_step", DECK_BOOL, "true", 0, 0, NULL, "perplexity after every LoSA step", NULL, 0},
    {"eval.dense", DECK_BOOL, "false", 0, 0, NULL, "also measure the dense model's perplexity (prune)", NULL, DECK_NO_RESULT},
    {"eval.zeroshot", DECK_STRING, "", 0, 0, NULL, "comma-separated task names (input/tasks/*.ini)", NULL, DECK_NO_RESULT},
    {"eval.limit", DECK_INT, "0", 0, 1e9, NULL, "items per zero-shot task (0 = all)", NULL, DECK_NO_RESULT},
    /* [parallel] */
    {"parallel.pp", DECK_INT, "0", 0, 1e6, NULL, "pipeline stages (0 = ranks / dp)", NULL, DECK_NO_RESULT},
    {"parallel.dp", DECK_INT, "1", 1, 1e6, NULL, "data-parallel replicas", NULL, DECK_NO_RESULT},
    {"parallel.schedule", DECK_CHOICE, "1f1b", 0, 0, "1f1b|gpipe", "training pipeline schedule", NULL, 0},
    {"parallel.head_cost_layers", DECK_FLOAT, "0", 0, 1e6, NULL, "measured cost of the head and loss (forward + backward of one training micro-batch) in transformer layers, for the stage split of 'losa run' and 'losa plan' and the time model; 0 = the cost model's (model_stage_cost_train); 'losa bench train' and 'bench pipeline' measure it (head_cost_layers in --json)", NULL, DECK_NO_RESULT},
    /* [output] */
    {"output.dir", DECK_STRING, "", 0, 0, NULL, "run directory", NULL, DECK_NO_RESULT},
    {"output.store", DECK_STRING, "", 0, 0, NULL, "output model store (prune / finetune)", NULL, DECK_NO_RESULT},
};
const int deck_schema_len = sizeof deck_schema / sizeof deck_schema[0];
