//! The canonical in-memory CLIP: one set of weight structures, whatever file layout the weights
//! came from, generic over the buffer type so the same structures hold host vectors (after
//! loading) or a backend's buffers (after [`ClipWeights::to_backend`]).
//!
//! Conventions: every linear weight is `(out, in)` like `nn.Linear`; attention's query, key and
//! value projections are fused into one `3·width × width` layer, queries first.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use sha2::{Digest, Sha256};

use super::{
    BertConfig, BertLayer, BertTextWeights, ClipConfig, ClipError, ResNetConfig, TextConfig,
    TextTowerConfig, VisionConfig, VitConfig, VitStyle,
};
use crate::backend::{Backend, BackendError, BatchNorm, Conv2d, LayerNorm, Linear};

/// One pre-norm transformer block: `x += attn(ln_1(x)); x += mlp(ln_2(x))`.
#[derive(Debug, Clone)]
pub struct ResidualBlock<Buf> {
    /// Layer norm before attention.
    pub ln_1: LayerNorm<Buf>,
    /// Fused query/key/value projection, `3·width × width`.
    pub attn_qkv: Linear<Buf>,
    /// Attention output projection, `width × width`.
    pub attn_out: Linear<Buf>,
    /// Layer norm before the MLP.
    pub ln_2: LayerNorm<Buf>,
    /// MLP expansion, `mlp_width × width` (the model's activation follows).
    pub mlp_fc: Linear<Buf>,
    /// MLP contraction, `width × mlp_width`.
    pub mlp_proj: Linear<Buf>,
}

/// The text tower.
#[derive(Debug, Clone)]
pub struct TextWeights<Buf> {
    /// Its architecture.
    pub config: TextConfig,
    /// Token embedding table, `vocab_size × width`.
    pub token_embedding: Buf,
    /// Position embeddings, `context_length × width`.
    pub position_embedding: Buf,
    /// The transformer blocks, in order.
    pub blocks: Vec<ResidualBlock<Buf>>,
    /// Final layer norm.
    pub ln_final: LayerNorm<Buf>,
    /// Projection into the joint space, `embed_dim × width`, no bias.
    pub projection: Linear<Buf>,
}

/// A ViT image tower.
#[derive(Debug, Clone)]
pub struct VitWeights<Buf> {
    /// Its architecture.
    pub config: VitConfig,
    /// The patch convolution as a linear layer over flattened patches (channel, row, column),
    /// `width × 3·patch²`; without bias in CLIP, with one in timm's ViTs.
    pub patch_embedding: Linear<Buf>,
    /// The class token's embedding, `width`.
    pub class_embedding: Buf,
    /// Position embeddings, `(1 + patches) × width`, the class token's first.
    pub position_embedding: Buf,
    /// Layer norm before the blocks; `None` for timm's ViTs (their `norm_pre` is the identity).
    pub ln_pre: Option<LayerNorm<Buf>>,
    /// The transformer blocks, in order.
    pub blocks: Vec<ResidualBlock<Buf>>,
    /// Layer norm after the blocks, applied to every token (timm's `norm`).
    pub ln_post: LayerNorm<Buf>,
    /// Projection into the joint space, `embed_dim × width`, applied to every token; no bias in
    /// CLIP (open_clip's timm head has one only with `timm_proj_bias`).
    pub projection: Linear<Buf>,
}

/// A convolution and the batch-norm that follows it (every convolution of CLIP's ResNet).
#[derive(Debug, Clone)]
pub struct ConvNorm<Buf> {
    /// The convolution (no bias).
    pub conv: Conv2d<Buf>,
    /// Its batch-norm.
    pub norm: BatchNorm<Buf>,
}

/// A ModifiedResNet bottleneck block (CLIP's `Bottleneck`, 4× expansion), whose convolutions all
/// have stride 1 — a stride-2 block downsamples with an average pool instead:
///
/// ```text
/// h   = relu(bn1(conv1(x)))                  1×1, in → planes
/// h   = relu(bn2(conv2(h)))                  3×3, padding 1
/// h   = avg_pool(h, stride)                  only when stride > 1
/// out = relu(bn3(conv3(h)) + shortcut(x))    1×1, planes → 4·planes
/// shortcut(x) = x, or bn(conv(avg_pool(x, stride))) (1×1) when the stride or width changes
/// ```
#[derive(Debug, Clone)]
pub struct Bottleneck<Buf> {
    /// 1×1 reduction to `planes` channels, with `bn1`.
    pub conv1: ConvNorm<Buf>,
    /// 3×3 convolution, with `bn2`.
    pub conv2: ConvNorm<Buf>,
    /// 1×1 expansion to `4·planes` channels, with `bn3`.
    pub conv3: ConvNorm<Buf>,
    /// Downsampling factor of the block's average pools (1 or 2).
    pub stride: usize,
    /// The shortcut's 1×1 convolution and batch-norm (`downsample.0`, `downsample.1`), after an
    /// average pool of `stride`; `None` when the shortcut is the identity.
    pub downsample: Option<ConvNorm<Buf>>,
}

/// CLIP's attention pool (`AttentionPool2d`), queried at every position: the tokens
/// `[mean of the positions; the positions] + position_embedding` attend to each other with
/// full multi-head attention, and every output goes through `c_proj`.
#[derive(Debug, Clone)]
pub struct AttentionPool<Buf> {
    /// Position embeddings, `(1 + positions) × pool_width`.
    pub position_embedding: Buf,
    /// `q_proj`, `k_proj` and `v_proj` fused, `3·pool_width × pool_width`, queries first.
    pub qkv: Linear<Buf>,
    /// Output projection into the joint space, `embed_dim × pool_width`.
    pub c_proj: Linear<Buf>,
}

/// A ModifiedResNet image tower.
#[derive(Debug, Clone)]
pub struct ResNetWeights<Buf> {
    /// Its architecture.
    pub config: ResNetConfig,
    /// The stem's three 3×3 convolutions with their batch-norms (`conv1`/`bn1` with stride 2,
    /// `conv2`/`bn2`, `conv3`/`bn3`), each followed by a ReLU; a 2×2 average pool follows.
    pub stem: Vec<ConvNorm<Buf>>,
    /// The four stages (`layer1` … `layer4`), each a list of blocks.
    pub stages: Vec<Vec<Bottleneck<Buf>>>,
    /// The attention pool.
    pub attention_pool: AttentionPool<Buf>,
}

/// The image tower's weights, one variant per architecture.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum VisionWeights<Buf> {
    /// A vision transformer.
    Vit(VitWeights<Buf>),
    /// A ModifiedResNet with an attention pool.
    ResNet(ResNetWeights<Buf>),
}

/// The text tower's weights, one variant per kind of tower.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TextTower<Buf> {
    /// CLIP's causal transformer.
    Clip(TextWeights<Buf>),
    /// A BERT encoder with open_clip's pooling and projection (BiomedCLIP's).
    Bert(BertTextWeights<Buf>),
}

impl<Buf> TextTower<Buf> {
    /// The token-embedding table, `vocab_size × width`: what token ids and learned context
    /// vectors are embedded in.
    pub fn token_embedding(&self) -> &Buf {
        match self {
            TextTower::Clip(text) => &text.token_embedding,
            TextTower::Bert(bert) => &bert.word_embedding,
        }
    }

    /// Width of the token embeddings.
    pub fn width(&self) -> usize {
        match self {
            TextTower::Clip(text) => text.config.width,
            TextTower::Bert(bert) => bert.config.width,
        }
    }

    /// Rows of the token-embedding table.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTower::Clip(text) => text.config.vocab_size,
            TextTower::Bert(bert) => bert.config.vocab_size,
        }
    }

    /// The most tokens a text may have, start and end tokens included.
    pub fn context_length(&self) -> usize {
        match self {
            TextTower::Clip(text) => text.config.context_length,
            TextTower::Bert(bert) => bert.config.context_length,
        }
    }

    /// Width of the features it projects texts to (the joint space).
    pub fn embed_dim(&self) -> usize {
        match self {
            TextTower::Clip(text) => text.projection.out_features,
            TextTower::Bert(bert) => bert.config.embed_dim,
        }
    }

    /// The same weights with each buffer converted by `f`.
    pub fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<TextTower<T>, E> {
        Ok(match self {
            TextTower::Clip(text) => TextTower::Clip(text.try_map(f)?),
            TextTower::Bert(bert) => TextTower::Bert(bert.try_map(f)?),
        })
    }
}

/// A whole CLIP model.
#[derive(Debug, Clone)]
pub struct ClipWeights<Buf> {
    /// Its architecture.
    pub config: ClipConfig,
    /// The text tower.
    pub text: TextTower<Buf>,
    /// The image tower.
    pub vision: VisionWeights<Buf>,
    /// CLIP's learned temperature, as stored: logits are scaled by `logit_scale.exp()`.
    pub logit_scale: f32,
}

impl<Buf> ResidualBlock<Buf> {
    fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<ResidualBlock<T>, E> {
        Ok(ResidualBlock {
            ln_1: self.ln_1.try_map(f)?,
            attn_qkv: self.attn_qkv.try_map(f)?,
            attn_out: self.attn_out.try_map(f)?,
            ln_2: self.ln_2.try_map(f)?,
            mlp_fc: self.mlp_fc.try_map(f)?,
            mlp_proj: self.mlp_proj.try_map(f)?,
        })
    }
}

impl<Buf> ConvNorm<Buf> {
    fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<ConvNorm<T>, E> {
        Ok(ConvNorm {
            conv: self.conv.try_map(f)?,
            norm: self.norm.try_map(f)?,
        })
    }
}

impl<Buf> Bottleneck<Buf> {
    fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<Bottleneck<T>, E> {
        Ok(Bottleneck {
            conv1: self.conv1.try_map(f)?,
            conv2: self.conv2.try_map(f)?,
            conv3: self.conv3.try_map(f)?,
            stride: self.stride,
            downsample: self.downsample.map(|d| d.try_map(f)).transpose()?,
        })
    }
}

impl<Buf> ResNetWeights<Buf> {
    /// The same weights with each buffer converted by `f`.
    pub fn try_map<T, E>(
        self,
        f: &mut impl FnMut(Buf) -> Result<T, E>,
    ) -> Result<ResNetWeights<T>, E> {
        let pool = self.attention_pool;
        Ok(ResNetWeights {
            config: self.config,
            stem: self
                .stem
                .into_iter()
                .map(|c| c.try_map(f))
                .collect::<Result<_, _>>()?,
            stages: self
                .stages
                .into_iter()
                .map(|stage| stage.into_iter().map(|b| b.try_map(f)).collect())
                .collect::<Result<_, _>>()?,
            attention_pool: AttentionPool {
                position_embedding: f(pool.position_embedding)?,
                qkv: pool.qkv.try_map(f)?,
                c_proj: pool.c_proj.try_map(f)?,
            },
        })
    }
}

fn map_blocks<Buf, T, E>(
    blocks: Vec<ResidualBlock<Buf>>,
    f: &mut impl FnMut(Buf) -> Result<T, E>,
) -> Result<Vec<ResidualBlock<T>>, E> {
    blocks.into_iter().map(|b| b.try_map(f)).collect()
}

impl<Buf> TextWeights<Buf> {
    /// The same weights with each buffer converted by `f`.
    pub fn try_map<T, E>(
        self,
        f: &mut impl FnMut(Buf) -> Result<T, E>,
    ) -> Result<TextWeights<T>, E> {
        Ok(TextWeights {
            config: self.config,
            token_embedding: f(self.token_embedding)?,
            position_embedding: f(self.position_embedding)?,
            blocks: map_blocks(self.blocks, f)?,
            ln_final: self.ln_final.try_map(f)?,
            projection: self.projection.try_map(f)?,
        })
    }
}

impl<Buf> VisionWeights<Buf> {
    /// The same weights with each buffer converted by `f`.
    pub fn try_map<T, E>(
        self,
        f: &mut impl FnMut(Buf) -> Result<T, E>,
    ) -> Result<VisionWeights<T>, E> {
        Ok(match self {
            VisionWeights::Vit(vit) => VisionWeights::Vit(VitWeights {
                config: vit.config,
                patch_embedding: vit.patch_embedding.try_map(f)?,
                class_embedding: f(vit.class_embedding)?,
                position_embedding: f(vit.position_embedding)?,
                ln_pre: vit.ln_pre.map(|ln| ln.try_map(f)).transpose()?,
                blocks: map_blocks(vit.blocks, f)?,
                ln_post: vit.ln_post.try_map(f)?,
                projection: vit.projection.try_map(f)?,
            }),
            VisionWeights::ResNet(resnet) => VisionWeights::ResNet(resnet.try_map(f)?),
        })
    }
}

impl ClipWeights<Vec<f32>> {
    /// SHA-256 of the architecture and of every value of every tensor (their `f32` bits,
    /// little-endian, tensor after tensor in the model's fixed order), as 64 hex digits: equal
    /// fingerprints mean the same model. Reads every value once (a second or two for
    /// ViT-B/16, with a transient copy of the weights).
    ///
    /// ```
    /// use fedotp_host::clip::{ClipConfig, ClipWeights, TextTower};
    ///
    /// let a = ClipWeights::random(&ClipConfig::tiny(), 1)?;
    /// let mut b = a.clone();
    /// assert_eq!(a.fingerprint(), b.fingerprint());
    /// b.logit_scale += 1.0;
    /// assert_ne!(a.fingerprint(), b.fingerprint());
    /// let mut c = a.clone();
    /// let TextTower::Clip(text) = &mut c.text else { unreachable!("the tiny CLIP's") };
    /// text.position_embedding[0] += 1e-6;
    /// assert_ne!(a.fingerprint(), c.fingerprint());
    /// # Ok::<(), fedotp_host::clip::ClipError>(())
    /// ```
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(format!("fedotp CLIP weights 1 {}", architecture(&self.config)).as_bytes());
        hash.update(self.logit_scale.to_le_bytes());
        let mut bytes = Vec::with_capacity(1 << 16);
        let mut add = |tensor: Vec<f32>| -> Result<(), std::convert::Infallible> {
            hash.update((tensor.len() as u64).to_le_bytes());
            for chunk in tensor.chunks(1 << 14) {
                bytes.clear();
                bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                hash.update(&bytes);
            }
            Ok(())
        };
        let copy = self.clone();
        let Ok(_) = copy.text.try_map(&mut add);
        let Ok(_) = copy.vision.try_map(&mut add);
        hash.finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Moves the weights into `backend`'s buffers (without a copy on the CPU backend).
    pub fn to_backend<B: Backend>(self, backend: &B) -> Result<ClipWeights<B::Buf>, BackendError> {
        let mut upload = |v: Vec<f32>| backend.upload_vec(v);
        Ok(ClipWeights {
            config: self.config,
            text: self.text.try_map(&mut upload)?,
            vision: self.vision.try_map(&mut upload)?,
            logit_scale: self.logit_scale,
        })
    }

    /// Seeded random weights of any architecture, drawn with the scales of CLIP's own
    /// initialisation (token embeddings σ 0.02, positions σ 0.01, attention σ width^-½, output
    /// projections σ width^-½·(2·layers)^-½, MLP σ (2·width)^-½; zero biases, unit norms;
    /// `logit_scale = ln(1/0.07)`); a BERT text tower gets BERT's (σ 0.02 throughout). A ResNet tower gets He-normal convolutions
    /// (σ = (2 / fan_in)^½), identity batch-norms (γ 1, β 0, mean 0, variance 1) except each
    /// block's `bn3`, whose γ is zero as in CLIP (every block starts as its shortcut), and an
    /// attention pool with σ = pool_width^-½. For examples, tests and benchmarks; the same seed
    /// gives the same weights.
    ///
    /// ```
    /// use fedotp_host::clip::{ClipConfig, ClipWeights, TextTower};
    ///
    /// let weights = ClipWeights::random(&ClipConfig::tiny(), 7)?;
    /// let TextTower::Clip(text) = &weights.text else { unreachable!("the tiny CLIP's") };
    /// assert_eq!(text.blocks.len(), 2);
    /// # Ok::<(), fedotp_host::clip::ClipError>(())
    /// ```
    pub fn random(config: &ClipConfig, seed: u64) -> Result<Self, ClipError> {
        config.validate()?;
        config
            .weights_memory()
            .check("drawing the model's random weights")?;
        let mut init = RandomInit(ChaCha8Rng::seed_from_u64(seed));
        let text = match &config.text {
            TextTowerConfig::Clip(text) => TextTower::Clip(init.clip_text(text, config.embed_dim)),
            TextTowerConfig::Bert(bert) => TextTower::Bert(init.bert(bert)),
        };
        let vision = match &config.vision {
            VisionConfig::Vit(vit) => {
                let scale = (vit.width as f32).powf(-0.5);
                let patch_len = 3 * vit.patch_size * vit.patch_size;
                let (pre_norm, patch_bias, projection_bias) = match vit.style {
                    VitStyle::Clip => (true, false, false),
                    VitStyle::Timm { projection_bias } => (false, true, projection_bias),
                };
                VisionWeights::Vit(VitWeights {
                    config: vit.clone(),
                    patch_embedding: init.linear(
                        patch_len,
                        vit.width,
                        (patch_len as f32).powf(-0.5),
                        patch_bias,
                    ),
                    class_embedding: init.normal(vit.width, scale),
                    position_embedding: init.normal(vit.tokens() * vit.width, scale),
                    ln_pre: pre_norm.then(|| RandomInit::layer_norm(vit.width, vit.layer_norm_eps)),
                    blocks: (0..vit.layers)
                        .map(|_| {
                            init.block(vit.width, vit.mlp_width, vit.layers, vit.layer_norm_eps)
                        })
                        .collect(),
                    ln_post: RandomInit::layer_norm(vit.width, vit.layer_norm_eps),
                    projection: init.linear(vit.width, config.embed_dim, scale, projection_bias),
                })
            }
            VisionConfig::ResNet(resnet) => {
                VisionWeights::ResNet(init.resnet(resnet, config.embed_dim))
            }
        };
        Ok(ClipWeights {
            config: config.clone(),
            text,
            vision,
            logit_scale: (1.0f32 / 0.07).ln(),
        })
    }
}

/// The architecture as the fingerprint hashes it. For CLIP's towers this is the text the
/// fingerprint has hashed since its first version (the configuration's `Debug` form before BERT
/// and timm towers existed), so that the fingerprints of CLIP models, to which libfedotp's
/// saved client states are tied, stay what they were; other towers add what tells them apart.
fn architecture(config: &ClipConfig) -> String {
    let text = match &config.text {
        TextTowerConfig::Clip(text) => format!("{text:?}"),
        TextTowerConfig::Bert(bert) => format!("Bert({bert:?})"),
    };
    let vision = match &config.vision {
        VisionConfig::Vit(v) => {
            let style = match v.style {
                VitStyle::Clip => String::new(),
                VitStyle::Timm { projection_bias } => {
                    format!(", style: Timm {{ projection_bias: {projection_bias} }}")
                }
            };
            format!(
                "Vit(VitConfig {{ image_size: {}, patch_size: {}, width: {}, layers: {}, \
                 heads: {}, mlp_width: {}, layer_norm_eps: {:?}, activation: {:?}{style} }})",
                v.image_size,
                v.patch_size,
                v.width,
                v.layers,
                v.heads,
                v.mlp_width,
                v.layer_norm_eps,
                v.activation
            )
        }
        other => format!("{other:?}"),
    };
    format!(
        "ClipConfig {{ embed_dim: {}, text: {text}, vision: {vision}, image_stats: {:?}, \
         image_resize: {:?} }}",
        config.embed_dim, config.image_stats, config.image_resize
    )
}

/// Draws CLIP-like random weights from one seeded stream.
struct RandomInit(ChaCha8Rng);

impl RandomInit {
    fn normal(&mut self, len: usize, std: f32) -> Vec<f32> {
        let normal = Normal::new(0.0f32, std).expect("standard deviations here are positive");
        (0..len).map(|_| normal.sample(&mut self.0)).collect()
    }

    fn linear(&mut self, n_in: usize, n_out: usize, std: f32, bias: bool) -> Linear<Vec<f32>> {
        Linear {
            weight: self.normal(n_out * n_in, std),
            bias: bias.then(|| vec![0.0; n_out]),
            in_features: n_in,
            out_features: n_out,
        }
    }

    fn layer_norm(width: usize, eps: f32) -> LayerNorm<Vec<f32>> {
        LayerNorm {
            weight: vec![1.0; width],
            bias: vec![0.0; width],
            width,
            eps,
        }
    }

    /// CLIP's text tower with CLIP's initial scales.
    fn clip_text(&mut self, config: &TextConfig, embed_dim: usize) -> TextWeights<Vec<f32>> {
        let (width, eps) = (config.width, config.layer_norm_eps);
        TextWeights {
            config: config.clone(),
            token_embedding: self.normal(config.vocab_size * width, 0.02),
            position_embedding: self.normal(config.context_length * width, 0.01),
            blocks: (0..config.layers)
                .map(|_| self.block(width, config.mlp_width, config.layers, eps))
                .collect(),
            ln_final: Self::layer_norm(width, eps),
            projection: self.linear(width, embed_dim, (width as f32).powf(-0.5), false),
        }
    }

    /// A BERT tower with BERT's initialisation: every weight and embedding σ 0.02, zero biases,
    /// unit LayerNorms (`BertPreTrainedModel._init_weights`).
    fn bert(&mut self, config: &BertConfig) -> BertTextWeights<Vec<f32>> {
        let (width, mlp, eps) = (config.width, config.mlp_width, config.layer_norm_eps);
        let std = 0.02;
        BertTextWeights {
            config: config.clone(),
            word_embedding: self.normal(config.vocab_size * width, std),
            position_embedding: self.normal(config.max_positions * width, std),
            embedding_ln: Self::layer_norm(width, eps),
            layers: (0..config.layers)
                .map(|_| BertLayer {
                    attn_qkv: self.linear(width, 3 * width, std, true),
                    attn_out: self.linear(width, width, std, true),
                    attn_ln: Self::layer_norm(width, eps),
                    mlp_fc: self.linear(width, mlp, std, true),
                    mlp_out: self.linear(mlp, width, std, true),
                    mlp_ln: Self::layer_norm(width, eps),
                })
                .collect(),
            proj_fc: self.linear(width, config.proj_width, std, false),
            proj_out: self.linear(config.proj_width, config.embed_dim, std, false),
        }
    }

    /// A convolution with He-normal weights and its batch-norm, identity but for `gamma`.
    fn conv_norm(
        &mut self,
        (c_in, c_out, kernel, stride): (usize, usize, usize, usize),
        gamma: f32,
        eps: f32,
    ) -> ConvNorm<Vec<f32>> {
        let fan_in = c_in * kernel * kernel;
        ConvNorm {
            conv: Conv2d {
                weight: self.normal(c_out * fan_in, (2.0 / fan_in as f32).sqrt()),
                in_channels: c_in,
                out_channels: c_out,
                kernel,
                stride,
                padding: kernel / 2,
            },
            norm: BatchNorm {
                weight: vec![gamma; c_out],
                bias: vec![0.0; c_out],
                running_mean: vec![0.0; c_out],
                running_var: vec![1.0; c_out],
                channels: c_out,
                eps,
            },
        }
    }

    fn resnet(&mut self, config: &ResNetConfig, embed_dim: usize) -> ResNetWeights<Vec<f32>> {
        let eps = config.batch_norm_eps;
        let stem = config
            .stem()
            .iter()
            .map(|&(c_in, c_out, stride)| self.conv_norm((c_in, c_out, 3, stride), 1.0, eps))
            .collect();
        let mut stages: Vec<Vec<_>> = vec![Vec::new(); 4];
        for b in config.blocks() {
            let (c_in, planes) = (b.in_channels, b.planes);
            stages[b.stage].push(Bottleneck {
                conv1: self.conv_norm((c_in, planes, 1, 1), 1.0, eps),
                conv2: self.conv_norm((planes, planes, 3, 1), 1.0, eps),
                conv3: self.conv_norm((planes, 4 * planes, 1, 1), 0.0, eps),
                stride: b.stride,
                downsample: b
                    .downsample
                    .then(|| self.conv_norm((c_in, 4 * planes, 1, 1), 1.0, eps)),
            });
        }
        let pool_width = config.pool_width();
        let std = (pool_width as f32).powf(-0.5);
        ResNetWeights {
            config: config.clone(),
            stem,
            stages,
            attention_pool: AttentionPool {
                position_embedding: self.normal(config.tokens() * pool_width, std),
                qkv: self.linear(pool_width, 3 * pool_width, std, true),
                c_proj: self.linear(pool_width, embed_dim, std, true),
            },
        }
    }

    fn block(
        &mut self,
        width: usize,
        mlp_width: usize,
        layers: usize,
        eps: f32,
    ) -> ResidualBlock<Vec<f32>> {
        let attn_std = (width as f32).powf(-0.5);
        let proj_std = attn_std * ((2 * layers) as f32).powf(-0.5);
        let fc_std = ((2 * width) as f32).powf(-0.5);
        ResidualBlock {
            ln_1: Self::layer_norm(width, eps),
            attn_qkv: self.linear(width, 3 * width, attn_std, true),
            attn_out: self.linear(width, width, proj_std, true),
            ln_2: Self::layer_norm(width, eps),
            mlp_fc: self.linear(width, mlp_width, fc_std, true),
            mlp_proj: self.linear(mlp_width, width, proj_std, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::ResNetConfig;

    /// BiomedCLIP's architecture, small: a BERT text tower and a timm ViT, with or without the
    /// projection's bias.
    fn tiny_biomedclip(projection_bias: bool) -> ClipConfig {
        let mut config = ClipConfig::tiny();
        config.text = TextTowerConfig::Bert(BertConfig {
            width: 48,
            heads: 4,
            layers: 2,
            mlp_width: 96,
            max_positions: 40,
            vocab_size: 70,
            context_length: 32,
            layer_norm_eps: 1e-12,
            embed_dim: config.embed_dim,
            proj_width: 40,
        });
        if let VisionConfig::Vit(vit) = &mut config.vision {
            vit.style = VitStyle::Timm { projection_bias };
        }
        config
    }

    /// The fingerprint hashes CLIP's architectures as it did before BERT and timm towers
    /// existed (libfedotp's saved states are tied to it): the text below is the derived
    /// `Debug` form of the tiny model's configuration in that version.
    #[test]
    fn fingerprints_of_clip_architectures_are_unchanged() {
        let tiny = "ClipConfig { embed_dim: 32, text: TextConfig { vocab_size: 49408, \
            context_length: 77, width: 64, layers: 2, heads: 2, mlp_width: 256, \
            layer_norm_eps: 1e-5, activation: QuickGelu }, vision: Vit(VitConfig { \
            image_size: 32, patch_size: 8, width: 64, layers: 2, heads: 2, mlp_width: 256, \
            layer_norm_eps: 1e-5, activation: QuickGelu }), image_stats: Normalize { mean: \
            [0.48145467, 0.4578275, 0.40821072], std: [0.26862955, 0.2613026, 0.2757771] }, \
            image_resize: ImageResize { geometry: ResizeCenterCrop, interpolation: Bicubic } }";
        assert_eq!(architecture(&ClipConfig::tiny()), tiny);
        // Other towers are told apart.
        let timm = tiny_biomedclip(false);
        assert_ne!(architecture(&timm), architecture(&tiny_biomedclip(true)));
        assert!(architecture(&timm).contains("Bert(BertConfig {"));
    }

    /// Floats in every buffer of `weights`.
    fn floats(weights: ClipWeights<Vec<f32>>) -> u64 {
        let mut count = 0u64;
        let mut tally = |buffer: Vec<f32>| {
            count += buffer.len() as u64;
            Ok::<_, ()>(())
        };
        weights.text.try_map(&mut tally).unwrap();
        weights.vision.try_map(&mut tally).unwrap();
        count
    }

    /// The count made from the configuration alone is the count of what is built, for each
    /// tower kind and for stages whose first block needs a downsample or does not.
    #[test]
    fn parameters_count_what_random_weights_hold() {
        let mut wide = ClipConfig::tiny();
        let text = wide.text.as_clip_mut().unwrap();
        text.context_length = 20;
        text.layers = 3;
        wide.embed_dim = 24;
        let VisionConfig::ResNet(tiny_resnet) = ClipConfig::tiny_resnet().vision else {
            unreachable!()
        };
        let uneven = ClipConfig {
            vision: VisionConfig::ResNet(ResNetConfig {
                layers: [2, 1, 3, 1],
                width: 16,
                heads: 8,
                ..tiny_resnet
            }),
            ..ClipConfig::tiny()
        };
        for config in [
            ClipConfig::tiny(),
            ClipConfig::tiny_resnet(),
            wide,
            uneven,
            tiny_biomedclip(false),
            tiny_biomedclip(true),
        ] {
            let expected = config.parameters().unwrap();
            assert_eq!(
                floats(ClipWeights::random(&config, 0).unwrap()),
                expected,
                "{config:?}"
            );
        }
    }

    /// Sizes whose weights cannot exist are refused before anything is drawn.
    #[test]
    fn impossible_sizes_are_refused_before_drawing() {
        let mut huge = ClipConfig::tiny();
        huge.text.as_clip_mut().unwrap().layers = 1 << 40;
        let error = ClipWeights::random(&huge, 0).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("drawing the model's random weights needs about "),
            "{error}"
        );
        let text = huge.text.as_clip_mut().unwrap();
        text.width = usize::MAX / 2;
        text.heads = 1;
        assert!(huge.parameters().is_none());
        let error = ClipWeights::random(&huge, 0).unwrap_err();
        assert!(
            error.to_string().contains("more than 2^64 parameters"),
            "{error}"
        );
    }
}
