#!/usr/bin/env bash
# losa sparsify: sparse copies of the pruned maps kept in the store (/sparse).
#  - stories260K pruned to 60% (wanda, tiny deck): every map pays at batch 1,
#    so all 35 are kept; h5py + numpy decode every stored map (bitmap, CSR,
#    bitmap-bf16) independently and compare with the dense weights (bf16:
#    numpy round-to-nearest-even);
#  - everything else in the file is unchanged (h5diff without /sparse);
#  - losa info reports the copies; eval --ppl and generate (greedy and
#    sampled) give identical results with and without the stored copies and
#    report them read from the store (also on 2 pipeline stages); an
#    unpruned store keeps none (auto);
#  - a run directory means RUN_DIR/model.h5;
#  - bad input (missing store, not HDF5, unknown format, a store missing a
#    map) fails with a message and leaves the store byte-identical and no
#    temporary file behind.
set -u
source "$(dirname "$0")/lib.sh"
ST=$(store stories260K) || exit 1
W=$TT/test_sparsify
rm -rf "$W"; mkdir -p "$W"
TXT=$D/text/tinystories/tinystories_sample.txt
cat > "$W/prune.ini" <<EOF
[model]
store = $ST
[data]
calib = $D/text/c4/c4-train.00000-of-01024.first1000.jsonl
calib_n = 4
calib_seqlen = 64
calib_seed = 0
eval_text = $TXT
[prune]
method = wanda
sparsity = 0.6
pattern = unstructured
[eval]
seqlen = 64
max_windows = 4
dense = false
[output]
store = $W/pruned.h5
EOF
"$LOSA" prune "$W/prune.ini" >"$W/prune.log" 2>&1
check "prune a 60% store" test -f "$W/pruned.h5"
P=$W/sp.h5
cp "$W/pruned.h5" "$P"

out=$("$LOSA" sparsify "$P" --json 2>"$W/sp.log")
echo "$out"
check "sparsify: 35 of 35 maps kept as bitmap" /usr/bin/python3 -c '
import json,sys; o=json.loads(sys.argv[1])
assert o["maps"] == 35 and o["sparse_maps"] == 35 and o["format"] == "bitmap" and not o["all"], o
assert o["file_bytes_after"] > o["file_bytes_before"] and 0 < o["sparse_bytes"] < o["dense_bytes"], o' "$out"

# independent decoder of the stored formats
cat > "$W/decode.py" <<'PY'
import sys, h5py, numpy as np
path, want_fmt, want_maps = sys.argv[1], sys.argv[2], int(sys.argv[3])
f = h5py.File(path, "r")
sp = f["sparse"]
assert sp.attrs["format"] == want_fmt and int(sp.attrs["maps"]) == want_maps, dict(sp.attrs)
n = 0
for l in sp["layers"]:
    for m in sp["layers"][l]:
        g = sp["layers"][l][m]
        W = f["layers"][l][m][:]
        out, inn = W.shape
        assert g.attrs["format"] == want_fmt
        assert (int(g.attrs["out"]), int(g.attrs["in"])) == W.shape
        assert int(g.attrs["nw"]) == (inn + 15) // 16
        nzm = W != 0
        nnz = int(nzm.sum())
        assert int(g.attrs["nnz"]) == nnz, (l, m)
        rp = g["rowptr"][:]
        assert rp.dtype == np.int64 and (rp == np.concatenate([[0], np.cumsum(nzm.sum(1))])).all()
        if want_fmt == "2:4":
            # two slots per group of 4 inputs; nibble k of word w (group 4w+k)
            # holds their positions p0 | p1 << 2 with p0 < p1
            mask, v = g["mask"][:], g["vals"][:]
            assert mask.dtype == np.uint16 and v.dtype == np.float32 and v.shape == (out * inn // 2,)
            nib = ((mask[:, :, None] >> (4 * np.arange(4, dtype=np.uint16))) & 15).reshape(out, -1)
            nib = nib[:, : inn // 4].astype(np.int64)
            p0, p1 = nib & 3, nib >> 2
            assert (p0 < p1).all(), (l, m)
            D = np.zeros((out, inn // 4, 4), np.float32)
            slots = v.reshape(out, inn // 4, 2)
            r, q = np.indices(p0.shape)
            D[r, q, p0] = slots[:, :, 0]
            D[r, q, p1] = slots[:, :, 1]
            assert (D.reshape(out, inn).view(np.uint32) == W.view(np.uint32)).all(), (l, m)
            n += 1
            continue
        if want_fmt == "csr":
            idx = g["idx"][:]
            assert idx.dtype == np.uint16
            cols = np.nonzero(nzm)[1]          # row-major order = row by row, columns ascending
            assert (idx.astype(np.int64) == cols).all(), (l, m)
        else:
            mask = g["mask"][:]
            assert mask.dtype == np.uint16 and mask.shape == (out, (inn + 15) // 16)
            bits = (mask[:, :, None] >> np.arange(16, dtype=np.uint16)) & 1   # bit j of word w
            bits = bits.reshape(out, -1)[:, :inn].astype(bool)
            assert (bits == nzm).all(), (l, m)
        v = g["vals"][:]
        ref = W[nzm]
        if want_fmt == "bitmap-bf16":
            u = ref.view(np.uint32).astype(np.uint64)
            ref16 = ((u + 0x7fff + ((u >> 16) & 1)) >> 16).astype(np.uint16)
            assert v.dtype == np.uint16 and (v == ref16).all(), (l, m)
        else:
            assert v.dtype == np.float32 and (v.view(np.uint32) == ref.view(np.uint32)).all(), (l, m)
        n += 1
assert n == want_maps, n
print("decoded", n, "maps")
PY
check "h5py/numpy: every stored bitmap map decodes to the dense weights" \
    /usr/bin/python3 "$W/decode.py" "$P" bitmap 35
check "everything but /sparse unchanged (h5diff)" h5diff --exclude-path /sparse "$W/pruned.h5" "$P"
info=$("$LOSA" info "$P" --json 2>/dev/null)
check "losa info: sparse_format bitmap, 35 maps" test "$(json_get "$info" sparse_format) $(json_get "$info" sparse_maps)" = "bitmap 35"
info0=$("$LOSA" info "$W/pruned.h5" --json 2>/dev/null)
check "losa info: no copies in the plain store" test "$(json_get "$info0" sparse_format)" = ""

same_runs() { # label, 1 if the maps run sparse (auto: as --sparse auto decides), losa args
    local what=$1 on=$2; shift 2
    local a b
    a=$("$LOSA" "$@" --model "$W/pruned.h5" 2>/dev/null)
    b=$("$LOSA" "$@" --model "$P" 2>/dev/null)
    check "$what: identical with and without stored copies" /usr/bin/python3 -c '
import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); on=sys.argv[3]=="1"
if sys.argv[3] == "auto":
    # auto at density 0.4, batch 1: sparse unless the maps (0.9 MB) fit the
    # L2 caches, where bitmaps pay only up to density 0.35 (sparse.c)
    on = a["sparse_cache_resident_stages"] == 0
    assert a["sparse_cache_resident_stages"] == b["sparse_cache_resident_stages"], (a, b)
k = "ppl" if "ppl" in a else "text"
assert a[k] == b[k] and len(str(a[k])) > 3, (a[k], b[k])
assert a["sparse_stored"] == 0 and b["sparse_stored"] == (35 if on else 0), (a, b)
assert a["sparse_maps"] == b["sparse_maps"] == (35 if on else 0)
print(k, a[k] if k == "ppl" else repr(a[k][:60]))' "$a" "$b" "$on"
}
same_runs "eval --sparse on" 1 eval --ppl "$TXT" --seqlen 64 --max-windows 8 --sparse on --json
same_runs "eval --sparse off" 0 eval --ppl "$TXT" --seqlen 64 --max-windows 8 --sparse off --json
same_runs "generate greedy --sparse on" 1 generate --sparse on --steps 50 --json
same_runs "generate T=0.9 --sparse auto" auto generate --sparse auto --steps 50 --temperature 0.9 --seed 7 \
    --prompt "Once upon a time" --json
# the same with the L2 taken as 1 KB: the maps are not cache-resident, so
# auto runs all 35 sparse, read from the stored copies (both branches of the
# decision on any CPU)
LOSA_SPARSE_L2=1024 same_runs "generate T=0.9 --sparse auto, maps not cache-resident" 1 \
    generate --sparse auto --steps 50 --temperature 0.9 --seed 7 --prompt "Once upon a time" --json
# 2 pipeline stages: each reads the copies of its own layers
a=$($MPIRUN -np 2 "$LOSA" generate --model "$W/pruned.h5" --sparse on --steps 40 --temperature 0.9 --seed 3 --json 2>/dev/null)
b=$($MPIRUN -np 2 "$LOSA" generate --model "$P" --sparse on --steps 40 --temperature 0.9 --seed 3 --json 2>/dev/null)
check "2 stages: same text, 35 copies read" /usr/bin/python3 -c '
import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2])
assert a["text"] == b["text"] and len(a["text"]) > 10 and b["sparse_stored"] == 35 and a["sparse_stored"] == 0' "$a" "$b"

# other formats replace /sparse
"$LOSA" sparsify "$P" --format csr --all --json >"$W/csr.json" 2>"$W/csr.log"
check "csr: decodes (h5py/numpy)" /usr/bin/python3 "$W/decode.py" "$P" csr 35
check "csr: no stale bitmap datasets" /usr/bin/python3 -c '
import h5py,sys; f=h5py.File(sys.argv[1],"r"); assert "mask" not in f["sparse/layers/0/wq"]' "$P"
same_runs "generate greedy --sparse on (csr copies)" 1 generate --sparse on --steps 50 --json
"$LOSA" sparsify "$P" --format bitmap-bf16 >"$W/bf16.log" 2>&1
check "bitmap-bf16: decodes (numpy round to nearest even)" /usr/bin/python3 "$W/decode.py" "$P" bitmap-bf16 35
g=$("$LOSA" generate --model "$P" --sparse on --steps 20 --json 2>/dev/null)
check "bitmap-bf16: generate reads the 35 stored copies" test "$(json_get "$g" sparse_stored)" = 35

# a 2:4-pruned store: the maps asked as bitmap are kept in the 2:4 format
# (decoded independently), and give the same text as the dense weights
sed -e 's/^sparsity = 0.6/sparsity = 0.5/' -e 's/^pattern = unstructured/pattern = 2:4/' \
    -e "s|^store = $W/pruned.h5|store = $W/p24.h5|" "$W/prune.ini" > "$W/prune24.ini"
"$LOSA" prune "$W/prune24.ini" >"$W/prune24.log" 2>&1
cp "$W/p24.h5" "$W/s24.h5"
o=$("$LOSA" sparsify "$W/s24.h5" --all --json 2>/dev/null)
check "2:4 store: kept as 2:4" test "$(json_get "$o" format) $(json_get "$o" sparse_maps)" = "2:4 35"
check "2:4: decodes (h5py/numpy) to the dense weights" /usr/bin/python3 "$W/decode.py" "$W/s24.h5" 2:4 35
a=$("$LOSA" generate --model "$W/p24.h5" --sparse off --steps 50 --json 2>/dev/null)
b=$("$LOSA" generate --model "$W/s24.h5" --sparse on --steps 50 --json 2>/dev/null)
check "2:4: generate from the stored copies = dense text" /usr/bin/python3 -c '
import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2])
assert a["text"] == b["text"] and len(a["text"]) > 10 and b["sparse_stored"] == 35, (a, b)' "$a" "$b"

# an unpruned store: no map pays at batch 1, --all keeps them all
cp "$ST" "$W/dense.h5"
o=$("$LOSA" sparsify "$W/dense.h5" --json 2>/dev/null)
check "dense store: auto keeps 0 maps" test "$(json_get "$o" sparse_maps)" = 0
o=$("$LOSA" sparsify "$W/dense.h5" --all --json 2>/dev/null)
check "dense store: --all keeps 35" test "$(json_get "$o" sparse_maps)" = 35

# a run directory stands for its model.h5
mkdir -p "$W/run"; cp "$W/pruned.h5" "$W/run/model.h5"
o=$("$LOSA" sparsify "$W/run" --json 2>/dev/null)
check "run dir: RUN_DIR/model.h5 sparsified" test "$(json_get "$o" store)" = "$W/run/model.h5"
check "run dir: copies present" /usr/bin/python3 "$W/decode.py" "$W/run/model.h5" bitmap 35

# bad input: clean failure, store untouched, no temporary left
fails_clean() { # label, expected message fragment, file to watch, then args
    local what=$1 frag=$2 file=$3; shift 3
    local before after msg rc
    before=$( [ -f "$file" ] && md5sum < "$file")
    msg=$("$LOSA" sparsify "$@" 2>&1 >/dev/null); rc=$?
    after=$( [ -f "$file" ] && md5sum < "$file")
    echo "    $msg"
    check "$what: fails (rc $rc) with '$frag'" test $rc -ne 0 -a -n "$(echo "$msg" | grep -F -- "$frag")"
    check "$what: file unchanged, no temporary" test "$before" = "$after" -a -z "$(ls "$W" | grep '\.tmp\.')"
}
fails_clean "missing store" "cannot open" "$W/nope.h5" "$W/nope.h5"
check "missing store: not created" test ! -e "$W/nope.h5"
echo "not hdf5" > "$W/text.h5"
fails_clean "not HDF5" "not an HDF5 file" "$W/text.h5" "$W/text.h5"
fails_clean "unknown format" "expected bitmap, bitmap-bf16, csr or 2:4" "$W/pruned.h5" "$W/pruned.h5" --format dense
fails_clean "no store given" "STORE: missing" "$W/pruned.h5"
fails_clean "--format 2:4 on a map that is not 2:4" "layer 0 wq: sparse: 2:4 format" "$W/pruned.h5" \
    "$W/pruned.h5" --format 2:4 --all
mkdir -p "$W/emptyrun"
fails_clean "run dir without model.h5" "model.h5: missing" "$W/emptyrun" "$W/emptyrun"
# a store that lacks layer 3's w_up fails half way, after writing copies
cp "$W/pruned.h5" "$W/broken.h5"
/usr/bin/python3 -c 'import h5py,sys; f=h5py.File(sys.argv[1],"a"); del f["layers/3/w_up"]' "$W/broken.h5"
fails_clean "store missing a map" "/layers/3/w_up is missing" "$W/broken.h5" "$W/broken.h5"
finish
