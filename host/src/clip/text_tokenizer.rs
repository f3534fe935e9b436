//! The tokenizer of a model's text tower: CLIP's byte-level BPE, or the WordPiece vocabulary of a
//! BERT tower (BiomedCLIP's), read from the model's directory.

use std::path::Path;
use std::sync::Arc;

use super::load::resolve_weights;
use super::tokenizer::Tokenizer;
use super::wordpiece::WordPieceTokenizer;
use super::{ClipConfig, ClipError, SpecialTokens, TextTowerConfig};

/// The file name of a BERT tower's vocabulary next to its weights.
pub const VOCAB_FILE_NAME: &str = "vocab.txt";

/// What turns a model's texts (class names, prompt words) into its token ids.
#[derive(Debug, Clone)]
pub enum TextTokenizer {
    /// CLIP's byte-level BPE (one table for every CLIP; built once per process).
    Bpe(&'static Tokenizer),
    /// A BERT vocabulary (shared by the clones of one model's tokenizer).
    WordPiece(Arc<WordPieceTokenizer>),
}

impl TextTokenizer {
    /// CLIP's tokenizer.
    pub fn clip() -> Result<Self, ClipError> {
        Ok(TextTokenizer::Bpe(Tokenizer::openai()?))
    }

    /// The tokenizer of the model whose weights are at `path` (a directory, or a weights file)
    /// and whose architecture is `config`: CLIP's BPE for a CLIP text tower, the WordPiece
    /// vocabulary `vocab.txt` beside the weights for a BERT one.
    pub fn for_model(path: &Path, config: &ClipConfig) -> Result<Self, ClipError> {
        match config.text {
            TextTowerConfig::Bert(_) => {
                // Beside the weights file `ClipWeights::load` reads.
                let weights = resolve_weights(path)?;
                let dir = weights.parent().unwrap_or(Path::new("."));
                let vocab = WordPieceTokenizer::from_file(dir.join(VOCAB_FILE_NAME))?;
                Ok(TextTokenizer::WordPiece(Arc::new(vocab)))
            }
            TextTowerConfig::Clip(_) => Self::clip(),
        }
    }

    /// The ids of `text`'s tokens, without start or end tokens, as the model's own tokenizer
    /// would place them between those (CLIP's clean-up and lower-casing; for WordPiece,
    /// open_clip's clean-up, then BERT's normalisation).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            TextTokenizer::Bpe(bpe) => bpe.encode(text),
            TextTokenizer::WordPiece(wordpiece) => wordpiece.encode_text(text),
        }
    }

    /// The ids a text starts and ends with: CLIP's start and end of text, or BERT's `[CLS]` and
    /// `[SEP]`.
    pub fn special_tokens(&self) -> SpecialTokens {
        match self {
            TextTokenizer::Bpe(bpe) => SpecialTokens {
                start: bpe.start_of_text(),
                end: bpe.end_of_text(),
            },
            TextTokenizer::WordPiece(wordpiece) => SpecialTokens {
                start: wordpiece.cls(),
                end: wordpiece.sep(),
            },
        }
    }
}
