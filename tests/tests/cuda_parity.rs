//! The CUDA backend on a real GPU against the CPU backend and `fedotp_core`, in every math
//! mode: each operation forward and backward, both towers, the OT head, the loss and a FedOTP
//! local step (the cases of `fedotp_tests::parity`, which CI runs on the kernel emulator:
//! `cuda_emulated.rs`).
//!
//! Without a usable GPU the test prints why on stderr and passes, unless
//! `FEDOTP_REQUIRE_GPU=1`, which makes the absence a failure (set it on GPU machines). Select
//! the device with `FEDOTP_CUDA_DEVICE=N` (default 0). See docs/GPU.md.

#![cfg(feature = "cuda")]

use std::io::Write;

use fedotp_host::backend::{Cuda, MathMode};
use fedotp_tests::parity;

#[test]
fn cuda_matches_cpu_in_every_math_mode() {
    let ordinal: usize = std::env::var("FEDOTP_CUDA_DEVICE")
        .ok()
        .map(|v| {
            v.parse()
                .expect("FEDOTP_CUDA_DEVICE must be a device number")
        })
        .unwrap_or(0);
    for math in [MathMode::F32, MathMode::Tf32, MathMode::Bf16] {
        let gpu = match Cuda::with_math(ordinal, math) {
            Ok(gpu) => gpu,
            Err(why) => {
                if std::env::var("FEDOTP_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                    panic!("FEDOTP_REQUIRE_GPU=1 but the CUDA backend is unavailable: {why}");
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED cuda_parity (no GPU run, nothing compared): {why}"
                );
                return;
            }
        };
        let _ = writeln!(std::io::stderr(), "cuda_parity on {}", gpu.info());
        parity::run_all(&gpu, "CUDA backend");
    }
}
