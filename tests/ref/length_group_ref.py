#!/usr/bin/python3
"""Reference length-grouped order for tests/test_group_by_length.c: the HF
Trainer's group_by_length sampler (transformers trainer_pt_utils,
get_length_grouped_indices) written out in Python with torch for the
argmax, where the random permutation is read from the input instead of
being drawn by torch.randperm (so only the grouping is under test).

usage: length_group_ref.py CASES.txt
  CASES.txt: per case three lines: "n batch", n lengths, n permutation entries
prints per case one line: the n grouped indices."""
import sys

import torch


def grouped(lengths, batch, perm):
    # megabatches of mult * batch, mult = min(n // (4 batch), 50), at least 1
    mult = min(len(lengths) // (batch * 4), 50) or 1
    size = mult * batch
    megas = [perm[i:i + size] for i in range(0, len(perm), size)]
    # Python's sort is stable: equal lengths keep the permutation's order
    megas = [sorted(m, key=lambda e: lengths[e], reverse=True) for m in megas]
    # the longest example to the front: torch.argmax gives the first maximum
    heads = torch.tensor([lengths[m[0]] for m in megas])
    k = int(torch.argmax(heads).item())
    megas[0][0], megas[k][0] = megas[k][0], megas[0][0]
    return [e for m in megas for e in m]


def main():
    words = open(sys.argv[1]).read().split()
    at = 0
    while at < len(words):
        n, batch = int(words[at]), int(words[at + 1])
        at += 2
        lengths = [int(w) for w in words[at:at + n]]
        at += n
        perm = [int(w) for w in words[at:at + n]]
        at += n
        print(" ".join(str(e) for e in grouped(lengths, batch, perm)))


if __name__ == "__main__":
    main()
