//! Loading CLIP from safetensors, in the Hugging Face `CLIPModel` layout or the OpenAI /
//! open_clip layout, into the canonical [`ClipWeights`].
//!
//! The file is memory-mapped and each tensor converted to `f32` (from f32, f16 or bf16) as it is
//! read. The architecture comes from `config.json` (Hugging Face) or `open_clip_config.json`
//! (open_clip) next to the weights where present, and is otherwise inferred from tensor shapes
//! (heads = width / 64, as in every CLIP release). Every tensor is then read with the shape that
//! architecture implies, and every tensor of the file must be used: a missing, unexpected or
//! misshapen tensor is an error naming it.
//!
//! The image tower is a ViT, or a ModifiedResNet (RN50, RN101, RN50x4, …) when the file has
//! `visual.attnpool.*` tensors; the ResNet exists only in the OpenAI / open_clip layout, as
//! Hugging Face's `CLIPModel` has no ResNet tower.
//!
//! A file whose text tower is BERT is BiomedCLIP's layout, read by `biomedclip.rs` with this
//! module's [`TensorFile`] (its towers by `bert.rs` and `timm.rs`).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::biomedclip::{is_biomedclip, read_biomedclip};
use super::{
    AttentionPool, Bottleneck, ClipConfig, ClipError, ClipWeights, ConvNorm, ImageResize,
    ResNetConfig, ResNetWeights, ResidualBlock, TextConfig, TextTower, TextTowerConfig,
    TextWeights, VisionConfig, VisionWeights, VitConfig, VitStyle, VitWeights, CLIP_BATCH_NORM_EPS,
    CLIP_HEAD_WIDTH, CLIP_LAYER_NORM_EPS,
};
use crate::backend::{Activation, BatchNorm, Conv2d, LayerNorm, Linear};
use crate::data::{Geometry, Interpolation, Normalize};

/// Weight file names tried, in order, when [`ClipWeights::load`] is given a directory.
pub const WEIGHT_FILE_NAMES: [&str; 2] = ["model.safetensors", "open_clip_model.safetensors"];

/// The query, key and value projections' names in CLIP's Hugging Face layout and attention pool.
const CLIP_QKV: [&str; 3] = ["q_proj", "k_proj", "v_proj"];

/// Buffers some exporters save that are not parameters.
const IGNORED_TENSORS: [&str; 6] = [
    "text_model.embeddings.position_ids",
    "vision_model.embeddings.position_ids",
    "input_resolution",
    "context_length",
    "vocab_size",
    "attn_mask",
];

impl ClipWeights<Vec<f32>> {
    /// Loads CLIP from a safetensors file, or from a directory holding `model.safetensors`
    /// (Hugging Face, with its `config.json`) or `open_clip_model.safetensors` (open_clip, with
    /// an optional `open_clip_config.json`).
    ///
    /// The image tower is a ViT (either layout) or a ModifiedResNet (RN50 family, OpenAI /
    /// open_clip layout only: Hugging Face's `CLIPModel` has no ResNet tower, and a
    /// Hugging Face-layout file with ResNet tensors gives [`ClipError::Unsupported`]).
    ///
    /// BiomedCLIP (a BERT text tower and a timm ViT, open_clip's hub layout) loads from a
    /// directory holding `open_clip_model.safetensors`, `open_clip_config.json` and, optionally,
    /// the text model's `config.json`; its tokenizer reads the directory's `vocab.txt`
    /// ([`super::TextTokenizer::for_model`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ClipError> {
        let file_path = resolve_weights(path.as_ref())?;
        let dir = file_path.parent().unwrap_or(Path::new("."));
        with_tensor_file(&file_path, |file| {
            if is_biomedclip(file) {
                // The towers' own checks know no file: name it.
                let path = file.path.display().to_string();
                return read_biomedclip(file, dir).map_err(|error| match error {
                    ClipError::InvalidConfig(what) if !what.starts_with(&path) => {
                        ClipError::InvalidConfig(format!("{path}: {what}"))
                    }
                    other => other,
                });
            }
            let layout = Layout::detect(file)?;
            let config = layout.config(file, dir)?;
            config.validate()?;
            let weights = layout.read(file, config)?;
            file.finish()?;
            Ok(weights)
        })
    }
}

/// Maps the safetensors file at `file_path` and runs `read` on it (the map lives for the call).
pub(super) fn with_tensor_file<T>(
    file_path: &Path,
    read: impl FnOnce(&mut TensorFile<'_>) -> Result<T, ClipError>,
) -> Result<T, ClipError> {
    let io = |source| ClipError::Io {
        path: file_path.to_path_buf(),
        source,
    };
    let file = File::open(file_path).map_err(io)?;
    // SAFETY: `Mmap::map` is unsafe because the bytes behind the returned `&[u8]` change if
    // another process writes the file while it is mapped (and reads fault if it truncates
    // it). A weights file is an input that nothing writes while it is loaded; the map is
    // read-only, lives only during this call, and every tensor is copied out of it into
    // `f32` vectors, for which any bytes are valid values.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let tensors = SafeTensors::deserialize(&mmap).map_err(|source| ClipError::Safetensors {
        path: file_path.to_path_buf(),
        source,
    })?;
    read(&mut TensorFile {
        path: file_path,
        tensors,
        used: HashSet::new(),
    })
}

/// The weights file for `path`: the file itself, or a known name inside a directory.
pub(super) fn resolve_weights(path: &Path) -> Result<PathBuf, ClipError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    WEIGHT_FILE_NAMES
        .iter()
        .map(|name| path.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ClipError::NoWeights {
            path: path.to_path_buf(),
            looked_for: WEIGHT_FILE_NAMES.join(", "),
        })
}

/// A parsed safetensors file and the names read from it so far.
pub(super) struct TensorFile<'a> {
    pub(super) path: &'a Path,
    tensors: SafeTensors<'a>,
    used: HashSet<String>,
}

impl TensorFile<'_> {
    pub(super) fn has(&self, name: &str) -> bool {
        self.tensors.tensor(name).is_ok()
    }

    pub(super) fn missing(&self, name: &str) -> ClipError {
        ClipError::MissingTensor {
            path: self.path.to_path_buf(),
            name: name.to_string(),
        }
    }

    pub(super) fn shape(&self, name: &str) -> Result<Vec<usize>, ClipError> {
        let view = self.tensors.tensor(name).map_err(|_| self.missing(name))?;
        Ok(view.shape().to_vec())
    }

    /// The tensor `name` as f32, after checking its shape is `expected`.
    pub(super) fn read(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>, ClipError> {
        let view = self.tensors.tensor(name).map_err(|_| self.missing(name))?;
        let same_scalar = expected.iter().product::<usize>() == 1
            && view.shape().iter().product::<usize>() == 1
            && expected.len() <= 1
            && view.shape().len() <= 1;
        if view.shape() != expected && !same_scalar {
            return Err(ClipError::ShapeMismatch {
                path: self.path.to_path_buf(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let bytes = view.data();
        let values = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ClipError::UnsupportedDtype {
                    path: self.path.to_path_buf(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        self.used.insert(name.to_string());
        Ok(values)
    }

    /// A matrix stored `rows × cols`, returned transposed (`cols × rows`).
    fn read_transposed(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f32>, ClipError> {
        let stored = self.read(name, &[rows, cols])?;
        let mut out = vec![0.0; rows * cols];
        for (r, row) in stored.chunks_exact(cols).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                out[c * rows + r] = v;
            }
        }
        Ok(out)
    }

    pub(super) fn layer_norm(
        &mut self,
        prefix: &str,
        width: usize,
        eps: f32,
    ) -> Result<LayerNorm<Vec<f32>>, ClipError> {
        Ok(LayerNorm {
            weight: self.read(&format!("{prefix}.weight"), &[width])?,
            bias: self.read(&format!("{prefix}.bias"), &[width])?,
            width,
            eps,
        })
    }

    pub(super) fn linear(
        &mut self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Linear<Vec<f32>>, ClipError> {
        Ok(Linear {
            weight: self.read(&format!("{prefix}.weight"), &[n_out, n_in])?,
            bias: Some(self.read(&format!("{prefix}.bias"), &[n_out])?),
            in_features: n_in,
            out_features: n_out,
        })
    }

    /// Separate query, key and value linear layers `{prefix}.{parts[i]}` (`width × width`, with
    /// biases) stacked into one fused layer, rows `[q; k; v]`.
    pub(super) fn fused_qkv(
        &mut self,
        prefix: &str,
        parts: [&str; 3],
        width: usize,
    ) -> Result<Linear<Vec<f32>>, ClipError> {
        let mut weight = Vec::with_capacity(3 * width * width);
        let mut bias = Vec::with_capacity(3 * width);
        for part in parts {
            let layer = self.linear(&format!("{prefix}.{part}"), width, width)?;
            weight.extend(layer.weight);
            bias.extend(layer.bias.into_iter().flatten());
        }
        Ok(Linear {
            weight,
            bias: Some(bias),
            in_features: width,
            out_features: 3 * width,
        })
    }

    /// A bias-free square convolution `{name}.weight`, stored `(out, in, k, k)` as PyTorch does
    /// and returned channels-last `(out, k, k, in)`, with CLIP's `k / 2` padding.
    fn conv(
        &mut self,
        name: &str,
        (c_in, c_out, kernel, stride): (usize, usize, usize, usize),
    ) -> Result<Conv2d<Vec<f32>>, ClipError> {
        let stored = self.read(&format!("{name}.weight"), &[c_out, c_in, kernel, kernel])?;
        let taps = kernel * kernel;
        let mut weight = vec![0.0; stored.len()];
        for (o, filter) in stored.chunks_exact(c_in * taps).enumerate() {
            for (c, channel) in filter.chunks_exact(taps).enumerate() {
                for (t, &v) in channel.iter().enumerate() {
                    weight[(o * taps + t) * c_in + c] = v;
                }
            }
        }
        Ok(Conv2d {
            weight,
            in_channels: c_in,
            out_channels: c_out,
            kernel,
            stride,
            padding: kernel / 2,
        })
    }

    /// A `BatchNorm2d` of `channels`: its affine parameters and running statistics (its
    /// `num_batches_tracked` counter, which inference does not use, is accepted if present).
    fn batch_norm(
        &mut self,
        prefix: &str,
        channels: usize,
        eps: f32,
    ) -> Result<BatchNorm<Vec<f32>>, ClipError> {
        let counter = format!("{prefix}.num_batches_tracked");
        if self.has(&counter) {
            self.used.insert(counter);
        }
        Ok(BatchNorm {
            weight: self.read(&format!("{prefix}.weight"), &[channels])?,
            bias: self.read(&format!("{prefix}.bias"), &[channels])?,
            running_mean: self.read(&format!("{prefix}.running_mean"), &[channels])?,
            running_var: self.read(&format!("{prefix}.running_var"), &[channels])?,
            channels,
            eps,
        })
    }

    /// A convolution `conv` and its batch-norm `norm`.
    fn conv_norm(
        &mut self,
        conv: &str,
        norm: &str,
        dims: (usize, usize, usize, usize),
        eps: f32,
    ) -> Result<ConvNorm<Vec<f32>>, ClipError> {
        let conv = self.conv(conv, dims)?;
        let norm = self.batch_norm(norm, dims.1, eps)?;
        Ok(ConvNorm { conv, norm })
    }

    /// Number of blocks `{prefix}.0`, `{prefix}.1`, … that have `{prefix}.{i}.{probe}`.
    pub(super) fn count_blocks(&self, prefix: &str, probe: &str) -> usize {
        (0..)
            .take_while(|i| self.has(&format!("{prefix}.{i}.{probe}")))
            .count()
    }

    /// Every tensor must have been read (or be a known non-parameter buffer).
    fn finish(&self) -> Result<(), ClipError> {
        self.finish_where(|name| !IGNORED_TENSORS.contains(&name))
    }

    /// Every tensor whose name satisfies `needed` must have been read.
    pub(super) fn finish_where(&self, needed: impl Fn(&str) -> bool) -> Result<(), ClipError> {
        let mut names = self.tensors.names();
        names.sort();
        for name in names {
            if !self.used.contains(name) && needed(name) {
                return Err(ClipError::UnexpectedTensor {
                    path: self.path.to_path_buf(),
                    name: name.to_string(),
                    shape: self.shape(name)?,
                });
            }
        }
        Ok(())
    }
}

/// How a layout names the parts of a transformer block.
struct BlockNames {
    ln_1: &'static str,
    ln_2: &'static str,
    attn_out: &'static str,
    mlp_fc: &'static str,
    mlp_proj: &'static str,
    /// Fused `in_proj_weight`/`in_proj_bias` (OpenAI) or separate `q_proj`, `k_proj`, `v_proj`
    /// linear layers (Hugging Face), given as the attention module's prefix.
    fused_qkv: bool,
    attn: &'static str,
}

/// Tensor names of one checkpoint layout.
struct Names {
    token_embedding: &'static str,
    text_position: &'static str,
    text_blocks: &'static str,
    ln_final: &'static str,
    text_projection: &'static str,
    class_embedding: &'static str,
    patch_embedding: &'static str,
    vision_position: &'static str,
    ln_pre: &'static str,
    vision_blocks: &'static str,
    ln_post: &'static str,
    visual_projection: &'static str,
    /// Whether the projections are stored `(in, out)` (OpenAI) rather than `(out, in)`.
    projections_in_out: bool,
    block: BlockNames,
}

const HF_NAMES: Names = Names {
    token_embedding: "text_model.embeddings.token_embedding.weight",
    text_position: "text_model.embeddings.position_embedding.weight",
    text_blocks: "text_model.encoder.layers",
    ln_final: "text_model.final_layer_norm",
    text_projection: "text_projection.weight",
    class_embedding: "vision_model.embeddings.class_embedding",
    patch_embedding: "vision_model.embeddings.patch_embedding.weight",
    vision_position: "vision_model.embeddings.position_embedding.weight",
    ln_pre: "vision_model.pre_layrnorm",
    vision_blocks: "vision_model.encoder.layers",
    ln_post: "vision_model.post_layernorm",
    visual_projection: "visual_projection.weight",
    projections_in_out: false,
    block: BlockNames {
        ln_1: "layer_norm1",
        ln_2: "layer_norm2",
        attn_out: "self_attn.out_proj",
        mlp_fc: "mlp.fc1",
        mlp_proj: "mlp.fc2",
        fused_qkv: false,
        attn: "self_attn",
    },
};

const OPENAI_NAMES: Names = Names {
    token_embedding: "token_embedding.weight",
    text_position: "positional_embedding",
    text_blocks: "transformer.resblocks",
    ln_final: "ln_final",
    text_projection: "text_projection",
    class_embedding: "visual.class_embedding",
    patch_embedding: "visual.conv1.weight",
    vision_position: "visual.positional_embedding",
    ln_pre: "visual.ln_pre",
    vision_blocks: "visual.transformer.resblocks",
    ln_post: "visual.ln_post",
    visual_projection: "visual.proj",
    projections_in_out: true,
    block: BlockNames {
        ln_1: "ln_1",
        ln_2: "ln_2",
        attn_out: "attn.out_proj",
        mlp_fc: "mlp.c_fc",
        mlp_proj: "mlp.c_proj",
        fused_qkv: true,
        attn: "attn",
    },
};

/// The two checkpoint layouts CLIP users have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Hugging Face `transformers` `CLIPModel`.
    HuggingFace,
    /// OpenAI's release and open_clip.
    OpenAi,
}

impl Layout {
    fn detect(file: &TensorFile) -> Result<Self, ClipError> {
        if file.has(HF_NAMES.token_embedding) {
            if let Some(name) = resnet_tensor(file) {
                return Err(ClipError::Unsupported {
                    path: file.path.to_path_buf(),
                    what: format!(
                        "tensor `{name}` belongs to a ModifiedResNet (RN50) image tower, but \
                         Hugging Face's CLIPModel has no ResNet tower: load RN50 weights in the \
                         OpenAI / open_clip layout (`visual.conv1.weight`, `visual.layer1.0.*`, \
                         `visual.attnpool.*`, `token_embedding.weight`, …)"
                    ),
                });
            }
            return Ok(Layout::HuggingFace);
        }
        if file.has(OPENAI_NAMES.token_embedding) {
            return Ok(Layout::OpenAi);
        }
        Err(ClipError::UnknownLayout {
            path: file.path.to_path_buf(),
        })
    }

    fn names(self) -> &'static Names {
        match self {
            Layout::HuggingFace => &HF_NAMES,
            Layout::OpenAi => &OPENAI_NAMES,
        }
    }

    /// The architecture: inferred from tensor shapes, then overridden by the configuration file
    /// next to the weights where there is one.
    fn config(self, file: &TensorFile, dir: &Path) -> Result<ClipConfig, ClipError> {
        let mut config = infer_config(self.names(), file)?;
        match self {
            Layout::HuggingFace => {
                let path = dir.join("config.json");
                if config_file_exists(&path)? {
                    apply_hf_config(&mut config, &path)?;
                }
                let path = dir.join("preprocessor_config.json");
                if config_file_exists(&path)? {
                    apply_hf_preprocessor(&mut config, &path)?;
                }
            }
            Layout::OpenAi => {
                let path = dir.join("open_clip_config.json");
                if config_file_exists(&path)? {
                    apply_open_clip_config(&mut config, &path)?;
                }
            }
        }
        if let Some(text) = config.text.as_clip() {
            check_heads_known(file.path, "text", text.width, text.heads)?;
        }
        match &config.vision {
            VisionConfig::Vit(vit) => check_heads_known(file.path, "vision", vit.width, vit.heads)?,
            VisionConfig::ResNet(resnet) => check_heads_known(
                file.path,
                "vision attention pool",
                resnet.pool_width(),
                resnet.heads,
            )?,
        }
        Ok(config)
    }

    fn read(
        self,
        file: &mut TensorFile,
        config: ClipConfig,
    ) -> Result<ClipWeights<Vec<f32>>, ClipError> {
        let names = self.names();
        let embed = config.embed_dim;
        let projection =
            |file: &mut TensorFile, name: &str, width: usize| -> Result<_, ClipError> {
                let weight = if names.projections_in_out {
                    file.read_transposed(name, width, embed)?
                } else {
                    file.read(name, &[embed, width])?
                };
                Ok(Linear {
                    weight,
                    bias: None,
                    in_features: width,
                    out_features: embed,
                })
            };

        let TextTowerConfig::Clip(t) = &config.text else {
            return Err(ClipError::InvalidConfig(
                "CLIP's layouts hold CLIP's text tower, not a BERT one".into(),
            ));
        };
        let text = TextWeights {
            token_embedding: file.read(names.token_embedding, &[t.vocab_size, t.width])?,
            position_embedding: file.read(names.text_position, &[t.context_length, t.width])?,
            blocks: read_blocks(
                file,
                &names.block,
                names.text_blocks,
                t.layers,
                t.width,
                t.mlp_width,
                t.layer_norm_eps,
            )?,
            ln_final: file.layer_norm(names.ln_final, t.width, t.layer_norm_eps)?,
            projection: projection(file, names.text_projection, t.width)?,
            config: t.clone(),
        };

        let vision = match &config.vision {
            VisionConfig::Vit(v) => {
                let patch_len = 3 * v.patch_size * v.patch_size;
                let conv = file.read(
                    names.patch_embedding,
                    &[v.width, 3, v.patch_size, v.patch_size],
                )?;
                VisionWeights::Vit(VitWeights {
                    patch_embedding: Linear {
                        weight: conv,
                        bias: None,
                        in_features: patch_len,
                        out_features: v.width,
                    },
                    class_embedding: file.read(names.class_embedding, &[v.width])?,
                    position_embedding: file.read(names.vision_position, &[v.tokens(), v.width])?,
                    ln_pre: Some(file.layer_norm(names.ln_pre, v.width, v.layer_norm_eps)?),
                    blocks: read_blocks(
                        file,
                        &names.block,
                        names.vision_blocks,
                        v.layers,
                        v.width,
                        v.mlp_width,
                        v.layer_norm_eps,
                    )?,
                    ln_post: file.layer_norm(names.ln_post, v.width, v.layer_norm_eps)?,
                    projection: projection(file, names.visual_projection, v.width)?,
                    config: v.clone(),
                })
            }
            VisionConfig::ResNet(r) => VisionWeights::ResNet(read_resnet(file, r, embed)?),
        };
        let logit_scale = file.read("logit_scale", &[])?[0];
        Ok(ClipWeights {
            config,
            text: TextTower::Clip(text),
            vision,
            logit_scale,
        })
    }
}

/// Blocks `{prefix}.0` to `{prefix}.{layers - 1}`.
fn read_blocks(
    file: &mut TensorFile,
    names: &BlockNames,
    prefix: &str,
    layers: usize,
    width: usize,
    mlp_width: usize,
    eps: f32,
) -> Result<Vec<ResidualBlock<Vec<f32>>>, ClipError> {
    (0..layers)
        .map(|i| read_block(file, names, &format!("{prefix}.{i}"), width, mlp_width, eps))
        .collect()
}

fn read_block(
    file: &mut TensorFile,
    names: &BlockNames,
    prefix: &str,
    width: usize,
    mlp_width: usize,
    eps: f32,
) -> Result<ResidualBlock<Vec<f32>>, ClipError> {
    let attn = format!("{prefix}.{}", names.attn);
    let attn_qkv = if names.fused_qkv {
        Linear {
            weight: file.read(&format!("{attn}.in_proj_weight"), &[3 * width, width])?,
            bias: Some(file.read(&format!("{attn}.in_proj_bias"), &[3 * width])?),
            in_features: width,
            out_features: 3 * width,
        }
    } else {
        file.fused_qkv(&attn, CLIP_QKV, width)?
    };
    Ok(ResidualBlock {
        ln_1: file.layer_norm(&format!("{prefix}.{}", names.ln_1), width, eps)?,
        attn_qkv,
        attn_out: file.linear(&format!("{prefix}.{}", names.attn_out), width, width)?,
        ln_2: file.layer_norm(&format!("{prefix}.{}", names.ln_2), width, eps)?,
        mlp_fc: file.linear(&format!("{prefix}.{}", names.mlp_fc), width, mlp_width)?,
        mlp_proj: file.linear(&format!("{prefix}.{}", names.mlp_proj), mlp_width, width)?,
    })
}

/// The OpenAI-layout names of the ModifiedResNet tower.
mod resnet_names {
    /// The stem's convolutions and batch-norms, in order.
    pub const STEM: [(&str, &str); 3] = [
        ("visual.conv1", "visual.bn1"),
        ("visual.conv2", "visual.bn2"),
        ("visual.conv3", "visual.bn3"),
    ];
    /// Prefix of the attention pool.
    pub const POOL: &str = "visual.attnpool";
    /// The attention pool's position embeddings, `(1 + positions) × pool_width`.
    pub const POOL_POSITIONS: &str = "visual.attnpool.positional_embedding";

    /// Prefix of stage `stage` (0-based; the checkpoint counts stages from 1).
    pub fn stage(stage: usize) -> String {
        format!("visual.layer{}", stage + 1)
    }

    /// Prefix of block `index` of stage `stage`.
    pub fn block(stage_index: usize, index: usize) -> String {
        format!("{}.{index}", stage(stage_index))
    }
}

/// The first tensor whose name marks a ModifiedResNet image tower, if any.
fn resnet_tensor(file: &TensorFile) -> Option<String> {
    const MARKERS: [&str; 4] = ["attnpool", "downsample", ".layer1.", ".bn1."];
    let mut names = file.tensors.names();
    names.sort();
    names
        .into_iter()
        .filter(|n| n.starts_with("visual.") || n.starts_with("vision_model."))
        .find(|n| MARKERS.iter().any(|m| n.contains(m)))
        .map(str::to_string)
}

/// The ModifiedResNet tower (OpenAI layout), stage structure from `config.blocks()`.
fn read_resnet(
    file: &mut TensorFile,
    config: &ResNetConfig,
    embed_dim: usize,
) -> Result<ResNetWeights<Vec<f32>>, ClipError> {
    let eps = config.batch_norm_eps;
    let mut stem = Vec::with_capacity(3);
    for ((conv, norm), (c_in, c_out, stride)) in resnet_names::STEM.iter().zip(config.stem()) {
        stem.push(file.conv_norm(conv, norm, (c_in, c_out, 3, stride), eps)?);
    }
    let mut stages: Vec<Vec<_>> = vec![Vec::new(); 4];
    for b in config.blocks() {
        let prefix = resnet_names::block(b.stage, b.index);
        let layer = |i: usize| (format!("{prefix}.conv{i}"), format!("{prefix}.bn{i}"));
        let (c_in, planes) = (b.in_channels, b.planes);
        let mut conv_norm = |i: usize, dims| {
            let (conv, norm) = layer(i);
            file.conv_norm(&conv, &norm, dims, eps)
        };
        let conv1 = conv_norm(1, (c_in, planes, 1, 1))?;
        let conv2 = conv_norm(2, (planes, planes, 3, 1))?;
        let conv3 = conv_norm(3, (planes, 4 * planes, 1, 1))?;
        // `downsample.0` is the convolution and `downsample.1` its batch-norm (the average pool
        // before them has no parameters).
        let downsample = if b.downsample {
            let (conv, norm) = (
                format!("{prefix}.downsample.0"),
                format!("{prefix}.downsample.1"),
            );
            Some(file.conv_norm(&conv, &norm, (c_in, 4 * planes, 1, 1), eps)?)
        } else {
            None
        };
        stages[b.stage].push(Bottleneck {
            conv1,
            conv2,
            conv3,
            stride: b.stride,
            downsample,
        });
    }
    let width = config.pool_width();
    let pool = resnet_names::POOL;
    let attention_pool = AttentionPool {
        position_embedding: file.read(resnet_names::POOL_POSITIONS, &[config.tokens(), width])?,
        qkv: file.fused_qkv(pool, CLIP_QKV, width)?,
        c_proj: file.linear(&format!("{pool}.c_proj"), width, embed_dim)?,
    };
    Ok(ResNetWeights {
        config: config.clone(),
        stem,
        stages,
        attention_pool,
    })
}

/// The ModifiedResNet's dimensions from its tensors' shapes: the width from the stem's last
/// convolution, the blocks per stage by counting, the image size from the attention pool's
/// positions (`(image_size / 32)² + 1`), CLIP's 64-wide heads.
fn infer_resnet(file: &TensorFile) -> Result<ResNetConfig, ClipError> {
    let width = dim(file, &format!("{}.weight", resnet_names::STEM[2].0), 4, 0)?;
    let mut layers = [0; 4];
    for (stage, count) in layers.iter_mut().enumerate() {
        *count = file.count_blocks(&resnet_names::stage(stage), "conv1.weight");
        if *count == 0 {
            let first = resnet_names::block(stage, 0);
            return Err(file.missing(&format!("{first}.conv1.weight")));
        }
    }
    let tokens = dim(file, resnet_names::POOL_POSITIONS, 2, 0)?;
    let pool_width = dim(file, resnet_names::POOL_POSITIONS, 2, 1)?;
    let grid = square_grid(file, resnet_names::POOL_POSITIONS, tokens, "a ResNet")?;
    Ok(ResNetConfig {
        image_size: 32 * grid,
        width,
        layers,
        heads: default_heads(pool_width),
        batch_norm_eps: CLIP_BATCH_NORM_EPS,
    })
}

/// The side of the grid of `tokens − 1` positions, which must be a positive square.
pub(super) fn square_grid(
    file: &TensorFile,
    name: &str,
    tokens: usize,
    tower: &str,
) -> Result<usize, ClipError> {
    let grid = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
    if tokens < 2 || grid * grid + 1 != tokens {
        return Err(ClipError::Unsupported {
            path: file.path.to_path_buf(),
            what: format!(
                "tensor `{name}` has {tokens} rows: {tower} needs 1 + a square number of positions"
            ),
        });
    }
    Ok(grid)
}

/// Reads the `index`-th dimension of a tensor that must have `rank` dimensions.
pub(super) fn dim(
    file: &TensorFile,
    name: &str,
    rank: usize,
    index: usize,
) -> Result<usize, ClipError> {
    let shape = file.shape(name)?;
    if shape.len() != rank {
        return Err(ClipError::Unsupported {
            path: file.path.to_path_buf(),
            what: format!("tensor `{name}` has shape {shape:?}, expected {rank} dimensions"),
        });
    }
    Ok(shape[index])
}

/// Heads for a width when the checkpoint does not say: CLIP's 64-wide heads, or 0 (unknown)
/// when the width is not a multiple of 64.
fn default_heads(width: usize) -> usize {
    if width.is_multiple_of(CLIP_HEAD_WIDTH) {
        width / CLIP_HEAD_WIDTH
    } else {
        0
    }
}

/// Fails when a tower's head count is still unknown after reading the configuration.
fn check_heads_known(
    path: &Path,
    tower: &str,
    width: usize,
    heads: usize,
) -> Result<(), ClipError> {
    if heads == 0 {
        return Err(ClipError::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "{tower} width {width} is not a multiple of CLIP's head width {CLIP_HEAD_WIDTH}: \
                 put a config file next to the weights giving the number of heads"
            ),
        });
    }
    Ok(())
}

/// Every dimension of the architecture that the tensor shapes determine.
fn infer_config(names: &Names, file: &TensorFile) -> Result<ClipConfig, ClipError> {
    let block = &names.block;
    let text_width = dim(file, names.token_embedding, 2, 1)?;
    let text_fc = format!("{}.0.{}.weight", names.text_blocks, block.mlp_fc);
    let text = TextConfig {
        vocab_size: dim(file, names.token_embedding, 2, 0)?,
        context_length: dim(file, names.text_position, 2, 0)?,
        width: text_width,
        layers: file.count_blocks(names.text_blocks, &format!("{}.weight", block.ln_1)),
        heads: default_heads(text_width),
        mlp_width: dim(file, &text_fc, 2, 0)?,
        layer_norm_eps: CLIP_LAYER_NORM_EPS,
        // OpenAI's; a configuration file next to the weights may say otherwise.
        activation: Activation::QuickGelu,
    };
    let embed_dim = dim(
        file,
        names.text_projection,
        2,
        usize::from(names.projections_in_out),
    )?;

    if file.has(resnet_names::POOL_POSITIONS) {
        return Ok(ClipConfig {
            embed_dim,
            text: TextTowerConfig::Clip(text),
            vision: VisionConfig::ResNet(infer_resnet(file)?),
            image_stats: Normalize::CLIP,
            image_resize: ImageResize::CLIP,
        });
    }
    let width = dim(file, names.class_embedding, 1, 0)?;
    let patch_size = dim(file, names.patch_embedding, 4, 3)?;
    let tokens = dim(file, names.vision_position, 2, 0)?;
    let grid = square_grid(file, names.vision_position, tokens, "a ViT")?;
    let vision_fc = format!("{}.0.{}.weight", names.vision_blocks, block.mlp_fc);
    let vit = VitConfig {
        image_size: grid * patch_size,
        patch_size,
        width,
        layers: file.count_blocks(names.vision_blocks, &format!("{}.weight", block.ln_1)),
        heads: default_heads(width),
        mlp_width: dim(file, &vision_fc, 2, 0)?,
        layer_norm_eps: CLIP_LAYER_NORM_EPS,
        // OpenAI's; a configuration file next to the weights may say otherwise.
        activation: Activation::QuickGelu,
        style: VitStyle::Clip,
    };
    Ok(ClipConfig {
        embed_dim,
        text: TextTowerConfig::Clip(text),
        vision: VisionConfig::Vit(vit),
        // OpenAI's; a configuration file next to the weights may say otherwise.
        image_stats: Normalize::CLIP,
        image_resize: ImageResize::CLIP,
    })
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ClipError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClipError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ClipError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The fields of a Hugging Face `CLIPConfig` we use; absent fields keep the inferred values.
#[derive(Deserialize)]
struct HfConfig {
    projection_dim: Option<usize>,
    text_config: Option<HfTower>,
    vision_config: Option<HfTower>,
}

#[derive(Deserialize)]
struct HfTower {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_attention_heads: Option<usize>,
    num_hidden_layers: Option<usize>,
    max_position_embeddings: Option<usize>,
    vocab_size: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
}

impl HfTower {
    /// The tower's `hidden_act`: CLIP's `quick_gelu` when absent (`CLIPTextConfig`'s default).
    fn activation(&self, path: &Path, tower: &str) -> Result<Activation, ClipError> {
        match self.hidden_act.as_deref() {
            None | Some("quick_gelu") => Ok(Activation::QuickGelu),
            Some("gelu") => Ok(Activation::Gelu),
            Some(other) => Err(ClipError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "{tower}.hidden_act is \"{other}\": only \"quick_gelu\" (OpenAI CLIP's) and \
                     \"gelu\" (the exact GELU) are supported"
                ),
            }),
        }
    }
}

/// Whether the configuration file `path` is there; something else in its place (a directory)
/// is an error, not a file to ignore.
pub(super) fn config_file_exists(path: &Path) -> Result<bool, ClipError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(_) => Err(ClipError::Config {
            path: path.to_path_buf(),
            message: "is not a file: the weights' configuration must be a JSON file".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClipError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// A head count from a configuration file: positive and dividing the tower's width.
fn config_heads(path: &Path, key: &str, heads: usize, width: usize) -> Result<usize, ClipError> {
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(ClipError::Config {
            path: path.to_path_buf(),
            message: format!(
                "`{key}` is {heads}: it must be positive and divide the width {width}"
            ),
        });
    }
    Ok(heads)
}

fn apply_hf_config(config: &mut ClipConfig, path: &Path) -> Result<(), ClipError> {
    let hf: HfConfig = read_json(path)?;
    if let Some(d) = hf.projection_dim {
        config.embed_dim = d;
    }
    if let (Some(t), Some(c)) = (hf.text_config, config.text.as_clip_mut()) {
        c.activation = t.activation(path, "text_config")?;
        c.width = t.hidden_size.unwrap_or(c.width);
        c.mlp_width = t.intermediate_size.unwrap_or(c.mlp_width);
        if let Some(heads) = t.num_attention_heads {
            c.heads = config_heads(path, "text_config.num_attention_heads", heads, c.width)?;
        }
        c.layers = t.num_hidden_layers.unwrap_or(c.layers);
        c.context_length = t.max_position_embeddings.unwrap_or(c.context_length);
        c.vocab_size = t.vocab_size.unwrap_or(c.vocab_size);
        c.layer_norm_eps = t.layer_norm_eps.map_or(c.layer_norm_eps, |e| e as f32);
    }
    if let (Some(v), VisionConfig::Vit(c)) = (hf.vision_config, &mut config.vision) {
        c.activation = v.activation(path, "vision_config")?;
        c.width = v.hidden_size.unwrap_or(c.width);
        c.mlp_width = v.intermediate_size.unwrap_or(c.mlp_width);
        if let Some(heads) = v.num_attention_heads {
            c.heads = config_heads(path, "vision_config.num_attention_heads", heads, c.width)?;
        }
        c.layers = v.num_hidden_layers.unwrap_or(c.layers);
        c.image_size = v.image_size.unwrap_or(c.image_size);
        c.patch_size = v.patch_size.unwrap_or(c.patch_size);
        c.layer_norm_eps = v.layer_norm_eps.map_or(c.layer_norm_eps, |e| e as f32);
    }
    Ok(())
}

/// The fields of open_clip's `open_clip_config.json` we use.
#[derive(Deserialize)]
struct OpenClipFile {
    model_cfg: OpenClipModel,
    preprocess_cfg: Option<OpenClipPreprocess>,
}

/// open_clip's image preprocessing (`PreprocessCfg`): the evaluation transform is the resize
/// (`resize_mode`, `interpolation`, `fill_color`) to `size`, then the normalisation.
#[derive(Deserialize)]
pub(super) struct OpenClipPreprocess {
    size: Option<serde_json::Value>,
    mean: Option<Vec<f64>>,
    std: Option<Vec<f64>>,
    resize_mode: Option<String>,
    interpolation: Option<String>,
    fill_color: Option<serde_json::Value>,
}

/// The fields of a Hugging Face `preprocessor_config.json` (`CLIPImageProcessor`) we use.
#[derive(Deserialize)]
struct HfPreprocessor {
    image_mean: Option<Vec<f64>>,
    image_std: Option<Vec<f64>>,
    resample: Option<serde_json::Value>,
}

fn apply_hf_preprocessor(config: &mut ClipConfig, path: &Path) -> Result<(), ClipError> {
    let file: HfPreprocessor = read_json(path)?;
    // Pillow's filter numbers, as `CLIPImageProcessor` stores them.
    match file.resample.as_ref().map(|v| (v.as_u64(), v)) {
        None => {}
        Some((Some(3), _)) => config.image_resize.interpolation = Interpolation::Bicubic,
        Some((Some(2), _)) => config.image_resize.interpolation = Interpolation::Bilinear,
        Some((_, value)) => {
            return Err(ClipError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "`resample` is {value}: fedotp resizes with Pillow's BICUBIC (3) or \
                     BILINEAR (2) only"
                ),
            })
        }
    }
    apply_image_stats(
        config,
        path,
        ("image_mean", file.image_mean),
        ("image_std", file.image_std),
    )
}

/// Sets the image resize and statistics from open_clip's `preprocess_cfg` (in `path`).
pub(super) fn apply_open_clip_preprocess(
    config: &mut ClipConfig,
    path: &Path,
    preprocess: OpenClipPreprocess,
) -> Result<(), ClipError> {
    apply_open_clip_resize(config, path, &preprocess)?;
    let mean = ("preprocess_cfg.mean", preprocess.mean);
    apply_image_stats(config, path, mean, ("preprocess_cfg.std", preprocess.std))
}

/// Sets `config.image_resize` (and checks `size`) from open_clip's `preprocess_cfg`; an absent
/// key keeps CLIP's choice, as open_clip's defaults are CLIP's.
fn apply_open_clip_resize(
    config: &mut ClipConfig,
    path: &Path,
    preprocess: &OpenClipPreprocess,
) -> Result<(), ClipError> {
    let refused = |message: String| ClipError::Config {
        path: path.to_path_buf(),
        message,
    };
    if let Some(size) = &preprocess.size {
        // An int, or `[height, width]`; fedotp's towers take square images.
        let side = match size {
            serde_json::Value::Array(sides) if sides.len() == 2 && sides[0] == sides[1] => {
                sides[0].as_u64()
            }
            other => other.as_u64(),
        };
        let model = config.vision.image_size() as u64;
        if side != Some(model) {
            return Err(refused(format!(
                "`preprocess_cfg.size` is {size}, but the weights' image tower takes \
                 {model} × {model} images"
            )));
        }
    }
    let fill = match &preprocess.fill_color {
        None => 0,
        Some(value) => value
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| {
                refused(format!(
                    "`preprocess_cfg.fill_color` is {value}: one value 0–255 is expected"
                ))
            })?,
    };
    if let Some(mode) = &preprocess.resize_mode {
        config.image_resize.geometry = match mode.as_str() {
            "shortest" => Geometry::ResizeCenterCrop,
            "longest" => Geometry::ResizeLongestPad { fill },
            "squash" => Geometry::Stretch,
            other => {
                return Err(refused(format!(
                    "`preprocess_cfg.resize_mode` is \"{other}\": expected \"shortest\", \
                     \"longest\" or \"squash\""
                )))
            }
        };
    }
    if let Some(interpolation) = &preprocess.interpolation {
        config.image_resize.interpolation = match interpolation.as_str() {
            // open_clip evaluates a model trained with random filters bicubically.
            "bicubic" | "random" => Interpolation::Bicubic,
            "bilinear" => Interpolation::Bilinear,
            other => {
                return Err(refused(format!(
                    "`preprocess_cfg.interpolation` is \"{other}\": expected \"bicubic\", \
                     \"bilinear\" or \"random\""
                )))
            }
        };
    }
    Ok(())
}

/// Sets `config.image_stats` from a file's per-channel mean and standard deviation (each
/// `(key, values)`; an absent one keeps CLIP's): three values each, which must make valid
/// statistics ([`Normalize::validate`]).
fn apply_image_stats(
    config: &mut ClipConfig,
    path: &Path,
    (mean_key, mean): (&str, Option<Vec<f64>>),
    (std_key, std): (&str, Option<Vec<f64>>),
) -> Result<(), ClipError> {
    let refused = |message: String| ClipError::Config {
        path: path.to_path_buf(),
        message,
    };
    let channels = |key: &str, values: Vec<f64>| {
        <[f64; 3]>::try_from(values)
            .map(|values| values.map(|v| v as f32))
            .map_err(|values| {
                refused(format!(
                    "`{key}` has {} values, the three channels need 3",
                    values.len()
                ))
            })
    };
    if let Some(mean) = mean {
        config.image_stats.mean = channels(mean_key, mean)?;
    }
    if let Some(std) = std {
        config.image_stats.std = channels(std_key, std)?;
    }
    config
        .image_stats
        .validate()
        .map_err(|e| refused(format!("`{mean_key}` / `{std_key}`: {e}")))
}

#[derive(Deserialize)]
struct OpenClipModel {
    quick_gelu: Option<bool>,
    text_cfg: Option<OpenClipTower>,
    vision_cfg: Option<OpenClipTower>,
}

/// open_clip's default number of text heads (`CLIPTextCfg.heads`).
const OPEN_CLIP_TEXT_HEADS: usize = 8;

#[derive(Deserialize)]
struct OpenClipTower {
    width: Option<usize>,
    heads: Option<usize>,
    head_width: Option<usize>,
}

fn apply_open_clip_config(config: &mut ClipConfig, path: &Path) -> Result<(), ClipError> {
    let cfg: OpenClipFile = read_json(path)?;
    if let Some(preprocess) = cfg.preprocess_cfg {
        apply_open_clip_preprocess(config, path, preprocess)?;
    }
    // open_clip builds nn.GELU unless `quick_gelu` is set (OpenAI's weights set it).
    let activation = if cfg.model_cfg.quick_gelu == Some(true) {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    };
    if let VisionConfig::Vit(c) = &mut config.vision {
        c.activation = activation;
    }
    if let Some(text) = config.text.as_clip_mut() {
        text.activation = activation;
        if let Some(t) = cfg.model_cfg.text_cfg {
            let heads = t.heads.unwrap_or(OPEN_CLIP_TEXT_HEADS);
            text.heads = config_heads(path, "model_cfg.text_cfg.heads", heads, text.width)?;
        }
    }
    if let Some(v) = cfg.model_cfg.vision_cfg {
        let head_width = v.head_width.unwrap_or(CLIP_HEAD_WIDTH);
        if head_width == 0 {
            return Err(ClipError::Config {
                path: path.to_path_buf(),
                message: "`model_cfg.vision_cfg.head_width` is 0: it must be positive".into(),
            });
        }
        match &mut config.vision {
            VisionConfig::Vit(c) => c.heads = v.width.unwrap_or(c.width) / head_width,
            // open_clip's `width` is the ResNet's stem width; its pool is 32 times wider.
            VisionConfig::ResNet(c) => c.heads = 32 * v.width.unwrap_or(c.width) / head_width,
        }
    }
    Ok(())
}
