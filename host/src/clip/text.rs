//! The text tower as FedOTP uses it: token *embeddings* in (so learned context vectors can be
//! spliced in), EOT-pooled projected features out, and the backward pass from those features to
//! the input embeddings through the frozen tower.
//!
//! Forward, per sequence `s` with EOT position `e_s` (CLIP's `encode_text` on embeddings):
//!
//! ```text
//! x₀ = embeddings + positions
//! x_{l+1} = block_l(x_l)                      causal pre-norm transformer blocks
//! features[s] = ln_final(x_L[s, e_s]) · projectionᵀ
//! ```
//!
//! The mask is causal, so position `e_s` never sees a later position: the tower runs only on the
//! first `max(e_s) + 1` positions, which gives exactly the features of the full 77-token run.
//! The final layer norm is applied to the gathered EOT rows only (it acts row by row).
//!
//! The forward keeps, per block, what the input-gradient backward needs — the block input, the
//! attention input's LayerNorm statistics, `qkv`, the attention probabilities, the residual after
//! attention and its LayerNorm statistics, and the MLP's pre-activation — and reuses its buffers
//! across calls while they are large enough.

use super::block::{block_backward, block_forward, fit, BlockActivations, Scratch};
use super::{ClipError, TextWeights};
use crate::backend::{AttentionShape, Backend, SeqShape};

/// Activations of one [`text_forward`] call, consumed by [`text_backward`]; pass the same value
/// to later calls to reuse its memory.
pub struct TextActivations<Buf> {
    shape: SeqShape,
    in_seq: usize,
    eot_positions: Vec<u32>,
    blocks: Vec<BlockActivations<Buf>>,
    /// Output of the last block, `x_L`.
    output: Buf,
    /// `x_L` at each sequence's EOT, `batch × width`.
    pooled: Buf,
    /// `ln_final` statistics of the pooled rows.
    pooled_stats: (Buf, Buf),
    scratch: Scratch<Buf>,
}

impl<Buf> TextActivations<Buf> {
    /// Empty activations; buffers are allocated by the first forward pass.
    pub fn new<B: Backend<Buf = Buf>>(backend: &B) -> Result<Self, ClipError> {
        Ok(TextActivations {
            shape: SeqShape {
                batch: 0,
                seq: 0,
                width: 0,
            },
            in_seq: 0,
            eot_positions: Vec::new(),
            blocks: Vec::new(),
            output: backend.alloc(0)?,
            pooled: backend.alloc(0)?,
            pooled_stats: (backend.alloc(0)?, backend.alloc(0)?),
            scratch: Scratch::new(backend)?,
        })
    }

    /// Shape the tower ran at: `seq` is the longest EOT position + 1.
    pub fn shape(&self) -> SeqShape {
        self.shape
    }

    /// The residual stream entering block `layer` (`batch × seq × width`); `layer` = number of
    /// blocks gives the last block's output.
    pub fn hidden(&self, layer: usize) -> Option<&Buf> {
        if layer == self.blocks.len() {
            Some(&self.output)
        } else {
            self.blocks.get(layer).map(|b| &b.input)
        }
    }

    /// Block `layer`'s fused query/key/value (`batch × seq × 3·width`).
    pub fn qkv(&self, layer: usize) -> Option<&Buf> {
        self.blocks.get(layer).map(|b| &b.qkv)
    }

    /// Block `layer`'s attention probabilities (`batch × heads × seq × seq`).
    pub fn attention_probs(&self, layer: usize) -> Option<&Buf> {
        self.blocks.get(layer).map(|b| &b.probs)
    }

    /// Block `layer`'s residual stream after attention (`batch × seq × width`).
    pub fn after_attention(&self, layer: usize) -> Option<&Buf> {
        self.blocks.get(layer).map(|b| &b.mid)
    }

    /// Block `layer`'s MLP pre-activation (`batch × seq × mlp_width`).
    pub fn mlp_pre_activation(&self, layer: usize) -> Option<&Buf> {
        self.blocks.get(layer).map(|b| &b.fc)
    }

    /// The last block's output at each EOT, before `ln_final` (`batch × width`).
    pub fn pooled(&self) -> &Buf {
        &self.pooled
    }
}

fn check_embeddings<B: Backend>(
    backend: &B,
    weights: &TextWeights<B::Buf>,
    embeddings: &B::Buf,
    in_seq: usize,
    eot_positions: &[u32],
) -> Result<usize, ClipError> {
    let config = &weights.config;
    let batch = eot_positions.len();
    if batch == 0 {
        return Err(ClipError::InvalidInput(
            "no sequences (empty EOT positions)".into(),
        ));
    }
    let needed = batch * in_seq * config.width;
    if backend.buf_len(embeddings) < needed {
        return Err(ClipError::InvalidInput(format!(
            "embeddings hold {} values, {batch} sequences × {in_seq} tokens × width {} need {needed}",
            backend.buf_len(embeddings),
            config.width
        )));
    }
    let limit = in_seq.min(config.context_length);
    if let Some((s, &e)) = eot_positions
        .iter()
        .enumerate()
        .find(|(_, &e)| e as usize >= limit)
    {
        return Err(ClipError::InvalidInput(format!(
            "EOT position {e} of sequence {s} is outside the sequence (length {in_seq}, context length {})",
            config.context_length
        )));
    }
    Ok(eot_positions.iter().max().map_or(0, |&e| e as usize + 1))
}

/// Runs the text tower on token embeddings.
///
/// `embeddings` holds `batch × in_seq × width` token embeddings *without* the position
/// embeddings (they are added here), `batch = eot_positions.len()`; `eot_positions[s]` is the
/// position of sequence `s`'s end-of-text token. Returns the projected, un-normalised features
/// (`batch × embed_dim`) and leaves in `acts` what [`text_backward`] needs.
///
/// ```
/// use fedotp_host::backend::{Backend, Cpu};
/// use fedotp_host::clip::{text_forward, ClipConfig, ClipWeights, TextActivations, TextTower};
///
/// let cpu = Cpu::new();
/// let weights = ClipWeights::random(&ClipConfig::tiny(), 0)?.to_backend(&cpu)?;
/// let TextTower::Clip(text) = &weights.text else { unreachable!("the tiny CLIP's") };
/// let width = text.config.width;
/// // Two sequences of 5 tokens, EOT at positions 3 and 4.
/// let embeddings = cpu.upload(&vec![0.01; 2 * 5 * width])?;
/// let mut acts = TextActivations::new(&cpu)?;
/// let features = text_forward(&cpu, text, &embeddings, 5, &[3, 4], &mut acts)?;
/// assert_eq!(features.len(), 2 * weights.config.embed_dim);
/// # Ok::<(), fedotp_host::clip::ClipError>(())
/// ```
pub fn text_forward<B: Backend>(
    backend: &B,
    weights: &TextWeights<B::Buf>,
    embeddings: &B::Buf,
    in_seq: usize,
    eot_positions: &[u32],
    acts: &mut TextActivations<B::Buf>,
) -> Result<B::Buf, ClipError> {
    let config = &weights.config;
    let seq = check_embeddings(backend, weights, embeddings, in_seq, eot_positions)?;
    let shape = SeqShape {
        batch: eot_positions.len(),
        seq,
        width: config.width,
    };
    let rows = shape.rows();
    acts.shape = shape;
    acts.in_seq = in_seq;
    acts.eot_positions = eot_positions.to_vec();
    while acts.blocks.len() < weights.blocks.len() {
        acts.blocks.push(BlockActivations::new(backend)?);
    }
    acts.blocks.truncate(weights.blocks.len());

    let attention = AttentionShape {
        batch: shape.batch,
        seq,
        heads: config.heads,
        head_dim: config.width / config.heads,
        causal: true,
    };
    let scratch = &mut acts.scratch;
    scratch.fit(backend, rows, config.width, config.mlp_width)?;

    for (l, (block, w)) in acts.blocks.iter_mut().zip(&weights.blocks).enumerate() {
        // Block l's input: the embeddings for the first block, else the previous block's output
        // (swapped in, so the old input buffer becomes the next output buffer).
        if l == 0 {
            fit(backend, &mut block.input, shape.len())?;
            backend.position_embed(
                &mut block.input,
                embeddings,
                &weights.position_embedding,
                in_seq,
                shape,
            )?;
        } else {
            std::mem::swap(&mut block.input, &mut acts.output);
        }
        fit(backend, &mut acts.output, shape.len())?;
        block_forward(
            backend,
            w,
            block,
            scratch,
            attention,
            weights.config.activation,
            &mut acts.output,
        )?;
    }
    if acts.blocks.is_empty() {
        fit(backend, &mut acts.output, shape.len())?;
        backend.position_embed(
            &mut acts.output,
            embeddings,
            &weights.position_embedding,
            in_seq,
            shape,
        )?;
    }

    let batch = shape.batch;
    fit(backend, &mut acts.pooled, batch * config.width)?;
    fit(backend, &mut acts.pooled_stats.0, batch)?;
    fit(backend, &mut acts.pooled_stats.1, batch)?;
    backend.gather_rows(&mut acts.pooled, &acts.output, eot_positions, shape)?;
    backend.layer_norm(
        &mut scratch.normed,
        (&mut acts.pooled_stats.0, &mut acts.pooled_stats.1),
        &acts.pooled,
        &weights.ln_final,
        batch,
    )?;
    let mut features = backend.alloc(batch * weights.projection.out_features)?;
    backend.linear(&mut features, &scratch.normed, &weights.projection, batch)?;
    Ok(features)
}

/// The gradient of a scalar loss with respect to the input embeddings of the last
/// [`text_forward`] call, given its gradient with respect to the features (`batch × embed_dim`).
///
/// Returns `batch × in_seq × width` values, the shape of the forward's `embeddings`; rows after
/// the longest EOT are zero (they do not influence the features). The tower's weights are frozen:
/// no weight gradient is formed.
pub fn text_backward<B: Backend>(
    backend: &B,
    weights: &TextWeights<B::Buf>,
    acts: &mut TextActivations<B::Buf>,
    d_features: &B::Buf,
) -> Result<B::Buf, ClipError> {
    let shape = acts.shape;
    let (batch, rows, width) = (shape.batch, shape.rows(), shape.width);
    if batch == 0 || acts.blocks.len() != weights.blocks.len() || width != weights.config.width {
        return Err(ClipError::InvalidInput(
            "text_backward needs the activations of a text_forward call with the same weights"
                .into(),
        ));
    }
    let embed = weights.projection.out_features;
    if backend.buf_len(d_features) < batch * embed {
        return Err(ClipError::InvalidInput(format!(
            "d_features holds {} values, {batch} sequences × {embed} need {}",
            backend.buf_len(d_features),
            batch * embed
        )));
    }
    let s = &mut acts.scratch;
    // Features = ln_final(pooled) · Pᵀ: back through the projection and the final LayerNorm
    // (on the pooled rows), then scatter to the EOT positions.
    backend.linear_backward(&mut s.normed, d_features, &weights.projection, batch)?;
    let mut d_pooled = backend.alloc(batch * width)?;
    backend.layer_norm_backward(
        &mut d_pooled,
        &s.normed,
        &acts.pooled,
        (&acts.pooled_stats.0, &acts.pooled_stats.1),
        &weights.ln_final,
        batch,
    )?;
    let mut d_x = backend.alloc(rows * width)?;
    backend.gather_rows_backward(&mut d_x, &d_pooled, &acts.eot_positions, shape)?;

    let head_dim = width / weights.config.heads;
    let attention = AttentionShape {
        batch,
        seq: shape.seq,
        heads: weights.config.heads,
        head_dim,
        causal: true,
    };
    fit(backend, &mut s.d_qkv, rows * 3 * width)?;
    for (w, a) in weights.blocks.iter().zip(&acts.blocks).rev() {
        block_backward(
            backend,
            w,
            a,
            s,
            attention,
            weights.config.activation,
            &mut d_x,
        )?;
    }
    // x₀ = embeddings + positions (truncated): identity on the kept rows, zero on the rest.
    let mut d_embeddings = backend.alloc(batch * acts.in_seq * width)?;
    backend.position_embed_backward(&mut d_embeddings, &d_x, acts.in_seq, shape)?;
    Ok(d_embeddings)
}
