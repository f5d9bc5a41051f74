#!/usr/bin/python3
"""Independent checks of `losa export` output for tests/test_export.sh.

usage: export_check.py COMMAND ARGS...
  st STORE.h5 DIR f32|bf16   read DIR/model.safetensors with numpy only (header
                             length, JSON, contiguous data_offsets, alignment)
                             and DIR/config.json; compare every tensor with the
                             store (h5py): f32 bit-identical, bf16 equal to
                             torch's round-to-nearest-even of the fp32 value
                             (and the same zero mask); lm_head absent iff tied.
  same A.h5 B.h5             every weight dataset bit-identical.
  zeros A.h5 B.h5            per linear map: identical zero masks; prints the
                             zero count per map of A.
  zero STORE.h5 OUT.h5 FRAC  copy the store with the FRAC smallest-|w| entries
                             of every linear map set to 0 (a magnitude-pruned
                             model independent of losa's pruners).
  craft STORE.h5 OUT.h5       copy the store with layer 0's wq replaced by
                             rounding edge cases: exact ties (low 16 bits
                             0x8000) of both parities, -0.0, bf16-exact values,
                             values that round up across an exponent.
  tok DIR TOKENIZER.json|tok512.bin TEXTFILE
                             encode with a naive rank-based BPE over DIR's
                             tokenizer.json (HF semantics: lowest merge rank,
                             leftmost among equal) and compare the ids with the
                             original: a naive score BPE for tok512.bin
                             (sp_ids.naive_bpe), the same rank BPE for a
                             tokenizer.json.  Texts: sp_ids' edge cases and
                             stories, and the first 300 lines of TEXTFILE.
  tokjson A.json B.json      vocab, merges, normalizer, byte_fallback, unk equal.
"""
import json
import os
import shutil
import struct
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SPACE = "\u2581"
MAPS = ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"]
HF_MAPS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def fail(msg):
    sys.exit("export_check.py: " + msg)


def weights(f):
    """store name -> dataset for every weight of a store."""
    out = {"embed": f["embed"], "final_norm": f["final_norm"]}
    if "head" in f:
        out["head"] = f["head"]
    for l in f["layers"]:
        for k in f["layers"][l]:
            out["layers/%s/%s" % (l, k)] = f["layers"][l][k]
    return out


def hf_names(L, tied):
    """(hf name, store name)"""
    out = [("model.embed_tokens.weight", "embed")]
    for l in range(L):
        out.append(("model.layers.%d.input_layernorm.weight" % l, "layers/%d/attn_norm" % l))
        for hm, sm in zip(HF_MAPS, MAPS):
            out.append(("model.layers.%d.%s.weight" % (l, hm), "layers/%d/%s" % (l, sm)))
        out.append(("model.layers.%d.post_attention_layernorm.weight" % l,
                    "layers/%d/ffn_norm" % l))
    out.append(("model.norm.weight", "final_norm"))
    if not tied:
        out.append(("lm_head.weight", "head"))
    return out


def cmd_st(store, d, dtype):
    import torch
    f = h5py.File(store, "r")
    a = f.attrs
    cfg = json.load(open(os.path.join(d, "config.json")))
    want = {"hidden_size": a["dim"], "intermediate_size": a["hidden_dim"],
            "num_hidden_layers": a["n_layers"], "num_attention_heads": a["n_heads"],
            "num_key_value_heads": a["n_kv_heads"], "vocab_size": a["vocab_size"],
            "max_position_embeddings": a["max_seq_len"], "bos_token_id": a["bos_id"],
            "eos_token_id": a["eos_id"]}
    for k, v in want.items():
        if cfg[k] != int(v):
            fail("config.json %s = %r, store %r" % (k, cfg[k], v))
    if cfg["architectures"] != ["LlamaForCausalLM"] or cfg["model_type"] != "llama":
        fail("config.json architecture %r" % cfg["architectures"])
    if np.float32(cfg["rms_norm_eps"]) != np.float32(a["rms_eps"]) or \
       np.float32(cfg["rope_theta"]) != np.float32(a["rope_theta"]):
        fail("config.json eps/theta")
    tied = bool(a["tie_embeddings"])
    if cfg["tie_word_embeddings"] != tied:
        fail("tie_word_embeddings")
    if cfg["torch_dtype"] != {"f32": "float32", "bf16": "bfloat16"}[dtype]:
        fail("torch_dtype %r" % cfg["torch_dtype"])

    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    if n % 8:
        fail("header length %d not a multiple of 8" % n)
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    data = raw[8 + n:]
    names = hf_names(int(a["n_layers"]), tied)
    if sorted(hdr) != sorted(h for h, _ in names):
        fail("tensor names differ: %s" % sorted(set(hdr) ^ set(h for h, _ in names)))
    spans = sorted(tuple(v["data_offsets"]) for v in hdr.values())
    if spans[0][0] != 0 or spans[-1][1] != len(data) or \
       any(p[1] != q[0] for p, q in zip(spans, spans[1:])):
        fail("data_offsets not contiguous over the data area")
    esz = {"f32": 4, "bf16": 2}[dtype]
    for h, s in names:
        e = hdr[h]
        ref = f[s][...]
        if e["dtype"] != {"f32": "F32", "bf16": "BF16"}[dtype] or list(e["shape"]) != list(ref.shape):
            fail("%s: dtype %s shape %s (store %s)" % (h, e["dtype"], e["shape"], ref.shape))
        b, en = e["data_offsets"]
        if en - b != ref.size * esz:
            fail("%s: byte range %d for %d elements" % (h, en - b, ref.size))
        if dtype == "f32":
            x = np.frombuffer(data, "<f4", ref.size, b).reshape(ref.shape)
            if not np.array_equal(x.view(np.uint32), ref.astype(np.float32).view(np.uint32)):
                fail("%s: f32 values differ from the store" % h)
        else:
            x = np.frombuffer(data, "<u2", ref.size, b).reshape(ref.shape)
            t = torch.from_numpy(np.ascontiguousarray(ref, np.float32)).to(torch.bfloat16)
            want_bits = t.view(torch.int16).numpy().view(np.uint16)
            if not np.array_equal(x, want_bits):
                k = int(np.argmax(x != want_bits))
                fail("%s: bf16 bits differ from torch RNE at %d: %04x vs %04x (fp32 %r)"
                     % (h, k, x.flat[k], want_bits.flat[k], ref.flat[k]))
            if not np.array_equal((x & 0x7FFF) == 0, ref == 0):
                fail("%s: bf16 zero mask differs" % h)
    print("safetensors: %d tensors checked (%s), config.json checked" % (len(names), dtype))


def cmd_same(pa, pb):
    fa, fb = h5py.File(pa, "r"), h5py.File(pb, "r")
    wa, wb = weights(fa), weights(fb)
    if sorted(wa) != sorted(wb):
        fail("weight sets differ: %s" % sorted(set(wa) ^ set(wb)))
    for k in wa:
        x, y = wa[k][...], wb[k][...]
        if x.shape != y.shape or not np.array_equal(x.view(np.uint32), y.view(np.uint32)):
            fail("%s differs (max |diff| %g)" % (k, np.abs(x - y).max() if x.shape == y.shape else -1))
    for k in ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
              "max_seq_len", "rms_eps", "rope_theta", "tie_embeddings", "bos_id", "eos_id"]:
        if fa.attrs[k] != fb.attrs[k]:
            fail("attribute %s: %r vs %r" % (k, fa.attrs[k], fb.attrs[k]))
    print("identical: %d tensors" % len(wa))


def cmd_zeros(pa, pb):
    fa, fb = h5py.File(pa, "r"), h5py.File(pb, "r")
    tot, n = 0, 0
    for l in sorted(fa["layers"], key=int):
        counts = []
        for m in MAPS:
            x, y = fa["layers"][l][m][...], fb["layers"][l][m][...]
            if not np.array_equal(x == 0, y == 0):
                fail("layer %s %s: zero masks differ (%d vs %d zeros)"
                     % (l, m, (x == 0).sum(), (y == 0).sum()))
            counts.append(int((x == 0).sum()))
            tot += counts[-1]
            n += x.size
        print("layer %s zeros %s" % (l, counts))
    print("zero masks identical: %d of %d map weights are zero (%.4f)" % (tot, n, tot / n))


def cmd_zero(src, out, frac):
    shutil.copyfile(src, out)
    frac = float(frac)
    with h5py.File(out, "r+") as f:
        for l in f["layers"]:
            for m in MAPS:
                w = f["layers"][l][m][...]
                k = int(frac * w.size)
                idx = np.argsort(np.abs(w), axis=None, kind="stable")[:k]
                w.flat[idx] = 0
                f["layers"][l][m][...] = w


def cmd_craft(src, out):
    shutil.copyfile(src, out)
    with h5py.File(out, "r+") as f:
        w = f["layers/0/wq"][...]
        rng = np.random.default_rng(0)
        bits = rng.normal(0, 0.05, w.size).astype(np.float32).view(np.uint32)
        n = w.size // 4
        bits[:n] = (bits[:n] & 0xFFFF0000) | 0x8000               # ties, both parities
        bits[n:2 * n] = bits[n:2 * n] & 0xFFFF0000                 # bf16-exact
        bits[2 * n:2 * n + 64] = (bits[2 * n:2 * n + 64] | 0x007FFFFF)  # carry into exponent
        bits[2 * n + 64:2 * n + 128] = 0x80000000                  # -0.0
        bits[2 * n + 128:2 * n + 192] = 0                          # +0.0
        x = bits.view(np.float32).reshape(w.shape)
        ties_even = int(((bits[:n] >> 16) & 1 == 0).sum())
        f["layers/0/wq"][...] = x
    print("crafted %d ties (%d with even bf16 mantissa), %d exact, 64 carries, 128 zeros"
          % (n, ties_even, n))


def load_hf(path):
    j = json.load(open(path, encoding="utf-8"))
    m = j["model"]
    vocab = m["vocab"]
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    return j, vocab, merges


def rank_bpe(j, vocab, merges, text):
    """HF BPE over the whole normalized string: merge the adjacent pair with the
    lowest rank (leftmost among equal) until none is left; byte fallback."""
    norm = j["normalizer"]["normalizers"]
    prepend = any(n["type"] == "Prepend" for n in norm)
    if text == "":
        return []
    special = {t["content"] for t in j["added_tokens"]}
    rank = {}
    for r, (a, b) in enumerate(merges):
        rank.setdefault((a, b), r)
    syms = list((SPACE if prepend else "") + text.replace(" ", SPACE))
    while True:
        best, bi = None, -1
        for i in range(len(syms) - 1):
            r = rank.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best):
                best, bi = r, i
        if bi < 0:
            break
        syms[bi:bi + 2] = [syms[bi] + syms[bi + 1]]
    ids = []
    for s in syms:
        if s in vocab and s not in special:
            ids.append(vocab[s])
        else:
            ids.extend(vocab["<0x%02X>" % c] for c in s.encode("utf-8"))
    return ids


def cmd_tok(d, orig, textfile):
    import sp_ids
    j, vocab, merges = load_hf(os.path.join(d, "tokenizer.json"))
    if orig.endswith(".bin"):
        pieces, scores = sp_ids.read_llama2c(orig)
        ref = lambda t: sp_ids.naive_bpe(pieces, scores, t)
    else:
        oj, ov, om = load_hf(orig)
        ref = lambda t: rank_bpe(oj, ov, om, t)
    lines = open(textfile, encoding="utf-8").read().split("\n")[:300]
    texts = [t for t, _ in sp_ids.EDGE] + sp_ids.STORIES + lines
    ntok = 0
    for t in texts:
        a, b = rank_bpe(j, vocab, merges, t), ref(t)
        if a != b:
            fail("tokenization differs on %r:\n%s\n%s" % (t[:80], a, b))
        ntok += len(a)
    print("tokenizer.json encodes %d texts (%d ids) exactly like %s"
          % (len(texts), ntok, os.path.basename(orig)))


def cmd_tokjson(pa, pb):
    (ja, va, ma), (jb, vb, mb) = load_hf(pa), load_hf(pb)
    if va != vb:
        fail("vocab differs")
    if ma != mb:
        fail("merges differ")
    for k in ["normalizer"]:
        if ja[k] != jb[k]:
            fail("%s differs: %r vs %r" % (k, ja[k], jb[k]))
    for k in ["byte_fallback", "unk_token", "type"]:
        if ja["model"].get(k) != jb["model"].get(k):
            fail("model.%s differs" % k)
    if [(t["id"], t["content"]) for t in ja["added_tokens"]] != \
       [(t["id"], t["content"]) for t in jb["added_tokens"]]:
        fail("added_tokens differ")
    print("tokenizer.json: %d pieces, %d merges, identical" % (len(va), len(ma)))


if __name__ == "__main__":
    cmds = {"st": cmd_st, "same": cmd_same, "zeros": cmd_zeros, "zero": cmd_zero, "craft": cmd_craft,
            "tok": cmd_tok, "tokjson": cmd_tokjson}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        fail(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
