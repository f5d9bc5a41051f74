#!/usr/bin/python3
"""Independent check of `losa eval --zeroshot` requests ($LOSA_ZS_DUMP file).

Rebuilds every request from the raw data files the way lm-evaluation-harness
builds its prompts (its templates and HellaSwag preprocessing, Python's csv
module for the RTE TSV) and compares context, continuation, gold and the
acc_norm length.  With --spm tokenizer.model it also checks the token rule:
ctx = [BOS] + encode(context without trailing spaces), whole = [BOS] +
encode(context + continuation), sequence = ctx + whole[len(ctx):], cut from
the left to max_seq_len + 1 tokens, the tail scored.

usage: zs_prompts.py DUMP.jsonl DATA_DIR [--spm tokenizer.model --max-seq-len N]
"""
import csv
import json
import re
import sys


def hs_preprocess(text):  # lm-eval tasks/hellaswag/utils.py
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def items(task, data):
    """-> list of (contexts[C], continuations[C], choice_texts[C], gold)."""
    out = []
    if task == "boolq":
        for d in jsonl(f"{data}/eval/boolq.jsonl"):
            q = d["query"]
            assert q.startswith("Passage: ")
            i = q.rindex("\nQuestion: ")
            passage, question = q[len("Passage: "):i], q[i + len("\nQuestion: "):].rstrip("?")
            ctx = f"{passage}\nQuestion: {question}?\nAnswer:"
            ch = ["no", "yes"]
            out.append(([ctx] * 2, [" " + c for c in ch], ch, d["gold"]))
    elif task == "rte":
        with open(f"{data}/eval/rte_validation.tsv", encoding="utf-8", newline="") as f:
            for d in csv.DictReader(f, delimiter="\t"):
                ctx = f"{d['sentence1']}\nQuestion: {d['sentence2']} True or False?\nAnswer:"
                ch = ["True", "False"]
                out.append(([ctx] * 2, [" " + c for c in ch], ch, int(d["label"])))
    elif task == "hellaswag":
        for d in jsonl(f"{data}/eval/hellaswag_val_subset1000.jsonl"):
            ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
            q = hs_preprocess(d["activity_label"] + ": " + ctx)
            ch = [hs_preprocess(e) for e in d["endings"]]
            out.append(([q] * len(ch), [" " + c for c in ch], ch, int(d["label"])))
    elif task == "winogrande":
        for d in jsonl(f"{data}/eval/winogrande.jsonl"):
            opts = d["context_options"]
            cont = " " + d["continuation"].strip()
            out.append((opts, [cont] * len(opts), opts, d["gold"]))
    elif task in ("arc_easy", "arc_challenge"):
        for d in jsonl(f"{data}/eval/{task}.jsonl"):
            assert d["query"].startswith("Question: ")
            ctx = "Question: " + d["query"][len("Question: "):] + "\nAnswer:"
            ch = d["choices"]
            out.append(([ctx] * len(ch), [" " + c for c in ch], ch, d["gold"]))
    elif task == "openbookqa":
        for d in jsonl(f"{data}/eval/openbook_qa.jsonl"):
            ch = d["choices"]
            out.append(([d["query"]] * len(ch), [" " + c for c in ch], ch, d["gold"]))
    elif task == "piqa":
        for d in jsonl(f"{data}/eval/piqa.jsonl"):
            q = d["query"]
            assert q.startswith("Question: ") and q.endswith("\n")
            ctx = f"Question: {q[len('Question: '):-1]}\nAnswer:"
            ch = d["choices"]
            out.append(([ctx] * len(ch), [" " + c for c in ch], ch, d["gold"]))
    else:
        raise SystemExit(f"unknown task {task}")
    return out


def main():
    dump, data = sys.argv[1], sys.argv[2]
    sp, max_len = None, None
    if "--spm" in sys.argv:
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=sys.argv[sys.argv.index("--spm") + 1])
        max_len = int(sys.argv[sys.argv.index("--max-seq-len") + 1])
    rows = jsonl(dump)
    ref, bad, checked, tok_checked = {}, 0, 0, 0
    for r in rows:
        t = r["task"]
        if t not in ref:
            ref[t] = items(t, data)
        ctxs, conts, chs, gold = ref[t][r["item"]]
        c = r["choice"]
        want = (ctxs[c], conts[c], len(chs[c].encode("utf-8")), gold)
        got = (r["context"], r["continuation"], r["norm_bytes"], r["gold"])
        checked += 1
        if want != got:
            bad += 1
            if bad <= 5:
                print(f"MISMATCH {t} item {r['item']} choice {c}:\n  want {want!r}\n  got  {got!r}")
        if sp is not None:
            ctx, cont = ctxs[c], conts[c]
            ns = len(ctx) - len(ctx.rstrip())
            if ns:
                ctx, cont = ctx[:-ns], ctx[-ns:] + cont
            ce = [sp.bos_id()] + sp.encode(ctx)
            we = [sp.bos_id()] + sp.encode(ctx + cont)
            cont_enc = we[len(ce):]
            if not cont_enc:
                ce, cont_enc = we[:-1], we[-1:]
            seq = (ce + cont_enc)[-(max_len + 1):]
            n_cont = min(len(cont_enc), len(seq) - 1)
            tok_checked += 1
            if seq != r["tokens"] or n_cont != r["n_cont"]:
                bad += 1
                if bad <= 5:
                    print(f"TOKENS {t} item {r['item']} choice {c}: want n_cont {n_cont} "
                          f"{seq[-12:]} got n_cont {r['n_cont']} {r['tokens'][-12:]}")
    tasks = sorted(ref)
    print(f"zs_prompts: {checked} requests of {len(tasks)} tasks ({', '.join(tasks)}), "
          f"{tok_checked} token sequences checked, {bad} mismatches: "
          f"{'PASSED' if bad == 0 and checked else 'FAILED'}")
    sys.exit(0 if bad == 0 and checked else 1)


main()
