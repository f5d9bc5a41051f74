#!/usr/bin/env bash
# losa synth: a 2-layer LLaMA-2-7B-shaped store (real layer shapes, random
# weights) has the config's shapes and the parameter count computed from the
# config by Python; tiny synthetic stores evaluate to a perplexity close to
# the vocabulary size (random N(0, 0.02) weights give near-uniform logits);
# the same seed gives the same weights, another seed other weights.
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/synth
rm -rf "$W"; mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
WIKI=$D/text/wikitext2/wiki.test.hf_join.txt
PY=/usr/bin/python3

# --- LLaMA-2-7B shapes, 2 layers (~2.7 GB fp32) ---------------------------
out=$("$LOSA" synth --config input/llama2-7b.json --layers 2 --out "$W/l7.h5" --seed 1 --json 2>/dev/null)
check "synth llama2-7b exits 0" test -n "$out"
info=$("$LOSA" info "$W/l7.h5" --json 2>/dev/null)
want=$($PY -c '
import json; c = json.load(open("input/llama2-7b.json")); K = 2
D, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
kv = c["num_key_value_heads"] * D // c["num_attention_heads"]
print(2 * V * D + D + K * (2 * D * D + 2 * kv * D + 3 * D * F + 2 * D))')
check "params = $want (from the config)" test "$(json_get "$info" params)" = "$want"
check "synth --json n_params = $want" test "$(json_get "$out" n_params)" = "$want"
for kv in dim=4096 hidden_dim=11008 n_layers=2 n_heads=32 n_kv_heads=32 vocab_size=32000 \
          max_seq_len=4096 rope_theta=10000 tie_embeddings=0; do
    k=${kv%=*}; v=${kv#*=}
    check "config.$k = $v" test "$(json_get "$info" config.$k)" = "$v"
done
check "w_gate shape [11008, 4096]" test "$(json_get "$info" map_shapes.w_gate)" = "[11008, 4096]"
check "w_down shape [4096, 11008]" test "$(json_get "$info" map_shapes.w_down)" = "[4096, 11008]"
check "byte-level tokenizer padded to V" test "$(json_get "$info" tokenizer_vocab)" = 32000
check "N(0, 0.02) weights, 1 + N(0, 0.1) norms" $PY -c '
import h5py, numpy as np, sys
f = h5py.File(sys.argv[1], "r")
w = f["layers/1/w_up"][:2048]; n = f["layers/0/attn_norm"][:]
print("w_up std %.5f mean %.2e, attn_norm mean %.4f std %.4f" % (w.std(), w.mean(), n.mean(), n.std()))
sys.exit(not (abs(w.std() - 0.02) < 2e-4 and abs(w.mean()) < 1e-4 and abs(n.mean() - 1) < 0.01 and abs(n.std() - 0.1) < 0.01))' "$W/l7.h5"
rm -f "$W/l7.h5"

# --- LLaMA-3-8B: GQA shapes and rope_theta 500000 (config only, 1 layer) --
cat > "$W/l3tiny.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
 "intermediate_size": 448, "num_hidden_layers": 32, "num_attention_heads": 4,
 "num_key_value_heads": 1, "vocab_size": 1000, "max_position_embeddings": 8192,
 "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "bos_token_id": 998, "eos_token_id": 999}
EOF
"$LOSA" synth --config "$W/l3tiny.json" --layers 3 --out "$W/l3.h5" 2>/dev/null
info=$("$LOSA" info "$W/l3.h5" --json 2>/dev/null)
check "GQA wk shape [32, 128]" test "$(json_get "$info" map_shapes.wk)" = "[32, 128]"
check "rope_theta 500000" test "$(json_get "$info" config.rope_theta)" = 500000
check "bos 998 kept" test "$(json_get "$info" config.bos_id)" = 998
out=$("$LOSA" eval --model "$W/l3.h5" --ppl "$WIKI" --seqlen 64 --max-windows 4 --json 2>/dev/null)
ppl=$(json_get "$out" ppl)
check "tiny GQA store: eval ppl $ppl within [0.9, 1.2] x V = 1000" \
    $PY -c "import sys; sys.exit(not 900 <= $ppl <= 1200)"

# --- tiny store with the LLaMA-2 tokenizer.json, eval on 2 stages ----------
cat > "$W/tiny.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 512,
 "rms_norm_eps": 1e-05, "bos_token_id": 1, "eos_token_id": 2}
EOF
"$LOSA" synth --config "$W/tiny.json" --layers 2 --seed 7 --out "$W/t7.h5" \
    --tokenizer "$D/models/llama2-tokenizer/tokenizer.json" 2>/dev/null
"$LOSA" synth --config "$W/tiny.json" --layers 2 --seed 7 --out "$W/t7b.h5" 2>/dev/null
"$LOSA" synth --config "$W/tiny.json" --layers 2 --seed 8 --out "$W/t8.h5" 2>/dev/null
out=$($MPIRUN -np 2 "$LOSA" eval --model "$W/t7.h5" --ppl "$WIKI" --seqlen 128 --max-windows 4 --json 2>/dev/null)
ppl=$(json_get "$out" ppl)
check "tiny store (LLaMA-2 tokenizer, 2 stages): ppl $ppl within [0.9, 1.2] x 32000" \
    $PY -c "import sys; sys.exit(not 28800 <= $ppl <= 38400)"
check "same seed -> same weights, other seed -> other weights" $PY -c '
import h5py, numpy as np, sys
a, b, c = (h5py.File(p, "r") for p in sys.argv[1:4])
same = all(np.array_equal(a[k][:], b[k][:]) for k in ["embed", "head", "layers/1/wq", "layers/0/w_down"])
diff = not np.array_equal(a["layers/1/wq"][:], c["layers/1/wq"][:])
sys.exit(not (same and diff))' "$W/t7.h5" "$W/t7b.h5" "$W/t8.h5"

# --- bad input -------------------------------------------------------------
err=$("$LOSA" synth --config "$W/nope.json" --layers 2 --out "$W/x.h5" 2>&1 >/dev/null)
check "missing config: error names the file" test "$(echo "$err" | grep -c 'nope.json')" = 1
err=$("$LOSA" synth --config "$W/tiny.json" --layers 0 --out "$W/x.h5" 2>&1 >/dev/null)
check "--layers 0 rejected" test "$(echo "$err" | grep -c -- '--layers')" = 1
sed 's/"vocab_size": 32000/"vocab_size": 200/' "$W/tiny.json" > "$W/v200.json"
err=$("$LOSA" synth --config "$W/v200.json" --layers 1 --out "$W/x.h5" 2>&1 >/dev/null)
check "V < 259 without --tokenizer rejected" test "$(echo "$err" | grep -c '259')" = 1
check "no store left behind" test ! -e "$W/x.h5"
finish
