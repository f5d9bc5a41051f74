# losa bench forward / train --json: the keys of the contract (README,
# "Benchmarks") and their consistency; no timing is asserted.
#   gemm: the engine this binary was built with (onednn iff it links libdnnl);
#   dtype: fp32; peak_gflops_f32 > 0 on x86-64 with AVX2+FMA or AVX-512;
#   peak_gflops_bf16: a number iff /proc/cpuinfo has avx512_bf16, else null;
#   fraction_of_physical_peak = (forward|step)_gflops / peak_gflops_f32 and
#   fraction_of_peak = (forward|step)_gflops / sgemm_gflops (the same doubles
#   divided: equal to 1e-12 relative); the median step's rate (what
#   losa plan --bench reads) is positive and at most the best step's;
#   bench forward: first_touch_gbs > 0 (and the set-up's rates, below), and the layers' and the head's
#   rates timed apart (layers_gflops_median, head_gflops_median > 0);
#   bench forward --dtype bf16: dtype bf16 and fraction_of_physical_peak =
#   forward_gflops / peak_gflops_bf16 (its products run on bf16 dot
#   products), null without AVX512-BF16;
#   the GEMM seam's split (kern_gemm_stats): matrix_seconds > 0,
#   matrix_gflops > 0, matrix_fraction_of_physical_peak = matrix_gflops /
#   the dtype's peak, 0 < matrix_share <= 1 (time inside the calls is part
#   of the steps' time), matrix_seconds / matrix_share (the mean step) at
#   least the best step's seconds; and for bench forward the seam's flops
#   per forward (matrix_gflops x matrix_seconds) are exactly the model's
#   forward flops (forward_gflops x seconds) less the attention's, which
#   runs outside the seam: n_layers x B x 2 D T (T + 1) (causal pairs);
#   bench train: the layers' forward share of their time
#   (layer_forward_share, losa plan's schedule reads it) in (0, 1);
#   bench pipeline on 2 ranks: warmup_steps and timed_steps as given, each
#   stage's forward steps (stage_forward_s) within its busy seconds, and
#   with its per-step work (stage_update_s, > 0: every step zeroes,
#   projects and updates the adapters) still within them, the layers'
#   forward share in (0, 1), the bubbles in [0, 1).
source "$(dirname "$0")/lib.sh"
S=$(store stories260K)
info=$("$LOSA" info "$S" --json)
# the split's keys, for any dtype; attn: the expected non-seam flops per
# forward (0 to skip the flops identity)
MATRIX_OK='
def matrix_ok(d, peak_key, attn=None):
    rel = lambda x, y: abs(x - y) <= 1e-9 * abs(y)
    ms, mg, sh, mf = (d[k] for k in ("matrix_seconds", "matrix_gflops", "matrix_share",
                                     "matrix_fraction_of_physical_peak"))
    ok = ms > 0 and mg > 0 and 0 < sh <= 1 and ms / sh >= d["seconds"] * (1 - 1e-12) \
         and (rel(mf, mg / d[peak_key]) if d[peak_key] is not None else mf is None)
    if attn is not None:
        rate = d.get("forward_gflops")
        ok = ok and rel(mg * ms * 1e9, rate * d["seconds"] * 1e9 - attn)
    return ok
'
bf16=0; grep -qw avx512_bf16 /proc/cpuinfo && bf16=1
engine=blas; ldd "$LOSA" | grep -q libdnnl && engine=onednn   # what the binary links
for what in forward train; do
    j=$("$LOSA" bench $what --model "$S" --batch 1 --seqlen 32 --iters 3 --json 2>/dev/null)
    key=$([ $what = forward ] && echo forward_gflops || echo step_gflops)
    check "bench $what: json keys consistent (engine '$engine', bf16 $bf16)" /usr/bin/python3 -c "$MATRIX_OK"'
import json,sys; d=json.loads(sys.argv[1]); key=sys.argv[2]; bf16=sys.argv[3]=="1"; eng=sys.argv[4]
c=json.loads(sys.argv[5])["config"]; B, T = 1, 32
attn = c["n_layers"] * B * 2 * c["dim"] * T * (T + 1) if key == "forward_gflops" else None
a=d[key]; rel=lambda x,y: abs(x-y) <= 1e-12*abs(y)
ok = d["dtype"] == "fp32" and d["gemm"] == eng \
     and d["tokens_per_s"] > 0 and a > 0 and d["sgemm_gflops"] > 0 and d["peak_gflops_f32"] > 0 \
     and ((d["peak_gflops_bf16"] is not None and d["peak_gflops_bf16"] > 0) if bf16
          else d["peak_gflops_bf16"] is None) \
     and rel(d["fraction_of_physical_peak"], a / d["peak_gflops_f32"]) \
     and rel(d["fraction_of_peak"], a / d["sgemm_gflops"]) \
     and 0 < d[key + "_median"] <= a * (1 + 1e-12) \
     and (key != "forward_gflops" or d["first_touch_gbs"] > 0) \
     and (key != "forward_gflops" or (d["layers_gflops_median"] > 0 and d["head_gflops_median"] > 0)) \
     and (key != "step_gflops" or 0 < d["layer_forward_share"] < 1) \
     and matrix_ok(d, "peak_gflops_f32", attn)
print(d); sys.exit(0 if ok else 1)' "$j" $key $bf16 "$engine" "$info"
done
# the set-up's rates (losa plan's setup phase): start_seconds always,
# store_load_gbs with --model, tokenize_bytes_per_s with --model and
# --text / --calib / --train (the run's own loaders on the files: their
# bytes over the seconds, so at most the bytes over 1 ns and at least the
# bytes over the whole command's wall); --text without --model refused
TXT=$D/text/wikitext2/wiki.test.hf_join.txt
CAL=$D/text/c4/c4-train.00000-of-01024.first1000.jsonl
TRN=$D/text/alpaca/alpaca_en_demo.json
t0=$(date +%s.%N)
j=$("$LOSA" bench forward --model "$S" --batch 1 --seqlen 32 --iters 1 --text "$TXT" --calib "$CAL" \
    --train "$TRN" --json 2>/dev/null)
t1=$(date +%s.%N)
check "bench forward --text --calib --train: start_seconds, store_load_gbs, tokenize_bytes_per_s" /usr/bin/python3 -c '
import json, os, sys; d = json.loads(sys.argv[1]); n = sum(os.path.getsize(f) for f in sys.argv[4:]); wall = float(sys.argv[3]) - float(sys.argv[2])
ok = 0 < d["start_seconds"] < wall and d["store_load_gbs"] > 0 and n / wall < d["tokenize_bytes_per_s"] < n * 1e9
print(n, wall, {k: d[k] for k in ("start_seconds", "store_load_gbs", "tokenize_bytes_per_s")}); sys.exit(0 if ok else 1)' \
    "$j" "$t0" "$t1" "$TXT" "$CAL" "$TRN"
j=$("$LOSA" bench forward --batch 1 --seqlen 32 --iters 1 --json 2>/dev/null)
check "bench forward without --model: start_seconds only" /usr/bin/python3 -c '
import json, sys; d = json.loads(sys.argv[1])
sys.exit(0 if d["start_seconds"] > 0 and "store_load_gbs" not in d and "tokenize_bytes_per_s" not in d else 1)' "$j"
check "bench forward --text without --model: refused" \
    bash -c '! "$1" bench forward --text "$2" --json 2>/dev/null | grep -q forward_gflops' _ "$LOSA" "$TXT"
j=$("$LOSA" bench forward --model "$S" --batch 1 --seqlen 32 --iters 1 --dtype bf16 --json 2>/dev/null)
check "bench forward --dtype bf16: fraction of the bf16 physical peak (bf16 $bf16)" /usr/bin/python3 -c "$MATRIX_OK"'
import json,sys; d=json.loads(sys.argv[1]); bf16=sys.argv[2]=="1"
a=d["forward_gflops"]; rel=lambda x,y: abs(x-y) <= 1e-12*abs(y)
ok = d["dtype"] == "bf16" and a > 0 and d["peak_gflops_f32"] > 0 \
     and (rel(d["fraction_of_physical_peak"], a / d["peak_gflops_bf16"]) if bf16
          else d["peak_gflops_bf16"] is None and d["fraction_of_physical_peak"] is None) \
     and matrix_ok(d, "peak_gflops_bf16")
print(d); sys.exit(0 if ok else 1)' "$j" $bf16
j=$("$LOSA" bench train --model "$S" --batch 1 --seqlen 32 --iters 2 --dtype bf16 --head bf16 --json 2>/dev/null)
check "bench train --dtype bf16 --head bf16: the GEMM split of the bf16 peak (bf16 $bf16)" /usr/bin/python3 -c "$MATRIX_OK"'
import json,sys; d=json.loads(sys.argv[1])
ok = d["dtype"] == "bf16" and d["head_dtype"] == "bf16" and matrix_ok(d, "peak_gflops_bf16")
print(d); sys.exit(0 if ok else 1)' "$j"
j=$($MPIRUN -np 2 "$LOSA" bench pipeline --model "$S" --batch 1 --seqlen 32 --micro 2 --iters 1 \
    --warmup 1 --json 2>/dev/null)
check "bench pipeline: warm-up and timed steps, forward steps within busy, bubbles in [0, 1)" \
    /usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[1]); s=d["splits"][0]
ok = d["warmup_steps"] == 1 and d["timed_steps"] == 1 and \
     all(0 < f <= b for f, b in zip(s["stage_forward_s"], s["stage_busy_s"])) and \
     all(0 < u and f + u <= b for f, u, b in
         zip(s["stage_forward_s"], s["stage_update_s"], s["stage_busy_s"])) and \
     0 < d["layer_forward_share"] < 1 and \
     all(0 <= d[k] < 1 for k in ("bubble_measured", "bubble_model", "bubble_model_msgs")) and \
     0 <= s["bubble_schedule"] < 1
print(d); sys.exit(0 if ok else 1)' "$j"
finish
