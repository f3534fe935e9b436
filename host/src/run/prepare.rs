//! Setting up a training run: a new run directory from a configuration, or an existing one to
//! resume, with the data read and partitioned.

use std::path::Path;

use super::{Checkpoint, RunDir, RunError};
use crate::config::{FederatedData, RunConfig};

/// A run ready to train: its configuration, directory and data, and the checkpoint it continues
/// from (`None` for a new run, or one resumed before its first checkpoint).
#[derive(Clone, Debug)]
pub struct PreparedRun {
    /// The resolved configuration, as saved in the run directory.
    pub config: RunConfig,
    /// The run directory.
    pub dir: RunDir,
    /// The dataset and its partition among clients.
    pub data: FederatedData,
    /// Where to continue from.
    pub checkpoint: Option<Checkpoint>,
}

/// Starts a new run: reads and partitions the data (so a bad dataset fails before anything is
/// written), creates the run directory under `config.output.dir`, and saves the configuration,
/// the partition and its count table.
pub fn start_run(config: RunConfig) -> Result<PreparedRun, RunError> {
    let data = config
        .dataset
        .load(config.model.image_size(), config.federation.seed)?;
    let dir = RunDir::create(&config.output.dir, &config.name)?;
    dir.write_config(&config)?;
    dir.write_partition(&data.partition, &data.dataset)?;
    Ok(PreparedRun {
        config,
        dir,
        data,
        checkpoint: None,
    })
}

/// Reopens the run in `path` for `--resume`: its configuration and latest checkpoint (checked
/// to belong together), the metrics files cut back to that checkpoint, and the data partitioned
/// again — which must give the partition saved with the run, or the data changed on disk.
pub fn resume_run(path: &Path) -> Result<PreparedRun, RunError> {
    let resumed = RunDir::resume(path)?;
    let config = resumed.config;
    let data = config
        .dataset
        .load(config.model.image_size(), config.federation.seed)?;
    let saved = resumed.dir.read_partition()?;
    if saved != data.partition {
        return Err(RunError::PartitionChanged {
            path: resumed.dir.partition_path(),
        });
    }
    Ok(PreparedRun {
        config,
        dir: resumed.dir,
        data,
        checkpoint: resumed.checkpoint,
    })
}
