# losa — build, dependencies, run, test, bench.
#   make            install missing deps (Debian, root) and build build/losa
#   make run        the main job: input/default.ini
#   make test       build and run the test suite (tests/run.sh)
#   make test-blas  the C unit tests on the CBLAS engine (GEMM=blas, build-blas/)
#   make bench      benchmarks (losa bench ...)
#   make bench-gemm the oneDNN and CBLAS builds side by side (jobs/bench_gemm.sh)
# On a cluster: load your site's MPI/HDF5/ScaLAPACK/OpenBLAS modules, then
#   make MPICC=<mpi C compiler> PKG_CONFIG_PATH=... (or HDF5_DIR=/path, DNNL_DIR=/path)
#   make GEMM=blas  OpenBLAS instead of oneDNN for the decoder's GEMMs

MPICC    ?= mpicc
BUILD    ?= build
OPT      ?= -O3
CFLAGS   ?= $(OPT) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -fno-strict-aliasing -fno-math-errno -fopenmp
PKGS     ?= hdf5-openmpi scalapack-openmpi openblas lapacke libcjson inih
DEB_PKGS ?= openmpi-bin libopenmpi-dev libscalapack-openmpi-dev libhdf5-openmpi-dev \
            hdf5-tools libopenblas-dev liblapacke-dev libcjson-dev libinih-dev pkg-config
TEST_DEB_PKGS ?= python3-numpy python3-h5py python3-matplotlib python3-sentencepiece python3-torch \
                 slurm-wlm time

# GEMM engine of the decoder's matrix products (src/kernels/gemm.c):
#   onednn (default)  oneDNN's matmul primitive (Debian libdnnl-dev; on a cluster
#                     DNNL_DIR=<prefix> of the site's oneDNN)
#   blas              cblas_sgemm of the BLAS above (sites without oneDNN)
GEMM     ?= onednn
ifeq ($(GEMM),onednn)
DEB_PKGS    += libdnnl-dev
GEMM_CFLAGS := -DLOSA_GEMM_ONEDNN $(if $(DNNL_DIR),-I$(DNNL_DIR)/include)
GEMM_LIBS   := $(if $(DNNL_DIR),-L$(DNNL_DIR)/lib -Wl$(comma)-rpath$(comma)$(DNNL_DIR)/lib) -ldnnl
else ifneq ($(GEMM),blas)
$(error GEMM=$(GEMM): expected onednn or blas)
endif
comma := ,

# HDF5_DIR overrides pkg-config for HDF5 (cluster installs without .pc files).
ifdef HDF5_DIR
HDF5_CFLAGS := -I$(HDF5_DIR)/include
HDF5_LIBS   := -L$(HDF5_DIR)/lib -lhdf5
PKGS        := $(filter-out hdf5-openmpi,$(PKGS))
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(HDF5_CFLAGS)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(HDF5_LIBS) $(GEMM_LIBS) -lm

SRCS     := $(wildcard src/*/*.c)
OBJS     := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIBOBJS  := $(filter-out $(BUILD)/obj/cli/%,$(OBJS))
CLIOBJS  := $(filter $(BUILD)/obj/cli/%,$(OBJS))
TESTSRCS := $(wildcard tests/test_*.c)
TESTBINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TESTSRCS))

.PHONY: all deps test-deps build run test test-blas bench bench-gemm analysis clean
all: deps build

build: $(BUILD)/losa $(TESTBINS)

# Install missing system packages when root with apt-get; otherwise say what
# is missing and how to provide it.
deps: $(BUILD)/.deps
$(BUILD)/.deps:
	@mkdir -p $(BUILD)
	@missing=""; for p in $(PKGS); do pkg-config --exists $$p 2>/dev/null || missing="$$missing $$p"; done; \
	command -v $(MPICC) >/dev/null 2>&1 || missing="$$missing mpicc"; \
	if [ "$(GEMM)" = onednn ] && ! echo '#include <oneapi/dnnl/dnnl.h>' | \
	     $$(command -v $(MPICC) >/dev/null 2>&1 && echo $(MPICC) || echo cc) $(GEMM_CFLAGS) -E -x c - \
	     >/dev/null 2>&1; then missing="$$missing oneDNN(dnnl.h)"; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "deps: installing$$missing (Debian packages: $(DEB_PKGS))"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PKGS)) >$(BUILD)/apt.log 2>&1 \
	      || { echo "deps: apt-get failed, see $(BUILD)/apt.log"; exit 1; }; \
	  else \
	    echo "deps: missing:$$missing"; \
	    echo "  On a cluster: 'module load' your site's MPI, parallel HDF5, ScaLAPACK, OpenBLAS (with LAPACKE), cJSON and inih,"; \
	    echo "  then 'make MPICC=<mpi compiler>' with PKG_CONFIG_PATH covering their .pc files, or HDF5_DIR=<prefix> for HDF5."; \
	    echo "  oneDNN: install libdnnl-dev (Debian) or set DNNL_DIR=<prefix> of your site's oneDNN, or build with 'make GEMM=blas'."; \
	    exit 1; \
	  fi; \
	fi; touch $@

test-deps: $(BUILD)/.test-deps
$(BUILD)/.test-deps: $(BUILD)/.deps
	@missing=""; for p in $(TEST_DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "test-deps: installing$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >$(BUILD)/apt-test.log 2>&1 \
	      || { echo "test-deps: apt-get failed, see $(BUILD)/apt-test.log"; exit 1; }; \
	  else echo "test-deps: missing Debian packages:$$missing"; exit 1; fi; \
	fi; touch $@

$(BUILD)/obj/%.o: src/%.c $(wildcard include/*.h) $(wildcard src/*/*.h) | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(MPICC) $(CFLAGS) -Iinclude $(PKG_CFLAGS) -c $< -o $@

# The engine is compiled into gemm.o only; its stamp rebuilds it (and so the
# library and the programs) when GEMM changes.
$(BUILD)/.gemm-$(GEMM): | $(BUILD)/.deps
	@rm -f $(BUILD)/.gemm-*; touch $@
$(BUILD)/obj/kernels/gemm.o: src/kernels/gemm.c $(wildcard include/*.h) $(BUILD)/.gemm-$(GEMM) | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(MPICC) $(CFLAGS) $(GEMM_CFLAGS) -Iinclude $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/liblosa.a: $(LIBOBJS)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/losa: $(CLIOBJS) $(BUILD)/liblosa.a
	$(MPICC) $(CFLAGS) -o $@ $(CLIOBJS) $(BUILD)/liblosa.a $(PKG_LIBS)

$(BUILD)/tests/%: tests/%.c tests/test_util.h $(BUILD)/liblosa.a
	@mkdir -p $(dir $@)
	$(MPICC) $(CFLAGS) -Iinclude -Itests $(PKG_CFLAGS) -o $@ $< $(BUILD)/liblosa.a $(PKG_LIBS)

# The main job: prune, +LoRA and LoSA on stories260K (input/default.ini), on
# RUN_NP ranks as data-parallel replicas.
DATA   ?= ../shared/data
RUN_NP ?= 2
MPIRUN ?= OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
          mpirun --oversubscribe --bind-to none
run: deps build $(BUILD)/stories260K.h5
	$(MPIRUN) -np $(RUN_NP) ./$(BUILD)/losa run input/default.ini --set parallel.pp=1 --set parallel.dp=$(RUN_NP)

$(BUILD)/stories260K.h5: | $(BUILD)/losa
	./$(BUILD)/losa import $(DATA)/models/stories260K/stories260K.bin \
	    --tokenizer $(DATA)/models/stories260K/tok512.bin --out $@

test: deps test-deps build
	bash tests/run.sh

# The unit suite (the C tests, and the bench keys) on the CBLAS engine, built
# into build-blas/ (the default build uses oneDNN).
BLAS_BUILD ?= build-blas
test-blas: deps test-deps
	$(MAKE) BUILD=$(BLAS_BUILD) GEMM=blas build
	BUILD_DIR=$(BLAS_BUILD) TESTS="$(notdir $(TESTBINS)) test_bench_json" bash tests/run.sh

bench: deps build
	./$(BUILD)/losa bench forward

# oneDNN vs CBLAS side by side (jobs/bench_gemm.sh: ROUNDS alternating rounds
# of bench train and bench forward with both builds).
bench-gemm: deps build
	$(MAKE) BUILD=$(BLAS_BUILD) GEMM=blas $(BLAS_BUILD)/losa
	ONEDNN=$(CURDIR)/$(BUILD)/losa BLAS=$(CURDIR)/$(BLAS_BUILD)/losa bash jobs/bench_gemm.sh

# tables and plots of every run directory under runs/ (any depth) -> analysis/out/
analysis:
	@if [ -z "$$(find runs -name run.h5 -not -path '*/ckpt/*' 2>/dev/null | head -1)" ]; then \
	    echo "make analysis: no run.h5 under runs/ (make run, or a sweep, first)" >&2; exit 1; fi
	MPLBACKEND=Agg /usr/bin/python3 analysis/table.py runs --out analysis/out/
	MPLBACKEND=Agg /usr/bin/python3 analysis/plots.py runs --out analysis/out
	@cat analysis/out/table.md

clean:
	rm -rf $(BUILD)/obj $(BUILD)/tests $(BUILD)/losa $(BUILD)/liblosa.a

# ---- hardening: sanitizers and fuzzing (begin) --------------------------------
#   make asan             everything (library, losa, tests) with ASan + UBSan into build-asan/
#   make test-asan        the unit suite on the asan build (tests/lsan.supp: MPI/HDF5 leaks)
#   make fuzz [FUZZ_SECONDS=N]  each libFuzzer harness tests/fuzz/fuzz_*.c for N seconds
#   make fuzz-smoke       a few seconds of each (CI; tests/test_fuzz_smoke.sh)
# Harnesses are built with clang (Debian clang + libclang-rt-14-dev, installed
# like the deps when root) against a clang-built library in build-fuzz/.
ASAN_BUILD   ?= build-asan
ASAN_OPT     ?= -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
# Open MPI keeps its components loaded (so LSan can name them in stacks) and
# full unwinding through the uninstrumented libraries lets tests/lsan.supp match.
ASAN_ENV     ?= ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:detect_odr_violation=0 \
                LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                OMPI_MCA_mca_base_component_disable_dlclose=1
FUZZ_BUILD   ?= build-fuzz
FUZZ_CC      ?= clang
FUZZ_DEB_PKGS ?= clang libclang-rt-14-dev libomp-14-dev
FUZZ_SAN     ?= -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS  ?= -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -fno-strict-aliasing \
                -fno-math-errno -fopenmp -Wno-pass-failed $(FUZZ_SAN)
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 4
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(FUZZ_SRCS))
FUZZ_MPICC   := OMPI_CC=$(FUZZ_CC) $(MPICC)

.PHONY: asan test-asan fuzz-deps fuzz-build fuzz fuzz-smoke
asan:
	$(MAKE) BUILD=$(ASAN_BUILD) OPT="$(ASAN_OPT)" build

test-asan: asan test-deps
	BUILD_DIR=$(ASAN_BUILD) $(ASAN_ENV) bash tests/run.sh

fuzz-deps: $(FUZZ_BUILD)/.fuzz-deps
$(FUZZ_BUILD)/.fuzz-deps:
	@mkdir -p $(FUZZ_BUILD)
	@if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n){(void)d;(void)n;return 0;}' | \
	     $(FUZZ_CC) -x c -fsanitize=fuzzer -o $(FUZZ_BUILD)/.probe - >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "fuzz-deps: installing $(FUZZ_DEB_PKGS)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(FUZZ_DEB_PKGS)) \
	      >$(FUZZ_BUILD)/apt.log 2>&1 || { echo "fuzz-deps: apt-get failed, see $(FUZZ_BUILD)/apt.log"; exit 1; }; \
	  else echo "fuzz-deps: $(FUZZ_CC) with libFuzzer missing (Debian: $(FUZZ_DEB_PKGS))"; exit 1; fi; \
	fi; rm -f $(FUZZ_BUILD)/.probe; touch $@

# The library with coverage instrumentation (clang through the MPI wrapper),
# on the CBLAS engine: clang's OpenMP runtime is not the libgomp oneDNN uses.
fuzz-build: fuzz-deps
	$(MAKE) BUILD=$(FUZZ_BUILD) MPICC="$(FUZZ_MPICC)" GEMM=blas \
	  CFLAGS="$(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link" $(FUZZ_BUILD)/liblosa.a
	$(MAKE) GEMM=blas $(FUZZ_BINS)

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(FUZZ_BUILD)/liblosa.a
	$(FUZZ_MPICC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Iinclude -Isrc -Itests/fuzz $(PKG_CFLAGS) \
	  -o $@ $< $(FUZZ_BUILD)/liblosa.a $(PKG_LIBS)

# Seeds from ../shared/data are generated into $(FUZZ_BUILD)/seeds (never committed);
# tests/fuzz/corpus/<h> holds small hand-written seeds, tests/fuzz/regress/<h> the
# inputs of fixed crashes.  New inputs go to $(FUZZ_BUILD)/corpus/<h>.
fuzz: fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-smoke: fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS)
# ---- hardening: sanitizers and fuzzing (end) ----------------------------------
