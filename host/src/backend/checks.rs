//! Argument checks every backend makes before it touches memory, so a bad call fails the same
//! way — with the same [`BackendError`] — on every backend.

use fedotp_core::ot::BatchLayout;

use super::{BackendError, BackendResult, BatchNorm, Conv2d, MapShape};

/// Checks that buffer `buffer` of operation `op`, holding `len` values, holds at least `needed`.
pub(crate) fn check_len(
    op: &'static str,
    buffer: &'static str,
    len: usize,
    needed: usize,
) -> BackendResult<()> {
    if len < needed {
        return Err(BackendError::BufferTooSmall {
            op,
            buffer,
            len,
            needed,
        });
    }
    Ok(())
}

/// Checks that every index is below `bound`.
pub(crate) fn check_indices(
    op: &'static str,
    what: &'static str,
    indices: &[u32],
    bound: usize,
) -> BackendResult<()> {
    match indices.iter().find(|&&i| i as usize >= bound) {
        Some(&index) => Err(BackendError::IndexOutOfRange {
            op,
            what,
            index: index as usize,
            bound,
        }),
        None => Ok(()),
    }
}

/// Checks that an index array has one entry per sequence (or token).
pub(crate) fn check_count(
    op: &'static str,
    what: &'static str,
    indices: &[u32],
    n: usize,
) -> BackendResult<()> {
    if indices.len() != n {
        return Err(BackendError::IndexCount {
            op,
            what,
            len: indices.len(),
            expected: n,
        });
    }
    Ok(())
}

/// Checks buffers shaped like a batch of OT problems (`sim`, `plans`: `(name, length)` pairs)
/// against `layout`; returns the number of elements they need.
pub(crate) fn check_layout(
    op: &'static str,
    buffers: &[(&'static str, usize)],
    layout: BatchLayout,
) -> BackendResult<usize> {
    let len = layout
        .elements()
        .map_err(|source| BackendError::Ot { op, source })?;
    for &(name, found) in buffers {
        check_len(op, name, found, len)?;
    }
    Ok(len)
}

// ---- the ResNet layers: every check of an operation in one function, so the backends
// refuse the same calls with the same errors -------------------------------------------------

/// Checks the buffers of [`Backend::to_channels_last`](super::Backend::to_channels_last).
pub(crate) fn check_to_channels_last(out: usize, inp: usize, shape: MapShape) -> BackendResult<()> {
    const OP: &str = "to_channels_last";
    check_len(OP, "out", out, shape.len())?;
    check_len(OP, "inp", inp, shape.len())
}

/// Checks the shapes and buffers of [`Backend::conv2d`](super::Backend::conv2d) (buffer
/// lengths through `len`); returns the output's shape.
pub(crate) fn check_conv2d<Buf>(
    (out, inp): (usize, usize),
    conv: &Conv2d<Buf>,
    shape: MapShape,
    len: impl Fn(&Buf) -> usize,
) -> BackendResult<MapShape> {
    const OP: &str = "conv2d";
    let out_shape = conv.output_shape(shape)?;
    check_len(OP, "out", out, out_shape.len())?;
    check_len(OP, "inp", inp, shape.len())?;
    check_len(
        OP,
        "weight",
        len(&conv.weight),
        conv.out_channels * conv.patch_len(),
    )?;
    Ok(out_shape)
}

/// Checks the buffers of [`Backend::batch_norm`](super::Backend::batch_norm) (lengths of the
/// layer's buffers through `len`).
pub(crate) fn check_batch_norm<Buf>(
    x: usize,
    bn: &BatchNorm<Buf>,
    rows: usize,
    len: impl Fn(&Buf) -> usize,
) -> BackendResult<()> {
    const OP: &str = "batch_norm";
    check_len(OP, "x", x, rows * bn.channels)?;
    for (name, buf) in [
        ("weight", &bn.weight),
        ("bias", &bn.bias),
        ("running_mean", &bn.running_mean),
        ("running_var", &bn.running_var),
    ] {
        check_len(OP, name, len(buf), bn.channels)?;
    }
    Ok(())
}

/// Checks the window and buffers of [`Backend::avg_pool2d`](super::Backend::avg_pool2d);
/// returns the output's shape.
pub(crate) fn check_avg_pool2d(
    (out, inp): (usize, usize),
    shape: MapShape,
    kernel: usize,
) -> BackendResult<MapShape> {
    const OP: &str = "avg_pool2d";
    if kernel == 0 || kernel > shape.height.min(shape.width) {
        return Err(BackendError::InvalidShape {
            op: OP,
            message: format!(
                "kernel {kernel} does not fit a {}×{} map",
                shape.height, shape.width
            ),
        });
    }
    let out_shape = MapShape {
        height: shape.height / kernel,
        width: shape.width / kernel,
        ..shape
    };
    check_len(OP, "out", out, out_shape.len())?;
    check_len(OP, "inp", inp, shape.len())?;
    Ok(out_shape)
}

/// Checks the buffers of
/// [`Backend::attention_pool_tokens`](super::Backend::attention_pool_tokens); returns the
/// tokens per map, `1 + height·width`.
pub(crate) fn check_attention_pool_tokens(
    (out, map, pos): (usize, usize, usize),
    shape: MapShape,
) -> BackendResult<usize> {
    const OP: &str = "attention_pool_tokens";
    let seq = 1 + shape.positions();
    check_len(OP, "out", out, shape.batch * seq * shape.channels)?;
    check_len(OP, "map", map, shape.len())?;
    check_len(OP, "pos", pos, seq * shape.channels)?;
    Ok(seq)
}
