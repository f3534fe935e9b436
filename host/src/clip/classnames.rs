//! The class names of the datasets FedOTP is evaluated on, in the order of their label indices.
//!
//! Each list is `host/assets/classnames/<dataset>.txt`, one name per line, written as the
//! reference code's dataset classes produce it (underscores kept: CoOp and FedOTP replace `_` with
//! a space only when they build prompts, see [`prompt_name`]). `host/assets/README.md` says where
//! each list comes from.
//!
//! ```
//! use fedotp_host::clip::classnames::{classnames, prompt_name, Dataset};
//!
//! let pets = Dataset::OxfordPets.classnames();
//! assert_eq!(pets.len(), 37);
//! assert_eq!(pets[1], "american_bulldog");
//! assert_eq!(prompt_name(pets[1]), "american bulldog");
//! assert_eq!(classnames("Cifar10").map(|names| names[0]), Some("airplane"));
//! ```

use std::sync::LazyLock;

/// A dataset whose class list ships with the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// CIFAR-10: 10 classes, the order of torchvision's `CIFAR10.classes`.
    Cifar10,
    /// CIFAR-100: 100 fine classes, the order of torchvision's `CIFAR100.classes`.
    Cifar100,
    /// Caltech101 as CoOp splits it: 100 classes (no background class, one face class).
    Caltech101,
    /// Oxford-IIIT Pets: 37 breeds, lower-case as CoOp reads them.
    OxfordPets,
    /// Oxford Flowers-102: 102 classes named by CoOp's `cat_to_name.json`.
    OxfordFlowers,
    /// Food-101: 101 classes.
    Food101,
    /// The Describable Textures Dataset: 47 classes.
    Dtd,
    /// The 10 DomainNet classes of FedOTP's (and FedPCL's / FedBN's) feature-shift experiments.
    DomainNet,
    /// The 10 classes Office and Caltech-256 share (Office-Caltech10), in FedOTP's label order.
    OfficeCaltech10,
}

impl Dataset {
    /// Every dataset with a shipped class list.
    pub const ALL: [Dataset; 9] = [
        Dataset::Cifar10,
        Dataset::Cifar100,
        Dataset::Caltech101,
        Dataset::OxfordPets,
        Dataset::OxfordFlowers,
        Dataset::Food101,
        Dataset::Dtd,
        Dataset::DomainNet,
        Dataset::OfficeCaltech10,
    ];

    /// The dataset's short name, which is also its list's file name (`cifar10`, `oxford_pets`, …).
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
            Dataset::Caltech101 => "caltech101",
            Dataset::OxfordPets => "oxford_pets",
            Dataset::OxfordFlowers => "oxford_flowers",
            Dataset::Food101 => "food101",
            Dataset::Dtd => "dtd",
            Dataset::DomainNet => "domainnet",
            Dataset::OfficeCaltech10 => "office_caltech10",
        }
    }

    /// Finds a dataset by name, ignoring case, `_` and `-`. Besides [`Dataset::name`] it accepts
    /// the names the CoOp / FedOTP configurations use (`OxfordPets`, `OxfordFlowers`,
    /// `DescribableTextures`, `Office`) and the short forms `pets`, `flowers`, `flowers102` and
    /// `officecaltech`.
    ///
    /// ```
    /// use fedotp_host::clip::classnames::Dataset;
    ///
    /// assert_eq!(Dataset::from_name("DescribableTextures"), Some(Dataset::Dtd));
    /// assert_eq!(Dataset::from_name("oxford-flowers"), Some(Dataset::OxfordFlowers));
    /// assert_eq!(Dataset::from_name("imagenet"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Dataset> {
        let key: String = name
            .chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect();
        Some(match key.as_str() {
            "cifar10" => Dataset::Cifar10,
            "cifar100" => Dataset::Cifar100,
            "caltech101" => Dataset::Caltech101,
            "oxfordpets" | "pets" => Dataset::OxfordPets,
            "oxfordflowers" | "flowers102" | "flowers" => Dataset::OxfordFlowers,
            "food101" => Dataset::Food101,
            "dtd" | "describabletextures" => Dataset::Dtd,
            "domainnet" => Dataset::DomainNet,
            "office" | "officecaltech" | "officecaltech10" => Dataset::OfficeCaltech10,
            _ => return None,
        })
    }

    /// The class names, index `i` being the name of label `i`.
    pub fn classnames(self) -> &'static [&'static str] {
        &LISTS[self as usize]
    }
}

/// The class names of a dataset given by name (see [`Dataset::from_name`]), or `None` for a
/// dataset without a shipped list.
pub fn classnames(dataset: &str) -> Option<&'static [&'static str]> {
    Dataset::from_name(dataset).map(Dataset::classnames)
}

/// A class name as CoOp and FedOTP put it into a prompt: every `_` replaced by a space.
pub fn prompt_name(classname: &str) -> String {
    classname.replace('_', " ")
}

/// The shipped lists, in the order of [`Dataset::ALL`] (which is the enum's declaration order).
static LISTS: LazyLock<[Vec<&'static str>; 9]> = LazyLock::new(|| {
    let lines = |text: &'static str| text.lines().collect::<Vec<_>>();
    [
        lines(include_str!("../../assets/classnames/cifar10.txt")),
        lines(include_str!("../../assets/classnames/cifar100.txt")),
        lines(include_str!("../../assets/classnames/caltech101.txt")),
        lines(include_str!("../../assets/classnames/oxford_pets.txt")),
        lines(include_str!("../../assets/classnames/oxford_flowers.txt")),
        lines(include_str!("../../assets/classnames/food101.txt")),
        lines(include_str!("../../assets/classnames/dtd.txt")),
        lines(include_str!("../../assets/classnames/domainnet.txt")),
        lines(include_str!("../../assets/classnames/office_caltech10.txt")),
    ]
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_have_the_datasets_class_counts_and_no_repeats() {
        let expected = [10, 100, 100, 37, 102, 101, 47, 10, 10];
        for (dataset, count) in Dataset::ALL.into_iter().zip(expected) {
            let names = dataset.classnames();
            assert_eq!(names.len(), count, "{}", dataset.name());
            let mut unique = names.to_vec();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), count, "{} repeats a name", dataset.name());
            for name in names {
                assert!(
                    !name.is_empty() && name.trim() == *name,
                    "{}: {name:?}",
                    dataset.name()
                );
            }
        }
    }

    #[test]
    fn every_dataset_is_found_by_its_own_name() {
        for dataset in Dataset::ALL {
            assert_eq!(Dataset::from_name(dataset.name()), Some(dataset));
        }
    }

    #[test]
    fn label_order_matches_the_reference_code() {
        // Caltech101: CoOp sorts folder names case-sensitively, so the renamed capitalised
        // folders (Faces, Leopards, Motorbikes) come first.
        assert_eq!(
            &Dataset::Caltech101.classnames()[..5],
            ["face", "leopard", "motorbike", "accordion", "airplane"]
        );
        // Flowers: label 41 and 78 as spelled in cat_to_name.json.
        assert_eq!(Dataset::OxfordFlowers.classnames()[40], "barbeton daisy");
        assert_eq!(Dataset::OxfordFlowers.classnames()[77], "lotus lotus");
        // FedOTP's label dictionaries.
        assert_eq!(Dataset::DomainNet.classnames()[3], "ice_cream");
        assert_eq!(Dataset::OfficeCaltech10.classnames()[5], "laptop_computer");
    }
}
