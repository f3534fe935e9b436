//! One client's prompt learning: local epochs of SGD on its context vectors, evaluation and
//! prediction with its personal prompts.
//!
//! A client's context is `sets × n_ctx × width` floats, set-major. The first `shared_sets` sets
//! are the global prompt the server averages (FedOTP: set 0), the rest stay on the client.

use std::ops::ControlFlow;

use fedotp_core::ot::OtParams;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::features::FeatureKind;
use super::{FrozenClip, SplitFeatures, TrainError};
use crate::backend::{Backend, BackendError};
use crate::clip::classnames::{classnames, prompt_name};
use crate::clip::ClipError;
use crate::config::{Aggregation, Method, RunConfig};
use crate::data::Dataset;
use crate::fed::{
    accuracy, add_proximal_gradient, macro_f1, proximal_term, F1Classes, Sgd, SgdState,
};
use crate::prompt::{context_from_words, Head, OtStopping, PromptLearner, PromptModel, Workspace};
use crate::run::{EvalStats, TrainStats};

/// The head a client's prompts are read through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadChoice {
    /// FedOTP's optimal-transport head over the image patches.
    Ot {
        /// The solver's parameters.
        params: OtParams,
        /// When its iterations stop.
        stopping: OtStopping,
    },
    /// CLIP's cosine head over the pooled image embedding.
    Cosine,
}

/// How a client's context starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextInit {
    /// Every value drawn from a normal distribution of this standard deviation (CoOp's generic
    /// context, 0.02).
    Normal {
        /// The standard deviation.
        std: f32,
    },
    /// Every set from the token embeddings of these words (CoOp's `ctx_init`, e.g. `"a photo of
    /// a"`; [`context_from_words`]): one context vector per token, so `n_ctx` must equal the
    /// words' token count.
    Words(String),
}

impl ContextInit {
    /// The initialisation `config.prompt` asks for.
    pub fn of(config: &RunConfig) -> ContextInit {
        match &config.prompt.ctx_init {
            Some(words) => ContextInit::Words(words.clone()),
            None => ContextInit::Normal {
                std: config.prompt.init_std as f32,
            },
        }
    }
}

/// How a client's prompts are shaped, initialised and trained.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSetup {
    /// Context vectors per prompt.
    pub n_ctx: usize,
    /// Prompts (context sets) per class, N.
    pub sets: usize,
    /// Leading sets the server averages (0: nothing is shared).
    pub shared_sets: usize,
    /// How every context starts.
    pub init: ContextInit,
    /// The head.
    pub head: HeadChoice,
    /// The optimiser.
    pub sgd: Sgd,
    /// FedProx's `mu`: the proximal term pulls the shared sets towards the round's global prompt.
    pub proximal_mu: Option<f32>,
}

impl PromptSetup {
    /// The setup of `config`'s method; `None` for zero-shot CLIP, which learns nothing.
    pub fn of(config: &RunConfig) -> Option<PromptSetup> {
        let sets = config.n_prompts();
        let (shared_sets, head, proximal_mu) = match &config.method {
            Method::ZeroShot { .. } => return None,
            Method::FedOtp { aggregate } => {
                let shared = match aggregate {
                    Aggregation::First => 1.min(sets),
                    Aggregation::All => sets,
                    Aggregation::None => 0,
                };
                let head = HeadChoice::Ot {
                    params: config.ot.params(),
                    stopping: config.ot.stopping,
                };
                (shared, head, None)
            }
            Method::CoopLocal => (0, HeadChoice::Cosine, None),
            Method::PromptFl => (sets, HeadChoice::Cosine, None),
            Method::FedProx { mu } => (sets, HeadChoice::Cosine, Some(*mu as f32)),
        };
        Some(PromptSetup {
            n_ctx: config.prompt.n_ctx,
            sets,
            shared_sets,
            init: ContextInit::of(config),
            head,
            sgd: config.optimizer.sgd(),
            proximal_mu,
        })
    }
}

/// Local training's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSchedule {
    /// Passes over the client's training samples.
    pub epochs: u32,
    /// Samples per step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
}

/// A client's predictions on a set of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Accuracy and macro-F1.
    pub stats: EvalStats,
    /// The predicted class of each sample.
    pub predictions: Vec<usize>,
}

/// The class names prompts are written with: the curated list shipped for a known dataset
/// (CoOp's names), else the dataset's own.
pub fn prompt_class_names(dataset: &Dataset) -> Vec<String> {
    match classnames(&dataset.name) {
        Some(curated) if curated.len() == dataset.num_classes() => {
            curated.iter().map(|name| name.to_string()).collect()
        }
        _ => dataset.class_names.clone(),
    }
}

/// A prompt model with its workspace and optimiser: trains and evaluates any client's context
/// (clients differ only in their context and optimiser state).
pub struct PromptTrainer<B: Backend> {
    model: PromptModel,
    workspace: Workspace<B::Buf>,
    setup: Option<PromptSetup>,
    /// One set's starting values when the setup starts from words.
    word_set: Option<Vec<f32>>,
    width: usize,
}

impl<B: Backend> PromptTrainer<B> {
    /// A trainer of prompts `[SOT] ctx {class}. [EOT]` for `class_names`, as `setup` says.
    pub fn new(
        clip: &FrozenClip<B>,
        class_names: &[String],
        setup: PromptSetup,
    ) -> Result<Self, TrainError> {
        if setup.sets == 0 || setup.shared_sets > setup.sets {
            return Err(TrainError::Invalid(format!(
                "{} shared prompts of {} per class",
                setup.shared_sets, setup.sets
            )));
        }
        let text = &clip.weights().text;
        // The start token, the context, at least a name and its period, the end token.
        let longest = text.context_length().saturating_sub(4);
        if setup.n_ctx > longest {
            return Err(TrainError::Invalid(format!(
                "prompt.n_ctx is {}, but the model's context of {} tokens holds at most {longest} \
                 context vectors besides the start, class name, period and end tokens",
                setup.n_ctx,
                text.context_length()
            )));
        }
        let learner =
            PromptLearner::new(clip.tokenizer(), class_names, setup.n_ctx, setup.sets, text)?;
        let head = match setup.head {
            HeadChoice::Ot { params, stopping } => {
                params
                    .validate_for_cosines()
                    .map_err(TrainError::OtParams)?;
                Head::Ot {
                    params,
                    stopping,
                    patches: clip.patches(),
                }
            }
            HeadChoice::Cosine => Head::Cosine,
        };
        let mut trainer = Self::with_model(clip, learner, head, None)?;
        if let ContextInit::Words(words) = &setup.init {
            let text = &clip.weights().text;
            let set = context_from_words(clip.backend(), clip.tokenizer(), text, words)?;
            if set.len() != trainer.set_len() {
                return Err(TrainError::Invalid(format!(
                    "prompt.ctx_init {words:?} is {} tokens, one context vector each, but n_ctx is {}",
                    set.len() / trainer.width,
                    setup.n_ctx
                )));
            }
            trainer.word_set = Some(set);
        }
        trainer.setup = Some(setup);
        Ok(trainer)
    }

    /// Zero-shot CLIP: the hand-written prompt `template` (`{}` is the class name) through the
    /// cosine head; nothing to train, the context is empty.
    pub fn zero_shot(
        clip: &FrozenClip<B>,
        class_names: &[String],
        template: &str,
    ) -> Result<Self, TrainError> {
        let tokens: Vec<Vec<u32>> = class_names
            .iter()
            .map(|name| {
                clip.tokenizer()
                    .encode(&template.replace("{}", &prompt_name(name)))
            })
            .collect();
        let special = clip.tokenizer().special_tokens();
        let learner = PromptLearner::from_tokens(&tokens, 0, 1, &clip.weights().text, special)?;
        Self::with_model(clip, learner, Head::Cosine, None)
    }

    fn with_model(
        clip: &FrozenClip<B>,
        learner: PromptLearner,
        head: Head,
        setup: Option<PromptSetup>,
    ) -> Result<Self, TrainError> {
        let model = PromptModel {
            learner,
            head,
            scale: clip.logit_scale(),
        };
        let workspace = model.workspace(clip.backend())?;
        Ok(PromptTrainer {
            model,
            workspace,
            setup,
            word_set: None,
            width: clip.weights().text.width(),
        })
    }

    /// Another trainer of the same prompts with a workspace of its own, to train another client
    /// at the same time.
    pub fn fork(&self, clip: &FrozenClip<B>) -> Result<Self, TrainError> {
        Ok(PromptTrainer {
            model: self.model.clone(),
            workspace: self.model.workspace(clip.backend())?,
            setup: self.setup.clone(),
            word_set: self.word_set.clone(),
            width: self.width,
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.model.learner.classes()
    }

    /// Prompts the text tower runs per step (`classes × sets`) and tokens in each.
    pub fn text_batch(&self) -> (usize, usize) {
        let learner = &self.model.learner;
        (
            learner.classes() * learner.n_sets(),
            learner.tokens_per_prompt(),
        )
    }

    /// Which image features the head reads.
    pub fn feature_kind(&self) -> FeatureKind {
        FeatureKind::of(&self.model.head)
    }

    /// Floats of one client's whole context.
    pub fn context_len(&self) -> usize {
        self.model.learner.context_len()
    }

    /// Context vectors per prompt.
    pub fn n_ctx(&self) -> usize {
        self.model.learner.n_ctx()
    }

    /// Floats of one context set, `n_ctx × width`.
    pub fn set_len(&self) -> usize {
        self.model.learner.n_ctx() * self.width
    }

    /// Floats of the shared (global) part of a context.
    pub fn global_len(&self) -> usize {
        self.setup.as_ref().map_or(0, |s| s.shared_sets) * self.set_len()
    }

    /// Text-tower width: the length of one context vector.
    pub fn width(&self) -> usize {
        self.width
    }

    /// `len` context values (whole sets) as the setup starts them: drawn from its normal
    /// distribution with `rng`, or every set the words' embeddings (drawing nothing).
    pub fn init_context<R: Rng + ?Sized>(&self, len: usize, rng: &mut R) -> Vec<f32> {
        if let Some(set) = &self.word_set {
            return set.iter().copied().cycle().take(len).collect();
        }
        let std = match self.setup.as_ref().map(|s| &s.init) {
            Some(ContextInit::Normal { std }) => *std,
            _ => 0.02,
        };
        let normal = Normal::new(0.0f32, std).expect("a validated, positive standard deviation");
        (0..len).map(|_| normal.sample(rng)).collect()
    }

    fn check_context(&self, ctx: &[f32]) -> Result<(), TrainError> {
        if ctx.len() != self.context_len() {
            return Err(TrainError::Invalid(format!(
                "a context of {} values, the prompts need {}",
                ctx.len(),
                self.context_len()
            )));
        }
        Ok(())
    }

    /// Trains `ctx` (and `optimizer`'s state) on `samples` of `data` for `schedule`, shuffling
    /// each epoch with `rng` (which also draws any augmentation). `anchor` is the round's global
    /// prompt for FedProx's proximal term. A batch whose loss, gradient or transport plan is not
    /// finite is skipped and counted. `progress(done, total)` follows the steps; returning
    /// `ControlFlow::Break` stops with [`TrainError::Cancelled`], the context as the last
    /// completed step left it.
    #[allow(clippy::too_many_arguments)] // each is one independent input of a local round
    pub fn train<R: Rng + ?Sized>(
        &mut self,
        clip: &FrozenClip<B>,
        ctx: &mut [f32],
        optimizer: &mut SgdState,
        anchor: Option<&[f32]>,
        data: &SplitFeatures<'_>,
        samples: &[usize],
        schedule: LocalSchedule,
        rng: &mut R,
        progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<TrainStats, TrainError> {
        let Some(setup) = self.setup.clone() else {
            return Err(TrainError::Invalid(
                "zero-shot CLIP has nothing to train".into(),
            ));
        };
        self.check_context(ctx)?;
        let shared = self.global_len();
        if let Some(anchor) = anchor {
            if anchor.len() != shared {
                return Err(TrainError::Invalid(format!(
                    "a proximal anchor of {} values for a global prompt of {shared}",
                    anchor.len()
                )));
            }
        }
        let batch_size = schedule.batch_size.max(1);
        let steps_per_epoch = samples.len().div_ceil(batch_size);
        let total = steps_per_epoch * schedule.epochs as usize;
        let mut order = samples.to_vec();
        let (mut loss_sum, mut finite_batches) = (0.0f64, 0u64);
        let (mut correct, mut seen, mut skipped) = (0usize, 0usize, 0u64);
        let mut done = 0;
        for _ in 0..schedule.epochs {
            order.shuffle(rng);
            for batch in order.chunks(batch_size) {
                let labels = data.labels(batch)?;
                let features = data.batch(clip, batch, rng)?;
                let (backend, model, workspace) =
                    (clip.backend(), &self.model, &mut self.workspace);
                let image = backend.upload_vec(features)?;
                let step = || {
                    let text = &clip.weights().text;
                    model.loss_and_gradient(backend, text, ctx, &image, &labels, workspace)
                };
                let outcome = match backend.run(step) {
                    Ok(outcome) => Some(outcome),
                    // The solver refuses non-finite similarities: a batch to skip, not a crash.
                    Err(ClipError::Backend(BackendError::Ot { .. })) => None,
                    Err(e) => return Err(e.into()),
                };
                let finite = outcome.filter(|o| {
                    o.loss.is_finite()
                        && o.d_ctx.iter().all(|g| g.is_finite())
                        && o.logits.iter().all(|l| l.is_finite())
                });
                match finite {
                    None => skipped += 1,
                    Some(mut outcome) => {
                        let mut loss = f64::from(outcome.loss);
                        if let (Some(mu), Some(anchor)) = (setup.proximal_mu, anchor) {
                            let (d_shared, p_shared) =
                                (&mut outcome.d_ctx[..shared], &ctx[..shared]);
                            loss += proximal_term(p_shared, anchor, mu);
                            add_proximal_gradient(d_shared, p_shared, anchor, mu);
                        }
                        setup
                            .sgd
                            .step(ctx, &outcome.d_ctx, optimizer)
                            .map_err(TrainError::Optimizer)?;
                        loss_sum += loss;
                        finite_batches += 1;
                        correct += argmax_rows(&outcome.logits, self.classes())
                            .zip(&labels)
                            .filter(|(p, &l)| *p == l as usize)
                            .count();
                        seen += labels.len();
                    }
                }
                done += 1;
                if progress(done, total).is_break() {
                    return Err(TrainError::Cancelled);
                }
            }
        }
        Ok(TrainStats {
            loss: (finite_batches > 0).then(|| loss_sum / finite_batches as f64),
            accuracy: (seen > 0).then(|| correct as f64 / seen as f64),
            skipped_batches: skipped,
        })
    }

    /// Class logits (`images × classes`) of unit-length image features (`images × rows × dim`,
    /// as [`PromptTrainer::feature_kind`] says) with the prompts of `ctx`.
    pub fn logits(
        &mut self,
        clip: &FrozenClip<B>,
        ctx: &[f32],
        features: &[f32],
        images: usize,
    ) -> Result<Vec<f32>, TrainError> {
        self.check_context(ctx)?;
        let (backend, model, workspace) = (clip.backend(), &self.model, &mut self.workspace);
        let image = backend.upload(features)?;
        let (logits, _) = backend.run(|| {
            model.prepare(backend, &clip.weights().text, ctx, workspace)?;
            model.logits(backend, &image, images, workspace)
        })?;
        Ok(logits)
    }

    /// Predictions, accuracy and macro-F1 of the prompts of `ctx` on `samples` of `data`, in
    /// batches of `batch` images (the results do not depend on it).
    pub fn evaluate(
        &mut self,
        clip: &FrozenClip<B>,
        ctx: &[f32],
        data: &SplitFeatures<'_>,
        samples: &[usize],
        batch: usize,
    ) -> Result<Evaluation, TrainError> {
        self.check_context(ctx)?;
        let (backend, model) = (clip.backend(), &self.model);
        let workspace = &mut self.workspace;
        backend.run(|| model.prepare(backend, &clip.weights().text, ctx, workspace))?;
        let mut predictions = Vec::with_capacity(samples.len());
        // Evaluation transforms draw nothing; the generator only fills the signature.
        let mut rng = rand_chacha::ChaCha8Rng::from_seed([0; 32]);
        for chunk in samples.chunks(batch.max(1)) {
            let features = data.batch(clip, chunk, &mut rng)?;
            let image = backend.upload_vec(features)?;
            let (model, workspace) = (&self.model, &mut self.workspace);
            let (logits, _) =
                backend.run(|| model.logits(backend, &image, chunk.len(), workspace))?;
            predictions.extend(argmax_rows(&logits, self.classes()));
        }
        let labels: Vec<usize> = data
            .labels(samples)?
            .into_iter()
            .map(|l| l as usize)
            .collect();
        let score = |classes| macro_f1(&labels, &predictions, classes);
        let stats = (|| {
            Ok::<_, crate::fed::MetricsError>(EvalStats {
                accuracy: accuracy(&labels, &predictions)?,
                macro_f1: score(F1Classes::Union)?,
                macro_f1_true_labels: score(F1Classes::TrueLabels)?,
            })
        })()
        .map_err(TrainError::Evaluation)?;
        Ok(Evaluation { stats, predictions })
    }
}

/// The index of the largest value of each row of `classes` values (the first on ties; a row
/// with NaN predicts its first NaN-free maximum, never panics).
pub fn argmax_rows(logits: &[f32], classes: usize) -> impl Iterator<Item = usize> + '_ {
    logits.chunks_exact(classes.max(1)).map(|row| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(best, max), (i, &v)| {
                if v > max {
                    (i, v)
                } else {
                    (best, max)
                }
            })
            .0
    })
}
