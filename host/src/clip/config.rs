//! CLIP architecture descriptions: the text transformer, the vision tower and the shared
//! embedding width.

use super::ClipError;

/// The layer-norm epsilon of every CLIP release.
pub const CLIP_LAYER_NORM_EPS: f32 = 1e-5;

/// CLIP's attention head width: its releases use `width / 64` heads.
pub const CLIP_HEAD_WIDTH: usize = 64;

/// The text transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Token vocabulary size (49,408 for CLIP's BPE).
    pub vocab_size: usize,
    /// Maximum sequence length, the number of position embeddings (77).
    pub context_length: usize,
    /// Residual stream width.
    pub width: usize,
    /// Number of residual blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Hidden width of each block's MLP (4 × width in CLIP).
    pub mlp_width: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f32,
}

/// A vision transformer (ViT) image tower.
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    /// Side of the square input image in pixels.
    pub image_size: usize,
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// Residual stream width.
    pub width: usize,
    /// Number of residual blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Hidden width of each block's MLP.
    pub mlp_width: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f32,
}

impl VitConfig {
    /// Patches per image, `(image_size / patch_size)²` — the M of FedOTP.
    pub fn patches(&self) -> usize {
        let grid = self.image_size / self.patch_size;
        grid * grid
    }

    /// Tokens per image: the class token and the patches.
    pub fn tokens(&self) -> usize {
        1 + self.patches()
    }
}

/// The image tower's architecture.
///
/// Only the ViT is implemented; the ModifiedResNet (RN50) tower will be a second variant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum VisionConfig {
    /// A vision transformer.
    Vit(VitConfig),
}

impl VisionConfig {
    /// Side of the square input image in pixels.
    pub fn image_size(&self) -> usize {
        match self {
            VisionConfig::Vit(vit) => vit.image_size,
        }
    }

    /// Tokens per image returned by the tower (class/pooled token first).
    pub fn tokens(&self) -> usize {
        match self {
            VisionConfig::Vit(vit) => vit.tokens(),
        }
    }
}

/// A whole CLIP model.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Width of the joint image–text embedding space.
    pub embed_dim: usize,
    /// The text tower.
    pub text: TextConfig,
    /// The image tower.
    pub vision: VisionConfig,
}

impl TextConfig {
    /// CLIP's text transformer for ViT-B models and RN50: width 512, 12 layers, 8 heads.
    pub fn clip_base() -> Self {
        TextConfig {
            vocab_size: 49_408,
            context_length: 77,
            width: 512,
            layers: 12,
            heads: 8,
            mlp_width: 2048,
            layer_norm_eps: CLIP_LAYER_NORM_EPS,
        }
    }
}

impl ClipConfig {
    /// OpenAI's ViT-B/16 at 224 px (embed 512): the backbone of FedOTP's CIFAR and DomainNet runs.
    pub fn vit_b_16() -> Self {
        Self::vit_b(16)
    }

    /// OpenAI's ViT-B/32 at 224 px (embed 512).
    pub fn vit_b_32() -> Self {
        Self::vit_b(32)
    }

    fn vit_b(patch_size: usize) -> Self {
        ClipConfig {
            embed_dim: 512,
            text: TextConfig::clip_base(),
            vision: VisionConfig::Vit(VitConfig {
                image_size: 224,
                patch_size,
                width: 768,
                layers: 12,
                heads: 12,
                mlp_width: 3072,
                layer_norm_eps: CLIP_LAYER_NORM_EPS,
            }),
        }
    }

    /// A tiny model (widths 64, 2 layers, 32 px images, full vocabulary) for examples and
    /// quick experiments with random weights.
    pub fn tiny() -> Self {
        ClipConfig {
            embed_dim: 32,
            text: TextConfig {
                vocab_size: 49_408,
                context_length: 77,
                width: 64,
                layers: 2,
                heads: 2,
                mlp_width: 256,
                layer_norm_eps: CLIP_LAYER_NORM_EPS,
            },
            vision: VisionConfig::Vit(VitConfig {
                image_size: 32,
                patch_size: 8,
                width: 64,
                layers: 2,
                heads: 2,
                mlp_width: 256,
                layer_norm_eps: CLIP_LAYER_NORM_EPS,
            }),
        }
    }

    /// Checks that every dimension is positive and consistent.
    ///
    /// ```
    /// use fedotp::clip::ClipConfig;
    ///
    /// let mut config = ClipConfig::tiny();
    /// assert!(config.validate().is_ok());
    /// config.text.heads = 3; // 64 is not divisible by 3
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ClipError> {
        let bad = |what: String| Err(ClipError::InvalidConfig(what));
        let text = &self.text;
        let positive = [
            ("embed_dim", self.embed_dim),
            ("text.vocab_size", text.vocab_size),
            ("text.context_length", text.context_length),
            ("text.width", text.width),
            ("text.heads", text.heads),
            ("text.mlp_width", text.mlp_width),
        ];
        require_positive(&positive)?;
        if text.width % text.heads != 0 {
            return bad(format!(
                "text.width {} is not divisible by text.heads {}",
                text.width, text.heads
            ));
        }
        match &self.vision {
            VisionConfig::Vit(vit) => {
                let positive = [
                    ("vision.image_size", vit.image_size),
                    ("vision.patch_size", vit.patch_size),
                    ("vision.width", vit.width),
                    ("vision.heads", vit.heads),
                    ("vision.mlp_width", vit.mlp_width),
                ];
                require_positive(&positive)?;
                if vit.width % vit.heads != 0 {
                    return bad(format!(
                        "vision.width {} is not divisible by vision.heads {}",
                        vit.width, vit.heads
                    ));
                }
                if vit.image_size % vit.patch_size != 0 {
                    return bad(format!(
                        "vision.image_size {} is not a multiple of vision.patch_size {}",
                        vit.image_size, vit.patch_size
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Fails naming the first dimension that is zero.
fn require_positive(dims: &[(&str, usize)]) -> Result<(), ClipError> {
    match dims.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(ClipError::InvalidConfig(format!("{name} must be positive"))),
        None => Ok(()),
    }
}
