//! CLIP's ModifiedResNet image tower (RN50 and its family), with the attention pool queried at
//! every position as FedOTP uses it:
//!
//! ```text
//! x = relu(bn(conv(images)))        three times: 3×3 stride 2, 3×3, 3×3 (the stem)
//! x = avg_pool(x, 2)
//! x = bottleneck(x)                 for each block of the four stages (see [`Bottleneck`])
//! t = [mean_i x_i; x_1 … x_HW] + position_embedding
//! tokens = c_proj(attention(q_proj(t), k_proj(t), v_proj(t)))      every query, full attention
//! ```
//!
//! CLIP itself queries only the mean token; because each query row of attention is computed
//! independently, token 0 here is exactly CLIP's RN image embedding, and tokens `1..=HW` are the
//! per-position features FedOTP aligns with its prompts (M = 49 for RN50 at 224 px).
//!
//! Feature maps are channels-last (`batch × height × width × channels`); the images arrive
//! channels-first like every image tower's input and are transposed once. Each batch-norm runs
//! as its own layer ([`crate::backend::Backend::batch_norm`]) on the convolution's output, with
//! the statistics as loaded — not folded into the convolution weights — so every layer's output
//! is the checkpoint's, comparable with PyTorch's layer by layer.

use super::vision::{image_features, ImageFeatures, VisionStage};
use super::{Bottleneck, ClipError, ConvNorm, ResNetWeights};
use crate::backend::{AttentionShape, Backend, MapShape, SeqShape};

/// A feature map and its shape.
struct Map<Buf> {
    values: Buf,
    shape: MapShape,
}

/// Runs the ResNet tower; the caller has checked the images' length.
pub(super) fn resnet_forward<B: Backend>(
    backend: &B,
    w: &ResNetWeights<B::Buf>,
    images: &B::Buf,
    batch: usize,
    mut inspect: impl FnMut(VisionStage, &B::Buf, SeqShape) -> Result<(), ClipError>,
) -> Result<ImageFeatures<B::Buf>, ClipError> {
    let c = &w.config;
    let shape = MapShape {
        batch,
        height: c.image_size,
        width: c.image_size,
        channels: 3,
    };
    let mut values = backend.alloc(shape.len())?;
    backend.to_channels_last(&mut values, images, shape)?;
    let mut x = Map { values, shape };

    for (i, layer) in w.stem.iter().enumerate() {
        x = conv_norm(backend, layer, &x, true)?;
        inspect(VisionStage::Stem(i), &x.values, x.shape.as_seq())?;
    }
    x = avg_pool(backend, &x, 2)?;
    inspect(VisionStage::StemPool, &x.values, x.shape.as_seq())?;

    for (stage, blocks) in w.stages.iter().enumerate() {
        for (block, weights) in blocks.iter().enumerate() {
            x = bottleneck_forward(backend, weights, &x)?;
            let at = VisionStage::Bottleneck { stage, block };
            inspect(at, &x.values, x.shape.as_seq())?;
        }
    }

    // The attention pool, every position a query.
    let pool = &w.attention_pool;
    if x.shape.positions() != c.positions() || x.shape.channels != c.pool_width() {
        return Err(ClipError::InvalidConfig(format!(
            "the last stage gives {} positions of {} channels; the attention pool takes {} of {}",
            x.shape.positions(),
            x.shape.channels,
            c.positions(),
            c.pool_width()
        )));
    }
    let seq = SeqShape {
        batch,
        seq: c.tokens(),
        width: c.pool_width(),
    };
    let rows = seq.rows();
    let mut tokens = backend.alloc(seq.len())?;
    backend.attention_pool_tokens(&mut tokens, &x.values, &pool.position_embedding, x.shape)?;
    drop(x);
    inspect(VisionStage::PoolTokens, &tokens, seq)?;
    let mut qkv = backend.alloc(3 * seq.len())?;
    backend.linear(&mut qkv, &tokens, &pool.qkv, rows)?;
    let attention = AttentionShape {
        batch,
        seq: seq.seq,
        heads: c.heads,
        head_dim: seq.width / c.heads,
        causal: false,
    };
    let mut probs = backend.alloc(attention.probs_len())?;
    // The tokens' buffer now receives the attention output (same shape).
    backend.attention(&mut tokens, &mut probs, &qkv, attention)?;
    drop((qkv, probs));
    inspect(VisionStage::PoolAttention, &tokens, seq)?;
    let embed_dim = pool.c_proj.out_features;
    let mut out = backend.alloc(rows * embed_dim)?;
    backend.linear(&mut out, &tokens, &pool.c_proj, rows)?;
    image_features(
        backend,
        out,
        SeqShape {
            width: embed_dim,
            ..seq
        },
    )
}

/// `bn(conv(x))`, then a ReLU when `relu`.
fn conv_norm<B: Backend>(
    backend: &B,
    layer: &ConvNorm<B::Buf>,
    x: &Map<B::Buf>,
    relu: bool,
) -> Result<Map<B::Buf>, ClipError> {
    let shape = layer.conv.output_shape(x.shape)?;
    let mut values = backend.alloc(shape.len())?;
    backend.conv2d(&mut values, &x.values, &layer.conv, x.shape)?;
    backend.batch_norm(&mut values, &layer.norm, shape.rows())?;
    if relu {
        backend.relu(&mut values, shape.len())?;
    }
    Ok(Map { values, shape })
}

/// CLIP's anti-aliasing `AvgPool2d(kernel)`.
fn avg_pool<B: Backend>(
    backend: &B,
    x: &Map<B::Buf>,
    kernel: usize,
) -> Result<Map<B::Buf>, ClipError> {
    let shape = MapShape {
        height: x.shape.height / kernel,
        width: x.shape.width / kernel,
        ..x.shape
    };
    let mut values = backend.alloc(shape.len())?;
    backend.avg_pool2d(&mut values, &x.values, x.shape, kernel)?;
    Ok(Map { values, shape })
}

/// One bottleneck block (see [`Bottleneck`] for the layers).
fn bottleneck_forward<B: Backend>(
    backend: &B,
    block: &Bottleneck<B::Buf>,
    x: &Map<B::Buf>,
) -> Result<Map<B::Buf>, ClipError> {
    let mut h = conv_norm(backend, &block.conv1, x, true)?;
    h = conv_norm(backend, &block.conv2, &h, true)?;
    if block.stride > 1 {
        h = avg_pool(backend, &h, block.stride)?;
    }
    let mut out = conv_norm(backend, &block.conv3, &h, false)?;
    drop(h);
    match &block.downsample {
        None if out.shape != x.shape => {
            return Err(ClipError::InvalidConfig(format!(
            "a bottleneck without a downsample maps {:?} to {:?}: its shortcut needs equal shapes",
            x.shape, out.shape
        )))
        }
        None => backend.add_assign(&mut out.values, &x.values, out.shape.len())?,
        Some(downsample) => {
            let shortcut = if block.stride > 1 {
                conv_norm(
                    backend,
                    downsample,
                    &avg_pool(backend, x, block.stride)?,
                    false,
                )?
            } else {
                conv_norm(backend, downsample, x, false)?
            };
            backend.add_assign(&mut out.values, &shortcut.values, out.shape.len())?;
        }
    }
    backend.relu(&mut out.values, out.shape.len())?;
    Ok(out)
}
