#!/usr/bin/env bash
# bf16 model stores (issue 14, item 2): minillama's checkpoint is BF16.
#  1. `losa import` (--dtype keep, the default) stores the maps, embedding and
#     head as bf16: uint16 datasets with attribute dtype = "bf16", root
#     attribute dtype = "bf16", format_version 2 (read independently with
#     h5py); --dtype fp32 stores fp32 (format_version 1);
#  2. `losa info --json` reports dtype / dtypes / file_bytes; the bf16 store
#     is smaller by exactly 2 bytes per non-norm weight: 2 x (21105920 -
#     13 x 256) = 42205184 bytes, within 64 KiB for HDF5's metadata (the
#     dtype attributes);
#  3. every widened value equals the fp32 store's (bf16 -> fp32 is exact):
#     eval perplexity bit-identical on both stores, and an fp32 export of
#     each gives the same model.safetensors bytes;
#  4. export --dtype bf16 of the bf16 store gives back minillama's BF16
#     tensors bit for bit (every tensor, compared as bytes with numpy);
#  5. import --dtype bf16 of an F32 checkpoint (the fp32 export) rounds to
#     the same bf16 store data (minillama's values are bf16 already);
#  6. prune, generate and sparsify give the same results on both stores
#     (sparsify keeps the store bf16);
#  7. a store without the dtype attribute (format 1, older builds) reads as
#     fp32; --dtype bf16 of a llama2.c checkpoint and an unknown --dtype are
#     refused naming the flag.
set -u
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
SRC=$D/models/minillama
WIKI=$D/text/wikitext2/wiki.test.hf_join.txt
W=$TT/test_store_bf16; rm -rf "$W"; mkdir -p "$W"

j=$("$LOSA" import "$SRC" --out "$W/b.h5" --json 2>"$W/ib.log")
check "import keep: dtype bf16 ($(cat "$W/ib.log"))" test "$(json_get "$j" dtype)" = bf16
j=$("$LOSA" import "$SRC" --out "$W/f.h5" --dtype fp32 --json 2>"$W/if.log")
check "import --dtype fp32: dtype fp32 ($(cat "$W/if.log"))" test "$(json_get "$j" dtype)" = fp32

check "h5py: bf16 layout (uint16 + dtype attribute on maps/embed/head, norms float32, root dtype bf16, format 2)" \
    $PY - "$W/b.h5" "$W/f.h5" <<'PYEOF'
import sys, h5py, numpy as np
b, f = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
assert b.attrs['dtype'] == 'bf16' and int(b.attrs['format_version']) == 2, dict(b.attrs)
assert f.attrs['dtype'] == 'fp32' and int(f.attrs['format_version']) == 1, dict(f.attrs)
names = ['/embed', '/head', '/final_norm'] + ['/layers/%d/%s' % (l, m) for l in range(6) for m in
         ('attn_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w_gate', 'w_up', 'w_down')]
for n in names:
    x, y = b[n], f[n]
    assert y.dtype == np.float32, (n, y.dtype)
    if n.endswith('norm'):
        assert x.dtype == np.float32 and 'dtype' not in x.attrs, n
        assert np.array_equal(x[()], y[()]), n
    else:
        assert x.dtype == np.uint16 and x.attrs['dtype'] == 'bf16', (n, x.dtype)
        w = (x[()].astype(np.uint32) << 16).view(np.float32)
        assert np.array_equal(w.view(np.uint32), y[()].view(np.uint32)), n
print('ok', len(names), 'tensors')
PYEOF

ib=$("$LOSA" info "$W/b.h5" --json); if=$("$LOSA" info "$W/f.h5" --json)
check "info: bf16 store says dtype bf16, maps/embed/head bf16" \
    test "$(json_get "$ib" dtype) $(json_get "$ib" dtypes.maps) $(json_get "$ib" dtypes.embed) $(json_get "$ib" dtypes.head)" = "bf16 bf16 bf16 bf16"
check "info: fp32 store says dtype fp32" test "$(json_get "$if" dtype) $(json_get "$if" dtypes.maps)" = "fp32 fp32"
fb=$(json_get "$ib" file_bytes); ff=$(json_get "$if" file_bytes)
echo "store bytes: bf16 $fb, fp32 $ff, ratio $($PY -c "print(round($fb/$ff, 4))")"
check "info file_bytes is the file size" test "$fb" = "$(stat -c %s "$W/b.h5")"
check "bf16 store smaller by 2 x 21102592 = 42205184 bytes (+-64 KiB metadata): $((ff - fb))" \
    $PY -c "import sys; sys.exit(abs(($ff - $fb) - 42205184) > 65536)"
check "info text shows the dtype line" test -n "$("$LOSA" info "$W/b.h5" | grep '^dtype  *bf16 (maps bf16, embedding bf16, head bf16')"

pb=$("$LOSA" eval --model "$W/b.h5" --ppl "$WIKI" --seqlen 256 --max-windows 4 --json 2>/dev/null)
pf=$("$LOSA" eval --model "$W/f.h5" --ppl "$WIKI" --seqlen 256 --max-windows 4 --json 2>/dev/null)
check "eval: same perplexity from the bf16 and fp32 stores ($(json_get "$pb" ppl) vs $(json_get "$pf" ppl))" \
    test "$(json_get "$pb" ppl)" = "$(json_get "$pf" ppl)"

"$LOSA" export "$W/b.h5" --out "$W/xb16" --dtype bf16 >/dev/null 2>"$W/x1.log"
"$LOSA" export "$W/b.h5" --out "$W/xb32" --dtype f32 >/dev/null 2>"$W/x2.log"
"$LOSA" export "$W/f.h5" --out "$W/xf32" --dtype f32 >/dev/null 2>"$W/x3.log"
cat > "$W/cmp.py" <<'PYEOF'
import sys, json, struct
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: (v['dtype'], tuple(v['shape']), d[v['data_offsets'][0]:v['data_offsets'][1]])
            for k, v in h.items() if k != '__metadata__'}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert set(a) == set(b), sorted(set(a) ^ set(b))
bad = [k for k in a if a[k] != b[k]]
assert not bad, bad[:5]
print('ok', len(a), 'tensors identical')
PYEOF
check "export bf16 of the bf16 store = minillama's BF16 tensors, bit for bit" \
    $PY "$W/cmp.py" "$SRC/model.safetensors" "$W/xb16/model.safetensors"
check "export f32: bf16 store and fp32 store give the same tensors" \
    $PY "$W/cmp.py" "$W/xf32/model.safetensors" "$W/xb32/model.safetensors"

j=$("$LOSA" import "$W/xf32" --out "$W/r.h5" --dtype bf16 --json 2>"$W/ir.log")
check "import --dtype bf16 of an F32 checkpoint: dtype bf16 ($(cat "$W/ir.log"))" test "$(json_get "$j" dtype)" = bf16
j=$("$LOSA" import "$W/xf32" --out "$W/k.h5" --json 2>/dev/null)
check "import keep of an F32 checkpoint: fp32" test "$(json_get "$j" dtype)" = fp32
"$LOSA" export "$W/r.h5" --out "$W/xr16" --dtype bf16 >/dev/null 2>&1
check "its bf16 export equals minillama's tensors" $PY "$W/cmp.py" "$SRC/model.safetensors" "$W/xr16/model.safetensors"

# the other readers: prune (magnitude, 4 calibration windows), generate
# (greedy) and sparsify give the same results on both stores
for x in b f; do
    "$LOSA" prune input/prune_magnitude.ini --set model.store="$W/$x.h5" --set output.store="$W/p$x.h5" \
        --set data.calib_n=4 --set data.eval_text= --json >"$W/p$x.json" 2>"$W/p$x.log"
    "$LOSA" generate --model "$W/$x.h5" --prompt "The river" --steps 24 --json >"$W/g$x.json" 2>/dev/null
done
check "prune: same pruned model (every dataset bit-identical) from the bf16 and fp32 stores" \
    $PY tests/ref/h5_same.py "$W/pb.h5" "$W/pf.h5"
check "prune: same reconstruction errors" test "$(json_get "$(cat "$W/pb.json")" recon_err)" = "$(json_get "$(cat "$W/pf.json")" recon_err)"
tb=$(json_get "$(cat "$W/gb.json")" text); tf=$(json_get "$(cat "$W/gf.json")" text)
check "generate: same greedy text (${tb:0:40}...)" test -n "$tb" -a "$tb" = "$tf"
cp "$W/b.h5" "$W/sb.h5"
"$LOSA" sparsify "$W/sb.h5" --all --json >"$W/sb.json" 2>"$W/sb.log"
si=$("$LOSA" info "$W/sb.h5" --json)
check "sparsify --all of the bf16 store: 42 sparse maps, store still bf16 ($(tail -n1 "$W/sb.log"))" \
    test "$(json_get "$si" sparse_maps) $(json_get "$si" dtype) $(json_get "$si" dtypes.maps)" = "42 bf16 bf16"
ps=$("$LOSA" eval --model "$W/sb.h5" --ppl "$WIKI" --seqlen 256 --max-windows 4 --sparse off --json 2>/dev/null)
check "eval of the sparsified bf16 store (dense path) = the fp32 store's perplexity" \
    test "$(json_get "$ps" ppl)" = "$(json_get "$pf" ppl)"

cp "$W/f.h5" "$W/old.h5"
$PY -c "import h5py,sys; f=h5py.File(sys.argv[1],'r+'); del f.attrs['dtype']" "$W/old.h5"
check "a store without the dtype attribute reads as fp32" \
    test "$(json_get "$("$LOSA" info "$W/old.h5" --json)" dtype)" = fp32

err=$("$LOSA" import "$D/models/stories260K/stories260K.bin" --tokenizer "$D/models/stories260K/tok512.bin" \
      --out "$W/s.h5" --dtype bf16 2>&1 >/dev/null)
check "--dtype bf16 of a llama2.c checkpoint refused: $err" test -n "$(echo "$err" | grep -- '--dtype bf16: not available for a llama2.c')"
check "nothing written for the refused import" test ! -e "$W/s.h5"
err=$("$LOSA" import "$SRC" --out "$W/z.h5" --dtype fp16 2>&1 >/dev/null)
check "--dtype fp16 refused: $err" test -n "$(echo "$err" | grep -- "--dtype: 'fp16' (expected keep, fp32 or bf16)")"
finish
