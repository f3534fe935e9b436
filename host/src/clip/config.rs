//! CLIP architecture descriptions: the text transformer, the vision tower and the shared
//! embedding width.

use super::{BertConfig, ClipError};
use crate::backend::Activation;
use crate::data::{Geometry, Interpolation, Normalize, Transform};
use crate::memory::{f32_bytes, MemoryEstimate};

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
    /// The MLP's activation.
    pub activation: Activation,
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
    /// The MLP's activation.
    pub activation: Activation,
    /// Which of CLIP's and timm's variants of the ViT layout it has.
    pub style: VitStyle,
}

/// The two ViT layouts: CLIP's and timm's (BiomedCLIP's image tower). They differ only in which
/// layers carry parameters, so one forward pass runs both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitStyle {
    /// CLIP's: a LayerNorm before the blocks (`ln_pre`), no bias on the patch convolution or on
    /// the projection.
    Clip,
    /// timm's, as open_clip's `TimmModel` wraps it: no LayerNorm before the blocks, a bias on
    /// the patch convolution, and one on the projection when `projection_bias`
    /// (open_clip's `timm_proj_bias`).
    Timm {
        /// Whether the projection into the joint space has a bias.
        projection_bias: bool,
    },
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

/// The batch-norm epsilon of CLIP's ResNets (PyTorch's default).
pub const CLIP_BATCH_NORM_EPS: f32 = 1e-5;

/// CLIP's ModifiedResNet image tower (RN50, RN101, RN50x4, RN50x16, RN50x64).
///
/// A stem of three 3×3 convolutions (the first with stride 2) and a 2×2 average pool, four stages
/// of bottleneck blocks with `width·2^i` inner channels and 4× expansion (stages 2–4 halve the
/// map with an anti-aliasing average pool), then an attention pool over the final
/// `(image_size / 32)²` positions: `32·width` channels, `heads` heads, output `embed_dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Side of the square input image in pixels; a multiple of 32.
    pub image_size: usize,
    /// Channels after the stem (64 for RN50); the stem's first two convolutions have half.
    pub width: usize,
    /// Bottleneck blocks in each of the four stages (RN50: 3, 4, 6, 3).
    pub layers: [usize; 4],
    /// Heads of the attention pool (CLIP: `32·width / 64`).
    pub heads: usize,
    /// Batch-norm epsilon.
    pub batch_norm_eps: f32,
}

impl ResNetConfig {
    /// Channels of the last stage's output and of the attention pool, `32 × width`.
    pub fn pool_width(&self) -> usize {
        32 * self.width
    }

    /// Positions per side of the final feature map, `image_size / 32`.
    pub fn grid(&self) -> usize {
        self.image_size / 32
    }

    /// Spatial positions of the final map — the M of FedOTP (49 for RN50 at 224 px).
    pub fn positions(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Tokens per image: the pooled (mean) token and the positions.
    pub fn tokens(&self) -> usize {
        1 + self.positions()
    }

    /// The stem's three 3×3 convolutions as `(in_channels, out_channels, stride)`.
    pub fn stem(&self) -> [(usize, usize, usize); 3] {
        let half = self.width / 2;
        [(3, half, 2), (half, half, 1), (half, self.width, 1)]
    }

    /// Every bottleneck block in order, stage by stage.
    ///
    /// ```
    /// use fedotp_host::clip::{ClipConfig, VisionConfig};
    ///
    /// let VisionConfig::ResNet(rn50) = ClipConfig::rn50().vision else { unreachable!() };
    /// let blocks = rn50.blocks();
    /// assert_eq!(blocks.len(), 3 + 4 + 6 + 3);
    /// // layer2.0: 256 → 128 → 512 channels, halving the map; it needs a downsample.
    /// let b = &blocks[3];
    /// assert_eq!((b.stage, b.index, b.in_channels, b.planes, b.stride), (1, 0, 256, 128, 2));
    /// assert!(b.downsample && !blocks[4].downsample);
    /// ```
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut in_channels = self.width;
        let mut blocks = Vec::new();
        for (stage, &count) in self.layers.iter().enumerate() {
            let planes = self.width << stage;
            for index in 0..count {
                let stride = if stage > 0 && index == 0 { 2 } else { 1 };
                blocks.push(BlockSpec {
                    stage,
                    index,
                    in_channels,
                    planes,
                    stride,
                    downsample: stride > 1 || in_channels != 4 * planes,
                });
                in_channels = 4 * planes;
            }
        }
        blocks
    }
}

/// The dimensions of one ModifiedResNet bottleneck block (see [`ResNetConfig::blocks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// Stage, 0–3 (`layer1` … `layer4`).
    pub stage: usize,
    /// Position within the stage.
    pub index: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Inner channels; the block outputs `4 × planes`.
    pub planes: usize,
    /// 2 for the first block of stages 2–4 (the map is halved), else 1.
    pub stride: usize,
    /// Whether the shortcut has its own (pooled) 1×1 convolution and batch-norm: when the stride
    /// or the channel count changes.
    pub downsample: bool,
}

/// The image tower's architecture.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum VisionConfig {
    /// A vision transformer.
    Vit(VitConfig),
    /// A ModifiedResNet with an attention pool.
    ResNet(ResNetConfig),
}

impl VisionConfig {
    /// Side of the square input image in pixels.
    pub fn image_size(&self) -> usize {
        match self {
            VisionConfig::Vit(vit) => vit.image_size,
            VisionConfig::ResNet(resnet) => resnet.image_size,
        }
    }

    /// Tokens per image returned by the tower (class/pooled token first).
    pub fn tokens(&self) -> usize {
        match self {
            VisionConfig::Vit(vit) => vit.tokens(),
            VisionConfig::ResNet(resnet) => resnet.tokens(),
        }
    }
}

/// The text tower's architecture, one variant per kind of tower.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TextTowerConfig {
    /// CLIP's causal transformer, pooled at the end-of-text token.
    Clip(TextConfig),
    /// A BERT encoder pooled at `[CLS]` with open_clip's MLP projection (BiomedCLIP's).
    Bert(BertConfig),
}

impl TextTowerConfig {
    /// Width of the token embeddings, which is the width of each learned context vector.
    pub fn width(&self) -> usize {
        match self {
            TextTowerConfig::Clip(text) => text.width,
            TextTowerConfig::Bert(bert) => bert.width,
        }
    }

    /// Rows of the token-embedding table.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTowerConfig::Clip(text) => text.vocab_size,
            TextTowerConfig::Bert(bert) => bert.vocab_size,
        }
    }

    /// The most tokens a text may have, start and end tokens included (77 for CLIP, 256 for
    /// BiomedCLIP).
    pub fn context_length(&self) -> usize {
        match self {
            TextTowerConfig::Clip(text) => text.context_length,
            TextTowerConfig::Bert(bert) => bert.context_length,
        }
    }

    /// CLIP's text configuration, `None` for a BERT tower.
    pub fn as_clip(&self) -> Option<&TextConfig> {
        match self {
            TextTowerConfig::Clip(text) => Some(text),
            TextTowerConfig::Bert(_) => None,
        }
    }

    /// CLIP's text configuration to change, `None` for a BERT tower.
    pub fn as_clip_mut(&mut self) -> Option<&mut TextConfig> {
        match self {
            TextTowerConfig::Clip(text) => Some(text),
            TextTowerConfig::Bert(_) => None,
        }
    }
}

/// A whole CLIP model.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Width of the joint image–text embedding space.
    pub embed_dim: usize,
    /// The text tower.
    pub text: TextTowerConfig,
    /// The image tower.
    pub vision: VisionConfig,
    /// The per-channel statistics the model's images were normalised with in training: its
    /// configuration file's (open_clip's `preprocess_cfg`, Hugging Face's
    /// `preprocessor_config.json`), else CLIP's.
    pub image_stats: Normalize,
    /// How its evaluation images are brought to its input size: its configuration file's
    /// (open_clip's `resize_mode` and `interpolation`, Hugging Face's `resample`), else CLIP's.
    pub image_resize: ImageResize,
}

/// How a model's images are brought to its input size for evaluation: a deterministic
/// [`Geometry`] and the resampling filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageResize {
    /// [`Geometry::ResizeCenterCrop`], [`Geometry::Stretch`] or [`Geometry::ResizeLongestPad`].
    pub geometry: Geometry,
    /// The filter of the resize.
    pub interpolation: Interpolation,
}

impl ImageResize {
    /// CLIP's: the short side bicubically to the input size, then the centred crop.
    pub const CLIP: ImageResize = ImageResize {
        geometry: Geometry::ResizeCenterCrop,
        interpolation: Interpolation::Bicubic,
    };
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
            activation: Activation::QuickGelu,
        }
    }
}

impl ClipConfig {
    /// The evaluation transform of this model's images: its size, its resize and its
    /// normalisation.
    pub fn eval_transform(&self) -> Transform {
        Transform {
            geometry: self.image_resize.geometry,
            interpolation: self.image_resize.interpolation,
            normalize: self.image_stats,
            ..Transform::eval(self.vision.image_size() as u32)
        }
    }

    /// The training augmentation of this model's images ([`Transform::train`] at its size, with
    /// its normalisation; the random crop is bicubic, as open_clip's training transform is).
    pub fn train_transform(&self) -> Transform {
        Transform {
            normalize: self.image_stats,
            ..Transform::train(self.vision.image_size() as u32)
        }
    }

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
            text: TextTowerConfig::Clip(TextConfig::clip_base()),
            vision: VisionConfig::Vit(VitConfig {
                image_size: 224,
                patch_size,
                width: 768,
                layers: 12,
                heads: 12,
                mlp_width: 3072,
                layer_norm_eps: CLIP_LAYER_NORM_EPS,
                activation: Activation::QuickGelu,
                style: VitStyle::Clip,
            }),
            image_stats: Normalize::CLIP,
            image_resize: ImageResize::CLIP,
        }
    }

    /// OpenAI's RN50 at 224 px (embed 1024, text width 512): the backbone of FedOTP's few-shot
    /// runs. Its image features are 1 + 49 tokens.
    pub fn rn50() -> Self {
        Self::resnet(1024, 224, 64, [3, 4, 6, 3])
    }

    /// OpenAI's RN101 at 224 px (embed 512).
    pub fn rn101() -> Self {
        Self::resnet(512, 224, 64, [3, 4, 23, 3])
    }

    fn resnet(embed_dim: usize, image_size: usize, width: usize, layers: [usize; 4]) -> Self {
        ClipConfig {
            embed_dim,
            text: TextTowerConfig::Clip(TextConfig::clip_base()),
            vision: VisionConfig::ResNet(ResNetConfig {
                image_size,
                width,
                layers,
                heads: 32 * width / CLIP_HEAD_WIDTH,
                batch_norm_eps: CLIP_BATCH_NORM_EPS,
            }),
            image_stats: Normalize::CLIP,
            image_resize: ImageResize::CLIP,
        }
    }

    /// [`ClipConfig::tiny`] with a tiny ModifiedResNet image tower (width 8, one block per
    /// stage, 64 px images → 2 × 2 positions, attention pool of 256 channels in 4 heads).
    ///
    /// ```
    /// use fedotp_host::backend::{Backend, Cpu};
    /// use fedotp_host::clip::{vision_forward, ClipConfig, ClipWeights};
    ///
    /// let cpu = Cpu::new();
    /// let weights = ClipWeights::random(&ClipConfig::tiny_resnet(), 0)?.to_backend(&cpu)?;
    /// let images = cpu.upload(&vec![0.5; 2 * 3 * 64 * 64])?;
    /// let out = vision_forward(&cpu, &weights.vision, &images, 2)?;
    /// // The attention pool's output at the mean token and at each of the 2 × 2 positions.
    /// assert_eq!(out.tokens_per_image, 1 + 4);
    /// assert_eq!(out.tokens.len(), 2 * 5 * weights.config.embed_dim);
    /// # Ok::<(), fedotp_host::clip::ClipError>(())
    /// ```
    pub fn tiny_resnet() -> Self {
        ClipConfig {
            vision: VisionConfig::ResNet(ResNetConfig {
                image_size: 64,
                width: 8,
                layers: [1, 1, 1, 1],
                heads: 4,
                batch_norm_eps: CLIP_BATCH_NORM_EPS,
            }),
            ..Self::tiny()
        }
    }

    /// A tiny model (widths 64, 2 layers, 32 px images, full vocabulary) for examples and
    /// quick experiments with random weights.
    pub fn tiny() -> Self {
        ClipConfig {
            embed_dim: 32,
            text: TextTowerConfig::Clip(TextConfig {
                vocab_size: 49_408,
                context_length: 77,
                width: 64,
                layers: 2,
                heads: 2,
                mlp_width: 256,
                layer_norm_eps: CLIP_LAYER_NORM_EPS,
                activation: Activation::QuickGelu,
            }),
            vision: VisionConfig::Vit(VitConfig {
                image_size: 32,
                patch_size: 8,
                width: 64,
                layers: 2,
                heads: 2,
                mlp_width: 256,
                layer_norm_eps: CLIP_LAYER_NORM_EPS,
                activation: Activation::QuickGelu,
                style: VitStyle::Clip,
            }),
            image_stats: Normalize::CLIP,
            image_resize: ImageResize::CLIP,
        }
    }

    /// Checks that every dimension is positive and consistent.
    ///
    /// ```
    /// use fedotp_host::clip::ClipConfig;
    ///
    /// let mut config = ClipConfig::tiny();
    /// assert!(config.validate().is_ok());
    /// config.text.as_clip_mut().unwrap().heads = 3; // 64 is not divisible by 3
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ClipError> {
        let bad = |what: String| Err(ClipError::InvalidConfig(what));
        require_positive(&[("embed_dim", self.embed_dim)])?;
        match &self.text {
            TextTowerConfig::Clip(text) => {
                let positive = [
                    ("text.vocab_size", text.vocab_size),
                    ("text.context_length", text.context_length),
                    ("text.width", text.width),
                    ("text.heads", text.heads),
                    ("text.mlp_width", text.mlp_width),
                ];
                require_positive(&positive)?;
                if !text.width.is_multiple_of(text.heads) {
                    return bad(format!(
                        "text.width {} is not divisible by text.heads {}",
                        text.width, text.heads
                    ));
                }
            }
            TextTowerConfig::Bert(bert) => {
                bert.validate()?;
                if bert.embed_dim != self.embed_dim {
                    return bad(format!(
                        "the BERT tower projects to {} values, the image tower to embed_dim {}",
                        bert.embed_dim, self.embed_dim
                    ));
                }
            }
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
            VisionConfig::ResNet(resnet) => {
                let positive = [
                    ("vision.image_size", resnet.image_size),
                    ("vision.width", resnet.width),
                    ("vision.heads", resnet.heads),
                    ("vision.layers[0]", resnet.layers[0]),
                    ("vision.layers[1]", resnet.layers[1]),
                    ("vision.layers[2]", resnet.layers[2]),
                    ("vision.layers[3]", resnet.layers[3]),
                ];
                require_positive(&positive)?;
                if resnet.width % 2 != 0 {
                    return bad(format!(
                        "vision.width {} is odd: the stem's first convolutions have width / 2 channels",
                        resnet.width
                    ));
                }
                if resnet.image_size % 32 != 0 {
                    return bad(format!(
                        "vision.image_size {} is not a multiple of 32 (the ResNet's total stride)",
                        resnet.image_size
                    ));
                }
                if resnet.pool_width() % resnet.heads != 0 {
                    return bad(format!(
                        "the attention pool's width {} (32 × vision.width) is not divisible by vision.heads {}",
                        resnet.pool_width(),
                        resnet.heads
                    ));
                }
                if resnet.batch_norm_eps.is_nan() || resnet.batch_norm_eps <= 0.0 {
                    return bad(format!(
                        "vision.batch_norm_eps {} must be positive",
                        resnet.batch_norm_eps
                    ));
                }
            }
        }
        if self.parameters().is_none() {
            return bad("the architecture has more than 2^64 parameters".to_owned());
        }
        Ok(())
    }

    /// The host memory its weights take as `f32`.
    pub fn weights_memory(&self) -> MemoryEstimate {
        let parameters = self.parameters().unwrap_or(u64::MAX);
        MemoryEstimate::new().with("weights", f32_bytes(&[parameters]))
    }

    /// Number of weights (every float the model holds), counted without building anything;
    /// `None` when the count overflows `u64`.
    ///
    /// ```
    /// use fedotp_host::clip::ClipConfig;
    ///
    /// // OpenAI's ViT-B/16 holds 149.6 M floats (logit_scale is kept apart).
    /// assert_eq!(ClipConfig::vit_b_16().parameters(), Some(149_620_736));
    /// ```
    pub fn parameters(&self) -> Option<u64> {
        let embed = self.embed_dim as u64;
        let text_params = match &self.text {
            TextTowerConfig::Clip(text) => {
                let width = text.width as u64;
                sum(&[
                    mul(&[text.vocab_size as u64, width])?,
                    mul(&[text.context_length as u64, width])?,
                    mul(&[
                        text.layers as u64,
                        block_parameters(width, text.mlp_width as u64)?,
                    ])?,
                    mul(&[2, width])?,
                    mul(&[width, embed])?,
                ])?
            }
            TextTowerConfig::Bert(bert) => bert.parameters()?,
        };
        let vision_params = match &self.vision {
            VisionConfig::Vit(vit) => {
                let width = vit.width as u64;
                let patch_len = mul(&[3, vit.patch_size as u64, vit.patch_size as u64])?;
                let grid = (vit.image_size / vit.patch_size) as u64;
                // Per style: the pre-norm's two vectors (CLIP), or the patch bias and perhaps a
                // projection bias (timm).
                let style_params = match vit.style {
                    VitStyle::Clip => mul(&[2, width])?,
                    VitStyle::Timm { projection_bias } => {
                        width.checked_add(if projection_bias { embed } else { 0 })?
                    }
                };
                sum(&[
                    mul(&[patch_len, width])?,
                    width,
                    mul(&[grid, grid, width])?.checked_add(width)?,
                    mul(&[2, width])?,
                    style_params,
                    mul(&[
                        vit.layers as u64,
                        block_parameters(width, vit.mlp_width as u64)?,
                    ])?,
                    mul(&[width, embed])?,
                ])?
            }
            VisionConfig::ResNet(resnet) => resnet_parameters(resnet, embed)?,
        };
        text_params.checked_add(vision_params)
    }
}

/// `Σ values`, `None` on overflow.
pub(super) fn sum(values: &[u64]) -> Option<u64> {
    values.iter().try_fold(0u64, |acc, &v| acc.checked_add(v))
}

/// `Π values`, `None` on overflow.
pub(super) fn mul(values: &[u64]) -> Option<u64> {
    values.iter().try_fold(1u64, |acc, &v| acc.checked_mul(v))
}

/// A transformer block: two layer norms, the fused QKV and output projections and the MLP,
/// all with biases.
pub(super) fn block_parameters(width: u64, mlp_width: u64) -> Option<u64> {
    sum(&[
        mul(&[4, width])?,
        mul(&[3, width, width])?.checked_add(mul(&[3, width])?)?,
        mul(&[width, width])?.checked_add(width)?,
        mul(&[2, width, mlp_width])?,
        mlp_width.checked_add(width)?,
    ])
}

/// A convolution without bias and its batch-norm (γ, β, running mean and variance).
fn conv_norm_parameters(c_in: u64, c_out: u64, kernel: u64) -> Option<u64> {
    mul(&[c_out, c_in, kernel, kernel])?.checked_add(mul(&[4, c_out])?)
}

/// A ModifiedResNet's stem, stages and attention pool, stage by stage (its block list is not
/// built: a configuration may ask for more blocks than memory holds).
fn resnet_parameters(resnet: &ResNetConfig, embed: u64) -> Option<u64> {
    let width = resnet.width as u64;
    let mut total = 0u64;
    for (c_in, c_out, _) in resnet.stem() {
        total = total.checked_add(conv_norm_parameters(c_in as u64, c_out as u64, 3)?)?;
    }
    let mut in_channels = width;
    for (stage, &count) in resnet.layers.iter().enumerate() {
        let planes = width.checked_mul(1 << stage)?;
        let out = planes.checked_mul(4)?;
        let bottleneck = |c_in: u64| {
            sum(&[
                conv_norm_parameters(c_in, planes, 1)?,
                conv_norm_parameters(planes, planes, 3)?,
                conv_norm_parameters(planes, out, 1)?,
            ])
        };
        if count > 0 {
            // The first block takes the previous stage's channels and, when its stride or
            // channels change, a downsample; the others map `out` channels to `out`.
            let downsample = if stage > 0 || in_channels != out {
                conv_norm_parameters(in_channels, out, 1)?
            } else {
                0
            };
            let rest = mul(&[count as u64 - 1, bottleneck(out)?])?;
            total = sum(&[total, bottleneck(in_channels)?, downsample, rest])?;
            in_channels = out;
        }
    }
    let pool = width.checked_mul(32)?;
    let grid = (resnet.image_size / 32) as u64;
    sum(&[
        total,
        mul(&[grid, grid, pool])?.checked_add(pool)?,
        mul(&[3, pool, pool])?.checked_add(mul(&[3, pool])?)?,
        mul(&[pool, embed])?.checked_add(embed)?,
    ])
}

/// Fails naming the first dimension that is zero.
pub(super) fn require_positive(dims: &[(&str, usize)]) -> Result<(), ClipError> {
    match dims.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(ClipError::InvalidConfig(format!("{name} must be positive"))),
        None => Ok(()),
    }
}
