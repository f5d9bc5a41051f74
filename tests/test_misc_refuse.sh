#!/usr/bin/env bash
# Defects of the bad-input probe (issue 18), one block each:
#  - stale "<path>.tmp.<pid>" temporaries (files, export directories) left by
#    a killed writer are removed when the path is written again, one log line
#    each; a live pid's temporary, another path's and a malformed name stay;
#  - losa plan warns (stderr, exit 0) when a rank's peak exceeds
#    --mem-per-rank (default: physical memory), names the rank and the
#    excess, and suggests the fewest ranks that fit (checked by re-planning);
#  - space reservations: committed files keep no blocks past their end; a
#    LoSA run fits a file system barely larger than its files; synth reserves
#    the whole store first, so a full disk fails before any layer is written;
#  - losa info RUN_DIR shows the run (settings, steps, results equal to the
#    run's own JSON) and its model.h5, says what an interrupted run lacks and
#    refuses a directory that is not a run directory; every key of
#    src/core/deck_schema.c is documented in input/README.md.
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/misc_refuse
rm -rf "$W"; mkdir -p "$W"
sleeper=
trap '[ -n "$sleeper" ] && kill $sleeper 2>/dev/null; rm -rf "$W"' EXIT

cat > "$W/tiny.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 256,
 "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2}
JSON

# --- stale temporaries ------------------------------------------------------
# dead pids: one that ran and ended, one above pid_max (never a process)
dead1=$(sh -c 'echo $$')
dead2=$(( $(cat /proc/sys/kernel/pid_max) + 7 ))
sleep 300 & sleeper=$!
live=$sleeper
head -c 1000000 /dev/zero > "$W/s.h5.tmp.$dead1"
head -c 1000 /dev/zero > "$W/s.h5.tmp.$dead2"
head -c 1000 /dev/zero > "$W/s.h5.tmp.$live"
head -c 1000 /dev/zero > "$W/s.h5.tmp.12x"
head -c 1000 /dev/zero > "$W/other.h5.tmp.$dead1"
"$LOSA" synth --config "$W/tiny.json" --layers 2 --out "$W/s.h5" 2> "$W/synth.log"
check "synth into s.h5 succeeds" test -f "$W/s.h5"
check "dead pid $dead1's temporary removed" test ! -e "$W/s.h5.tmp.$dead1"
check "dead pid $dead2's temporary removed" test ! -e "$W/s.h5.tmp.$dead2"
check "live pid $live's temporary kept" test -f "$W/s.h5.tmp.$live"
check "malformed s.h5.tmp.12x kept" test -f "$W/s.h5.tmp.12x"
check "another path's temporary kept" test -f "$W/other.h5.tmp.$dead1"
check "one log line per removed temporary ($(grep -c 'stale temporary' "$W/synth.log"))" \
    test "$(grep -c "removed stale temporary $W/s.h5.tmp" "$W/synth.log")" = 2
check "the log line names the pid" grep -q "s.h5.tmp.$dead1 (its writer, pid $dead1, is gone)" "$W/synth.log"
# an export's temporary directory with files in it
mkdir -p "$W/exp.tmp.$dead1" "$W/exp.tmp.$live"
echo '{}' > "$W/exp.tmp.$dead1/config.json"; head -c 5000 /dev/zero > "$W/exp.tmp.$dead1/model.safetensors"
echo '{}' > "$W/exp.tmp.$live/config.json"
"$LOSA" export "$W/s.h5" --out "$W/exp" 2> "$W/export.log"
check "export succeeds" test -f "$W/exp/config.json"
check "dead export temporary directory removed" test ! -e "$W/exp.tmp.$dead1"
check "live export temporary directory kept" test -f "$W/exp.tmp.$live/config.json"
check "export logs the removal" grep -q "removed stale temporary $W/exp.tmp.$dead1 " "$W/export.log"
kill $sleeper 2>/dev/null; wait $sleeper 2>/dev/null; sleeper=

# --- losa plan: peak per rank against --mem-per-rank -------------------------
cat > "$W/l70.ini" <<'INI'
[model]
config = input/llama2-70b.json
[parallel]
dp = 1
INI
PY=/usr/bin/python3
"$LOSA" plan "$W/l70.ini" --ranks 4 --mem-per-rank 80G --json > "$W/p4.json" 2> "$W/p4.err"
check "70B on 4 ranks over 80G: exit 0 (a plan)" test $? = 0
p4=$(cat "$W/p4.json")
check "mem_per_rank = 80 x 2^30" test "$(json_get "$p4" mem_per_rank)" = 85899345920
check "fits = false" test "$(json_get "$p4" fits)" = False
# the warning names the worst rank and the excess, computed here from the JSON
want=$($PY -c '
import json, sys; o = json.load(open(sys.argv[1])); r = max(o["ranks"], key=lambda r: r["peak_bytes"])
print("rank %d (stage %d, layers %d-%d) needs %.3f GB at peak, %.3f GB more than the %.3f GB" % (
    r["rank"], r["stage"], r["layer0"], r["layer0"] + r["n_layers"] - 1, r["peak_bytes"] / 1e9,
    (r["peak_bytes"] - o["mem_per_rank"]) / 1e9, o["mem_per_rank"] / 1e9))' "$W/p4.json")
check "stderr warns: $want" grep -qF "plan: warning: $want" "$W/p4.err"
n=$(json_get "$p4" ranks_to_fit)
check "ranks_to_fit $n is suggested on stderr" grep -qF -- "--ranks $n) fit" "$W/p4.err"
# ranks_to_fit is the fewest: the plan on n ranks fits, on n - 1 it does not
f1=$("$LOSA" plan "$W/l70.ini" --ranks "$n" --mem-per-rank 80G --json 2> "$W/pn.err")
f0=$("$LOSA" plan "$W/l70.ini" --ranks "$((n - 1))" --mem-per-rank 80G --json 2>/dev/null)
check "on $n ranks it fits, without a warning" test "$(json_get "$f1" fits)" = True -a ! -s "$W/pn.err"
check "on $((n - 1)) ranks it does not" test "$(json_get "$f0" fits)" = False
check "peak on $n ranks <= 80 GiB < peak on $((n - 1))" $PY -c '
import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not (a <= 80 * 2**30 < b))' \
    "$(json_get "$f1" peak_bytes_per_rank)" "$(json_get "$f0" peak_bytes_per_rank)"
# text output says so too; the default is this machine's physical memory
"$LOSA" plan "$W/l70.ini" --ranks 4 > "$W/p4.txt" 2> "$W/p4d.err"
check "text: exit 0, DOES NOT FIT line" grep -q "^memory per rank: .*this machine's memory.*DOES NOT FIT" "$W/p4.txt"
check "default warning names this machine's memory" grep -q "this machine's memory; set --mem-per-rank" "$W/p4d.err"
pd=$("$LOSA" plan "$W/l70.ini" --ranks 4 --json 2>/dev/null)
check "default mem_per_rank = physical memory (os.sysconf)" test "$(json_get "$pd" mem_per_rank)" = \
    "$($PY -c 'import os; print(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))')"
pt=$("$LOSA" plan "$W/l70.ini" --ranks 4 --mem-per-rank 1.5T --json 2> "$W/pt.err")
check "1.5T = 1.5 x 2^40, fits, no warning" test "$(json_get "$pt" mem_per_rank)" = 1649267441664 \
    -a "$(json_get "$pt" fits)" = True -a ! -s "$W/pt.err"
for bad in 64x -5G 0 G 1e30; do
    err=$("$LOSA" plan "$W/l70.ini" --ranks 4 --mem-per-rank "$bad" 2>&1 >/dev/null); rc=$?
    check "--mem-per-rank $bad refused (rc $rc: $err)" test $rc != 0 -a -n "$(echo "$err" | grep -- '--mem-per-rank')"
done

# --- reservations: what is written plus a small margin --------------------------
ST=$(store stories260K) || exit 1
RUNSETS=(--set model.store=$ST --set data.calib_n=4 --set data.calib_seqlen=64 --set losa.rmi_n=4
         --set losa.steps=3 --set losa.samples_per_step=16 --set losa.last_step_samples=24
         --set train.seqlen=64 --set train.batch=2 --set train.grad_accum=2 --set losa.mode=losa
         --set eval.seqlen=64 --set eval.max_windows=8)
# after commit a file keeps no reserved blocks past its end (ext4 keeps
# fallocate'd blocks past the end unless the file is truncated)
"$LOSA" run input/default.ini "${RUNSETS[@]}" --set output.dir="$W/run" --json >"$W/run.json" 2>"$W/run.log"
check "run on $(stat -f -c %T "$W") succeeds" test -f "$W/run/model.h5"
for f in $(find "$W/run" -name '*.h5'); do
    size=$(stat -c %s "$f"); alloc=$(( $(stat -c %b "$f") * $(stat -c %B "$f") ))
    check "$(basename "$f"): $alloc bytes allocated for $size (<= size + 64 KB)" \
        test "$alloc" -le $(( size + 65536 ))
done
MNT=$W/tmpfs; mkdir -p "$MNT"
if mount -t tmpfs -o size=9000k tmpfs "$MNT" 2>/dev/null; then
    trap '[ -n "$sleeper" ] && kill $sleeper 2>/dev/null; umount "$MNT" 2>/dev/null; rm -rf "$W"' EXIT
    # the run's files take 7.8 MB: it completes on 9000 KB (a 2 MB reserve for
    # the 9 KB metrics.h5 and 3.3 MB for the 1 MB model.h5 did not)
    "$LOSA" run input/default.ini "${RUNSETS[@]}" --set output.dir="$MNT/run" >/dev/null 2>"$W/run_tmpfs.log"
    rc=$?
    check "run completes on a 9000 KB file system (rc $rc: $(tail -1 "$W/run_tmpfs.log"))" test $rc = 0
    check "... with its 3 checkpoints, model.h5 and run.h5" test -f "$MNT/run/model.h5" -a \
        -f "$MNT/run/run.h5" -a -f "$MNT/run/ckpt/step_3/COMPLETE"
    rm -rf "$MNT/run"
    # synth reserves the whole store first: 1.86 GB into 9000 KB fails before
    # any layer is generated or written, and leaves nothing
    "$LOSA" synth --config input/llama2-7b.json --layers 1 --out "$MNT/s7.h5" 2>"$W/synth_full.log"
    rc=$?
    check "synth into a full file system fails (rc $rc)" test $rc != 0
    check "one clear line: $(grep '^losa synth' "$W/synth_full.log")" \
        grep -q "^losa synth: .*s7.h5.*cannot reserve 1858.9 MB: No space left on device" "$W/synth_full.log"
    check "no layer was written before the failure" test "$(grep -c 'written' "$W/synth_full.log")" = 0
    check "nothing left on the file system" test -z "$(ls -A "$MNT")"
    "$LOSA" synth --config "$W/tiny.json" --layers 2 --out "$MNT/tiny.h5" 2>/dev/null
    check "a store that fits is written" test -f "$MNT/tiny.h5"
    umount "$MNT"
else
    echo "SKIP: cannot mount a tmpfs here (needs root): full-disk checks skipped"
fi

# --- losa info RUN_DIR ----------------------------------------------------------
run=$(cat "$W/run.json")
"$LOSA" info "$W/run" > "$W/info.txt" 2>&1
check "info on a run directory: exit 0 ($(head -1 "$W/info.txt"))" test $? = 0
check "text: 3 of 3 LoSA steps complete" grep -q "^steps  *3 of 3 LoSA steps complete" "$W/info.txt"
check "text: the model store" grep -qF "model store  $ST" "$W/info.txt"
check "text: model.h5 follows as a store" grep -qF "store        $W/run/model.h5" "$W/info.txt"
ij=$("$LOSA" info "$W/run" --json 2>/dev/null)
check "json: results.losa.ppl = the run's losa_ppl" $PY -c '
import json, sys; a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("  info", a["results"]["losa"]["ppl"], "run", b["losa_ppl"]); sys.exit(a["results"]["losa"]["ppl"] != b["losa_ppl"])' "$ij" "$run"
check "json: settings hold the --set keys, not defaults" $PY -c '
import json, sys; s = json.loads(sys.argv[1])["settings"]
sys.exit(not (s["losa.steps"] == "3" and s["train.seqlen"] == "64" and s["model.store"] == sys.argv[2]
              and "train.lr" not in s and "prune.blocksize" not in s))' "$ij" "$ST"
check "json: steps 3, complete 3, model.params" $PY -c '
import json, sys; o = json.loads(sys.argv[1])
sys.exit(not (o["steps"] == 3 and o["steps_complete"] == 3 and o["model"]["params"] > 0 and o["missing"] == ""))' "$ij"
# an interrupted run: no run.h5 / model.h5 yet, two complete steps
cp -r "$W/run" "$W/part"; rm -rf "$W/part/run.h5" "$W/part/model.h5" "$W/part/ckpt/step_3"
ij=$("$LOSA" info "$W/part" --json 2>/dev/null)
check "interrupted run: exit 0, 2 steps complete, says run.h5 is missing" $PY -c '
import json, sys; o = json.loads(sys.argv[1])
sys.exit(not (o["run_file"] is False and o["steps_complete"] == 2 and o["last_complete_step"] == 2
              and "no run.h5: the run has not finished (2 LoSA steps" in o["missing"] and o["model"] is None))' "$ij"
# a directory that is not a run directory
mkdir -p "$W/notrun"; echo x > "$W/notrun/notes.txt"
err=$("$LOSA" info "$W/notrun" 2>&1 >/dev/null); rc=$?
check "a non-run directory is refused (rc $rc): $err" test $rc != 0 -a -n "$(echo "$err" | grep 'notrun: a directory but not a run directory')"
# every deck key is documented in input/README.md (the deck errors point there)
check "input/README.md exists" test -f input/README.md
keys=$(sed -n 's/^ *{"\([a-z_]*\.[a-z_0-9]*\)", DECK_.*/\1/p' src/core/deck_schema.c)
check "deck_schema.c lists $(echo $keys | wc -w) keys" test "$(echo $keys | wc -w)" -gt 40
# a row "| `key` |" under the section's heading "## [section]"
missing=$($PY -c '
import re, sys; t = open("input/README.md").read()
for k in sys.argv[1:]:
    sec, key = k.split(".", 1)
    m = re.search(r"^## \[" + sec + r"\].*?(?=^## |\Z)", t, re.S | re.M)
    if not (m and re.search(r"^\| `" + key + r"` \|", m.group(0), re.M)): print(k)' $keys)
check "input/README.md documents every key of deck_schema.c (missing: ${missing:-none})" test -z "$missing"

finish
