//! Multi-domain datasets as `root/<domain>/<class>/<image>` trees, restricted to the 10 classes
//! that FedOTP (after FedBN) uses: DomainNet (6 domains) and Office-Caltech10 (4 domains).
//!
//! Unlike the released code (docs/ALGORITHM.md §6.5), labels come from each image's own class
//! directory, so images and labels cannot drift apart, and classes and domains are in a fixed,
//! sorted order.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::dataset::{Dataset, ImageSource, Sample};
use super::error::{DataError, Result};
use super::folder::list_images;

/// A multi-domain dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainSet {
    /// DomainNet: clipart, infograph, painting, quickdraw, real, sketch.
    DomainNet,
    /// Office-Caltech10: amazon, caltech, dslr, webcam.
    OfficeCaltech10,
}

impl DomainSet {
    /// A short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DomainSet::DomainNet => "domainnet",
            DomainSet::OfficeCaltech10 => "office_caltech10",
        }
    }

    /// The domain directories, in domain-index order.
    pub fn domains(self) -> &'static [&'static str] {
        match self {
            DomainSet::DomainNet => &[
                "clipart",
                "infograph",
                "painting",
                "quickdraw",
                "real",
                "sketch",
            ],
            DomainSet::OfficeCaltech10 => &["amazon", "caltech", "dslr", "webcam"],
        }
    }

    /// The 10 class directories, sorted: label `i` is `classes()[i]`.
    pub fn classes(self) -> &'static [&'static str] {
        match self {
            DomainSet::DomainNet => &[
                "bird",
                "feather",
                "headphones",
                "ice_cream",
                "teapot",
                "tiger",
                "whale",
                "windmill",
                "wine_glass",
                "zebra",
            ],
            DomainSet::OfficeCaltech10 => &[
                "back_pack",
                "bike",
                "calculator",
                "headphones",
                "keyboard",
                "laptop_computer",
                "monitor",
                "mouse",
                "mug",
                "projector",
            ],
        }
    }
}

/// How a domain tree is cut into train and test.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TreeSplit {
    /// DomainNet's official lists `root/<domain>_train.txt` and `root/<domain>_test.txt` (lines
    /// `<domain>/<class>/<file> <label>`); lines of other classes are skipped, the label column is
    /// ignored (the class directory decides).
    ListFiles,
    /// Per domain and class: the sorted images, shuffled with `seed`, the first
    /// `round(n · test_fraction)` to test.
    Seeded {
        /// Fraction of each class's images that go to test, in [0, 1).
        test_fraction: f64,
        /// Seed of the shuffle.
        seed: u64,
    },
}

/// Loads `set` from `root/<domain>/<class>/...` (only the 10 classes; other class directories
/// are ignored, a missing one is an error). Every sample's `domain` is its domain's index.
///
/// ```no_run
/// use fedotp_host::data::{domain_tree, DomainSet, TreeSplit};
/// let office = domain_tree(
///     "/data/office_caltech_10".as_ref(),
///     DomainSet::OfficeCaltech10,
///     TreeSplit::Seeded { test_fraction: 0.2, seed: 1 },
/// )?;
/// assert_eq!(office.domain_names.len(), 4);
/// # Ok::<(), fedotp_host::data::DataError>(())
/// ```
pub fn domain_tree(root: &Path, set: DomainSet, split: TreeSplit) -> Result<Dataset> {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (domain, domain_name) in set.domains().iter().enumerate() {
        match split {
            TreeSplit::ListFiles => {
                for (list, out) in [("train", &mut train), ("test", &mut test)] {
                    let list_file = root.join(format!("{domain_name}_{list}.txt"));
                    out.extend(read_list_file(root, &list_file, set, domain)?);
                }
            }
            TreeSplit::Seeded {
                test_fraction,
                seed,
            } => {
                if !(0.0..1.0).contains(&test_fraction) {
                    return Err(DataError::Invalid(format!(
                        "test fraction {test_fraction} is not in [0, 1)"
                    )));
                }
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for (label, class) in set.classes().iter().enumerate() {
                    let dir = root.join(domain_name).join(class);
                    if !dir.is_dir() {
                        return Err(DataError::format(&dir, "missing class directory"));
                    }
                    let mut images = list_images(&dir)?;
                    images.shuffle(&mut rng);
                    let n_test = (images.len() as f64 * test_fraction).round() as usize;
                    for (i, path) in images.into_iter().enumerate() {
                        let sample = Sample {
                            image: ImageSource::File(path),
                            label,
                            domain,
                        };
                        if i < n_test {
                            test.push(sample);
                        } else {
                            train.push(sample);
                        }
                    }
                }
            }
        }
    }
    Ok(Dataset {
        name: set.name().into(),
        class_names: set.classes().iter().map(|c| c.to_string()).collect(),
        domain_names: set.domains().iter().map(|d| d.to_string()).collect(),
        coarse: None,
        train,
        test,
    })
}

/// The samples of one DomainNet list file that belong to the 10 classes, in file order.
fn read_list_file(
    root: &Path,
    list_file: &Path,
    set: DomainSet,
    domain: usize,
) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(list_file).map_err(|e| DataError::io(list_file, e))?;
    let mut samples = Vec::new();
    for (line_number, line) in text.lines().enumerate() {
        let Some(relative) = line.split_whitespace().next() else {
            continue;
        };
        let parts: Vec<&str> = relative.split('/').collect();
        if parts.len() < 3 || parts[0] != set.domains()[domain] {
            return Err(DataError::format(
                list_file,
                format!(
                    "line {}: {relative:?} is not <{}>/<class>/<file>",
                    line_number + 1,
                    set.domains()[domain]
                ),
            ));
        }
        if let Some(label) = set.classes().iter().position(|c| *c == parts[1]) {
            samples.push(Sample {
                image: ImageSource::File(root.join(relative)),
                label,
                domain,
            });
        }
    }
    Ok(samples)
}
