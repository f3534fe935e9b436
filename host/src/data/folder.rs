//! ImageFolder: one directory per class, as torchvision's `ImageFolder` reads it.
//!
//! Classes are the sub-directories sorted by name; each class's images are the JPEG and PNG files
//! anywhere below its directory, sorted by path. Hidden entries are skipped, as are files that are
//! not images; an image in a format this crate does not decode (BMP, GIF, TIFF, WebP, PPM/PGM) is
//! an error rather than a silently smaller dataset. Symbolic links are followed, but a directory
//! is listed once: a link to a directory already listed (a loop) or to one outside the class's
//! directory (which would take another class's images) is skipped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, ImageSource, Sample};
use super::error::{DataError, Result};

/// Loads an ImageFolder pair: `train_dir/<class>/...` and `test_dir/<class>/...`. Labels follow
/// the sorted class directories of `train_dir`; `test_dir` may lack a class but may not add one.
///
/// ```no_run
/// let dataset = fedotp_host::data::image_folder("data/pets/train".as_ref(), "data/pets/test".as_ref())?;
/// println!("{} classes, {} training images", dataset.num_classes(), dataset.train.len());
/// # Ok::<(), fedotp_host::data::DataError>(())
/// ```
pub fn image_folder(train_dir: &Path, test_dir: &Path) -> Result<Dataset> {
    let class_names = class_directories(train_dir)?;
    if class_names.is_empty() {
        return Err(DataError::format(train_dir, "no class directories"));
    }
    let train = folder_samples(train_dir, &class_names)?;
    for class in class_directories(test_dir)? {
        if !class_names.contains(&class) {
            return Err(DataError::format(
                &test_dir.join(&class),
                "this class has no directory in the training folder",
            ));
        }
    }
    let test = folder_samples(test_dir, &class_names)?;
    let name = train_dir.parent().and_then(Path::file_name).map_or_else(
        || "image_folder".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Dataset {
        name: name.clone(),
        class_names,
        domain_names: vec![name],
        coarse: None,
        train,
        test,
    })
}

/// The samples of every class directory of `root` that exists (labels = index in `classes`).
fn folder_samples(root: &Path, classes: &[String]) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        if dir.is_dir() {
            samples.extend(list_images(&dir)?.into_iter().map(|path| Sample {
                image: ImageSource::File(path),
                label,
                domain: 0,
            }));
        }
    }
    Ok(samples)
}

/// The names of the non-hidden sub-directories of `dir`, sorted.
pub(crate) fn class_directories(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in read_dir_sorted(dir)? {
        if entry.is_dir() {
            names.push(file_name(&entry));
        }
    }
    Ok(names)
}

/// Every JPEG/PNG file below `dir`, in torchvision's order: a directory's own files sorted by
/// name, then its sub-directories in name order. Each directory is listed once, and none outside
/// `dir`: a symbolic link to a directory already listed, or out of `dir`, is skipped.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let root = dir.canonicalize().map_err(|e| DataError::io(dir, e))?;
    let mut visited = HashSet::from([root.clone()]);
    let mut images = Vec::new();
    list_images_below(dir, &root, &mut visited, &mut images)?;
    Ok(images)
}

fn list_images_below(
    dir: &Path,
    root: &Path,
    visited: &mut HashSet<PathBuf>,
    images: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut sub_directories = Vec::new();
    for path in read_dir_sorted(dir)? {
        if path.is_dir() {
            sub_directories.push(path);
            continue;
        }
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "jpg" | "jpeg" | "png" => images.push(path),
            "bmp" | "gif" | "tif" | "tiff" | "webp" | "ppm" | "pgm" => {
                return Err(DataError::Image {
                    path,
                    source: "unsupported image format (JPEG and PNG are supported)".into(),
                })
            }
            _ => {}
        }
    }
    for sub_directory in sub_directories {
        let target = sub_directory
            .canonicalize()
            .map_err(|e| DataError::io(&sub_directory, e))?;
        if target.starts_with(root) && visited.insert(target) {
            list_images_below(&sub_directory, root, visited, images)?;
        }
    }
    Ok(())
}

/// The non-hidden entries of `dir`, sorted by name.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if !file_name(&path).starts_with('.') {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
