#!/usr/bin/python3
"""Build bad (and one good, sharded) import inputs for tests/test_import.sh
from the real minillama and stories260K files.  Nothing big is copied except
the sharded model: big files are symlinked, and header-edited safetensors
keep their data area as a sparse hole of the right size (validation runs
before any data is read).

usage: make_bad_inputs.py OUT_DIR MINILLAMA_DIR STORIES_DIR
"""
import json
import os
import shutil
import struct
import sys


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


def write_safetensors_sparse(path, header, data_size, pad_to=None):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad_to is not None and len(h) < pad_to:
        h += b" " * (pad_to - len(h))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        f.truncate(8 + len(h) + data_size)


def hf_dir(out, name, src, link=("config.json", "model.safetensors", "tokenizer.json")):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    for f in link:
        p = os.path.join(d, f)
        if os.path.lexists(p):
            os.remove(p)
        os.symlink(os.path.join(src, f), p)
    return d


def main():
    out, mini, stories = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    st = os.path.join(mini, "model.safetensors")
    hlen, header = read_header(st)
    data_size = os.path.getsize(st) - 8 - hlen
    cfg = json.load(open(os.path.join(mini, "config.json")))

    # truncated safetensors: header + 1000 bytes of data
    d = hf_dir(out, "truncated", mini, ("config.json", "tokenizer.json"))
    with open(st, "rb") as f, open(os.path.join(d, "model.safetensors"), "wb") as g:
        g.write(f.read(8 + hlen + 1000))

    # header length past the end of the file
    d = hf_dir(out, "hdrlen", mini, ("config.json", "tokenizer.json"))
    with open(st, "rb") as f, open(os.path.join(d, "model.safetensors"), "wb") as g:
        f.read(8)
        g.write(struct.pack("<Q", 10**12))
        g.write(f.read(hlen))

    # unsupported dtype: same byte size, I32 instead of BF16
    d = hf_dir(out, "dtype", mini, ("config.json", "tokenizer.json"))
    h = json.loads(json.dumps(header))
    t = h["model.layers.0.input_layernorm.weight"]
    t["dtype"], t["shape"] = "I32", [t["shape"][0] // 2]
    write_safetensors_sparse(os.path.join(d, "model.safetensors"), h, data_size, hlen)

    # offsets inconsistent with dtype x shape
    d = hf_dir(out, "offsets", mini, ("config.json", "tokenizer.json"))
    h = json.loads(json.dumps(header))
    h["model.norm.weight"]["dtype"] = "F32"
    write_safetensors_sparse(os.path.join(d, "model.safetensors"), h, data_size, hlen)

    # missing tensor
    d = hf_dir(out, "missing", mini, ("config.json", "tokenizer.json"))
    h = json.loads(json.dumps(header))
    del h["model.layers.3.mlp.up_proj.weight"]
    write_safetensors_sparse(os.path.join(d, "model.safetensors"), h, data_size, hlen)

    # config.json variants (weights symlinked)
    def cfg_dir(name, c=None, text=None):
        d = hf_dir(out, name, mini, ("model.safetensors", "tokenizer.json"))
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write(text if text is not None else json.dumps(c, indent=2))

    c = dict(cfg, intermediate_size=512)
    cfg_dir("shape", c)
    c = dict(cfg, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    cfg_dir("arch", c)
    text = open(os.path.join(mini, "config.json")).read()
    cfg_dir("badconfig", text=text[: len(text) // 2])
    c = dict(cfg)
    del c["num_hidden_layers"]
    cfg_dir("nolayers", c)

    # tokenizer.json variants
    tj = open(os.path.join(mini, "tokenizer.json")).read()
    d = hf_dir(out, "badtok", mini, ("config.json", "model.safetensors"))
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write(tj[:5000])
    d = hf_dir(out, "toktype", mini, ("config.json", "model.safetensors"))
    tok = json.loads(tj)
    tok["model"]["type"] = "Unigram"
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f)

    # no weights at all
    hf_dir(out, "noweights", mini, ("config.json", "tokenizer.json"))

    # truncated llama2.c checkpoint
    with open(os.path.join(stories, "stories260K.bin"), "rb") as f, \
            open(os.path.join(out, "stories_trunc.bin"), "wb") as g:
        g.write(f.read(500000))

    # a good sharded copy of minillama: 2 shards + index (real data, ~42 MB)
    d = hf_dir(out, "sharded", mini, ("config.json", "tokenizer.json"))
    names = sorted(header, key=lambda k: header[k]["data_offsets"][0] if k != "__metadata__" else -1)
    names = [k for k in names if k != "__metadata__"]
    half = len(names) // 2
    wmap = {}
    with open(st, "rb") as f:
        for i, part in enumerate((names[:half], names[half:])):
            fn = "model-%05d-of-00002.safetensors" % (i + 1)
            h, blobs, at = {}, [], 0
            for k in part:
                b, e = header[k]["data_offsets"]
                f.seek(8 + hlen + b)
                blobs.append(f.read(e - b))
                h[k] = dict(header[k], data_offsets=[at, at + e - b])
                at += e - b
                wmap[k] = fn
            hb = json.dumps(h).encode()
            with open(os.path.join(d, fn), "wb") as g:
                g.write(struct.pack("<Q", len(hb)) + hb)
                for x in blobs:
                    g.write(x)
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as g:
        json.dump({"metadata": {"total_size": data_size}, "weight_map": wmap}, g)


if __name__ == "__main__":
    main()
