#!/usr/bin/env bash
# Progress in batch logs: with stderr redirected to a file (a SLURM
# slurm-<id>.out, a `make run > log 2>&1`) every progress report is a whole
# newline-terminated line (the start at 0 %, at most one per 10 s, the end
# at 100 %) and the log holds no carriage return; on a terminal the single
# redrawn '\r' line stays (forced here with LOSA_PROGRESS=tty, since the
# test has no terminal).
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
OUT=$TT/progress
rm -rf "$OUT"; mkdir -p "$OUT"
TEXT=$D/text/tinystories/tinystories_sample.txt
TRAIN=$D/text/alpaca/alpaca_en_demo.json
sed -e "s|@STORE@|$ST|" -e "s|@TEXT@|$TEXT|g" -e "s|@TRAIN@|$TRAIN|" tests/slurm/stories260K.ini.in > "$OUT/deck.ini"

# a LoSA run (training and perplexity progress) on 1 and 2 ranks, stderr to a file
"$LOSA" run "$OUT/deck.ini" --set losa.mode=losa --set output.dir="$OUT/run1" > "$OUT/run1.out" 2> "$OUT/run1.log"
check "losa run (1 rank) succeeded" test $? = 0
$MPIRUN -np 2 "$LOSA" run "$OUT/deck.ini" --set losa.mode=losa --set parallel.dp=2 \
    --set output.dir="$OUT/run2" > "$OUT/run2.out" 2> "$OUT/run2.log"
check "losa run (2 ranks) succeeded" test $? = 0
for f in run1 run2; do
    check "$f: no carriage return in the log" bash -c "! grep -q \$'\\r' '$OUT/$f.log' '$OUT/$f.out'"
    check "$f: a 0 % line of the training progress" grep -q '^LoSA step 1 train 0/[0-9]* (0%)' "$OUT/$f.log"
    check "$f: a 100 % line of the training progress" grep -q '^LoSA step 2 train \([0-9]*\)/\1 (100%)' "$OUT/$f.log"
    check "$f: a 100 % line of the perplexity progress" grep -q '^ppl windows \([0-9]*\)/\1 (100%)' "$OUT/$f.log"
done
# eval with its stderr to a file, and the same forced onto the terminal path
"$LOSA" eval --model "$ST" --ppl "$TEXT" --seqlen 64 --max-windows 8 2> "$OUT/eval.log" >/dev/null
check "eval: no carriage return, whole lines" bash -c "! grep -q \$'\\r' '$OUT/eval.log' && grep -q '^ppl windows 8/8 (100%)' '$OUT/eval.log'"
LOSA_PROGRESS=tty "$LOSA" eval --model "$ST" --ppl "$TEXT" --seqlen 64 --max-windows 8 2> "$OUT/tty.log" >/dev/null
check "eval with LOSA_PROGRESS=tty: the redrawn '\\r' line" grep -q $'\r''ppl windows 8/8' "$OUT/tty.log"
finish
