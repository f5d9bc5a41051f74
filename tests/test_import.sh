#!/usr/bin/env bash
# losa import / info from the command line.  Bad inputs (built from the real
# minillama / stories260K files by tests/ref/make_bad_inputs.py) must each
# exit non-zero, print exactly one line on stderr naming the file and the
# field, print nothing on stdout, and leave neither the output store nor a
# temporary behind.  Good inputs: a sharded copy of minillama imports to the
# same tensors as the single file; info reports a known sparsity.
set -u
cd "$(dirname "$0")/.."
LOSA=${LOSA:-build/losa}
T=${LOSA_TEST_TMP:-/tmp}/test_import
D=${LOSA_DATA:?LOSA_DATA not set}
MINI=$D/models/minillama
STORIES=$D/models/stories260K
rm -rf "$T"; mkdir -p "$T"
/usr/bin/python3 tests/ref/make_bad_inputs.py "$T/in" "$MINI" "$STORIES" || { echo "FAIL: building inputs"; exit 1; }
fails=0; checks=0
OUT=$T/out.h5

# bad NAME PATTERN... -- ARGS: import must fail with one stderr line matching every pattern
bad() {
    local name=$1; shift
    local pats=()
    while [ "$1" != "--" ]; do pats+=("$1"); shift; done; shift
    checks=$((checks + 1))
    rm -f "$OUT" "$OUT".tmp.*
    "$LOSA" import --out "$OUT" "$@" >"$T/stdout" 2>"$T/stderr"
    local rc=$? why=""
    [ $rc -ne 0 ] || why="exit status 0"
    [ "$(wc -l <"$T/stderr")" = 1 ] || why="$why; stderr has $(wc -l <"$T/stderr") lines"
    [ -s "$T/stdout" ] && why="$why; stdout not empty"
    for p in "${pats[@]}"; do grep -qF -- "$p" "$T/stderr" || why="$why; no '$p' in message"; done
    ls "$OUT" "$OUT".tmp.* >/dev/null 2>&1 && why="$why; output or temporary left behind"
    if [ -n "$why" ]; then
        fails=$((fails + 1)); echo "FAIL $name (rc $rc):$why"; sed 's/^/    /' "$T/stderr" | head -5
    else
        echo "ok   $name: $(cat "$T/stderr")"
    fi
}

I=$T/in
bad "missing dir" "$I/nope" "No such file" -- "$I/nope"
bad "missing weights" "$I/noweights" "model.safetensors" -- "$I/noweights"
bad "truncated safetensors" "truncated/model.safetensors" "data_offsets" -- "$I/truncated"
bad "header length past EOF" "hdrlen/model.safetensors" "header length" -- "$I/hdrlen"
bad "unsupported dtype" "dtype/model.safetensors" "model.layers.0.input_layernorm.weight" "dtype I32" -- "$I/dtype"
bad "offsets vs dtype size" "offsets/model.safetensors" "model.norm.weight" "data_offsets" -- "$I/offsets"
bad "shape vs config.json" "shape/model.safetensors" "model.layers.0.mlp.gate_proj.weight" "(768, 256)" "(512, 256)" -- "$I/shape"
bad "missing tensor" "missing/model.safetensors" "model.layers.3.mlp.up_proj.weight" "missing" -- "$I/missing"
bad "malformed config.json" "badconfig/config.json" "JSON" -- "$I/badconfig"
bad "config.json missing field" "nolayers/config.json" "num_hidden_layers" -- "$I/nolayers"
bad "unsupported architecture" "arch/config.json" "architectures" "GPT2LMHeadModel" -- "$I/arch"
bad "malformed tokenizer.json" "badtok/tokenizer.json" -- "$I/badtok"
bad "unsupported tokenizer type" "toktype/tokenizer.json" "Unigram" -- "$I/toktype"
bad "truncated llama2.c" "stories_trunc.bin" "truncated" -- "$I/stories_trunc.bin" --tokenizer "$STORIES/tok512.bin"
bad "llama2.c without tokenizer" "--tokenizer" -- "$STORIES/stories260K.bin"
bad "missing tokenizer.bin" "$I/nope.bin" -- "$STORIES/stories260K.bin" --tokenizer "$I/nope.bin"
bad "unwritable output dir" "$T/nodir/x.h5" -- "$MINI" --out "$T/nodir/x.h5"

# good: single file and sharded import give identical tensors; info sparsity
ok() { # name, command...
    local name=$1; shift
    checks=$((checks + 1))
    if "$@" >"$T/stdout" 2>"$T/stderr"; then echo "ok   $name"
    else fails=$((fails + 1)); echo "FAIL $name"; sed 's/^/    /' "$T/stderr" "$T/stdout" | head -20; fi
}
ok "import minillama --json" "$LOSA" import "$MINI" --out "$T/mini.h5" --json
cp "$T/stdout" "$T/import.json"
ok "json says 21105920 params, 6 layers" /usr/bin/python3 -c "
import json,sys; o=json.load(open('$T/import.json')); sys.exit(not (o['params']==21105920 and o['layers']==6 and o['out']=='$T/mini.h5'))"
ok "import sharded minillama" "$LOSA" import "$I/sharded" --out "$T/sharded.h5"
ok "sharded (BF16 + F32 + F16, stored fp32) == single file (stored bf16)" /usr/bin/python3 -c "
import h5py, numpy as np, sys
a, b = h5py.File('$T/mini.h5','r'), h5py.File('$T/sharded.h5','r')
names = []
a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
# the single BF16 file is stored in bf16 (uint16 bits, attribute dtype), the
# mixed shards in fp32: compare values, bf16 widened exactly
def val(d):
    x = d[()]
    return (x.astype(np.uint32) << 16).view(np.float32) if d.attrs.get('dtype') == 'bf16' else x
assert a.attrs['dtype'] == 'bf16' and b.attrs['dtype'] == 'fp32', (a.attrs['dtype'], b.attrs['dtype'])
bad = [n for n in names if n != 'layers/0/wv' and not np.array_equal(val(a[n]), val(b[n]))]
# layers/0/wv went through F16 in the shards: equal to numpy's float16 rounding
f16 = val(a['layers/0/wv']).astype(np.float16).astype(np.float32)
ok = np.array_equal(val(b['layers/0/wv']), f16) and not np.array_equal(f16, val(a['layers/0/wv']))
print(len(names), 'datasets compared', bad, ok); sys.exit(1 if bad or not ok or len(names) < 60 else 0)"
ok "import stories260K" "$LOSA" import "$STORIES/stories260K.bin" --tokenizer "$STORIES/tok512.bin" --out "$T/stories.h5"
ok "import untied llama2.c" "$LOSA" import "$I/stories_untied.bin" --tokenizer "$STORIES/tok512.bin" --out "$T/untied.h5"
ok "untied: /head = 2 x /embed, wq as tied import" /usr/bin/python3 -c "
import h5py, numpy as np, sys
a, b = h5py.File('$T/untied.h5','r'), h5py.File('$T/stories.h5','r')
c = [a.attrs['tie_embeddings'] == 0, a.attrs['vocab_size'] == 512, 'head' in a, 'head' not in b,
     np.array_equal(a['head'][()], 2 * a['embed'][()]), np.array_equal(a['embed'][()], b['embed'][()]),
     np.array_equal(a['layers/3/wq'][()], b['layers/3/wq'][()])]
print(c); sys.exit(0 if all(c) else 1)"
# zero 100 of 256 rows of layer 2 wq and 1000 values of layer 4 w_down with h5py
# (mini.h5 is bf16: bit pattern 0 is +0.0)
ok "edit sparsity" /usr/bin/python3 -c "
import h5py
f = h5py.File('$T/mini.h5', 'r+')
w = f['layers/2/wq'][()]; w[:100] = 0; f['layers/2/wq'][...] = w
w = f['layers/4/w_down'][()]; w.reshape(-1)[:1000] = 0; f['layers/4/w_down'][...] = w"
ok "info --json" "$LOSA" info "$T/mini.h5" --json
cp "$T/stdout" "$T/info.json"
ok "info sparsity values" /usr/bin/python3 -c "
import json, sys
o = json.load(open('$T/info.json'))
L = o['layers']; tot = 6 * (2*256*256 + 2*128*256 + 3*768*256)
c = [abs(L[2]['sparsity']['wq'] - 100/256) < 1e-12, abs(L[4]['sparsity']['w_down'] - 1000/196608) < 1e-12,
     L[0]['total'] == 0, abs(o['sparsity'] - 26600/tot) < 1e-12, o['params'] == 21105920,
     o['config']['n_kv_heads'] == 4, o['map_shapes']['w_down'] == [256, 768]]
print(c, o['sparsity']); sys.exit(0 if all(c) else 1)"
ok "info text" "$LOSA" info "$T/stories.h5"
checks=$((checks + 1))
if grep -q "n_layers 5" "$T/stdout" && grep -q "tie_embeddings 1" "$T/stdout" && grep -q "^total *0.0000" "$T/stdout"; then echo "ok   info text content"
else fails=$((fails + 1)); echo "FAIL info text content"; cat "$T/stdout"; fi
checks=$((checks + 1))
"$LOSA" info "$T/nothere.h5" >"$T/stdout" 2>"$T/stderr"
if [ $? -ne 0 ] && [ "$(wc -l <"$T/stderr")" = 1 ] && grep -qF "$T/nothere.h5" "$T/stderr"; then echo "ok   info on a missing store: $(cat "$T/stderr")"
else fails=$((fails + 1)); echo "FAIL info on a missing store"; cat "$T/stderr"; fi

rm -rf "$T"
echo "test_import: $checks checks, $fails failed: $([ $fails = 0 ] && echo PASSED || echo FAILED)"
[ $fails = 0 ]
