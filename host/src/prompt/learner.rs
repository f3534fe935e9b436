//! Class prompts with learned context: `[SOT] ctx_1 … ctx_n {class name}. [EOT]`, one set of
//! context vectors per prompt (FedOTP: set 0 global, set 1 local), shared by every class.

use crate::backend::{Backend, SeqShape};
use crate::clip::classnames::prompt_name;
use crate::clip::tokenizer::Tokenizer;
use crate::clip::{
    text_backward, text_forward, ClipError, PromptBatch, SpecialTokens, TextActivations,
    TextWeights,
};

/// The prompts of one classification task and the text side of a training step: from context
/// vectors to L2-normalised prompt features, and back to the context's gradient.
#[derive(Debug, Clone)]
pub struct PromptLearner {
    prompts: PromptBatch,
    n_sets: usize,
    n_ctx: usize,
    classes: usize,
    width: usize,
    embed_dim: usize,
}

/// One set of context vectors started from words, as CoOp's `ctx_init` does: the token
/// embeddings of the words' tokens (`_` read as a space), `tokens × width` values. With
/// `"a photo of a"` the prompts begin as the text "a photo of a {class name}." itself.
pub fn context_from_words<B: Backend>(
    backend: &B,
    tokenizer: &Tokenizer,
    text: &TextWeights<B::Buf>,
    words: &str,
) -> Result<Vec<f32>, ClipError> {
    let ids = tokenizer.encode(&prompt_name(words));
    if ids.is_empty() {
        return Err(ClipError::InvalidInput(format!(
            "context words {words:?} have no tokens"
        )));
    }
    let width = text.config.width;
    // The embedding table as one sequence of `vocab_size` rows, of which each call picks one.
    let table = SeqShape {
        batch: 1,
        seq: text.config.vocab_size,
        width,
    };
    let mut row = backend.alloc(width)?;
    let mut context = Vec::with_capacity(ids.len() * width);
    for id in ids {
        backend.gather_rows(&mut row, &text.token_embedding, &[id], table)?;
        context.extend(backend.download(&row, width)?);
    }
    Ok(context)
}

/// What the text side keeps between its forward and backward pass (reused across steps).
pub struct TextState<Buf> {
    acts: TextActivations<Buf>,
    /// Unit-length prompt features, `(n_sets · classes) × embed_dim`, set-major.
    pub features: Buf,
    norms: Buf,
}

impl PromptLearner {
    /// The prompts `[SOT] ctx {name}. [EOT]` for each class name (`_` read as a space, as CoOp
    /// does), with `n_sets` sets of `n_ctx` context vectors.
    pub fn new(
        tokenizer: &Tokenizer,
        class_names: &[String],
        n_ctx: usize,
        n_sets: usize,
        text: &TextWeights<impl Sized>,
    ) -> Result<Self, ClipError> {
        let class_tokens = class_names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let name = prompt_name(name);
                // A name that is only spaces, `_` or what the tokenizer's cleaning drops would
                // leave the class with the bare prompt "X X ... X." — no name at all.
                if tokenizer.encode(&name).is_empty() {
                    return Err(ClipError::InvalidInput(format!(
                        "class name {i} ({:?}) is blank once `_` is read as a space",
                        class_names[i]
                    )));
                }
                Ok(tokenizer.encode(&format!("{name}.")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_tokens(&class_tokens, n_ctx, n_sets, text)
    }

    /// As [`PromptLearner::new`], from the token ids of each class's text (without start/end
    /// tokens) — e.g. `"a photo of a {name}."` with `n_ctx = 0` for zero-shot CLIP.
    pub fn from_tokens(
        class_tokens: &[Vec<u32>],
        n_ctx: usize,
        n_sets: usize,
        text: &TextWeights<impl Sized>,
    ) -> Result<Self, ClipError> {
        let config = &text.config;
        // CLIP's start and end tokens are the last two ids of its vocabulary (49406 and 49407 of
        // the BPE's 49408), which also holds for the small-vocabulary test models.
        let special = SpecialTokens {
            start: config.vocab_size.saturating_sub(2) as u32,
            end: config.vocab_size.saturating_sub(1) as u32,
        };
        let prompts =
            PromptBatch::new(class_tokens, n_ctx, n_sets, config.context_length, special)?;
        if let Some(&id) = prompts
            .token_ids()
            .iter()
            .find(|&&id| id as usize >= config.vocab_size)
        {
            return Err(ClipError::InvalidInput(format!(
                "token id {id} is outside the model's vocabulary of {}",
                config.vocab_size
            )));
        }
        Ok(PromptLearner {
            prompts,
            n_sets,
            n_ctx,
            classes: class_tokens.len(),
            width: config.width,
            embed_dim: text.projection.out_features,
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of context sets (prompts per class).
    pub fn n_sets(&self) -> usize {
        self.n_sets
    }

    /// Context vectors per set.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens each prompt runs through the text tower (the longest prompt's length).
    pub fn tokens_per_prompt(&self) -> usize {
        self.prompts.seq_len()
    }

    /// Floats of context: `n_sets × n_ctx × width`.
    pub fn context_len(&self) -> usize {
        self.n_sets * self.n_ctx * self.width
    }

    /// Dimension of the prompt features (CLIP's joint embedding).
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// A state to run [`PromptLearner::forward`] into.
    pub fn state<B: Backend>(&self, backend: &B) -> Result<TextState<B::Buf>, ClipError> {
        let rows = self.prompts.len();
        Ok(TextState {
            acts: TextActivations::new(backend)?,
            features: backend.alloc(rows * self.embed_dim)?,
            norms: backend.alloc(rows)?,
        })
    }

    /// Unit-length features of every prompt into `state.features`, from `ctx`
    /// (`n_sets × n_ctx × width`, host memory).
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        text: &TextWeights<B::Buf>,
        ctx: &[f32],
        state: &mut TextState<B::Buf>,
    ) -> Result<(), ClipError> {
        if ctx.len() != self.context_len() {
            return Err(ClipError::InvalidInput(format!(
                "context holds {} floats, the prompts need {} ({} sets x {} vectors x {})",
                ctx.len(),
                self.context_len(),
                self.n_sets,
                self.n_ctx,
                self.width
            )));
        }
        let ctx = backend.upload(ctx)?;
        let embeddings = self.prompts.embed(backend, text, &ctx)?;
        let features = text_forward(
            backend,
            text,
            &embeddings,
            self.prompts.seq_len(),
            self.prompts.eot_positions(),
            &mut state.acts,
        )?;
        backend.normalize_rows(
            &mut state.features,
            &mut state.norms,
            &features,
            self.prompts.len(),
            self.embed_dim,
        )?;
        Ok(())
    }

    /// The gradient with respect to the context (host memory, `n_sets × n_ctx × width`) from the
    /// gradient with respect to the unit-length prompt features of the last forward pass.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        text: &TextWeights<B::Buf>,
        state: &mut TextState<B::Buf>,
        d_features: &B::Buf,
    ) -> Result<Vec<f32>, ClipError> {
        let rows = self.prompts.len();
        let mut d_raw = backend.alloc(rows * self.embed_dim)?;
        backend.normalize_rows_backward(
            &mut d_raw,
            d_features,
            &state.features,
            &state.norms,
            rows,
            self.embed_dim,
        )?;
        let d_embeddings = text_backward(backend, text, &mut state.acts, &d_raw)?;
        let d_ctx = self
            .prompts
            .context_gradient(backend, text, &d_embeddings)?;
        Ok(backend.download(&d_ctx, self.context_len())?)
    }
}
