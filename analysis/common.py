"""Reading `losa run` directories for the analysis scripts.

A run directory holds run.h5 (written by src/losa/rundir.c:
losa_rundir_write_run_file, write_result, and ckpt.c: losa_history_write)
and optionally zero-shot results.  Everything
here only reads those files; no model arithmetic is done.

Zero-shot results are attached to a *method row* of the run ("dense",
"prune", "lora", "losa").  Sources, later ones overriding earlier ones:
  1. run.h5 /zeroshot/<task>/{acc,acc_norm[,acc_stderr,acc_norm_stderr,n]}
     -> the run's final model (the one in model.h5, see final_method);
     run.h5 /zeroshot/<method>/<task>/... or /<method>/zeroshot/<task>/...
     -> that method.  An optional scalar /zeroshot[/<method>]/mean_acc is used
     as the mean when present.
  2. zeroshot.json next to run.h5: either the object printed by
     `losa eval --zeroshot ... --json` ({"tasks": {...}, "mean_acc": m})
     -> the final model, or {"<method>": <that object>, ...} -> per method.
  3. zeroshot_<method>.json next to run.h5 -> that method.
"""
import json
import math
import os
import sys

import h5py
import numpy as np

METHODS = ("dense", "prune", "lora", "losa")
PRUNER_NAMES = {"magnitude": "Magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT"}


def fail(msg):
    sys.stderr.write("analysis: %s\n" % msg)
    sys.exit(2)


def find_runs(paths):
    """Run directories (holding run.h5) given run directories or folders of them."""
    runs = []
    for p in paths:
        p = os.path.normpath(p)
        if os.path.isfile(os.path.join(p, "run.h5")):
            runs.append(p)
            continue
        if not os.path.isdir(p):
            fail("%s: not a directory" % p)
        found = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d != "ckpt")
            if "run.h5" in files:
                found.append(root)
        if not found:
            fail("%s: no run.h5 found in it or below it" % p)
        runs.extend(found)
    seen, out = set(), []
    for r in runs:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def _attr_str(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return _attr_str(v.reshape(-1)[0]) if v.size else ""
    return str(v)


def _scalar(f, path):
    if path not in f:
        return None
    v = np.asarray(f[path][()], dtype=float).reshape(-1)
    return float(v[0]) if v.size else None


def _array(f, path):
    return np.asarray(f[path][()]) if path in f else None


def _zs_from_group(g):
    """{"tasks": {task: {...}}, "mean_acc": m or None} from an HDF5 group of task groups."""
    tasks = {}
    for name, item in g.items():
        if isinstance(item, h5py.Group) and "acc" in item:
            tasks[name] = {k: float(np.asarray(item[k][()]).reshape(-1)[0])
                           for k in item if isinstance(item[k], h5py.Dataset)}
    if not tasks:
        return None
    mean = None
    if "mean_acc" in g and isinstance(g["mean_acc"], h5py.Dataset):
        mean = float(np.asarray(g["mean_acc"][()]).reshape(-1)[0])
    return {"tasks": tasks, "mean_acc": mean}


def _zs_from_json(obj, where):
    if not isinstance(obj, dict) or not isinstance(obj.get("tasks"), dict):
        fail("%s: expected an object with \"tasks\": {name: {\"acc\": ..., \"acc_norm\": ...}}" % where)
    tasks = {}
    for name, t in obj["tasks"].items():
        if not isinstance(t, dict) or "acc" not in t:
            fail("%s: tasks.%s: expected an object with \"acc\"" % (where, name))
        tasks[name] = {k: float(v) for k, v in t.items() if isinstance(v, (int, float))}
    mean = obj.get("mean_acc")
    return {"tasks": tasks, "mean_acc": float(mean) if mean is not None else None}


def final_method(run):
    """The method whose model is in model.h5 (LoSA, else LoRA, else pruned)."""
    for m in ("losa", "lora", "prune"):
        if m in run["results"]:
            return m
    return "dense"


def load_zeroshot(run, f):
    zs = {}
    fin = final_method(run)
    if "zeroshot" in f:
        g = f["zeroshot"]
        z = _zs_from_group(g)
        if z:
            zs[fin] = z
        for m in METHODS:
            if m in g and isinstance(g[m], h5py.Group):
                z = _zs_from_group(g[m])
                if z:
                    zs[m] = z
    for m in METHODS:
        if m + "/zeroshot" in f:
            z = _zs_from_group(f[m + "/zeroshot"])
            if z:
                zs[m] = z
    p = os.path.join(run["dir"], "zeroshot.json")
    if os.path.isfile(p):
        try:
            obj = json.load(open(p))
        except ValueError as e:
            fail("%s: not valid JSON: %s" % (p, e))
        if isinstance(obj, dict) and "tasks" in obj:
            zs[fin] = _zs_from_json(obj, p)
        elif isinstance(obj, dict) and obj and set(obj) <= set(METHODS):
            for m, v in obj.items():
                zs[m] = _zs_from_json(v, "%s: %s" % (p, m))
        else:
            fail("%s: expected the output of `losa eval --zeroshot --json` or "
                 "{method: that output} with method in %s" % (p, ", ".join(METHODS)))
    for m in METHODS:
        p = os.path.join(run["dir"], "zeroshot_%s.json" % m)
        if os.path.isfile(p):
            try:
                zs[m] = _zs_from_json(json.load(open(p)), p)
            except ValueError as e:
                fail("%s: not valid JSON: %s" % (p, e))
    for z in zs.values():
        if z["mean_acc"] is None:
            z["mean_acc"] = float(np.mean([t["acc"] for t in z["tasks"].values()]))
    return zs


def model_name(path):
    b = os.path.basename(path.rstrip("/"))
    for ext in (".h5", ".hdf5", ".bin"):
        if b.endswith(ext):
            b = b[: -len(ext)]
    return b or path


def load_run(d):
    """Everything the scripts use from one run directory, as plain Python/numpy."""
    path = os.path.join(d, "run.h5")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        fail("%s: cannot open: %s" % (path, e))
    with f:
        if "run" not in f:
            fail("%s: no /run group (not a `losa run` file)" % path)
        a = f["run"].attrs
        info = {k: _attr_str(a[k]) for k in a}
        run = {"dir": d, "path": path, "info": info,
               "config": {k: (_attr_str(v) if isinstance(v, (bytes, str)) else v.item() if hasattr(v, "item") else v)
                          for k, v in f.attrs.items()}}
        run["model"] = model_name(info.get("model", run["config"].get("source", "?")))
        run["pruner"] = info.get("method", "?")
        run["pruner_name"] = PRUNER_NAMES.get(run["pruner"], run["pruner"].capitalize())
        run["mode"] = info.get("mode", "?")
        run["target"] = _scalar(f, "run/target_sparsity")
        run["dense_ppl"] = _scalar(f, "dense/ppl")
        res = {}
        for m in ("prune", "lora", "losa"):
            if m in f and "ppl" in f[m]:
                r = {k: _scalar(f, "%s/%s" % (m, k))
                     for k in ("ppl", "sparsity", "seconds", "train_seconds", "prune_seconds")}
                r["loss"] = _array(f, m + "/loss")
                r["recon_err"] = _array(f, m + "/recon_err")
                res[m] = r
        run["results"] = res
        st = None
        if "losa/steps" in f:
            g = f["losa/steps"]
            st = {k: np.asarray(g[k][()]) for k in g if isinstance(g[k], h5py.Dataset)}
            done = _scalar(f, "losa/steps_done")
            st["done"] = int(done) if done is not None else st["s_t"].shape[0]
        run["steps"] = st
        run["final_seconds"] = _scalar(f, "final/seconds")
        run["zeroshot"] = load_zeroshot(run, f)
    return run


def load_runs(paths):
    dirs = find_runs(paths)
    runs = [load_run(d) for d in dirs]
    # short unique labels: path relative to the common parent
    common = os.path.commonpath([os.path.abspath(d) for d in dirs]) if len(dirs) > 1 else \
        os.path.dirname(os.path.abspath(dirs[0]))
    for r in runs:
        rel = os.path.relpath(os.path.abspath(r["dir"]), common)
        r["label"] = rel if rel != "." else os.path.basename(os.path.abspath(r["dir"]))
        r["tag"] = "".join(c if c.isalnum() or c in "-._" else "_" for c in r["label"])
    return runs


def losa_loss_segments(steps):
    """List of 1-D arrays: the training loss of each completed LoSA step."""
    if steps is None or "loss" not in steps:
        return []
    n = steps.get("loss_len")
    out = []
    for t in range(min(steps["done"], steps["loss"].shape[0])):
        k = int(n[t]) if n is not None else steps["loss"].shape[1]
        out.append(np.asarray(steps["loss"][t, :k], dtype=float))
    return out


def isnum(x):
    return x is not None and not (isinstance(x, float) and math.isnan(x))
