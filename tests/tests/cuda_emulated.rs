//! The CUDA parity cases (`fedotp_tests::parity`) on the kernel emulator: every kernel source
//! and the backend's launch and cuBLAS code, executed on the CPU and compared with the CPU
//! backend — in CI, where there is no GPU. Skipped (with the reason on stderr) when there is no
//! C++ compiler, unless `FEDOTP_REQUIRE_KERNEL_CHECKS=1`, as CI sets.

#![cfg(feature = "cuda")]

use fedotp_host::backend::cuda::emulator;
use fedotp_host::backend::MathMode;
use fedotp_tests::parity;

/// Runs every parity case on the emulator in `math`.
fn run_all(math: MathMode) {
    if let Some(gpu) = emulator::for_test(math, "emulated CUDA parity") {
        parity::run_all(&gpu, "emulated CUDA backend");
    }
}

#[test]
fn emulated_cuda_matches_cpu_in_f32() {
    run_all(MathMode::F32);
}

/// TF32 and BF16 are emulated by rounding the products' inputs to their mantissas, which
/// checks that the tolerances of those modes hold the rounding error with room to spare.
#[test]
fn emulated_cuda_matches_cpu_in_tf32() {
    run_all(MathMode::Tf32);
}

#[test]
fn emulated_cuda_matches_cpu_in_bf16() {
    run_all(MathMode::Bf16);
}
