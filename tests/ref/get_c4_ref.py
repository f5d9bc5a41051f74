#!/usr/bin/python3
"""Reference calibration-window sampler for tests/test_pyrandom.c: the
Wanda / SparseGPT get_c4 (JSONL corpus) and get_wikitext2 (one plain-text
document) draw protocol, re-implemented with CPython's own `random`, over
documents already tokenized by losa (so only the drawing is under test).

usage: get_c4_ref.py DOCS.bin MODE NSAMPLES SEED SEQLEN
  DOCS.bin: int32 ndoc, then per document int32 len and len int32 ids
  MODE: c4 | wikitext2
prints NSAMPLES lines of SEQLEN ids."""
import random
import struct
import sys


def read_docs(path):
    with open(path, "rb") as f:
        data = f.read()
    (ndoc,) = struct.unpack_from("<i", data, 0)
    off, docs = 4, []
    for _ in range(ndoc):
        (n,) = struct.unpack_from("<i", data, off)
        off += 4
        docs.append(list(struct.unpack_from("<%di" % n, data, off)))
        off += 4 * n
    return docs


def get_c4(docs, nsamples, seed, seqlen):
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            ids = docs[i]
            if len(ids) > seqlen:
                break
        i = random.randint(0, len(ids) - seqlen - 1)
        out.append(ids[i:i + seqlen])
    return out


def get_wikitext2(ids, nsamples, seed, seqlen):
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        i = random.randint(0, len(ids) - seqlen - 1)
        out.append(ids[i:i + seqlen])
    return out


def main():
    path, mode, n, seed, seqlen = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    docs = read_docs(path)
    win = get_c4(docs, n, seed, seqlen) if mode == "c4" else get_wikitext2(docs[0], n, seed, seqlen)
    for w in win:
        print(" ".join(map(str, w)))


if __name__ == "__main__":
    main()
