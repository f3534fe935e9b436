//! The uncased BERT WordPiece tokenizer of BiomedCLIP's text tower (PubMedBERT), identical in
//! its output to transformers' `BertTokenizer` with `do_lower_case=True` (transformers 5, whose
//! `BertTokenizer` runs on the `tokenizers` library) and, through [`WordPieceTokenizer::tokenize`],
//! to open_clip's `HFTokenizer` as BiomedCLIP uses it.
//!
//! Encoding a text takes these steps, each the reference's:
//!
//! 1. **Special tokens**: the literal strings `[CLS]`, `[SEP]`, `[PAD]`, `[UNK]` and `[MASK]`
//!    (case-sensitive, anywhere, even inside a word) are cut out of the raw text and become their
//!    ids; the text between them goes through the steps below on its own. `[cls]` is plain text.
//! 2. **Clean-up**: NUL, U+FFFD and control characters (general categories Cc, Cf and Co, but
//!    not tab, line feed and carriage return) are dropped; whitespace becomes a space.
//! 3. **CJK ideographs** get a space on each side, so that each is a word of its own. The ranges
//!    are BERT's (the CJK Unified Ideographs blocks and extensions, the compatibility
//!    ideographs), with the `tokenizers` library's lower bound `0x2B920` for the range BERT
//!    starts at `0x2B820`: transformers' `BertTokenizer` leaves U+2B820..U+2B91F inside words.
//! 4. **Accents** are stripped: canonical decomposition (NFD), then every non-spacing mark (Mn)
//!    is dropped (`café` → `cafe`, `Å` → `A`).
//! 5. **Lower-casing**, character by character with the full Unicode mapping (`İ` → `i̇`). Like
//!    the reference, and unlike Python's `str.lower`, there is no final-sigma rule: `ΣΑΣ` →
//!    `σασ`.
//! 6. **Words**: the text is split at whitespace, then every punctuation character is a word of
//!    its own. Punctuation is BERT's: the ASCII ranges 33–47, 58–64, 91–96 and 123–126 (so `$`,
//!    `+`, `^` and `` ` `` count) plus every character of a Unicode punctuation category (P*).
//! 7. **WordPiece**: each word is matched greedily, longest vocabulary entry first, from its
//!    start; the pieces after the first are looked up with the `##` continuation prefix
//!    (`pneumothorax` → `pneumo ##thorax`). A word with no complete match, or longer than
//!    [`MAX_WORD_CHARS`] characters, is one `[UNK]`.
//!
//! [`WordPieceTokenizer::tokenize`] builds what the text tower takes: open_clip's clean-up
//! (ftfy-style fixes, HTML entities decoded twice, whitespace collapsed; no lower-casing, which
//! step 5 does), then `[CLS] tokens [SEP]`, padded with `[PAD]` to the context length
//! ([`BIOMEDCLIP_CONTEXT_LENGTH`] for BiomedCLIP); a text too long keeps its first tokens and
//! `[SEP]` stays last.
//!
//! The vocabulary is a `vocab.txt`: one token per line, the id is the line's index. Lines are
//! read as the reference reads them: split at `\n` (a `\r` before it is dropped), trailing
//! whitespace trimmed, and a token listed twice takes the id of its last line.
//!
//! The Unicode character classes (Cc/Cf/Co, P*, Mn) come from the `regex` crate's tables, which
//! follow current Unicode, while the reference's come from older tables. Five small tables of
//! exceptions (632 code points, in scripts and symbols added from Unicode 11 on, such as
//! the punctuation mark U+2E4F, which the reference keeps inside a word) bring the classes back
//! to the reference's. A test checks every code point against the reference's classes
//! (`tokenizers` 0.23.3, recorded by `tests/scripts/wordpiece_reference.py`), so a `regex` release
//! with newer Unicode tables that needs more exceptions fails it.
//!
//! ```
//! use fedotp_host::clip::wordpiece::WordPieceTokenizer;
//!
//! let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nx\npneumo\n##thorax\ncafe\n.\n";
//! let tokenizer = WordPieceTokenizer::from_vocab_text(vocab, "vocab.txt")?;
//! assert_eq!(tokenizer.encode("Pneumothorax. Café"), [5, 6, 8, 7]);
//! assert_eq!(tokenizer.encode("pneumonia"), [tokenizer.unk()]);
//!
//! let prompt = tokenizer.tokenize("X X pneumothorax.", 8)?;
//! assert_eq!(prompt.ids(), [2, 4, 4, 5, 6, 8, 3, 0]);
//! assert_eq!(prompt.sequence_len(), 7);
//! # Ok::<(), fedotp_host::clip::wordpiece::WordPieceError>(())
//! ```

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::tokenizer::clean_keeping_case;
use super::vocabulary::Vocabulary;

/// BiomedCLIP's text context: the number of token positions of its PubMedBERT tower.
pub const BIOMEDCLIP_CONTEXT_LENGTH: usize = 256;

/// A word of more characters than this is one `[UNK]` (BERT's `max_input_chars_per_word`).
pub const MAX_WORD_CHARS: usize = 100;

/// The padding token.
pub const PAD_TOKEN: &str = "[PAD]";
/// The unknown-word token.
pub const UNK_TOKEN: &str = "[UNK]";
/// The classification token, first in every sequence (BiomedCLIP pools its output).
pub const CLS_TOKEN: &str = "[CLS]";
/// The separator token, last in every sequence before the padding.
pub const SEP_TOKEN: &str = "[SEP]";
/// The masked-language-model token; optional in a vocabulary.
pub const MASK_TOKEN: &str = "[MASK]";

/// The prefix of a vocabulary entry that continues a word.
const CONTINUATION_PREFIX: &str = "##";

/// The special tokens that are cut out of raw text, in the order they are looked for. None is a
/// prefix of another, so the first that matches at a position is the only one that can.
const SPECIAL_TOKENS: [&str; 5] = [PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN];

/// The control (Cc), format (Cf) and private-use (Co) characters of current Unicode. Unassigned
/// code points (Cn) are not among them: the reference keeps those.
static CONTROL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\p{Cc}\p{Cf}\p{Co}]").expect("valid control pattern"));

/// The non-spacing marks of current Unicode, which accent stripping drops after the canonical
/// decomposition.
static NON_SPACING_MARK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\p{Mn}").expect("valid mark pattern"));

/// The punctuation (P*) of current Unicode.
static UNICODE_PUNCTUATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\p{P}").expect("valid punctuation pattern"));

/// Format characters (Cf) the reference keeps: assigned or given their category after its tables.
const KEPT_BY_REFERENCE: &[(u32, u32)] = &[
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
];

/// Punctuation (P*) the reference does not split off: assigned after its tables.
const NOT_PUNCTUATION_IN_REFERENCE: &[(u32, u32)] = &[
    (0x061D, 0x061D),
    (0x09FD, 0x09FD),
    (0x0A76, 0x0A76),
    (0x0C77, 0x0C77),
    (0x0C84, 0x0C84),
    (0x1B4E, 0x1B4F),
    (0x1B7D, 0x1B7F),
    (0x2E43, 0x2E4F),
    (0x2E52, 0x2E5D),
    (0x10D6E, 0x10D6E),
    (0x10EAD, 0x10EAD),
    (0x10F55, 0x10F59),
    (0x10F86, 0x10F89),
    (0x113D4, 0x113D5),
    (0x113D7, 0x113D8),
    (0x1144B, 0x1144F),
    (0x1145A, 0x1145B),
    (0x1145D, 0x1145D),
    (0x11660, 0x1166C),
    (0x116B9, 0x116B9),
    (0x1183B, 0x1183B),
    (0x11944, 0x11946),
    (0x119E2, 0x119E2),
    (0x11A3F, 0x11A46),
    (0x11A9A, 0x11A9C),
    (0x11A9E, 0x11AA2),
    (0x11B00, 0x11B09),
    (0x11BE1, 0x11BE1),
    (0x11C41, 0x11C45),
    (0x11C70, 0x11C71),
    (0x11EF7, 0x11EF8),
    (0x11F43, 0x11F4F),
    (0x11FFF, 0x11FFF),
    (0x12FF1, 0x12FF2),
    (0x16D6D, 0x16D6F),
    (0x16E97, 0x16E9A),
    (0x16FE2, 0x16FE2),
    (0x1E5FF, 0x1E5FF),
    (0x1E95E, 0x1E95F),
];

/// Characters the reference splits off as punctuation that Unicode has since moved out of P*.
const PUNCTUATION_IN_REFERENCE_ONLY: &[(u32, u32)] = &[(0x166D, 0x166D), (0x111C9, 0x111C9)];

/// Characters the reference drops as non-spacing marks, which Unicode has since made spacing
/// marks (Mc).
const NON_SPACING_IN_REFERENCE_ONLY: &[(u32, u32)] = &[(0x1734, 0x1734), (0x1171E, 0x1171E)];

/// Characters accent stripping leaves as they are in the reference, where current Unicode
/// decomposes them or calls them non-spacing marks (Mn): assigned, or given a decomposition or
/// that category, after its tables. The reference treats them as starters: nothing in them is
/// dropped and no mark is reordered across them.
const UNSTRIPPED_BY_REFERENCE: &[(u32, u32)] = &[
    (0x07FD, 0x07FD),
    (0x0897, 0x089F),
    (0x08CA, 0x08E1),
    (0x09FE, 0x09FE),
    (0x0AFA, 0x0AFF),
    (0x0B55, 0x0B55),
    (0x0C04, 0x0C04),
    (0x0C3C, 0x0C3C),
    (0x0D00, 0x0D00),
    (0x0D3B, 0x0D3C),
    (0x0D81, 0x0D81),
    (0x0EBA, 0x0EBA),
    (0x0ECE, 0x0ECE),
    (0x180F, 0x180F),
    (0x1885, 0x1886),
    (0x1ABF, 0x1ACE),
    (0x1DF6, 0x1DFB),
    (0xA82C, 0xA82C),
    (0xA8C5, 0xA8C5),
    (0xA8FF, 0xA8FF),
    (0xA9BD, 0xA9BD),
    (0x105C9, 0x105C9),
    (0x105E4, 0x105E4),
    (0x10D24, 0x10D27),
    (0x10D69, 0x10D6D),
    (0x10EAB, 0x10EAC),
    (0x10EFC, 0x10EFF),
    (0x10F46, 0x10F50),
    (0x10F82, 0x10F85),
    (0x11070, 0x11070),
    (0x11073, 0x11074),
    (0x110C2, 0x110C2),
    (0x111C9, 0x111C9),
    (0x111CF, 0x111CF),
    (0x1123E, 0x1123E),
    (0x11241, 0x11241),
    (0x1133B, 0x1133B),
    (0x11383, 0x11383),
    (0x11385, 0x11385),
    (0x1138E, 0x1138E),
    (0x11391, 0x11391),
    (0x113BB, 0x113C0),
    (0x113C5, 0x113C5),
    (0x113C7, 0x113C8),
    (0x113CE, 0x113CE),
    (0x113D0, 0x113D0),
    (0x113D2, 0x113D2),
    (0x113E1, 0x113E2),
    (0x11438, 0x1143F),
    (0x11442, 0x11444),
    (0x11446, 0x11446),
    (0x1145E, 0x1145E),
    (0x1182F, 0x11837),
    (0x11839, 0x1183A),
    (0x11938, 0x11938),
    (0x1193B, 0x1193C),
    (0x1193E, 0x1193E),
    (0x11943, 0x11943),
    (0x119D4, 0x119D7),
    (0x119DA, 0x119DB),
    (0x119E0, 0x119E0),
    (0x11A01, 0x11A0A),
    (0x11A33, 0x11A38),
    (0x11A3B, 0x11A3E),
    (0x11A47, 0x11A47),
    (0x11A51, 0x11A56),
    (0x11A59, 0x11A5B),
    (0x11A8A, 0x11A96),
    (0x11A98, 0x11A99),
    (0x11C30, 0x11C36),
    (0x11C38, 0x11C3D),
    (0x11C3F, 0x11C3F),
    (0x11C92, 0x11CA7),
    (0x11CAA, 0x11CB0),
    (0x11CB2, 0x11CB3),
    (0x11CB5, 0x11CB6),
    (0x11D31, 0x11D36),
    (0x11D3A, 0x11D3A),
    (0x11D3C, 0x11D3D),
    (0x11D3F, 0x11D45),
    (0x11D47, 0x11D47),
    (0x11D90, 0x11D91),
    (0x11D95, 0x11D95),
    (0x11D97, 0x11D97),
    (0x11EF3, 0x11EF4),
    (0x11F00, 0x11F01),
    (0x11F36, 0x11F3A),
    (0x11F40, 0x11F40),
    (0x11F42, 0x11F42),
    (0x11F5A, 0x11F5A),
    (0x13440, 0x13440),
    (0x13447, 0x13455),
    (0x1611E, 0x16129),
    (0x1612D, 0x1612F),
    (0x16D68, 0x16D6A),
    (0x16F4F, 0x16F4F),
    (0x16FE4, 0x16FE4),
    (0x1CF00, 0x1CF2D),
    (0x1CF30, 0x1CF46),
    (0x1E000, 0x1E006),
    (0x1E008, 0x1E018),
    (0x1E01B, 0x1E021),
    (0x1E023, 0x1E024),
    (0x1E026, 0x1E02A),
    (0x1E08F, 0x1E08F),
    (0x1E130, 0x1E136),
    (0x1E2AE, 0x1E2AE),
    (0x1E2EC, 0x1E2EF),
    (0x1E4EC, 0x1E4EF),
    (0x1E5EE, 0x1E5EF),
    (0x1E944, 0x1E94A),
];

/// Why a vocabulary could not be loaded, or a request could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WordPieceError {
    /// The vocabulary could not be read (missing, unreadable, or not UTF-8).
    #[error("cannot read the WordPiece vocabulary {path}: {source}")]
    Read {
        /// The file, or the name given for a reader or string.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The vocabulary has no lines.
    #[error("the WordPiece vocabulary {path} is empty")]
    Empty {
        /// The file, or the name given for a reader or string.
        path: PathBuf,
    },
    /// Special tokens every BERT vocabulary has are not in it.
    #[error(
        "the WordPiece vocabulary {path} lacks the special token{} {}",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", ")
    )]
    MissingSpecialTokens {
        /// The file, or the name given for a reader or string.
        path: PathBuf,
        /// The tokens missing, among `[CLS]`, `[SEP]`, `[PAD]` and `[UNK]`.
        missing: Vec<&'static str>,
    },
    /// The vocabulary has more lines than a `u32` id can number.
    #[error("the WordPiece vocabulary {path} has {lines} lines, more than u32 ids can number")]
    TooLarge {
        /// The file, or the name given for a reader or string.
        path: PathBuf,
        /// Its number of lines.
        lines: usize,
    },
    /// A context length too short for `[CLS]` and `[SEP]`.
    #[error("context length {0} cannot hold [CLS] and [SEP] (it must be at least 2)")]
    ContextTooShort(usize),
}

/// A text as the text tower takes it: `[CLS] tokens [SEP] [PAD] [PAD] …`, exactly
/// [`WordPieceContext::len`] ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordPieceContext {
    ids: Vec<u32>,
    sequence_len: usize,
    truncated: bool,
}

impl WordPieceContext {
    /// The ids, `[CLS]` and `[SEP]` included, padded to the context length.
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

    /// Always false: a sequence holds at least `[CLS]` and `[SEP]`.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The number of positions before the padding, `[CLS]` to `[SEP]`: the positions the
    /// attention mask keeps (Hugging Face's `attention_mask` is 1 exactly there, even where the
    /// text itself contained `[PAD]`).
    pub fn sequence_len(&self) -> usize {
        self.sequence_len
    }

    /// Whether the text had more tokens than fit and was cut (keeping `[SEP]` last).
    pub fn was_truncated(&self) -> bool {
        self.truncated
    }
}

/// An uncased BERT WordPiece tokenizer over one vocabulary.
///
/// It holds no cache and no global state: encoding takes `&self` and is free of side effects, so
/// one tokenizer serves any number of threads.
pub struct WordPieceTokenizer {
    /// The vocabulary's lines, trimmed, numbered from 0 (a token listed twice has the id of
    /// its last line).
    vocab: Vocabulary,
    pad: u32,
    unk: u32,
    cls: u32,
    sep: u32,
    mask: Option<u32>,
    /// The special tokens of [`SPECIAL_TOKENS`] present in the vocabulary, with their ids.
    specials: Vec<(&'static str, u32)>,
}

impl std::fmt::Debug for WordPieceTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordPieceTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pad", &self.pad)
            .field("unk", &self.unk)
            .field("cls", &self.cls)
            .field("sep", &self.sep)
            .field("mask", &self.mask)
            .finish_non_exhaustive()
    }
}

impl WordPieceTokenizer {
    /// Loads a `vocab.txt` (one token per line; errors name the file).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, WordPieceError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| WordPieceError::Read {
            path: path.to_owned(),
            source: Arc::new(source),
        })?;
        Self::from_vocab_text(&text, path)
    }

    /// Loads a vocabulary from a reader; `name` stands for it in errors.
    pub fn from_reader(
        mut reader: impl Read,
        name: impl AsRef<Path>,
    ) -> Result<Self, WordPieceError> {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|source| WordPieceError::Read {
                path: name.as_ref().to_owned(),
                source: Arc::new(source),
            })?;
        Self::from_vocab_text(&text, name)
    }

    /// Loads a vocabulary from the text of a `vocab.txt`; `name` stands for it in errors.
    ///
    /// The lines are read as `tokenizers` reads them (what transformers' `BertTokenizer` uses):
    /// split at `\n`, a `\r` before it dropped, trailing whitespace trimmed; a `\r` elsewhere
    /// belongs to the token. Line `i` (from 0) is id `i`; a token listed twice maps to its last
    /// line, while [`WordPieceTokenizer::id_to_token`] still gives every line's token.
    ///
    /// ```
    /// use fedotp_host::clip::wordpiece::{WordPieceError, WordPieceTokenizer};
    ///
    /// let tokenizer = WordPieceTokenizer::from_vocab_text("[CLS]\r\n[SEP]\n[PAD]\n[UNK]  \n", "v")?;
    /// assert_eq!(tokenizer.unk(), 3);
    ///
    /// let error = WordPieceTokenizer::from_vocab_text("[CLS]\n[UNK]\n", "v.txt").unwrap_err();
    /// assert_eq!(error.to_string(), "the WordPiece vocabulary v.txt lacks the special tokens [SEP], [PAD]");
    /// # Ok::<(), WordPieceError>(())
    /// ```
    pub fn from_vocab_text(text: &str, name: impl AsRef<Path>) -> Result<Self, WordPieceError> {
        let path = name.as_ref();
        // `str::lines` splits as Rust's `BufRead::lines`, which `tokenizers` uses: at `\n`, with
        // an optional `\r` before it, and no empty last line after a final newline.
        let tokens: Vec<String> = text
            .lines()
            .map(|line| line.trim_end().to_owned())
            .collect();
        if tokens.is_empty() {
            return Err(WordPieceError::Empty {
                path: path.to_owned(),
            });
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(WordPieceError::TooLarge {
                path: path.to_owned(),
                lines: tokens.len(),
            });
        }
        let vocab = Vocabulary::new(tokens);
        let id_of = |token: &str| vocab.id(token);
        let required = [CLS_TOKEN, SEP_TOKEN, PAD_TOKEN, UNK_TOKEN];
        let missing: Vec<&'static str> = required
            .into_iter()
            .filter(|token| id_of(token).is_none())
            .collect();
        let (Some(cls), Some(sep), Some(pad), Some(unk)) = (
            id_of(CLS_TOKEN),
            id_of(SEP_TOKEN),
            id_of(PAD_TOKEN),
            id_of(UNK_TOKEN),
        ) else {
            return Err(WordPieceError::MissingSpecialTokens {
                path: path.to_owned(),
                missing,
            });
        };
        let specials = SPECIAL_TOKENS
            .into_iter()
            .filter_map(|token| Some((token, id_of(token)?)))
            .collect();
        let mask = id_of(MASK_TOKEN);

        Ok(WordPieceTokenizer {
            vocab,
            pad,
            unk,
            cls,
            sep,
            mask,
            specials,
        })
    }

    /// The number of ids: the vocabulary's lines (a token listed twice counts each time).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The id of `[PAD]`, which fills a sequence after `[SEP]`.
    pub fn pad(&self) -> u32 {
        self.pad
    }

    /// The id of `[UNK]`, which stands for a word the vocabulary cannot spell.
    pub fn unk(&self) -> u32 {
        self.unk
    }

    /// The id of `[CLS]`, first in every sequence.
    pub fn cls(&self) -> u32 {
        self.cls
    }

    /// The id of `[SEP]`, last in every sequence before the padding.
    pub fn sep(&self) -> u32 {
        self.sep
    }

    /// The id of `[MASK]`, if the vocabulary has it.
    pub fn mask(&self) -> Option<u32> {
        self.mask
    }

    /// The id of a vocabulary entry (continuations written with their `##`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }

    /// The vocabulary entry of an id: its line, trimmed.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.token(id)
    }

    /// Encodes a text into token ids, without `[CLS]`, `[SEP]` or truncation: transformers'
    /// `BertTokenizer(text, add_special_tokens=False)` (no open_clip clean-up; see
    /// [`WordPieceTokenizer::tokenize`] for that).
    ///
    /// ```
    /// use fedotp_host::clip::wordpiece::WordPieceTokenizer;
    ///
    /// let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nab\n##c\n-\n中\n";
    /// let tokenizer = WordPieceTokenizer::from_vocab_text(vocab, "vocab.txt")?;
    /// assert_eq!(tokenizer.encode("ABC-中ab"), [4, 5, 6, 7, 4]);
    /// assert_eq!(tokenizer.encode("[CLS] abd [cls]"), [2, 1, 1, 1, 1]);
    /// assert_eq!(tokenizer.encode(" \t"), Vec::<u32>::new());
    /// # Ok::<(), fedotp_host::clip::wordpiece::WordPieceError>(())
    /// ```
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        while let Some((before, special, after)) = self.next_special(rest) {
            self.encode_plain(before, &mut ids);
            ids.push(special);
            rest = after;
        }
        self.encode_plain(rest, &mut ids);
        ids
    }

    /// The first special token written out in `text`: the text before it, its id, the text
    /// after it.
    fn next_special<'t>(&self, text: &'t str) -> Option<(&'t str, u32, &'t str)> {
        // Every special token starts with '[', so only those positions need a look.
        for (start, _) in text.match_indices('[') {
            let tail = &text[start..];
            if let Some(&(token, id)) = self.specials.iter().find(|(t, _)| tail.starts_with(t)) {
                return Some((&text[..start], id, &tail[token.len()..]));
            }
        }
        None
    }

    /// Steps 2 to 7 of the module docs on text with no special token in it.
    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let normalized = normalize(text);
        for chunk in normalized.split(char::is_whitespace) {
            let mut start = 0;
            for (offset, c) in chunk.char_indices() {
                if is_punctuation(c) {
                    let end = offset + c.len_utf8();
                    self.extend_with_word(&chunk[start..offset], ids);
                    self.extend_with_word(&chunk[offset..end], ids);
                    start = end;
                }
            }
            self.extend_with_word(&chunk[start..], ids);
        }
    }

    /// Appends the WordPiece ids of one word: greedy longest match from the left, continuations
    /// looked up with `##`; one `[UNK]` for the whole word if some part cannot be matched or the
    /// word has more than [`MAX_WORD_CHARS`] characters. An empty word adds nothing.
    ///
    /// The longest match is found by trying ever shorter prefixes, O(n²) in the word's length as
    /// in the reference; words are short and capped at 100 characters.
    fn extend_with_word(&self, word: &str, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.chars().count() > MAX_WORD_CHARS {
            ids.push(self.unk);
            return;
        }
        let first_piece = ids.len();
        let mut candidate = String::with_capacity(word.len() + CONTINUATION_PREFIX.len());
        let mut start = 0;
        while start < word.len() {
            let rest = &word[start..];
            // Prefixes of `rest`, longest first, ending at character boundaries.
            let ends = rest
                .char_indices()
                .map(|(offset, c)| offset + c.len_utf8())
                .rev();
            let mut matched = None;
            for end in ends {
                candidate.clear();
                if start > 0 {
                    candidate.push_str(CONTINUATION_PREFIX);
                }
                candidate.push_str(&rest[..end]);
                if let Some(id) = self.vocab.id(candidate.as_str()) {
                    matched = Some((id, end));
                    break;
                }
            }
            let Some((id, end)) = matched else {
                // The pieces found so far are dropped: the whole word is unknown.
                ids.truncate(first_piece);
                ids.push(self.unk);
                return;
            };
            ids.push(id);
            start += end;
        }
    }

    /// The ids [`WordPieceTokenizer::tokenize`] puts between `[CLS]` and `[SEP]`: open_clip's
    /// clean-up of `text`, then [`WordPieceTokenizer::encode`] — how a prompt's words become
    /// tokens.
    ///
    /// ```
    /// use fedotp_host::clip::wordpiece::WordPieceTokenizer;
    ///
    /// let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\ncat\n&\n";
    /// let tokenizer = WordPieceTokenizer::from_vocab_text(vocab, "vocab.txt")?;
    /// assert_eq!(tokenizer.encode_text("Cat &amp;  cat"), [4, 5, 4]);
    /// # Ok::<(), fedotp_host::clip::wordpiece::WordPieceError>(())
    /// ```
    pub fn encode_text(&self, text: &str) -> Vec<u32> {
        self.encode(&clean_keeping_case(text))
    }

    /// The sequence the text tower takes for `text`, as open_clip's `HFTokenizer` builds it for
    /// BiomedCLIP: open_clip's clean-up (ftfy-style fixes, HTML entities decoded twice,
    /// whitespace collapsed; see [`crate::clip::tokenizer::clean_text`] for what of ftfy is
    /// reproduced), then `[CLS] tokens [SEP]` padded with `[PAD]` to `context_length` ids. A
    /// text too long keeps its first `context_length - 2` tokens, with `[SEP]` last (Hugging
    /// Face's `truncation=True`).
    ///
    /// ```
    /// use fedotp_host::clip::wordpiece::WordPieceTokenizer;
    ///
    /// let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\ncat\n&\n";
    /// let tokenizer = WordPieceTokenizer::from_vocab_text(vocab, "vocab.txt")?;
    /// assert_eq!(tokenizer.tokenize("cat &amp; cat", 6)?.ids(), [2, 4, 5, 4, 3, 0]);
    ///
    /// let long = tokenizer.tokenize(&"cat ".repeat(10), 4)?;
    /// assert_eq!(long.ids(), [2, 4, 4, 3]);
    /// assert!(long.was_truncated());
    /// assert!(tokenizer.tokenize("cat", 1).is_err());
    /// # Ok::<(), fedotp_host::clip::wordpiece::WordPieceError>(())
    /// ```
    pub fn tokenize(
        &self,
        text: &str,
        context_length: usize,
    ) -> Result<WordPieceContext, WordPieceError> {
        if context_length < 2 {
            return Err(WordPieceError::ContextTooShort(context_length));
        }
        let tokens = self.encode_text(text);
        let kept = tokens.len().min(context_length - 2);
        let mut ids = Vec::with_capacity(context_length);
        ids.push(self.cls);
        ids.extend_from_slice(&tokens[..kept]);
        ids.push(self.sep);
        let sequence_len = ids.len();
        ids.resize(context_length, self.pad);
        Ok(WordPieceContext {
            ids,
            sequence_len,
            truncated: kept < tokens.len(),
        })
    }
}

/// Steps 2 to 5 of the module docs: clean-up, spaces around CJK ideographs, accents stripped,
/// lower-cased. In the reference's order (its normalizer strips accents before lower-casing).
fn normalize(text: &str) -> String {
    let mut spaced = String::with_capacity(text.len());
    for c in text.chars().filter(|&c| !is_dropped(c)) {
        if c.is_whitespace() {
            // Tab, line feed and carriage return are whitespace here, not controls.
            spaced.push(' ');
        } else if is_cjk_ideograph(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    strip_accents(&spaced)
        .chars()
        .flat_map(char::to_lowercase)
        .collect()
}

/// Canonical decomposition (NFD) with the non-spacing marks dropped, except that the characters
/// of [`UNSTRIPPED_BY_REFERENCE`] stay as they are and, like any character the reference's
/// tables do not know, act as starters: the text between them is decomposed on its own.
fn strip_accents(text: &str) -> String {
    fn push_stripped(segment: &str, out: &mut String) {
        out.extend(segment.nfd().filter(|&c| {
            !has_class(&NON_SPACING_MARK, c) && !in_ranges(c, NON_SPACING_IN_REFERENCE_ONLY)
        }));
    }
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    for (offset, c) in text.char_indices() {
        if in_ranges(c, UNSTRIPPED_BY_REFERENCE) {
            push_stripped(&text[start..offset], &mut out);
            out.push(c);
            start = offset + c.len_utf8();
        }
    }
    push_stripped(&text[start..], &mut out);
    out
}

/// Whether the clean-up drops `c`: NUL, U+FFFD, and the control, format and private-use
/// characters other than tab, line feed and carriage return (which are whitespace), as the
/// reference's tables have them.
fn is_dropped(c: char) -> bool {
    match c {
        '\t' | '\n' | '\r' => false,
        '\0' | '\u{FFFD}' => true,
        _ => has_class(&CONTROL, c) && !in_ranges(c, KEPT_BY_REFERENCE),
    }
}

/// Whether `c` is punctuation by BERT's definition: the ASCII symbols that are neither letters,
/// digits nor whitespace, or Unicode punctuation as the reference's tables have it.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || (has_class(&UNICODE_PUNCTUATION, c) && !in_ranges(c, NOT_PUNCTUATION_IN_REFERENCE))
        || in_ranges(c, PUNCTUATION_IN_REFERENCE_ONLY)
}

/// Whether the one-character string `c` matches `class`.
fn has_class(class: &Regex, c: char) -> bool {
    let mut buffer = [0; 4];
    class.is_match(c.encode_utf8(&mut buffer))
}

/// Whether `c` lies in one of the sorted, disjoint inclusive `ranges`.
fn in_ranges(c: char, ranges: &[(u32, u32)]) -> bool {
    let code = u32::from(c);
    ranges
        .binary_search_by(|&(first, last)| {
            if last < code {
                std::cmp::Ordering::Less
            } else if first > code {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// BERT's CJK ideograph ranges as the `tokenizers` library writes them (its fifth range starts
/// at U+2B920 where BERT's starts at U+2B820).
fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL_VOCAB: &str =
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\n##aff\n##able\naff\n,\n猫\ncafe\nσασ\n";

    fn small() -> WordPieceTokenizer {
        WordPieceTokenizer::from_vocab_text(SMALL_VOCAB, "small").expect("valid vocabulary")
    }

    #[test]
    fn greedy_longest_match_with_continuations() {
        let t = small();
        assert_eq!(t.encode("unaffable"), [5, 6, 7]);
        assert_eq!(t.encode("affable"), [8, 7]);
        // "unaffablex": no piece matches "x", so the whole word is one [UNK].
        assert_eq!(t.encode("unaffablex un"), [1, 5]);
    }

    #[test]
    fn normalization_steps() {
        assert_eq!(normalize("a\u{0}b\u{FFFD}c\u{200B}d\u{7}e"), "abcde");
        assert_eq!(normalize("a\tb\nc\u{a0}d\u{3000}e"), "a b c d e");
        assert_eq!(normalize("Café ÅNGSTRÖM e\u{301}"), "cafe angstrom e");
        assert_eq!(normalize("ΣΑΣ"), "σασ");
        assert_eq!(normalize("ab猫cd"), "ab 猫 cd");
        assert_eq!(normalize("x\u{2B820}y"), "x\u{2B820}y");
        assert_eq!(normalize("\u{E000}\u{378}"), "\u{378}");
        // Classes the reference's older tables do not have yet.
        assert_eq!(normalize("a\u{890}b \u{1AC0}x"), "a\u{890}b \u{1AC0}x");
        assert!(!is_punctuation('\u{2E4F}') && is_punctuation('\u{2E42}'));
        assert!(is_punctuation('\u{166D}'));
    }

    /// The character classes on every code point against the reference's, recorded from the
    /// `tokenizers` library by `tests/scripts/wordpiece_reference.py`: dropped characters and
    /// punctuation as runs, accent stripping as a digest of every character it changes.
    #[test]
    fn character_classes_match_the_reference_on_every_code_point() {
        use sha2::{Digest, Sha256};

        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/wordpiece/unicode_classes.json"
        ))
        .expect("the fixture is valid JSON");
        let runs = |key: &str| -> Vec<(u32, u32)> {
            let code = |value: &serde_json::Value| {
                value
                    .as_u64()
                    .and_then(|code| u32::try_from(code).ok())
                    .expect("code points are u32")
            };
            fixture[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is an array"))
                .iter()
                .map(|run| (code(&run[0]), code(&run[1])))
                .collect()
        };
        let (dropped, punctuation) = (runs("dropped"), runs("punctuation"));

        let mut wrong_dropped = Vec::new();
        let mut wrong_punctuation = Vec::new();
        let mut digest = Sha256::new();
        let mut changed = 0u64;
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if is_dropped(c) != in_ranges(c, &dropped) {
                wrong_dropped.push(c);
            } else if !is_dropped(c)
                && !c.is_whitespace()
                && is_punctuation(c) != in_ranges(c, &punctuation)
            {
                wrong_punctuation.push(c);
            }
            let text = c.to_string();
            let stripped = strip_accents(&text);
            if stripped != text {
                digest.update(format!("{:X}:{stripped}\n", u32::from(c)).as_bytes());
                changed += 1;
            }
        }
        assert!(wrong_dropped.is_empty(), "dropped: {wrong_dropped:X?}");
        assert!(
            wrong_punctuation.is_empty(),
            "punctuation: {wrong_punctuation:X?}"
        );
        assert_eq!(Some(changed), fixture["stripped_count"].as_u64());
        let hex: String = digest
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(Some(hex.as_str()), fixture["stripped_sha256"].as_str());
    }

    #[test]
    fn punctuation_is_split_off_one_character_at_a_time() {
        let t = small();
        assert_eq!(t.encode("un,,aff"), [5, 9, 9, 8]);
        assert_eq!(t.encode("$"), [1]);
        assert_eq!(t.encode("猫猫 CAFÉ, ΣΑΣ"), [10, 10, 11, 9, 12]);
    }

    #[test]
    fn long_words_are_unknown() {
        let t = WordPieceTokenizer::from_vocab_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n##a\n", "v")
            .expect("valid vocabulary");
        assert_eq!(
            t.encode(&"a".repeat(100)),
            vec![4; 1]
                .into_iter()
                .chain(vec![5; 99])
                .collect::<Vec<_>>()
        );
        assert_eq!(t.encode(&"a".repeat(101)), [1]);
    }

    #[test]
    fn special_tokens_in_text() {
        let t = small();
        assert_eq!(t.encode("un[MASK]aff[SEP]"), [5, 4, 8, 3]);
        assert_eq!(t.encode("[[CLS]"), [1, 2]);
        assert_eq!(t.mask(), Some(4));
    }

    #[test]
    fn vocabulary_lines() {
        let t = WordPieceTokenizer::from_vocab_text(
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\nab \r\n\nab\n##c\rd\n",
            "v",
        )
        .expect("valid vocabulary");
        assert_eq!(t.vocab_size(), 8);
        assert_eq!(t.token_to_id("ab"), Some(6));
        assert_eq!(t.id_to_token(4), Some("ab"));
        assert_eq!(t.token_to_id(""), Some(5));
        assert_eq!(t.token_to_id("##c\rd"), Some(7));
        assert_eq!(t.mask(), None);
    }

    #[test]
    fn loading_errors_name_the_source() {
        let empty = WordPieceTokenizer::from_vocab_text("", "empty.txt").unwrap_err();
        assert_eq!(
            empty.to_string(),
            "the WordPiece vocabulary empty.txt is empty"
        );
        let missing =
            WordPieceTokenizer::from_vocab_text("[PAD]\n[CLS]\n[SEP]\n", "v.txt").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the WordPiece vocabulary v.txt lacks the special token [UNK]"
        );
        let not_utf8 = WordPieceTokenizer::from_reader(&b"[PAD]\n\xff\n"[..], "bytes").unwrap_err();
        assert!(
            matches!(not_utf8, WordPieceError::Read { .. }),
            "{not_utf8}"
        );
        assert!(not_utf8.to_string().contains("bytes"), "{not_utf8}");
    }

    #[test]
    fn context_padding_and_truncation() {
        let t = small();
        let context = t.tokenize("  un\u{a0}aff  ", 5).expect("long enough");
        assert_eq!(context.ids(), [2, 5, 8, 3, 0]);
        assert_eq!(context.sequence_len(), 4);
        assert!(!context.was_truncated());
        let cut = t.tokenize("un aff un", 4).expect("long enough");
        assert_eq!(cut.ids(), [2, 5, 8, 3]);
        assert!(cut.was_truncated());
        assert_eq!(t.tokenize("", 2).expect("long enough").ids(), [2, 3]);
        assert!(matches!(
            t.tokenize("x", 1),
            Err(WordPieceError::ContextTooShort(1))
        ));
    }
}
