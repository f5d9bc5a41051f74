/* Fuzz the safetensors reader (src/io/safetensors.c): the input is a whole
 * .safetensors file (8-byte header length, JSON header, data area).  On a
 * successful open every tensor is checked against its own shape and read
 * converted to fp32; the header's promises (ranges inside the data area,
 * dtype size x shape == byte range) are asserted. */
#include "fuzz_util.h"
#include "io/io_internal.h"

static int st_esize(const io_st_tensor *t)
{
    switch (t->dtype) {
    case IO_DTYPE_F32: return 4;
    case IO_DTYPE_F16:
    case IO_DTYPE_BF16: return 2;
    default: return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file file;
    fuzz_quiet();
    fuzz_file_init(&file, "fuzz.safetensors");
    fuzz_file_set(&file, data, size);
    io_st_file f;
    if (io_st_open(&f, file.path) != LOSA_OK) {
        FUZZ_ASSERT(core_errmsg()[0] != '\0');
        return 0;
    }
    FUZZ_ASSERT(f.data_start >= 8 && f.data_start <= size);
    for (int i = 0; i < f.n; i++) {
        const io_st_tensor *t = &f.t[i];
        FUZZ_ASSERT(t->begin <= t->end && f.data_start + t->end <= size);
        FUZZ_ASSERT(io_st_find(&f, t->name) != NULL);
        int es = st_esize(t);
        if (es == 0) {
            FUZZ_ASSERT(io_st_check(&f, t, t->ndim, t->shape) == LOSA_ERR_UNSUPPORTED);
            continue;
        }
        FUZZ_ASSERT(io_st_check(&f, t, t->ndim, t->shape) == LOSA_OK);
        int64_t wrong[8] = {0};
        FUZZ_ASSERT(io_st_check(&f, t, t->ndim + 1 > 8 ? 1 : t->ndim + 1, wrong) != LOSA_OK);
        uint64_t numel = (t->end - t->begin) / (uint64_t)es;
        float *x = malloc((size_t)numel * sizeof(float) + 1);
        FUZZ_ASSERT(x != NULL);
        FUZZ_ASSERT(io_st_read_f32(&f, t, x) == LOSA_OK);
        volatile float sum = 0;
        for (uint64_t j = 0; j < numel; j++) sum += x[j];
        (void)sum;
        free(x);
    }
    io_st_close(&f);
    return 0;
}
