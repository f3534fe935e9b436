//! Memory a computation needs, estimated before anything is allocated, and the memory the
//! machine can give.
//!
//! Rust aborts the process when an allocation fails, without a word a user could act on. A
//! model or run whose sizes come from a configuration is therefore estimated first and refused
//! with the estimate and the limit when it cannot fit; the largest buffers are then reserved
//! fallibly ([`try_zeroed`]), so what the estimate misses is still an error, not an abort.

use std::fmt;

/// Bytes in a GiB, for messages.
const GIB: f64 = (1u64 << 30) as f64;

/// Bytes a computation needs, by part (weights, activations, caches, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    parts: Vec<(&'static str, u64)>,
}

impl MemoryEstimate {
    /// An empty estimate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` under `part` (saturating: a size beyond `u64` is refused like any other
    /// that does not fit).
    pub fn with(mut self, part: &'static str, bytes: u64) -> Self {
        self.parts.push((part, bytes));
        self
    }

    /// The parts, in the order they were added.
    pub fn parts(&self) -> &[(&'static str, u64)] {
        &self.parts
    }

    /// Bytes in all.
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |sum, &(_, bytes)| sum.saturating_add(bytes))
    }

    /// Refuses the estimate when it exceeds the memory this process can get
    /// ([`available_memory`]); accepts it when that is unknown.
    pub fn check(&self, what: &str) -> Result<(), MemoryError> {
        match available_memory() {
            Some(limit) => self.check_against(what, limit),
            None => Ok(()),
        }
    }

    /// Refuses the estimate when it exceeds `limit` bytes, naming `what` needs it.
    pub fn check_against(&self, what: &str, limit: u64) -> Result<(), MemoryError> {
        if self.total() <= limit {
            return Ok(());
        }
        Err(MemoryError {
            what: what.to_owned(),
            estimate: self.clone(),
            limit,
        })
    }
}

/// Bytes of an `f32` tensor of these dimensions, saturating at `u64::MAX`.
pub fn f32_bytes(dims: &[u64]) -> u64 {
    dims.iter().fold(4u64, |bytes, &d| bytes.saturating_mul(d))
}

/// A computation that needs more memory than there is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryError {
    what: String,
    estimate: MemoryEstimate,
    limit: u64,
}

impl MemoryError {
    /// What needs the memory.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The estimate, by part.
    pub fn estimate(&self) -> &MemoryEstimate {
        &self.estimate
    }

    /// The bytes that were available.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs about {}",
            self.what,
            gib(self.estimate.total())
        )?;
        // The parts, when there is more than one.
        if let [_, _, ..] = self.estimate.parts[..] {
            for (index, (part, bytes)) in self.estimate.parts.iter().enumerate() {
                let opening = if index == 0 { " (" } else { ", " };
                write!(f, "{opening}{part} {}", gib(*bytes))?;
            }
            write!(f, ")")?;
        }
        write!(f, ", more than the {} of memory available", gib(self.limit))
    }
}

impl std::error::Error for MemoryError {}

/// `bytes` in GiB for a message (sizes past 10¹⁵ GiB are only "more than").
fn gib(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "more than 2^64 bytes".to_owned();
    }
    let value = bytes as f64 / GIB;
    if value >= 100.0 {
        format!("{value:.0} GiB")
    } else {
        format!("{value:.2} GiB")
    }
}

/// The memory this process can still get, in bytes: the kernel's estimate of memory available
/// without swapping (`MemAvailable`), lowered to what the process's cgroup still allows. `None`
/// where neither can be read (not Linux).
pub fn available_memory() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_available(&text));
    match (machine, cgroup_headroom()) {
        (Some(machine), Some(cgroup)) => Some(machine.min(cgroup)),
        (machine, cgroup) => machine.or(cgroup),
    }
}

/// `MemAvailable` from the text of `/proc/meminfo`, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The cgroup's limit less its usage (cgroup v2, else v1); `None` without a limit.
fn cgroup_headroom() -> Option<u64> {
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let (limit, used) = match read("/sys/fs/cgroup/memory.max") {
        Some(limit) => (limit, read("/sys/fs/cgroup/memory.current")?),
        // v2 writes "max" (not a number) when unlimited; v1 keeps its files elsewhere.
        None => (
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes")?,
            read("/sys/fs/cgroup/memory/memory.usage_in_bytes")?,
        ),
    };
    Some(limit.saturating_sub(used))
}

/// `len` zeros, or the [`MemoryError`] naming `what` when the allocation fails.
pub fn try_zeroed(what: &str, len: usize) -> Result<Vec<f32>, MemoryError> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| MemoryError {
        what: what.to_owned(),
        estimate: MemoryEstimate::new().with("buffer", f32_bytes(&[len as u64])),
        limit: available_memory().unwrap_or(0),
    })?;
    buffer.resize(len, 0.0);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       32768000 kB\nMemFree:  100 kB\nMemAvailable:   16384000 kB\n";
        assert_eq!(meminfo_available(text), Some(16_384_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn an_estimate_over_the_limit_names_its_parts() {
        let estimate = MemoryEstimate::new()
            .with("weights", 3 << 30)
            .with("activations", 1 << 29);
        assert!(estimate.check_against("the model", 4 << 30).is_ok());
        let error = estimate.check_against("the model", 2 << 30).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the model needs about 3.50 GiB (weights 3.00 GiB, activations 0.50 GiB), \
             more than the 2.00 GiB of memory available"
        );
        let huge = MemoryEstimate::new()
            .with("weights", u64::MAX)
            .with("more", 1);
        assert_eq!(huge.total(), u64::MAX);
        assert!(huge.check_against("x", u64::MAX - 1).is_err());
    }

    #[test]
    fn this_machine_reports_its_memory() {
        if cfg!(target_os = "linux") {
            assert!(available_memory().is_some_and(|bytes| bytes > 0));
        }
    }

    #[test]
    fn an_impossible_buffer_is_an_error() {
        let error = try_zeroed("a test buffer", usize::MAX / 8).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("a test buffer needs about "),
            "{message}"
        );
        assert!(!message.contains('('), "one part is not listed: {message}");
        assert_eq!(try_zeroed("small", 3).unwrap(), vec![0.0; 3]);
    }
}
