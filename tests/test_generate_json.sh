#!/usr/bin/env bash
# losa generate --json prints one valid JSON object for every shipped model
# that losa loads (stories260K, minillama; the llama2-tokenizer directory
# holds no weights): Python's json.load (strict UTF-8) parses it, whether the
# sampled text is plain or made of byte-fallback pieces that do not form
# UTF-8 (temperature 100 samples ids almost uniformly: of stories260K's 512
# pieces, 256 are single bytes, so invalid sequences appear and must come
# out as U+FFFD), and with a prompt argument that is not UTF-8.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
MINI=$(store minillama) || exit 1

# file -> 0 if it holds one JSON object with a string "text"; prints the
# number of U+FFFD in text
parse() {
    /usr/bin/python3 -c 'import json, sys
with open(sys.argv[1], encoding="utf-8", errors="strict") as f: o = json.load(f)
assert isinstance(o, dict) and isinstance(o["text"], str) and "error" not in o, o
print(o["text"].count("\ufffd"))' "$1"
}

for m in stories260K minillama; do
    S=$(store $m)
    for run in "greedy::--steps 40" "t100 seed 1::--steps 60 --temperature 100 --seed 1" \
               "t100 seed 2::--steps 60 --temperature 100 --seed 2" \
               "t100 seed 3, sparse on::--steps 60 --temperature 100 --seed 3 --sparse on"; do
        what=${run%%::*}
        # shellcheck disable=SC2086
        "$LOSA" generate --model "$S" ${run#*::} --json >"$TT/gen_$m.json" 2>/dev/null
        n=$(parse "$TT/gen_$m.json")
        check "$m $what: json.load parses the output ($n U+FFFD in text)" test -n "$n"
        [ "$m" = stories260K ] && [ "${what:0:4}" = t100 ] && fffd_st=$((${fffd_st:-0} + ${n:-0}))
    done
    "$LOSA" generate --model "$S" --prompt $'caf\xc3 \xff\xfe' --steps 5 --json \
        >"$TT/gen_$m.json" 2>/dev/null
    check "$m: a prompt that is not UTF-8 gives valid JSON" \
        test -n "$(parse "$TT/gen_$m.json")"
    check "$m: ... with U+FFFD for its 3 invalid bytes" /usr/bin/python3 -c '
import json, sys; p = json.load(open(sys.argv[1], encoding="utf-8"))["prompt"]
sys.exit(p != "caf\ufffd \ufffd\ufffd")' "$TT/gen_$m.json"
done
# the high-temperature stories260K runs did produce invalid bytes, so the
# repair was exercised (expected ~ tens of them in 180 near-uniform draws)
check "stories260K: the sampled byte pieces produced U+FFFD (${fffd_st:-0})" \
    test "${fffd_st:-0}" -gt 0
finish
