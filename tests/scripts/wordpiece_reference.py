#!/usr/bin/env python3
"""Reference token ids for the Rust BERT WordPiece tokenizer (fedotp::clip::wordpiece).

BiomedCLIP's text tower is PubMedBERT (uncased); open_clip tokenizes its prompts with
`HFTokenizer`, i.e. transformers' `AutoTokenizer` (a `BertTokenizer`, backed by the `tokenizers`
library in transformers 5) after open_clip's whitespace clean-up, padded and truncated to 256.

This script
  * builds a small uncased WordPiece vocabulary from the sentences below (BERT's five special
    tokens first; characters, word beginnings, ## endings and short words; a few CJK
    characters, accented letters and medical words appended), deterministically, so the
    committed vocab.txt is about two thousand lines;
  * runs transformers' BertTokenizer (do_lower_case=True, loaded from that vocab.txt as
    AutoTokenizer loads a hub checkpoint) on a varied corpus and stores, per text, the ids
    without special tokens ("ids") and open_clip's HFTokenizer output at context length 256
    ("context", trailing [PAD]s left out);
  * compares with transformers' pure-Python BertTokenizerLegacy (BERT's original algorithm) and
    records, per text, whether it agrees: the two differ on a few characters (final sigma,
    unassigned code points, CJK extension E), and the Rust port follows BertTokenizer;
  * writes a second, deliberately awkward vocabulary (Windows line endings, a lone carriage
    return, trailing spaces, a repeated token, a blank line) with BertTokenizer's ids for a few
    texts, to pin down how vocab.txt is read.

It also records the reference's character classes on every code point (unicode_classes.json:
dropped characters, punctuation, a digest of accent stripping), which the Rust module's own
tests check exhaustively.

Checks made here, which fail the script: HFTokenizer's output equals BertTokenizer's on the
cleaned text; every fixed text is outside the reach of ftfy's mojibake repair (which the Rust
clean-up does not reproduce; random strings it reaches are left out); the corpus exercises [UNK], ## pieces, truncation and the special tokens.

Usage: python3 tests/scripts/wordpiece_reference.py
(writes host/tests/fixtures/wordpiece/{vocab.txt,edge_vocab.txt,reference.json,unicode_classes.json})
"""

import hashlib
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import ftfy
import open_clip
import tokenizers
import transformers
from open_clip.tokenizer import HFTokenizer
from tokenizers import normalizers, pre_tokenizers
from transformers import AutoTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

# The CLIP tokenizer's script, beside this one: its ftfy check and its one-case-a-line JSON writer.
from tokenizer_reference import outside_mojibake_repair, write_json

HOST = Path(__file__).resolve().parents[2] / "host"
OUTPUT_DIR = HOST / "tests" / "fixtures" / "wordpiece"

CONTEXT_LENGTH = 256  # BiomedCLIP's text context
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# The text the vocabulary is built from: plain English and radiology / pathology phrasing, written for this script.
TRAINING = [
    "a photo of a cat sitting on the table next to a cup of coffee",
    "the quick brown fox jumps over the lazy dog while the children are playing outside",
    "this is a chest x-ray showing no acute cardiopulmonary abnormality",
    "the lungs are clear without focal consolidation, effusion or pneumothorax",
    "there is a small right pleural effusion with adjacent atelectasis",
    "findings are consistent with community acquired pneumonia in the left lower lobe",
    "histopathology shows invasive ductal carcinoma of the breast, grade two",
    "an adenocarcinoma of the colon with lymph node metastasis was resected",
    "the specimen shows squamous cell carcinoma with keratin pearls",
    "magnetic resonance imaging of the brain demonstrates an enhancing glioblastoma",
    "computed tomography of the abdomen reveals hepatomegaly and splenomegaly",
    "ultrasound of the thyroid shows a hypoechoic nodule with microcalcifications",
    "the patient presented with fever, cough and shortness of breath for three days",
    "echocardiography shows a reduced ejection fraction and left ventricular hypertrophy",
    "immunohistochemistry was positive for cytokeratin and negative for vimentin",
    "hematoxylin and eosin staining of the lymph node biopsy at high magnification",
    "a fracture of the distal radius with dorsal angulation is seen on the radiograph",
    "the heart size is normal and the mediastinal contours are within normal limits",
    "there is cardiomegaly with pulmonary vascular congestion and interstitial edema",
    "no evidence of intracranial hemorrhage, mass effect or midline shift",
    "microscopy reveals numerous neutrophils and gram positive cocci in clusters",
    "the tumor cells are arranged in nests with abundant eosinophilic cytoplasm",
    "benign tissue with chronic inflammation and no malignancy identified",
    "an image of normal lung tissue compared with tuberculosis and covid-19 infection",
    "medical students learn anatomy, physiology, pathology and pharmacology",
    "she was treated with antibiotics and her symptoms improved over the following week",
    "the results of the study were published in a peer reviewed journal in 2021",
    "we measured the temperature at 37.5 degrees and the pressure at 120/80 mmhg",
    "the model was trained on one million image text pairs from scientific articles",
    "dermatology images of melanoma, basal cell carcinoma and benign nevi",
    "retinal fundus photographs showing diabetic retinopathy with microaneurysms",
    "bone marrow aspirate with increased blasts suggestive of acute myeloid leukemia",
    "kidney biopsy demonstrating glomerulonephritis with crescent formation",
    "people walk in the park on sunday mornings and talk about the weather",
    "books, music, films and games are popular in many countries around the world",
]

# Tokens appended after the built ones: CJK ideographs, accented letters (unreachable once
# accents are stripped, as in any uncased vocabulary), whole medical words.
APPENDED = [
    "中", "文", "猫", "犬", "東", "京", "医", "学", "##学",
    "é", "ü", "ñ", "å", "ß", "##ß", "σ", "##σ", "##ς", "α", "##α", "ω",
    "pneumothorax", "adenocarcinoma", "pneumonia", "cafe", "naive", "angstrom", "##strom",
    "covid", "x", "##ray", "'", "-", "##-", "🙂",
]

ENGLISH = [
    "A photo of a cat.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello, World!!! How are you?",
    "Medical students learn anatomy and pathology.",
    "Findings are consistent with pneumonia.",
]

MEDICAL = [
    "pneumothorax",
    "Pneumothorax, right-sided, with adenocarcinoma.",
    "ADENOCARCINOMA of the colon",
    "This is a photo of squamous cell carcinoma.",
    "Chest X-ray: no acute cardiopulmonary abnormality.",
    "hematoxylin and eosin (H&E) staining, 40x magnification",
    "immunohistochemistry: CK7+, CK20-, TTF-1 positive",
    "COVID-19 pneumonia with ground-glass opacities",
    "glioblastoma multiforme, WHO grade IV",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
]

AWKWARD = [
    "",
    " ",
    "   \t\n  ",
    "café naïve Ångström façade Zürich",
    "CAFÉ NAÏVE ÅNGSTRÖM",
    "Cafe\u0301 (combining accent)",
    "ß ẞ İstanbul ΣΑΣ σας Ωmega",
    "...!!!???,,,;;;:::",
    "a.b,c;d:e!f?g",
    "(a) [b] {c} <d> \"e\" 'f' `g` ^h ~i |j \\k /l @m #n $o %p &q *r _s +t =u",
    "“smart” ‘quotes’ «guillemets» – — … ¿¡ § ¶ · ‐ ‑ ‒",
    "2024-11-05 12345 3.14159 1,000,000 ½ ² ٣ ६ ⅷ",
    "well-known state-of-the-art x-ray",
    "don't it's WE'LL they're O'Neill's patient's",
    "中文 猫と犬 東京タワー 医学 한국어 العربية עברית ไทย",
    "猫猫猫 中医学",
    "\U0002B820 \U0002B91F \U0002B920 \uf900 \U00020000",
    "ext\U0002B820e x\U0002B920x a\uf900b",
    "🐱 cat 🐶 dog 👍🏽 👩‍💻 🇫🇷 ❤️ 🙂",
    "a\x00b\x07c\x7fd\ufeffe\u200bf\u200dg\u00adh",
    "tab\tnew\nline\rcarriage\r\nwindows",
    "nbsp\u00a0ideographic\u3000space\u2003em\u2028ls\u2029ps",
    "zero\u200bwidth and\ufffdreplacement",
    "\x0bvt\x0cff\x1cfs\x1dgs\x1ers\x1fus\x85nel",
    "[CLS] literal [SEP] tokens [PAD] in [MASK] text [UNK]",
    "[cls] lower [sep] case [unk] [mask] [pad]",
    "a[CLS]b[SEP]c [ CLS ] [CLS",
    "xyzzyqwv flibbertigibbet zxqj",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 100,
    "a" * 101,
    "pneumothorax" * 9,
    ("b" * 99) + " " + ("c" * 101) + " end",
    "The patient's chest x-ray shows pneumonia. " * 40,
    "word " * 300,
    "猫" * 300,
    "!" * 260,
    "unassigned\u0378code point and private\ue000use",
    # Characters whose Unicode class is newer than the reference's tables (see the Rust module).
    "a\u2e4fb c\u2e42d e\u166df g\u0890h i\u1ac0j k\u08e1l \U000113c5x m\u1734n \U0001171eo",
    "Tom &amp; Jerry &lt;3 caf&eacute; &#233;",
]

BIOMEDCLIP_PROMPTS = [
    "X X X X pneumonia.",
    "X X X X adenocarcinoma histopathology.",
    "X X X X normal chest x-ray.",
    "X X X X squamous cell carcinoma.",
    "this is a photo of pneumothorax",
    "a hematoxylin and eosin image of benign tissue",
]

FRAGMENTS = [
    "cat", "Pneumonia", "X-RAY", "of", "a", "the", "carcinoma", "lung", ".", ",", "!", "?", "-", "'",
    "(", ")", "/", "0", "42", "3.5", "é", "Ü", "ñ", "Å", "ß", "e\u0301", "猫", "中", "한", "🙂", "👍🏽",
    " ", "  ", "\t", "\n", "\u00a0", "\u3000", "\u200b", "\x00", "\x07", "\ufeff", "[CLS]", "[SEP]",
    "[unk]", "##", "##s", "xyzzy", "Σ", "ς", "İ", "“", "”", "…", "&amp;",
]


def random_strings(count, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 10))) for _ in range(count)]


def build_vocab():
    """The vocabulary's tokens in id order, built deterministically from TRAINING.

    BERT's five special tokens first; then every character of the (normalized) training text,
    alone and as a continuation; word beginnings and endings of 2 to 5 characters (continuations
    written ##); the whole words that are short or frequent (so long medical words split into
    pieces); then APPENDED. (The `tokenizers` WordPiece trainer is not used: its ties are broken
    in hash-map order, so two runs give different vocabularies.)
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter()
    for line in TRAINING:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    chars = sorted({c for word in words for c in word})
    pieces = set()
    for word in words:
        for n in range(2, 6):
            if len(word) > n:
                pieces.add(word[:n])
                pieces.add("##" + word[-n:])
    whole = [w for w in words if len(w) <= 7 or counts[w] >= 2]
    tokens = list(SPECIALS) + chars + ["##" + c for c in chars] + sorted(pieces) + whole
    tokens = list(dict.fromkeys(tokens))  # first occurrence of each
    tokens += [t for t in APPENDED if t not in tokens]
    return tokens


def ranges(code_points):
    """Sorted code points as inclusive [first, last] runs."""
    runs = []
    for code in code_points:
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return runs


def unicode_classes():
    """The reference's character classes on every code point (surrogates aside), from the
    `tokenizers` normalizer and pre-tokenizer that BertTokenizer runs: which characters the
    clean-up drops, which are split off as punctuation, and the accent stripping of each
    character (as a SHA-256 over the lines "HEX:result" of the characters it changes)."""
    clean = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False
    )
    strip = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    dropped, punctuation, digest, changed = [], [], hashlib.sha256(), 0
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        c = chr(code)
        if clean.normalize_str("a" + c + "b") == "ab":
            dropped.append(code)
        elif len(pre_tokenizer.pre_tokenize_str("a" + c + "b")) == 3:
            punctuation.append(code)
        stripped = strip.normalize_str(c)
        if stripped != c:
            digest.update(f"{code:X}:{stripped}\n".encode("utf-8"))
            changed += 1
    return {
        "generator": "tests/scripts/wordpiece_reference.py",
        "tokenizers": tokenizers.__version__,
        "dropped": ranges(dropped),
        "punctuation": ranges(punctuation),
        "stripped_count": changed,
        "stripped_sha256": digest.hexdigest(),
    }


def load_bert(directory):
    """BertTokenizer as open_clip's HFTokenizer gets it: AutoTokenizer on a checkpoint folder."""
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    bert = AutoTokenizer.from_pretrained(str(directory))
    assert type(bert).__name__ == "BertTokenizer", type(bert)
    return bert


def edge_cases(work):
    """An awkward vocab.txt and BertTokenizer's reading of it."""
    lines = "\n".join(SPECIALS) + "\nab \r\ncd\r\n\nab\n##e\rf\nx\u3000\n##s\n##s\nq\n"
    directory = work / "edge"
    directory.mkdir()
    (directory / "vocab.txt").write_bytes(lines.encode("utf-8"))
    (OUTPUT_DIR / "edge_vocab.txt").write_bytes(lines.encode("utf-8"))
    bert = load_bert(directory)
    texts = ["ab", "cd", "abs", "cds", "x", "e", "##e", "f", "q", "qs", "ab cd x q"]
    return [{"text": t, "ids": bert(t, add_special_tokens=False)["input_ids"]} for t in texts]


def main():
    tokens = build_vocab()
    vocab_text = "".join(t + "\n" for t in tokens)
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / "vocab.txt").write_text(vocab_text, encoding="utf-8")

    randoms = random_strings(300, seed=20261204)
    texts = []
    for text in ENGLISH + MEDICAL + AWKWARD + BIOMEDCLIP_PROMPTS + randoms:
        if text not in texts:
            texts.append(text)
    reached = [t for t in texts if not outside_mojibake_repair(t)]
    bad = [t for t in reached if t not in randoms]
    if bad:
        sys.exit(f"ftfy's mojibake repair changes these strings; the Rust clean-up does not: {bad!r}")
    texts = [t for t in texts if t not in reached]  # drops only random strings

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        directory = work / "model"
        directory.mkdir()
        (directory / "vocab.txt").write_text(vocab_text, encoding="utf-8")
        bert = load_bert(directory)
        legacy = BertTokenizerLegacy(str(directory / "vocab.txt"), do_lower_case=True)
        hf = HFTokenizer(str(directory), context_length=CONTEXT_LENGTH)
        pad, unk, sep = bert.pad_token_id, bert.unk_token_id, bert.sep_token_id

        cases = []
        for text in texts:
            ids = bert(text, add_special_tokens=False)["input_ids"]
            legacy_ids = legacy(text, add_special_tokens=False)["input_ids"]
            context = hf(text)[0].tolist()
            direct = bert(
                hf.clean_fn(text), max_length=CONTEXT_LENGTH, padding="max_length", truncation=True
            )["input_ids"]
            if context != direct:
                sys.exit(f"HFTokenizer and BertTokenizer disagree on {text!r}")
            assert len(context) == CONTEXT_LENGTH
            while context and context[-1] == pad:
                context.pop()
            cases.append({"text": text, "ids": ids, "context": context, "legacy_agrees": ids == legacy_ids})
        edge = edge_cases(work)

    flat = [i for case in cases for i in case["ids"]]
    continuation = {i for i, t in enumerate(tokens) if t.startswith("##")}
    checks = {
        "[UNK]": unk in flat,
        "## pieces": any(i in continuation for i in flat),
        "truncation": any(len(c["context"]) == CONTEXT_LENGTH and c["context"][-1] == sep for c in cases),
        "[CLS] in text": any(bert.cls_token_id in c["ids"] for c in cases),
        "empty": any(c["ids"] == [] for c in cases),
    }
    missing = [name for name, ok in checks.items() if not ok]
    if missing:
        sys.exit(f"the corpus does not exercise {missing}")

    fixture = {
        "generator": "tests/scripts/wordpiece_reference.py",
        "versions": {
            "python": sys.version.split()[0],
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "open_clip_torch": open_clip.__version__,
            "ftfy": ftfy.__version__,
        },
        "reference": "transformers.BertTokenizer (do_lower_case=True) via AutoTokenizer; "
        "context: open_clip.tokenizer.HFTokenizer (clean='whitespace', padding='max_length', truncation=True)",
        "vocab": "vocab.txt",
        "vocab_lines": len(tokens),
        "context_length": CONTEXT_LENGTH,
        "cases": cases,
        "edge_vocab": "edge_vocab.txt",
        "edge_cases": edge,
    }
    write_json(fixture, OUTPUT_DIR / "reference.json")
    classes = unicode_classes()
    (OUTPUT_DIR / "unicode_classes.json").write_text(json.dumps(classes) + "\n", encoding="utf-8")
    agree = sum(c["legacy_agrees"] for c in cases)
    print(
        f"{len(tokens)} vocabulary tokens, {len(cases)} texts ({len(randoms) - len(reached)} of "
        f"{len(randoms)} random strings kept); "
        f"BertTokenizerLegacy agrees on {agree} of {len(cases)}; {len(edge)} edge-vocabulary texts "
        f"-> {OUTPUT_DIR.relative_to(HOST.parent)}"
    )
    for case in cases:
        if not case["legacy_agrees"]:
            print("  legacy differs:", repr(case["text"])[:100])


if __name__ == "__main__":
    main()
