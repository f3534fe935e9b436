//! The frozen CLIP that clients train prompts through, behind an opaque handle.
//!
//! A model is loaded once and shared: every client created from it holds the weights too, so
//! freeing the model handle while clients live is safe (the weights go when the last user
//! does). The weights live in host memory for CPU clients; the first client on a GPU uploads
//! a copy there, which every later client on that GPU shares.

use std::any::Any;
use std::ffi::c_char;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use fedotp_host::backend::{Backend, Cpu, Device};
use fedotp_host::clip::{ClipConfig, ClipWeights, TextTokenizer};
use fedotp_host::train::FrozenClip;

use crate::boundary::{call, require, string, write};
use crate::handle::{self, Handle};
use crate::status::{Failure, FEDOTP_ERR_UNSUPPORTED_DEVICE};

/// A model's copy on one device, type-erased: an `Arc<FrozenClip<B>>` of that device's backend
/// `B`, so that copies on different backends share one list.
type ModelCopy = Arc<dyn Any + Send + Sync>;

/// What a `FedotpModel` handle names: the weights on the CPU, and their copies on the GPUs
/// that clients asked for.
pub(crate) struct Model {
    /// The weights in host memory: the CPU clients' model, and what other devices' copies are
    /// uploaded from.
    cpu: Arc<FrozenClip<Cpu>>,
    /// `ClipWeights::fingerprint`, computed for the first client.
    fingerprint: OnceLock<String>,
    /// The model on each device a client asked for (the CPU's from the start), by device.
    copies: Mutex<Vec<(Device, ModelCopy)>>,
}

impl Model {
    fn new(weights: ClipWeights<Vec<f32>>, tokenizer: TextTokenizer) -> Result<Self, Failure> {
        let cpu = Arc::new(FrozenClip::with_tokenizer(Cpu::new(), weights, tokenizer)?);
        let cpu_copy = Arc::clone(&cpu) as ModelCopy;
        Ok(Model {
            cpu,
            fingerprint: OnceLock::new(),
            copies: Mutex::new(vec![(Device::Cpu, cpu_copy)]),
        })
    }

    /// The architecture.
    pub(crate) fn config(&self) -> &ClipConfig {
        &self.cpu.weights().config
    }

    /// The text tower's tokenizer, as every copy of the model uses it.
    pub(crate) fn tokenizer(&self) -> &TextTokenizer {
        self.cpu.tokenizer()
    }

    /// The weights' fingerprint: what a client's saved state is tied to.
    pub(crate) fn fingerprint(&self) -> &str {
        self.fingerprint
            .get_or_init(|| self.cpu.weights().fingerprint())
    }

    /// The model on `device`, opened as `backend`: the CPU's, or the copy the first client on
    /// that device uploaded with `backend`. A copy that does not fit on the device is
    /// `FEDOTP_ERR_UNSUPPORTED_DEVICE` with the reason.
    pub(crate) fn on<B: Backend + 'static>(
        &self,
        device: Device,
        backend: B,
    ) -> Result<Arc<FrozenClip<B>>, Failure> {
        // A poisoned lock only means a panic while uploading; the list itself is consistent.
        let mut copies = self.copies.lock().unwrap_or_else(PoisonError::into_inner);
        let found = copies
            .iter()
            .filter(|(on, _)| *on == device)
            .find_map(|(_, copy)| Arc::clone(copy).downcast::<FrozenClip<B>>().ok());
        if let Some(clip) = found {
            return Ok(clip);
        }
        let weights = self.cpu.weights().clone();
        let tokenizer = self.tokenizer().clone();
        let clip = FrozenClip::with_tokenizer(backend, weights, tokenizer).map_err(|e| {
            Failure::new(
                FEDOTP_ERR_UNSUPPORTED_DEVICE,
                format!("device \"{device}\": cannot hold the model: {e}"),
            )
        })?;
        let clip = Arc::new(clip);
        copies.push((device, Arc::clone(&clip) as ModelCopy));
        Ok(clip)
    }
}

/// A CLIP model (weights and architecture), loaded from safetensors or made at random.
///
/// Opaque: create it with `fedotp_model_load` or `fedotp_model_new_tiny`, free it with
/// `fedotp_model_free`. Read-only once made: every function on it is thread-safe.
pub struct FedotpModel {
    _opaque: [u8; 0],
}

impl Handle for FedotpModel {
    type Object = Arc<Model>;
    const NAME: &'static str = "FedotpModel";
}

/// A model's sizes: what a caller needs to prepare images and size prompt buffers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpModelInfo {
    /// Side in pixels of the square images the image tower takes (224 for ViT-B/16); images
    /// of any size are resized to it.
    pub image_size: u32,
    /// Image tokens the OT head aligns with the prompts: patches for a ViT, spatial positions
    /// for a ResNet (the class / pooled token excluded).
    pub image_tokens: u32,
    /// Width of the text tower, and so of every prompt row: a client's prompt is
    /// `n_ctx x text_width` floats.
    pub text_width: u32,
    /// Tokens the text tower takes (77 for CLIP, 256 for BiomedCLIP): the start token, the
    /// prompt's `n_ctx` rows, the class name's tokens and the end token must fit.
    pub context_length: u32,
    /// Width of the joint image-text embedding.
    pub embed_dim: u32,
}

/// Registers `weights` as a new model and writes its handle.
///
/// # Safety
/// `model_out` is non-NULL (the callers check it first) and writable.
unsafe fn register(
    weights: ClipWeights<Vec<f32>>,
    tokenizer: TextTokenizer,
    model_out: *mut *mut FedotpModel,
) -> Result<(), Failure> {
    let model = Model::new(weights, tokenizer)?;
    let handle = handle::register::<FedotpModel>(Arc::new(model))?;
    // SAFETY: `model_out` is non-NULL and writable: this function's contract, which both
    // callers check (`require`) before calling it.
    unsafe { write(model_out, handle, "model_out") }
}

/// Loads CLIP from a safetensors file, in the Hugging Face `CLIPModel` layout or the OpenAI /
/// open_clip layout (f32, f16 or bf16 tensors; ViT or ModifiedResNet image towers), or
/// BiomedCLIP (a BERT text tower and a timm ViT) from open_clip's hub layout.
///
/// - `path`: NUL-terminated UTF-8 path of a `.safetensors` file, or of a directory holding
///   `model.safetensors` (Hugging Face, with its `config.json`) or
///   `open_clip_model.safetensors` (with an optional `open_clip_config.json`; for BiomedCLIP
///   the directory also holds `open_clip_config.json`, `vocab.txt` and, optionally, the text
///   model's `config.json`);
/// - `model_out`: receives the new handle; free it with `fedotp_model_free`.
///
/// Every tensor of the file must be used and every expected one present with its shape, so a
/// file for another architecture is refused rather than half-loaded.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`path`, `model_out`);
/// `FEDOTP_ERR_INVALID_UTF8` (`path`); `FEDOTP_ERR_IO` (the file or directory cannot be read,
/// or holds no weights file); `FEDOTP_ERR_MODEL_FORMAT` (not safetensors, an unknown layout, a
/// missing, unexpected or misshapen tensor, an unsupported dtype, an invalid configuration; the
/// detail names the file and tensor); `FEDOTP_ERR_OUT_OF_MEMORY`. On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// A non-NULL `path` must be a NUL-terminated string; a non-NULL `model_out` must point to a
/// writable `FedotpModel *`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_model_load(
    path: *const c_char,
    model_out: *mut *mut FedotpModel,
) -> i32 {
    call(|| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let path = unsafe { string(path, "path") }?;
        require(model_out, "model_out")?;
        let weights = ClipWeights::load(path)?;
        let tokenizer = TextTokenizer::for_model(Path::new(path), &weights.config)?;
        // SAFETY: `model_out` is non-NULL (checked above) and writable.
        unsafe { register(weights, tokenizer, model_out) }
    })
}

/// Makes the tiny CLIP of tests and examples with seeded random weights: a ViT image tower
/// on 32 x 32 images (16 patches of 8 x 8, width 64, 2 layers), a text tower of width 64 with
/// 2 layers and CLIP's full vocabulary, embeddings of 32. The same seed gives the same weights
/// on every machine. It has learned nothing: use it to exercise a program, not to classify.
///
/// - `seed`: any value;
/// - `model_out`: receives the new handle; free it with `fedotp_model_free`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`model_out`). On error nothing is
/// written. Thread-safe.
///
/// # Safety
/// A non-NULL `model_out` must point to a writable `FedotpModel *`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_model_new_tiny(seed: u64, model_out: *mut *mut FedotpModel) -> i32 {
    call(|| {
        require(model_out, "model_out")?;
        let weights = ClipWeights::random(&ClipConfig::tiny(), seed)?;
        // SAFETY: `model_out` is non-NULL (checked above) and writable.
        unsafe { register(weights, TextTokenizer::clip()?, model_out) }
    })
}

/// A model's sizes.
///
/// - `info_out`: receives them.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`model`, `info_out`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`. On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// A non-NULL `info_out` must point to a writable `FedotpModelInfo`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_model_info(
    model: *const FedotpModel,
    info_out: *mut FedotpModelInfo,
) -> i32 {
    call(|| {
        require(info_out, "info_out")?;
        let info = handle::with(model, "model", |model| Ok(model_info(model.config())))?;
        // SAFETY: `info_out` is non-NULL (checked above) and writable.
        unsafe { write(info_out, info, "info_out") }
    })
}

fn model_info(config: &ClipConfig) -> FedotpModelInfo {
    // Every size of a validated configuration is far below 2^32.
    let size = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
    FedotpModelInfo {
        image_size: size(config.vision.image_size()),
        image_tokens: size(config.vision.tokens() - 1),
        text_width: size(config.text.width()),
        context_length: size(config.text.context_length()),
        embed_dim: size(config.embed_dim),
    }
}

/// The model `model` names, shared: what a client keeps.
pub(crate) fn shared(model: *const FedotpModel, name: &str) -> Result<Arc<Model>, Failure> {
    handle::with(model, name, |model| Ok(Arc::clone(model)))
}

/// Frees a model handle. Clients created from it keep working: they share the weights, which
/// are released with the last of them. NULL is a no-op (`FEDOTP_OK`); the handle is invalid
/// afterwards (`FEDOTP_ERR_INVALID_HANDLE`, handles are never reused).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE` (nothing
/// is freed). Thread-safe.
#[no_mangle]
pub extern "C" fn fedotp_model_free(model: *mut FedotpModel) -> i32 {
    call(|| handle::release(model, "model"))
}
