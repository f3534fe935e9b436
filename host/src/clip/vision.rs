//! The image tower as FedOTP uses it: every token after the last layer and the projection.
//!
//! ViT forward (CLIP's `VisionTransformer` without the CLS-only pooling):
//!
//! ```text
//! patches = conv(images)                      = flattened patches · W_convᵀ (+ b_conv)
//! x = ln_pre([class; patches] + positions)    (no ln_pre in timm's ViTs)
//! x = block_l(x)                              for each block, full (non-causal) attention
//! tokens = ln_post(x) · projectionᵀ           every token: CLS first, then the M patches
//! ```
//!
//! The CLS row of `tokens` is exactly CLIP's image embedding (`ln_post(x[:, 0]) @ proj`). The
//! same forward serves open_clip's timm tower (BiomedCLIP's `vit_base_patch16_224`, see
//! [`VitWeights::load_open_clip_timm`](super::VitWeights::load_open_clip_timm)), whose patch
//! convolution has a bias, whose blocks take the embeddings without a pre-norm, and whose
//! `trunk.norm` and `head.proj` are `ln_post` and the projection here; there the CLS row is
//! open_clip's `encode_image`.
//!
//! ModifiedResNet forward: see [`super::resnet`]; its tokens are the attention pool's outputs
//! queried at every position, the mean-query token first (exactly CLIP's RN image embedding).

use super::block::{block_forward, fit, BlockActivations, Scratch};
use super::resnet::resnet_forward;
use super::{ClipError, VisionWeights, VitWeights};
use crate::backend::{AttentionShape, Backend, PatchShape, SeqShape};

/// Output of [`vision_forward`]: projected, un-normalised embeddings.
#[derive(Debug, Clone)]
pub struct ImageFeatures<Buf> {
    /// Every token, `batch × tokens × embed_dim`: after `ln_post` and the projection (ViT), or
    /// the attention pool's output queried at every position, after `c_proj` (ResNet); the
    /// class/pooled token first in each image.
    pub tokens: Buf,
    /// The class/pooled embedding (CLIP's image embedding: the CLS token of a ViT, the
    /// mean-query token of a ResNet's attention pool), `batch × embed_dim`.
    pub pooled: Buf,
    /// Number of images.
    pub batch: usize,
    /// Tokens per image, `1 + M`.
    pub tokens_per_image: usize,
    /// Embedding width.
    pub embed_dim: usize,
}

/// A point in the image tower's forward pass, reported to [`vision_forward_inspect`]'s
/// callback with the values there as `batch × seq × width` rows (feature maps of the ResNet as
/// channels-last `batch × (height·width) × channels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionStage {
    /// ViT: patch embeddings (the convolution's output), `batch × M × width`.
    PatchEmbeddings,
    /// ViT: class token and patches plus position embeddings, `batch × (1+M) × width`.
    Embeddings,
    /// ViT: after `ln_pre`, the first block's input (the embeddings themselves in a tower
    /// without `ln_pre`, as timm's).
    PreNorm,
    /// ViT: the output of block `i`.
    Block(usize),
    /// ViT: after `ln_post` (timm's `norm`), every token, before the projection.
    PostNorm,
    /// ResNet: after stem convolution `i` (0–2), its batch-norm and ReLU.
    Stem(usize),
    /// ResNet: after the stem's 2×2 average pool, the first stage's input.
    StemPool,
    /// ResNet: the output of block `block` of stage `stage` (`layer{stage + 1}.{block}`).
    Bottleneck {
        /// Stage, 0–3.
        stage: usize,
        /// Block within the stage.
        block: usize,
    },
    /// ResNet: the attention pool's input tokens, `[mean; positions] + position embedding`,
    /// `batch × (1 + H·W) × pool_width`.
    PoolTokens,
    /// ResNet: the attention pool's multi-head attention output before `c_proj`, every query.
    PoolAttention,
}

/// Runs the image tower on a batch of preprocessed images (`batch × 3 × size × size`, CLIP
/// normalisation applied), returning every projected token and the pooled embedding.
///
/// ```
/// use fedotp_host::backend::{Backend, Cpu};
/// use fedotp_host::clip::{vision_forward, ClipConfig, ClipWeights};
///
/// let cpu = Cpu::new();
/// let weights = ClipWeights::random(&ClipConfig::tiny(), 0)?.to_backend(&cpu)?;
/// let images = cpu.upload(&vec![0.5; 2 * 3 * 32 * 32])?;
/// let out = vision_forward(&cpu, &weights.vision, &images, 2)?;
/// assert_eq!(out.tokens_per_image, 1 + 16); // 32 px / patch 8 → 4 × 4 patches
/// assert_eq!(out.tokens.len(), 2 * 17 * weights.config.embed_dim);
/// # Ok::<(), fedotp_host::clip::ClipError>(())
/// ```
pub fn vision_forward<B: Backend>(
    backend: &B,
    weights: &VisionWeights<B::Buf>,
    images: &B::Buf,
    batch: usize,
) -> Result<ImageFeatures<B::Buf>, ClipError> {
    vision_forward_inspect(backend, weights, images, batch, |_, _, _| Ok(()))
}

/// [`vision_forward`], calling `inspect(stage, values, shape)` at each [`VisionStage`] of the
/// tower (for intermediate features and for checking every layer against a reference).
pub fn vision_forward_inspect<B: Backend>(
    backend: &B,
    weights: &VisionWeights<B::Buf>,
    images: &B::Buf,
    batch: usize,
    inspect: impl FnMut(VisionStage, &B::Buf, SeqShape) -> Result<(), ClipError>,
) -> Result<ImageFeatures<B::Buf>, ClipError> {
    let size = match weights {
        VisionWeights::Vit(w) => w.config.image_size,
        VisionWeights::ResNet(w) => w.config.image_size,
    };
    let image_len = 3 * size * size;
    if batch == 0 || backend.buf_len(images) < batch * image_len {
        return Err(ClipError::InvalidInput(format!(
            "images hold {} values; {batch} images of 3 × {size} × {size} need {}",
            backend.buf_len(images),
            batch * image_len,
        )));
    }
    match weights {
        VisionWeights::Vit(w) => vit_forward(backend, w, images, batch, inspect),
        VisionWeights::ResNet(w) => resnet_forward(backend, w, images, batch, inspect),
    }
}

fn vit_forward<B: Backend>(
    backend: &B,
    w: &VitWeights<B::Buf>,
    images: &B::Buf,
    batch: usize,
    mut inspect: impl FnMut(VisionStage, &B::Buf, SeqShape) -> Result<(), ClipError>,
) -> Result<ImageFeatures<B::Buf>, ClipError> {
    let c = &w.config;
    let patch_shape = PatchShape {
        batch,
        channels: 3,
        image_size: c.image_size,
        patch_size: c.patch_size,
    };
    let (patches, tokens) = (c.patches(), c.tokens());
    let shape = SeqShape {
        batch,
        seq: tokens,
        width: c.width,
    };
    let rows = shape.rows();

    // Patch embedding: flatten non-overlapping patches, then one GEMM with the conv weight (and
    // its bias, broadcast over the patches by `linear`, where the tower has one).
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
    inspect(VisionStage::PatchEmbeddings, &patch_embeds, patch_shape_seq)?;

    let mut x = backend.alloc(shape.len())?;
    backend.vit_tokens(
        &mut x,
        &patch_embeds,
        &w.class_embedding,
        &w.position_embedding,
        shape,
    )?;
    drop(patch_embeds);
    inspect(VisionStage::Embeddings, &x, shape)?;

    let mut a = BlockActivations::new(backend)?;
    let mut scratch = Scratch::new(backend)?;
    scratch.fit(backend, rows, c.width, c.mlp_width)?;
    let mut stats = (backend.alloc(rows)?, backend.alloc(rows)?);
    fit(backend, &mut a.input, shape.len())?;
    match &w.ln_pre {
        Some(ln_pre) => {
            backend.layer_norm(&mut a.input, (&mut stats.0, &mut stats.1), &x, ln_pre, rows)?;
        }
        // The embeddings are the first block's input; `x` takes over the buffer fitted above
        // (of the same size) for the block's output.
        None => std::mem::swap(&mut a.input, &mut x),
    }
    inspect(VisionStage::PreNorm, &a.input, shape)?;

    let attention = AttentionShape {
        batch,
        seq: tokens,
        heads: c.heads,
        head_dim: c.width / c.heads,
        causal: false,
    };
    for (i, block) in w.blocks.iter().enumerate() {
        block_forward(
            backend,
            block,
            &mut a,
            &mut scratch,
            attention,
            c.activation,
            &mut x,
        )?;
        // The output becomes the next block's input.
        std::mem::swap(&mut a.input, &mut x);
        inspect(VisionStage::Block(i), &a.input, shape)?;
    }

    backend.layer_norm(
        &mut x,
        (&mut stats.0, &mut stats.1),
        &a.input,
        &w.ln_post,
        rows,
    )?;
    inspect(VisionStage::PostNorm, &x, shape)?;
    let embed_dim = w.projection.out_features;
    let mut all_tokens = backend.alloc(rows * embed_dim)?;
    backend.linear(&mut all_tokens, &x, &w.projection, rows)?;
    let token_shape = SeqShape {
        batch,
        seq: tokens,
        width: embed_dim,
    };
    image_features(backend, all_tokens, token_shape)
}

/// The tower's output: every token (`shape`), and token 0 of each image as the pooled embedding.
pub(super) fn image_features<B: Backend>(
    backend: &B,
    tokens: B::Buf,
    shape: SeqShape,
) -> Result<ImageFeatures<B::Buf>, ClipError> {
    let mut pooled = backend.alloc(shape.batch * shape.width)?;
    backend.gather_rows(&mut pooled, &tokens, &vec![0; shape.batch], shape)?;
    Ok(ImageFeatures {
        tokens,
        pooled,
        batch: shape.batch,
        tokens_per_image: shape.seq,
        embed_dim: shape.width,
    })
}
