#!/usr/bin/env bash
# Fault tolerance: `losa run` (stories260K, small settings, LoSA T = 4) on a
# 2-stage pipeline under mpirun; one rank is killed with SIGKILL in the
# middle of step 3 (LOSA_FAULT_KILL=3: the rank kills itself after the
# step's pruning) and mpirun tears the job down.  A partially written step_3 (no COMPLETE; a garbage shard is planted
# if the kill left none) must be ignored: the rerun resumes from step 2,
# overwrites step_3 and ends with the same model (bit for bit) and the same
# perplexity as an uninterrupted run.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
W=$TT/test_fault; rm -rf "$W"; mkdir -p "$W"
SETS=(--set model.store=$ST --set data.calib_n=4 --set data.calib_seqlen=64 --set losa.rmi_n=4
      --set losa.steps=4 --set losa.samples_per_step=48 --set losa.last_step_samples=24
      --set train.seqlen=64 --set train.batch=2 --set train.grad_accum=2
      --set eval.seqlen=64 --set eval.max_windows=12 --set losa.mode=losa)

full=$($MPIRUN -np 2 "$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/full --json 2>$W/full.log)
check "uninterrupted run succeeds" test -n "$full"

K=$W/killed
# the last rank SIGKILLs itself after step 3's pruning, before its training
# (deterministic, whatever the machine's load); mpirun tears the job down
LOSA_FAULT_KILL=3 $MPIRUN -np 2 -x LOSA_FAULT_KILL "$LOSA" run input/default.ini "${SETS[@]}" \
    --set output.dir=$K --json >$W/killed.out 2>$W/killed.log
rc=$?
check "killed job failed (rc $rc)" test $rc -ne 0
check "killed during step 3: step_2 complete, step_3 not" test -f $K/ckpt/step_2/COMPLETE -a ! -e $K/ckpt/step_3/COMPLETE
check "killed run wrote no model.h5" test ! -e $K/model.h5
mkdir -p $K/ckpt/step_3
[ -e $K/ckpt/step_3/stage_0.h5 ] || echo "partial garbage" >$K/ckpt/step_3/stage_0.h5
ls -la $K/ckpt/step_3 >>$W/killed.log

res=$($MPIRUN -np 2 "$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$K --json 2>$W/resumed.log)
check "rerun succeeds" test -n "$res"
check "rerun resumed after step 2" grep -q "resuming after step 2" $W/resumed.log
check "step_3 rewritten and complete" test -f $K/ckpt/step_3/COMPLETE -a -f $K/ckpt/step_4/COMPLETE
check "resumed ppl == uninterrupted ($(json_get "$full" losa_ppl))" \
    test "$(json_get "$full" losa_ppl)" = "$(json_get "$res" losa_ppl)"
check "resumed model.h5 (masks and weights) bit-identical" /usr/bin/python3 tests/ref/h5_same.py \
    $W/full/model.h5 $K/model.h5
check "resumed step metrics (ranks, measured sparsity) identical" /usr/bin/python3 tests/ref/h5_same.py \
    $W/full/run.h5 $K/run.h5 losa/steps/rank losa/steps/measured_sparsity
finish
