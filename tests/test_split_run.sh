#!/usr/bin/env bash
# The stage split of `losa run` is the planner's (losa_stage_split), recorded
# in the run files and kept on resume.  minillama (6 layers, V 32000), 2
# pipeline stages, training micro-batches of 1 x 128 tokens:
#  - `losa plan --json` stage layer counts == the run's /run/stage_layers ==
#    the layers held by the run's stage shards; at this micro-batch the cost
#    model charges the head 2-3 layers (tests/test_split.c), so 4+2, where
#    the split by parameter count of earlier versions was 5+1;
#  - a run stopped after step 1 records the split in ckpt/state.h5; a
#    resume against a state whose recorded split was changed (5+1) is
#    refused naming the split; with the true record it completes and
#    run.h5 records the same split.
set -u
source "$(dirname "$0")/lib.sh"
MINI=$(store minillama) || exit 1
W=$TT/test_split_run; rm -rf "$W"; mkdir -p "$W"
SETS=(--set model.store=$MINI --set data.calib_n=4 --set data.calib_seqlen=64 --set losa.rmi_n=4
      --set losa.steps=2 --set losa.samples_per_step=4 --set losa.last_step_samples=4
      --set train.seqlen=128 --set train.batch=1 --set train.grad_accum=2
      --set eval.seqlen=64 --set eval.max_windows=4 --set prune.method=wanda
      --set losa.mode=losa --set parallel.pp=2 --set parallel.dp=1)

"$LOSA" plan input/default.ini "${SETS[@]}" --ranks 2 --json >$W/plan.json 2>$W/plan.log
plan=$(/usr/bin/python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))
print(",".join(str(r["n_layers"]) for r in p["ranks"]))' $W/plan.json)
check "plan: 2 stages of minillama at 1 x 128 split 4+2 (got $plan)" test "$plan" = "4,2"

run() { $MPIRUN -np 2 "$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/r "$@"; }
run --stop-after 1 >/dev/null 2>$W/stop.log
rec() { /usr/bin/python3 -c 'import h5py,sys
print(",".join(str(int(x)) for x in h5py.File(sys.argv[1],"r")["run/stage_layers"][:]))' "$1"; }
check "stopped run: ckpt/state.h5 records the plan's split ($(rec $W/r/ckpt/state.h5))" \
    test "$(rec $W/r/ckpt/state.h5)" = "$plan"

# a changed record (as a run made with another split would have) is refused
cp $W/r/ckpt/state.h5 $W/state.keep
/usr/bin/python3 -c 'import h5py,sys
f=h5py.File(sys.argv[1],"r+"); f["run/stage_layers"][:]=[5,1]' $W/r/ckpt/state.h5
run >/dev/null 2>$W/bad.log
check "resume with another recorded split is refused" grep -q "stage split changed: layers per stage 4,2 now, 5,1 in the run" $W/bad.log
cp $W/state.keep $W/r/ckpt/state.h5

out=$(run --json 2>$W/resume.log)
check "resume completes" test -n "$out"
check "run.h5 records the same split ($(rec $W/r/run.h5))" test "$(rec $W/r/run.h5)" = "$plan"
check "the stage shards hold 4 and 2 layers" /usr/bin/python3 - "$W/r" <<'PY'
import sys, h5py
f = h5py.File(sys.argv[1] + '/run.h5', 'r')
n = [len(f['shards/stage_%d/layers' % s]) for s in (0, 1)]
print('shard layers', n)
sys.exit(0 if n == [4, 2] else 1)
PY
finish
