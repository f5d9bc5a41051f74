#!/usr/bin/env bash
# analysis/table.py and analysis/plots.py on two small compare-mode runs of
# stories260K (sparsity 0.5 and 0.7) made here, one of them with a
# zeroshot.json next to run.h5:
#  - every expected PNG exists, is non-empty and starts with the PNG signature;
#  - table.md and table.tex hold each run's perplexities (read from run.h5 with
#    h5py, formatted %.2f), measured sparsities and the zero-shot accuracies;
#  - a zero-shot /zeroshot group written into a copy of run.h5 is read too;
#  - a directory without run.h5 is an error that names it.
set -u
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
export MPLBACKEND=Agg
ST=$(store stories260K) || exit 1
W=$TT/test_analysis; rm -rf "$W"; mkdir -p "$W/runs"
SETS=(--set model.store=$ST --set data.calib_n=4 --set data.calib_seqlen=64 --set losa.rmi_n=4
      --set losa.steps=3 --set losa.samples_per_step=16 --set losa.last_step_samples=24
      --set train.seqlen=64 --set train.batch=2 --set train.grad_accum=2
      --set eval.seqlen=64 --set eval.max_windows=12 --set losa.mode=compare)
for s in 0.5 0.7; do
    check "losa run sparsity $s" "$LOSA" run input/default.ini "${SETS[@]}" --set prune.sparsity=$s \
        --set output.dir=$W/runs/s$s --json >/dev/null 2>$W/run$s.log
done
# what `losa eval --zeroshot ... --json` prints, for the 0.7 run's final model
cat > $W/runs/s0.7/zeroshot.json <<'EOF'
{"tasks":{"boolq":{"acc":0.615,"acc_norm":0.5,"acc_stderr":0.03,"acc_norm_stderr":0.03,"n":200,"seconds":1.0},
"arc_easy":{"acc":0.37,"acc_norm":0.35,"acc_stderr":0.03,"acc_norm_stderr":0.03,"n":200,"seconds":1.0}},
"mean_acc":0.4925}
EOF

quiet() { "$@" >$W/last.log 2>&1 || { cat $W/last.log; return 1; }; }
check "table.py writes table.md and table.tex" quiet $PY analysis/table.py $W/runs --out $W/out/
check "plots.py succeeds" quiet $PY analysis/plots.py $W/runs --out $W/out
pngs=(ppl_vs_sparsity)
for s in 0.5 0.7; do
    for k in layer_sparsity rank cka recon_err loss; do pngs+=(s${s}_$k); done
done
for p in "${pngs[@]}"; do
    check "$p.png is a non-empty PNG" $PY - "$W/out/$p.png" <<'PY'
import os, sys
p = sys.argv[1]
assert os.path.getsize(p) > 1000, os.path.getsize(p)
assert open(p, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
PY
done

check "tables hold every run's numbers" $PY - $W <<'PY'
import sys, h5py
w = sys.argv[1]
md, tex = (open('%s/out/table.%s' % (w, e)).read() for e in ('md', 'tex'))
rows = {}
for line in md.splitlines():
    c = [x.strip() for x in line.strip('|').split('|')]
    if len(c) > 5 and c[0] == 'stories260K':
        rows[(c[1], c[3])] = c
names = {'prune': 'Wanda', 'lora': 'Wanda+LoRA', 'losa': 'Wanda+LoSA'}
for s in ('0.5', '0.7'):
    f = h5py.File('%s/runs/s%s/run.h5' % (w, s), 'r')
    tgt = '%.0f%%' % (100 * f['run/target_sparsity'][0])
    dense = '%.2f' % f['dense/ppl'][0]
    assert rows[('0%', 'Dense')][4] == dense, (rows[('0%', 'Dense')], dense)
    for g, name in names.items():
        ppl = '%.2f' % f[g + '/ppl'][0]
        sp = '%.2f%%' % (100 * f[g + '/sparsity'][0])
        c = rows[(tgt, name)]
        assert c[4] == ppl and c[2] == sp, (c, ppl, sp)
        assert ' & '.join([tgt.replace('%', '\\%'), sp.replace('%', '\\%'), name, ppl]) in tex, (s, g)
        if g != 'prune':   # fine-tuning seconds
            ft = f[g + '/train_seconds'][0]
            assert c[-3] == ('%.1f' % ft if ft >= 10 else '%.2f' % ft), (c, ft)
    print('run', s, 'ppl ok: dense', dense, 'losa', '%.2f' % f['losa/ppl'][0])
# zero-shot: the 0.7 run's LoSA row (the model in model.h5), columns BoolQ, ARC-e, Mean
head = [x.strip() for x in md.splitlines()[0].strip('|').split('|')]
c = rows[('70%', 'Wanda+LoSA')]
z = dict(zip(head, c))
assert (z['BoolQ'], z['ARC-e'], z['Mean']) == ('61.50', '37.00', '49.25'), z
assert rows[('70%', 'Wanda')][head.index('BoolQ')] == '–'
assert rows[('50%', 'Wanda+LoSA')][head.index('Mean')] == '–'
assert '61.50 & 37.00 & 49.25' in tex
print('zero-shot columns ok:', z['BoolQ'], z['ARC-e'], z['Mean'])
PY

# a /zeroshot group inside run.h5 (per task acc, acc_norm) is read as well,
# with acc_norm selectable
mkdir -p $W/h5zs && cp $W/runs/s0.5/run.h5 $W/h5zs/
$PY - $W/h5zs/run.h5 <<'PY'
import sys, h5py
f = h5py.File(sys.argv[1], 'a')
for t, a, n in (('rte', 0.55, 0.6), ('piqa', 0.625, 0.75)):
    f['zeroshot/%s/acc' % t] = [a]
    f['zeroshot/%s/acc_norm' % t] = [n]
f['zeroshot/dense/rte/acc'] = [0.5]
f['zeroshot/dense/rte/acc_norm'] = [0.5]
PY
out=$($PY analysis/table.py $W/h5zs)
check "run.h5 /zeroshot: LoSA row RTE, PIQA, mean acc" grep -q 'Wanda+LoSA | [0-9.]* | 55.00 | 62.50 | 58.75 |' <<<"$out"
check "run.h5 /zeroshot/dense: dense row" grep -q 'Dense | [0-9.]* | 50.00 | – | 50.00 |' <<<"$out"
out=$($PY analysis/table.py $W/h5zs --metric acc_norm --latex)
check "--metric acc_norm in LaTeX" grep -q '60.00 & 75.00 & 67.50' <<<"$out"

mkdir -p $W/empty
check "a directory without run.h5 is an error naming it" \
    bash -c "! $PY analysis/table.py $W/empty 2>$W/err.txt && grep -q '$W/empty' $W/err.txt"
finish
