#!/usr/bin/env bash
# data.calib_sampler = python on stories260K: one-shot Wanda at 50% and 70%
# (N = 16 C4 windows of S = 128 drawn as get_c4 does, seed 0) gives the
# same masks (zero patterns of every map) and the same perplexity on every
# layout (PP,DP) in {(1,1), (2,1), (1,2), (4,1), (2,2)}: the windows are
# drawn on rank 0 and broadcast, Wanda's column norms are summed per window
# in window order.  And the python sampler's masks differ from the losa
# sampler's (other windows), so the key is really applied.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
W=$TT/test_calib_python; rm -rf "$W"; mkdir -p "$W"
SETS=(--set model.store=$ST --set data.calib_n=16 --set data.calib_seqlen=128
      --set data.calib_sampler=python --set eval.seqlen=128 --set eval.max_windows=8)
LAYOUTS="1x1 2x1 1x2 4x1 2x2"
for sp in 0.5 0.7; do
    for lay in $LAYOUTS; do
        pp=${lay%x*}; dp=${lay#*x}; np=$((pp * dp))
        cmd=("$LOSA" prune input/prune_wanda.ini "${SETS[@]}" --set prune.sparsity=$sp
             --set parallel.pp=$pp --set parallel.dp=$dp --set output.store=$W/w$sp-$lay.h5 --json)
        if [ $np = 1 ]; then out=$("${cmd[@]}" 2>$W/w$sp-$lay.log)
        else out=$($MPIRUN -np $np "${cmd[@]}" 2>$W/w$sp-$lay.log); fi
        check "wanda $sp python sampler (PP,DP)=($pp,$dp) runs" test -n "$out"
        echo "$out" >$W/w$sp-$lay.json
    done
    out=$("$LOSA" prune input/prune_wanda.ini "${SETS[@]}" --set data.calib_sampler=losa \
          --set prune.sparsity=$sp --set output.store=$W/w$sp-losa.h5 --json 2>$W/w$sp-losa.log)
    check "wanda $sp losa sampler runs" test -n "$out"
    check "wanda $sp: masks identical on every layout" /usr/bin/python3 - "$W" "$sp" $LAYOUTS <<'PY'
import sys, json, h5py
w, sp, lays = sys.argv[1], sys.argv[2], sys.argv[3:]
def masks(tag):
    f = h5py.File('%s/w%s-%s.h5' % (w, sp, tag), 'r')
    return {l + '/' + m: f['layers/%s/%s' % (l, m)][:] == 0 for l in f['layers']
            for m in ['wq', 'wk', 'wv', 'wo', 'w_gate', 'w_up', 'w_down']}
ref = masks('1x1')
rppl = json.load(open('%s/w%s-1x1.json' % (w, sp)))['pruned_ppl']
total = sum(v.size for v in ref.values())
zeros = sum(int(v.sum()) for v in ref.values())
ok = abs(zeros / total - float(sp)) < 0.01
print('1x1: sparsity %.4f, ppl %.6f' % (zeros / total, rppl))
for lay in lays[1:]:
    m = masks(lay)
    ppl = json.load(open('%s/w%s-%s.json' % (w, sp, lay)))['pruned_ppl']
    diff = sum(int((m[k] != ref[k]).sum()) for k in ref)
    print('(PP,DP)=(%s): mask entries differing %d of %d, ppl %.10g vs %.10g'
          % (lay.replace('x', ','), diff, total, ppl, rppl))
    ok &= diff == 0 and abs(ppl - rppl) <= 1e-4 * rppl
other = masks('losa')
d = sum(int((other[k] != ref[k]).sum()) for k in ref)
print('losa sampler vs python sampler: %d mask entries differ' % d)
ok &= d > 0
sys.exit(0 if ok else 1)
PY
done
finish
