//! The quickstart dataset: the UCI handwritten digits (1,797 images of 8 × 8, 10 classes,
//! CC BY 4.0 — see `host/assets/digits/README.md`), embedded in the crate so the quickstart
//! needs no download.
//!
//! [`digits`] renders every image as an RGB square (white ink on black) with a fixed train/test
//! split: within each class, every fifth image (in file order) is a test image — 1,442 train and
//! 355 test. [`federated_digits`] adds the heterogeneity FedOTP is about: a Dirichlet partition of
//! the labels (label shift) and, per client, its own rendering style — rotation, ink and paper
//! colours, which covers contrast, tint and inversion (feature shift). Each client's train and test
//! images are drawn in its style; a sample's `domain` is its client.

use std::path::Path;

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dataset::{Dataset, ImageSource, Sample};
use super::error::{DataError, Result};
use super::partition::{Partition, PartitionSpec};
use super::rgb::RgbImage;

/// The embedded file (format in `host/assets/digits/README.md`).
const DIGITS_FILE: &[u8] = include_bytes!("../../assets/digits/digits.bin");
/// The embedded file's name, for errors.
const DIGITS_NAME: &str = "host/assets/digits/digits.bin";
/// Side of the stored images.
const GRID: usize = 8;
/// Largest stored intensity (16 ink pixels in a 4 × 4 block).
const MAX_INTENSITY: u8 = 16;
/// Share of the canvas the 8 × 8 grid spans, leaving room for the rotated corners.
const DIGIT_EXTENT: f32 = 0.8;

/// One stored digit: label and 8 × 8 intensities (0..=16, row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RawDigit {
    label: usize,
    intensity: [u8; GRID * GRID],
    is_test: bool,
}

/// Parses the embedded file and assigns the fixed split.
fn raw_digits() -> Result<Vec<RawDigit>> {
    let path = Path::new(DIGITS_NAME);
    let record = 1 + GRID * GRID;
    if DIGITS_FILE.len() < 8 || &DIGITS_FILE[..4] != b"DIG1" {
        return Err(DataError::format(path, "missing the DIG1 header"));
    }
    let count = u32::from_le_bytes(DIGITS_FILE[4..8].try_into().expect("four bytes")) as usize;
    if DIGITS_FILE.len() != 8 + count * record {
        return Err(DataError::format(
            path,
            format!("{count} records need {} bytes", 8 + count * record),
        ));
    }
    let mut seen_per_class = [0usize; 10];
    DIGITS_FILE[8..]
        .chunks_exact(record)
        .enumerate()
        .map(|(index, bytes)| {
            let corrupt = |reason: String| DataError::Record {
                path: path.to_path_buf(),
                offset: (8 + index * record) as u64,
                reason,
            };
            let label = usize::from(bytes[0]);
            if label > 9 {
                return Err(corrupt(format!("label {label} is not a digit")));
            }
            if let Some(&v) = bytes[1..].iter().find(|&&v| v > MAX_INTENSITY) {
                return Err(corrupt(format!("intensity {v} exceeds {MAX_INTENSITY}")));
            }
            let is_test = seen_per_class[label] % 5 == 4;
            seen_per_class[label] += 1;
            Ok(RawDigit {
                label,
                intensity: bytes[1..].try_into().expect("64 bytes"),
                is_test,
            })
        })
        .collect()
}

/// An embedded digit as a client draws it, rendered when its image is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct DigitImage {
    /// The 8 × 8 grid of intensities (0..=16).
    intensity: [u8; GRID * GRID],
    /// The client's style.
    style: DigitStyle,
    /// The side of the square image, in pixels.
    size: u32,
}

// Styles are drawn from finite ranges, so their rotations compare equal to themselves.
impl Eq for DigitImage {}

impl DigitImage {
    /// The `size × size` image.
    pub fn render(&self) -> RgbImage {
        self.style.render(&self.intensity, self.size)
    }
}

/// How one client draws its digits.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DigitStyle {
    /// Counter-clockwise rotation in degrees.
    pub rotation_degrees: f32,
    /// Colour of full ink.
    pub ink: [u8; 3],
    /// Background colour.
    pub paper: [u8; 3],
}

impl DigitStyle {
    /// White ink on black paper, upright.
    pub const PLAIN: DigitStyle = DigitStyle {
        rotation_degrees: 0.0,
        ink: [255; 3],
        paper: [0; 3],
    };

    /// A random style: rotation in ±35°, one colour from the dark range (0..=95 per channel) and
    /// one from the light range (160..=255), ink dark or light with equal odds (an inversion).
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> DigitStyle {
        let rotation_degrees = rng.random_range(-35.0..=35.0);
        let dark: [u8; 3] = std::array::from_fn(|_| rng.random_range(0..=95));
        let light: [u8; 3] = std::array::from_fn(|_| rng.random_range(160..=255));
        let (ink, paper) = if rng.random::<bool>() {
            (light, dark)
        } else {
            (dark, light)
        };
        DigitStyle {
            rotation_degrees,
            ink,
            paper,
        }
    }

    /// Draws the 8 × 8 `intensity` grid (0..=16) as a `size × size` image: the grid spans the
    /// central 80 % of the canvas, rotated about the centre, bilinearly interpolated (zero ink
    /// outside the grid), then coloured `paper + (ink − paper) · intensity / 16`.
    fn render(&self, intensity: &[u8; GRID * GRID], size: u32) -> RgbImage {
        let (sin, cos) = self.rotation_degrees.to_radians().sin_cos();
        let ink_at = |gx: i32, gy: i32| -> f32 {
            if (0..GRID as i32).contains(&gx) && (0..GRID as i32).contains(&gy) {
                f32::from(intensity[gy as usize * GRID + gx as usize]) / f32::from(MAX_INTENSITY)
            } else {
                0.0
            }
        };
        let mut pixels = Vec::with_capacity(3 * size as usize * size as usize);
        for y in 0..size {
            for x in 0..size {
                // Canvas position relative to the centre, in units of the canvas side.
                let u = (x as f32 + 0.5) / size as f32 - 0.5;
                let v = (y as f32 + 0.5) / size as f32 - 0.5;
                // Undo the rotation to find where in the upright grid this pixel lies.
                let (ur, vr) = (cos * u - sin * v, sin * u + cos * v);
                let gx = (ur / DIGIT_EXTENT + 0.5) * GRID as f32 - 0.5;
                let gy = (vr / DIGIT_EXTENT + 0.5) * GRID as f32 - 0.5;
                let (x0, y0) = (gx.floor(), gy.floor());
                let (fx, fy) = (gx - x0, gy - y0);
                let (x0, y0) = (x0 as i32, y0 as i32);
                let t = (1.0 - fy) * ((1.0 - fx) * ink_at(x0, y0) + fx * ink_at(x0 + 1, y0))
                    + fy * ((1.0 - fx) * ink_at(x0, y0 + 1) + fx * ink_at(x0 + 1, y0 + 1));
                for c in 0..3 {
                    let (paper, ink) = (f32::from(self.paper[c]), f32::from(self.ink[c]));
                    pixels.push((paper + (ink - paper) * t).round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        RgbImage::new(size, size, pixels).expect("a size x size canvas")
    }
}

/// The digits as a dataset of `size × size` RGB images in [`DigitStyle::PLAIN`], with the fixed
/// train/test split. Class names are "0" … "9".
///
/// ```
/// let dataset = fedotp_host::data::digits(32).unwrap();
/// assert_eq!((dataset.train.len(), dataset.test.len()), (1442, 355));
/// assert_eq!(dataset.class_names[7], "7");
/// ```
pub fn digits(size: u32) -> Result<Dataset> {
    render_dataset(size, &[DigitStyle::PLAIN], |_, _| 0, "digits")
}

/// Builds the dataset from the raw digits, drawing sample `i` of each split in the style
/// `styles[style_of(is_test, i)]`, which is also its domain.
fn render_dataset(
    size: u32,
    styles: &[DigitStyle],
    style_of: impl Fn(bool, usize) -> usize,
    name: &str,
) -> Result<Dataset> {
    if size == 0 {
        return Err(DataError::Invalid(
            "digit images need a positive size".into(),
        ));
    }
    let mut dataset = Dataset {
        name: name.into(),
        class_names: (0..10).map(|d| d.to_string()).collect(),
        domain_names: if styles.len() == 1 {
            vec![name.into()]
        } else {
            (0..styles.len()).map(|c| format!("client{c}")).collect()
        },
        coarse: None,
        train: Vec::new(),
        test: Vec::new(),
    };
    for digit in raw_digits()? {
        let split = if digit.is_test {
            &mut dataset.test
        } else {
            &mut dataset.train
        };
        let domain = style_of(digit.is_test, split.len());
        split.push(Sample {
            image: ImageSource::Digit(DigitImage {
                intensity: digit.intensity,
                style: styles[domain],
                size,
            }),
            label: digit.label,
            domain,
        });
    }
    Ok(dataset)
}

/// Parameters of the quickstart federation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DigitsFederation {
    /// Number of clients.
    pub clients: usize,
    /// Dirichlet concentration of the label partition.
    pub beta: f64,
    /// Minimum train and test samples per client.
    pub min_size: usize,
    /// Side of the rendered images (the tiny model's image size, e.g. 32).
    pub image_size: u32,
    /// Seed of the partition and of the styles.
    pub seed: u64,
}

impl Default for DigitsFederation {
    fn default() -> Self {
        DigitsFederation {
            clients: 8,
            beta: 0.5,
            min_size: 10,
            image_size: 32,
            seed: 0,
        }
    }
}

/// The quickstart federation: the dataset (each sample drawn in its client's style, `domain` =
/// client), the label partition, and the styles.
#[derive(Clone, Debug, PartialEq)]
pub struct FederatedDigits {
    /// The rendered dataset.
    pub dataset: Dataset,
    /// Client `i` holds `partition.clients[i]`, all in `styles[i]`.
    pub partition: Partition,
    /// One style per client.
    pub styles: Vec<DigitStyle>,
}

/// Builds the quickstart federation: Dirichlet(`beta`) label partition of the digits among
/// `clients`, each client's images drawn in its own random [`DigitStyle`].
///
/// ```
/// use fedotp_host::data::{federated_digits, DigitsFederation, Split};
/// let fed = federated_digits(&DigitsFederation { clients: 4, ..Default::default() }).unwrap();
/// let client = &fed.partition.clients[2];
/// assert!(client.train.iter().all(|&i| fed.dataset.train[i].domain == 2));
/// ```
pub fn federated_digits(config: &DigitsFederation) -> Result<FederatedDigits> {
    let plain = digits(1)?;
    let spec = PartitionSpec::Dirichlet {
        clients: config.clients,
        beta: config.beta,
        min_size: config.min_size,
    };
    let mut partition = spec.partition(&plain, config.seed)?;
    // The styles get their own stream, so they do not shift when the partition's draws change.
    let mut style_rng = ChaCha8Rng::seed_from_u64(config.seed);
    style_rng.set_stream(1);
    let styles: Vec<DigitStyle> = (0..config.clients)
        .map(|_| DigitStyle::random(&mut style_rng))
        .collect();
    let mut owner = [vec![0; plain.train.len()], vec![0; plain.test.len()]];
    for (client, split) in partition.clients.iter_mut().enumerate() {
        split.domain = Some(client);
        split.train.iter().for_each(|&i| owner[0][i] = client);
        split.test.iter().for_each(|&i| owner[1][i] = client);
    }
    let dataset = render_dataset(
        config.image_size,
        &styles,
        |is_test, index| owner[usize::from(is_test)][index],
        "digits",
    )?;
    partition.dataset = dataset.name.clone();
    Ok(FederatedDigits {
        dataset,
        partition,
        styles,
    })
}
