/* Inside the kernels module: helpers shared by its files. */
#ifndef LOSA_KERN_INTERNAL_H
#define LOSA_KERN_INTERNAL_H

#include <stdint.h>

/* exp(x) for x <= 0 in plain arithmetic that the compiler vectorises (libm's
 * expf is a call per element): x = n ln2 + r, |r| <= ln2/2, 2^n built in
 * the exponent bits, e^r by a degree-6 polynomial; relative error < 3e-7.
 * Inputs below -87 give 0. */
static inline __attribute__((always_inline)) float expf_neg(float x)
{
    x = x < -87.0f ? -87.0f : x;
    /* round to nearest by the 1.5 * 2^23 trick (no libm call, vectorises):
     * t's low mantissa bits then hold n as a two's complement integer, read
     * without a float -> int conversion (undefined for NaN); NaN propagates
     * through p. */
    union { float f; uint32_t u; } t = {.f = x * 1.44269504088896341f + 12582912.0f},
                                    m = {.f = 12582912.0f};
    float n = t.f - 12582912.0f;
    float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667f + r * (0.041666668f +
                  r * (0.0083333338f + r * 0.0013888889f)))));
    union { float f; uint32_t u; } e = {.u = (t.u - m.u + 127u) << 23};
    return p * e.f;
}

#endif
