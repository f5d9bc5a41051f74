#!/usr/bin/env bash
# Single-node run: all ranks on one node, started with mpirun.
#   sbatch jobs/single.sh DECK.ini [--set k=v ...]
#SBATCH --job-name=losa
#SBATCH --nodes=1                 # one node
#SBATCH --ntasks=2                # ranks = parallel.pp x parallel.dp of the deck
#SBATCH --cpus-per-task=1         # OpenMP / OpenBLAS threads per rank
#SBATCH --time=01:00:00           # wall time; resume with the same command after a time-out
#SBATCH --output=slurm-%j.out     # in the submit directory
set -euo pipefail
ROOT=${LOSA_ROOT:-${SLURM_SUBMIT_DIR:-$(pwd)}}
RUNS=${RUNS:-$ROOT/runs}
[ $# -ge 1 ] || { echo "usage: sbatch jobs/single.sh DECK.ini [--set k=v ...]" >&2; exit 2; }
DECK=$1; shift
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # containers run as root
NP=${SLURM_NTASKS:-1}
export LAUNCH="mpirun -np $NP --bind-to none"
export LOSA_ROOT=$ROOT
OUT=$RUNS/${SLURM_JOB_ID:-local-$$}
"$ROOT/jobs/losa_job.sh" "$DECK" "$OUT" "$@"
