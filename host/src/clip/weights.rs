//! The canonical in-memory CLIP: one set of weight structures, whatever file layout the weights
//! came from, generic over the buffer type so the same structures hold host vectors (after
//! loading) or a backend's buffers (after [`ClipWeights::to_backend`]).
//!
//! Conventions: every linear weight is `(out, in)` like `nn.Linear`; attention's query, key and
//! value projections are fused into one `3·width × width` layer, queries first.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{ClipConfig, ClipError, TextConfig, VisionConfig, VitConfig};
use crate::backend::{Backend, BackendError, LayerNorm, Linear};

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
    /// MLP expansion, `mlp_width × width` (QuickGELU follows).
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
    /// The patch convolution as a linear layer over flattened patches, `width × 3·patch²`, no bias.
    pub patch_embedding: Linear<Buf>,
    /// The class token's embedding, `width`.
    pub class_embedding: Buf,
    /// Position embeddings, `(1 + patches) × width`.
    pub position_embedding: Buf,
    /// Layer norm before the blocks.
    pub ln_pre: LayerNorm<Buf>,
    /// The transformer blocks, in order.
    pub blocks: Vec<ResidualBlock<Buf>>,
    /// Layer norm after the blocks, applied to every token.
    pub ln_post: LayerNorm<Buf>,
    /// Projection into the joint space, `embed_dim × width`, no bias.
    pub projection: Linear<Buf>,
}

/// The image tower's weights, one variant per architecture.
///
/// The ModifiedResNet (RN50) tower will be a second variant.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum VisionWeights<Buf> {
    /// A vision transformer.
    Vit(VitWeights<Buf>),
}

/// A whole CLIP model.
#[derive(Debug, Clone)]
pub struct ClipWeights<Buf> {
    /// Its architecture.
    pub config: ClipConfig,
    /// The text tower.
    pub text: TextWeights<Buf>,
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
                ln_pre: vit.ln_pre.try_map(f)?,
                blocks: map_blocks(vit.blocks, f)?,
                ln_post: vit.ln_post.try_map(f)?,
                projection: vit.projection.try_map(f)?,
            }),
        })
    }
}

impl ClipWeights<Vec<f32>> {
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
    /// `logit_scale = ln(1/0.07)`). For examples, tests and benchmarks; the same seed gives the
    /// same weights.
    ///
    /// ```
    /// use fedotp::clip::{ClipConfig, ClipWeights};
    ///
    /// let weights = ClipWeights::random(&ClipConfig::tiny(), 7)?;
    /// assert_eq!(weights.text.blocks.len(), 2);
    /// # Ok::<(), fedotp::clip::ClipError>(())
    /// ```
    pub fn random(config: &ClipConfig, seed: u64) -> Result<Self, ClipError> {
        config.validate()?;
        let mut init = RandomInit(ChaCha8Rng::seed_from_u64(seed));
        let text_cfg = &config.text;
        let text = TextWeights {
            config: text_cfg.clone(),
            token_embedding: init.normal(text_cfg.vocab_size * text_cfg.width, 0.02),
            position_embedding: init.normal(text_cfg.context_length * text_cfg.width, 0.01),
            blocks: (0..text_cfg.layers)
                .map(|_| {
                    init.block(
                        text_cfg.width,
                        text_cfg.mlp_width,
                        text_cfg.layers,
                        text_cfg.layer_norm_eps,
                    )
                })
                .collect(),
            ln_final: RandomInit::layer_norm(text_cfg.width, text_cfg.layer_norm_eps),
            projection: init.linear(
                text_cfg.width,
                config.embed_dim,
                (text_cfg.width as f32).powf(-0.5),
                false,
            ),
        };
        let vision = match &config.vision {
            VisionConfig::Vit(vit) => {
                let scale = (vit.width as f32).powf(-0.5);
                let patch_len = 3 * vit.patch_size * vit.patch_size;
                VisionWeights::Vit(VitWeights {
                    config: vit.clone(),
                    patch_embedding: init.linear(
                        patch_len,
                        vit.width,
                        (patch_len as f32).powf(-0.5),
                        false,
                    ),
                    class_embedding: init.normal(vit.width, scale),
                    position_embedding: init.normal(vit.tokens() * vit.width, scale),
                    ln_pre: RandomInit::layer_norm(vit.width, vit.layer_norm_eps),
                    blocks: (0..vit.layers)
                        .map(|_| {
                            init.block(vit.width, vit.mlp_width, vit.layers, vit.layer_norm_eps)
                        })
                        .collect(),
                    ln_post: RandomInit::layer_norm(vit.width, vit.layer_norm_eps),
                    projection: init.linear(vit.width, config.embed_dim, scale, false),
                })
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
