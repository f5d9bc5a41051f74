#!/usr/bin/env bash
#SBATCH --job-name=losa-compat     # losa vs the reference code's rules
#SBATCH --ntasks=1                 # one rank: a tiny model
#SBATCH --time=01:00:00
# How far each difference between losa and the official LoSA code moves the
# result (README "Differences from the reference code"): stories260K at 70%
# (Wanda and SparseGPT), N = 16 calibration windows, 16 training samples per
# step and 96 in the last, perplexity on the first 200 WikiText-2 windows.
# For each pruner: losa.compat = losa and = reference in mode compare
# (pruned / +LoRA / LoSA), the reference without length grouping
# (reference-nogroup: data.group_by_length = false, everything else
# reference), then LoSA with ONE switch set to its reference value on top
# of losa's rules.  Prints a table; runs under OUT (default
# runs/compat_compare/<job id or date>).
#   jobs/compat_compare.sh            (or sbatch jobs/compat_compare.sh)
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
LOSA=${LOSA:-build/losa}
DATA=${LOSA_DATA:-../shared/data}
OUT=${OUT:-runs/compat_compare/${SLURM_JOB_ID:-$(date +%Y%m%d-%H%M%S)}}
STORE=${STORE:-$OUT/stories260K.h5}
mkdir -p "$OUT"
[ -f "$STORE" ] || "$LOSA" import "$DATA/models/stories260K/stories260K.bin" \
    --tokenizer "$DATA/models/stories260K/tok512.bin" --out "$STORE" >/dev/null
BASE=(--set model.store=$STORE --set prune.sparsity=0.7 --set data.calib_n=16
      --set losa.rmi_n=16 --set losa.samples_per_step=16 --set losa.last_step_samples=96
      --set eval.max_windows=200)
# name | overrides (on top of losa's rules)
SWITCHES=(
  "calib_python|--set data.calib_sampler=python --set data.calib_seed=4 --set data.calib_eos=1"
  "no_floor|--set losa.sparsity_floor=false"
  "one_pass|--set losa.rank_rebalance=one_pass"
  "rank_slice_r8|--set losa.rank_cap=slice --set lora.r_max=8"
  "train_slices|--set data.train_slices=reference"
  "train_seed42|--set train.seed=42"
  "group_by_length|--set data.group_by_length=true"
)
run() { # tag, args...
    local tag=$1; shift
    if [ ! -s "$OUT/$tag.json" ]; then
        "$LOSA" run input/default.ini "${BASE[@]}" "$@" --set output.dir=$OUT/$tag --json \
            >"$OUT/$tag.json" 2>"$OUT/$tag.log"
    fi
}
for m in wanda sparsegpt; do
    # input/default.ini sets lora.r_max = 16: reference mode needs r = 8 explicitly
    run $m-losa --set prune.method=$m --set losa.mode=compare
    run $m-reference --set prune.method=$m --set losa.mode=compare --set losa.compat=reference \
        --set lora.r_max=8
    run $m-reference-nogroup --set prune.method=$m --set losa.mode=compare \
        --set losa.compat=reference --set lora.r_max=8 --set data.group_by_length=false
    for sw in "${SWITCHES[@]}"; do
        name=${sw%%|*}; read -r -a args <<<"${sw#*|}"
        run $m-$name --set prune.method=$m --set losa.mode=losa "${args[@]}"
    done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def get(tag):
    p = os.path.join(out, tag + '.json')
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else {}
names = ['calib_python', 'no_floor', 'one_pass', 'rank_slice_r8', 'train_slices', 'train_seed42',
         'group_by_length']
print('%-10s %-22s %10s %10s %10s %9s %9s' % ('pruner', 'run', 'pruned', '+LoRA', 'LoSA', 'dLoSA', 'sparsity'))
for m in ['wanda', 'sparsegpt']:
    base = get(m + '-losa').get('losa_ppl', float('nan'))
    for tag in ['losa', 'reference', 'reference-nogroup'] + names:
        r = get('%s-%s' % (m, tag))
        f = lambda k: ('%10.3f' % r[k]) if k in r else '%10s' % '-'
        d = r.get('losa_ppl', float('nan')) - base
        print('%-10s %-22s %s %s %s %+9.3f %9.4f' % (m, tag, f('pruned_ppl'), f('lora_ppl'),
              f('losa_ppl'), d, r.get('sparsity', float('nan'))))
PY
