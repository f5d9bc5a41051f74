#!/usr/bin/env bash
# losa plan's time model and layout advisor on hand-derived cases.
#  - minillama's config, --gflops 10 (every kind of work at 10 GFLOP/s), a
#    network of 1e6 Gbit/s and 0 latency (communication ~ 0): the +LoRA
#    training wall = steps x the 1F1B schedule's wall (below: the longest
#    path through each stage's forwards and backwards in run_1f1b's order,
#    derived here in Python as a recursion over the operations' end times),
#    a stage's micro-batch its FLOPs / 1e10, split into the forward step
#    (the layers' forward share of the cost model, model_stage_cost_train's
#    FLOPs + 35 FLOPs per byte of one of the 3 elementwise passes, the
#    embedding, and the last stage's head and loss) and the backward (the
#    rest), with steps = ceil(examples / (batch x accum)),
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
#    the --set line; with the advised --set line it does not warn, and
#    it trains the same losses as 1 rank (within the data-parallel 1e-4);
#  - the first touch of each pass's fresh buffers (--touch-gbs) and the
#    pruners' rates from a bench prune JSON (see below).
set -u
source "$(dirname "$0")/lib.sh"
W=$TT/plan_time
rm -rf "$W"; mkdir -p "$W"
PY=/usr/bin/python3
MINI=$(store minillama)
S260=$(store stories260K)
NET=(--gflops 10 --net-gbps 1e6 --net-latency-us 0 --eval-tokens 25600 --touch-gbs 0)
BASE=(--set model.store=$MINI --set losa.mode=lora --set losa.steps=2 --set losa.samples_per_step=16
      --set losa.last_step_samples=48 --set train.batch=2 --set train.grad_accum=4
      --set train.seqlen=128 --set eval.seqlen=256 --set eval.batch=4)

# The 1F1B wall of stages with forward f[s] and backward b[s] seconds over m
# micro-batches, x seconds per blocking exchange: each stage's operations in
# run_1f1b's order (warm-up forwards, then forward + backward pairs, then
# the remaining backwards; the sends and receives paired as the trainer
# pairs them), an operation ends when its stage's previous one has and,
# for an exchange, x after both ends have reached it.
cat >"$W/sched.py" <<'PY'
import functools
def onef1b(f, b, m, x):
    P = len(f)
    prog = []
    for p in range(P):
        ops, w = [], min(P - p - 1, m)
        nxt, prv = p < P - 1, p > 0
        def xc(*msgs):  # msgs: (kind, j, send) kept when the neighbour exists
            keep = [(k, j, s) for k, j, s in msgs if (nxt if (k == "F") == s else prv)]
            if keep: ops.append(("x", keep))
        for j in range(w): xc(("F", j, 0)); ops.append(("c", f[p])); xc(("F", j, 1))
        if m - w > 0: xc(("F", w, 0))
        for i in range(m - w):
            ops.append(("c", f[p])); xc(("F", w + i, 1), ("B", i, 0)); ops.append(("c", b[p]))
            if i == m - w - 1: xc(("B", i, 1))
            else: xc(("B", i, 1), ("F", w + i + 1, 0))
        for i in range(m - w, m): xc(("B", i, 0)); ops.append(("c", b[p])); xc(("B", i, 1))
        prog.append(ops)
    def peer(p, k, j, s):  # the stage and op index of the other end of message (k, j)
        q = p + 1 if (k == "F") == bool(s) else p - 1
        for n, op in enumerate(prog[q]):
            if op[0] == "x" and (k, j, 1 - s) in op[1]: return q, n
    @functools.lru_cache(None)
    def end(p, n):
        before = end(p, n - 1) if n > 0 else 0.0
        op = prog[p][n]
        if op[0] == "c": return before + op[1]
        t = before
        for k, j, s in op[1]:
            q, o = peer(p, k, j, s)
            t = max(t, max(before, end(q, o - 1) if o > 0 else 0.0) + x)
        return t
    return max(end(p, len(prog[p]) - 1) for p in range(P))
PY

for lay in "1 1" "1 2" "2 1"; do
    read -r pp dp <<<"$lay"
    out=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=$pp --set parallel.dp=$dp \
          "${NET[@]}" --json 2>"$W/err-$pp-$dp")
    check "plan pp $pp dp $dp: JSON with wall_seconds" test -n "$out"
    echo "$out" >"$W/plan-$pp-$dp.json"
    check "plan pp $pp dp $dp: +LoRA and perplexity seconds = FLOPs / rate (hand formula)" \
        $PY - "$W/plan-$pp-$dp.json" "$pp" "$dp" "$W" <<'PY'
import json, math, sys
sys.path.insert(0, sys.argv[4]); from sched import onef1b
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
# a layer's forward share of its cost (model_stage_cost_train, dropout on:
# maps twice, attention once; elementwise 22 D + 4 kv + 7 F floats a token,
# 3 passes of which the forward is one; the adapters' 11 passes over the
# map weights once per step (its / accum share in a micro-batch's cost), on
# every replica after the micro-batches, the slowest stage's ending the
# step; 35 FLOPs per byte)
N = B * T; ew = 22 * D + 4 * kv + 7 * F; wts = maps / 2
lstep = 35 * 4 * 11 * wts / accum
lcost = (2 * N * maps + att(T) * B + 2 * N * maps + N * maps + 2.5 * att(T) * B + 3.0 * r * maps
         + 35 * 4 * N * ew * 3 + lstep)
lfwd = 2 * N * maps + att(T) * B + 35 * 4 * N * ew
u = train(L, True, B, T, r) / (L + ec + hc) / 1e10      # seconds per layer of cost
fs = [u * (nl * lfwd / lcost + (ec if s == 0 else 0) + (hc if s == pp - 1 else 0))
      for s, (nl, h) in sorted(stages.items())]
bs = [u * nl * (1 - (lfwd + lstep) / lcost) for s, (nl, h) in sorted(stages.items())]
us = [u * nl * accum * lstep / lcost for s, (nl, h) in sorted(stages.items())]
want = steps * (onef1b(fs, bs, m, 0.0) + max(us))
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

# the pipeline's messages: at 1000 us per message (bytes ~ 0) each blocking
# exchange (the activations forward, a gradient back, or the two paired in
# one send+receive) ends 1 ms after both stages reach it.  2 stages, 4
# micro-batches: the critical path of run_1f1b's order crosses the link 5
# times (the first forward, then each of the 4 backwards' gradients as
# stage 0 waits for them) when stage 1 (with the head) is the slower one;
# 8 steps (64 examples of 2 x 4): +0.04 s of +LoRA training over 0 us;
# and the same from the schedule's recursion with the plan's stage times.
a=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=2 --set parallel.dp=1 "${NET[@]}" --json 2>/dev/null)
b=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=2 --set parallel.dp=1 "${NET[@]}" \
    --net-latency-us 1000 --json 2>/dev/null)
check "plan pp 2: one exchange per micro-batch and stage (+0.04 s at 1 ms each)" \
    $PY -c 'import json,sys; a, b = (json.loads(x)["wall_seconds"]["lora_train"] for x in sys.argv[1:3])
print(b - a); sys.exit(0 if abs((b - a) - 0.04) <= 1e-6 else 1)' "$a" "$b"

# the layers' forward share as bench train measured it (layer_forward_share
# 0.7 of a layer's micro-batch; the head and loss 1.5 layers,
# parallel.head_cost_layers: the split puts 4 of minillama's 6 layers on
# the first stage, the slower one), 2 stages, m = 2 micro-batches:
# by hand, stage 0 runs F0 F1 B0 B1 and stage 1 F0 B0 F1 B1 (its forward
# step with the head); B0 on stage 0 waits for stage 1's F0 B0, stage 1's
# F1 for stage 0's F1, B1 on stage 0 for stage 1's B1:
#   wall = max(2 f0, f0 + t1) + max(b0, t1) + b0   (t = f + b)
# where the old bound sum t + (m - 1) max t = 2 t0 + t1 over-counts a
# slower first stage (here f0 < t1: wall = t0 + 2 t1).  The adapters'
# per-step work (a share s of each layer's cost, taken out of the
# micro-batches and run once a step after them, the 4-layer stage's ending
# it) leaves this wall unchanged: the path loses s from 2 x 2 layers of
# stage 1's two micro-batches and 4 of stage 0's one, and gains 2 x 4 s.
$PY -c 'import json; print(json.dumps({"step_gflops": 10, "step_gflops_median": 10,
"layer_forward_share": 0.7}))' >"$W/bt.json"
out=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=2 --set parallel.dp=1 \
      --set train.grad_accum=2 --set parallel.head_cost_layers=1.5 "${NET[@]}" \
      --bench "$W/bt.json" --json 2>/dev/null)
check "plan pp 2, m 2, measured forward share: the 1F1B wall by hand" $PY - "$out" <<'PY'
import json, math, sys
p = json.loads(sys.argv[1]); c = p["model"]
D, F, V, H, Hkv, L = c["dim"], c["hidden_dim"], c["vocab_size"], c["n_heads"], c["n_kv_heads"], c["n_layers"]
hd, kv = D // H, Hkv * (D // H)
maps = 2.0 * (D * D + 2 * kv * D + D * D + 3 * F * D)
att = 4.0 * hd * H * 128 * 129 / 2
N, B, r = 2 * 128, 2, 16
whole = L * (5 * N * maps + 3.5 * att * B + 3.0 * r * maps) + 4.0 * N * V * D
lay = p["layout"]; ec, hc = lay["embed_cost_layers"], lay["head_cost_layers"]
n = {rk["stage"]: rk["n_layers"] for rk in p["ranks"]}
u = whole / 1e10 / (L + ec + hc)
f0, b0 = u * (0.7 * n[0] + ec), u * 0.3 * n[0]
f1, b1 = u * (0.7 * n[1] + hc), u * 0.3 * n[1]
t1 = f1 + b1
steps = math.ceil(64 / (2 * 2))
want = steps * (max(2 * f0, f0 + t1) + max(b0, t1) + b0)
old = steps * (f0 + b0 + t1 + max(f0 + b0, t1))
got = p["wall_seconds"]["lora_train"]
print(n, hc, got, want, "(old bound", old, ")")
sys.exit(0 if abs(got - want) <= 1e-6 * want and abs(hc - 1.5) < 1e-12 and n[0] == 4 and
         want < old * (1 - 1e-3) else 1)
PY

check "plan --bench: the measured forward share is printed among the assumptions" \
    grep -q "the forward 0.70 of a layer (--bench)" <<<"$("$LOSA" plan input/default.ini "${BASE[@]}" \
        --set parallel.pp=2 --set parallel.dp=1 "${NET[@]}" --bench "$W/bt.json" 2>&1)"
# a share outside (0, 1) is no share of a layer's time: refused, naming file and key
$PY -c 'import json; print(json.dumps({"step_gflops": 10, "layer_forward_share": 1.5}))' >"$W/bt_bad.json"
err=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=1 --set parallel.dp=1 \
      --bench "$W/bt_bad.json" 2>&1 >/dev/null)
check "plan --bench: layer_forward_share 1.5 refused (file and key named)" \
    grep -q "bt_bad.json: layer_forward_share 1.5" <<<"$err"

# fresh memory: every perplexity pass allocates its activations
# (eval_activation_bytes) afresh: at --touch-gbs 1 the 3 passes of mode
# lora take 3 x bytes / 1e9 s more than at 0 (not counted)
t0=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=1 --set parallel.dp=1 "${NET[@]}" --json 2>/dev/null)
t1=$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=1 --set parallel.dp=1 "${NET[@]}" \
     --touch-gbs 1 --json 2>/dev/null)
check "plan --touch-gbs 1: each perplexity pass pays eval_activation_bytes / 1 GB/s" \
    $PY -c 'import json,sys; a, b = (json.loads(x) for x in sys.argv[1:3])
d = b["wall_seconds"]["dense_eval"] - a["wall_seconds"]["dense_eval"]
w = 3 * b["ranks"][0]["eval_activation_bytes"] / 1e9; print(d, w)
sys.exit(0 if w > 0 and abs(d - w) <= 1e-9 * w else 1)' "$t0" "$t1"

# the set-up phase: the process's and MPI's start, the text files tokenized
# on rank 0 (data.calib + data.eval_text + data.train: their bytes at the
# tokenizer's rate), every rank's stage allocated and read (its fp32 bytes
# at the store rate), the slowest stage's: with a bench forward JSON that
# has the set-up's rates (start 0.5 s, 0.25 GB/s, 2e6 bytes/s) the phase is
# recomputed here from the deck's files' sizes and minillama's parameter
# count per stage (D 256, F 768, Hkv 4 of H 8, V 32000, untied head; a
# block of 4 MiB or more is rounded up to 2 MiB pages, core_alloc_bytes;
# the layer table beside it, under 64 KB, is at most 2.6e-4 s at 0.25 GB/s:
# the bound of the check); mode prune tokenizes no training set; without
# the rates the plan says "assumed" and uses 0.3 s, 1 GB/s, 4e6 bytes/s.
$PY -c 'import json; print(json.dumps({"forward_gflops": 10, "start_seconds": 0.5,
"store_load_gbs": 0.25, "tokenize_bytes_per_s": 2e6}))' >"$W/bs.json"
$PY -c 'import json; print(json.dumps({"forward_gflops": 10}))' >"$W/bs_old.json"
for case in "lora 1 bs" "lora 2 bs" "prune 1 bs" "lora 2 bs_old"; do
    read -r mode pp bj <<<"$case"
    j=$("$LOSA" plan input/default.ini "${BASE[@]}" --set losa.mode=$mode --set parallel.pp=$pp \
        --set parallel.dp=1 "${NET[@]}" --bench "$W/$bj.json" --json 2>/dev/null)
    check "plan set-up ($mode, pp $pp, $bj): start + text / tokenizer + the stage's bytes / store rate" \
        $PY - "$j" "$mode" "$pp" "$bj" <<'PY'
import configparser, json, math, os, sys
j, mode, pp, bj = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
cp = configparser.ConfigParser(inline_comment_prefixes=("#",)); cp.read("input/default.ini")
files = [cp["data"]["calib"], cp["data"]["eval_text"]] + ([cp["data"]["train"]] if mode != "prune" else [])
text = sum(os.path.getsize(f) for f in files)
start, gbs, bps = (0.5, 0.25, 2e6) if bj == "bs" else (0.3, 1.0, 4e6)
D, F, L, H, Hkv, V = 256, 768, 6, 8, 4, 32000
layer = 2 * D * D + 2 * D * (D * Hkv // H) + 3 * D * F + 2 * D
split = j["layout"]["stage_layers"]
assert len(split) == pp and sum(split) == L, split
def stage_bytes(s):
    n = split[s] * layer + (V * D if s == 0 else 0) + (D + V * D if s == pp - 1 else 0)
    b = 4 * n
    return b if b < (4 << 20) else -(-b // (2 << 20)) * (2 << 20)
busy = [start + text / bps + stage_bytes(s) / (gbs * 1e9) for s in range(pp)]
got_w = j["wall_seconds"]["setup"]
got_b = [j["ranks"][s]["seconds"]["setup"] for s in range(pp)]
bound = (64 << 10) / (gbs * 1e9)
print(text, busy, got_b, got_w, bound)
ok = all(0 <= g - w <= bound for g, w in zip(got_b, busy)) and abs(got_w - max(got_b)) < 1e-12
ok = ok and abs(j["wall_seconds"]["total"] - sum(v for k, v in j["wall_seconds"].items() if k != "total")) < 1e-9
sys.exit(0 if ok else 1)
PY
done
check "plan set-up: the rates of a bench JSON without them are named as assumed" \
    grep -q "set-up: start 0.30 s (assumed), store 1.00 GB/s (assumed), tokenizer 4.00 MB/s (assumed)" \
    <<<"$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=1 --set parallel.dp=1 \
          "${NET[@]}" --bench "$W/bs_old.json" 2>&1)"
check "plan set-up: the measured rates are named as --bench" \
    grep -q "set-up: start 0.50 s (--bench), store 0.25 GB/s (--bench), tokenizer 2.00 MB/s (--bench)" \
    <<<"$("$LOSA" plan input/default.ini "${BASE[@]}" --set parallel.pp=1 --set parallel.dp=1 \
          "${NET[@]}" --bench "$W/bs.json" 2>&1)"

# the pruners' rates from a `bench prune --json` at the run's own layer shape
# and calibration tokens (minillama, 16 x 256): doubling every measured time
# adds exactly one more of them per layer and step, so the LoSA prune step
# grows by L x (SparseGPT: statistics + hinv + mask + sweep + update;
# Wanda: mask); on 2 replicas the statistics cover half the windows, and
# nothing else is split: minillama's widths 256 and 768 are at most
# DIST_HINV_LOCAL_MAX (every replica factorises alone) and its maps (at
# most 768 x 256 weights) at most DIST_ROWS_LOCAL_MAX (every replica sweeps
# and masks all rows of its own copy):
# L x (stats / 2 + hinv + mask + sweep + update) = 6 x (0.05 + 0.2 + 0.3 + 0.9) = 8.7.
bp_json() { # factor -> a bench prune JSON for minillama's layer shape
    $PY -c 'import json,sys; f=float(sys.argv[1]); print(json.dumps({"wanda_s": 0.7*f, "sparsegpt_s": 1.5*f,
"forward_s": 0.1, "breakdown": {"wanda": {"stats_s": 0.01*f, "mask_s": 0.7*f}, "sparsegpt": {"stats_s": 0.1*f,
"hinv_s": 0.2*f, "mask_s": 0.3*f, "sweep_s": 0.4*f, "update_s": 0.5*f}}, "n": 16, "seqlen": 256,
"dim": 256, "hidden_dim": 768, "n_heads": 8, "n_kv_heads": 4}))' "$1"
}
bp_json 1 >"$W/bp1.json"; bp_json 2 >"$W/bp2.json"
PR=(--set model.store=$MINI --set losa.mode=losa --set losa.steps=2 --set data.calib_n=16
    --set data.calib_seqlen=256 "${NET[@]}")
for case in "sparsegpt 1 9.0" "sparsegpt 2 8.7" "wanda 1 4.2"; do
    read -r meth dp want <<<"$case"
    a=$("$LOSA" plan input/default.ini "${PR[@]}" --set prune.method=$meth --set parallel.pp=1 \
        --set parallel.dp=$dp --bench "$W/bp1.json" --json 2>/dev/null)
    b=$("$LOSA" plan input/default.ini "${PR[@]}" --set prune.method=$meth --set parallel.pp=1 \
        --set parallel.dp=$dp --bench "$W/bp2.json" --json 2>/dev/null)
    check "plan --bench prune ($meth, dp $dp): a prune step grows by $want s when the pruner's times double" \
        $PY -c 'import json,sys; a, b = (json.loads(x)["step_seconds"]["losa_prune"] for x in sys.argv[1:3])
w = float(sys.argv[3]); print(b - a, w); sys.exit(0 if abs((b - a) - w) <= 1e-9 * w else 1)' "$a" "$b" "$want"
done
# the replicas' messages of a SparseGPT layer (prune_layer,
# dist_sparsegpt_rows, dist_sparsegpt_hinv), counted by hand for minillama
# on 2 replicas: all-reduces (2 (dp - 1) = 2 messages each) of the column
# sums, the two reconstruction sums and the four Hessians = 7 x 2 = 14; the
# four Hessians (256 and 768 wide: factorised on every replica) each
# all-reduce their status: 4 x 2 = 8; the 7 maps (at most 768 x 256
# weights: swept whole on every replica, no score gathers, no gather of W)
# each all-reduce their status: 7 x 2 = 14; 14 + 8 + 14 = 36 messages per
# layer (129 when the rows were split: 18 column blocks of 4 messages and
# per map a gather of W and two all-reduces more).  At 1000 us per message
# (and 1e6 Gbit/s: the bytes ~ 0) a prune step of the 6 layers grows by
# 6 x 36 x 1e-3 = 0.216 s over 0 us.
a=$("$LOSA" plan input/default.ini "${PR[@]}" --set prune.method=sparsegpt --set parallel.pp=1 \
    --set parallel.dp=2 --bench "$W/bp1.json" --json 2>/dev/null)
b=$("$LOSA" plan input/default.ini "${PR[@]}" --set prune.method=sparsegpt --set parallel.pp=1 \
    --set parallel.dp=2 --bench "$W/bp1.json" --net-latency-us 1000 --json 2>/dev/null)
check "plan, SparseGPT on 2 replicas: 36 messages per layer (a prune step +0.216 s at 1 ms each)" \
    $PY -c 'import json,sys; a, b = (json.loads(x)["step_seconds"]["losa_prune"] for x in sys.argv[1:3])
print(b - a); sys.exit(0 if abs((b - a) - 0.216) <= 1e-6 else 1)' "$a" "$b"
check "plan --bench prune: the assumptions name the measured pruner rates" \
    grep -q "pruners (--bench)" <<<"$("$LOSA" plan input/default.ini "${PR[@]}" --set parallel.pp=1 \
        --set parallel.dp=1 --bench "$W/bp1.json" 2>&1)"

# the layers' and the head's forward rates of a bench forward JSON (layers
# 5, head 20 GF/s; every other kind of work at --gflops 10): the
# calibration passes run the layers only, at the layers' rate, and a
# perplexity pass the layers at theirs and the head at its own.  Mode losa,
# 1 rank, minillama, calib 16 x 256, losa.rmi_n 16, lora.r_max 16:
#  - dense_ref = the layers' forward FLOPs over the 16 windows / 5e9;
#  - a grams step (step_decide) = the layers' forward over the 16 rmi_n
#    windows / 5e9 + per layer the merge (a rank-16 product per map:
#    2 x 16 x the layer's map weights) and the centred Gram of its input
#    (2 x 16^2 x 256 x D), and one more Gram of the final output, at 1e10;
#  - dense_eval (one pass: 100 windows of 256) = layers / 5e9 + head / 2e10.
$PY -c 'import json; print(json.dumps({"forward_gflops": 10, "forward_gflops_median": 10,
"layers_gflops_median": 5, "head_gflops_median": 20}))' >"$W/bf.json"
out=$("$LOSA" plan input/default.ini "${PR[@]}" --set prune.method=wanda --set parallel.pp=1 \
      --set parallel.dp=1 --bench "$W/bf.json" --json 2>/dev/null)
check "plan --bench forward with layers/head rates: dense_ref, grams and dense_eval (hand formula)" \
    $PY - "$out" <<'PY'
import json, sys
p = json.loads(sys.argv[1]); c = p["model"]
D, F, V, H, Hkv, L = c["dim"], c["hidden_dim"], c["vocab_size"], c["n_heads"], c["n_kv_heads"], c["n_layers"]
hd, kv = D // H, Hkv * (D // H)
wts = D * D + 2 * kv * D + D * D + 3 * F * D
def att(T): return 4.0 * hd * H * T * (T + 1) / 2
def layers(B, T): return L * (B * T * 2.0 * wts + B * att(T))
want_ref = layers(16, 256) / 5e9
gram = 2.0 * 16 * 16 * 256 * D / 1e10
want_g = layers(16, 256) / 5e9 + L * (gram + 2.0 * 16 * wts / 1e10) + gram
want_e = layers(100, 256) / 5e9 + 2.0 * 100 * 256 * V * D / 2e10
got = (p["wall_seconds"]["dense_ref"], p["step_seconds"]["grams"], p["wall_seconds"]["dense_eval"])
want = (want_ref, want_g, want_e)
print(got, want)
sys.exit(0 if all(abs(g - w) <= 1e-6 * w for g, w in zip(got, want)) else 1)
PY

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
RUN=(--set model.store=$S260 --set losa.mode=lora --set losa.steps=2 --set losa.samples_per_step=16
     --set losa.last_step_samples=16 --set eval.max_windows=2 --set data.calib_n=4 --set losa.rmi_n=4)
$MPIRUN -np 2 "$LOSA" run input/default.ini "${RUN[@]}" --set parallel.pp=2 --set parallel.dp=1 \
    --set train.batch=8 --set train.grad_accum=1 --set output.dir=$W/slow >"$W/slow.log" 2>&1
check "losa run, pp 2 x batch 8 x accum 1: warns once with the faster layout's --set line" \
    test "$(grep -c "warning: layout pp 2 x dp 1.*--set parallel.pp=1 --set parallel.dp=2" "$W/slow.log")" = 1
# the advised --set line, as the warning prints it, runs without a warning
read -ra ADV <<<"$(grep -o -- '--set parallel.pp=[^(]*' "$W/slow.log" | head -1)"
check "losa run warning: an advice line of four --set" test "${#ADV[@]}" = 8
$MPIRUN -np 2 "$LOSA" run input/default.ini "${RUN[@]}" "${ADV[@]}" \
    --set output.dir=$W/fast >"$W/fast.log" 2>&1
check "losa run, the advised layout: no warning" bash -c "! grep -q 'warning: layout' '$W/fast.log'"
# ... and trains the same optimizer steps as the deck's layout on 1 rank
# (batch 8 x accum 1): the loss is a token mean over the step, so only the
# summation order differs (data-parallel sums, other GEMM shapes): per step
# within 1e-4 relative, the data-parallel tolerance of test_layouts.
"$LOSA" run input/default.ini "${RUN[@]}" --set parallel.pp=1 --set parallel.dp=1 \
    --set train.batch=8 --set train.grad_accum=1 --set output.dir=$W/one >"$W/one.log" 2>&1
for lay in slow fast; do
    check "losa run, layout $lay: the +LoRA losses of 1 rank (batch 8 x 1) within 1e-4" \
        $PY -c 'import h5py, numpy as np, sys
a, b = (np.asarray(h5py.File(f, "r")["lora/loss"][()], dtype=float).ravel() for f in sys.argv[1:3])
r = np.abs(a - b) / np.abs(b); print(a, b, r.max())
sys.exit(0 if a.size == b.size and a.size > 0 and r.max() <= 1e-4 else 1)' "$W/$lay/run.h5" "$W/one/run.h5"
done
finish
