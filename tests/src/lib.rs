//! fedotp's test kit: what the tests and benchmarks of several crates share.
//!
//! - [`inputs`]: deterministic pseudo-random inputs (one xorshift stream, seeded), among them
//!   CLIP-like similarities for the OT solver.
//! - [`compare`]: relative errors and the assertion that prints them; the assertion that lists
//!   exact mismatches (token ids).
//! - [`dicom`]: DICOM's linear display window of 16-bit gray values, from the standard.
//! - [`fixtures`]: where the reference fixtures lie and a reader of their PyTorch tensors
//!   (written by the scripts of `tests/scripts/`).
//! - [`parity`] (feature `cuda`): every CUDA backend operation against the CPU backend and
//!   `fedotp_core`, run on a GPU (`tests/tests/cuda_parity.rs`) and on the kernel emulator
//!   (`tests/tests/cuda_emulated.rs`).
//!
//! fedotp-core's own tests do not use the kit: their OT cases are shared with the no_std
//! firmware test program (`core/tests/support/ot_cases.rs`).

pub mod compare;
pub mod dicom;
pub mod fixtures;
pub mod inputs;
#[cfg(feature = "cuda")]
pub mod parity;
