#!/usr/bin/python3
"""Bit-identity of two HDF5 files, for the resume tests.

Usage: /usr/bin/python3 tests/ref/h5_same.py A.h5 B.h5 [DATASET ...]

Without DATASET: both files hold the same dataset paths and every dataset
is bit-identical.  With DATASET paths: those datasets are.  Exits non-zero
(AssertionError naming the dataset) otherwise.
"""
import sys

import h5py
import numpy as np


def datasets(g, out, pre=''):
    for k, v in g.items():
        if isinstance(v, h5py.Dataset):
            out[pre + k] = v[()]
        else:
            datasets(v, out, pre + k + '/')
    return out


def main():
    a, b = (h5py.File(p, 'r') for p in sys.argv[1:3])
    names = sys.argv[3:]
    if names:
        da = {k: a[k][()] for k in names}
        db = {k: b[k][()] for k in names}
    else:
        da, db = datasets(a, {}), datasets(b, {})
        assert da.keys() == db.keys(), sorted(set(da) ^ set(db))
    for k in da:
        assert np.array_equal(da[k], db[k]), k
    print('%s and %s: %d datasets identical' % (sys.argv[1], sys.argv[2], len(da)))


if __name__ == '__main__':
    main()
