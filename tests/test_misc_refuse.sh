#!/usr/bin/env bash
# Defects of the bad-input probe (issue 18), one block each:
#  - stale "<path>.tmp.<pid>" temporaries (files, export directories) left by
#    a killed writer are removed when the path is written again, one log line
#    each; a live pid's temporary, another path's and a malformed name stay.
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

finish
