//! The detail of the calling thread's last error.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as the calling thread's last error.
pub(crate) fn set(message: &str) {
    // A message with an interior NUL is cut there rather than lost.
    let bytes: Vec<u8> = message.bytes().take_while(|&b| b != 0).collect();
    let message = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = message);
}

/// The detail of the last error on the calling thread, as a NUL-terminated UTF-8 string; empty
/// if the last call succeeded. Valid until the next libfedotp call on the same thread. Never
/// NULL. Thread-safe: each thread has its own.
#[no_mangle]
pub extern "C" fn fedotp_last_error_message() -> *const c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}
