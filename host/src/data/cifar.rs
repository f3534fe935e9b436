//! CIFAR-10 and CIFAR-100 in their binary versions (`cifar-10-batches-bin`, `cifar-100-binary`).
//!
//! A CIFAR-10 record is 1 label byte then 3,072 pixel bytes; a CIFAR-100 record is a coarse label
//! byte, a fine label byte, then the pixels. The pixels are three 32 × 32 planes (red, green,
//! blue), rows top to bottom. Images are held in memory (150 MB for the 50,000 training images).

use std::path::Path;

use super::dataset::{CoarseClasses, Dataset, ImageSource, Sample};
use super::error::{DataError, Result};
use super::rgb::RgbImage;

const SIDE: usize = 32;
const PIXEL_BYTES: usize = 3 * SIDE * SIDE;

/// Loads CIFAR-10 from `dir` (holding `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`
/// and `batches.meta.txt`). Class names come from `batches.meta.txt`.
pub fn cifar10(dir: &Path) -> Result<Dataset> {
    let class_names = read_names(&dir.join("batches.meta.txt"), 10)?;
    let mut train = Vec::new();
    for batch in 1..=5 {
        train.extend(read_records(
            &dir.join(format!("data_batch_{batch}.bin")),
            1,
            10,
            None,
        )?);
    }
    let test = read_records(&dir.join("test_batch.bin"), 1, 10, None)?;
    Ok(Dataset {
        name: "cifar10".into(),
        class_names,
        domain_names: vec!["cifar10".into()],
        coarse: None,
        train,
        test,
    })
}

/// Loads CIFAR-100 from `dir` (holding `train.bin`, `test.bin`, `fine_label_names.txt` and
/// `coarse_label_names.txt`). Labels are the fine labels; [`Dataset::coarse`] maps each to its
/// coarse class, checked to be the same in every record.
pub fn cifar100(dir: &Path) -> Result<Dataset> {
    let class_names = read_names(&dir.join("fine_label_names.txt"), 100)?;
    let coarse_names = read_names(&dir.join("coarse_label_names.txt"), 20)?;
    let mut of_class = vec![None; 100];
    let train = read_records(&dir.join("train.bin"), 2, 100, Some(&mut of_class))?;
    let test = read_records(&dir.join("test.bin"), 2, 100, Some(&mut of_class))?;
    let of_class = of_class
        .iter()
        .enumerate()
        .map(|(fine, coarse)| {
            coarse.ok_or_else(|| {
                DataError::format(
                    &dir.join("train.bin"),
                    format!("fine class {fine} has no sample"),
                )
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok(Dataset {
        name: "cifar100".into(),
        class_names,
        domain_names: vec!["cifar100".into()],
        coarse: Some(CoarseClasses {
            names: coarse_names,
            of_class,
        }),
        train,
        test,
    })
}

/// Reads a names file: one name per line, blank lines ignored; exactly `expected` names.
fn read_names(path: &Path, expected: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(DataError::format(
            path,
            format!("expected {expected} class names, found {}", names.len()),
        ));
    }
    Ok(names)
}

/// Reads every record of a binary file with `label_bytes` leading label bytes (the last one is
/// the class label, < `num_classes`). For CIFAR-100 (`coarse` given) the first byte is the coarse
/// label (< 20), recorded per fine class and checked for consistency.
fn read_records(
    path: &Path,
    label_bytes: usize,
    num_classes: usize,
    mut coarse: Option<&mut Vec<Option<usize>>>,
) -> Result<Vec<Sample>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let record_len = label_bytes + PIXEL_BYTES;
    let corrupt = |offset: usize, reason: String| DataError::Record {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.is_empty() {
        return Err(DataError::format(path, "the file is empty"));
    }
    if bytes.len() % record_len != 0 {
        let offset = bytes.len() - bytes.len() % record_len;
        return Err(corrupt(
            offset,
            format!(
                "truncated record: {} bytes where a record is {record_len}",
                bytes.len() % record_len
            ),
        ));
    }
    let mut samples = Vec::with_capacity(bytes.len() / record_len);
    for (index, record) in bytes.chunks_exact(record_len).enumerate() {
        let offset = index * record_len;
        let label = usize::from(record[label_bytes - 1]);
        if label >= num_classes {
            return Err(corrupt(
                offset,
                format!("label {label} is not below {num_classes}"),
            ));
        }
        if let Some(of_class) = coarse.as_deref_mut() {
            let coarse_label = usize::from(record[0]);
            if coarse_label >= 20 {
                return Err(corrupt(
                    offset,
                    format!("coarse label {coarse_label} is not below 20"),
                ));
            }
            match of_class[label] {
                Some(known) if known != coarse_label => {
                    return Err(corrupt(
                        offset,
                        format!("fine label {label} has coarse label {coarse_label} here and {known} before"),
                    ))
                }
                _ => of_class[label] = Some(coarse_label),
            }
        }
        samples.push(Sample {
            image: ImageSource::Memory(planes_to_rgb(&record[label_bytes..])),
            label,
            domain: 0,
        });
    }
    Ok(samples)
}

/// Interleaves CIFAR's three 32 × 32 planes into an HWC image.
fn planes_to_rgb(planes: &[u8]) -> RgbImage {
    let plane = SIDE * SIDE;
    let pixels = (0..plane)
        .flat_map(|i| [planes[i], planes[plane + i], planes[2 * plane + i]])
        .collect();
    RgbImage::new(SIDE as u32, SIDE as u32, pixels).expect("a CIFAR record holds 32x32x3 bytes")
}
