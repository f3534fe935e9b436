//! `Tokenizer::from_hf_files`: Hugging Face's `vocab.json` + `merges.txt`, at full size (written
//! from the shipped OpenAI merges) and as small hand-made pairs, and its error messages.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

use fedotp_host::clip::tokenizer::{Tokenizer, TokenizerError, END_OF_TEXT, START_OF_TEXT};
use serde_json::{Map, Value};

/// The 256 byte symbols in vocabulary order, as GPT-2 / CLIP define them (written out here
/// independently of the crate's table).
fn byte_symbols() -> Vec<char> {
    let printable: Vec<u32> = (0x21..=0x7E)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let others = (0..=0xFFu32).filter(|b| !printable.contains(b));
    let extra = (0x100..).zip(others).map(|(code, _)| code);
    printable
        .iter()
        .copied()
        .chain(extra)
        .map(|code| char::from_u32(code).expect("symbols are characters"))
        .collect()
}

/// A vocabulary of the 512 base symbols, the given merged tokens, then the two special tokens.
fn small_vocab(merged: &[&str]) -> Vec<String> {
    let symbols = byte_symbols();
    let mut tokens: Vec<String> = symbols.iter().map(|c| c.to_string()).collect();
    tokens.extend(symbols.iter().map(|c| format!("{c}</w>")));
    tokens.extend(merged.iter().map(|t| t.to_string()));
    tokens.push(START_OF_TEXT.to_owned());
    tokens.push(END_OF_TEXT.to_owned());
    tokens
}

fn vocab_json(tokens: &[String]) -> String {
    let map: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), Value::from(id)))
        .collect();
    serde_json::to_string(&map).expect("a map serialises")
}

fn write_pair(dir: &Path, vocab: &str, merges: &str) {
    fs::write(dir.join("vocab.json"), vocab).expect("write vocab.json");
    fs::write(dir.join("merges.txt"), merges).expect("write merges.txt");
}

const HELLO_MERGES: &str = "#version: 0.2\nh e\nl l\nhe ll\nhell o</w>\n";
const HELLO_TOKENS: [&str; 4] = ["he", "ll", "hell", "hello</w>"];

fn hello_tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().expect("temp dir");
    write_pair(
        dir.path(),
        &vocab_json(&small_vocab(&HELLO_TOKENS)),
        HELLO_MERGES,
    );
    let tokenizer = Tokenizer::from_hf_files(dir.path()).expect("the small pair loads");
    (dir, tokenizer)
}

fn load_error(vocab: &str, merges: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    write_pair(dir.path(), vocab, merges);
    match Tokenizer::from_hf_files(dir.path()) {
        Ok(_) => panic!("the files should have been refused"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn small_pair_merges_by_rank() {
    let (_dir, tokenizer) = hello_tokenizer();
    let id = |token: &str| tokenizer.token_to_id(token).expect("token present");
    assert_eq!(tokenizer.vocab_size(), 512 + 4 + 2);
    assert_eq!(tokenizer.start_of_text(), 516);
    assert_eq!(tokenizer.end_of_text(), 517);
    // "hello" merges all the way; "help" stops at he + l + p</w>; "hell" as a word ends in the
    // word-final "l</w>", which no merge joins with "l".
    assert_eq!(
        tokenizer.encode("Hello hello"),
        [id("hello</w>"), id("hello</w>")]
    );
    assert_eq!(tokenizer.encode("help"), [id("he"), id("l"), id("p</w>")]);
    assert_eq!(tokenizer.encode("hell"), [id("he"), id("l"), id("l</w>")]);
    assert_eq!(
        tokenizer.decode(&tokenizer.encode("Hello, help!")).unwrap(),
        "hello , help ! "
    );
}

#[test]
fn windows_line_endings_and_blank_lines_are_accepted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let merges = HELLO_MERGES.replace('\n', "\r\n") + "\r\n\r\n";
    write_pair(
        dir.path(),
        &vocab_json(&small_vocab(&HELLO_TOKENS)),
        &merges,
    );
    let tokenizer = Tokenizer::from_hf_files(dir.path()).expect("loads");
    assert_eq!(tokenizer.encode("hello").len(), 1);
}

#[test]
fn full_size_files_give_the_embedded_tokenizer() {
    let openai = Tokenizer::openai().expect("embedded tokenizer");
    let dir = tempfile::tempdir().expect("temp dir");

    let tokens: Vec<String> = (0..openai.vocab_size() as u32)
        .map(|id| openai.id_to_token(id).expect("dense ids").to_owned())
        .collect();
    let gz = fs::File::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/bpe_simple_vocab_16e6.txt.gz"
    ))
    .expect("shipped merges file");
    let mut merges = String::from("#version: 0.2\n");
    for line in BufReader::new(flate2::read::GzDecoder::new(gz))
        .lines()
        .skip(1)
        .take(48_894)
    {
        writeln!(merges, "{}", line.expect("readable")).expect("write to string");
    }
    write_pair(dir.path(), &vocab_json(&tokens), &merges);

    let hf = Tokenizer::from_hf_files(dir.path()).expect("full-size files load");
    assert_eq!(hf.vocab_size(), 49_408);
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/tokenizer/reference.json")).expect("fixture");
    for case in fixture["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(hf.encode(text), openai.encode(text), "{text:?}");
    }
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = Tokenizer::from_hf_files(dir.path()).unwrap_err();
    assert!(matches!(error, TokenizerError::Read { .. }));
    assert!(error.to_string().contains("vocab.json"), "{error}");

    fs::write(
        dir.path().join("vocab.json"),
        vocab_json(&small_vocab(&HELLO_TOKENS)),
    )
    .unwrap();
    let error = Tokenizer::from_hf_files(dir.path())
        .unwrap_err()
        .to_string();
    assert!(error.contains("merges.txt"), "{error}");
}

#[test]
fn malformed_vocabularies_are_explained() {
    let good = small_vocab(&HELLO_TOKENS);

    let error = load_error("{\"a\": 0,\n \"b\": \"one\"}", HELLO_MERGES);
    assert!(
        error.contains("vocab.json") && error.contains("line 2"),
        "{error}"
    );

    let error = load_error("[1, 2]", HELLO_MERGES);
    assert!(error.contains("not a JSON object"), "{error}");

    let mut gap = Map::new();
    gap.insert("a".into(), 0.into());
    gap.insert("b".into(), 2.into());
    let error = load_error(&Value::Object(gap).to_string(), HELLO_MERGES);
    assert!(error.contains("no token has id 1"), "{error}");

    let mut shared = Map::new();
    shared.insert("a".into(), 0.into());
    shared.insert("b".into(), 0.into());
    let error = load_error(&Value::Object(shared).to_string(), HELLO_MERGES);
    assert!(error.contains("\"a\" and \"b\" share id 0"), "{error}");

    let without_byte: Vec<String> = good.iter().filter(|t| *t != "Ā</w>").cloned().collect();
    let error = load_error(&vocab_json(&without_byte), HELLO_MERGES);
    assert!(
        error.contains("\"Ā</w>\" of byte 0x00 is missing"),
        "{error}"
    );

    let without_end: Vec<String> = good.iter().filter(|t| *t != END_OF_TEXT).cloned().collect();
    let error = load_error(&vocab_json(&without_end), HELLO_MERGES);
    assert!(
        error.contains("special token <|endoftext|> is missing"),
        "{error}"
    );

    let mut with_space = good.clone();
    with_space.push("a b".to_owned());
    let error = load_error(&vocab_json(&with_space), HELLO_MERGES);
    assert!(
        error.contains("\"a b\" is not a sequence of byte symbols"),
        "{error}"
    );
}

#[test]
fn malformed_merges_name_their_line() {
    let vocab = vocab_json(&small_vocab(&HELLO_TOKENS));
    let cases = [
        (
            "#version: 0.2\nh e\nl l x\n",
            "merges.txt line 3: expected two symbols",
        ),
        ("h e\nl  l\n", "merges.txt line 2: expected two symbols"),
        (
            "h e\nhe q!\n",
            "merges.txt line 2: \"q!\" is not in the vocabulary",
        ),
        (
            "h e\nl o\n",
            "merges.txt line 2: merging \"l\" and \"o\" gives \"lo\", which is not",
        ),
        (
            "#version: 0.2\nh e\nl l\nh e\n",
            "merges.txt line 4: the merge \"h\" \"e\" repeats line 2",
        ),
    ];
    for (merges, expected) in cases {
        let error = load_error(&vocab, merges);
        assert!(
            error.contains(expected),
            "{merges:?}: got {error:?}, expected {expected:?}"
        );
    }
}

#[test]
fn decode_and_context_length_errors() {
    let (_dir, tokenizer) = hello_tokenizer();
    let error = tokenizer.decode(&[0, 518]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "token id 518 at position 1 is outside the vocabulary of 518 tokens"
    );
    assert!(matches!(
        tokenizer.tokenize_with_length("hello", 1),
        Err(TokenizerError::ContextTooShort(1))
    ));
    // Two slots hold only the start and end tokens; the text is cut entirely.
    let tokens = tokenizer.tokenize_with_length("hello", 2).unwrap();
    assert_eq!(tokens.ids(), [516, 517]);
    assert!(tokens.was_truncated());
    let tokens = tokenizer.tokenize_with_length("hello help", 5).unwrap();
    let id = |token: &str| tokenizer.token_to_id(token).unwrap();
    assert_eq!(tokens.ids(), [516, id("hello</w>"), id("he"), id("l"), 517]);
    assert_eq!(tokens.eot_position(), 4);
}
