#!/usr/bin/env bash
# The foundation's must-shows on the real models:
#  - stories260K greedy decoding from BOS reproduces the known story;
#  - minillama WikiText-2 test perplexity (S = 256, whole text) agrees with the
#    PyTorch value in REFERENCE.md within 0.5%;
#  - perplexity is bit-identical for 1, 2 and 4 pipeline stages.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
MINI=$(store minillama) || exit 1
WIKI=$D/text/wikitext2/wiki.test.hf_join.txt

out=$("$LOSA" generate --model "$ST" --steps 60 --json 2>/dev/null)
text=$(json_get "$out" text)
want="Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
check "stories260K greedy story: '${text:0:60}...'" test "${text:0:${#want}}" = "$want"
# the same through a 3-stage pipeline
out3=$($MPIRUN -np 3 "$LOSA" generate --model "$ST" --steps 60 --json 2>/dev/null)
check "stories260K greedy story identical with 3 stages" test "$(json_get "$out3" text)" = "$text"

ref=$(sed -n 's/^ppl_wikitext2_test_s256: *//p' "$D/models/minillama/REFERENCE.md")
out=$($MPIRUN -np 2 "$LOSA" eval --model "$MINI" --ppl "$WIKI" --seqlen 256 --json 2>/dev/null)
ppl=$(json_get "$out" ppl)
echo "minillama wikitext2 ppl: $ppl (reference $ref), tokens $(json_get "$out" tokens)"
check "minillama ppl within 0.5% of the PyTorch reference" \
    /usr/bin/python3 -c "import sys; sys.exit(abs($ppl/$ref-1) > 0.005)"
check "tokens with BOS = 341469" test "$(json_get "$out" tokens)" = 341469

p1=$("$LOSA" eval --model "$MINI" --ppl "$WIKI" --seqlen 256 --max-windows 24 --json 2>/dev/null)
for np in 2 4; do
    pn=$($MPIRUN -np $np "$LOSA" eval --model "$MINI" --ppl "$WIKI" --seqlen 256 --max-windows 24 --json 2>/dev/null)
    check "ppl with $np stages bit-identical to 1 ($(json_get "$p1" ppl))" \
        test "$(json_get "$p1" ppl)" = "$(json_get "$pn" ppl)"
done
# errors are agreed and printed once
err=$($MPIRUN -np 2 "$LOSA" eval --model "$TT/nope.h5" --ppl "$WIKI" 2>&1 >/dev/null)
check "missing store: one line naming the file" \
    test "$(echo "$err" | grep -c 'nope.h5')" = 1
finish
