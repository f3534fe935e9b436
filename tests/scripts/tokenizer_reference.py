#!/usr/bin/env python3
"""Reference token ids for the Rust CLIP tokenizer (fedotp::clip::tokenizer).

Runs open_clip's SimpleTokenizer (OpenAI's tokenizer; open_clip_torch 3.x), loaded from the
merges file the crate ships (host/assets/bpe_simple_vocab_16e6.txt.gz), on:

  * every class name of every shipped list (host/assets/classnames/*.txt) and FedOTP's prompt
    for it, "X X X X {name with _ as space}.";
  * awkward strings: accents, punctuation, digits, emoji, HTML entities, whitespace, controls,
    CJK, input longer than the 77-token context;
  * seeded random mixtures of such fragments;

and writes, for each, the cleaned text, the ids, the context-77 sequence (up to its end token)
and the decoded text. It also writes the clean-up of every HTML5 entity (Python's html.unescape
and ftfy's entity rules) and the decoding of id lists that are not valid UTF-8.

Checks made here, which fail the script:
  * Hugging Face's CLIPTokenizer (transformers), built from a vocab.json / merges.txt written from
    the same merges, gives the same ids for every class name and prompt (HF does no ftfy or HTML
    clean-up, so the other strings are only counted).
  * Every string is outside the reach of ftfy's heuristic mojibake repair (fix_encoding), the one
    part of the clean-up the Rust port does not reproduce.

Usage: python3 tests/scripts/tokenizer_reference.py
(writes host/tests/fixtures/tokenizer/reference.json)
"""

import html.entities
import json
import random
import sys
import tempfile
from pathlib import Path

import ftfy
import open_clip
import transformers
from open_clip.tokenizer import SimpleTokenizer

# This script lives in tests/scripts/; the assets and the fixture in host/.
HOST = Path(__file__).resolve().parents[2] / "host"
MERGES_GZ = HOST / "assets" / "bpe_simple_vocab_16e6.txt.gz"
CLASSNAMES_DIR = HOST / "assets" / "classnames"
OUTPUT = HOST / "tests" / "fixtures" / "tokenizer" / "reference.json"

DATASETS = [
    "cifar10",
    "cifar100",
    "caltech101",
    "oxford_pets",
    "oxford_flowers",
    "food101",
    "dtd",
    "domainnet",
    "office_caltech10",
]

CONTEXT_LENGTH = 77
N_CTX = 4  # FedOTP's prompt: n_ctx "X" placeholders, then the class name and a full stop.

AWKWARD = [
    "",
    "   ",
    "Café Zürich naïve façade",
    "Cafe\u0301 (combining accent)",
    "ÅNGSTRÖM ÆØÅ æøå ß ẞ İstanbul ΣΑΣ",
    "Hello, world!!! ... ??? ;-) (a) [b] {c} <d>",
    "don't it's WE'LL they're I'M you've he'd O'Neill's",
    "'ſ long s",
    "2024-11-05 12345 3.14159 1,000,000 ½ ² ٣ ६",
    "🐱 cat 🐶 dog 👍🏽 👩‍💻 🇫🇷 ❤️",
    "猫と犬 東京タワー 中文 한국어 العربية עברית ไทย",
    "Tom &amp; Jerry &lt;3 caf&eacute; &#233; &#x1F600; AT&T",
    "&amp;amp;lt;b&amp;amp;gt; &NTILDE; &ntilde &nbsp;x &ltdot; &ampfoo",
    "<b>bold &amp; strong</b>",
    "a &amp; b\n<i> &amp; </i>\n&amp;",
    "  a \t\n b\u00a0c\u3000d\u2028e\u2029f\u0085g\x1ch  ",
    "a\x00b\x07c\x7fd\ufeffe\u200bf\u200dg",
    "\x1b[31mred\x1b[0m text",
    "\x93C1 quotes\x94 \x85 \x80 x\x81y (C1 controls read as Windows-1252)",
    "“smart” ‘quotes’ ‹angle› «guillemets» – — …",
    "ﬁsh ﬂower ﬀ ĳssel ǆ",
    "ＬＯＵＤ　ＮＯＩＳＥＳ！ ｶﾀｶﾅ ｳﾞ",
    "TAB\tSEPARATED\tVALUES",
    "multi\n\nline\r\ntext\rend",
    "supercalifragilisticexpialidocious " * 3,
    "a photo of a " * 20,
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 6,
    "東京" * 60,
    "X X X X ice cream.",
    "x x x x Ice Cream .",
    "#hashtag @mention http://example.com/path?q=1&r=2",
    "C++ C# F# .NET node.js",
    "e-mail: someone@example.org; tel: +1 (555) 010-9999",
]

# Words that start a context (CoOp's `ctx_init`; host/tests/train.rs reads their ids).
CONTEXT_WORDS = [
    "a photo of a",
    "a centered satellite photo of",
    "an X-ray image of the chest, showing",
]

# Strings with the special tokens written out. open_clip spells its special tokens
# <start_of_text> / <end_of_text>, while OpenAI's tokenizer and Hugging Face's (and the Rust one)
# use <|startoftext|> / <|endoftext|>, so these ids come from Hugging Face's tokenizer.
SPECIAL_TOKEN_TEXTS = [
    "<|startoftext|>a photo<|endoftext|>",
    "before <|endoftext|> after",
]

FRAGMENTS = [
    "cat", "Dog", "PHOTO", "of", "a", "the", "ice_cream", "wine glass", "X", ".", ",", "!", "?",
    "'s", "'LL", "’re", "-", "—", "(", ")", "/", "0", "42", "3.5", "é", "Ü", "ñ", "Å", "ç", "e\u0301",
    "猫", "東京", "한", "ع", "🐱", "👍🏽", "👩‍💻", "🇫🇷", " ", "  ", "\t", "\n", "\u00a0", "\u3000",
    "\u2028", "\x1c", "&amp;", "&lt;", "&gt;", "&eacute;", "&EACUTE;", "&#233;", "&#x1F600;", "&nbsp;",
    "&amp;amp;", "&ampx", "&#65", "&notit;", "<", ">", "“", "”", "‘", "’", "ﬁ", "Ａ", "！", "ｶ", "ﾞ",
    "\x00", "\x07", "\x7f", "\x85", "\x93", "\x9d", "\ufeff", "\x1b[1m", "\u200b", "ǅ", "ſ", "K", "İ", "ẞ",
]


def read_classnames():
    return {name: (CLASSNAMES_DIR / f"{name}.txt").read_text(encoding="utf-8").splitlines() for name in DATASETS}


def prompt(classname):
    return " ".join(["X"] * N_CTX) + " " + classname.replace("_", " ") + "."


def random_strings(count, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 8))) for _ in range(count)]


def outside_mojibake_repair(text):
    return ftfy.fix_text(text) == ftfy.fix_text(text, fix_encoding=False)


def hf_tokenizer(tok, directory):
    """CLIPTokenizer built from vocab.json / merges.txt written from the same merges."""
    specials = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {specials.get(token, token): index for token, index in tok.encoder.items()}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.get)
    lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(directory))


def case(tok, text):
    ids = tok.encode(text)
    context = tok([text], context_length=CONTEXT_LENGTH)[0].tolist()
    eot = int(max(range(len(context)), key=lambda i: context[i]))  # FedOTP's argmax pooling
    return {
        "text": text,
        "clean": tok.clean_fn(text),
        "ids": ids,
        "context": context[: eot + 1],
        "eot": eot,
        "decoded": tok.decode(ids),
    }


def special_token_case(hf, tok, text):
    full = hf(text)["input_ids"]
    ids = full[1:-1]
    context = full[:CONTEXT_LENGTH]
    if len(full) > CONTEXT_LENGTH:
        context[-1] = tok.eot_token_id
    return {
        "text": text,
        "clean": tok.clean_fn(text),
        "ids": ids,
        "context": context,
        "eot": len(context) - 1,
        "decoded": None,
        "reference": "transformers.CLIPTokenizer",
    }


def entity_cases(tok):
    texts = [f"x &{name} y" for name in html.entities.html5]
    # ftfy also decodes upper-cased forms of lower-case entities (&EACUTE;).
    texts += [f"x &{name.upper()} y" for name in html.entities.html5 if name.endswith(";") and name == name.lower()]
    numeric = [0, 9, 13, 65, 0x7F, 0xA0, 0xD800, 0xDFFF, 0xFDD0, 0xFFFE, 0x1FFFF, 0x10FFFF, 0x110000, 0x1F600]
    numeric += list(range(0x80, 0xA0))
    texts += [f"x &#{n}; &#x{n:X}; &#{n}y &#x{n:x}" for n in numeric]
    texts += ["&#65x; &#x41g; &#; &#x; &#99999999999999999999; &amp &AMP; &Amp;", "&" * 5 + "amp;" * 3]
    # A few expansions followed by a space look like mojibake to ftfy ("Â " is how a UTF-8
    # no-break space reads in Latin-1); those are left out like the random strings.
    return [{"text": t, "clean": tok.clean_fn(t)} for t in texts if outside_mojibake_repair(t)]


def raw_decode_cases(tok):
    def byte_id(value):
        return tok.encoder[tok.byte_encoder[value]]

    cat = tok.encode("cat")
    lists = [
        [byte_id(0xC3), byte_id(ord("a"))],  # a lead byte without its continuation
        [byte_id(0xF0), byte_id(0x9F), byte_id(0x98)],  # an emoji cut short
        [byte_id(0xFF), byte_id(0x80)] + cat,
        [0, 0, 0],  # padding decodes as "!"
        # "€" (E2 82 AC) split over three tokens, the last one word-final.
        [byte_id(0xE2), byte_id(0x82), tok.encoder[tok.byte_encoder[0xAC] + "</w>"]] + cat,
    ]
    return [{"ids": ids, "text": tok.decode(ids)} for ids in lists]


def main():
    tok = SimpleTokenizer(bpe_path=str(MERGES_GZ))
    assert len(tok.encoder) == 49408 and tok.sot_token_id == 49406 and tok.eot_token_id == 49407

    classnames = read_classnames()
    class_texts = [name for names in classnames.values() for name in names]
    prompt_texts = [prompt(name) for names in classnames.values() for name in names]
    randoms = random_strings(600, seed=20241105)

    texts = []
    for text in class_texts + prompt_texts + AWKWARD + CONTEXT_WORDS + randoms:
        if text not in texts:
            texts.append(text)
    reached = [t for t in texts if not outside_mojibake_repair(t)]
    fixed_texts = [t for t in texts if t in class_texts + prompt_texts + AWKWARD + CONTEXT_WORDS]
    bad = [t for t in reached if t in fixed_texts]
    if bad:
        sys.exit(f"ftfy's mojibake repair changes these strings; the Rust port does not reproduce it: {bad!r}")
    texts = [t for t in texts if t not in reached]  # drops only random strings

    cases = [case(tok, text) for text in texts]

    with tempfile.TemporaryDirectory() as directory:
        hf = hf_tokenizer(tok, Path(directory))
        for text in class_texts + prompt_texts:
            ours, theirs = tok.encode(text), hf(text)["input_ids"][1:-1]
            if ours != theirs:
                sys.exit(f"open_clip and transformers disagree on {text!r}: {ours} vs {theirs}")
        agree = sum(tok.encode(t) == hf(t)["input_ids"][1:-1] for t in texts)
        cases += [special_token_case(hf, tok, text) for text in SPECIAL_TOKEN_TEXTS]

    fixture = {
        "generator": "tests/scripts/tokenizer_reference.py",
        "versions": {
            "python": sys.version.split()[0],
            "open_clip_torch": open_clip.__version__,
            "ftfy": ftfy.__version__,
            "transformers": transformers.__version__,
        },
        "context_length": CONTEXT_LENGTH,
        "n_ctx": N_CTX,
        "classnames": classnames,
        "cases": cases,
        "entities": entity_cases(tok),
        "decode": raw_decode_cases(tok),
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    write_json(fixture, OUTPUT)
    print(
        f"{len(cases)} cases ({len(class_texts)} class names, {len(prompt_texts)} prompts, "
        f"{len(randoms) - len(reached)} of {len(randoms)} random strings kept), "
        f"{len(fixture['entities'])} entity strings; transformers agrees on {agree} of {len(texts)} "
        f"strings (it does no ftfy / HTML clean-up) -> {OUTPUT.relative_to(HOST.parent)}"
    )


def write_json(fixture, path):
    """One case per line, so that a change to the fixture reads as a small diff."""
    lines = ["{"]
    items = list(fixture.items())
    for index, (key, value) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        if isinstance(value, list):
            body = ",\n".join("    " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f"  {json.dumps(key)}: [\n{body}\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
