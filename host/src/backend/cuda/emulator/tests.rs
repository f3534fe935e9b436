//! What only this crate can check on the kernel emulator: the convolution's tiling, an internal
//! of the CUDA backend. The parity of every operation with the CPU backend is the test kit's
//! (`tests/tests/cuda_emulated.rs`).

use super::for_test;
use crate::backend::{Backend, Conv2d, Cpu, MapShape, MathMode};

/// A convolution done in im2col tiles (here of 3 output rows, the last one partial) gives the
/// untiled result and the CPU backend's. Integer inputs make every product and sum exact, so
/// the three must agree to the bit.
#[test]
fn emulated_conv2d_tiles_give_the_untiled_result() {
    let Some(gpu) = for_test(MathMode::F32, "emulated convolution tiling") else {
        return;
    };
    // Integers in -9..=9, in an order without a short period (7 is prime to 19).
    let integers = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed) % 19) as f32 - 9.0)
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
