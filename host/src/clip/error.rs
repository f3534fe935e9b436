//! The error type of the CLIP module.

use std::path::PathBuf;

use super::tokenizer::TokenizerError;
use super::wordpiece::WordPieceError;
use crate::backend::BackendError;
use crate::memory::MemoryError;

/// Everything that can go wrong loading CLIP or running its towers.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The model needs more memory than the machine has.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A file could not be opened, mapped or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A safetensors file is truncated or its header is corrupt.
    #[error("{path}: not a valid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser found wrong.
        source: safetensors::SafeTensorError,
    },
    /// No weights file was found where one was expected.
    #[error("{path}: no CLIP weights found (looked for {looked_for})")]
    NoWeights {
        /// The directory searched.
        path: PathBuf,
        /// The file names tried.
        looked_for: String,
    },
    /// A configuration file is malformed or describes something unsupported.
    #[error("{path}: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The tensor names match neither the Hugging Face nor the OpenAI / open_clip layout.
    #[error("{path}: unrecognised CLIP layout: expected `text_model.*` (Hugging Face) or `token_embedding.weight` (OpenAI / open_clip) tensors")]
    UnknownLayout {
        /// The weights file.
        path: PathBuf,
    },
    /// The architecture is recognised but not implemented.
    #[error("{path}: {what}")]
    Unsupported {
        /// The weights or configuration file.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },
    /// A tensor the model needs is absent.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A tensor the model does not use is present (a different architecture or layout).
    #[error("{path}: unexpected tensor `{name}` (shape {shape:?}) for this architecture")]
    UnexpectedTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a type other than f32, f16 or bf16.
    #[error("{path}: tensor `{name}` has dtype {dtype}, expected F32, F16 or BF16")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A model configuration is inconsistent (e.g. a width not divisible by the head count).
    #[error("invalid CLIP configuration: {0}")]
    InvalidConfig(String),
    /// An input to a tower is malformed (lengths, positions, token ids).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A backend operation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// CLIP's BPE tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A model's WordPiece vocabulary could not be read.
    #[error(transparent)]
    WordPiece(#[from] WordPieceError),
}
