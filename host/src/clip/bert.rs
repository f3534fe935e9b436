//! A BERT text tower as open_clip wraps one (`HFTextEncoder` with
//! `hf_pooler_type = "cls_last_hidden_state_pooler"` and `hf_proj_type = "mlp"`: BiomedCLIP's
//! PubMedBERT), on token *embeddings* like [`super::text_forward`], with its backward pass to
//! those embeddings. No weight gradients: the tower is frozen.
//!
//! Forward, for `batch` sequences of `seq` tokens with embeddings `e` (Hugging Face's `BertModel`
//! without `token_type_ids`, so every token has type 0, and open_clip's pooling and projection):
//!
//! ```text
//! x₀ = LN_emb(e + type₀ + pos[0..seq])
//! z₁ = x_l + W_o · attention(W_qkv · x_l)          full (bidirectional) attention
//! h  = LN_attn(z₁)                                  post-norm: the LayerNorm follows the sum
//! z₂ = h + fc2(gelu(fc1(h)))                        exact erf GELU
//! x_{l+1} = LN_mlp(z₂)
//! features = proj₂ · gelu(proj₁ · x_L[:, 0])        [CLS] row; both projections bias-free
//! ```
//!
//! All LayerNorms use the checkpoint's `layer_norm_eps` (1e-12 for BERT, not CLIP's 1e-5).
//!
//! **Padding.** The input has no padding: every sequence of a call has the same length, and the
//! caller runs prompts of different lengths as separate calls. That is exactly Hugging Face's
//! result for a padded batch with its `attention_mask`, since a masked key gets probability
//! exactly zero (its score is the dtype's minimum) and BERT's position embeddings are absolute:
//! the real tokens' outputs never see the padding. `host/tests/bert_parity.rs` checks this
//! against a padded run.
//!
//! **Backward.** Post-norm reverses the roles of the residual and the LayerNorm compared with
//! CLIP's pre-norm blocks: the gradient reaching a layer's output first goes through
//! `LN_mlp` (giving `dz₂`), then `dh = dz₂ + fc1ᵀ·(gelu'·(fc2ᵀ·dz₂))`, then through `LN_attn`
//! (giving `dz₁`), then `dx = dz₁ + W_qkvᵀ·attention'(W_oᵀ·dz₁)`. Each LayerNorm's backward
//! *accumulates* into its target, so it is given a zeroed buffer (a fresh one: the backends have
//! no fill operation; two per layer per backward call).

use std::path::Path;

use super::block::{fit, Scratch};
use super::config::require_positive;
use super::load::{dim, with_tensor_file, TensorFile};
use super::ClipError;
use crate::backend::{
    Activation, AttentionShape, Backend, BackendError, LayerNorm, Linear, SeqShape,
};

/// The names of a BERT tower's tensors in an open_clip checkpoint (`HFTextEncoder` as `text`).
pub(super) mod names {
    pub const WORD: &str = "text.transformer.embeddings.word_embeddings.weight";
    pub const POSITION: &str = "text.transformer.embeddings.position_embeddings.weight";
    pub const TOKEN_TYPE: &str = "text.transformer.embeddings.token_type_embeddings.weight";
    pub const EMBEDDING_LN: &str = "text.transformer.embeddings.LayerNorm";
    pub const LAYERS: &str = "text.transformer.encoder.layer";
    pub const PROJ_FC: &str = "text.proj.0.weight";
    pub const PROJ_OUT: &str = "text.proj.2.weight";
    /// `text.*` tensors the tower does not use: BERT's own pooler (open_clip pools the `[CLS]`
    /// row of the last hidden state instead) and index buffers older `transformers` saved.
    pub const UNUSED: [&str; 4] = [
        "text.transformer.pooler.dense.weight",
        "text.transformer.pooler.dense.bias",
        "text.transformer.embeddings.position_ids",
        "text.transformer.embeddings.token_type_ids",
    ];
}

/// The architecture of a BERT text tower with open_clip's MLP projection.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Hidden width (`hidden_size`).
    pub width: usize,
    /// Attention heads (`num_attention_heads`); `width / heads` per head.
    pub heads: usize,
    /// Transformer layers (`num_hidden_layers`).
    pub layers: usize,
    /// MLP width (`intermediate_size`).
    pub mlp_width: usize,
    /// Rows of the position table (`max_position_embeddings`): the longest sequence.
    pub max_positions: usize,
    /// Rows of the word-embedding table (`vocab_size`).
    pub vocab_size: usize,
    /// The most tokens a text may have, `[CLS]` and `[SEP]` included: the tokenizer's length
    /// (open_clip's `context_length`, 256 for BiomedCLIP), at most `max_positions`.
    pub context_length: usize,
    /// Every LayerNorm's eps (`layer_norm_eps`, 1e-12 for BERT).
    pub layer_norm_eps: f32,
    /// Width of the joint image-text space (the projection's output).
    pub embed_dim: usize,
    /// Hidden width of the MLP projection, `(width + embed_dim) / 2` in open_clip.
    pub proj_width: usize,
}

impl BertConfig {
    /// Fails when a size is zero, the width does not split into the heads, or eps is not a
    /// positive finite number.
    pub fn validate(&self) -> Result<(), ClipError> {
        require_positive(&[
            ("BERT width", self.width),
            ("BERT heads", self.heads),
            ("BERT layers", self.layers),
            ("BERT mlp_width", self.mlp_width),
            ("BERT max_positions", self.max_positions),
            ("BERT vocab_size", self.vocab_size),
            ("BERT context_length", self.context_length),
            ("BERT embed_dim", self.embed_dim),
            ("BERT proj_width", self.proj_width),
        ])?;
        if !self.width.is_multiple_of(self.heads) {
            return Err(ClipError::InvalidConfig(format!(
                "BERT width {} is not a multiple of its {} heads",
                self.width, self.heads
            )));
        }
        if self.context_length > self.max_positions {
            return Err(ClipError::InvalidConfig(format!(
                "BERT context_length {} exceeds its {} position embeddings",
                self.context_length, self.max_positions
            )));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(ClipError::InvalidConfig(format!(
                "BERT layer_norm_eps {} is not a positive number",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }
}

impl BertConfig {
    /// Number of weights the tower holds (token type 0's embedding folded into the positions,
    /// BERT's unused pooler left out), `None` when the count overflows `u64`.
    pub fn parameters(&self) -> Option<u64> {
        use super::config::{block_parameters, mul, sum};
        let width = self.width as u64;
        let proj = self.proj_width as u64;
        sum(&[
            mul(&[self.vocab_size as u64, width])?,
            mul(&[self.max_positions as u64, width])?,
            mul(&[2, width])?,
            mul(&[
                self.layers as u64,
                block_parameters(width, self.mlp_width as u64)?,
            ])?,
            mul(&[proj, width])?,
            mul(&[self.embed_dim as u64, proj])?,
        ])
    }
}

/// One post-norm BERT layer (`BertLayer`).
#[derive(Debug, Clone)]
pub struct BertLayer<Buf> {
    /// `attention.self.{query,key,value}` fused, `3·width × width`, queries first.
    pub attn_qkv: Linear<Buf>,
    /// `attention.output.dense`, `width × width`.
    pub attn_out: Linear<Buf>,
    /// `attention.output.LayerNorm`, applied to `x + attention`.
    pub attn_ln: LayerNorm<Buf>,
    /// `intermediate.dense`, `mlp_width × width` (GELU follows).
    pub mlp_fc: Linear<Buf>,
    /// `output.dense`, `width × mlp_width`.
    pub mlp_out: Linear<Buf>,
    /// `output.LayerNorm`, applied to `h + mlp`.
    pub mlp_ln: LayerNorm<Buf>,
}

/// A BERT text tower with open_clip's pooling and MLP projection.
#[derive(Debug, Clone)]
pub struct BertTextWeights<Buf> {
    /// Its architecture.
    pub config: BertConfig,
    /// Word embeddings, `vocab_size × width`: what prompt token ids are embedded with.
    pub word_embedding: Buf,
    /// Position embeddings with token type 0's embedding added to every row,
    /// `max_positions × width`. open_clip passes no `token_type_ids`, so every token has type 0
    /// and its embedding is a constant row; folding it into the positions saves a pass.
    pub position_embedding: Buf,
    /// The embeddings' LayerNorm.
    pub embedding_ln: LayerNorm<Buf>,
    /// The layers, in order.
    pub layers: Vec<BertLayer<Buf>>,
    /// `proj.0`: `proj_width × width`, no bias (`Linear::bias` is `None`); GELU follows.
    pub proj_fc: Linear<Buf>,
    /// `proj.2`: `embed_dim × proj_width`, no bias.
    pub proj_out: Linear<Buf>,
}

impl<Buf> BertLayer<Buf> {
    fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<BertLayer<T>, E> {
        Ok(BertLayer {
            attn_qkv: self.attn_qkv.try_map(f)?,
            attn_out: self.attn_out.try_map(f)?,
            attn_ln: self.attn_ln.try_map(f)?,
            mlp_fc: self.mlp_fc.try_map(f)?,
            mlp_out: self.mlp_out.try_map(f)?,
            mlp_ln: self.mlp_ln.try_map(f)?,
        })
    }
}

impl<Buf> BertTextWeights<Buf> {
    /// The same weights with each buffer converted by `f`.
    pub fn try_map<T, E>(
        self,
        f: &mut impl FnMut(Buf) -> Result<T, E>,
    ) -> Result<BertTextWeights<T>, E> {
        Ok(BertTextWeights {
            config: self.config,
            word_embedding: f(self.word_embedding)?,
            position_embedding: f(self.position_embedding)?,
            embedding_ln: self.embedding_ln.try_map(f)?,
            layers: self
                .layers
                .into_iter()
                .map(|l| l.try_map(f))
                .collect::<Result<_, _>>()?,
            proj_fc: self.proj_fc.try_map(f)?,
            proj_out: self.proj_out.try_map(f)?,
        })
    }
}

impl BertTextWeights<Vec<f32>> {
    /// Moves the weights into `backend`'s buffers (without a copy on the CPU backend).
    pub fn to_backend<B: Backend>(
        self,
        backend: &B,
    ) -> Result<BertTextWeights<B::Buf>, BackendError> {
        self.try_map(&mut |v| backend.upload_vec(v))
    }

    /// Reads the text tower of an open_clip checkpoint whose text tower is a BERT
    /// `HFTextEncoder` with the MLP projection (BiomedCLIP's `open_clip_model.safetensors`, or
    /// any safetensors file with its `text.*` tensors).
    ///
    /// The sizes come from the tensor shapes; the head count and LayerNorm eps are not in the
    /// tensors and come from the caller (the Hugging Face `config.json` of the model named by
    /// open_clip's `hf_model_name`: `num_attention_heads`, `layer_norm_eps`). Tensors outside
    /// `text.` (the image tower, `logit_scale`) are left alone; a missing or misshapen `text.`
    /// tensor, or one the tower does not use, is an error naming it. BERT's own pooler
    /// (`text.transformer.pooler.*`, present when the model was built with it) is not used.
    pub fn load(
        path: impl AsRef<Path>,
        heads: usize,
        layer_norm_eps: f32,
    ) -> Result<Self, ClipError> {
        with_tensor_file(path.as_ref(), |file| {
            let weights = read_bert(file, heads, layer_norm_eps)?;
            file.finish_where(|name| name.starts_with("text.") && !is_unused_bert_tensor(name))?;
            Ok(weights)
        })
    }
}

/// Whether `name` is a `text.*` tensor of an open_clip BERT checkpoint that the tower does not
/// use ([`names::UNUSED`]).
pub(super) fn is_unused_bert_tensor(name: &str) -> bool {
    names::UNUSED.contains(&name)
}

/// Reads every `text.*` tensor of `file`'s BERT tower (see [`BertTextWeights::load`]).
pub(super) fn read_bert(
    file: &mut TensorFile,
    heads: usize,
    layer_norm_eps: f32,
) -> Result<BertTextWeights<Vec<f32>>, ClipError> {
    let (vocab_size, width) = (dim(file, names::WORD, 2, 0)?, dim(file, names::WORD, 2, 1)?);
    let layer = |i: usize, part: &str| format!("{}.{i}.{part}", names::LAYERS);
    let proj_width = dim(file, names::PROJ_FC, 2, 0)?;
    let max_positions = dim(file, names::POSITION, 2, 0)?;
    let config = BertConfig {
        width,
        heads,
        layers: file.count_blocks(names::LAYERS, "attention.self.query.weight"),
        mlp_width: dim(file, &layer(0, "intermediate.dense.weight"), 2, 0)?,
        max_positions,
        vocab_size,
        // The whole table until a configuration says the tokenizer's length.
        context_length: max_positions,
        layer_norm_eps,
        embed_dim: dim(file, names::PROJ_OUT, 2, 0)?,
        proj_width,
    };
    config.validate()?;
    let eps = layer_norm_eps;
    let types = dim(file, names::TOKEN_TYPE, 2, 0)?.max(1);
    let token_types = file.read(names::TOKEN_TYPE, &[types, width])?;
    let mut position_embedding = file.read(names::POSITION, &[config.max_positions, width])?;
    for row in position_embedding.chunks_exact_mut(width) {
        for (p, t) in row.iter_mut().zip(&token_types[..width]) {
            *p += t;
        }
    }
    let layers = (0..config.layers)
        .map(|i| {
            Ok(BertLayer {
                attn_qkv: file.fused_qkv(
                    &layer(i, "attention.self"),
                    ["query", "key", "value"],
                    width,
                )?,
                attn_out: file.linear(&layer(i, "attention.output.dense"), width, width)?,
                attn_ln: file.layer_norm(&layer(i, "attention.output.LayerNorm"), width, eps)?,
                mlp_fc: file.linear(&layer(i, "intermediate.dense"), width, config.mlp_width)?,
                mlp_out: file.linear(&layer(i, "output.dense"), config.mlp_width, width)?,
                mlp_ln: file.layer_norm(&layer(i, "output.LayerNorm"), width, eps)?,
            })
        })
        .collect::<Result<_, ClipError>>()?;
    let no_bias = |weight, n_in, n_out| Linear {
        weight,
        bias: None,
        in_features: n_in,
        out_features: n_out,
    };
    let weights = BertTextWeights {
        word_embedding: file.read(names::WORD, &[vocab_size, width])?,
        position_embedding,
        embedding_ln: file.layer_norm(names::EMBEDDING_LN, width, eps)?,
        layers,
        proj_fc: no_bias(
            file.read(names::PROJ_FC, &[proj_width, width])?,
            width,
            proj_width,
        ),
        proj_out: no_bias(
            file.read(names::PROJ_OUT, &[config.embed_dim, proj_width])?,
            proj_width,
            config.embed_dim,
        ),
        config,
    };
    Ok(weights)
}

/// What one layer's input-gradient backward needs from its forward pass.
struct LayerActivations<Buf> {
    /// Layer input `x_l`, `rows × width` (kept for [`BertActivations::hidden`]).
    input: Buf,
    /// Fused query/key/value, `rows × 3·width`.
    qkv: Buf,
    /// Attention probabilities, `batch × heads × seq × seq`.
    probs: Buf,
    /// `z₁ = x + attention output`, the input of `LN_attn`.
    attn_sum: Buf,
    /// `LN_attn` statistics (mean, 1/std) per row.
    attn_stats: (Buf, Buf),
    /// MLP pre-activation `fc1(h)`, `rows × mlp_width`.
    mlp_pre: Buf,
    /// `z₂ = h + mlp`, the input of `LN_mlp`.
    mlp_sum: Buf,
    /// `LN_mlp` statistics.
    mlp_stats: (Buf, Buf),
}

impl<Buf> LayerActivations<Buf> {
    fn new<B: Backend<Buf = Buf>>(backend: &B) -> Result<Self, BackendError> {
        Ok(LayerActivations {
            input: backend.alloc(0)?,
            qkv: backend.alloc(0)?,
            probs: backend.alloc(0)?,
            attn_sum: backend.alloc(0)?,
            attn_stats: (backend.alloc(0)?, backend.alloc(0)?),
            mlp_pre: backend.alloc(0)?,
            mlp_sum: backend.alloc(0)?,
            mlp_stats: (backend.alloc(0)?, backend.alloc(0)?),
        })
    }
}

/// Activations of one [`bert_text_forward`] call, consumed by [`bert_text_backward`]; pass the
/// same value to later calls to reuse its memory.
pub struct BertActivations<Buf> {
    shape: SeqShape,
    /// `e + type₀ + pos`, the input of `LN_emb`.
    embedded: Buf,
    /// `LN_emb` statistics.
    embedded_stats: (Buf, Buf),
    layers: Vec<LayerActivations<Buf>>,
    /// Output of the last layer, `x_L`.
    output: Buf,
    /// Position 0 of every sequence, for gathering the `[CLS]` rows.
    cls: Vec<u32>,
    /// `x_L[:, 0]`, `batch × width`.
    pooled: Buf,
    /// `proj₁ · pooled`, `batch × proj_width`.
    proj_pre: Buf,
    /// `gelu(proj_pre)` in the forward pass, its gradient in the backward pass.
    proj_act: Buf,
    scratch: Scratch<Buf>,
}

impl<Buf> BertActivations<Buf> {
    /// Empty activations; buffers are allocated by the first forward pass.
    pub fn new<B: Backend<Buf = Buf>>(backend: &B) -> Result<Self, ClipError> {
        Ok(BertActivations {
            shape: SeqShape {
                batch: 0,
                seq: 0,
                width: 0,
            },
            embedded: backend.alloc(0)?,
            embedded_stats: (backend.alloc(0)?, backend.alloc(0)?),
            layers: Vec::new(),
            output: backend.alloc(0)?,
            cls: Vec::new(),
            pooled: backend.alloc(0)?,
            proj_pre: backend.alloc(0)?,
            proj_act: backend.alloc(0)?,
            scratch: Scratch::new(backend)?,
        })
    }

    /// Shape of the last forward pass.
    pub fn shape(&self) -> SeqShape {
        self.shape
    }

    /// Hugging Face's `hidden_states[layer]` in the first `shape().len()` values
    /// (`batch × seq × width`; the buffer may be longer, kept from a larger earlier call): 0 is
    /// the embeddings after their LayerNorm, the number of layers is the last hidden state.
    pub fn hidden(&self, layer: usize) -> Option<&Buf> {
        if layer == self.layers.len() {
            Some(&self.output)
        } else {
            self.layers.get(layer).map(|l| &l.input)
        }
    }

    /// Layer `layer`'s attention probabilities (the first `batch × heads × seq × seq` values).
    pub fn attention_probs(&self, layer: usize) -> Option<&Buf> {
        self.layers.get(layer).map(|l| &l.probs)
    }

    /// The `[CLS]` rows of the last hidden state, open_clip's pooled output (the first
    /// `batch × width` values).
    pub fn pooled(&self) -> &Buf {
        &self.pooled
    }
}

/// Runs the BERT tower on token embeddings.
///
/// `embeddings` holds `shape.batch × shape.seq × shape.width` token embeddings *without*
/// position or token-type embeddings (they are added here): the word embeddings of the ids, with
/// learned context rows spliced in where the prompt has them. Every sequence has `shape.seq`
/// real tokens (`[CLS]` first); there is no padding and no mask — run sequences of different
/// lengths as separate calls. Returns the projected features (`batch × embed_dim`) and leaves in
/// `acts` what [`bert_text_backward`] needs.
///
/// ```
/// use fedotp_host::backend::{Backend, Cpu, SeqShape};
/// use fedotp_host::clip::{bert_text_forward, BertActivations, BertTextWeights};
///
/// # fn run(weights: BertTextWeights<Vec<f32>>) -> Result<(), fedotp_host::clip::ClipError> {
/// let cpu = Cpu::new();
/// let weights = weights.to_backend(&cpu)?;
/// let shape = SeqShape { batch: 2, seq: 5, width: weights.config.width };
/// let embeddings = cpu.upload(&vec![0.01; shape.len()])?;
/// let mut acts = BertActivations::new(&cpu)?;
/// let features = bert_text_forward(&cpu, &weights, &embeddings, shape, &mut acts)?;
/// assert_eq!(features.len(), 2 * weights.config.embed_dim);
/// # Ok(())
/// # }
/// ```
pub fn bert_text_forward<B: Backend>(
    backend: &B,
    weights: &BertTextWeights<B::Buf>,
    embeddings: &B::Buf,
    shape: SeqShape,
    acts: &mut BertActivations<B::Buf>,
) -> Result<B::Buf, ClipError> {
    let config = &weights.config;
    check_input(backend, config, embeddings, shape)?;
    let (batch, rows, width) = (shape.batch, shape.rows(), shape.width);
    acts.shape = shape;
    acts.cls = vec![0; batch];
    while acts.layers.len() < weights.layers.len() {
        acts.layers.push(LayerActivations::new(backend)?);
    }
    acts.layers.truncate(weights.layers.len());
    let attention = attention_shape(config, shape);
    let s = &mut acts.scratch;
    s.fit(backend, rows, width, config.mlp_width)?;

    // Embeddings: the word/context embeddings plus the (type-0-including) positions, normalised
    // into the first layer's input (or the output when there are no layers).
    fit(backend, &mut acts.embedded, rows * width)?;
    fit(backend, &mut acts.embedded_stats.0, rows)?;
    fit(backend, &mut acts.embedded_stats.1, rows)?;
    backend.position_embed(
        &mut acts.embedded,
        embeddings,
        &weights.position_embedding,
        shape.seq,
        shape,
    )?;
    let first = match acts.layers.first_mut() {
        Some(l) => &mut l.input,
        None => &mut acts.output,
    };
    fit(backend, first, rows * width)?;
    let stats = (&mut acts.embedded_stats.0, &mut acts.embedded_stats.1);
    backend.layer_norm(first, stats, &acts.embedded, &weights.embedding_ln, rows)?;

    for (l, (a, w)) in acts.layers.iter_mut().zip(&weights.layers).enumerate() {
        // Layer l's input is the previous layer's output, swapped in so the old input buffer
        // becomes the next output buffer.
        if l > 0 {
            std::mem::swap(&mut a.input, &mut acts.output);
        }
        fit(backend, &mut acts.output, rows * width)?;
        layer_forward(backend, w, a, s, attention, &mut acts.output)?;
    }

    // open_clip's ClsLastHiddenStatePooler, then the MLP projection.
    let proj = config.proj_width;
    fit(backend, &mut acts.pooled, batch * width)?;
    fit(backend, &mut acts.proj_pre, batch * proj)?;
    fit(backend, &mut acts.proj_act, batch * proj)?;
    backend.gather_rows(&mut acts.pooled, &acts.output, &acts.cls, shape)?;
    backend.linear(&mut acts.proj_pre, &acts.pooled, &weights.proj_fc, batch)?;
    let gelu = Activation::Gelu;
    backend.activation(gelu, &mut acts.proj_act, &acts.proj_pre, batch * proj)?;
    let mut features = backend.alloc(batch * config.embed_dim)?;
    backend.linear(&mut features, &acts.proj_act, &weights.proj_out, batch)?;
    Ok(features)
}

/// The gradient of a scalar loss with respect to the input embeddings of the last
/// [`bert_text_forward`] call, given its gradient with respect to the features
/// (`batch × embed_dim`). Returns `batch × seq × width` values, the shape of the forward's
/// `embeddings`. The tower's weights are frozen: no weight gradient is formed.
pub fn bert_text_backward<B: Backend>(
    backend: &B,
    weights: &BertTextWeights<B::Buf>,
    acts: &mut BertActivations<B::Buf>,
    d_features: &B::Buf,
) -> Result<B::Buf, ClipError> {
    let config = &weights.config;
    let shape = acts.shape;
    let (batch, rows, width) = (shape.batch, shape.rows(), shape.width);
    if batch == 0 || acts.layers.len() != weights.layers.len() || width != config.width {
        return Err(ClipError::InvalidInput(
            "bert_text_backward needs the activations of a bert_text_forward call with the same \
             weights"
                .into(),
        ));
    }
    let needed = batch * config.embed_dim;
    if backend.buf_len(d_features) < needed {
        return Err(ClipError::InvalidInput(format!(
            "d_features holds {} values, {batch} sequences × {} need {needed}",
            backend.buf_len(d_features),
            config.embed_dim
        )));
    }
    // Back through the projection (proj_act now holds its gradient), then scatter the pooled
    // gradient to the [CLS] rows (zero elsewhere).
    let proj = config.proj_width;
    backend.linear_backward(&mut acts.proj_act, d_features, &weights.proj_out, batch)?;
    let gelu = Activation::Gelu;
    backend.activation_backward(gelu, &mut acts.proj_act, &acts.proj_pre, batch * proj)?;
    let mut d_pooled = backend.alloc(batch * width)?;
    backend.linear_backward(&mut d_pooled, &acts.proj_act, &weights.proj_fc, batch)?;
    let mut d_x = backend.alloc(rows * width)?;
    backend.gather_rows_backward(&mut d_x, &d_pooled, &acts.cls, shape)?;

    let attention = attention_shape(config, shape);
    let s = &mut acts.scratch;
    fit(backend, &mut s.d_qkv, rows * 3 * width)?;
    for (w, a) in weights.layers.iter().zip(&acts.layers).rev() {
        layer_backward(backend, w, a, s, attention, &mut d_x)?;
    }
    // x₀ = LN_emb(e + type₀ + pos): the additions pass the gradient through unchanged.
    let mut d_embeddings = backend.alloc(rows * width)?;
    let stats = (&acts.embedded_stats.0, &acts.embedded_stats.1);
    backend.layer_norm_backward(
        &mut d_embeddings,
        &d_x,
        &acts.embedded,
        stats,
        &weights.embedding_ln,
        rows,
    )?;
    Ok(d_embeddings)
}

fn check_input<B: Backend>(
    backend: &B,
    config: &BertConfig,
    embeddings: &B::Buf,
    shape: SeqShape,
) -> Result<(), ClipError> {
    if shape.batch == 0 || shape.seq == 0 {
        return Err(ClipError::InvalidInput(format!(
            "no tokens: {} sequences of {} tokens",
            shape.batch, shape.seq
        )));
    }
    if shape.width != config.width {
        return Err(ClipError::InvalidInput(format!(
            "embedding width {} is not the BERT tower's width {}",
            shape.width, config.width
        )));
    }
    if shape.seq > config.max_positions {
        return Err(ClipError::InvalidInput(format!(
            "sequences of {} tokens exceed the BERT tower's {} positions",
            shape.seq, config.max_positions
        )));
    }
    if backend.buf_len(embeddings) < shape.len() {
        return Err(ClipError::InvalidInput(format!(
            "embeddings hold {} values, {} sequences × {} tokens × width {} need {}",
            backend.buf_len(embeddings),
            shape.batch,
            shape.seq,
            shape.width,
            shape.len()
        )));
    }
    Ok(())
}

fn attention_shape(config: &BertConfig, shape: SeqShape) -> AttentionShape {
    AttentionShape {
        batch: shape.batch,
        seq: shape.seq,
        heads: config.heads,
        head_dim: config.width / config.heads,
        causal: false,
    }
}

/// One post-norm layer on `a.input`, writing `x_{l+1}` to `out` and keeping its activations in
/// `a`. `s` must have been fitted for these rows.
fn layer_forward<B: Backend>(
    backend: &B,
    w: &BertLayer<B::Buf>,
    a: &mut LayerActivations<B::Buf>,
    s: &mut Scratch<B::Buf>,
    attention: AttentionShape,
    out: &mut B::Buf,
) -> Result<(), ClipError> {
    let rows = attention.batch * attention.seq;
    let width = attention.width();
    let hidden = rows * w.mlp_fc.out_features;
    for buf in [
        &mut a.attn_stats.0,
        &mut a.attn_stats.1,
        &mut a.mlp_stats.0,
        &mut a.mlp_stats.1,
    ] {
        fit(backend, buf, rows)?;
    }
    fit(backend, &mut a.qkv, rows * 3 * width)?;
    fit(backend, &mut a.probs, attention.probs_len())?;
    fit(backend, &mut a.attn_sum, rows * width)?;
    fit(backend, &mut a.mlp_pre, hidden)?;
    fit(backend, &mut a.mlp_sum, rows * width)?;

    // z₁ = x + W_o · attention(W_qkv · x); h = LN_attn(z₁), kept in s.normed for the MLP.
    backend.linear(&mut a.qkv, &a.input, &w.attn_qkv, rows)?;
    backend.attention(&mut s.attn, &mut a.probs, &a.qkv, attention)?;
    backend.linear(&mut a.attn_sum, &s.attn, &w.attn_out, rows)?;
    backend.add_assign(&mut a.attn_sum, &a.input, rows * width)?;
    let stats = (&mut a.attn_stats.0, &mut a.attn_stats.1);
    backend.layer_norm(&mut s.normed, stats, &a.attn_sum, &w.attn_ln, rows)?;

    // z₂ = h + fc2(gelu(fc1(h))); out = LN_mlp(z₂).
    backend.linear(&mut a.mlp_pre, &s.normed, &w.mlp_fc, rows)?;
    backend.activation(Activation::Gelu, &mut s.hidden, &a.mlp_pre, hidden)?;
    backend.linear(&mut a.mlp_sum, &s.hidden, &w.mlp_out, rows)?;
    backend.add_assign(&mut a.mlp_sum, &s.normed, rows * width)?;
    let stats = (&mut a.mlp_stats.0, &mut a.mlp_stats.1);
    backend.layer_norm(out, stats, &a.mlp_sum, &w.mlp_ln, rows)?;
    Ok(())
}

/// The layer's input gradient: on entry `d_x` holds dL/d(output), on return dL/d(input).
/// `s.d_qkv` must hold `rows × 3·width` values.
fn layer_backward<B: Backend>(
    backend: &B,
    w: &BertLayer<B::Buf>,
    a: &LayerActivations<B::Buf>,
    s: &mut Scratch<B::Buf>,
    attention: AttentionShape,
    d_x: &mut B::Buf,
) -> Result<(), ClipError> {
    let rows = attention.batch * attention.seq;
    let width = attention.width();
    let hidden = rows * w.mlp_fc.out_features;

    // dz₂ through LN_mlp (into a zeroed buffer: the LayerNorm backward accumulates), then
    // dh = dz₂ (residual) + the MLP branch's input gradient.
    let mut d_h = backend.alloc(rows * width)?;
    let stats = (&a.mlp_stats.0, &a.mlp_stats.1);
    backend.layer_norm_backward(&mut d_h, d_x, &a.mlp_sum, stats, &w.mlp_ln, rows)?;
    backend.linear_backward(&mut s.hidden, &d_h, &w.mlp_out, rows)?;
    backend.activation_backward(Activation::Gelu, &mut s.hidden, &a.mlp_pre, hidden)?;
    backend.linear_backward(&mut s.normed, &s.hidden, &w.mlp_fc, rows)?;
    backend.add_assign(&mut d_h, &s.normed, rows * width)?;

    // dz₁ through LN_attn, then dx = dz₁ (residual) + the attention branch's input gradient.
    let mut d_in = backend.alloc(rows * width)?;
    let stats = (&a.attn_stats.0, &a.attn_stats.1);
    backend.layer_norm_backward(&mut d_in, &d_h, &a.attn_sum, stats, &w.attn_ln, rows)?;
    backend.linear_backward(&mut s.attn, &d_in, &w.attn_out, rows)?;
    backend.attention_backward(&mut s.d_qkv, &s.attn, &a.qkv, &a.probs, attention)?;
    backend.linear_backward(&mut s.normed, &s.d_qkv, &w.attn_qkv, rows)?;
    backend.add_assign(&mut d_in, &s.normed, rows * width)?;
    *d_x = d_in;
    Ok(())
}
