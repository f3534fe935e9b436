//! The error type of run directories: every failure names the file, and for checkpoints the
//! tensor or metadata key.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::data::DataError;

/// A run directory, checkpoint or metrics file that cannot be written, read or accepted.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file or directory could not be created, written or read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        error: std::io::Error,
    },
    /// A file does not hold what it should (not a checkpoint, a malformed metrics line, a
    /// directory that is not a run).
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint tensor is missing, unexpected, or of the wrong type or shape.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint tensor holds a NaN or infinite value: a state to continue from is finite.
    #[error("{}: tensor `{tensor}` holds {value} at index {index}", path.display())]
    NonFinite {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The first value that is not finite.
        value: f32,
        /// Its index in the tensor's values.
        index: usize,
    },
    /// A checkpoint belongs to another configuration than the run's.
    #[error("{}: written for configuration {found}, but the run's configuration hashes to {expected}", path.display())]
    ConfigMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// SHA-256 of the run's `config.toml`.
        expected: String,
        /// SHA-256 the checkpoint records.
        found: String,
    },
    /// The run's `config.toml` is not a valid configuration.
    #[error("{}: {error}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        error: ConfigError,
    },
    /// A resumed run's data no longer partitions as it did when the run started.
    #[error("{}: partitioning the dataset again gives another partition than the run started with: the data on disk or its reader changed, so the run cannot continue", path.display())]
    PartitionChanged {
        /// The saved partition.
        path: PathBuf,
    },
    /// Another process is training the run in this directory.
    #[error("{}: the run directory is in use by {holder} (one process trains a run at a time; wait for it to end or stop it)", path.display())]
    Busy {
        /// The run directory.
        path: PathBuf,
        /// Who holds it, as its lock file says (e.g. "process 1234").
        holder: String,
    },
    /// The run directory's files disagree (a checkpoint with another round than its name, a
    /// checkpoint beyond the recorded metrics, missing or repeated rounds in the metrics).
    #[error("{}: {reason}; the run directory is inconsistent, so it cannot be resumed", path.display())]
    Inconsistent {
        /// The file at fault.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The dataset could not be read or partitioned, or the partition saved or read.
    #[error("dataset: {0}")]
    Data(#[from] DataError),
}

impl RunError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        RunError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    pub(crate) fn format(path: &Path, reason: impl Into<String>) -> Self {
        RunError::Format {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor(path: &Path, tensor: &str, reason: impl Into<String>) -> Self {
        RunError::Tensor {
            path: path.to_path_buf(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }
}
