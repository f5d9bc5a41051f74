#!/usr/bin/env bash
# The unit suite (every tests/test_*.c binary, at its rank counts) under
# AddressSanitizer + UndefinedBehaviorSanitizer: `make asan` builds into
# build-asan/, then tests/run.sh runs the C tests from there with the
# sanitizer environment of `make test-asan` (leak checking on, Open MPI /
# HDF5 internals suppressed by tests/lsan.supp).  Any sanitizer report fails
# the binary, hence this test.  (`make test-asan` also runs the shell tests.)
set -u
cd "$(dirname "$0")/.."
make asan > build/asan-build.log 2>&1 || { echo "FAIL: make asan (see build/asan-build.log)"; tail -5 build/asan-build.log; exit 1; }
names=$(for f in tests/test_*.c; do basename "$f" .c; done | tr '\n' ' ')
env ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:detect_odr_violation=0 \
    LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    OMPI_MCA_mca_base_component_disable_dlclose=1 \
    BUILD_DIR=build-asan ONLY_C=1 TESTS="$names" LOSA_TEST_TMP=$PWD/build-asan/test-tmp \
    bash tests/run.sh
