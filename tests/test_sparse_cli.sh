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
# bench: the decode section's JSON keys (small model with --quick; no timing asserted)
b=$(OMP_NUM_THREADS=1 "$LOSA" bench sparse --quick --decode-only --steps 4 --json 2>/dev/null)
check "bench sparse: decode[1] is 70% with both rates > 0" /usr/bin/python3 -c '
import json,sys; d=json.loads(sys.argv[1])["decode"]
ok = len(d) == 2 and abs(d[1]["sparsity"] - 0.7) < 1e-9 and 0.29 < d[1]["density"] < 0.31 \
     and d[1]["dense_tokens_per_s"] > 0 and d[1]["sparse_tokens_per_s"] > 0 and "speedup" in d[1]
sys.exit(0 if ok else 1)' "$b"
# bench: the matrix cases of one shape (keys and consistency; no timing asserted)
b=$(OMP_NUM_THREADS=1 "$LOSA" bench sparse --shape 256x3000 --sparsity 0.7 --matrices-only \
    --rounds 1 --reps 1 --json 2>/dev/null)
check "bench sparse --shape: 70% and 2:4 cases of 256x3000, f32 and bf16, speed-ups > 0" /usr/bin/python3 -c '
import json,sys; c=json.loads(sys.argv[1])["cases"]
keys = {(x["pattern"], x["format"], x["batch"]) for x in c}
ok = all(x["shape"] == [256, 3000] and x["speedup"] > 0 and x["speedup_of_best"] > 0 and
         x["gbytes_per_s"] > 0 for x in c) and \
     {("unstructured", "bitmap", 1), ("unstructured", "bitmap", 128),
      ("unstructured", "bitmap-bf16", 1), ("2:4", "bitmap", 1)} <= keys and \
     all(abs(x["density"] - (0.3 if x["pattern"] == "unstructured" else 0.5)) < 0.01 for x in c)
sys.exit(0 if ok else 1)' "$b"
check "bench sparse: --shape 4096 rejected" bash -c "! '$LOSA' bench sparse --shape 4096 >/dev/null 2>&1"
finish
