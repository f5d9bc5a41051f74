#!/usr/bin/env bash
# losa plan's time model and layout advisor on hand-derived cases.
#  - minillama's config, --gflops 10 (every kind of work at 10 GFLOP/s), a
#    network of 1e6 Gbit/s and 0 latency (communication ~ 0): the +LoRA
#    training wall = steps x (m + pp - 1) x (FLOPs of the slowest stage's
#    micro-batch) / 1e10, with steps = ceil(examples / (batch x accum)),
#    m = grad_accum / dp micro-batches per replica, and the FLOPs recomputed
#    here in Python from the formula documented in include/model.h (not
#    from losa); on 1 rank, 2 replicas (half the micro-batches) and 2
#    stages (the stage split read from the plan's ranks; a stage's share of
#    the whole model's micro-batch is its cost under the stage cost model,
#    (layers + embed on the first + head on the last) / (L + embed + head)
#    in layers, the costs read from the plan's layout.*_cost_layers);
#  - the dense perplexity: eval windows = eval tokens / eval.seqlen, one
#    rank: FLOPs / 1e10 per pass, 2 passes in mode lora (dense and pruned,
#    plus the +LoRA model: 3);
#  - the advisor for 2 ranks at 8 sequences per step: data parallelism
#    halves the training, a 2-stage pipeline with m micro-batches pays
#    (m + 1) / m, so the fastest layout has dp = 2, and the deck's layout
#    pp 2 x batch 8 x accum 1 (m = 1: no overlap at all) is projected more
#    than 1.5x slower than it: `losa run` warns (rank 0, once) and names
#    the --set line; with the advised layout it does not warn.
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/plan_time
rm -rf "$W"; mkdir -p "$W"
PY=/usr/bin/python3
MINI=$(store minillama)
S260=$(store stories260K)
NET=(--gflops 10 --net-gbps 1e6 --net-latency-us 0 --eval-tokens 25600)
BASE=(--set model.store=$MINI --set losa.mode=lora --set losa.steps=2 --set losa.samples_per_step=16
      --set losa.last_step_samples=48 --set train.batch=2 --set train.grad_accum=4
      --set train.seqlen=128 --set eval.seqlen=256 --set eval.batch=4)

for lay in "1 1" "1 2" "2 1"; do
    read -r pp dp <<<"$lay"
    out=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=$pp --set parallel.dp=$dp \
          "${NET[@]}" --json 2>"$W/err-$pp-$dp")
    check "plan pp $pp dp $dp: JSON with wall_seconds" test -n "$out"
    echo "$out" >"$W/plan-$pp-$dp.json"
    check "plan pp $pp dp $dp: +LoRA and perplexity seconds = FLOPs / rate (hand formula)" \
        $PY - "$W/plan-$pp-$dp.json" "$pp" "$dp" <<'PY'
import json, math, sys
p = json.load(open(sys.argv[1])); pp, dp = int(sys.argv[2]), int(sys.argv[3])
c = p["model"]
D, F, V, H, Hkv = c["dim"], c["hidden_dim"], c["vocab_size"], c["n_heads"], c["n_kv_heads"]
hd, kv = D // H, Hkv * (D // H)
maps = 2.0 * (D * D + 2 * kv * D + D * D + 3 * F * D)   # FLOPs per token of one layer's maps
def att(T): return 4.0 * hd * H * T * (T + 1) / 2       # per sequence and layer
def fwd(nl, head, B, T): return nl * (B * T * maps + B * att(T)) + (2.0 * B * T * V * D if head else 0)
def train(nl, head, B, T, r):
    N = B * T
    layer = 2 * N * maps + att(T) * B + 2 * N * maps + N * maps + 2.5 * att(T) * B + 3.0 * r * maps
    return nl * layer + (4.0 * N * V * D if head else 0)
B, T, accum, r = 2, 128, 4, 16                           # r: lora.r_max of input/default.ini
examples = 1 * 16 + 48
steps = math.ceil(examples / (B * accum)); m = math.ceil(accum / dp)
stages = {}
for rk in p["ranks"]:
    stages[rk["stage"]] = (rk["n_layers"], rk["stage"] == pp - 1)
lay = p["layout"]; hc, ec, L = lay["head_cost_layers"], lay["embed_cost_layers"], c["n_layers"]
share = lambda s, nl: (nl + (ec if s == 0 else 0) + (hc if s == pp - 1 else 0)) / (L + ec + hc)
worst = max(train(L, True, B, T, r) * share(s, nl) for s, (nl, h) in stages.items()) / 1e10
want = steps * (m + pp - 1) * worst
got = p["wall_seconds"]["lora_train"]
ok = abs(got - want) <= 1e-6 * want
# perplexity: 100 windows of 256 tokens (25600 / 256), batches of 4 over dp replicas
W = 25600 // 256; nb = math.ceil(math.ceil(W / dp) / 4)
per = [fwd(nl, h, math.ceil(W / dp), 256) / 1e10 / nb for nl, h in stages.values()]
want_e = 3 * (sum(per) + (nb - 1) * max(per))         # dense, pruned, +LoRA
got_e = p["wall_seconds"]["dense_eval"]
ok_e = abs(got_e - want_e) <= 1e-6 * want_e
print(f"pp {pp} dp {dp}: lora_train {got:.6g} vs {want:.6g}; dense_eval {got_e:.6g} vs {want_e:.6g}")
sys.exit(0 if ok and ok_e else 1)
PY
done

# the advisor: 2 ranks, 8 sequences per step
out=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=2 --set parallel.dp=1 \
      --set train.batch=8 --set train.grad_accum=1 "${NET[@]}" --json 2>/dev/null)
check "advisor: the fastest layout of 2 ranks is data parallel (dp = 2), slower deck > 1.5x" \
    $PY -c 'import json,sys; a = json.loads(sys.argv[1])["advice"]
print(a); sys.exit(0 if a["dp"] == 2 and a["pp"] == 1 and a["deck_seconds"] > 1.5 * a["seconds"] and
     0 < a["parallel_efficiency"] <= 1.0 + 1e-9 else 1)' "$out"
txt=$("$LOSA" plan input/default.ini "${BASE[@]}" --ranks 2 "${NET[@]}" 2>&1)
check "plan text: the layouts table and the advice's --set line" \
    grep -q -- "advice: --set parallel.pp=1 --set parallel.dp=2" <<<"$txt"

# losa run warns about the slow layout (a short run on stories260K)
RUN=(--set model.store=$S260 --set losa.mode=lora --set losa.steps=2 --set losa.samples_per_step=4
     --set losa.last_step_samples=4 --set eval.max_windows=2 --set data.calib_n=4 --set losa.rmi_n=4)
$MPIRUN -np 2 "$LOSA" run input/default.ini "${RUN[@]}" --set parallel.pp=2 --set parallel.dp=1 \
    --set train.batch=8 --set train.grad_accum=1 --set output.dir=$W/slow >"$W/slow.log" 2>&1
check "losa run, pp 2 x batch 8 x accum 1: warns once with the faster layout's --set line" \
    test "$(grep -c "warning: layout pp 2 x dp 1.*--set parallel.pp=1 --set parallel.dp=2" "$W/slow.log")" = 1
$MPIRUN -np 2 "$LOSA" run input/default.ini "${RUN[@]}" --set parallel.pp=1 --set parallel.dp=2 \
    --set output.dir=$W/fast >"$W/fast.log" 2>&1
check "losa run, the advised layout: no warning" bash -c "! grep -q 'warning: layout' '$W/fast.log'"
finish
