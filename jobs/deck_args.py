#!/usr/bin/python3
"""deck_args.py eval DECK.ini [--set section.key=value ...]
Print, one per line, the 'losa eval' arguments a deck describes (model.store,
data.eval_text, eval.seqlen, eval.batch, eval.max_windows) after the --set
overrides.  Only for the job scripts' stand-in before 'losa run' exists:
losa itself validates the deck; this reads the few keys eval needs."""
import configparser
import sys


def main(argv):
    if len(argv) < 3 or argv[1] != "eval":
        sys.exit("usage: deck_args.py eval DECK.ini [--set k=v ...]")
    cp = configparser.ConfigParser(inline_comment_prefixes=("#",), interpolation=None)
    with open(argv[2]) as f:
        cp.read_file(f)
    deck = {f"{s}.{k}": v for s in cp.sections() for k, v in cp.items(s)}
    rest = argv[3:]
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--set" and i + 1 < len(rest):
            kv, i = rest[i + 1], i + 2
        elif a.startswith("--set="):
            kv, i = a[len("--set="):], i + 1
        else:
            sys.exit(f"deck_args.py: {a}: expected --set section.key=value")
        k, _, v = kv.partition("=")
        deck[k.strip()] = v.strip()
    for key in ("model.store", "data.eval_text"):
        if not deck.get(key):
            sys.exit(f"deck_args.py: {argv[2]}: {key} is required for eval")
    out = ["--model", deck["model.store"], "--ppl", deck["data.eval_text"]]
    for key, flag in (("eval.seqlen", "--seqlen"), ("eval.batch", "--batch"),
                      ("eval.max_windows", "--max-windows")):
        if key in deck:
            out += [flag, deck[key]]
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv)
