# Shared helpers for the shell tests (sourced).  Stores imported from the
# real models in ../shared/data are cached under $LOSA_TEST_TMP/stores.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOSA=${LOSA:-build/losa}
D=${LOSA_DATA:?LOSA_DATA not set}
TT=${LOSA_TEST_TMP:-/tmp/losa-test}
STORES=$TT/stores
mkdir -p "$STORES"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
MPIRUN="mpirun --oversubscribe --bind-to none"
fails=0; checks=0

store() { # name -> path of the imported store (imports once)
    local out=$STORES/$1.h5
    if [ ! -f "$out" ]; then
        case $1 in
        # fp32: the scripts read and edit weights with h5py as float32
        # (bf16 stores, the import's default for this BF16 checkpoint, are
        # tested in test_store_bf16.sh)
        minillama) "$LOSA" import "$D/models/minillama" --out "$out" --dtype fp32 >/dev/null ;;
        stories260K) "$LOSA" import "$D/models/stories260K/stories260K.bin" \
                       --tokenizer "$D/models/stories260K/tok512.bin" --out "$out" >/dev/null ;;
        *) echo "unknown store $1" >&2; return 1 ;;
        esac
    fi
    echo "$out"
}

check() { # description, then a command that must succeed
    local what=$1; shift
    checks=$((checks + 1))
    if "$@"; then echo "ok   $what"; else fails=$((fails + 1)); echo "FAIL $what"; fi
}

json_get() { # json-text key -> value (numbers / strings) via Debian's python
    /usr/bin/python3 -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v=v[int(k)] if isinstance(v,list) else v[k]
print(v)' "$1" "$2"
}

finish() {
    echo "$checks checks, $fails failed"
    [ "$fails" = 0 ]
}
