/* sparse: formats (bitmap, bitmap-bf16, CSR; 2:4 in sparse_nm.c), scalar
 * references, ISA dispatch and the sparse-vs-dense decision helper. */
#include "sparse_impl.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

double sparse_density(const float *W, int64_t n)
{
    if (n <= 0) return 0.0;
    int64_t nz = 0;
    for (int64_t i = 0; i < n; i++) nz += W[i] != 0.0f;
    return (double)nz / (double)n;
}

int sparse_is_nm(const float *W, int out, int in, int n, int m)
{
    if (m <= 0 || n < 0 || n > m || in % m) return 0;
    for (int64_t o = 0; o < out; o++)
        for (int g = 0; g < in; g += m) {
            int z = 0;
            for (int j = 0; j < m; j++) z += W[o * in + g + j] == 0.0f;
            if (z < n) return 0;
        }
    return 1;
}

static int sparse_format_valid(sparse_format fmt)
{
    return fmt == SPARSE_FORMAT_BITMAP || fmt == SPARSE_FORMAT_BITMAP_BF16 ||
           fmt == SPARSE_FORMAT_CSR || fmt == SPARSE_FORMAT_NM24;
}

int64_t sparse_matrix_nvals(const sparse_matrix *s)
{
    return s->fmt == SPARSE_FORMAT_NM24 ? (int64_t)s->out * (s->in / 2) : s->nnz;
}

sparse_format sparse_format_for(const float *W, int out, int in, sparse_format fmt, int batch)
{
    return fmt == SPARSE_FORMAT_BITMAP && sparse_profitable(SPARSE_FORMAT_NM24, 0.5, batch) &&
                   sparse_is_nm(W, out, in, 2, 4)
               ? SPARSE_FORMAT_NM24
               : fmt;
}

losa_status sparse_matrix_alloc(sparse_matrix *s, sparse_format fmt, int out, int in,
                                int64_t nnz)
{
    memset(s, 0, sizeof *s);
    if (out <= 0 || in <= 0)
        return core_err(LOSA_ERR_ARG, "sparse: shape: expected out > 0 and in > 0, got (%d, %d)",
                        out, in);
    if (!sparse_format_valid(fmt))
        return core_err(LOSA_ERR_ARG, "sparse: format: expected bitmap, bitmap-bf16, csr or 2:4, "
                        "got %d", (int)fmt);
    int nm = fmt == SPARSE_FORMAT_NM24;
    if (nm && in % 4)
        return core_err(LOSA_ERR_ARG, "sparse: 2:4 format: expected inputs a multiple of 4, "
                        "got %d", in);
    int64_t maxnz = nm ? (int64_t)out * (in / 2) : (int64_t)out * in;
    if (nnz < 0 || nnz > maxnz)
        return core_err(LOSA_ERR_ARG, "sparse: nnz: expected 0..%lld for shape (%d, %d)%s, got "
                        "%lld", (long long)maxnz, out, in, nm ? " in 2:4" : "", (long long)nnz);
    s->fmt = fmt;
    s->out = out;
    s->in = in;
    s->nw = (in + 15) / 16;
    s->nnz = nnz;
    s->nm_n = nm ? 2 : 0;
    s->nm_m = nm ? 4 : 0;
    s->rowptr = core_calloc((size_t)out + 1, sizeof(int64_t));
    int is_bf16 = fmt == SPARSE_FORMAT_BITMAP_BF16;
    s->vals = core_calloc((size_t)sparse_matrix_nvals(s) + SPARSE_VAL_PAD,
                          is_bf16 ? sizeof(uint16_t) : sizeof(float));
    if (fmt == SPARSE_FORMAT_CSR) {
        if (in <= 65536) s->idx16 = core_calloc((size_t)nnz + SPARSE_VAL_PAD, sizeof(uint16_t));
        else s->idx32 = core_calloc((size_t)nnz + SPARSE_VAL_PAD, sizeof(uint32_t));
    } else {
        s->mask = core_calloc((size_t)out * s->nw, sizeof(uint16_t));
    }
    return LOSA_OK;
}

losa_status sparse_matrix_from_dense(sparse_matrix *s, const float *W, int out, int in,
                                     sparse_format fmt)
{
    memset(s, 0, sizeof *s);
    if (out <= 0 || in <= 0 || !sparse_format_valid(fmt))
        return sparse_matrix_alloc(s, fmt, out, in, 0); /* the error message */
    if (fmt == SPARSE_FORMAT_NM24 && !sparse_is_nm(W, out, in, 2, 4))
        return core_err(LOSA_ERR_ARG, "sparse: 2:4 format: the (%d, %d) matrix is not 2:4 (a "
                        "group of 4 inputs with more than 2 non-zeros%s)", out, in,
                        in % 4 ? ", or inputs not a multiple of 4" : "");
    int64_t *rowptr = core_calloc((size_t)out + 1, sizeof(int64_t)); /* (out + 1) */
    int64_t nnz = 0;
    for (int64_t o = 0; o < out; o++) {
        rowptr[o] = nnz;
        for (int64_t i = 0; i < in; i++) nnz += W[o * in + i] != 0.0f;
    }
    rowptr[out] = nnz;
    losa_status st = sparse_matrix_alloc(s, fmt, out, in, nnz);
    if (st != LOSA_OK) {
        core_free(rowptr);
        return st;
    }
    if (fmt == SPARSE_FORMAT_NM24) { /* rowptr: the fill counts the non-zeros again */
        core_free(rowptr);
        sparse_nm_fill(s, W);
        return LOSA_OK;
    }
    core_free(s->rowptr);
    s->rowptr = rowptr;
    int is_bf16 = fmt == SPARSE_FORMAT_BITMAP_BF16;
    float *vf = s->vals;
    uint16_t *vh = s->vals;
    for (int64_t o = 0; o < out; o++) {
        int64_t p = s->rowptr[o];
        for (int64_t i = 0; i < in; i++) {
            float w = W[o * in + i];
            if (w == 0.0f) continue;
            if (is_bf16) vh[p] = kern_bf16_round(w);
            else vf[p] = w;
            if (s->idx16) s->idx16[p] = (uint16_t)i;
            if (s->idx32) s->idx32[p] = (uint32_t)i;
            if (s->mask) s->mask[o * s->nw + i / 16] |= (uint16_t)(1u << (i % 16));
            p++;
        }
    }
    /* record the strongest N:M pattern (informational; kernels are generic) */
    static const int pat[][2] = {{2, 4}, {4, 8}};
    for (int k = 0; k < 2; k++)
        if (sparse_is_nm(W, out, in, pat[k][0], pat[k][1])) {
            s->nm_n = pat[k][0];
            s->nm_m = pat[k][1];
            break;
        }
    return LOSA_OK;
}

void sparse_matrix_free(sparse_matrix *s)
{
    if (!s) return;
    for (int p = 0; p < s->npanel; p++) sparse_matrix_free(&s->panel[p]);
    core_free(s->panel);
    core_free(s->pcol);
    core_free(s->rowptr);
    core_free(s->mask);
    core_free(s->vals);
    core_free(s->idx16);
    core_free(s->idx32);
    core_free(s->ilptr);
    memset(s, 0, sizeof *s);
}

losa_status sparse_matrix_panel(sparse_matrix *s, int width)
{
    if (s->npanel || s->fmt == SPARSE_FORMAT_CSR) return LOSA_OK;
    if (width <= 0) {
        int np = (s->in + SPARSE_PANEL_MAX - 1) / SPARSE_PANEL_MAX;
        width = ((s->in + np - 1) / np + 63) / 64 * 64;
    } else if (width > (1 << 30)) {
        return core_err(LOSA_ERR_ARG, "sparse panels: width %d too large", width);
    }
    width = (width + 15) / 16 * 16; /* panels start on a bitmap word */
    int np = (s->in + width - 1) / width;
    if (np <= 1) return LOSA_OK;
    int *pcol = core_calloc((size_t)np + 1, sizeof(int));
    sparse_matrix *pm = core_calloc((size_t)np, sizeof(sparse_matrix));
    for (int p = 0; p <= np; p++) pcol[p] = p < np ? p * width : s->in;
    size_t vb = s->fmt == SPARSE_FORMAT_BITMAP_BF16 ? sizeof(uint16_t) : sizeof(float);
    for (int p = 0; p < np; p++) {
        int w0 = pcol[p] / 16, w1 = (pcol[p + 1] + 15) / 16;
        int64_t nnz = 0;
        if (s->fmt == SPARSE_FORMAT_NM24) nnz = sparse_nm_panel_nnz(s, pcol[p], pcol[p + 1]);
        else
            for (int64_t o = 0; o < s->out; o++)
                for (int w = w0; w < w1; w++) nnz += __builtin_popcount(s->mask[o * s->nw + w]);
        losa_status st = sparse_matrix_alloc(&pm[p], s->fmt, s->out, pcol[p + 1] - pcol[p], nnz);
        if (st != LOSA_OK) {
            for (int q = 0; q <= p; q++) sparse_matrix_free(&pm[q]);
            core_free(pm);
            core_free(pcol);
            return st;
        }
        pm[p].nm_n = s->nm_n;
        pm[p].nm_m = s->nm_m;
        if (s->fmt == SPARSE_FORMAT_NM24) sparse_nm_panel_fill(&pm[p], s, pcol[p]);
    }
    if (s->fmt != SPARSE_FORMAT_NM24) { /* bitmap panels: row-interleaved (ilptr) */
        for (int p = 0; p < np; p++) { /* rowptr, then ilptr from it */
            sparse_matrix *q = &pm[p];
            int w0 = pcol[p] / 16;
            for (int64_t o = 0; o < s->out; o++) {
                int64_t n = 0;
                for (int w = 0; w < q->nw; w++) n += __builtin_popcount(s->mask[o * s->nw + w0 + w]);
                q->rowptr[o + 1] = q->rowptr[o] + n;
            }
            core_free(q->mask);
            core_free(q->vals);
            q->vals = NULL;
            q->ilptr = core_calloc((size_t)s->out + 1, sizeof(int64_t));
            int64_t mb = sparse_il_mask_bytes(q);
            for (int64_t o = 0; o < s->out; o++)
                q->ilptr[o + 1] = q->ilptr[o] + mb + (int64_t)vb * (q->rowptr[o + 1] - q->rowptr[o]);
            /* padded as vals: vector loads past a row's last value */
            q->mask = core_calloc((size_t)q->ilptr[s->out] + SPARSE_VAL_PAD * vb, 1);
        }
        for (int64_t o = 0; o < s->out; o++) {
            const char *v = (const char *)s->vals + (size_t)s->rowptr[o] * vb;
            for (int p = 0; p < np; p++) {
                sparse_matrix *q = &pm[p];
                char *r = (char *)q->mask + q->ilptr[o];
                size_t n = (size_t)(q->rowptr[o + 1] - q->rowptr[o]) * vb;
                memcpy(r, s->mask + o * s->nw + pcol[p] / 16, (size_t)q->nw * sizeof(uint16_t));
                memcpy(r + sparse_il_mask_bytes(q), v, n);
                v += n;
            }
        }
    }
    core_free(s->rowptr);
    core_free(s->mask);
    core_free(s->vals);
    s->rowptr = NULL;
    s->mask = NULL;
    s->vals = NULL;
    s->npanel = np;
    s->pcol = pcol;
    s->panel = pm;
    return LOSA_OK;
}

static const char *fmt_names[] = {"bitmap", "bitmap-bf16", "csr", "2:4"};

const char *sparse_format_name(sparse_format f)
{
    return sparse_format_valid(f) ? fmt_names[f] : "?";
}

losa_status sparse_format_from_string(const char *str, sparse_format *f)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(str, fmt_names[i])) {
            *f = (sparse_format)i;
            return LOSA_OK;
        }
    return core_err(LOSA_ERR_ARG, "sparse format: expected bitmap, bitmap-bf16, csr or 2:4, got "
                    "'%s'", str);
}

static losa_status panels_check(const sparse_matrix *s, const char *where)
{
    if (s->npanel < 2 || !s->pcol || !s->panel || s->fmt == SPARSE_FORMAT_CSR ||
        s->pcol[0] != 0 || s->pcol[s->npanel] != s->in)
        return core_err(LOSA_ERR_FORMAT, "%s: %d panels over %d inputs: inconsistent", where,
                        s->npanel, s->in);
    int64_t nnz = 0;
    for (int p = 0; p < s->npanel; p++) {
        const sparse_matrix *q = &s->panel[p];
        char w[256];
        snprintf(w, sizeof w, "%s panel %d", where, p);
        if (s->pcol[p + 1] <= s->pcol[p] || s->pcol[p] % 16 || q->npanel || q->fmt != s->fmt ||
            q->out != s->out || q->in != s->pcol[p + 1] - s->pcol[p])
            return core_err(LOSA_ERR_FORMAT, "%s: columns %d..%d, shape (%d, %d): inconsistent",
                            w, s->pcol[p], s->pcol[p + 1], q->out, q->in);
        losa_status st = sparse_matrix_check(q, w);
        if (st != LOSA_OK) return st;
        nnz += q->nnz;
    }
    if (nnz != s->nnz)
        return core_err(LOSA_ERR_FORMAT, "%s: panels hold %lld non-zeros, expected %lld", where,
                        (long long)nnz, (long long)s->nnz);
    return LOSA_OK;
}

losa_status sparse_matrix_check(const sparse_matrix *s, const char *where)
{
    if (s->npanel) return panels_check(s, where);
    int il = s->ilptr != NULL;
    if (!sparse_format_valid(s->fmt) || s->out <= 0 || s->in <= 0 || s->nw != (s->in + 15) / 16 ||
        s->nnz < 0 || s->nnz > (int64_t)s->out * s->in || !s->rowptr || !s->vals == !il ||
        (il && (s->fmt == SPARSE_FORMAT_CSR || s->fmt == SPARSE_FORMAT_NM24)))
        return core_err(LOSA_ERR_FORMAT, "%s: format %d, shape (%d, %d), nnz %lld: inconsistent",
                        where, (int)s->fmt, s->out, s->in, (long long)s->nnz);
    if (!((s->nm_n == 0 && s->nm_m == 0) || (s->nm_n == 2 && s->nm_m == 4) ||
          (s->nm_n == 4 && s->nm_m == 8)))
        return core_err(LOSA_ERR_FORMAT, "%s: N:M pattern %d:%d (expected none, 2:4 or 4:8)",
                        where, s->nm_n, s->nm_m);
    if (s->rowptr[0] != 0 || s->rowptr[s->out] != s->nnz)
        return core_err(LOSA_ERR_FORMAT, "%s: rowptr: expected to run from 0 to nnz %lld, "
                        "found %lld .. %lld", where, (long long)s->nnz,
                        (long long)s->rowptr[0], (long long)s->rowptr[s->out]);
    for (int64_t o = 0; o < s->out; o++)
        if (s->rowptr[o + 1] < s->rowptr[o])
            return core_err(LOSA_ERR_FORMAT, "%s: rowptr decreases at row %lld", where,
                            (long long)o);
    if (s->fmt == SPARSE_FORMAT_NM24) return sparse_nm_check_rows(s, where);
    if (s->fmt == SPARSE_FORMAT_CSR) {
        if (!s->idx16 == !s->idx32 || (s->idx16 && s->in > 65536))
            return core_err(LOSA_ERR_FORMAT, "%s: CSR column indices missing", where);
        for (int64_t o = 0; o < s->out; o++)
            for (int64_t p = s->rowptr[o], prev = -1; p < s->rowptr[o + 1]; p++) {
                int64_t c = s->idx16 ? s->idx16[p] : s->idx32[p];
                if (c <= prev || c >= s->in)
                    return core_err(LOSA_ERR_FORMAT, "%s: row %lld: column %lld after %lld "
                                    "(expected increasing columns < %d)", where, (long long)o,
                                    (long long)c, (long long)prev, s->in);
                prev = c;
            }
        return LOSA_OK;
    }
    if (!s->mask) return core_err(LOSA_ERR_FORMAT, "%s: bitmap missing", where);
    if (il) { /* each row: its bitmap words (padded) and its values */
        size_t vb = s->fmt == SPARSE_FORMAT_BITMAP_BF16 ? sizeof(uint16_t) : sizeof(float);
        for (int64_t o = 0; o < s->out; o++)
            if (s->ilptr[o + 1] - s->ilptr[o] !=
                    sparse_il_mask_bytes(s) + (int64_t)vb * (s->rowptr[o + 1] - s->rowptr[o]) ||
                s->ilptr[0] != 0)
                return core_err(LOSA_ERR_FORMAT, "%s: row %lld: interleaved offsets do not match "
                                "rowptr", where, (long long)o);
    }
    unsigned tail = s->in % 16 ? (0xffffu << (s->in % 16)) & 0xffffu : 0u; /* bits past in */
    for (int64_t o = 0; o < s->out; o++) {
        const uint16_t *m = sparse_row_mask(s, o);
        int64_t bits = 0;
        for (int w = 0; w < s->nw; w++) bits += __builtin_popcount(m[w]);
        if (m[s->nw - 1] & tail)
            return core_err(LOSA_ERR_FORMAT, "%s: row %lld: bitmap bit past column %d", where,
                            (long long)o, s->in - 1);
        if (bits != s->rowptr[o + 1] - s->rowptr[o])
            return core_err(LOSA_ERR_FORMAT, "%s: row %lld: %lld bitmap bits but rowptr "
                            "gives %lld values", where, (long long)o, (long long)bits,
                            (long long)(s->rowptr[o + 1] - s->rowptr[o]));
    }
    return LOSA_OK;
}

size_t sparse_matrix_bytes(const sparse_matrix *s)
{
    if (s->npanel) {
        size_t b = 0;
        for (int p = 0; p < s->npanel; p++) b += sparse_matrix_bytes(&s->panel[p]);
        return b;
    }
    size_t b = ((size_t)s->out + 1) * sizeof(int64_t);
    if (s->ilptr) return b + (size_t)s->ilptr[s->out]; /* the kernels read ilptr, not rowptr */
    size_t nnz = (size_t)s->nnz;
    switch (s->fmt) {
    case SPARSE_FORMAT_BITMAP: return b + (size_t)s->out * s->nw * 2 + nnz * 4;
    case SPARSE_FORMAT_BITMAP_BF16: return b + (size_t)s->out * s->nw * 2 + nnz * 2;
    case SPARSE_FORMAT_CSR: return b + nnz * (s->idx16 ? 2 : 4) + nnz * 4;
    case SPARSE_FORMAT_NM24: return (size_t)s->out * s->nw * 2 + (size_t)sparse_matrix_nvals(s) * 4;
    }
    return b;
}

/* Calls f(col, value) for the non-zeros of row o in column order. */
#define SPARSE_ROW_FOREACH(s, o, COL, VAL, BODY)                               \
    do {                                                                       \
        int64_t p_ = (s)->rowptr[o];                                           \
        const float *vf_ = (s)->vals;                                          \
        const uint16_t *vh_ = (s)->vals;                                       \
        int bf_ = (s)->fmt == SPARSE_FORMAT_BITMAP_BF16;                       \
        if ((s)->fmt == SPARSE_FORMAT_CSR) {                                   \
            for (; p_ < (s)->rowptr[(o) + 1]; p_++) {                          \
                int64_t COL = (s)->idx16 ? (s)->idx16[p_] : (s)->idx32[p_];    \
                float VAL = vf_[p_];                                           \
                BODY;                                                          \
            }                                                                  \
        } else { /* either layout (ilptr): the row's own arrays */          \
            const uint16_t *mr_ = sparse_row_mask(s, o);                       \
            vf_ = sparse_row_vals(s, o);                                       \
            vh_ = sparse_row_vals(s, o);                                       \
            p_ = 0;                                                            \
            for (int w_ = 0; w_ < (s)->nw; w_++) {                             \
                unsigned m_ = mr_[w_];                                         \
                for (int j_ = 0; j_ < 16; j_++) {                              \
                    if (!(m_ >> j_ & 1u)) continue;                            \
                    int64_t COL = 16 * w_ + j_;                                \
                    float VAL = bf_ ? kern_bf16_value(vh_[p_]) : vf_[p_];   \
                    p_++;                                                      \
                    BODY;                                                      \
                }                                                              \
            }                                                                  \
        }                                                                      \
    } while (0)

/* Dot product of row o of s with x (x indexed by the inputs of s);
 * panels in order. */
static float row_dot(const sparse_matrix *s, int64_t o, const float *x)
{
    if (s->npanel) {
        float acc = 0.0f;
        for (int p = 0; p < s->npanel; p++) acc += row_dot(&s->panel[p], o, x + s->pcol[p]);
        return acc;
    }
    if (s->fmt == SPARSE_FORMAT_NM24) return sparse_nm_row_dot(s, o, x);
    float acc = 0.0f;
    SPARSE_ROW_FOREACH(s, o, col, v, acc += v * x[col]);
    return acc;
}

static void scatter_rows(float *W, int64_t ld, const sparse_matrix *s)
{
    if (s->npanel) {
        for (int p = 0; p < s->npanel; p++) scatter_rows(W + s->pcol[p], ld, &s->panel[p]);
        return;
    }
    if (s->fmt == SPARSE_FORMAT_NM24) {
        for (int64_t o = 0; o < s->out; o++) sparse_nm_scatter_row(W + o * ld, s, o);
        return;
    }
    for (int64_t o = 0; o < s->out; o++) SPARSE_ROW_FOREACH(s, o, col, v, W[o * ld + col] = v);
}

void sparse_matrix_to_dense(float *W, const sparse_matrix *s)
{
    memset(W, 0, (size_t)s->out * s->in * sizeof(float));
    scatter_rows(W, s->in, s);
}

void sparse_matvec_ref(float *y, const sparse_matrix *s, const float *x)
{
    for (int64_t o = 0; o < s->out; o++) y[o] = row_dot(s, o, x);
}

void sparse_matmul_ref(float *Y, const sparse_matrix *s, const float *X, int N)
{
    for (int64_t n = 0; n < N; n++) {
        const float *x = X + n * s->in;
        float *y = Y + n * s->out;
        sparse_matvec_ref(y, s, x);
    }
}

/* ---------------------------------------------------------------- ISA */

static int g_isa = -1;

int sparse_isa_supported(sparse_isa isa)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    switch (isa) {
    case SPARSE_ISA_SCALAR: return 1;
    case SPARSE_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SPARSE_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi2");
    }
    return 0;
#else
    return isa == SPARSE_ISA_SCALAR;
#endif
}

const char *sparse_isa_name(sparse_isa isa)
{
    switch (isa) {
    case SPARSE_ISA_SCALAR: return "scalar";
    case SPARSE_ISA_AVX2: return "avx2";
    case SPARSE_ISA_AVX512: return "avx512";
    }
    return "?";
}

sparse_isa sparse_isa_best(void)
{
    sparse_isa cap = SPARSE_ISA_AVX512;
    const char *e = getenv("LOSA_SPARSE_ISA");
    if (e) {
        if (!strcmp(e, "scalar")) cap = SPARSE_ISA_SCALAR;
        else if (!strcmp(e, "avx2")) cap = SPARSE_ISA_AVX2;
    }
    for (int i = cap; i > 0; i--)
        if (sparse_isa_supported((sparse_isa)i)) return (sparse_isa)i;
    return SPARSE_ISA_SCALAR;
}

sparse_isa sparse_get_isa(void)
{
    if (g_isa < 0) g_isa = sparse_isa_best();
    return (sparse_isa)g_isa;
}

int sparse_set_isa(sparse_isa isa)
{
    int prev = sparse_get_isa();
    if (!sparse_isa_supported(isa)) return -1;
    g_isa = isa;
    return prev;
}

/* ------------------------------------------------------------ kernels */

static void matvec_scalar(float *y, const sparse_matrix *s, const float *x)
{
#pragma omp parallel for schedule(static) if ((int64_t)s->out * s->in > (1 << 18))
    for (int o = 0; o < s->out; o++) y[o] = row_dot(s, o, x);
}

void sparse_matvec_group(float *const *y, const sparse_matrix *const *s, int n, const float *x)
{
    LOSA_CHECK(n >= 1 && n <= SPARSE_GROUP_MAX);
    switch (sparse_get_isa()) {
#if defined(__x86_64__)
    case SPARSE_ISA_AVX512: sparse_matvec_group_avx512(y, s, n, x); return;
    case SPARSE_ISA_AVX2: sparse_matvec_group_avx2(y, s, n, x); return;
#endif
    default:
        for (int k = 0; k < n; k++) matvec_scalar(y[k], s[k], x);
        return;
    }
}

/* A group of one: the same driver and blocks. */
void sparse_matvec(float *y, const sparse_matrix *s, const float *x)
{
    sparse_matvec_group(&y, &s, 1, x);
}

/* The dense matvecs, W fp32 (bf = 0) or bf16 (bf = 1): the ISA kernels,
 * else a scalar loop on the widened values. */
static void dense_matvec_any(float *y, const void *W, int bf, int out, int in, const float *x)
{
#if defined(__x86_64__)
    sparse_isa isa = sparse_get_isa();
    if (isa == SPARSE_ISA_AVX512 || isa == SPARSE_ISA_AVX2) {
        if (isa == SPARSE_ISA_AVX512 && bf) sparse_dense_matvec_bf16_avx512(y, W, out, in, x);
        else if (isa == SPARSE_ISA_AVX512) sparse_dense_matvec_avx512(y, W, out, in, x);
        else if (bf) sparse_dense_matvec_bf16_avx2(y, W, out, in, x);
        else sparse_dense_matvec_avx2(y, W, out, in, x);
        return;
    }
#endif
    const float *wf = W;
    const uint16_t *wh = W;
#pragma omp parallel for schedule(static) if ((int64_t)out * in > (1 << 18))
    for (int o = 0; o < out; o++) {
        int64_t r = (int64_t)o * in;
        float acc = 0.0f;
        for (int i = 0; i < in; i++) acc += (bf ? kern_bf16_value(wh[r + i]) : wf[r + i]) * x[i];
        y[o] = acc;
    }
}

void sparse_dense_matvec(float *y, const float *W, int out, int in, const float *x)
{
    dense_matvec_any(y, W, 0, out, in, x);
}

void sparse_dense_matvec_bf16(float *y, const uint16_t *W, int out, int in, const float *x)
{
    dense_matvec_any(y, W, 1, out, in, x);
}

void sparse_transpose_in(float *XT, int ldt, const float *X, int N, int in)
{
#pragma omp parallel for schedule(static) if ((int64_t)N * in > (1 << 16))
    for (int i0 = 0; i0 < in; i0 += 32) {
        int i1 = i0 + 32 < in ? i0 + 32 : in;
        for (int n = 0; n < N; n++)
            for (int i = i0; i < i1; i++) XT[(int64_t)i * ldt + n] = X[(int64_t)n * in + i];
        for (int i = i0; i < i1; i++)
            for (int n = N; n < ldt; n++) XT[(int64_t)i * ldt + n] = 0.0f;
    }
}

void sparse_transpose_out(float *Y, const float *YT, int ldt, int N, int out)
{
#pragma omp parallel for schedule(static) if ((int64_t)N * out > (1 << 16))
    for (int n0 = 0; n0 < N; n0 += 16) {
        int n1 = n0 + 16 < N ? n0 + 16 : N;
        for (int o = 0; o < out; o++)
            for (int n = n0; n < n1; n++) Y[(int64_t)n * out + o] = YT[(int64_t)o * ldt + n];
    }
}

void sparse_matmul(float *Y, const sparse_matrix *s, const float *X, int N)
{
    if (N <= 0) return;
    sparse_isa isa = sparse_get_isa();
    if (N == 1) {
        sparse_matvec(Y, s, X);
        return;
    }
    if (s->fmt == SPARSE_FORMAT_NM24) {
        sparse_nm_matmul(Y, s, X, N);
        return;
    }
#if defined(__x86_64__)
    if (isa == SPARSE_ISA_AVX512 && s->fmt == SPARSE_FORMAT_BITMAP && N <= SPARSE_SMALL_N) {
        sparse_matmul_small_avx512(Y, s, X, N);
        return;
    }
#endif
    if (isa == SPARSE_ISA_SCALAR) {
#pragma omp parallel for schedule(static) if ((int64_t)N * s->out * s->in > (1 << 18))
        for (int n = 0; n < N; n++) {
            const float *x = X + (int64_t)n * s->in;
            float *y = Y + (int64_t)n * s->out;
            for (int64_t o = 0; o < s->out; o++) y[o] = row_dot(s, o, x);
        }
        return;
    }
#if defined(__x86_64__)
    int ldt = (N + 15) / 16 * 16;
    float *XT = core_calloc((size_t)s->in * ldt, sizeof(float));
    float *YT = core_calloc((size_t)s->out * ldt, sizeof(float));
    int64_t *rowoff = core_calloc((size_t)s->out, sizeof(int64_t));
    sparse_transpose_in(XT, ldt, X, N, s->in);
    /* the kernels accumulate into YT: one call per panel */
    for (int p = 0; p < sparse_npieces(s); p++) {
        int c0;
        const sparse_matrix *q = sparse_piece(s, p, &c0);
        const float *xt = XT + (int64_t)c0 * ldt;
        if (isa == SPARSE_ISA_AVX512) sparse_matmul_t_avx512(YT, q, xt, ldt, rowoff);
        else sparse_matmul_t_avx2(YT, q, xt, ldt, rowoff);
    }
    sparse_transpose_out(Y, YT, ldt, N, s->out);
    core_free(XT);
    core_free(YT);
    core_free(rowoff);
#endif
}

/* ----------------------------------------------------------- decision */

/* The highest density at which a format beats dense OpenBLAS, per batch
 * class: 1 (decode), 2..8 (multi-vector matvec), 9..16, above 16 (the
 * transposed prefill kernel; 2:4 runs the multi-vector kernel there too).
 * From `losa bench sparse --prefill-batch N` (N = 4, 8, 16, 128; paired
 * medians over 5 rounds, 2 threads, the three LLaMA-2-7B shapes, AMD EPYC
 * Zen 5 VM shared with other jobs): the worst shape's speed-up
 * must stay >= 1.1 at the table's density.
 *   bitmap: batch 1 1.1-1.9x at 0.5 (bytes: 1.88x); 4 and 8: >= 1.9x at
 *     0.5; 16: 0.8-1.0 at 0.5, 0.8-1.0 at 0.4, 1.2-1.5 at 0.3; 128:
 *     0.83-1.3 at 0.5, 1.0-1.7 at 0.4, 1.14-2.1 at 0.3.
 *   bitmap-bf16: batch 1 by its bytes (2.3x fewer than fp32 at density
 *     0.8) and its kernel's rate (25-32 Gweights/s per core from L2, the
 *     fp32 kernel's); larger batches as the fp32 bitmap (the same
 *     transposed kernel).
 *   2:4: 1.3-1.8x at batch 1, 2.6-4.5x at 4, 3.0-3.7x at 8, 0.96-1.09 at
 *     16, 0.4-0.6 at 128: never above 8.
 *   csr: not measured here; by its bytes (6 per non-zero against 4 per
 *     weight) and gathers, only very sparse matrices.
 * The AVX2 kernels are slower per weight (13 Gweights/s per core for the
 * bitmap, 19 for 2:4 from L2) but still above what dense streams
 * (~17 Gweights/s from memory on 2 cores here), so the table holds. */
/* The last column, batch-1 decode when the maps stay in cache
 * (sparse_cache_resident):
 * `jobs/generate_auto_check.sh` on stories260K (0.9 MB of maps, inside
 * two 1 MB L2 caches), 2 threads, idle Zen 4, decode tokens/s of --sparse
 * auto over off (median of 3 rounds): Wanda 70 % bitmap 1.35x, Wanda 2:4
 * 1.18x, magnitude 50 % bitmap 0.92x (slower: from L2 the dense sgemv
 * runs at its compute rate and the bitmap's expansion costs more than the
 * bytes it saves); minillama (20 MB of maps, out of L2) gained 1.26x at
 * 50 %.  So from cache the bitmaps pay up to about density 0.3 (0.35:
 * a 70 % model's density is 0.3 and a few more), 2:4 as before. */
static const struct {
    sparse_format fmt;
    double dmax[5]; /* batch 1, 2..8, 9..16, above 16; batch 1 from cache */
} pays[] = {
    {SPARSE_FORMAT_BITMAP, {0.55, 0.55, 0.30, 0.30, 0.35}},
    {SPARSE_FORMAT_BITMAP_BF16, {0.80, 0.30, 0.30, 0.30, 0.35}},
    {SPARSE_FORMAT_NM24, {0.50, 0.50, 0.0, 0.0, 0.50}},
    {SPARSE_FORMAT_CSR, {0.10, 0.05, 0.05, 0.05, 0.10}},
};

int sparse_profitable_at(sparse_format fmt, double density, int batch, int resident)
{
    int c = batch <= 1 ? (resident ? 4 : 0) : batch <= 8 ? 1 : batch <= 16 ? 2 : 3;
    for (size_t k = 0; k < sizeof pays / sizeof pays[0]; k++)
        if (pays[k].fmt == fmt) return pays[k].dmax[c] > 0.0 && density <= pays[k].dmax[c];
    return 0;
}

int sparse_profitable(sparse_format fmt, double density, int batch)
{
    return sparse_profitable_at(fmt, density, batch, 0);
}

int sparse_cache_resident(size_t bytes, int threads)
{
    long l2 = -1;
    const char *e = getenv("LOSA_SPARSE_L2"); /* tests: both branches on any CPU */
    if (e && *e) l2 = atol(e);
#ifdef _SC_LEVEL2_CACHE_SIZE
    else l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    if (l2 <= 0) l2 = 1L << 20;
    return bytes <= (size_t)l2 * (size_t)(threads > 0 ? threads : 1);
}
