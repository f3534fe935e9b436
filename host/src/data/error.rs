//! The error type of the data module: every failure names what it is about (a file and, for
//! binary records, the byte offset; a partition request and the rule it breaks).

use std::path::{Path, PathBuf};

/// A failure while reading a dataset, decoding or transforming an image, or partitioning.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        error: std::io::Error,
    },
    /// An image file is corrupt, truncated or in a format other than JPEG or PNG.
    #[error("cannot decode image {}: {source}", path.display())]
    Image {
        /// The image file (or the name given to in-memory bytes).
        path: PathBuf,
        /// The decoder's error, or why the image was not given to it.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A fixed-size binary record (CIFAR) is truncated or holds an impossible value.
    #[error("{}: corrupt record at byte offset {offset}: {reason}", path.display())]
    Record {
        /// The binary file.
        path: PathBuf,
        /// Offset of the record's first byte in the file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A text or JSON file (class names, split lists, a saved partition), or a directory tree,
    /// does not have the expected layout or content.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A partition that cannot be made (more clients than samples, k > classes, beta <= 0, ...).
    #[error("impossible partition: {0}")]
    Partition(String),
    /// Invalid transform parameters or a request outside the dataset (bad index, bad size).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// `Result` with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    pub(crate) fn format(path: &Path, reason: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
