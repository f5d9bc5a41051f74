#!/usr/bin/env bash
# Bad numbers on the command line and failing commands under --json.
#  - every numeric flag goes through one strict parser (cli_int / cli_double
#    in src/cli/common.c): trailing garbage, overflow, negative counts, NaN
#    and out-of-range values exit 1 with one line naming the flag; the probe
#    cases of issue 18 (defect 13) each have a case here;
#  - generate --steps above what the model's context leaves is refused with
#    the maximum named (stories260K: max_seq_len 512, the BOS token -> 511),
#    and exactly 511 is accepted (511 tokens or an earlier EOS);
#  - the edges stay accepted: --max-windows 0 (= all, as the deck's
#    eval.max_windows = 0 that jobs/deck_args.py passes on);
#  - --set values go through the deck's validation (src/core/deck.c):
#    trailing garbage, overflow and NaN are refused naming the key;
#  - a failing command with --json prints exactly one JSON object on stdout,
#    {"error": <the message of the stderr line>, "code": <exit code>}, for a
#    bad flag, a missing file, a bad number, a bad deck and an unknown
#    command, on 1 rank and on 2 ranks under mpirun (rank 0 prints once).
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/cli_errors
rm -rf "$W"; mkdir -p "$W"
S=$(store stories260K)
TXT=$D/text/tinystories/tinystories_sample.txt

bad() { # description, expected text in stderr, losa args...
    local what=$1 want=$2; shift 2
    "$LOSA" "$@" >"$W/out" 2>"$W/err"
    local rc=$?
    check "$what: exit 1 (got $rc)" test $rc = 1
    check "$what: one line naming '$want'" \
        bash -c '[ "$(wc -l <"$1")" = 1 ] && grep -qF -- "$2" "$1"' _ "$W/err" "$want"
}

# defect 13 of issue 18, one by one
bad "eval --seqlen 64x" "--seqlen: expected an integer in [2, 1048576], got '64x'" \
    eval --model "$S" --ppl "$TXT" --seqlen 64x
bad "eval --seqlen 99999999999" "--seqlen: expected an integer in [2, 1048576], got '99999999999'" \
    eval --model "$S" --ppl "$TXT" --seqlen 99999999999
bad "eval --max-windows -1" "--max-windows: expected an integer in [0," \
    eval --model "$S" --ppl "$TXT" --max-windows -1
bad "eval --limit -1" "--limit: expected an integer in [0," \
    eval --model "$S" --zeroshot rte --limit -1
bad "generate --temperature nan" "--temperature: expected a number in [0, 100], got 'nan'" \
    generate --model "$S" --temperature nan
bad "generate --temperature -1" "--temperature: expected a number in [0, 100], got '-1'" \
    generate --model "$S" --temperature -1
bad "generate --steps 100000" "--steps: 100000 exceeds the maximum 511 for this model" \
    generate --model "$S" --steps 100000
# more of the same parser, across commands
bad "eval --batch ''" "--batch: expected an integer" eval --model "$S" --ppl "$TXT" --batch=
bad "eval --batch ' 8'" "--batch: expected an integer" eval --model "$S" --ppl "$TXT" --batch " 8"
bad "generate --seed -1" "--seed: expected an integer in [0, 18446744073709551615], got '-1'" \
    generate --model "$S" --seed -1
bad "generate --seed 2^64" "--seed: expected an integer" \
    generate --model "$S" --seed 18446744073709551616
bad "generate --steps 0" "--steps: expected an integer in [1," generate --model "$S" --steps 0
bad "bench forward --batch 8x" "--batch: expected an integer" bench forward --batch 8x
bad "bench forward --seqlen over the model's max" "--seqlen: 4096 exceeds the model's max_seq_len 512" \
    bench forward --model "$S" --seqlen 4096
bad "bench train --dropout inf" "--dropout: expected a number in [0, 1), got 'inf'" \
    bench train --dropout inf
bad "bench prune --sparsity 1" "--sparsity: expected a number in [0, 1), got '1'" \
    bench prune --sparsity 1
bad "bench prune --pattern 2:4x" "--pattern: expected A:B with integers" bench prune --pattern 2:4x
bad "bench sparse --shape 4096x" "--shape: expected AxB with integers" bench sparse --shape 4096x
bad "bench sparse --reps 1e3" "--reps: expected an integer" bench sparse --reps 1e3
bad "bench sparse --format dense" "--format: 'dense' (expected bitmap" bench sparse --format dense
bad "bench sparse --flush both" "--flush: 'both' (expected read or write)" bench sparse --flush both
bad "bench pipeline --micro 0" "--micro: expected an integer in [1," bench pipeline --micro 0
bad "synth --layers 3x" "--layers: expected an integer in [1, 100000], got '3x'" \
    synth --config input/llama2-7b.json --layers 3x --out "$W/s.h5"
bad "plan --ranks 0x10" "--ranks: expected an integer in [1, 1000000], got '0x10'" \
    plan input/default.ini --ranks 0x10
bad "run --stop-after 2x" "--stop-after: expected an integer in [0, 1000], got '2x'" \
    run input/default.ini --stop-after 2x
bad "finetune --bogus (was ignored)" "unknown argument '--bogus'" finetune input/default.ini --bogus
# --set values: the deck's own validation
bad "--set data.calib_n=64x" "data.calib_n: expected an integer, got '64x'" \
    plan input/default.ini --set data.calib_n=64x
bad "--set data.calib_n=2^70" "data.calib_n: expected an integer, got '1180591620717411303424'" \
    plan input/default.ini --set data.calib_n=1180591620717411303424
bad "--set data.calib_n=-1" "data.calib_n" plan input/default.ini --set data.calib_n=-1
bad "--set prune.sparsity=0.5x" "prune.sparsity: expected a number, got '0.5x'" \
    plan input/default.ini --set prune.sparsity=0.5x
bad "--set prune.sparsity=nan" "prune.sparsity: expected a number, got 'nan'" \
    plan input/default.ini --set prune.sparsity=nan

# the edges that stay accepted
out=$("$LOSA" generate --model "$S" --steps 511 --json 2>"$W/err")
check "generate --steps 511 (the maximum) exits 0" test $? = 0
n=$(json_get "$out" tokens 2>/dev/null)
check "generate --steps 511: 1..511 tokens (got $n)" test "${n:-0}" -ge 1 -a "${n:-0}" -le 511
out=$("$LOSA" eval --model "$S" --ppl "$TXT" --seqlen 64 --max-windows 0 --batch 8 --json 2>/dev/null)
check "eval --max-windows 0 (all) exits 0" test $? = 0
all=$(json_get "$out" windows 2>/dev/null)
out=$("$LOSA" eval --model "$S" --ppl "$TXT" --seqlen 64 --max-windows 3 --json 2>/dev/null)
check "eval --max-windows 3: 3 windows, 0 = all gave more ($all)" \
    test "$(json_get "$out" windows 2>/dev/null)" = 3 -a "${all:-0}" -gt 3

# --json: one {"error", "code"} object on stdout for any failure
json_err() { # description, np, losa args... (with --json)
    local what=$1 np=$2; shift 2
    if [ "$np" = 1 ]; then "$LOSA" "$@" >"$W/jout" 2>"$W/jerr"
    else $MPIRUN -np "$np" "$LOSA" "$@" >"$W/jout" 2>"$W/jerr"; fi
    local rc=$?
    check "$what (np $np): exit non-zero" test $rc != 0
    check "$what (np $np): stdout is one JSON object {error, code = $rc}, error = the stderr line" \
        /usr/bin/python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))
err = open(sys.argv[3]).read().strip().splitlines()
assert isinstance(o, dict) and set(o) == {"error", "code"}, o
assert o["code"] == int(sys.argv[2]), (o, sys.argv[2])
assert isinstance(o["error"], str) and o["error"], o
assert any(l.endswith(o["error"]) for l in err), (o, err)' "$W/jout" $rc "$W/jerr"
}
for np in 1 2; do
    json_err "eval --bogus" $np eval --model "$S" --bogus --json
    json_err "eval of a missing model" $np eval --model "$W/none.h5" --ppl "$TXT" --json
    json_err "eval --seqlen 64x" $np eval --model "$S" --ppl "$TXT" --seqlen 64x --json
done
json_err "info of a missing file" 1 info "$W/none.h5" --json
json_err "generate --steps 100000" 1 generate --model "$S" --steps 100000 --json
json_err "plan --set data.calib_n=64x" 1 plan input/default.ini --set data.calib_n=64x --json
json_err "run of a missing deck" 1 run "$W/none.ini" --json
json_err "unknown command" 1 nosuch --json
json_err "bench nosuch" 1 bench nosuch --json
json_err "bench sparse --shape 1x" 1 bench sparse --shape 1x --json
json_err "run without a deck" 1 run --json
json_err "finetune --bogus" 1 finetune input/default.ini --bogus --json
finish
