# losa — build, dependencies, run, test, bench.
#   make            install missing deps (Debian, root) and build build/losa
#   make run        the main job: input/default.ini
#   make test       build and run the test suite (tests/run.sh)
#   make bench      benchmarks (losa bench ...)
# On a cluster: load your site's MPI/HDF5/ScaLAPACK/OpenBLAS modules, then
#   make MPICC=<mpi C compiler> PKG_CONFIG_PATH=... (or HDF5_DIR=/path, BLAS_LIBS=...)

MPICC    ?= mpicc
BUILD    ?= build
OPT      ?= -O3
CFLAGS   ?= $(OPT) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -fno-strict-aliasing -fno-math-errno -fopenmp
PKGS     ?= hdf5-openmpi scalapack-openmpi openblas lapacke libcjson inih
DEB_PKGS ?= openmpi-bin libopenmpi-dev libscalapack-openmpi-dev libhdf5-openmpi-dev \
            hdf5-tools libopenblas-dev liblapacke-dev libcjson-dev libinih-dev pkg-config
TEST_DEB_PKGS ?= python3-numpy python3-h5py python3-matplotlib python3-sentencepiece slurm-wlm

# HDF5_DIR overrides pkg-config for HDF5 (cluster installs without .pc files).
ifdef HDF5_DIR
HDF5_CFLAGS := -I$(HDF5_DIR)/include
HDF5_LIBS   := -L$(HDF5_DIR)/lib -lhdf5
PKGS        := $(filter-out hdf5-openmpi,$(PKGS))
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(HDF5_CFLAGS)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(HDF5_LIBS) -lm

SRCS     := $(wildcard src/*/*.c)
OBJS     := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIBOBJS  := $(filter-out $(BUILD)/obj/cli/%,$(OBJS))
CLIOBJS  := $(filter $(BUILD)/obj/cli/%,$(OBJS))
TESTSRCS := $(wildcard tests/test_*.c)
TESTBINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TESTSRCS))

.PHONY: all deps test-deps build run test bench analysis clean
all: deps build

build: $(BUILD)/losa $(TESTBINS)

# Install missing system packages when root with apt-get; otherwise say what
# is missing and how to provide it.
deps: $(BUILD)/.deps
$(BUILD)/.deps:
	@mkdir -p $(BUILD)
	@missing=""; for p in $(PKGS); do pkg-config --exists $$p 2>/dev/null || missing="$$missing $$p"; done; \
	command -v $(MPICC) >/dev/null 2>&1 || missing="$$missing mpicc"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "deps: installing$$missing (Debian packages: $(DEB_PKGS))"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PKGS)) >$(BUILD)/apt.log 2>&1 \
	      || { echo "deps: apt-get failed, see $(BUILD)/apt.log"; exit 1; }; \
	  else \
	    echo "deps: missing:$$missing"; \
	    echo "  On a cluster: 'module load' your site's MPI, parallel HDF5, ScaLAPACK, OpenBLAS (with LAPACKE), cJSON and inih,"; \
	    echo "  then 'make MPICC=<mpi compiler>' with PKG_CONFIG_PATH covering their .pc files, or HDF5_DIR=<prefix> for HDF5."; \
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

$(BUILD)/liblosa.a: $(LIBOBJS)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/losa: $(CLIOBJS) $(BUILD)/liblosa.a
	$(MPICC) $(CFLAGS) -o $@ $(CLIOBJS) $(BUILD)/liblosa.a $(PKG_LIBS)

$(BUILD)/tests/%: tests/%.c tests/test_util.h $(BUILD)/liblosa.a
	@mkdir -p $(dir $@)
	$(MPICC) $(CFLAGS) -Iinclude -Itests $(PKG_CFLAGS) -o $@ $< $(BUILD)/liblosa.a $(PKG_LIBS)

run: deps build
	./$(BUILD)/losa run input/default.ini

test: deps test-deps build
	bash tests/run.sh

bench: deps build
	./$(BUILD)/losa bench forward

analysis:
	MPLBACKEND=Agg /usr/bin/python3 analysis/table.py runs/*/ && MPLBACKEND=Agg /usr/bin/python3 analysis/plots.py runs/*/

clean:
	rm -rf $(BUILD)/obj $(BUILD)/tests $(BUILD)/losa $(BUILD)/liblosa.a
