#!/bin/bash
# The default job in fp32 and in bf16 over several training seeds: does bf16
# keep LoSA < +LoRA < pruned, and how far is its LoSA perplexity from fp32's
# beside the seed-to-seed spread of fp32 itself?
#
# One default job (input/default.ini, 1 rank) per seed and dtype, fp32 and
# bf16 alternating so drift hits both alike.  STORE (default: the shipped
# build/stories260K.h5, fp32 values) is what both read; STORE=bf16 imports the
# same checkpoint with bf16 values first (--dtype bf16), so fp32 and bf16 start
# from identical weights and differ only in the arithmetic (a paired
# comparison).  Prints each run and, per dtype, the mean and sample standard
# deviation over seeds; exits 1 if any run breaks LoSA < +LoRA < pruned.
#
#   SEEDS="0 1 2 3" OUT=/tmp/ppl bash jobs/bf16_ppl_check.sh
#   STORE=bf16 SEEDS="0 1" OUT=/tmp/ppl_paired bash jobs/bf16_ppl_check.sh
#   RUNS=0 OUT=/tmp/ppl bash jobs/bf16_ppl_check.sh    # summarise OUT again
#   DTYPES=bf16 SEEDS=5 OUT=/tmp/ppl bash jobs/bf16_ppl_check.sh   # add one run
#
# About 6-10 minutes a run at 1 thread (THREADS, default 1).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOSA=${LOSA:-$ROOT/build/losa}
DATA=${DATA:-$ROOT/../shared/data}
SEEDS=${SEEDS:-0 1 2}
OUT=${OUT:-$ROOT/runs/bf16_ppl_check}
STORE=${STORE:-$ROOT/build/stories260K.h5}
THREADS=${THREADS:-1}
DTYPES=${DTYPES:-fp32 bf16}
RUNS=${RUNS:-1}
mkdir -p "$OUT"
if [ "$STORE" = bf16 ]; then
    STORE=$OUT/stories260K_bf16.h5
    [ -f "$STORE" ] || "$LOSA" import "$DATA/models/stories260K/stories260K.bin" \
        --tokenizer "$DATA/models/stories260K/tok512.bin" --dtype bf16 --out "$STORE" >/dev/null
fi
[ -f "$STORE" ] || { echo "bf16_ppl_check: no store $STORE (make build/stories260K.h5)" >&2; exit 2; }
if [ "$RUNS" = 1 ]; then
    for s in $SEEDS; do
        for dt in $DTYPES; do
            dir=$OUT/seed$s-$dt
            rm -rf "$dir"
            (cd "$ROOT" && OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS \
                "$LOSA" run input/default.ini --set model.store="$STORE" --set output.dir="$dir" \
                --set model.dtype=$dt --set train.seed="$s" --json 2>"$dir.log" >"$dir.json.tmp") &&
                mv "$dir.json.tmp" "$dir.json" ||
                { echo "bf16_ppl_check: seed $s $dt failed, see $dir.log" >&2; exit 1; }
            echo "  seed $s $dt: $(cat "$dir.json")" >&2
        done
    done
fi
/usr/bin/python3 - "$OUT" <<'EOF'
import json, glob, os, re, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(glob.glob(os.path.join(out, "seed*-*.json"))):
    m = re.match(r"seed(\d+)-(fp32|bf16)\.json", os.path.basename(f))
    if m:
        runs[(int(m.group(1)), m.group(2))] = json.load(open(f))
keys = ["dense_ppl", "pruned_ppl", "lora_ppl", "losa_ppl"]
print("%-6s %-5s %10s %10s %10s %10s %9s" % ("seed", "dtype", "dense", "pruned", "+LoRA", "LoSA", "sparsity"))
bad = 0
for (s, dt), r in sorted(runs.items()):
    order = r["losa_ppl"] < r["lora_ppl"] < r["pruned_ppl"]
    bad += not order
    print("%-6d %-5s %10.2f %10.2f %10.2f %10.2f %9.5f%s" % (
        s, dt, *[r[k] for k in keys], r["sparsity"], "" if order else "  LoSA < +LoRA < pruned BROKEN"))
mean, var = {}, {}
for dt in ("fp32", "bf16"):
    v = [r["losa_ppl"] for (s, d), r in runs.items() if d == dt]
    if v:
        mean[dt] = statistics.mean(v)
        sd = statistics.stdev(v) if len(v) > 1 else float("nan")
        var[dt] = sd * sd / len(v)  # squared standard error of the mean
        print("%s LoSA: mean %.2f, sd %.2f over %d seeds (sd/mean %.1f %%)" % (dt, mean[dt], sd, len(v), 100 * sd / mean[dt]))
if len(mean) == 2:
    # the difference of two independent means; its standard error from the
    # two sample variances (a rough 95 % interval: +- 2 standard errors)
    se = 100 * (var["fp32"] + var["bf16"]) ** 0.5 / mean["fp32"]
    print("bf16 LoSA mean vs fp32 mean: %+.2f %% (standard error %.2f %%)" % (100 * (mean["bf16"] / mean["fp32"] - 1), se))
    pairs = [(runs[(s, "bf16")]["losa_ppl"] / runs[(s, "fp32")]["losa_ppl"] - 1) * 100
             for (s, d) in sorted(runs) if d == "fp32" and (s, "bf16") in runs]
    if pairs:
        # the same seed draws the same data order, initialisation and
        # dropout in both: the per-seed differences, their mean and its
        # standard error (STORE=bf16: also the same starting weights)
        line = "per seed bf16 vs fp32: " + ", ".join("%+.1f %%" % p for p in pairs)
        if len(pairs) > 1:
            line += "; mean %+.2f %% (standard error %.2f %%)" % (
                statistics.mean(pairs), statistics.stdev(pairs) / len(pairs) ** 0.5)
        print(line)
sys.exit(1 if bad else 0)
EOF
