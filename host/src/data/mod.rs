//! Datasets, image preprocessing and federated partitions.
//!
//! The path from files to a client's batch:
//! 1. A reader builds a [`Dataset`] — class names, domain names, train and test [`Sample`]s (an
//!    image in memory or a file path, a label, a domain): [`cifar10`], [`cifar100`],
//!    [`image_folder`], [`coop`] (Caltech101, OxfordPets, Flowers102, Food101, DTD through CoOp's
//!    split files), [`domain_tree`] (DomainNet, Office-Caltech10), and the embedded quickstart
//!    set [`digits`] / [`federated_digits`]. A corrupt record or file is a [`DataError`] naming
//!    the file (and byte offset).
//! 2. A [`PartitionSpec`] turns the dataset and a seed into a [`Partition`]: per client, index
//!    lists into `dataset.train` and `dataset.test`, printable as a count table and saved as
//!    JSON with the run.
//! 3. [`Dataset::load_image`] / [`Dataset::load_batch`] decode and transform samples into the
//!    model's input — `3 × size × size` CHW `f32` — with a [`Transform`]: the evaluation
//!    transform (bicubic short-side resize, centre crop, CLIP normalisation), the training
//!    transform (torchvision's `RandomResizedCrop` and a horizontal flip, drawn from the caller's
//!    seeded generator) or a plain resize. Resizing reproduces Pillow's bicubic and bilinear
//!    filters exactly ([`resize`]).
//!
//! A dataset of 16-bit grayscale PNGs (CT, MR, X-ray) is read through a display window with
//! [`Dataset::with_gray_window`] (`dataset.gray_window` in a run configuration).
//!
//! Images that are already in memory — a program's own pixel buffers, 8-bit RGB or gray or
//! 16-bit gray with a [`GrayWindow`] — become [`RgbImage`]s through [`RgbImage::from_rgb8`],
//! [`RgbImage::from_gray8`] and [`RgbImage::from_gray16`].
//!
//! Class names are those found in the dataset's own files; the curated lists for prompts live in
//! the CLIP module (`fedotp_host::clip::classnames`), which can replace [`Dataset::class_names`] once
//! a run has checked that both have the same length.
//!
//! ```
//! use fedotp_host::data::{federated_digits, DigitsFederation, Split, Transform};
//! use rand::SeedableRng;
//!
//! let fed = federated_digits(&DigitsFederation::default())?;
//! println!("{}", fed.partition.counts(&fed.dataset));
//! let client = &fed.partition.clients[0];
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let batch = fed.dataset.load_batch(Split::Train, &client.train[..4], &Transform::eval(32), &mut rng)?;
//! assert_eq!(batch.len(), 4 * 3 * 32 * 32);
//! # Ok::<(), fedotp_host::data::DataError>(())
//! ```

mod cifar;
mod coop;
mod dataset;
mod digits;
mod domains;
mod error;
mod folder;
mod partition;
mod pixels;
mod resample;
mod rgb;
mod transform;

pub use cifar::{cifar10, cifar100};
pub use coop::{coop, coop_split_file, CoopDataset};
pub use dataset::{CoarseClasses, Dataset, ImageSource, Sample, Split, WindowedFile};
pub use digits::{
    digits, federated_digits, DigitImage, DigitStyle, DigitsFederation, FederatedDigits,
};
pub use domains::{domain_tree, DomainSet, TreeSplit};
pub use error::{DataError, Result};
pub use folder::{image_folder, list_images};
pub use partition::{
    symmetric_dirichlet, ClientSplit, CountTable, Partition, PartitionSpec, MAX_DIRICHLET_DRAWS,
};
pub use pixels::{GrayWindow, PixelError, RowLayout};
pub use resample::{resize, Interpolation};
pub use rgb::RgbImage;
pub use transform::{sample_random_resized_crop, CropBox, Geometry, Normalize, Transform};
