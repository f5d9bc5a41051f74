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
 * Weights row-major (out, in); RoPE rotate-half convention.
 *
 * Weight dtype: root attribute dtype = "fp32" | "bf16" (absent: fp32), the
 * dtype of the layers' maps.  A bf16 tensor is a uint16 dataset of bf16 bit
 * patterns (the upper 16 bits of the fp32 word) with the string attribute
 * dtype = "bf16"; every other tensor is float32.  In a bf16 store the maps
 * are bf16, the embedding and head are bf16 where the import made them so
 * (an import that keeps a BF16 source's dtype: both bf16 when the source
 * has them in BF16), the head also when a bf16 stage holding it in bf16
 * wrote it (io_store_write_stage), the embedding when that write found it
 * exactly bf16, the norms always fp32.  A store with a bf16 tensor has
 * format_version 2 (older builds refuse it by that number); fp32 stores
 * stay version 1.  Readers: io_store_read_tensor widens bf16 exactly, so
 * every fp32 consumer reads either dtype.
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
/* Reserve bytes on disk for the store being written (fallocate, size kept):
 * a full file system then fails here, cleanly, instead of inside HDF5. */
losa_status io_store_reserve(io_store *st, int64_t bytes);
losa_status io_reserve_path(const char *path, int64_t bytes);
/* Give back reserved blocks past the end of a closed file. */
void io_release_path(const char *path);
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
/* bf16 tensors (uint16 bits + attribute dtype = "bf16"): write; read a bf16
 * dataset as its bits (an fp32 dataset is an error: rounding belongs to the
 * caller).  io_store_read_tensor reads both dtypes as fp32 (bf16 -> fp32
 * is exact). */
losa_status io_store_write_tensor_bf16(io_store *st, const char *name, const uint16_t *x,
                                       int ndim, const int64_t *shape);
losa_status io_store_read_tensor_bf16(io_store *st, const char *name, uint16_t *x,
                                      int ndim, const int64_t *shape);
/* The stored dtype of one tensor (fp32 or bf16; anything else is
 * LOSA_ERR_FORMAT). */
losa_status io_store_tensor_dtype(io_store *st, const char *name, model_dtype *t);
/* The store's weight dtype (root attribute dtype; absent = fp32).  Writing
 * bf16 also sets format_version 2. */
losa_status io_store_write_dtype(io_store *st, model_dtype t);
losa_status io_store_read_dtype(io_store *st, model_dtype *t);
int io_store_has(io_store *st, const char *name);
/* Name of a layer tensor: "/layers/<l>/<what>". */
void io_layer_name(char *buf, size_t n, int layer, const char *what);

/* Whole stage: reads exactly the tensors the stage owns.  An fp32 stage
 * reads a store of either dtype (bf16 widened exactly); the maps and head of a
 * bf16 stage (model_stage_build_dtype) take bf16 datasets as they are (no
 * fp32 detour) and round fp32 ones to nearest even (kern_bf16_from_f32; a
 * tied head: the embedding read, rounded into the head's rows): *n_lost = non-zero weights that became zero (io_store_read_stage logs a
 * warning when there are any).  Not collective. */
losa_status io_store_read_stage(io_store *st, model_stage *s);
losa_status io_store_read_stage_lost(io_store *st, model_stage *s, int64_t *n_lost);
/* Writes the stage's tensors (a full model is a single stage): the maps
 * and a bf16 head as held, the rest fp32, except that a bf16 stage writes
 * its fp32 embedding (and an fp32 head) in bf16 when every value is a bf16
 * value (lossless: read from a bf16 store); sets the root dtype attribute.
 * The stage's plain layout only. */
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
/* Integer attributes, named like the strings ("/a/b/key"). */
losa_status io_store_write_attr_int(io_store *st, const char *name, int v);
losa_status io_store_read_attr_int(io_store *st, const char *name, int *v);

/* ---- sparse copies of the maps (losa sparsify) ---------------------------
 * /sparse                    attributes format (string), maps (int),
 *                            all (int: 1 = every map, 0 = where
 *                            sparse_profitable at batch 1)
 * /sparse/layers/<l>/<map>/  one sparse_matrix (include/sparse.h):
 *   attributes format ("bitmap", "bitmap-bf16", "csr", "2:4"), out, in, nw,
 *   nm_n, nm_m (int), nnz (int64); datasets rowptr (int64, out+1),
 *   vals (float32, or uint16 bf16 bits, nnz; 2:4: out * in / 2 slots),
 *   mask (uint16, (out, nw); bitmap formats and 2:4's positions), idx
 *   (uint16 when in <= 65536 else uint32, nnz; csr).
 * The arrays are exactly those of sparse_matrix_from_dense of the map
 * (without the padding), so a read copy equals a fresh conversion. */
/* Write s as group (replacing an existing group of that name). */
losa_status io_store_write_sparse(io_store *st, const char *group, const sparse_matrix *s);
/* Read the group into s (allocated; free with sparse_matrix_free): dataset
 * shapes are checked against the attributes before allocating, and the
 * result with sparse_matrix_check; errors name the file and group. */
losa_status io_store_read_sparse(io_store *st, const char *group, sparse_matrix *s);
/* Name of a stored sparse map: "/sparse/layers/<l>/<map>". */
void io_sparse_name(char *buf, size_t n, int layer, const char *map);
/* Copy every root attribute and every top-level object of src except the
 * one named skip ("/sparse"; NULL: none) into dst (being written): groups
 * and datasets deep-copied, soft and external links kept as links. */
losa_status io_store_copy(io_store *dst, io_store *src, const char *skip);

/* External link link_name (groups on the path created) -> object obj of
 * file (a path relative to this store's directory is resolved by HDF5
 * against the directory of the file holding the link).  The target need not
 * exist yet.  Not collective. */
losa_status io_store_link_external(io_store *st, const char *link_name, const char *file,
                                   const char *obj);

/* Importers.  Each validates everything before writing and leaves nothing
 * behind on error.  src_dir: HF directory with config.json, model.safetensors
 * or sharded *.safetensors + model.safetensors.index.json, tokenizer.json. */
losa_status io_import_hf(const char *src_dir, const char *out_path);
/* The weight dtype of an import (losa import --dtype):
 *   keep  the maps are bf16 when every map is BF16 in the source (and then
 *         the embedding and head too where they are BF16), else fp32: a
 *         BF16 checkpoint is stored without the fp32 blow-up, bit for bit;
 *   fp32  every tensor fp32 (BF16 and F16 widen exactly);
 *   bf16  maps, embedding and head rounded to bf16 (nearest even; no
 *         non-zero becomes zero; beyond bf16's range is an error).
 * Norms are fp32 in every case.  io_import_hf is keep. */
typedef enum { IO_IMPORT_KEEP = 0, IO_IMPORT_FP32, IO_IMPORT_BF16 } io_import_dtype;
/* *got: the store's map dtype. */
losa_status io_import_hf_dtype(const char *src_dir, const char *out_path, io_import_dtype want,
                               model_dtype *got);
/* Parse and validate a HF config.json (LLaMA/Mistral) into c; errors name
 * the file and the key.  Not collective. */
losa_status io_hf_config_read(const char *path, model_config *c);
/* llama2.c legacy checkpoint + tokenizer.bin (q/k rows permuted from the
 * interleaved RoPE convention to rotate-half). */
losa_status io_import_llama2c(const char *ckpt, const char *tokenizer_bin,
                              const char *out_path);

/* ---- export (losa export) -------------------------------------------------
 * Added by the export helper.  A store back to a Hugging Face LLaMA
 * directory that io_import_hf() (and transformers) read:
 *   config.json            LlamaForCausalLM, model_type llama
 *   model.safetensors      one file, standard tensor names, F32 or BF16
 *                          (BF16: round to nearest even; zeros stay zeros and
 *                          no non-zero becomes zero)
 *   tokenizer.json         BPE, SentencePiece normalizer, byte fallback
 *   tokenizer_config.json
 * The store's RoPE is rotate-half (HF), so no permutation is applied. */
typedef enum { IO_EXPORT_F32 = 0, IO_EXPORT_BF16 = 1 } io_export_dtype;

typedef struct {
    int n_tensors;
    int64_t st_bytes;  /* size of model.safetensors */
    int64_t n_weights; /* elements written */
    int64_t map_zeros; /* exact zeros in the 7 linear maps of all layers */
    int64_t map_size;  /* elements of those maps */
    int n_merges;      /* in tokenizer.json */
} io_export_stats;

/* Write out_dir from the store at store_path.  Everything is written into
 * "<out_dir>.tmp.<pid>" and renamed into place at the end; on any error the
 * temporary directory is removed and nothing is left.  out_dir must not
 * exist, or be an empty directory.  stats may be NULL.  Not collective
 * (call on one rank). */
losa_status io_export_hf(const char *store_path, const char *out_dir, io_export_dtype dt,
                         io_export_stats *stats);
/* fp32 -> bf16, round to nearest even; NaN stays NaN; a non-zero whose
 * rounding would be zero becomes the smallest bf16 denormal of its sign. */
uint16_t io_f32_to_bf16(float x);
/* tokenizer.json text (malloc'd, NUL-terminated) for t.  TOK_KIND_MERGES:
 * the stored merge list.  TOK_KIND_SCORES (llama2.c): merges derived from
 * the pieces: every (a, b) with a + b = p, a, b, p ordinary pieces, split at
 * a character boundary, ordered by score of p descending (ties: id of p,
 * then split position).  Control pieces are named <unk>, <s>, </s>.
 * *n_merges receives the number of merges. */
losa_status io_tokenizer_hf_json(const tok_tokenizer *t, char **json, int *n_merges);

#endif
