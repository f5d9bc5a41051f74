#!/usr/bin/env python3
"""Independent numpy reference of the LLaMA forward pass (float64).

usage: llama_ref.py FIXTURE OUT
FIXTURE (little endian): magic 'LREF', int32 version=1, int32 D F L H Hkv V T B
tie, float32 eps theta, then float32 params in this order: embed (V,D);
per layer attn_norm (D), wq (D,D), wk (kvD,D), wv (kvD,D), wo (D,D),
w_gate (F,D), w_up (F,D), w_down (D,F), ffn_norm (D); final_norm (D);
head (V,D) unless tied; then int32 tokens (B,T).
OUT: float32 logits (B,T,V).
"""
import sys
import numpy as np


def main():
    raw = open(sys.argv[1], 'rb').read()
    assert raw[:4] == b'LREF', 'bad magic'
    ints = np.frombuffer(raw, np.int32, 10, 4)
    ver, D, F, L, H, Hkv, V, T, B, tie = [int(x) for x in ints]
    assert ver == 1
    eps, theta = np.frombuffer(raw, np.float32, 2, 44)
    off = 52
    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        a = np.frombuffer(raw, np.float32, n, off).astype(np.float64).reshape(shape)
        off += 4 * n
        return a
    hd = D // H
    kvD = Hkv * hd
    embed = take(V, D)
    layers = []
    for _ in range(L):
        layers.append(dict(an=take(D), wq=take(D, D), wk=take(kvD, D), wv=take(kvD, D),
                           wo=take(D, D), wg=take(F, D), wu=take(F, D), wd=take(D, F),
                           fn=take(D)))
    fnorm = take(D)
    head = embed if tie else take(V, D)
    tokens = np.frombuffer(raw, np.int32, B * T, off).reshape(B, T)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + float(eps)) * w

    inv = float(theta) ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # (B,T,nh,hd), rotate-half
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        return np.concatenate([a * c - b * s, b * c + a * s], -1)

    x = embed[tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for ly in layers:
        h = rms(x, ly['an'])
        q = rope((h @ ly['wq'].T).reshape(B, T, H, hd))
        k = rope((h @ ly['wk'].T).reshape(B, T, Hkv, hd))
        v = (h @ ly['wv'].T).reshape(B, T, Hkv, hd)
        rep = H // Hkv
        k = np.repeat(k, rep, axis=2)
        v = np.repeat(v, rep, axis=2)
        s = np.einsum('bihd,bjhd->bhij', q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        p = s / s.sum(-1, keepdims=True)
        o = np.einsum('bhij,bjhd->bihd', p, v).reshape(B, T, D)
        x = x + o @ ly['wo'].T
        h = rms(x, ly['fn'])
        g = h @ ly['wg'].T
        u = h @ ly['wu'].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ ly['wd'].T
    logits = rms(x, fnorm) @ head.T
    logits.astype(np.float32).tofile(sys.argv[2])


if __name__ == '__main__':
    main()
