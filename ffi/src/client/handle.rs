//! The client's C handle: the opaque type C holds, and its release.

use super::Client;
use crate::boundary::call;
use crate::handle::{self, Handle};

/// A federated client: its class names, its global and local prompts, its optimiser state
/// and random generator, on a model.
///
/// Opaque: create it with `fedotp_client_new`, free it with `fedotp_client_free`.
/// Thread-safe: calls on one client take turns (a training call holds it until it returns);
/// calls on different clients run in parallel on the CPU, also when they share a model, and
/// take turns on a GPU.
pub struct FedotpClient {
    _opaque: [u8; 0],
}

impl Handle for FedotpClient {
    type Object = Client;
    const NAME: &'static str = "FedotpClient";
}

/// Frees a client. NULL is a no-op (`FEDOTP_OK`); the handle is invalid afterwards.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`;
/// `FEDOTP_ERR_HANDLE_BUSY` (called from a progress callback of a training that uses it). On
/// error nothing is freed. Thread-safe: a call on the client running in another thread (a training)
/// finishes first.
#[no_mangle]
pub extern "C" fn fedotp_client_free(client: *mut FedotpClient) -> i32 {
    call(|| handle::release(client, "client"))
}
