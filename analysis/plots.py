#!/usr/bin/python3
"""PNG plots from `losa run` directories (reads run.h5 only).

    analysis/plots.py RUN_DIR... --out DIR

Across runs:
  DIR/ppl_vs_sparsity.png      perplexity vs target sparsity, one line per method
                               (one panel per model), dense as a dashed line
Per run with LoSA steps (<tag> = the run directory relative to the runs' common
parent, '/' -> '_'):
  DIR/<tag>_layer_sparsity.png allocated sparsity per layer (x) and LoSA step (y)
  DIR/<tag>_rank.png           LoRA rank per layer and step
  DIR/<tag>_cka.png            CKA matrix of the last step's layer representations
                               (x_0 = embeddings = input of layer 0, x_i = input of
                               layer i, x_L = output of the last layer)
  DIR/<tag>_recon_err.png      relative reconstruction error per layer, one line per
                               step, with the one-shot pruner's as a dashed line
Per run with any training:
  DIR/<tag>_loss.png           training loss per optimizer step: the LoRA baseline
                               and the LoSA steps concatenated (steps separated)
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

COLORS = {"prune": "tab:red", "lora": "tab:blue", "losa": "tab:green", "dense": "black"}
SUFFIX = {"prune": "", "lora": "+LoRA", "losa": "+LoSA"}


def save(fig, path, written):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)


def plot_ppl_vs_sparsity(runs, out, written):
    models = sorted({r["model"] for r in runs})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in runs if r["model"] == model]
        dense = [r["dense_ppl"] for r in rs if common.isnum(r["dense_ppl"])]
        if dense:
            ax.axhline(np.mean(dense), color="black", ls="--", lw=1,
                       label="Dense (%.2f)" % np.mean(dense))
        for m in ("prune", "lora", "losa"):
            pts = {}
            for r in rs:
                if m in r["results"] and common.isnum(r["results"][m]["ppl"]) and common.isnum(r["target"]):
                    key = (r["pruner_name"], r["info"].get("pattern", "unstructured"))
                    pts.setdefault(key, []).append((r["target"], r["results"][m]["ppl"]))
            for (pruner, pat), p in sorted(pts.items()):
                p = np.array(sorted(p))
                xs = np.unique(p[:, 0])
                ys = [p[p[:, 0] == x, 1].mean() for x in xs]
                lab = pruner + SUFFIX[m] + ("" if pat == "unstructured" else " (%s)" % pat)
                ax.plot(100 * xs, ys, marker="o", color=COLORS[m], label=lab,
                        ls="-" if pat == "unstructured" else ":")
                if len(p) > len(xs):  # repeated runs at one sparsity: show every point
                    ax.plot(100 * p[:, 0], p[:, 1], ".", color=COLORS[m], alpha=0.4)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("target sparsity (%)")
        ax.set_ylabel("perplexity (log scale)")
        ax.set_title("%s: perplexity vs sparsity" % model)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, os.path.join(out, "ppl_vs_sparsity.png"), written)


def heat(ax, a, fmt, cmap, vmin=None, vmax=None):
    im = ax.imshow(a, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if a.size <= 240:
        for (i, j), v in np.ndenumerate(a):
            ax.text(j, i, fmt % v, ha="center", va="center", fontsize=7 if a.shape[1] <= 12 else 5,
                    color="white" if im.norm(v) < 0.5 else "black")
    return im


def step_labels(st, T):
    return ["t=%d (s=%.1f%%)" % (t + 1, 100 * st["s_t"][t]) for t in range(T)]


def layer_ticks(ax, L, axis="x"):
    step = 1 if L <= 16 else (2 if L <= 32 else 4)
    ticks = list(range(0, L, step))
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks)


def plot_run(r, out, written):
    st = r["steps"]
    name = "%s (%s, %s %s, target %.0f%%)" % (r["label"], r["model"], r["pruner_name"], r["mode"],
                                              100 * (r["target"] or 0))
    base = os.path.join(out, r["tag"] + "_")
    if st is not None and st["done"] > 0:
        T = st["done"]
        L = st["layer_sparsity"].shape[1]
        # allocated sparsity per layer and step
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * L + 3), max(2.5, 0.5 * T + 1.6)))
        im = heat(ax, 100 * st["layer_sparsity"][:T], "%.1f", "viridis")
        fig.colorbar(im, ax=ax, label="allocated sparsity (%)")
        ax.set_yticks(range(T))
        ax.set_yticklabels(step_labels(st, T))
        layer_ticks(ax, L)
        ax.set_xlabel("layer")
        ax.set_title("per-layer sparsity across LoSA steps\n" + name, fontsize=9)
        save(fig, base + "layer_sparsity.png", written)
        # rank per layer and step
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * L + 3), max(2.5, 0.5 * T + 1.6)))
        im = heat(ax, st["rank"][:T].astype(float), "%.0f", "magma")
        fig.colorbar(im, ax=ax, label="LoRA rank")
        ax.set_yticks(range(T))
        ax.set_yticklabels(["t=%d (sum %d)" % (t + 1, st["rank"][t].sum()) for t in range(T)])
        layer_ticks(ax, L)
        ax.set_xlabel("layer")
        ax.set_title("per-layer LoRA rank across LoSA steps\n" + name, fontsize=9)
        save(fig, base + "rank.png", written)
        # CKA matrix of the last step
        c = st["cka"][T - 1]
        n = c.shape[0]
        fig, ax = plt.subplots(figsize=(max(5, 0.35 * n + 3), max(4.2, 0.35 * n + 2.2)))
        # colour range from the data: CKA of neighbouring layers is often > 0.99
        lo = float(np.nanmin(c))
        digits = 2 if lo < 0.9 else min(5, 1 + int(np.ceil(-np.log10(max(1e-6, 1 - lo)))))
        im = heat(ax, c, "%%.%df" % digits, "viridis", vmin=lo, vmax=1.0)
        fig.colorbar(im, ax=ax, label="linear CKA")
        labs = ["x%d" % i for i in range(n)]
        labs[0] += "\nemb" if n > 1 else ""
        labs[-1] += "\nout"
        ticks = list(range(0, n, 1 if n <= 17 else 2 if n <= 33 else 4))
        if n - 1 not in ticks:
            ticks.append(n - 1)
        ax.set_xticks(ticks)
        ax.set_xticklabels([labs[i] for i in ticks], fontsize=7)
        ax.set_yticks(ticks)
        ax.set_yticklabels([labs[i] for i in ticks], fontsize=7)
        ax.set_title("CKA of layer inputs x_i (step %d of %d)\n%s" % (T, st["s_t"].shape[0], name),
                     fontsize=9)
        save(fig, base + "cka.png", written)
    # reconstruction error per layer: each LoSA step and the one-shot pruner
    pr = r["results"].get("prune", {}).get("recon_err")
    T = st["done"] if st is not None else 0
    if T > 0 or pr is not None:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        cm = plt.get_cmap("viridis")
        L = st["recon_err"].shape[1] if T > 0 else len(pr)
        x = np.arange(L)
        for t in range(T):
            ax.plot(x, st["recon_err"][t], "-o", ms=3, color=cm(t / max(1, T - 1)),
                    label="LoSA t=%d (s=%.1f%%)" % (t + 1, 100 * st["s_t"][t]))
        if pr is not None:
            ax.plot(x, pr, "--", color="tab:red", label="%s one-shot (%.0f%%)" %
                    (r["pruner_name"], 100 * (r["target"] or 0)))
        layer_ticks(ax, L)
        ax.set_xlabel("layer")
        ax.set_ylabel("relative reconstruction error")
        ax.set_title("reconstruction error per layer\n" + name, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, base + "recon_err.png", written)
    # training loss: LoRA baseline and LoSA steps concatenated
    lora = r["results"].get("lora", {}).get("loss")
    segs = common.losa_loss_segments(st)
    if (lora is not None and len(lora)) or any(len(s) for s in segs):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        if lora is not None and len(lora):
            ax.plot(np.arange(1, len(lora) + 1), lora, "-", color=COLORS["lora"], lw=1.2,
                    label="%s+LoRA (%d steps)" % (r["pruner_name"], len(lora)))
        off = 0
        for t, s in enumerate(segs):
            if not len(s):
                continue
            ax.plot(np.arange(off + 1, off + len(s) + 1), s, "-", color=COLORS["losa"], lw=1.2,
                    label="%s+LoSA (steps concatenated)" % r["pruner_name"] if t == 0 else None)
            if t > 0:
                ax.axvline(off + 0.5, color="gray", ls=":", lw=0.8)
            ax.text(off + 1, 0.01, " t=%d" % (t + 1), transform=ax.get_xaxis_transform(),
                    va="bottom", fontsize=7, color="gray")
            off += len(s)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (nats/token)")
        ax.set_title("training loss\n" + name, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, base + "loss.png", written)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out", required=True, help="output directory for the PNG files")
    a = ap.parse_args()
    runs = common.load_runs(a.runs)
    os.makedirs(a.out, exist_ok=True)
    written = []
    plot_ppl_vs_sparsity(runs, a.out, written)
    for r in runs:
        plot_run(r, a.out, written)
    for p in written:
        print(p)


if __name__ == "__main__":
    main()
