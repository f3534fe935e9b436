//! The CPU kernels of the ModifiedResNet image tower, over channels-last maps (see
//! [`MapShape`]): layout change, convolution (im2col + one GEMM), inference batch-norm, ReLU,
//! average pooling and the attention pool's token assembly.
//!
//! Every kernel is a rayon loop over position rows (or, for the convolution's GEMM, the `gemm`
//! crate over all threads), so it scales with the cores like the transformer layers do.

use gemm::Parallelism;
use rayon::prelude::*;

use super::{gemm_f32, Grain, MatMut, MatRef};
use crate::backend::checks::avg_pool2d_output;
use crate::backend::{BackendResult, BatchNorm, Conv2d, MapShape};

/// Values handled per rayon task by the element-wise kernels.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// Largest im2col buffer, in values (32 MiB). Bigger convolutions (the stem and the first stage
/// at 224 px) are done in tiles of output rows, one im2col and one GEMM per tile, so the
/// scratch memory stays bounded whatever the batch.
const IM2COL_BUDGET: usize = 1 << 23;

/// `out[b, y, x, c] = inp[b, c, y, x]`; `shape` describes `out`.
pub(super) fn to_channels_last(out: &mut [f32], inp: &[f32], shape: MapShape) -> BackendResult<()> {
    let (positions, channels) = (shape.positions(), shape.channels);
    out[..shape.len()]
        .par_chunks_mut(channels.max(1))
        .enumerate()
        .grain(channels)
        .for_each(|(row, o)| {
            let (b, i) = (row / positions, row % positions);
            let image = &inp[b * positions * channels..];
            for (c, o) in o.iter_mut().enumerate() {
                *o = image[c * positions + i];
            }
        });
    Ok(())
}

/// Writes the im2col rows of output positions `first..first + rows.len() / patch_len`: row `r`
/// holds, for each kernel tap `(ky, kx)` in order, the `in_channels` input values under it (zero
/// where the tap falls in the padding) — the order of a channels-last conv weight row.
fn im2col(rows: &mut [f32], first: usize, inp: &[f32], shape: MapShape, conv: &Conv2d<Vec<f32>>) {
    let out_w = (shape.width + 2 * conv.padding - conv.kernel) / conv.stride + 1;
    let out_h = (shape.height + 2 * conv.padding - conv.kernel) / conv.stride + 1;
    let c = shape.channels;
    let k = conv.kernel;
    rows.par_chunks_mut(conv.patch_len())
        .enumerate()
        .grain(conv.patch_len())
        .for_each(|(i, row)| {
            let r = first + i;
            let (b, oy, ox) = (r / (out_h * out_w), r / out_w % out_h, r % out_w);
            let image = &inp[b * shape.positions() * c..][..shape.positions() * c];
            for (ky, taps) in row.chunks_mut(k * c).enumerate() {
                // Input coordinates, shifted by the padding so that they are never negative.
                let iy = oy * conv.stride + ky;
                if iy < conv.padding || iy - conv.padding >= shape.height {
                    taps.fill(0.0);
                    continue;
                }
                let line = &image[(iy - conv.padding) * shape.width * c..][..shape.width * c];
                for (kx, tap) in taps.chunks_mut(c).enumerate() {
                    let ix = ox * conv.stride + kx;
                    if ix < conv.padding || ix - conv.padding >= shape.width {
                        tap.fill(0.0);
                    } else {
                        tap.copy_from_slice(&line[(ix - conv.padding) * c..][..c]);
                    }
                }
            }
        });
}

/// `dst (rows × out_channels) = src (rows × patch_len) · Wᵀ`, one GEMM over all threads.
fn times_conv_weight(dst: &mut [f32], src: &[f32], conv: &Conv2d<Vec<f32>>, rows: usize) {
    let (k, n) = (conv.patch_len(), conv.out_channels);
    debug_assert!(dst.len() >= rows * n && src.len() >= rows * k);
    // SAFETY: `dst` holds `rows × n` values and `src` `rows × k` (the caller's output rows and
    // their input rows or im2col rows, sized by `checks::conv2d` and by `conv2d_tiled`), and
    // `checks::conv2d` found the weight to hold `n × k`; `dst` is borrowed mutably, so it
    // overlaps neither input, and the product runs on rayon's pool inside this call.
    unsafe {
        gemm_f32(
            MatMut {
                ptr: dst.as_mut_ptr(),
                rs: n as isize,
            },
            MatRef {
                ptr: src.as_ptr(),
                rs: k as isize,
                cs: 1,
            },
            // Wᵀ: element (j, o) is W[o, j].
            MatRef {
                ptr: conv.weight.as_ptr(),
                rs: 1,
                cs: k as isize,
            },
            (rows, n, k),
            1.0,
            false,
            Parallelism::Rayon(0),
        );
    }
}

/// Convolution as im2col + GEMM. A 1×1 convolution with stride 1 and no padding reads the
/// input rows directly (one GEMM, no copy); any other convolution is done in tiles of output
/// rows that keep the im2col buffer within [`IM2COL_BUDGET`].
pub(super) fn conv2d(
    out: &mut [f32],
    inp: &[f32],
    conv: &Conv2d<Vec<f32>>,
    shape: MapShape,
) -> BackendResult<()> {
    conv2d_tiled(out, inp, conv, shape, IM2COL_BUDGET)
}

/// [`conv2d`] with an im2col buffer of at most `budget` values (at least one row).
fn conv2d_tiled(
    out: &mut [f32],
    inp: &[f32],
    conv: &Conv2d<Vec<f32>>,
    shape: MapShape,
    budget: usize,
) -> BackendResult<()> {
    let out_shape = conv.output_shape(shape)?;
    let (rows, patch_len) = (out_shape.rows(), conv.patch_len());
    if out_shape.is_empty() {
        return Ok(());
    }
    if conv.kernel == 1 && conv.stride == 1 && conv.padding == 0 {
        times_conv_weight(out, inp, conv, rows);
        return Ok(());
    }
    let tile = (budget / patch_len).clamp(1, rows);
    let mut cols = vec![0.0f32; tile * patch_len];
    for (t, dst) in out[..out_shape.len()]
        .chunks_mut(tile * conv.out_channels)
        .enumerate()
    {
        let n = dst.len() / conv.out_channels;
        im2col(&mut cols[..n * patch_len], t * tile, inp, shape, conv);
        times_conv_weight(dst, &cols, conv, n);
    }
    Ok(())
}

/// `x = (x − mean) · γ / √(var + eps) + β` per channel, over `rows` rows, in place — computed, as
/// PyTorch's CPU kernel does, as `x · α + β'` with `α = γ / √(var + eps)`, `β' = β − mean · α`.
pub(super) fn batch_norm(
    x: &mut [f32],
    bn: &BatchNorm<Vec<f32>>,
    rows: usize,
) -> BackendResult<()> {
    let c = bn.channels;
    let scale: Vec<f32> = (0..c)
        .map(|i| bn.weight[i] / (bn.running_var[i] + bn.eps).sqrt())
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|i| bn.bias[i] - bn.running_mean[i] * scale[i])
        .collect();
    let rows_per_task = (ELEMENTWISE_CHUNK / c.max(1)).max(1);
    x[..rows * c]
        .par_chunks_mut(rows_per_task * c.max(1))
        .grain(rows_per_task * c)
        .for_each(|chunk| {
            for row in chunk.chunks_mut(c) {
                for ((v, a), b) in row.iter_mut().zip(&scale).zip(&shift) {
                    *v = *v * a + b;
                }
            }
        });
    Ok(())
}

/// `x = max(x, 0)` in place.
pub(super) fn relu(x: &mut [f32], len: usize) -> BackendResult<()> {
    x[..len]
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .grain(ELEMENTWISE_CHUNK)
        .for_each(|chunk| {
            for v in chunk {
                *v = v.max(0.0);
            }
        });
    Ok(())
}

/// Mean over non-overlapping `kernel × kernel` windows (floor rounding: trailing rows and
/// columns that do not fill a window are dropped, as in PyTorch).
pub(super) fn avg_pool2d(
    out: &mut [f32],
    inp: &[f32],
    shape: MapShape,
    kernel: usize,
) -> BackendResult<()> {
    let out_shape = avg_pool2d_output(shape, kernel);
    let (out_h, out_w, c) = (out_shape.height, out_shape.width, shape.channels);
    let out_len = out_shape.len();
    let area = (kernel * kernel) as f32;
    out[..out_len]
        .par_chunks_mut(c.max(1))
        .enumerate()
        .grain(kernel * kernel * c)
        .for_each(|(r, o)| {
            let (b, oy, ox) = (r / (out_h * out_w), r / out_w % out_h, r % out_w);
            o.fill(0.0);
            for ky in 0..kernel {
                let row = (b * shape.height + oy * kernel + ky) * shape.width + ox * kernel;
                for v in inp[row * c..][..kernel * c].chunks_exact(c) {
                    o.iter_mut().zip(v).for_each(|(o, v)| *o += v);
                }
            }
            o.iter_mut().for_each(|o| *o /= area);
        });
    Ok(())
}

/// `[mean of the positions; the positions] + pos` for each map.
pub(super) fn attention_pool_tokens(
    out: &mut [f32],
    map: &[f32],
    pos: &[f32],
    shape: MapShape,
) -> BackendResult<()> {
    let seq = 1 + shape.positions();
    let (n, c) = (shape.positions(), shape.channels);
    out[..shape.batch * seq * c]
        .par_chunks_mut(seq * c)
        .zip(map[..shape.len()].par_chunks(n * c))
        .grain(2 * seq * c)
        .for_each(|(tokens, positions)| {
            let (mean, rest) = tokens.split_at_mut(c);
            mean.fill(0.0);
            for v in positions.chunks_exact(c) {
                mean.iter_mut().zip(v).for_each(|(m, v)| *m += v);
            }
            for (m, p) in mean.iter_mut().zip(pos) {
                *m = *m / n as f32 + p;
            }
            for ((o, v), p) in rest.iter_mut().zip(positions).zip(&pos[c..]) {
                *o = v + p;
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im2col_pads_with_zeros_and_orders_taps_like_the_weight() {
        // One 3×3 map of 2 channels: value = 10·position + channel.
        let shape = MapShape {
            batch: 1,
            height: 3,
            width: 3,
            channels: 2,
        };
        let inp: Vec<f32> = (0..9)
            .flat_map(|p| [10.0 * p as f32, 10.0 * p as f32 + 1.0])
            .collect();
        let conv = Conv2d {
            weight: vec![],
            in_channels: 2,
            out_channels: 1,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        // Output 2×2; output position 0 is centred on input (0, 0): the top row and left column
        // of taps fall in the padding.
        let mut rows = vec![f32::NAN; 18];
        im2col(&mut rows, 0, &inp, shape, &conv);
        let want = [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, // ky 0: padding
            0.0, 0.0, 0.0, 1.0, 10.0, 11.0, // ky 1: pad, (0,0), (0,1)
            0.0, 0.0, 30.0, 31.0, 40.0, 41.0, // ky 2: pad, (1,0), (1,1)
        ];
        assert_eq!(rows, want);
    }

    #[test]
    fn tiles_give_the_untiled_result() {
        let shape = MapShape {
            batch: 2,
            height: 7,
            width: 5,
            channels: 3,
        };
        let conv = Conv2d {
            weight: (0..4 * 27)
                .map(|i| ((i * 7919) % 23) as f32 - 11.0)
                .collect(),
            in_channels: 3,
            out_channels: 4,
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        let inp: Vec<f32> = (0..shape.len())
            .map(|i| ((i * 104729) % 17) as f32)
            .collect();
        let out_len = conv.output_shape(shape).unwrap().len();
        let mut whole = vec![f32::NAN; out_len];
        conv2d(&mut whole, &inp, &conv, shape).unwrap();
        // 70 output rows in tiles of 4 (a budget of 4 rows of 27), the last one partial.
        let mut tiled = vec![f32::NAN; out_len];
        conv2d_tiled(&mut tiled, &inp, &conv, shape, 4 * 27 + 5).unwrap();
        // Small integers: every product and sum is exact, so the tiling must not change a bit.
        assert_eq!(whole, tiled);
    }
}
