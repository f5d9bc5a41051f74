#!/usr/bin/env bash
# Run every libFuzzer harness of BUILD (default build-fuzz) for SECONDS each,
# one after the other: tests/fuzz/run.sh BUILD SECONDS [harness ...]
# Seeds: $BUILD/seeds/<h> (made from $LOSA_DATA by make_seeds.py),
# tests/fuzz/corpus/<h> (hand-written) and tests/fuzz/regress/<h> (inputs of
# fixed crashes); new inputs accumulate in $BUILD/corpus/<h>, crashes in
# $BUILD/crashes.  Prints one table row per harness; exits 1 on any crash.
set -u
cd "$(dirname "$0")/../.."
B=${1:-build-fuzz}; SECS=${2:-60}; shift 2 || true
export LOSA_DATA=${LOSA_DATA:-$(cd .. && pwd)/shared/data}
export TMPDIR=${TMPDIR:-/dev/shm}
/usr/bin/python3 tests/fuzz/make_seeds.py "$LOSA_DATA" "$B/seeds" || exit 1
mkdir -p "$B/crashes" "$B/fuzz-logs"
harnesses=${*:-$(cd "$B" && ls fuzz_* | grep -v '\.' | sed 's/^fuzz_//')}
bad=0
printf '%-12s %8s %12s %8s %s\n' harness seconds executions crashes corpus
for h in $harnesses; do
    mkdir -p "$B/corpus/$h"
    dirs=("$B/corpus/$h")
    for d in "$B/seeds/$h" "tests/fuzz/corpus/$h" "tests/fuzz/regress/$h"; do [ -d "$d" ] && dirs+=("$d"); done
    log=$B/fuzz-logs/$h.log
    t0=$(date +%s)
    "$B/fuzz_$h" -max_total_time="$SECS" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$B/crashes/$h-" "${dirs[@]}" >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - t0))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    ncorp=$(ls "$B/corpus/$h" | wc -l)
    crashes=0
    if [ $rc != 0 ]; then crashes=1; bad=1; fi
    printf '%-12s %8s %12s %8s %s\n' "$h" "$secs" "${execs:-?}" "$crashes" "$ncorp"
    if [ $rc != 0 ]; then
        grep -E 'ERROR|FUZZ_ASSERT|runtime error|Test unit written|SUMMARY' "$log" | head -n 8 | sed 's/^/    /'
    fi
done
exit $bad
