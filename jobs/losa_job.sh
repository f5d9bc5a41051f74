#!/usr/bin/env bash
# One losa job step: jobs/losa_job.sh DECK.ini OUT_DIR [--set k=v ...]
# Used by single.sh, multinode.sh and sweep.sh.  Writes OUT_DIR/deck.ini (the
# deck as given), OUT_DIR/overrides.txt, OUT_DIR/result.json (the --json
# object of the command) and OUT_DIR/losa.log (stderr).
#   LAUNCH   how to start the ranks ("" = one process, "srun --mpi=pmix",
#            "mpirun -np 4", ...)
#   LOSA     the binary (default: $LOSA_ROOT/build/losa)
set -euo pipefail

# The one line to change when 'losa run' is available: run | prune | eval.
LOSA_COMMAND=${LOSA_COMMAND:-eval}

ROOT=${LOSA_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
LOSA=${LOSA:-$ROOT/build/losa}
LAUNCH=${LAUNCH:-}
[ $# -ge 2 ] || { echo "usage: $0 DECK.ini OUT_DIR [--set k=v ...]" >&2; exit 2; }
DECK=$1 OUT=$2; shift 2
mkdir -p "$OUT"
cp "$DECK" "$OUT/deck.ini"
printf '%s\n' "$*" > "$OUT/overrides.txt"
{ echo "command: $LOSA_COMMAND"; echo "launch: ${LAUNCH:-single process}"
  echo "host: $(hostname)"; echo "ntasks: ${SLURM_NTASKS:-1}"; echo "job: ${SLURM_JOB_ID:-none} array ${SLURM_ARRAY_JOB_ID:-none}_${SLURM_ARRAY_TASK_ID:-none}"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"; } > "$OUT/job.txt"

case $LOSA_COMMAND in
run | prune | finetune)
    # deck-driven commands: the deck plus the overrides, results in OUT
    # shellcheck disable=SC2086
    $LAUNCH "$LOSA" "$LOSA_COMMAND" "$DECK" "$@" --set output.dir="$OUT" --json \
        > "$OUT/result.json" 2> "$OUT/losa.log" ;;
eval)
    # stand-in until 'losa run' exists: perplexity of model.store on
    # data.eval_text with the deck's [eval] keys (after the overrides)
    mapfile -t ARGS < <(/usr/bin/python3 "$ROOT/jobs/deck_args.py" eval "$DECK" "$@")
    # shellcheck disable=SC2086
    $LAUNCH "$LOSA" eval "${ARGS[@]}" --json > "$OUT/result.json" 2> "$OUT/losa.log" ;;
*)
    echo "LOSA_COMMAND=$LOSA_COMMAND: expected run, prune, finetune or eval" >&2; exit 2 ;;
esac
echo "$OUT: done"
