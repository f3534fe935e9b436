//! What a client is: where it computes and the shape of its prompt.

use fedotp_host::backend::Device;

use super::FedotpClient;
use crate::boundary::{call, check_disjoint, require, write};
use crate::handle;

/// `fedotp_client_device`'s kind: the client computes on the CPU.
pub const FEDOTP_DEVICE_CPU: u32 = 0;
/// `fedotp_client_device`'s kind: the client computes on a CUDA GPU.
pub const FEDOTP_DEVICE_CUDA: u32 = 1;

/// Where a client computes — what "auto" chose, say, for a log line.
///
/// - `kind_out`: receives `FEDOTP_DEVICE_CPU` or `FEDOTP_DEVICE_CUDA`;
/// - `ordinal_out`: receives the GPU's number (the N of "cuda:N"), 0 on the CPU; distinct from
///   `kind_out`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_ALIASED_BUFFERS`. On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to writable `uint32_t`s.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_device(
    client: *const FedotpClient,
    kind_out: *mut u32,
    ordinal_out: *mut u32,
) -> i32 {
    call(|| {
        check_disjoint(kind_out, 1, "kind_out", ordinal_out, 1, "ordinal_out")?;
        require(kind_out, "kind_out")?;
        require(ordinal_out, "ordinal_out")?;
        let device = handle::with(client, "client", |client| Ok(client.engine.device()))?;
        let (kind, ordinal) = match device {
            Device::Cuda(ordinal) => (
                FEDOTP_DEVICE_CUDA,
                u32::try_from(ordinal).unwrap_or(u32::MAX),
            ),
            // A client's device is the one opened, never "auto".
            Device::Cpu | Device::Auto => (FEDOTP_DEVICE_CPU, 0),
        };
        // SAFETY: both non-NULL (checked above), writable and apart.
        unsafe {
            write(kind_out, kind, "kind_out")?;
            write(ordinal_out, ordinal, "ordinal_out")
        }
    })
}

/// The shape of a client's global prompt — what its messages and the server's aggregator
/// carry: `n_ctx` rows of `width` floats.
///
/// - `n_ctx_out`, `width_out`: receive the two; distinct.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_ALIASED_BUFFERS`. On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to writable `size_t`s.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_prompt_shape(
    client: *const FedotpClient,
    n_ctx_out: *mut usize,
    width_out: *mut usize,
) -> i32 {
    call(|| {
        check_disjoint(n_ctx_out, 1, "n_ctx_out", width_out, 1, "width_out")?;
        require(n_ctx_out, "n_ctx_out")?;
        require(width_out, "width_out")?;
        let shape = handle::with(client, "client", |client| Ok(client.shape))?;
        // SAFETY: both non-NULL (checked above), writable and apart.
        unsafe {
            write(n_ctx_out, shape.n_ctx() as usize, "n_ctx_out")?;
            write(width_out, shape.width() as usize, "width_out")
        }
    })
}
