#!/usr/bin/env bash
# A real single-node SLURM (Debian slurm-wlm + munge) brought up inside the
# test: slurmctld + slurmd with a generated slurm.conf in a scratch directory.
#  - the job-array sweep (jobs/sweep.sh, 4 lines of jobs/sweep_example.txt)
#    on stories260K: every array index writes its own RUNS/<job>/<index>, each
#    result equals the same 'losa eval' run directly (bit-identical ppl), and
#    jobs/collect.sh gathers the 4 runs into one table;
#  - jobs/single.sh with 2 ranks (mpirun inside sbatch) and jobs/multinode.sh
#    on 1 node x 2 ranks (srun --mpi=pmix) give the 1-rank perplexity.
# Only the daemons this test started are stopped (trap, by their pid files).
set -u
source "$(dirname "$0")/lib.sh"
ROOT=$(pwd)
SCR=$TT/slurm
PY=/usr/bin/python3

if ! command -v slurmctld >/dev/null || ! command -v sbatch >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing slurm-wlm"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null 2>&1; }
    fi
    command -v slurmctld >/dev/null || { echo "FAIL slurm-wlm not installed (make test-deps)"; exit 1; }
fi
ST=$(store stories260K) || exit 1

started_munge=0
cleanup() {
    for p in slurmd slurmctld; do
        [ -s "$SCR/$p.pid" ] && kill "$(cat "$SCR/$p.pid")" 2>/dev/null
    done
    sleep 0.5
    if [ "$started_munge" = 1 ] && [ -s /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null
    fi
}
trap cleanup EXIT
rm -rf "$SCR"; mkdir -p "$SCR/state" "$SCR/spool" "$SCR/runs"

# munge: reuse a running daemon, else start one (and stop it at the end)
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged && started_munge=1
    sleep 0.3
fi
check "munge credentials round-trip" bash -c 'munge -n | unmunge >/dev/null'

HOST=$(hostname -s)
CPUS=$(getconf _NPROCESSORS_ONLN)  # not nproc: it follows OMP_NUM_THREADS
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
CTLDPORT=${LOSA_SLURMCTLD_PORT:-6817}
SLURMDPORT=${LOSA_SLURMD_PORT:-6818}
sed -e "s|@HOST@|$HOST|g" -e "s|@DIR@|$SCR|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$MEM|g" \
    -e "s|@CTLDPORT@|$CTLDPORT|g" -e "s|@SLURMDPORT@|$SLURMDPORT|g" \
    tests/slurm/slurm.conf.in > "$SCR/slurm.conf"
export SLURM_CONF=$SCR/slurm.conf
slurmctld -i
slurmd
up=0
for i in $(seq 1 100); do
    [ "$(sinfo -h -o %T 2>/dev/null | head -n1)" = idle ] && { up=1; break; }
    sleep 0.2
done
check "slurmctld + slurmd up, node idle" test $up = 1
[ $up = 1 ] || { tail -5 "$SCR"/slurm*.log; finish; exit 1; }

TEXT=$D/text/tinystories/tinystories_sample.txt
sed -e "s|@STORE@|$ST|" -e "s|@TEXT@|$TEXT|" tests/slurm/stories260K.ini.in > "$SCR/deck.ini"

wait_job() { # job id -> waits until it has left the queue (max 180 s)
    for i in $(seq 1 900); do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    return 1
}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# --- the array sweep ---------------------------------------------------------
nlines=$(grep -c -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' jobs/sweep_example.txt)
job=$(sbatch --parsable --array=0-$((nlines - 1)) --chdir="$SCR" --output="$SCR/slurm-%A_%a.out" \
    --export=ALL,LOSA_ROOT="$ROOT",RUNS="$SCR/runs",SWEEP="$ROOT/jobs/sweep_example.txt" \
    jobs/sweep.sh "$SCR/deck.ini")
check "sbatch --array accepted (job $job)" test -n "$job"
check "array job finished within 180 s" wait_job "$job"
for ((i = 0; i < nlines; i++)); do
    run=$SCR/runs/$job/$i
    line=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' jobs/sweep_example.txt | sed -n "$((i + 1))p")
    check "index $i: run dir with result.json, deck, overrides" \
        test -s "$run/result.json" -a -s "$run/deck.ini" -a "$(cat "$run/overrides.txt" 2>/dev/null)" = "$line"
    # the same experiment directly: identical perplexity
    read -r -a SETS <<< "$line"
    mapfile -t ARGS < <($PY jobs/deck_args.py eval "$SCR/deck.ini" "${SETS[@]}")
    want=$("$LOSA" eval "${ARGS[@]}" --json 2>/dev/null)
    got=$(cat "$run/result.json" 2>/dev/null)
    check "index $i (${ARGS[*]:4}): ppl $(json_get "$got" ppl 2>/dev/null) = direct $(json_get "$want" ppl)" \
        test "$(json_get "$got" ppl 2>/dev/null)" = "$(json_get "$want" ppl)"
done
table=$(jobs/collect.sh "$SCR/runs/$job" 2>&1)
echo "$table" | sed 's/^/  /'
check "collect: $nlines rows, all ok" test "$(echo "$table" | tail -n +2 | grep -c $'\tok\t')" = "$nlines"
check "collect: table.tsv written" test -s "$SCR/runs/$job/table.tsv"
check "collect: the seqlen column follows the sweep file" \
    test "$(echo "$table" | tail -n +2 | cut -f6 | tr '\n' ' ')" = "64 128 64 32 "

# --- single.sh (mpirun in the allocation) and multinode.sh (srun --mpi=pmix) --
want=$("$LOSA" eval --model "$ST" --ppl "$TEXT" --seqlen 64 --batch 4 --max-windows 4 --json 2>/dev/null)
j1=$(sbatch --parsable --ntasks=2 --chdir="$SCR" --output="$SCR/slurm-%j.out" \
    --export=ALL,LOSA_ROOT="$ROOT",RUNS="$SCR/runs" jobs/single.sh "$SCR/deck.ini")
j2=$(sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --mem=1000 \
    --chdir="$SCR" --output="$SCR/slurm-%j.out" \
    --export=ALL,LOSA_ROOT="$ROOT",RUNS="$SCR/runs" jobs/multinode.sh "$SCR/deck.ini")
check "single.sh / multinode.sh finished" bash -c "$(declare -f wait_job); wait_job $j1 && wait_job $j2"
for j in $j1 $j2; do
    got=$(cat "$SCR/runs/$j/result.json" 2>/dev/null)
    check "job $j (2 stages): ppl $(json_get "$got" ppl 2>/dev/null) = 1 rank $(json_get "$want" ppl)" \
        test "$(json_get "$got" ppl 2>/dev/null)" = "$(json_get "$want" ppl)"
    check "job $j: 2 tasks in the allocation" grep -q "^ntasks: 2$" "$SCR/runs/$j/job.txt"
done
grep -q 'srun --mpi=pmix' "$SCR/runs/$j2/job.txt" 2>/dev/null
check "multinode.sh used srun --mpi=pmix" test $? = 0
if [ "$fails" != 0 ]; then tail -n 5 "$SCR"/slurm-*.out "$SCR"/runs/*/*/losa.log "$SCR"/runs/*/losa.log 2>/dev/null; fi
finish
