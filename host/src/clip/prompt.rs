//! Prompt assembly for prompt learning: `[SOT] ctx_1 … ctx_n {class tokens} [EOT]` as token
//! embeddings, with learned context rows spliced in, and the reverse mapping of gradients.

use super::{ClipError, TextTower};
use crate::backend::{Backend, PromptShape};

/// CLIP's start-of-text token id.
pub const SOT_TOKEN: u32 = 49_406;
/// CLIP's end-of-text token id.
pub const EOT_TOKEN: u32 = 49_407;

/// The start and end token ids of a vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Start of text.
    pub start: u32,
    /// End of text.
    pub end: u32,
}

impl SpecialTokens {
    /// CLIP's BPE vocabulary: 49406 and 49407.
    pub const CLIP: SpecialTokens = SpecialTokens {
        start: SOT_TOKEN,
        end: EOT_TOKEN,
    };
}

/// The token layout of `n_sets × n_classes` prompts that share learned context.
///
/// Prompt `s = set · n_classes + class` (set-major, as FedOTP stacks its global and local
/// prompts) is `[SOT] ctx[set][0..n_ctx] class_tokens[class] [EOT]`, padded; the sequence length
/// is the longest prompt, so the text tower runs on no padding it does not need.
///
/// ```
/// use fedotp_host::backend::{Backend, Cpu};
/// use fedotp_host::clip::{
///     text_backward, text_forward, ClipConfig, ClipWeights, PromptBatch, SpecialTokens,
///     TextActivations, TextTower,
/// };
///
/// let cpu = Cpu::new();
/// let weights = ClipWeights::random(&ClipConfig::tiny(), 0)?.to_backend(&cpu)?;
/// let TextTower::Clip(text) = &weights.text else { unreachable!("the tiny CLIP's") };
/// let width = text.config.width;
/// // Two classes ("dog." and "sea lion.") and two context sets (global, local) of 4 rows.
/// let classes = vec![vec![1929, 269], vec![2102, 5867, 269]];
/// let prompts = PromptBatch::new(&classes, 4, 2, 77, SpecialTokens::CLIP)?;
/// assert_eq!(prompts.eot_positions(), &[7, 8, 7, 8]);
///
/// let ctx = cpu.upload(&vec![0.02; 2 * 4 * width])?;
/// let embeddings = prompts.embed(&cpu, &weights.text, &ctx)?;
/// let mut acts = TextActivations::new(&cpu)?;
/// let features = text_forward(
///     &cpu, text, &embeddings, prompts.seq_len(), prompts.eot_positions(), &mut acts,
/// )?;
/// let d_features = cpu.upload(&vec![1.0; features.len()])?;
/// let d_embeddings = text_backward(&cpu, text, &mut acts, &d_features)?;
/// let d_ctx = prompts.context_gradient(&cpu, &weights.text, &d_embeddings)?;
/// assert_eq!(d_ctx.len(), 2 * 4 * width);
/// # Ok::<(), fedotp_host::clip::ClipError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptBatch {
    ids: Vec<u32>,
    eot_positions: Vec<u32>,
    sets: Vec<u32>,
    n_ctx: usize,
    n_sets: usize,
    seq_len: usize,
}

impl PromptBatch {
    /// Lays out the prompts. `class_tokens[c]` are the token ids of class `c`'s text as the
    /// tokenizer gives them without start/end tokens (for FedOTP, the tokens of `"{name}."`).
    /// Fails when a prompt does not fit in `context_length` tokens.
    pub fn new(
        class_tokens: &[Vec<u32>],
        n_ctx: usize,
        n_sets: usize,
        context_length: usize,
        special: SpecialTokens,
    ) -> Result<Self, ClipError> {
        if class_tokens.is_empty() || n_sets == 0 {
            return Err(ClipError::InvalidInput(
                "a prompt batch needs at least one class and one context set".into(),
            ));
        }
        let longest = class_tokens.iter().map(Vec::len).max().unwrap_or(0);
        let seq_len = 1 + n_ctx + longest + 1;
        if let Some((c, tokens)) = class_tokens
            .iter()
            .enumerate()
            .find(|(_, t)| 2 + n_ctx + t.len() > context_length)
        {
            return Err(ClipError::InvalidInput(format!(
                "class {c}: SOT + {n_ctx} context rows + {} class tokens + EOT exceed the context length {context_length}",
                tokens.len()
            )));
        }
        let batch = n_sets * class_tokens.len();
        let mut ids = vec![0; batch * seq_len];
        let mut eot_positions = Vec::with_capacity(batch);
        let mut sets = Vec::with_capacity(batch);
        for set in 0..n_sets {
            for tokens in class_tokens {
                let row = &mut ids[eot_positions.len() * seq_len..][..seq_len];
                // Positions 1..=n_ctx keep id 0: the context rows replace them.
                row[0] = special.start;
                row[1 + n_ctx..1 + n_ctx + tokens.len()].copy_from_slice(tokens);
                let eot = 1 + n_ctx + tokens.len();
                row[eot] = special.end;
                eot_positions.push(eot as u32);
                sets.push(set as u32);
            }
        }
        Ok(PromptBatch {
            ids,
            eot_positions,
            sets,
            n_ctx,
            n_sets,
            seq_len,
        })
    }

    /// Number of prompts, `n_sets × n_classes`.
    pub fn len(&self) -> usize {
        self.eot_positions.len()
    }

    /// Whether the batch holds no prompt (never true for a constructed batch).
    pub fn is_empty(&self) -> bool {
        self.eot_positions.is_empty()
    }

    /// Tokens per prompt: the longest prompt's length.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Position of each prompt's end-of-text token.
    pub fn eot_positions(&self) -> &[u32] {
        &self.eot_positions
    }

    /// Token ids, `len × seq_len` (context positions hold 0).
    pub fn token_ids(&self) -> &[u32] {
        &self.ids
    }

    fn shape(&self, width: usize) -> PromptShape {
        PromptShape {
            batch: self.len(),
            seq: self.seq_len,
            width,
            n_ctx: self.n_ctx,
            n_sets: self.n_sets,
        }
    }

    /// The prompts' token embeddings (`len × seq_len × width`, without position embeddings —
    /// the input of [`super::text_forward`]), with `ctx` (`n_sets × n_ctx × width`) spliced in.
    pub fn embed<B: Backend>(
        &self,
        backend: &B,
        text: &TextTower<B::Buf>,
        ctx: &B::Buf,
    ) -> Result<B::Buf, ClipError> {
        let shape = self.shape(text.width());
        let mut out = backend.alloc(shape.batch * shape.seq * shape.width)?;
        backend.prompt_embed(
            &mut out,
            text.token_embedding(),
            &self.ids,
            ctx,
            &self.sets,
            shape,
        )?;
        Ok(out)
    }

    /// The gradient with respect to the context (`n_sets × n_ctx × width`) from the gradient
    /// with respect to the prompts' embeddings (`len × seq_len × width`): each context row is
    /// shared by all classes, so its gradient is the sum over them.
    pub fn context_gradient<B: Backend>(
        &self,
        backend: &B,
        text: &TextTower<B::Buf>,
        d_embeddings: &B::Buf,
    ) -> Result<B::Buf, ClipError> {
        let width = text.width();
        let shape = self.shape(width);
        let mut d_ctx = backend.alloc(self.n_sets * self.n_ctx * width)?;
        backend.prompt_embed_backward(&mut d_ctx, d_embeddings, &self.sets, shape)?;
        Ok(d_ctx)
    }
}
