//! Status codes: 0 for success, a distinct negative number for every kind of error.

use std::ffi::c_char;

use fedotp_core::ot::OtError;

/// Success.
pub const FEDOTP_OK: i32 = 0;
/// A required pointer argument is NULL.
pub const FEDOTP_ERR_NULL_POINTER: i32 = -1;
/// A Rust panic was caught at the boundary (a bug in libfedotp; please report it).
pub const FEDOTP_ERR_PANIC: i32 = -2;
/// An output buffer overlaps an input buffer.
pub const FEDOTP_ERR_ALIASED_BUFFERS: i32 = -3;
/// Memory for the computation could not be allocated.
pub const FEDOTP_ERR_OUT_OF_MEMORY: i32 = -4;
/// A dimension is zero.
pub const FEDOTP_ERR_EMPTY_DIMENSION: i32 = -5;
/// A product of dimensions overflows `size_t`.
pub const FEDOTP_ERR_SIZE_OVERFLOW: i32 = -6;
/// An input value is NaN or infinite.
pub const FEDOTP_ERR_NON_FINITE: i32 = -7;
/// OT parameter `eps` is not finite and positive.
pub const FEDOTP_ERR_INVALID_EPS: i32 = -10;
/// OT parameter `gamma` is not in (0, 1].
pub const FEDOTP_ERR_INVALID_GAMMA: i32 = -11;
/// OT parameter `max_iter` is zero.
pub const FEDOTP_ERR_INVALID_MAX_ITER: i32 = -12;
/// OT parameter `tol` is not finite and non-negative.
pub const FEDOTP_ERR_INVALID_TOL: i32 = -13;
/// OT parameter `balanced` is neither 0 nor 1.
pub const FEDOTP_ERR_INVALID_BALANCED: i32 = -14;
/// The logit scale is not finite.
pub const FEDOTP_ERR_INVALID_SCALE: i32 = -15;
/// A feature vector has zero length and cannot be normalised.
pub const FEDOTP_ERR_ZERO_NORM: i32 = -16;

/// Every status with its name, for `fedotp_status_str`.
const NAMES: &[(i32, &std::ffi::CStr)] = &[
    (FEDOTP_OK, c"ok"),
    (FEDOTP_ERR_NULL_POINTER, c"a required pointer is NULL"),
    (FEDOTP_ERR_PANIC, c"internal error (a caught panic)"),
    (
        FEDOTP_ERR_ALIASED_BUFFERS,
        c"an output buffer overlaps an input buffer",
    ),
    (FEDOTP_ERR_OUT_OF_MEMORY, c"out of memory"),
    (FEDOTP_ERR_EMPTY_DIMENSION, c"a dimension is zero"),
    (
        FEDOTP_ERR_SIZE_OVERFLOW,
        c"a product of dimensions overflows size_t",
    ),
    (FEDOTP_ERR_NON_FINITE, c"an input value is NaN or infinite"),
    (FEDOTP_ERR_INVALID_EPS, c"eps must be finite and > 0"),
    (FEDOTP_ERR_INVALID_GAMMA, c"gamma must lie in (0, 1]"),
    (FEDOTP_ERR_INVALID_MAX_ITER, c"max_iter must be at least 1"),
    (FEDOTP_ERR_INVALID_TOL, c"tol must be finite and >= 0"),
    (FEDOTP_ERR_INVALID_BALANCED, c"balanced must be 0 or 1"),
    (FEDOTP_ERR_INVALID_SCALE, c"the logit scale must be finite"),
    (FEDOTP_ERR_ZERO_NORM, c"a feature vector has zero length"),
];

/// A static, NUL-terminated description of `status`; never NULL, also for unknown codes.
#[no_mangle]
pub extern "C" fn fedotp_status_str(status: i32) -> *const c_char {
    NAMES
        .iter()
        .find(|(code, _)| *code == status)
        .map_or(c"unknown status".as_ptr(), |(_, name)| name.as_ptr())
}

/// An error on its way out of the C ABI: a status and the detail for
/// `fedotp_last_error_message`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: i32,
    pub message: String,
}

impl Failure {
    pub fn new(status: i32, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<OtError> for Failure {
    fn from(error: OtError) -> Self {
        let status = match error {
            OtError::InvalidEps(_) => FEDOTP_ERR_INVALID_EPS,
            OtError::InvalidGamma(_) => FEDOTP_ERR_INVALID_GAMMA,
            OtError::InvalidMaxIter => FEDOTP_ERR_INVALID_MAX_ITER,
            OtError::InvalidTol(_) => FEDOTP_ERR_INVALID_TOL,
            OtError::InvalidScale(_) => FEDOTP_ERR_INVALID_SCALE,
            OtError::EmptyDimension { .. } => FEDOTP_ERR_EMPTY_DIMENSION,
            OtError::SizeOverflow => FEDOTP_ERR_SIZE_OVERFLOW,
            OtError::NonFinite { .. } => FEDOTP_ERR_NON_FINITE,
            OtError::ZeroNorm { .. } => FEDOTP_ERR_ZERO_NORM,
            // Buffer lengths are derived from the dimensions inside libfedotp, so a mismatch
            // is a bug on our side, not the caller's.
            OtError::BufferLength { .. } => FEDOTP_ERR_PANIC,
        };
        Failure::new(status, error.to_string())
    }
}
