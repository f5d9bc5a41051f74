#!/usr/bin/python3
"""Reference token ids for tests/test_tok.c.

Usage: /usr/bin/python3 tests/ref/sp_ids.py DATA_DIR OUT.bin

Two independent references:
  tag 1: the official SentencePiece library (Debian python3-sentencepiece) with
         the Llama-2 tokenizer.model: sp.encode(text), no BOS.  Case 0 is the
         whole WikiText-2 test string (wiki.test.hf_join.txt) as ONE sequence.
  tag 2: a deliberately naive score-based BPE written here (quadratic scan for
         the best pair, leftmost among equal scores), run on the stories260K
         tok512.bin (llama2.c format).  Before it is trusted it must agree
         with SentencePiece on the tag-1 edge cases using the llama2.c export
         of the same Llama-2 vocabulary (tokenizer.bin); the script fails
         otherwise.

Fixture layout (little-endian): magic b"TOKF", u32 version = 1, u32 n_cases;
per case: u32 tag, u32 flags (bit 0: decode(encode(text)) must give text
back), u64 text bytes, text, u64 n ids, i32 ids.
"""
import os
import struct
import sys

import sentencepiece as spm

MAGIC, VERSION = b"TOKF", 1
SPACE = "\u2581"

EDGE = [
    ("", 1),
    (" ", 1),
    ("  ", 1),
    ("a", 1),
    (" a", 1),
    ("a ", 1),
    ("   multiple   spaces   here   ", 1),
    ("hello  world\n\nfoo\n", 1),
    ("\n", 1),
    ("line one\nline two\n\n  indented\ttab\r\n", 1),
    ("caf\u00e9 \u00f1 \u65e5\u672c\u8a9e \U0001F642", 1),
    ("\x01\x02\x7f bytes \x00 not in vocab \u0378\u2fff", 1),
    ("<s>hi</s> <0x0A> <unk>", 1),
    ("\u2581x already a space symbol", 0),  # U+2581 decodes to ' '
    (" = Valkyria Chronicles III = \n \n Senj\u014d no Valkyria 3 : Unrecorded "
     "Chronicles ( Japanese : \u6226\u5834\u306e\u30f4\u30a1\u30eb\u30ad\u30e5\u30ea\u30a23 , "
     "lit . Valkyria of the Battlefield 3 ) , commonly referred to as Valkyria "
     "Chronicles III outside Japan , is a tactical role @-@ playing video game .", 1),
]

STORIES = [
    "Once upon a time, there was a little girl named Lily. She loved to play "
    "outside in the park.",
    "One day, she saw a big, red ball. She wanted to play with it, but it was "
    "too high.",
]


def read_llama2c(path):
    """pieces (str with ' ' -> U+2581, as SentencePiece spells them), scores."""
    b = open(path, "rb").read()
    o = 4
    pieces, scores = [], []
    while o < len(b):
        s, n = struct.unpack_from("<fi", b, o)
        o += 8
        pieces.append(b[o:o + n].decode("utf-8").replace(" ", SPACE))
        scores.append(s)
        o += n
    return pieces, scores


def naive_bpe(pieces, scores, text):
    """Score-based BPE, written for clarity, not speed."""
    if text == "":
        return []
    byte_id = {}
    normal = {}
    for i, p in enumerate(pieces):
        if i < 3:  # <unk> <s> </s> (llama2.c convention) never match text
            continue
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            byte_id[int(p[3:5], 16)] = i
            continue
        normal.setdefault(p, i)
    syms = list(SPACE + text.replace(" ", SPACE))  # characters
    while True:
        best, best_i = None, -1
        for i in range(len(syms) - 1):
            cat = syms[i] + syms[i + 1]
            if cat in normal:
                sc = scores[normal[cat]]
                if best is None or sc > best:  # strict: leftmost wins ties
                    best, best_i = sc, i
        if best_i < 0:
            break
        syms[best_i:best_i + 2] = [syms[best_i] + syms[best_i + 1]]
    ids = []
    for s in syms:
        if s in normal:
            ids.append(normal[s])
        else:
            ids.extend(byte_id[c] for c in s.encode("utf-8"))
    return ids


def main():
    data, out = sys.argv[1], sys.argv[2]
    tokdir = os.path.join(data, "models", "llama2-tokenizer")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tokdir, "tokenizer.model"))
    wiki = open(os.path.join(data, "text", "wikitext2", "wiki.test.hf_join.txt"),
                encoding="utf-8").read()
    cases = [(1, 1, wiki, sp.encode(wiki))]
    for text, rt in EDGE:
        cases.append((1, rt, text, sp.encode(text)))

    # Validate the naive BPE against SentencePiece on the same vocabulary.
    lp, ls = read_llama2c(os.path.join(tokdir, "tokenizer.bin"))
    checks = [t for t, _ in EDGE] + wiki[:3000].split("\n")
    for text in checks:
        want, got = sp.encode(text), naive_bpe(lp, ls, text)
        if want != got:
            sys.exit("sp_ids.py: naive BPE disagrees with sentencepiece on %r:\n%s\n%s"
                     % (text, want, got))

    sp_, ss = read_llama2c(os.path.join(data, "models", "stories260K", "tok512.bin"))
    tiny = open(os.path.join(data, "text", "tinystories", "tinystories_sample.txt"),
                encoding="utf-8").read()
    stories = STORIES + [tiny[:1200]]
    for text in stories:
        cases.append((2, 1, text, naive_bpe(sp_, ss, text)))

    with open(out, "wb") as f:
        f.write(MAGIC + struct.pack("<II", VERSION, len(cases)))
        for tag, flags, text, ids in cases:
            tb = text.encode("utf-8")
            f.write(struct.pack("<IIQ", tag, flags, len(tb)) + tb)
            f.write(struct.pack("<Q", len(ids)) + struct.pack("<%di" % len(ids), *ids))
    print("sp_ids.py: %d cases, wiki %d ids, %d naive-BPE checks agree with sentencepiece"
          % (len(cases), len(cases[0][3]), len(checks)))


if __name__ == "__main__":
    main()
