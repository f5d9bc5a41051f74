#!/usr/bin/python3
"""Independent float64 reference for tests/test_prune.c (numpy only).

usage: prune_ref.py CASE.in [CASE.in ...]   -> writes CASE.out beside each

Input (little endian), written by the C test:
  int32 magic 0x4E555250 ("PRUN"), int32 version 1,
  int32 method (0 magnitude, 1 wanda, 2 sparsegpt), out, in, nm_n, nm_m,
        blocksize, ntok
  float64 sparsity, percdamp
  float32 W (out, in); float32 X (ntok, in); float64 colsq_c (in)
Output:
  int32 magic, int32 version,
  float64 W_pruned (out, in), float64 colsq (in) = mean_t x_tj^2 (0 if ntok 0),
  float64 H (in, in) = (2/ntok) X^T X  (sparsegpt only)

Rules (ALGORITHM.md sections 4 and the header include/prune.h):
  k = floor(s*N + 1e-9) entries pruned out of N; the k lowest by (score,
  index), i.e. a stable ascending sort (numpy kind='stable'); N:M: in every
  group of M consecutive inputs of a row, the N lowest by the same rule.
  Wanda uses the C side's colsq (so the mask test is not at the mercy of
  summation order); the statistics are checked separately against ours.
  SparseGPT follows the paper's algorithm (fasterprune) in float64 with our
  own H, except that each unstructured block prunes exactly k entries.
"""
import math
import sys

import numpy as np

MAGIC, VERSION = 0x4E555250, 1


def count(n, s):
    if n <= 0 or not s > 0:
        return 0
    return min(n, int(math.floor(s * n + 1e-9)))


def lowest_mask(score, k):
    """Boolean mask of the k lowest entries of a 1-D array, ties by index."""
    m = np.zeros(score.shape, dtype=bool)
    m[np.argsort(score, kind="stable")[:k]] = True
    return m


def nm_mask(score, n, m):
    """score (rows, in): in each group of m columns, the n lowest per row."""
    rows, cols = score.shape
    g = score.reshape(rows, cols // m, m)
    idx = np.argsort(g, axis=2, kind="stable")[:, :, :n]
    mask = np.zeros(g.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=2)
    return mask.reshape(rows, cols)


def magnitude(W, s, n, m):
    score = np.abs(W)
    if m > 0:
        mask = nm_mask(score, n, m)
    else:
        mask = lowest_mask(score.ravel(), count(W.size, s)).reshape(W.shape)
    Wp = W.copy()
    Wp[mask] = 0
    return Wp


def wanda(W, colsq, s, n, m):
    score = np.abs(W) * np.sqrt(colsq)[None, :]
    if m > 0:
        mask = nm_mask(score, n, m)
    else:
        # K = count(out*in) zeros in the matrix: k per row, one more in the
        # rows whose (k+1)-th lowest score is lowest (ties: lower row)
        rows, cols = W.shape
        K = count(rows * cols, s)
        k, extra = K // rows, K - (K // rows) * rows
        kk = np.full(rows, k)
        if extra:
            cand = np.array([np.sort(score[r], kind="stable")[k] for r in range(rows)])
            kk[np.lexsort((np.arange(rows), cand))[:extra]] += 1
        mask = np.stack([lowest_mask(score[r], kk[r]) for r in range(rows)])
    Wp = W.copy()
    Wp[mask] = 0
    return Wp


def sparsegpt(W, H, s, n, m, blocksize, percdamp):
    W = W.copy()
    H = H.copy()
    rows, cols = W.shape
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H[np.diag_indices(cols)] += percdamp * np.mean(np.diag(H))
    # U upper with U^T U = H^{-1}
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        cnt = i2 - i1
        W1 = W[:, i1:i2].copy()
        U1 = U[i1:i2, i1:i2]
        d = np.diag(U1)
        Err1 = np.zeros_like(W1)
        if m == 0:
            score = (W1 ** 2 / d[None, :] ** 2).ravel()
            mask1 = lowest_mask(score, count(rows * cnt, s)).reshape(rows, cnt)
        else:
            mask1 = np.zeros(W1.shape, dtype=bool)
        for i in range(cnt):
            if m > 0 and i % m == 0:
                sc = W1[:, i:i + m] ** 2 / d[None, i:i + m] ** 2
                mask1[:, i:i + m] = nm_mask(sc, n, m)
            w = W1[:, i]
            q = np.where(mask1[:, i], 0.0, w)
            err = (w - q) / d[i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W


def run(path):
    with open(path, "rb") as f:
        hdr = np.frombuffer(f.read(9 * 4), dtype="<i4")
        if hdr[0] != MAGIC or hdr[1] != VERSION:
            raise SystemExit(f"{path}: bad magic/version {hdr[:2]}")
        method, out, inn, n, m, bs, ntok = (int(v) for v in hdr[2:])
        s, percdamp = np.frombuffer(f.read(16), dtype="<f8")
        W = np.frombuffer(f.read(4 * out * inn), dtype="<f4").reshape(out, inn)
        X = np.frombuffer(f.read(4 * ntok * inn), dtype="<f4").reshape(ntok, inn)
        colsq_c = np.frombuffer(f.read(8 * inn), dtype="<f8")
    W = W.astype(np.float64)
    X = X.astype(np.float64)
    colsq = (X ** 2).sum(axis=0) / ntok if ntok > 0 else np.zeros(inn)
    H = None
    if method == 0:
        Wp = magnitude(W, s, n, m)
    elif method == 1:
        Wp = wanda(W, colsq_c, s, n, m)
    elif method == 2:
        H = (2.0 / ntok) * (X.T @ X)
        Wp = sparsegpt(W, H, s, n, m, bs, percdamp)
    else:
        raise SystemExit(f"{path}: unknown method {method}")
    with open(path[:-3] + ".out" if path.endswith(".in") else path + ".out", "wb") as f:
        f.write(np.array([MAGIC, VERSION], dtype="<i4").tobytes())
        f.write(Wp.astype("<f8").tobytes())
        f.write(colsq.astype("<f8").tobytes())
        if H is not None:
            f.write(H.astype("<f8").tobytes())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for p in sys.argv[1:]:
        run(p)
