//! The image-feature cache: the frozen image tower's output for each sample, computed once.
//!
//! Records (one per sample, all of one length) fill memory up to a budget; the rest go to a file
//! that is memory-mapped once it is complete, so a cache larger than memory costs page-cache
//! reads, not image-tower passes. The file is the cache's own and is deleted with it.
//!
//! A cache can also be *kept* ([`FeatureCache::keep`]): every record written to a file under a
//! key that names what the features were computed from, which a later process maps again
//! ([`FeatureCache::open_kept`]) instead of running the image tower — what a federated node
//! does, as each message starts a new process. A kept file is
//!
//! | bytes | holds |
//! |---|---|
//! | 8 | `FOTPFC01` |
//! | 32 | the key (a SHA-256 digest) |
//! | 8 | values per record, u64 LE |
//! | 8 | records, u64 LE |
//! | rest | the records in build order, f32 LE |

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::TrainError;

/// Bytes of one cached value (`f32`, little-endian on disk).
const VALUE_BYTES: usize = 4;
/// The first bytes of a kept cache file.
const KEPT_MAGIC: &[u8; 8] = b"FOTPFC01";
/// Bytes of a kept cache file's header.
const KEPT_HEADER: usize = 8 + 32 + 8 + 8;

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
    /// Where the first record starts in the map.
    offset: usize,
    /// A scratch file (removed with the cache) rather than a kept one.
    scratch: bool,
}

impl Drop for DiskPart {
    fn drop(&mut self) {
        if self.scratch {
            // Scratch space: failing to remove it leaves garbage, not wrong results.
            let _ = fs::remove_file(&self.path);
        }
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
        Ok(CacheBuilder {
            cache: FeatureCache {
                record_len,
                slots: slots_of(samples)?,
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
            let start = disk.offset + (slot - self.memory_records) * len * VALUE_BYTES;
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

impl FeatureCache {
    /// Writes every record, in build order, to `path` after a header holding `key` (replacing
    /// any file there atomically), for [`FeatureCache::open_kept`] in a later process.
    pub fn keep(&self, path: &Path, key: &[u8; 32]) -> Result<(), TrainError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Cache { path, source }
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let partial = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut out = BufWriter::new(File::create(&partial).map_err(io(&partial))?);
        let records = self.slots.len();
        let mut header = Vec::with_capacity(KEPT_HEADER);
        header.extend_from_slice(KEPT_MAGIC);
        header.extend_from_slice(key);
        header.extend_from_slice(&(self.record_len as u64).to_le_bytes());
        header.extend_from_slice(&(records as u64).to_le_bytes());
        out.write_all(&header).map_err(io(&partial))?;
        let mut slot_samples = vec![0; records];
        for (&sample, &slot) in &self.slots {
            slot_samples[slot] = sample;
        }
        let mut record = Vec::with_capacity(self.record_len);
        for sample in slot_samples {
            record.clear();
            self.append(sample, &mut record)
                .expect("every slot of a finished cache has its record");
            for value in &record {
                out.write_all(&value.to_le_bytes()).map_err(io(&partial))?;
            }
        }
        let file = out.into_inner().map_err(|e| io(&partial)(e.into_error()))?;
        file.sync_all().map_err(io(&partial))?;
        fs::rename(&partial, path).map_err(io(path))
    }

    /// The cache kept in `path` for `samples` (listed as when it was built) with `record_len`
    /// values per record, mapped from the file; `None` if there is no such file or it was kept
    /// under another key (computed from other inputs). A file with the key but the wrong size
    /// is an error naming it.
    pub fn open_kept(
        path: &Path,
        samples: &[usize],
        record_len: usize,
        key: &[u8; 32],
    ) -> Result<Option<FeatureCache>, TrainError> {
        let io = |source| TrainError::Cache {
            path: path.to_path_buf(),
            source,
        };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        // SAFETY: `Mmap::map` is unsafe because the mapped bytes change if the file is written
        // or truncated while mapped. A kept file is only ever replaced by a rename (`keep`),
        // never written in place, so the inode mapped here keeps its bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        if map.len() < KEPT_HEADER || &map[..8] != KEPT_MAGIC || map[8..40] != key[..] {
            return Ok(None);
        }
        let word = |at: usize| u64::from_le_bytes(map[at..at + 8].try_into().expect("8 bytes"));
        let expected = (KEPT_HEADER as u64)
            .saturating_add((samples.len() as u64).saturating_mul(record_len as u64 * 4));
        if word(40) != record_len as u64
            || word(48) != samples.len() as u64
            || map.len() as u64 != expected
        {
            return Err(TrainError::Invalid(format!(
                "feature cache {}: holds {} records of {} values in {} bytes; this client's \
                 cache has {} of {record_len} ({expected} bytes) — delete the file",
                path.display(),
                word(48),
                word(40),
                map.len(),
                samples.len()
            )));
        }
        Ok(Some(FeatureCache {
            record_len,
            slots: slots_of(samples)?,
            memory: Vec::new(),
            memory_records: 0,
            disk: Some(DiskPart {
                path: path.to_path_buf(),
                map,
                offset: KEPT_HEADER,
                scratch: false,
            }),
        }))
    }
}

/// Each of `samples`' slot: its position in the list (a sample listed twice is an error).
fn slots_of(samples: &[usize]) -> Result<HashMap<usize, usize>, TrainError> {
    let mut slots = HashMap::with_capacity(samples.len());
    for (slot, &sample) in samples.iter().enumerate() {
        if slots.insert(sample, slot).is_some() {
            return Err(TrainError::Invalid(format!(
                "feature cache: sample {sample} listed twice"
            )));
        }
    }
    Ok(slots)
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
            self.cache.disk = Some(DiskPart {
                path,
                map,
                offset: 0,
                scratch: true,
            });
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

    const SAMPLES: [usize; 4] = [7, 3, 11, 5];

    /// A cache of `SAMPLES` with room for two records of 3 values in memory; the other two go
    /// to a file in `dir`.
    fn two_in_memory_two_on_disk(dir: &Path) -> FeatureCache {
        let mut builder = FeatureCache::builder(&SAMPLES, 3, 2 * 3 * 4, dir).unwrap();
        for &s in &SAMPLES {
            builder.push(&record(s, 3)).unwrap();
        }
        builder.finish().unwrap()
    }

    #[test]
    fn records_come_back_from_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cache = two_in_memory_two_on_disk(dir.path());
        assert_eq!(cache.split(), (2, 2));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        for &s in &SAMPLES {
            let mut out = Vec::new();
            cache.append(s, &mut out).unwrap();
            assert_eq!(out, record(s, 3), "sample {s}");
        }
        assert!(cache.append(4, &mut Vec::new()).is_none());
        drop(cache);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "file removed");
    }

    #[test]
    fn a_kept_cache_maps_back_the_same_records_under_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = two_in_memory_two_on_disk(dir.path());
        let path = dir.path().join("kept").join("train.f32");
        let key = [9u8; 32];
        cache.keep(&path, &key).unwrap();
        drop(cache);
        assert!(path.exists(), "a kept file outlives its cache");
        let kept = FeatureCache::open_kept(&path, &SAMPLES, 3, &key)
            .unwrap()
            .unwrap();
        for &s in &SAMPLES {
            let mut out = Vec::new();
            kept.append(s, &mut out).unwrap();
            assert_eq!(out, record(s, 3), "sample {s}");
        }
        drop(kept);
        assert!(path.exists(), "opening does not make it scratch");
        assert!(FeatureCache::open_kept(&path, &SAMPLES, 3, &[8; 32])
            .unwrap()
            .is_none());
        assert!(
            FeatureCache::open_kept(&dir.path().join("none"), &SAMPLES, 3, &key)
                .unwrap()
                .is_none()
        );
        let wrong = FeatureCache::open_kept(&path, &SAMPLES[..3], 3, &key)
            .err()
            .unwrap();
        assert!(wrong.to_string().contains("delete the file"), "{wrong}");
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
