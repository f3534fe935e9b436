//! The wire format of prompt exchange: sizes, encoding into caller buffers, decoding from them.
//!
//! The byte layout is `docs/PROTOCOL.md`'s; these functions are `fedotp_core::protocol`'s
//! `encoded_len` / `encode` / `decode` behind checked pointers. A prompt is always described by
//! its shape, `n_ctx` rows of `width` floats, row-major.

use fedotp_core::protocol::{ClientUpdate, DecodeError, EncodeError, GlobalPrompt, PromptShape};

use crate::boundary::{
    buffer_len, call, check_disjoint, check_span, require, slice, slice_mut, write,
};
use crate::status::{Failure, FEDOTP_ERR_TOO_LARGE};

/// The most floats a prompt may hold, `n_ctx * width`: 2^24 (64 MiB of floats), the wire
/// format's limit. FedOTP's prompts are far smaller (16 x 512 = 8,192 floats).
pub const FEDOTP_MAX_PROMPT_LEN: usize = 1 << 24;
const _: () = assert!(FEDOTP_MAX_PROMPT_LEN == PromptShape::MAX_LEN);

/// The header fields of a client-update message: everything but the prompt.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpClientUpdateHeader {
    /// The round the update was trained in.
    pub round: u32,
    /// The client's id.
    pub client: u32,
    /// The client's training-set size, its weight in the average (0 is a valid message; the
    /// aggregator refuses it).
    pub samples: u32,
    /// 1 if the message carries a training loss, else 0.
    pub has_loss: u32,
    /// The mean training loss if `has_loss` is 1 (finite), else 0.
    pub loss: f32,
    /// 1 if the message carries a training accuracy, else 0.
    pub has_accuracy: u32,
    /// The training accuracy in [0, 1] if `has_accuracy` is 1, else 0.
    pub accuracy: f32,
}

impl From<&ClientUpdate<'_>> for FedotpClientUpdateHeader {
    fn from(update: &ClientUpdate<'_>) -> Self {
        FedotpClientUpdateHeader {
            round: update.round,
            client: update.client,
            samples: update.samples,
            has_loss: u32::from(update.loss.is_some()),
            loss: update.loss.unwrap_or(0.0),
            has_accuracy: u32::from(update.accuracy.is_some()),
            accuracy: update.accuracy.unwrap_or(0.0),
        }
    }
}

/// The shape `n_ctx x width`, refusing a zero dimension, a product that overflows and a prompt
/// above `FEDOTP_MAX_PROMPT_LEN` floats.
pub(crate) fn prompt_shape(n_ctx: usize, width: usize) -> Result<PromptShape, Failure> {
    let len = buffer_len(&[("n_ctx", n_ctx), ("width", width)])?;
    let shape = u32::try_from(n_ctx)
        .ok()
        .zip(u32::try_from(width).ok())
        .and_then(|(n_ctx, width)| PromptShape::new(n_ctx, width));
    shape.ok_or_else(|| {
        Failure::new(
            FEDOTP_ERR_TOO_LARGE,
            format!(
                "a prompt of n_ctx x width = {n_ctx} x {width} = {len} floats exceeds \
                 FEDOTP_MAX_PROMPT_LEN ({FEDOTP_MAX_PROMPT_LEN})"
            ),
        )
    })
}

/// What both encoders share: checks the buffers, runs `encode` on the prompt and the first
/// `min(capacity, needed)` bytes of `out` (the core refuses a buffer shorter than `needed`),
/// and stores the bytes written.
///
/// # Safety
/// As the encoders' callers promise: non-NULL pointers point to buffers of the stated lengths.
unsafe fn encode_into(
    prompt: *const f32,
    shape: PromptShape,
    needed: usize,
    out: *mut u8,
    capacity: usize,
    written_out: *mut usize,
    encode: impl FnOnce(&[f32], &mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), Failure> {
    let prompt_len = shape.len();
    // Bytes past the message's end are neither written nor looked at.
    let out_len = capacity.min(needed);
    check_disjoint(out, out_len, "out", prompt, prompt_len, "prompt")?;
    check_disjoint(written_out, 1, "written_out", prompt, prompt_len, "prompt")?;
    check_disjoint(written_out, 1, "written_out", out, out_len, "out")?;
    require(written_out, "written_out")?;
    // SAFETY: the caller passes `prompt_len` floats at `prompt` and `capacity` >= `out_len`
    // bytes at `out` (NULL is refused by `slice`); the two do not overlap (checked above), so
    // the exclusive slice aliases nothing.
    let (prompt, out) = unsafe {
        (
            slice(prompt, prompt_len, "prompt")?,
            slice_mut(out, out_len, "out")?,
        )
    };
    let written = encode(prompt, out)?;
    // SAFETY: `written_out` is non-NULL (checked above) and points to a writable size_t.
    unsafe { write(written_out, written, "written_out") }
}

/// What both decoders share: checks the buffers, runs `decode` on the message and the prompt
/// buffer (written only on success), and stores the other fields it returns in `*fields_out`.
///
/// # Safety
/// As the decoders' callers promise: non-NULL pointers point to buffers of the stated lengths.
unsafe fn decode_into<Fields>(
    bytes: *const u8,
    len: usize,
    shape: PromptShape,
    prompt_out: *mut f32,
    (fields_out, fields_name): (*mut Fields, &str),
    decode: impl FnOnce(&[u8], &mut [f32]) -> Result<Fields, DecodeError>,
) -> Result<(), Failure> {
    let prompt_len = shape.len();
    check_span::<u8>(len, "bytes")?;
    check_disjoint(prompt_out, prompt_len, "prompt_out", bytes, len, "bytes")?;
    check_disjoint(fields_out, 1, fields_name, bytes, len, "bytes")?;
    check_disjoint(
        fields_out,
        1,
        fields_name,
        prompt_out,
        prompt_len,
        "prompt_out",
    )?;
    require(fields_out, fields_name)?;
    // SAFETY: the caller passes `len` bytes at `bytes` and `prompt_len` floats at `prompt_out`,
    // not overlapping (checked above).
    let (bytes, prompt_out) = unsafe {
        (
            slice(bytes, len, "bytes")?,
            slice_mut(prompt_out, prompt_len, "prompt_out")?,
        )
    };
    let fields = decode(bytes, prompt_out)?;
    // SAFETY: `fields_out` is non-NULL (checked above) and writable.
    unsafe { write(fields_out, fields, fields_name) }
}

/// The size in bytes of a client-update message carrying an `n_ctx x width` prompt:
/// `4 * n_ctx * width + 44`. Use it to size the buffer of `fedotp_client_update_encode`.
///
/// - `size_out`: receives the size.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`size_out`); `FEDOTP_ERR_EMPTY_DIMENSION`
/// (`n_ctx` or `width` is 0); `FEDOTP_ERR_SIZE_OVERFLOW` (`n_ctx * width` overflows);
/// `FEDOTP_ERR_TOO_LARGE` (more than `FEDOTP_MAX_PROMPT_LEN` floats). Nothing is written on
/// error. Thread-safe.
///
/// # Safety
/// A non-NULL `size_out` must point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_update_size(
    n_ctx: usize,
    width: usize,
    size_out: *mut usize,
) -> i32 {
    call(|| {
        let size = ClientUpdate::encoded_len(prompt_shape(n_ctx, width)?);
        // SAFETY: the caller passes a writable size_t or NULL.
        unsafe { write(size_out, size, "size_out") }
    })
}

/// The size in bytes of a global-prompt message carrying an `n_ctx x width` prompt:
/// `4 * n_ctx * width + 28`. Use it to size the buffer of `fedotp_global_prompt_encode`.
///
/// - `size_out`: receives the size.
///
/// Statuses: as `fedotp_client_update_size`. Nothing is written on error. Thread-safe.
///
/// # Safety
/// A non-NULL `size_out` must point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_global_prompt_size(
    n_ctx: usize,
    width: usize,
    size_out: *mut usize,
) -> i32 {
    call(|| {
        let size = GlobalPrompt::encoded_len(prompt_shape(n_ctx, width)?);
        // SAFETY: the caller passes a writable size_t or NULL.
        unsafe { write(size_out, size, "size_out") }
    })
}

/// Encodes a client update (client -> server): a client's global prompt after training in
/// round `round`, for the server's aggregator.
///
/// - `round`: the round the update was trained in (the round of the global prompt received);
/// - `client`: the client's id, unique in the federation;
/// - `samples`: the client's training-set size, its weight in the average;
/// - `prompt`: `n_ctx * width` floats, row-major, all finite; read only;
/// - `loss`: NULL, or the mean training loss (finite);
/// - `accuracy`: NULL, or the training accuracy as a fraction in [0, 1];
/// - `out`, `capacity`: the caller's buffer and its size in bytes; it needs
///   `fedotp_client_update_size(n_ctx, width)` bytes, only those are written, and it must not
///   overlap `prompt`;
/// - `written_out`: receives the number of bytes written (the message's size). Must not
///   overlap `prompt` or the message's bytes in `out`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`prompt`, `out`, `written_out`);
/// the shape's `FEDOTP_ERR_EMPTY_DIMENSION` / `FEDOTP_ERR_SIZE_OVERFLOW` /
/// `FEDOTP_ERR_TOO_LARGE`; `FEDOTP_ERR_NON_FINITE` (a prompt value, the loss or the accuracy);
/// `FEDOTP_ERR_ACCURACY_OUT_OF_RANGE`; `FEDOTP_ERR_BUFFER_TOO_SMALL` (`capacity` below the
/// message's size); `FEDOTP_ERR_ALIASED_BUFFERS`. On error nothing is written to `out` or
/// `written_out`. Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to buffers of the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_update_encode(
    round: u32,
    client: u32,
    samples: u32,
    prompt: *const f32,
    n_ctx: usize,
    width: usize,
    loss: *const f32,
    accuracy: *const f32,
    out: *mut u8,
    capacity: usize,
    written_out: *mut usize,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        // SAFETY: `as_ref` turns NULL into `None`; a non-NULL `loss` or `accuracy` points to an
        // aligned, initialised float (the header's contract), copied out at once.
        let (loss, accuracy) = unsafe { (loss.as_ref().copied(), accuracy.as_ref().copied()) };
        let needed = ClientUpdate::encoded_len(shape);
        // SAFETY: `encode_into`'s contract is this function's: a non-NULL `prompt` points to
        // `n_ctx * width` floats, `out` to `capacity` writable bytes, `written_out` to a
        // writable size_t (the header's contract for these arguments).
        unsafe {
            encode_into(
                prompt,
                shape,
                needed,
                out,
                capacity,
                written_out,
                |prompt, out| {
                    let update = ClientUpdate {
                        round,
                        client,
                        samples,
                        shape,
                        prompt,
                        loss,
                        accuracy,
                    };
                    update.encode(out)
                },
            )
        }
    })
}

/// Encodes a global prompt (server -> client): the prompt every client starts round `round`
/// from.
///
/// - `round`: the round this prompt opens;
/// - `prompt`: `n_ctx * width` floats, row-major, all finite; read only;
/// - `out`, `capacity`: the caller's buffer and its size in bytes; it needs
///   `fedotp_global_prompt_size(n_ctx, width)` bytes, only those are written, and it must not
///   overlap `prompt`;
/// - `written_out`: receives the number of bytes written (the message's size). Must not
///   overlap `prompt` or the message's bytes in `out`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`prompt`, `out`, `written_out`); the
/// shape's `FEDOTP_ERR_EMPTY_DIMENSION` / `FEDOTP_ERR_SIZE_OVERFLOW` / `FEDOTP_ERR_TOO_LARGE`;
/// `FEDOTP_ERR_NON_FINITE`; `FEDOTP_ERR_BUFFER_TOO_SMALL`; `FEDOTP_ERR_ALIASED_BUFFERS`. On
/// error nothing is written to `out` or `written_out`. Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to buffers of the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn fedotp_global_prompt_encode(
    round: u32,
    prompt: *const f32,
    n_ctx: usize,
    width: usize,
    out: *mut u8,
    capacity: usize,
    written_out: *mut usize,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        let needed = GlobalPrompt::encoded_len(shape);
        // SAFETY: `encode_into`'s contract is this function's: a non-NULL `prompt` points to
        // `n_ctx * width` floats, `out` to `capacity` writable bytes, `written_out` to a
        // writable size_t (the header's contract for these arguments).
        unsafe {
            encode_into(
                prompt,
                shape,
                needed,
                out,
                capacity,
                written_out,
                |prompt, out| {
                    let message = GlobalPrompt {
                        round,
                        shape,
                        prompt,
                    };
                    message.encode(out)
                },
            )
        }
    })
}

/// Decodes a client-update message, checking every field (docs/PROTOCOL.md §3.4): for a server
/// that wants the fields before aggregating (`fedotp_aggregator_add_message` decodes and adds
/// in one call).
///
/// - `bytes`, `len`: exactly one message (not a longer buffer: trailing bytes are refused);
///   read only;
/// - `n_ctx`, `width`: the prompt shape the receiver expects;
/// - `prompt_out`: `n_ctx * width` floats; receives the prompt. Must not overlap `bytes`;
/// - `header_out`: receives the other fields. Must not overlap `bytes` or `prompt_out`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`bytes`, `prompt_out`, `header_out`); the
/// shape's `FEDOTP_ERR_EMPTY_DIMENSION` / `FEDOTP_ERR_SIZE_OVERFLOW` / `FEDOTP_ERR_TOO_LARGE`;
/// `FEDOTP_ERR_SIZE_OVERFLOW` (a `len` no buffer can have); the message's first defect:
/// `FEDOTP_ERR_MESSAGE_TRUNCATED`, `FEDOTP_ERR_BAD_MAGIC`, `FEDOTP_ERR_UNSUPPORTED_VERSION`,
/// `FEDOTP_ERR_UNKNOWN_KIND`, `FEDOTP_ERR_WRONG_KIND` (a global prompt),
/// `FEDOTP_ERR_LENGTH_MISMATCH`, `FEDOTP_ERR_TRAILING_BYTES`, `FEDOTP_ERR_CHECKSUM_MISMATCH`,
/// `FEDOTP_ERR_RESERVED_NOT_ZERO`, `FEDOTP_ERR_SHAPE_MISMATCH`, `FEDOTP_ERR_NON_FINITE`,
/// `FEDOTP_ERR_ACCURACY_OUT_OF_RANGE`, with the field and byte offset in
/// `fedotp_last_error_message()`; `FEDOTP_ERR_ALIASED_BUFFERS`. On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to buffers of the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_update_decode(
    bytes: *const u8,
    len: usize,
    n_ctx: usize,
    width: usize,
    prompt_out: *mut f32,
    header_out: *mut FedotpClientUpdateHeader,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        // SAFETY: `decode_into`'s contract is this function's: a non-NULL `bytes` points to
        // `len` bytes, `prompt_out` to `n_ctx * width` writable floats, `header_out` to a
        // writable header (the header's contract for these arguments).
        unsafe {
            decode_into(
                bytes,
                len,
                shape,
                prompt_out,
                (header_out, "header_out"),
                |bytes, prompt_out| {
                    let update = ClientUpdate::decode(bytes, shape, prompt_out)?;
                    Ok(FedotpClientUpdateHeader::from(&update))
                },
            )
        }
    })
}

/// Decodes a global-prompt message, checking every field (docs/PROTOCOL.md §3.4): what a
/// client does with the server's message before a round.
///
/// - `bytes`, `len`: exactly one message (trailing bytes are refused); read only;
/// - `n_ctx`, `width`: the prompt shape the receiver expects;
/// - `prompt_out`: `n_ctx * width` floats; receives the global prompt. Must not overlap
///   `bytes`;
/// - `round_out`: receives the round the prompt opens. Must not overlap the other buffers.
///
/// Statuses: as `fedotp_client_update_decode` (`FEDOTP_ERR_WRONG_KIND` for a client update;
/// no metrics, so no `FEDOTP_ERR_ACCURACY_OUT_OF_RANGE`). On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to buffers of the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn fedotp_global_prompt_decode(
    bytes: *const u8,
    len: usize,
    n_ctx: usize,
    width: usize,
    prompt_out: *mut f32,
    round_out: *mut u32,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        // SAFETY: `decode_into`'s contract is this function's: a non-NULL `bytes` points to
        // `len` bytes, `prompt_out` to `n_ctx * width` writable floats, `round_out` to a
        // writable uint32_t (the header's contract for these arguments).
        unsafe {
            decode_into(
                bytes,
                len,
                shape,
                prompt_out,
                (round_out, "round_out"),
                |bytes, prompt_out| Ok(GlobalPrompt::decode(bytes, shape, prompt_out)?.round),
            )
        }
    })
}
