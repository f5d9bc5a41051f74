/* io: the HDF5 model store, and importers of outside formats (HF safetensors
 * directories, llama2.c checkpoints).  The only module that includes hdf5.h.
 *
 * Store layout (format_version 1), readable with h5dump / h5py:
 *   /                    attributes: format_version, dim, hidden_dim,
 *                        n_layers, n_heads, n_kv_heads, vocab_size,
 *                        max_seq_len, rms_eps, rope_theta, tie_embeddings,
 *                        bos_id, eos_id, source (string)
 *   /embed               (V, D) float32
 *   /final_norm          (D)
 *   /head                (V, D)   absent when tie_embeddings = 1
 *   /layers/<l>/attn_norm (D), wq (D,D), wk (kvD,D), wv (kvD,D), wo (D,D),
 *               ffn_norm (D), w_gate (F,D), w_up (F,D), w_down (D,F)
 *   /tokenizer           attributes kind, n_vocab, bos_id, eos_id, unk_id,
 *                        byte_fallback, add_dummy_prefix; datasets blob
 *                        (uint8), offsets (int64, V+1), scores (float32, V),
 *                        merges (int32, n_merges x 2; absent if none)
 * All weights fp32, row-major (out, in); RoPE rotate-half convention.
 */
#ifndef LOSA_IO_H
#define LOSA_IO_H

#include "core.h"
#include "model.h"
#include "tok.h"

typedef struct io_store io_store; /* opaque */

/* Create a store for writing: data goes to a temporary name next to path;
 * io_store_commit() closes it and renames it into place; io_store_close()
 * on a store never committed removes the temporary file. Not collective
 * (call on one rank). */
losa_status io_store_create(io_store **st, const char *path);
losa_status io_store_commit(io_store **st);
/* Open an existing store read-only (any number of ranks may do this). */
losa_status io_store_open(io_store **st, const char *path);
void io_store_close(io_store **st);
const char *io_store_path(const io_store *st);

losa_status io_store_write_config(io_store *st, const model_config *c,
                                  const char *source);
losa_status io_store_read_config(io_store *st, model_config *c);
/* Tensors by path ("/layers/3/wq").  read checks rank and shape and names
 * the file, dataset, expected and found shape on mismatch. */
losa_status io_store_write_tensor(io_store *st, const char *name, const float *x,
                                  int ndim, const int64_t *shape);
losa_status io_store_read_tensor(io_store *st, const char *name, float *x,
                                 int ndim, const int64_t *shape);
int io_store_has(io_store *st, const char *name);
/* Name of a layer tensor: "/layers/<l>/<what>". */
void io_layer_name(char *buf, size_t n, int layer, const char *what);

/* Whole stage: reads exactly the tensors the stage owns. */
losa_status io_store_read_stage(io_store *st, model_stage *s);
/* Writes the stage's tensors (a full model is a single stage). */
losa_status io_store_write_stage(io_store *st, const model_stage *s);

losa_status io_store_write_tokenizer(io_store *st, const tok_tokenizer *t);
losa_status io_store_read_tokenizer(io_store *st, tok_tokenizer *t);

/* Generic small datasets for run files and metrics (double / int arrays,
 * string attributes).  Groups on the path are created as needed. */
losa_status io_store_write_doubles(io_store *st, const char *name,
                                   const double *x, int ndim, const int64_t *shape);
losa_status io_store_write_ints(io_store *st, const char *name, const int *x,
                                int ndim, const int64_t *shape);
losa_status io_store_write_string(io_store *st, const char *name, const char *s);
/* Added by the io helper: readers for the above, and a shape query.
 * Strings: name "/a/b/key" is attribute key of group /a/b ("key" or "/key":
 * a root attribute); *s is malloc'd.  At most IO_MAX_DIMS dimensions. */
#define IO_MAX_DIMS 8
losa_status io_store_read_doubles(io_store *st, const char *name, double *x,
                                  int ndim, const int64_t *shape);
losa_status io_store_read_ints(io_store *st, const char *name, int *x, int ndim,
                               const int64_t *shape);
losa_status io_store_read_string(io_store *st, const char *name, char **s);
losa_status io_store_tensor_shape(io_store *st, const char *name, int *ndim,
                                  int64_t *shape);

/* Importers.  Each validates everything before writing and leaves nothing
 * behind on error.  src_dir: HF directory with config.json, model.safetensors
 * or sharded *.safetensors + model.safetensors.index.json, tokenizer.json. */
losa_status io_import_hf(const char *src_dir, const char *out_path);
/* Parse and validate a HF config.json (LLaMA/Mistral) into c; errors name
 * the file and the key.  Not collective. */
losa_status io_hf_config_read(const char *path, model_config *c);
/* llama2.c legacy checkpoint + tokenizer.bin (q/k rows permuted from the
 * interleaved RoPE convention to rotate-half). */
losa_status io_import_llama2c(const char *ckpt, const char *tokenizer_bin,
                              const char *out_path);

#endif
