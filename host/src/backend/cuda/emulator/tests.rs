//! The GPU parity cases run on the kernel emulator: every kernel source and the backend's
//! launch and cuBLAS code, executed on the CPU and compared with the CPU backend — in CI, where
//! there is no GPU. Skipped (with the reason on stderr) when there is no C++ compiler, unless
//! `FEDOTP_REQUIRE_KERNEL_CHECKS=1`, as CI sets.

use std::io::Write;

use super::{Cuda, EmulatorError};
use crate::backend::{
    AttentionShape, Backend, BackendError, Cpu, CudaBuf, LayerNorm, Linear, MathMode, MatmulDims,
    PatchShape, PromptShape, SeqShape,
};
use crate::clip::{
    text_backward, text_forward, vision_forward, ClipConfig, ClipWeights, PromptBatch,
    SpecialTokens, TextActivations,
};
use crate::prompt::{encode_images, Head, PromptLearner, PromptModel};

#[path = "../../../../tests/support/parity_cases.rs"]
mod cases;

/// The emulated backend, or `None` after printing why it cannot run.
fn emulated(math: MathMode) -> Option<Cuda> {
    match Cuda::emulated(math) {
        Ok(gpu) => Some(gpu),
        Err(EmulatorError::Failed(why)) => panic!("the kernel emulator failed: {why}"),
        Err(EmulatorError::Unavailable(why)) => {
            if std::env::var("FEDOTP_REQUIRE_KERNEL_CHECKS").is_ok_and(|v| v == "1") {
                panic!("FEDOTP_REQUIRE_KERNEL_CHECKS=1 but {why}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED emulated CUDA parity: {why}");
            None
        }
    }
}

#[test]
fn emulated_cuda_matches_cpu_in_f32() {
    if let Some(gpu) = emulated(MathMode::F32) {
        cases::run_all(&gpu, "emulated CUDA backend");
    }
}

/// TF32 and BF16 are emulated by rounding the products' inputs to their mantissas, which
/// checks that the tolerances of those modes hold the rounding error with room to spare.
#[test]
fn emulated_cuda_matches_cpu_in_tf32() {
    if let Some(gpu) = emulated(MathMode::Tf32) {
        cases::run_all(&gpu, "emulated CUDA backend");
    }
}

#[test]
fn emulated_cuda_matches_cpu_in_bf16() {
    if let Some(gpu) = emulated(MathMode::Bf16) {
        cases::run_all(&gpu, "emulated CUDA backend");
    }
}
