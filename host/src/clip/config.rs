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
            text: TextConfig::clip_base(),
            vision: VisionConfig::ResNet(ResNetConfig {
                image_size,
                width,
                layers,
                heads: 32 * width / CLIP_HEAD_WIDTH,
                batch_norm_eps: CLIP_BATCH_NORM_EPS,
            }),
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
    /// use fedotp_host::clip::ClipConfig;
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
        if !text.width.is_multiple_of(text.heads) {
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
