//! From an [`RgbImage`] to the model's input: a `3 × size × size` CHW `f32` tensor, resized the
//! way the reference (PIL + torchvision) resizes and normalised with CLIP's statistics.
//!
//! Four geometries cover the reference's pipelines and open_clip's `resize_mode`s:
//! - [`Geometry::ResizeCenterCrop`] — evaluation (CLIP's `preprocess`, Dassl's test transform,
//!   open_clip's `shortest`): resize of the short side to `size`, long side
//!   `⌊size · long / short⌋`, then the centred `size × size` crop (offset
//!   `round((extent − size) / 2)`, halves to even as Python's `round`).
//! - [`Geometry::ResizeLongestPad`] — open_clip's `longest`: the long side to `size`, the short
//!   side `round(short · size / long)`, then padded with a fill colour to `size × size`, centred
//!   (`⌊pad / 2⌋` before, the rest after).
//! - [`Geometry::RandomResizedCrop`] — training: torchvision's `RandomResizedCrop` sampling
//!   (10 tries of area fraction ~ U(scale) and log-aspect ~ U(log ratio), side lengths rounded half
//!   to even, then the centre-crop fallback), crop, bicubic resize to `size × size`.
//! - [`Geometry::Stretch`] — both sides to `size` (the reference's CIFAR 32 → 224 resize,
//!   open_clip's `squash`).
//!
//! then an optional horizontal flip with probability ½ (drawn after the crop, as torchvision's
//! `RandomHorizontalFlip` follows `RandomResizedCrop`), then `(v / 255 − mean) / std` in `f32`.
//! All resizing is [`resize`], Pillow's bit for bit: bicubic, or bilinear for the evaluation
//! geometries of a model preprocessed that way ([`Transform::interpolation`]; the random crop is
//! always bicubic, as torchvision's and open_clip's training transforms are).
//!
//! Randomness comes from the caller's generator; use a seeded `rand_chacha::ChaCha8Rng` (its
//! seed, stream and word position are its whole state, so it can be checkpointed) and the same
//! draws give the same images on every platform.

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::resample::{resize, Interpolation};
use super::rgb::RgbImage;

/// Per-channel normalisation `(v / 255 − mean) / std` (RGB order).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Channel means in [0, 1].
    pub mean: [f32; 3],
    /// Channel standard deviations (positive).
    pub std: [f32; 3],
}

impl Normalize {
    // The constants go through f64 first, as the reference's Python floats do before torch casts
    // them to f32, so they are the very same f32 values.

    /// CLIP's statistics — every setting of the paper except the reference's CIFAR runs.
    pub const CLIP: Normalize = Normalize {
        mean: [
            0.481_454_66_f64 as f32,
            0.457_827_5_f64 as f32,
            0.408_210_73_f64 as f32,
        ],
        std: [
            0.268_629_54_f64 as f32,
            0.261_302_58_f64 as f32,
            0.275_777_11_f64 as f32,
        ],
    };

    /// Checks every channel: a finite mean and a finite, positive standard deviation.
    pub fn validate(&self) -> Result<()> {
        for c in 0..3 {
            let (mean, std) = (self.mean[c], self.std[c]);
            if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
                return Err(DataError::Invalid(format!(
                    "normalisation of channel {c} needs a finite mean and a positive std, got {mean} and {std}"
                )));
            }
        }
        Ok(())
    }

    /// The statistics the reference code uses for CIFAR-10.
    pub const CIFAR10_REFERENCE: Normalize = Normalize {
        mean: [0.4914_f64 as f32, 0.4822_f64 as f32, 0.4465_f64 as f32],
        std: [0.2023_f64 as f32, 0.1994_f64 as f32, 0.2010_f64 as f32],
    };

    /// The statistics the reference code uses for CIFAR-100.
    pub const CIFAR100_REFERENCE: Normalize = Normalize {
        mean: [0.5071_f64 as f32, 0.4865_f64 as f32, 0.4409_f64 as f32],
        std: [0.2673_f64 as f32, 0.2564_f64 as f32, 0.2762_f64 as f32],
    };
}

/// How the image is brought to `size × size` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Geometry {
    /// Short side to `size`, then the centred square crop.
    ResizeCenterCrop,
    /// Both sides to `size`; the aspect ratio is not kept.
    Stretch,
    /// Long side to `size`, aspect ratio kept, then padded to the centred square with `fill` in
    /// every channel (open_clip's `resize_mode = "longest"`, `fill_color`).
    ResizeLongestPad {
        /// The padding's value, 0–255, in all three channels.
        #[serde(default)]
        fill: u8,
    },
    /// torchvision's `RandomResizedCrop(size, scale, ratio, BICUBIC)`.
    RandomResizedCrop {
        /// Range of the crop's area as a fraction of the image's (torchvision: (0.08, 1)).
        scale: (f64, f64),
        /// Range of the crop's aspect ratio width / height (torchvision: (3/4, 4/3)).
        ratio: (f64, f64),
    },
}

/// A crop rectangle in pixels: rows `top .. top + height`, columns `left .. left + width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: u32,
    /// First column.
    pub left: u32,
    /// Number of rows.
    pub height: u32,
    /// Number of columns.
    pub width: u32,
}

/// The image transform: geometry, optional random horizontal flip, normalisation.
///
/// ```
/// use fedotp_host::data::{RgbImage, Transform};
/// use rand::SeedableRng;
///
/// let image = RgbImage::new(40, 30, vec![200; 40 * 30 * 3]).unwrap();
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
/// let input = Transform::eval(16).apply(&image, &mut rng).unwrap();
/// assert_eq!(input.len(), 3 * 16 * 16); // CHW
/// let train = Transform::train(16);
/// assert!(train.is_random() && !Transform::eval(16).is_random());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    /// Output side length in pixels (the model's image size).
    pub size: u32,
    /// How the image is brought to `size × size`.
    pub geometry: Geometry,
    /// Mirror left-right with probability ½.
    pub horizontal_flip: bool,
    /// Normalisation applied after scaling to [0, 1].
    pub normalize: Normalize,
    /// The resampling filter of the deterministic geometries (the model's preprocessing); the
    /// random crop is bicubic whatever this says. Serialised only when not bicubic, so the
    /// transforms of earlier runs (and the feature caches keyed by them) keep their form.
    #[serde(default, skip_serializing_if = "Interpolation::is_default")]
    pub interpolation: Interpolation,
}

impl Transform {
    /// The evaluation transform: short-side bicubic resize, centre crop, CLIP normalisation.
    pub fn eval(size: u32) -> Self {
        Transform {
            size,
            geometry: Geometry::ResizeCenterCrop,
            horizontal_flip: false,
            normalize: Normalize::CLIP,
            interpolation: Interpolation::Bicubic,
        }
    }

    /// The training transform: `RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3),
    /// bicubic)`, horizontal flip with p = ½, CLIP normalisation.
    pub fn train(size: u32) -> Self {
        Transform {
            size,
            geometry: Geometry::RandomResizedCrop {
                scale: (0.08, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            },
            horizontal_flip: true,
            normalize: Normalize::CLIP,
            interpolation: Interpolation::Bicubic,
        }
    }

    /// No augmentation, both sides resized to `size` (the reference's CIFAR pipeline).
    pub fn stretch(size: u32) -> Self {
        Transform {
            size,
            geometry: Geometry::Stretch,
            horizontal_flip: false,
            normalize: Normalize::CLIP,
            interpolation: Interpolation::Bicubic,
        }
    }

    /// The same transform with other normalisation statistics.
    pub fn with_normalize(self, normalize: Normalize) -> Self {
        Transform { normalize, ..self }
    }

    /// Whether the output depends on the random generator (if not, features can be cached).
    pub fn is_random(&self) -> bool {
        self.horizontal_flip || matches!(self.geometry, Geometry::RandomResizedCrop { .. })
    }

    /// Number of `f32` values in one output: `3 · size · size`.
    pub fn output_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// Checks the parameters; every entry point calls it.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: String| Err(DataError::Invalid(what));
        if self.size == 0 {
            return invalid("transform size must be positive".into());
        }
        if let Geometry::RandomResizedCrop { scale, ratio } = self.geometry {
            validate_crop_ranges(scale, ratio)?;
        }
        self.normalize.validate()
    }

    /// The `size × size` RGB image before normalisation (resized, cropped, maybe flipped).
    pub fn apply_geometry<R: Rng + ?Sized>(
        &self,
        image: &RgbImage,
        rng: &mut R,
    ) -> Result<RgbImage> {
        self.validate()?;
        let (size, filter) = (self.size, self.interpolation);
        let mut out = match self.geometry {
            Geometry::ResizeCenterCrop => {
                let (width, height) = short_side_size(image.width(), image.height(), size);
                let resized = resize(image, width, height, filter)?;
                let top = centered_offset(height, size);
                let left = centered_offset(width, size);
                resized.crop(left, top, size, size)
            }
            Geometry::ResizeLongestPad { fill } => {
                let (width, height) = long_side_size(image.width(), image.height(), size);
                let resized = resize(image, width, height, filter)?;
                pad_centered(&resized, size, fill)
            }
            Geometry::Stretch => resize(image, size, size, filter)?,
            Geometry::RandomResizedCrop { scale, ratio } => {
                let crop = sample_crop_box(
                    image.width(),
                    image.height(),
                    scale,
                    ratio,
                    &mut RngDraws(rng),
                );
                let region = image.crop(crop.left, crop.top, crop.width, crop.height);
                resize(&region, size, size, Interpolation::Bicubic)?
            }
        };
        if self.horizontal_flip && rng.random::<f64>() < 0.5 {
            out.flip_horizontal();
        }
        Ok(out)
    }

    /// The model input for `image`: `3 × size × size` values, CHW.
    pub fn apply<R: Rng + ?Sized>(&self, image: &RgbImage, rng: &mut R) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.output_len()];
        self.apply_into(image, rng, &mut out)?;
        Ok(out)
    }

    /// As [`Transform::apply`], writing into `out` (`3 · size · size` values, e.g. one slot of a
    /// batch buffer).
    pub fn apply_into<R: Rng + ?Sized>(
        &self,
        image: &RgbImage,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<()> {
        if out.len() != self.output_len() {
            return Err(DataError::Invalid(format!(
                "output buffer holds {} values, the transform writes {}",
                out.len(),
                self.output_len()
            )));
        }
        let square = self.apply_geometry(image, rng)?;
        let plane = self.size as usize * self.size as usize;
        for (c, channel) in out.chunks_exact_mut(plane).enumerate() {
            let (mean, std) = (self.normalize.mean[c], self.normalize.std[c]);
            for (value, pixel) in channel.iter_mut().zip(square.pixels().chunks_exact(3)) {
                // Two correctly rounded f32 operations each, as torch's ToTensor and Normalize.
                *value = (f32::from(pixel[c]) / 255.0 - mean) / std;
            }
        }
        Ok(())
    }
}

/// Checks `RandomResizedCrop`'s ranges: `0 < scale.0 <= scale.1 <= 1`, `0 < ratio.0 <= ratio.1`.
fn validate_crop_ranges(scale: (f64, f64), ratio: (f64, f64)) -> Result<()> {
    let range_ok = |(lo, hi): (f64, f64)| lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi;
    if !range_ok(scale) || scale.1 > 1.0 {
        return Err(DataError::Invalid(format!(
            "crop scale {scale:?} must satisfy 0 < lo <= hi <= 1"
        )));
    }
    if !range_ok(ratio) {
        return Err(DataError::Invalid(format!(
            "crop ratio {ratio:?} must satisfy 0 < lo <= hi"
        )));
    }
    Ok(())
}

/// torchvision's `Resize(size)` output for a `width × height` image: the short side becomes
/// `size`, the long side `⌊size · long / short⌋`.
fn short_side_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let scaled =
        |long: u32, short: u32| (u64::from(size) * u64::from(long) / u64::from(short)) as u32;
    if width <= height {
        (size, scaled(height, width))
    } else {
        (scaled(width, height), size)
    }
}

/// open_clip's `ResizeKeepRatio(size, longest=1)` output for a `width × height` image: the long
/// side becomes `size`, the short side `round(short / (long / size))` (halves to even, Python's
/// `round`), at least one pixel.
fn long_side_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let ratio = f64::from(width.max(height)) / f64::from(size);
    let scaled = |side: u32| ((f64::from(side) / ratio).round_ties_even() as u32).max(1);
    (scaled(width), scaled(height))
}

/// open_clip's `center_crop_or_pad` for an image no larger than `size` on either side (what
/// [`long_side_size`] gives): `fill` around it, `⌊(size − extent) / 2⌋` before and the rest after.
fn pad_centered(image: &RgbImage, size: u32, fill: u8) -> RgbImage {
    let (width, height) = (image.width().min(size), image.height().min(size));
    let (left, top) = ((size - width) / 2, (size - height) / 2);
    let mut pixels = vec![fill; 3 * size as usize * size as usize];
    let row_bytes = 3 * width as usize;
    for (y, row) in image
        .pixels()
        .chunks_exact(3 * image.width() as usize)
        .take(height as usize)
        .enumerate()
    {
        let at = 3 * ((top as usize + y) * size as usize + left as usize);
        pixels[at..at + row_bytes].copy_from_slice(&row[..row_bytes]);
    }
    RgbImage::new(size, size, pixels).expect("sizes are consistent")
}

/// torchvision's centre-crop offset `int(round((extent − size) / 2))`: halves round to even.
fn centered_offset(extent: u32, size: u32) -> u32 {
    (f64::from(extent - size) / 2.0).round_ties_even() as u32
}

/// The random numbers the crop sampler consumes; a trait so tests can replay torch's draws.
trait CropDraws {
    /// Uniform in `[lo, hi)`, as `torch.empty(1).uniform_(lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64;
    /// Uniform integer in `[0, n)`, as `torch.randint(0, n)`.
    fn below(&mut self, n: u32) -> u32;
}

struct RngDraws<'a, R: ?Sized>(&'a mut R);

impl<R: Rng + ?Sized> CropDraws for RngDraws<'_, R> {
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.random::<f64>()
    }

    fn below(&mut self, n: u32) -> u32 {
        self.0.random_range(0..n)
    }
}

/// torchvision's `RandomResizedCrop.get_params` on a `width × height` image.
fn sample_crop_box(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    draws: &mut impl CropDraws,
) -> CropBox {
    let area = f64::from(width) * f64::from(height);
    let log_ratio = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * draws.uniform(scale.0, scale.1);
        let aspect_ratio = draws.uniform(log_ratio.0, log_ratio.1).exp();
        // Python's round() rounds halves to even.
        let w = (target_area * aspect_ratio).sqrt().round_ties_even();
        let h = (target_area / aspect_ratio).sqrt().round_ties_even();
        if 0.0 < w && w <= f64::from(width) && 0.0 < h && h <= f64::from(height) {
            let (w, h) = (w as u32, h as u32);
            let top = draws.below(height - h + 1);
            let left = draws.below(width - w + 1);
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    // Fallback: the largest centred crop whose aspect ratio is within `ratio`. (A side of at
    // least one pixel is kept for absurd ratios, where torchvision would produce an empty crop.)
    let in_ratio = f64::from(width) / f64::from(height);
    let (w, h) = if in_ratio < ratio.0 {
        (
            width,
            ((f64::from(width) / ratio.0).round_ties_even() as u32).max(1),
        )
    } else if in_ratio > ratio.1 {
        (
            ((f64::from(height) * ratio.1).round_ties_even() as u32).max(1),
            height,
        )
    } else {
        (width, height)
    };
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// Samples a crop box the way `RandomResizedCrop(scale, ratio)` does, for a `width × height`
/// image (exposed for inspection and plotting of the augmentation).
pub fn sample_random_resized_crop<R: Rng + ?Sized>(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> Result<CropBox> {
    validate_crop_ranges(scale, ratio)?;
    if width == 0 || height == 0 {
        return Err(DataError::Invalid(format!(
            "cannot crop a {width}x{height} image"
        )));
    }
    Ok(sample_crop_box(
        width,
        height,
        scale,
        ratio,
        &mut RngDraws(rng),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the draws torchvision made (logged by `tests/scripts/make_data_fixtures.py`),
    /// checking that we ask for the same draws in the same order and end with the same box.
    struct Replay {
        draws: Vec<serde_json::Value>,
        next: usize,
    }

    impl Replay {
        fn take(&mut self, kind: &str) -> Vec<f64> {
            let draw = &self.draws[self.next];
            self.next += 1;
            let values = draw
                .get(kind)
                .unwrap_or_else(|| panic!("expected a {kind} draw, torchvision made {draw}"));
            values
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        }
    }

    impl CropDraws for Replay {
        fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            let logged = self.take("uniform");
            assert!(
                (logged[0] - lo).abs() < 1e-12 && (logged[1] - hi).abs() < 1e-12,
                "bounds {lo}, {hi} vs {logged:?}"
            );
            logged[2]
        }

        fn below(&mut self, n: u32) -> u32 {
            let logged = self.take("randint");
            assert_eq!(logged[0] as u32, n, "randint bound");
            logged[1] as u32
        }
    }

    #[test]
    fn random_resized_crop_follows_torchvision_draw_by_draw() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/data/crop/random_resized_crop_params.json"
        );
        let cases: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut fallbacks = 0;
        for case in &cases {
            let number = |key: &str| case[key].as_f64().unwrap();
            let pair = |key: &str| {
                (
                    case[key][0].as_f64().unwrap(),
                    case[key][1].as_f64().unwrap(),
                )
            };
            let mut replay = Replay {
                draws: case["draws"].as_array().unwrap().clone(),
                next: 0,
            };
            let got = sample_crop_box(
                number("width") as u32,
                number("height") as u32,
                pair("scale"),
                pair("ratio"),
                &mut replay,
            );
            let expected = CropBox {
                top: number("top") as u32,
                left: number("left") as u32,
                height: number("crop_height") as u32,
                width: number("crop_width") as u32,
            };
            assert_eq!(got, expected, "case {case}");
            assert_eq!(
                replay.next,
                replay.draws.len(),
                "every torchvision draw consumed"
            );
            fallbacks += usize::from(replay.draws.len() == 20);
        }
        // The fixture exercises both the accepted draws and the centre-crop fallback.
        assert!(
            fallbacks > 10 && fallbacks < cases.len() - 10,
            "{fallbacks} fallbacks"
        );
    }
}
