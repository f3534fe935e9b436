//! Run directories: everything a run writes, and what `--resume` reads back.
//!
//! ```text
//! runs/<name>/
//!   config.toml            the resolved configuration (every default written out)
//!   partition.json         which samples each client holds (the data module's format)
//!   partition.txt          the clients × classes count tables of both splits
//!   metrics.jsonl          per round: one row per client and one of means (see [`metrics`])
//!   metrics.csv            the same rows as CSV
//!   checkpoints/
//!     round-000009.safetensors   the state after round 9 (see [`checkpoint`])
//!   summary.json           at the end: max and last-5 mean ± std of the mean client accuracy
//!   run.lock               held by the process training the run (see [`RunLock`])
//! ```
//!
//! A run directory belongs to one process at a time ([`RunDir::lock`]). `--resume` trusts
//! nothing it reads: the latest checkpoint must carry its file's round, its configuration's hash
//! and a matching checksum, hold finite values, and lie within the rounds `metrics.jsonl`
//! records, each of them once and in order ([`RunDir::latest_checkpoint_of`]).
//!
//! Every file but the two metrics files is written atomically ([`write_atomic`]); the metrics
//! files are appended to and flushed after every round, and cut back to the last checkpoint's
//! round when a run resumes ([`RunDir::resume`]), so a resumed run's files end byte-identical to
//! those of a run that was never interrupted.

mod atomic;
pub mod checkpoint;
mod error;
mod lock;
pub mod metrics;
mod prepare;

use std::fs;
use std::path::{Path, PathBuf};

pub use atomic::write_atomic;
pub use checkpoint::{Checkpoint, CheckpointLayout, ClientState, RngState, Tensor};
pub use error::RunError;
pub use lock::RunLock;
pub use metrics::{
    ClientRound, EvalStats, MetricsRow, MetricsWriter, RoundMetrics, RowScope, RunSummary,
    TrainStats,
};
pub use prepare::{open_run, resume_run, start_run, PreparedRun};

use crate::config::RunConfig;
use crate::data::{Dataset, Partition};

/// File names inside a run directory.
const CONFIG_FILE: &str = "config.toml";
const PARTITION_FILE: &str = "partition.json";
const PARTITION_TABLE_FILE: &str = "partition.txt";
const METRICS_JSONL_FILE: &str = "metrics.jsonl";
const METRICS_CSV_FILE: &str = "metrics.csv";
const SUMMARY_FILE: &str = "summary.json";
const CHECKPOINT_DIR: &str = "checkpoints";
const FEATURE_CACHE_DIR: &str = "feature_cache";
/// Checkpoint file names: `round-` and the round, zero-padded so names sort by round.
const CHECKPOINT_PREFIX: &str = "round-";
const CHECKPOINT_SUFFIX: &str = ".safetensors";
/// Most run directories [`RunDir::create`] numbers for one name.
const MAX_SAME_NAME: u32 = 10_000;

/// A run's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

/// What `--resume` continues from: the run directory, its configuration and its latest
/// checkpoint (`None` if it stopped before its first), with the metrics files cut back to that
/// checkpoint's round.
#[derive(Clone, Debug, PartialEq)]
pub struct Resumed {
    /// The run directory.
    pub dir: RunDir,
    /// The configuration saved in it.
    pub config: RunConfig,
    /// The latest checkpoint, checked to belong to `config`.
    pub checkpoint: Option<Checkpoint>,
}

impl RunDir {
    /// Creates a new run directory `<parent>/<name>`, or `<name>-2`, `<name>-3`, … if that
    /// exists (the parent is created if needed).
    ///
    /// ```
    /// let parent = tempfile::tempdir().unwrap();
    /// let first = fedotp_host::run::RunDir::create(parent.path(), "cifar").unwrap();
    /// let second = fedotp_host::run::RunDir::create(parent.path(), "cifar").unwrap();
    /// assert!(first.path().ends_with("cifar") && second.path().ends_with("cifar-2"));
    /// ```
    pub fn create(parent: &Path, name: &str) -> Result<RunDir, RunError> {
        fs::create_dir_all(parent).map_err(|e| RunError::io(parent, e))?;
        for attempt in 1..=MAX_SAME_NAME {
            let path = match attempt {
                1 => parent.join(name),
                n => parent.join(format!("{name}-{n}")),
            };
            // `create_dir` fails if the path exists, so two runs started at once never share.
            match fs::create_dir(&path) {
                Ok(()) => {
                    let dir = RunDir { path };
                    fs::create_dir(dir.checkpoints_dir())
                        .map_err(|e| RunError::io(&dir.checkpoints_dir(), e))?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(RunError::io(&path, e)),
            }
        }
        Err(RunError::format(
            parent,
            format!("{MAX_SAME_NAME} runs named {name} exist already; choose another name"),
        ))
    }

    /// Opens an existing run directory (one holding `config.toml`).
    pub fn open(path: &Path) -> Result<RunDir, RunError> {
        let dir = RunDir {
            path: path.to_path_buf(),
        };
        if !dir.config_path().is_file() {
            return Err(RunError::format(
                path,
                format!("not a run directory: it has no {CONFIG_FILE}"),
            ));
        }
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// `partition.json`.
    pub fn partition_path(&self) -> PathBuf {
        self.path.join(PARTITION_FILE)
    }

    /// `partition.txt`.
    pub fn partition_table_path(&self) -> PathBuf {
        self.path.join(PARTITION_TABLE_FILE)
    }

    /// `metrics.jsonl`.
    pub fn metrics_jsonl_path(&self) -> PathBuf {
        self.path.join(METRICS_JSONL_FILE)
    }

    /// `metrics.csv`.
    pub fn metrics_csv_path(&self) -> PathBuf {
        self.path.join(METRICS_CSV_FILE)
    }

    /// `summary.json`.
    pub fn summary_path(&self) -> PathBuf {
        self.path.join(SUMMARY_FILE)
    }

    /// `checkpoints/`.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.path.join(CHECKPOINT_DIR)
    }

    /// The checkpoint file of `round`.
    pub fn checkpoint_path(&self, round: u32) -> PathBuf {
        self.checkpoints_dir()
            .join(format!("{CHECKPOINT_PREFIX}{round:06}{CHECKPOINT_SUFFIX}"))
    }

    /// Where the image-feature cache goes when the configuration names no directory.
    pub fn default_feature_cache_dir(&self) -> PathBuf {
        self.path.join(FEATURE_CACHE_DIR)
    }

    /// Saves the resolved configuration.
    pub fn write_config(&self, config: &RunConfig) -> Result<(), RunError> {
        write_atomic(&self.config_path(), config.to_toml().as_bytes())
    }

    /// Reads the saved configuration.
    pub fn read_config(&self) -> Result<RunConfig, RunError> {
        let path = self.config_path();
        RunConfig::load(&path, &[]).map_err(|error| RunError::Config { path, error })
    }

    /// Saves the partition (JSON) and its count tables (text).
    pub fn write_partition(
        &self,
        partition: &Partition,
        dataset: &Dataset,
    ) -> Result<(), RunError> {
        write_atomic(&self.partition_path(), partition.to_json().as_bytes())?;
        let table = partition.counts(dataset).to_string();
        write_atomic(&self.partition_table_path(), table.as_bytes())
    }

    /// Reads the saved partition.
    pub fn read_partition(&self) -> Result<Partition, RunError> {
        Ok(Partition::load(&self.partition_path())?)
    }

    /// Opens the metrics files for appending.
    pub fn metrics_writer(&self) -> Result<MetricsWriter, RunError> {
        MetricsWriter::open(&self.metrics_jsonl_path(), &self.metrics_csv_path())
    }

    /// The rows of `metrics.jsonl` (none if it does not exist yet).
    pub fn read_metrics(&self) -> Result<Vec<MetricsRow>, RunError> {
        let path = self.metrics_jsonl_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        metrics::read_jsonl(&path)
    }

    /// Saves the end-of-run summary.
    pub fn write_summary(&self, summary: &RunSummary) -> Result<(), RunError> {
        let json = serde_json::to_string_pretty(summary).expect("a summary serialises");
        write_atomic(&self.summary_path(), json.as_bytes())
    }

    /// Saves `checkpoint` as the file of its round, then deletes all but the `keep` most recent
    /// checkpoints.
    pub fn save_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        keep: usize,
    ) -> Result<PathBuf, RunError> {
        let path = self.checkpoint_path(checkpoint.round);
        // Recreated if it was deleted while the run went on.
        let dir = self.checkpoints_dir();
        fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
        checkpoint.save(&path)?;
        let rounds = self.checkpoint_rounds()?;
        for &old in rounds.iter().rev().skip(keep.max(1)) {
            let old_path = self.checkpoint_path(old);
            fs::remove_file(&old_path).map_err(|e| RunError::io(&old_path, e))?;
        }
        Ok(path)
    }

    /// The rounds that have a checkpoint file, ascending.
    pub fn checkpoint_rounds(&self) -> Result<Vec<u32>, RunError> {
        let dir = self.checkpoints_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RunError::io(&dir, e)),
        };
        let mut rounds = Vec::new();
        for entry in entries {
            let name = entry.map_err(|e| RunError::io(&dir, e))?.file_name();
            let round = name
                .to_str()
                .and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX))
                .and_then(|n| n.strip_suffix(CHECKPOINT_SUFFIX))
                .and_then(|n| n.parse::<u32>().ok());
            rounds.extend(round);
        }
        rounds.sort_unstable();
        Ok(rounds)
    }

    /// The most recent checkpoint, if any. A checkpoint that cannot be read is an error, not
    /// a reason to fall back to an older one: writes are atomic, so it means damage.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, RunError> {
        match self.checkpoint_rounds()?.last() {
            Some(&round) => Checkpoint::load(&self.checkpoint_path(round)).map(Some),
            None => Ok(None),
        }
    }

    /// Takes the run directory for this process (until the lock is dropped or the process
    /// ends); refused, naming the holder, while another process has it.
    pub fn lock(&self) -> Result<RunLock, RunError> {
        RunLock::take(&self.path)
    }

    /// The most recent checkpoint, cross-checked with the rest of the directory: it records
    /// the round its file is named for, was written under `config` (the same configuration
    /// hash), and is not beyond the rounds `metrics.jsonl` records — which must hold every
    /// round once, in order, from round 0. Anything else is an error naming the file.
    pub fn latest_checkpoint_of(&self, config: &RunConfig) -> Result<Option<Checkpoint>, RunError> {
        let jsonl = self.metrics_jsonl_path();
        let recorded = if jsonl.exists() {
            metrics::last_recorded_round(&self.read_metrics()?, &jsonl)?
        } else {
            None
        };
        let Some(&named) = self.checkpoint_rounds()?.last() else {
            return Ok(None);
        };
        let path = self.checkpoint_path(named);
        let checkpoint = Checkpoint::load(&path)?;
        if checkpoint.round != named {
            return Err(RunError::Inconsistent {
                reason: format!(
                    "records round {}, not the round its name gives",
                    checkpoint.round
                ),
                path,
            });
        }
        let expected = config.hash();
        if checkpoint.config_hash != expected {
            return Err(RunError::ConfigMismatch {
                path: path.clone(),
                expected,
                found: checkpoint.config_hash,
            });
        }
        if recorded.is_none_or(|last| last < checkpoint.round) {
            return Err(RunError::Inconsistent {
                reason: format!(
                    "is the state after round {}, but metrics.jsonl records {}",
                    checkpoint.round,
                    recorded.map_or("no round".into(), |r| format!("rounds up to {r}"))
                ),
                path,
            });
        }
        Ok(Some(checkpoint))
    }

    /// Cuts `metrics.jsonl` after `last_round`'s rows (`None`: after none) and writes
    /// `metrics.csv` again from what it keeps.
    pub fn truncate_metrics(&self, last_round: Option<u32>) -> Result<(), RunError> {
        metrics::truncate_after(
            &self.metrics_jsonl_path(),
            &self.metrics_csv_path(),
            last_round,
        )
    }

    /// Prepares `path` for `--resume`: reads its configuration and latest checkpoint, checks the
    /// checkpoint was written under that configuration (same hash), and cuts the metrics files
    /// back to the checkpoint's round. [`resume_run`] does this and reads the data too.
    pub fn resume(path: &Path) -> Result<Resumed, RunError> {
        let dir = RunDir::open(path)?;
        let _lock = dir.lock()?;
        let config = dir.read_config()?;
        let checkpoint = dir.latest_checkpoint_of(&config)?;
        dir.truncate_metrics(checkpoint.as_ref().map(|c| c.round))?;
        Ok(Resumed {
            dir,
            config,
            checkpoint,
        })
    }
}
