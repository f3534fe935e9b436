//! CLIP's byte-level BPE tokenizer, identical in its output to OpenAI's and open_clip's
//! `SimpleTokenizer` (and to Hugging Face's `CLIPTokenizer` on text that needs no ftfy or HTML
//! clean-up, which Hugging Face's tokenizer skips).
//!
//! Encoding a text takes four steps, each the reference's:
//!
//! 1. **Clean-up** ([`clean_text`]): ftfy-style fixes, HTML entities decoded, whitespace
//!    collapsed, lower-cased.
//! 2. **Split** into words, numbers and punctuation runs with the reference pattern
//!    `'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+` (each digit is its own word).
//! 3. **Bytes to symbols**: each UTF-8 byte of a word is one base symbol, the last byte marked as
//!    ending the word (`</w>`), so every text can be encoded with no unknown token.
//! 4. **BPE**: the adjacent pair with the lowest merge rank is merged, everywhere in the word, until
//!    no pair has a rank. Results are cached per word.
//!
//! The vocabulary has 49,408 tokens: the 256 byte symbols, their 256 word-final forms, one token
//! per merge (48,894), then `<|startoftext|>` (49406) and `<|endoftext|>` (49407). A prompt enters
//! the text tower as a [`ContextTokens`]: start token, the text's tokens, end token, zero padding
//! to 77, truncated so that the end token stays last.
//!
//! ```
//! use fedotp_host::clip::tokenizer::{Tokenizer, CONTEXT_LENGTH};
//!
//! let tokenizer = Tokenizer::openai()?;
//! assert_eq!(tokenizer.encode("X X X X dog."), [343, 343, 343, 343, 1929, 269]);
//!
//! let prompt = tokenizer.tokenize("a photo of a dog.");
//! assert_eq!(prompt.ids().len(), CONTEXT_LENGTH);
//! assert_eq!(prompt.eot_position(), 7);
//! assert_eq!(tokenizer.decode(&tokenizer.encode("A photo of a dog."))?, "a photo of a dog . ");
//! # Ok::<(), fedotp_host::clip::tokenizer::TokenizerError>(())
//! ```

mod clean;

pub(crate) use clean::clean_keeping_case;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};

use regex::Regex;

use super::vocabulary::Vocabulary;

/// The number of token positions of CLIP's text tower.
pub const CONTEXT_LENGTH: usize = 77;

/// The start-of-text token's string in the vocabulary.
pub const START_OF_TEXT: &str = "<|startoftext|>";

/// The end-of-text token's string in the vocabulary.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The suffix that marks a symbol as the end of a word.
const END_OF_WORD: &str = "</w>";

/// The OpenAI merges file (MIT licence, see `host/assets/README.md`), as open_clip ships it.
const OPENAI_MERGES_GZ: &[u8] = include_bytes!("../../../assets/bpe_simple_vocab_16e6.txt.gz");

/// The name errors give for the embedded merges file.
const OPENAI_MERGES_NAME: &str = "bpe_simple_vocab_16e6.txt.gz";

/// The reference takes the first 48,894 merges (`49152 - 256 - 2`) of the 262,144 the file lists.
const OPENAI_MERGE_COUNT: usize = 49_152 - 256 - 2;

/// The word cache is emptied when it reaches this many entries, so that encoding an unbounded
/// stream of texts keeps memory bounded (the reference's cache grows without limit).
const MAX_CACHED_WORDS: usize = 1 << 16;

/// The reference's word-splitting pattern. Like the reference it is case-insensitive, which
/// matters only for characters whose case folding differs from their lower case (`'ſ` matches
/// `'s`), since the text is already lower-cased.
static WORD_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    )
    .expect("valid word pattern")
});

/// Applies the reference tokenizer's text clean-up: ftfy-style fixes, `html.unescape` twice,
/// whitespace collapsed to single spaces and trimmed, lower-cased.
///
/// ftfy's heuristic mojibake repair is not reproduced: text such as `"cafÃ©"` is kept as
/// written, where the reference would first turn it into `"café"`.
///
/// ```
/// use fedotp_host::clip::tokenizer::clean_text;
///
/// assert_eq!(clean_text("  Tom &amp; JERRY’s\t ﬁsh  "), "tom & jerry's fish");
/// ```
pub fn clean_text(text: &str) -> String {
    clean::clean(text)
}

/// Why a tokenizer could not be loaded, or a request could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenizerError {
    /// A vocabulary or merges file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A vocabulary file is not what a CLIP vocabulary must be.
    #[error("{path}: {problem}")]
    Vocabulary {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the token or the JSON line and column.
        problem: String,
    },
    /// A line of a merges file is malformed or does not fit the vocabulary.
    #[error("{path} line {line}: {problem}")]
    Merges {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// `decode` was given an id the vocabulary does not have.
    #[error(
        "token id {id} at position {position} is outside the vocabulary of {vocab_size} tokens"
    )]
    UnknownTokenId {
        /// The id.
        id: u32,
        /// Its index in the input.
        position: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A context length too short for the start and end tokens.
    #[error("context length {0} cannot hold the start and end tokens (it must be at least 2)")]
    ContextTooShort(usize),
}

/// One merge rule: the rank orders merges (lower merges first), `merged` is the resulting token.
#[derive(Debug, Clone, Copy)]
struct Merge {
    rank: u32,
    merged: u32,
}

/// CLIP's byte-level BPE tokenizer.
///
/// Built once ([`Tokenizer::openai`] shares one instance per process), then used from any
/// number of threads: encoding takes `&self` and caches the BPE result of every word.
pub struct Tokenizer {
    /// Token strings and their ids.
    vocab: Vocabulary,
    /// Id → the bytes the token stands for (`</w>` kept as its four bytes).
    token_bytes: Vec<Vec<u8>>,
    /// Adjacent pair of ids → the merge that joins them.
    merges: HashMap<(u32, u32), Merge>,
    /// Byte → id of its symbol inside a word.
    byte_ids: [u32; 256],
    /// Byte → id of its symbol at the end of a word.
    final_byte_ids: [u32; 256],
    start_of_text: u32,
    end_of_text: u32,
    /// Word (a piece of cleaned text) → its BPE ids.
    word_cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.merges.len())
            .field("start_of_text", &self.start_of_text)
            .field("end_of_text", &self.end_of_text)
            .finish_non_exhaustive()
    }
}

/// A text as the text tower takes it: `[start] tokens [end] 0 0 …`, exactly
/// [`ContextTokens::len`] ids, and where the end token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextTokens {
    ids: Vec<u32>,
    eot_position: usize,
    truncated: bool,
}

impl ContextTokens {
    /// The ids, start and end tokens included, zero-padded to the context length.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Consumes the sequence, returning its ids.
    pub fn into_ids(self) -> Vec<u32> {
        self.ids
    }

    /// The context length (the number of ids).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false: a sequence holds at least the start and end tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The index of the end-of-text token: the position whose feature CLIP pools. Positions after
    /// it do not influence it (the text tower's mask is causal), so a batch can be cut to its
    /// largest `eot_position() + 1`.
    pub fn eot_position(&self) -> usize {
        self.eot_position
    }

    /// Whether the text had more tokens than fit and was cut (keeping the end token last).
    pub fn was_truncated(&self) -> bool {
        self.truncated
    }
}

impl Tokenizer {
    /// The OpenAI CLIP tokenizer (embedded merges file), built on the first call and shared after.
    ///
    /// ```
    /// use fedotp_host::clip::tokenizer::Tokenizer;
    ///
    /// let tokenizer = Tokenizer::openai()?;
    /// assert_eq!(tokenizer.vocab_size(), 49_408);
    /// assert_eq!(tokenizer.end_of_text(), 49_407);
    /// # Ok::<(), fedotp_host::clip::tokenizer::TokenizerError>(())
    /// ```
    pub fn openai() -> Result<&'static Tokenizer, TokenizerError> {
        static SHARED: OnceLock<Result<Tokenizer, TokenizerError>> = OnceLock::new();
        SHARED
            .get_or_init(Self::from_embedded_merges)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Builds the vocabulary as the reference does: the byte symbols, their word-final forms,
    /// one token per merge of the embedded file, then the start and end tokens.
    fn from_embedded_merges() -> Result<Self, TokenizerError> {
        let path = PathBuf::from(OPENAI_MERGES_NAME);
        let reader = BufReader::new(flate2::read::GzDecoder::new(OPENAI_MERGES_GZ));
        // Line 1 is a version header; the merges are lines 2..=48,895.
        let mut merges = Vec::with_capacity(OPENAI_MERGE_COUNT);
        for (index, line) in reader.lines().enumerate().skip(1).take(OPENAI_MERGE_COUNT) {
            let line = line.map_err(|source| TokenizerError::Read {
                path: path.clone(),
                source: Arc::new(source),
            })?;
            merges.push(parse_merge_line(&line, index + 1, &path)?);
        }

        let symbols = byte_symbols();
        let mut tokens: Vec<String> = symbols.iter().map(|(_, c)| c.to_string()).collect();
        tokens.extend(symbols.iter().map(|(_, c)| format!("{c}{END_OF_WORD}")));
        tokens.extend(merges.iter().map(|m| format!("{}{}", m.left, m.right)));
        tokens.push(START_OF_TEXT.to_owned());
        tokens.push(END_OF_TEXT.to_owned());
        Self::build(tokens, &merges, &path, &path)
    }

    /// Loads the tokenizer from the Hugging Face files next to CLIP weights: `vocab.json` (token →
    /// id) and `merges.txt` (one merge per line, by rank, after an optional `#version` line).
    ///
    /// Every byte symbol and its word-final form, `<|startoftext|>` and `<|endoftext|>` must be in
    /// the vocabulary, ids must run from 0 without gaps, and every merge must join two tokens into
    /// a third. Errors name the file and, for the merges, the line.
    ///
    /// ```no_run
    /// use fedotp_host::clip::tokenizer::Tokenizer;
    ///
    /// let tokenizer = Tokenizer::from_hf_files("weights/clip-vit-base-patch16")?;
    /// println!("{:?}", tokenizer.encode("a photo of a cat."));
    /// # Ok::<(), fedotp_host::clip::tokenizer::TokenizerError>(())
    /// ```
    pub fn from_hf_files(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let vocab_path = dir.as_ref().join("vocab.json");
        let merges_path = dir.as_ref().join("merges.txt");
        let tokens = read_hf_vocab(&vocab_path)?;
        let merges = read_hf_merges(&merges_path)?;
        Self::build(tokens, &merges, &vocab_path, &merges_path)
    }

    /// Builds the lookup tables from an id-ordered token list and the ranked merges, checking
    /// that they fit together.
    fn build(
        tokens: Vec<String>,
        merges: &[MergeLine],
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self, TokenizerError> {
        let vocab_error = |problem: String| TokenizerError::Vocabulary {
            path: vocab_path.to_owned(),
            problem,
        };
        // Ids fit in u32: the embedded list has 49,408 tokens, a vocab.json's ids are u32.
        let vocab = Vocabulary::new(tokens);
        let id_of = |token: &str| vocab.id(token);

        let mut byte_ids = [0; 256];
        let mut final_byte_ids = [0; 256];
        for (byte, symbol) in byte_symbols() {
            let missing = |symbol: &str| {
                vocab_error(format!(
                    "the symbol {symbol:?} of byte 0x{byte:02X} is missing"
                ))
            };
            let inner = symbol.to_string();
            let word_final = format!("{symbol}{END_OF_WORD}");
            byte_ids[usize::from(byte)] = id_of(&inner).ok_or_else(|| missing(&inner))?;
            final_byte_ids[usize::from(byte)] =
                id_of(&word_final).ok_or_else(|| missing(&word_final))?;
        }
        let special = |token: &str| {
            id_of(token).ok_or_else(|| vocab_error(format!("the special token {token} is missing")))
        };
        let start_of_text = special(START_OF_TEXT)?;
        let end_of_text = special(END_OF_TEXT)?;

        let token_bytes = vocab
            .tokens()
            .iter()
            .map(|token| {
                token_to_bytes(token).ok_or_else(|| {
                    vocab_error(format!(
                        "token {token:?} is not a sequence of byte symbols (optionally ending in {END_OF_WORD})"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let merges = merge_table(merges, &vocab, merges_path)?;

        Ok(Tokenizer {
            vocab,
            token_bytes,
            merges,
            byte_ids,
            final_byte_ids,
            start_of_text,
            end_of_text,
            word_cache: Mutex::new(HashMap::new()),
        })
    }

    /// The number of tokens in the vocabulary (49,408 for OpenAI's).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The id of `<|startoftext|>`.
    pub fn start_of_text(&self) -> u32 {
        self.start_of_text
    }

    /// The id of `<|endoftext|>`.
    pub fn end_of_text(&self) -> u32 {
        self.end_of_text
    }

    /// The id of a vocabulary entry, written as the vocabulary writes it (byte symbols, `</w>`
    /// for word ends).
    ///
    /// ```
    /// use fedotp_host::clip::tokenizer::Tokenizer;
    ///
    /// let tokenizer = Tokenizer::openai()?;
    /// assert_eq!(tokenizer.token_to_id("x</w>"), Some(343));
    /// assert_eq!(tokenizer.id_to_token(269), Some(".</w>"));
    /// # Ok::<(), fedotp_host::clip::tokenizer::TokenizerError>(())
    /// ```
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }

    /// The vocabulary entry of an id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.token(id)
    }

    /// Encodes a text into token ids, without start and end tokens and without truncation.
    ///
    /// The literal strings `<|startoftext|>` and `<|endoftext|>` in the text become the special
    /// tokens, as in OpenAI's tokenizer and Hugging Face's (open_clip spells them
    /// `<start_of_text>` and `<end_of_text>` instead).
    ///
    /// ```
    /// use fedotp_host::clip::tokenizer::Tokenizer;
    ///
    /// let tokenizer = Tokenizer::openai()?;
    /// assert_eq!(tokenizer.encode("Café"), tokenizer.encode("caf&eacute;"));
    /// assert_eq!(tokenizer.encode("  "), Vec::<u32>::new());
    /// # Ok::<(), fedotp_host::clip::tokenizer::TokenizerError>(())
    /// ```
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean::clean(text);
        let mut ids = Vec::new();
        for word in WORD_PATTERN.find_iter(&cleaned) {
            match word.as_str() {
                START_OF_TEXT => ids.push(self.start_of_text),
                END_OF_TEXT => ids.push(self.end_of_text),
                word => self.extend_with_word(word, &mut ids),
            }
        }
        ids
    }

    /// Appends the BPE ids of one word, from the cache when it has been seen before.
    fn extend_with_word(&self, word: &str, ids: &mut Vec<u32>) {
        if let Some(cached) = self.lock_cache().get(word) {
            ids.extend_from_slice(cached);
            return;
        }
        let word_ids = self.bpe(word.as_bytes());
        ids.extend_from_slice(&word_ids);
        let mut cache = self.lock_cache();
        if cache.len() >= MAX_CACHED_WORDS {
            cache.clear();
        }
        cache.insert(word.to_owned(), word_ids);
    }

    /// Locks the word cache. A poisoned lock only means another thread panicked while holding
    /// it; every entry it holds is still a complete, correct encoding, so the cache is used as is.
    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u32>>> {
        self.word_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Byte-pair encodes one word: start from one symbol per byte (the last marked word-final)
    /// and apply the lowest-ranked applicable merge to every occurrence, left to right, until no
    /// adjacent pair has a merge.
    fn bpe(&self, word: &[u8]) -> Vec<u32> {
        let Some((&last, init)) = word.split_last() else {
            return Vec::new();
        };
        let mut symbols: Vec<u32> = init
            .iter()
            .map(|&b| self.byte_ids[usize::from(b)])
            .collect();
        symbols.push(self.final_byte_ids[usize::from(last)]);

        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|pair| {
                    let merge = self.merges.get(&(pair[0], pair[1]))?;
                    Some((merge.rank, pair[0], pair[1], merge.merged))
                })
                .min_by_key(|&(rank, ..)| rank);
            let Some((_, left, right, merged)) = best else {
                break;
            };
            let mut joined = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    joined.push(merged);
                    i += 2;
                } else {
                    joined.push(symbols[i]);
                    i += 1;
                }
            }
            symbols = joined;
        }
        symbols
    }

    /// The sequence CLIP's text tower takes for `text`, at the standard context length of 77:
    /// `[start] tokens [end]`, zero-padded. A text too long keeps its first 75 tokens and the end
    /// token goes last, as open_clip's `tokenize` does.
    ///
    /// ```
    /// use fedotp_host::clip::tokenizer::Tokenizer;
    ///
    /// let tokenizer = Tokenizer::openai()?;
    /// let prompt = tokenizer.tokenize("X X X X cat.");
    /// assert_eq!(&prompt.ids()[..8], &[49406, 343, 343, 343, 343, 2368, 269, 49407]);
    /// assert_eq!(prompt.eot_position(), 7);
    /// assert!(prompt.ids()[8..].iter().all(|&id| id == 0));
    ///
    /// let long = tokenizer.tokenize(&"cat ".repeat(100));
    /// assert!(long.was_truncated());
    /// assert_eq!(long.eot_position(), 76);
    /// # Ok::<(), fedotp_host::clip::tokenizer::TokenizerError>(())
    /// ```
    pub fn tokenize(&self, text: &str) -> ContextTokens {
        self.context_tokens(text, CONTEXT_LENGTH)
    }

    /// [`Tokenizer::tokenize`] at another context length (at least 2).
    pub fn tokenize_with_length(
        &self,
        text: &str,
        context_length: usize,
    ) -> Result<ContextTokens, TokenizerError> {
        if context_length < 2 {
            return Err(TokenizerError::ContextTooShort(context_length));
        }
        Ok(self.context_tokens(text, context_length))
    }

    fn context_tokens(&self, text: &str, context_length: usize) -> ContextTokens {
        let mut ids = Vec::with_capacity(context_length);
        ids.push(self.start_of_text);
        ids.extend(self.encode(text));
        ids.push(self.end_of_text);
        let truncated = ids.len() > context_length;
        if truncated {
            ids.truncate(context_length);
            ids[context_length - 1] = self.end_of_text;
        }
        let eot_position = ids.len() - 1;
        ids.resize(context_length, 0);
        ContextTokens {
            ids,
            eot_position,
            truncated,
        }
    }

    /// Turns ids back into text as the reference does: the tokens' bytes joined, decoded as UTF-8
    /// (invalid sequences become U+FFFD), each `</w>` replaced by a space. Special and padding ids
    /// are decoded like any other (`<|startoftext|>`, `!` for id 0).
    ///
    /// ```
    /// use fedotp_host::clip::tokenizer::Tokenizer;
    ///
    /// let tokenizer = Tokenizer::openai()?;
    /// assert_eq!(tokenizer.decode(&[320, 1125, 539, 320, 2368, 269])?, "a photo of a cat . ");
    /// assert!(tokenizer.decode(&[49_408]).is_err());
    /// # Ok::<(), fedotp_host::clip::tokenizer::TokenizerError>(())
    /// ```
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for (position, &id) in ids.iter().enumerate() {
            let token =
                self.token_bytes
                    .get(id as usize)
                    .ok_or(TokenizerError::UnknownTokenId {
                        id,
                        position,
                        vocab_size: self.vocab_size(),
                    })?;
            bytes.extend_from_slice(token);
        }
        Ok(String::from_utf8_lossy(&bytes).replace(END_OF_WORD, " "))
    }
}

/// GPT-2's byte-to-symbol table as CLIP uses it, in vocabulary order (symbol `i` has id `i`):
/// the printable Latin-1 bytes stand for themselves and come first; the other 68 bytes follow,
/// standing for U+0100 onwards, so that no symbol is whitespace or a control character.
fn byte_symbols() -> Vec<(u8, char)> {
    let printable = |byte: &u8| matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table: Vec<(u8, char)> = (0..=255u8)
        .filter(printable)
        .map(|byte| (byte, char::from(byte)))
        .collect();
    let others = (0..=255u8).filter(|byte| !printable(byte));
    table.extend(others.zip('\u{100}'..));
    table
}

/// The bytes a vocabulary token stands for: its byte symbols' bytes, then `</w>` as written if
/// it ends a word; the special tokens stand for their own text. `None` for anything else.
fn token_to_bytes(token: &str) -> Option<Vec<u8>> {
    static BYTE_OF_SYMBOL: LazyLock<HashMap<char, u8>> = LazyLock::new(|| {
        byte_symbols()
            .into_iter()
            .map(|(byte, c)| (c, byte))
            .collect()
    });
    if token == START_OF_TEXT || token == END_OF_TEXT {
        return Some(token.as_bytes().to_vec());
    }
    let (body, suffix) = match token.strip_suffix(END_OF_WORD) {
        Some(body) => (body, END_OF_WORD),
        None => (token, ""),
    };
    let mut bytes: Vec<u8> = body
        .chars()
        .map(|c| BYTE_OF_SYMBOL.get(&c).copied())
        .collect::<Option<_>>()?;
    if bytes.is_empty() {
        return None;
    }
    bytes.extend_from_slice(suffix.as_bytes());
    Some(bytes)
}

/// Turns the ranked merges into the pair → merge table, checking that both symbols and their
/// concatenation are tokens and that no pair is listed twice.
fn merge_table(
    merges: &[MergeLine],
    vocab: &Vocabulary,
    path: &Path,
) -> Result<HashMap<(u32, u32), Merge>, TokenizerError> {
    let mut table = HashMap::with_capacity(merges.len());
    for (rank, merge) in (0..).zip(merges) {
        let error = |problem: String| TokenizerError::Merges {
            path: path.to_owned(),
            line: merge.line,
            problem,
        };
        let id_of = |symbol: &str| {
            vocab
                .id(symbol)
                .ok_or_else(|| error(format!("{symbol:?} is not in the vocabulary")))
        };
        let pair = (id_of(&merge.left)?, id_of(&merge.right)?);
        let joined = format!("{}{}", merge.left, merge.right);
        let merged = vocab.id(&joined).ok_or_else(|| {
            error(format!(
                "merging {:?} and {:?} gives {joined:?}, which is not in the vocabulary",
                merge.left, merge.right
            ))
        })?;
        if let Some(first) = table.insert(pair, Merge { rank, merged }) {
            let first_line = merges[first.rank as usize].line;
            return Err(error(format!(
                "the merge {:?} {:?} repeats line {first_line}",
                merge.left, merge.right
            )));
        }
    }
    Ok(table)
}

/// One line of a merges file: two symbols to join, and where the line is.
#[derive(Debug)]
struct MergeLine {
    left: String,
    right: String,
    line: usize,
}

/// Parses `left right` (one space between); `line` is 1-based, for errors.
fn parse_merge_line(text: &str, line: usize, path: &Path) -> Result<MergeLine, TokenizerError> {
    let mut parts = text.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(left), Some(right), None) if !left.is_empty() && !right.is_empty() => Ok(MergeLine {
            left: left.to_owned(),
            right: right.to_owned(),
            line,
        }),
        _ => Err(TokenizerError::Merges {
            path: path.to_owned(),
            line,
            problem: format!("expected two symbols separated by one space, found {text:?}"),
        }),
    }
}

fn read_file(path: &Path) -> Result<String, TokenizerError> {
    fs::read_to_string(path).map_err(|source| TokenizerError::Read {
        path: path.to_owned(),
        source: Arc::new(source),
    })
}

/// Reads a Hugging Face `vocab.json` (a JSON object of token → id) into an id-ordered token
/// list; the ids must be 0, 1, 2, … with no gaps or repeats.
fn read_hf_vocab(path: &Path) -> Result<Vec<String>, TokenizerError> {
    let vocab_error = |problem: String| TokenizerError::Vocabulary {
        path: path.to_owned(),
        problem,
    };
    let text = read_file(path)?;
    let map: HashMap<String, u32> = serde_json::from_str(&text)
        .map_err(|error| vocab_error(format!("not a JSON object of token ids: {error}")))?;
    let mut entries: Vec<(String, u32)> = map.into_iter().collect();
    entries.sort_unstable_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    for (expected, (token, id)) in entries.iter().enumerate() {
        let id = *id as usize;
        if id < expected {
            let (other, _) = &entries[expected - 1];
            return Err(vocab_error(format!(
                "tokens {other:?} and {token:?} share id {id}"
            )));
        }
        if id > expected {
            return Err(vocab_error(format!(
                "no token has id {expected}: the ids of {} tokens must run from 0 to {} without gaps",
                entries.len(),
                entries.len() - 1
            )));
        }
    }
    Ok(entries.into_iter().map(|(token, _)| token).collect())
}

/// Reads a Hugging Face `merges.txt`: an optional `#version` line, then one merge per line in
/// rank order. Blank lines are skipped; a Windows line ending is accepted.
fn read_hf_merges(path: &Path) -> Result<Vec<MergeLine>, TokenizerError> {
    let text = read_file(path)?;
    let mut merges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() || (index == 0 && line.starts_with("#version")) {
            continue;
        }
        merges.push(parse_merge_line(line, index + 1, path)?);
    }
    Ok(merges)
}
