//! How a run trains: the federation's schedule, the prompts, the optimal transport and the
//! optimiser. Every default is the paper's (docs/ALGORITHM.md §3–§4).

use std::fmt;

use fedotp_core::ot::{OtError, OtMode, OtParams};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigError;
use crate::clip::classnames::prompt_name;
use crate::clip::tokenizer::Tokenizer;
use crate::fed::Sgd;
use crate::prompt::OtStopping;

/// The federated schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Communication rounds.
    pub rounds: u32,
    /// Fraction of clients sampled in every round after round 0 (which trains all):
    /// `max(floor(frac · K), 1)` clients, in `(0, 1]`.
    pub frac: f64,
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Training batch size.
    pub batch_size: BatchSize,
    /// Evaluation batch size (memory only; results do not depend on it).
    pub eval_batch_size: usize,
    /// Evaluate every `eval_interval` rounds from `eval_start`, and always after the last round.
    pub eval_interval: u32,
    /// First round evaluated (the reference evaluates its 100-client runs from round 140 only).
    pub eval_start: u32,
    /// Seed of everything random: partition, prompt initialisation, client sampling, batches and
    /// augmentation.
    pub seed: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            rounds: 10,
            frac: 1.0,
            local_epochs: 1,
            batch_size: BatchSize::Fixed(32),
            eval_batch_size: 100,
            eval_interval: 1,
            eval_start: 0,
            seed: 1,
        }
    }
}

impl FederationConfig {
    /// Whether the clients are evaluated after `round` (0-based).
    ///
    /// ```
    /// use fedotp_host::config::FederationConfig;
    /// let federation = FederationConfig { rounds: 10, eval_interval: 4, eval_start: 1, ..Default::default() };
    /// let evaluated: Vec<u32> = (0..10).filter(|&r| federation.evaluates(r)).collect();
    /// assert_eq!(evaluated, [1, 5, 9]);
    /// ```
    pub fn evaluates(&self, round: u32) -> bool {
        let last = round + 1 == self.rounds;
        let scheduled = round >= self.eval_start
            && (round - self.eval_start).is_multiple_of(self.eval_interval.max(1));
        last || scheduled
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("federation.rounds", u64::from(self.rounds)),
            ("federation.local_epochs", u64::from(self.local_epochs)),
            ("federation.eval_interval", u64::from(self.eval_interval)),
            ("federation.eval_batch_size", self.eval_batch_size as u64),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::invalid(*field, "must be positive"));
        }
        if !(self.frac > 0.0 && self.frac <= 1.0) {
            return Err(ConfigError::invalid(
                "federation.frac",
                format!("must be in (0, 1], got {}", self.frac),
            ));
        }
        if self.batch_size == BatchSize::Fixed(0) {
            return Err(ConfigError::invalid(
                "federation.batch_size",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// The training batch size: a number, or `"shots"` for the few-shot settings' batch = shots.
///
/// ```
/// use fedotp_host::config::BatchSize;
/// #[derive(serde::Deserialize)]
/// struct T { batch_size: BatchSize }
/// let t: T = toml::from_str(r#"batch_size = "shots""#).unwrap();
/// assert_eq!(t.batch_size, BatchSize::Shots);
/// let t: T = toml::from_str("batch_size = 32").unwrap();
/// assert_eq!(t.batch_size, BatchSize::Fixed(32));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    /// This many images per batch.
    Fixed(usize),
    /// As many images as the few-shot setting's shots per class.
    Shots,
}

impl Serialize for BatchSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Fixed(n) => serializer.serialize_u64(*n as u64),
            BatchSize::Shots => serializer.serialize_str("shots"),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = BatchSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer or \"shots\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<BatchSize, E> {
                usize::try_from(v).map(BatchSize::Fixed).map_err(|_| {
                    E::invalid_value(serde::de::Unexpected::Signed(v), &"a positive integer")
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<BatchSize, E> {
                usize::try_from(v).map(BatchSize::Fixed).map_err(|_| {
                    E::invalid_value(serde::de::Unexpected::Unsigned(v), &"a positive integer")
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BatchSize, E> {
                if v == "shots" {
                    Ok(BatchSize::Shots)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The learnable prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptConfig {
    /// Context tokens per prompt.
    pub n_ctx: usize,
    /// Prompts per client, N (unset: 2 for FedOTP, 1 for the baselines; 1 with FedOTP is the
    /// one-prompt ablation).
    pub n_prompts: Option<usize>,
    /// Standard deviation of the normal initialisation of the context.
    pub init_std: f64,
    /// Words to start every prompt's context from instead of a normal draw (CoOp's `ctx_init`,
    /// e.g. `"a photo of a"`): the token embeddings of their tokens, one context vector per
    /// token, so `n_ctx` must equal their token count; `_` reads as a space, as in CoOp
    /// (docs/ALGORITHM.md, "Context from words"). Written into the resolved configuration only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx_init: Option<String>,
    /// Each client's local prompt at round 0: its own draw (`"own"`, the default) or one draw
    /// common to every client (`"common"`, as the released code starts them;
    /// docs/ALGORITHM.md §7.4). Methods without a local prompt have nothing to draw. Written
    /// into the resolved configuration only when it is not the default, so that the
    /// configurations, and the run directories, of versions before it keep their hash.
    #[serde(skip_serializing_if = "LocalInit::is_own")]
    pub local_init: LocalInit,
}

/// How the clients' local prompts start ([`PromptConfig::local_init`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalInit {
    /// Each client its own draw, on a stream of the seed reserved for it.
    #[default]
    Own,
    /// Every client client 0's draw: all local prompts start identical.
    Common,
}

impl LocalInit {
    fn is_own(&self) -> bool {
        *self == LocalInit::Own
    }
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            n_ctx: 16,
            n_prompts: None,
            init_std: 0.02,
            ctx_init: None,
            local_init: LocalInit::Own,
        }
    }
}

impl PromptConfig {
    /// Checks the prompt settings; with the model's `context_length` (known for the tiny model,
    /// whose tokenizer is CLIP's), also that the prompts fit and that `ctx_init` has `n_ctx`
    /// tokens — for weights from files the trainer checks both once the model is loaded.
    fn validate(&self, context_length: Option<usize>) -> Result<(), ConfigError> {
        if self.n_ctx == 0 {
            return Err(ConfigError::invalid("prompt.n_ctx", "must be positive"));
        }
        // SOT, the context, at least "name" and ".", EOT.
        let longest = context_length.map(|length| (length, length.saturating_sub(4)));
        if let Some((context_length, longest)) = longest.filter(|&(_, l)| self.n_ctx > l) {
            return Err(ConfigError::invalid(
                "prompt.n_ctx",
                format!(
                    "must be in 1..={longest} (a context of {context_length} tokens also holds the start, class name, period and end tokens), got {}",
                    self.n_ctx
                ),
            ));
        }
        if self.n_prompts == Some(0) {
            return Err(ConfigError::invalid("prompt.n_prompts", "must be positive"));
        }
        as_f32("prompt.init_std", self.init_std, F32Range::Positive)?;
        if let Some(words) = self.ctx_init.as_ref().filter(|_| context_length.is_some()) {
            let tokens = context_words_tokens(words)?;
            if tokens != self.n_ctx {
                return Err(ConfigError::invalid(
                    "prompt.ctx_init",
                    format!(
                        "{words:?} is {tokens} tokens, one context vector each, but prompt.n_ctx is {}: set prompt.n_ctx = {tokens}",
                        self.n_ctx
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Tokens of `prompt.ctx_init`, as CLIP's tokenizer reads the words.
fn context_words_tokens(words: &str) -> Result<usize, ConfigError> {
    let tokenizer = Tokenizer::openai()
        .map_err(|e| ConfigError::invalid("prompt.ctx_init", format!("tokenizer: {e}")))?;
    match tokenizer.encode(&prompt_name(words)).len() {
        0 => Err(ConfigError::invalid(
            "prompt.ctx_init",
            format!("{words:?} has no tokens: give words, or leave it out for a random context"),
        )),
        tokens => Ok(tokens),
    }
}

/// The optimal-transport head (FedOTP only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtConfig {
    /// Entropic regularisation ε (0.1; the few-shot settings use 0.01).
    pub eps: f64,
    /// Mass moved by the unbalanced solver, in (0, 1].
    pub gamma: f64,
    /// Most scaling iterations.
    pub max_iter: u32,
    /// Stopping tolerance on the mean change of the prompt-side scaling.
    pub tol: f64,
    /// Balanced Sinkhorn (the ablation) instead of the unbalanced solver.
    pub balanced: bool,
    /// When a problem stops: on its own relative change (`"per_problem"`, the default), or as
    /// the released code stops a whole batch (`"released"`: mean absolute change over the
    /// batch, unshifted kernel, scalings from 1; docs/ALGORITHM.md §7.2). Written into the
    /// resolved configuration only when not the default.
    #[serde(skip_serializing_if = "OtStopping::is_per_problem")]
    pub stopping: OtStopping,
}

impl Default for OtConfig {
    fn default() -> Self {
        let p = OtParams::FEDOTP;
        OtConfig {
            eps: f64::from(p.eps),
            gamma: f64::from(p.gamma),
            max_iter: p.max_iter,
            tol: f64::from(p.tol),
            balanced: p.mode == OtMode::Balanced,
            stopping: OtStopping::PerProblem,
        }
    }
}

impl OtConfig {
    /// The core solver's parameters (in `f32`, the precision the head computes in).
    pub fn params(&self) -> OtParams {
        OtParams {
            eps: self.eps as f32,
            gamma: self.gamma as f32,
            max_iter: self.max_iter,
            tol: self.tol as f32,
            mode: if self.balanced {
                OtMode::Balanced
            } else {
                OtMode::Unbalanced
            },
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // Overflow and underflow in the conversion first, then the solver's own rules (a normal
        // eps and gamma, gamma ≤ 1, eps resolved against cosines), so the key and the reason
        // are named either way.
        as_f32("ot.eps", self.eps, F32Range::Positive)?;
        as_f32("ot.gamma", self.gamma, F32Range::Positive)?;
        as_f32("ot.tol", self.tol, F32Range::NonNegative)?;
        self.params().validate_for_cosines().map_err(|error| {
            let field = match error {
                OtError::InvalidEps(_) | OtError::EpsBelowResolution { .. } => "ot.eps",
                OtError::InvalidGamma(_) => "ot.gamma",
                OtError::InvalidMaxIter => "ot.max_iter",
                OtError::InvalidTol(_) => "ot.tol",
                _ => "ot",
            };
            ConfigError::invalid(field, format!("is invalid: {error}"))
        })
    }
}

/// SGD's hyper-parameters (PyTorch's `torch.optim.SGD`, no dampening, no Nesterov).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Learning rate (constant).
    pub lr: f64,
    /// Momentum, in [0, 1).
    pub momentum: f64,
    /// L2 weight decay, `≥ 0`.
    pub weight_decay: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            lr: 0.001,
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
}

impl OptimizerConfig {
    /// The optimiser (in `f32`, as the prompts are).
    pub fn sgd(&self) -> Sgd {
        Sgd {
            lr: self.lr as f32,
            momentum: self.momentum as f32,
            weight_decay: self.weight_decay as f32,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        as_f32("optimizer.lr", self.lr, F32Range::Positive)?;
        // Checked as the `f32` it becomes: 0.999999999 rounds to 1.0 there.
        let momentum = as_f32("optimizer.momentum", self.momentum, F32Range::NonNegative)?;
        if momentum >= 1.0 {
            return Err(ConfigError::invalid(
                "optimizer.momentum",
                format!("must be in [0, 1) as an f32, got {}", self.momentum),
            ));
        }
        as_f32(
            "optimizer.weight_decay",
            self.weight_decay,
            F32Range::NonNegative,
        )?;
        Ok(())
    }
}

/// Which `f32` values a key accepts, beyond being finite.
#[derive(Clone, Copy)]
pub(super) enum F32Range {
    /// `> 0` and normal: a subnormal divisor or standard deviation overflows or loses its
    /// precision in the computation that uses it.
    Positive,
    /// `≥ 0`; zero is allowed, other values must be normal.
    NonNegative,
}

/// `value` (read as `f64` from TOML) as the `f32` the training computes with, refused naming
/// `field` when the conversion overflows to infinity or underflows to zero or a subnormal.
pub(super) fn as_f32(field: &str, value: f64, range: F32Range) -> Result<f32, ConfigError> {
    let single = value as f32;
    let accepted = match range {
        F32Range::Positive => single.is_normal() && single > 0.0,
        F32Range::NonNegative => {
            single == 0.0 && value == 0.0 || single.is_normal() && single > 0.0
        }
    };
    if accepted {
        return Ok(single);
    }
    let wanted = match range {
        F32Range::Positive => "> 0",
        F32Range::NonNegative => "0 or > 0",
    };
    Err(ConfigError::invalid(
        field,
        format!(
            "must be {wanted} and representable as a normal f32 (finite, from {:e} to {:e}), got {value:e}",
            f32::MIN_POSITIVE,
            f32::MAX
        ),
    ))
}

/// Validation of the training sections, called by [`super::RunConfig::validate`].
pub(super) fn validate(
    federation: &FederationConfig,
    prompt: &PromptConfig,
    ot: &OtConfig,
    optimizer: &OptimizerConfig,
    context_length: Option<usize>,
) -> Result<(), ConfigError> {
    federation.validate()?;
    prompt.validate(context_length)?;
    ot.validate()?;
    optimizer.validate()
}
