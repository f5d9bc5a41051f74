#!/usr/bin/env bash
# losa plan: sanity of the sizing model and a check against measured memory.
#  - LLaMA-2-7B (input/llama2-7b.json, no weights) on 8 / 16 / 32 ranks:
#    the stages' weights add up to 4 x the parameter count (Python from the
#    config), the peak per rank decreases, DP replicas split the dense
#    reference outputs and hold the same weights;
#  - minillama: weights_bytes = the store's parameters x 4 (losa info), and
#    the maximum resident set (GNU time %M) of 'losa eval' on 1 and 2
#    pipeline stages is the plan's weights + eval activations plus a fixed
#    runtime overhead (MPI, OpenBLAS, text): within [0, 60 MB] per rank, and
#    the growth from batch 2 to batch 8 matches the plan within 10%.
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/plan
rm -rf "$W"; mkdir -p "$W"
PY=/usr/bin/python3
WIKI=$D/text/wikitext2/wiki.test.hf_join.txt

cat > "$W/l7.ini" <<'EOF'
# LLaMA-2-7B sizing deck (config only: no weights are read)
[model]
config = input/llama2-7b.json
[parallel]
dp = 1
EOF
params=$($PY -c '
import json; c = json.load(open("input/llama2-7b.json"))
D, F, V, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
kv = c["num_key_value_heads"] * D // c["num_attention_heads"]
print(2 * V * D + D + L * (2 * D * D + 2 * kv * D + 3 * D * F + 2 * D))')
prev=""
for n in 8 16 32; do
    "$LOSA" plan "$W/l7.ini" --ranks $n --json > "$W/p$n.json" 2>/dev/null
    check "7B on $n ranks: plan runs" test -s "$W/p$n.json"
    check "7B on $n ranks: $n rank entries, weights sum to 4 x $params" $PY -c '
import json, sys; p = json.load(open(sys.argv[1])); n = int(sys.argv[2]); P = int(sys.argv[3])
r = p["ranks"]; s = sum(x["weights_bytes"] for x in r)
print("  %d ranks: peak %.3f GB, weights sum %d" % (n, p["peak_bytes_per_rank"] / 1e9, s))
ok = len(r) == n and s == 4 * P and sum(x["n_layers"] for x in r) == 32
ok = ok and all(x["peak_bytes"] == x["weights_bytes"] + x["mask_bytes"] + x["adapter_bytes"] + x["optimizer_bytes"] + x["activation_bytes"] + x["dense_ref_bytes"] for x in r)
ok = ok and p["peak_bytes_per_rank"] == max(x["peak_bytes"] for x in r)
sys.exit(not ok)' "$W/p$n.json" $n "$params"
    if [ -n "$prev" ]; then
        check "peak on $n ranks < peak on $prev ranks" $PY -c '
import json, sys; a, b = (json.load(open(f))["peak_bytes_per_rank"] for f in sys.argv[1:3])
sys.exit(not b < a)' "$W/p$prev.json" "$W/p$n.json"
    fi
    prev=$n
done
# 16 ranks as 8 stages x 2 replicas: same weights per stage as 8 x 1, half the
# dense reference outputs, non-zero gradient / Hessian all-reduce traffic
"$LOSA" plan "$W/l7.ini" --ranks 16 --set parallel.dp=2 --set prune.method=sparsegpt --json > "$W/dp2.json" 2>/dev/null
check "8 x 2: replicas hold their stage's weights, half the dense reference" $PY -c '
import json, sys; a = json.load(open(sys.argv[1]))["ranks"]; b = json.load(open(sys.argv[2]))["ranks"]
ok = all(b[k]["weights_bytes"] == a[k % 8]["weights_bytes"] and b[k]["stage"] == k % 8 and b[k]["replica"] == k // 8
         and 2 * b[k]["dense_ref_bytes"] == a[k % 8]["dense_ref_bytes"]
         and b[k]["comm_bytes"]["grad_allreduce"] > 0 and b[k]["comm_bytes"]["hessian_allreduce"] > 0
         and a[k % 8]["comm_bytes"]["grad_allreduce"] == 0 for k in range(16))
sys.exit(not ok)' "$W/p8.json" "$W/dp2.json"
err=$("$LOSA" plan "$W/l7.ini" --ranks 64 2>&1 >/dev/null)
check "64 stages for 32 layers rejected" test "$(echo "$err" | grep -c 'more stages')" = 1

# --- minillama: plan vs the store and vs measured peak memory --------------
MINI=$(store minillama) || exit 1
printf '[model]\nstore = %s\n[parallel]\npp = 1\n[eval]\nseqlen = 256\nbatch = 8\n' "$MINI" > "$W/mini.ini"
info=$("$LOSA" info "$MINI" --json 2>/dev/null)
plan1=$("$LOSA" plan "$W/mini.ini" --json 2>/dev/null)
check "minillama weights_bytes = 4 x store params ($(json_get "$info" params))" \
    test "$(json_get "$plan1" ranks.0.weights_bytes)" = "$(( 4 * $(json_get "$info" params) ))"
# a short text: tokenizing the whole of WikiText-2 on rank 0 is a transient
# peak (~70 MB) of its own that the plan does not model
head -c 200000 "$WIKI" > "$W/text.txt"
rss() { # np batch -> max RSS bytes per rank, one per line (rank order)
    rm -f "$W"/rss.*
    $MPIRUN -np "$1" bash -c '/usr/bin/time -f %M -o "$0/rss.$OMPI_COMM_WORLD_RANK" "$@"' "$W" \
        "$LOSA" eval --model "$MINI" --ppl "$W/text.txt" --seqlen 256 --batch "$2" --max-windows 16 \
        >/dev/null 2>&1 || return 1
    for ((k = 0; k < $1; k++)); do echo $(( $(tail -n1 "$W/rss.$k") * 1024 )); done
}
for np in 1 2; do
    for b in 2 8; do
        "$LOSA" plan "$W/mini.ini" --ranks $np --set eval.batch=$b --json > "$W/pm$np.$b.json" 2>/dev/null
        rss $np $b > "$W/rss$np.$b" || echo "eval under /usr/bin/time failed"
    done
    check "minillama eval on $np stage(s): measured max RSS - (weights + eval activations) in [0, 60 MB]" $PY -c '
import json, sys
W, np_ = sys.argv[1], int(sys.argv[2]); ok = True
for b in (2, 8):
    plan = json.load(open("%s/pm%d.%d.json" % (W, np_, b)))["ranks"]
    rss = [int(x) for x in open("%s/rss%d.%d" % (W, np_, b))]
    for r, m in zip(plan, rss):
        want = r["weights_bytes"] + r["eval_activation_bytes"]
        print("  np %d batch %d rank %d: measured %.1f MB, plan %.1f MB, overhead %.1f MB" % (np_, b, r["rank"], m / 1e6, want / 1e6, (m - want) / 1e6))
        ok = ok and 0 <= m - want <= 60e6
    ok = ok and len(rss) == np_
sys.exit(not ok)' "$W" $np
    check "minillama eval on $np stage(s): RSS growth batch 2 -> 8 matches the plan within 10% (or 8 MB)" $PY -c '
import json, sys
W, np_ = sys.argv[1], int(sys.argv[2]); ok = True
p = {b: json.load(open("%s/pm%d.%d.json" % (W, np_, b)))["ranks"] for b in (2, 8)}
m = {b: [int(x) for x in open("%s/rss%d.%d" % (W, np_, b))] for b in (2, 8)}
for k in range(np_):
    dp = p[8][k]["eval_activation_bytes"] - p[2][k]["eval_activation_bytes"]; dm = m[8][k] - m[2][k]
    print("  rank %d: measured growth %.1f MB, plan %.1f MB" % (k, dm / 1e6, dp / 1e6))
    ok = ok and abs(dm - dp) <= max(0.1 * dp, 8e6)  # small per-batch buffers (ids, targets) are not planned
sys.exit(not ok)' "$W" $np
done
rm -rf "$W"
finish
