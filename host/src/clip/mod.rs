//! CLIP, the frozen model FedOTP learns prompts through.

pub mod classnames;
pub mod tokenizer;
