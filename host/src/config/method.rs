//! Which method a run trains: FedOTP (and its ablations) or one of its baselines.

use serde::{Deserialize, Serialize};

use super::training::{as_f32, F32Range};
use super::ConfigError;

/// The prompt template of zero-shot CLIP (CoOp's and the reference's).
pub const ZERO_SHOT_TEMPLATE: &str = "a photo of a {}.";

/// A training method.
///
/// FedOTP's ablations are FedOTP with another [`Aggregation`], with `ot.balanced = true`
/// (balanced OT) or with `prompt.n_prompts = 1` (one prompt).
///
/// ```
/// use fedotp_host::config::{Aggregation, Method};
/// let method: Method = toml::from_str(r#"kind = "fedprox"
/// mu = 0.01"#).unwrap();
/// assert_eq!(method, Method::FedProx { mu: 0.01 });
/// assert_eq!(method.label(), "FedProx (mu = 0.01)");
/// let ablation = Method::FedOtp { aggregate: Aggregation::All };
/// assert_eq!(ablation.default_prompts(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    /// FedOTP: `N` prompts per client aligned to the image patches by optimal transport; the
    /// server averages the prompts `aggregate` names.
    #[serde(rename = "fedotp")]
    FedOtp {
        /// Which prompts the server averages.
        #[serde(default)]
        aggregate: Aggregation,
    },
    /// Zero-shot CLIP: the hand-written prompt `template` ("{}" is the class name), no training.
    ZeroShot {
        /// The prompt template, with one `{}` for the class name.
        #[serde(default = "default_template")]
        template: String,
    },
    /// CoOp trained on each client alone: one prompt per client, never shared.
    CoopLocal,
    /// PromptFL: one prompt on CLIP's pooled image embedding, averaged by FedAvg.
    #[serde(rename = "promptfl")]
    PromptFl,
    /// FedProx: PromptFL plus the proximal term `mu/2 · ‖ctx − global‖²` in every local step.
    #[serde(rename = "fedprox")]
    FedProx {
        /// Weight of the proximal term, `≥ 0` (0 is PromptFL).
        mu: f64,
    },
}

/// Which prompts of a FedOTP client the server averages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// FedOTP: prompt 0 is global (averaged), the others stay on the client.
    #[default]
    First,
    /// Ablation "global only": every prompt is averaged.
    All,
    /// Ablation "local only": nothing leaves a client.
    None,
}

fn default_template() -> String {
    ZERO_SHOT_TEMPLATE.into()
}

impl Default for Method {
    fn default() -> Self {
        Method::FedOtp {
            aggregate: Aggregation::First,
        }
    }
}

impl Method {
    /// A short name for directory names: the `kind`, with FedOTP's aggregation ablations
    /// suffixed (`fedotp`, `fedotp_all_shared`, `promptfl`, ...).
    pub fn slug(&self) -> &'static str {
        match self {
            Method::FedOtp { aggregate } => match aggregate {
                Aggregation::First => "fedotp",
                Aggregation::All => "fedotp_all_shared",
                Aggregation::None => "fedotp_none_shared",
            },
            Method::ZeroShot { .. } => "zero_shot",
            Method::CoopLocal => "coop_local",
            Method::PromptFl => "promptfl",
            Method::FedProx { .. } => "fedprox",
        }
    }

    /// The method's name as the papers write it.
    pub fn label(&self) -> String {
        match self {
            Method::FedOtp { aggregate } => match aggregate {
                Aggregation::First => "FedOTP".into(),
                Aggregation::All => "FedOTP (all prompts shared)".into(),
                Aggregation::None => "FedOTP (no prompt shared)".into(),
            },
            Method::ZeroShot { .. } => "zero-shot CLIP".into(),
            Method::CoopLocal => "CoOp (local)".into(),
            Method::PromptFl => "PromptFL".into(),
            Method::FedProx { mu } => format!("FedProx (mu = {mu})"),
        }
    }

    /// Number of prompts per client when `prompt.n_prompts` is not set: 2 for FedOTP, 1 for the
    /// baselines.
    pub fn default_prompts(&self) -> usize {
        match self {
            Method::FedOtp { .. } => 2,
            _ => 1,
        }
    }

    /// Whether the method learns prompts at all (zero-shot CLIP does not).
    pub fn trains(&self) -> bool {
        !matches!(self, Method::ZeroShot { .. })
    }

    /// Whether the method uses the OT head (the others use CLIP's pooled image embedding).
    pub fn uses_ot(&self) -> bool {
        matches!(self, Method::FedOtp { .. })
    }

    /// Checks the method's own parameters and that `n_prompts` suits it; `field` is the key the
    /// method sits at (`method` or `compare[i]`).
    pub fn validate(&self, field: &str, n_prompts: Option<usize>) -> Result<(), ConfigError> {
        match self {
            Method::FedProx { mu } => {
                as_f32(&format!("{field}.mu"), *mu, F32Range::NonNegative)?;
            }
            Method::ZeroShot { template } if template.matches("{}").count() != 1 => {
                return Err(ConfigError::invalid(
                    format!("{field}.template"),
                    format!("must hold exactly one `{{}}` for the class name, got {template:?}"),
                ));
            }
            _ => {}
        }
        if !matches!(self, Method::FedOtp { .. }) && n_prompts.is_some_and(|n| n != 1) {
            return Err(ConfigError::invalid(
                "prompt.n_prompts",
                format!(
                    "must be 1 (or left out) for {}, which learns a single prompt",
                    self.label()
                ),
            ));
        }
        Ok(())
    }
}
