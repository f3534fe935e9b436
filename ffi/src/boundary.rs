//! Crossing the boundary: checked pointers and no unwinding into C.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::last_error;
use crate::status::{
    Failure, FEDOTP_ERR_ALIASED_BUFFERS, FEDOTP_ERR_EMPTY_DIMENSION, FEDOTP_ERR_INVALID_UTF8,
    FEDOTP_ERR_NULL_POINTER, FEDOTP_ERR_OUT_OF_MEMORY, FEDOTP_ERR_PANIC, FEDOTP_ERR_SIZE_OVERFLOW,
    FEDOTP_OK,
};

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

/// A shared slice of `len` elements at `ptr`, refusing NULL and a `len` no buffer can have.
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
    check_span::<T>(len, name)?;
    // SAFETY: `ptr` is non-NULL (checked above) and `len` elements span at most `isize::MAX`
    // bytes (`check_span`); the caller guarantees `len` initialised elements there, unmodified
    // for `'a`, and aligned (a `T *` that C may dereference is aligned for `T`).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An exclusive slice of `len` elements at `ptr`, refusing NULL and a `len` no buffer can have.
///
/// # Safety
/// As [`slice()`], and no other reference to that memory may exist for `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(
    ptr: *mut T,
    len: usize,
    name: &str,
) -> Result<&'a mut [T], Failure> {
    if ptr.is_null() {
        return Err(null(name));
    }
    check_span::<T>(len, name)?;
    // SAFETY: `ptr` is non-NULL (checked above) and `len` elements span at most `isize::MAX`
    // bytes (`check_span`); the caller guarantees `len` aligned, initialised elements there,
    // not referenced elsewhere for `'a` (overlapping buffers are refused by the callers'
    // `check_disjoint` before this).
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// No object spans more than `isize::MAX` bytes, so a longer length is a caller's error (and
/// a slice over it undefined behaviour). Checked before any aliasing check, which would take
/// such a range for one that overlaps everything above its start.
pub(crate) fn check_span<T>(len: usize, name: &str) -> Result<(), Failure> {
    if len > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(Failure::new(
            FEDOTP_ERR_SIZE_OVERFLOW,
            format!(
                "`{name}` of {len} elements of {} bytes exceeds the largest possible buffer",
                size_of::<T>()
            ),
        ));
    }
    Ok(())
}

/// A shared reference to `*ptr`, refusing NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to a valid `T`.
pub(crate) unsafe fn reference<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: `as_ref` turns NULL into `None`; the caller guarantees a non-NULL `ptr` points to
    // an aligned, initialised `T` that stays valid for `'a`.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(name))
}

/// The NUL-terminated UTF-8 string at `ptr`, refusing NULL and invalid UTF-8.
///
/// # Safety
/// A non-NULL `ptr` must point to a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn string<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: `ptr` is non-NULL (checked above); the caller guarantees a NUL-terminated string
    // there that stays valid and unmodified for `'a`.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|error| {
        Failure::new(
            FEDOTP_ERR_INVALID_UTF8,
            format!("`{name}` is not valid UTF-8: {error}"),
        )
    })
}

/// Writes `value` to `*ptr`, refusing NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to writable memory for a `T`, not covered by a live slice.
pub(crate) unsafe fn write<T>(ptr: *mut T, value: T, name: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: `ptr` is non-NULL (checked above); the caller guarantees it points to aligned,
    // writable memory for a `T` that no live slice covers. `ptr::write` neither reads nor
    // drops what was there, so the memory may be uninitialised (C's out-parameters often are).
    unsafe { ptr.write(value) };
    Ok(())
}

/// Refuses a NULL output pointer up front, for an output written last: found only then, its
/// NULL would come after the other outputs were written.
pub(crate) fn require<T>(ptr: *const T, name: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(null(name));
    }
    Ok(())
}

fn null(name: &str) -> Failure {
    Failure::new(FEDOTP_ERR_NULL_POINTER, format!("`{name}` is NULL"))
}

/// Refuses an output range `[out, out + out_len)` (elements of `T`) that overlaps an input
/// range, before any slice is formed over either. A NULL pointer overlaps nothing: the NULL
/// check of that argument reports it.
pub(crate) fn check_disjoint<T, U>(
    out: *const T,
    out_len: usize,
    out_name: &str,
    input: *const U,
    input_len: usize,
    input_name: &str,
) -> Result<(), Failure> {
    if out.is_null() || input.is_null() {
        return Ok(());
    }
    let span = |ptr: usize, bytes: usize| (ptr, ptr.saturating_add(bytes));
    let (a0, a1) = span(out as usize, out_len.saturating_mul(size_of::<T>()));
    let (b0, b1) = span(input as usize, input_len.saturating_mul(size_of::<U>()));
    if a0 < b1 && b0 < a1 {
        return Err(Failure::new(
            FEDOTP_ERR_ALIASED_BUFFERS,
            format!("output `{out_name}` overlaps input `{input_name}`"),
        ));
    }
    Ok(())
}

/// The product of the dimensions as the length of an `f32` buffer, refusing zero and overflow
/// (including lengths whose byte size exceeds what a slice may span).
pub(crate) fn buffer_len(dims: &[(&str, usize)]) -> Result<usize, Failure> {
    let mut len = 1usize;
    for &(name, value) in dims {
        if value == 0 {
            return Err(Failure::new(
                FEDOTP_ERR_EMPTY_DIMENSION,
                format!("`{name}` is zero"),
            ));
        }
        len = len.checked_mul(value).ok_or_else(|| overflow(dims))?;
    }
    if len > isize::MAX as usize / size_of::<f32>() {
        return Err(overflow(dims));
    }
    Ok(len)
}

fn overflow(dims: &[(&str, usize)]) -> Failure {
    let names: Vec<String> = dims.iter().map(|(n, v)| format!("{n} = {v}")).collect();
    Failure::new(
        FEDOTP_ERR_SIZE_OVERFLOW,
        format!("buffer size overflows: {}", names.join(" x ")),
    )
}

/// `len` zeroed values, or an out-of-memory failure instead of an abort.
pub(crate) fn zeroed<T: Copy + Default>(len: usize, what: &str) -> Result<Vec<T>, Failure> {
    let mut values = Vec::new();
    values.try_reserve_exact(len).map_err(|_| {
        Failure::new(
            FEDOTP_ERR_OUT_OF_MEMORY,
            format!(
                "cannot allocate the {what}: {len} values of {} bytes",
                size_of::<T>()
            ),
        )
    })?;
    values.resize(len, T::default());
    Ok(values)
}
