//! The Rust CLIP tokenizer against the reference: `tests/fixtures/tokenizer/reference.json`,
//! written by `tests/scripts/tokenizer_reference.py` from open_clip's `SimpleTokenizer` (checked
//! there against Hugging Face's `CLIPTokenizer` on every class name and prompt).

use std::sync::LazyLock;

use fedotp_host::clip::classnames::{prompt_name, Dataset};
use fedotp_host::clip::tokenizer::{clean_text, Tokenizer, CONTEXT_LENGTH};
use fedotp_tests::compare::assert_no_mismatches;
use fedotp_tests::fixtures::{json_array, json_ids, json_str};
use serde_json::Value;

static FIXTURE: LazyLock<Value> = LazyLock::new(|| {
    let text = include_str!("fixtures/tokenizer/reference.json");
    serde_json::from_str(text).expect("the fixture is valid JSON")
});

fn tokenizer() -> &'static Tokenizer {
    Tokenizer::openai().expect("the embedded merges file loads")
}

#[test]
fn shipped_class_lists_are_the_ones_the_fixture_was_made_from() {
    let lists = FIXTURE["classnames"]
        .as_object()
        .expect("classnames is an object");
    assert_eq!(lists.len(), Dataset::ALL.len());
    for dataset in Dataset::ALL {
        let fixture: Vec<&str> = json_array(&FIXTURE["classnames"], dataset.name())
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
    let texts: std::collections::HashSet<&str> = json_array(&FIXTURE, "cases")
        .iter()
        .map(|case| json_str(case, "text"))
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
    for case in json_array(&FIXTURE, "cases") {
        let input = json_str(case, "text");
        let cleaned = clean_text(input);
        if case["clean"].as_str() != Some(cleaned.as_str()) {
            mismatches.push(format!(
                "clean({input:?}) = {cleaned:?}, reference {}",
                case["clean"]
            ));
        }
        let encoded = tokenizer.encode(input);
        let expected = json_ids(case, "ids");
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
    for case in json_array(&FIXTURE, "cases") {
        let input = json_str(case, "text");
        let tokens = tokenizer.tokenize(input);
        let eot = case["eot"].as_u64().expect("eot") as usize;
        // The fixture stores the sequence up to its end token; the rest is zero padding.
        let mut expected = json_ids(case, "context");
        expected.resize(CONTEXT_LENGTH, 0);
        if tokens.ids() != expected.as_slice() || tokens.eot_position() != eot {
            mismatches.push(format!(
                "tokenize({input:?}) = {:?} (end at {}), reference {expected:?} (end at {eot})",
                tokens.ids(),
                tokens.eot_position()
            ));
        }
        let reference_truncated = json_ids(case, "ids").len() + 2 > CONTEXT_LENGTH;
        if tokens.was_truncated() != reference_truncated {
            mismatches.push(format!("truncation of {input:?} reported wrongly"));
        }
    }
    assert_no_mismatches("context sequences", &mismatches);
}

#[test]
fn the_fixture_exercises_truncation_and_the_special_tokens() {
    let cases = json_array(&FIXTURE, "cases");
    assert!(cases
        .iter()
        .any(|case| case["eot"].as_u64() == Some(CONTEXT_LENGTH as u64 - 1)));
    assert!(cases
        .iter()
        .any(|case| json_ids(case, "ids").contains(&tokenizer().end_of_text())));
}

#[test]
fn decoding_matches_the_reference() {
    let tokenizer = tokenizer();
    let mut mismatches = Vec::new();
    let encoded_cases = json_array(&FIXTURE, "cases")
        .iter()
        .filter_map(|case| Some((json_ids(case, "ids"), case["decoded"].as_str()?)));
    let raw_cases = json_array(&FIXTURE, "decode")
        .iter()
        .map(|case| (json_ids(case, "ids"), json_str(case, "text")));
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
    for case in json_array(&FIXTURE, "entities") {
        let input = json_str(case, "text");
        let cleaned = clean_text(input);
        if cleaned != json_str(case, "clean") {
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
    let cases = json_array(&FIXTURE, "cases");
    std::thread::scope(|scope| {
        for offset in 0..4 {
            scope.spawn(move || {
                for case in cases.iter().skip(offset).step_by(4) {
                    assert_eq!(
                        tokenizer.encode(json_str(case, "text")),
                        json_ids(case, "ids")
                    );
                }
            });
        }
    });
}
