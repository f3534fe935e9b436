//! The server's side of a round: FedAvg of the clients' global prompts behind an opaque handle.
//!
//! `FedotpAggregator` is `fedotp_core::protocol::Aggregator` with its storage on the heap: the
//! weighted sum (`f64`, one per prompt float), the list of clients counted this round, and a
//! buffer that messages are decoded into, so that adding an update allocates nothing.

use fedotp_core::protocol::{Aggregator, ClientUpdate};

use crate::boundary::{call, check_disjoint, check_span, require, slice, slice_mut, write, zeroed};
use crate::handle::{self, Handle};
use crate::message::{prompt_shape, FedotpClientUpdateHeader};
use crate::status::{
    Failure, FEDOTP_ERR_EMPTY_DIMENSION, FEDOTP_ERR_SHAPE_MISMATCH, FEDOTP_ERR_TOO_LARGE,
};

/// The most clients one aggregator round may count: 2^24. The client list is allocated when
/// the aggregator is created, 4 bytes a client.
pub const FEDOTP_MAX_CLIENTS: usize = 1 << 24;

/// A server-side aggregator: the weighted FedAvg of one round's client updates
/// (docs/PROTOCOL.md §4), `sum(samples_i * prompt_i) / sum(samples_i)`, accumulated in double
/// precision one update at a time.
///
/// Opaque: create it with `fedotp_aggregator_new`, free it with `fedotp_aggregator_free`.
/// A handle is an id, never dereferenced by the caller or by libfedotp: a freed or forged
/// handle is refused with `FEDOTP_ERR_INVALID_HANDLE`, a handle of another type with
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`. Every function on one aggregator is thread-safe: calls from
/// several threads take turns on it, and calls on different aggregators run in parallel.
pub struct FedotpAggregator {
    _opaque: [u8; 0],
}

/// What a `FedotpAggregator` handle names.
pub(crate) struct RoundAggregator {
    aggregator: Aggregator<Vec<f64>, Vec<u32>>,
    /// Where `fedotp_aggregator_add_message` decodes a message's prompt.
    received: Vec<f32>,
}

impl Handle for FedotpAggregator {
    type Object = RoundAggregator;
    const NAME: &'static str = "FedotpAggregator";
}

/// Creates an aggregator for round `round` of `n_ctx x width` prompts.
///
/// - `max_clients`: the most clients a round may count, 1 to `FEDOTP_MAX_CLIENTS`; the list is
///   allocated now (4 bytes a client) and refuses client `max_clients + 1` of a round;
/// - `aggregator_out`: receives the new handle. The caller owns it and frees it with
///   `fedotp_aggregator_free`.
///
/// Memory: `12 * n_ctx * width + 4 * max_clients` bytes, whatever the number of updates.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`aggregator_out`); the shape's
/// `FEDOTP_ERR_EMPTY_DIMENSION` / `FEDOTP_ERR_SIZE_OVERFLOW` / `FEDOTP_ERR_TOO_LARGE`;
/// `FEDOTP_ERR_EMPTY_DIMENSION` (`max_clients` is 0); `FEDOTP_ERR_TOO_LARGE` (`max_clients`
/// above `FEDOTP_MAX_CLIENTS`); `FEDOTP_ERR_OUT_OF_MEMORY`. On error nothing is written and
/// no memory is kept. Thread-safe.
///
/// # Safety
/// A non-NULL `aggregator_out` must point to a writable `FedotpAggregator *`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_aggregator_new(
    n_ctx: usize,
    width: usize,
    round: u32,
    max_clients: usize,
    aggregator_out: *mut *mut FedotpAggregator,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        if max_clients == 0 {
            return Err(Failure::new(
                FEDOTP_ERR_EMPTY_DIMENSION,
                "`max_clients` is zero",
            ));
        }
        if max_clients > FEDOTP_MAX_CLIENTS {
            return Err(Failure::new(
                FEDOTP_ERR_TOO_LARGE,
                format!(
                    "`max_clients` = {max_clients} exceeds FEDOTP_MAX_CLIENTS ({FEDOTP_MAX_CLIENTS})"
                ),
            ));
        }
        require(aggregator_out, "aggregator_out")?;
        let weighted_sum = zeroed::<f64>(shape.len(), "aggregator's weighted sum")?;
        let seen_clients = zeroed::<u32>(max_clients, "aggregator's client list")?;
        let received = zeroed::<f32>(shape.len(), "aggregator's message buffer")?;
        let aggregator = Aggregator::new(shape, round, weighted_sum, seen_clients)?;
        let handle = handle::register::<FedotpAggregator>(RoundAggregator {
            aggregator,
            received,
        })?;
        // SAFETY: `aggregator_out` is non-NULL (checked above) and writable.
        unsafe { write(aggregator_out, handle, "aggregator_out") }
    })
}

/// Decodes a client-update message and adds it to the round: the normal path for a server
/// that receives updates as bytes.
///
/// - `bytes`, `len`: exactly one client-update message (docs/PROTOCOL.md); read only, not
///   kept;
/// - `header_out`: NULL, or receives the message's other fields (client, samples, loss,
///   accuracy) when the update is accepted. Must not overlap `bytes`.
///
/// The update is refused — the aggregate unchanged, nothing written — for any defect of the
/// message (the statuses of `fedotp_client_update_decode`, `FEDOTP_ERR_SHAPE_MISMATCH` for a
/// prompt of another shape than the aggregator's) and for any of the aggregator's refusals:
/// `FEDOTP_ERR_ROUND_MISMATCH`, `FEDOTP_ERR_ZERO_WEIGHT`, `FEDOTP_ERR_DUPLICATE_CLIENT`,
/// `FEDOTP_ERR_CLIENT_LIST_FULL`. Also `FEDOTP_ERR_NULL_POINTER` (`aggregator`, `bytes`),
/// `FEDOTP_ERR_INVALID_HANDLE`, `FEDOTP_ERR_WRONG_HANDLE_TYPE`, `FEDOTP_ERR_SIZE_OVERFLOW` (a
/// `len` no buffer can have), `FEDOTP_ERR_ALIASED_BUFFERS`. Thread-safe; the message is
/// decoded into the aggregator's own buffer, so concurrent calls on one aggregator take turns.
///
/// # Safety
/// Non-NULL pointers must point to buffers of the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn fedotp_aggregator_add_message(
    aggregator: *mut FedotpAggregator,
    bytes: *const u8,
    len: usize,
    header_out: *mut FedotpClientUpdateHeader,
) -> i32 {
    call(|| {
        check_span::<u8>(len, "bytes")?;
        check_disjoint(header_out, 1, "header_out", bytes, len, "bytes")?;
        let header = handle::with(aggregator, "aggregator", |round| {
            // SAFETY: the caller passes `len` bytes at `bytes`.
            let bytes = unsafe { slice(bytes, len, "bytes") }?;
            let shape = round.aggregator.shape();
            let update = ClientUpdate::decode(bytes, shape, &mut round.received)?;
            round.aggregator.add(&update)?;
            Ok(FedotpClientUpdateHeader::from(&update))
        })?;
        // SAFETY: `as_mut` turns NULL into `None`; a non-NULL `header_out` points to an aligned,
        // writable header (the header's contract), apart from `bytes` (checked above); a plain
        // struct with nothing to drop, so assigning over whatever was there is sound.
        if let Some(header_out) = unsafe { header_out.as_mut() } {
            *header_out = header;
        }
        Ok(())
    })
}

/// Adds one client's update given as values rather than a message (for a server that
/// receives prompts some other way, or trains clients in-process).
///
/// - `round`, `client`, `samples`: as in a client update (`samples` is the weight, > 0);
/// - `prompt`, `n_ctx`, `width`: the client's global prompt, `n_ctx * width` floats,
///   row-major; the shape must be the aggregator's. Read only, not kept.
///
/// Refused — the aggregate unchanged — with `FEDOTP_ERR_ROUND_MISMATCH`,
/// `FEDOTP_ERR_SHAPE_MISMATCH`, `FEDOTP_ERR_ZERO_WEIGHT`, `FEDOTP_ERR_DUPLICATE_CLIENT`,
/// `FEDOTP_ERR_CLIENT_LIST_FULL` or `FEDOTP_ERR_NON_FINITE` (checked in this order). Also
/// `FEDOTP_ERR_NULL_POINTER` (`aggregator`, `prompt`), `FEDOTP_ERR_INVALID_HANDLE`,
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`, the shape's `FEDOTP_ERR_EMPTY_DIMENSION` /
/// `FEDOTP_ERR_SIZE_OVERFLOW` / `FEDOTP_ERR_TOO_LARGE`. Thread-safe.
///
/// # Safety
/// A non-NULL `prompt` must point to `n_ctx * width` floats.
#[no_mangle]
pub unsafe extern "C" fn fedotp_aggregator_add_update(
    aggregator: *mut FedotpAggregator,
    round: u32,
    client: u32,
    samples: u32,
    prompt: *const f32,
    n_ctx: usize,
    width: usize,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        handle::with(aggregator, "aggregator", |aggregator| {
            // SAFETY: the caller passes `n_ctx * width` floats at `prompt`.
            let prompt = unsafe { slice(prompt, shape.len(), "prompt") }?;
            let update = ClientUpdate {
                round,
                client,
                samples,
                shape,
                prompt,
                loss: None,
                accuracy: None,
            };
            aggregator.aggregator.add(&update)?;
            Ok(())
        })
    })
}

/// Writes the round's average so far, `sum(samples_i * prompt_i) / sum(samples_i)` rounded to
/// float, the next global prompt. The aggregator is unchanged: more updates may still come,
/// and finishing again includes them.
///
/// - `global_out`, `n_ctx`, `width`: `n_ctx * width` floats, row-major; the shape must be the
///   aggregator's.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`aggregator`, `global_out`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; the shape's
/// `FEDOTP_ERR_EMPTY_DIMENSION` / `FEDOTP_ERR_SIZE_OVERFLOW` / `FEDOTP_ERR_TOO_LARGE`;
/// `FEDOTP_ERR_SHAPE_MISMATCH`; `FEDOTP_ERR_NO_UPDATES` (nothing accepted this round). On
/// error nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `global_out` must point to `n_ctx * width` writable floats.
#[no_mangle]
pub unsafe extern "C" fn fedotp_aggregator_finish(
    aggregator: *const FedotpAggregator,
    global_out: *mut f32,
    n_ctx: usize,
    width: usize,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        handle::with(aggregator, "aggregator", |aggregator| {
            let expected = aggregator.aggregator.shape();
            if shape != expected {
                return Err(Failure::new(
                    FEDOTP_ERR_SHAPE_MISMATCH,
                    format!("`global_out` is {shape} (n_ctx×width) but the aggregator averages {expected}"),
                ));
            }
            // SAFETY: the caller passes `n_ctx * width` writable floats at `global_out`.
            let global_out = unsafe { slice_mut(global_out, shape.len(), "global_out") }?;
            aggregator.aggregator.finish(global_out)?;
            Ok(())
        })
    })
}

/// Forgets every update and starts collecting round `round` (any number: rounds need not be
/// consecutive).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`. Thread-safe.
#[no_mangle]
pub extern "C" fn fedotp_aggregator_start_round(
    aggregator: *mut FedotpAggregator,
    round: u32,
) -> i32 {
    call(|| {
        handle::with(aggregator, "aggregator", |aggregator| {
            aggregator.aggregator.start_round(round);
            Ok(())
        })
    })
}

/// Where the round stands.
///
/// - `round_out`: receives the round the aggregator collects;
/// - `clients_out`: receives the number of clients counted this round;
/// - `total_samples_out`: receives their total sample count (the average's denominator).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (any argument);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_ALIASED_BUFFERS`
/// (outputs that overlap). On error nothing is written. Thread-safe: the three values are read
/// together, under the aggregator's lock.
///
/// # Safety
/// Non-NULL pointers must point to writable values of their types.
#[no_mangle]
pub unsafe extern "C" fn fedotp_aggregator_progress(
    aggregator: *const FedotpAggregator,
    round_out: *mut u32,
    clients_out: *mut usize,
    total_samples_out: *mut u64,
) -> i32 {
    call(|| {
        check_disjoint(round_out, 1, "round_out", clients_out, 1, "clients_out")?;
        check_disjoint(
            round_out,
            1,
            "round_out",
            total_samples_out,
            1,
            "total_samples_out",
        )?;
        check_disjoint(
            clients_out,
            1,
            "clients_out",
            total_samples_out,
            1,
            "total_samples_out",
        )?;
        require(round_out, "round_out")?;
        require(clients_out, "clients_out")?;
        require(total_samples_out, "total_samples_out")?;
        let (round, clients, total_samples) =
            handle::with(aggregator, "aggregator", |aggregator| {
                let aggregator = &aggregator.aggregator;
                Ok((
                    aggregator.round(),
                    aggregator.clients().len(),
                    aggregator.total_samples(),
                ))
            })?;
        // SAFETY: the three are non-NULL (checked above), writable and apart.
        unsafe {
            write(round_out, round, "round_out")?;
            write(clients_out, clients, "clients_out")?;
            write(total_samples_out, total_samples, "total_samples_out")
        }
    })
}

/// Frees an aggregator. NULL is a no-op (`FEDOTP_OK`). The handle is invalid afterwards: using
/// or freeing it again returns `FEDOTP_ERR_INVALID_HANDLE` (handles are never reused).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_INVALID_HANDLE` (freed or never issued: nothing is
/// freed); `FEDOTP_ERR_WRONG_HANDLE_TYPE` (nothing is freed). Thread-safe: a call on the same
/// aggregator already running in another thread completes normally, and the memory is released
/// when it returns; calls made after the free are refused.
#[no_mangle]
pub extern "C" fn fedotp_aggregator_free(aggregator: *mut FedotpAggregator) -> i32 {
    call(|| handle::release(aggregator, "aggregator"))
}
