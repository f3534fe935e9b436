//! A federated client behind an opaque handle: a hospital's personal prompts on a shared CLIP.
//!
//! A client holds FedOTP's two prompts per class — row 0 the **global** prompt (shared with
//! the federation through messages), row 1 the **local** prompt (never leaves it) — with its
//! own SGD state and random generator. Training, prediction and the OT head are
//! `fedotp_host::train::PromptTrainer`'s; this module checks what C passes and moves state in and
//! out of the handle.

use std::ffi::{c_char, c_void};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use fedotp_core::protocol::{ClientUpdate, GlobalPrompt, PromptShape};
#[cfg(feature = "cuda")]
use fedotp_host::backend::Cuda;
use fedotp_host::backend::{Backend, Cpu};
use fedotp_host::clip::ClipConfig;
use fedotp_host::config::Device;
use fedotp_host::data::{Dataset, Sample, Split, Transform};
use fedotp_host::fed::{Sgd, SgdState};
use fedotp_host::run::TrainStats;
use fedotp_host::run::{Checkpoint, CheckpointLayout, ClientState, RngState, Tensor};
use fedotp_host::train::{
    CachePlace, HeadChoice, LocalSchedule, PromptSetup, PromptTrainer, SplitFeatures, TrainError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::boundary::{
    call, check_disjoint, check_span, reference, require, slice, slice_mut, string, write,
};
use crate::handle::{self, Handle};
use crate::images::{FedotpImages, ImageSet, Tokens};
use crate::info::resolve_device;
use crate::message::prompt_shape;
use crate::model::{self, DeviceClip, FedotpModel, Model};
use crate::ot::FedotpOtParams;
use crate::status::{
    Failure, FEDOTP_ERR_BUFFER_TOO_SMALL, FEDOTP_ERR_EMPTY_DIMENSION,
    FEDOTP_ERR_INVALID_CLASS_NAME, FEDOTP_ERR_INVALID_CONFIG, FEDOTP_ERR_INVALID_LABEL,
    FEDOTP_ERR_NON_FINITE, FEDOTP_ERR_NOT_TRAINED, FEDOTP_ERR_SHAPE_MISMATCH,
    FEDOTP_ERR_STATE_FORMAT, FEDOTP_ERR_STATE_MISMATCH, FEDOTP_ERR_TOO_LARGE,
};

/// FedOTP's prompts per class: the global one and the local one.
const PROMPTS: usize = 2;
/// The generator's name in a saved state.
const RNG_NAME: &str = "client";

/// A federated client: its class names, its global and local prompts, its optimiser state
/// and random generator, on a model.
///
/// Opaque: create it with `fedotp_client_new`, free it with `fedotp_client_free`.
/// Thread-safe: calls on one client take turns (a training call holds it until it returns);
/// calls on different clients run in parallel on the CPU, also when they share a model, and
/// take turns on a GPU.
pub struct FedotpClient {
    _opaque: [u8; 0],
}

/// What a `FedotpClient` handle names.
pub(crate) struct Client {
    engine: Engine,
    /// The fingerprint of the model's weights, part of the identity of a saved state.
    model_fingerprint: String,
    class_names: Vec<String>,
    shape: PromptShape,
    /// `[global; local]`, each `n_ctx × width`.
    context: Vec<f32>,
    optimizer: SgdState,
    rng: ChaCha8Rng,
    batch_size: usize,
    augment: bool,
    /// The round of the global prompt installed last (0 before any).
    round: u32,
    /// The last training since that global prompt was installed.
    trained: Option<Trained>,
}

/// What a client update reports of the last training.
#[derive(Clone, Copy)]
struct Trained {
    samples: u32,
    loss: f32,
    accuracy: f32,
}

impl Handle for FedotpClient {
    type Object = Client;
    const NAME: &'static str = "FedotpClient";
}

/// A client's model and trainer on the device it computes on.
struct OnDevice<B: Backend> {
    model: Arc<DeviceClip<B>>,
    trainer: PromptTrainer<B>,
}

/// The device a client computes on (boxed: a trainer holds hundreds of bytes of buffer
/// handles).
enum Engine {
    Cpu(Box<OnDevice<Cpu>>),
    #[cfg(feature = "cuda")]
    Cuda(Box<OnDevice<Cuda>>),
}

/// Evaluates `$body` with `$on` bound to the engine's `OnDevice`, whatever its backend.
macro_rules! on_device {
    ($engine:expr, $on:ident => $body:expr) => {
        match $engine {
            Engine::Cpu($on) => $body,
            #[cfg(feature = "cuda")]
            Engine::Cuda($on) => $body,
        }
    };
}

impl Engine {
    /// A trainer for `class_names` with `setup` on `device` of `model`: CUDA device 0 for
    /// "auto" when it can be used, else the CPU.
    fn new(
        model: &Model,
        device: Device,
        class_names: &[String],
        setup: PromptSetup,
    ) -> Result<Engine, Failure> {
        #[cfg(feature = "cuda")]
        {
            let gpu = match device {
                Device::Cuda(ordinal) => Some(model.on_cuda(ordinal)?),
                Device::Auto => model.on_cuda(0).ok(),
                Device::Cpu => None,
            };
            if let Some(gpu) = gpu {
                return Ok(Engine::Cuda(Box::new(OnDevice::new(
                    gpu,
                    class_names,
                    setup,
                )?)));
            }
        }
        // Without CUDA in the build, "cuda" was refused when the name was resolved.
        #[cfg(not(feature = "cuda"))]
        let _ = device;
        Ok(Engine::Cpu(Box::new(OnDevice::new(
            model.on_cpu(),
            class_names,
            setup,
        )?)))
    }

    fn config(&self) -> &ClipConfig {
        on_device!(self, on => &on.model.clip().weights().config)
    }

    /// `(FEDOTP_DEVICE_*, ordinal)`.
    fn device(&self) -> (u32, u32) {
        match self {
            Engine::Cpu(_) => (FEDOTP_DEVICE_CPU, 0),
            #[cfg(feature = "cuda")]
            Engine::Cuda(on) => {
                let ordinal = on.model.clip().backend().info().ordinal;
                (
                    FEDOTP_DEVICE_CUDA,
                    u32::try_from(ordinal).unwrap_or(u32::MAX),
                )
            }
        }
    }
}

impl<B: Backend> OnDevice<B> {
    fn new(
        model: Arc<DeviceClip<B>>,
        class_names: &[String],
        setup: PromptSetup,
    ) -> Result<Self, Failure> {
        let trainer = {
            let _turn = model.turn();
            PromptTrainer::new(model.clip(), class_names, setup)
        };
        let trainer = trainer.map_err(|error| match error {
            // What a valid configuration can still break at creation: a class name's tokens
            // that do not fit the context.
            TrainError::Clip(fedotp_host::clip::ClipError::InvalidInput(reason)) => {
                Failure::new(FEDOTP_ERR_INVALID_CLASS_NAME, reason)
            }
            other => other.into(),
        })?;
        Ok(OnDevice { model, trainer })
    }

    /// The features of `dataset`'s samples: from the set's precomputed `tokens`, or through
    /// the image tower on the images transformed by `transform`.
    fn features<'d>(
        &self,
        dataset: &'d Dataset,
        tokens: Option<&Tokens>,
        transform: Transform,
        batch: usize,
    ) -> Result<SplitFeatures<'d>, Failure> {
        let kind = self.trainer.feature_kind();
        let Some(tokens) = tokens else {
            return Ok(SplitFeatures::new(dataset, Split::Train, transform, kind));
        };
        let clip = self.model.clip();
        let (per_image, dim) = (clip.patches() + 1, clip.weights().config.embed_dim);
        if (tokens.per_image, tokens.dim) != (per_image, dim) {
            return Err(Failure::new(
                FEDOTP_ERR_SHAPE_MISMATCH,
                format!(
                    "the set's tokens are {} per image of width {}; the model's image tower \
                     gives {per_image} of width {dim}",
                    tokens.per_image, tokens.dim
                ),
            ));
        }
        // Fixed features: no augmentation, whatever the client's setting.
        let eval = Transform::eval(clip.image_size() as u32);
        let mut features = SplitFeatures::new(dataset, Split::Train, eval, kind);
        let place = CachePlace {
            memory_budget: u64::MAX,
            disk_dir: &std::env::temp_dir(),
            batch,
        };
        features.fill_cache_from_tokens(clip, &tokens.values, place)?;
        Ok(features)
    }

    #[allow(clippy::too_many_arguments)] // the training call's inputs and the client's state
    fn train(
        &mut self,
        dataset: &Dataset,
        tokens: Option<&Tokens>,
        transform: Transform,
        schedule: LocalSchedule,
        context: &mut [f32],
        optimizer: &mut SgdState,
        rng: &mut ChaCha8Rng,
        progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<TrainStats, Failure> {
        let _turn = self.model.turn();
        let features = self.features(dataset, tokens, transform, schedule.batch_size)?;
        let samples: Vec<usize> = (0..dataset.train.len()).collect();
        Ok(self.trainer.train(
            self.model.clip(),
            context,
            optimizer,
            None,
            &features,
            &samples,
            schedule,
            rng,
            progress,
        )?)
    }

    /// Class probabilities (`images × classes`, softmax of the OT head's logits) of the
    /// samples of `dataset` under `context`.
    fn probabilities(
        &mut self,
        dataset: &Dataset,
        tokens: Option<&Tokens>,
        context: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>, Failure> {
        let _turn = self.model.turn();
        let eval = Transform::eval(self.model.clip().image_size() as u32);
        let features = self.features(dataset, tokens, eval, batch)?;
        let classes = dataset.class_names.len();
        let mut probabilities = Vec::with_capacity(dataset.train.len() * classes);
        // The evaluation transform draws nothing; the generator only fills the signature.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let all: Vec<usize> = (0..dataset.train.len()).collect();
        for chunk in all.chunks(batch) {
            let clip = self.model.clip();
            let image_features = features.batch(clip, chunk, &mut rng)?;
            let logits = self
                .trainer
                .logits(clip, context, &image_features, chunk.len())?;
            for row in logits.chunks_exact(classes) {
                softmax_into(row, &mut probabilities);
            }
        }
        Ok(probabilities)
    }
}

/// A client's settings. Start from `fedotp_client_config_default` and change what differs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpClientConfig {
    /// Context vectors per prompt, >= 1 (FedOTP: 16 few-shot, 4 on CIFAR). With the class
    /// name, SOT and EOT it must fit the model's `context_length`.
    pub n_ctx: u32,
    /// The OT head's solver (FedOTP: eps 0.1, gamma 0.8, max_iter 100, tol 1e-3, unbalanced).
    pub ot: FedotpOtParams,
    /// SGD learning rate, finite and > 0 (FedOTP: 0.001).
    pub learning_rate: f32,
    /// SGD momentum in [0, 1) (FedOTP: 0.9).
    pub momentum: f32,
    /// L2 weight decay, finite and >= 0 (FedOTP: 5e-4).
    pub weight_decay: f32,
    /// Images per training step and per prediction pass, >= 1 (FedOTP: 32).
    pub batch_size: u32,
    /// 1: training images are augmented as in FedOTP (random resized crop of scale 0.08-1,
    /// bicubic, horizontal flip); 0: resized and centre-cropped only, as for prediction.
    pub augment: u32,
    /// Seeds the prompts' initialisation, the order of training images and the augmentation:
    /// the same seed and inputs give the same results.
    pub seed: u64,
    /// NUL-terminated device name: "cpu"; "cuda" (device 0) or "cuda:N", an NVIDIA GPU; or
    /// "auto", CUDA device 0 when it can be used, else the CPU. See `fedotp_device_available`.
    /// The first client on a GPU uploads the model there (once per model and GPU); clients on
    /// one GPU take turns computing. Read during `fedotp_client_new` only.
    pub device: *const c_char,
}

/// A training call's results.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpTrainReport {
    /// Mean training loss (cross-entropy) over the steps.
    pub loss: f32,
    /// Training accuracy over the steps' images, a fraction in [0, 1].
    pub accuracy: f32,
    /// Steps taken: `epochs * ceil(images / batch_size)`, less the skipped ones.
    pub steps: u64,
    /// Steps skipped because a loss, gradient or transport plan was not finite.
    pub skipped_steps: u64,
}

/// Progress of a training call: `done` of `total` steps, and the `user_data` given to
/// `fedotp_client_train`. Called on the training thread after every step. It may call
/// libfedotp, except on the client or image set the training holds: those calls return
/// `FEDOTP_ERR_HANDLE_BUSY` (they would wait for the training that waits for them).
pub type FedotpProgressFn =
    Option<unsafe extern "C" fn(done: u64, total: u64, user_data: *mut c_void)>;

/// Fills `config_out` with FedOTP's settings: n_ctx 16; OT eps 0.1, gamma 0.8, max_iter 100,
/// tol 1e-3, unbalanced; SGD learning rate 0.001, momentum 0.9, weight decay 5e-4; batch 32;
/// augmentation on; seed 0; device "cpu" (a static string).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`. Thread-safe.
///
/// # Safety
/// A non-NULL `config_out` must point to a writable `FedotpClientConfig`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_config_default(config_out: *mut FedotpClientConfig) -> i32 {
    call(|| {
        let config = FedotpClientConfig {
            n_ctx: 16,
            ot: FedotpOtParams {
                eps: 0.1,
                gamma: 0.8,
                max_iter: 100,
                tol: 1e-3,
                balanced: 0,
            },
            learning_rate: 0.001,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch_size: 32,
            augment: 1,
            seed: 0,
            device: c"cpu".as_ptr(),
        };
        // SAFETY: the caller passes a writable config or NULL.
        unsafe { write(config_out, config, "config_out") }
    })
}

fn invalid_config(message: String) -> Failure {
    Failure::new(FEDOTP_ERR_INVALID_CONFIG, message)
}

/// The optimiser of `config`, checked.
fn optimizer(config: &FedotpClientConfig) -> Result<Sgd, Failure> {
    let (lr, momentum, weight_decay) = (config.learning_rate, config.momentum, config.weight_decay);
    if !(lr.is_finite() && lr > 0.0) {
        return Err(invalid_config(format!(
            "`learning_rate` must be finite and > 0, got {lr}"
        )));
    }
    if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
        return Err(invalid_config(format!(
            "`momentum` must lie in [0, 1), got {momentum}"
        )));
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(invalid_config(format!(
            "`weight_decay` must be finite and >= 0, got {weight_decay}"
        )));
    }
    Ok(Sgd {
        lr,
        momentum,
        weight_decay,
    })
}

/// The class names C passes, checked: each non-NULL, UTF-8 and not blank.
///
/// # Safety
/// A non-NULL `names` must point to `count` string pointers.
unsafe fn read_class_names(
    names: *const *const c_char,
    count: usize,
) -> Result<Vec<String>, Failure> {
    if count == 0 {
        return Err(Failure::new(
            FEDOTP_ERR_EMPTY_DIMENSION,
            "`num_classes` is zero",
        ));
    }
    // SAFETY: the caller passes `count` pointers at `names`.
    let pointers = unsafe { slice(names, count, "class_names") }?;
    pointers
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let what = format!("class_names[{i}]");
            // SAFETY: each pointer is a NUL-terminated string or NULL.
            let name = unsafe { string(name, &what) }?;
            if name.trim().is_empty() {
                return Err(Failure::new(
                    FEDOTP_ERR_INVALID_CLASS_NAME,
                    format!("`{what}` is blank"),
                ));
            }
            Ok(name.to_owned())
        })
        .collect()
}

/// Creates a client on `model`.
///
/// - `model`: the frozen CLIP; the client shares its weights (freeing the model handle later
///   is safe);
/// - `class_names`, `num_classes`: the classes, in label order (label `i` is
///   `class_names[i]`); each a non-blank NUL-terminated UTF-8 string, written into the
///   prompt as "X X ... X {name}." with `_` read as a space; copied;
/// - `config`: the settings (see `FedotpClientConfig`); read only, not kept;
/// - `client_out`: receives the new handle; free it with `fedotp_client_free`.
///
/// Both prompts start from a normal draw of standard deviation 0.02 from `config->seed`.
/// Clients of one federation that start from the same global prompt, as FedOTP's do, install
/// the server's first global-prompt message before training.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`model`, `class_names` or one of its
/// entries, `config`, `config->device`, `client_out`); `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_EMPTY_DIMENSION` (`num_classes`, `n_ctx` or
/// `batch_size` is 0); `FEDOTP_ERR_SIZE_OVERFLOW` (`num_classes`); `FEDOTP_ERR_INVALID_UTF8`;
/// `FEDOTP_ERR_INVALID_CLASS_NAME` (blank, or too long to fit the context with `n_ctx`);
/// `FEDOTP_ERR_TOO_LARGE` (`n_ctx` leaves no room for a class name); the OT parameters'
/// `FEDOTP_ERR_INVALID_EPS` / `_GAMMA` / `_MAX_ITER` / `_TOL` / `_BALANCED`;
/// `FEDOTP_ERR_INVALID_CONFIG` (learning rate, momentum, weight decay or augment out of
/// range); `FEDOTP_ERR_UNSUPPORTED_DEVICE` (not a device name, or a GPU that cannot be used:
/// the detail says why — a missing driver or library, no such device, no room for the model);
/// `FEDOTP_ERR_DEVICE`; `FEDOTP_ERR_OUT_OF_MEMORY`. On error nothing is written. Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to what the arguments state.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_new(
    model: *const FedotpModel,
    class_names: *const *const c_char,
    num_classes: usize,
    config: *const FedotpClientConfig,
    client_out: *mut *mut FedotpClient,
) -> i32 {
    call(|| {
        let model = model::shared(model, "model")?;
        // SAFETY: the caller passes `num_classes` string pointers or NULL.
        let class_names = unsafe { read_class_names(class_names, num_classes) }?;
        // SAFETY: the caller passes a valid config or NULL.
        let config = *unsafe { reference(config, "config") }?;
        // SAFETY: the config's device is a NUL-terminated string or NULL.
        let device = resolve_device(unsafe { string(config.device, "config->device") }?)?;
        let sgd = optimizer(&config)?;
        let ot = config.ot.to_core()?;
        if config.batch_size == 0 {
            return Err(Failure::new(
                FEDOTP_ERR_EMPTY_DIMENSION,
                "`config->batch_size` is zero",
            ));
        }
        if config.augment > 1 {
            return Err(invalid_config(format!(
                "`config->augment` must be 0 or 1, got {}",
                config.augment
            )));
        }
        let width = model.config().text.width;
        let context_length = model.config().text.context_length;
        let n_ctx = config.n_ctx as usize;
        // SOT, the context, at least one class-name token and EOT.
        if n_ctx + 3 > context_length {
            return Err(Failure::new(
                FEDOTP_ERR_TOO_LARGE,
                format!(
                    "`config->n_ctx` = {n_ctx} leaves no room for a class name in the model's \
                     {context_length} tokens"
                ),
            ));
        }
        let shape = prompt_shape(n_ctx, width)?;
        require(client_out, "client_out")?;
        let setup = PromptSetup {
            n_ctx,
            sets: PROMPTS,
            shared_sets: 1,
            init_std: 0.02,
            head: HeadChoice::Ot(ot),
            sgd,
            proximal_mu: None,
        };
        let engine = Engine::new(&model, device, &class_names, setup)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let context = on_device!(&engine, on => {
            on.trainer.init_context(on.trainer.context_len(), &mut rng)
        });
        let client = Client {
            engine,
            model_fingerprint: model.fingerprint().to_owned(),
            class_names,
            shape,
            context,
            optimizer: SgdState::default(),
            rng,
            batch_size: config.batch_size as usize,
            augment: config.augment == 1,
            round: 0,
            trained: None,
        };
        let handle = handle::register::<FedotpClient>(client)?;
        // SAFETY: `client_out` is non-NULL (checked above) and writable.
        unsafe { write(client_out, handle, "client_out") }
    })
}

/// `fedotp_client_device`'s kind: the client computes on the CPU.
pub const FEDOTP_DEVICE_CPU: u32 = 0;
/// `fedotp_client_device`'s kind: the client computes on a CUDA GPU.
pub const FEDOTP_DEVICE_CUDA: u32 = 1;

/// Where a client computes — what "auto" chose, say, for a log line.
///
/// - `kind_out`: receives `FEDOTP_DEVICE_CPU` or `FEDOTP_DEVICE_CUDA`;
/// - `ordinal_out`: receives the GPU's number (the N of "cuda:N"), 0 on the CPU; distinct from
///   `kind_out`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_ALIASED_BUFFERS`. On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to writable `uint32_t`s.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_device(
    client: *const FedotpClient,
    kind_out: *mut u32,
    ordinal_out: *mut u32,
) -> i32 {
    call(|| {
        check_disjoint(kind_out, 1, "kind_out", ordinal_out, 1, "ordinal_out")?;
        require(kind_out, "kind_out")?;
        require(ordinal_out, "ordinal_out")?;
        let (kind, ordinal) = handle::with(client, "client", |client| Ok(client.engine.device()))?;
        // SAFETY: both non-NULL (checked above), writable and apart.
        unsafe {
            write(kind_out, kind, "kind_out")?;
            write(ordinal_out, ordinal, "ordinal_out")
        }
    })
}

/// The shape of a client's global prompt — what its messages and the server's aggregator
/// carry: `n_ctx` rows of `width` floats.
///
/// - `n_ctx_out`, `width_out`: receive the two; distinct.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_ALIASED_BUFFERS`. On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to writable `size_t`s.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_prompt_shape(
    client: *const FedotpClient,
    n_ctx_out: *mut usize,
    width_out: *mut usize,
) -> i32 {
    call(|| {
        check_disjoint(n_ctx_out, 1, "n_ctx_out", width_out, 1, "width_out")?;
        require(n_ctx_out, "n_ctx_out")?;
        require(width_out, "width_out")?;
        let shape = handle::with(client, "client", |client| Ok(client.shape))?;
        // SAFETY: both non-NULL (checked above), writable and apart.
        unsafe {
            write(n_ctx_out, shape.n_ctx() as usize, "n_ctx_out")?;
            write(width_out, shape.width() as usize, "width_out")
        }
    })
}

/// Runs `body` on a dataset whose train split is the image set's samples and whose classes
/// are the client's, then gives the samples back to the set.
fn with_dataset<R>(
    set: &mut ImageSet,
    class_names: &[String],
    body: impl FnOnce(&Dataset, Option<&Tokens>) -> Result<R, Failure>,
) -> Result<R, Failure> {
    let dataset = Dataset {
        name: "images".into(),
        class_names: class_names.to_vec(),
        domain_names: vec!["images".into()],
        coarse: None,
        train: std::mem::take(&mut set.samples),
        test: Vec::new(),
    };
    let result = body(&dataset, set.tokens.as_ref());
    set.samples = dataset.train;
    result
}

/// Whether the C cancel flag at `cancel` (if any) is set.
///
/// # Safety
/// A non-NULL `cancel` must point to a `uint32_t` that stays valid during the call, written
/// by other threads only atomically.
unsafe fn cancelled(cancel: *const u32) -> bool {
    if cancel.is_null() {
        return false;
    }
    // SAFETY: an aligned, valid uint32_t (the caller's contract), read atomically; libfedotp
    // never writes it.
    unsafe { AtomicU32::from_ptr(cancel.cast_mut()) }.load(Ordering::Relaxed) != 0
}

/// Trains the client's prompts for `epochs` passes over the labelled images of `images`:
/// FedOTP's local training (SGD on both prompts through the OT head; CLIP frozen).
///
/// - `images`: the training images, or their precomputed tokens (`fedotp_images_add_tokens`,
///   not augmented); every label must be a class of the client (not `FEDOTP_NO_LABEL`). The
///   set is locked during the call;
/// - `epochs`: passes over the images, >= 1; each pass shuffles them (from the client's
///   generator);
/// - `progress`: NULL, or called after every step with (done, total, `user_data`) on this
///   thread; calls it makes on this client or image set return `FEDOTP_ERR_HANDLE_BUSY`;
/// - `cancel`: NULL, or a flag another thread may set to non-zero (as a C11 `atomic_uint` or
///   a C++ `std::atomic<uint32_t>`, whose layout is `uint32_t`'s), checked after every step;
/// - `report_out`: NULL, or receives the loss and accuracy.
///
/// Either the whole call takes effect or none of it: on any error, a cancellation included,
/// the client's prompts, optimiser and generator are as before the call and nothing is
/// written. After a successful call the client can write an update message.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `images`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_EMPTY_DIMENSION`
/// (`epochs` is 0, or no images); `FEDOTP_ERR_TOO_LARGE` (more than 2^32 - 1 images, the most
/// an update can weigh); `FEDOTP_ERR_INVALID_LABEL` (the detail names the image);
/// `FEDOTP_ERR_CANCELLED`; `FEDOTP_ERR_NON_FINITE` (every step's loss or transport plan was
/// not finite: nothing was learned); `FEDOTP_ERR_SHAPE_MISMATCH` (tokens of other sizes than
/// the model's); `FEDOTP_ERR_DEVICE` (the GPU failed); `FEDOTP_ERR_OUT_OF_MEMORY`.
/// Thread-safe: see `progress`.
///
/// # Safety
/// `cancel` as stated; `report_out` NULL or writable; `progress` a valid function or NULL.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_train(
    client: *mut FedotpClient,
    images: *const FedotpImages,
    epochs: u32,
    progress: FedotpProgressFn,
    user_data: *mut c_void,
    cancel: *const u32,
    report_out: *mut FedotpTrainReport,
) -> i32 {
    call(|| {
        if epochs == 0 {
            return Err(Failure::new(FEDOTP_ERR_EMPTY_DIMENSION, "`epochs` is zero"));
        }
        let report = handle::with(client, "client", |client| {
            handle::with(images, "images", |set| {
                check_labels(&set.samples, client.class_names.len())?;
                let count = u32::try_from(set.samples.len()).map_err(|_| {
                    Failure::new(
                        FEDOTP_ERR_TOO_LARGE,
                        format!(
                            "{} images: an update weighs at most 2^32 - 1",
                            set.samples.len()
                        ),
                    )
                })?;
                let class_names = client.class_names.clone();
                with_dataset(set, &class_names, |dataset, tokens| {
                    client.train(dataset, tokens, epochs, count, &mut |done, total| {
                        if let Some(progress) = progress {
                            // SAFETY: the caller passes a valid function pointer.
                            unsafe { progress(done as u64, total as u64, user_data) };
                        }
                        // SAFETY: the caller's flag, valid during the call.
                        if unsafe { cancelled(cancel) } {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                })
            })
        })?;
        // SAFETY: a non-NULL `report_out` points to a writable report.
        if let Some(report_out) = unsafe { report_out.as_mut() } {
            *report_out = report;
        }
        Ok(())
    })
}

/// Refuses an empty set and a label outside `classes`.
fn check_labels(samples: &[Sample], classes: usize) -> Result<(), Failure> {
    if samples.is_empty() {
        return Err(Failure::new(
            FEDOTP_ERR_EMPTY_DIMENSION,
            "the image set is empty",
        ));
    }
    match samples.iter().position(|s| s.label >= classes) {
        None => Ok(()),
        Some(i) if samples[i].label == crate::images::FEDOTP_NO_LABEL as usize => Err(
            Failure::new(FEDOTP_ERR_INVALID_LABEL, format!("image {i} has no label")),
        ),
        Some(i) => Err(Failure::new(
            FEDOTP_ERR_INVALID_LABEL,
            format!(
                "image {i} has label {}, the client has {classes} classes",
                samples[i].label
            ),
        )),
    }
}

impl Client {
    /// The transform of training images.
    fn train_transform(&self) -> Transform {
        let size = self.engine.config().vision.image_size() as u32;
        if self.augment {
            Transform::train(size)
        } else {
            Transform::eval(size)
        }
    }

    /// Trains on every sample of `dataset`'s train split (with the set's `tokens` when it has
    /// them); commits the new state only on success.
    fn train(
        &mut self,
        dataset: &Dataset,
        tokens: Option<&Tokens>,
        epochs: u32,
        count: u32,
        progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<FedotpTrainReport, Failure> {
        let schedule = LocalSchedule {
            epochs,
            batch_size: self.batch_size,
        };
        let transform = self.train_transform();
        // Trained on copies: an error or a cancellation leaves the client untouched.
        let mut context = self.context.clone();
        let mut optimizer = self.optimizer.clone();
        let mut rng = self.rng.clone();
        let stats = on_device!(&mut self.engine, on => on.train(
            dataset,
            tokens,
            transform,
            schedule,
            &mut context,
            &mut optimizer,
            &mut rng,
            progress,
        ))?;
        let (Some(loss), Some(accuracy)) = (stats.loss, stats.accuracy) else {
            return Err(Failure::new(
                FEDOTP_ERR_NON_FINITE,
                format!(
                    "every one of the {} steps had a non-finite loss or transport plan: nothing \
                     was learned",
                    stats.skipped_batches
                ),
            ));
        };
        let steps_per_epoch = dataset.train.len().div_ceil(self.batch_size) as u64;
        let report = FedotpTrainReport {
            loss: loss as f32,
            accuracy: accuracy as f32,
            steps: steps_per_epoch * u64::from(epochs) - stats.skipped_batches,
            skipped_steps: stats.skipped_batches,
        };
        self.context = context;
        self.optimizer = optimizer;
        self.rng = rng;
        self.trained = Some(Trained {
            samples: count,
            loss: report.loss,
            accuracy: report.accuracy,
        });
        Ok(report)
    }

    fn global(&self) -> &[f32] {
        &self.context[..self.shape.len()]
    }
}

/// The size in bytes of the update message `fedotp_client_write_update` writes for this
/// client: size its buffer with it.
///
/// - `size_out`: receives the size.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`; `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`. On error nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `size_out` must point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_update_message_size(
    client: *const FedotpClient,
    size_out: *mut usize,
) -> i32 {
    call(|| {
        require(size_out, "size_out")?;
        let size = handle::with(client, "client", |client| {
            Ok(ClientUpdate::encoded_len(client.shape))
        })?;
        // SAFETY: non-NULL (checked above) and writable.
        unsafe { write(size_out, size, "size_out") }
    })
}

/// Writes the client's update message (client -> server, docs/PROTOCOL.md): its global prompt
/// after the last training, weighted by the number of images trained on, with that training's
/// loss and accuracy, for the round of the global prompt installed last (0 if none).
///
/// - `client_id`: the client's id in the federation (the server counts each id once a round);
/// - `out`, `capacity`: the caller's buffer and its size in bytes, at least
///   `fedotp_client_update_message_size`; only the message's bytes are written;
/// - `written_out`: receives the message's size. Must not overlap `out`'s message bytes.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `out`, `written_out`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_NOT_TRAINED`
/// (no successful `fedotp_client_train` since the client was created, loaded or given a global
/// prompt: there is nothing to send); `FEDOTP_ERR_BUFFER_TOO_SMALL`;
/// `FEDOTP_ERR_SIZE_OVERFLOW` (a `capacity` no buffer can have); `FEDOTP_ERR_ALIASED_BUFFERS`.
/// On error nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `out` must point to `capacity` writable bytes; a non-NULL `written_out` to a
/// writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_write_update(
    client: *const FedotpClient,
    client_id: u32,
    out: *mut u8,
    capacity: usize,
    written_out: *mut usize,
) -> i32 {
    call(|| {
        check_span::<u8>(capacity, "out")?;
        let written = handle::with(client, "client", |client| {
            let Some(trained) = client.trained else {
                return Err(Failure::new(
                    FEDOTP_ERR_NOT_TRAINED,
                    format!(
                        "the client has not trained since it was created, loaded or given the \
                         global prompt of round {}: there is no update to send",
                        client.round
                    ),
                ));
            };
            let needed = ClientUpdate::encoded_len(client.shape);
            let out_len = capacity.min(needed);
            check_disjoint(written_out, 1, "written_out", out, out_len, "out")?;
            require(written_out, "written_out")?;
            // SAFETY: the caller passes `capacity` >= `out_len` writable bytes at `out`.
            let out = unsafe { slice_mut(out, out_len, "out") }?;
            let update = ClientUpdate {
                round: client.round,
                client: client_id,
                samples: trained.samples,
                shape: client.shape,
                prompt: client.global(),
                loss: Some(trained.loss),
                accuracy: Some(trained.accuracy),
            };
            Ok(update.encode(out)?)
        })?;
        // SAFETY: non-NULL (checked above), writable, apart from the message.
        unsafe { write(written_out, written, "written_out") }
    })
}

/// Reads a global-prompt message (server -> client) and installs its prompt as the client's
/// global prompt; the local prompt, optimiser and generator are kept. The client then belongs
/// to the message's round: its next update is for that round.
///
/// - `bytes`, `len`: exactly one global-prompt message of the client's prompt shape; read
///   only;
/// - `round_out`: NULL, or receives the message's round.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `bytes`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_SIZE_OVERFLOW` (a
/// `len` no buffer can have); every message defect of `fedotp_global_prompt_decode`
/// (`FEDOTP_ERR_MESSAGE_TRUNCATED`, `_BAD_MAGIC`, `_UNSUPPORTED_VERSION`, `_UNKNOWN_KIND`,
/// `_WRONG_KIND`, `_LENGTH_MISMATCH`, `_TRAILING_BYTES`, `_CHECKSUM_MISMATCH`,
/// `_RESERVED_NOT_ZERO`, `_SHAPE_MISMATCH`, `_NON_FINITE`); `FEDOTP_ERR_ALIASED_BUFFERS`. On
/// error the client is unchanged and nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `bytes` must point to `len` bytes; a non-NULL `round_out` to a writable
/// `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_read_global(
    client: *mut FedotpClient,
    bytes: *const u8,
    len: usize,
    round_out: *mut u32,
) -> i32 {
    call(|| {
        check_span::<u8>(len, "bytes")?;
        check_disjoint(round_out, 1, "round_out", bytes, len, "bytes")?;
        let round = handle::with(client, "client", |client| {
            // SAFETY: the caller passes `len` bytes at `bytes`.
            let bytes = unsafe { slice(bytes, len, "bytes") }?;
            let shape = client.shape;
            // Decoded into a copy: a refused message leaves the prompt as it was.
            let mut global = client.global().to_vec();
            let message = GlobalPrompt::decode(bytes, shape, &mut global)?;
            let round = message.round;
            client.context[..shape.len()].copy_from_slice(&global);
            client.round = round;
            client.trained = None;
            Ok(round)
        })?;
        // SAFETY: a non-NULL `round_out` points to a writable uint32_t, apart from `bytes`.
        if let Some(round_out) = unsafe { round_out.as_mut() } {
            *round_out = round;
        }
        Ok(())
    })
}

/// Copies the client's global prompt (what its next update carries), `n_ctx x width` floats,
/// row-major: for a coordinator that aggregates in-process with `fedotp_aggregator_add_update`,
/// or to inspect it.
///
/// - `prompt_out`, `n_ctx`, `width`: the buffer and the shape it has; the shape must be the
///   client's (`fedotp_client_prompt_shape`).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `prompt_out`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; the shape's
/// `FEDOTP_ERR_EMPTY_DIMENSION` / `FEDOTP_ERR_SIZE_OVERFLOW` / `FEDOTP_ERR_TOO_LARGE`;
/// `FEDOTP_ERR_SHAPE_MISMATCH`. On error nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `prompt_out` must point to `n_ctx * width` writable floats.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_global_prompt(
    client: *const FedotpClient,
    prompt_out: *mut f32,
    n_ctx: usize,
    width: usize,
) -> i32 {
    call(|| {
        let shape = prompt_shape(n_ctx, width)?;
        handle::with(client, "client", |client| {
            if shape != client.shape {
                return Err(Failure::new(
                    FEDOTP_ERR_SHAPE_MISMATCH,
                    format!(
                        "`prompt_out` is {shape} (n_ctx×width) but the client's prompt is {}",
                        client.shape
                    ),
                ));
            }
            // SAFETY: the caller passes `n_ctx * width` writable floats.
            let out = unsafe { slice_mut(prompt_out, shape.len(), "prompt_out") }?;
            out.copy_from_slice(client.global());
            Ok(())
        })
    })
}

/// Class probabilities for every image of `images` with the client's personal prompts (global
/// and local, through the OT head): row `i` holds image `i`'s `num_classes` probabilities,
/// which sum to 1. Labels are ignored. The images are resized (short side, bicubic) and
/// centre-cropped to the model's input; a set of precomputed tokens skips the image tower.
///
/// - `probabilities_out`, `len`: the caller's buffer and its length in floats, at least
///   `images x num_classes`; only those are written (row-major).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `images`,
/// `probabilities_out`); `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`;
/// `FEDOTP_ERR_EMPTY_DIMENSION` (no images); `FEDOTP_ERR_BUFFER_TOO_SMALL`;
/// `FEDOTP_ERR_SIZE_OVERFLOW`; `FEDOTP_ERR_SHAPE_MISMATCH` (tokens of other sizes than the
/// model's); `FEDOTP_ERR_DEVICE`; `FEDOTP_ERR_OUT_OF_MEMORY`. On error nothing is written.
/// Thread-safe (the client and the image set are locked during the call).
///
/// # Safety
/// A non-NULL `probabilities_out` must point to `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_predict(
    client: *mut FedotpClient,
    images: *const FedotpImages,
    probabilities_out: *mut f32,
    len: usize,
) -> i32 {
    call(|| {
        check_span::<f32>(len, "probabilities_out")?;
        handle::with(client, "client", |client| {
            handle::with(images, "images", |set| {
                let samples = &set.samples;
                if samples.is_empty() {
                    return Err(Failure::new(
                        FEDOTP_ERR_EMPTY_DIMENSION,
                        "the image set is empty",
                    ));
                }
                let classes = client.class_names.len();
                let needed = samples.len().checked_mul(classes).ok_or_else(|| {
                    Failure::new(
                        crate::status::FEDOTP_ERR_SIZE_OVERFLOW,
                        "images x classes overflows size_t",
                    )
                })?;
                if len < needed {
                    return Err(Failure::new(
                        FEDOTP_ERR_BUFFER_TOO_SMALL,
                        format!(
                            "`probabilities_out` holds {len} floats, {} images x {classes} \
                             classes need {needed}",
                            samples.len()
                        ),
                    ));
                }
                require(probabilities_out, "probabilities_out")?;
                let class_names = client.class_names.clone();
                let (context, batch) = (&client.context, client.batch_size);
                let probabilities = with_dataset(set, &class_names, |dataset, tokens| {
                    on_device!(&mut client.engine, on => {
                        on.probabilities(dataset, tokens, context, batch)
                    })
                })?;
                // SAFETY: the caller passes `len` >= `needed` writable floats.
                let out = unsafe { slice_mut(probabilities_out, needed, "probabilities_out") }?;
                out.copy_from_slice(&probabilities);
                Ok(())
            })
        })
    })
}

/// Appends the softmax of `logits`, computed in f64 from the largest logit (no overflow).
fn softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits
        .iter()
        .map(|&l| (f64::from(l) - f64::from(max)).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    out.extend(exps.iter().map(|e| (e / sum) as f32));
}

impl Client {
    /// What a saved state must have been saved by: the model (its weights' fingerprint), the
    /// prompt length and the class names in order, as SHA-256 hex (length-prefixed, so no two
    /// inputs collide by concatenation).
    fn identity(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"fedotp client state 2");
        hash.update(self.model_fingerprint.as_bytes());
        hash.update(u64::from(self.shape.n_ctx()).to_le_bytes());
        hash.update((self.class_names.len() as u64).to_le_bytes());
        for name in &self.class_names {
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
        }
        hash.finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The shapes of a saved state: one prompt of each kind, `[1, n_ctx, width]`.
    fn layout(&self) -> CheckpointLayout {
        let prompt = vec![1, self.shape.n_ctx() as usize, self.shape.width() as usize];
        CheckpointLayout {
            clients: 1,
            global_prompt: Some(prompt.clone()),
            local_prompt: Some(prompt),
            parameters: self.context.len(),
        }
    }

    fn prompt_tensor(&self, values: &[f32]) -> Option<Tensor> {
        Tensor::new(self.layout().local_prompt?, values.to_vec())
    }

    /// The client's state in the run checkpoint format (one client).
    fn checkpoint(&self) -> Checkpoint {
        let (global, local) = self.context.split_at(self.shape.len());
        Checkpoint {
            round: self.round,
            config_hash: self.identity(),
            global_prompt: self.prompt_tensor(global),
            clients: vec![ClientState {
                local_prompt: self.prompt_tensor(local),
                optimizer: self.optimizer.clone(),
            }],
            rngs: [(RNG_NAME.to_string(), RngState::of(&self.rng))].into(),
        }
    }

    /// Installs `checkpoint`, read from `path`, after checking it was saved by a client like
    /// this one.
    fn restore(&mut self, checkpoint: Checkpoint, path: &Path) -> Result<(), Failure> {
        if checkpoint.config_hash != self.identity() {
            return Err(Failure::new(
                FEDOTP_ERR_STATE_MISMATCH,
                format!(
                    "{}: saved by a client of another model (other weights), other class names or \
                     another n_ctx",
                    path.display()
                ),
            ));
        }
        checkpoint.check(&self.layout(), path)?;
        let format = |what: &str| {
            Failure::new(
                FEDOTP_ERR_STATE_FORMAT,
                format!("{}: {what}", path.display()),
            )
        };
        let rng = checkpoint
            .rngs
            .get(RNG_NAME)
            .ok_or_else(|| format("no `rng.client` generator state"))?
            .restore();
        let (Some(global), Some(state)) = (checkpoint.global_prompt, checkpoint.clients.first())
        else {
            return Err(format("no prompts"));
        };
        let local = state
            .local_prompt
            .as_ref()
            .ok_or_else(|| format("no local prompt"))?;
        let mut context = global.values;
        context.extend_from_slice(&local.values);
        if let Some(value) = context.iter().find(|v| !v.is_finite()) {
            return Err(Failure::new(
                FEDOTP_ERR_NON_FINITE,
                format!("{}: a prompt value is {value}", path.display()),
            ));
        }
        self.context = context;
        self.optimizer = state.optimizer.clone();
        self.rng = rng;
        self.round = checkpoint.round;
        self.trained = None;
        Ok(())
    }
}

/// Saves the client's state — both prompts, the SGD momentum, the generator and the round of
/// its global prompt — to a safetensors file, atomically (a temporary file renamed over
/// `path`: a crash leaves the old file or the new one, never a mix). The file is fedotp's run
/// checkpoint format with one client (tensors `global_prompt`, `client.0.local_prompt`,
/// `client.0.momentum_buffer`, `rng.client`), readable by PyTorch and NumPy too.
///
/// - `path`: NUL-terminated UTF-8 path; its directory must exist.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `path`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_INVALID_UTF8`;
/// `FEDOTP_ERR_IO`. Thread-safe.
///
/// # Safety
/// A non-NULL `path` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_save(
    client: *const FedotpClient,
    path: *const c_char,
) -> i32 {
    call(|| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let path = Path::new(unsafe { string(path, "path") }?);
        let checkpoint = handle::with(client, "client", |client| Ok(client.checkpoint()))?;
        Ok(checkpoint.save(path)?)
    })
}

/// Restores a state saved by `fedotp_client_save` into a client created with the same model
/// sizes, class names (same order) and `n_ctx`: the hospital restarts where it left off. The
/// other settings (OT, optimiser, batch, device) are the client's own and may differ. The
/// client must train again before it writes an update.
///
/// - `path`: NUL-terminated UTF-8 path of the file.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `path`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_INVALID_UTF8`;
/// `FEDOTP_ERR_IO` (cannot be read); `FEDOTP_ERR_STATE_FORMAT` (not a client state: not
/// safetensors, no fedotp metadata, a missing or misshapen tensor; the detail names it);
/// `FEDOTP_ERR_STATE_MISMATCH` (saved by a client of another model — other weights, even of
/// the same architecture — other class names or another `n_ctx`); `FEDOTP_ERR_NON_FINITE`. On error the client is unchanged. Thread-safe.
///
/// # Safety
/// A non-NULL `path` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_load(client: *mut FedotpClient, path: *const c_char) -> i32 {
    call(|| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let path = Path::new(unsafe { string(path, "path") }?);
        handle::with(client, "client", |client| {
            let checkpoint = Checkpoint::load(path)?;
            client.restore(checkpoint, path)
        })
    })
}

/// Frees a client. NULL is a no-op (`FEDOTP_OK`); the handle is invalid afterwards.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE` (nothing
/// is freed). Thread-safe: a call on the client running in another thread (a training)
/// finishes first.
#[no_mangle]
pub extern "C" fn fedotp_client_free(client: *mut FedotpClient) -> i32 {
    call(|| handle::release(client, "client"))
}

#[cfg(test)]
mod tests {
    use std::ptr::null_mut;

    use fedotp_host::backend::{Backend, Cpu};
    use fedotp_host::clip::{vision_forward, ClipConfig, ClipWeights};
    use fedotp_host::data::{RgbImage, RowLayout, Transform};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::images::{
        fedotp_images_add_rgb8, fedotp_images_add_tokens, fedotp_images_free, fedotp_images_new,
    };
    use crate::model::{fedotp_model_free, fedotp_model_new_tiny};
    use crate::status::{FEDOTP_ERR_MIXED_IMAGES, FEDOTP_OK};

    /// A tiny client (seed 5, no augmentation) on `model`.
    fn client(model: *const FedotpModel) -> *mut FedotpClient {
        let mut config = std::mem::MaybeUninit::uninit();
        let mut client = null_mut();
        let names = [c"cat".as_ptr(), c"dog".as_ptr(), c"bird".as_ptr()];
        // SAFETY: valid out-pointers and strings.
        unsafe {
            assert_eq!(fedotp_client_config_default(config.as_mut_ptr()), FEDOTP_OK);
            let mut config = config.assume_init();
            (config.n_ctx, config.batch_size, config.augment, config.seed) = (4, 4, 0, 5);
            config.learning_rate = 0.5;
            let status = fedotp_client_new(model, names.as_ptr(), 3, &config, &mut client);
            assert_eq!(status, FEDOTP_OK);
        }
        client
    }

    /// Trains `client` two epochs on `images`, then predicts them: (loss, accuracy, global
    /// prompt, probabilities).
    fn train_and_predict(
        client: *mut FedotpClient,
        images: *const FedotpImages,
        count: usize,
    ) -> (f32, f32, Vec<f32>, Vec<f32>) {
        let mut report = FedotpTrainReport {
            loss: 0.0,
            accuracy: 0.0,
            steps: 0,
            skipped_steps: 0,
        };
        let mut prompt = vec![0.0; 4 * 64];
        let mut probabilities = vec![0.0; count * 3];
        // SAFETY: live handles and buffers of the stated lengths.
        unsafe {
            let status = fedotp_client_train(
                client,
                images,
                2,
                None,
                null_mut(),
                std::ptr::null(),
                &mut report,
            );
            assert_eq!(status, FEDOTP_OK);
            let status = fedotp_client_global_prompt(client, prompt.as_mut_ptr(), 4, 64);
            assert_eq!(status, FEDOTP_OK);
            let status = fedotp_client_predict(
                client,
                images,
                probabilities.as_mut_ptr(),
                probabilities.len(),
            );
            assert_eq!(status, FEDOTP_OK);
        }
        (report.loss, report.accuracy, prompt, probabilities)
    }

    #[test]
    fn precomputed_tokens_train_and_predict_exactly_as_their_images() {
        let (seed, count, side) = (3, 7, 40u32);
        let mut model = null_mut();
        // SAFETY: a valid out-pointer.
        assert_eq!(
            unsafe { fedotp_model_new_tiny(seed, &mut model) },
            FEDOTP_OK
        );
        let weights = ClipWeights::random(&ClipConfig::tiny(), seed).unwrap();
        let transform = Transform::eval(weights.config.vision.image_size() as u32);
        let layout = RowLayout {
            width: side,
            height: side,
            row_stride: 3 * side as usize,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut with_pixels, mut with_tokens) = (null_mut(), null_mut());
        // SAFETY: valid out-pointers.
        unsafe {
            assert_eq!(fedotp_images_new(&mut with_pixels), FEDOTP_OK);
            assert_eq!(fedotp_images_new(&mut with_tokens), FEDOTP_OK);
        }
        let (per_image, dim) = (weights.config.vision.tokens(), weights.config.embed_dim);
        for i in 0..count {
            let mut rgb = vec![0u8; 3 * (side * side) as usize];
            rng.fill_bytes(&mut rgb);
            let label = (i % 3) as u32;
            // The image tower's output, as `fedotp encode` writes it.
            let image = RgbImage::from_rgb8(layout, &rgb).unwrap();
            let mut pixels = vec![0.0; transform.output_len()];
            transform.apply_into(&image, &mut rng, &mut pixels).unwrap();
            let cpu = Cpu::new();
            let out =
                vision_forward(&cpu, &weights.vision, &cpu.upload(&pixels).unwrap(), 1).unwrap();
            let tokens = cpu.download(&out.tokens, per_image * dim).unwrap();
            // SAFETY: live sets, buffers of the stated lengths.
            unsafe {
                let status = fedotp_images_add_rgb8(
                    with_pixels,
                    rgb.as_ptr(),
                    side,
                    side,
                    layout.row_stride,
                    label,
                );
                assert_eq!(status, FEDOTP_OK);
                let status =
                    fedotp_images_add_tokens(with_tokens, tokens.as_ptr(), per_image, dim, label);
                assert_eq!(status, FEDOTP_OK);
                // One set, one kind of input.
                let status =
                    fedotp_images_add_tokens(with_pixels, tokens.as_ptr(), per_image, dim, label);
                assert_eq!(status, FEDOTP_ERR_MIXED_IMAGES);
                let status = fedotp_images_add_rgb8(
                    with_tokens,
                    rgb.as_ptr(),
                    side,
                    side,
                    layout.row_stride,
                    label,
                );
                assert_eq!(status, FEDOTP_ERR_MIXED_IMAGES);
            }
        }
        let (a, b) = (client(model), client(model));
        let from_pixels = train_and_predict(a, with_pixels, count);
        let from_tokens = train_and_predict(b, with_tokens, count);
        assert!(from_pixels.0.is_finite() && from_pixels.2.iter().any(|&v| v != 0.0));
        assert_eq!(
            from_pixels, from_tokens,
            "loss, accuracy, global prompt and probabilities bit for bit"
        );

        // Tokens of another model's sizes are refused when a client uses them.
        let mut wrong = null_mut();
        let odd = vec![0.5f32; 5 * dim];
        let mut report = std::mem::MaybeUninit::uninit();
        // SAFETY: live handles, buffers of the stated lengths.
        unsafe {
            assert_eq!(fedotp_images_new(&mut wrong), FEDOTP_OK);
            let status = fedotp_images_add_tokens(wrong, odd.as_ptr(), 5, dim, 0);
            assert_eq!(status, FEDOTP_OK);
            let status = fedotp_client_train(
                a,
                wrong,
                1,
                None,
                null_mut(),
                std::ptr::null(),
                report.as_mut_ptr(),
            );
            assert_eq!(status, FEDOTP_ERR_SHAPE_MISMATCH);
            for handle in [with_pixels, with_tokens, wrong] {
                assert_eq!(fedotp_images_free(handle), FEDOTP_OK);
            }
            assert_eq!(fedotp_client_free(a), FEDOTP_OK);
            assert_eq!(fedotp_client_free(b), FEDOTP_OK);
            assert_eq!(fedotp_model_free(model), FEDOTP_OK);
        }
    }

    #[test]
    fn softmax_matches_hand_computed_values_and_survives_large_logits() {
        // exp(0) : exp(ln 3) = 1 : 3.
        let mut out = Vec::new();
        softmax_into(&[0.0, 3f32.ln()], &mut out);
        assert!(
            (out[0] - 0.25).abs() < 1e-7 && (out[1] - 0.75).abs() < 1e-7,
            "{out:?}"
        );
        // Logits of a CLIP scale (x100) would overflow exp in f32 without the shift.
        out.clear();
        softmax_into(&[1000.0, 1000.0, 0.0], &mut out);
        assert_eq!(out, [0.5, 0.5, 0.0]);
    }
}
