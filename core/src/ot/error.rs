//! Everything a solve or the OT head can refuse.

use core::fmt;

/// Why an optimal-transport solve or an OT-head evaluation was refused.
///
/// Nothing is written to the caller's outputs when one of these is returned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OtError {
    /// `eps` must be a positive normal `f32` (finite, `> 0`, not subnormal).
    InvalidEps(f32),
    /// `eps` is below what `f32` resolves for similarities this large (see
    /// [`EPS_RESOLUTION`](super::params::EPS_RESOLUTION)).
    EpsBelowResolution {
        /// The `eps` asked for.
        eps: f32,
        /// The largest similarity magnitude it was checked against.
        largest: f32,
        /// The smallest `eps` accepted for it.
        min: f32,
    },
    /// `gamma` must lie in `(0, 1]` and not be subnormal.
    InvalidGamma(f32),
    /// `max_iter` must be at least 1.
    InvalidMaxIter,
    /// `tol` must be finite and `≥ 0`.
    InvalidTol(f32),
    /// The logit scale must be finite.
    InvalidScale(f32),
    /// A dimension is zero.
    EmptyDimension {
        /// Which dimension (`"patches"`, `"prompts"`, `"batch"`, ...).
        name: &'static str,
    },
    /// A product of dimensions does not fit in `usize`.
    SizeOverflow,
    /// A buffer has the wrong number of elements.
    BufferLength {
        /// Which buffer (`"similarity"`, `"plan"`, `"workspace"`, ...).
        name: &'static str,
        /// Elements it must hold.
        expected: usize,
        /// Elements it holds.
        found: usize,
    },
    /// An input value is NaN or infinite.
    NonFinite {
        /// Which input (`"similarity"`, `"patches"`, `"prompts"`).
        name: &'static str,
        /// Flat index of the first offending element.
        index: usize,
    },
    /// A feature vector has zero length and cannot be normalised.
    ZeroNorm {
        /// Which input (`"patches"` or `"prompts"`).
        name: &'static str,
        /// Index of the feature vector.
        index: usize,
    },
}

impl fmt::Display for OtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OtError::InvalidEps(eps) => write!(
                f,
                "eps must be finite, > 0 and not subnormal (at least {:e}), got {eps:e}",
                f32::MIN_POSITIVE
            ),
            OtError::EpsBelowResolution { eps, largest, min } => write!(
                f,
                "eps {eps:e} is below what f32 resolves for similarities of magnitude up to \
                 {largest:e}: it must be at least {min:e} ({:e} × that magnitude)",
                super::params::EPS_RESOLUTION
            ),
            OtError::InvalidGamma(g) => write!(
                f,
                "gamma must lie in (0, 1] and not be subnormal (at least {:e}), got {g:e}",
                f32::MIN_POSITIVE
            ),
            OtError::InvalidMaxIter => write!(f, "max_iter must be at least 1"),
            OtError::InvalidTol(tol) => write!(f, "tol must be finite and >= 0, got {tol}"),
            OtError::InvalidScale(s) => write!(f, "logit scale must be finite, got {s}"),
            OtError::EmptyDimension { name } => write!(f, "dimension `{name}` is zero"),
            OtError::SizeOverflow => write!(f, "the problem's dimensions overflow usize"),
            OtError::BufferLength {
                name,
                expected,
                found,
            } => write!(
                f,
                "buffer `{name}` must hold {expected} elements, it holds {found}"
            ),
            OtError::NonFinite { name, index } => {
                write!(f, "`{name}` holds a non-finite value at index {index}")
            }
            OtError::ZeroNorm { name, index } => {
                write!(f, "feature vector {index} of `{name}` has zero length")
            }
        }
    }
}

impl core::error::Error for OtError {}
