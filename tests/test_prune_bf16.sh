#!/usr/bin/env bash
# losa prune / run / finetune with model.dtype = bf16 on
# minillama's bf16 store (import --dtype keep), a small deck (8 C4 windows
# of 128 tokens, perplexity on the first 8 WikiText-2 test windows of 256):
#  - the JSON says dtype bf16; Wanda 50 %: measured sparsity exactly 0.5 in
#    every layer (K = floor(n/2) zeros per matrix, include/prune.h), and
#    the store agrees: root dtype bf16, every map a uint16 dataset with
#    dtype = "bf16" holding exactly floor(n/2) zeros, losa info's sparsity
#    == the reported one; no weight raised (minillama has none that small);
#    the input's bf16 embedding and head are written back bf16 (exact), so
#    the store is the size of the dense bf16 one;
#  - pruned perplexity within 0.5 % of the fp32 prune of the same store
#    (the issue's bound; the bf16 run differs by its bf16 forward, which
#    moves minillama's dense perplexity by 0.003 %, and by the calibration
#    statistics that forward gives);
#  - SparseGPT 2:4 in bf16: 2:4 exact in every map of the store, and the
#    store written from 2 pipeline stages is identical (h5diff) to 1 rank's
#    (same bf16 products per layer, the stages gathered to rank 0);
#  - losa run with losa.mode = prune and model.dtype = bf16: model.h5 in
#    bf16 with the run's sparsity; LoSA in bf16 (T = 2) and its resume from
#    the bf16 checkpoint (same model.h5); its kept weights after step 2
#    (Wanda: the new mask on the maps kept from before the merge) are the
#    input's bit for bit; finetune in bf16 keeps the zeros;
#  - the head held in bf16: a bf16 LoSA run on an fp32 store whose head is
#    not bf16-valued writes /head = bf16(input head) bit for bit, resumes to
#    the same model.h5 and gives the same model.h5 on 2 pipeline stages;
#  - losa sparsify takes the bf16 store (maps read by widening, exact).
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/prune_bf16
rm -rf "$W"; mkdir -p "$W"
MINI=$STORES/minillama_bf16.h5
[ -f "$MINI" ] || "$LOSA" import "$D/models/minillama" --out "$MINI" >/dev/null || exit 1
C4=$D/text/c4/c4-train.00000-of-01024.first1000.jsonl
DECK=$W/mini.ini
cat > "$DECK" <<EOF
[model]
store = $MINI
dtype = bf16

[data]
calib = $C4
calib_n = 8
calib_seqlen = 128
eval_text = $D/text/wikitext2/wiki.test.hf_join.txt

[prune]
method = wanda
sparsity = 0.5
pattern = unstructured

[eval]
seqlen = 256
max_windows = 8

[output]
store = $W/w16.h5
EOF
py() { /usr/bin/python3 -c "$@"; }

o16=$("$LOSA" prune "$DECK" --json 2>"$W/w16.log")
o32=$("$LOSA" prune "$DECK" --set model.dtype=fp32 --set output.store="$W/w32.h5" --json 2>"$W/w32.log")
echo "bf16: $(echo "$o16" | cut -c1-200)"
check "bf16 prune ran, JSON dtype bf16 ($(tail -n 2 "$W/w16.log" | tr '\n' ' '))" \
    test "$(json_get "$o16" dtype)" = bf16
check "fp32 prune of the same store: dtype fp32" test "$(json_get "$o32" dtype)" = fp32
check "wanda 50% in bf16: sparsity exactly 0.5 in every layer, nothing raised" py '
import json,sys; o=json.loads(sys.argv[1])
sys.exit(not (o["sparsity"] == 0.5 and len(o["layer_sparsity"]) == 6 and
              all(x == 0.5 for x in o["layer_sparsity"]) and o["bf16_raised"] == 0))' "$o16"
check "store: root dtype bf16, every map bf16 with floor(n/2) zeros" py '
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); bad = 0
a = f.attrs["dtype"]; a = a.decode() if isinstance(a, bytes) else a
bad += a != "bf16"
for l in f["layers"]:
    for m in ["wq","wk","wv","wo","w_gate","w_up","w_down"]:
        d = f["layers"][l][m]; w = d[()]
        a = d.attrs.get("dtype"); a = a.decode() if isinstance(a, bytes) else a
        bad += w.dtype != np.uint16 or a != "bf16"
        bad += int(((w & 0x7fff) == 0).sum()) != w.size // 2
sys.exit(bad != 0)' "$W/w16.h5"
info=$("$LOSA" info "$W/w16.h5" --json 2>/dev/null)
check "losa info: dtype bf16, sparsity == reported" py '
import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2])
sys.exit(a["dtype"] != "bf16" or abs(a["sparsity"]-b["sparsity"]) > 1e-12)' "$info" "$o16"
# the input's bf16 embedding and head are written back in bf16 (exact)
check "embedding and head stay bf16: $(json_get "$info" dtypes)" py '
import json,sys; a=json.loads(sys.argv[1])["dtypes"]; sys.exit(a["embed"] != "bf16" or a["head"] != "bf16")' "$info"
# same tensors at 2 bytes per weight: the size of the input up to HDF5's own
# bytes (source string, attributes: a few KB; 1 % = 433 KB is the bound)
check "bf16 store the size of the dense bf16 input ($(stat -c %s "$W/w16.h5") vs $(stat -c %s "$MINI") bytes)" \
    py "import sys; sys.exit(not $(stat -c %s "$W/w16.h5") <= 1.01 * $(stat -c %s "$MINI"))"
a=$(json_get "$o32" pruned_ppl); b=$(json_get "$o16" pruned_ppl)
echo "minillama wanda 50% pruned ppl (8 windows): fp32 $a, bf16 $b"
check "bf16 pruned perplexity within 0.5% of fp32 ($b vs $a)" \
    py "import sys; sys.exit(abs($b/$a-1) > 0.005)"

# SparseGPT 2:4 in bf16, 1 rank and 2 pipeline stages
SG="--set prune.method=sparsegpt --set prune.pattern=2:4 --set data.eval_text="
"$LOSA" prune "$DECK" $SG --set output.store="$W/sg1.h5" --json >"$W/sg1.json" 2>"$W/sg1.log"
$MPIRUN -np 2 "$LOSA" prune "$DECK" $SG --set output.store="$W/sg2.h5" --json >"$W/sg2.json" 2>"$W/sg2.log"
check "sparsegpt 2:4 bf16: sparsity exactly 0.5 ($(tail -n 1 "$W/sg1.log"))" \
    py 'import json,sys; o=json.load(open(sys.argv[1])); sys.exit(o["sparsity"] != 0.5 or o["dtype"] != "bf16")' "$W/sg1.json"
check "sparsegpt 2:4 bf16: 1 rank and 2 stages write identical stores" h5diff -q "$W/sg1.h5" "$W/sg2.h5"
check "2:4 exact in every bf16 map of the store" py '
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); bad = 0
for l in f["layers"]:
    for m in ["wq","wk","wv","wo","w_gate","w_up","w_down"]:
        w = f["layers"][l][m][()]
        bad += w.dtype != np.uint16
        bad += int((((w & 0x7fff) == 0).reshape(w.shape[0], -1, 4).sum(-1) != 2).sum())
sys.exit(bad != 0)' "$W/sg2.h5"

# losa run, losa.mode = prune, in bf16
r=$("$LOSA" run input/default.ini --set model.store="$MINI" --set model.dtype=bf16 \
    --set losa.mode=prune --set data.calib="$C4" --set data.calib_n=8 --set data.calib_seqlen=128 \
    --set data.eval_text= --set output.dir="$W/run" --json 2>"$W/run.log")
check "losa run (mode prune) in bf16 ($(tail -n 1 "$W/run.log"))" test -f "$W/run/model.h5"
rinfo=$("$LOSA" info "$W/run/model.h5" --json 2>/dev/null)
check "run's model.h5: dtype bf16, maps bf16" py '
import json,sys; a=json.loads(sys.argv[1]); sys.exit(a["dtype"] != "bf16" or a["dtypes"]["maps"] != "bf16")' "$rinfo"
want=$(grep -o 'sparsity = [0-9.]*' input/default.ini | head -n 1 | grep -o '[0-9.]*$')
check "run's model.h5: every map holds floor($want n) zeros (Wanda's count, bf16 +-0)" py '
import sys, math, h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); s = float(sys.argv[2]); bad = 0
for l in f["layers"]:
    for m in ["wq","wk","wv","wo","w_gate","w_up","w_down"]:
        w = f["layers"][l][m][()]
        bad += int(((w & 0x7fff) == 0).sum()) != min(w.size, math.floor(s * w.size + 1e-9))
sys.exit(bad != 0)' "$W/run/model.h5" "$want"

# LoSA in bf16 (T = 2, tiny budget): model.h5 bf16 with the target's exact
# count; stopped after step 1 and resumed from the bf16 checkpoint: the same
# model.h5 (h5diff) as the uninterrupted run
L=(--set model.store="$MINI" --set model.dtype=bf16 --set losa.mode=losa --set data.calib="$C4"
   --set data.calib_n=8 --set data.calib_seqlen=64 --set losa.rmi_n=8 --set losa.steps=2
   --set losa.samples_per_step=16 --set losa.last_step_samples=16 --set train.seqlen=64
   --set data.eval_text=)
"$LOSA" run input/default.ini "${L[@]}" --set output.dir="$W/losa1" >/dev/null 2>"$W/losa1.log"
check "LoSA run in bf16 ($(tail -n 1 "$W/losa1.log"))" test -f "$W/losa1/model.h5"
# LoSA's layer sparsities average to the target; each matrix prunes
# floor(s_l n): the total is within one entry per matrix (42) of s N
check "LoSA model.h5: maps bf16, zeros within 42 of $want N" py '
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); s = float(sys.argv[2]); bad = 0; z = 0; n = 0
for l in f["layers"]:
    for m in ["wq","wk","wv","wo","w_gate","w_up","w_down"]:
        w = f["layers"][l][m][()]
        bad += w.dtype != np.uint16; z += int(((w & 0x7fff) == 0).sum()); n += w.size
print("zeros", z, "of", n, "target", s * n)
sys.exit(bad != 0 or abs(z - s * n) > 42)' "$W/losa1/model.h5" "$want"
# Wanda keeps the kept weights, so a bf16 step applies its new mask to the
# maps kept from before its merge instead of unmerging (which rounds twice):
# after step 2 (adapters trained in step 1, Delta != 0 merged and taken
# back) every non-zero map weight of the checkpoint is the input's, bit for
# bit, and the zeros are the step's sparsity
check "bf16 LoSA step 2 checkpoint: every kept map weight == the input's, bit for bit" py '
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1], "r"); b = h5py.File(sys.argv[2], "r"); bad = 0; kept = 0
for l in b["layers"]:
    for m in ["wq","wk","wv","wo","w_gate","w_up","w_down"]:
        w = b["layers"][l][m][()]; x = a["layers"][l][m][()]
        nz = (w & 0x7fff) != 0
        bad += w.dtype != np.uint16 or int((w[nz] != x[nz]).sum()); kept += int(nz.sum())
print("kept", kept, "moved", bad)
sys.exit(bad != 0 or kept == 0)' "$MINI" "$W/losa1/ckpt/step_2/stage_0.h5"
"$LOSA" run input/default.ini "${L[@]}" --set output.dir="$W/losa2" --stop-after 1 >/dev/null 2>&1
"$LOSA" run input/default.ini "${L[@]}" --set output.dir="$W/losa2" >/dev/null 2>"$W/losa2.log"
check "bf16 LoSA resumed from step 1 ($(grep -c resuming "$W/losa2.log") resume line)" grep -q "resuming after step 1" "$W/losa2.log"
check "resumed bf16 run's model.h5 == uninterrupted" h5diff -q "$W/losa1/model.h5" "$W/losa2/model.h5"
# evaluating between the steps (merge, perplexity, put back) leaves the
# weights as they were: bf16 merge + unmerge would round twice
"$LOSA" run input/default.ini "${L[@]}" --set eval.each_step=true --set output.dir="$W/losa3" \
    >/dev/null 2>"$W/losa3.log"
check "bf16 LoSA with eval.each_step: $(grep -c 'step 1: ppl' "$W/losa3.log") step ppl line" \
    grep -q "step 1: ppl" "$W/losa3.log"
check "bf16 LoSA with eval.each_step: model.h5 == without" \
    h5diff -q "$W/losa1/model.h5" "$W/losa3/model.h5"
# finetune in bf16 on the pruned store: the zero set kept, written bf16
"$LOSA" finetune input/default.ini --set model.store="$W/w16.h5" --set model.dtype=bf16 \
    --set train.steps=2 --set train.seqlen=64 --set output.store="$W/ft.h5" >/dev/null 2>"$W/ft.log"
check "finetune in bf16: 0 pattern changes ($(grep merged "$W/ft.log"))" grep -q "0 pattern changes" "$W/ft.log"
check "finetuned store: dtype bf16, sparsity 0.5" py '
import json,sys,subprocess; a=json.loads(subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout)
sys.exit(a["dtype"] != "bf16" or a["sparsity"] != 0.5)' "$LOSA" info "$W/ft.h5" --json

# The head held in bf16 (issue 14): an fp32 store whose head is not made of
# bf16 values (minillama's fp32 import, head scaled by 1 + 2^-10 so most
# values fall between two bf16 numbers).  A bf16 LoSA run (the head frozen,
# its forward and backward products in bf16) writes /head as a bf16 dataset
# equal to round-to-nearest-even(input head) bit for bit (numpy's rounding,
# independent of the C code); stopped after step 1 and resumed: the same
# model.h5; 2 pipeline stages (the head on the last, gathered to rank 0 for
# the write): the same model.h5 as 1 rank.
H32=$W/mini_h32.h5
cp "$(store minillama)" "$H32"
py '
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r+"); h = f["head"][()].astype(np.float32)
f["head"][...] = (h * np.float32(1 + 2.0 ** -10)).astype(np.float32)' "$H32"
check "test store: the head is fp32 and mostly not bf16 values" py '
import sys, h5py, numpy as np
h = h5py.File(sys.argv[1], "r")["head"][()]
sys.exit(bool(h.dtype != np.float32 or ((h.view(np.uint32) & 0xffff) != 0).mean() < 0.9))' "$H32"
HL=("${L[@]}" --set model.store="$H32")
"$LOSA" run input/default.ini "${HL[@]}" --set output.dir="$W/h1" >/dev/null 2>"$W/h1.log"
check "bf16 LoSA on the fp32 store ($(tail -n 1 "$W/h1.log"))" test -f "$W/h1/model.h5"
check "model.h5 /head: a bf16 dataset == bf16(input head), round to nearest even, bit for bit" py '
import sys, h5py, numpy as np
h = h5py.File(sys.argv[1], "r")["head"][()].view(np.uint32).astype(np.uint64)
want = ((h + 0x7fff + ((h >> 16) & 1)) >> 16).astype(np.uint16)  # RNE (no NaN here)
d = h5py.File(sys.argv[2], "r")["head"]
a = d.attrs.get("dtype"); a = a.decode() if isinstance(a, bytes) else a
got = d[()]
print("head", got.dtype, a, "differs at", int((got != want).sum()) if got.dtype == np.uint16 else "-")
sys.exit(got.dtype != np.uint16 or a != "bf16" or not np.array_equal(got, want))' "$H32" "$W/h1/model.h5"
"$LOSA" run input/default.ini "${HL[@]}" --set output.dir="$W/h2" --stop-after 1 >/dev/null 2>&1
"$LOSA" run input/default.ini "${HL[@]}" --set output.dir="$W/h2" >/dev/null 2>"$W/h2.log"
check "bf16-head run resumed from step 1" grep -q "resuming after step 1" "$W/h2.log"
check "bf16-head run: resumed model.h5 == uninterrupted" h5diff -q "$W/h1/model.h5" "$W/h2/model.h5"
$MPIRUN -np 2 "$LOSA" run input/default.ini "${HL[@]}" --set parallel.pp=2 \
    --set output.dir="$W/h3" >/dev/null 2>"$W/h3.log"
check "bf16-head run on 2 pipeline stages ($(tail -n 1 "$W/h3.log"))" test -f "$W/h3/model.h5"
check "bf16-head run: 2 pipeline stages model.h5 == 1 rank's" h5diff -q "$W/h1/model.h5" "$W/h3/model.h5"

cp "$W/w16.h5" "$W/sp.h5"
check "losa sparsify takes the bf16 store" "$LOSA" sparsify "$W/sp.h5" --all --json
finish
