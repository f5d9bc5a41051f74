#!/usr/bin/env bash
# losa plan with model.dtype = bf16 (issue 14): the weights a rank holds are
# the bf16 stage of model_stage_build_dtype: per stage with L_s layers the
# 7 maps' M_s = L_s x (2 D^2 + 2 kvD D + 3 D F) weights and, on the last
# stage, the head's H = V D at 2 bytes, and the rest R_s (embedding on the
# first stage and, tied, on the last; norms) at 4.  Expected from the
# config alone (Python): weights_fp32 - weights_bf16 = al(4 F_s) - al(4 R_s)
# - al(2 (M_s + H_s)) exactly, F_s the fp32 stage's floats, al() the
# allocator's rounding of a block (core_alloc_bytes: 64 bytes, 2 MiB pages
# from 4 MiB up), i.e. 2 M_s (+ 2 H untied: the head at 2 bytes instead of
# 4; - 2 H tied: the head's bf16 rows beside the fp32 embedding) up to two
# pages; the Grams and pruning phases of a LoSA step also hold the copy of
# the maps a bf16 Wanda step keeps from its merge (al(2 M_s)); the GEMM
# engine's kept bf16 scratch (gemm_scratch_bytes, kern_gemm_bf16_scratch_bytes)
# is, at the decks' largest row count r = max(train 12 x 256, calibration
# chunk 8 x 256, eval 4 x 256) = 3072 and K = max(D, F): oneDNN 2 al(2 r K)
# (the rounded A and kern_gemm_bf16r's B), CBLAS al(4 x 256 K) + al(4 r V)
# on the last stage (B's fp32 block, the head backward's fp32 A); it adds
# to the activation, evaluation and every pass phase; every other kind of
# memory (adapters, dense reference, Grams) is unchanged, and the peak is
# the largest phase.
# LLaMA-2-7B (input/llama2-7b.json) on 8 stages and minillama's store on 1.
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/plan_bf16
rm -rf "$W"; mkdir -p "$W"
PY=/usr/bin/python3
MINI=$(store minillama) || exit 1
# row counts of the GEMM scratch: train 12 x 256, calibration 8 x 256, eval 4 x 256
rows='[train]\nbatch = 12\nseqlen = 256\n[data]\ncalib_seqlen = 256\n[eval]\nbatch = 4\nseqlen = 256\n'
printf "[model]\nconfig = input/llama2-7b.json\n[parallel]\ndp = 1\n$rows" > "$W/l7.ini"
printf "[model]\nstore = %s\n[parallel]\npp = 1\n$rows" "$MINI" > "$W/mini.ini"
engine=blas; ldd "$LOSA" | grep -q libdnnl && engine=onednn   # what the binary links

cat > "$W/cmp.py" <<'PYEOF'
import json, sys
a, b, cfg = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
if cfg.endswith('.json'):
    c = json.load(open(cfg))
    D, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * D // c["num_attention_heads"]
    tied = int(c.get("tie_word_embeddings", False))
else:
    m = a["model"]; D, F, V = m["dim"], m["hidden_dim"], m["vocab_size"]
    kv = m["n_kv_heads"] * D // m["n_heads"]; tied = 0
def al(n):  # core_alloc_bytes
    n = n or 64
    g = 2 << 20 if n >= 4 << 20 else 64
    return (n + g - 1) // g * g
maps = 2 * D * D + 2 * kv * D + 3 * D * F
assert a["model"]["dtype"] == "fp32" and b["model"]["dtype"] == "bf16"
ra, rb = a["ranks"], b["ranks"]
pp = len(ra)
ok = True
onednn = sys.argv[4] == "onednn"
rows, K = 12 * 256, max(D, F)
for x, y in zip(ra, rb):
    s, L = x["stage"], x["n_layers"]
    M = L * maps
    last = s == pp - 1
    E = V * D if s == 0 or (last and tied) else 0
    F32 = L * 2 * D + M + E + (D + (0 if tied else V * D) if last else 0)
    R = L * 2 * D + E + (D if last else 0)
    H = V * D if last else 0
    want = al(4 * F32) - al(4 * R) - al(2 * (M + H))
    near = 2 * M + (0 if not last else -2 * H if tied else 2 * H)
    got = x["weights_bytes"] - y["weights_bytes"]
    scr = 2 * al(2 * rows * K) if onednn else al(4 * 256 * K) + (al(4 * rows * V) if last else 0)
    same = all(x[k] == y[k] for k in ("adapter_bytes", "dense_ref_bytes", "grams_bytes", "inputs_bytes")) \
        and x["gemm_scratch_bytes"] == 0 and y["gemm_scratch_bytes"] == scr \
        and y["activation_bytes"] - x["activation_bytes"] == scr \
        and y["eval_activation_bytes"] - x["eval_activation_bytes"] == scr
    # a bf16 LoSA step with Wanda (the default pruner) keeps a copy of the
    # maps from its merge to the new mask: 2 bytes per map weight (one
    # block: al(2 M)) more in the Grams phase (and in the pruning phase,
    # whose pruner scratch differs by dtype too); every phase but those and
    # the model write (another stage in transit) differs by the weights
    # alone, and the peak is the largest phase; the set-up (the stage read,
    # no pass yet) has no GEMM scratch
    keep = al(2 * M)
    pa, pb = x["phase_bytes"], y["phase_bytes"]
    phases = all(pa[k] - pb[k] == got - scr for k in pa
                 if k not in ("setup", "grams", "losa_prune", "write_model"))
    phases = phases and pa["setup"] - pb["setup"] == got
    ok = ok and phases and pa["grams"] - pb["grams"] == got - keep - scr
    peak = y["peak_bytes"] == max(pb.values()) and x["peak_bytes"] == max(pa.values())
    print("  stage %d: %d layers, weights fp32 %d bf16 %d, difference %d (expected %d; 2 x (maps +- head) = %d), GEMM scratch %d (expected %d), peak %.3f -> %.3f GB"
          % (s, L, x["weights_bytes"], y["weights_bytes"], got, want, near, y["gemm_scratch_bytes"], scr, x["peak_bytes"] / 1e9, y["peak_bytes"] / 1e9))
    ok = ok and got == want and abs(got - near) < 2 * (2 << 20) + 128 and same and peak
sys.exit(not ok)
PYEOF

"$LOSA" plan "$W/l7.ini" --ranks 8 --json > "$W/f.json" 2>/dev/null
"$LOSA" plan "$W/l7.ini" --ranks 8 --set model.dtype=bf16 --json > "$W/b.json" 2>"$W/b.log"
check "7B, 8 stages: plan takes model.dtype = bf16 ($(head -c 300 "$W/b.log"))" test -s "$W/b.json"
check "7B, 8 stages: bf16 weights = fp32 weights - 2 bytes per map and head weight (exact, the allocator's blocks)" \
    $PY "$W/cmp.py" "$W/f.json" "$W/b.json" input/llama2-7b.json $engine
"$LOSA" plan "$W/mini.ini" --json > "$W/mf.json" 2>/dev/null
"$LOSA" plan "$W/mini.ini" --set model.dtype=bf16 --json > "$W/mb.json" 2>/dev/null
check "minillama, 1 stage: the same, exactly" $PY "$W/cmp.py" "$W/mf.json" "$W/mb.json" store $engine
txt=$("$LOSA" plan "$W/mini.ini" --set model.dtype=bf16 2>/dev/null)
check "text plan names the dtype" test -n "$(echo "$txt" | grep '^weights: model.dtype = bf16')"
err=$("$LOSA" plan "$W/mini.ini" --set model.dtype=fp16 2>&1 >/dev/null)
check "model.dtype = fp16 refused by plan: $err" test -n "$(echo "$err" | grep "model.dtype: expected one of fp32|bf16, got 'fp16'")"
finish
