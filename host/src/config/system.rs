//! Where a run writes: the image-feature cache and the output directory. (Where it computes,
//! the `device`, is [`crate::backend::Device`].)

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The cache of frozen image-tower outputs, used where a client's images are not augmented
/// (the CIFAR settings' training images, every evaluation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether to cache at all.
    pub enabled: bool,
    /// Memory the in-memory part may take, in MiB; beyond it, features go to `disk_dir`.
    pub memory_budget_mib: u64,
    /// Directory for memory-mapped feature files (unset: `feature_cache` in the run
    /// directory). Relative paths are relative to the working directory.
    pub disk_dir: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            memory_budget_mib: 4096,
            disk_dir: None,
        }
    }
}

/// Where runs are written and how often they checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Parent directory of run directories (a run goes to `<dir>/<name>`, or `<dir>/<name>-2`,
    /// ... if that exists).
    pub dir: PathBuf,
    /// Save a checkpoint every this many rounds (and after the last).
    pub checkpoint_interval: u32,
    /// Number of most recent checkpoints kept (older ones are deleted).
    pub keep_checkpoints: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::from("runs"),
            checkpoint_interval: 1,
            keep_checkpoints: 2,
        }
    }
}

impl OutputConfig {
    /// Whether a checkpoint is saved after `round` of a run of `rounds` rounds.
    pub fn checkpoints(&self, round: u32, rounds: u32) -> bool {
        round + 1 == rounds || (round + 1).is_multiple_of(self.checkpoint_interval.max(1))
    }
}

/// Validation of the system sections, called by [`super::RunConfig::validate`].
pub(super) fn validate(output: &OutputConfig) -> Result<(), ConfigError> {
    if output.dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("output.dir", "must not be empty"));
    }
    if output.checkpoint_interval == 0 {
        return Err(ConfigError::invalid(
            "output.checkpoint_interval",
            "must be positive",
        ));
    }
    if output.keep_checkpoints == 0 {
        return Err(ConfigError::invalid(
            "output.keep_checkpoints",
            "must be at least 1 (the latest checkpoint is what --resume reads)",
        ));
    }
    Ok(())
}
