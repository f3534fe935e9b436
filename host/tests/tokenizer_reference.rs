//! The Rust CLIP tokenizer against the reference: `tests/fixtures/tokenizer/reference.json`,
//! written by `tests/scripts/tokenizer_reference.py` from open_clip's `SimpleTokenizer` (checked
//! there against Hugging Face's `CLIPTokenizer` on every class name and prompt).

use std::sync::LazyLock;

use fedotp_host::clip::classnames::{prompt_name, Dataset};
use fedotp_host::clip::tokenizer::{clean_text, Tokenizer, CONTEXT_LENGTH};
use fedotp_tests::compare::assert_no_mismatches;
use serde_json::Value;

static FIXTURE: LazyLock<Value> = LazyLock::new(|| {
    let text = include_str!("fixtures/tokenizer/reference.json");
    serde_json::from_str(text).expect("the fixture is valid JSON")
});

fn tokenizer() -> &'static Tokenizer {
    Tokenizer::openai().expect("the embedded merges file loads")
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("fixture field {key} is not an array"))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("fixture field {key} is not a string"))
}

fn ids(value: &Value, key: &str) -> Vec<u32> {
    array(value, key)
        .iter()
        .map(|id| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .expect("ids are u32")
        })
        .collect()
}

#[test]
fn shipped_class_lists_are_the_ones_the_fixture_was_made_from() {
    let lists = FIXTURE["classnames"]
        .as_object()
        .expect("classnames is an object");
    assert_eq!(lists.len(), Dataset::ALL.len());
    for dataset in Dataset::ALL {
        let fixture: Vec<&str> = array(&FIXTURE["classnames"], dataset.name())
            .iter()
            .map(|name| name.as_str().expect("class names are strings"))
            .collect();
        assert_eq!(
            dataset.classnames(),
            fixture.as_slice(),
            "{}",
            dataset.name()
        );
    }
}

#[test]
fn every_class_name_and_its_prompt_is_a_reference_case() {
    let n_ctx = FIXTURE["n_ctx"].as_u64().expect("n_ctx") as usize;
    let texts: std::collections::HashSet<&str> = array(&FIXTURE, "cases")
        .iter()
        .map(|case| text(case, "text"))
        .collect();
    for dataset in Dataset::ALL {
        for name in dataset.classnames() {
            let prompt = format!("{}{}.", "X ".repeat(n_ctx), prompt_name(name));
            assert!(texts.contains(name), "{name:?} has no reference case");
            assert!(
                texts.contains(prompt.as_str()),
                "{prompt:?} has no reference case"
            );
        }
    }
}

#[test]
fn encoding_matches_the_reference_for_every_string() {
    let tokenizer = tokenizer();
    let mut mismatches = Vec::new();
    for case in array(&FIXTURE, "cases") {
        let input = text(case, "text");
        let cleaned = clean_text(input);
        if case["clean"].as_str() != Some(cleaned.as_str()) {
            mismatches.push(format!(
                "clean({input:?}) = {cleaned:?}, reference {}",
                case["clean"]
            ));
        }
        let encoded = tokenizer.encode(input);
        let expected = ids(case, "ids");
        if encoded != expected {
            mismatches.push(format!(
                "encode({input:?}) = {encoded:?}, reference {expected:?}"
            ));
        }
    }
    assert_no_mismatches("encodings", &mismatches);
}

#[test]
fn context_sequences_match_the_reference_for_every_string() {
    let tokenizer = tokenizer();
    assert_eq!(
        FIXTURE["context_length"].as_u64(),
        Some(CONTEXT_LENGTH as u64)
    );
    let mut mismatches = Vec::new();
    for case in array(&FIXTURE, "cases") {
        let input = text(case, "text");
        let tokens = tokenizer.tokenize(input);
        let eot = case["eot"].as_u64().expect("eot") as usize;
        // The fixture stores the sequence up to its end token; the rest is zero padding.
        let mut expected = ids(case, "context");
        expected.resize(CONTEXT_LENGTH, 0);
        if tokens.ids() != expected.as_slice() || tokens.eot_position() != eot {
            mismatches.push(format!(
                "tokenize({input:?}) = {:?} (end at {}), reference {expected:?} (end at {eot})",
                tokens.ids(),
                tokens.eot_position()
            ));
        }
        let reference_truncated = ids(case, "ids").len() + 2 > CONTEXT_LENGTH;
        if tokens.was_truncated() != reference_truncated {
            mismatches.push(format!("truncation of {input:?} reported wrongly"));
        }
    }
    assert_no_mismatches("context sequences", &mismatches);
}

#[test]
fn the_fixture_exercises_truncation_and_the_special_tokens() {
    let cases = array(&FIXTURE, "cases");
    assert!(cases
        .iter()
        .any(|case| case["eot"].as_u64() == Some(CONTEXT_LENGTH as u64 - 1)));
    assert!(cases
        .iter()
        .any(|case| ids(case, "ids").contains(&tokenizer().end_of_text())));
}

#[test]
fn decoding_matches_the_reference() {
    let tokenizer = tokenizer();
    let mut mismatches = Vec::new();
    let encoded_cases = array(&FIXTURE, "cases")
        .iter()
        .filter_map(|case| Some((ids(case, "ids"), case["decoded"].as_str()?)));
    let raw_cases = array(&FIXTURE, "decode")
        .iter()
        .map(|case| (ids(case, "ids"), text(case, "text")));
    for (ids, expected) in encoded_cases.chain(raw_cases) {
        match tokenizer.decode(&ids) {
            Ok(decoded) if decoded == expected => {}
            other => mismatches.push(format!(
                "decode({ids:?}) = {other:?}, reference {expected:?}"
            )),
        }
    }
    assert_no_mismatches("decodings", &mismatches);
}

#[test]
fn html_entities_are_cleaned_as_python_and_ftfy_clean_them() {
    let mut mismatches = Vec::new();
    for case in array(&FIXTURE, "entities") {
        let input = text(case, "text");
        let cleaned = clean_text(input);
        if cleaned != text(case, "clean") {
            mismatches.push(format!(
                "clean({input:?}) = {cleaned:?}, reference {}",
                case["clean"]
            ));
        }
    }
    assert_no_mismatches("entity clean-ups", &mismatches);
}

#[test]
fn concurrent_encoding_gives_the_same_ids() {
    let tokenizer = tokenizer();
    let cases = array(&FIXTURE, "cases");
    std::thread::scope(|scope| {
        for offset in 0..4 {
            scope.spawn(move || {
                for case in cases.iter().skip(offset).step_by(4) {
                    assert_eq!(tokenizer.encode(text(case, "text")), ids(case, "ids"));
                }
            });
        }
    });
}
