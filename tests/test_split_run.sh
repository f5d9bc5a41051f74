#!/usr/bin/env bash
# The stage split of `losa run` is the planner's (losa_stage_split), recorded
# in the run files and kept on resume.  minillama (6 layers, V 32000), 2
# pipeline stages, training micro-batches of 1 x 128 tokens:
#  - `losa plan --json` stage layer counts == the run's /run/stage_layers ==
#    the layers held by the run's stage shards == the split hand-derived from
#    the plan's head cost h (layout.head_cost_layers, in layers): 4+2 costs
#    (4, 2 + h), 5+1 (5, 1 + h), so 4+2 iff h < 3;
#  - a run stopped after step 1 records the split in ckpt/state.h5; a
#    resume against a state whose recorded split was changed (the other one) is
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
want=$(/usr/bin/python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["layout"]["head_cost_layers"]
print("4,2" if 2 + h < 5 else "5,1")' $W/plan.json)
other=$([ "$want" = "4,2" ] && echo "5,1" || echo "4,2")
check "plan: 2 stages of minillama at 1 x 128 split $want by the head cost (got $plan)" test "$plan" = "$want"

# a measured head cost (parallel.head_cost_layers h, in layers) moves the
# split in plan and run alike (stage costs a + e, b + h; the embedding's e
# well under half a layer): h 3.5 gives 4+2 (4, 5.5) vs 5+1 (5, 4.5), so
# 5+1; h 1 gives 3+3 (3, 4) vs 4+2 (4, 3) vs 2+4 (2, 5), so 3+3
hc=$([ "$want" = "4,2" ] && echo 3.5 || echo 1)
moved=$([ "$want" = "4,2" ] && echo 5,1 || echo 3,3)
"$LOSA" plan input/default.ini "${SETS[@]}" --set parallel.head_cost_layers=$hc --ranks 2 --json \
    >$W/plan_h.json 2>$W/plan_h.log
planh=$(/usr/bin/python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))
print(",".join(str(r["n_layers"]) for r in p["ranks"]))' $W/plan_h.json)
check "plan: layout.head_cost_layers is the deck's $hc" /usr/bin/python3 -c 'import json,sys
h=json.load(open(sys.argv[1]))["layout"]["head_cost_layers"]; sys.exit(abs(h-float(sys.argv[2]))>1e-9)' \
    $W/plan_h.json $hc
check "plan: head cost $hc splits $moved (got $planh)" test "$planh" = "$moved"
$MPIRUN -np 2 "$LOSA" run input/default.ini "${SETS[@]}" --set parallel.head_cost_layers=$hc \
    --set output.dir=$W/h --stop-after 1 >/dev/null 2>$W/h.log
recs() { /usr/bin/python3 -c 'import h5py,sys
print(",".join(str(int(x)) for x in h5py.File(sys.argv[1],"r")["run/stage_layers"][:]))' "$1"; }
check "run with head cost $hc records the plan's split $moved ($(recs $W/h/ckpt/state.h5))" \
    test "$(recs $W/h/ckpt/state.h5)" = "$moved"
# resuming it without the key would split $want: refused, naming the split
$MPIRUN -np 2 "$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/h >/dev/null 2>$W/h2.log
check "resume with another head cost is refused" grep -q "stage split changed: layers per stage $want now, $moved in the run" $W/h2.log

run() { $MPIRUN -np 2 "$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/r "$@"; }
run --stop-after 1 >/dev/null 2>$W/stop.log
rec() { /usr/bin/python3 -c 'import h5py,sys
print(",".join(str(int(x)) for x in h5py.File(sys.argv[1],"r")["run/stage_layers"][:]))' "$1"; }
check "stopped run: ckpt/state.h5 records the plan's split ($(rec $W/r/ckpt/state.h5))" \
    test "$(rec $W/r/ckpt/state.h5)" = "$plan"

# a changed record (as a run made with another split would have) is refused
cp $W/r/ckpt/state.h5 $W/state.keep
/usr/bin/python3 -c 'import h5py,sys
f=h5py.File(sys.argv[1],"r+"); f["run/stage_layers"][:]=[int(x) for x in sys.argv[2].split(",")]' $W/r/ckpt/state.h5 $other
run >/dev/null 2>$W/bad.log
check "resume with another recorded split is refused" grep -q "stage split changed: layers per stage $plan now, $other in the run" $W/bad.log
cp $W/state.keep $W/r/ckpt/state.h5

out=$(run --json 2>$W/resume.log)
check "resume completes" test -n "$out"
check "run.h5 records the same split ($(rec $W/r/run.h5))" test "$(rec $W/r/run.h5)" = "$plan"
check "the stage shards hold the split's layers ($plan)" /usr/bin/python3 - "$W/r" "$plan" <<'PY'
import sys, h5py
f = h5py.File(sys.argv[1] + '/run.h5', 'r')
n = [len(f['shards/stage_%d/layers' % s]) for s in (0, 1)]
print('shard layers', n)
sys.exit(0 if n == [int(x) for x in sys.argv[2].split(',')] else 1)
PY
finish
