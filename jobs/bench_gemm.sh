#!/usr/bin/env bash
# The two GEMM engines side by side in one run: `losa bench train` (B x T =
# 4 x 256) and `losa bench forward` (8 x 256) on the minillama shapes, with
# the oneDNN build ($ONEDNN, default build/losa) and the CBLAS build ($BLAS,
# default build-blas/losa; `make bench-gemm` builds both), ROUNDS rounds (5)
# alternating the engines so that the machine's noise hits both alike.
# Prints per engine the median and best tokens/s, the physical peaks and the
# fractions, and the oneDNN / BLAS ratios; every JSON line is kept in $OUT.
# THREADS (default: the allocation's or the machine's cores) per engine.
#   sbatch jobs/bench_gemm.sh     or     bash jobs/bench_gemm.sh
#SBATCH --job-name=losa-bench-gemm
#SBATCH --nodes=1                 # one node, one rank
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2         # the rank's threads (OpenMP for oneDNN, OpenBLAS for BLAS)
#SBATCH --time=00:30:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
ROOT=${LOSA_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
ONEDNN=${ONEDNN:-$ROOT/build/losa}
BLAS=${BLAS:-$ROOT/build-blas/losa}
ROUNDS=${ROUNDS:-5}
OUT=${OUT:-$ROOT/build/bench_gemm.jsonl}
# not nproc: it follows OMP_NUM_THREADS
THREADS=${THREADS:-${SLURM_CPUS_PER_TASK:-$(getconf _NPROCESSORS_ONLN)}}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
for b in "$ONEDNN" "$BLAS"; do [ -x "$b" ] || { echo "bench_gemm: $b missing (make bench-gemm)" >&2; exit 2; }; done
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
echo "bench_gemm: $ROUNDS rounds, $THREADS threads, $(uptime | sed 's/.*load/load/')" >&2
for r in $(seq 1 "$ROUNDS"); do
    for what in train forward; do
        for bin in "$ONEDNN" "$BLAS"; do
            j=$("$bin" bench $what --json 2>/dev/null)
            echo "{\"round\": $r, \"bench\": \"$what\", \"result\": $j}" >>"$OUT"
            echo "round $r $what $(echo "$j" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin)
print("%-6s %7.0f tokens/s" % (d["gemm"], d["tokens_per_s"]))')" >&2
        done
    done
done
echo "bench_gemm: done, $(uptime | sed 's/.*load/load/')" >&2
/usr/bin/python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("JSON lines in", sys.argv[1])
print("%-8s %-7s %10s %10s %9s %9s %9s %9s" % ("bench", "gemm", "median t/s", "best t/s",
      "GFLOP/s", "peak f32", "peak bf16", "of phys"))
med = {}
for what in ("train", "forward"):
    for eng in ("onednn", "blas"):
        rs = [x["result"] for x in rows if x["bench"] == what and x["result"]["gemm"] == eng]
        if not rs: continue
        tps = [r["tokens_per_s"] for r in rs]
        g = "step_gflops" if what == "train" else "forward_gflops"
        best = max(rs, key=lambda r: r["tokens_per_s"])
        med[what, eng] = (statistics.median(tps), max(tps))
        bf = best["peak_gflops_bf16"]
        print("%-8s %-7s %10.0f %10.0f %9.1f %9.1f %9s %9.2f" % (what, eng, med[what, eng][0],
              max(tps), best[g], best["peak_gflops_f32"], "null" if bf is None else "%.1f" % bf,
              best["fraction_of_physical_peak"]))
for what in ("train", "forward"):
    if (what, "onednn") in med and (what, "blas") in med:
        a, b = med[what, "onednn"], med[what, "blas"]
        print("%s: oneDNN / BLAS tokens/s = %.2fx (medians), %.2fx (best)" % (what, a[0] / b[0], a[1] / b[1]))
EOF
