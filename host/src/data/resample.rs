//! Resizing that reproduces Pillow's `Image.resize(size, BICUBIC | BILINEAR)` bit for bit.
//!
//! CLIP's preprocessing and torchvision's `Resize`/`RandomResizedCrop` on PIL images call
//! Pillow's resampler, so this is the reference every image must match. It is a separable
//! convolution with Keys' cubic kernel (a = −0.5, support 2) or the triangle kernel (support 1,
//! for models preprocessed with bilinear interpolation, [`Interpolation`]) whose support is widened
//! by the scale factor when shrinking (an antialiasing filter); the `image` crate's `CatmullRom`
//! uses the same cubic kernel but rounds its window differently, keeps the intermediate image in
//! `f32` and filters vertically first, which puts it up to a few levels away from Pillow. Pillow,
//! like this module:
//! - computes the weights in `f64` and normalises them to sum to one per output pixel;
//! - converts them to 22-bit fixed point (`PRECISION_BITS = 32 − 8 − 2`), rounding half away from
//!   zero;
//! - filters horizontally first, rounds and clamps that intermediate image to `u8`, then filters
//!   vertically; a pass whose size does not change is skipped.
//!
//! That pass order is Pillow's up to version 12, which the FedOTP reference ran on. Pillow 13
//! (PR #9549) filters vertically first when the height shrinks much more than the width; for such
//! shapes it differs from this module by a few levels (the intermediate image is rounded after the
//! other pass). Aspect-preserving resizes — the evaluation transform — and enlargements are the
//! same in every version. The tests compare with Pillow bit for bit (see
//! `tests/scripts/make_data_fixtures.py` and `tests/scripts/open_clip_preprocess_reference.py`).

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::rgb::RgbImage;

/// Fixed-point precision of the weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The resampling filter, as Pillow names them (open_clip's `preprocess_cfg.interpolation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Keys' cubic kernel (`Image.BICUBIC`): CLIP's and most models' preprocessing.
    #[default]
    Bicubic,
    /// The triangle kernel (`Image.BILINEAR`).
    Bilinear,
}

impl Interpolation {
    /// The kernel's support at scale 1, in input samples either side of the centre.
    fn support(self) -> f64 {
        match self {
            Interpolation::Bicubic => 2.0,
            Interpolation::Bilinear => 1.0,
        }
    }

    /// The kernel's weight at distance `x` (Pillow's `bicubic_filter` / `bilinear_filter`).
    fn weight(self, x: f64) -> f64 {
        match self {
            Interpolation::Bicubic => bicubic(x),
            Interpolation::Bilinear => (1.0 - x.abs()).max(0.0),
        }
    }

    /// Whether this is the default (bicubic), for `skip_serializing_if`.
    pub fn is_default(&self) -> bool {
        *self == Interpolation::default()
    }
}

/// Keys' cubic convolution kernel with a = −0.5 (Pillow's `bicubic_filter`).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The fixed-point weights mapping `in_size` input samples to `out_size` output samples along one
/// axis: output `i` reads inputs `first[i] .. first[i] + weights[i].len()`.
struct AxisWeights {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the full input range.
fn axis_weights(in_size: usize, out_size: usize, filter: Interpolation) -> AxisWeights {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let inverse_filter_scale = 1.0 / filter_scale;
    let one = f64::from(1u32 << PRECISION_BITS);

    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for out in 0..out_size {
        let center = (out as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero, as Rust's `as` does.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let hi = hi.max(lo);
        let raw: Vec<f64> = (lo..hi)
            .map(|x| filter.weight((x as f64 - center + 0.5) * inverse_filter_scale))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect();
        first.push(lo);
        weights.push(fixed);
    }
    AxisWeights { first, weights }
}

/// Rounds a fixed-point accumulator to a byte: Pillow's `clip8`.
fn clip8(accumulator: i64) -> u8 {
    (accumulator >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Accumulator start value: one half in fixed point, so the final shift rounds.
const HALF: i64 = 1 << (PRECISION_BITS - 1);

fn resize_horizontal(src: &RgbImage, out_width: u32, filter: Interpolation) -> RgbImage {
    let (in_width, height) = (src.width() as usize, src.height() as usize);
    let axis = axis_weights(in_width, out_width as usize, filter);
    let mut pixels = Vec::with_capacity(3 * out_width as usize * height);
    for row in src.pixels().chunks_exact(3 * in_width) {
        for (first, weights) in axis.first.iter().zip(&axis.weights) {
            let mut sums = [HALF; 3];
            for (k, &w) in weights.iter().enumerate() {
                let at = 3 * (first + k);
                for (c, sum) in sums.iter_mut().enumerate() {
                    *sum += i64::from(row[at + c]) * i64::from(w);
                }
            }
            pixels.extend(sums.map(clip8));
        }
    }
    RgbImage::new(out_width, height as u32, pixels).expect("sizes are consistent")
}

fn resize_vertical(src: &RgbImage, out_height: u32, filter: Interpolation) -> RgbImage {
    let row_bytes = 3 * src.width() as usize;
    let axis = axis_weights(src.height() as usize, out_height as usize, filter);
    let input = src.pixels();
    let mut pixels = Vec::with_capacity(row_bytes * out_height as usize);
    let mut sums = vec![0i64; row_bytes];
    for (first, weights) in axis.first.iter().zip(&axis.weights) {
        sums.fill(HALF);
        for (k, &w) in weights.iter().enumerate() {
            let row = &input[(first + k) * row_bytes..][..row_bytes];
            for (sum, &value) in sums.iter_mut().zip(row) {
                *sum += i64::from(value) * i64::from(w);
            }
        }
        pixels.extend(sums.iter().map(|&s| clip8(s)));
    }
    RgbImage::new(src.width(), out_height, pixels).expect("sizes are consistent")
}

/// Resizes `src` to `width × height` exactly as Pillow's `resize((width, height), filter)`.
/// A zero size is an error.
///
/// ```
/// use fedotp_host::data::{resize, Interpolation, RgbImage};
/// let gray = RgbImage::new(4, 4, vec![128; 48]).unwrap();
/// let small = resize(&gray, 2, 3, Interpolation::Bicubic).unwrap();
/// assert_eq!((small.width(), small.height()), (2, 3));
/// assert!(small.pixels().iter().all(|&v| v == 128)); // weights sum to one
/// ```
pub fn resize(src: &RgbImage, width: u32, height: u32, filter: Interpolation) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(DataError::Invalid(format!(
            "cannot resize an image to {width}x{height}"
        )));
    }
    let horizontal = if width != src.width() {
        resize_horizontal(src, width, filter)
    } else {
        src.clone()
    };
    Ok(if height != src.height() {
        resize_vertical(&horizontal, height, filter)
    } else {
        horizontal
    })
}
