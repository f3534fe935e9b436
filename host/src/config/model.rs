//! Which frozen CLIP a run learns prompts through: pretrained weights from a file, or the tiny
//! model with seeded random weights that the quickstart embeds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::backend::Activation;
use crate::clip::{
    ClipConfig, ImageResize, TextConfig, TextTowerConfig, VisionConfig, VitConfig, VitStyle,
    CLIP_LAYER_NORM_EPS,
};
use crate::data::Normalize;

/// The frozen model.
///
/// ```
/// use fedotp_host::config::{Backbone, ModelConfig};
/// let model: ModelConfig = toml::from_str(r#"kind = "clip"
/// path = "weights/ViT-B-16"
/// backbone = "ViT-B/16""#).unwrap();
/// assert_eq!(model.image_size(), 224);
/// assert!(matches!(model, ModelConfig::Clip { backbone: Some(Backbone::VitB16), .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// Pretrained CLIP weights: a safetensors file, or a directory holding `model.safetensors`
    /// (Hugging Face, with `config.json`) or `open_clip_model.safetensors` (OpenAI / open_clip).
    Clip {
        /// The weights file or directory.
        path: PathBuf,
        /// The architecture the weights must have, checked when they are loaded; without it, any
        /// CLIP the weights and their configuration file describe (any ViT or ModifiedResNet
        /// shape, either activation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backbone: Option<Backbone>,
    },
    /// A tiny CLIP-architecture model with random weights drawn from `seed`: not pretrained,
    /// for the quickstart, examples and tests.
    Tiny(TinyModelConfig),
}

/// The pretrained architectures of the paper's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backbone {
    /// ViT-B/16 at 224 px: 196 patches (CIFAR, DomainNet, Office-Caltech10 settings).
    #[serde(rename = "ViT-B/16")]
    VitB16,
    /// ViT-B/32 at 224 px: 49 patches.
    #[serde(rename = "ViT-B/32")]
    VitB32,
    /// ResNet-50 with attention pooling at 224 px: 49 positions (few-shot settings).
    #[serde(rename = "RN50")]
    Rn50,
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backbone::VitB16 => "ViT-B/16",
            Backbone::VitB32 => "ViT-B/32",
            Backbone::Rn50 => "RN50",
        })
    }
}

/// The tiny model's architecture (CLIP's, scaled down). The vocabulary is always CLIP's
/// (49,408 tokens) so the real tokenizer is used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyModelConfig {
    /// Seed of the random weights.
    pub seed: u64,
    /// Width of the joint image–text embedding.
    pub embed_dim: usize,
    /// The text transformer.
    pub text: TinyTextConfig,
    /// The ViT image tower.
    pub vision: TinyVisionConfig,
    /// Both towers' MLP activation: `"quick_gelu"` (OpenAI CLIP's, the default) or `"gelu"`
    /// (open_clip's). Written into the resolved configuration only when not the default, so
    /// earlier runs keep their configuration hash.
    #[serde(default, skip_serializing_if = "is_default_activation")]
    pub activation: Activation,
}

fn is_default_activation(act: &Activation) -> bool {
    *act == Activation::default()
}

/// The tiny model's text transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyTextConfig {
    /// Residual width.
    pub width: usize,
    /// Residual blocks.
    pub layers: usize,
    /// Attention heads (must divide `width`).
    pub heads: usize,
    /// MLP hidden width.
    pub mlp_width: usize,
    /// Token positions (CLIP: 77).
    pub context_length: usize,
}

/// The tiny model's ViT image tower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyVisionConfig {
    /// Side of the input image in pixels (a multiple of `patch_size`).
    pub image_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// Residual width.
    pub width: usize,
    /// Residual blocks.
    pub layers: usize,
    /// Attention heads (must divide `width`).
    pub heads: usize,
    /// MLP hidden width.
    pub mlp_width: usize,
}

impl Default for TinyModelConfig {
    /// [`ClipConfig::tiny`]: widths 64, two layers, 32-pixel images in 8-pixel patches (16
    /// patches), embedding 32.
    fn default() -> Self {
        TinyModelConfig {
            seed: 0,
            embed_dim: 32,
            text: TinyTextConfig {
                width: 64,
                layers: 2,
                heads: 2,
                mlp_width: 256,
                context_length: 77,
            },
            vision: TinyVisionConfig {
                image_size: 32,
                patch_size: 8,
                width: 64,
                layers: 2,
                heads: 2,
                mlp_width: 256,
            },
            activation: Activation::QuickGelu,
        }
    }
}

impl ModelConfig {
    /// Side of the square input image in pixels (224 for the pretrained backbones).
    pub fn image_size(&self) -> u32 {
        match self {
            ModelConfig::Clip { .. } => 224,
            ModelConfig::Tiny(tiny) => u32::try_from(tiny.vision.image_size).unwrap_or(u32::MAX),
        }
    }

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            ModelConfig::Clip { path, .. } => {
                if path.as_os_str().is_empty() {
                    return Err(ConfigError::invalid("model.path", "must not be empty"));
                }
            }
            ModelConfig::Tiny(tiny) => tiny.validate()?,
        }
        Ok(())
    }
}

/// The largest image side the tiny model accepts (a bound on memory, not on the architecture).
const MAX_TINY_IMAGE_SIZE: usize = 1024;

impl TinyModelConfig {
    /// The CLIP architecture these numbers describe, with CLIP's vocabulary and layer-norm
    /// epsilon.
    ///
    /// ```
    /// use fedotp_host::clip::ClipConfig;
    /// use fedotp_host::config::TinyModelConfig;
    /// assert_eq!(TinyModelConfig::default().clip_config(), ClipConfig::tiny());
    /// ```
    pub fn clip_config(&self) -> ClipConfig {
        let (text, vision) = (&self.text, &self.vision);
        ClipConfig {
            embed_dim: self.embed_dim,
            text: TextTowerConfig::Clip(TextConfig {
                vocab_size: TextConfig::clip_base().vocab_size,
                context_length: text.context_length,
                width: text.width,
                layers: text.layers,
                heads: text.heads,
                mlp_width: text.mlp_width,
                layer_norm_eps: CLIP_LAYER_NORM_EPS,
                activation: self.activation,
            }),
            vision: VisionConfig::Vit(VitConfig {
                image_size: vision.image_size,
                patch_size: vision.patch_size,
                width: vision.width,
                layers: vision.layers,
                heads: vision.heads,
                mlp_width: vision.mlp_width,
                layer_norm_eps: CLIP_LAYER_NORM_EPS,
                activation: self.activation,
                style: VitStyle::Clip,
            }),
            image_stats: Normalize::CLIP,
            image_resize: ImageResize::CLIP,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let text = &self.text;
        let vision = &self.vision;
        let positive = [
            ("model.embed_dim", self.embed_dim),
            ("model.text.width", text.width),
            ("model.text.layers", text.layers),
            ("model.text.heads", text.heads),
            ("model.text.mlp_width", text.mlp_width),
            ("model.text.context_length", text.context_length),
            ("model.vision.image_size", vision.image_size),
            ("model.vision.patch_size", vision.patch_size),
            ("model.vision.width", vision.width),
            ("model.vision.layers", vision.layers),
            ("model.vision.heads", vision.heads),
            ("model.vision.mlp_width", vision.mlp_width),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::invalid(*field, "must be positive"));
        }
        for (tower, width, heads) in [
            ("text", text.width, text.heads),
            ("vision", vision.width, vision.heads),
        ] {
            if width % heads != 0 {
                return Err(ConfigError::invalid(
                    format!("model.{tower}.heads"),
                    format!("must divide model.{tower}.width = {width}, got {heads}"),
                ));
            }
        }
        if vision.image_size > MAX_TINY_IMAGE_SIZE {
            return Err(ConfigError::invalid(
                "model.vision.image_size",
                format!(
                    "must be at most {MAX_TINY_IMAGE_SIZE}, got {}",
                    vision.image_size
                ),
            ));
        }
        if !vision.image_size.is_multiple_of(vision.patch_size) {
            return Err(ConfigError::invalid(
                "model.vision.patch_size",
                format!(
                    "must divide model.vision.image_size = {}, got {}",
                    vision.image_size, vision.patch_size
                ),
            ));
        }
        // The checks above name the configuration's fields; the model's own are the authority.
        self.clip_config()
            .validate()
            .map_err(|e| ConfigError::invalid("model", e))
    }
}
