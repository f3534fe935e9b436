//! Prompt learning on a frozen CLIP: learned context vectors spliced into class prompts
//! ([`PromptLearner`]), the heads that turn image and prompt features into class logits
//! ([`Head`]: FedOTP's optimal-transport head or CLIP's cosine head), and one training or
//! evaluation step through both ([`PromptModel`]).
//!
//! Everything runs on a [`crate::backend::Backend`]; only the context vectors, the logits and the
//! loss come back to the host.

mod features;
mod head;
mod learner;
mod step;

pub use features::{encode_images, unit_features, ImageBatchFeatures};
pub use head::{Head, HeadDims, HeadState, OtStopping};
pub use learner::{context_from_words, PromptLearner, TextState};
pub use step::{PromptModel, StepOutcome, Workspace};
