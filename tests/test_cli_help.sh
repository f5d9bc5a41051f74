#!/usr/bin/env bash
# losa <command> --help (src/cli/help.c, intercepted in main.c):
#  - for every command and every bench sub-benchmark: --help and -h exit 0
#    with "usage: losa <command>" on stdout, and `losa help <command>`
#    prints exactly the same text;
#  - help cannot drift from the code: every flag the command's source parses
#    (the "--flag" literals in cli_opt(...) / strcmp(argv[i], ...) of
#    src/cli/cmd_X.c or bench_X.c) is listed in its help, and every flag the
#    help lists is parsed by that source;
#  - `losa help` and `losa --help` list every command (exit 0), `losa` alone
#    exits 2, `losa help nosuch` exits 2;
#  - a "-h" that is a flag's value is not taken for --help (generate runs and
#    fails on the missing model instead of printing help);
#  - under mpirun -np 2 the help is printed once (rank 0).
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/cli_help
rm -rf "$W"; mkdir -p "$W"

CMDS="import info eval generate prune finetune run export synth plan sparsify bench"
BENCHES="forward train prune sparse decode pipeline"

src_flags() { # source files -> the --flags they parse, one per line
    grep -hoE '(cli_opt\(argc, argv, &?i, |strn?cmp\(argv\[i\], )"--[a-z0-9-]+' "$@" |
        grep -oE -- '--[a-z0-9-]+' | sort -u
}
help_flags() { # help text file -> the flags of its option list (not -h/--help)
    grep -oE '^  --[a-z0-9-]+' "$1" | sed 's/^  //' | sort -u
}

one() { # name ("eval", "bench sparse"), source file(s), space-separated
    local name=$1 src=$2 tag=${1// /_}
    "$LOSA" $name --help >"$W/$tag.help" 2>"$W/$tag.err"
    check "$name --help exits 0" test $? = 0
    check "$name --help: usage line on stdout" grep -q "^usage: losa $name" "$W/$tag.help"
    "$LOSA" $name -h >"$W/$tag.h" 2>/dev/null
    check "$name -h exits 0" test $? = 0
    check "$name -h = --help" cmp -s "$W/$tag.help" "$W/$tag.h"
    "$LOSA" help $name >"$W/$tag.helpcmd" 2>/dev/null
    check "losa help $name exits 0" test $? = 0
    check "losa help $name = $name --help" cmp -s "$W/$tag.help" "$W/$tag.helpcmd"
    # --help wins wherever it is among the arguments
    "$LOSA" $name --json --help >"$W/$tag.late" 2>/dev/null
    check "$name --json --help = --help" cmp -s "$W/$tag.help" "$W/$tag.late"
    local f missing="" extra=""
    for f in $(src_flags $src); do
        grep -qE -- "^  $f( |$)" "$W/$tag.help" || missing="$missing $f"
    done
    check "$name: every flag parsed in $src is in the help${missing:+ (missing:$missing)}" \
        test -z "$missing"
    [ "$name" = bench ] && return # cmd_bench.c only dispatches; --json is the benches'
    for f in $(help_flags "$W/$tag.help"); do
        src_flags $src | grep -qx -- "$f" || extra="$extra $f"
    done
    check "$name: every flag in the help is parsed by $src${extra:+ (not parsed:$extra)}" \
        test -z "$extra"
}

# losa plan's time options are parsed in plan_time.c (plan_time_opt)
src_of() { [ "$1" = plan ] && echo "src/cli/cmd_plan.c src/cli/plan_time.c" || echo "src/cli/cmd_$1.c"; }
for c in $CMDS; do one "$c" "$(src_of "$c")"; done
# bench forward / train share their shape options (bench_shape.c, bench_shape_opt)
bsrc_of() { case $1 in forward|train) echo "src/cli/bench_$1.c src/cli/bench_shape.c" ;;
                       *) echo "src/cli/bench_$1.c" ;; esac; }
for b in $BENCHES; do one "bench $b" "$(bsrc_of "$b")"; done
n=$(src_flags src/cli/cmd_eval.c | wc -l)
check "the flag scan finds eval's 10 flags (got $n)" test "$n" = 10

"$LOSA" help >"$W/list" 2>/dev/null
check "losa help exits 0" test $? = 0
"$LOSA" --help >"$W/list2" 2>/dev/null
check "losa --help exits 0" test $? = 0
check "losa --help = losa help" cmp -s "$W/list" "$W/list2"
missing=""
for c in $CMDS help; do grep -qE "^  $c " "$W/list" || missing="$missing $c"; done
check "losa help lists every command${missing:+ (missing:$missing)}" test -z "$missing"
"$LOSA" >/dev/null 2>&1
check "losa alone exits 2" test $? = 2
"$LOSA" help nosuch >/dev/null 2>"$W/nosuch.err"
check "losa help nosuch exits 2" test $? = 2
check "losa help nosuch names it" grep -q "unknown command 'nosuch'" "$W/nosuch.err"

"$LOSA" generate --model "$W/none.h5" --prompt -h >"$W/val.out" 2>"$W/val.err"
check "generate --prompt -h: runs (exit 1 on the missing model), no help" test $? = 1
check "generate --prompt -h: the error names the model" grep -q "none.h5" "$W/val.err"

$MPIRUN -np 2 "$LOSA" eval --help >"$W/np2.help" 2>/dev/null
check "mpirun -np 2 eval --help exits 0" test $? = 0
check "mpirun -np 2 eval --help prints the help once" cmp -s "$W/np2.help" "$W/eval.help"
finish
