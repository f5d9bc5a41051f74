#!/usr/bin/env bash
# Gather a sweep's run directories into one table.
#   jobs/collect.sh RUNS/<array job id> [--json]
# Reads every <dir>/<index>/{overrides.txt,result.json} (the run files only)
# and prints a tab-separated table (index, status, each overridden key, and
# the result keys present: ppl, dense_ppl, pruned_ppl, lora_ppl, losa_ppl,
# sparsity, tokens, seconds); also writes <dir>/table.tsv.  --json prints
# the rows as one JSON list instead.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: jobs/collect.sh SWEEP_DIR [--json]" >&2; exit 2; }
exec /usr/bin/python3 - "$@" <<'PY'
import json, os, sys
d = sys.argv[1]; as_json = "--json" in sys.argv[2:]
if not os.path.isdir(d):
    sys.exit(f"collect: {d}: not a directory")
rows, keys, rkeys = [], [], []
want = ["ppl", "dense_ppl", "pruned_ppl", "lora_ppl", "losa_ppl", "sparsity", "tokens", "seconds"]
for name in sorted((n for n in os.listdir(d) if n.isdigit()), key=int):
    run = os.path.join(d, name)
    row = {"index": int(name), "status": "ok"}
    try:
        toks = open(os.path.join(run, "overrides.txt")).read().split()
    except OSError:
        toks = []
    for t in toks:
        if t != "--set":
            k, _, v = t.partition("=")
            row[k] = v
            if k not in keys: keys.append(k)
    try:
        res = json.load(open(os.path.join(run, "result.json")))
        for k in want:
            if k in res:
                row[k] = res[k]
                if k not in rkeys: rkeys.append(k)
    except (OSError, ValueError):
        row["status"] = "missing"
    rows.append(row)
if not rows:
    sys.exit(f"collect: {d}: no run directories")
if as_json:
    print(json.dumps(rows)); sys.exit(0)
cols = ["index", "status"] + keys + [k for k in want if k in rkeys]
lines = ["\t".join(cols)] + ["\t".join(str(r.get(c, "")) for c in cols) for r in rows]
open(os.path.join(d, "table.tsv"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if any(r["status"] != "ok" for r in rows) else 0)
PY
