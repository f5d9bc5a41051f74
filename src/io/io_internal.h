/* io internals shared by the io files (no HDF5 types: those are in io_h5.h):
 * a validated safetensors file, config parsing and checks (config.c), the
 * HF tensor names, small file helpers. */
#ifndef LOSA_IO_INTERNAL_H
#define LOSA_IO_INTERNAL_H

#include "core.h"
#include "kernels.h" /* kern_bf16_round / kern_bf16_value */
#include "model.h"

typedef enum {
    IO_DTYPE_F32 = 0, IO_DTYPE_F16, IO_DTYPE_BF16, /* convertible to fp32 */
    IO_DTYPE_OTHER                                 /* known size, not supported */
} io_dtype;

typedef struct {
    char *name;
    char dtype_name[16];
    io_dtype dtype;
    int ndim;
    int64_t shape[8];
    uint64_t begin, end; /* byte range inside the data area */
} io_st_tensor;

typedef struct {
    char path[4096];
    int fd;
    uint64_t file_size;
    uint64_t data_start; /* 8 + header length */
    int n;
    io_st_tensor *t;
} io_st_file;

/* Open and validate the whole header: length vs file size, JSON, every
 * tensor's dtype size x shape product == its byte range, ranges inside the
 * data area. */
losa_status io_st_open(io_st_file *f, const char *path);
void io_st_close(io_st_file *f);
const io_st_tensor *io_st_find(const io_st_file *f, const char *name);
/* Check that tensor t has dtype F32/F16/BF16 and the given shape; the
 * message names the file, the tensor, expected and found. */
losa_status io_st_check(const io_st_file *f, const io_st_tensor *t, int ndim,
                        const int64_t *shape);
/* Read tensor t converted to fp32 into x (numel floats). */
losa_status io_st_read_f32(const io_st_file *f, const io_st_tensor *t, float *x);

/* Half-precision conversions (exposed for tests). */
float io_f16_to_f32(uint16_t h);
float io_bf16_to_f32(uint16_t h);

/* Limits on a model configuration from outside (config.json, a llama2.c
 * header) checked before any size arithmetic: every dimension below 2^24,
 * n_layers below 2^16 and the parameter count below 2^40, so that products
 * of dimensions can never overflow 64 bits (nor int counts of tensors).
 * Then model_config_check(). */
losa_status io_config_check(const model_config *c, const char *what);

/* config.json text (n bytes, named path in messages) -> validated config. */
losa_status io_hf_config_parse(const char *path, const char *text, size_t n,
                               model_config *c);

/* The shortest decimal (6 to 9 digits) that reads back as f, as a double:
 * 1e-5f is written as 1e-05, not 9.99999974737875e-06 (store attributes,
 * config.json). */
double io_float_shortest(float f);

/* One tensor of a Hugging Face LLaMA checkpoint and its place in the store. */
typedef struct {
    char hf[96];    /* name in the safetensors: "model.layers.3.mlp.up_proj.weight" */
    char store[64]; /* name in the store: "/layers/3/w_up" */
    int ndim;
    int64_t shape[2]; /* (D) or (out, in) */
    int is_map;       /* one of the MODEL_N_MAPS linear maps of a layer */
} io_hf_tensor;
/* The tensors config c implies, in HF (and store) order: embed; per layer
 * attn_norm, the maps, ffn_norm; final norm; head unless tied.  it holds
 * IO_HF_MAX_TENSORS(c) entries; returns the count. */
#define IO_HF_MAX_TENSORS(c) (3 + 9 * (int64_t)(c)->n_layers)
int io_hf_tensors(const model_config *c, io_hf_tensor *it);
int64_t io_hf_tensor_numel(const io_hf_tensor *t);

/* The llama2.c header (7 int32) of a file of fsize bytes: config, whether
 * the classifier is shared, and the file size the header implies (checked
 * against fsize). */
losa_status io_l2c_header_parse(const char *ckpt, const int32_t h[7], uint64_t fsize,
                                model_config *c);

/* "(a, b, c)" for messages about shapes. */
void io_fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape);

/* pread the whole range or fail with a message naming path. */
losa_status io_pread_all(int fd, const char *path, void *buf, size_t n, uint64_t off);

/* An importer's output must not be one of its inputs: error (LOSA_ERR_ARG,
 * message naming both) when out exists and is the same file (device and
 * inode, so through symlinks, hard links and other spellings) as in.  An
 * absent out, or an in that cannot be stat'ed, passes. */
losa_status io_out_not_input(const char *out, const char *in);


#endif
