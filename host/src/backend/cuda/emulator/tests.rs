//! The GPU parity cases run on the kernel emulator: every kernel source and the backend's
//! launch and cuBLAS code, executed on the CPU and compared with the CPU backend — in CI, where
//! there is no GPU. Skipped (with the reason on stderr) when there is no C++ compiler, unless
//! `FEDOTP_REQUIRE_KERNEL_CHECKS=1`, as CI sets.

use std::io::Write;

use super::{Cuda, EmulatorError};
use crate::backend::{
    AttentionShape, Backend, BackendError, BatchNorm, Conv2d, Cpu, CudaBuf, LayerNorm, Linear,
    MapShape, MathMode, MatmulDims, PatchShape, PromptShape, SeqShape,
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

/// A convolution done in im2col tiles (here of 3 output rows, the last one partial) gives the
/// untiled result and the CPU backend's. Integer inputs make every product and sum exact, so
/// the three must agree to the bit.
#[test]
fn emulated_conv2d_tiles_give_the_untiled_result() {
    let Some(gpu) = emulated(MathMode::F32) else {
        return;
    };
    let integers = |len, seed| -> Vec<f32> {
        cases::random(len, seed, 9.0)
            .iter()
            .map(|x| x.round())
            .collect()
    };
    // 3×3 at stride 2 over 2 maps of 4 channels, 8 × 7: 2 × 4 × 4 = 32 output rows.
    let shape = MapShape {
        batch: 2,
        height: 8,
        width: 7,
        channels: 4,
    };
    let conv = Conv2d {
        weight: integers(5 * 36, 170),
        in_channels: 4,
        out_channels: 5,
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let inp = integers(shape.len(), 171);
    let out_len = conv.output_shape(shape).unwrap().len();
    let mut want = vec![0.0; out_len];
    Cpu::new().conv2d(&mut want, &inp, &conv, shape).unwrap();

    let conv = conv.try_map(&mut |v| gpu.upload(&v)).unwrap();
    let inp = gpu.upload(&inp).unwrap();
    let run = |budget: Option<usize>| {
        let mut out = gpu.upload(&vec![f32::NAN; out_len]).unwrap();
        match budget {
            None => gpu.conv2d(&mut out, &inp, &conv, shape),
            Some(budget) => {
                super::super::conv::conv2d_tiled(&gpu, &mut out, &inp, &conv, shape, budget)
            }
        }
        .unwrap();
        gpu.download(&out, out_len).unwrap()
    };
    assert_eq!(run(None), want, "untiled");
    assert_eq!(run(Some(3 * 36 + 7)), want, "tiles of 3 rows");
}
