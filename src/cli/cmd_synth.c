/* losa synth --config CONFIG.json --layers K --out STORE.h5 [--seed S]
 *            [--tokenizer tokenizer.json] [--json]
 * A model store with the real layer shapes of a Hugging Face config but only
 * K layers and seeded random weights (N(0, 0.02) matrices, 1 + N(0, 0.1)
 * norms), so memory, time and communication at real layer sizes can be
 * measured without the weights.  The tokenizer is copied from --tokenizer or
 * is a trivial byte-level one (<unk>, <s>, </s>, 256 <0xNN> byte pieces,
 * padded to V with <pad_i> pieces that never match text).
 * Written one layer at a time (peak memory: one layer, or embedding + head),
 * into space reserved for the whole store first (a full disk fails at once).
 * Collective: rank 0 writes, every rank agrees on the outcome. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "io.h"

#define SYNTH_STD 0.02f

/* Byte-level tokenizer with V pieces: unk, bos, eos at their ids (unk = the
 * lowest id that is neither bos nor eos), the 256 byte pieces on the next
 * free ids, then padding pieces. */
static losa_status synth_byte_tokenizer(tok_tokenizer *t, int V, int bos, int eos)
{
    memset(t, 0, sizeof *t);
    if (V < 259)
        return core_err(LOSA_ERR_ARG, "vocab_size %d: the byte-level tokenizer needs >= 259 "
                        "pieces (pass --tokenizer tokenizer.json)", V);
    if (bos < 0 || bos >= V || eos < 0 || eos >= V || bos == eos)
        return core_err(LOSA_ERR_ARG, "bos_token_id %d / eos_token_id %d: expected two "
                        "distinct ids in [0, %d)", bos, eos, V);
    int unk = 0;
    while (unk == bos || unk == eos) unk++;
    t->kind = TOK_KIND_SCORES;
    t->n_vocab = V;
    t->bos_id = bos;
    t->eos_id = eos;
    t->unk_id = unk;
    t->byte_fallback = 1;
    t->add_dummy_prefix = 0;
    t->offsets = calloc((size_t)V + 1, sizeof *t->offsets);
    t->scores = calloc((size_t)V, sizeof *t->scores);
    t->blob = malloc((size_t)V * 16 + 1);
    if (!t->offsets || !t->scores || !t->blob) {
        tok_free(t);
        return core_err(LOSA_ERR_NOMEM, "byte-level tokenizer: out of memory");
    }
    int64_t off = 0;
    int next_byte = 0, n_pad = 0;
    for (int i = 0; i < V; i++) {
        char piece[32];
        if (i == unk) snprintf(piece, sizeof piece, "<unk>");
        else if (i == bos) snprintf(piece, sizeof piece, "<s>");
        else if (i == eos) snprintf(piece, sizeof piece, "</s>");
        else if (next_byte < 256) snprintf(piece, sizeof piece, "<0x%02X>", next_byte++);
        else snprintf(piece, sizeof piece, "<pad_%d>", n_pad++);
        size_t n = strlen(piece);
        memcpy(t->blob + off, piece, n);
        t->offsets[i] = off;
        off += (int64_t)n;
        t->scores[i] = 0.0f;
    }
    t->offsets[V] = off;
    return tok_build(t);
}

static losa_status synth_write(const char *cfg_path, int K, const char *out, uint64_t seed,
                               const char *tok_path, model_config *c)
{
    losa_status s = io_hf_config_read(cfg_path, c);
    if (s != LOSA_OK) return s;
    if (K < 1)
        return core_err(LOSA_ERR_ARG, "--layers: expected >= 1, got %d", K);
    c->n_layers = K;
    s = model_config_check(c, cfg_path);
    if (s != LOSA_OK) return s;
    tok_tokenizer tok;
    memset(&tok, 0, sizeof tok);
    if (tok_path) {
        s = tok_load_hf_json(&tok, tok_path);
        if (s == LOSA_OK && tok.n_vocab > c->vocab_size)
            s = core_err(LOSA_ERR_ARG, "%s: %d pieces, more than the config's vocab_size %d",
                         tok_path, tok.n_vocab, c->vocab_size);
    } else {
        s = synth_byte_tokenizer(&tok, c->vocab_size, c->bos_id, c->eos_id);
    }
    if (s != LOSA_OK) {
        tok_free(&tok);
        return s;
    }
    io_store *st = NULL;
    s = io_store_create(&st, out);
    /* the whole store up front (weights, tokenizer, < 1 KB of HDF5 metadata
     * per dataset): a full file system fails here, before any writing */
    if (s == LOSA_OK)
        s = io_store_reserve(st, (int64_t)model_param_count(c) * 4 + tok.offsets[tok.n_vocab] +
                                     12LL * (tok.n_vocab + 1) + 8LL * tok.n_merges +
                                     1024LL * (9 * K + 16) + (64 << 10));
    char source[4200];
    snprintf(source, sizeof source, "synth: %s, %d layers, seed %llu", cfg_path, K,
             (unsigned long long)seed);
    if (s == LOSA_OK) s = io_store_write_config(st, c, source);
    /* one stage per layer: only one layer (plus embedding or head) in memory;
     * model_stage_randomize gives the same values whatever the staging */
    for (int p = 0; s == LOSA_OK && p < K; p++) {
        model_stage ms;
        memset(&ms, 0, sizeof ms);
        s = model_stage_build(&ms, c, p, K);
        if (s == LOSA_OK) {
            model_stage_randomize(&ms, seed, SYNTH_STD);
            s = io_store_write_stage(st, &ms);
            core_log("synth: layers %d..%d written\n", ms.layer0, ms.layer0 + ms.n_layers - 1);
        }
        model_stage_free(&ms);
    }
    if (s == LOSA_OK) s = io_store_write_tokenizer(st, &tok);
    if (s == LOSA_OK) s = io_store_commit(&st);
    io_store_close(&st);
    tok_free(&tok);
    return s;
}

int cmd_synth(dist_ctx *d, int argc, char **argv)
{
    const char *cfg = NULL, *out = NULL, *tokp = NULL, *v;
    const char *usage = "usage: losa synth --config CONFIG.json --layers K --out STORE.h5 "
                        "[--seed S] [--tokenizer tokenizer.json] [--json]";
    int K = 0, json = 0;
    uint64_t seed = 0;
    losa_status s = LOSA_OK;
    for (int i = 1; i < argc && s == LOSA_OK; i++) {
        if ((v = cli_opt(argc, argv, &i, "--config"))) cfg = v;
        else if ((v = cli_opt(argc, argv, &i, "--out"))) out = v;
        else if ((v = cli_opt(argc, argv, &i, "--tokenizer"))) tokp = v;
        else if ((v = cli_opt(argc, argv, &i, "--layers"))) s = cli_int("--layers", v, 1, 100000, &K);
        else if ((v = cli_opt(argc, argv, &i, "--seed"))) s = cli_u64("--seed", v, &seed);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else s = core_err(LOSA_ERR_ARG, "%s: unknown argument (%s)", argv[i], usage);
    }
    if (s == LOSA_OK && (!cfg || !out || K == 0))
        s = core_err(LOSA_ERR_ARG, "%s missing (%s)",
                     !cfg ? "--config" : !out ? "--out" : "--layers", usage);
    model_config c;
    memset(&c, 0, sizeof c);
    double t0 = core_time();
    if (s == LOSA_OK && dist_rank(d) == 0) s = synth_write(cfg, K, out, seed, tokp, &c);
    int rc = cli_fail(d, "synth", s);
    if (rc) return rc;
    core_log("synth: %s: %d layers of %s, %lld parameters (%.2f GB fp32), %.1f s\n", out, K,
             cfg, (long long)model_param_count(&c), model_param_count(&c) * 4e-9,
             core_time() - t0);
    if (json && dist_rank(d) == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "store", out);
        cJSON_AddStringToObject(o, "config", cfg);
        cJSON_AddNumberToObject(o, "n_layers", K);
        cJSON_AddNumberToObject(o, "n_params", (double)model_param_count(&c));
        cJSON_AddNumberToObject(o, "seed", (double)seed);
        cJSON_AddNumberToObject(o, "seconds", core_time() - t0);
        cli_json_emit(d, o);
    }
    return 0;
}
