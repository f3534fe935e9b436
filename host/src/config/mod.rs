//! Run configurations: what `fedotp train` reads from a preset file and `--set` overrides.
//!
//! A [`RunConfig`] is one TOML document; every table refuses unknown keys, and every value is
//! checked ([`RunConfig::validate`]) with errors that name the dotted key:
//!
//! ```toml
//! name = "cifar10-dirichlet"          # the run directory's and the plots' name
//! device = "auto"                     # cpu | cuda | cuda:N | auto
//! method = { kind = "fedotp" }        # or fedprox (mu), promptfl, coop_local, zero_shot
//!
//! [model]                             # pretrained CLIP, or kind = "tiny" with its architecture
//! kind = "clip"
//! path = "weights/ViT-B-16"
//! backbone = "ViT-B/16"                # optional: a check of the weights' shape
//!
//! [dataset]
//! source = { kind = "cifar10", root = "data/cifar-10-batches-bin" }
//! partition = { kind = "dirichlet", clients = 100, beta = 0.5, min_size = 10 }
//!
//! [federation]                        # rounds, frac, local_epochs, batch_size, eval_*, seed
//! [prompt]                            # n_ctx, n_prompts, init_std, ctx_init, local_init
//! [ot]                                # eps, gamma, max_iter, tol, balanced, stopping
//! [optimizer]                         # lr, momentum, weight_decay
//! [cache]                             # enabled, memory_budget_mib, disk_dir
//! [output]                            # dir, checkpoint_interval, keep_checkpoints
//! ```
//!
//! Sections other than `model` and `dataset` may be left out: their defaults are the paper's
//! constants. Relative paths in a configuration are relative to the working directory.
//!
//! A file may start from another with `extends = "base.toml"` (a path relative to the file):
//! its tables are merged over the base's, and a table whose `kind` changes replaces the base's
//! whole; `--set` overrides follow the same rule (see [`Override`]). The resolved
//! configuration — file, base files and overrides merged, every default written out — is
//! [`RunConfig::to_toml`], saved in the run directory; its SHA-256 ([`RunConfig::hash`]) ties
//! checkpoints to it.
//!
//! ```
//! use fedotp_host::config::{Override, RunConfig};
//! let overrides: Vec<Override> = vec!["federation.rounds=3".parse().unwrap()];
//! let config = RunConfig::quickstart_with(&overrides).unwrap();
//! assert_eq!(config.federation.rounds, 3);
//! let error = RunConfig::quickstart_with(&["federation.round=3".parse().unwrap()]).unwrap_err();
//! assert!(error.to_string().contains("federation.round"));
//! ```

mod dataset;
mod error;
mod load;
mod method;
mod model;
mod system;
mod training;

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::backend::Device;
pub use dataset::{DatasetConfig, DatasetSource, FederatedData, Normalization, TransformConfig};
pub use error::ConfigError;
pub use load::Override;
pub use method::{Aggregation, Method, ZERO_SHOT_TEMPLATE};
pub use model::{Backbone, ModelConfig, TinyModelConfig, TinyTextConfig, TinyVisionConfig};
pub use system::{CacheConfig, OutputConfig};
pub use training::{
    BatchSize, FederationConfig, LocalInit, OptimizerConfig, OtConfig, PromptConfig,
};

/// The quickstart preset (`configs/quickstart.toml`), embedded so `fedotp train` runs anywhere.
pub const QUICKSTART_PRESET: &str = include_str!("../../../configs/quickstart.toml");

/// The name the embedded quickstart preset goes by in messages.
pub const QUICKSTART_NAME: &str = "configs/quickstart.toml (embedded)";

/// Everything one run needs. See the [module documentation](self) for the file format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the run: the run directory's name and the plots' label. Letters, digits, `.`, `_`
    /// and `-`.
    pub name: String,
    /// The compute device.
    #[serde(default)]
    pub device: Device,
    /// The method trained.
    #[serde(default)]
    pub method: Method,
    /// Methods to train afterwards with otherwise identical settings, each in its own run
    /// directory, for a comparison table (the quickstart compares FedOTP with PromptFL and
    /// CoOp).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<Method>,
    /// The frozen model.
    pub model: ModelConfig,
    /// The data and its partition.
    pub dataset: DatasetConfig,
    /// The federated schedule.
    #[serde(default)]
    pub federation: FederationConfig,
    /// The learnable prompts.
    #[serde(default)]
    pub prompt: PromptConfig,
    /// The optimal-transport head.
    #[serde(default)]
    pub ot: OtConfig,
    /// The optimiser.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// The image-feature cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Where runs are written.
    #[serde(default)]
    pub output: OutputConfig,
}

impl RunConfig {
    /// Reads `path` (following `extends`), applies `overrides` in order, and validates.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<RunConfig, ConfigError> {
        let table = load::read_file(path)?;
        Self::resolve(table, &path.display().to_string(), overrides)
    }

    /// Parses TOML `text` (`source_name` names it in errors; `extends` is not allowed, as there
    /// is no directory to resolve it against), applies `overrides` and validates.
    pub fn from_toml(
        text: &str,
        source_name: &str,
        overrides: &[Override],
    ) -> Result<RunConfig, ConfigError> {
        let table = load::parse(text, source_name)?;
        if table.contains_key("extends") {
            return Err(ConfigError::Extends {
                source_name: source_name.into(),
                reason: "only configuration files may extend another".into(),
            });
        }
        Self::resolve(table, source_name, overrides)
    }

    /// This configuration with its `[dataset]` table replaced by the one in TOML `text` (a
    /// document holding only that table): a federated node's description of its own data.
    /// `source_name` names the text in errors.
    ///
    /// ```
    /// use fedotp_host::config::RunConfig;
    /// let node = "[dataset]\nsource = { kind = \"federated_digits\", clients = 3, beta = 0.5, min_size = 10 }";
    /// let config = RunConfig::quickstart().with_dataset_from(node, "node.toml").unwrap();
    /// assert_eq!(config.dataset.clients(), Some(3));
    /// let wrong = RunConfig::quickstart().with_dataset_from("[optimizer]\nlr = 1.0", "node.toml");
    /// assert!(wrong.unwrap_err().to_string().contains("node.toml"));
    /// ```
    pub fn with_dataset_from(
        &self,
        text: &str,
        source_name: &str,
    ) -> Result<RunConfig, ConfigError> {
        let mut node = load::parse(text, source_name)?;
        let dataset = node.remove("dataset");
        if let Some(key) = node.keys().next() {
            return Err(ConfigError::invalid(
                key,
                "is not allowed here: a node's data file holds only a [dataset] table",
            )
            .with_source(source_name));
        }
        let dataset = dataset.ok_or_else(|| {
            ConfigError::invalid("dataset", "is missing").with_source(source_name)
        })?;
        let mut table = load::parse(&self.to_toml(), source_name)?;
        table.insert("dataset".into(), dataset);
        Self::resolve(table, source_name, &[])
    }

    /// The embedded quickstart preset.
    pub fn quickstart() -> RunConfig {
        Self::quickstart_with(&[]).expect("the embedded quickstart preset is valid")
    }

    /// The embedded quickstart preset with `overrides`.
    pub fn quickstart_with(overrides: &[Override]) -> Result<RunConfig, ConfigError> {
        Self::from_toml(QUICKSTART_PRESET, QUICKSTART_NAME, overrides)
    }

    fn resolve(
        mut table: toml::Table,
        source_name: &str,
        overrides: &[Override],
    ) -> Result<RunConfig, ConfigError> {
        for o in overrides {
            load::apply(&mut table, o)?;
        }
        let mut config = load::deserialize(table, source_name, overrides)?;
        config
            .prompt
            .n_prompts
            .get_or_insert(config.method.default_prompts());
        config.validate().map_err(|e| e.with_source(source_name))?;
        Ok(config)
    }

    /// Checks every value and the consistency between sections; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = !self.name.is_empty()
            && !self.name.starts_with('.')
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(ConfigError::invalid(
                "name",
                format!(
                    "must be letters, digits, `.`, `_` and `-` (not starting with `.`), got {:?}",
                    self.name
                ),
            ));
        }
        self.method.validate("method", self.prompt.n_prompts)?;
        for (i, method) in self.compare.iter().enumerate() {
            method.validate(&format!("compare[{i}]"), None)?;
        }
        self.model.validate()?;
        self.dataset.validate()?;
        training::validate(
            &self.federation,
            &self.prompt,
            &self.ot,
            &self.optimizer,
            self.context_length(),
        )?;
        if self.federation.batch_size == BatchSize::Shots && self.dataset.shots().is_none() {
            return Err(ConfigError::invalid(
                "federation.batch_size",
                "is \"shots\" but no shots are set (dataset.shots or dataset.partition.shots)",
            ));
        }
        system::validate(&self.output)
    }

    /// Token positions of the model's text tower when the configuration alone says it: the tiny
    /// model's. Weights from files may have CLIP's tokenizer or a BERT vocabulary
    /// (BiomedCLIP); their prompts are checked once the model is loaded.
    fn context_length(&self) -> Option<usize> {
        match &self.model {
            ModelConfig::Clip { .. } => None,
            ModelConfig::Tiny(tiny) => Some(tiny.text.context_length),
        }
    }

    /// Rounds the run has: `federation.rounds`, or one evaluation for zero-shot CLIP, which
    /// trains nothing.
    pub fn rounds(&self) -> u32 {
        if self.method.trains() {
            self.federation.rounds
        } else {
            1
        }
    }

    /// Whether every client is evaluated after `round`: as `federation.eval_*` schedule it, and
    /// always for zero-shot CLIP.
    pub fn evaluates(&self, round: u32) -> bool {
        self.federation.evaluates(round) || !self.method.trains()
    }

    /// Prompts per client: `prompt.n_prompts`, or the method's default.
    pub fn n_prompts(&self) -> usize {
        self.prompt
            .n_prompts
            .unwrap_or_else(|| self.method.default_prompts())
    }

    /// The training batch size, with `"shots"` resolved.
    pub fn batch_size(&self) -> usize {
        match self.federation.batch_size {
            BatchSize::Fixed(n) => n,
            BatchSize::Shots => self.dataset.shots().unwrap_or(1),
        }
    }

    /// The method's label with FedOTP's ablations spelled out, for tables and plots
    /// ("FedOTP (balanced OT)", "FedOTP (1 prompt)", "PromptFL", ...).
    pub fn method_label(&self) -> String {
        let mut label = self.method.label();
        if self.method.uses_ot() {
            if self.ot.balanced {
                label.push_str(" (balanced OT)");
            }
            if self.n_prompts() != self.method.default_prompts() {
                let n = self.n_prompts();
                label.push_str(&format!(" ({n} prompt{})", if n == 1 { "" } else { "s" }));
            }
        }
        label
    }

    /// The configurations of the `compare` methods: this one with the method replaced, the name
    /// suffixed with the method, the method's own number of prompts, and no `compare` list.
    pub fn comparison_runs(&self) -> Vec<RunConfig> {
        self.compare
            .iter()
            .map(|method| {
                let mut config = self.clone();
                config.name = format!("{}-{}", self.name, method.slug());
                config.method = method.clone();
                config.compare.clear();
                config.prompt.n_prompts = Some(method.default_prompts());
                config
            })
            .collect()
    }

    /// The resolved configuration as TOML (every default written out); reading it back gives
    /// an equal configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run configuration always serialises to TOML")
    }

    /// SHA-256 of [`RunConfig::to_toml`], lower-case hex: checkpoints record it so a run is
    /// never resumed under another configuration.
    pub fn hash(&self) -> String {
        Sha256::digest(self.to_toml().as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}
