//! Creating a client: its settings (`FedotpClientConfig`), checked, and the client made from
//! them on its device.

use std::ffi::c_char;

use fedotp_host::backend::Device;
use fedotp_host::clip::classnames::prompt_name;
use fedotp_host::clip::TextTokenizer;
use fedotp_host::fed::{Sgd, SgdState};
use fedotp_host::prompt::OtStopping;
use fedotp_host::train::{ContextInit, HeadChoice, PromptSetup};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::engine;
use super::{Client, FedotpClient};
use crate::boundary::{call, reference, require, slice, string, write};
use crate::handle;
use crate::message::prompt_shape;
use crate::model::{self, FedotpModel};
use crate::ot::FedotpOtParams;
use crate::status::{
    Failure, FEDOTP_ERR_EMPTY_DIMENSION, FEDOTP_ERR_INVALID_CLASS_NAME, FEDOTP_ERR_INVALID_CONFIG,
    FEDOTP_ERR_TOO_LARGE,
};

/// FedOTP's prompts per class: the global one and the local one.
const PROMPTS: usize = 2;

/// `FedotpClientConfig::ot_stopping`: each OT problem stops on its own, when its prompt-side
/// scaling's mean relative change falls below `tol` (libfedotp's solver, as `fedotp_ot_plan`).
pub const FEDOTP_OT_STOPPING_PER_PROBLEM: u32 = 0;
/// `FedotpClientConfig::ot_stopping`: the rule of FedOTP's released code, to reproduce its
/// results: all problems of a batch stop together, when the batch's mean absolute change falls
/// below `tol`, on the unshifted kernel (solved on the CPU whatever the client's device).
pub const FEDOTP_OT_STOPPING_RELEASED: u32 = 1;

/// A client's settings. Start from `fedotp_client_config_default` and change what differs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpClientConfig {
    /// Context vectors per prompt, >= 1 (FedOTP: 16 few-shot, 4 on CIFAR). With the class
    /// name, SOT and EOT it must fit the model's `context_length`.
    pub n_ctx: u32,
    /// The OT head's solver (FedOTP: eps 0.1, gamma 0.8, max_iter 100, tol 1e-3, unbalanced).
    pub ot: FedotpOtParams,
    /// When the OT head's iterations stop: `FEDOTP_OT_STOPPING_PER_PROBLEM` (the default) or
    /// `FEDOTP_OT_STOPPING_RELEASED`. A field of the client rather than of `FedotpOtParams`:
    /// the released rule couples the problems of a training batch, and `FedotpOtParams` also
    /// drives `fedotp_ot_plan` and `fedotp_ot_logits`, which keep the per-problem solver.
    pub ot_stopping: u32,
    /// SGD learning rate, > 0 and a normal f32: finite, not subnormal (FedOTP: 0.001).
    pub learning_rate: f32,
    /// SGD momentum in [0, 1), 0 or a normal f32 (FedOTP: 0.9).
    pub momentum: f32,
    /// L2 weight decay, finite, >= 0, 0 or a normal f32 (FedOTP: 5e-4).
    pub weight_decay: f32,
    /// Images per training step and per prediction pass, >= 1 (FedOTP: 32).
    pub batch_size: u32,
    /// 1: training images are augmented as in FedOTP (random resized crop of scale 0.08-1,
    /// bicubic, horizontal flip); 0: resized and centre-cropped only, as for prediction.
    pub augment: u32,
    /// Seeds the prompts' initialisation, the order of training images and the augmentation:
    /// the same seed and inputs give the same results.
    pub seed: u64,
    /// NULL: both prompts start from a normal draw of standard deviation 0.02 from `seed`.
    /// Else NUL-terminated UTF-8 words that every prompt starts from, as CoOp's `ctx_init`
    /// (e.g. "a photo of a"): the token embeddings of the words' tokens (`_` read as a space),
    /// one context vector per token, so `n_ctx` must equal the words' token count. Read during
    /// `fedotp_client_new` only.
    pub ctx_init: *const c_char,
    /// NUL-terminated device name: "cpu"; "cuda" (device 0) or "cuda:N", an NVIDIA GPU; or
    /// "auto", CUDA device 0 when it can be used, else the CPU. See `fedotp_device_available`.
    /// The first client on a GPU uploads the model there (once per model and GPU); clients on
    /// one GPU take turns computing. Read during `fedotp_client_new` only.
    pub device: *const c_char,
}

/// Fills `config_out` with FedOTP's settings: n_ctx 16; OT eps 0.1, gamma 0.8, max_iter 100,
/// tol 1e-3, unbalanced, stopping per problem; SGD learning rate 0.001, momentum 0.9, weight
/// decay 5e-4; batch 32; augmentation on; seed 0; random context (`ctx_init` NULL); device
/// "cpu" (a static string).
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
            ot_stopping: FEDOTP_OT_STOPPING_PER_PROBLEM,
            learning_rate: 0.001,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch_size: 32,
            augment: 1,
            seed: 0,
            ctx_init: std::ptr::null(),
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
    // As a run configuration's optimizer: a subnormal value is refused, not used — its
    // products underflow to zero or lose their precision (`fedotp_host::config`).
    let zero_or_normal = |v: f32| v == 0.0 || v.is_normal();
    if !(lr.is_normal() && lr > 0.0) {
        return Err(invalid_config(format!(
            "`learning_rate` must be > 0 and a normal f32 (not subnormal, finite), got {lr}"
        )));
    }
    if !(zero_or_normal(momentum) && (0.0..1.0).contains(&momentum)) {
        return Err(invalid_config(format!(
            "`momentum` must lie in [0, 1) and be 0 or a normal f32, got {momentum}"
        )));
    }
    if !(zero_or_normal(weight_decay) && weight_decay >= 0.0 && weight_decay.is_finite()) {
        return Err(invalid_config(format!(
            "`weight_decay` must be >= 0, finite and 0 or a normal f32, got {weight_decay}"
        )));
    }
    Ok(Sgd {
        lr,
        momentum,
        weight_decay,
    })
}

/// The OT head's stopping rule of `config`, checked.
fn ot_stopping(config: &FedotpClientConfig) -> Result<OtStopping, Failure> {
    match config.ot_stopping {
        FEDOTP_OT_STOPPING_PER_PROBLEM => Ok(OtStopping::PerProblem),
        FEDOTP_OT_STOPPING_RELEASED => Ok(OtStopping::Released),
        other => Err(invalid_config(format!(
            "`config->ot_stopping` must be FEDOTP_OT_STOPPING_PER_PROBLEM (0) or \
             FEDOTP_OT_STOPPING_RELEASED (1), got {other}"
        ))),
    }
}

/// How `config` starts the prompts, checked against `tokenizer` here so that the refusal names
/// the C fields (the trainer would check the count too, in a run configuration's terms).
///
/// # Safety
/// A non-NULL `config.ctx_init` must point to a NUL-terminated string.
unsafe fn context_init(
    config: &FedotpClientConfig,
    tokenizer: &TextTokenizer,
) -> Result<ContextInit, Failure> {
    if config.ctx_init.is_null() {
        return Ok(ContextInit::Normal { std: 0.02 });
    }
    // SAFETY: the caller passes a NUL-terminated string (non-NULL, checked above).
    let words = unsafe { string(config.ctx_init, "config->ctx_init") }?;
    let tokens = tokenizer.encode(&prompt_name(words)).len();
    if tokens == 0 {
        return Err(invalid_config(format!(
            "`config->ctx_init` ({words:?}) has no tokens: give words, or NULL for a random \
             context"
        )));
    }
    if tokens != config.n_ctx as usize {
        return Err(invalid_config(format!(
            "`config->ctx_init` ({words:?}) is {tokens} tokens, one context vector each, but \
             `config->n_ctx` is {}: set it to {tokens}",
            config.n_ctx
        )));
    }
    Ok(ContextInit::Words(words.to_owned()))
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
            // Blank as the prompt reads it: "_" and "\t" are as empty as "   ".
            if prompt_name(name).trim().is_empty() {
                return Err(Failure::new(
                    FEDOTP_ERR_INVALID_CLASS_NAME,
                    format!("`{what}` ({name:?}) is blank once `_` is read as a space"),
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
/// Both prompts start from a normal draw of standard deviation 0.02 from `config->seed`, or
/// as the token embeddings of `config->ctx_init`'s words.
/// Clients of one federation that start from the same global prompt, as FedOTP's do, install
/// the server's first global-prompt message before training.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`model`, `class_names` or one of its
/// entries, `config`, `config->device`, `client_out`); `FEDOTP_ERR_INVALID_HANDLE`;
/// `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_EMPTY_DIMENSION` (`num_classes`, `n_ctx` or
/// `batch_size` is 0); `FEDOTP_ERR_SIZE_OVERFLOW` (`num_classes`); `FEDOTP_ERR_INVALID_UTF8`
/// (a class name, `config->ctx_init` or `config->device`);
/// `FEDOTP_ERR_INVALID_CLASS_NAME` (blank once `_` is read as a space — `"   "`, `"_"`,
/// `"\t"` — or holding no token for the tokenizer, or too long to fit the context with
/// `n_ctx`; the detail names the index);
/// `FEDOTP_ERR_TOO_LARGE` (`n_ctx` leaves no room for a class name); the OT parameters'
/// `FEDOTP_ERR_INVALID_EPS` / `_GAMMA` / `_MAX_ITER` / `_TOL` / `_BALANCED`;
/// `FEDOTP_ERR_INVALID_CONFIG` (learning rate, momentum, weight decay, augment or
/// `ot_stopping` out of range; `ctx_init` with no tokens, or not `n_ctx` of them);
/// `FEDOTP_ERR_UNSUPPORTED_DEVICE` (not a device name, or a GPU that cannot be used: the
/// detail says why — a missing driver or library, no such device, no room for the model);
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
        let device: Device = unsafe { string(config.device, "config->device") }?.parse()?;
        let sgd = optimizer(&config)?;
        let ot = config.ot.to_core()?;
        let stopping = ot_stopping(&config)?;
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
        let width = model.config().text.width();
        let context_length = model.config().text.context_length();
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
        // SAFETY: the config's `ctx_init` is a NUL-terminated string or NULL.
        let init = unsafe { context_init(&config, model.tokenizer()) }?;
        require(client_out, "client_out")?;
        let setup = PromptSetup {
            n_ctx,
            sets: PROMPTS,
            shared_sets: 1,
            init,
            head: HeadChoice::Ot {
                params: ot,
                stopping,
            },
            sgd,
            proximal_mu: None,
        };
        let engine = engine::open(&model, device, &class_names, setup)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let context = engine.init_context(&mut rng);
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
