//! Where a run computes and writes: the device, the image-feature cache and the output
//! directory.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigError;

/// The compute device: `"cpu"`, `"cuda"` (device 0), `"cuda:N"` or `"auto"` (CUDA when a GPU
/// is usable, else the CPU). Parsed and validated here; which devices exist is the backend's
/// business when the run starts.
///
/// ```
/// use fedotp_host::config::Device;
/// assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
/// assert_eq!("cuda".parse::<Device>().unwrap().to_string(), "cuda:0");
/// assert!("gpu".parse::<Device>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
    /// CUDA device 0 if available, else the CPU.
    #[default]
    Auto,
}

impl FromStr for Device {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::Auto),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|ordinal| {
                    // Digits only: `usize::from_str` would also take a leading `+`.
                    let digits = !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit());
                    digits.then(|| ordinal.parse().ok()).flatten()
                })
                .map(Device::Cuda)
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not a device: use \"cpu\", \"cuda\", \"cuda:N\" or \"auto\""
                    )
                }),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
            Device::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

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
