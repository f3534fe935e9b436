//! open_clip's timm image tower as BiomedCLIP has it — `TimmModel` around timm's
//! `VisionTransformer` (`vit_base_patch16_224`) with `timm_pool: ""` (timm's own class-token
//! pooling) and `timm_proj: "linear"` — read into the canonical [`VitWeights`], so that
//! [`vision_forward`](super::vision_forward) gives every token:
//!
//! ```text
//! patches = conv(images) + b                trunk.patch_embed.proj, with bias
//! x = [cls_token; patches] + pos_embed      no pre-norm: timm's norm_pre is the identity
//! x = block_l(x)                            norm1, attn.qkv (fused, queries first), attn.proj,
//!                                           norm2, mlp.fc1, exact GELU, mlp.fc2
//! tokens = norm(x) · head.projᵀ             every token; every LayerNorm has eps 1e-6
//! ```
//!
//! open_clip's image feature (`encode_image`) is `head.proj(norm(x)[:, 0])`, the class token's
//! row of `tokens`. The architecture comes from the tensor shapes; the number of heads, which
//! open_clip's configuration leaves to the timm model name, from the caller
//! ([`timm_vit_heads`] knows timm's standard names).

use std::path::Path;

use super::load::{dim, resolve_weights, square_grid, with_tensor_file, TensorFile};
use super::{ClipError, ResidualBlock, VitConfig, VitStyle, VitWeights};
use crate::backend::{Activation, Linear};

/// The LayerNorm epsilon of timm's ViTs (timm's `LayerNorm` default).
pub const TIMM_LAYER_NORM_EPS: f32 = 1e-6;

/// Prefix of the timm trunk's tensors in an open_clip checkpoint.
const TRUNK: &str = "visual.trunk";
/// open_clip's projection after the trunk (`TimmModel.head.proj`).
const HEAD_PROJ: &str = "visual.head.proj";

/// Attention heads of timm's standard ViTs, by model name: `vit_{tiny,small,base,large}_patch{P}_{S}`
/// (a pretrained tag after a `.` allowed) have 3, 6, 12 and 16. `None` for every other name,
/// whose head count the caller must know.
///
/// ```
/// use fedotp_host::clip::timm_vit_heads;
///
/// // BiomedCLIP's image tower.
/// assert_eq!(timm_vit_heads("vit_base_patch16_224"), Some(12));
/// assert_eq!(timm_vit_heads("vit_small_patch16_224.augreg_in21k"), Some(6));
/// assert_eq!(timm_vit_heads("vit_base_patch16_clip_224"), None);
/// ```
pub fn timm_vit_heads(model_name: &str) -> Option<usize> {
    let arch = model_name.split('.').next()?;
    let (size, rest) = arch.strip_prefix("vit_")?.split_once("_patch")?;
    let (patch, image) = rest.split_once('_')?;
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !number(patch) || !number(image) {
        return None;
    }
    match size {
        "tiny" => Some(3),
        "small" => Some(6),
        "base" => Some(12),
        "large" => Some(16),
        _ => None,
    }
}

impl VitWeights<Vec<f32>> {
    /// Loads the image tower of an open_clip checkpoint whose vision tower is a timm ViT
    /// (BiomedCLIP's `vit_base_patch16_224`): a safetensors file, or a directory holding
    /// `open_clip_model.safetensors`, in open_clip's naming (`visual.trunk.patch_embed.proj.*`,
    /// `visual.trunk.cls_token`, `visual.trunk.pos_embed`, `visual.trunk.blocks.{i}.*`,
    /// `visual.trunk.norm.*`, `visual.head.proj.weight` and, with `timm_proj_bias`, its bias).
    ///
    /// Width, depth, MLP width, patch size, image size and embedding width come from the tensor
    /// shapes, `heads` from the caller (see [`timm_vit_heads`]). The tensors outside `visual.`
    /// (the text tower, `logit_scale`) are not read; every tensor inside must be one of the
    /// above, so a timm ViT of another kind (a pre-norm, layer scale, register tokens, an
    /// attention pool, an MLP head) is refused naming the tensor that shows it.
    pub fn load_open_clip_timm(path: impl AsRef<Path>, heads: usize) -> Result<Self, ClipError> {
        let file_path = resolve_weights(path.as_ref())?;
        with_tensor_file(&file_path, |file| {
            let weights = read_timm(file, heads)?;
            // The text tower's tensors are another loader's.
            file.finish_where(|name| name.starts_with("visual."))?;
            Ok(weights)
        })
    }
}

/// Whether `file` holds open_clip's timm image tower.
pub(super) fn has_timm_vit(file: &TensorFile) -> bool {
    file.has(&patch_weight())
}

/// The name of the trunk's patch convolution.
fn patch_weight() -> String {
    format!("{TRUNK}.patch_embed.proj.weight")
}

/// The residual width of `file`'s timm ViT.
pub(super) fn timm_width(file: &TensorFile) -> Result<usize, ClipError> {
    dim(file, &patch_weight(), 4, 0)
}

/// Reads every tensor of `file`'s timm image tower (see [`VitWeights::load_open_clip_timm`]).
pub(super) fn read_timm(
    file: &mut TensorFile,
    heads: usize,
) -> Result<VitWeights<Vec<f32>>, ClipError> {
    let config = infer_timm_vit(file, heads)?;
    read_timm_vit(file, config)
}

/// The trunk's dimensions from its tensors' shapes, with the caller's `heads`.
fn infer_timm_vit(file: &TensorFile, heads: usize) -> Result<VitConfig, ClipError> {
    let patch_weight = patch_weight();
    let width = timm_width(file)?;
    let patch_size = dim(file, &patch_weight, 4, 3)?;
    let pos_embed = format!("{TRUNK}.pos_embed");
    let tokens = dim(file, &pos_embed, 3, 1)?;
    let grid = square_grid(file, &pos_embed, tokens, "a timm ViT with a class token")?;
    let blocks = format!("{TRUNK}.blocks");
    let layers = file.count_blocks(&blocks, "norm1.weight");
    if layers == 0 {
        return Err(file.missing(&format!("{blocks}.0.norm1.weight")));
    }
    if heads == 0 || width == 0 || !width.is_multiple_of(heads) {
        return Err(ClipError::InvalidConfig(format!(
            "{}: {heads} heads do not divide the timm ViT's width {width} (tensor `{patch_weight}`)",
            file.path.display()
        )));
    }
    Ok(VitConfig {
        image_size: grid * patch_size,
        patch_size,
        width,
        layers,
        heads,
        mlp_width: dim(file, &format!("{blocks}.0.mlp.fc1.weight"), 2, 0)?,
        layer_norm_eps: TIMM_LAYER_NORM_EPS,
        activation: Activation::Gelu,
        style: VitStyle::Timm {
            projection_bias: file.has(&format!("{HEAD_PROJ}.bias")),
        },
    })
}

/// Every tensor of the trunk and the head, with the shapes `config` implies.
fn read_timm_vit(
    file: &mut TensorFile,
    config: VitConfig,
) -> Result<VitWeights<Vec<f32>>, ClipError> {
    let (width, eps) = (config.width, config.layer_norm_eps);
    let patch = config.patch_size;
    let patch_embedding = Linear {
        weight: file.read(
            &format!("{TRUNK}.patch_embed.proj.weight"),
            &[width, 3, patch, patch],
        )?,
        bias: Some(file.read(&format!("{TRUNK}.patch_embed.proj.bias"), &[width])?),
        in_features: 3 * patch * patch,
        out_features: width,
    };
    let class_embedding = file.read(&format!("{TRUNK}.cls_token"), &[1, 1, width])?;
    let position_embedding =
        file.read(&format!("{TRUNK}.pos_embed"), &[1, config.tokens(), width])?;
    let blocks = (0..config.layers)
        .map(|i| {
            let p = format!("{TRUNK}.blocks.{i}");
            Ok(ResidualBlock {
                ln_1: file.layer_norm(&format!("{p}.norm1"), width, eps)?,
                attn_qkv: file.linear(&format!("{p}.attn.qkv"), width, 3 * width)?,
                attn_out: file.linear(&format!("{p}.attn.proj"), width, width)?,
                ln_2: file.layer_norm(&format!("{p}.norm2"), width, eps)?,
                mlp_fc: file.linear(&format!("{p}.mlp.fc1"), width, config.mlp_width)?,
                mlp_proj: file.linear(&format!("{p}.mlp.fc2"), config.mlp_width, width)?,
            })
        })
        .collect::<Result<_, ClipError>>()?;
    let ln_post = file.layer_norm(&format!("{TRUNK}.norm"), width, eps)?;
    let proj_weight = format!("{HEAD_PROJ}.weight");
    let embed_dim = dim(file, &proj_weight, 2, 0)?;
    let projection_bias = matches!(
        config.style,
        VitStyle::Timm {
            projection_bias: true
        }
    );
    let projection = Linear {
        weight: file.read(&proj_weight, &[embed_dim, width])?,
        bias: if projection_bias {
            Some(file.read(&format!("{HEAD_PROJ}.bias"), &[embed_dim])?)
        } else {
            None
        },
        in_features: width,
        out_features: embed_dim,
    };
    Ok(VitWeights {
        config,
        patch_embedding,
        class_embedding,
        position_embedding,
        ln_pre: None,
        blocks,
        ln_post,
        projection,
    })
}
