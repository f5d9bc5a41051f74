/* safetensors reader: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {...}}, then the data area (offsets relative to it).
 * Everything is validated at open; data is read with pread on demand. */
#include "io_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_ST_MAX_HEADER (100ull << 20) /* 100 MiB, as the reference reader */

float io_bf16_to_f32(uint16_t h) { return kern_bf16_value(h); }

float io_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13); /* 127 - 15 = 112 */
    } else if (man == 0) {
        u = sign; /* signed zero */
    } else {
        /* subnormal: man * 2^-24, exact in fp32 */
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int io_dtype_size(const char *s, io_dtype *dt)
{
    static const struct { const char *n; int sz; io_dtype dt; } tab[] = {
        {"F32", 4, IO_DTYPE_F32}, {"F16", 2, IO_DTYPE_F16}, {"BF16", 2, IO_DTYPE_BF16},
        {"F64", 8, IO_DTYPE_OTHER}, {"I64", 8, IO_DTYPE_OTHER}, {"U64", 8, IO_DTYPE_OTHER},
        {"I32", 4, IO_DTYPE_OTHER}, {"U32", 4, IO_DTYPE_OTHER}, {"I16", 2, IO_DTYPE_OTHER},
        {"U16", 2, IO_DTYPE_OTHER}, {"I8", 1, IO_DTYPE_OTHER}, {"U8", 1, IO_DTYPE_OTHER},
        {"BOOL", 1, IO_DTYPE_OTHER}, {"F8_E4M3", 1, IO_DTYPE_OTHER},
        {"F8_E5M2", 1, IO_DTYPE_OTHER},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(s, tab[i].n)) {
            *dt = tab[i].dt;
            return tab[i].sz;
        }
    return 0;
}

losa_status io_pread_all(int fd, const char *path, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n > 0) {
        ssize_t got = pread(fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return core_err(LOSA_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (got == 0)
            return core_err(LOSA_ERR_IO, "%s: unexpected end of file at byte %llu", path,
                            (unsigned long long)off);
        p += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return LOSA_OK;
}

losa_status io_out_not_input(const char *out, const char *in)
{
    struct stat so, si;
    if (stat(out, &so) != 0 || stat(in, &si) != 0) return LOSA_OK;
    if (so.st_dev != si.st_dev || so.st_ino != si.st_ino) return LOSA_OK;
    return core_err(LOSA_ERR_ARG,
                    "--out %s: is the same file as the input %s; refusing to overwrite "
                    "the input (expected a new path for the store)",
                    out, in);
}

void io_st_close(io_st_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    f->t = NULL;
    f->n = 0;
    f->fd = -1;
}

/* A JSON number that is a non-negative integer below 2^53. */
static int io_json_u64(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return 0;
    *v = (uint64_t)d;
    return 1;
}

static losa_status io_st_parse_entry(io_st_file *f, const cJSON *e, io_st_tensor *t,
                                     uint64_t data_size)
{
    const char *P = f->path, *N = e->string;
    if (!cJSON_IsObject(e))
        return core_err(LOSA_ERR_FORMAT, "%s: tensor %s: header entry is not an object", P, N);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return core_err(LOSA_ERR_FORMAT, "%s: tensor %s: dtype missing or not a string", P, N);
    if (!cJSON_IsArray(sh))
        return core_err(LOSA_ERR_FORMAT, "%s: tensor %s: shape missing or not an array", P, N);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return core_err(LOSA_ERR_FORMAT,
                        "%s: tensor %s: data_offsets must be an array [begin, end]", P, N);
    t->name = core_strdup(N);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
    int esize = io_dtype_size(dt->valuestring, &t->dtype);
    if (esize == 0)
        return core_err(LOSA_ERR_UNSUPPORTED, "%s: tensor %s: dtype %s unknown", P, N,
                        dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > 8)
        return core_err(LOSA_ERR_UNSUPPORTED, "%s: tensor %s: shape has %d dimensions (max 8)",
                        P, N, nd);
    t->ndim = nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (!io_json_u64(cJSON_GetArrayItem(sh, i), &d))
            return core_err(LOSA_ERR_FORMAT,
                            "%s: tensor %s: shape[%d] is not a non-negative integer", P, N, i);
        t->shape[i] = (int64_t)d;
        if (d != 0 && numel > UINT64_MAX / d) overflow = 1;
        else numel *= d;
    }
    if (!overflow && numel > UINT64_MAX / (uint64_t)esize) overflow = 1;
    if (overflow)
        return core_err(LOSA_ERR_FORMAT, "%s: tensor %s: shape product overflows 64 bits", P, N);
    if (!io_json_u64(cJSON_GetArrayItem(off, 0), &t->begin) ||
        !io_json_u64(cJSON_GetArrayItem(off, 1), &t->end))
        return core_err(LOSA_ERR_FORMAT,
                        "%s: tensor %s: data_offsets are not non-negative integers", P, N);
    if (t->begin > t->end || t->end > data_size)
        return core_err(LOSA_ERR_FORMAT,
                        "%s: tensor %s: data_offsets [%llu, %llu] outside the data area "
                        "(%llu bytes; file truncated?)",
                        P, N, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)data_size);
    if (t->end - t->begin != numel * (uint64_t)esize)
        return core_err(LOSA_ERR_FORMAT,
                        "%s: tensor %s: data_offsets span %llu bytes but dtype %s x "
                        "shape needs %llu",
                        P, N, (unsigned long long)(t->end - t->begin), t->dtype_name,
                        (unsigned long long)(numel * (uint64_t)esize));
    return LOSA_OK;
}

losa_status io_st_open(io_st_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    snprintf(f->path, sizeof f->path, "%s", path);
    f->fd = open(path, O_RDONLY);
    if (f->fd < 0) return core_err(LOSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        io_st_close(f);
        return core_err(LOSA_ERR_IO, "%s: not a regular file", path);
    }
    f->file_size = (uint64_t)sb.st_size;
    unsigned char lb[8];
    if (f->file_size < 8) {
        io_st_close(f);
        return core_err(LOSA_ERR_FORMAT,
                        "%s: header length: file has %llu bytes, fewer than the 8-byte "
                        "length field",
                        path, (unsigned long long)f->file_size);
    }
    losa_status s = io_pread_all(f->fd, path, lb, 8, 0);
    if (s != LOSA_OK) { io_st_close(f); return s; }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lb[i];
    if (hlen > f->file_size - 8 || hlen > IO_ST_MAX_HEADER || hlen < 2) {
        io_st_close(f);
        return core_err(LOSA_ERR_FORMAT,
                        "%s: header length: %llu bytes does not fit the file (%llu bytes "
                        "after the length field; limit %llu)",
                        path, (unsigned long long)hlen,
                        (unsigned long long)(f->file_size - 8),
                        (unsigned long long)IO_ST_MAX_HEADER);
    }
    f->data_start = 8 + hlen;
    char *hdr = malloc(hlen + 1);
    if (!hdr) { io_st_close(f); return core_err(LOSA_ERR_NOMEM, "%s: header: out of memory", path); }
    s = io_pread_all(f->fd, path, hdr, hlen, 8);
    if (s != LOSA_OK) { free(hdr); io_st_close(f); return s; }
    hdr[hlen] = '\0';
    cJSON *j = cJSON_ParseWithLength(hdr, hlen);
    free(hdr);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        io_st_close(f);
        return core_err(LOSA_ERR_FORMAT, "%s: header: not a JSON object", path);
    }
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) if (strcmp(e->string, "__metadata__")) n++;
    f->t = core_calloc((size_t)(n > 0 ? n : 1), sizeof *f->t);
    uint64_t data_size = f->file_size - f->data_start;
    cJSON_ArrayForEach(e, j)
    {
        if (!strcmp(e->string, "__metadata__")) continue;
        s = io_st_parse_entry(f, e, &f->t[f->n], data_size);
        f->n++; /* so that the name is freed even on error */
        if (s != LOSA_OK) break;
    }
    cJSON_Delete(j);
    if (s != LOSA_OK) io_st_close(f);
    return s;
}

const io_st_tensor *io_st_find(const io_st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

void io_fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t at = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "",
                               (long long)shape[i]);
    if (at < n) snprintf(buf + at, n - at, ")");
}

losa_status io_st_check(const io_st_file *f, const io_st_tensor *t, int ndim,
                        const int64_t *shape)
{
    if (t->dtype == IO_DTYPE_OTHER)
        return core_err(LOSA_ERR_UNSUPPORTED,
                        "%s: tensor %s: dtype %s unsupported (expected F32, F16 or BF16)",
                        f->path, t->name, t->dtype_name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char want[160], got[160];
        io_fmt_shape(want, sizeof want, ndim, shape);
        io_fmt_shape(got, sizeof got, t->ndim, t->shape);
        return core_err(LOSA_ERR_FORMAT,
                        "%s: tensor %s: shape %s disagrees with config.json, which implies %s",
                        f->path, t->name, got, want);
    }
    return LOSA_OK;
}

losa_status io_st_read_f32(const io_st_file *f, const io_st_tensor *t, float *x)
{
    uint64_t bytes = t->end - t->begin;
    uint64_t off = f->data_start + t->begin;
    if (t->dtype == IO_DTYPE_F32) return io_pread_all(f->fd, f->path, x, bytes, off);
    if (t->dtype != IO_DTYPE_F16 && t->dtype != IO_DTYPE_BF16)
        return core_err(LOSA_ERR_UNSUPPORTED, "%s: tensor %s: dtype %s unsupported", f->path,
                        t->name, t->dtype_name);
    /* 2-byte types: read in chunks into a bounce buffer, convert (LE host) */
    enum { CHUNK = 1 << 20 };
    uint16_t *buf = malloc(CHUNK * sizeof(uint16_t));
    if (!buf) return core_err(LOSA_ERR_NOMEM, "%s: out of memory", f->path);
    uint64_t numel = bytes / 2, done = 0;
    losa_status s = LOSA_OK;
    while (s == LOSA_OK && done < numel) {
        uint64_t k = numel - done < CHUNK ? numel - done : CHUNK;
        s = io_pread_all(f->fd, f->path, buf, k * 2, off + done * 2);
        if (s != LOSA_OK) break;
        if (t->dtype == IO_DTYPE_BF16)
            for (uint64_t i = 0; i < k; i++) x[done + i] = io_bf16_to_f32(buf[i]);
        else
            for (uint64_t i = 0; i < k; i++) x[done + i] = io_f16_to_f32(buf[i]);
        done += k;
    }
    free(buf);
    return s;
}
