//! Setting up a training run: a new run directory from a configuration, or an existing one to
//! resume, with the data read and partitioned.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Checkpoint, RunDir, RunError, RunLock};
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
    /// The run directory's lock, held while the run trains (`None` for a run opened to read).
    pub lock: Option<Arc<RunLock>>,
}

impl PreparedRun {
    /// Removes the run directory if it records nothing yet — no round in `metrics.jsonl`, no
    /// checkpoint — so that a run failing before its first round (a model, device or data that
    /// cannot be used) leaves no orphan directory behind; returns whether it did. A directory
    /// with any recorded round is kept, whatever happened.
    pub fn remove_if_nothing_recorded(&self) -> Result<bool, RunError> {
        let jsonl = self.dir.metrics_jsonl_path();
        let recorded = jsonl.exists() && !self.dir.read_metrics()?.is_empty();
        if recorded || !self.dir.checkpoint_rounds()?.is_empty() {
            return Ok(false);
        }
        let path = self.dir.path();
        std::fs::remove_dir_all(path).map_err(|e| RunError::io(path, e))?;
        Ok(true)
    }

    /// The checkpoint to continue from, with its file's path.
    pub fn checkpoint_to_resume(&self) -> Option<(&Checkpoint, PathBuf)> {
        self.checkpoint
            .as_ref()
            .map(|c| (c, self.dir.checkpoint_path(c.round)))
    }
}

/// Starts a new run: reads and partitions the data (so a bad dataset fails before anything is
/// written), creates the run directory under `config.output.dir`, and saves the configuration,
/// the partition and its count table.
pub fn start_run(config: RunConfig) -> Result<PreparedRun, RunError> {
    let data = config
        .dataset
        .load(config.model.image_size(), config.federation.seed)?;
    let dir = RunDir::create(&config.output.dir, &config.name)?;
    let lock = dir.lock()?;
    dir.write_config(&config)?;
    dir.write_partition(&data.partition, &data.dataset)?;
    Ok(PreparedRun {
        config,
        dir,
        data,
        checkpoint: None,
        lock: Some(Arc::new(lock)),
    })
}

/// Reopens the run in `path` for `--resume`: takes its lock (refused while another process
/// trains it), [`open_run`], then the metrics files cut back to the checkpoint's round.
pub fn resume_run(path: &Path) -> Result<PreparedRun, RunError> {
    let lock = RunDir::open(path)?.lock()?;
    let mut run = open_run(path)?;
    run.dir
        .truncate_metrics(run.checkpoint.as_ref().map(|c| c.round))?;
    run.lock = Some(Arc::new(lock));
    Ok(run)
}

/// Reads the run in `path` without changing it (for `fedotp eval`): its configuration and
/// latest checkpoint (checked to belong together), and the data partitioned again — which must
/// give the partition saved with the run, or the data changed on disk.
pub fn open_run(path: &Path) -> Result<PreparedRun, RunError> {
    let dir = RunDir::open(path)?;
    let config = dir.read_config()?;
    let checkpoint = dir.latest_checkpoint_of(&config)?;
    let data = config
        .dataset
        .load(config.model.image_size(), config.federation.seed)?;
    let saved = dir.read_partition()?;
    if saved != data.partition {
        return Err(RunError::PartitionChanged {
            path: dir.partition_path(),
        });
    }
    Ok(PreparedRun {
        config,
        dir,
        data,
        checkpoint,
        lock: None,
    })
}
