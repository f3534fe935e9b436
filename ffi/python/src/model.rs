//! `fedotp.Model`: a frozen CLIP (`FedotpModel`), and the device its clients default to.

use std::ffi::CString;

use fedotp::{FedotpModel, FedotpModelInfo};
use pyo3::prelude::*;

use crate::failure::{check, Failure};

/// A frozen CLIP shared by clients.
#[pyclass(module = "fedotp", frozen)]
pub(crate) struct Model {
    /// The libfedotp handle, as the id it stands for (a `FedotpModel *` C cannot dereference).
    pub(crate) handle: usize,
    /// The device of the clients created on it, unless they name another.
    #[pyo3(get)]
    pub(crate) device: String,
}

impl Model {
    pub(crate) fn ptr(&self) -> *const FedotpModel {
        self.handle as *const FedotpModel
    }

    fn from_handle(handle: *mut FedotpModel, device: String) -> Self {
        Model {
            handle: handle as usize,
            device,
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // A handle libfedotp issued, freed once (here); freeing a live handle cannot fail.
        fedotp::fedotp_model_free(self.handle as *mut FedotpModel);
    }
}

/// A path as libfedotp takes it: UTF-8 without NUL bytes.
pub(crate) fn c_path(path: std::path::PathBuf) -> Result<CString, Failure> {
    let text = path.to_str().ok_or_else(|| Failure {
        status: fedotp::FEDOTP_ERR_INVALID_UTF8,
        message: format!("path {path:?} is not valid UTF-8"),
    })?;
    CString::new(text).map_err(|_| Failure {
        status: fedotp::FEDOTP_ERR_IO,
        message: format!("path {text:?} contains a NUL byte"),
    })
}

/// The device name, checked by libfedotp now rather than when the first client is created.
fn checked_device(device: &str) -> Result<String, Failure> {
    let name = CString::new(device).map_err(|_| Failure {
        status: fedotp::FEDOTP_ERR_UNSUPPORTED_DEVICE,
        message: format!("device {device:?} contains a NUL byte"),
    })?;
    let mut available = 0u32;
    // SAFETY: a NUL-terminated string and a writable local.
    check(unsafe { fedotp::fedotp_device_available(name.as_ptr(), &mut available) })?;
    Ok(device.to_owned())
}

#[pymethods]
impl Model {
    /// Loads CLIP from safetensors weights, in the Hugging Face `CLIPModel` layout or the OpenAI /
    /// open_clip one (a file, or a directory holding `model.safetensors` or
    /// `open_clip_model.safetensors`), or BiomedCLIP from a directory in open_clip's hub layout
    /// (with `open_clip_config.json` and the text model's `vocab.txt`), as libfedotp's
    /// `fedotp_model_load`. `device` ("cpu", "cuda", "cuda:N" or "auto") is where the clients
    /// created on it compute unless they name another.
    ///
    /// >>> model = fedotp.Model.load("clip-vit-b16/", device="auto")  # doctest: +SKIP
    #[staticmethod]
    #[pyo3(signature = (path, device="auto"))]
    fn load(py: Python<'_>, path: std::path::PathBuf, device: &str) -> PyResult<Model> {
        let device = checked_device(device)?;
        let path = c_path(path)?;
        let handle = py.detach(|| -> Result<usize, Failure> {
            let mut handle = std::ptr::null_mut();
            // SAFETY: a NUL-terminated path and a writable local.
            check(unsafe { fedotp::fedotp_model_load(path.as_ptr(), &mut handle) })?;
            Ok(handle as usize)
        })?;
        Ok(Model::from_handle(handle as *mut FedotpModel, device))
    }

    /// The tiny CLIP of tests and examples, with weights drawn from `seed` (32 x 32 images, widths
    /// of 64): it has learned nothing.
    ///
    /// >>> import fedotp
    /// >>> fedotp.Model.tiny(seed=7, device="cpu").info["image_size"]
    /// 32
    #[staticmethod]
    #[pyo3(signature = (seed=0, device="auto"))]
    fn tiny(seed: u64, device: &str) -> PyResult<Model> {
        let device = checked_device(device)?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: a writable local.
        check(unsafe { fedotp::fedotp_model_new_tiny(seed, &mut handle) })?;
        Ok(Model::from_handle(handle, device))
    }

    /// The model's sizes: a dict of `image_size`, `image_tokens`, `text_width`,
    /// `context_length`, `embed_dim`.
    #[getter]
    fn info(&self) -> PyResult<std::collections::BTreeMap<&'static str, u32>> {
        let mut info = FedotpModelInfo {
            image_size: 0,
            image_tokens: 0,
            text_width: 0,
            context_length: 0,
            embed_dim: 0,
        };
        // SAFETY: a live handle and a writable local.
        check(unsafe { fedotp::fedotp_model_info(self.ptr(), &mut info) })?;
        Ok([
            ("image_size", info.image_size),
            ("image_tokens", info.image_tokens),
            ("text_width", info.text_width),
            ("context_length", info.context_length),
            ("embed_dim", info.embed_dim),
        ]
        .into_iter()
        .collect())
    }

    fn __repr__(&self) -> String {
        format!("Model(device={:?})", self.device)
    }
}
