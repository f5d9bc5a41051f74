#!/usr/bin/env bash
# losa generate --dtype bf16 (maps and the head in bf16 rows, decoded with the
# bf16-weight matvec): on every shipped model the greedy text of the first
# 10 tokens equals the fp32 one (bf16 moves each weight by at most 2^-8
# relative; the logits' top-1 margins on these models' first tokens are far
# larger, so greedy choices agree: checked, not assumed, here; the exact
# logit equality to fp32 decode on the rounded weights is in
# test_sparse_decode), also through a 2-stage pipeline; the JSON says
# "dtype": "bf16"; --sparse on with bf16 is refused.
set -u
source "$(dirname "$0")/lib.sh"

text() { /usr/bin/python3 -c 'import json, sys; o = json.load(open(sys.argv[1]))
assert o.get("dtype") == sys.argv[2], o
print(o["text"])' "$1" "$2"; }

for m in stories260K minillama; do
    S=$(store $m) || exit 1
    "$LOSA" generate --model "$S" --steps 10 --json >"$TT/genb_$m.fp32.json" 2>/dev/null
    "$LOSA" generate --model "$S" --steps 10 --dtype bf16 --json >"$TT/genb_$m.bf16.json" 2>/dev/null
    $MPIRUN -np 2 "$LOSA" generate --model "$S" --steps 10 --dtype bf16 --json \
        >"$TT/genb_$m.bf16np2.json" 2>/dev/null
    t32=$(text "$TT/genb_$m.fp32.json" fp32)
    t16=$(text "$TT/genb_$m.bf16.json" bf16)
    t16p=$(text "$TT/genb_$m.bf16np2.json" bf16)
    check "$m: fp32 greedy run gives text" test -n "$t32"
    check "$m: bf16 greedy text of 10 tokens equals fp32 ('$t16')" test "$t16" = "$t32"
    check "$m: bf16 on 2 pipeline stages equals 1 stage" test "$t16p" = "$t16"
    if "$LOSA" generate --model "$S" --steps 2 --dtype bf16 --sparse on >/dev/null 2>&1; then
        check "$m: --dtype bf16 --sparse on is refused" false
    else
        check "$m: --dtype bf16 --sparse on is refused" true
    fi
done
finish
