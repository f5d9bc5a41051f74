#!/usr/bin/env bash
# losa run end to end on stories260K at small settings:
#  - compare mode: every key of the --json contract, run.h5 holds every
#    quantity of the method, model.h5 is an ordinary sparse store whose
#    zeros equal the last pruning's (the final merge adds no non-zero);
#  - the mean allocated sparsity of the last step is exactly the target;
#  - resume: a run stopped after step 2 and started again ends with the same
#    model (bit for bit) and the same perplexity as an uninterrupted run,
#    on 1 rank and on a 2-stage pipeline.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
W=$TT/test_run; rm -rf "$W"; mkdir -p "$W"
SETS=(--set model.store=$ST --set data.calib_n=4 --set data.calib_seqlen=64 --set losa.rmi_n=4
      --set losa.steps=3 --set losa.samples_per_step=16 --set losa.last_step_samples=24
      --set train.seqlen=64 --set train.batch=2 --set train.grad_accum=2
      --set eval.seqlen=64 --set eval.max_windows=12)

out=$("$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/cmp --json 2>$W/cmp.log)
check "compare run succeeds" test -n "$out"
for k in dense_ppl pruned_ppl lora_ppl losa_ppl sparsity seconds run_dir; do
    check "json key $k" /usr/bin/python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert d['$k'] is not None" "$out"
done
check "run.h5 holds the method's quantities" /usr/bin/python3 - "$W/cmp" <<'PY'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1] + '/run.h5', 'r')
for k in ['deck', 'git_revision', 'layout', 'seeds', 'mode', 'method']:
    assert k in f['run'].attrs, 'missing attribute run/' + k
assert '[losa]' in f['run'].attrs['deck']
for k in ['dense/ppl', 'prune/ppl',
          'lora/ppl', 'lora/loss', 'losa/ppl', 'losa/steps/s_t', 'losa/steps/layer_sparsity',
          'losa/steps/cka', 'losa/steps/importance', 'losa/steps/recon_err', 'losa/steps/rank',
          'losa/steps/loss', 'losa/steps/ppl', 'losa/steps/seconds', 'final/dense_ppl']:
    assert k in f, 'missing ' + k
T, L = 3, 5
assert f['losa/steps/layer_sparsity'].shape == (T, L)
assert f['losa/steps/cka'].shape == (T, L + 1, L + 1)
st = f['losa/steps/s_t'][:]
assert abs(st[-1] - 0.7) < 1e-12, st
alloc = f['losa/steps/layer_sparsity'][:]
assert abs(alloc[-1].mean() - 0.7) < 1e-12, alloc[-1]          # exact mean of the LP
cka = f['losa/steps/cka'][0]
assert np.allclose(np.diag(cka), 1) and np.allclose(cka, cka.T)
rk = f['losa/steps/rank'][:]
for t in range(T):
    assert rk[t].sum() == (6 + t) * L, rk[t]                    # exact rank total
    assert rk[t].min() >= 1 and rk[t].max() <= 16
# the final model: zeros of the last pruning, unchanged by the final merge
m = h5py.File(sys.argv[1] + '/model.h5', 'r')
meas = f['losa/steps/measured_sparsity'][-1]
for l in range(L):
    z = n = 0
    for w in ['wq', 'wk', 'wv', 'wo', 'w_gate', 'w_up', 'w_down']:
        a = m['layers/%d/%s' % (l, w)][:]
        z += (a == 0).sum(); n += a.size
    assert abs(z / n - meas[l]) < 1e-12, (l, z / n, meas[l])
# exact final sparsity: every matrix holds floor(s_l * size) zeros (one more
# where an earlier step's pruning already went one weight further: zeros are
# never revived), so the sparsity is the target up to one weight per matrix
tz = tn = 0
for l in range(L):
    for w in ['wq', 'wk', 'wv', 'wo', 'w_gate', 'w_up', 'w_down']:
        a = m['layers/%d/%s' % (l, w)][:]
        want = int(np.floor(alloc[-1][l] * a.size + 1e-9))
        z = (a == 0).sum()
        assert want <= z <= want + 1, (l, w, z, want)
        tz += z; tn += a.size
assert abs(tz / tn - 0.7) <= 7 * L / tn, tz / tn
print('run.h5 and model.h5 ok; final layer sparsity', meas, 'total', tz / tn)
PY

# the set-up and each perplexity pass's own seconds (plan_check compares
# them with losa plan's setup phase and one perplexity pass): present,
# positive, and parts of what holds them (the tokenizing and the stage's
# read inside the set-up, the set-up inside the run's seconds; a pass
# inside its result's seconds, beside its training)
check "run.h5: /setup/* and the perplexity passes' eval_seconds" /usr/bin/python3 - "$W/cmp" <<'PY'
import sys, h5py
f = h5py.File(sys.argv[1] + '/run.h5', 'r')
g = lambda k: float(f[k][0])
su, tok, sto = g('setup/seconds'), g('setup/tokenize_seconds'), g('setup/store_seconds')
assert 0 < tok < su and 0 < sto < su and tok + sto < su, (su, tok, sto)
assert su < g('final/seconds') and su < g('final/invocation_seconds'), su
for m in ['dense', 'prune', 'lora', 'losa']:
    assert g(m + '/eval_seconds') > 0, m
for m in ['prune', 'lora', 'losa']:
    assert g(m + '/eval_seconds') < g(m + '/seconds'), m
assert g('lora/train_seconds') + g('lora/eval_seconds') <= g('lora/seconds')
print('setup', su, 'tokenize', tok, 'store', sto,
      'eval', [g(m + '/eval_seconds') for m in ['dense', 'prune', 'lora', 'losa']])
PY
# a compare run resumed from the base of an older losa (ckpt/base.h5
# without the eval_seconds keys) runs on; its run.h5 has the keys (NaN
# where the base had none: the pass was not timed)
"$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/oldbase --stop-after 1 >/dev/null 2>$W/oldbase1.log
/usr/bin/python3 - "$W/oldbase/ckpt/base.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], 'a') as f:
    for k in ['dense/eval_seconds', 'prune/eval_seconds', 'lora/eval_seconds']:
        del f[k]
PY
"$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/oldbase >/dev/null 2>$W/oldbase2.log
check "compare run resumed from an older base.h5 (no eval_seconds): finishes with the keys" \
    /usr/bin/python3 - "$W/oldbase" <<'PY'
import math, sys, h5py
f = h5py.File(sys.argv[1] + '/run.h5', 'r')
g = lambda k: float(f[k][0])
assert math.isnan(g('dense/eval_seconds')) and math.isnan(g('lora/eval_seconds')), 'expected NaN'
assert g('losa/eval_seconds') > 0 and g('setup/seconds') > 0
PY

# resume after a stop at step 2 == uninterrupted
for np in 1 2; do
    run() { if [ $np = 1 ]; then "$LOSA" "$@"; else $MPIRUN -np $np "$LOSA" "$@"; fi; }
    full=$(run run input/default.ini "${SETS[@]}" --set losa.mode=losa --set output.dir=$W/full$np --json 2>$W/full$np.log)
    run run input/default.ini "${SETS[@]}" --set losa.mode=losa --set output.dir=$W/res$np --stop-after 2 --json >/dev/null 2>$W/stop$np.log
    check "np=$np: stopped run fails with a message" grep -q "stopped after step 2" $W/stop$np.log
    check "np=$np: step 2 checkpoint complete, step 3 absent" test -f $W/res$np/ckpt/step_2/COMPLETE -a ! -e $W/res$np/ckpt/step_3
    res=$(run run input/default.ini "${SETS[@]}" --set losa.mode=losa --set output.dir=$W/res$np --json 2>$W/res$np.log)
    check "np=$np: resumed from step 2" grep -q "resuming after step 2" $W/res$np.log
    check "np=$np: resumed ppl == uninterrupted ($(json_get "$full" losa_ppl))" \
        test "$(json_get "$full" losa_ppl)" = "$(json_get "$res" losa_ppl)"
    check "np=$np: resumed model.h5 bit-identical" /usr/bin/python3 tests/ref/h5_same.py \
        $W/full$np/model.h5 $W/res$np/model.h5
done
# dense reference outputs from the stage's HDF5 shard instead of memory
disk=$("$LOSA" run input/default.ini "${SETS[@]}" --set losa.mode=losa --set losa.dense_ref=disk --set output.dir=$W/disk --json 2>$W/disk.log)
check "dense_ref=disk: shard written" test -f $W/disk/ckpt/dense_0_0.h5
check "dense_ref=disk: same ppl as in memory" test "$(json_get "$full" losa_ppl)" = "$(json_get "$disk" losa_ppl)"
check "1 and 2 stages give the same LoSA model" /usr/bin/python3 - $W/full1 $W/full2 <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(p + '/model.h5', 'r') for p in sys.argv[1:3])
for l in range(5):
    for w in ['wq', 'wk', 'wv', 'wo', 'w_gate', 'w_up', 'w_down']:
        k = 'layers/%d/%s' % (l, w)
        assert np.array_equal(a[k][:], b[k][:]), k
PY
finish
