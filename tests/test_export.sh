#!/usr/bin/env bash
# losa export: store -> Hugging Face directory -> losa import, on minillama
# (HF origin, untied, 32000-piece merge tokenizer) and stories260K (llama2.c
# origin, tied, score tokenizer whose merges are derived at export):
#  1. f32: safetensors/config.json read independently (numpy) equal the store
#     bit for bit; re-imported store identical in every tensor; WikiText-2
#     perplexity identical;
#  2. bf16: every value is torch's round-to-nearest-even of the fp32 one, the
#     zero masks are identical, perplexity within 1% of fp32;
#  3. tokenizer.json: minillama's equals the original (vocab, merges, ...);
#     stories260K's derived merges encode like llama2.c's score BPE (naive
#     python BPEs on 300+ texts), and the WikiText-2 token count through the
#     re-imported store is the same (815070 with BOS; 341469 for minillama);
#  4. pruned models (a `losa run` prune directory, a 50% magnitude-zeroed
#     minillama): export bf16 -> import keeps every zero of every matrix;
#  5. errors (missing store, bad parent directory, non-empty --out, a
#     failure half-way through writing) leave nothing behind.
set -u
source "$(dirname "$0")/lib.sh"
MINI=$(store minillama) || exit 1
ST=$(store stories260K) || exit 1
WIKI=$D/text/wikitext2/wiki.test.hf_join.txt
PY=/usr/bin/python3
REF=tests/ref/export_check.py
W=$TT/test_export; rm -rf "$W"; mkdir -p "$W"

ppl_of() { "$LOSA" eval --model "$1" --ppl "$WIKI" --max-windows 20 --json 2>/dev/null; }
within() { $PY -c "import sys; sys.exit(not abs($1/$2-1) <= $3)"; }
no_leftovers() { # dir: no *.tmp.* entries
    [ -z "$(find "$1" -maxdepth 1 -name '*.tmp.*' -print -quit)" ]
}

for m in minillama stories260K; do
    src=$MINI; ntok=341469
    [ $m = stories260K ] && { src=$ST; ntok=815070; }
    base=$(ppl_of "$src")
    for dt in f32 bf16; do
        out=$("$LOSA" export "$src" --out "$W/$m.$dt" --dtype $dt --json 2>$W/$m.$dt.log)
        check "$m $dt: export succeeds ($(cat $W/$m.$dt.log))" test -n "$out"
        check "$m $dt: four files, nothing else" \
            test "$(ls "$W/$m.$dt" | tr '\n' ' ')" = "config.json model.safetensors tokenizer.json tokenizer_config.json "
        check "$m $dt: safetensors + config.json equal the store (independent reader)" \
            $PY $REF st "$src" "$W/$m.$dt" $dt
        check "$m $dt: losa import reads it back" \
            "$LOSA" import "$W/$m.$dt" --out "$W/$m.$dt.h5" --json
        p=$(ppl_of "$W/$m.$dt.h5")
        echo "$m $dt: ppl $(json_get "$p" ppl) (store $(json_get "$base" ppl)), tokens $(json_get "$p" tokens)"
        check "$m $dt: WikiText-2 token count $ntok" test "$(json_get "$p" tokens)" = $ntok
        if [ $dt = f32 ]; then
            check "$m f32: every tensor identical after the round trip" \
                $PY $REF same "$src" "$W/$m.f32.h5"
            check "$m f32: perplexity identical" test "$(json_get "$p" ppl)" = "$(json_get "$base" ppl)"
        else
            check "$m bf16: identical zero masks" $PY $REF zeros "$src" "$W/$m.bf16.h5"
            check "$m bf16: perplexity within 1% of fp32" \
                within "$(json_get "$p" ppl)" "$(json_get "$base" ppl)" 0.01
        fi
    done
done
# rounding edge cases (ties to even, carries, signed zeros) against torch
$PY $REF craft "$ST" "$W/craft.h5"
"$LOSA" export "$W/craft.h5" --out "$W/craft.hf" >/dev/null 2>&1
check "bf16 rounding edge cases equal torch's RNE bit for bit" $PY $REF st "$W/craft.h5" "$W/craft.hf" bf16
check "minillama: tokenizer.json equals the original (vocab, 61249 merges, normalizer)" \
    $PY $REF tokjson "$W/minillama.f32/tokenizer.json" "$D/models/minillama/tokenizer.json"
check "stories260K: derived merges encode exactly like llama2.c's score BPE" \
    $PY $REF tok "$W/stories260K.f32" "$D/models/stories260K/tok512.bin" "$WIKI"
check "minillama: rank BPE over the export equals the original tokenizer.json" \
    $PY $REF tok "$W/minillama.bf16" "$D/models/minillama/tokenizer.json" "$WIKI"

# 4. pruned: a losa run directory (prune mode) and a magnitude-zeroed copy
"$LOSA" run input/default.ini --set model.store=$ST --set losa.mode=prune \
    --set data.calib_n=4 --set data.calib_seqlen=64 --set eval.seqlen=64 \
    --set eval.max_windows=4 --set output.dir=$W/prun >/dev/null 2>$W/prun.log
out=$("$LOSA" export "$W/prun" --out "$W/prun.hf" --json 2>>$W/prun.log)
check "export of a run directory (its model.h5)" test -n "$out"
info=$("$LOSA" info "$W/prun/model.h5" --json)
check "export reports the store's zeros ($(json_get "$out" zeros), sparsity $(json_get "$out" sparsity))" \
    test "$(json_get "$out" zeros)" = "$(json_get "$info" zeros)"
"$LOSA" import "$W/prun.hf" --out "$W/prun.h5" >/dev/null
check "pruned stories260K: bf16 export keeps every zero of every matrix" \
    $PY $REF zeros "$W/prun/model.h5" "$W/prun.h5"
p0=$(ppl_of "$W/prun/model.h5"); p1=$(ppl_of "$W/prun.h5")
check "pruned stories260K: ppl $(json_get "$p1" ppl) within 1% of $(json_get "$p0" ppl)" \
    within "$(json_get "$p1" ppl)" "$(json_get "$p0" ppl)" 0.01
$PY $REF zero "$MINI" "$W/mini50.h5" 0.5
"$LOSA" export "$W/mini50.h5" --out "$W/mini50.hf" >/dev/null 2>&1
"$LOSA" import "$W/mini50.hf" --out "$W/mini50.re.h5" >/dev/null 2>&1
check "50%-zeroed minillama: bf16 export keeps every zero of every matrix" \
    $PY $REF zeros "$W/mini50.h5" "$W/mini50.re.h5"

# 5. errors leave nothing behind
E=$W/err; mkdir -p "$E"
err=$("$LOSA" export "$E/nope.h5" --out "$E/o1" 2>&1); rc=$?
check "missing store: fails naming it" test $rc != 0 -a -n "$(echo "$err" | grep nope.h5)"
check "missing store: no output" test ! -e "$E/o1"
err=$("$LOSA" export "$E" --out "$E/o2" 2>&1); rc=$?
check "directory without model.h5: fails naming RUN_DIR/model.h5" \
    test $rc != 0 -a -n "$(echo "$err" | grep "err/model.h5")"
err=$("$LOSA" export "$ST" --out "$E/no/such/dir" 2>&1); rc=$?
check "nonexistent parent: fails naming --out" test $rc != 0 -a -n "$(echo "$err" | grep "no/such/dir")"
: > "$E/afile"
err=$("$LOSA" export "$ST" --out "$E/afile/o" 2>&1); rc=$?
check "parent is a file (unwritable): fails" test $rc != 0 -a -n "$(echo "$err" | grep "afile/o")"
if [ "$(id -u)" != 0 ]; then
    mkdir -p "$E/ro"; chmod 555 "$E/ro"
    "$LOSA" export "$ST" --out "$E/ro/o" >/dev/null 2>&1; rc=$?
    check "read-only parent: fails, nothing inside" test $rc != 0 -a -z "$(ls -A "$E/ro")"
    chmod 755 "$E/ro"
fi
mkdir -p "$E/full"; echo keep > "$E/full/x"
err=$("$LOSA" export "$ST" --out "$E/full" 2>&1); rc=$?
check "non-empty --out: refused, contents untouched" \
    test $rc != 0 -a "$(ls "$E/full")" = x -a "$(cat "$E/full/x")" = keep
mkdir -p "$E/empty"
check "empty --out directory: accepted" "$LOSA" export "$ST" --out "$E/empty" --dtype f32
# a failure half-way: the last tensor holds a NaN (config.json and
# tokenizer.json are already written, and most of model.safetensors)
cp "$ST" "$E/nan.h5"
$PY -c "import h5py,sys; f=h5py.File(sys.argv[1],'r+'); f['final_norm'][3]=float('nan')" "$E/nan.h5"
err=$("$LOSA" export "$E/nan.h5" --out "$E/o3" 2>&1); rc=$?
check "NaN in the last tensor: fails naming it ($err)" \
    test $rc != 0 -a -n "$(echo "$err" | grep final_norm)"
check "failure half-way: no output directory" test ! -e "$E/o3"
err=$("$LOSA" export "$ST" --out "$E/o4" --dtype f16 2>&1); rc=$?
check "bad --dtype: refused" test $rc != 0 -a ! -e "$E/o4"
check "no temporary left anywhere" no_leftovers "$E"
check "no temporary left in the work directory" no_leftovers "$W"
finish
