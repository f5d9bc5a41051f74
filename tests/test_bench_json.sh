# losa bench forward / train --json: the keys of the contract (README,
# "Benchmarks") and their consistency; no timing is asserted.
#   gemm: the engine this binary was built with (onednn iff it links libdnnl);
#   dtype: fp32; peak_gflops_f32 > 0 on x86-64 with AVX2+FMA or AVX-512;
#   peak_gflops_bf16: a number iff /proc/cpuinfo has avx512_bf16, else null;
#   fraction_of_physical_peak = (forward|step)_gflops / peak_gflops_f32 and
#   fraction_of_peak = (forward|step)_gflops / sgemm_gflops (the same doubles
#   divided: equal to 1e-12 relative); the median step's rate (what
#   losa plan --bench reads) is positive and at most the best step's;
#   bench forward: first_touch_gbs > 0, and the layers' and the head's
#   rates timed apart (layers_gflops_median, head_gflops_median > 0);
#   bench forward --dtype bf16: dtype bf16 and fraction_of_physical_peak =
#   forward_gflops / peak_gflops_bf16 (its products run on bf16 dot
#   products), null without AVX512-BF16.
source "$(dirname "$0")/lib.sh"
S=$(store stories260K)
bf16=0; grep -qw avx512_bf16 /proc/cpuinfo && bf16=1
engine=blas; ldd "$LOSA" | grep -q libdnnl && engine=onednn   # what the binary links
for what in forward train; do
    j=$("$LOSA" bench $what --model "$S" --batch 1 --seqlen 32 --iters 3 --json 2>/dev/null)
    key=$([ $what = forward ] && echo forward_gflops || echo step_gflops)
    check "bench $what: json keys consistent (engine '$engine', bf16 $bf16)" /usr/bin/python3 -c '
import json,sys; d=json.loads(sys.argv[1]); key=sys.argv[2]; bf16=sys.argv[3]=="1"; eng=sys.argv[4]
a=d[key]; rel=lambda x,y: abs(x-y) <= 1e-12*abs(y)
ok = d["dtype"] == "fp32" and d["gemm"] == eng \
     and d["tokens_per_s"] > 0 and a > 0 and d["sgemm_gflops"] > 0 and d["peak_gflops_f32"] > 0 \
     and ((d["peak_gflops_bf16"] is not None and d["peak_gflops_bf16"] > 0) if bf16
          else d["peak_gflops_bf16"] is None) \
     and rel(d["fraction_of_physical_peak"], a / d["peak_gflops_f32"]) \
     and rel(d["fraction_of_peak"], a / d["sgemm_gflops"]) \
     and 0 < d[key + "_median"] <= a * (1 + 1e-12) \
     and (key != "forward_gflops" or d["first_touch_gbs"] > 0) \
     and (key != "forward_gflops" or (d["layers_gflops_median"] > 0 and d["head_gflops_median"] > 0))
print(d); sys.exit(0 if ok else 1)' "$j" $key $bf16 "$engine"
done
j=$("$LOSA" bench forward --model "$S" --batch 1 --seqlen 32 --iters 1 --dtype bf16 --json 2>/dev/null)
check "bench forward --dtype bf16: fraction of the bf16 physical peak (bf16 $bf16)" /usr/bin/python3 -c '
import json,sys; d=json.loads(sys.argv[1]); bf16=sys.argv[2]=="1"
a=d["forward_gflops"]; rel=lambda x,y: abs(x-y) <= 1e-12*abs(y)
ok = d["dtype"] == "bf16" and a > 0 and d["peak_gflops_f32"] > 0 \
     and (rel(d["fraction_of_physical_peak"], a / d["peak_gflops_bf16"]) if bf16
          else d["peak_gflops_bf16"] is None and d["fraction_of_physical_peak"] is None)
print(d); sys.exit(0 if ok else 1)' "$j" $bf16
finish
