//! Which libfedotp this is, and which devices it computes on.

use std::ffi::{c_char, CStr};

use fedotp_host::backend::Device;

use crate::boundary::{call, check_disjoint, require, string, write};

/// The version, NUL-terminated, for `fedotp_version`.
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(version) => version,
        Err(_) => panic!("the package version has no interior NUL"),
    };

/// The library's version as a static, NUL-terminated string, "MAJOR.MINOR.PATCH" (semantic
/// versioning: within one MAJOR, and within one MINOR while MAJOR is 0, the ABI only grows).
/// Never NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn fedotp_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The library's version as numbers, for a check at run time against the header the program
/// was built with.
///
/// - `major_out`, `minor_out`, `patch_out`: receive the three parts; distinct.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_ALIASED_BUFFERS`. On error
/// nothing is written. Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to writable `uint32_t`s.
#[no_mangle]
pub unsafe extern "C" fn fedotp_version_numbers(
    major_out: *mut u32,
    minor_out: *mut u32,
    patch_out: *mut u32,
) -> i32 {
    call(|| {
        check_disjoint(major_out, 1, "major_out", minor_out, 1, "minor_out")?;
        check_disjoint(major_out, 1, "major_out", patch_out, 1, "patch_out")?;
        check_disjoint(minor_out, 1, "minor_out", patch_out, 1, "patch_out")?;
        require(major_out, "major_out")?;
        require(minor_out, "minor_out")?;
        require(patch_out, "patch_out")?;
        let part = |text: &str| text.parse::<u32>().expect("Cargo versions are numbers");
        let major = part(env!("CARGO_PKG_VERSION_MAJOR"));
        let minor = part(env!("CARGO_PKG_VERSION_MINOR"));
        let patch = part(env!("CARGO_PKG_VERSION_PATCH"));
        // SAFETY: the three are non-NULL (checked above), writable and apart.
        unsafe {
            write(major_out, major, "major_out")?;
            write(minor_out, minor, "minor_out")?;
            write(patch_out, patch, "patch_out")
        }
    })
}

/// Whether this library can compute on `device` in this process, now: 1 for "cpu" and "auto"
/// (always); for "cuda" / "cuda:N", 1 when this build has the CUDA backend, the NVIDIA driver,
/// cuBLAS and NVRTC load (they are looked up on the loader path at run time) and the device
/// exists. Use it to choose the device of `fedotp_client_new`.
///
/// - `device`: a NUL-terminated device name: "cpu", "cuda", "cuda:N" or "auto";
/// - `available_out`: receives 1 or 0.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_INVALID_UTF8`;
/// `FEDOTP_ERR_UNSUPPORTED_DEVICE` (not a device name). On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// A non-NULL `device` must be a NUL-terminated string; a non-NULL `available_out` must point
/// to a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_device_available(
    device: *const c_char,
    available_out: *mut u32,
) -> i32 {
    call(|| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let name = unsafe { string(device, "device") }?;
        require(available_out, "available_out")?;
        let available = u32::from(name.parse::<Device>()?.available());
        // SAFETY: non-NULL (checked above) and writable.
        unsafe { write(available_out, available, "available_out") }
    })
}
