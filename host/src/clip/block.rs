//! CLIP's pre-norm transformer block, forward and input-gradient backward, shared by both towers:
//!
//! ```text
//! mid = x + out_proj(attention(qkv(ln_1(x))))
//! out = mid + c_proj(act(c_fc(ln_2(mid))))
//! ```
//!
//! with `act` the model's MLP activation (QuickGELU for OpenAI's CLIP, GELU for most others).

use super::{ClipError, ResidualBlock};
use crate::backend::{Activation, AttentionShape, Backend, BackendResult};

/// Grows `buf` to hold at least `len` values (keeping it when it already does).
pub(super) fn fit<B: Backend>(backend: &B, buf: &mut B::Buf, len: usize) -> BackendResult<()> {
    if backend.buf_len(buf) < len {
        *buf = backend.alloc(len)?;
    }
    Ok(())
}

/// What the input-gradient backward needs from one block's forward pass (no weight gradients
/// are formed, so layer outputs that only feed a weight gradient are not kept).
pub(super) struct BlockActivations<Buf> {
    /// Block input `x`, `rows × width`.
    pub input: Buf,
    /// `ln_1` statistics (mean, 1/std) per row.
    pub ln_1_stats: (Buf, Buf),
    /// Fused query/key/value, `rows × 3·width`.
    pub qkv: Buf,
    /// Attention probabilities, `batch × heads × seq × seq`.
    pub probs: Buf,
    /// Residual stream after attention, `mid`.
    pub mid: Buf,
    /// `ln_2` statistics.
    pub ln_2_stats: (Buf, Buf),
    /// MLP pre-activation, `rows × mlp_width`.
    pub fc: Buf,
}

impl<Buf> BlockActivations<Buf> {
    /// Empty buffers, grown by [`block_forward`].
    pub fn new<B: Backend<Buf = Buf>>(backend: &B) -> BackendResult<Self> {
        Ok(BlockActivations {
            input: backend.alloc(0)?,
            ln_1_stats: (backend.alloc(0)?, backend.alloc(0)?),
            qkv: backend.alloc(0)?,
            probs: backend.alloc(0)?,
            mid: backend.alloc(0)?,
            ln_2_stats: (backend.alloc(0)?, backend.alloc(0)?),
            fc: backend.alloc(0)?,
        })
    }
}

/// Temporaries shared by all blocks of a pass.
pub(super) struct Scratch<Buf> {
    /// A LayerNorm's output, or the gradient flowing into a LayerNorm, `rows × width`.
    pub normed: Buf,
    /// Attention output before its projection (or its gradient), `rows × width`.
    pub attn: Buf,
    /// MLP hidden activation (or its gradient), `rows × mlp_width`.
    pub hidden: Buf,
    /// Gradient with respect to `qkv`, `rows × 3·width` (backward only).
    pub d_qkv: Buf,
}

impl<Buf> Scratch<Buf> {
    /// Empty buffers, grown by [`Scratch::fit`].
    pub fn new<B: Backend<Buf = Buf>>(backend: &B) -> BackendResult<Self> {
        Ok(Scratch {
            normed: backend.alloc(0)?,
            attn: backend.alloc(0)?,
            hidden: backend.alloc(0)?,
            d_qkv: backend.alloc(0)?,
        })
    }

    /// Grows the forward temporaries for `rows` token rows.
    pub fn fit<B: Backend<Buf = Buf>>(
        &mut self,
        backend: &B,
        rows: usize,
        width: usize,
        mlp_width: usize,
    ) -> BackendResult<()> {
        fit(backend, &mut self.normed, rows * width)?;
        fit(backend, &mut self.attn, rows * width)?;
        fit(backend, &mut self.hidden, rows * mlp_width)
    }
}

/// One block on `a.input`, writing its output to `out` and keeping its activations in `a`.
/// `s` must have been fitted for these rows.
pub(super) fn block_forward<B: Backend>(
    backend: &B,
    w: &ResidualBlock<B::Buf>,
    a: &mut BlockActivations<B::Buf>,
    s: &mut Scratch<B::Buf>,
    attention: AttentionShape,
    act: Activation,
    out: &mut B::Buf,
) -> Result<(), ClipError> {
    let rows = attention.batch * attention.seq;
    let width = attention.width();
    let hidden = rows * w.mlp_fc.out_features;
    fit(backend, &mut a.ln_1_stats.0, rows)?;
    fit(backend, &mut a.ln_1_stats.1, rows)?;
    fit(backend, &mut a.ln_2_stats.0, rows)?;
    fit(backend, &mut a.ln_2_stats.1, rows)?;
    fit(backend, &mut a.qkv, rows * 3 * width)?;
    fit(backend, &mut a.probs, attention.probs_len())?;
    fit(backend, &mut a.mid, rows * width)?;
    fit(backend, &mut a.fc, hidden)?;

    let ln_1_stats = (&mut a.ln_1_stats.0, &mut a.ln_1_stats.1);
    backend.layer_norm(&mut s.normed, ln_1_stats, &a.input, &w.ln_1, rows)?;
    backend.linear(&mut a.qkv, &s.normed, &w.attn_qkv, rows)?;
    backend.attention(&mut s.attn, &mut a.probs, &a.qkv, attention)?;
    backend.linear(&mut a.mid, &s.attn, &w.attn_out, rows)?;
    backend.add_assign(&mut a.mid, &a.input, rows * width)?;

    let ln_2_stats = (&mut a.ln_2_stats.0, &mut a.ln_2_stats.1);
    backend.layer_norm(&mut s.normed, ln_2_stats, &a.mid, &w.ln_2, rows)?;
    backend.linear(&mut a.fc, &s.normed, &w.mlp_fc, rows)?;
    backend.activation(act, &mut s.hidden, &a.fc, hidden)?;
    backend.linear(out, &s.hidden, &w.mlp_proj, rows)?;
    backend.add_assign(out, &a.mid, rows * width)?;
    Ok(())
}

/// The block's input gradient: on entry `d_x` holds dL/d(out), on return dL/d(input).
///
/// The residual connections pass `d_x` through unchanged; each branch's LayerNorm backward
/// accumulates the branch's contribution into it. `s.d_qkv` must hold `rows × 3·width` values.
pub(super) fn block_backward<B: Backend>(
    backend: &B,
    w: &ResidualBlock<B::Buf>,
    a: &BlockActivations<B::Buf>,
    s: &mut Scratch<B::Buf>,
    attention: AttentionShape,
    act: Activation,
    d_x: &mut B::Buf,
) -> Result<(), ClipError> {
    let rows = attention.batch * attention.seq;
    let hidden = rows * w.mlp_fc.out_features;
    let ln_2_stats = (&a.ln_2_stats.0, &a.ln_2_stats.1);
    backend.linear_backward(&mut s.hidden, d_x, &w.mlp_proj, rows)?;
    backend.activation_backward(act, &mut s.hidden, &a.fc, hidden)?;
    backend.linear_backward(&mut s.normed, &s.hidden, &w.mlp_fc, rows)?;
    backend.layer_norm_backward(d_x, &s.normed, &a.mid, ln_2_stats, &w.ln_2, rows)?;

    let ln_1_stats = (&a.ln_1_stats.0, &a.ln_1_stats.1);
    backend.linear_backward(&mut s.attn, d_x, &w.attn_out, rows)?;
    backend.attention_backward(&mut s.d_qkv, &s.attn, &a.qkv, &a.probs, attention)?;
    backend.linear_backward(&mut s.normed, &s.d_qkv, &w.attn_qkv, rows)?;
    backend.layer_norm_backward(d_x, &s.normed, &a.input, ln_1_stats, &w.ln_1, rows)?;
    Ok(())
}
