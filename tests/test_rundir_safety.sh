#!/usr/bin/env bash
# Run directories and output stores are safe from the user's mistakes
# (stories260K, LoSA T = 3 at tiny settings, about a second per run):
#  - lock: while another process holds output.dir/.lock (or <store>.lock),
#    losa run / prune / finetune / sparsify fail at once with one line naming
#    the holder's host and pid; two real `losa run` on one directory: the
#    second fails, the first ends normally and removes its lock; a lock file
#    left by a killed holder does not block;
#  - resume: a stopped run resumed with another prune.sparsity, and a
#    finished run rerun with other settings, are refused naming the key and
#    both values, the checkpoints and results unchanged (bytes); the same
#    settings spelled differently (path of model.store, trailing slash) pass;
#    a different rank layout is refused as "layout changed";
#  - eval.seqlen above the model's max_seq_len and an eval text shorter than
#    one window are refused before any work (no checkpoint written);
#  - output = input: prune / finetune into the input store (through a
#    symlink or another spelling), run into a foreign non-empty directory or
#    onto its own model.store: refused, the files unchanged;
#  - a damaged latest checkpoint (truncated shard; missing metrics file) is
#    set aside as step_<t>.damaged.1 with a warning and the run resumes from
#    the step before, ending bit-identical to an uninterrupted run;
#  - timings after a resume cover both invocations (run.h5 /run/invocations
#    = 2, /losa/seconds >= the sum of every step's phase times).
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
W=$TT/test_rundir_safety; rm -rf "$W"; mkdir -p "$W"
SETS=(--set model.store=$ST --set data.calib_n=4 --set data.calib_seqlen=64 --set losa.rmi_n=4
      --set losa.steps=3 --set losa.samples_per_step=16 --set losa.last_step_samples=24
      --set train.seqlen=64 --set train.batch=2 --set train.grad_accum=2 --set losa.mode=losa
      --set eval.seqlen=64 --set eval.max_windows=4)
run() { "$LOSA" run input/default.ini "${SETS[@]}" "$@"; }
sums() { find "$@" -type f ! -name .lock | sort | xargs md5sum | md5sum; }
one_line() { test "$(grep -c "^losa " "$1")" = 1; }

# reference: uninterrupted
full=$(run --set output.dir=$W/full --json 2>$W/full.log)
check "uninterrupted run" test -n "$full"
check "its lock is gone after the run" test ! -e $W/full/.lock

# ---- 1. lock
hold() { # path note: hold an flock on path in fd 9 (as losa does), note inside
    exec 9>"$1"; flock -n 9 && echo "$2" >&9
}
hold $W/full/.lock "host farhost pid 4242"
run --set output.dir=$W/full >/dev/null 2>$W/lock_run.log; rc=$?
check "run on a locked output.dir fails (rc $rc)" test $rc -ne 0
check "  one line naming the holder" grep -q "^losa run: output.dir $W/full is in use by another losa command (host farhost pid 4242" $W/lock_run.log
"$LOSA" sparsify $W/full >/dev/null 2>$W/lock_sp.log; rc=$?
check "sparsify of a locked run directory fails (rc $rc), naming the holder" \
    grep -q "^losa sparsify: run directory $W/full is in use .*pid 4242" $W/lock_sp.log
exec 9>&-
cp $ST $W/dense.h5
P=(--set model.store=$W/dense.h5 --set data.calib_n=4 --set data.calib_seqlen=64
   --set data.eval_text= --set data.train=$D/text/alpaca/alpaca_en_demo.json --set train.seqlen=64
   --set train.batch=2 --set train.grad_accum=1 --set train.steps=2)
hold $W/out.h5.lock "host farhost pid 4343"
"$LOSA" prune input/default.ini "${P[@]}" --set output.store=$W/out.h5 >/dev/null 2>$W/lock_pr.log; rc=$?
check "prune into a locked store fails (rc $rc), naming the holder" \
    grep -q "^losa prune: output store $W/out.h5 is in use .*host farhost pid 4343" $W/lock_pr.log
"$LOSA" finetune input/default.ini "${P[@]}" --set output.store=$W/out.h5 >/dev/null 2>$W/lock_ft.log; rc=$?
check "finetune into a locked store fails (rc $rc), naming the holder" \
    grep -q "^losa finetune: output store $W/out.h5 is in use .*pid 4343" $W/lock_ft.log
check "  nothing written" test ! -e $W/out.h5
exec 9>&-
"$LOSA" prune input/default.ini "${P[@]}" --set output.store=$W/out.h5 >/dev/null 2>$W/pr_ok.log
check "prune after the holder ended writes the store, removes its lock" test -f $W/out.h5 -a ! -e $W/out.h5.lock
# two real runs on one directory: the second starts while the first holds the lock
LONG=(--set losa.samples_per_step=80 --set losa.last_step_samples=160)   # a few seconds
"$LOSA" run input/default.ini "${SETS[@]}" "${LONG[@]}" --set output.dir=$W/race --json >$W/race1.out 2>$W/race1.log &
pid=$!
for i in $(seq 300); do [ -s $W/race/.lock ] && break; sleep 0.1; done
run "${LONG[@]}" --set output.dir=$W/race >/dev/null 2>$W/race2.log; rc2=$?
wait $pid; rc1=$?
check "race: the second run fails at once (rc $rc2) naming the first's pid $pid" \
    grep -q "^losa run: output.dir $W/race is in use by another losa command (host .* pid $pid;" $W/race2.log
check "race: the first run ends normally (rc $rc1), its lock removed" test $rc1 = 0 -a ! -e $W/race/.lock
# a lock file left by a holder that died (no flock held) does not block
echo "host $(hostname) pid 999999" >$W/full/.lock
out=$(run --set output.dir=$W/full --json 2>$W/stale.log)
check "a stale lock file does not block (same ppl as before)" \
    test "$(json_get "$out" losa_ppl)" = "$(json_get "$full" losa_ppl)"

# ---- 2. deck changes on resume / rerun
run --set output.dir=$W/res --stop-after 2 >/dev/null 2>$W/stop.log
before=$(sums $W/res)
run --set output.dir=$W/res --set prune.sparsity=0.5 >/dev/null 2>$W/chg.log; rc=$?
check "resume with another prune.sparsity refused (rc $rc)" test $rc -ne 0
check "  one line naming the key and both values" \
    grep -q "^losa run: output.dir $W/res: the run was made with other settings: prune.sparsity 0.7 (run) -> 0.5 (now)" $W/chg.log
check "  one line only" one_line $W/chg.log
check "  checkpoints unchanged" test "$(sums $W/res)" = "$before"
run --set output.dir=$W/res --set parallel.pp=1 --set losa.steps=4 --set eval.seqlen=32 >/dev/null 2>$W/chg3.log
check "  every changed key named" grep -q "losa.steps 3 (run) -> 4 (now), eval.seqlen 64 (run) -> 32 (now)" $W/chg3.log
before=$(sums $W/full)
run --set output.dir=$W/full --set train.lr=1e-4 >/dev/null 2>$W/fin.log; rc=$?
check "finished run rerun with another train.lr refused (rc $rc): only a relabel" \
    grep -q "train.lr 2e-4 (run) -> 1e-4 (now); the run is finished" $W/fin.log
check "  run.h5, model.h5, checkpoints unchanged" test "$(sums $W/full)" = "$before"
rel=$(realpath --relative-to=. "$ST")
out=$("$LOSA" run input/default.ini "${SETS[@]}" --set model.store=$rel --set output.dir=$W/full/ --json 2>$W/same.log)
check "same settings spelled differently (model.store $rel, output.dir with /) pass" \
    test "$(json_get "$out" losa_ppl)" = "$(json_get "$full" losa_ppl)"
$MPIRUN -np 2 "$LOSA" run input/default.ini "${SETS[@]}" --set output.dir=$W/full >/dev/null 2>$W/layout.log; rc=$?
check "other layout refused (rc $rc): layout changed, both layouts named" \
    grep -q "^losa run: output.dir $W/full: layout changed: 2 ranks now (pp 2 x dp 1), 1 in the run (pp 1 x dp 1)" $W/layout.log

# ---- 3. evaluation settings checked before any work
run --set output.dir=$W/ev1 --set eval.seqlen=4096 >/dev/null 2>$W/ev1.log; rc=$?
check "eval.seqlen above max_seq_len refused (rc $rc)" grep -q "^losa run: --set eval.seqlen: 4096 tokens exceed the model's max_seq_len 512" $W/ev1.log
check "  before any work (no run directory)" test ! -e $W/ev1
head -c 40 $D/text/wikitext2/wiki.test.hf_join.txt >$W/short.txt
run --set output.dir=$W/ev2 --set data.eval_text=$W/short.txt >/dev/null 2>$W/ev2.log; rc=$?
check "eval text shorter than one window refused (rc $rc)" \
    grep -q "^losa run: --set data.eval_text: $W/short.txt: [0-9]* tokens, fewer than one window of eval.seqlen 64" $W/ev2.log
check "  one line only" one_line $W/ev2.log
check "  before any work (no checkpoint)" test ! -e $W/ev2/ckpt

# ---- 4. output equal to input
ln -s $W/dense.h5 $W/dense_link.h5
dsum=$(md5sum <$W/dense.h5)
"$LOSA" prune input/default.ini "${P[@]}" --set output.store=$W/dense_link.h5 >/dev/null 2>$W/same_pr.log; rc=$?
check "prune onto its input through a symlink refused (rc $rc)" \
    grep -q "^losa prune: --set output.store: $W/dense_link.h5 is the input model.store $W/dense.h5" $W/same_pr.log
"$LOSA" prune input/default.ini "${P[@]}" --set output.store=$W/../test_rundir_safety/dense.h5 >/dev/null 2>$W/same_pr2.log; rc=$?
check "prune onto its input spelled differently refused (rc $rc)" grep -q "is the input model.store" $W/same_pr2.log
"$LOSA" finetune input/default.ini "${P[@]}" --set output.store=$W/dense_link.h5 >/dev/null 2>$W/same_ft.log; rc=$?
check "finetune onto its input refused (rc $rc)" grep -q "^losa finetune: .*output.store: $W/dense_link.h5 is the input" $W/same_ft.log
check "  the input store unchanged" test "$(md5sum <$W/dense.h5)" = "$dsum"
mkdir -p $W/user && cp $W/dense.h5 $W/user/model.h5
run --set output.dir=$W/user >/dev/null 2>$W/user.log; rc=$?
check "run into a directory holding a user's model.h5 refused (rc $rc)" \
    grep -q "^losa run: .*output.dir $W/user holds 'model.h5' but is not a losa run directory" $W/user.log
check "  the user's file unchanged, nothing added" test "$(md5sum <$W/user/model.h5)" = "$dsum" -a "$(ls -A $W/user)" = model.h5
mkdir -p $W/job && echo x >$W/job/overrides.txt && echo x >$W/job/job.txt
run --set output.dir=$W/job >/dev/null 2>$W/job.log
check "run into a directory holding only the job script's files works" test -f $W/job/model.h5
fsum=$(md5sum <$W/full/model.h5)
run --set output.dir=$W/full --set model.store=$W/full/model.h5 >/dev/null 2>$W/own.log; rc=$?
check "run whose model.store is its own output refused (rc $rc)" grep -q "is the run's own output" $W/own.log
check "  model.h5 unchanged" test "$(md5sum <$W/full/model.h5)" = "$fsum"

# ---- 6. damaged latest checkpoint
for kind in truncated nometrics; do
    R=$W/dmg_$kind
    run --set output.dir=$R --stop-after 2 >/dev/null 2>$W/dmg_$kind.stop.log
    f=$R/ckpt/step_2/stage_0.h5
    if [ $kind = truncated ]; then truncate -s $(($(stat -c %s $f) / 2)) $f; else rm $R/ckpt/step_2/metrics.h5; fi
    out=$(run --set output.dir=$R --json 2>$W/dmg_$kind.log)
    check "$kind step_2: rerun succeeds" test -n "$out"
    check "  warning names the damage and where it is kept" \
        grep -q "^warning: checkpoint $R/ckpt/step_2 is damaged (.*): kept as $R/ckpt/step_2.damaged.1" $W/dmg_$kind.log
    check "  resumed after step 1" grep -q "resuming after step 1" $W/dmg_$kind.log
    check "  damaged checkpoint kept, step 2 rewritten" test -d $R/ckpt/step_2.damaged.1 -a -f $R/ckpt/step_2/COMPLETE
    check "  ppl == uninterrupted" test "$(json_get "$out" losa_ppl)" = "$(json_get "$full" losa_ppl)"
    check "  model.h5 bit-identical to uninterrupted" /usr/bin/python3 tests/ref/h5_same.py $W/full/model.h5 $R/model.h5
done

# ---- 10. timings over invocations
run --set output.dir=$W/res --json >/dev/null 2>$W/res.log
check "resumed run: timings cover both invocations" /usr/bin/python3 - $W/res/run.h5 <<'PY'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], 'r')
inv = f['run'].attrs['invocations']
assert inv == 2, inv
steps = f['losa/steps/seconds'][:]          # (T, 4): phases of every step
el = f['losa/steps/elapsed'][:]             # (T, 2): cumulative LoSA / run seconds
losa, tot, last = f['losa/seconds'][0], f['final/seconds'][0], f['final/invocation_seconds'][0]
assert (np.diff(el[:, 0]) > 0).all() and (np.diff(el[:, 1]) > 0).all(), el
assert losa >= steps.sum() and losa >= el[-1, 0], (losa, steps.sum(), el)
assert tot >= losa and tot > last and tot >= el[-1, 1], (tot, losa, last, el)
print('invocations', inv, 'losa', losa, 'steps', steps.sum(), 'run', tot, 'last invocation', last)
PY
finish
