//! The wire format (docs/PROTOCOL.md): encode and decode both kinds of message with
//! libfedotp's `fedotp_*_encode` / `_decode`.

use fedotp::FedotpClientUpdateHeader;
use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::arrays::{contiguous, shape_of_rank, typed};
use crate::failure::{check, Failure};

/// A client update's fields besides the prompt.
#[pyclass(module = "fedotp", frozen, get_all)]
pub(crate) struct UpdateHeader {
    /// The round the update was trained in.
    round: u32,
    /// The client's id.
    client: u32,
    /// The client's training-set size, its weight in the average.
    samples: u32,
    /// The mean training loss, if the message carries one.
    loss: Option<f32>,
    /// The training accuracy in [0, 1], if the message carries one.
    accuracy: Option<f32>,
}

#[pymethods]
impl UpdateHeader {
    fn __repr__(&self) -> String {
        format!(
            "UpdateHeader(round={}, client={}, samples={}, loss={:?}, accuracy={:?})",
            self.round, self.client, self.samples, self.loss, self.accuracy
        )
    }
}

impl From<FedotpClientUpdateHeader> for UpdateHeader {
    fn from(header: FedotpClientUpdateHeader) -> Self {
        UpdateHeader {
            round: header.round,
            client: header.client,
            samples: header.samples,
            loss: (header.has_loss == 1).then_some(header.loss),
            accuracy: (header.has_accuracy == 1).then_some(header.accuracy),
        }
    }
}

pub(crate) fn empty_header() -> FedotpClientUpdateHeader {
    FedotpClientUpdateHeader {
        round: 0,
        client: 0,
        samples: 0,
        has_loss: 0,
        loss: 0.0,
        has_accuracy: 0,
        accuracy: 0.0,
    }
}

/// A prompt argument: a C-contiguous `(n_ctx, width)` float32 array, borrowed.
pub(crate) fn with_prompt<R>(
    prompt: &Bound<'_, PyAny>,
    body: impl FnOnce(&[f32], usize, usize) -> PyResult<R>,
) -> PyResult<R> {
    let py = prompt.py();
    let array = typed::<f32>(prompt, "prompt", "float32")?;
    shape_of_rank(py, &array, &[2], "prompt", "(n_ctx, width)")?;
    let (n_ctx, width) = (array.shape()[0], array.shape()[1]);
    body(contiguous(py, &array, "prompt")?, n_ctx, width)
}

/// Encodes with `encode(out, capacity, written)` into a buffer of `size` bytes.
fn encoded<'py>(
    py: Python<'py>,
    size: Result<usize, Failure>,
    encode: impl FnOnce(*mut u8, usize, &mut usize) -> i32,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut message = vec![0u8; size?];
    let mut written = 0;
    check(encode(message.as_mut_ptr(), message.len(), &mut written))?;
    Ok(PyBytes::new(py, &message[..written]))
}

/// The global-prompt message (server to client) opening round `round` with `prompt`, float32
/// `(n_ctx, width)` (docs/PROTOCOL.md).
///
/// >>> import numpy as np, fedotp
/// >>> message = fedotp.encode_global_prompt(1, np.ones((4, 64), np.float32))
/// >>> fedotp.decode_global_prompt(message, 4, 64)[0]
/// 1
#[pyfunction]
pub(crate) fn encode_global_prompt<'py>(
    py: Python<'py>,
    round: u32,
    prompt: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    with_prompt(prompt, |values, n_ctx, width| {
        let mut size = 0;
        // SAFETY: a writable local.
        let sized = check(unsafe { fedotp::fedotp_global_prompt_size(n_ctx, width, &mut size) });
        encoded(py, sized.map(|()| size), |out, capacity, written| {
            // SAFETY: `values` holds `n_ctx * width` floats; `out` `capacity` writable bytes
            // of our own; `written` a distinct local.
            unsafe {
                fedotp::fedotp_global_prompt_encode(
                    round,
                    values.as_ptr(),
                    n_ctx,
                    width,
                    out,
                    capacity,
                    written,
                )
            }
        })
    })
}

/// A client-update message (client to server): `prompt` (float32 `(n_ctx, width)`) trained in
/// `round` by client `client` on `samples` images, with its loss and accuracy if given.
#[pyfunction]
#[pyo3(signature = (round, client, samples, prompt, loss=None, accuracy=None))]
pub(crate) fn encode_client_update<'py>(
    py: Python<'py>,
    round: u32,
    client: u32,
    samples: u32,
    prompt: &Bound<'py, PyAny>,
    loss: Option<f32>,
    accuracy: Option<f32>,
) -> PyResult<Bound<'py, PyBytes>> {
    with_prompt(prompt, |values, n_ctx, width| {
        let mut size = 0;
        // SAFETY: a writable local.
        let sized = check(unsafe { fedotp::fedotp_client_update_size(n_ctx, width, &mut size) });
        let loss_ptr = loss.as_ref().map_or(std::ptr::null(), |v| v as *const f32);
        let accuracy_ptr = accuracy
            .as_ref()
            .map_or(std::ptr::null(), |v| v as *const f32);
        encoded(py, sized.map(|()| size), |out, capacity, written| {
            // SAFETY: as in `encode_global_prompt`; `loss_ptr` and `accuracy_ptr` are NULL or
            // point to live locals.
            unsafe {
                fedotp::fedotp_client_update_encode(
                    round,
                    client,
                    samples,
                    values.as_ptr(),
                    n_ctx,
                    width,
                    loss_ptr,
                    accuracy_ptr,
                    out,
                    capacity,
                    written,
                )
            }
        })
    })
}

/// `(round, prompt)` of a global-prompt message for an `(n_ctx, width)` prompt; `BadMessage` or
/// `ShapeMismatch` if it is not one.
#[pyfunction]
pub(crate) fn decode_global_prompt<'py>(
    py: Python<'py>,
    message: &[u8],
    n_ctx: usize,
    width: usize,
) -> PyResult<(u32, Bound<'py, PyAny>)> {
    let mut prompt = vec![0.0f32; n_ctx.saturating_mul(width)];
    let mut round = 0;
    // SAFETY: `message` is a live slice; `prompt` holds `n_ctx * width` floats or libfedotp
    // refuses the shape (its product overflows) before writing; `round` a distinct local.
    check(unsafe {
        fedotp::fedotp_global_prompt_decode(
            message.as_ptr(),
            message.len(),
            n_ctx,
            width,
            prompt.as_mut_ptr(),
            &mut round,
        )
    })?;
    Ok((
        round,
        PyArray1::from_vec(py, prompt)
            .reshape([n_ctx, width])?
            .into_any(),
    ))
}

/// `(UpdateHeader, prompt)` of a client-update message for an `(n_ctx, width)` prompt;
/// `BadMessage` or `ShapeMismatch` if it is not one.
#[pyfunction]
pub(crate) fn decode_client_update<'py>(
    py: Python<'py>,
    message: &[u8],
    n_ctx: usize,
    width: usize,
) -> PyResult<(UpdateHeader, Bound<'py, PyAny>)> {
    let mut prompt = vec![0.0f32; n_ctx.saturating_mul(width)];
    let mut header = empty_header();
    // SAFETY: as in `decode_global_prompt`.
    check(unsafe {
        fedotp::fedotp_client_update_decode(
            message.as_ptr(),
            message.len(),
            n_ctx,
            width,
            prompt.as_mut_ptr(),
            &mut header,
        )
    })?;
    Ok((
        header.into(),
        PyArray1::from_vec(py, prompt)
            .reshape([n_ctx, width])?
            .into_any(),
    ))
}
