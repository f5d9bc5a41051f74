/* sparse: the 2:4 format (SPARSE_FORMAT_NM24, layout in include/sparse.h):
 * conversion from dense, structural check, column panels and the scalar
 * reference.  The vector kernels are sparse_nm_x86.c. */
#include "sparse_impl.h"

#include <string.h>

/* The nibble of group g of row o: positions p0 (bits 0-1), p1 (bits 2-3). */
static inline unsigned nm_nibble(const uint16_t *mrow, int64_t g)
{
    return (unsigned)(mrow[g / 4] >> (4 * (g % 4))) & 15u;
}

void sparse_nm_fill(sparse_matrix *s, const float *W)
{
    int64_t in = s->in, ng = in / 4;
    float *v = s->vals;
    for (int64_t o = 0; o < s->out; o++) {
        const float *w = W + o * in;
        uint16_t *m = s->mask + o * s->nw;
        float *vo = v + o * (in / 2);
        int64_t nz = 0;
        for (int64_t g = 0; g < ng; g++) {
            int pos[2], n = 0;
            for (int j = 0; j < 4 && n < 2; j++)
                if (w[4 * g + j] != 0.0f) pos[n++] = j;
            /* a group with fewer non-zeros fills its slots with the lowest
             * free positions (value 0), kept in increasing order */
            for (int j = 0; n < 2 && j < 4; j++)
                if (w[4 * g + j] == 0.0f && (n == 0 || pos[0] != j)) pos[n++] = j;
            if (pos[0] > pos[1]) {
                int t = pos[0];
                pos[0] = pos[1];
                pos[1] = t;
            }
            vo[2 * g] = w[4 * g + pos[0]];
            vo[2 * g + 1] = w[4 * g + pos[1]];
            nz += (vo[2 * g] != 0.0f) + (vo[2 * g + 1] != 0.0f);
            m[g / 4] |= (uint16_t)((unsigned)(pos[0] | pos[1] << 2) << (4 * (g % 4)));
        }
        s->rowptr[o + 1] = s->rowptr[o] + nz;
    }
    s->nm_n = 2;
    s->nm_m = 4;
}

losa_status sparse_nm_check_rows(const sparse_matrix *s, const char *where)
{
    if (s->in % 4 || s->nm_n != 2 || s->nm_m != 4 || !s->mask)
        return core_err(LOSA_ERR_FORMAT, "%s: 2:4 format with %d inputs, pattern %d:%d, mask "
                        "%s (expected inputs a multiple of 4, 2:4, a mask)", where, s->in,
                        s->nm_n, s->nm_m, s->mask ? "present" : "missing");
    int64_t ng = s->in / 4;
    const float *v = s->vals;
    for (int64_t o = 0; o < s->out; o++) {
        const uint16_t *m = s->mask + o * s->nw;
        int64_t nz = 0;
        for (int64_t g = 0; g < 4LL * s->nw; g++) {
            unsigned k = nm_nibble(m, g);
            if (g >= ng ? k != 0 : (k & 3u) >= (k >> 2))
                return core_err(LOSA_ERR_FORMAT, "%s: row %lld group %lld: positions %u, %u "
                                "(expected p0 < p1%s)", where, (long long)o, (long long)g,
                                k & 3u, k >> 2, g >= ng ? ", and none past the last group" : "");
        }
        for (int64_t j = 0; j < s->in / 2; j++) nz += v[o * (s->in / 2) + j] != 0.0f;
        if (nz != s->rowptr[o + 1] - s->rowptr[o])
            return core_err(LOSA_ERR_FORMAT, "%s: row %lld: %lld non-zero slots but rowptr "
                            "gives %lld", where, (long long)o, (long long)nz,
                            (long long)(s->rowptr[o + 1] - s->rowptr[o]));
    }
    return LOSA_OK;
}

float sparse_nm_row_dot(const sparse_matrix *s, int64_t o, const float *x)
{
    const uint16_t *m = s->mask + o * s->nw;
    const float *v = (const float *)s->vals + o * (s->in / 2);
    float acc = 0.0f;
    for (int64_t g = 0; g < s->in / 4; g++) {
        unsigned k = nm_nibble(m, g);
        acc += v[2 * g] * x[4 * g + (k & 3u)];
        acc += v[2 * g + 1] * x[4 * g + (k >> 2)];
    }
    return acc;
}

void sparse_nm_scatter_row(float *w, const sparse_matrix *s, int64_t o)
{
    const uint16_t *m = s->mask + o * s->nw;
    const float *v = (const float *)s->vals + o * (s->in / 2);
    for (int64_t g = 0; g < s->in / 4; g++) {
        unsigned k = nm_nibble(m, g);
        w[4 * g + (k & 3u)] = v[2 * g];
        w[4 * g + (k >> 2)] = v[2 * g + 1];
    }
}

/* Panel p holds inputs pcol[p] .. pcol[p+1] - 1 (pcol[p] a multiple of
 * 16): mask words from pcol[p] / 16, slots from pcol[p] / 2 of every row. */
int64_t sparse_nm_panel_nnz(const sparse_matrix *s, int c0, int c1)
{
    int64_t nz = 0;
    for (int64_t o = 0; o < s->out; o++)
        for (int64_t j = c0 / 2; j < c1 / 2; j++)
            nz += ((const float *)s->vals)[o * (s->in / 2) + j] != 0.0f;
    return nz;
}

void sparse_nm_panel_fill(sparse_matrix *q, const sparse_matrix *s, int c0)
{
    for (int64_t o = 0; o < s->out; o++) {
        memcpy(q->mask + o * q->nw, s->mask + o * s->nw + c0 / 16, sizeof(uint16_t) * q->nw);
        const float *src = (const float *)s->vals + o * (s->in / 2) + c0 / 2;
        memcpy((float *)q->vals + o * (q->in / 2), src, sizeof(float) * (q->in / 2));
        int64_t nz = 0;
        for (int64_t j = 0; j < q->in / 2; j++) nz += src[j] != 0.0f;
        q->rowptr[o + 1] = q->rowptr[o] + nz;
    }
    q->nm_n = 2;
    q->nm_m = 4;
}
