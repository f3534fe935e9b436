//! `fedotp-host`: CLIP, compute backends, datasets and the federated loop of FedOTP.

pub mod backend;
pub mod clip;
pub mod config;
pub mod data;
pub mod fed;
pub mod memory;
pub mod ot;
pub mod prompt;
pub mod run;
pub mod train;
