#!/usr/bin/env bash
# fp32 and bf16 side by side in one run:
#  - minillama WikiText-2 test perplexity at S = 256 (`losa eval --dtype`),
#    fp32 and bf16, and their relative difference (EVAL=1, the default);
#  - `losa bench forward`, three builds/dtypes per case, alternated within
#    each round so that the machine's noise hits all alike:
#      blas  fp32   the OpenBLAS build ($BLAS, build-blas/losa)
#      onednn fp32  the oneDNN build ($LOSA, build/losa) --dtype fp32
#      onednn bf16  the same binary --dtype bf16 (maps and head bf16, packed)
#    cases: each thread count of THREADS_LIST ("1 2"; OMP_NUM_THREADS and
#    OPENBLAS_NUM_THREADS both set) x
#      mini   the default minillama-shaped random model, 8 x 256
#      7b:BxT a 2-layer LLaMA-2-7B-shaped synthetic store ($STORE7B, written
#             by `losa synth` if missing: 2.7 GB), 1 x 256 and 4 x 256
#    ROUNDS rounds (3) of ITERS timed forwards (after one warm-up; 3 for mini,
#    ITERS7B (1) for the 7B shapes).  Prints per case the median tokens/s of
#    each, the ratios of medians (onednn fp32 / blas, bf16 / blas, bf16 /
#    onednn fp32) and bf16's median fraction_of_physical_peak (of the bf16
#    peak measured in the same run).  Every JSON line is kept in $OUT.
# CASES (default "mini 7b:1x256 7b:4x256") selects cases; SUMMARY="f.jsonl
# ..." only prints the table of earlier runs' files (e.g. one per THREADS_LIST).
#   sbatch jobs/bench_bf16.sh     or     EVAL=0 bash jobs/bench_bf16.sh
#SBATCH --job-name=losa-bench-bf16
#SBATCH --nodes=1                 # one node, one rank
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2         # the rank's threads (OpenMP / OpenBLAS)
#SBATCH --time=01:30:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
ROOT=${LOSA_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
LOSA=${LOSA:-$ROOT/build/losa}
BLAS=${BLAS:-$ROOT/build-blas/losa}
DATA=${LOSA_DATA:-$ROOT/../shared/data}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-3}
ITERS7B=${ITERS7B:-1}
EVAL=${EVAL:-1}
OUT=${OUT:-$ROOT/build/bench_bf16.jsonl}
STORE=${STORE:-$ROOT/build/minillama.h5}
STORE7B=${STORE7B:-$ROOT/build/llama2-7b-2layers.h5}
THREADS_LIST=${THREADS_LIST:-1 2}
CASES=${CASES:-mini 7b:1x256 7b:4x256}
summary() {
/usr/bin/python3 - "$@" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f)]
ppl = {r["dtype"]: r["ppl"] for r in rows if r["what"] == "eval"}
if ppl: print(f"ppl S=256: fp32 {ppl['fp32']:.4f}  bf16 {ppl['bf16']:.4f}  "
              f"bf16/fp32 - 1 = {100 * (ppl['bf16'] / ppl['fp32'] - 1):+.4f}%")
cases = {}
for r in rows:
    if r["what"] == "forward":
        cases.setdefault((r["threads"], r["case"]), {}).setdefault(r["run"], []).append(r)
print("tokens/s of blas fp32 | onednn fp32 | onednn bf16 and the ratios onednn fp32 / blas, "
      "bf16 / blas, bf16 / onednn fp32; 'med' of the medians over rounds, 'best' of the best "
      "rounds (the least disturbed on a shared machine); phys: bf16's fraction of the bf16 peak")
print(f"{'thr':>3} {'case':<9} {'':4} {'blas32':>8} {'dnn32':>8} {'bf16':>8}  "
      f"{'dnn32/blas':>10} {'bf16/blas':>9} {'bf16/dnn32':>10} {'phys':>5}")
for (t, c), runs in sorted(cases.items()):
    b, f, h = (runs.get(k, []) for k in ("blas fp32", "onednn fp32", "onednn bf16"))
    if not (b and f and h): continue
    for lab, agg in (("med", statistics.median), ("best", max)):
        tb, tf, th = (agg([x["tokens_per_s"] for x in v]) for v in (b, f, h))
        fr = [x["fraction_of_physical_peak"] for x in h if x["fraction_of_physical_peak"] is not None]
        frs = f"{agg(fr):5.2f}" if fr else f"{'n/a':>5}"
        print(f"{t:>3} {c:<9} {lab:4} {tb:8.1f} {tf:8.1f} {th:8.1f}  {tf / tb:10.2f} {th / tb:9.2f} "
              f"{th / tf:10.2f} {frs}  ({min(len(b), len(f), len(h))} rounds)")
PY
}
# SUMMARY="a.jsonl b.jsonl": print the table of earlier runs' files, run nothing
if [ -n "${SUMMARY:-}" ]; then summary $SUMMARY; exit 0; fi
for b in "$LOSA" "$BLAS"; do
    [ -x "$b" ] || { echo "bench_bf16: $b missing (make build; make BUILD=build-blas GEMM=blas build)" >&2; exit 2; }
done
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
case " $CASES " in *" 7b:"*)
    [ -f "$STORE7B" ] || "$LOSA" synth --config "$ROOT/input/llama2-7b.json" --layers 2 --out "$STORE7B" >/dev/null ;;
esac
echo "bench_bf16: $ROUNDS rounds, threads '$THREADS_LIST', cases '$CASES', $(uptime | sed 's/.*load/load/')" >&2
if [ "$EVAL" = 1 ]; then
    [ -f "$STORE" ] || "$LOSA" import "$DATA/models/minillama" --out "$STORE" >/dev/null
    for dt in fp32 bf16; do
        "$LOSA" eval --model "$STORE" --ppl "$DATA/text/wikitext2/wiki.test.hf_join.txt" \
            --seqlen 256 --dtype "$dt" --json 2>/dev/null | sed "s/^{/{\"what\":\"eval\",/" >>"$OUT"
    done
fi
# one forward bench: $1 threads, $2 case, $3 engine label, $4 binary, $5 dtype
one() {
    local args
    case $2 in
        mini) args=(--iters "$ITERS") ;;
        7b:*) local bt=${2#7b:}
              args=(--model "$STORE7B" --batch "${bt%x*}" --seqlen "${bt#*x}" --iters "$ITERS7B") ;;
    esac
    OMP_NUM_THREADS=$1 OPENBLAS_NUM_THREADS=$1 "$4" bench forward "${args[@]}" --dtype "$5" --json \
        2>/dev/null | sed "s/^{/{\"what\":\"forward\",\"threads\":$1,\"case\":\"$2\",\"run\":\"$3 $5\",/" >>"$OUT"
}
for t in $THREADS_LIST; do
    for c in $CASES; do
        for r in $(seq 1 "$ROUNDS"); do
            one "$t" "$c" blas "$BLAS" fp32
            one "$t" "$c" onednn "$LOSA" fp32
            one "$t" "$c" onednn "$LOSA" bf16
            echo "  threads $t, $c: round $r done" >&2
        done
    done
done
summary "$OUT"
