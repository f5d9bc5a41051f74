#!/usr/bin/env bash
# Numerical guard: a non-finite value injected into an adapter during LoSA
# step 2 stops the run with a message naming the layer and the step; the
# step-1 checkpoint stays intact and `losa run` resumes from it with a lower
# learning rate given by --set, reaching the end.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
W=$TT/test_nan; rm -rf "$W"; mkdir -p "$W"
SETS=(--set model.store=$ST --set data.calib_n=4 --set data.calib_seqlen=64 --set losa.rmi_n=4
      --set losa.steps=3 --set losa.samples_per_step=16 --set losa.last_step_samples=24
      --set train.seqlen=64 --set train.batch=2 --set train.grad_accum=2 --set losa.mode=losa
      --set eval.seqlen=64 --set eval.max_windows=8 --set output.dir=$W/run)
LOSA_FAULT_NAN="LoSA step 2 train:1" "$LOSA" run input/default.ini "${SETS[@]}" >/dev/null 2>$W/fail.log
rc=$?
msg=$(grep "^losa run:" $W/fail.log)
echo "message: $msg"
check "run stops (exit $rc)" test $rc -ne 0
check "message names the layer" grep -q "non-finite adapter gradient in layer 0" <<<"$msg"
check "message names the step" grep -q "LoSA step 2 train: train: optimizer step 1" <<<"$msg"
check "step 1 checkpoint intact, no step 2" test -f $W/run/ckpt/step_1/COMPLETE -a ! -e $W/run/ckpt/step_2
sum1=$(cat $W/run/ckpt/step_1/*.h5 | md5sum)
out=$("$LOSA" run input/default.ini "${SETS[@]}" --set train.lr=1e-4 --json 2>$W/resume.log)
check "resumes from step 1 with a lower learning rate" grep -q "resuming after step 1" $W/resume.log
check "resumed run finishes with a finite ppl" /usr/bin/python3 -c "import json,math,sys; d=json.loads(sys.argv[1]); assert math.isfinite(d['losa_ppl'])" "$out"
check "the step-1 checkpoint files were not modified" test "$(cat $W/run/ckpt/step_1/*.h5 | md5sum)" = "$sum1"
finish
