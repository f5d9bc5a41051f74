#!/usr/bin/env bash
# losa import refuses what it cannot import faithfully, and never overwrites
# its own input.  Inputs are built here from the real minillama (HF) and
# stories260K (llama2.c) files: the safetensors header is edited (tensors
# added, aliased, dropped, duplicated), the data area kept real only where
# the import must succeed (elsewhere a sparse hole: every refusal here comes
# before any weight is read, except inv_freq whose values are real).
# Each refusal must: exit non-zero, print one stderr line naming the file and
# the key/tensor, print nothing on stdout, leave every input file and an
# existing output store byte-identical (sha256 of every file named on the
# command line or inside a directory named there, before/after) and leave no
# temporary.
# Each accepted variant must give the same store as the plain import
# (every dataset bit-identical, every attribute but "source" equal).
set -u
cd "$(dirname "$0")/.."
LOSA=${LOSA:-build/losa}
T=${LOSA_TEST_TMP:-/tmp}/test_import_refuse
D=${LOSA_DATA:?LOSA_DATA not set}
MINI=$D/models/minillama
STORIES=$D/models/stories260K
rm -rf "$T"; mkdir -p "$T"
I=$T/in
/usr/bin/python3 - "$I" "$MINI" "$STORIES" <<'EOF' || { echo "FAIL: building inputs"; exit 1; }
import json, os, shutil, struct, sys
import numpy as np

out, mini, stories = sys.argv[1:4]
os.makedirs(out)
st = os.path.join(mini, "model.safetensors")
with open(st, "rb") as f:
    (hlen,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(hlen))
data_size = os.path.getsize(st) - 8 - hlen
cfg = json.load(open(os.path.join(mini, "config.json")))
hd = cfg["hidden_size"] // cfg["num_attention_heads"]
kvd = hd * cfg["num_key_value_heads"]
assert cfg["num_hidden_layers"] == 6 and cfg["max_position_embeddings"] == 256


def hf_dir(name, config=None, links=("config.json", "model.safetensors", "tokenizer.json")):
    d = os.path.join(out, name)
    os.makedirs(d)
    for f in links:
        os.symlink(os.path.join(mini, f), os.path.join(d, f))
    if config is not None:
        with open(os.path.join(d, "config.json"), "w") as g:
            json.dump(config, g, indent=1)
    return d


def st_write(path, extra=(), alias=None, drop=(), dup=None, real=False, only=None):
    """minillama's safetensors (or only the tensors `only`), minus `drop`, with
    `alias` {new: old} entries sharing old's bytes and `extra` tensors
    [(name, dtype, shape, bytes)] appended after the data area; `dup` a name
    whose entry is written twice.  Data area real or a sparse hole."""
    h = {k: v for k, v in header.items() if k not in drop and (only is None or k in only)}
    for new, old in (alias or {}).items():
        h[new] = dict(header[old])
    at, blobs = data_size, []
    for name, dt, shape, raw in extra:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [at, at + len(raw)]}
        at += len(raw)
        blobs.append(raw)
    hb = json.dumps(h)
    if dup:
        hb = hb[:-1] + ", %s: %s}" % (json.dumps(dup), json.dumps(h[dup]))
    hb = hb.encode()
    with open(path, "wb") as g:
        g.write(struct.pack("<Q", len(hb)) + hb)
        if real:
            with open(st, "rb") as f:
                f.seek(8 + hlen)
                shutil.copyfileobj(f, g)
        else:
            g.truncate(8 + len(hb) + data_size)
            g.seek(8 + len(hb) + data_size)
        for b in blobs:
            g.write(b)


def bf16(x):  # float32 -> bf16 bytes, round to nearest even
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def inv_freq(theta):
    return (1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd))).astype(np.float32)


zeros = lambda n: bf16(np.zeros(n, np.float32))
qkv_bias = [("model.layers.%d.self_attn.%s_proj.bias" % (l, p), "BF16", [n], zeros(n))
            for l in range(6) for p, n in (("q", 256), ("k", kvd), ("v", kvd))]

# q/k/v biases, with and without config.json attention_bias, and mlp_bias
d = hf_dir("bias_cfg", dict(cfg, attention_bias=True), links=("tokenizer.json",))
st_write(os.path.join(d, "model.safetensors"), extra=qkv_bias)
d = hf_dir("bias", links=("config.json", "tokenizer.json"))
st_write(os.path.join(d, "model.safetensors"), extra=qkv_bias)
hf_dir("mlp_bias", dict(cfg, mlp_bias=True), links=("model.safetensors", "tokenizer.json"))
hf_dir("bias_bad", dict(cfg, attention_bias="no"), links=("model.safetensors", "tokenizer.json"))
hf_dir("bias_false", dict(cfg, attention_bias=False, mlp_bias=False),
       links=("model.safetensors", "tokenizer.json"))
# Mistral sliding_window: smaller than max_position_embeddings 256, malformed, accepted
for name, sw in (("sw_small", 64), ("sw_255", 255), ("sw_bad", "4096"), ("sw_null", None),
                 ("sw_256", 256), ("sw_large", 4096)):
    c = dict(cfg, sliding_window=sw, architectures=["MistralForCausalLM"], model_type="mistral")
    hf_dir(name, c, links=("model.safetensors", "tokenizer.json"))
# an unknown tensor; a tensor listed twice in the header; a tied model with lm_head
d = hf_dir("extra", links=("config.json", "tokenizer.json"))
st_write(os.path.join(d, "model.safetensors"),
         extra=[("model.layers.2.mlp.extra_proj.weight", "F32", [4], bytes(16))])
d = hf_dir("dup", links=("config.json", "tokenizer.json"))
st_write(os.path.join(d, "model.safetensors"), dup="model.norm.weight")
d = hf_dir("tied_head", dict(cfg, tie_word_embeddings=True), links=("model.safetensors", "tokenizer.json"))
# layer counts: config 4 or 8 for 6 layers of weights; 8 layers (6, 7 = copies
# of 4, 5) for config 6
hf_dir("cfg4", dict(cfg, num_hidden_layers=4), links=("model.safetensors", "tokenizer.json"))
hf_dir("cfg8", dict(cfg, num_hidden_layers=8), links=("model.safetensors", "tokenizer.json"))
d = hf_dir("weights8", links=("config.json", "tokenizer.json"))
st_write(os.path.join(d, "model.safetensors"),
         alias={k.replace("layers.%d." % l, "layers.%d." % (l + 2)): k
                for k in header for l in (4, 5) if k.startswith("model.layers.%d." % l)})
# rotary_emb.inv_freq of old checkpoints: theta 10000 (layers 0-2 F32, 3-5 BF16)
# is consumed; theta 500000 is refused
good = [("model.layers.%d.self_attn.rotary_emb.inv_freq" % l,
         "F32" if l < 3 else "BF16", [hd // 2],
         inv_freq(10000.0).astype("<f4").tobytes() if l < 3 else bf16(inv_freq(10000.0)))
        for l in range(6)]
d = hf_dir("invfreq_ok", links=("config.json", "tokenizer.json"))
st_write(os.path.join(d, "model.safetensors"), extra=good, real=True)
d = hf_dir("invfreq_bad", links=("config.json", "tokenizer.json"))
st_write(os.path.join(d, "model.safetensors"),
         extra=[(n, "F32", s, inv_freq(500000.0).astype("<f4").tobytes()) for n, _, s, _ in good])


# sharded: model.norm.weight in shard 2 (with `more`), the rest in shard 1
def sharded(name, more=(), norm_in_1=False, unlisted=()):
    d = hf_dir(name, links=("config.json", "tokenizer.json"))
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    st_write(os.path.join(d, s1), drop=() if norm_in_1 else ("model.norm.weight",))
    st_write(os.path.join(d, s2), only=("model.norm.weight",), extra=list(more) + list(unlisted))
    wmap = {k: s1 for k in header if k not in ("__metadata__", "model.norm.weight")}
    wmap["model.norm.weight"] = s2
    for n, *_ in more:
        wmap[n] = s2
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as g:
        json.dump({"metadata": {}, "weight_map": wmap}, g)


sharded("shard_listed", more=[("model.layers.1.self_attn.q_proj.bias", "BF16", [256], zeros(256))])
sharded("shard_unlisted", unlisted=[("model.layers.1.mlp.extra.weight", "F32", [2], bytes(8))])
sharded("shard_twice", norm_in_1=True)

# writable real copies, to be imported onto themselves
d = os.path.join(out, "self_hf")
os.makedirs(d)
for f in ("config.json", "model.safetensors", "tokenizer.json"):
    shutil.copy(os.path.join(mini, f), d)
d = os.path.join(out, "self_l2c")
os.makedirs(d)
for f in ("stories260K.bin", "tok512.bin"):
    shutil.copy(os.path.join(stories, f), d)
os.symlink(os.path.join(d, "stories260K.bin"), os.path.join(out, "link_to_ckpt.h5"))
os.symlink(os.path.join(out, "self_hf", "model.safetensors"), os.path.join(out, "link_to_st.h5"))
os.link(os.path.join(d, "stories260K.bin"), os.path.join(out, "hardlink_to_ckpt.h5"))

# llama2.c headers whose n_layers disagrees with the file size
raw = open(os.path.join(stories, "stories260K.bin"), "rb").read()
hdr = list(struct.unpack("<7i", raw[:28]))
assert hdr[2] == 5
for nl in (4, 6):
    with open(os.path.join(out, "stories_l%d.bin" % nl), "wb") as g:
        g.write(struct.pack("<7i", *(hdr[:2] + [nl] + hdr[3:])) + raw[28:])
EOF
fails=0; checks=0
OUT=$T/existing.h5 # an existing store that a refused import must leave as it is
TOK=$STORIES/tok512.bin

snap() { # PATH...: the state of those that exist: regular files' sha256, symlinks' targets
    local p ps=()
    for p in "$@"; do [ -e "$p" ] || [ -L "$p" ] && ps+=("$p"); done
    find "${ps[@]}" -type f -print0 | sort -z | xargs -0 -r sha256sum
    find "${ps[@]}" -type l -printf '%p -> %l\n' | sort
}
# refuse NAME PATTERN... -- IMPORT-ARGS
refuse() {
    local name=$1; shift
    local pats=()
    while [ "$1" != "--" ]; do pats+=("$1"); shift; done; shift
    checks=$((checks + 1))
    echo "a store from before $RANDOM" >"$OUT"
    snap "$OUT" "$@" >"$T/before"
    "$LOSA" import "$@" >"$T/stdout" 2>"$T/stderr"
    local rc=$? why=""
    [ $rc -ne 0 ] || why="exit status 0"
    [ "$(wc -l <"$T/stderr")" = 1 ] || why="$why; stderr has $(wc -l <"$T/stderr") lines"
    [ -s "$T/stdout" ] && why="$why; stdout not empty"
    for p in "${pats[@]}"; do grep -qF -- "$p" "$T/stderr" || why="$why; no '$p' in message"; done
    snap "$OUT" "$@" >"$T/after"
    cmp -s "$T/before" "$T/after" || why="$why; inputs or existing store changed: $(diff "$T/before" "$T/after" | head -3 | tr '\n' ' ')"
    [ -n "$(find "$T" -name '*.tmp.*' -print -quit)" ] && why="$why; temporary left behind"
    if [ -n "$why" ]; then
        fails=$((fails + 1)); echo "FAIL $name (rc $rc):$why"; sed 's/^/    /' "$T/stderr" | head -5
    else
        echo "ok   $name: $(cat "$T/stderr")"
    fi
}
# same NAME SRC: imports, and the store equals the plain import of minillama
same() {
    checks=$((checks + 1))
    rm -f "$T/acc.h5"
    if ! "$LOSA" import "$2" --out "$T/acc.h5" >"$T/stdout" 2>"$T/stderr"; then
        fails=$((fails + 1)); echo "FAIL $1: import failed"; sed 's/^/    /' "$T/stderr"; return
    fi
    if /usr/bin/python3 - "$T/ref.h5" "$T/acc.h5" >"$T/cmp" 2>&1 <<'EOF'
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r") for p in sys.argv[1:3])
def walk(f):
    out = {}
    f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out
da, db = walk(a), walk(b)
assert da.keys() == db.keys() and len(da) > 60, sorted(set(da) ^ set(db))
for k in da:
    assert np.array_equal(da[k], db[k]), k
ka = {k: a.attrs[k] for k in a.attrs if k != "source"}
kb = {k: b.attrs[k] for k in b.attrs if k != "source"}
assert ka.keys() == kb.keys() and all(np.array_equal(ka[k], kb[k]) for k in ka), (ka, kb)
print(len(da), "datasets and", len(ka), "attributes equal")
EOF
    then echo "ok   $1: $(cat "$T/cmp")"
    else fails=$((fails + 1)); echo "FAIL $1: store differs"; sed 's/^/    /' "$T/cmp" | tail -3; fi
}

"$LOSA" import "$MINI" --out "$T/ref.h5" >/dev/null 2>"$T/stderr" || { echo "FAIL: plain import"; cat "$T/stderr"; exit 1; }

# --- biases
refuse "attention_bias true + q/k/v biases" "bias_cfg/config.json" "attention_bias: true" "without biases" -- "$I/bias_cfg" --out "$OUT"
refuse "q/k/v bias tensors, no attention_bias" "bias/model.safetensors" "model.layers.0.self_attn.q_proj.bias" "biases are not supported" -- "$I/bias" --out "$OUT"
refuse "mlp_bias true" "mlp_bias/config.json" "mlp_bias: true" -- "$I/mlp_bias" --out "$OUT"
refuse "attention_bias not a bool" "bias_bad/config.json" "attention_bias: expected true/false" -- "$I/bias_bad" --out "$OUT"
refuse "bias listed in a weight_map" "shard_listed/model.safetensors.index.json" "model.layers.1.self_attn.q_proj.bias" "biases are not supported" -- "$I/shard_listed" --out "$OUT"
# --- sliding window
refuse "sliding_window 64 < 256" "sw_small/config.json" "sliding_window: 64" "max_position_embeddings 256" "expected null or >= 256" -- "$I/sw_small" --out "$OUT"
refuse "sliding_window 255 < 256" "sw_255/config.json" "sliding_window: 255" -- "$I/sw_255" --out "$OUT"
refuse "sliding_window a string" "sw_bad/config.json" "sliding_window: expected null or a positive integer" -- "$I/sw_bad" --out "$OUT"
# --- tensors the import would not consume
refuse "unknown tensor" "extra/model.safetensors" "model.layers.2.mlp.extra_proj.weight" "unknown" -- "$I/extra" --out "$OUT"
refuse "tensor listed twice" "dup/model.safetensors" "model.norm.weight" "listed twice" -- "$I/dup" --out "$OUT"
refuse "tied model with lm_head.weight" "tied_head/model.safetensors" "lm_head.weight" "tie_word_embeddings" -- "$I/tied_head" --out "$OUT"
refuse "shard tensor not in the weight_map" "shard_unlisted/model-00002-of-00002.safetensors" "model.layers.1.mlp.extra.weight" -- "$I/shard_unlisted" --out "$OUT"
refuse "tensor in two shards" "shard_twice/model-00001-of-00002.safetensors" "model.norm.weight" "model-00002-of-00002.safetensors" "one shard only" -- "$I/shard_twice" --out "$OUT"
refuse "inv_freq of another rope_theta" "invfreq_bad/model.safetensors" "model.layers.0.self_attn.rotary_emb.inv_freq" "rope_theta" -- "$I/invfreq_bad" --out "$OUT"
# --- layer counts
refuse "config 4 layers, weights 6" "cfg4/config.json" "num_hidden_layers: 4" "6 layers" -- "$I/cfg4" --out "$OUT"
refuse "config 8 layers, weights 6" "cfg8/config.json" "num_hidden_layers: 8" "6 layers" -- "$I/cfg8" --out "$OUT"
refuse "config 6 layers, weights 8" "weights8/config.json" "num_hidden_layers: 6" "8 layers" "weights8/model.safetensors" -- "$I/weights8" --out "$OUT"
refuse "llama2.c header n_layers 4 of 5" "stories_l4.bin" "n_layers 4" "implies" -- "$I/stories_l4.bin" --tokenizer "$TOK" --out "$OUT"
refuse "llama2.c header n_layers 6 of 5" "stories_l6.bin" "n_layers 6" "truncated" -- "$I/stories_l6.bin" --tokenizer "$TOK" --out "$OUT"
# --- output = input
S=$I/self_hf L=$I/self_l2c
refuse "HF --out its model.safetensors" "--out $S/model.safetensors" "same file as the input" -- "$S" --out "$S/model.safetensors"
refuse "HF --out its config.json" "--out $S/config.json" "same file" -- "$S" --out "$S/config.json"
refuse "HF --out its tokenizer.json" "--out $S/./tokenizer.json" "same file" -- "$S" --out "$S/./tokenizer.json"
refuse "HF --out other spelling" "--out $I/extra/../self_hf/model.safetensors" "$S/model.safetensors" -- "$S" --out "$I/extra/../self_hf/model.safetensors"
refuse "HF --out symlink to its weights" "--out $I/link_to_st.h5" "same file" -- "$S" --out "$I/link_to_st.h5"
refuse "HF --out its own directory" "--out $S" "is a directory" -- "$S" --out "$S"
refuse "HF --out its weight_map" "shard_listed/model.safetensors.index.json: is the same file" -- "$I/shard_listed" --out "$I/shard_listed/model.safetensors.index.json"
refuse "HF --out a shard" "shard_listed/model-00002-of-00002.safetensors: is the same file" -- "$I/shard_listed" --out "$I/shard_listed/model-00002-of-00002.safetensors"
refuse "llama2.c --out itself" "--out $L/stories260K.bin" "same file as the input" -- "$L/stories260K.bin" --tokenizer "$L/tok512.bin" --out "$L/stories260K.bin"
refuse "llama2.c --out its tokenizer" "--out $L/tok512.bin" "same file" -- "$L/stories260K.bin" --tokenizer "$L/tok512.bin" --out "$L/tok512.bin"
refuse "llama2.c --out via symlink" "--out $I/link_to_ckpt.h5" "$L/stories260K.bin" -- "$L/stories260K.bin" --tokenizer "$L/tok512.bin" --out "$I/link_to_ckpt.h5"
refuse "llama2.c --out hard link" "--out $I/hardlink_to_ckpt.h5" "same file" -- "$L/stories260K.bin" --tokenizer "$L/tok512.bin" --out "$I/hardlink_to_ckpt.h5"
refuse "llama2.c --out relative spelling" "same file" -- "$L/stories260K.bin" --tokenizer "$L/tok512.bin" --out "$L/../self_l2c/./stories260K.bin"

# --- accepted: the same store as the plain import
same "sliding_window null" "$I/sw_null"
same "sliding_window 256 = max_position_embeddings" "$I/sw_256"
same "sliding_window 4096" "$I/sw_large"
same "attention_bias, mlp_bias false" "$I/bias_false"
same "inv_freq of rope_theta (F32, BF16)" "$I/invfreq_ok"
checks=$((checks + 1))
if "$LOSA" import "$S" --out "$S/model.h5" >/dev/null 2>"$T/stderr" && [ -s "$S/model.h5" ]; then
    echo "ok   HF --out a new file inside the input directory"
else fails=$((fails + 1)); echo "FAIL HF --out a new file inside the input directory"; cat "$T/stderr"; fi

rm -rf "$T"
echo "test_import_refuse: $checks checks, $fails failed: $([ $fails = 0 ] && echo PASSED || echo FAILED)"
[ $fails = 0 ]
