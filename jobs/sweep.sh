#!/usr/bin/env bash
# Job-array sweep: array index i runs line i+1 of SWEEP (a file of --set
# overrides, one experiment per line; '#' lines and blank lines are skipped
# before numbering) on DECK, in its own directory RUNS/<array job id>/<i>.
#   SWEEP=jobs/sweep_example.txt sbatch --array=0-3 jobs/sweep.sh DECK.ini
# then: jobs/collect.sh RUNS/<array job id>
#SBATCH --job-name=losa-sweep
#SBATCH --array=0-3               # one index per sweep line (override on the sbatch line)
#SBATCH --ntasks=1                # ranks per experiment (parallel.pp x parallel.dp)
#SBATCH --cpus-per-task=1         # threads per rank
#SBATCH --time=00:30:00           # wall time per experiment
#SBATCH --output=slurm-%A_%a.out  # in the submit directory
set -euo pipefail
ROOT=${LOSA_ROOT:-${SLURM_SUBMIT_DIR:-$(pwd)}}
RUNS=${RUNS:-$ROOT/runs}
SWEEP=${SWEEP:-$ROOT/jobs/sweep_example.txt}
[ $# -ge 1 ] || { echo "usage: SWEEP=FILE sbatch --array=0-N jobs/sweep.sh DECK.ini" >&2; exit 2; }
DECK=$1; shift
: "${SLURM_ARRAY_TASK_ID:?not an array job (sbatch --array=...)}"
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
NP=${SLURM_NTASKS:-1}
if [ "$NP" -gt 1 ]; then export LAUNCH="srun --mpi=pmix"; else export LAUNCH=""; fi
export LOSA_ROOT=$ROOT
line=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$SWEEP" | sed -n "$((SLURM_ARRAY_TASK_ID + 1))p")
[ -n "$line" ] || { echo "$SWEEP: no line for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2; }
read -r -a SETS <<< "$line"
OUT=$RUNS/$SLURM_ARRAY_JOB_ID/$SLURM_ARRAY_TASK_ID
"$ROOT/jobs/losa_job.sh" "$DECK" "$OUT" "$@" "${SETS[@]}"
