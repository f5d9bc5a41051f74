#!/usr/bin/env bash
# losa run and losa prune read [prune] through one settings function, so
# they prune alike (stories260K, 5 layers, 8 calibration windows of 64):
#  - losa.mode = prune with prune.layer_sparsity: `losa run` prunes every
#    layer to its listed sparsity and measures the same perplexity, bit for
#    bit, as `losa prune` with the same deck (same windows, same pruner,
#    same evaluation); the two models hold the same weights; the perplexity
#    differs from the uniform pruning at prune.sparsity (the key is used);
#  - `losa run` refuses what `losa prune` refuses, before any work and
#    naming the key: prune.blocksize not a multiple of M (SparseGPT N:M), an
#    N:M width that does not divide a map's input (4:8 on F = 172), and
#    per-layer sparsities with an N:M pattern.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
W=$TT/test_run_layer_sparsity; rm -rf "$W"; mkdir -p "$W"
LS=0.3,0.5,0.6,0.7,0.8
SETS=(--set model.store=$ST --set data.calib=$D/text/c4/c4-train.00000-of-01024.first1000.jsonl
      --set data.calib_n=8 --set data.calib_seqlen=64
      --set data.eval_text=$D/text/tinystories/tinystories_sample.txt
      --set eval.seqlen=64 --set eval.max_windows=16 --set prune.method=wanda
      --set prune.sparsity=0.6 --set losa.mode=prune)
py() { /usr/bin/python3 "$@"; }

run=$("$LOSA" run input/default.ini "${SETS[@]}" --set prune.layer_sparsity=$LS \
      --set output.dir=$W/run --json 2>$W/run.log)
pr=$("$LOSA" prune input/default.ini "${SETS[@]}" --set prune.layer_sparsity=$LS \
     --set output.store=$W/pruned.h5 --json 2>$W/prune.log)
uni=$("$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/uniform --json 2>$W/uniform.log)
check "losa run (mode prune, layer_sparsity) succeeds" test -n "$run"
check "losa prune (same deck) succeeds" test -n "$pr"
check "uniform losa run succeeds" test -n "$uni"
rp=$(json_get "$run" pruned_ppl); pp=$(json_get "$pr" pruned_ppl); up=$(json_get "$uni" pruned_ppl)
echo "pruned perplexity: losa run $rp, losa prune $pp, uniform 0.6 (losa run) $up"
check "losa run's pruned perplexity == losa prune's, bit for bit ($rp)" test "$rp" = "$pp"
check "per-layer sparsities change the perplexity vs uniform ($rp vs $up)" test "$rp" != "$up"
check "losa run logs the per-layer pruning" grep -q "sparsity 0.600 (per-layer sparsity)" $W/run.log
check "every layer at its listed sparsity (floor(s x size) zeros per map), same weights as losa prune" \
    py - "$W/run/model.h5" "$W/pruned.h5" "$LS" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
want = [float(x) for x in sys.argv[3].split(',')]
ok = True
for l, s in enumerate(want):
    z = n = 0
    for m in ['wq', 'wk', 'wv', 'wo', 'w_gate', 'w_up', 'w_down']:
        x, y = a['layers/%d/%s' % (l, m)][:], b['layers/%d/%s' % (l, m)][:]
        ok &= np.array_equal(x, y)
        k = int(np.floor(s * x.size + 1e-9))
        ok &= int((x == 0).sum()) == k
        z += (x == 0).sum(); n += x.size
    print('layer %d: sparsity %.6f (listed %.2f)' % (l, z / n, s))
sys.exit(0 if ok else 1)
PY

# what losa prune refuses, losa run refuses: before any work, naming the key
refused() { # description, pattern of the message, extra --set arguments
    local what=$1 pat=$2; shift 2
    local dir=$W/bad err rc
    rm -rf "$dir"
    err=$("$LOSA" run input/default.ini "${SETS[@]}" "$@" --set output.dir=$dir 2>&1 >/dev/null); rc=$?
    local line; line=$(echo "$err" | grep '^losa run:' | head -n1)
    echo "     -> $line"
    check "$what: refused ($rc) naming the key" test $rc -ne 0 -a -n "$(echo "$line" | grep -E -- "$pat")"
    check "$what: before any work (no run directory)" test ! -e "$dir"
}
refused "SparseGPT 2:4 with blocksize 130" "--set prune.blocksize: 130 is not a multiple of M = 4" \
    --set prune.method=sparsegpt --set prune.pattern=2:4 --set prune.blocksize=130
refused "4:8 on F = 172" "--set prune.pattern: input width 172 of .* is not a multiple of M = 8" \
    --set prune.pattern=4:8
refused "layer_sparsity with 2:4" "--set prune.layer_sparsity: per-layer sparsities do not apply" \
    --set prune.pattern=2:4 --set prune.layer_sparsity=$LS
refused "layer_sparsity with 3 of 5 values" "--set prune.layer_sparsity: 3 values for a model with 5 layers" \
    --set prune.layer_sparsity=0.5,0.5,0.5
finish
