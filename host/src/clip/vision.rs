//! The image tower as FedOTP uses it: every token after `ln_post` and the projection.
//!
//! ViT forward (CLIP's `VisionTransformer` without the CLS-only pooling):
//!
//! ```text
//! patches = conv(images)                      = flattened patches · W_convᵀ
//! x = ln_pre([class; patches] + positions)
//! x = block_l(x)                              for each block, full (non-causal) attention
//! tokens = ln_post(x) · projectionᵀ           every token: CLS first, then the M patches
//! ```
//!
//! The CLS row of `tokens` is exactly CLIP's image embedding (`ln_post(x[:, 0]) @ proj`).

use super::block::{block_forward, fit, BlockActivations, Scratch};
use super::{ClipError, VisionWeights};
use crate::backend::{AttentionShape, Backend, PatchShape, SeqShape};

/// Output of [`vision_forward`]: projected, un-normalised embeddings.
#[derive(Debug, Clone)]
pub struct ImageFeatures<Buf> {
    /// Every token after `ln_post` and the projection, `batch × tokens × embed_dim`, the
    /// class/pooled token first in each image.
    pub tokens: Buf,
    /// The class/pooled embedding (CLIP's image embedding), `batch × embed_dim`.
    pub pooled: Buf,
    /// Number of images.
    pub batch: usize,
    /// Tokens per image, `1 + M`.
    pub tokens_per_image: usize,
    /// Embedding width.
    pub embed_dim: usize,
}

/// A point in the ViT forward pass, reported to [`vision_forward_inspect`]'s callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitStage {
    /// Patch embeddings (the convolution's output), `batch × M × width`.
    PatchEmbeddings,
    /// Class token and patches plus position embeddings, `batch × (1+M) × width`.
    Embeddings,
    /// After `ln_pre`: the first block's input.
    PreNorm,
    /// The output of block `i`.
    Block(usize),
    /// After `ln_post`, every token, before the projection.
    PostNorm,
}

/// Runs the image tower on a batch of preprocessed images (`batch × 3 × size × size`, CLIP
/// normalisation applied), returning every projected token and the pooled embedding.
///
/// ```
/// use fedotp::backend::{Backend, Cpu};
/// use fedotp::clip::{vision_forward, ClipConfig, ClipWeights};
///
/// let cpu = Cpu::new();
/// let weights = ClipWeights::random(&ClipConfig::tiny(), 0)?.to_backend(&cpu)?;
/// let images = cpu.upload(&vec![0.5; 2 * 3 * 32 * 32])?;
/// let out = vision_forward(&cpu, &weights.vision, &images, 2)?;
/// assert_eq!(out.tokens_per_image, 1 + 16); // 32 px / patch 8 → 4 × 4 patches
/// assert_eq!(out.tokens.len(), 2 * 17 * weights.config.embed_dim);
/// # Ok::<(), fedotp::clip::ClipError>(())
/// ```
pub fn vision_forward<B: Backend>(
    backend: &B,
    weights: &VisionWeights<B::Buf>,
    images: &B::Buf,
    batch: usize,
) -> Result<ImageFeatures<B::Buf>, ClipError> {
    vision_forward_inspect(backend, weights, images, batch, |_, _, _| Ok(()))
}

/// [`vision_forward`], calling `inspect(stage, values, shape)` at each [`VitStage`] (for
/// intermediate features and for checking every layer against a reference).
pub fn vision_forward_inspect<B: Backend>(
    backend: &B,
    weights: &VisionWeights<B::Buf>,
    images: &B::Buf,
    batch: usize,
    mut inspect: impl FnMut(VitStage, &B::Buf, SeqShape) -> Result<(), ClipError>,
) -> Result<ImageFeatures<B::Buf>, ClipError> {
    let VisionWeights::Vit(w) = weights;
    let c = &w.config;
    let patch_shape = PatchShape {
        batch,
        channels: 3,
        image_size: c.image_size,
        patch_size: c.patch_size,
    };
    let image_len = 3 * c.image_size * c.image_size;
    if batch == 0 || backend.buf_len(images) < batch * image_len {
        return Err(ClipError::InvalidInput(format!(
            "images hold {} values; {batch} images of 3 × {s} × {s} need {}",
            backend.buf_len(images),
            batch * image_len,
            s = c.image_size
        )));
    }
    let (patches, tokens) = (c.patches(), c.tokens());
    let shape = SeqShape {
        batch,
        seq: tokens,
        width: c.width,
    };
    let rows = shape.rows();

    // Patch embedding: flatten non-overlapping patches, then one GEMM with the conv weight.
    let mut flat = backend.alloc(batch * patches * patch_shape.patch_len())?;
    backend.extract_patches(&mut flat, images, patch_shape)?;
    let mut patch_embeds = backend.alloc(batch * patches * c.width)?;
    backend.linear(
        &mut patch_embeds,
        &flat,
        &w.patch_embedding,
        batch * patches,
    )?;
    drop(flat);
    let patch_shape_seq = SeqShape {
        seq: patches,
        ..shape
    };
    inspect(VitStage::PatchEmbeddings, &patch_embeds, patch_shape_seq)?;

    let mut x = backend.alloc(shape.len())?;
    backend.vit_tokens(
        &mut x,
        &patch_embeds,
        &w.class_embedding,
        &w.position_embedding,
        shape,
    )?;
    drop(patch_embeds);
    inspect(VitStage::Embeddings, &x, shape)?;

    let mut a = BlockActivations::new(backend)?;
    let mut scratch = Scratch::new(backend)?;
    scratch.fit(backend, rows, c.width, c.mlp_width)?;
    let mut stats = (backend.alloc(rows)?, backend.alloc(rows)?);
    fit(backend, &mut a.input, shape.len())?;
    backend.layer_norm(
        &mut a.input,
        (&mut stats.0, &mut stats.1),
        &x,
        &w.ln_pre,
        rows,
    )?;
    inspect(VitStage::PreNorm, &a.input, shape)?;

    let attention = AttentionShape {
        batch,
        seq: tokens,
        heads: c.heads,
        head_dim: c.width / c.heads,
        causal: false,
    };
    for (i, block) in w.blocks.iter().enumerate() {
        block_forward(backend, block, &mut a, &mut scratch, attention, &mut x)?;
        // The output becomes the next block's input.
        std::mem::swap(&mut a.input, &mut x);
        inspect(VitStage::Block(i), &a.input, shape)?;
    }

    backend.layer_norm(
        &mut x,
        (&mut stats.0, &mut stats.1),
        &a.input,
        &w.ln_post,
        rows,
    )?;
    inspect(VitStage::PostNorm, &x, shape)?;
    let embed_dim = w.projection.out_features;
    let mut all_tokens = backend.alloc(rows * embed_dim)?;
    backend.linear(&mut all_tokens, &x, &w.projection, rows)?;
    let mut pooled = backend.alloc(batch * embed_dim)?;
    let token_shape = SeqShape {
        batch,
        seq: tokens,
        width: embed_dim,
    };
    backend.gather_rows(&mut pooled, &all_tokens, &vec![0; batch], token_shape)?;
    Ok(ImageFeatures {
        tokens: all_tokens,
        pooled,
        batch,
        tokens_per_image: tokens,
        embed_dim,
    })
}
