//! [`Dataset`]: class names, domain names and the train and test samples of one dataset, each
//! sample an image (in memory or a file) with its label and domain.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::digits::DigitImage;
use super::error::{DataError, Result};
use super::pixels::{GrayWindow, PixelError};
use super::rgb::RgbImage;
use super::transform::Transform;

/// Where a sample's pixels are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// Decoded pixels held in memory (CIFAR, decoded caller images).
    Memory(RgbImage),
    /// One of the embedded digits, drawn in a client's style when it is loaded: a dataset of
    /// them costs no rendering until its images are needed (a federated node whose image
    /// features are kept never renders one).
    Digit(DigitImage),
    /// A JPEG or PNG file, decoded on every load.
    File(PathBuf),
    /// A JPEG or PNG file whose 16-bit grayscale pixels are read through a display window,
    /// decoded on every load ([`Dataset::with_gray_window`]).
    WindowedFile(WindowedFile),
    /// No pixels: the sample's image features were computed elsewhere (by `fedotp encode`, or
    /// a caller of libfedotp) and reach training through
    /// [`SplitFeatures::fill_cache_from_tokens`](crate::train::SplitFeatures::fill_cache_from_tokens).
    /// Loading its image is an error.
    Features,
}

impl ImageSource {
    /// The decoded image (borrowed when it is already in memory).
    pub fn load(&self) -> Result<Cow<'_, RgbImage>> {
        match self {
            ImageSource::Memory(image) => Ok(Cow::Borrowed(image)),
            ImageSource::Digit(digit) => Ok(Cow::Owned(digit.render())),
            ImageSource::File(path) => RgbImage::open(path).map(Cow::Owned),
            ImageSource::WindowedFile(file) => file.load().map(Cow::Owned),
            ImageSource::Features => Err(DataError::Invalid(
                "the sample has no pixels: its image features were given precomputed".into(),
            )),
        }
    }

    /// The file, for file-backed samples.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ImageSource::Memory(_) | ImageSource::Digit(_) | ImageSource::Features => None,
            ImageSource::File(path) => Some(path),
            ImageSource::WindowedFile(file) => Some(file.path()),
        }
    }
}

/// A file and the window its 16-bit grayscale pixels are read through
/// ([`RgbImage::open_windowed`]: other files decode as without a window).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowedFile {
    path: PathBuf,
    window: GrayWindow,
}

// The window was validated (finite centre and width), so it compares equal to itself.
impl Eq for WindowedFile {}

impl WindowedFile {
    /// `path` read through `window`, which must be valid ([`GrayWindow::validate`]).
    pub fn new(path: PathBuf, window: GrayWindow) -> std::result::Result<Self, PixelError> {
        window.validate()?;
        Ok(WindowedFile { path, window })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The window.
    pub fn window(&self) -> GrayWindow {
        self.window
    }

    /// The decoded image.
    pub fn load(&self) -> Result<RgbImage> {
        RgbImage::open_windowed(&self.path, self.window)
    }
}

/// One labelled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The pixels or the file holding them.
    pub image: ImageSource,
    /// Class index into [`Dataset::class_names`].
    pub label: usize,
    /// Domain index into [`Dataset::domain_names`] (0 for single-domain datasets).
    pub domain: usize,
}

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The training samples.
    Train,
    /// The test samples.
    Test,
}

/// The two-level label structure of CIFAR-100: every fine class belongs to one coarse class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoarseClasses {
    /// Names of the coarse classes.
    pub names: Vec<String>,
    /// `of_class[c]` is the coarse class of fine class `c`.
    pub of_class: Vec<usize>,
}

/// A dataset: names, and train and test samples whose labels index `class_names`.
///
/// Readers: [`cifar10`](super::cifar10), [`cifar100`](super::cifar100),
/// [`image_folder`](super::image_folder), [`coop`](super::coop),
/// [`domain_tree`](super::domain_tree), [`digits`](super::digits). Partitions
/// ([`PartitionSpec`](super::PartitionSpec)) hand out indices into `train` and `test`.
///
/// ```
/// use fedotp_host::data::{Dataset, ImageSource, RgbImage, Sample, Split, Transform};
/// use rand::SeedableRng;
///
/// let pixel = |v: u8| ImageSource::Memory(RgbImage::new(1, 1, vec![v; 3]).unwrap());
/// let dataset = Dataset {
///     name: "toy".into(),
///     class_names: vec!["dark".into(), "light".into()],
///     domain_names: vec!["toy".into()],
///     coarse: None,
///     train: vec![
///         Sample { image: pixel(0), label: 0, domain: 0 },
///         Sample { image: pixel(255), label: 1, domain: 0 },
///     ],
///     test: vec![Sample { image: pixel(250), label: 1, domain: 0 }],
/// };
/// dataset.validate().unwrap();
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let batch = dataset.load_batch(Split::Train, &[1, 0], &Transform::eval(4), &mut rng).unwrap();
/// assert_eq!(batch.len(), 2 * 3 * 4 * 4);
/// assert!(batch[0] > 1.5 && batch[3 * 16] < -1.5); // white, then black, after CLIP normalisation
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// A short name for tables and logs ("cifar10", "domainnet", ...).
    pub name: String,
    /// Class names in label order, as found in the dataset's files (underscores kept; the prompt
    /// builder replaces them by spaces).
    pub class_names: Vec<String>,
    /// Domain names in domain-index order (one entry for single-domain datasets).
    pub domain_names: Vec<String>,
    /// The coarse classes, for datasets that have them (CIFAR-100).
    pub coarse: Option<CoarseClasses>,
    /// Training samples.
    pub train: Vec<Sample>,
    /// Test samples.
    pub test: Vec<Sample>,
}

impl Dataset {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The samples of `split`.
    pub fn samples(&self, split: Split) -> &[Sample] {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }

    /// The labels of `split`, in sample order.
    pub fn labels(&self, split: Split) -> Vec<usize> {
        self.samples(split).iter().map(|s| s.label).collect()
    }

    /// The domains of `split`, in sample order.
    pub fn domains(&self, split: Split) -> Vec<usize> {
        self.samples(split).iter().map(|s| s.domain).collect()
    }

    /// Checks that every label and domain is in range and the coarse map covers every class.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| {
            Err(DataError::Invalid(format!(
                "dataset {}: {reason}",
                self.name
            )))
        };
        if self.class_names.is_empty() || self.domain_names.is_empty() {
            return invalid("needs at least one class and one domain".into());
        }
        for split in [Split::Train, Split::Test] {
            for (index, sample) in self.samples(split).iter().enumerate() {
                if sample.label >= self.num_classes() || sample.domain >= self.domain_names.len() {
                    return invalid(format!(
                        "{split:?} sample {index} has label {} and domain {}, but there are {} classes and {} domains",
                        sample.label,
                        sample.domain,
                        self.num_classes(),
                        self.domain_names.len()
                    ));
                }
            }
        }
        if let Some(coarse) = &self.coarse {
            if coarse.of_class.len() != self.num_classes()
                || coarse.of_class.iter().any(|&c| c >= coarse.names.len())
            {
                return invalid(
                    "the coarse-class map must give every class a coarse class in range".into(),
                );
            }
        }
        Ok(())
    }

    /// The dataset with every file-backed sample read through `window`: a 16-bit grayscale
    /// PNG's values are mapped by it ([`RgbImage::open_windowed`]); 8-bit and colour files, and
    /// samples held in memory, load as before. An invalid window is an error.
    ///
    /// ```no_run
    /// use fedotp_host::data::{image_folder, GrayWindow};
    /// let window = GrayWindow::CentreWidth { centre: 2048.0, width: 4096.0 };
    /// let dataset = image_folder("data/xray/train".as_ref(), "data/xray/test".as_ref())?
    ///     .with_gray_window(window)?;
    /// # Ok::<(), fedotp_host::data::DataError>(())
    /// ```
    pub fn with_gray_window(mut self, window: GrayWindow) -> Result<Self> {
        window
            .validate()
            .map_err(|e| DataError::Invalid(format!("dataset {}: {e}", self.name)))?;
        for sample in self.train.iter_mut().chain(&mut self.test) {
            if let ImageSource::File(path) = &mut sample.image {
                let path = std::mem::take(path);
                sample.image = ImageSource::WindowedFile(WindowedFile { path, window });
            }
        }
        Ok(self)
    }

    /// Checks that every file-backed sample's file exists, naming the first that does not.
    pub fn check_files(&self) -> Result<()> {
        for sample in self.train.iter().chain(&self.test) {
            if let Some(path) = sample.image.path() {
                if !path.is_file() {
                    return Err(DataError::io(path, std::io::ErrorKind::NotFound.into()));
                }
            }
        }
        Ok(())
    }

    /// The sample at `index` of `split`.
    pub fn sample(&self, split: Split, index: usize) -> Result<&Sample> {
        let samples = self.samples(split);
        samples.get(index).ok_or_else(|| {
            DataError::Invalid(format!(
                "{split:?} sample {index} requested, the {} split of {} has {} samples",
                match split {
                    Split::Train => "train",
                    Split::Test => "test",
                },
                self.name,
                samples.len()
            ))
        })
    }

    /// The model input for sample `index` of `split`: `3 × size × size` normalised CHW values.
    /// A file that cannot be read or decoded is an error naming it.
    pub fn load_image<R: Rng + ?Sized>(
        &self,
        split: Split,
        index: usize,
        transform: &Transform,
        rng: &mut R,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0.0; transform.output_len()];
        self.load_image_into(split, index, transform, rng, &mut out)?;
        Ok(out)
    }

    /// As [`Dataset::load_image`], writing into `out` (`transform.output_len()` values).
    pub fn load_image_into<R: Rng + ?Sized>(
        &self,
        split: Split,
        index: usize,
        transform: &Transform,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<()> {
        let image = self.sample(split, index)?.image.load()?;
        transform.apply_into(&image, rng, out)
    }

    /// A batch: the samples `indices` of `split` one after another, `indices.len() × 3 × size ×
    /// size` values. A random transform uses the generator in index order, so a batch is
    /// reproducible; a deterministic one (the evaluation transform, every cached split) decodes
    /// and resamples the images on all cores, which keeps a GPU fed.
    pub fn load_batch<R: Rng + ?Sized>(
        &self,
        split: Split,
        indices: &[usize],
        transform: &Transform,
        rng: &mut R,
    ) -> Result<Vec<f32>> {
        transform.validate()?;
        let per_image = transform.output_len();
        let mut out = vec![0.0; indices.len() * per_image];
        if transform.is_random() {
            for (&index, slot) in indices.iter().zip(out.chunks_exact_mut(per_image)) {
                self.load_image_into(split, index, transform, rng, slot)?;
            }
        } else {
            let results: Vec<Result<()>> = indices
                .par_iter()
                .zip(out.par_chunks_exact_mut(per_image))
                .map(|(&index, slot)| {
                    // The transform draws nothing: a constant generator stands in.
                    let mut unused = ChaCha8Rng::seed_from_u64(0);
                    self.load_image_into(split, index, transform, &mut unused, slot)
                })
                .collect();
            // The first bad sample in batch order, as the sequential loop would report.
            results.into_iter().collect::<Result<()>>()?;
        }
        Ok(out)
    }
}
