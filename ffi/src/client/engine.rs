//! A client's trainer on the device it computes on.
//!
//! The trainer is generic over the backend; a client holds it as an [`Engine`] whatever the
//! backend, made by [`open`] on the backend its device names — the one way every part of
//! fedotp runs generic code on a device
//! ([`SelectedBackend::run`](fedotp_host::backend::SelectedBackend::run)). Every call that computes
//! takes the backend's turn: clients on one GPU take turns, clients on the CPU compute in
//! parallel.

use std::ops::ControlFlow;
use std::sync::Arc;

use fedotp_host::backend::{Backend, Device, OnBackend};
use fedotp_host::clip::{ClipConfig, ClipError};
use fedotp_host::data::{Dataset, Split, Transform};
use fedotp_host::fed::SgdState;
use fedotp_host::run::TrainStats;
use fedotp_host::train::{
    CachePlace, FrozenClip, LocalSchedule, PromptSetup, PromptTrainer, SplitFeatures, TrainError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::predict::softmax_into;
use crate::images::Tokens;
use crate::model::Model;
use crate::status::{Failure, FEDOTP_ERR_INVALID_CLASS_NAME, FEDOTP_ERR_SHAPE_MISMATCH};

/// A client's trainer on its device, whatever the backend.
pub(super) trait Engine: Send {
    /// The device: `cpu` or `cuda:N`.
    fn device(&self) -> Device;

    /// The model's architecture.
    fn config(&self) -> &ClipConfig;

    /// Both prompts' first values, drawn from `rng`.
    fn init_context(&self, rng: &mut ChaCha8Rng) -> Vec<f32>;

    /// Trains `context` (both prompts) on every sample of `dataset`'s train split, from the
    /// set's precomputed `tokens` or the images transformed by `transform`.
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
    ) -> Result<TrainStats, Failure>;

    /// Class probabilities (`images × classes`, softmax of the OT head's logits) of the
    /// samples of `dataset` under `context`.
    fn probabilities(
        &mut self,
        dataset: &Dataset,
        tokens: Option<&Tokens>,
        context: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>, Failure>;
}

/// A trainer for `class_names` with `setup` on `device` of `model`: the CPU, a GPU, or for
/// "auto" GPU 0 when it can be opened, else the CPU. A device that cannot be used is
/// `FEDOTP_ERR_UNSUPPORTED_DEVICE` with the reason.
pub(super) fn open(
    model: &Model,
    device: Device,
    class_names: &[String],
    setup: PromptSetup,
) -> Result<Box<dyn Engine>, Failure> {
    let selected = device.open()?;
    let device = selected.device();
    selected.run(NewEngine {
        model,
        device,
        class_names,
        setup,
    })
}

/// [`open`]'s work on the chosen backend: the model's copy there and a trainer on it.
struct NewEngine<'a> {
    model: &'a Model,
    /// The device opened (never "auto").
    device: Device,
    class_names: &'a [String],
    setup: PromptSetup,
}

impl OnBackend for NewEngine<'_> {
    type Output = Result<Box<dyn Engine>, Failure>;

    fn run<B: Backend + 'static>(self, backend: B) -> Self::Output {
        let clip = self.model.on(self.device, backend)?;
        let engine = OnDevice::new(clip, self.device, self.class_names, self.setup)?;
        Ok(Box::new(engine))
    }
}

/// The model on a device and a trainer on it.
struct OnDevice<B: Backend> {
    /// The model's copy on the device, shared with the model's other clients there.
    clip: Arc<FrozenClip<B>>,
    /// The device, for `fedotp_client_device`.
    device: Device,
    trainer: PromptTrainer<B>,
}

impl<B: Backend> OnDevice<B> {
    fn new(
        clip: Arc<FrozenClip<B>>,
        device: Device,
        class_names: &[String],
        setup: PromptSetup,
    ) -> Result<Self, Failure> {
        let trainer = {
            let _turn = clip.backend().take_turn()?;
            PromptTrainer::new(&clip, class_names, setup)
        };
        let trainer = trainer.map_err(|error| match error {
            // What a valid configuration can still break at creation: a class name's tokens
            // that do not fit the context.
            TrainError::Clip(ClipError::InvalidInput(reason)) => {
                Failure::new(FEDOTP_ERR_INVALID_CLASS_NAME, reason)
            }
            other => other.into(),
        })?;
        Ok(OnDevice {
            clip,
            device,
            trainer,
        })
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
        let clip = &self.clip;
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
        let eval = clip.weights().config.eval_transform();
        let mut features = SplitFeatures::new(dataset, Split::Train, eval, kind);
        let place = CachePlace {
            memory_budget: u64::MAX,
            disk_dir: &std::env::temp_dir(),
            batch,
            kept: None,
        };
        features.fill_cache_from_tokens(clip, &tokens.values, place)?;
        Ok(features)
    }
}

impl<B: Backend + 'static> Engine for OnDevice<B> {
    fn device(&self) -> Device {
        self.device
    }

    fn config(&self) -> &ClipConfig {
        &self.clip.weights().config
    }

    fn init_context(&self, rng: &mut ChaCha8Rng) -> Vec<f32> {
        self.trainer.init_context(self.trainer.context_len(), rng)
    }

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
        let _turn = self.clip.backend().take_turn()?;
        let features = self.features(dataset, tokens, transform, schedule.batch_size)?;
        let samples: Vec<usize> = (0..dataset.train.len()).collect();
        Ok(self.trainer.train(
            &self.clip, context, optimizer, None, &features, &samples, schedule, rng, progress,
        )?)
    }

    fn probabilities(
        &mut self,
        dataset: &Dataset,
        tokens: Option<&Tokens>,
        context: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>, Failure> {
        let _turn = self.clip.backend().take_turn()?;
        let eval = self.clip.weights().config.eval_transform();
        let features = self.features(dataset, tokens, eval, batch)?;
        let classes = dataset.class_names.len();
        let mut probabilities = Vec::with_capacity(dataset.train.len() * classes);
        // The evaluation transform draws nothing; the generator only fills the signature.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let all: Vec<usize> = (0..dataset.train.len()).collect();
        for chunk in all.chunks(batch) {
            let clip = &self.clip;
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
