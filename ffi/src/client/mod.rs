//! A federated client behind an opaque handle: a hospital's personal prompts on a shared CLIP.
//!
//! A client holds FedOTP's two prompts per class — row 0 the **global** prompt (shared with
//! the federation through messages), row 1 the **local** prompt (never leaves it) — with its
//! own SGD state and random generator. Training, prediction and the OT head are
//! `fedotp_host::train::PromptTrainer`'s; these modules check what C passes and move state in
//! and out of the handle. They follow a client's life: created from its settings
//! ([`create`]), on its device ([`engine`], [`info`]), trained ([`train`]), exchanging prompts
//! with the server ([`exchange`]), predicting ([`predict`]), saved and restored ([`state`]),
//! freed ([`handle`]).

// The modules in a client's life order, which is also their functions' order in the header:
// cbindgen writes functions in the order it reads them (kept apart so rustfmt keeps the order).
mod create;

mod engine;

mod info;

mod train;

mod exchange;

mod predict;

mod state;

mod handle;

#[cfg(test)]
mod tests;

use fedotp_core::protocol::PromptShape;
use fedotp_host::data::Dataset;
use fedotp_host::fed::SgdState;
use rand_chacha::ChaCha8Rng;

pub use create::{
    fedotp_client_config_default, fedotp_client_new, FedotpClientConfig,
    FEDOTP_OT_STOPPING_PER_PROBLEM, FEDOTP_OT_STOPPING_RELEASED,
};
pub use exchange::{
    fedotp_client_global_prompt, fedotp_client_read_global, fedotp_client_update_message_size,
    fedotp_client_write_update,
};
pub use handle::{fedotp_client_free, FedotpClient};
pub use info::{
    fedotp_client_device, fedotp_client_prompt_shape, FEDOTP_DEVICE_CPU, FEDOTP_DEVICE_CUDA,
};
pub use predict::fedotp_client_predict;
pub use state::{fedotp_client_load, fedotp_client_save};
pub use train::{fedotp_client_train, FedotpProgressFn, FedotpTrainReport};

use crate::images::{ImageSet, Tokens};
use crate::status::Failure;
use engine::Engine;

/// What a `FedotpClient` handle names.
pub(crate) struct Client {
    /// The trainer on the client's device.
    engine: Box<dyn Engine>,
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
