#!/usr/bin/env bash
#SBATCH --job-name=losa-plan-check # losa plan's time model against measured runs
#SBATCH --ntasks=2                 # 1 rank, 2 replicas, 2 stages on one node
#SBATCH --time=01:00:00             # ROUNDS=3 took 6 minutes on 2 cores
# Runs `losa bench forward` and `bench train` on each model (the rates of
# this node, the same shapes as the runs), then for each case `losa plan`
# with those rates and the real run, and prints projected vs measured
# seconds per phase (from run.h5) with their ratio.  Cases: the default job
# (stories260K, Wanda 70 %, mode compare) and a minillama LoSA run, each
# with a small budget, on 1 rank, 2 data-parallel ranks and 2 stages.
# Phases compared: setup (before the first phase: setup/seconds), prune,
# lora_train, grams, losa_prune, losa_train, one perplexity pass
# (lora/eval_seconds, else losa/eval_seconds) and the total.
#   jobs/plan_check.sh            (or sbatch jobs/plan_check.sh)
# The 2-stage cases split by the head + loss cost `bench train` measured
# (parallel.head_cost_layers, in `losa plan` and `losa run` alike).
# Env: OUT (default runs/plan_check/<job id or date>), LOSA, LOSA_DATA,
# HEAD_COST (1, default: pass the measured head cost; 0: the cost model's),
# RUNS (1, default; 0: no bench and no run: project again with $LOSA from
# the bench JSONs and against the runs already in OUT's round directories
# r1, r2, ..., e.g. to compare two versions of the time model on the same
# measurements; output of versions before ROUNDS, flat in OUT, is not
# read), ROUNDS (1, default:
# benches and runs repeated ROUNDS times in turn; each case's projection
# and measurement are then the medians over the rounds: on the idle 2-core
# VM the default job's +LoRA training went from 18.8k to 27.8k tokens/s
# between identical 2-thread runs), ITERS (10: bench forward/train steps),
# PRETOUCH_GB (0, default: off; N: touch N GB of memory once before the
# benches: on a VM whose host backs guest memory on first use, pages the
# guest never touched cost the host's faults, 0.4 GB/s on the 2-core dev
# VM against 9 GB/s once backed, so a run's fresh buffers (the eval
# logits, the trainer) took up to twice their projected time; a node's
# first touch is the second rate, what bench forward's first_touch_gbs
# measures).  NO_PAGE_REPORTING (0, default; 1: while the check runs, a
# guest kernel's free page reporting is held off, then restored: with it,
# memory a process frees is handed back to the host (virtio-balloon), so
# every run's fresh buffers cost the host's first touch again; on the dev
# VM a LoSA step's trainer build took 0.02-0.37 s for the same 140 MB.
# Needs root and a kernel that takes a page_reporting_order above its
# largest buddy order (the dev VM's does; mainline caps it at that order,
# which still reports: the check then says so and goes on as it is).  Where
# the kernel counts reported_kib, the check prints how much the guest
# reported meanwhile).
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
LOSA=${LOSA:-build/losa}
DATA=${LOSA_DATA:-../shared/data}
OUT=${OUT:-runs/plan_check/${SLURM_JOB_ID:-$(date +%Y%m%d-%H%M%S)}}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=${MPIRUN:-mpirun --oversubscribe --bind-to none}
/usr/bin/python3 -c 'import h5py, numpy' 2>/dev/null ||
    { echo "plan_check: /usr/bin/python3 lacks h5py/numpy (make test-deps installs them)" >&2; exit 2; }
mkdir -p "$OUT"
source jobs/shipped_models.sh # S260, MINI

# name | store | overrides (small budgets: a few minutes per run)
CASES=(
  "default|$S260|--set losa.samples_per_step=64 --set losa.last_step_samples=192 --set eval.max_windows=100"
  "minillama|$MINI|--set losa.mode=losa --set prune.method=sparsegpt --set data.calib_n=8 --set losa.rmi_n=8 --set losa.steps=2 --set losa.samples_per_step=16 --set losa.last_step_samples=16 --set eval.max_windows=8 --set train.seqlen=128 --set data.calib_seqlen=128 --set eval.seqlen=128"
)
LAYOUTS=("1 1" "1 2" "2 1") # pp dp

ROUNDS=${ROUNDS:-1}
if [ "${RUNS:-1}" != 1 ]; then # project again: the rounds OUT holds (r1, r2, ...)
    ROUNDS=$(find "$OUT" -maxdepth 1 -type d -name 'r[0-9]*' | wc -l)
    [ "$ROUNDS" -gt 0 ] || { echo "plan_check: RUNS=0: no round directories r1, r2, ... in $OUT" >&2; exit 2; }
fi
PR=/sys/module/page_reporting/parameters
reported_kib() { cat "$PR/reported_kib" 2>/dev/null || echo -1; }
pr_order=
cleanup() {
    kill $(jobs -p) 2>/dev/null || true # a bench's copy, if its twin failed
    [ -z "$pr_order" ] || echo "$pr_order" >"$PR/page_reporting_order"
}
trap cleanup EXIT
trap 'exit 143' TERM # scancel, the time limit: the EXIT trap restores
trap 'exit 130' INT
trap 'exit 129' HUP
if [ "${NO_PAGE_REPORTING:-0}" = 1 ] && [ "${RUNS:-1}" = 1 ]; then
    # one above the largest buddy order (/proc/buddyinfo's columns): no free
    # block is reported
    off=$(awk 'NR == 1 { print NF - 4 }' /proc/buddyinfo)
    cur=$(cat "$PR/page_reporting_order" 2>/dev/null || echo none)
    if ! [[ $cur =~ ^[0-9]+$ ]] || [ "$cur" -ge "$off" ]; then # absent, -1, or held off already
        echo "plan_check: NO_PAGE_REPORTING=1: page_reporting_order is '$cur' here (no" \
            "reporting, or another check holds it off): left as it is" >&2
    elif ! { echo "$off" >"$PR/page_reporting_order"; } 2>/dev/null; then
        echo "plan_check: NO_PAGE_REPORTING=1: page_reporting_order $off refused (not root," \
            "or a kernel that caps it at the largest order, which still reports): left at $cur" >&2
    else
        pr_order=$cur
    fi
fi
kib0=$(reported_kib)
if [ "${PRETOUCH_GB:-0}" != 0 ] && [ "${RUNS:-1}" = 1 ]; then
    /usr/bin/python3 -c 'import sys, numpy as np; np.ones(int(float(sys.argv[1]) * 2**30), np.uint8)' \
        "$PRETOUCH_GB"
fi
for ((r = 1; r <= ROUNDS; r++)); do
R=$OUT/r$r; mkdir -p "$R"
for c in "${CASES[@]}"; do
    IFS='|' read -r name store sets <<<"$c"
    read -ra SETS <<<"$sets"
    # the case's shapes (train, eval and calibration batches)
    read -r tb tT eb eT cn cS etext ctext ttext < <(/usr/bin/python3 - input/default.ini "${SETS[@]}" <<'PY'
import configparser, sys
cp = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
cp.read(sys.argv[1])
v = {f"{s}.{k}": cp[s][k] for s in cp.sections() for k in cp[s]}
a = sys.argv[2:]
for i in range(0, len(a), 2):
    k, x = a[i + 1].split("=", 1)
    v[k] = x
# the files last, "-" for an empty one (read splits at blanks)
print(v["train.batch"], v["train.seqlen"], v.get("eval.batch", "8"), v["eval.seqlen"],
      v["data.calib_n"], v["data.calib_seqlen"],
      *(v.get(k) or "-" for k in ("data.eval_text", "data.calib", "data.train")))
PY
)
    # the rates of this node as a rank of each layout sees it: 2 threads for
    # the 1-rank layout; for the 2-rank layouts 1 thread and a second copy
    # of the same bench running beside it (two ranks share the cores' L3
    # and memory bandwidth: minillama's 20 MB of weights fit the 32 MB L3
    # once, not twice; the copy's JSON is discarded)
    for thr in 1 2; do
        [ "${RUNS:-1}" = 1 ] || break
        export OPENBLAS_NUM_THREADS=$thr OMP_NUM_THREADS=$thr
        for b in forward train prune; do
            case $b in
            forward) # the tokenizer's rate for the set-up: the run's files, its loaders
                args=(--batch "$eb" --seqlen "$eT" --iters "${ITERS:-10}")
                [ "$etext" = - ] || args+=(--text "$etext")
                [ "$ctext" = - ] || args+=(--calib "$ctext")
                [ "$ttext" = - ] || args+=(--train "$ttext") ;;
            train) args=(--batch "$tb" --seqlen "$tT" --iters "${ITERS:-10}") ;;
            prune) args=(--n "$cn" --seqlen "$cS" --sparsity 0.7) ;;
            esac
            if [ "$thr" = 1 ]; then # the other rank's copy
                "$LOSA" bench $b --model "$store" "${args[@]}" --json >/dev/null 2>&1 &
            fi
            "$LOSA" bench $b --model "$store" "${args[@]}" --json >"$R/$name-$b-t$thr.json" 2>/dev/null
            wait
        done
        unset OPENBLAS_NUM_THREADS OMP_NUM_THREADS
    done
    for lay in "${LAYOUTS[@]}"; do
        read -r pp dp <<<"$lay"
        np=$((pp * dp)); tag=$name-pp$pp-dp$dp; dir=$R/$tag
        [ "${RUNS:-1}" = 1 ] && rm -rf "$dir"
        common=(--set model.store=$store "${SETS[@]}" --set parallel.pp=$pp --set parallel.dp=$dp)
        # ranks share the node's cores: one BLAS thread each when there are two
        thr=$((np > 1 ? 1 : 2))
        if [ "${HEAD_COST:-1}" = 1 ]; then
            hc=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("head_cost_layers", 0))' \
                "$R/$name-train-t$thr.json")
            common+=(--set parallel.head_cost_layers=$hc)
        fi
        "$LOSA" plan input/default.ini "${common[@]}" --bench "$R/$name-forward-t$thr.json" \
            --bench "$R/$name-train-t$thr.json" --bench "$R/$name-prune-t$thr.json" \
            --json >"$R/$tag-plan.json" 2>/dev/null
        [ "${RUNS:-1}" = 1 ] || continue
        OPENBLAS_NUM_THREADS=$thr OMP_NUM_THREADS=$thr $MPIRUN -np $np "$LOSA" run \
            input/default.ini "${common[@]}" --set output.dir=$dir >"$R/$tag.log" 2>&1
    done
done
done

kib1=$(reported_kib)
if [ "${RUNS:-1}" = 1 ] && [ "$kib0" -ge 0 ] && [ "$kib1" -ge $((kib0 + 1024)) ]; then
    echo "note: the guest kernel handed $(((kib1 - kib0) / 1024)) MiB of freed memory back to the" \
         "host during the check (free page reporting): fresh buffers then cost the host's first" \
         "touch, which a node does not pay (NO_PAGE_REPORTING=1 holds it off)"
fi
/usr/bin/python3 - "$OUT" "$ROUNDS" "${CASES[@]%%|*}" <<'PY'
import json, math, os, statistics, sys
import h5py, numpy as np
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
proj, meas = {}, {}  # (tag, phase) -> [per round]
for r in range(1, rounds + 1):
    rd = os.path.join(out, f"r{r}")
    for name in names:
        for pp, dp in ((1, 1), (1, 2), (2, 1)):
            tag = f"{name}-pp{pp}-dp{dp}"
            plan = json.load(open(os.path.join(rd, tag + "-plan.json")))
            w = plan["wall_seconds"]
            with h5py.File(os.path.join(rd, tag, "run.h5"), "r") as f:
                def g(p):  # None when absent or not a number (NaN: a key an older run lacked)
                    x = float(np.asarray(f[p][()]).ravel()[0]) if p in f else None
                    return x if x is not None and math.isfinite(x) else None
                m = {"setup": g("setup/seconds"), "prune": g("prune/prune_seconds"),
                     "lora_train": g("lora/train_seconds"), "total": g("final/seconds")}
                if "losa/steps/seconds" in f:
                    s = np.asarray(f["losa/steps/seconds"][()])
                    m["grams"], m["losa_prune"], m["losa_train"] = (
                        float(s[:, 0].sum()), float(s[:, 1].sum()), float(s[:, 2].sum()))
                # one perplexity pass: the +LoRA model's (its own seconds,
                # lora/eval_seconds; runs of an older losa: the lora phase less
                # its training, merge and zero count included), else the
                # final LoSA model's
                e = g("lora/eval_seconds") or g("losa/eval_seconds")
                if e is None and "lora/seconds" in f:
                    e = g("lora/seconds") - g("lora/train_seconds")
                if e is not None and "losa_eval" in plan.get("step_seconds", {}):
                    m["eval_pass"] = e
                    w = dict(w, eval_pass=plan["step_seconds"]["losa_eval"])
            for k, v in m.items():
                if v is None or k not in w: continue
                proj.setdefault((tag, k), []).append(w[k])
                meas.setdefault((tag, k), []).append(v)
rows = []
for key in proj:
    p, m = statistics.median(proj[key]), statistics.median(meas[key])
    each = " ".join(f"{a / b:.2f}" for a, b in zip(proj[key], meas[key]) if b > 0)
    rows.append((key[0], key[1], p, m, p / m if m > 0 else float("nan"), each))
print(f"{'case':24s} {'phase':12s} {'projected_s':>12s} {'measured_s':>12s} {'ratio':>7s}"
      + ("  per round" if rounds > 1 else ""))
for r in rows:
    print(f"{r[0]:24s} {r[1]:12s} {r[2]:12.2f} {r[3]:12.2f} {r[4]:7.2f}"
          + (f"  {r[5]}" if rounds > 1 else ""))
bad = [r for r in rows if not (0.75 <= r[4] <= 1.25)]
print(f"{len(rows) - len(bad)} of {len(rows)} within 25 %"
      + (f" (medians over {rounds} rounds)" if rounds > 1 else ""))
PY
