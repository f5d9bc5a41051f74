# losa generate / eval --sparse auto|on|off on stories260K: the sparse
# kernels (on) give the same greedy text and perplexity as dense BLAS (off);
# generate runs on the KV cache (1 and 2 pipeline stages agree); bad values
# are rejected.
source "$(dirname "$0")/lib.sh"
S=$(store stories260K)
TXT=$D/text/tinystories/tinystories_sample.txt
gen() { "$LOSA" generate --model "$S" --prompt "Once upon a time" --steps 120 --json "$@"; }
off=$(gen --sparse off); on=$(gen --sparse on); auto=$(gen)
p2=$($MPIRUN -np 2 "$LOSA" generate --model "$S" --prompt "Once upon a time" --steps 120 --sparse on --json)
t_off=$(json_get "$off" text)
check "generate: --sparse on text == off" [ "$(json_get "$on" text)" = "$t_off" ]
check "generate: default (auto) text == off" [ "$(json_get "$auto" text)" = "$t_off" ]
check "generate: 2 stages, sparse on == 1 stage dense" [ "$(json_get "$p2" text)" = "$t_off" ]
check "generate: on converts all 35 maps" [ "$(json_get "$on" sparse_maps)" = 35 ]
check "generate: story starts as expected" grep -q "^, there was a little girl named Lily" <<<"$t_off"
ev() { "$LOSA" eval --model "$S" --ppl "$TXT" --seqlen 128 --max-windows 8 --json "$@" 2>/dev/null; }
e_off=$(ev --sparse off); e_on=$(ev --sparse on)
check "eval: ppl on vs off within 1e-5" /usr/bin/python3 -c "import sys; a,b=map(float,sys.argv[1:]); sys.exit(abs(a-b)>1e-5*b)" \
    "$(json_get "$e_on" ppl)" "$(json_get "$e_off" ppl)"
check "generate: --sparse maybe rejected" bash -c "! '$LOSA' generate --model '$S' --sparse maybe >/dev/null 2>&1"
# bench decode: the cases' JSON keys and consistency (small model with
# --quick; no timing asserted)
b=$(OMP_NUM_THREADS=1 "$LOSA" bench decode --quick --steps 2 --rounds 1 --json 2>/dev/null)
check "bench decode: dense, bitmap, bitmap-bf16, 2:4 with times > 0 and ceilings from the bytes" \
    /usr/bin/python3 -c '
import json,sys; o=json.loads(sys.argv[1]); c={x["format"]: x for x in o["cases"]}
ok = list(c) == ["dense", "bitmap", "bitmap-bf16", "2:4"] and o["layers"] == [2, 4]
ok = ok and all(x["maps_ms"] > 0 and len(x["token_ms"]) == 2 for x in c.values())
ok = ok and c["dense"]["ratio_to_dense"] == 1 and abs(c["bitmap"]["density"] - 0.3) < 0.01
ok = ok and abs(c["2:4"]["density"] - 0.5) < 0.01
# ceiling = dense fp32 bytes / format bytes: at density 0.3 a bitmap is
# 1/8 + 4 * 0.3 bytes per weight (+ its int64 row offsets), bf16 1/8 + 2 * 0.3
for f, vb in (("bitmap", 4), ("bitmap-bf16", 2)):
    x = c[f]; per_w = 1 / 8 + vb * x["density"]
    ok = ok and abs(x["ceiling"] - 4 / per_w) / (4 / per_w) < 0.02
    ok = ok and abs(x["ceiling"] - o["dense_layer_gbytes"] / x["layer_gbytes"]) < 1e-9
sys.exit(0 if ok else 1)' "$b"
# bench decode --dtype bf16: the dense-bf16 case after the fp32 ones, its
# bytes half of dense fp32 (ceiling 2)
b=$(OMP_NUM_THREADS=1 "$LOSA" bench decode --quick --steps 2 --rounds 1 --dtype bf16 --json 2>/dev/null)
check "bench decode --dtype bf16: a dense-bf16 case with ceiling 2 and times > 0" \
    /usr/bin/python3 -c '
import json,sys; o=json.loads(sys.argv[1]); c={x["format"]: x for x in o["cases"]}
ok = list(c) == ["dense", "bitmap", "bitmap-bf16", "2:4", "dense-bf16"]
x = c["dense-bf16"]
ok = ok and x["density"] == 1 and abs(x["ceiling"] - 2) < 1e-9 and x["maps_ms"] > 0
ok = ok and all(t > 0 for t in x["token_ms"])
sys.exit(0 if ok else 1)' "$b"
# bench: the matrix cases of one shape (keys and consistency, ceiling = dense
# bytes / format bytes; no timing asserted)
b=$(OMP_NUM_THREADS=1 "$LOSA" bench sparse --shape 256x3000 --sparsity 0.7 \
    --rounds 1 --reps 1 --json 2>/dev/null)
check "bench sparse --shape: 70% and 2:4 cases of 256x3000, f32 and bf16, speed-ups > 0" /usr/bin/python3 -c '
import json,sys; c=json.loads(sys.argv[1])["cases"]
keys = {(x["pattern"], x["format"], x["batch"]) for x in c}
ok = all(x["shape"] == [256, 3000] and x["speedup"] > 0 and x["speedup_of_best"] > 0 and
         x["gbytes_per_s"] > 0 for x in c) and \
     {("unstructured", "bitmap", 1), ("unstructured", "bitmap", 128),
      ("unstructured", "bitmap-bf16", 1), ("2:4", "bitmap", 1)} <= keys and \
     all(abs(x["density"] - (0.3 if x["pattern"] == "unstructured" else 0.5)) < 0.01 for x in c) and \
     all(abs(x["fraction_of_ceiling"] * x["ceiling"] - x["speedup"]) < 1e-9 * x["speedup"] and
         abs(x["ceiling"] - x["dense_s"] * x["dense_gbytes_per_s"] /  # dense / sparse bytes
             (x["sparse_s"] * x["gbytes_per_s"])) < 1e-6 * x["ceiling"] for x in c)
sys.exit(0 if ok else 1)' "$b"
# --format 2:4 --flush read: only the 2:4 format's cases (decode), the flush mode echoed
b=$(OMP_NUM_THREADS=1 "$LOSA" bench sparse --shape 256x3000 --decode-only --format 2:4 \
    --flush read --rounds 1 --reps 1 --json 2>/dev/null)
check "bench sparse --format 2:4 --flush read: one 2:4 decode case, flush read" /usr/bin/python3 -c '
import json,sys; o=json.loads(sys.argv[1]); c=o["cases"]
ok = o["flush"] == "read" and [(x["pattern"], x["format"], x["batch"]) for x in c] == [("2:4", "2:4", 1)]
sys.exit(0 if ok else 1)' "$b"
check "bench sparse: --shape 4096 rejected" bash -c "! '$LOSA' bench sparse --shape 4096 >/dev/null 2>&1"
finish
