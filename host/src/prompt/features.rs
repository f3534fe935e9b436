//! Image features as the heads read them: unit-length patch tokens (the class token dropped)
//! for the OT head, the unit-length pooled embedding for the cosine head.

use crate::backend::Backend;
use crate::clip::{vision_forward, ClipError, VisionWeights};

/// Unit-length image features of a batch, in host memory (the frozen image tower's output is
/// what the feature cache keeps).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatchFeatures {
    /// `images × patches × dim`: every token after the class token.
    pub patches: Vec<f32>,
    /// `images × dim`: the class / pooled token, CLIP's image embedding.
    pub pooled: Vec<f32>,
    /// Images in the batch.
    pub images: usize,
    /// Patch tokens per image, M.
    pub patches_per_image: usize,
    /// Feature dimension.
    pub dim: usize,
}

/// Runs the image tower on `images` (`batch × 3 × size × size`, preprocessed) and returns its
/// tokens normalised to unit length, split into the pooled token and the patch tokens.
pub fn encode_images<B: Backend>(
    backend: &B,
    vision: &VisionWeights<B::Buf>,
    images: &B::Buf,
    batch: usize,
) -> Result<ImageBatchFeatures, ClipError> {
    let out = vision_forward(backend, vision, images, batch)?;
    unit_features(
        backend,
        &out.tokens,
        batch,
        out.tokens_per_image,
        out.embed_dim,
    )
}

/// The features of the image tower's output `tokens` (`batch × tokens_per_image × dim`, the
/// class / pooled token first, after the projection): every token normalised to unit length,
/// split into the pooled token and the patch tokens. [`encode_images`] ends with this; tokens
/// computed elsewhere (`fedotp encode`) go through it to become the same features.
pub fn unit_features<B: Backend>(
    backend: &B,
    tokens_buf: &B::Buf,
    batch: usize,
    tokens: usize,
    dim: usize,
) -> Result<ImageBatchFeatures, ClipError> {
    if tokens < 2 || dim == 0 {
        return Err(ClipError::InvalidInput(format!(
            "image features need a pooled token and at least one patch token of width >= 1, \
             got {tokens} tokens of width {dim}"
        )));
    }
    let rows = batch * tokens;
    let mut unit = backend.alloc(rows * dim)?;
    let mut norms = backend.alloc(rows)?;
    backend.normalize_rows(&mut unit, &mut norms, tokens_buf, rows, dim)?;
    let unit = backend.download(&unit, rows * dim)?;
    let mut patches = Vec::with_capacity(batch * (tokens - 1) * dim);
    let mut pooled = Vec::with_capacity(batch * dim);
    for image in unit.chunks_exact(tokens * dim) {
        let (first, rest) = image.split_at(dim);
        pooled.extend_from_slice(first);
        patches.extend_from_slice(rest);
    }
    Ok(ImageBatchFeatures {
        patches,
        pooled,
        images: batch,
        patches_per_image: tokens - 1,
        dim,
    })
}
