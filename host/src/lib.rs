//! `fedotp`: CLIP, compute backends, datasets and the federated loop of FedOTP.

pub mod backend;
pub mod clip;
pub mod data;
pub mod prompt;
