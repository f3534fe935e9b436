//! The argument checks of every [`Backend`] op, one function per op, run by the op's front door
//! (the provided trait method) before the backend's `*_unchecked` implementation.
//!
//! Each function checks what the op's implementations rely on — buffer lengths against the
//! dimensions, index arrays against their bounds, shapes that fit together — and returns the
//! [`Checked`] token that the implementation takes. Since only this module makes the token, an
//! implementation runs only behind its checks, and every backend refuses a bad call with the
//! same [`BackendError`]. Limits of one backend (e.g. the CUDA kernels' 32-bit dimensions) are
//! checked by that backend.

use fedotp_core::ot::{BatchLayout, OtParams};

use super::{
    AttentionShape, Backend, BackendError, BackendResult, BatchNorm, Conv2d, LayerNorm, Linear,
    MapShape, MatmulDims, PatchShape, PromptShape, SeqShape,
};

/// Proof that an op's arguments passed its checks: every `*_unchecked` method of [`Backend`]
/// takes one, and only the checks behind the ops' front doors can make one (it has a private
/// field and is not `Clone`), so an implementation may rely on its buffers being as long as the
/// dimensions say, its indices being in range and its shapes fitting together.
#[derive(Debug)]
pub struct Checked {
    /// Private: no code outside this module can make a token.
    _private: (),
}

/// The token, for a call whose checks have all passed.
fn checked() -> BackendResult<Checked> {
    Ok(Checked { _private: () })
}

/// Checks that buffer `buffer` of operation `op`, holding `len` values, holds at least `needed`.
fn check_len(
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
fn check_indices(
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
fn check_count(
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
/// against `layout`.
fn check_layout(
    op: &'static str,
    buffers: &[(&'static str, usize)],
    layout: BatchLayout,
) -> BackendResult<()> {
    let len = layout
        .elements()
        .map_err(|source| BackendError::Ot { op, source })?;
    for &(name, found) in buffers {
        check_len(op, name, found, len)?;
    }
    Ok(())
}

/// Checks that `seq`, the output sequence length of a position embedding, is at most `in_seq`.
fn check_truncation(op: &'static str, seq: usize, in_seq: usize) -> BackendResult<()> {
    if seq > in_seq {
        return Err(BackendError::IndexOutOfRange {
            op,
            what: "output sequence length",
            index: seq,
            bound: in_seq + 1,
        });
    }
    Ok(())
}

// ---- memory -----------------------------------------------------------------------------

/// Checks [`Backend::download`].
pub(super) fn download<B: Backend + ?Sized>(
    b: &B,
    buf: &B::Buf,
    len: usize,
) -> BackendResult<Checked> {
    check_len("download", "buf", b.buf_len(buf), len)?;
    checked()
}

// ---- embeddings -------------------------------------------------------------------------

/// Checks [`Backend::prompt_embed`].
pub(super) fn prompt_embed<B: Backend + ?Sized>(
    b: &B,
    (out, table, ctx): (&B::Buf, &B::Buf, &B::Buf),
    (ids, set): (&[u32], &[u32]),
    shape: PromptShape,
) -> BackendResult<Checked> {
    const OP: &str = "prompt_embed";
    let PromptShape {
        batch,
        seq,
        width,
        n_ctx,
        n_sets,
    } = shape;
    check_len(OP, "out", b.buf_len(out), batch * seq * width)?;
    check_len(OP, "ctx", b.buf_len(ctx), n_sets * n_ctx * width)?;
    check_count(OP, "ids", ids, batch * seq)?;
    check_count(OP, "set", set, batch)?;
    check_indices(OP, "token id", ids, b.buf_len(table) / width.max(1))?;
    check_indices(OP, "context set", set, n_sets)?;
    checked()
}

/// Checks [`Backend::prompt_embed_backward`].
pub(super) fn prompt_embed_backward<B: Backend + ?Sized>(
    b: &B,
    (d_ctx, d_out): (&B::Buf, &B::Buf),
    set: &[u32],
    shape: PromptShape,
) -> BackendResult<Checked> {
    const OP: &str = "prompt_embed_backward";
    let PromptShape {
        batch,
        seq,
        width,
        n_ctx,
        n_sets,
    } = shape;
    check_len(OP, "d_ctx", b.buf_len(d_ctx), n_sets * n_ctx * width)?;
    check_len(OP, "d_out", b.buf_len(d_out), batch * seq * width)?;
    check_count(OP, "set", set, batch)?;
    check_indices(OP, "context set", set, n_sets)?;
    checked()
}

/// Checks [`Backend::position_embed`].
pub(super) fn position_embed<B: Backend + ?Sized>(
    b: &B,
    (out, tokens, pos): (&B::Buf, &B::Buf, &B::Buf),
    in_seq: usize,
    out_shape: SeqShape,
) -> BackendResult<Checked> {
    const OP: &str = "position_embed";
    let SeqShape { batch, seq, width } = out_shape;
    check_len(OP, "out", b.buf_len(out), out_shape.len())?;
    check_len(OP, "tokens", b.buf_len(tokens), batch * in_seq * width)?;
    check_len(OP, "pos", b.buf_len(pos), seq * width)?;
    check_truncation(OP, seq, in_seq)?;
    checked()
}

/// Checks [`Backend::position_embed_backward`].
pub(super) fn position_embed_backward<B: Backend + ?Sized>(
    b: &B,
    (d_tokens, d_out): (&B::Buf, &B::Buf),
    in_seq: usize,
    out_shape: SeqShape,
) -> BackendResult<Checked> {
    const OP: &str = "position_embed_backward";
    let SeqShape { batch, seq, width } = out_shape;
    check_len(OP, "d_tokens", b.buf_len(d_tokens), batch * in_seq * width)?;
    check_len(OP, "d_out", b.buf_len(d_out), out_shape.len())?;
    check_truncation(OP, seq, in_seq)?;
    checked()
}

/// Checks [`Backend::extract_patches`].
pub(super) fn extract_patches<B: Backend + ?Sized>(
    b: &B,
    (out, images): (&B::Buf, &B::Buf),
    shape: PatchShape,
) -> BackendResult<Checked> {
    const OP: &str = "extract_patches";
    let PatchShape {
        batch,
        channels,
        image_size,
        patch_size,
    } = shape;
    if patch_size == 0 {
        return Err(BackendError::InvalidShape {
            op: OP,
            message: "patch size 0".into(),
        });
    }
    let image_len = channels * image_size * image_size;
    check_len(
        OP,
        "out",
        b.buf_len(out),
        batch * shape.patches() * shape.patch_len(),
    )?;
    check_len(OP, "images", b.buf_len(images), batch * image_len)?;
    checked()
}

/// Checks [`Backend::vit_tokens`].
pub(super) fn vit_tokens<B: Backend + ?Sized>(
    b: &B,
    (out, patches, class, pos): (&B::Buf, &B::Buf, &B::Buf, &B::Buf),
    shape: SeqShape,
) -> BackendResult<Checked> {
    const OP: &str = "vit_tokens";
    let SeqShape { batch, seq, width } = shape;
    check_len(OP, "out", b.buf_len(out), shape.len())?;
    let patch_rows = batch * seq.saturating_sub(1);
    check_len(OP, "patches", b.buf_len(patches), patch_rows * width)?;
    check_len(OP, "class", b.buf_len(class), width)?;
    check_len(OP, "pos", b.buf_len(pos), seq * width)?;
    checked()
}

// ---- layers -----------------------------------------------------------------------------

/// Checks [`Backend::layer_norm`].
pub(super) fn layer_norm<B: Backend + ?Sized>(
    b: &B,
    (out, inp): (&B::Buf, &B::Buf),
    (mean, rstd): (&B::Buf, &B::Buf),
    ln: &LayerNorm<B::Buf>,
    rows: usize,
) -> BackendResult<Checked> {
    const OP: &str = "layer_norm";
    let width = ln.width;
    check_len(OP, "out", b.buf_len(out), rows * width)?;
    check_len(OP, "inp", b.buf_len(inp), rows * width)?;
    check_len(OP, "mean", b.buf_len(mean), rows)?;
    check_len(OP, "rstd", b.buf_len(rstd), rows)?;
    check_len(OP, "weight", b.buf_len(&ln.weight), width)?;
    check_len(OP, "bias", b.buf_len(&ln.bias), width)?;
    checked()
}

/// Checks [`Backend::layer_norm_backward`].
pub(super) fn layer_norm_backward<B: Backend + ?Sized>(
    b: &B,
    (d_inp, d_out, inp): (&B::Buf, &B::Buf, &B::Buf),
    (mean, rstd): (&B::Buf, &B::Buf),
    ln: &LayerNorm<B::Buf>,
    rows: usize,
) -> BackendResult<Checked> {
    const OP: &str = "layer_norm_backward";
    let width = ln.width;
    check_len(OP, "d_inp", b.buf_len(d_inp), rows * width)?;
    check_len(OP, "d_out", b.buf_len(d_out), rows * width)?;
    check_len(OP, "inp", b.buf_len(inp), rows * width)?;
    check_len(OP, "mean", b.buf_len(mean), rows)?;
    check_len(OP, "rstd", b.buf_len(rstd), rows)?;
    check_len(OP, "weight", b.buf_len(&ln.weight), width)?;
    checked()
}

/// Checks [`Backend::linear`].
pub(super) fn linear<B: Backend + ?Sized>(
    b: &B,
    (out, inp): (&B::Buf, &B::Buf),
    layer: &Linear<B::Buf>,
    rows: usize,
) -> BackendResult<Checked> {
    const OP: &str = "linear";
    let (n_in, n_out) = (layer.in_features, layer.out_features);
    check_len(OP, "out", b.buf_len(out), rows * n_out)?;
    check_len(OP, "inp", b.buf_len(inp), rows * n_in)?;
    check_len(OP, "weight", b.buf_len(&layer.weight), n_out * n_in)?;
    if let Some(bias) = &layer.bias {
        check_len(OP, "bias", b.buf_len(bias), n_out)?;
    }
    checked()
}

/// Checks [`Backend::linear_backward`].
pub(super) fn linear_backward<B: Backend + ?Sized>(
    b: &B,
    (d_inp, d_out): (&B::Buf, &B::Buf),
    layer: &Linear<B::Buf>,
    rows: usize,
) -> BackendResult<Checked> {
    const OP: &str = "linear_backward";
    let (n_in, n_out) = (layer.in_features, layer.out_features);
    check_len(OP, "d_inp", b.buf_len(d_inp), rows * n_in)?;
    check_len(OP, "d_out", b.buf_len(d_out), rows * n_out)?;
    check_len(OP, "weight", b.buf_len(&layer.weight), n_out * n_in)?;
    checked()
}

/// Checks [`Backend::attention`].
pub(super) fn attention<B: Backend + ?Sized>(
    b: &B,
    (out, probs, qkv): (&B::Buf, &B::Buf, &B::Buf),
    shape: AttentionShape,
) -> BackendResult<Checked> {
    const OP: &str = "attention";
    let tokens = shape.batch * shape.seq;
    check_len(OP, "out", b.buf_len(out), tokens * shape.width())?;
    check_len(OP, "probs", b.buf_len(probs), shape.probs_len())?;
    check_len(OP, "qkv", b.buf_len(qkv), tokens * 3 * shape.width())?;
    checked()
}

/// Checks [`Backend::attention_backward`].
pub(super) fn attention_backward<B: Backend + ?Sized>(
    b: &B,
    (d_qkv, d_out): (&B::Buf, &B::Buf),
    (qkv, probs): (&B::Buf, &B::Buf),
    shape: AttentionShape,
) -> BackendResult<Checked> {
    const OP: &str = "attention_backward";
    let tokens = shape.batch * shape.seq;
    check_len(OP, "d_qkv", b.buf_len(d_qkv), tokens * 3 * shape.width())?;
    check_len(OP, "d_out", b.buf_len(d_out), tokens * shape.width())?;
    check_len(OP, "qkv", b.buf_len(qkv), tokens * 3 * shape.width())?;
    check_len(OP, "probs", b.buf_len(probs), shape.probs_len())?;
    checked()
}

/// Checks an element-wise op over `len` values of two buffers (`(name, buffer)` pairs):
/// [`Backend::activation`], [`Backend::activation_backward`], [`Backend::add_assign`].
pub(super) fn elementwise<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    buffers: [(&'static str, &B::Buf); 2],
    len: usize,
) -> BackendResult<Checked> {
    for (name, buf) in buffers {
        check_len(op, name, b.buf_len(buf), len)?;
    }
    checked()
}

/// Checks [`Backend::gather_rows`].
pub(super) fn gather_rows<B: Backend + ?Sized>(
    b: &B,
    (out, inp): (&B::Buf, &B::Buf),
    positions: &[u32],
    shape: SeqShape,
) -> BackendResult<Checked> {
    const OP: &str = "gather_rows";
    check_len(OP, "out", b.buf_len(out), shape.batch * shape.width)?;
    check_len(OP, "inp", b.buf_len(inp), shape.len())?;
    check_positions(OP, positions, shape)?;
    checked()
}

/// Checks [`Backend::gather_rows_backward`].
pub(super) fn gather_rows_backward<B: Backend + ?Sized>(
    b: &B,
    (d_inp, d_out): (&B::Buf, &B::Buf),
    positions: &[u32],
    shape: SeqShape,
) -> BackendResult<Checked> {
    const OP: &str = "gather_rows_backward";
    check_len(OP, "d_inp", b.buf_len(d_inp), shape.len())?;
    check_len(OP, "d_out", b.buf_len(d_out), shape.batch * shape.width)?;
    check_positions(OP, positions, shape)?;
    checked()
}

/// Checks that `positions` picks one row of each sequence of `shape`.
fn check_positions(op: &'static str, positions: &[u32], shape: SeqShape) -> BackendResult<()> {
    check_count(op, "positions", positions, shape.batch)?;
    check_indices(op, "row position", positions, shape.seq)
}

// ---- the prompt-learning head -----------------------------------------------------------

/// Checks [`Backend::normalize_rows`].
pub(super) fn normalize_rows<B: Backend + ?Sized>(
    b: &B,
    (out, norms, inp): (&B::Buf, &B::Buf, &B::Buf),
    rows: usize,
    dim: usize,
) -> BackendResult<Checked> {
    const OP: &str = "normalize_rows";
    check_len(OP, "out", b.buf_len(out), rows * dim)?;
    check_len(OP, "norms", b.buf_len(norms), rows)?;
    check_len(OP, "inp", b.buf_len(inp), rows * dim)?;
    checked()
}

/// Checks [`Backend::normalize_rows_backward`].
pub(super) fn normalize_rows_backward<B: Backend + ?Sized>(
    b: &B,
    (d_inp, d_out): (&B::Buf, &B::Buf),
    (out, norms): (&B::Buf, &B::Buf),
    rows: usize,
    dim: usize,
) -> BackendResult<Checked> {
    const OP: &str = "normalize_rows_backward";
    check_len(OP, "d_inp", b.buf_len(d_inp), rows * dim)?;
    check_len(OP, "d_out", b.buf_len(d_out), rows * dim)?;
    check_len(OP, "out", b.buf_len(out), rows * dim)?;
    check_len(OP, "norms", b.buf_len(norms), rows)?;
    checked()
}

/// Checks [`Backend::matmul_nt`] and [`Backend::matmul_tn`] (`op`): the operands hold `m × k`
/// and `n × k` values whichever is transposed.
pub(super) fn matmul<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    (out, lhs, rhs): (&B::Buf, &B::Buf, &B::Buf),
    MatmulDims { m, n, k }: MatmulDims,
) -> BackendResult<Checked> {
    check_len(op, "out", b.buf_len(out), m * n)?;
    check_len(op, "a", b.buf_len(lhs), m * k)?;
    check_len(op, "b", b.buf_len(rhs), n * k)?;
    checked()
}

/// Checks [`Backend::ot_plans`].
pub(super) fn ot_plans<B: Backend + ?Sized>(
    b: &B,
    (plans, sim): (&B::Buf, &B::Buf),
    layout: BatchLayout,
    params: &OtParams,
) -> BackendResult<Checked> {
    const OP: &str = "ot_plans";
    params
        .validate_for_cosines()
        .map_err(|source| BackendError::Ot { op: OP, source })?;
    check_layout(
        OP,
        &[("plans", b.buf_len(plans)), ("sim", b.buf_len(sim))],
        layout,
    )?;
    checked()
}

/// Checks [`Backend::ot_logits`].
pub(super) fn ot_logits<B: Backend + ?Sized>(
    b: &B,
    (logits, sim, plans): (&B::Buf, &B::Buf, &B::Buf),
    layout: BatchLayout,
) -> BackendResult<Checked> {
    const OP: &str = "ot_logits";
    check_layout(
        OP,
        &[("sim", b.buf_len(sim)), ("plans", b.buf_len(plans))],
        layout,
    )?;
    check_len(
        OP,
        "logits",
        b.buf_len(logits),
        layout.images * layout.classes,
    )?;
    checked()
}

/// Checks [`Backend::ot_logits_backward`].
pub(super) fn ot_logits_backward<B: Backend + ?Sized>(
    b: &B,
    (d_sim, d_logits, plans): (&B::Buf, &B::Buf, &B::Buf),
    layout: BatchLayout,
) -> BackendResult<Checked> {
    const OP: &str = "ot_logits_backward";
    check_layout(
        OP,
        &[("d_sim", b.buf_len(d_sim)), ("plans", b.buf_len(plans))],
        layout,
    )?;
    check_len(
        OP,
        "d_logits",
        b.buf_len(d_logits),
        layout.images * layout.classes,
    )?;
    checked()
}

/// Checks [`Backend::cross_entropy`]: one label per row, each a class.
pub(super) fn cross_entropy<B: Backend + ?Sized>(
    b: &B,
    (d_logits, logits): (&B::Buf, &B::Buf),
    labels: &[u32],
    classes: usize,
) -> BackendResult<Checked> {
    const OP: &str = "cross_entropy";
    let batch = labels.len();
    check_len(OP, "d_logits", b.buf_len(d_logits), batch * classes)?;
    check_len(OP, "logits", b.buf_len(logits), batch * classes)?;
    check_indices(OP, "label", labels, classes)?;
    checked()
}

// ---- convolutional layers ---------------------------------------------------------------

/// Checks [`Backend::to_channels_last`].
pub(super) fn to_channels_last<B: Backend + ?Sized>(
    b: &B,
    (out, inp): (&B::Buf, &B::Buf),
    shape: MapShape,
) -> BackendResult<Checked> {
    const OP: &str = "to_channels_last";
    check_len(OP, "out", b.buf_len(out), shape.len())?;
    check_len(OP, "inp", b.buf_len(inp), shape.len())?;
    checked()
}

/// Checks [`Backend::conv2d`]: the shapes (see [`Conv2d::output_shape`]) and the buffers.
pub(super) fn conv2d<B: Backend + ?Sized>(
    b: &B,
    (out, inp): (&B::Buf, &B::Buf),
    conv: &Conv2d<B::Buf>,
    shape: MapShape,
) -> BackendResult<Checked> {
    const OP: &str = "conv2d";
    let out_shape = conv.output_shape(shape)?;
    check_len(OP, "out", b.buf_len(out), out_shape.len())?;
    check_len(OP, "inp", b.buf_len(inp), shape.len())?;
    let weight_len = conv.out_channels * conv.patch_len();
    check_len(OP, "weight", b.buf_len(&conv.weight), weight_len)?;
    checked()
}

/// Checks [`Backend::batch_norm`].
pub(super) fn batch_norm<B: Backend + ?Sized>(
    b: &B,
    x: &B::Buf,
    bn: &BatchNorm<B::Buf>,
    rows: usize,
) -> BackendResult<Checked> {
    const OP: &str = "batch_norm";
    check_len(OP, "x", b.buf_len(x), rows * bn.channels)?;
    for (name, buf) in [
        ("weight", &bn.weight),
        ("bias", &bn.bias),
        ("running_mean", &bn.running_mean),
        ("running_var", &bn.running_var),
    ] {
        check_len(OP, name, b.buf_len(buf), bn.channels)?;
    }
    checked()
}

/// Checks [`Backend::relu`].
pub(super) fn relu<B: Backend + ?Sized>(b: &B, x: &B::Buf, len: usize) -> BackendResult<Checked> {
    check_len("relu", "x", b.buf_len(x), len)?;
    checked()
}

/// Checks [`Backend::avg_pool2d`]: the window fits the map, and the buffers.
pub(super) fn avg_pool2d<B: Backend + ?Sized>(
    b: &B,
    (out, inp): (&B::Buf, &B::Buf),
    shape: MapShape,
    kernel: usize,
) -> BackendResult<Checked> {
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
    check_len(
        OP,
        "out",
        b.buf_len(out),
        avg_pool2d_output(shape, kernel).len(),
    )?;
    check_len(OP, "inp", b.buf_len(inp), shape.len())?;
    checked()
}

/// The output shape of [`Backend::avg_pool2d`] (floor rounding), for a checked `kernel`.
pub(super) fn avg_pool2d_output(shape: MapShape, kernel: usize) -> MapShape {
    MapShape {
        height: shape.height / kernel,
        width: shape.width / kernel,
        ..shape
    }
}

/// Checks [`Backend::attention_pool_tokens`].
pub(super) fn attention_pool_tokens<B: Backend + ?Sized>(
    b: &B,
    (out, map, pos): (&B::Buf, &B::Buf, &B::Buf),
    shape: MapShape,
) -> BackendResult<Checked> {
    const OP: &str = "attention_pool_tokens";
    let seq = 1 + shape.positions();
    check_len(
        OP,
        "out",
        b.buf_len(out),
        shape.batch * seq * shape.channels,
    )?;
    check_len(OP, "map", b.buf_len(map), shape.len())?;
    check_len(OP, "pos", b.buf_len(pos), seq * shape.channels)?;
    checked()
}
