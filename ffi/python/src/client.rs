//! `fedotp.Client`: a federated client (`FedotpClient`) with its training images.

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use fedotp::{FedotpClient, FedotpClientConfig, FedotpTrainReport};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::failure::{check, Failure};
use crate::images::{labelled, Images};
use crate::model::{c_path, Model};

/// How a training call went.
#[pyclass(module = "fedotp", frozen, get_all)]
pub(crate) struct TrainReport {
    /// Mean training loss.
    loss: f32,
    /// Training accuracy, a fraction in [0, 1].
    accuracy: f32,
    /// Optimiser steps taken.
    steps: u64,
    /// Steps skipped because their loss or plan was not finite.
    skipped_steps: u64,
}

#[pymethods]
impl TrainReport {
    fn __repr__(&self) -> String {
        format!(
            "TrainReport(loss={}, accuracy={}, steps={}, skipped_steps={})",
            self.loss, self.accuracy, self.steps, self.skipped_steps
        )
    }
}

/// A federated client: FedOTP's global prompt (shared through messages) and local prompt (never
/// leaves it) per class, on a frozen CLIP, trained on its own images through the OT head.
///
/// Settings left as None keep FedOTP's (`fedotp_client_config_default`): n_ctx 16; a random
/// context (ctx_init, words such as "a photo of a" with n_ctx their token count, starts every
/// prompt as their token embeddings); eps 0.1, gamma 0.8, max_iter 100, tol 1e-3, unbalanced,
/// ot_stopping "per_problem" ("released": the released code's batch rule); learning_rate 0.001,
/// momentum 0.9, weight_decay 5e-4; batch_size 32; augment on; seed 0; the model's device.
///
/// >>> import numpy as np, fedotp
/// >>> client = fedotp.Client(fedotp.Model.tiny(7, "cpu"), ["benign", "malignant"], n_ctx=4)
/// >>> client.prompt_shape
/// (4, 64)
/// >>> client.add_images([np.zeros((32, 32, 3), np.uint8)] * 2, labels=[0, 1])
/// 2
/// >>> client.train(epochs=1).steps
/// 1
/// >>> len(client.update_message(client_id=1))
/// 1068
#[pyclass(module = "fedotp", frozen)]
pub(crate) struct Client {
    handle: usize,
    /// The training images (`add_images`).
    images: Images,
    num_classes: usize,
}

impl Drop for Client {
    fn drop(&mut self) {
        // A handle libfedotp issued, freed once (here); freeing a live handle cannot fail.
        fedotp::fedotp_client_free(self.ptr());
    }
}

/// What the progress callback shares with the Python side of `train`.
struct Progress {
    /// The caller's callable, `progress(done, total)`.
    callback: Option<Py<PyAny>>,
    /// libfedotp's cancel flag: set when the callable raised or a signal (Ctrl-C) arrived.
    cancel: AtomicU32,
    /// That exception, raised as the cause of `fedotp.Cancelled`.
    raised: Mutex<Option<PyErr>>,
}

/// libfedotp's progress function: takes the GIL, calls the caller's callable, runs Python's
/// signal handlers (so Ctrl-C raises KeyboardInterrupt here) and turns an exception of either
/// into the cancel flag, which the training checks after the step.
unsafe extern "C" fn on_progress(done: u64, total: u64, user_data: *mut c_void) {
    // SAFETY: `user_data` is the `Progress` that `train` passes, alive during the call.
    let progress = unsafe { &*(user_data as *const Progress) };
    Python::attach(|py| {
        let outcome = match &progress.callback {
            Some(callback) => callback.call1(py, (done, total)).map(drop),
            None => Ok(()),
        }
        .and_then(|()| py.check_signals());
        if let Err(raised) = outcome {
            progress.cancel.store(1, Ordering::Relaxed);
            let mut slot = progress.raised.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(raised);
        }
    });
}

impl Client {
    fn ptr(&self) -> *mut FedotpClient {
        self.handle as *mut FedotpClient
    }

    /// A new client: libfedotp's default settings with the caller's changes.
    fn create(
        py: Python<'_>,
        model: &Model,
        class_names: Vec<String>,
        settings: Settings,
    ) -> PyResult<Client> {
        let model_handle = model.handle;
        let device = settings
            .device
            .clone()
            .unwrap_or_else(|| model.device.clone());
        Ok(py.detach(|| Client::create_unlocked(model_handle, class_names, device, &settings))?)
    }

    /// [`Client::create`] without the GIL: libfedotp may wait for the model, which a training
    /// in another thread holds while its progress callback waits for the GIL.
    fn create_unlocked(
        model: usize,
        class_names: Vec<String>,
        device: String,
        settings: &Settings,
    ) -> Result<Client, Failure> {
        let mut config = std::mem::MaybeUninit::<FedotpClientConfig>::uninit();
        // SAFETY: writes every field of a `FedotpClientConfig`.
        check(unsafe { fedotp::fedotp_client_config_default(config.as_mut_ptr()) })?;
        // SAFETY: initialised by the call above, which succeeded.
        let mut config = unsafe { config.assume_init() };
        let device = CString::new(device).map_err(|_| Failure {
            status: fedotp::FEDOTP_ERR_UNSUPPORTED_DEVICE,
            message: "the device name contains a NUL byte".into(),
        })?;
        let ctx_init = match &settings.ctx_init {
            Some(words) => Some(CString::new(words.as_str()).map_err(|_| Failure {
                status: fedotp::FEDOTP_ERR_INVALID_CONFIG,
                message: format!("ctx_init {words:?} contains a NUL byte"),
            })?),
            None => None,
        };
        settings.apply(&mut config)?;
        config.ctx_init = ctx_init
            .as_ref()
            .map_or(std::ptr::null(), |words| words.as_ptr());
        config.device = device.as_ptr();
        let names = class_names
            .iter()
            .map(|name| {
                CString::new(name.as_str()).map_err(|_| Failure {
                    status: fedotp::FEDOTP_ERR_INVALID_CLASS_NAME,
                    message: format!("class name {name:?} contains a NUL byte"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pointers: Vec<_> = names.iter().map(|name| name.as_ptr()).collect();
        let mut handle = std::ptr::null_mut();
        // SAFETY: a live model handle, `pointers.len()` NUL-terminated strings (kept alive by
        // `names`), a config whose strings (`ctx_init`, `device`) outlive the call, a writable
        // local.
        check(unsafe {
            fedotp::fedotp_client_new(
                model as *const fedotp::FedotpModel,
                pointers.as_ptr(),
                pointers.len(),
                &config,
                &mut handle,
            )
        })?;
        Ok(Client {
            handle: handle as usize,
            images: Images::new_set()?,
            num_classes: class_names.len(),
        })
    }

    fn shape(&self, py: Python<'_>) -> Result<(usize, usize), Failure> {
        py.detach(|| {
            let (mut n_ctx, mut width) = (0, 0);
            // SAFETY: a live handle and two distinct writable locals.
            check(unsafe { fedotp::fedotp_client_prompt_shape(self.ptr(), &mut n_ctx, &mut width) })
                .map(|()| (n_ctx, width))
        })
    }
}

/// The settings a caller may change; `None` keeps libfedotp's default
/// (`fedotp_client_config_default`, FedOTP's settings).
struct Settings {
    n_ctx: Option<u32>,
    /// Words the prompts start from (`config.ctx_init`).
    ctx_init: Option<String>,
    eps: Option<f32>,
    gamma: Option<f32>,
    max_iter: Option<u32>,
    tol: Option<f32>,
    balanced: Option<bool>,
    /// "per_problem" or "released", as a run configuration's `ot.stopping`.
    ot_stopping: Option<String>,
    learning_rate: Option<f32>,
    momentum: Option<f32>,
    weight_decay: Option<f32>,
    batch_size: Option<u32>,
    augment: Option<bool>,
    seed: Option<u64>,
    device: Option<String>,
}

/// Overwrites `target` with the caller's value, if any.
fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

/// libfedotp's stopping rule for the name a run configuration's `ot.stopping` gives it.
fn ot_stopping(name: &str) -> Result<u32, Failure> {
    match name {
        "per_problem" => Ok(fedotp::FEDOTP_OT_STOPPING_PER_PROBLEM),
        "released" => Ok(fedotp::FEDOTP_OT_STOPPING_RELEASED),
        other => Err(Failure {
            status: fedotp::FEDOTP_ERR_INVALID_CONFIG,
            message: format!("ot_stopping must be \"per_problem\" or \"released\", got {other:?}"),
        }),
    }
}

impl Settings {
    /// Writes the caller's values into `config`, all but the strings (`ctx_init`, `device`),
    /// which the caller points at copies it keeps alive for the call.
    fn apply(&self, config: &mut FedotpClientConfig) -> Result<(), Failure> {
        set(&mut config.n_ctx, self.n_ctx);
        set(&mut config.ot.eps, self.eps);
        set(&mut config.ot.gamma, self.gamma);
        set(&mut config.ot.max_iter, self.max_iter);
        set(&mut config.ot.tol, self.tol);
        set(&mut config.ot.balanced, self.balanced.map(u32::from));
        set(
            &mut config.ot_stopping,
            self.ot_stopping.as_deref().map(ot_stopping).transpose()?,
        );
        set(&mut config.learning_rate, self.learning_rate);
        set(&mut config.momentum, self.momentum);
        set(&mut config.weight_decay, self.weight_decay);
        set(&mut config.batch_size, self.batch_size);
        set(&mut config.augment, self.augment.map(u32::from));
        set(&mut config.seed, self.seed);
        Ok(())
    }
}

#[pymethods]
impl Client {
    /// A client of `model` for `class_names` (label i is class_names[i]).
    #[new]
    #[pyo3(signature = (model, class_names, *, n_ctx=None, ctx_init=None, eps=None, gamma=None,
        max_iter=None, tol=None, balanced=None, ot_stopping=None, learning_rate=None,
        momentum=None, weight_decay=None, batch_size=None, augment=None, seed=None,
        device=None))]
    #[allow(clippy::too_many_arguments)] // the C config's fields as keyword arguments
    fn new(
        py: Python<'_>,
        model: &Model,
        class_names: Vec<String>,
        n_ctx: Option<u32>,
        ctx_init: Option<String>,
        eps: Option<f32>,
        gamma: Option<f32>,
        max_iter: Option<u32>,
        tol: Option<f32>,
        balanced: Option<bool>,
        ot_stopping: Option<String>,
        learning_rate: Option<f32>,
        momentum: Option<f32>,
        weight_decay: Option<f32>,
        batch_size: Option<u32>,
        augment: Option<bool>,
        seed: Option<u64>,
        device: Option<String>,
    ) -> PyResult<Client> {
        let settings = Settings {
            n_ctx,
            ctx_init,
            eps,
            gamma,
            max_iter,
            tol,
            balanced,
            ot_stopping,
            learning_rate,
            momentum,
            weight_decay,
            batch_size,
            augment,
            seed,
            device,
        };
        Client::create(py, model, class_names, settings)
    }

    /// Adds labelled training images: all of them, or none if one is refused.
    #[pyo3(signature = (images, labels, window=None))]
    fn add_images(
        &self,
        images: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        window: Option<(f64, f64)>,
    ) -> PyResult<usize> {
        // Checked on a set of their own first, so that a refused image leaves the client's as
        // it was; then added again (copies only, which cannot fail but for memory).
        let items = labelled(images, Some(labels))?;
        Images::new_set()?.add_all(&items, window)?;
        self.images.add_all(&items, window)?;
        Ok(self.images.count(images.py())?)
    }

    /// The number of training images.
    #[getter]
    fn num_images(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.images.count(py)?)
    }

    #[getter]
    fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Trains both prompts for `epochs` passes over the training images, with the GIL released.
    /// `progress(done, total)` is called after every step; if it raises, or Ctrl-C arrives, the
    /// training stops with `Cancelled` (the exception as its `__cause__`) and the client is as before
    /// the call.
    #[pyo3(signature = (epochs=1, progress=None))]
    fn train(
        &self,
        py: Python<'_>,
        epochs: u32,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<TrainReport> {
        let state = Progress {
            callback: progress,
            cancel: AtomicU32::new(0),
            raised: Mutex::new(None),
        };
        let (client, images) = (self.handle, self.images.handle);
        let trained = py.detach(|| -> Result<FedotpTrainReport, Failure> {
            let mut report = FedotpTrainReport {
                loss: 0.0,
                accuracy: 0.0,
                steps: 0,
                skipped_steps: 0,
            };
            // SAFETY: live handles; `on_progress` gets `state`, alive until the call returns;
            // the cancel flag is an `AtomicU32` (a `uint32_t` written only atomically); a
            // writable report.
            check(unsafe {
                fedotp::fedotp_client_train(
                    client as *mut FedotpClient,
                    images as *mut fedotp::FedotpImages,
                    epochs,
                    Some(on_progress),
                    &state as *const Progress as *mut c_void,
                    state.cancel.as_ptr(),
                    &mut report,
                )
            })?;
            Ok(report)
        });
        let raised = state.raised.into_inner().unwrap_or_else(|e| e.into_inner());
        match trained {
            Ok(report) => Ok(TrainReport {
                loss: report.loss,
                accuracy: report.accuracy,
                steps: report.steps,
                skipped_steps: report.skipped_steps,
            }),
            Err(failure) => {
                let error = PyErr::from(failure);
                if let Some(cause) = raised {
                    error.set_cause(py, Some(cause));
                }
                Err(error)
            }
        }
    }

    /// The update message for the server: the global prompt after the last training, weighted by the
    /// images trained on, for the round of the global prompt installed last (`NotTrained` if it has
    /// not trained since).
    #[pyo3(signature = (client_id=0))]
    fn update_message<'py>(
        &self,
        py: Python<'py>,
        client_id: u32,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let message = py.detach(|| -> Result<Vec<u8>, Failure> {
            let mut size = 0;
            // SAFETY: a live handle and a writable local.
            check(unsafe { fedotp::fedotp_client_update_message_size(self.ptr(), &mut size) })?;
            let mut message = vec![0u8; size];
            let mut written = 0;
            // SAFETY: `message` holds `size` writable bytes; `written` is a distinct local.
            check(unsafe {
                fedotp::fedotp_client_write_update(
                    self.ptr(),
                    client_id,
                    message.as_mut_ptr(),
                    message.len(),
                    &mut written,
                )
            })?;
            message.truncate(written);
            Ok(message)
        })?;
        Ok(PyBytes::new(py, &message))
    }

    /// Installs the server's global-prompt message and returns the round it opens; the local prompt
    /// stays. `BadMessage` or `ShapeMismatch` leave the client unchanged.
    fn apply_global(&self, py: Python<'_>, message: &[u8]) -> PyResult<u32> {
        let round = py.detach(|| {
            let mut round = 0;
            // SAFETY: `message` is a live slice of its length; a writable local.
            check(unsafe {
                fedotp::fedotp_client_read_global(
                    self.ptr(),
                    message.as_ptr(),
                    message.len(),
                    &mut round,
                )
            })
            .map(|()| round)
        })?;
        Ok(round)
    }

    /// The global prompt, `(n_ctx, width)` float32.
    #[getter]
    fn global_prompt<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (n_ctx, width) = self.shape(py)?;
        let prompt = py.detach(|| {
            let mut prompt = vec![0.0f32; n_ctx * width];
            // SAFETY: `prompt` holds `n_ctx * width` writable floats.
            check(unsafe {
                fedotp::fedotp_client_global_prompt(self.ptr(), prompt.as_mut_ptr(), n_ctx, width)
            })
            .map(|()| prompt)
        })?;
        Ok(PyArray1::from_vec(py, prompt)
            .reshape([n_ctx, width])?
            .into_any())
    }

    /// `(n_ctx, width)`: the shape of the prompt that messages carry.
    #[getter]
    fn prompt_shape(&self, py: Python<'_>) -> PyResult<(usize, usize)> {
        Ok(self.shape(py)?)
    }

    /// Class probabilities, `(len(images), num_classes)` float32.
    #[pyo3(signature = (images, window=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        window: Option<(f64, f64)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let owned;
        let set = match images.cast::<Images>() {
            Ok(set) => set.get(),
            Err(_) => {
                owned = Images::from_items(images, None, window)?;
                &owned
            }
        };
        let count = set.count(py)?;
        let mut probabilities = vec![0.0f32; count * self.num_classes];
        let (client, images) = (self.handle, set.handle);
        py.detach(|| {
            // SAFETY: live handles; `probabilities` holds `len` writable floats.
            check(unsafe {
                fedotp::fedotp_client_predict(
                    client as *mut FedotpClient,
                    images as *mut fedotp::FedotpImages,
                    probabilities.as_mut_ptr(),
                    probabilities.len(),
                )
            })
        })?;
        Ok(PyArray1::from_vec(py, probabilities)
            .reshape([count, self.num_classes])?
            .into_any())
    }

    /// Saves the client's state (atomically) to `path`.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let path = c_path(path)?;
        // SAFETY: a live handle and a NUL-terminated path.
        Ok(py.detach(|| check(unsafe { fedotp::fedotp_client_save(self.ptr(), path.as_ptr()) }))?)
    }

    /// Restores a state saved by `save` into this client (same model, classes and n_ctx).
    fn restore(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let path = c_path(path)?;
        // SAFETY: a live handle and a NUL-terminated path.
        Ok(py.detach(|| check(unsafe { fedotp::fedotp_client_load(self.ptr(), path.as_ptr()) }))?)
    }

    /// A client created with these settings and restored from `path`.
    #[staticmethod]
    #[pyo3(signature = (path, model, class_names, **settings))]
    fn load<'py>(
        py: Python<'py>,
        path: std::path::PathBuf,
        model: Py<Model>,
        class_names: Vec<String>,
        settings: Option<&Bound<'py, pyo3::types::PyDict>>,
    ) -> PyResult<Bound<'py, Client>> {
        // The constructor's own keyword handling: the same settings, the same refusals.
        let client = py
            .get_type::<Client>()
            .call((model, class_names), settings)?
            .cast_into::<Client>()?;
        client.get().restore(py, path)?;
        Ok(client)
    }

    /// Where the client computes: "cpu" or "cuda:N".
    #[getter]
    fn device(&self, py: Python<'_>) -> PyResult<String> {
        let (kind, ordinal) = py.detach(|| {
            let (mut kind, mut ordinal) = (0, 0);
            // SAFETY: a live handle and two distinct writable locals.
            check(unsafe { fedotp::fedotp_client_device(self.ptr(), &mut kind, &mut ordinal) })
                .map(|()| (kind, ordinal))
        })?;
        Ok(if kind == fedotp::FEDOTP_DEVICE_CUDA {
            format!("cuda:{ordinal}")
        } else {
            "cpu".into()
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Client(classes={}, images={}, device={:?})",
            self.num_classes,
            self.images.count(py)?,
            self.device(py)?
        ))
    }
}
