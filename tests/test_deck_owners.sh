#!/usr/bin/env bash
# One owner per deck key: every key of the schema (src/core/deck_schema.c)
# is parsed in exactly one function of src/, the settings function of its
# section (src/losa/settings.c), and nowhere else.
# The check, precisely: for every key K of the schema, every occurrence of
# the string literal "K" (with its quotes) in src/**/*.{c,h} other than
# deck_schema.c is attributed to its enclosing function (a function body
# runs from a '{' in column 0 to the next '}' in column 0, named by the last
# column-0 line with a '(' before it; outside bodies: "(file scope)").  Each
# key must have exactly one such owner, and it must be in
# src/losa/settings.c.  Keys reached only through the schema (generic loops
# over deck_schema, e.g. the resume check and losa info) are not literals
# and do not count.  The checker is first run on a copy of src/ with one
# more read of prune.sparsity in cmd_run.c, which it must report.
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/test_deck_owners; rm -rf "$W"; mkdir -p "$W"
KEYS=$(sed -n 's/^    {"\([a-z_0-9]*\.[a-z_0-9]*\)",.*/\1/p' src/core/deck_schema.c | tr '\n' ' ')

owners() { # src-dir -> "key<TAB>file:function" for every occurrence of a key literal
    find "$1" -name '*.[ch]' ! -name deck_schema.c | sort | xargs awk -v keys="$KEYS" -v root="$1/" '
        BEGIN { n = split(keys, K, " ") }
        FNR == 1 { inbody = 0; fn = ""; hdr = "" }
        !inbody && /^[A-Za-z_].*\(/ && !/;[ \t]*$/ { hdr = $0 }
        /^\{/ { inbody = 1; h = hdr; sub(/\(.*/, "", h); m = split(h, w, /[ *]+/); fn = w[m] }
        { for (i = 1; i <= n; i++)
              if (index($0, "\"" K[i] "\"")) {
                  f = FILENAME; sub(root, "src/", f)
                  print K[i] "\t" f ":" (inbody ? fn : "(file scope)")
              } }
        /^\}/ { inbody = 0; fn = "" }'
}

check_tree() { # src-dir -> prints one line per key that breaks the rule; returns their count
    local src=$1 bad=0 k o n
    owners "$src" | sort -u >"$W/owners.txt"
    for k in $KEYS; do
        o=$(awk -F'\t' -v k="$k" '$1 == k { print $2 }' "$W/owners.txt")
        n=$(printf '%s' "$o" | grep -c .)
        if [ "$n" != 1 ]; then
            echo "  $k: $n owners: $(echo $o)"; bad=$((bad + 1))
        elif [ "${o%%:*}" != src/losa/settings.c ]; then
            echo "  $k: parsed outside the settings layer: $o"; bad=$((bad + 1))
        fi
    done
    return $bad
}

nkeys=$(echo $KEYS | wc -w)
check "the schema lists keys ($nkeys)" test "$nkeys" -ge 60

# the checker finds a second reader
cp -r src "$W/src"
cat >>"$W/src/cli/cmd_run.c" <<'EOF'

static double second_reader(const deck *dk)
{
    return deck_float(dk, "prune.sparsity");
}
EOF
out=$(check_tree "$W/src"); rc=$?
echo "$out"
check "a second reader of prune.sparsity is reported (and nothing else)" \
    test "$rc" = 1 -a -n "$(echo "$out" | grep 'prune.sparsity: 2 owners: src/cli/cmd_run.c:second_reader src/losa/settings.c:prune_settings_from_deck')"

# the tree itself
out=$(check_tree src); rc=$?
echo "$out"
check "every one of the $nkeys keys has exactly one owner, in src/losa/settings.c ($rc do not)" test "$rc" = 0
echo "owners:"
cut -f2 "$W/owners.txt" | sort | uniq -c | sed 's/^/  /'
finish
