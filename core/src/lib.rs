//! `fedotp-core`: the parts of FedOTP that run anywhere, down to a microcontroller.
//!
//! `#![no_std]`, no allocator, `f32` throughout: every function works on slices the caller owns.
//!
//! Feature `nalgebra` (off by default, still no allocator): `ot::nalgebra` solves on nalgebra
//! matrices and views and writes the plan into one.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod head;
pub mod ot;
pub mod protocol;
