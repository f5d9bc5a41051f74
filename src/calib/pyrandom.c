/* calib_pyrng: CPython's `random` module generator, bit for bit (see
 * include/calib.h).  MT19937 (Matsumoto & Nishimura 1998) with its
 * init_by_array seeding; CPython's int seeding, getrandbits and
 * _randbelow / randint on top.  Written from the published algorithm and
 * the documented CPython behaviour; no MPI, no I/O. */
#include "calib.h"

#include <string.h>

enum { MT_N = 624, MT_M = 397 };
#define MT_MATRIX_A 0x9908b0dfU
#define MT_UPPER 0x80000000U
#define MT_LOWER 0x7fffffffU

static void mt_init(calib_pyrng *g, uint32_t s)
{
    g->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        g->mt[i] = 1812433253U * (g->mt[i - 1] ^ (g->mt[i - 1] >> 30)) + (uint32_t)i;
    g->idx = MT_N;
}

/* init_by_array of the reference MT19937 code */
static void mt_init_array(calib_pyrng *g, const uint32_t *key, int n)
{
    mt_init(g, 19650218U);
    int i = 1, j = 0;
    for (int k = MT_N > n ? MT_N : n; k > 0; k--) {
        g->mt[i] = (g->mt[i] ^ ((g->mt[i - 1] ^ (g->mt[i - 1] >> 30)) * 1664525U)) + key[j] +
                   (uint32_t)j;
        i++;
        j++;
        if (i >= MT_N) {
            g->mt[0] = g->mt[MT_N - 1];
            i = 1;
        }
        if (j >= n) j = 0;
    }
    for (int k = MT_N - 1; k > 0; k--) {
        g->mt[i] = (g->mt[i] ^ ((g->mt[i - 1] ^ (g->mt[i - 1] >> 30)) * 1566083941U)) -
                   (uint32_t)i;
        i++;
        if (i >= MT_N) {
            g->mt[0] = g->mt[MT_N - 1];
            i = 1;
        }
    }
    g->mt[0] = 0x80000000U; /* non-zero initial state */
    g->idx = MT_N;
}

void calib_pyrng_seed(calib_pyrng *g, uint64_t seed)
{
    /* random.seed(int): key = 32-bit words of |seed|, least significant
     * first, no leading zero words; seed 0 -> key [0] */
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    mt_init_array(g, key, key[1] ? 2 : 1);
}

uint32_t calib_pyrng_u32(calib_pyrng *g)
{
    if (g->idx >= MT_N) {
        int k;
        uint32_t y;
        for (k = 0; k < MT_N - MT_M; k++) {
            y = (g->mt[k] & MT_UPPER) | (g->mt[k + 1] & MT_LOWER);
            g->mt[k] = g->mt[k + MT_M] ^ (y >> 1) ^ ((y & 1U) ? MT_MATRIX_A : 0U);
        }
        for (; k < MT_N - 1; k++) {
            y = (g->mt[k] & MT_UPPER) | (g->mt[k + 1] & MT_LOWER);
            g->mt[k] = g->mt[k + (MT_M - MT_N)] ^ (y >> 1) ^ ((y & 1U) ? MT_MATRIX_A : 0U);
        }
        y = (g->mt[MT_N - 1] & MT_UPPER) | (g->mt[0] & MT_LOWER);
        g->mt[MT_N - 1] = g->mt[MT_M - 1] ^ (y >> 1) ^ ((y & 1U) ? MT_MATRIX_A : 0U);
        g->idx = 0;
    }
    uint32_t y = g->mt[g->idx++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= y >> 18;
    return y;
}

uint64_t calib_pyrng_getrandbits(calib_pyrng *g, int k)
{
    if (k <= 0) return 0;
    if (k <= 32) return calib_pyrng_u32(g) >> (32 - k);
    /* 32-bit words, least significant first; the last word keeps its top
     * (k mod 32) bits */
    uint64_t r = 0;
    for (int w = 0; k > 0; w++, k -= 32) {
        uint32_t x = calib_pyrng_u32(g);
        if (k < 32) x >>= 32 - k;
        r |= (uint64_t)x << (32 * w);
    }
    return r;
}

uint64_t calib_pyrng_randbelow(calib_pyrng *g, uint64_t n)
{
    if (n == 0) return 0;
    int k = 64 - __builtin_clzll(n); /* n.bit_length() */
    uint64_t r = calib_pyrng_getrandbits(g, k);
    while (r >= n) r = calib_pyrng_getrandbits(g, k);
    return r;
}

int64_t calib_pyrng_randint(calib_pyrng *g, int64_t a, int64_t b)
{
    return a + (int64_t)calib_pyrng_randbelow(g, (uint64_t)(b - a) + 1);
}
