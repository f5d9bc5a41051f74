#!/usr/bin/env bash
# CI smoke run of every fuzz harness (make fuzz-smoke: a few seconds each).
# Needs clang with libFuzzer; the Makefile installs it (Debian clang,
# libclang-rt-14-dev) when root with apt-get.  Skips, with a message, only
# when that is impossible.
set -u
cd "$(dirname "$0")/.."
if ! make -s fuzz-deps >/dev/null 2>&1; then
    echo "SKIP: clang with libFuzzer is not available and cannot be installed here"
    echo "      (needs Debian packages clang libclang-rt-14-dev libomp-14-dev)"
    exit 0
fi
# the fuzz build runs under its own sanitizers: drop the ones of test-asan
unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
mkdir -p build-fuzz
make -s fuzz-build >build-fuzz/build.log 2>&1 || { echo "fuzz build failed:"; tail -20 build-fuzz/build.log; exit 1; }
make -s fuzz-smoke FUZZ_SMOKE_SECONDS=${FUZZ_SMOKE_SECONDS:-4}
