#!/usr/bin/env python3
"""Independent torch (float64, autograd) reference of the masked-LoRA adapter
gradients of a whole tiny LLaMA.

usage: lora_grad_ref.py FIXTURE OUT
FIXTURE (little endian): magic 'LGRF', int32 version=1, int32 D F L H Hkv V T B
tie R(r_max) drop(0/1), float32 eps theta scale loss_scale; then float32
params as in llama_ref.py (embed; per layer attn_norm, wq, wk, wv, wo,
w_gate, w_up, w_down, ffn_norm; final_norm; head unless tied); int32 ranks (L);
per layer, per map (q k v o gate up down): float32 A (R,in), B (out,R);
int32 tokens (B,T), int32 targets (B,T) (< 0 ignored); if drop: per layer,
per map float32 dropout multiplier (B*T, in) (0 or 1/(1-p)).
OUT: float64 loss_scale * sum NLL, then float32 per layer per map dA (R,in),
dB (out,R) (zero outside the active rank).

Model: y = x W^T + drop(x) Delta^T with Delta = scale * (B[:, :r] A[:r]) * (W != 0).
"""
import sys
import numpy as np
import torch


def main():
    raw = open(sys.argv[1], 'rb').read()
    assert raw[:4] == b'LGRF', 'bad magic'
    ints = np.frombuffer(raw, np.int32, 13, 4)
    ver, D, F, L, H, Hkv, V, T, B, tie, R, drop = [int(x) for x in ints[:12]]
    assert ver == 1
    eps, theta, scale, lscale = [float(x) for x in np.frombuffer(raw, np.float32, 4, 52)]
    off = 68

    def take(dtype, *shape):
        nonlocal off
        n = int(np.prod(shape))
        a = np.frombuffer(raw, dtype, n, off).reshape(shape)
        off += 4 * n
        return a

    def tf(*shape):
        return torch.tensor(take(np.float32, *shape).astype(np.float64))

    hd = D // H
    kvD = Hkv * hd
    names = ['wq', 'wk', 'wv', 'wo', 'wg', 'wu', 'wd']
    shapes = dict(wq=(D, D), wk=(kvD, D), wv=(kvD, D), wo=(D, D), wg=(F, D), wu=(F, D),
                  wd=(D, F))
    embed = tf(V, D)
    layers = []
    for _ in range(L):
        ly = dict(an=tf(D))
        for n in names:
            ly[n] = tf(*shapes[n])
        ly['fn'] = tf(D)
        layers.append(ly)
    fnorm = tf(D)
    head = embed if tie else tf(V, D)
    ranks = take(np.int32, L)
    ad = []
    for l in range(L):
        d = {}
        for n in names:
            o, i = shapes[n]
            d[n] = (tf(R, i).requires_grad_(True), tf(o, R).requires_grad_(True))
        ad.append(d)
    tokens = torch.tensor(take(np.int32, B, T).astype(np.int64))
    targets = torch.tensor(take(np.int32, B, T).astype(np.int64))
    targets[targets < 0] = -100
    masks = None
    if drop:
        masks = []
        for l in range(L):
            masks.append({n: tf(B * T, shapes[n][1]).reshape(B, T, -1) for n in names})

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w

    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]

    def rope(x):  # (B,T,nh,hd) rotate-half
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

    def lin(x, l, n):
        W = layers[l][n]
        A, Bm = ad[l][n]
        r = int(ranks[l])
        delta = scale * (Bm[:, :r] @ A[:r, :]) * (W != 0)
        xd = x * masks[l][n] if masks is not None else x
        return x @ W.T + xd @ delta.T

    x = embed[tokens]
    causal = torch.triu(torch.full((T, T), float('-inf'), dtype=torch.float64), 1)
    for l, ly in enumerate(layers):
        h = rms(x, ly['an'])
        q = rope(lin(h, l, 'wq').reshape(B, T, H, hd))
        k = rope(lin(h, l, 'wk').reshape(B, T, Hkv, hd))
        v = lin(h, l, 'wv').reshape(B, T, Hkv, hd)
        k = k.repeat_interleave(H // Hkv, dim=2)
        v = v.repeat_interleave(H // Hkv, dim=2)
        s = torch.einsum('bihd,bjhd->bhij', q, k) / np.sqrt(hd) + causal
        p = torch.softmax(s, -1)
        o = torch.einsum('bhij,bjhd->bihd', p, v).reshape(B, T, D)
        x = x + lin(o, l, 'wo')
        h = rms(x, ly['fn'])
        g = lin(h, l, 'wg')
        u = lin(h, l, 'wu')
        x = x + lin(torch.nn.functional.silu(g) * u, l, 'wd')
    logits = rms(x, fnorm) @ head.T
    loss = lscale * torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100, reduction='sum')
    loss.backward()
    with open(sys.argv[2], 'wb') as f:
        np.array([loss.item()], np.float64).tofile(f)
        for l in range(L):
            for n in names:
                A, Bm = ad[l][n]
                A.grad.numpy().astype(np.float32).tofile(f)
                Bm.grad.numpy().astype(np.float32).tofile(f)


if __name__ == '__main__':
    main()
