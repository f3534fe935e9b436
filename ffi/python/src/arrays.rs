//! NumPy arrays as libfedotp takes them: the dtype it reads, in C order, borrowed (no copy).

use numpy::{
    Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::failure::error;

/// `value` as a read-only NumPy array of `T` (`dtype_name`), without copying: anything else —
/// another dtype, not an array — is a `fedotp.WrongDType` (a `TypeError`) naming `name`.
pub(crate) fn typed<'py, T: Element>(
    value: &Bound<'py, PyAny>,
    name: &str,
    dtype_name: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let py = value.py();
    if let Ok(array) = value.cast::<PyArrayDyn<T>>() {
        return Ok(array.readonly());
    }
    let found = match value.cast::<PyUntypedArray>() {
        Ok(array) => format!("an array of dtype {}", array.dtype()),
        Err(_) => format!("a {}", value.get_type().name()?),
    };
    Err(error(
        py,
        "WrongDType",
        format!(
            "`{name}` must be a numpy.ndarray of dtype {dtype_name}, got {found} \
             (convert with numpy.asarray({name}, dtype=numpy.{dtype_name}))"
        ),
    ))
}

/// The elements of a C-contiguous array; any other layout is a `fedotp.NonContiguous`
/// (libfedotp reads row-major buffers, and this layer copies nothing behind the caller's back).
pub(crate) fn contiguous<'a, T: Element>(
    py: Python<'_>,
    array: &'a PyReadonlyArrayDyn<'_, T>,
    name: &str,
) -> PyResult<&'a [T]> {
    // `as_slice` also takes Fortran order, which libfedotp would read transposed.
    let slice = if array.is_c_contiguous() {
        array.as_slice().ok()
    } else {
        None
    };
    slice.ok_or_else(|| {
        error(
            py,
            "NonContiguous",
            format!(
                "`{name}` must be C-contiguous (row-major), got strides {:?}; \
                 pass numpy.ascontiguousarray({name})",
                array.strides()
            ),
        )
    })
}

/// `array`'s shape, checked to have one of `ranks` dimensions; else a `fedotp.ShapeMismatch`
/// that names the expected shapes (`expected`, e.g. "(M, N) or (B, M, N)").
pub(crate) fn shape_of_rank<'a, T: Element>(
    py: Python<'_>,
    array: &'a PyReadonlyArrayDyn<'_, T>,
    ranks: &[usize],
    name: &str,
    expected: &str,
) -> PyResult<&'a [usize]> {
    let shape = array.shape();
    if ranks.contains(&shape.len()) {
        Ok(shape)
    } else {
        Err(error(
            py,
            "ShapeMismatch",
            format!("`{name}` must have shape {expected}, got {shape:?}"),
        ))
    }
}
