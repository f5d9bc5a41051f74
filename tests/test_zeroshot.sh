#!/usr/bin/env bash
# losa eval --zeroshot end to end: the --json keys on stories260K (all 8
# tasks, --limit 20), the same numbers under mpirun -np 2 (2 pipeline
# stages), every request's prompt rebuilt independently from the raw data
# by lm-eval's templates (tests/ref/zs_prompts.py), and on minillama the
# token rule checked against the SentencePiece library.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
S=$(store stories260K) || exit 1
M=$(store minillama) || exit 1
TASKS=boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa,piqa
OUT=$TT/zeroshot_sh; mkdir -p "$OUT"; rm -f "$OUT"/*.jsonl

LOSA_ZS_DUMP=$OUT/s1.jsonl "$LOSA" eval --model "$S" --zeroshot $TASKS --limit 20 --json \
    >"$OUT/np1.json" 2>"$OUT/np1.err"
check "eval --zeroshot exits 0" test $? = 0
J1=$(cat "$OUT/np1.json")
keys_ok() { /usr/bin/python3 - "$1" <<'PY'
import json, sys
j = json.loads(sys.argv[1]); t = j["tasks"]
names = "boolq rte hellaswag winogrande arc_easy arc_challenge openbookqa piqa".split()
assert sorted(t) == sorted(names), sorted(t)
for n in names:
    for k in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n"):
        assert k in t[n], (n, k)
    assert t[n]["n"] == 20, (n, t[n]["n"])
    for k in ("acc", "acc_norm"):
        p = t[n][k]
        assert 0 <= p <= 1 and abs(p * 20 - round(p * 20)) < 1e-9, (n, k, p)
        se = (p * (1 - p) / 19) ** 0.5
        assert abs(t[n][k + "_stderr"] - se) < 1e-12, (n, k)
mean = sum(t[n]["acc"] for n in names) / len(names)
assert abs(j["mean_acc"] - mean) < 1e-12, (j["mean_acc"], mean)
print("keys ok, mean_acc", j["mean_acc"])
PY
}
check "json keys tasks.*.{acc,acc_norm,*_stderr,n}, n = 20, mean_acc = mean" keys_ok "$J1"

$MPIRUN -np 2 "$LOSA" eval --model "$S" --zeroshot $TASKS --limit 20 --json \
    >"$OUT/np2.json" 2>"$OUT/np2.err"
check "mpirun -np 2 exits 0" test $? = 0
same() { /usr/bin/python3 - "$OUT/np1.json" "$OUT/np2.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
for j in (a, b):
    for t in j["tasks"].values():
        t.pop("seconds", None)
assert a["tasks"] == b["tasks"] and a["mean_acc"] == b["mean_acc"], (a, b)
PY
}
check "np=2 (2 stages) gives the same accuracies as np=1" same

# all RTE rows (quoted TSV) and more HellaSwag items (bracket artifacts)
LOSA_ZS_DUMP=$OUT/s2.jsonl "$LOSA" eval --model "$S" --zeroshot rte --limit 300 >/dev/null 2>&1 &&
LOSA_ZS_DUMP=$OUT/s2.jsonl "$LOSA" eval --model "$S" --zeroshot hellaswag --limit 80 >/dev/null 2>&1
check "dump runs exit 0" test $? = 0
check "prompts equal lm-eval's templates rebuilt from the raw data" \
    /usr/bin/python3 tests/ref/zs_prompts.py <(cat "$OUT/s1.jsonl" "$OUT/s2.jsonl") "$D"

LOSA_ZS_DUMP=$OUT/m.jsonl "$LOSA" eval --model "$M" --zeroshot $TASKS --limit 2 >/dev/null 2>&1
check "minillama --limit 2 exits 0" test $? = 0
check "minillama token sequences equal SentencePiece's (ctx = BOS+enc(ctx), cont = tail)" \
    /usr/bin/python3 tests/ref/zs_prompts.py "$OUT/m.jsonl" "$D" \
    --spm "$D/models/minillama/tokenizer.model" --max-seq-len 256

err=$("$LOSA" eval --model "$S" --zeroshot nosuchtask 2>&1 >/dev/null)
check "unknown task fails naming the task file" test $? != 0 -a -n "$(echo "$err" | grep nosuchtask.ini)"
finish
