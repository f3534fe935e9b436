//! `fedotp.Images`: an image set (`FedotpImages`) filled from NumPy arrays, files or encoded
//! bytes — the pixels and the 16-bit windowing (of arrays and of 16-bit grayscale PNGs) are
//! libfedotp's (`fedotp_images_add_*`).

use fedotp::{FedotpGrayWindow, FedotpImages};
use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::arrays::typed;
use crate::failure::{check, error, Failure};

/// A set of images, labelled or not.
#[pyclass(module = "fedotp", frozen)]
pub(crate) struct Images {
    /// The libfedotp handle, as the id it stands for.
    pub(crate) handle: usize,
}

impl Drop for Images {
    fn drop(&mut self) {
        // A handle libfedotp issued, freed once (here); freeing a live handle cannot fail.
        fedotp::fedotp_images_free(self.ptr());
    }
}

/// The label C takes: the class index, or `FEDOTP_NO_LABEL`.
fn c_label(label: Option<u32>) -> u32 {
    label.unwrap_or(fedotp::FEDOTP_NO_LABEL)
}

/// A row-major image's size and row stride (in elements) from NumPy's shape and byte strides:
/// the pixels of a row must be adjacent (`channels` elements apart), rows may be further apart (a
/// crop of a wider image), so no copy is needed.
fn image_layout<T: numpy::Element>(
    py: Python<'_>,
    array: &PyReadonlyArrayDyn<'_, T>,
    channels: usize,
) -> PyResult<(u32, u32, usize)> {
    let shape = array.shape();
    let strides = array.strides();
    let element = std::mem::size_of::<T>() as isize;
    let pixel = element * channels as isize;
    let packed = strides[1] == pixel && (channels == 1 || strides[2] == element);
    let row = strides[0];
    if !packed || row < 0 || row % element != 0 {
        return Err(error(
            py,
            "NonContiguous",
            format!(
                "an image's pixels must be adjacent within a row (strides {strides:?} for shape \
                 {shape:?}); pass numpy.ascontiguousarray(image)"
            ),
        ));
    }
    let to_u32 = |value: usize, what: &str| {
        u32::try_from(value).map_err(|_| {
            error(
                py,
                "InvalidArgument",
                format!("an image {what} of {value} pixels is too large"),
            )
        })
    };
    Ok((
        to_u32(shape[1], "width")?,
        to_u32(shape[0], "height")?,
        row as usize / element as usize,
    ))
}

impl Images {
    pub(crate) fn ptr(&self) -> *mut FedotpImages {
        self.handle as *mut FedotpImages
    }

    pub(crate) fn new_set() -> Result<Images, Failure> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: a writable local.
        check(unsafe { fedotp::fedotp_images_new(&mut handle) })?;
        Ok(Images {
            handle: handle as usize,
        })
    }

    /// Adds one image: encoded bytes, a file path, or a uint8 / uint16 array.
    pub(crate) fn add_one(
        &self,
        image: &Bound<'_, PyAny>,
        label: Option<u32>,
        window: Option<(f64, f64)>,
    ) -> PyResult<()> {
        let py = image.py();
        let label = c_label(label);
        let window = window.map(|(centre, width)| FedotpGrayWindow { centre, width });
        if let Ok(bytes) = image.cast::<PyBytes>() {
            return Ok(self.add_encoded(py, bytes.as_bytes(), label, window)?);
        }
        if !image.hasattr("dtype")? {
            if let Ok(path) = image.extract::<std::path::PathBuf>() {
                let bytes = std::fs::read(&path).map_err(|source| Failure {
                    status: fedotp::FEDOTP_ERR_IO,
                    message: format!("cannot read image {}: {source}", path.display()),
                })?;
                return Ok(self.add_encoded(py, &bytes, label, window)?);
            }
        }
        let dtype = image.getattr("dtype").ok().map(|dtype| dtype.to_string());
        if dtype.as_deref() == Some("uint16") {
            let pixels = typed::<u16>(image, "image", "uint16")?;
            if pixels.ndim() != 2 {
                return Err(shape_error(
                    py,
                    pixels.shape(),
                    "a uint16 image must be (H, W)",
                ));
            }
            let (width, height, stride) = image_layout(py, &pixels, 1)?;
            // The address crosses into the GIL-free closure as a number; the borrow `pixels`
            // keeps the array alive (and read-only to Rust) until the call returns.
            let address = pixels.as_array().as_ptr() as usize;
            return Ok(py.detach(|| {
                let window_ptr = window.as_ref().map_or(std::ptr::null(), |w| w as *const _);
                // SAFETY: the array's rows are `stride` values apart with `width` adjacent
                // values each (checked by `image_layout`), so the span C reads lies in the
                // array; `window_ptr` is NULL or a live local.
                check(unsafe {
                    fedotp::fedotp_images_add_gray16(
                        self.ptr(),
                        address as *const u16,
                        width,
                        height,
                        stride,
                        window_ptr,
                        label,
                    )
                })
            })?);
        }
        let pixels = typed::<u8>(image, "image", "uint8")?;
        let channels = match pixels.shape() {
            [_, _] | [_, _, 1] => 1,
            [_, _, 3] => 3,
            shape => {
                return Err(shape_error(
                    py,
                    shape,
                    "a uint8 image must be (H, W), (H, W, 1) gray or (H, W, 3) RGB",
                ))
            }
        };
        let (width, height, stride) = image_layout(py, &pixels, channels)?;
        let add = if channels == 3 {
            fedotp::fedotp_images_add_rgb8
        } else {
            fedotp::fedotp_images_add_gray8
        };
        let address = pixels.as_array().as_ptr() as usize;
        Ok(py.detach(|| {
            // SAFETY: as above, in bytes: rows `stride` bytes apart, each `width * channels`
            // adjacent bytes (checked by `image_layout`).
            check(unsafe {
                add(
                    self.ptr(),
                    address as *const u8,
                    width,
                    height,
                    stride,
                    label,
                )
            })
        })?)
    }

    /// Adds JPEG or PNG `bytes`; a 16-bit grayscale PNG is read through `window` (None: the
    /// full range, as `fedotp_images_add_encoded`).
    fn add_encoded(
        &self,
        py: Python<'_>,
        bytes: &[u8],
        label: u32,
        window: Option<FedotpGrayWindow>,
    ) -> Result<(), Failure> {
        py.detach(|| {
            let window_ptr = window.as_ref().map_or(std::ptr::null(), |w| w as *const _);
            // SAFETY: `bytes` is a live slice of its length; `window_ptr` is NULL or a live
            // local.
            check(unsafe {
                fedotp::fedotp_images_add_encoded_windowed(
                    self.ptr(),
                    bytes.as_ptr(),
                    bytes.len(),
                    label,
                    window_ptr,
                )
            })
        })
    }

    /// Adds every image with its label: all of them or, on the first that fails (its index
    /// added to the exception's notes), the ones before it.
    pub(crate) fn add_all(
        &self,
        items: &[LabelledImage<'_>],
        window: Option<(f64, f64)>,
    ) -> PyResult<()> {
        for (index, (image, label)) in items.iter().enumerate() {
            self.add_one(image, *label, window).inspect_err(|err| {
                // Python 3.11's notes; on older versions the exception goes without.
                let _ = err
                    .value(image.py())
                    .call_method1("add_note", (format!("while adding image {index}"),));
            })?;
        }
        Ok(())
    }

    /// Every image of `images` with its label, into a fresh set: all of them, or none.
    pub(crate) fn from_items(
        images: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        window: Option<(f64, f64)>,
    ) -> PyResult<Images> {
        let set = Images::new_set()?;
        set.add_all(&labelled(images, labels)?, window)?;
        Ok(set)
    }

    /// The number of images (without the GIL: a training in another thread may hold the set).
    pub(crate) fn count(&self, py: Python<'_>) -> Result<usize, Failure> {
        py.detach(|| {
            let mut count = 0;
            // SAFETY: a live handle and a writable local.
            check(unsafe { fedotp::fedotp_images_count(self.ptr(), &mut count) }).map(|()| count)
        })
    }
}

/// An image and its label, as the caller passed them.
pub(crate) type LabelledImage<'py> = (Bound<'py, PyAny>, Option<u32>);

/// The images of an iterable (read once: a generator works) paired with their labels, which
/// must be as many (or absent).
pub(crate) fn labelled<'py>(
    images: &Bound<'py, PyAny>,
    labels: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<LabelledImage<'py>>> {
    let py = images.py();
    let images: Vec<Bound<'py, PyAny>> = images.try_iter()?.collect::<PyResult<_>>()?;
    let labels: Vec<Option<u32>> = match labels {
        None => vec![None; images.len()],
        Some(labels) => labels
            .try_iter()?
            .map(|label| label?.extract::<u32>().map(Some))
            .collect::<PyResult<_>>()?,
    };
    if labels.len() != images.len() {
        return Err(error(
            py,
            "ShapeMismatch",
            format!("{} images but {} labels", images.len(), labels.len()),
        ));
    }
    Ok(images.into_iter().zip(labels).collect())
}

fn shape_error(py: Python<'_>, shape: &[usize], expected: &str) -> PyErr {
    error(
        py,
        "ShapeMismatch",
        format!("{expected}, got shape {shape:?}"),
    )
}

#[pymethods]
impl Images {
    /// A set of the given images (with their labels, if any); see `Images.add` for what an image
    /// may be.
    #[new]
    #[pyo3(signature = (images=None, labels=None, window=None))]
    fn new(
        images: Option<&Bound<'_, PyAny>>,
        labels: Option<&Bound<'_, PyAny>>,
        window: Option<(f64, f64)>,
    ) -> PyResult<Images> {
        match images {
            Some(images) => Images::from_items(images, labels, window),
            None => Ok(Images::new_set()?),
        }
    }

    /// Adds one image: encoded JPEG or PNG `bytes`, the path of such a file, or a NumPy array — uint8
    /// `(H, W)` or `(H, W, 1)` gray, `(H, W, 3)` RGB, or uint16 `(H, W)` gray mapped to 8 bits through
    /// `window=(centre, width)` (None: the full range). The window applies to 16-bit grayscale PNG
    /// bytes and files too (CT, MR, X-ray exported from DICOM); other files decode as they are.
    /// Pixels are read in place; rows may be strided.
    ///
    /// >>> import numpy as np, fedotp
    /// >>> images = fedotp.Images()
    /// >>> images.add(np.zeros((32, 32, 3), np.uint8), label=0)
    /// >>> images.add(np.full((40, 40), 1200, np.uint16), window=(1000.0, 400.0))
    /// >>> len(images)
    /// 2
    #[pyo3(signature = (image, label=None, window=None))]
    fn add(
        &self,
        image: &Bound<'_, PyAny>,
        label: Option<u32>,
        window: Option<(f64, f64)>,
    ) -> PyResult<()> {
        self.add_one(image, label, window)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.count(py)?)
    }
}
