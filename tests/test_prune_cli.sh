#!/usr/bin/env bash
# losa prune end to end on stories260K with a tiny deck (N 8 windows of 64
# tokens from the C4 shard):
#  - --json keys; measured sparsity equals the target; the written store's
#    sparsity (losa info --json) equals the reported one; 2:4 exact;
#  - the pruned store is identical (h5diff) for 1 and 2 pipeline stages;
#  - bad inputs fail before any work (no store written, no pruning started)
#    with a message naming the deck, the line (or --set) and the key.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
W=$TT/prune_cli
rm -rf "$W"; mkdir -p "$W"
C4=$D/text/c4/c4-train.00000-of-01024.first1000.jsonl
DECK=$W/tiny.ini
cat > "$DECK" <<EOF
# tiny prune deck for the test
[model]
store = $ST

[data]
calib = $C4
calib_n = 8
calib_seqlen = 64
calib_seed = 0
eval_text = $D/text/tinystories/tinystories_sample.txt

[prune]
method = wanda
sparsity = 0.5
pattern = unstructured

[eval]
seqlen = 64
max_windows = 16
dense = true

[output]
store = $W/out.h5
EOF
py() { /usr/bin/python3 -c "$@"; }

out=$("$LOSA" prune "$DECK" --json 2>"$W/log1")
echo "$out" | cut -c1-300
check "json has every key" py 'import json,sys; o=json.loads(sys.argv[1]); sys.exit(any(k not in o for k in
  ["dense_ppl","pruned_ppl","sparsity","layer_sparsity","recon_err","seconds","calib_seconds","prune_seconds","out"]))' "$out"
check "wanda 50%: measured sparsity 0.5 in every layer" py 'import json,sys; o=json.loads(sys.argv[1])
sys.exit(not (abs(o["sparsity"]-0.5)<1e-12 and len(o["layer_sparsity"])==5 and all(abs(x-0.5)<1e-12 for x in o["layer_sparsity"])))' "$out"
check "reconstruction errors positive, finite, 5 layers" py 'import json,sys,math; e=json.loads(sys.argv[1])["recon_err"]
sys.exit(not (len(e)==5 and all(0<x<10 and math.isfinite(x) for x in e)))' "$out"
check "pruned ppl > dense ppl" py 'import json,sys; o=json.loads(sys.argv[1]); sys.exit(not o["pruned_ppl"] > o["dense_ppl"] > 1)' "$out"
check "store written at 'out'" test -f "$(json_get "$out" out)"
info=$("$LOSA" info "$W/out.h5" --json 2>/dev/null)
check "losa info: store sparsity == reported ($(json_get "$info" sparsity))" \
    py 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); sys.exit(abs(a["sparsity"]-b["sparsity"])>1e-12 or
  any(abs(l["total"]-x)>1e-12 for l,x in zip(a["layers"],b["layer_sparsity"])))' "$info" "$out"
# the pruned store evaluates to the reported perplexity
ev=$("$LOSA" eval --model "$W/out.h5" --ppl "$D/text/tinystories/tinystories_sample.txt" --seqlen 64 --max-windows 16 --json 2>/dev/null)
check "losa eval of the store == pruned_ppl" test "$(json_get "$ev" ppl)" = "$(json_get "$out" pruned_ppl)"

# 2 pipeline stages (SparseGPT, 2:4): same store bit for bit as 1 rank
"$LOSA" prune "$DECK" --set prune.method=sparsegpt --set prune.pattern=2:4 \
    --set output.store="$W/sg1.h5" --json >"$W/sg1.json" 2>/dev/null
$MPIRUN -np 2 "$LOSA" prune "$DECK" --set prune.method=sparsegpt --set prune.pattern=2:4 \
    --set output.store="$W/sg2.h5" --json >"$W/sg2.json" 2>/dev/null
check "sparsegpt 2:4: 1 rank and 2 stages write identical stores" h5diff -q "$W/sg1.h5" "$W/sg2.h5"
check "sparsegpt 2:4: sparsity exactly 0.5" py 'import json,sys; o=json.load(open(sys.argv[1])); sys.exit(abs(o["sparsity"]-0.5)>1e-12)' "$W/sg1.json"
check "2:4 pattern exact in every map of the store" py '
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); bad = 0
for l in f["layers"]:
    for m in ["wq","wk","wv","wo","w_gate","w_up","w_down"]:
        w = f["layers"][l][m][()]
        bad += int(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) < 2).sum())
sys.exit(bad != 0)' "$W/sg2.h5"
check "magnitude per-layer sparsity (layer_sparsity list)" py 'import json,sys,subprocess
o = json.loads(subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout)
want=[0.1,0.3,0.5,0.6,0.7]
sys.exit(any(abs(a-b)>1e-3 for a,b in zip(o["layer_sparsity"],want)))' \
    "$LOSA" prune "$DECK" --set prune.method=magnitude --set "prune.layer_sparsity=0.1,0.3,0.5,0.6,0.7" \
    --set output.store="$W/mag.h5" --json

# bad inputs: fail before any work, no store, message names deck/line/key
bad() { # description, pattern the message must match, then extra args
    local what=$1 pat=$2; shift 2
    rm -f "$W/bad.h5"
    local err rc
    err=$("$LOSA" prune "$@" --set output.store="$W/bad.h5" 2>&1 >/dev/null); rc=$?
    local line; line=$(echo "$err" | grep 'losa prune:' | head -n1)
    echo "     -> $line"
    check "$what: fails ($rc), names it" test $rc -ne 0 -a -n "$(echo "$line" | grep -E -- "$pat")"
    check "$what: no pruning started, no store" \
        test -z "$(echo "$err" | grep -E 'pruning:|layer +0:')" -a ! -e "$W/bad.h5"
}
sed 's/^sparsity = 0.5/sparsity = 1.2/' "$DECK" > "$W/sp.ini"
bad "sparsity 1.2 (deck)" "sp.ini:14: prune.sparsity" "$W/sp.ini"
bad "sparsity 1.2 (--set)" "--set prune.sparsity" "$DECK" --set prune.sparsity=1.2
sed 's/^pattern = unstructured/pattern = 4:2/' "$DECK" > "$W/pat.ini"
bad "pattern 4:2" "pat.ini:15: prune.pattern.*0 < N < M" "$W/pat.ini"
bad "pattern 2:0" "--set prune.pattern" "$DECK" --set prune.pattern=2:0
sed 's/^method = wanda/method = obc/' "$DECK" > "$W/meth.ini"
bad "unknown method" "meth.ini:13: prune.method.*obc" "$W/meth.ini"
# 10 documents, only 3 of them longer than 64 tokens
py 'import json
with open("'"$W"'/few.jsonl", "w") as f:
    for i in range(10):
        f.write(json.dumps({"text": ("Once upon a time there was a cat. " * (40 if i % 3 == 0 and i < 9 else 1))}) + "\n")'
sed "s|^calib = .*|calib = $W/few.jsonl|" "$DECK" > "$W/docs.ini"
bad "too few documents (3 of 10 longer than S)" "docs.ini:6: data.calib:.*only 3 of 10 documents are longer than 64" "$W/docs.ini"
bad "too few documents (N 5000)" "tiny.ini:6: data.calib:.*5000 calibration windows" "$DECK" --set data.calib_n=5000
sed 's/^sparsity = 0.5/layer_sparsity = 0.5,0.5,0.5/' "$DECK" > "$W/ls.ini"
bad "layer_sparsity with 3 of 5 values" "ls.ini:14: prune.layer_sparsity.*3 values.*5 layers" "$W/ls.ini"
bad "layer_sparsity value 1.0" "--set prune.layer_sparsity.*outside" "$DECK" --set "prune.layer_sparsity=0.5,0.5,1.0,0.5,0.5"
bad "4:8 on F = 172" "prune.pattern.*172.*M = 8" "$DECK" --set prune.pattern=4:8
bad "missing calibration file" "--set data.calib.*nope.jsonl" "$DECK" --set data.calib="$W/nope.jsonl"
# bench prune: keys and a consistent breakdown (small N x S to stay fast)
bj=$("$LOSA" bench prune --n 4 --seqlen 64 --json 2>/dev/null)
check "bench prune: wanda_s, sparsegpt_s, breakdown sums" py 'import json,sys; o=json.loads(sys.argv[1])
b=o["breakdown"]; w=sum(b["wanda"].values()); s=sum(b["sparsegpt"].values())
sys.exit(not (o["wanda_s"]>0 and o["sparsegpt_s"]>0 and abs(w-o["wanda_s"])<1e-9 and abs(s-o["sparsegpt_s"])<1e-9
  and all(k in b["sparsegpt"] for k in ["stats_s","hinv_s","mask_s","sweep_s","update_s"])))' "$bj"
bj=$("$LOSA" bench prune --model "$ST" --layer 2 --n 4 --seqlen 64 --pattern 2:4 --json 2>/dev/null)
check "bench prune --model stories260K --layer 2 --pattern 2:4" py 'import json,sys; o=json.loads(sys.argv[1])
sys.exit(not (o["dim"]==64 and o["hidden_dim"]==172 and o["layer"]==2 and o["sparsity"]==0.5))' "$bj"
# under 2 ranks the error is printed once
err=$($MPIRUN -np 2 "$LOSA" prune "$W/pat.ini" 2>&1 >/dev/null)
check "2 ranks: one error line" test "$(echo "$err" | grep -c 'prune.pattern')" = 1
finish
