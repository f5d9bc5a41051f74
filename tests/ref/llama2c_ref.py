#!/usr/bin/python3
"""Independent llama2.c checkpoint reader (numpy only) for tests/test_io.c.

usage: llama2c_ref.py CKPT OUT_DIR
Reads the legacy v0 checkpoint, converts wq / wk of every layer from the
interleaved RoPE convention to rotate-half (numpy reshape: per head (hd/2, 2)
-> (2, hd/2)), and writes OUT_DIR/l<L>_<name>.f32 for names wq wk wv w_gate
w_up w_down attn_norm, plus embed.f32 and final_norm.f32.

It also checks the permutation is right: for random x and positions, the
attention scores q.k with llama2.c's interleaved RoPE on the original weights
equal those with rotate-half RoPE on the permuted weights (exit 1 if not).
"""
import os
import struct
import sys

import numpy as np


def rope_interleaved(x, pos, theta=10000.0):
    # x (T, hd): pairs (2i, 2i+1) rotated by pos * theta^(-2i/hd)
    T, hd = x.shape
    i = np.arange(hd // 2)
    ang = pos[:, None] * theta ** (-2.0 * i / hd)[None, :]
    c, s = np.cos(ang), np.sin(ang)
    a, b = x[:, 0::2], x[:, 1::2]
    y = np.empty_like(x)
    y[:, 0::2] = a * c - b * s
    y[:, 1::2] = a * s + b * c
    return y


def rope_half(x, pos, theta=10000.0):
    # x (T, hd): pairs (i, i + hd/2)
    T, hd = x.shape
    i = np.arange(hd // 2)
    ang = pos[:, None] * theta ** (-2.0 * i / hd)[None, :]
    c, s = np.cos(ang), np.sin(ang)
    a, b = x[:, : hd // 2], x[:, hd // 2:]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=1)


def to_half(w, n_heads, hd):
    # (n_heads*hd, in): within each head, rows (2i, 2i+1) -> (i, i + hd/2)
    rows, cols = w.shape
    return w.reshape(n_heads, hd // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def main():
    ckpt, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    raw = open(ckpt, "rb").read()
    D, F, L, H, Hkv, V, T = struct.unpack("<7i", raw[:28])
    shared = V > 0
    V = abs(V)
    hd = D // H
    kvD = Hkv * hd
    x = np.frombuffer(raw[28:], dtype="<f4")
    at = 0

    def take(*shape):
        nonlocal at
        n = int(np.prod(shape))
        a = x[at:at + n].reshape(shape)
        at += n
        return a

    emb = take(V, D)
    rms_att = take(L, D)
    wq = take(L, D, D)
    wk = take(L, kvD, D)
    wv = take(L, kvD, D)
    wo = take(L, D, D)
    rms_ffn = take(L, D)
    w1 = take(L, F, D)
    w2 = take(L, D, F)
    w3 = take(L, F, D)
    rms_fin = take(D)
    take(T, hd // 2)
    take(T, hd // 2)
    if not shared:
        take(V, D)
    if at != x.size:
        raise SystemExit("size mismatch")

    emb.tofile(os.path.join(out, "embed.f32"))
    rms_fin.tofile(os.path.join(out, "final_norm.f32"))
    for l in range(L):
        d = {"wq": to_half(wq[l], H, hd), "wk": to_half(wk[l], Hkv, hd), "wv": wv[l],
             "wo": wo[l], "w_gate": w1[l], "w_up": w3[l], "w_down": w2[l],
             "attn_norm": rms_att[l], "ffn_norm": rms_ffn[l]}
        for k, v in d.items():
            np.ascontiguousarray(v, dtype="<f4").tofile(os.path.join(out, "l%d_%s.f32" % (l, k)))

    # the permutation preserves attention scores (layer 0, every head pair)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((7, D))
    pos = np.arange(7, dtype=np.float64) * 3.0
    q0, k0 = xs @ wq[0].T.astype(np.float64), xs @ wk[0].T.astype(np.float64)
    q1 = xs @ to_half(wq[0], H, hd).T.astype(np.float64)
    k1 = xs @ to_half(wk[0], Hkv, hd).T.astype(np.float64)
    worst = 0.0
    for h in range(H):
        g = h // (H // Hkv)
        s0 = rope_interleaved(q0[:, h * hd:(h + 1) * hd], pos) @ rope_interleaved(k0[:, g * hd:(g + 1) * hd], pos).T
        s1 = rope_half(q1[:, h * hd:(h + 1) * hd], pos) @ rope_half(k1[:, g * hd:(g + 1) * hd], pos).T
        worst = max(worst, float(np.max(np.abs(s0 - s1)) / max(1e-30, np.max(np.abs(s0)))))
    print("rope score max rel diff %.3g" % worst)
    if worst > 1e-12:
        sys.exit(1)


if __name__ == "__main__":
    main()
