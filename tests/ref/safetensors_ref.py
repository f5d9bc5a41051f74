#!/usr/bin/python3
"""Independent safetensors reader (numpy only) for tests/test_io.c.

usage: safetensors_ref.py FILE OUT_DIR NAME...
Writes OUT_DIR/<NAME>.f32 (raw little-endian float32, row-major) for every
tensor NAME, converting BF16 by shifting the uint16 bits left by 16 and F16
with numpy's float16.  Prints "NAME shape" lines.
"""
import json
import os
import struct
import sys

import numpy as np


def read_tensor(path, name):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        info = header[name]
        b, e = info["data_offsets"]
        f.seek(8 + n + b)
        raw = f.read(e - b)
    shape = info["shape"]
    dt = info["dtype"]
    if dt == "BF16":
        u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        x = u.view(np.float32)
    elif dt == "F16":
        x = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dt == "F32":
        x = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
        raise SystemExit("unsupported dtype " + dt)
    return x.reshape(shape)


def main():
    path, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for name in sys.argv[3:]:
        x = read_tensor(path, name)
        x.astype("<f4").tofile(os.path.join(out, name + ".f32"))
        print(name, " ".join(str(d) for d in x.shape))


if __name__ == "__main__":
    main()
