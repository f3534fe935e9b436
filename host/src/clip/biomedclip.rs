//! Loading BiomedCLIP as one model: open_clip's `CustomTextCLIP` with a BERT text tower
//! (`HFTextEncoder`, [`super::bert`]) and a timm ViT image tower (`TimmModel`, [`super::timm`]),
//! from the files of open_clip's hub layout:
//!
//! - `open_clip_model.safetensors`: the weights (`text.*`, `visual.*`, `logit_scale`). The hub
//!   ships `open_clip_pytorch_model.bin`; `tools/open_clip_to_safetensors.py` converts it.
//! - `open_clip_config.json`: required, because what the tensors cannot show is there: the
//!   pooling (`hf_pooler_type`, only `cls_last_hidden_state_pooler`), the projections
//!   (`hf_proj_type = "mlp"`, `timm_proj = "linear"`, `timm_pool = ""`), the tokenizer's length
//!   (`text_cfg.context_length`, open_clip's 77 when absent), the timm model's name (its head
//!   count) and the image preprocessing (`preprocess_cfg`).
//! - `config.json` (optional): the Hugging Face `BertConfig` of the text model (the one
//!   `hf_model_name` names), for `num_attention_heads`, `layer_norm_eps` and `hidden_act`;
//!   without it, BERT-base's 64-wide heads and `transformers`' eps 1e-12.
//! - `vocab.txt`: the WordPiece vocabulary, read by the tokenizer
//!   ([`super::TextTokenizer::for_model`]), not here.
//!
//! Anything the Rust towers do not compute (another pooler or projection, an attention pool, a
//! non-GELU BERT) is refused naming the file and key.

use std::path::Path;

use serde::Deserialize;

use super::bert::{self, is_unused_bert_tensor, read_bert};
use super::load::{
    apply_open_clip_preprocess, config_file_exists, read_json, OpenClipPreprocess, TensorFile,
};
use super::timm::{has_timm_vit, read_timm, timm_vit_heads, timm_width};
use super::{
    ClipConfig, ClipError, ClipWeights, ImageResize, TextTower, TextTowerConfig, VisionConfig,
    VisionWeights,
};
use crate::data::Normalize;

/// open_clip's context length when `text_cfg.context_length` is absent (`CLIPTextCfg`'s).
const OPEN_CLIP_CONTEXT_LENGTH: usize = 77;

/// `transformers`' `BertConfig.layer_norm_eps` default.
const BERT_LAYER_NORM_EPS: f32 = 1e-12;

/// The head width of BERT-base and of timm's standard ViTs, the fallback when no file says how
/// many heads a tower has.
const HEAD_WIDTH: usize = 64;

/// Whether `file` holds a model of this layout: a BERT text tower (`text.transformer.*`).
pub(super) fn is_biomedclip(file: &TensorFile) -> bool {
    file.has(bert::names::WORD)
}

/// The fields of `open_clip_config.json` this layout uses.
#[derive(Deserialize)]
struct ConfigFile {
    model_cfg: ModelCfg,
    preprocess_cfg: Option<OpenClipPreprocess>,
}

#[derive(Deserialize)]
struct ModelCfg {
    embed_dim: Option<usize>,
    text_cfg: Option<TextCfg>,
    vision_cfg: Option<VisionCfg>,
}

#[derive(Deserialize)]
struct TextCfg {
    hf_pooler_type: Option<String>,
    hf_proj_type: Option<String>,
    context_length: Option<usize>,
}

#[derive(Deserialize)]
struct VisionCfg {
    timm_model_name: Option<String>,
    timm_pool: Option<String>,
    timm_proj: Option<String>,
    image_size: Option<serde_json::Value>,
}

/// The fields of the text model's Hugging Face `config.json` this layout uses.
#[derive(Deserialize)]
struct BertFile {
    model_type: Option<String>,
    num_attention_heads: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
}

/// Reads the model in `file` (the weights file found in `dir`) with the configuration files
/// next to it.
pub(super) fn read_biomedclip(
    file: &mut TensorFile,
    dir: &Path,
) -> Result<ClipWeights<Vec<f32>>, ClipError> {
    check_image_tower(file)?;
    let config_path = dir.join("open_clip_config.json");
    if !config_file_exists(&config_path)? {
        return Err(ClipError::Config {
            path: config_path,
            message: format!(
                "is missing: {} has a BERT text tower (`{}`), whose pooling, projection and \
                 tokenizer length only open_clip_config.json says",
                file.path.display(),
                bert::names::WORD
            ),
        });
    }
    let cfg: ConfigFile = read_json(&config_path)?;
    let refused = |key: &str, value: &str, expected: &str| ClipError::Config {
        path: config_path.clone(),
        message: format!("`{key}` is {value}: fedotp runs {expected}"),
    };
    let text_cfg = cfg.model_cfg.text_cfg.unwrap_or(TextCfg {
        hf_pooler_type: None,
        hf_proj_type: None,
        context_length: None,
    });
    let vision_cfg = cfg.model_cfg.vision_cfg.unwrap_or(VisionCfg {
        timm_model_name: None,
        timm_pool: None,
        timm_proj: None,
        image_size: None,
    });
    // Each setting the towers compute one way: its key, its value (open_clip's default when
    // absent: `CLIPTextCfg`'s mean pooling and MLP projection, `CLIPVisionCfg`'s average pool and
    // linear projection), the value fedotp runs, and what that is.
    let settings = [
        (
            "model_cfg.text_cfg.hf_pooler_type",
            text_cfg.hf_pooler_type.as_deref().unwrap_or("mean_pooler"),
            "cls_last_hidden_state_pooler",
            "BERT pooled at [CLS] only (\"cls_last_hidden_state_pooler\", BiomedCLIP's)",
        ),
        (
            "model_cfg.text_cfg.hf_proj_type",
            text_cfg.hf_proj_type.as_deref().unwrap_or("mlp"),
            "mlp",
            "the MLP projection only (\"mlp\", BiomedCLIP's)",
        ),
        (
            "model_cfg.vision_cfg.timm_pool",
            vision_cfg.timm_pool.as_deref().unwrap_or("avg"),
            "",
            "timm ViTs that keep their class token (\"\", BiomedCLIP's): FedOTP needs every token",
        ),
        (
            "model_cfg.vision_cfg.timm_proj",
            vision_cfg.timm_proj.as_deref().unwrap_or("linear"),
            "linear",
            "the linear projection only (\"linear\")",
        ),
    ];
    if let Some((key, value, _, expected)) = settings.iter().find(|(_, v, runs, _)| v != runs) {
        return Err(refused(key, &format!("\"{value}\""), expected));
    }

    let (heads, eps) = bert_settings(file, dir)?;
    let mut text = read_bert(file, heads, eps)?;
    let context_length = text_cfg.context_length.unwrap_or(OPEN_CLIP_CONTEXT_LENGTH);
    if context_length < 2 || context_length > text.config.max_positions {
        return Err(ClipError::Config {
            path: config_path,
            message: format!(
                "`model_cfg.text_cfg.context_length` is {context_length}: it must be at least 2 \
                 and at most the BERT tower's {} position embeddings",
                text.config.max_positions
            ),
        });
    }
    text.config.context_length = context_length;

    let width = timm_width(file)?;
    let name = vision_cfg.timm_model_name.as_deref().unwrap_or("");
    let heads = match timm_vit_heads(name) {
        Some(heads) => heads,
        None if width.is_multiple_of(HEAD_WIDTH) => width / HEAD_WIDTH,
        None => {
            return Err(refused(
                "model_cfg.vision_cfg.timm_model_name",
                &format!("\"{name}\""),
                &format!(
                "timm ViTs whose head count the name tells (vit_{{tiny,small,base,large}}_patch…) \
                     or whose width is a multiple of {HEAD_WIDTH} (this one's is {width})"
            ),
            ))
        }
    };
    let vit = read_timm(file, heads)?;
    let embed_dim = vit.projection.out_features;
    if text.config.embed_dim != embed_dim {
        return Err(ClipError::InvalidConfig(format!(
            "the text tower projects to {} values, the image tower to {embed_dim}",
            text.config.embed_dim
        )));
    }
    if let Some(d) = cfg.model_cfg.embed_dim.filter(|&d| d != embed_dim) {
        return Err(ClipError::Config {
            path: config_path,
            message: format!("`model_cfg.embed_dim` is {d}, the weights project to {embed_dim}"),
        });
    }
    if let Some(size) = &vision_cfg.image_size {
        if size.as_u64() != Some(vit.config.image_size as u64) {
            return Err(ClipError::Config {
                path: config_path,
                message: format!(
                    "`model_cfg.vision_cfg.image_size` is {size}, the weights' position \
                     embeddings are for {} pixels",
                    vit.config.image_size
                ),
            });
        }
    }
    let mut config = ClipConfig {
        embed_dim,
        text: TextTowerConfig::Bert(text.config.clone()),
        vision: VisionConfig::Vit(vit.config.clone()),
        image_stats: Normalize::CLIP,
        image_resize: ImageResize::CLIP,
    };
    if let Some(preprocess) = cfg.preprocess_cfg {
        apply_open_clip_preprocess(&mut config, &config_path, preprocess)?;
    }
    config.validate()?;
    let logit_scale = file.read("logit_scale", &[])?[0];
    file.finish_where(|name| !is_unused_bert_tensor(name))?;
    Ok(ClipWeights {
        config,
        text: TextTower::Bert(text),
        vision: VisionWeights::Vit(vit),
        logit_scale,
    })
}

/// The BERT tower's head count and LayerNorm eps: from the text model's `config.json` in `dir`
/// where there is one, else BERT-base's 64-wide heads and `transformers`' default eps.
fn bert_settings(file: &TensorFile, dir: &Path) -> Result<(usize, f32), ClipError> {
    let width = super::load::dim(file, bert::names::WORD, 2, 1)?;
    let path = dir.join("config.json");
    if !config_file_exists(&path)? {
        if !width.is_multiple_of(HEAD_WIDTH) {
            return Err(ClipError::Config {
                path,
                message: format!(
                    "is missing, and the BERT tower's width {width} is not a multiple of \
                     {HEAD_WIDTH}: its head count is unknown without the text model's config.json"
                ),
            });
        }
        return Ok((width / HEAD_WIDTH, BERT_LAYER_NORM_EPS));
    }
    let bert: BertFile = read_json(&path)?;
    let refused = |message: String| ClipError::Config {
        path: path.clone(),
        message,
    };
    if let Some(kind) = bert.model_type.as_deref().filter(|&k| k != "bert") {
        return Err(refused(format!(
            "`model_type` is \"{kind}\": the text tower of this layout is BERT (\"bert\")"
        )));
    }
    if let Some(act) = bert.hidden_act.as_deref().filter(|&a| a != "gelu") {
        return Err(refused(format!(
            "`hidden_act` is \"{act}\": fedotp's BERT runs the exact GELU (\"gelu\") only"
        )));
    }
    let heads = bert.num_attention_heads.unwrap_or(width / HEAD_WIDTH);
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(refused(format!(
            "`num_attention_heads` is {heads}: it must be positive and divide the width {width}"
        )));
    }
    let eps = bert
        .layer_norm_eps
        .map_or(BERT_LAYER_NORM_EPS, |e| e as f32);
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(refused(format!(
            "`layer_norm_eps` is {eps}: it must be a positive number"
        )));
    }
    Ok((heads, eps))
}

/// Whether `file` also holds a timm image tower; a BERT text tower with any other image tower
/// is not a layout fedotp knows.
fn check_image_tower(file: &TensorFile) -> Result<(), ClipError> {
    if has_timm_vit(file) {
        return Ok(());
    }
    Err(ClipError::Unsupported {
        path: file.path.to_path_buf(),
        what: format!(
            "a BERT text tower (`{}`) without a timm ViT image tower \
             (`visual.trunk.patch_embed.proj.weight`): fedotp loads BERT models in BiomedCLIP's \
             layout only",
            bert::names::WORD
        ),
    })
}
