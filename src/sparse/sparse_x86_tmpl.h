/* sparse: the kernels whose AVX-512 and AVX2 versions are the same
 * algorithm at a different vector width, written once and included by
 * sparse_x86.c once per ISA.  The includer defines
 *   VTGT                the target attribute (T512 / T256)
 *   VL                  lanes per vector (16 / 8)
 *   VSUF(name)          name with the ISA suffix pasted (name512 / name256)
 *   VDENSE_MATVEC       the public dense matvec, fp32 weights (sparse_impl.h)
 *   VDENSE_MATVEC_BF16  the same, bf16 weights
 * and the per-ISA wrappers VSUF(vzero), VSUF(vset1), VSUF(vload),
 * VSUF(vstore), VSUF(vfmadd), VSUF(vload_n) (first n lanes, zeros above),
 * VSUF(vload_bf16) / VSUF(vload_bf16_n) (bf16 values widened to fp32) and
 * VSUF(vhsum) over the vector type VSUF(vec); the end of this file
 * undefines the macros.  The arithmetic (order of FMAs and of the final
 * sums) is that of the hand-written pairs it replaced. */

/* Dense y (out) = W (out, in) x: 4 rows at a time share the x loads; W
 * fp32 (bf = 0) or bf16 (bf = 1, widened exactly to fp32 before the FMA:
 * the same arithmetic as on the fp32 copy of the bf16 values). */
INLINE VTGT void VSUF(dense_rows_any)(float *y, const void *W, const int bf, int64_t in,
                                      const float *x, int o0, int o1)
{
#define WLOAD(r, i) (bf ? VSUF(vload_bf16)((const uint16_t *)W + (r) * in + (i))              \
                        : VSUF(vload)((const float *)W + (r) * in + (i)))
#define WLOAD_N(r, i, n) (bf ? VSUF(vload_bf16_n)((const uint16_t *)W + (r) * in + (i), n)    \
                             : VSUF(vload_n)((const float *)W + (r) * in + (i), n))
    int64_t ifull = in / VL * VL;
    int nt = (int)(in - ifull);
    int64_t o = o0;
    for (; o + 4 <= o1; o += 4) {
        VSUF(vec) a0 = VSUF(vzero)(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = 0; i < ifull; i += VL) {
            VSUF(vec) xv = VSUF(vload)(x + i);
            a0 = VSUF(vfmadd)(WLOAD(o, i), xv, a0);
            a1 = VSUF(vfmadd)(WLOAD(o + 1, i), xv, a1);
            a2 = VSUF(vfmadd)(WLOAD(o + 2, i), xv, a2);
            a3 = VSUF(vfmadd)(WLOAD(o + 3, i), xv, a3);
        }
        if (nt) {
            VSUF(vec) xv = VSUF(vload_n)(x + ifull, nt);
            a0 = VSUF(vfmadd)(WLOAD_N(o, ifull, nt), xv, a0);
            a1 = VSUF(vfmadd)(WLOAD_N(o + 1, ifull, nt), xv, a1);
            a2 = VSUF(vfmadd)(WLOAD_N(o + 2, ifull, nt), xv, a2);
            a3 = VSUF(vfmadd)(WLOAD_N(o + 3, ifull, nt), xv, a3);
        }
        y[o] = VSUF(vhsum)(a0);
        y[o + 1] = VSUF(vhsum)(a1);
        y[o + 2] = VSUF(vhsum)(a2);
        y[o + 3] = VSUF(vhsum)(a3);
    }
    for (; o < o1; o++) {
        VSUF(vec) a0 = VSUF(vzero)();
        for (int64_t i = 0; i < ifull; i += VL)
            a0 = VSUF(vfmadd)(WLOAD(o, i), VSUF(vload)(x + i), a0);
        if (nt) a0 = VSUF(vfmadd)(WLOAD_N(o, ifull, nt), VSUF(vload_n)(x + ifull, nt), a0);
        y[o] = VSUF(vhsum)(a0);
    }
#undef WLOAD
#undef WLOAD_N
}

/* dense_rows_fn of the driver: W fp32 / bf16. */
VTGT static void VSUF(dense_rows)(float *y, const void *W, int64_t in, const float *x, int o0,
                                  int o1)
{
    VSUF(dense_rows_any)(y, W, 0, in, x, o0, o1);
}

VTGT static void VSUF(dense_rows_bf16)(float *y, const void *W, int64_t in, const float *x,
                                       int o0, int o1)
{
    VSUF(dense_rows_any)(y, W, 1, in, x, o0, o1);
}

void VDENSE_MATVEC(float *y, const float *W, int out, int in, const float *x)
{
    dense_matvec(y, W, out, in, x, VSUF(dense_rows));
}

void VDENSE_MATVEC_BF16(float *y, const uint16_t *W, int out, int in, const float *x)
{
    dense_matvec(y, W, out, in, x, VSUF(dense_rows_bf16));
}

/* Prefill: one row o, input columns [c0, c1), batch lanes
 * [bb, bb + VL nv) of XT (the caller offsets XT and yt by bb). */
INLINE VTGT void VSUF(mm_row)(float *yt, const sparse_matrix *s, const float *XT, int ldt,
                              int64_t o, int64_t *pp, int c0, int c1, const int nv)
{
    VSUF(vec) acc[8];
    for (int u = 0; u < nv; u++) acc[u] = VSUF(vload)(yt + VL * u);
    int64_t p = *pp;
    const float *vf = s->vals;
    const uint16_t *vh = s->vals;
    if (s->fmt == SPARSE_FORMAT_CSR) {
        int64_t e = s->rowptr[o + 1];
        for (; p < e; p++) {
            int64_t i = s->idx16 ? s->idx16[p] : s->idx32[p];
            if (i >= c1) break;
            const float *xp = XT + i * ldt;
            VSUF(vec) wv = VSUF(vset1)(vf[p]);
            for (int u = 0; u < nv; u++)
                acc[u] = VSUF(vfmadd)(wv, VSUF(vload)(xp + VL * u), acc[u]);
        }
    } else {
        int bf = s->fmt == SPARSE_FORMAT_BITMAP_BF16;
        const uint16_t *m = sparse_row_mask(s, o);
        /* p counts from rowptr[o]: the row's values (either layout) at p - p0 */
        const int64_t p0 = s->rowptr[o];
        vf = sparse_row_vals(s, o);
        vh = sparse_row_vals(s, o);
        int w1 = (c1 + 15) / 16 < s->nw ? (c1 + 15) / 16 : s->nw;
        for (int w = c0 / 16; w < w1; w += 4) {
            uint64_t bits = 0;
            if (w + 4 <= w1) memcpy(&bits, m + w, 8);
            else
                for (int q = 0; q < w1 - w; q++) bits |= (uint64_t)m[w + q] << (16 * q);
            const float *xw = XT + (int64_t)16 * w * ldt;
            while (bits) {
                int j = __builtin_ctzll(bits);
                bits &= bits - 1;
                const float *xp = xw + (int64_t)j * ldt;
                VSUF(vec) wv = VSUF(vset1)(bf ? kern_bf16_value(vh[p - p0]) : vf[p - p0]);
                p++;
                for (int u = 0; u < nv; u++)
                    acc[u] = VSUF(vfmadd)(wv, VSUF(vload)(xp + VL * u), acc[u]);
            }
        }
    }
    *pp = p;
    for (int u = 0; u < nv; u++) VSUF(vstore)(yt + VL * u, acc[u]);
}

#undef VTGT
#undef VL
#undef VSUF
#undef VDENSE_MATVEC
#undef VDENSE_MATVEC_BF16
