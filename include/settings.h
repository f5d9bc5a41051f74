/* settings: the deck read once.  One struct per deck section and one
 * function that parses and validates it; every command (run, prune,
 * finetune, plan, info) takes its settings from these functions and reads
 * no key itself, so that every key is parsed in exactly one function
 * (tests/test_deck_owners.sh checks it).
 *
 * Errors name where the value came from, then what was expected:
 *   "DECK:LINE: key: ..."  set on that line of the deck file
 *   "--set key: ..."       set (last) by a --set override
 *   "DECK: key (default): ..."  not set: the schema's default
 * cfg: the model's configuration, or NULL before it is known: the checks
 * that need it (lengths against max_seq_len, the N:M widths of the maps,
 * the count of prune.layer_sparsity) are then skipped; call again with it.
 * losa.compat = reference: a key the deck does not set takes the reference
 * code's default (deck_schema .ref) instead of losa's.
 * Not collective: the same deck gives the same settings on every rank.
 * Strings point into the deck: valid while it lives. */
#ifndef LOSA_SETTINGS_H
#define LOSA_SETTINGS_H

#include "calib.h"
#include "deck.h"
#include "lora.h"
#include "losa.h"
#include "model.h"
#include "prune.h"

/* Room for "DECK:LINE: section.key" (deck names are cut at 255 bytes). */
#define SETTINGS_WHERE_MAX 320

/* A file named by a key, with where it was set: the prefix of every error
 * about the file. */
typedef struct {
    const char *path;               /* "" = not given */
    char where[SETTINGS_WHERE_MAX]; /* "DECK:LINE: key", "--set key", "DECK: key (default)" */
} settings_file;

/* The resolved deck as INI text with the values in effect: deck_dump with
 * the reference code's defaults when losa.compat = reference.  What run
 * files record (/run/deck) and resume compares; malloc'd. */
char *settings_deck_dump(const deck *dk, const char *sections);

/* "DECK:LINE: key" / "--set key" / "DECK: key (default)" for key. */
void settings_where(const deck *dk, const char *key, char *buf, size_t n);
/* core_err(code, "<where file was set>: <fmt ...>"): an error about a file
 * (a message of a lower layer, the file's own name) gets the deck prefix. */
losa_status settings_file_err(const settings_file *f, losa_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* What a command requires the deck to give (the `need` of the functions). */
enum {
    SETTINGS_MODEL_STORE = 1 << 0,  /* model.store */
    SETTINGS_MODEL_ANY = 1 << 1,    /* model.store or model.config (losa plan) */
    SETTINGS_CALIB = 1 << 2,        /* data.calib (and data.calib_seqlen <= max_seq_len) */
    SETTINGS_TRAIN = 1 << 3,        /* data.train */
    SETTINGS_TRAIN_BY_MODE = 1 << 4, /* data.train unless losa.mode = prune (run_settings) */
    SETTINGS_OUTPUT_DIR = 1 << 5,   /* output.dir */
    SETTINGS_OUTPUT_STORE = 1 << 6, /* output.store */
};

/* [model] */
typedef struct model_settings {
    settings_file store; /* model.store */
    const char *config;  /* model.config: HF config.json for losa plan ("" = none) */
    model_dtype dtype;   /* model.dtype: the stage's map weights (prune, run,
                            finetune; plan sizes it) */
} model_settings;
losa_status model_settings_from_deck(const deck *dk, unsigned need, model_settings *m);

/* [data] */
typedef struct data_settings {
    settings_file calib;         /* data.calib */
    int calib_n, calib_seqlen;   /* N windows of S tokens */
    calib_draw draw;             /* data.calib_seed, calib_sampler, calib_bos, calib_eos */
    settings_file train;         /* data.train */
    lora_data_format train_format;
    int response_only;
    losa_train_slices train_slices;
    int group_by_length;
    settings_file eval_text;     /* data.eval_text ("" = no perplexity) */
} data_settings;
losa_status data_settings_from_deck(const deck *dk, const model_config *cfg, unsigned need,
                                    data_settings *s);

/* [prune] */
typedef struct {
    prune_config pc;         /* method, sparsity (N/M for an N:M pattern), nm_n:nm_m,
                                blocksize, percdamp */
    const char *pattern;     /* prune.pattern as written */
    double *layer_sparsity;  /* (L) prune.layer_sparsity (parsed with cfg), NULL = pc.sparsity
                                in every layer */
} prune_settings;
/* p must be zeroed or hold an earlier result (its list is freed first). */
losa_status prune_settings_from_deck(const deck *dk, const model_config *cfg, prune_settings *p);
void prune_settings_free(prune_settings *p);

/* [losa] */
typedef struct {
    losa_mode mode;
    int steps;                /* T */
    losa_alloc allocator;
    int rank_fixed;           /* rank_policy = fixed: every layer lora.rank */
    losa_compat compat;       /* compat, sparsity_floor, rank_rebalance, rank_cap, rank_max */
    double beta;              /* 0 = by method (run_settings_from_deck resolves it) */
    int rmi_n;
    int dense_on_disk;        /* dense_ref = disk */
    int64_t samples_step, samples_last;
} losa_settings;
losa_status losa_settings_from_deck(const deck *dk, losa_settings *s);
const char *losa_mode_str(losa_mode m);

/* [train]: the trainer's configuration over lora_train_config_default;
 * tc.steps = train.steps (0 = one epoch of the data, resolved by the
 * command); tc.schedule stays the default (run_settings sets
 * parallel.schedule). */
typedef struct {
    lora_train_config tc;
} train_settings;
losa_status train_settings_from_deck(const deck *dk, const model_config *cfg, train_settings *s);

/* [lora]: the adapters over lora_config_default; the adapter seed is the
 * training seed of t. */
typedef struct {
    lora_config lc;
} lora_settings;
losa_status lora_settings_from_deck(const deck *dk, const train_settings *t, lora_settings *s);

/* [eval]: data (its eval_text) decides whether the perplexity is measured. */
typedef struct eval_settings {
    int seqlen, batch, max_windows; /* windows of S tokens, per micro-batch, 0 = all */
    int each_step;                  /* perplexity after every LoSA step */
    int dense;                      /* also the dense model's perplexity (losa prune) */
    const char *zeroshot;           /* task names for zero-shot evaluation ("" = none) */
    int limit;                      /* items per zero-shot task (0 = all) */
} eval_settings;
losa_status eval_settings_from_deck(const deck *dk, const model_config *cfg,
                                    const data_settings *data, eval_settings *s);

/* [parallel] */
typedef struct {
    int pp, dp;                     /* pp = 0: ranks / dp */
    int schedule;                   /* LORA_SCHEDULE_1F1B or _GPIPE */
    double head_cost_layers;        /* > 0: head + loss cost in layers (measured); 0: modelled */
    char where[SETTINGS_WHERE_MAX]; /* of parallel.pp, for layout errors */
} parallel_settings;
losa_status parallel_settings_from_deck(const deck *dk, parallel_settings *s);
/* The layout on `ranks` ranks: pp (0: ranks / dp) x dp must be ranks and
 * pp at most the model's layers (cfg, if given). */
losa_status parallel_settings_layout(const parallel_settings *s, int ranks,
                                     const model_config *cfg, int *pp, int *dp);

/* [output] */
typedef struct {
    settings_file dir;   /* output.dir: run directory (losa run) */
    settings_file store; /* output.store: written store (losa prune, finetune) */
} output_settings;
losa_status output_settings_from_deck(const deck *dk, unsigned need, output_settings *s);

/* Every section, as `losa run` (need: SETTINGS_RUN) or `losa plan`
 * (SETTINGS_MODEL_ANY) reads them, resolved across sections: an N:M
 * pattern makes the layer allocator uniform (N:M fixes every layer's
 * sparsity), losa.beta 0 means 100 for SparseGPT and 1 otherwise,
 * losa.rmi_n is at most data.calib_n, the trainer's schedule is
 * parallel.schedule.  rs zeroed or from an earlier call. */
typedef struct run_settings {
    model_settings model;
    data_settings data;
    prune_settings prune;
    losa_settings losa;
    train_settings train;
    lora_settings lora;
    eval_settings eval;
    parallel_settings parallel;
    output_settings output;
} run_settings;
#define SETTINGS_RUN \
    (SETTINGS_MODEL_STORE | SETTINGS_CALIB | SETTINGS_TRAIN_BY_MODE | SETTINGS_OUTPUT_DIR)
losa_status run_settings_from_deck(const deck *dk, const model_config *cfg, unsigned need,
                                   run_settings *rs);
void run_settings_free(run_settings *rs);

#endif
