//! The image-feature cache: the frozen image tower's output for each sample, computed once.
//!
//! Records (one per sample, all of one length) fill memory up to a budget; the rest go to a file
//! that is memory-mapped once it is complete, so a cache larger than memory costs page-cache
//! reads, not image-tower passes. The file is the cache's own and is deleted with it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::TrainError;

/// Bytes of one cached value (`f32`, little-endian on disk).
const VALUE_BYTES: usize = 4;

/// Cached feature records keyed by sample index.
pub struct FeatureCache {
    record_len: usize,
    /// Sample index → slot; slots below `memory_records` are in `memory`, the rest in the file.
    slots: HashMap<usize, usize>,
    memory: Vec<f32>,
    memory_records: usize,
    disk: Option<DiskPart>,
}

/// The part of a cache on disk.
struct DiskPart {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl Drop for DiskPart {
    fn drop(&mut self) {
        // The file is scratch space; failing to remove it leaves garbage, not wrong results.
        let _ = fs::remove_file(&self.path);
    }
}

/// Fills a [`FeatureCache`] record by record, in slot order.
pub struct CacheBuilder {
    cache: FeatureCache,
    pushed: usize,
    expected: usize,
    writer: Option<(PathBuf, BufWriter<File>)>,
    disk_dir: PathBuf,
}

impl FeatureCache {
    /// A builder for one record of `record_len` values for each of `samples` (distinct sample
    /// indices, in the order their records will be pushed), keeping up to `memory_budget` bytes
    /// in memory and the rest in a file in `disk_dir` (created if needed).
    pub fn builder(
        samples: &[usize],
        record_len: usize,
        memory_budget: u64,
        disk_dir: &Path,
    ) -> Result<CacheBuilder, TrainError> {
        let record_bytes = (record_len * VALUE_BYTES).max(1) as u64;
        let memory_records = usize::try_from(memory_budget / record_bytes)
            .unwrap_or(usize::MAX)
            .min(samples.len());
        let mut slots = HashMap::with_capacity(samples.len());
        for (slot, &sample) in samples.iter().enumerate() {
            if slots.insert(sample, slot).is_some() {
                return Err(TrainError::Invalid(format!(
                    "feature cache: sample {sample} listed twice"
                )));
            }
        }
        Ok(CacheBuilder {
            cache: FeatureCache {
                record_len,
                slots,
                memory: Vec::with_capacity(memory_records * record_len),
                memory_records,
                disk: None,
            },
            pushed: 0,
            expected: samples.len(),
            writer: None,
            disk_dir: disk_dir.to_path_buf(),
        })
    }

    /// Values per record.
    pub fn record_len(&self) -> usize {
        self.record_len
    }

    /// Records held in memory and on disk.
    pub fn split(&self) -> (usize, usize) {
        let total = self.slots.len();
        (
            self.memory_records.min(total),
            total.saturating_sub(self.memory_records),
        )
    }

    /// Whether `sample` has a record.
    pub fn contains(&self, sample: usize) -> bool {
        self.slots.contains_key(&sample)
    }

    /// Appends the record of `sample` to `out`; `None` if it is not cached.
    pub fn append(&self, sample: usize, out: &mut Vec<f32>) -> Option<()> {
        let slot = *self.slots.get(&sample)?;
        let len = self.record_len;
        if slot < self.memory_records {
            out.extend_from_slice(&self.memory[slot * len..(slot + 1) * len]);
        } else {
            let disk = self.disk.as_ref()?;
            let start = (slot - self.memory_records) * len * VALUE_BYTES;
            let bytes = disk.map.get(start..start + len * VALUE_BYTES)?;
            out.extend(
                bytes
                    .chunks_exact(VALUE_BYTES)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Some(())
    }
}

/// A file name no other cache of this process or another uses at the same time.
fn scratch_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "features-{}-{}.f32",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl CacheBuilder {
    /// Adds the next record (`record_len` values).
    pub fn push(&mut self, record: &[f32]) -> Result<(), TrainError> {
        let cache = &mut self.cache;
        if record.len() != cache.record_len || self.pushed == self.expected {
            return Err(TrainError::Invalid(format!(
                "feature cache: record {} of {} has {} values, expected {}",
                self.pushed,
                self.expected,
                record.len(),
                cache.record_len
            )));
        }
        if self.pushed < cache.memory_records {
            cache.memory.extend_from_slice(record);
        } else {
            if self.writer.is_none() {
                let dir = &self.disk_dir;
                fs::create_dir_all(dir).map_err(|source| TrainError::Cache {
                    path: dir.clone(),
                    source,
                })?;
                let path = dir.join(scratch_name());
                // Read access too: the finished file is mapped through this handle.
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|source| TrainError::Cache {
                        path: path.clone(),
                        source,
                    })?;
                self.writer = Some((path, BufWriter::new(file)));
            }
            let (path, writer) = self.writer.as_mut().expect("opened above");
            for value in record {
                writer
                    .write_all(&value.to_le_bytes())
                    .map_err(|source| TrainError::Cache {
                        path: path.clone(),
                        source,
                    })?;
            }
        }
        self.pushed += 1;
        Ok(())
    }

    /// The finished cache; every listed sample must have had its record pushed.
    pub fn finish(mut self) -> Result<FeatureCache, TrainError> {
        if self.pushed != self.expected {
            return Err(TrainError::Invalid(format!(
                "feature cache: {} of {} records pushed",
                self.pushed, self.expected
            )));
        }
        if let Some((path, writer)) = self.writer.take() {
            let io = |source| TrainError::Cache {
                path: path.clone(),
                source,
            };
            let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
            // SAFETY: `Mmap::map` is unsafe because the mapped bytes change if the file is
            // written or truncated while mapped. This is the cache's own scratch file, created
            // with `create_new` under a name unique to this process and builder, completely
            // written and flushed above, and never written again: the map is read-only and the
            // file is removed only when the map is dropped (`DiskPart`).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            self.cache.disk = Some(DiskPart { path, map });
        }
        Ok(self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sample: usize, len: usize) -> Vec<f32> {
        (0..len).map(|i| (sample * 100 + i) as f32 * 0.5).collect()
    }

    #[test]
    fn records_come_back_from_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let samples = [7, 3, 11, 5];
        // Room for two records of 3 values in memory; the other two go to disk.
        let mut builder = FeatureCache::builder(&samples, 3, 2 * 3 * 4, dir.path()).unwrap();
        for &s in &samples {
            builder.push(&record(s, 3)).unwrap();
        }
        let cache = builder.finish().unwrap();
        assert_eq!(cache.split(), (2, 2));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        for &s in &samples {
            let mut out = Vec::new();
            cache.append(s, &mut out).unwrap();
            assert_eq!(out, record(s, 3), "sample {s}");
        }
        assert!(cache.append(4, &mut Vec::new()).is_none());
        drop(cache);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "file removed");
    }

    #[test]
    fn wrong_records_and_missing_records_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = FeatureCache::builder(&[1, 2], 2, 0, dir.path()).unwrap();
        assert!(builder.push(&[1.0]).is_err());
        builder.push(&[1.0, 2.0]).unwrap();
        assert!(builder.finish().is_err());
        assert!(FeatureCache::builder(&[1, 1], 2, 0, dir.path()).is_err());
    }
}
