//! `fedotp._fedotp`: libfedotp's client API for Python, compiled.
//!
//! Every function but the federated run's (`federation`, which drives `fedotp_host`'s run
//! code: a run has no C ABI) calls libfedotp's C entry points (the `fedotp-ffi` crate, linked in as a Rust
//! library): they check every argument and drive `fedotp_host` exactly as for a C program, so
//! Python gets the same results, bit for bit, and the same refusals. This layer only turns
//! NumPy arrays into the buffers they take (borrowed, never copied), releases the GIL while
//! they compute, and turns their statuses into exceptions (`failure`). The Python package
//! `fedotp` (python/fedotp) re-exports it with the exception hierarchy and the type stubs.

// Every unsafe call sits in its own `unsafe {}` block with a `// SAFETY:` comment.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod aggregator;
mod arrays;
mod client;
mod failure;
mod federation;
mod images;
mod message;
mod model;
mod ot;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Every libfedotp status by its C name, for `fedotp._errors` to map to exception classes.
macro_rules! status_codes {
    ($($name:ident,)*) => {
        &[$((stringify!($name), fedotp::$name)),*]
    };
}

const STATUS_CODES: &[(&str, i32)] = status_codes!(
    FEDOTP_OK,
    FEDOTP_ERR_NULL_POINTER,
    FEDOTP_ERR_PANIC,
    FEDOTP_ERR_ALIASED_BUFFERS,
    FEDOTP_ERR_OUT_OF_MEMORY,
    FEDOTP_ERR_EMPTY_DIMENSION,
    FEDOTP_ERR_SIZE_OVERFLOW,
    FEDOTP_ERR_NON_FINITE,
    FEDOTP_ERR_TOO_LARGE,
    FEDOTP_ERR_BUFFER_TOO_SMALL,
    FEDOTP_ERR_INVALID_EPS,
    FEDOTP_ERR_INVALID_GAMMA,
    FEDOTP_ERR_INVALID_MAX_ITER,
    FEDOTP_ERR_INVALID_TOL,
    FEDOTP_ERR_INVALID_BALANCED,
    FEDOTP_ERR_INVALID_SCALE,
    FEDOTP_ERR_ZERO_NORM,
    FEDOTP_ERR_INVALID_HANDLE,
    FEDOTP_ERR_WRONG_HANDLE_TYPE,
    FEDOTP_ERR_HANDLE_BUSY,
    FEDOTP_ERR_MESSAGE_TRUNCATED,
    FEDOTP_ERR_BAD_MAGIC,
    FEDOTP_ERR_UNSUPPORTED_VERSION,
    FEDOTP_ERR_UNKNOWN_KIND,
    FEDOTP_ERR_WRONG_KIND,
    FEDOTP_ERR_LENGTH_MISMATCH,
    FEDOTP_ERR_TRAILING_BYTES,
    FEDOTP_ERR_CHECKSUM_MISMATCH,
    FEDOTP_ERR_RESERVED_NOT_ZERO,
    FEDOTP_ERR_SHAPE_MISMATCH,
    FEDOTP_ERR_ACCURACY_OUT_OF_RANGE,
    FEDOTP_ERR_ROUND_MISMATCH,
    FEDOTP_ERR_ZERO_WEIGHT,
    FEDOTP_ERR_DUPLICATE_CLIENT,
    FEDOTP_ERR_CLIENT_LIST_FULL,
    FEDOTP_ERR_NO_UPDATES,
    FEDOTP_ERR_IO,
    FEDOTP_ERR_MODEL_FORMAT,
    FEDOTP_ERR_INVALID_STRIDE,
    FEDOTP_ERR_INVALID_WINDOW,
    FEDOTP_ERR_IMAGE_DECODE,
    FEDOTP_ERR_UNSUPPORTED_DEVICE,
    FEDOTP_ERR_INVALID_CONFIG,
    FEDOTP_ERR_INVALID_CLASS_NAME,
    FEDOTP_ERR_INVALID_LABEL,
    FEDOTP_ERR_CANCELLED,
    FEDOTP_ERR_NOT_TRAINED,
    FEDOTP_ERR_STATE_MISMATCH,
    FEDOTP_ERR_STATE_FORMAT,
    FEDOTP_ERR_MIXED_IMAGES,
    FEDOTP_ERR_DEVICE,
);

#[pymodule]
fn _fedotp(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let codes = PyDict::new(py);
    for (name, code) in STATUS_CODES {
        codes.set_item(name, code)?;
    }
    module.add("STATUS_CODES", codes)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_function(wrap_pyfunction!(ot::ot_plan, module)?)?;
    module.add_function(wrap_pyfunction!(ot::ot_logits, module)?)?;
    module.add_function(wrap_pyfunction!(message::encode_global_prompt, module)?)?;
    module.add_function(wrap_pyfunction!(message::decode_global_prompt, module)?)?;
    module.add_function(wrap_pyfunction!(message::encode_client_update, module)?)?;
    module.add_function(wrap_pyfunction!(message::decode_client_update, module)?)?;
    module.add_function(wrap_pyfunction!(device_available, module)?)?;
    module.add_class::<ot::OtReport>()?;
    module.add_class::<model::Model>()?;
    module.add_class::<images::Images>()?;
    module.add_class::<client::Client>()?;
    module.add_class::<client::TrainReport>()?;
    module.add_class::<aggregator::Aggregator>()?;
    module.add_class::<message::UpdateHeader>()?;
    module.add_class::<federation::RunPlan>()?;
    module.add_class::<federation::Node>()?;
    module.add_class::<federation::NodeUpdate>()?;
    module.add_class::<federation::RunRecord>()?;
    Ok(())
}

/// Whether this library can compute on `device` ("cpu", "cuda", "cuda:N", "auto") now.
#[pyfunction]
fn device_available(device: &str) -> PyResult<bool> {
    let name = std::ffi::CString::new(device).map_err(|_| failure::Failure {
        status: fedotp::FEDOTP_ERR_UNSUPPORTED_DEVICE,
        message: format!("device {device:?} contains a NUL byte"),
    })?;
    let mut available = 0;
    // SAFETY: a NUL-terminated string and a writable local.
    failure::check(unsafe { fedotp::fedotp_device_available(name.as_ptr(), &mut available) })?;
    Ok(available == 1)
}
