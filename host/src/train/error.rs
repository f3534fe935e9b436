//! Why training or evaluation stopped.

use std::path::PathBuf;

use fedotp_core::ot::OtError;
use fedotp_core::protocol::AggregateError;

use crate::backend::BackendError;
use crate::clip::ClipError;
use crate::data::DataError;
use crate::fed::{MetricsError, SgdLengthError};
use crate::memory::MemoryError;
use crate::run::RunError;

/// Why a training run, a local round or an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model could not be loaded or run.
    #[error(transparent)]
    Clip(#[from] ClipError),
    /// The run needs more memory than the machine has.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The compute backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An image or the dataset could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The run directory could not be read or written.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The feature cache's file could not be written or mapped.
    #[error("feature cache {}: {source}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The server refused a client's update or could not average (a bug, since the simulation
    /// builds the updates).
    #[error("round {round}: the server's aggregation failed{}: {source}", client.map(|c| format!(" on client {c}'s update")).unwrap_or_default())]
    Aggregate {
        /// The round.
        round: u32,
        /// The client whose update was refused (`None`: the server's setup or the average
        /// itself failed).
        client: Option<usize>,
        /// The aggregator's reason.
        source: AggregateError,
    },
    /// The weights are not the architecture the configuration names.
    #[error("{path}: the configuration names backbone {expected}, but the weights are {found}")]
    Backbone {
        /// The weights.
        path: PathBuf,
        /// The backbone configured.
        expected: String,
        /// What the weights hold.
        found: String,
    },
    /// The OT head's parameters are out of range.
    #[error("OT parameters: {0}")]
    OtParams(#[source] OtError),
    /// The optimiser was given a gradient or state of another length than the prompt (a bug).
    #[error("{0}")]
    Optimizer(#[source] SgdLengthError),
    /// The evaluation's predictions and labels do not match (a bug).
    #[error("evaluation: {0}")]
    Evaluation(#[source] MetricsError),
    /// A request that does not fit the model or the data.
    #[error("{0}")]
    Invalid(String),
    /// The caller asked to stop (a cancel flag or progress callback).
    #[error("training cancelled by the caller")]
    Cancelled,
}
