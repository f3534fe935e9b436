//! The image features a head reads for a batch of samples: from the cache when the split is not
//! augmented, else from the image tower on freshly transformed images.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cache::FeatureCache;
use super::{FrozenClip, TrainError};
use crate::backend::Backend;
use crate::data::{Dataset, Split, Transform};
use crate::prompt::{Head, ImageBatchFeatures};

/// Which of the image tower's unit-length outputs a head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// The M patch tokens (the OT head).
    Patches,
    /// The pooled image embedding (the cosine head).
    Pooled,
}

impl FeatureKind {
    /// What `head` reads.
    pub fn of(head: &Head) -> FeatureKind {
        match head {
            Head::Ot { .. } => FeatureKind::Patches,
            Head::Cosine => FeatureKind::Pooled,
        }
    }

    /// The part of `features` this kind names, `images × rows × dim`.
    pub fn take(self, features: ImageBatchFeatures) -> Vec<f32> {
        match self {
            FeatureKind::Patches => features.patches,
            FeatureKind::Pooled => features.pooled,
        }
    }

    /// Values per image: `patches × dim` or `dim`.
    pub fn record_len(self, patches: usize, dim: usize) -> usize {
        match self {
            FeatureKind::Patches => patches * dim,
            FeatureKind::Pooled => dim,
        }
    }
}

/// Where a split's features come from.
pub struct SplitFeatures<'d> {
    dataset: &'d Dataset,
    split: Split,
    transform: Transform,
    kind: FeatureKind,
    cache: Option<FeatureCache>,
}

/// Where and how much a cache may store.
#[derive(Debug, Clone, Copy)]
pub struct CachePlace<'p> {
    /// Bytes it may hold in memory.
    pub memory_budget: u64,
    /// Directory for the rest.
    pub disk_dir: &'p Path,
    /// Images per image-tower pass while filling it.
    pub batch: usize,
    /// Where the whole cache is kept for later processes, under the key of what it was
    /// computed from ([`FeatureCache::keep`]); `None`: it lives as long as this process.
    pub kept: Option<(&'p Path, [u8; 32])>,
}

impl<'d> SplitFeatures<'d> {
    /// Features of `split` of `dataset` through `transform`, as `kind`; nothing cached yet.
    pub fn new(
        dataset: &'d Dataset,
        split: Split,
        transform: Transform,
        kind: FeatureKind,
    ) -> SplitFeatures<'d> {
        SplitFeatures {
            dataset,
            split,
            transform,
            kind,
            cache: None,
        }
    }

    /// The dataset.
    pub fn dataset(&self) -> &'d Dataset {
        self.dataset
    }

    /// The split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The cache, once [`SplitFeatures::fill_cache`] built it.
    pub fn cache(&self) -> Option<&FeatureCache> {
        self.cache.as_ref()
    }

    /// Whether the images are transformed at random (then they cannot be cached).
    pub fn is_augmented(&self) -> bool {
        self.transform.is_random()
    }

    /// Labels of `samples` as the loss reads them.
    pub fn labels(&self, samples: &[usize]) -> Result<Vec<u32>, TrainError> {
        samples
            .iter()
            .map(|&i| Ok(self.dataset.sample(self.split, i)?.label as u32))
            .collect()
    }

    /// Runs the image tower once over `samples` and keeps the results — or maps them from the
    /// kept file `place` names, if one holds them under its key. Refused for an augmented
    /// split, whose features change every time. `progress(done, total)` follows the passes.
    pub fn fill_cache<B: Backend>(
        &mut self,
        clip: &FrozenClip<B>,
        samples: &[usize],
        place: CachePlace<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), TrainError> {
        self.refuse_augmented()?;
        self.cache = None;
        let record_len = self
            .kind
            .record_len(clip.patches(), clip.weights().config.embed_dim);
        if let Some((path, key)) = place.kept {
            if let Some(kept) = FeatureCache::open_kept(path, samples, record_len, &key)? {
                self.cache = Some(kept);
                progress(samples.len(), samples.len());
                return Ok(());
            }
        }
        let cache = build_cache(clip, self.kind, samples, place, progress, |_, chunk| {
            // The evaluation transform draws nothing; any generator will do.
            self.encode(clip, chunk, &mut ChaCha8Rng::seed_from_u64(0))
        })?;
        if let Some((path, key)) = place.kept {
            cache.keep(path, &key)?;
        }
        self.cache = Some(cache);
        Ok(())
    }

    /// Caches the features of every sample of the split from the image tower's output computed
    /// elsewhere: `tokens` holds `samples × (1 + patches) × embed_dim` values in sample order,
    /// as [`FrozenClip::features_from_tokens`] takes them. Afterwards no image is loaded: the
    /// samples may have no pixels ([`ImageSource::Features`](crate::data::ImageSource)).
    /// Refused for an augmented split, whose features would change with every draw.
    pub fn fill_cache_from_tokens<B: Backend>(
        &mut self,
        clip: &FrozenClip<B>,
        tokens: &[f32],
        place: CachePlace<'_>,
    ) -> Result<(), TrainError> {
        self.refuse_augmented()?;
        self.cache = None;
        let count = self.dataset.samples(self.split).len();
        let dim = clip.weights().config.embed_dim;
        let per_image = (clip.patches() + 1) * dim;
        if tokens.len() != count * per_image {
            return Err(TrainError::Invalid(format!(
                "{} precomputed token values for the {count} samples of the {:?} split: the \
                 model needs {per_image} per sample ({} tokens of width {dim})",
                tokens.len(),
                self.split,
                clip.patches() + 1
            )));
        }
        let samples: Vec<usize> = (0..count).collect();
        let kind = self.kind;
        let cache = build_cache(
            clip,
            kind,
            &samples,
            place,
            &mut |_, _| {},
            |first, chunk| {
                let chunk_tokens = &tokens[first * per_image..(first + chunk.len()) * per_image];
                Ok(kind.take(clip.features_from_tokens(chunk_tokens, chunk.len())?))
            },
        )?;
        self.cache = Some(cache);
        Ok(())
    }

    fn refuse_augmented(&self) -> Result<(), TrainError> {
        if self.is_augmented() {
            return Err(TrainError::Invalid(
                "a split whose images are augmented at random cannot be cached (its features \
                 change with every draw)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Features of `samples` (`samples.len() × rows × dim`): cached records where the cache has
    /// them all, else the image tower on the images transformed with `rng`.
    pub fn batch<B: Backend, R: Rng + ?Sized>(
        &self,
        clip: &FrozenClip<B>,
        samples: &[usize],
        rng: &mut R,
    ) -> Result<Vec<f32>, TrainError> {
        if let Some(cache) = &self.cache {
            if samples.iter().all(|&s| cache.contains(s)) {
                let mut out = Vec::with_capacity(samples.len() * cache.record_len());
                for &s in samples {
                    cache.append(s, &mut out);
                }
                return Ok(out);
            }
        }
        self.encode(clip, samples, rng)
    }

    fn encode<B: Backend, R: Rng + ?Sized>(
        &self,
        clip: &FrozenClip<B>,
        samples: &[usize],
        rng: &mut R,
    ) -> Result<Vec<f32>, TrainError> {
        let pixels = self
            .dataset
            .load_batch(self.split, samples, &self.transform, rng)?;
        Ok(self.kind.take(clip.encode(&pixels, samples.len())?))
    }
}

/// A cache of the records of `samples`, `place.batch` at a time: `features(first, chunk)` gives
/// the `kind` records of the chunk of `samples` starting at position `first`;
/// `progress(done, total)` follows the chunks.
fn build_cache<B: Backend>(
    clip: &FrozenClip<B>,
    kind: FeatureKind,
    samples: &[usize],
    place: CachePlace<'_>,
    progress: &mut dyn FnMut(usize, usize),
    mut features: impl FnMut(usize, &[usize]) -> Result<Vec<f32>, TrainError>,
) -> Result<FeatureCache, TrainError> {
    let record_len = kind.record_len(clip.patches(), clip.weights().config.embed_dim);
    let mut builder =
        FeatureCache::builder(samples, record_len, place.memory_budget, place.disk_dir)?;
    let batch = place.batch.max(1);
    for (index, chunk) in samples.chunks(batch).enumerate() {
        let first = index * batch;
        for record in features(first, chunk)?.chunks_exact(record_len) {
            builder.push(record)?;
        }
        progress(first + chunk.len(), samples.len());
    }
    builder.finish()
}
