//! `fedotp-core`: the parts of FedOTP that run anywhere, down to a microcontroller.
//!
//! `#![no_std]`, no allocator, `f32` throughout: every function works on slices the caller owns.
//!
//! Feature `nalgebra` (off by default, still no allocator): `ot::nalgebra` solves on nalgebra
//! matrices and views and writes the plan into one.
#![no_std]
#![deny(missing_docs)]
// Safe Rust only: the solver and the wire format need no unsafe code, and a microcontroller
// build has no sanitizer to catch its mistakes.
#![forbid(unsafe_code)]

pub mod head;
pub mod ot;
pub mod protocol;
