#!/usr/bin/python3
"""Seed corpora for the fuzz harnesses, made at run time from the real files
in $LOSA_DATA (never committed): make_seeds.py DATA_DIR OUT_DIR.
One sub-directory per harness; small derived inputs (a header, a reduced
vocabulary, a few documents) keep each fuzz iteration fast."""
import json, os, random, struct, sys

data, out = sys.argv[1], sys.argv[2]


def put(h, name, b):
    d = os.path.join(out, h)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(b if isinstance(b, bytes) else b.encode())


def rd(*p):
    with open(os.path.join(data, *p), "rb") as f:
        return f.read()


# safetensors: the real header alone, and small valid files from real tensors
st = rd("models", "minillama", "model.safetensors")
hlen = struct.unpack("<Q", st[:8])[0]
put("safetensors", "minillama_header", st[:8 + hlen])
hdr = json.loads(st[8:8 + hlen])
base = 8 + hlen


def st_file(items, meta=True):
    h, blob = {}, b""
    for name, dtype, shape, raw in items:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if meta:
        h["__metadata__"] = {"format": "pt"}
    j = json.dumps(h, separators=(",", ":")).encode()
    j += b" " * (-len(j) % 8)
    return struct.pack("<Q", len(j)) + j + blob


small = []
for name in ["model.norm.weight", "model.layers.0.input_layernorm.weight"]:
    e = hdr[name]
    b, en = e["data_offsets"]
    small.append((name, e["dtype"], e["shape"], st[base + b:base + en][:64]))
small = [(n, d, [len(r) // 2], r) for n, d, s, r in small]
put("safetensors", "two_bf16", st_file(small))
f32 = b"".join(struct.pack("<f", (i - 3) * 0.25) for i in range(6))
put("safetensors", "f32_f16_2d", st_file([("a", "F32", [2, 3], f32),
                                          ("b", "F16", [2, 2], bytes.fromhex("003c00bc0000ff7b")),
                                          ("c", "I32", [1], b"\x01\0\0\0")], meta=False))

# config.json: minillama's and a Mistral-style variant
cfg = rd("models", "minillama", "config.json")
put("hf_config", "minillama", cfg)
c = json.loads(cfg)
c.update({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
          "sliding_window": 64, "head_dim": c["hidden_size"] // c["num_attention_heads"],
          "rope_scaling": None, "tie_word_embeddings": True})
put("hf_config", "mistral_like", json.dumps(c, indent=1))

# tokenizer.json: the real one reduced to its first 400 ids (dense) and the
# merges among them
tj = json.loads(rd("models", "minillama", "tokenizer.json"))
K = 400
vocab = {p: i for p, i in tj["model"]["vocab"].items() if i < K}
merges = []
for m in tj["model"]["merges"]:
    a, b = m.split(" ", 1) if isinstance(m, str) else m
    if a in vocab and b in vocab and a + b in vocab:
        merges.append(m)
tj["model"]["vocab"] = vocab
tj["model"]["merges"] = merges
tj["added_tokens"] = [t for t in tj.get("added_tokens", []) if t["id"] < K]
put("tok_json", "minillama_400", json.dumps(tj, ensure_ascii=False))
tj2 = dict(tj)
tj2["normalizer"] = None
tj2["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                        "split": False}
tj2["model"] = dict(tj["model"], byte_fallback=False,
                    merges=[m.split(" ", 1) if isinstance(m, str) else m for m in merges[:50]])
put("tok_json", "metaspace_pairs", json.dumps(tj2, ensure_ascii=False))

# tokenizer.bin: 2-byte vocab_size prefix, then the file
t512 = rd("models", "stories260K", "tok512.bin")
put("tok_bin", "tok512_v512", struct.pack("<H", 512) + t512)
put("tok_bin", "tok512_all", struct.pack("<H", 0) + t512)
big = rd("models", "llama2-tokenizer", "tokenizer.bin")
o, n = 4, 0
while n < 300:
    o += 8 + struct.unpack("<i", big[o + 4:o + 8])[0]
    n += 1
put("tok_bin", "llama2_300", struct.pack("<H", 300) + big[:o])

# llama2.c checkpoints: the real header (size check fails) and tiny valid ones
s260 = rd("models", "stories260K", "stories260K.bin")
put("llama2c", "stories260K_head", s260[:28 + 256])


def l2c(D, F, L, H, KV, V, T, seed):
    hd, kvD = D // H, KV * (D // H)
    n = abs(V) * D + L * (2 * D + 2 * D * D + 2 * kvD * D + 3 * F * D) + D + T * hd
    n += abs(V) * D if V < 0 else 0
    r = random.Random(seed)
    return struct.pack("<7i", D, F, L, H, KV, V, T) + b"".join(
        struct.pack("<f", r.uniform(-1, 1)) for _ in range(n))


put("llama2c", "tiny_shared", l2c(8, 12, 2, 2, 1, 5, 4, 1))
put("llama2c", "tiny_unshared", l2c(8, 16, 1, 2, 2, -6, 2, 2))

# calibration corpora: byte 0 jsonl?, byte 1 N, byte 2 S, then the text
c4 = rd("text", "c4", "c4-train.00000-of-01024.first1000.jsonl").split(b"\n")
put("calib", "c4_3docs", b"\x01\x02\x08" + b"\n".join(c4[:3]) + b"\n")
put("calib", "tinystories", b"\x00\x03\x10" + rd("text", "tinystories", "tinystories_sample.txt")[:1500])
