#!/usr/bin/python3
"""Independent float64 reference of layer-sequential pruning (numpy only),
for tests/test_calib.c.

usage: seqprune_ref.py CASE.in   -> writes CASE.out beside it

Input (little endian), written by the C test:
  bytes 'SEQP', int32 version 1,
  int32 D F L H Hkv V S N method nm_n nm_m blocksize
  float32 eps theta, float64 percdamp, float64 layer_sparsity (L)
  float32 embed (V, D); per layer attn_norm (D), wq (D,D), wk (kvD,D),
  wv (kvD,D), wo (D,D), w_gate (F,D), w_up (F,D), w_down (D,F), ffn_norm (D)
  int32 tokens (N, S)
Output:
  bytes 'SEQO', int32 version 1,
  per layer, per map (the order above) float64 pruned W (out, in);
  float64 recon_err (L); float64 margin (L): the smallest relative gap, over
  the layer's Wanda rows, between the largest pruned and the smallest kept
  score (how far the masks are from a tie; 0 for other methods).

The model forward is written here (the LLaMA block: RMSNorm, RoPE
rotate-half, causal GQA attention, SwiGLU).  The sequential protocol
(ALGORITHM.md section 4): layer l's statistics come from the inputs produced
by the already-pruned layers 0..l-1, all from one forward of the
not-yet-pruned layer l: q/k/v share the attn-norm output, o sees the
attention output, gate/up share the ffn-norm output, down sees the SwiGLU
output.  Then the layer is pruned and its outputs recomputed with the
pruned weights; those are the next layer's inputs.  The reconstruction error
of layer l compares those outputs with the dense model's layer-l outputs on
the dense stream (section 5).  Per-matrix rules (counts, ties, N:M) are those
of include/prune.h, implemented in prune_ref.py.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prune_ref  # noqa: E402

MAPS = ["wq", "wk", "wv", "wo", "wg", "wu", "wd"]


def read(path):
    raw = open(path, "rb").read()
    assert raw[:4] == b"SEQP", "bad magic"
    off = 4
    def ints(n):
        nonlocal off
        a = np.frombuffer(raw, "<i4", n, off)
        off += 4 * n
        return [int(x) for x in a]
    def arr(dt, n, shape=None):
        nonlocal off
        a = np.frombuffer(raw, dt, n, off)
        off += a.itemsize * n
        return a.reshape(shape) if shape else a
    (ver,) = ints(1)
    assert ver == 1
    D, F, L, H, Hkv, V, S, N, method, nm_n, nm_m, bs = ints(12)
    eps, theta = (float(x) for x in arr("<f4", 2))
    percdamp = float(arr("<f8", 1)[0])
    lsp = arr("<f8", L).copy()
    hd = D // H
    kvD = Hkv * hd
    f = lambda *sh: arr("<f4", int(np.prod(sh)), sh).astype(np.float64)
    embed = f(V, D)
    layers = []
    for _ in range(L):
        layers.append(dict(an=f(D), wq=f(D, D), wk=f(kvD, D), wv=f(kvD, D), wo=f(D, D),
                           wg=f(F, D), wu=f(F, D), wd=f(D, F), fn=f(D)))
    tokens = arr("<i4", N * S, (N, S))
    cfg = dict(D=D, F=F, L=L, H=H, Hkv=Hkv, S=S, N=N, eps=eps, theta=theta, method=method,
               nm_n=nm_n, nm_m=nm_m, bs=bs, percdamp=percdamp, lsp=lsp)
    return cfg, embed, layers, tokens


def layer_forward(c, ly, x):
    """x (N,S,D) -> output, and the four sublayer inputs (as (N*S, width))."""
    N, S, D, H, Hkv = x.shape[0], x.shape[1], c["D"], c["H"], c["Hkv"]
    hd = D // H
    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + c["eps"]) * w
    inv = c["theta"] ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(S)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[None, :, None, :], np.sin(ang)[None, :, None, :]
    def rope(v):
        a, b = v[..., :hd // 2], v[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)
    h1 = rms(x, ly["an"])
    q = rope((h1 @ ly["wq"].T).reshape(N, S, H, hd))
    k = rope((h1 @ ly["wk"].T).reshape(N, S, Hkv, hd))
    v = (h1 @ ly["wv"].T).reshape(N, S, Hkv, hd)
    k = np.repeat(k, H // Hkv, axis=2)
    v = np.repeat(v, H // Hkv, axis=2)
    s = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(hd)
    s = s + np.triu(np.full((S, S), -np.inf), 1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    atty = np.einsum("bhij,bjhd->bihd", p, v).reshape(N, S, D)
    xr = x + atty @ ly["wo"].T
    h2 = rms(xr, ly["fn"])
    g = h2 @ ly["wg"].T
    u = h2 @ ly["wu"].T
    hid = g / (1 + np.exp(-g)) * u
    out = xr + hid @ ly["wd"].T
    flat = lambda a: a.reshape(N * S, -1)
    return out, dict(qkv=flat(h1), o=flat(atty), gu=flat(h2), down=flat(hid))


GROUP = dict(wq="qkv", wk="qkv", wv="qkv", wo="o", wg="gu", wu="gu", wd="down")


def wanda_margin(W, colsq, s):
    """Smallest relative gap between the largest pruned and the smallest kept
    score over the rows (unstructured)."""
    score = np.abs(W) * np.sqrt(colsq)[None, :]
    pruned = prune_ref.wanda(W, colsq, s, 0, 0) == 0
    gaps = []
    for r in range(W.shape[0]):
        p, kept = score[r][pruned[r]], score[r][~pruned[r]]
        if len(p) and len(kept):
            gaps.append((kept.min() - p.max()) / max(kept.min(), 1e-300))
    return float(min(gaps)) if gaps else np.inf


def main(path):
    c, embed, layers, tokens = read(path)
    x = embed[tokens]          # pruned stream
    xd = x.copy()              # dense stream
    out_w, recon, margins = [], [], []
    for l, ly in enumerate(layers):
        xd_next, _ = layer_forward(c, ly, xd)
        _, ins = layer_forward(c, ly, x)            # stats: the unpruned layer
        s = c["lsp"][l]
        pruned = dict(ly)
        margin = np.inf
        for m in MAPS:
            W, X = ly[m], ins[GROUP[m]]
            if c["method"] == 0:
                Wp = prune_ref.magnitude(W, s, c["nm_n"], c["nm_m"])
            elif c["method"] == 1:
                colsq = (X ** 2).mean(axis=0)
                Wp = prune_ref.wanda(W, colsq, s, c["nm_n"], c["nm_m"])
                if c["nm_m"] == 0:
                    margin = min(margin, wanda_margin(W, colsq, s))
            else:
                Hm = (2.0 / X.shape[0]) * (X.T @ X)
                Wp = prune_ref.sparsegpt(W, Hm, s, c["nm_n"], c["nm_m"], c["bs"], c["percdamp"])
            pruned[m] = Wp
            out_w.append(Wp)
        x, _ = layer_forward(c, pruned, x)          # recompute with pruned weights
        cn = np.sqrt((xd_next ** 2).reshape(-1, c["D"]).sum(axis=0))
        cn[cn == 0] = 1
        diff = ((xd_next - x).reshape(-1, c["D"]) / cn[None, :]) ** 2
        recon.append(diff.sum() / c["D"])
        margins.append(0.0 if not np.isfinite(margin) else margin)
        xd = xd_next
    with open(path[:-3] + ".out" if path.endswith(".in") else path + ".out", "wb") as f:
        f.write(b"SEQO")
        f.write(np.array([1], "<i4").tobytes())
        for w in out_w:
            f.write(w.astype("<f8").tobytes())
        f.write(np.array(recon, "<f8").tobytes())
        f.write(np.array(margins, "<f8").tobytes())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
