//! Crossing the boundary: checked pointers and no unwinding into C.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::last_error;
use crate::status::{Failure, FEDOTP_ERR_NULL_POINTER, FEDOTP_ERR_PANIC, FEDOTP_OK};

/// Runs `body`, turning its result (or a panic) into a status and the thread's last error.
pub(crate) fn call(body: impl FnOnce() -> Result<(), Failure>) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Failure::new(
            FEDOTP_ERR_PANIC,
            format!("internal error in libfedotp: {what}"),
        ))
    });
    match outcome {
        Ok(()) => {
            last_error::set("");
            FEDOTP_OK
        }
        Err(failure) => {
            last_error::set(&failure.message);
            failure.status
        }
    }
}

/// A shared slice of `len` elements at `ptr`, refusing NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` initialised elements that stay valid and unmodified
/// for `'a` (the C caller's contract, stated in the header).
pub(crate) unsafe fn slice<'a, T>(
    ptr: *const T,
    len: usize,
    name: &str,
) -> Result<&'a [T], Failure> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` valid elements.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An exclusive slice of `len` elements at `ptr`, refusing NULL.
///
/// # Safety
/// As [`slice`], and no other reference to that memory may exist for `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(
    ptr: *mut T,
    len: usize,
    name: &str,
) -> Result<&'a mut [T], Failure> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` valid, unaliased elements.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A shared reference to `*ptr`, refusing NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to a valid `T`.
pub(crate) unsafe fn reference<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller guarantees a non-NULL `ptr` points to a valid `T`.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(name))
}

fn null(name: &str) -> Failure {
    Failure::new(FEDOTP_ERR_NULL_POINTER, format!("`{name}` is NULL"))
}

/// Refuses an output range `[out, out + out_len)` (elements of `T`) that overlaps an input
/// range, before any slice is formed over either.
pub(crate) fn check_disjoint<T, U>(
    out: *const T,
    out_len: usize,
    out_name: &str,
    input: *const U,
    input_len: usize,
    input_name: &str,
) -> Result<(), Failure> {
    let span = |ptr: usize, bytes: usize| (ptr, ptr.saturating_add(bytes));
    let (a0, a1) = span(out as usize, out_len.saturating_mul(size_of::<T>()));
    let (b0, b1) = span(input as usize, input_len.saturating_mul(size_of::<U>()));
    if a0 < b1 && b0 < a1 {
        return Err(Failure::new(
            crate::status::FEDOTP_ERR_ALIASED_BUFFERS,
            format!("output `{out_name}` overlaps input `{input_name}`"),
        ));
    }
    Ok(())
}
