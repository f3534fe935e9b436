//! The client's side of the federation: its update message to the server, the server's
//! global prompt installed, and the global prompt copied out.

use fedotp_core::protocol::{ClientUpdate, GlobalPrompt};

use super::{Client, FedotpClient};
use crate::boundary::{call, check_disjoint, check_span, require, slice, slice_mut, write};
use crate::handle;
use crate::message::prompt_shape;
use crate::status::{Failure, FEDOTP_ERR_NOT_TRAINED, FEDOTP_ERR_SHAPE_MISMATCH};

impl Client {
    /// The global prompt: the first of the two.
    fn global(&self) -> &[f32] {
        &self.context[..self.shape.len()]
    }
}

/// The size in bytes of the update message `fedotp_client_write_update` writes for this
/// client: size its buffer with it.
///
/// - `size_out`: receives the size.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`. On error nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `size_out` must point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_update_message_size(
    client: *const FedotpClient,
    size_out: *mut usize,
) -> i32 {
    call(|| {
        require(size_out, "size_out")?;
        let size = handle::with(client, "client", |client| {
            Ok(ClientUpdate::encoded_len(client.shape))
        })?;
        // SAFETY: non-NULL (checked above) and writable.
        unsafe { write(size_out, size, "size_out") }
    })
}

/// Writes the client's update message (client -> server, docs/PROTOCOL.md): its global prompt
/// after the last training, weighted by the number of images trained on, with that training's
/// loss and accuracy, for the round of the global prompt installed last (0 if none).
///
/// - `client_id`: the client's id in the federation (the server counts each id once a round);
/// - `out`, `capacity`: the caller's buffer and its size in bytes, at least
///   `fedotp_client_update_message_size`; only the message's bytes are written;
/// - `written_out`: receives the message's size. Must not overlap `out`'s message bytes.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `out`, `written_out`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_NOT_TRAINED`
/// (no successful `fedotp_client_train` since the client was created, loaded or given a global
/// prompt: there is nothing to send); `FEDOTP_ERR_BUFFER_TOO_SMALL`;
/// `FEDOTP_ERR_SIZE_OVERFLOW` (a `capacity` no buffer can have); `FEDOTP_ERR_ALIASED_BUFFERS`.
/// On error nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `out` must point to `capacity` writable bytes; a non-NULL `written_out` to a
/// writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_write_update(
    client: *const FedotpClient,
    client_id: u32,
    out: *mut u8,
    capacity: usize,
    written_out: *mut usize,
) -> i32 {
    call(|| {
        check_span::<u8>(capacity, "out")?;
        let written = handle::with(client, "client", |client| {
            let Some(trained) = client.trained else {
                return Err(Failure::new(
                    FEDOTP_ERR_NOT_TRAINED,
                    format!(
                        "the client has not trained since it was created, loaded or given the \
                         global prompt of round {}: there is no update to send",
                        client.round
                    ),
                ));
            };
            let needed = ClientUpdate::encoded_len(client.shape);
            let out_len = capacity.min(needed);
            check_disjoint(written_out, 1, "written_out", out, out_len, "out")?;
            require(written_out, "written_out")?;
            // SAFETY: the caller passes `capacity` >= `out_len` writable bytes at `out`.
            let out = unsafe { slice_mut(out, out_len, "out") }?;
            let update = ClientUpdate {
                round: client.round,
                client: client_id,
                samples: trained.samples,
                shape: client.shape,
                prompt: client.global(),
                loss: Some(trained.loss),
                accuracy: Some(trained.accuracy),
            };
            Ok(update.encode(out)?)
        })?;
        // SAFETY: non-NULL (checked above), writable, apart from the message.
        unsafe { write(written_out, written, "written_out") }
    })
}

/// Reads a global-prompt message (server -> client) and installs its prompt as the client's
/// global prompt; the local prompt, optimiser and generator are kept. The client then belongs
/// to the message's round: its next update is for that round.
///
/// - `bytes`, `len`: exactly one global-prompt message of the client's prompt shape; read
///   only;
/// - `round_out`: NULL, or receives the message's round.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `bytes`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_SIZE_OVERFLOW` (a
/// `len` no buffer can have); every message defect of `fedotp_global_prompt_decode`
/// (`FEDOTP_ERR_MESSAGE_TRUNCATED`, `_BAD_MAGIC`, `_UNSUPPORTED_VERSION`, `_UNKNOWN_KIND`,
/// `_WRONG_KIND`, `_LENGTH_MISMATCH`, `_TRAILING_BYTES`, `_CHECKSUM_MISMATCH`,
/// `_RESERVED_NOT_ZERO`, `_SHAPE_MISMATCH`, `_NON_FINITE`); `FEDOTP_ERR_ALIASED_BUFFERS`. On
/// error the client is unchanged and nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `bytes` must point to `len` bytes; a non-NULL `round_out` to a writable
/// `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_read_global(
    client: *mut FedotpClient,
    bytes: *const u8,
    len: usize,
    round_out: *mut u32,
) -> i32 {
    call(|| {
        check_span::<u8>(len, "bytes")?;
        check_disjoint(round_out, 1, "round_out", bytes, len, "bytes")?;
        let round = handle::with(client, "client", |client| {
            // SAFETY: the caller passes `len` bytes at `bytes`.
            let bytes = unsafe { slice(bytes, len, "bytes") }?;
            let shape = client.shape;
            // Decoded into a copy: a refused message leaves the prompt as it was.
            let mut global = client.global().to_vec();
            let message = GlobalPrompt::decode(bytes, shape, &mut global)?;
            let round = message.round;
            client.context[..shape.len()].copy_from_slice(&global);
            client.round = round;
            client.trained = None;
            Ok(round)
        })?;
        // SAFETY: `as_mut` turns NULL into `None`; a non-NULL `round_out` points to an aligned,
        // writable uint32_t (the header's contract), apart from `bytes` (checked above), and
        // the slice of `bytes` is no longer used.
        if let Some(round_out) = unsafe { round_out.as_mut() } {
            *round_out = round;
        }
        Ok(())
    })
}

/// Copies the client's global prompt (what its next update carries), `n_ctx x width` floats,
/// row-major: for a coordinator that aggregates in-process with `fedotp_aggregator_add_update`,
/// or to inspect it.
///
/// - `prompt_out`, `n_ctx`, `width`: the buffer and the shape it has; the shape must be the
///   client's (`fedotp_client_prompt_shape`).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `prompt_out`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; the shape's
/// `FEDOTP_ERR_EMPTY_DIMENSION` / `FEDOTP_ERR_SIZE_OVERFLOW` / `FEDOTP_ERR_TOO_LARGE`;
/// `FEDOTP_ERR_SHAPE_MISMATCH`. On error nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `prompt_out` must point to `n_ctx * width` writable floats.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_global_prompt(
    client: *const FedotpClient,
    prompt_out: *mut f32,
    n_ctx: usize,
    width: usize,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        handle::with(client, "client", |client| {
            if shape != client.shape {
                return Err(Failure::new(
                    FEDOTP_ERR_SHAPE_MISMATCH,
                    format!(
                        "`prompt_out` is {shape} (n_ctx×width) but the client's prompt is {}",
                        client.shape
                    ),
                ));
            }
            // SAFETY: the caller passes `n_ctx * width` writable floats.
            let out = unsafe { slice_mut(prompt_out, shape.len(), "prompt_out") }?;
            out.copy_from_slice(client.global());
            Ok(())
        })
    })
}
