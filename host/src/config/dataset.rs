//! Which data a run uses and how it is split among clients: the reader and its files, the
//! partition, few-shot sampling and the image transforms. [`DatasetConfig::load`] turns it into
//! a [`Dataset`] and a [`Partition`] through the data module.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::data::{
    cifar10, cifar100, coop, digits, domain_tree, federated_digits, image_folder, CoopDataset,
    DataError, Dataset, DigitsFederation, DomainSet, Geometry, GrayWindow, Interpolation,
    Normalize, Partition, PartitionSpec, Transform, TreeSplit,
};

/// The data of a run.
///
/// ```
/// use fedotp_host::config::{DatasetConfig, DatasetSource};
/// use fedotp_host::data::PartitionSpec;
/// let config: DatasetConfig = toml::from_str(r#"
/// source = { kind = "cifar100", root = "data/cifar-100-binary" }
/// partition = { kind = "two_level_dirichlet", clients = 100, beta = 0.3, fine_concentration = 10.0 }
/// "#).unwrap();
/// assert!(matches!(config.source, DatasetSource::Cifar100 { .. }));
/// assert!(matches!(config.partition, Some(PartitionSpec::TwoLevelDirichlet { clients: 100, .. })));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// The reader and its files.
    pub source: DatasetSource,
    /// How samples are split among clients; the number of clients is the partition's. Required
    /// for every source except `federated_digits`, which brings its own.
    pub partition: Option<PartitionSpec>,
    /// Few-shot sampling after partitioning: keep at most `shots` training images per class of
    /// every client ([`Partition::few_shot`]). The pathological partition has its own `shots`.
    pub shots: Option<usize>,
    /// Transform of training images.
    #[serde(default = "TransformConfig::train_default")]
    pub train_transform: TransformConfig,
    /// Transform of test images.
    #[serde(default = "TransformConfig::test_default")]
    pub test_transform: TransformConfig,
    /// Normalisation statistics of both transforms.
    #[serde(default)]
    pub normalize: Normalization,
    /// The display window of 16-bit grayscale image files (PNGs exported from CT, MR or X-ray
    /// DICOM): `{ centre = C, width = W }` in stored units, DICOM's linear VOI LUT (the
    /// study's Window Center and Width, brought to stored units through any modality rescale), or
    /// `"full_range"` (0 black, 65535 white). Each value is mapped to [0, 1] and rounded to 8
    /// bits ([`GrayWindow`], [`crate::data::RgbImage::from_gray16`]). 8-bit files and colour
    /// files decode as without it. Without it a 16-bit file is scaled as `"full_range"` does.
    /// Only for the sources that read files (`image_folder`, `coop`, `domain_tree`); written
    /// into the resolved configuration only when set, so earlier runs keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gray_window: Option<GrayWindow>,
}

/// A dataset reader and its location. Relative paths are relative to the working directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSource {
    /// CIFAR-10, binary version (`cifar-10-batches-bin`).
    Cifar10 {
        /// The directory holding `data_batch_1.bin` … `test_batch.bin`.
        root: PathBuf,
    },
    /// CIFAR-100, binary version (`cifar-100-binary`), with its coarse classes.
    Cifar100 {
        /// The directory holding `train.bin` and `test.bin`.
        root: PathBuf,
    },
    /// Caltech101, OxfordPets, Flowers102, Food101 or DTD through CoOp's split files.
    Coop {
        /// The data root holding CoOp's dataset directories (`caltech-101`, `oxford_pets`, ...).
        root: PathBuf,
        /// Which dataset.
        name: CoopDataset,
    },
    /// An ImageFolder pair: one directory per class.
    ImageFolder {
        /// Training images, `train/<class>/...`.
        train: PathBuf,
        /// Test images, `test/<class>/...`.
        test: PathBuf,
    },
    /// DomainNet or Office-Caltech10 as `root/<domain>/<class>/<image>` trees (10 classes).
    DomainTree {
        /// The tree's root.
        root: PathBuf,
        /// Which dataset.
        set: DomainSet,
        /// How train and test are cut.
        split: TreeSplit,
    },
    /// The embedded UCI digits in one plain style, partitioned by `partition`.
    Digits,
    /// The quickstart federation: the embedded digits, Dirichlet(`beta`) over labels among
    /// `clients`, each client drawing its digits in its own style (rotation, colours) — label and
    /// feature shift. The partition and styles are drawn from `federation.seed`.
    FederatedDigits {
        /// Number of clients.
        clients: usize,
        /// Dirichlet concentration of the label partition.
        beta: f64,
        /// Minimum train and test samples per client.
        min_size: usize,
    },
}

/// One split's image transform: geometry, filter and flip (the size is the model's, the
/// normalisation [`DatasetConfig::normalize`]). `fedotp train` applies these as configured (the
/// paper's protocol), not the model's own evaluation resize
/// ([`crate::clip::ClipConfig::image_resize`], which libfedotp and `fedotp encode` follow).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// How images are brought to the model's size.
    pub geometry: Geometry,
    /// Mirror left-right with probability ½.
    #[serde(default)]
    pub horizontal_flip: bool,
    /// The filter of the deterministic geometries (the random crop is bicubic); written into
    /// the resolved configuration only when not bicubic.
    #[serde(default, skip_serializing_if = "Interpolation::is_default")]
    pub interpolation: Interpolation,
}

/// Normalisation statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// The model's own statistics, what it was trained with: its configuration file's, CLIP's
    /// when it names none ([`crate::clip::ClipConfig::image_stats`]).
    #[default]
    Clip,
    /// The CIFAR-10 statistics the reference code uses for its CIFAR-10 runs.
    Cifar10Reference,
    /// The CIFAR-100 statistics the reference code uses for its CIFAR-100 runs.
    Cifar100Reference,
}

impl Normalization {
    /// The statistics, for a model trained with `model`'s.
    pub fn statistics(self, model: Normalize) -> Normalize {
        match self {
            Normalization::Clip => model,
            Normalization::Cifar10Reference => Normalize::CIFAR10_REFERENCE,
            Normalization::Cifar100Reference => Normalize::CIFAR100_REFERENCE,
        }
    }
}

impl TransformConfig {
    /// The training augmentation of docs/ALGORITHM.md §3:
    /// `RandomResizedCrop(scale (0.08, 1), ratio (3/4, 4/3))` and a horizontal flip.
    pub fn train_default() -> Self {
        let train = Transform::train(1);
        TransformConfig {
            geometry: train.geometry,
            horizontal_flip: train.horizontal_flip,
            interpolation: train.interpolation,
        }
    }

    /// The evaluation transform: short-side resize and centre crop, no flip.
    pub fn test_default() -> Self {
        TransformConfig {
            geometry: Geometry::ResizeCenterCrop,
            horizontal_flip: false,
            interpolation: Interpolation::Bicubic,
        }
    }

    /// The data module's transform at `size` pixels with `normalize`.
    pub fn transform(&self, size: u32, normalize: Normalize) -> Transform {
        Transform {
            size,
            geometry: self.geometry,
            horizontal_flip: self.horizontal_flip,
            normalize,
            interpolation: self.interpolation,
        }
    }
}

/// A dataset with its partition among clients.
#[derive(Clone, Debug, PartialEq)]
pub struct FederatedData {
    /// The samples.
    pub dataset: Dataset,
    /// Which samples each client holds.
    pub partition: Partition,
}

impl DatasetConfig {
    /// The number of clients, where it is known without reading the data (every partition but
    /// one client per domain).
    pub fn clients(&self) -> Option<usize> {
        if let DatasetSource::FederatedDigits { clients, .. } = self.source {
            return Some(clients);
        }
        match self.partition.as_ref()? {
            PartitionSpec::Iid { clients }
            | PartitionSpec::Pathological { clients, .. }
            | PartitionSpec::Dirichlet { clients, .. }
            | PartitionSpec::TwoLevelDirichlet { clients, .. }
            | PartitionSpec::KLabels { clients, .. } => Some(*clients),
            PartitionSpec::OneClientPerDomain => None,
            PartitionSpec::DomainDirichlet {
                clients_per_domain, ..
            } => match &self.source {
                DatasetSource::DomainTree { set, .. } => {
                    Some(clients_per_domain * set.domains().len())
                }
                _ => None,
            },
        }
    }

    /// Training images per owned class, where the configuration fixes it (few-shot settings).
    pub fn shots(&self) -> Option<usize> {
        match self.partition {
            Some(PartitionSpec::Pathological {
                shots: Some(shots), ..
            }) => Some(shots),
            _ => self.shots,
        }
    }

    /// Checks what can be checked without reading the data; the partition's own requests (more
    /// clients than samples, ...) are checked by [`DatasetConfig::load`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let federated_digits = matches!(self.source, DatasetSource::FederatedDigits { .. });
        match (&self.partition, federated_digits) {
            (None, false) => {
                return Err(ConfigError::invalid(
                    "dataset.partition",
                    "is required for this source",
                ))
            }
            (Some(_), true) => {
                return Err(ConfigError::invalid(
                    "dataset.partition",
                    "must be absent for federated_digits, whose clients, beta and min_size set its own Dirichlet partition",
                ))
            }
            _ => {}
        }
        if let DatasetSource::FederatedDigits {
            clients,
            beta,
            min_size: _,
        } = self.source
        {
            if clients == 0 {
                return Err(ConfigError::invalid(
                    "dataset.source.clients",
                    "must be positive",
                ));
            }
            if !(beta.is_finite() && beta > 0.0) {
                return Err(ConfigError::invalid(
                    "dataset.source.beta",
                    format!("must be positive and finite, got {beta}"),
                ));
            }
        }
        if self.shots == Some(0) {
            return Err(ConfigError::invalid("dataset.shots", "must be positive"));
        }
        if let (Some(PartitionSpec::Pathological { shots: Some(_), .. }), Some(_)) =
            (&self.partition, self.shots)
        {
            return Err(ConfigError::invalid(
                "dataset.shots",
                "is also set by dataset.partition.shots; keep one",
            ));
        }
        if let Some(window) = self.gray_window {
            self.validate_gray_window(window)?;
        }
        for (field, transform) in [
            ("dataset.train_transform", &self.train_transform),
            ("dataset.test_transform", &self.test_transform),
        ] {
            transform
                .transform(1, self.normalize.statistics(Normalize::CLIP))
                .validate()
                .map_err(|e| ConfigError::invalid(field, e))?;
        }
        Ok(())
    }

    fn validate_gray_window(&self, window: GrayWindow) -> Result<(), ConfigError> {
        let in_memory = match self.source {
            DatasetSource::Cifar10 { .. } => Some("cifar10"),
            DatasetSource::Cifar100 { .. } => Some("cifar100"),
            DatasetSource::Digits => Some("digits"),
            DatasetSource::FederatedDigits { .. } => Some("federated_digits"),
            DatasetSource::ImageFolder { .. }
            | DatasetSource::Coop { .. }
            | DatasetSource::DomainTree { .. } => None,
        };
        if let Some(kind) = in_memory {
            return Err(ConfigError::invalid(
                "dataset.gray_window",
                format!(
                    "applies to image files (sources image_folder, coop, domain_tree); the \
                     {kind} source's images are 8-bit and held in memory"
                ),
            ));
        }
        if let GrayWindow::CentreWidth { centre, width } = window {
            if !centre.is_finite() {
                return Err(ConfigError::invalid(
                    "dataset.gray_window.centre",
                    format!("must be finite, got {centre}"),
                ));
            }
            if !(width.is_finite() && width >= 1.0) {
                return Err(ConfigError::invalid(
                    "dataset.gray_window.width",
                    format!("must be finite and at least 1, got {width}"),
                ));
            }
        }
        Ok(())
    }

    /// Reads the dataset, partitions it with `seed` and applies few-shot sampling. Images of
    /// the embedded digits are rendered at `image_size` pixels; file-backed images are checked to
    /// exist (not decoded), and read through [`DatasetConfig::gray_window`] when it is set.
    pub fn load(&self, image_size: u32, seed: u64) -> Result<FederatedData, DataError> {
        let dataset = match &self.source {
            DatasetSource::Cifar10 { root } => cifar10(root)?,
            DatasetSource::Cifar100 { root } => cifar100(root)?,
            DatasetSource::Coop { root, name } => coop(root, *name)?,
            DatasetSource::ImageFolder { train, test } => image_folder(train, test)?,
            DatasetSource::DomainTree { root, set, split } => domain_tree(root, *set, *split)?,
            DatasetSource::Digits => digits(image_size)?,
            DatasetSource::FederatedDigits {
                clients,
                beta,
                min_size,
            } => {
                let federation = federated_digits(&DigitsFederation {
                    clients: *clients,
                    beta: *beta,
                    min_size: *min_size,
                    image_size,
                    seed,
                })?;
                return self.few_shot(federation.dataset, federation.partition, seed);
            }
        };
        dataset.check_files()?;
        let dataset = match self.gray_window {
            Some(window) => dataset.with_gray_window(window)?,
            None => dataset,
        };
        let spec = self.partition.as_ref().ok_or_else(|| {
            DataError::Partition("dataset.partition is required for this source".into())
        })?;
        let partition = spec.partition(&dataset, seed)?;
        self.few_shot(dataset, partition, seed)
    }

    fn few_shot(
        &self,
        dataset: Dataset,
        partition: Partition,
        seed: u64,
    ) -> Result<FederatedData, DataError> {
        let partition = match self.shots {
            Some(shots) => partition.few_shot(&dataset, shots, seed)?,
            None => partition,
        };
        Ok(FederatedData { dataset, partition })
    }
}
