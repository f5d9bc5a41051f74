#!/usr/bin/python3
"""Paper-style results table from `losa run` directories.

    analysis/table.py RUN_DIR... [--latex] [--metric acc|acc_norm] [--out FILE|DIR/]

RUN_DIR is a run directory (holding run.h5) or a folder searched for them
(a sweep's runs/<job>/).  One row per method present in each run: the dense
model (once per model and dense perplexity), the one-shot pruner ("Wanda"),
pruned + LoRA ("Wanda+LoRA") and LoSA ("Wanda+LoSA").  Columns: model,
target and measured sparsity, method, perplexity, zero-shot accuracy per task
and their mean (when the run has zero-shot results, see common.py), the
fine-tuning time (training seconds) and the method's total seconds.

Markdown on stdout by default, LaTeX with --latex.  --out FILE writes the
chosen format to FILE; --out DIR/ (or an existing directory) writes both
DIR/table.md and DIR/table.tex.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TASK_ORDER = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
              "openbookqa", "piqa"]
TASK_NAMES = {"boolq": "BoolQ", "rte": "RTE", "hellaswag": "HellaSwag", "winogrande": "WinoGrande",
              "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "openbookqa": "OBQA", "piqa": "PIQA"}
METHOD_ORDER = {"dense": 0, "prune": 1, "lora": 2, "losa": 3}
DASH = "–"


def fmt(x, spec):
    return (spec % x) if common.isnum(x) else DASH


def secs(x):
    return fmt(x, "%.1f" if common.isnum(x) and x >= 10 else "%.2f")


def pct(x):
    return fmt(100.0 * x if common.isnum(x) else None, "%.2f")


def build_rows(runs, metric):
    rows, dense_seen = [], {}
    for r in runs:
        pat = r["info"].get("pattern", "unstructured")
        for m in ("dense",) + tuple(k for k in ("prune", "lora", "losa") if k in r["results"]):
            zs = r["zeroshot"].get(m)
            if m == "dense":
                if not common.isnum(r["dense_ppl"]):
                    continue
                key = (r["model"], "%.6g" % r["dense_ppl"])
                if key in dense_seen:  # one dense row per model; keep any zero-shot found later
                    if zs and not dense_seen[key]["zs"]:
                        dense_seen[key]["zs"] = zs
                    continue
                row = {"model": r["model"], "target": 0.0, "sparsity": 0.0, "pattern": "",
                       "method": "Dense", "mkey": m, "ppl": r["dense_ppl"], "zs": zs,
                       "ft": None, "total": None, "run": r["label"]}
                dense_seen[key] = row
            else:
                x = r["results"][m]
                name = r["pruner_name"] + {"prune": "", "lora": "+LoRA", "losa": "+LoSA"}[m]
                row = {"model": r["model"], "target": r["target"], "sparsity": x["sparsity"],
                       "pattern": "" if pat == "unstructured" else pat, "method": name, "mkey": m,
                       "ppl": x["ppl"], "zs": zs,
                       "ft": x["train_seconds"] if m != "prune" else None,
                       "total": x["seconds"], "run": r["label"]}
            rows.append(row)
    for row in rows:
        z = row["zs"]
        if z:
            vals = [t.get(metric) for t in z["tasks"].values()]
            if metric == "acc" and common.isnum(z.get("mean_acc")):
                row["mean"] = z["mean_acc"]
            elif vals and all(common.isnum(v) for v in vals):
                row["mean"] = sum(vals) / len(vals)
            else:
                row["mean"] = None
    rows.sort(key=lambda w: (w["model"], w["target"] or 0.0, w["pattern"], METHOD_ORDER[w["mkey"]],
                             w["run"]))
    tasks = sorted({t for w in rows if w["zs"] for t in w["zs"]["tasks"]},
                   key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER), t))
    return rows, tasks


def cells(rows, tasks, metric):
    head = ["Model", "Sparsity", "Measured", "Method", "PPL"] + \
        [TASK_NAMES.get(t, t) for t in tasks] + (["Mean"] if tasks else []) + \
        ["FT time (s)", "Total (s)", "Run"]
    body = []
    for w in rows:
        sp = "0%" if w["mkey"] == "dense" else (w["pattern"] or "%.0f%%" % (100 * w["target"]))
        meas = "%.2f%%" % (100 * w["sparsity"]) if common.isnum(w["sparsity"]) else DASH
        c = [w["model"], sp, meas, w["method"], fmt(w["ppl"], "%.2f")]
        if tasks:
            z = w["zs"]["tasks"] if w["zs"] else {}
            c += [pct(z[t].get(metric)) if t in z else DASH for t in tasks]
            c.append(pct(w.get("mean")))
        c += [secs(w["ft"]), secs(w["total"]), w["run"]]
        body.append(c)
    return head, body


def caption(metric, tasks):
    s = "Perplexity (lower is better)"
    if tasks:
        s += "; zero-shot %s in %% (higher is better) and their mean over the listed tasks" % metric
    return s + "; FT time = fine-tuning seconds, Total = the method's seconds (pruning + fine-tuning)."


def markdown(head, body, cap):
    right = [i for i, h in enumerate(head) if h not in ("Model", "Method", "Run")]
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---:" if i in right else ":---" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(c) + " |" for c in body]
    return "\n".join(out) + "\n\n" + cap + "\n"


def tex_escape(s):
    s = s.replace("\\", "\\textbackslash ")
    for a, b in (("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"), ("$", "\\$"),
                 ("{", "\\{"), ("}", "\\}"), ("–", "--")):
        s = s.replace(a, b)
    return s


def latex(head, body, cap):
    align = "".join("l" if h in ("Model", "Method", "Run") else "r" for h in head)
    out = ["\\begin{table}[t]", "\\centering", "\\small", "\\begin{tabular}{%s}" % align, "\\toprule",
           " & ".join(tex_escape(h) for h in head) + " \\\\", "\\midrule"]
    prev = None
    for c in body:
        grp = (c[0], c[1]) if c[1] != "–" else (c[0],)
        if prev is not None and grp != prev and c[1] != "–":
            out.append("\\midrule")
        prev = grp
        out.append(" & ".join(tex_escape(x) for x in c) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\caption{%s}" % tex_escape(cap), "\\end{table}"]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--latex", action="store_true", help="LaTeX (booktabs) instead of Markdown")
    ap.add_argument("--metric", choices=("acc", "acc_norm"), default="acc")
    ap.add_argument("--out", help="FILE, or DIR/ to write DIR/table.md and DIR/table.tex")
    a = ap.parse_args()
    runs = common.load_runs(a.runs)
    rows, tasks = build_rows(runs, a.metric)
    head, body = cells(rows, tasks, a.metric)
    cap = caption(a.metric, tasks)
    md, tex = markdown(head, body, cap), latex(head, body, cap)
    if a.out and (a.out.endswith("/") or os.path.isdir(a.out)):
        os.makedirs(a.out, exist_ok=True)
        for name, text in (("table.md", md), ("table.tex", tex)):
            p = os.path.join(a.out, name)
            with open(p, "w") as f:
                f.write(text)
            sys.stderr.write("wrote %s\n" % p)
    elif a.out:
        with open(a.out, "w") as f:
            f.write(tex if a.latex else md)
        sys.stderr.write("wrote %s\n" % a.out)
    else:
        sys.stdout.write(tex if a.latex else md)


if __name__ == "__main__":
    main()
