//! The CUDA backend's ModifiedResNet (RN50) layers over channels-last maps (see
//! [`MapShape`]) — the [`Backend`](crate::backend::Backend) methods of the image tower's
//! convolutional part, called from [`super::ops`] behind the checks of their front doors.
//!
//! A convolution is an im2col kernel plus one cuBLAS GEMM in the backend's math mode, as
//! [`Backend::linear`](crate::backend::Backend::linear) is: a 1×1 convolution with stride 1 and
//! no padding multiplies the input rows directly; any other is done in tiles of output rows that
//! keep the im2col buffer within [`IM2COL_BUDGET`]. Every other layer is one kernel of
//! `conv.cu` (ReLU is in `elementwise.cu`).

use super::gemm::{GemmShape, Matrices};
use super::kernels::{elementwise, Arg, Kernel};
use super::ops::{int, long};
use super::{Cuda, CudaBuf};
use crate::backend::checks::avg_pool2d_output;
use crate::backend::{Backend, BackendResult, BatchNorm, Conv2d, MapShape};

/// Largest im2col tile, in values (256 MiB). The stem's 3×3 convolutions of a batch of 128
/// images at 224 px would need 1.8 GB at once; in tiles of this size they take a few GEMMs,
/// each still large enough to keep the GPU busy.
const IM2COL_BUDGET: usize = 1 << 26;

pub(super) fn to_channels_last(
    gpu: &Cuda,
    out: &mut CudaBuf,
    inp: &CudaBuf,
    shape: MapShape,
) -> BackendResult<()> {
    const OP: &str = "to_channels_last";
    if shape.is_empty() {
        return Ok(());
    }
    let args = [
        gpu.ptr(out),
        gpu.ptr(inp),
        int(OP, "batch", shape.batch)?,
        int(OP, "positions", shape.positions())?,
        int(OP, "channels", shape.channels)?,
    ];
    gpu.launch(OP, Kernel::ToChannelsLast, elementwise(shape.len()), &args)
}

pub(super) fn conv2d(
    gpu: &Cuda,
    out: &mut CudaBuf,
    inp: &CudaBuf,
    conv: &Conv2d<CudaBuf>,
    shape: MapShape,
) -> BackendResult<()> {
    conv2d_tiled(gpu, out, inp, conv, shape, IM2COL_BUDGET)
}

/// [`conv2d`] with an im2col buffer of at most `budget` values (at least one row).
pub(super) fn conv2d_tiled(
    gpu: &Cuda,
    out: &mut CudaBuf,
    inp: &CudaBuf,
    conv: &Conv2d<CudaBuf>,
    shape: MapShape,
    budget: usize,
) -> BackendResult<()> {
    const OP: &str = "conv2d";
    let out_shape = conv.output_shape(shape)?;
    if out_shape.is_empty() {
        return Ok(());
    }
    let (rows, patch_len) = (out_shape.rows(), conv.patch_len());
    let out_address = gpu.address(&out.mem);
    if conv.kernel == 1 && conv.stride == 1 && conv.padding == 0 {
        return times_conv_weight(gpu, out_address, gpu.address(&inp.mem), conv, rows);
    }
    let tile = (budget / patch_len).clamp(1, rows);
    let cols = gpu.alloc(tile * patch_len)?;
    let dims = [
        int(OP, "height", shape.height)?,
        int(OP, "width", shape.width)?,
        int(OP, "channels", shape.channels)?,
        int(OP, "output height", out_shape.height)?,
        int(OP, "output width", out_shape.width)?,
        int(OP, "kernel", conv.kernel)?,
        int(OP, "stride", conv.stride)?,
        int(OP, "padding", conv.padding)?,
    ];
    for first in (0..rows).step_by(tile) {
        let n = tile.min(rows - first);
        let mut args = vec![
            gpu.ptr(&cols),
            gpu.ptr(inp),
            int(OP, "first row", first)?,
            int(OP, "rows", n)?,
        ];
        args.extend(dims);
        gpu.launch(OP, Kernel::Im2col, elementwise(n * patch_len), &args)?;
        let dst = out_address + (first * conv.out_channels * std::mem::size_of::<f32>()) as u64;
        times_conv_weight(gpu, dst, gpu.address(&cols.mem), conv, n)?;
    }
    // `cols` is freed here, in stream order: after the products that read it.
    Ok(())
}

/// `dst (rows × out_channels) = src (rows × patch_len) · Wᵀ`, one GEMM in the backend's math
/// mode; `dst` and `src` are device addresses of buffers that hold `rows` such rows (the
/// output and input sized by the front door's checks, or the im2col tile).
fn times_conv_weight(
    gpu: &Cuda,
    dst: u64,
    src: u64,
    conv: &Conv2d<CudaBuf>,
    rows: usize,
) -> BackendResult<()> {
    let (k, n) = (conv.patch_len(), conv.out_channels);
    let shape = GemmShape {
        m: rows,
        n,
        k,
        trans_a: false,
        trans_b: true,
        batch: (1, 1),
    };
    gpu.gemm(
        "conv2d",
        gpu.math,
        shape,
        Matrices::single(src, k),
        Matrices::single(gpu.address(&conv.weight.mem), k),
        Matrices::single(dst, n),
        1.0,
        0.0,
    )
}

pub(super) fn batch_norm(
    gpu: &Cuda,
    x: &mut CudaBuf,
    bn: &BatchNorm<CudaBuf>,
    rows: usize,
) -> BackendResult<()> {
    const OP: &str = "batch_norm";
    let len = rows * bn.channels;
    if len == 0 {
        return Ok(());
    }
    let args = [
        gpu.ptr(x),
        gpu.ptr(&bn.weight),
        gpu.ptr(&bn.bias),
        gpu.ptr(&bn.running_mean),
        gpu.ptr(&bn.running_var),
        int(OP, "rows", rows)?,
        int(OP, "channels", bn.channels)?,
        Arg::F32(bn.eps),
    ];
    gpu.launch(OP, Kernel::BatchNorm, elementwise(len), &args)
}

pub(super) fn relu(gpu: &Cuda, x: &mut CudaBuf, len: usize) -> BackendResult<()> {
    const OP: &str = "relu";
    if len == 0 {
        return Ok(());
    }
    let args = [gpu.ptr(x), long(len)];
    gpu.launch(OP, Kernel::Relu, elementwise(len), &args)
}

pub(super) fn avg_pool2d(
    gpu: &Cuda,
    out: &mut CudaBuf,
    inp: &CudaBuf,
    shape: MapShape,
    kernel: usize,
) -> BackendResult<()> {
    const OP: &str = "avg_pool2d";
    let out_shape = avg_pool2d_output(shape, kernel);
    if out_shape.is_empty() {
        return Ok(());
    }
    let args = [
        gpu.ptr(out),
        gpu.ptr(inp),
        int(OP, "batch", shape.batch)?,
        int(OP, "height", shape.height)?,
        int(OP, "width", shape.width)?,
        int(OP, "channels", shape.channels)?,
        int(OP, "kernel", kernel)?,
    ];
    gpu.launch(OP, Kernel::AvgPool2d, elementwise(out_shape.len()), &args)
}

pub(super) fn attention_pool_tokens(
    gpu: &Cuda,
    out: &mut CudaBuf,
    map: &CudaBuf,
    pos: &CudaBuf,
    shape: MapShape,
) -> BackendResult<()> {
    const OP: &str = "attention_pool_tokens";
    let seq = 1 + shape.positions();
    let len = shape.batch * seq * shape.channels;
    if len == 0 {
        return Ok(());
    }
    let args = [
        gpu.ptr(out),
        gpu.ptr(map),
        gpu.ptr(pos),
        int(OP, "batch", shape.batch)?,
        int(OP, "positions", shape.positions())?,
        int(OP, "channels", shape.channels)?,
    ];
    gpu.launch(OP, Kernel::AttentionPoolTokens, elementwise(len), &args)
}
