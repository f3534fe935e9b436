//! The few-shot datasets of CoOp (Caltech101, OxfordPets, Flowers102, Food101, DTD) through
//! CoOp's split files `split_zhou_*.json`: `{"train": [[relative path, label, class name], ...],
//! "val": [...], "test": [...]}` with the images under CoOp's directory layout.

use std::path::Path;

use serde::Deserialize;

use super::dataset::{Dataset, ImageSource, Sample};
use super::error::{DataError, Result};

/// A dataset that CoOp ships split files for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoopDataset {
    /// Caltech101 (100 classes in CoOp's split; the background class is dropped).
    Caltech101,
    /// Oxford-IIIT Pets (37 classes).
    OxfordPets,
    /// Oxford Flowers-102.
    Flowers102,
    /// Food-101.
    Food101,
    /// Describable Textures (47 classes).
    Dtd,
}

impl CoopDataset {
    /// Every dataset, in the paper's table order.
    pub const ALL: [CoopDataset; 5] = [
        CoopDataset::Flowers102,
        CoopDataset::OxfordPets,
        CoopDataset::Food101,
        CoopDataset::Caltech101,
        CoopDataset::Dtd,
    ];

    /// A short lower-case name ("caltech101", "oxford_pets", "flowers102", "food101", "dtd").
    pub fn name(self) -> &'static str {
        match self {
            CoopDataset::Caltech101 => "caltech101",
            CoopDataset::OxfordPets => "oxford_pets",
            CoopDataset::Flowers102 => "flowers102",
            CoopDataset::Food101 => "food101",
            CoopDataset::Dtd => "dtd",
        }
    }

    /// The dataset's directory under the data root, as CoOp names it.
    pub fn directory(self) -> &'static str {
        match self {
            CoopDataset::Caltech101 => "caltech-101",
            CoopDataset::OxfordPets => "oxford_pets",
            CoopDataset::Flowers102 => "oxford_flowers",
            CoopDataset::Food101 => "food-101",
            CoopDataset::Dtd => "dtd",
        }
    }

    /// The image directory inside [`CoopDataset::directory`]; split paths are relative to it.
    pub fn image_directory(self) -> &'static str {
        match self {
            CoopDataset::Caltech101 => "101_ObjectCategories",
            CoopDataset::Flowers102 => "jpg",
            CoopDataset::OxfordPets | CoopDataset::Food101 | CoopDataset::Dtd => "images",
        }
    }

    /// The split file inside [`CoopDataset::directory`].
    pub fn split_file(self) -> &'static str {
        match self {
            CoopDataset::Caltech101 => "split_zhou_Caltech101.json",
            CoopDataset::OxfordPets => "split_zhou_OxfordPets.json",
            CoopDataset::Flowers102 => "split_zhou_OxfordFlowers.json",
            CoopDataset::Food101 => "split_zhou_Food101.json",
            CoopDataset::Dtd => "split_zhou_DescribableTextures.json",
        }
    }
}

/// Loads `which` from CoOp's layout under `root` (e.g. `root/caltech-101/101_ObjectCategories`
/// and `root/caltech-101/split_zhou_Caltech101.json`). Train and test come from the split file's
/// `train` and `test` lists (`val` is not used by FedOTP); class names from its third column.
/// Image files are opened when loaded; [`Dataset::check_files`] checks them all up front.
///
/// ```no_run
/// use fedotp_host::data::{coop, CoopDataset};
/// let pets = coop("/data".as_ref(), CoopDataset::OxfordPets)?;
/// assert_eq!(pets.num_classes(), 37);
/// # Ok::<(), fedotp_host::data::DataError>(())
/// ```
pub fn coop(root: &Path, which: CoopDataset) -> Result<Dataset> {
    let dir = root.join(which.directory());
    coop_split_file(
        &dir.join(which.split_file()),
        &dir.join(which.image_directory()),
        which.name(),
    )
}

#[derive(Deserialize)]
struct SplitFile {
    train: Vec<(String, i64, String)>,
    test: Vec<(String, i64, String)>,
}

/// Loads a CoOp split file whose paths are relative to `image_dir` (any dataset in that format).
pub fn coop_split_file(split_file: &Path, image_dir: &Path, name: &str) -> Result<Dataset> {
    let text = std::fs::read_to_string(split_file).map_err(|e| DataError::io(split_file, e))?;
    let split: SplitFile = serde_json::from_str(&text).map_err(|e| {
        DataError::format(
            split_file,
            format!("not a split file with train/val/test lists of [path, label, class name]: {e}"),
        )
    })?;
    // As Dassl: the number of classes is one more than the largest training label.
    let num_classes = split
        .train
        .iter()
        .map(|entry| entry.1.max(0) as usize + 1)
        .max()
        .ok_or_else(|| DataError::format(split_file, "the train list is empty"))?;
    let mut class_names: Vec<Option<String>> = vec![None; num_classes];
    let mut convert = |list: &[(String, i64, String)], list_name: &str| -> Result<Vec<Sample>> {
        list.iter()
            .enumerate()
            .map(|(index, (path, label, class_name))| {
                let bad = |reason: String| {
                    DataError::format(split_file, format!("{list_name}[{index}]: {reason}"))
                };
                let label = usize::try_from(*label)
                    .ok()
                    .filter(|&l| l < num_classes)
                    .ok_or_else(|| bad(format!("label {label} is outside 0..{num_classes}")))?;
                match &class_names[label] {
                    Some(known) if known != class_name => {
                        return Err(bad(format!(
                            "label {label} is named {class_name:?} here and {known:?} before"
                        )))
                    }
                    Some(_) => {}
                    None => class_names[label] = Some(class_name.clone()),
                }
                Ok(Sample {
                    image: ImageSource::File(image_dir.join(path)),
                    label,
                    domain: 0,
                })
            })
            .collect()
    };
    let train = convert(&split.train, "train")?;
    let test = convert(&split.test, "test")?;
    let class_names = class_names
        .into_iter()
        .enumerate()
        .map(|(label, name)| {
            name.ok_or_else(|| {
                DataError::format(split_file, format!("label {label} has no sample"))
            })
        })
        .collect::<Result<Vec<String>>>()?;
    Ok(Dataset {
        name: name.to_string(),
        class_names,
        domain_names: vec![name.to_string()],
        coarse: None,
        train,
        test,
    })
}
