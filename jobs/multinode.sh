#!/usr/bin/env bash
# Multi-node template: one MPI rank per (pipeline stage x DP replica), started
# by srun with PMIx.  Set --nodes / --ntasks-per-node so that
# nodes x ntasks-per-node = parallel.pp x parallel.dp of the deck.
#   sbatch jobs/multinode.sh DECK.ini [--set k=v ...]
# Load your site's modules first (MPI, parallel HDF5, ScaLAPACK, OpenBLAS), e.g.
#   module load openmpi hdf5-mpi scalapack openblas
#SBATCH --job-name=losa-mn
#SBATCH --nodes=4                 # nodes
#SBATCH --ntasks-per-node=8       # ranks per node (stages x replicas on this node)
#SBATCH --cpus-per-task=4         # threads per rank (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS)
#SBATCH --mem=0                   # all of each node's memory (size with 'losa plan')
#SBATCH --time=12:00:00           # wall time; resubmit the same command to resume
#SBATCH --output=slurm-%j.out     # in the submit directory
set -euo pipefail
ROOT=${LOSA_ROOT:-${SLURM_SUBMIT_DIR:-$(pwd)}}
RUNS=${RUNS:-$ROOT/runs}
[ $# -ge 1 ] || { echo "usage: sbatch jobs/multinode.sh DECK.ini [--set k=v ...]" >&2; exit 2; }
DECK=$1; shift
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export LAUNCH="srun --mpi=pmix --cpu-bind=cores"
export LOSA_ROOT=$ROOT
OUT=$RUNS/${SLURM_JOB_ID:-local-$$}
"$ROOT/jobs/losa_job.sh" "$DECK" "$OUT" "$@"
