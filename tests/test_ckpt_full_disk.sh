#!/usr/bin/env bash
# Failed checkpoint writes lose nothing: a LoSA run whose run directory is on
# a small tmpfs fills it up while writing a later step's checkpoint; the run
# stops with one clear error, the last complete checkpoint is untouched (same
# bytes) and no temporary file is left; after the file system is enlarged
# (remount) the run resumes from that checkpoint and finishes.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
MNT=$TT/ckpt_tmpfs; mkdir -p "$MNT"
umount "$MNT" 2>/dev/null
if ! mount -t tmpfs -o size=5000k tmpfs "$MNT" 2>/dev/null; then
    echo "SKIP: cannot mount a tmpfs here (needs root)"; exit 0
fi
trap 'umount "$MNT" 2>/dev/null' EXIT
SETS=(--set model.store=$ST --set data.calib_n=4 --set data.calib_seqlen=64 --set losa.rmi_n=4
      --set losa.steps=3 --set losa.samples_per_step=16 --set losa.last_step_samples=24
      --set train.seqlen=64 --set train.batch=2 --set train.grad_accum=2 --set losa.mode=losa
      --set eval.seqlen=64 --set eval.max_windows=8 --set output.dir=$MNT/run)
"$LOSA" run input/default.ini "${SETS[@]}" >/dev/null 2>$TT/ckpt_full.log
rc=$?
msg=$(grep "^losa run:" $TT/ckpt_full.log)
echo "message: $msg"
check "run fails on the full file system (exit $rc)" test $rc -ne 0
check "one-line error naming the file" grep -qE "run/ckpt/step_[0-9]+/.*\.h5" <<<"$msg"
last=$(ls -d $MNT/run/ckpt/step_*/COMPLETE 2>/dev/null | sort -V | tail -1)
check "an earlier checkpoint is complete ($last)" test -n "$last"
check "no temporary files left" test -z "$(find $MNT -name '*.tmp.*')"
d=$(dirname "$last")
sum=$(cat $d/*.h5 | md5sum)
mount -o remount,size=64m "$MNT"
out=$("$LOSA" run input/default.ini "${SETS[@]}" --json 2>$TT/ckpt_resume.log)
check "resumes from $(basename $d)" grep -q "resuming after $(basename $d | tr _ ' ')" $TT/ckpt_resume.log
check "resumed run finishes" /usr/bin/python3 -c "import json,math,sys; assert math.isfinite(json.loads(sys.argv[1])['losa_ppl'])" "$out"
check "checkpoint bytes unchanged by the failure and the resume" test "$(cat $d/*.h5 | md5sum)" = "$sum"
finish
