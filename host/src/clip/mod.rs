//! CLIP, the frozen model FedOTP trains prompts through: weights (loaded from safetensors in the
//! Hugging Face or OpenAI / open_clip layout, or random), the text tower on token embeddings with
//! its backward pass to those embeddings, and the image tower returning every token; and
//! BiomedCLIP's towers: a BERT text tower on token embeddings, forward and backward, and
//! open_clip's timm ViT, loaded on its own with [`VitWeights::load_open_clip_timm`].
//!
//! All computation goes through a [`crate::backend::Backend`].

mod bert;
mod biomedclip;
mod block;
pub mod classnames;
mod config;
mod error;
mod load;
mod prompt;
mod resnet;
mod text;
mod text_tokenizer;
mod timm;
pub mod tokenizer;
mod vision;
mod vocabulary;
mod weights;
pub mod wordpiece;

pub use bert::{
    bert_text_backward, bert_text_forward, BertActivations, BertConfig, BertLayer, BertTextWeights,
};
pub use config::{
    BlockSpec, ClipConfig, ImageResize, ResNetConfig, TextConfig, TextTowerConfig, VisionConfig,
    VitConfig, VitStyle, CLIP_BATCH_NORM_EPS, CLIP_HEAD_WIDTH, CLIP_LAYER_NORM_EPS,
};
pub use error::ClipError;
pub use load::WEIGHT_FILE_NAMES;
pub use prompt::{PromptBatch, SpecialTokens, EOT_TOKEN, SOT_TOKEN};
pub use text::{text_backward, text_forward, TextActivations};
pub use text_tokenizer::{TextTokenizer, VOCAB_FILE_NAME};
pub use timm::{timm_vit_heads, TIMM_LAYER_NORM_EPS};
pub use vision::{vision_forward, vision_forward_inspect, ImageFeatures, VisionStage};
pub use weights::{
    AttentionPool, Bottleneck, ClipWeights, ConvNorm, ResNetWeights, ResidualBlock, TextTower,
    TextWeights, VisionWeights, VitWeights,
};
