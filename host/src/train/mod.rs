//! Training: FedOTP and its baselines, from one client's local steps to the whole federated
//! simulation.
//!
//! - [`FrozenClip`]: the frozen model on a compute backend, shared by every client.
//! - [`SplitFeatures`]: the image features of a split's samples — cached once when the images
//!   are not augmented (in memory up to a budget, then memory-mapped from disk), else computed
//!   per batch.
//! - [`PromptTrainer`]: a client's local epochs of SGD on its context through the OT or cosine
//!   head, evaluation and prediction with its personal prompts.
//! - [`ClientRunner`]: what a run's clients share, and a client's local round and evaluation.
//! - [`Participant`]: one client in a process of its own, its state on disk — a federated node.
//! - [`Simulation`] / [`train_run`]: K clients, client sampling, the core's FedAvg of the global
//!   prompt, evaluation, metrics and checkpoints, bit-identical on resume.

mod cache;
mod clients;
mod clip;
mod error;
mod features;
mod participant;
mod simulation;
mod trainer;

pub use cache::{CacheBuilder, FeatureCache};
pub use clients::{ClientPrompts, ClientRunner, LocalRound};
pub use clip::FrozenClip;
pub use error::TrainError;
pub use features::{CachePlace, FeatureKind, SplitFeatures};
pub use participant::Participant;
pub use simulation::{mean_row, train_run, Observer, Silent, Simulation};
pub use trainer::{
    argmax_rows, prompt_class_names, ContextInit, Evaluation, HeadChoice, LocalSchedule,
    PromptSetup, PromptTrainer,
};
