//! The frozen CLIP every client shares: its weights on a compute backend and its tokenizer.

use std::path::Path;

use super::TrainError;
use crate::backend::Backend;
use crate::clip::{ClipConfig, ClipWeights, TextTokenizer, TextTower, VisionConfig};
use crate::config::{Backbone, ModelConfig};
use crate::prompt::{encode_images, unit_features, ImageBatchFeatures};

/// CLIP with its weights on `B`: what every client trains its prompts through.
pub struct FrozenClip<B: Backend> {
    backend: B,
    weights: ClipWeights<B::Buf>,
    tokenizer: TextTokenizer,
}

impl<B: Backend> FrozenClip<B> {
    /// Moves `weights`, whose text tower is CLIP's, onto `backend`, in the backend's turn
    /// (other callers may share it); the tokenizer is CLIP's. A BERT text tower needs its own
    /// vocabulary: [`FrozenClip::with_tokenizer`], or [`FrozenClip::from_config`] to load both.
    pub fn new(backend: B, weights: ClipWeights<Vec<f32>>) -> Result<Self, TrainError> {
        if let TextTower::Bert(_) = weights.text {
            return Err(TrainError::Invalid(
                "a BERT text tower is tokenized with its own vocabulary, not CLIP's: give the \
                 tokenizer (FrozenClip::with_tokenizer) or load the model from its directory"
                    .into(),
            ));
        }
        Self::with_tokenizer(backend, weights, TextTokenizer::clip()?)
    }

    /// Moves `weights` onto `backend`, in the backend's turn, with the tokenizer of its text
    /// tower. The tokenizer's ids must fit the tower's embedding table.
    pub fn with_tokenizer(
        backend: B,
        weights: ClipWeights<Vec<f32>>,
        tokenizer: TextTokenizer,
    ) -> Result<Self, TrainError> {
        let rows = weights.text.vocab_size();
        if let TextTokenizer::WordPiece(vocab) = &tokenizer {
            if vocab.vocab_size() > rows {
                return Err(TrainError::Invalid(format!(
                    "the vocabulary has {} tokens, but the text tower's embedding table has {rows} \
                     rows: it is not this model's vocab.txt",
                    vocab.vocab_size()
                )));
            }
        }
        let weights = {
            let _turn = backend.take_turn()?;
            weights.to_backend(&backend)?
        };
        Ok(FrozenClip {
            backend,
            weights,
            tokenizer,
        })
    }

    /// The model a run configures: pretrained weights from a file (checked to be the
    /// configured backbone, when one is named) or the tiny model drawn from its seed.
    pub fn from_config(backend: B, model: &ModelConfig) -> Result<Self, TrainError> {
        let weights = match model {
            ModelConfig::Clip { path, backbone } => {
                let weights = ClipWeights::load(path)?;
                if let Some(backbone) = backbone {
                    check_backbone(path, *backbone, &weights.config)?;
                }
                let tokenizer = TextTokenizer::for_model(path, &weights.config)?;
                return Self::with_tokenizer(backend, weights, tokenizer);
            }
            ModelConfig::Tiny(tiny) => ClipWeights::random(&tiny.clip_config(), tiny.seed)?,
        };
        Self::new(backend, weights)
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The weights, on the backend.
    pub fn weights(&self) -> &ClipWeights<B::Buf> {
        &self.weights
    }

    /// The text tower's tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Side of the square input image in pixels.
    pub fn image_size(&self) -> usize {
        self.weights.config.vision.image_size()
    }

    /// CLIP's logit scale, `exp(logit_scale)`.
    pub fn logit_scale(&self) -> f32 {
        self.weights.logit_scale.exp()
    }

    /// Image tokens per image after the pooled one: the M "patches" of the OT head (ViT patches,
    /// or the ResNet's attention-pool positions).
    pub fn patches(&self) -> usize {
        self.weights.config.vision.tokens() - 1
    }

    /// Unit-length image features of `images` images from the image tower's output computed
    /// elsewhere: `tokens` is `images × (1 + patches) × embed_dim`, the pooled token first, after
    /// the projection and not normalised — what `fedotp encode` writes as `image_tokens`. The
    /// features are exactly those [`FrozenClip::encode`] gives for the same tower output.
    pub fn features_from_tokens(
        &self,
        tokens: &[f32],
        images: usize,
    ) -> Result<ImageBatchFeatures, TrainError> {
        let per_image = self.weights.config.vision.tokens();
        let dim = self.weights.config.embed_dim;
        let expected = images
            .checked_mul(per_image * dim)
            .filter(|&n| n == tokens.len());
        if expected.is_none() {
            return Err(TrainError::Invalid(format!(
                "{} precomputed token values for {images} images: the model needs {per_image} \
                 tokens (pooled + {} patches) of width {dim} per image",
                tokens.len(),
                per_image - 1
            )));
        }
        let input = self.backend.upload(tokens)?;
        Ok(unit_features(
            &self.backend,
            &input,
            images,
            per_image,
            dim,
        )?)
    }

    /// Unit-length image features of `images` preprocessed images (`images × 3 × size × size`).
    pub fn encode(&self, pixels: &[f32], images: usize) -> Result<ImageBatchFeatures, TrainError> {
        let input = self.backend.upload(pixels)?;
        let (backend, vision) = (&self.backend, &self.weights.vision);
        Ok(backend.run(|| encode_images(backend, vision, &input, images))?)
    }
}

/// The architecture of `backbone`.
fn backbone_config(backbone: Backbone) -> ClipConfig {
    match backbone {
        Backbone::VitB16 => ClipConfig::vit_b_16(),
        Backbone::VitB32 => ClipConfig::vit_b_32(),
        Backbone::Rn50 => ClipConfig::rn50(),
    }
}

/// A short description of an image tower for messages.
fn describe(vision: &VisionConfig) -> String {
    match vision {
        VisionConfig::Vit(vit) => format!(
            "a ViT of width {}, {} layers, {}-pixel patches at {} pixels",
            vit.width, vit.layers, vit.patch_size, vit.image_size
        ),
        VisionConfig::ResNet(resnet) => format!(
            "a ModifiedResNet with layers {:?} and width {} at {} pixels",
            resnet.layers, resnet.width, resnet.image_size
        ),
    }
}

/// Refuses weights whose image tower is not `backbone`'s.
fn check_backbone(path: &Path, backbone: Backbone, found: &ClipConfig) -> Result<(), TrainError> {
    let mut expected = backbone_config(backbone);
    // A backbone names a shape: OpenAI's ViT-B/16 (QuickGELU), a LAION one (GELU) and
    // BiomedCLIP's timm ViT-B/16 (GELU, its own LayerNorm eps and biases) are all ViT-B/16, and
    // the weights' own configuration says which activation and layout they run.
    if let (VisionConfig::Vit(e), VisionConfig::Vit(f)) = (&mut expected.vision, &found.vision) {
        e.activation = f.activation;
        e.layer_norm_eps = f.layer_norm_eps;
        e.style = f.style;
    }
    if expected.vision == found.vision {
        return Ok(());
    }
    Err(TrainError::Backbone {
        path: path.to_path_buf(),
        expected: format!("{backbone} ({})", describe(&expected.vision)),
        found: describe(&found.vision),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Activation;
    use crate::clip::{VitStyle, TIMM_LAYER_NORM_EPS};

    /// A backbone is a shape: BiomedCLIP's timm ViT-B/16 (GELU, eps 1e-6, timm's biases and no
    /// pre-norm) passes a `ViT-B/16` check; another patch size does not.
    #[test]
    fn a_backbone_check_compares_the_shape_not_the_layout() {
        let mut timm = ClipConfig::vit_b_16();
        if let VisionConfig::Vit(vit) = &mut timm.vision {
            vit.activation = Activation::Gelu;
            vit.layer_norm_eps = TIMM_LAYER_NORM_EPS;
            vit.style = VitStyle::Timm {
                projection_bias: false,
            };
        }
        let path = Path::new("weights/BiomedCLIP");
        assert!(check_backbone(path, Backbone::VitB16, &timm).is_ok());
        let error = check_backbone(path, Backbone::VitB32, &timm).unwrap_err();
        assert!(error.to_string().contains("16-pixel patches"), "{error}");
    }
}
