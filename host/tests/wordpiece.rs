//! The Rust WordPiece tokenizer against the reference: `tests/fixtures/wordpiece/reference.json`,
//! written by `tests/scripts/wordpiece_reference.py` from transformers' `BertTokenizer`
//! (`do_lower_case=True`) and open_clip's `HFTokenizer` at BiomedCLIP's context length, on the
//! fixture's own small vocabulary (`vocab.txt`) and an awkward one (`edge_vocab.txt`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use fedotp_host::clip::wordpiece::{
    WordPieceError, WordPieceTokenizer, BIOMEDCLIP_CONTEXT_LENGTH, MAX_WORD_CHARS,
};
use fedotp_tests::compare::assert_no_mismatches;
use fedotp_tests::fixtures::{fixture, json_array, json_ids, json_str};
use serde_json::Value;

static FIXTURE: LazyLock<Value> = LazyLock::new(|| {
    let text = include_str!("fixtures/wordpiece/reference.json");
    serde_json::from_str(text).expect("the fixture is valid JSON")
});

fn fixture_path(name: &str) -> PathBuf {
    fixture(Path::new("wordpiece").join(name))
}

fn tokenizer() -> WordPieceTokenizer {
    WordPieceTokenizer::from_file(fixture_path("vocab.txt")).expect("the fixture vocabulary loads")
}

fn cases(key: &str) -> &'static [Value] {
    json_array(&FIXTURE, key)
}

fn text(case: &Value) -> &str {
    json_str(case, "text")
}

/// `None` if equal, else a line naming the text and the first position that differs.
fn mismatch(what: &str, text: &str, ours: &[u32], theirs: &[u32]) -> Option<String> {
    if ours == theirs {
        return None;
    }
    let position = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    Some(format!(
        "{what} of {text:?}: first difference at position {position}: ours {:?}, reference {:?} \
         ({} vs {} ids)",
        ours.get(position),
        theirs.get(position),
        ours.len(),
        theirs.len()
    ))
}

/// `encode` of every text of the fixture's list `key` against its `ids`.
fn encode_mismatches(tokenizer: &WordPieceTokenizer, key: &str) -> Vec<String> {
    cases(key)
        .iter()
        .filter_map(|case| {
            let ours = tokenizer.encode(text(case));
            mismatch("ids", text(case), &ours, &json_ids(case, "ids"))
        })
        .collect()
}

#[test]
fn the_fixture_vocabulary_is_the_one_the_ids_were_made_from() {
    let tokenizer = tokenizer();
    assert_eq!(
        tokenizer.vocab_size() as u64,
        FIXTURE["vocab_lines"].as_u64().expect("vocab_lines")
    );
    assert_eq!(
        (
            tokenizer.pad(),
            tokenizer.unk(),
            tokenizer.cls(),
            tokenizer.sep()
        ),
        (0, 1, 2, 3)
    );
    assert_eq!(tokenizer.mask(), Some(4));
    assert_eq!(
        FIXTURE["context_length"].as_u64(),
        Some(BIOMEDCLIP_CONTEXT_LENGTH as u64)
    );
}

#[test]
fn encode_matches_bert_tokenizer_on_every_text() {
    assert_no_mismatches("texts' ids", &encode_mismatches(&tokenizer(), "cases"));
}

#[test]
fn tokenize_matches_open_clip_hf_tokenizer_on_every_text() {
    let tokenizer = tokenizer();
    let mut mismatches = Vec::new();
    for case in cases("cases") {
        // The fixture leaves the trailing [PAD]s out.
        let sequence = json_ids(case, "context");
        let mut expected = sequence.clone();
        expected.resize(BIOMEDCLIP_CONTEXT_LENGTH, tokenizer.pad());
        let context = tokenizer
            .tokenize(text(case), BIOMEDCLIP_CONTEXT_LENGTH)
            .expect("256 holds [CLS] and [SEP]");
        mismatches.extend(mismatch("context", text(case), context.ids(), &expected));
        if context.sequence_len() != sequence.len() {
            mismatches.push(format!(
                "sequence length of {:?}: ours {}, reference {}",
                text(case),
                context.sequence_len(),
                sequence.len()
            ));
        }
    }
    assert_no_mismatches("context sequences", &mismatches);
}

/// The corpus is worth matching: it reaches every path of the tokenizer, so that agreement is
/// not agreement on easy text only.
#[test]
fn the_corpus_exercises_every_path() {
    let tokenizer = tokenizer();
    let all = cases("cases");
    assert!(all.len() >= 300, "{} cases", all.len());
    let flat: Vec<u32> = all.iter().flat_map(|case| json_ids(case, "ids")).collect();
    let token = |id: u32| {
        tokenizer
            .id_to_token(id)
            .expect("ids are in the vocabulary")
    };

    let unknown = flat.iter().filter(|&&id| id == tokenizer.unk()).count();
    let continuations = flat
        .iter()
        .filter(|&&id| token(id).starts_with("##"))
        .count();
    let cjk = flat.iter().filter(|&&id| token(id) == "猫").count();
    assert!(unknown >= 50, "{unknown} [UNK]");
    assert!(continuations >= 100, "{continuations} ## pieces");
    assert!(cjk >= 10, "{cjk} CJK ideographs");
    assert!(flat.contains(&tokenizer.cls()) && flat.contains(&tokenizer.sep()));

    let truncated: Vec<&str> = all
        .iter()
        .map(text)
        .filter(|t| {
            let context = tokenizer
                .tokenize(t, BIOMEDCLIP_CONTEXT_LENGTH)
                .expect("256 holds [CLS] and [SEP]");
            context.was_truncated()
        })
        .collect();
    assert!(truncated.len() >= 3, "truncated: {truncated:?}");

    let long_word = all
        .iter()
        .map(text)
        .any(|t| t.split(' ').any(|w| w.chars().count() > MAX_WORD_CHARS));
    assert!(long_word, "no word over {MAX_WORD_CHARS} characters");
    assert!(all.iter().any(|case| json_ids(case, "ids").is_empty()));
    // Texts on which BERT's original Python algorithm differs (final sigma, unassigned code
    // points, CJK extension E): the Rust port follows transformers' BertTokenizer there.
    let legacy_differs = all
        .iter()
        .filter(|case| case["legacy_agrees"] == Value::Bool(false))
        .count();
    assert!(legacy_differs >= 3, "{legacy_differs} texts");
}

#[test]
fn an_awkward_vocabulary_is_read_as_the_reference_reads_it() {
    let tokenizer = WordPieceTokenizer::from_file(fixture_path("edge_vocab.txt"))
        .expect("the edge vocabulary loads");
    assert_no_mismatches(
        "edge-vocabulary ids",
        &encode_mismatches(&tokenizer, "edge_cases"),
    );
}

#[test]
fn loading_from_a_reader_equals_loading_from_the_file() {
    let bytes = fs::read(fixture_path("vocab.txt")).expect("read the vocabulary");
    let from_reader =
        WordPieceTokenizer::from_reader(bytes.as_slice(), "vocab.txt").expect("loads");
    let from_file = tokenizer();
    for case in cases("cases").iter().take(50) {
        assert_eq!(from_reader.encode(text(case)), from_file.encode(text(case)));
    }
}

#[test]
fn a_missing_file_is_named() {
    let path = fixture_path("no_such_vocab.txt");
    let error = WordPieceTokenizer::from_file(&path).unwrap_err();
    assert!(matches!(error, WordPieceError::Read { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("no_such_vocab.txt"), "{message}");
    assert!(std::error::Error::source(&error).is_some());
}

#[test]
fn missing_special_tokens_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vocab.txt");
    fs::write(&path, "[PAD]\n[CLS]\nhello\n").expect("write vocab.txt");
    let error = WordPieceTokenizer::from_file(&path).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.ends_with("lacks the special tokens [SEP], [UNK]"),
        "{message}"
    );
    match error {
        WordPieceError::MissingSpecialTokens { missing, .. } => {
            assert_eq!(missing, ["[SEP]", "[UNK]"]);
        }
        other => panic!("unexpected error {other:?}"),
    }

    fs::write(&path, "").expect("write vocab.txt");
    let empty = WordPieceTokenizer::from_file(&path).unwrap_err();
    assert!(matches!(empty, WordPieceError::Empty { .. }), "{empty:?}");
    assert!(empty.to_string().contains("is empty"), "{empty}");

    fs::write(&path, b"[PAD]\n[UNK]\n\xC3\x28\n").expect("write vocab.txt");
    let invalid = WordPieceTokenizer::from_file(&path).unwrap_err();
    assert!(
        matches!(invalid, WordPieceError::Read { .. }),
        "{invalid:?}"
    );
}

/// No input makes the tokenizer panic: every character class, lone marks, special-token
/// fragments, very long input.
#[test]
fn awkward_input_never_panics() {
    let tokenizer = tokenizer();
    let pieces = [
        "[",
        "]",
        "[CLS",
        "##",
        "#",
        "\u{301}",
        "\u{0}",
        "\u{FFFD}",
        "\u{10FFFF}",
        "\u{E000}",
        "\u{378}",
        "İ",
        "ẞ",
        "ǅ",
        "ﬁ",
        "\u{2B820}",
        "猫",
        "🙂",
        "\r\n",
        "\u{3000}",
        "a",
    ];
    let mut text = String::new();
    for (i, a) in pieces.iter().enumerate() {
        for b in &pieces[i..] {
            text.push_str(a);
            text.push_str(b);
            let _ = tokenizer.encode(&text);
            let context = tokenizer
                .tokenize(&text, 7)
                .expect("7 holds [CLS] and [SEP]");
            assert_eq!(context.len(), 7);
            assert_eq!(context.ids()[0], tokenizer.cls());
            assert_eq!(context.ids()[context.sequence_len() - 1], tokenizer.sep());
        }
    }
    let huge = "pneumothorax ".repeat(20_000);
    assert_eq!(
        tokenizer
            .tokenize(&huge, BIOMEDCLIP_CONTEXT_LENGTH)
            .expect("long enough")
            .len(),
        BIOMEDCLIP_CONTEXT_LENGTH
    );
}
