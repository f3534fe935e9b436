//! libfedotp's statuses as Python exceptions.
//!
//! Every call into libfedotp returns a status; a failing one comes with the detail of
//! `fedotp_last_error_message`, which is per thread and valid until the next call, so it is
//! copied into a [`Failure`] at once — still on the thread that made the call, possibly with
//! the GIL released. Turning a `Failure` into an exception needs the GIL: the class is chosen
//! by `fedotp._errors.from_status`, the one table from statuses to the `fedotp.Error` hierarchy.

use std::ffi::CStr;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// A failed libfedotp call: its status and the library's message.
pub(crate) struct Failure {
    pub(crate) status: i32,
    pub(crate) message: String,
}

/// `Ok` for `FEDOTP_OK`, else the status with the calling thread's last error message.
pub(crate) fn check(status: i32) -> Result<(), Failure> {
    if status == fedotp::FEDOTP_OK {
        return Ok(());
    }
    // SAFETY: `fedotp_last_error_message` returns a NUL-terminated string, never NULL, valid
    // until the next libfedotp call on this thread; it is copied before any other call.
    let message = unsafe { CStr::from_ptr(fedotp::fedotp_last_error_message()) }
        .to_string_lossy()
        .into_owned();
    Err(Failure { status, message })
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> PyErr {
        Python::attach(|py| {
            let made = py.import("fedotp._errors").and_then(|errors| {
                errors.call_method1("from_status", (failure.status, &failure.message))
            });
            match made {
                Ok(exception) => PyErr::from_value(exception),
                Err(error) => error,
            }
        })
    }
}

/// An exception of the `fedotp.Error` hierarchy by class name, for a problem the Python layer
/// finds itself before calling libfedotp (a NumPy dtype or memory layout libfedotp cannot take).
pub(crate) fn error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let class = py
        .import("fedotp._errors")
        .and_then(|errors| errors.getattr(class))
        .and_then(|class| class.cast_into::<PyType>().map_err(PyErr::from));
    match class {
        Ok(class) => PyErr::from_type(class, message),
        Err(_) => PyTypeError::new_err(message),
    }
}
