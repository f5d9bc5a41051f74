#!/usr/bin/env bash
# fp32 and bf16 map weights side by side in one run (oneDNN build):
#  - minillama WikiText-2 test perplexity at S = 256 (`losa eval --dtype`),
#    fp32 and bf16, and their relative difference;
#  - `losa bench forward --dtype` (8 x 256, minillama store) for ROUNDS rounds
#    (5), alternating the dtypes so the machine's noise hits both alike;
#    median and best tokens/s per dtype and the bf16 / fp32 ratio of medians.
# STORE: the minillama store (imported into $ROOT/build/ if missing); EVAL=0
# skips the perplexities (forward rounds only).
#   sbatch jobs/bench_bf16.sh     or     bash jobs/bench_bf16.sh
#SBATCH --job-name=losa-bench-bf16
#SBATCH --nodes=1                 # one node, one rank
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2         # the rank's OpenMP threads
#SBATCH --time=00:30:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
ROOT=${LOSA_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
LOSA=${LOSA:-$ROOT/build/losa}
DATA=${LOSA_DATA:-$ROOT/../shared/data}
ROUNDS=${ROUNDS:-5}
EVAL=${EVAL:-1}
OUT=${OUT:-$ROOT/build/bench_bf16.jsonl}
STORE=${STORE:-$ROOT/build/minillama.h5}
THREADS=${THREADS:-${SLURM_CPUS_PER_TASK:-$(getconf _NPROCESSORS_ONLN)}}
export OMP_NUM_THREADS=$THREADS
[ -f "$STORE" ] || "$LOSA" import "$DATA/models/minillama" --out "$STORE" >/dev/null
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
echo "bench_bf16: $ROUNDS rounds, $THREADS threads, $(uptime | sed 's/.*load/load/')" >&2
[ "$EVAL" = 1 ] && for dt in fp32 bf16; do
    "$LOSA" eval --model "$STORE" --ppl "$DATA/text/wikitext2/wiki.test.hf_join.txt" \
        --seqlen 256 --dtype "$dt" --json 2>/dev/null | sed "s/^{/{\"what\":\"eval\",/" >>"$OUT"
done
for r in $(seq 1 "$ROUNDS"); do
    for dt in fp32 bf16; do
        "$LOSA" bench forward --model "$STORE" --dtype "$dt" --json 2>/dev/null |
            sed "s/^{/{\"what\":\"forward\",/" >>"$OUT"
    done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ppl = {r["dtype"]: r["ppl"] for r in rows if r["what"] == "eval"}
if ppl: print(f"ppl S=256: fp32 {ppl['fp32']:.4f}  bf16 {ppl['bf16']:.4f}  "
      f"bf16/fp32 - 1 = {100 * (ppl['bf16'] / ppl['fp32'] - 1):+.4f}%")
tps = {}
for r in rows:
    if r["what"] == "forward": tps.setdefault(r["dtype"], []).append(r["tokens_per_s"])
med = {k: statistics.median(v) for k, v in tps.items()}
for k in ("fp32", "bf16"):
    print(f"forward {k}: median {med[k]:.0f} tokens/s, best {max(tps[k]):.0f} ({len(tps[k])} rounds)")
print(f"forward bf16 / fp32 (medians): {med['bf16'] / med['fp32']:.2f}x")
PY
