//! Status codes: 0 for success, a distinct negative number for every kind of error.

use std::ffi::c_char;

use fedotp_core::ot::OtError;
use fedotp_core::protocol::{AggregateError, DecodeError, EncodeError};
use fedotp_host::backend::{BackendError, DeviceError};
use fedotp_host::clip::wordpiece::WordPieceError;
use fedotp_host::clip::ClipError;
use fedotp_host::data::{DataError, PixelError};
use fedotp_host::run::RunError;
use fedotp_host::train::TrainError;

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
/// A size exceeds its documented limit (`FEDOTP_MAX_PROMPT_LEN`, `FEDOTP_MAX_CLIENTS`).
pub const FEDOTP_ERR_TOO_LARGE: i32 = -8;
/// An output buffer is smaller than what the function writes.
pub const FEDOTP_ERR_BUFFER_TOO_SMALL: i32 = -9;
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

/// A handle that libfedotp never issued, or one already freed.
pub const FEDOTP_ERR_INVALID_HANDLE: i32 = -20;
/// A live handle of another type than the function takes.
pub const FEDOTP_ERR_WRONG_HANDLE_TYPE: i32 = -21;
/// A handle (or a GPU) that a call further up the calling thread holds (a progress callback
/// calling libfedotp on the client or image set its training holds, or on another client of
/// the same GPU): the call would wait for itself. Freeing such a handle from there is refused
/// too, and frees nothing.
pub const FEDOTP_ERR_HANDLE_BUSY: i32 = -22;

/// Message: shorter than its header, or than the total length it declares.
pub const FEDOTP_ERR_MESSAGE_TRUNCATED: i32 = -30;
/// Message: does not start with the magic bytes `FOTP`.
pub const FEDOTP_ERR_BAD_MAGIC: i32 = -31;
/// Message: a wire-format version this library does not read.
pub const FEDOTP_ERR_UNSUPPORTED_VERSION: i32 = -32;
/// Message: the kind byte is neither global prompt (1) nor client update (2).
pub const FEDOTP_ERR_UNKNOWN_KIND: i32 = -33;
/// Message: a valid kind, but not the one the function reads.
pub const FEDOTP_ERR_WRONG_KIND: i32 = -34;
/// Message: the declared total length disagrees with its kind and prompt shape.
pub const FEDOTP_ERR_LENGTH_MISMATCH: i32 = -35;
/// Message: more bytes given than the message declares.
pub const FEDOTP_ERR_TRAILING_BYTES: i32 = -36;
/// Message: the CRC-32 does not match its bytes (corrupted in transit).
pub const FEDOTP_ERR_CHECKSUM_MISMATCH: i32 = -37;
/// Message: a reserved flag bit, or an absent metric's field, is not zero.
pub const FEDOTP_ERR_RESERVED_NOT_ZERO: i32 = -38;
/// A prompt's shape (n_ctx x width) is not the one expected (message or aggregator).
pub const FEDOTP_ERR_SHAPE_MISMATCH: i32 = -39;
/// An accuracy is outside [0, 1] (it is a fraction, not a percentage).
pub const FEDOTP_ERR_ACCURACY_OUT_OF_RANGE: i32 = -40;

/// Aggregator: the update belongs to another round.
pub const FEDOTP_ERR_ROUND_MISMATCH: i32 = -50;
/// Aggregator: the update weighs zero samples.
pub const FEDOTP_ERR_ZERO_WEIGHT: i32 = -51;
/// Aggregator: the client was already counted this round.
pub const FEDOTP_ERR_DUPLICATE_CLIENT: i32 = -52;
/// Aggregator: the round already counts `max_clients` clients.
pub const FEDOTP_ERR_CLIENT_LIST_FULL: i32 = -53;
/// Aggregator: no update was accepted this round, so there is no average.
pub const FEDOTP_ERR_NO_UPDATES: i32 = -54;

/// A string argument is not valid UTF-8.
pub const FEDOTP_ERR_INVALID_UTF8: i32 = -60;
/// A file could not be read or written (the path and the system's reason are in the detail).
pub const FEDOTP_ERR_IO: i32 = -61;
/// A weights file is not a CLIP this library can load (layout, tensor name, shape or dtype).
pub const FEDOTP_ERR_MODEL_FORMAT: i32 = -62;
/// An image's row stride is shorter than one row of its pixels.
pub const FEDOTP_ERR_INVALID_STRIDE: i32 = -63;
/// A 16-bit gray window is not finite or narrower than 1.
pub const FEDOTP_ERR_INVALID_WINDOW: i32 = -64;
/// Encoded image bytes are not a decodable JPEG or PNG.
pub const FEDOTP_ERR_IMAGE_DECODE: i32 = -65;
/// A device name that is not "cpu", "cuda", "cuda:N" or "auto", or a device this build or
/// machine does not have.
pub const FEDOTP_ERR_UNSUPPORTED_DEVICE: i32 = -66;
/// A client setting (learning rate, momentum, weight decay, augment) is out of its range.
pub const FEDOTP_ERR_INVALID_CONFIG: i32 = -67;
/// A class name is blank, or too long to fit the model's context with the prompt.
pub const FEDOTP_ERR_INVALID_CLASS_NAME: i32 = -68;
/// An image's label is not one of the client's classes (or it has none).
pub const FEDOTP_ERR_INVALID_LABEL: i32 = -69;
/// Training was cancelled by the caller (cancel flag); the client is as before the call.
pub const FEDOTP_ERR_CANCELLED: i32 = -70;
/// The client has not trained since its last global prompt: there is no update to send.
pub const FEDOTP_ERR_NOT_TRAINED: i32 = -71;
/// A saved client state belongs to a client of another model (other weights), other class
/// names or another n_ctx.
pub const FEDOTP_ERR_STATE_MISMATCH: i32 = -72;
/// A file is not a client state (not safetensors, no fedotp metadata, a bad tensor).
pub const FEDOTP_ERR_STATE_FORMAT: i32 = -73;
/// An image set holds images and precomputed tokens are added, or the other way round.
pub const FEDOTP_ERR_MIXED_IMAGES: i32 = -74;
/// The compute device failed during a call (a CUDA error, out of GPU memory); the detail says
/// what the driver or library reported. The client is as before the call.
pub const FEDOTP_ERR_DEVICE: i32 = -75;

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
    (FEDOTP_ERR_TOO_LARGE, c"a size exceeds its documented limit"),
    (
        FEDOTP_ERR_BUFFER_TOO_SMALL,
        c"an output buffer is too small",
    ),
    (
        FEDOTP_ERR_INVALID_EPS,
        c"eps must be finite, > 0 and not subnormal",
    ),
    (
        FEDOTP_ERR_INVALID_GAMMA,
        c"gamma must lie in (0, 1] and not be subnormal",
    ),
    (FEDOTP_ERR_INVALID_MAX_ITER, c"max_iter must be at least 1"),
    (FEDOTP_ERR_INVALID_TOL, c"tol must be finite and >= 0"),
    (FEDOTP_ERR_INVALID_BALANCED, c"balanced must be 0 or 1"),
    (FEDOTP_ERR_INVALID_SCALE, c"the logit scale must be finite"),
    (FEDOTP_ERR_ZERO_NORM, c"a feature vector has zero length"),
    (
        FEDOTP_ERR_INVALID_HANDLE,
        c"invalid handle (freed, or never issued)",
    ),
    (FEDOTP_ERR_WRONG_HANDLE_TYPE, c"a handle of another type"),
    (
        FEDOTP_ERR_HANDLE_BUSY,
        c"handle held by an enclosing call on this thread",
    ),
    (FEDOTP_ERR_MESSAGE_TRUNCATED, c"message truncated"),
    (FEDOTP_ERR_BAD_MAGIC, c"not a fedotp message (bad magic)"),
    (
        FEDOTP_ERR_UNSUPPORTED_VERSION,
        c"unsupported message version",
    ),
    (FEDOTP_ERR_UNKNOWN_KIND, c"unknown message kind"),
    (FEDOTP_ERR_WRONG_KIND, c"message of the other kind"),
    (
        FEDOTP_ERR_LENGTH_MISMATCH,
        c"message length disagrees with its shape",
    ),
    (
        FEDOTP_ERR_TRAILING_BYTES,
        c"trailing bytes after the message",
    ),
    (
        FEDOTP_ERR_CHECKSUM_MISMATCH,
        c"message checksum mismatch (corrupted)",
    ),
    (
        FEDOTP_ERR_RESERVED_NOT_ZERO,
        c"message reserved field not zero",
    ),
    (FEDOTP_ERR_SHAPE_MISMATCH, c"prompt shape mismatch"),
    (FEDOTP_ERR_ACCURACY_OUT_OF_RANGE, c"accuracy outside [0, 1]"),
    (FEDOTP_ERR_ROUND_MISMATCH, c"update from another round"),
    (FEDOTP_ERR_ZERO_WEIGHT, c"update weighs zero samples"),
    (
        FEDOTP_ERR_DUPLICATE_CLIENT,
        c"client already counted this round",
    ),
    (
        FEDOTP_ERR_CLIENT_LIST_FULL,
        c"the round takes no more clients",
    ),
    (FEDOTP_ERR_NO_UPDATES, c"no update accepted this round"),
    (FEDOTP_ERR_INVALID_UTF8, c"a string is not valid UTF-8"),
    (FEDOTP_ERR_IO, c"a file could not be read or written"),
    (
        FEDOTP_ERR_MODEL_FORMAT,
        c"not a CLIP weights file this library can load",
    ),
    (
        FEDOTP_ERR_INVALID_STRIDE,
        c"row stride shorter than a row of pixels",
    ),
    (FEDOTP_ERR_INVALID_WINDOW, c"invalid gray window"),
    (FEDOTP_ERR_IMAGE_DECODE, c"not a decodable JPEG or PNG"),
    (
        FEDOTP_ERR_UNSUPPORTED_DEVICE,
        c"unknown or unavailable device",
    ),
    (
        FEDOTP_ERR_INVALID_CONFIG,
        c"a client setting is out of range",
    ),
    (FEDOTP_ERR_INVALID_CLASS_NAME, c"invalid class name"),
    (
        FEDOTP_ERR_INVALID_LABEL,
        c"label outside the client's classes",
    ),
    (FEDOTP_ERR_CANCELLED, c"cancelled by the caller"),
    (
        FEDOTP_ERR_NOT_TRAINED,
        c"not trained since the last global prompt",
    ),
    (
        FEDOTP_ERR_STATE_MISMATCH,
        c"saved state of another client configuration",
    ),
    (FEDOTP_ERR_STATE_FORMAT, c"not a client state file"),
    (
        FEDOTP_ERR_MIXED_IMAGES,
        c"images and precomputed tokens in one set",
    ),
    (FEDOTP_ERR_DEVICE, c"the compute device failed"),
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
            OtError::InvalidEps(_) | OtError::EpsBelowResolution { .. } => FEDOTP_ERR_INVALID_EPS,
            OtError::InvalidGamma(_) => FEDOTP_ERR_INVALID_GAMMA,
            OtError::InvalidMaxIter => FEDOTP_ERR_INVALID_MAX_ITER,
            OtError::InvalidTol(_) => FEDOTP_ERR_INVALID_TOL,
            OtError::InvalidScale(_) => FEDOTP_ERR_INVALID_SCALE,
            OtError::EmptyDimension { .. } => FEDOTP_ERR_EMPTY_DIMENSION,
            OtError::SizeOverflow => FEDOTP_ERR_SIZE_OVERFLOW,
            OtError::NonFinite { .. } => FEDOTP_ERR_NON_FINITE,
            OtError::ZeroNorm { .. } => FEDOTP_ERR_ZERO_NORM,
            OtError::BufferLength { .. } => return internal(error),
        };
        Failure::new(status, error.to_string())
    }
}

/// A length mismatch inside libfedotp: the buffers given to the core are sized from the same
/// dimensions the core checks them against, so this is a bug on our side, not the caller's.
fn internal(error: impl std::fmt::Display) -> Failure {
    Failure::new(
        FEDOTP_ERR_PANIC,
        format!("internal error in libfedotp: {error}"),
    )
}

impl From<DecodeError> for Failure {
    fn from(error: DecodeError) -> Self {
        let status = match error {
            DecodeError::OutputLength { .. } => return internal(error),
            DecodeError::Truncated { .. } => FEDOTP_ERR_MESSAGE_TRUNCATED,
            DecodeError::BadMagic { .. } => FEDOTP_ERR_BAD_MAGIC,
            DecodeError::UnsupportedVersion { .. } => FEDOTP_ERR_UNSUPPORTED_VERSION,
            DecodeError::UnknownKind { .. } => FEDOTP_ERR_UNKNOWN_KIND,
            DecodeError::WrongKind { .. } => FEDOTP_ERR_WRONG_KIND,
            DecodeError::LengthMismatch { .. } => FEDOTP_ERR_LENGTH_MISMATCH,
            DecodeError::TrailingBytes { .. } => FEDOTP_ERR_TRAILING_BYTES,
            DecodeError::ChecksumMismatch { .. } => FEDOTP_ERR_CHECKSUM_MISMATCH,
            DecodeError::ReservedNotZero { .. } => FEDOTP_ERR_RESERVED_NOT_ZERO,
            DecodeError::ShapeMismatch { .. } => FEDOTP_ERR_SHAPE_MISMATCH,
            DecodeError::NonFinite { .. } => FEDOTP_ERR_NON_FINITE,
            DecodeError::AccuracyOutOfRange { .. } => FEDOTP_ERR_ACCURACY_OUT_OF_RANGE,
        };
        Failure::new(status, format!("message refused: {error}"))
    }
}

impl From<EncodeError> for Failure {
    fn from(error: EncodeError) -> Self {
        let status = match error {
            EncodeError::PromptLength { .. } => return internal(error),
            EncodeError::NonFinite { .. } => FEDOTP_ERR_NON_FINITE,
            EncodeError::AccuracyOutOfRange { .. } => FEDOTP_ERR_ACCURACY_OUT_OF_RANGE,
            EncodeError::BufferTooSmall { .. } => FEDOTP_ERR_BUFFER_TOO_SMALL,
        };
        Failure::new(status, format!("cannot encode the message: {error}"))
    }
}

impl From<AggregateError> for Failure {
    fn from(error: AggregateError) -> Self {
        let status = match error {
            AggregateError::AccumulatorLength { .. }
            | AggregateError::PromptLength { .. }
            | AggregateError::OutputLength { .. } => return internal(error),
            AggregateError::RoundMismatch { .. } => FEDOTP_ERR_ROUND_MISMATCH,
            AggregateError::ShapeMismatch { .. } => FEDOTP_ERR_SHAPE_MISMATCH,
            AggregateError::ZeroWeight { .. } => FEDOTP_ERR_ZERO_WEIGHT,
            AggregateError::DuplicateClient { .. } => FEDOTP_ERR_DUPLICATE_CLIENT,
            AggregateError::ClientListFull { .. } => FEDOTP_ERR_CLIENT_LIST_FULL,
            AggregateError::NonFinite { .. } => FEDOTP_ERR_NON_FINITE,
            AggregateError::NoUpdates { .. } => FEDOTP_ERR_NO_UPDATES,
        };
        Failure::new(status, error.to_string())
    }
}

impl From<ClipError> for Failure {
    fn from(error: ClipError) -> Self {
        let status = match error {
            ClipError::Backend(error) => return error.into(),
            ClipError::Memory(_) => FEDOTP_ERR_OUT_OF_MEMORY,
            ClipError::Io { .. }
            | ClipError::NoWeights { .. }
            | ClipError::WordPiece(WordPieceError::Read { .. }) => FEDOTP_ERR_IO,
            _ => FEDOTP_ERR_MODEL_FORMAT,
        };
        Failure::new(status, error.to_string())
    }
}

impl From<PixelError> for Failure {
    fn from(error: PixelError) -> Self {
        let status = match error {
            PixelError::Empty { .. } => FEDOTP_ERR_EMPTY_DIMENSION,
            PixelError::StrideTooSmall { .. } => FEDOTP_ERR_INVALID_STRIDE,
            PixelError::Overflow { .. } => FEDOTP_ERR_SIZE_OVERFLOW,
            PixelError::InvalidWindow { .. } => FEDOTP_ERR_INVALID_WINDOW,
            PixelError::OutOfMemory { .. } => FEDOTP_ERR_OUT_OF_MEMORY,
            // The slice handed over is formed from the layout's own length.
            PixelError::BufferTooShort { .. } => return internal(error),
        };
        Failure::new(status, format!("image refused: {error}"))
    }
}

impl From<DataError> for Failure {
    fn from(error: DataError) -> Self {
        let status = match error {
            DataError::Image { .. } => FEDOTP_ERR_IMAGE_DECODE,
            DataError::Io { .. } => FEDOTP_ERR_IO,
            _ => return internal(error),
        };
        Failure::new(status, error.to_string())
    }
}

/// A failing device (driver, library, out of memory) is a status of its own; any other
/// refusal by the backend is on buffers libfedotp sized, so a bug of ours.
impl From<BackendError> for Failure {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::Device { .. } => Failure::new(FEDOTP_ERR_DEVICE, error.to_string()),
            BackendError::OutOfMemory { .. } => {
                Failure::new(FEDOTP_ERR_OUT_OF_MEMORY, error.to_string())
            }
            // A call made on a GPU from inside another call on it (a progress callback): the
            // device is busy with the caller's own work.
            BackendError::TurnHeld => Failure::new(FEDOTP_ERR_HANDLE_BUSY, error.to_string()),
            other => internal(other),
        }
    }
}

impl From<TrainError> for Failure {
    fn from(error: TrainError) -> Self {
        match error {
            TrainError::Clip(error) => error.into(),
            TrainError::Backend(error) => error.into(),
            TrainError::Data(error) => error.into(),
            TrainError::Memory(error) => Failure::new(FEDOTP_ERR_OUT_OF_MEMORY, error.to_string()),
            TrainError::Cancelled => Failure::new(
                FEDOTP_ERR_CANCELLED,
                "training cancelled by the caller; the client is as before the call",
            ),
            // The rest (backend, cache, run directory, aggregation) are not reached by the
            // calls libfedotp makes, or are its own bugs.
            other => internal(other),
        }
    }
}

/// A device name that is not one, or a device that cannot be used; the detail says which and
/// why (a missing library, no such device, a build without CUDA).
impl From<DeviceError> for Failure {
    fn from(error: DeviceError) -> Self {
        let message = match &error {
            DeviceError::Unknown(_) => format!("`device`: {error}"),
            DeviceError::Unavailable { device, source } => format!("device \"{device}\": {source}"),
        };
        Failure::new(FEDOTP_ERR_UNSUPPORTED_DEVICE, message)
    }
}

/// Run-checkpoint errors, as client state files give them: the file, or its content.
impl From<RunError> for Failure {
    fn from(error: RunError) -> Self {
        let status = match error {
            RunError::Io { .. } => FEDOTP_ERR_IO,
            RunError::NonFinite { .. } => FEDOTP_ERR_NON_FINITE,
            _ => FEDOTP_ERR_STATE_FORMAT,
        };
        Failure::new(status, format!("client state: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedotp_host::memory::MemoryEstimate;

    #[test]
    fn a_failing_device_is_its_own_status_and_a_refused_call_is_internal() {
        let device = || BackendError::Device {
            op: "linear",
            source: "out of memory".into(),
        };
        for failure in [
            Failure::from(TrainError::Backend(device())),
            Failure::from(TrainError::Clip(ClipError::Backend(device()))),
        ] {
            assert_eq!(failure.status, FEDOTP_ERR_DEVICE);
            assert!(
                failure.message.contains("out of memory"),
                "{}",
                failure.message
            );
        }
        // A buffer libfedotp sized itself that the backend refuses is a bug of ours.
        let refused = BackendError::BufferTooSmall {
            op: "linear",
            buffer: "out",
            len: 1,
            needed: 2,
        };
        assert_eq!(
            Failure::from(TrainError::Backend(refused)).status,
            FEDOTP_ERR_PANIC
        );
        // A call on a GPU from inside another call on it: the device is busy, as a handle is.
        assert_eq!(
            Failure::from(TrainError::Backend(BackendError::TurnHeld)).status,
            FEDOTP_ERR_HANDLE_BUSY
        );
    }

    #[test]
    fn memory_the_host_cannot_give_is_out_of_memory_wherever_it_is_found() {
        let estimate = || MemoryEstimate::new().with("weights", 1 << 40);
        let memory = || estimate().check_against("the model", 1 << 30).unwrap_err();
        for failure in [
            Failure::from(ClipError::Memory(memory())),
            Failure::from(TrainError::Memory(memory())),
            Failure::from(TrainError::Backend(BackendError::OutOfMemory {
                op: "alloc",
                source: memory(),
            })),
        ] {
            assert_eq!(failure.status, FEDOTP_ERR_OUT_OF_MEMORY);
            assert!(
                failure.message.contains("the model needs about 1024 GiB"),
                "{}",
                failure.message
            );
        }
    }
}
