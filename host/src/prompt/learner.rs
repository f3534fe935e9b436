//! Class prompts with learned context: `[SOT] ctx_1 … ctx_n {class name}. [EOT]` for CLIP,
//! `[CLS] ctx_1 … ctx_n {class name}. [SEP]` for a BERT text tower, one set of context vectors
//! per prompt (FedOTP: set 0 global, set 1 local), shared by every class.
//!
//! The text tower runs the prompts in groups, one batch each. CLIP's tower takes them all at
//! once, padded to the longest: its causal attention and its pooling at the end-of-text token
//! never see the padding. A BERT tower's attention is bidirectional, so padding would change
//! every token's output; it takes one group per prompt length instead, which equals Hugging
//! Face's padded run with its attention mask (docs/ALGORITHM.md §1). Features of several groups
//! are put back in prompt order on the host (a few hundred floats per prompt).

use std::collections::BTreeMap;

use crate::backend::{Backend, SeqShape};
use crate::clip::classnames::prompt_name;
use crate::clip::{
    bert_text_backward, bert_text_forward, text_backward, text_forward, BertActivations, ClipError,
    PromptBatch, SpecialTokens, TextActivations, TextTokenizer, TextTower,
};

/// The prompts of one classification task and the text side of a training step: from context
/// vectors to L2-normalised prompt features, and back to the context's gradient.
#[derive(Debug, Clone)]
pub struct PromptLearner {
    groups: Vec<PromptGroup>,
    tower: TowerKind,
    n_sets: usize,
    n_ctx: usize,
    classes: usize,
    width: usize,
    embed_dim: usize,
}

/// Prompts the text tower runs as one batch: every set's prompts of `classes`, set-major (row
/// `set · classes.len() + i` is class `classes[i]`).
#[derive(Debug, Clone)]
struct PromptGroup {
    prompts: PromptBatch,
    classes: Vec<usize>,
}

/// The kind of text tower a learner's prompts were laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TowerKind {
    Clip,
    Bert,
}

impl TowerKind {
    fn of<Buf>(text: &TextTower<Buf>) -> Self {
        match text {
            TextTower::Clip(_) => TowerKind::Clip,
            TextTower::Bert(_) => TowerKind::Bert,
        }
    }
}

/// One set of context vectors started from words, as CoOp's `ctx_init` does: the token
/// embeddings of the words' tokens (`_` read as a space), `tokens × width` values. With
/// `"a photo of a"` the prompts begin as the text "a photo of a {class name}." itself.
pub fn context_from_words<B: Backend>(
    backend: &B,
    tokenizer: &TextTokenizer,
    text: &TextTower<B::Buf>,
    words: &str,
) -> Result<Vec<f32>, ClipError> {
    let ids = tokenizer.encode(&prompt_name(words));
    if ids.is_empty() {
        return Err(ClipError::InvalidInput(format!(
            "context words {words:?} have no tokens"
        )));
    }
    let width = text.width();
    // The embedding table as one sequence of `vocab_size` rows, of which each call picks one.
    let table = SeqShape {
        batch: 1,
        seq: text.vocab_size(),
        width,
    };
    let mut row = backend.alloc(width)?;
    let mut context = Vec::with_capacity(ids.len() * width);
    for id in ids {
        backend.gather_rows(&mut row, text.token_embedding(), &[id], table)?;
        context.extend(backend.download(&row, width)?);
    }
    Ok(context)
}

/// What one group's tower keeps between its forward and backward pass.
enum GroupActivations<Buf> {
    Clip(TextActivations<Buf>),
    Bert(BertActivations<Buf>),
}

/// What the text side keeps between its forward and backward pass (reused across steps).
pub struct TextState<Buf> {
    groups: Vec<GroupActivations<Buf>>,
    /// Projected prompt features before normalisation, `(n_sets · classes) × embed_dim`,
    /// set-major: the text tower's output.
    pub raw_features: Buf,
    /// Unit-length prompt features, `(n_sets · classes) × embed_dim`, set-major.
    pub features: Buf,
    norms: Buf,
}

impl PromptLearner {
    /// The prompts `start ctx {name}. end` for each class name (`_` read as a space, as CoOp
    /// does), with `n_sets` sets of `n_ctx` context vectors; `tokenizer` is the text tower's and
    /// gives the start and end tokens.
    pub fn new(
        tokenizer: &TextTokenizer,
        class_names: &[String],
        n_ctx: usize,
        n_sets: usize,
        text: &TextTower<impl Sized>,
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
        let special = tokenizer.special_tokens();
        Self::from_tokens(&class_tokens, n_ctx, n_sets, text, special)
    }

    /// As [`PromptLearner::new`], from the token ids of each class's text (without start/end
    /// tokens, which `special` gives) — e.g. `"a photo of a {name}."` with `n_ctx = 0` for
    /// zero-shot CLIP.
    pub fn from_tokens(
        class_tokens: &[Vec<u32>],
        n_ctx: usize,
        n_sets: usize,
        text: &TextTower<impl Sized>,
        special: SpecialTokens,
    ) -> Result<Self, ClipError> {
        let context_length = text.context_length();
        // Every prompt at once: checks lengths and ids, naming the class.
        let all = PromptBatch::new(class_tokens, n_ctx, n_sets, context_length, special)?;
        if let Some(&id) = all
            .token_ids()
            .iter()
            .find(|&&id| id as usize >= text.vocab_size())
        {
            return Err(ClipError::InvalidInput(format!(
                "token id {id} is outside the model's vocabulary of {}",
                text.vocab_size()
            )));
        }
        let tower = TowerKind::of(text);
        let groups = match tower {
            TowerKind::Clip => vec![PromptGroup {
                prompts: all,
                classes: (0..class_tokens.len()).collect(),
            }],
            TowerKind::Bert => {
                let mut by_length = BTreeMap::<usize, Vec<usize>>::new();
                for (class, tokens) in class_tokens.iter().enumerate() {
                    by_length.entry(tokens.len()).or_default().push(class);
                }
                by_length
                    .into_values()
                    .map(|classes| {
                        let tokens: Vec<Vec<u32>> =
                            classes.iter().map(|&c| class_tokens[c].clone()).collect();
                        Ok(PromptGroup {
                            prompts: PromptBatch::new(
                                &tokens,
                                n_ctx,
                                n_sets,
                                context_length,
                                special,
                            )?,
                            classes,
                        })
                    })
                    .collect::<Result<_, ClipError>>()?
            }
        };
        Ok(PromptLearner {
            groups,
            tower,
            n_sets,
            n_ctx,
            classes: class_tokens.len(),
            width: text.width(),
            embed_dim: text.embed_dim(),
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

    /// Tokens the longest prompt runs through the text tower.
    pub fn tokens_per_prompt(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.prompts.seq_len())
            .max()
            .unwrap_or(0)
    }

    /// Floats of context: `n_sets × n_ctx × width`.
    pub fn context_len(&self) -> usize {
        self.n_sets * self.n_ctx * self.width
    }

    /// Dimension of the prompt features (CLIP's joint embedding).
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    fn prompts(&self) -> usize {
        self.n_sets * self.classes
    }

    /// A state to run [`PromptLearner::forward`] into.
    pub fn state<B: Backend>(&self, backend: &B) -> Result<TextState<B::Buf>, ClipError> {
        let groups = self
            .groups
            .iter()
            .map(|_| {
                Ok(match self.tower {
                    TowerKind::Clip => GroupActivations::Clip(TextActivations::new(backend)?),
                    TowerKind::Bert => GroupActivations::Bert(BertActivations::new(backend)?),
                })
            })
            .collect::<Result<_, ClipError>>()?;
        let rows = self.prompts();
        Ok(TextState {
            groups,
            // Replaced by each forward pass with the tower's output.
            raw_features: backend.alloc(0)?,
            features: backend.alloc(rows * self.embed_dim)?,
            norms: backend.alloc(rows)?,
        })
    }

    /// Features of every prompt into `state` (unit-length in `state.features`), from `ctx`
    /// (`n_sets × n_ctx × width`, host memory).
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        text: &TextTower<B::Buf>,
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
        self.check_tower(text, state)?;
        let ctx = backend.upload(ctx)?;
        let (rows, dim) = (self.prompts(), self.embed_dim);
        state.raw_features = if let [group] = self.groups.as_slice() {
            // One group holds every class in order: its features are the prompts'.
            group_forward(backend, text, group, &ctx, &mut state.groups[0])?
        } else {
            let mut raw = vec![0.0; rows * dim];
            for (group, acts) in self.groups.iter().zip(&mut state.groups) {
                let features = group_forward(backend, text, group, &ctx, acts)?;
                let features = backend.download(&features, group.prompts.len() * dim)?;
                for (row, values) in features.chunks_exact(dim).enumerate() {
                    let at = self.prompt_row(group, row) * dim;
                    raw[at..at + dim].copy_from_slice(values);
                }
            }
            backend.upload_vec(raw)?
        };
        backend.normalize_rows(
            &mut state.features,
            &mut state.norms,
            &state.raw_features,
            rows,
            dim,
        )?;
        Ok(())
    }

    /// The gradient with respect to the context (host memory, `n_sets × n_ctx × width`) from the
    /// gradient with respect to the unit-length prompt features of the last forward pass.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        text: &TextTower<B::Buf>,
        state: &mut TextState<B::Buf>,
        d_features: &B::Buf,
    ) -> Result<Vec<f32>, ClipError> {
        self.check_tower(text, state)?;
        let (rows, dim) = (self.prompts(), self.embed_dim);
        let mut d_raw = backend.alloc(rows * dim)?;
        backend.normalize_rows_backward(
            &mut d_raw,
            d_features,
            &state.features,
            &state.norms,
            rows,
            dim,
        )?;
        if let [group] = self.groups.as_slice() {
            return self.group_backward(backend, text, group, &mut state.groups[0], &d_raw);
        }
        // Each context row's gradient sums over every class, so over the groups.
        let d_raw = backend.download(&d_raw, rows * dim)?;
        let mut d_ctx = vec![0.0; self.context_len()];
        for (group, acts) in self.groups.iter().zip(&mut state.groups) {
            let mut d_group = Vec::with_capacity(group.prompts.len() * dim);
            for row in 0..group.prompts.len() {
                let at = self.prompt_row(group, row) * dim;
                d_group.extend_from_slice(&d_raw[at..at + dim]);
            }
            let d_group = backend.upload_vec(d_group)?;
            let part = self.group_backward(backend, text, group, acts, &d_group)?;
            for (total, value) in d_ctx.iter_mut().zip(part) {
                *total += value;
            }
        }
        Ok(d_ctx)
    }

    /// The prompt (`set · classes + class`) of row `row` of `group`'s batch.
    fn prompt_row(&self, group: &PromptGroup, row: usize) -> usize {
        let per_set = group.classes.len();
        (row / per_set) * self.classes + group.classes[row % per_set]
    }

    /// Refuses a tower or a state of another kind than the prompts were laid out for.
    fn check_tower<Buf>(
        &self,
        text: &TextTower<Buf>,
        state: &TextState<Buf>,
    ) -> Result<(), ClipError> {
        if TowerKind::of(text) != self.tower || state.groups.len() != self.groups.len() {
            return Err(ClipError::InvalidInput(
                "the prompts were laid out for another text tower, or the state is another \
                 learner's"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `group`'s share of the context gradient from the gradient of its projected features.
    fn group_backward<B: Backend>(
        &self,
        backend: &B,
        text: &TextTower<B::Buf>,
        group: &PromptGroup,
        acts: &mut GroupActivations<B::Buf>,
        d_features: &B::Buf,
    ) -> Result<Vec<f32>, ClipError> {
        let d_embeddings = match (text, acts) {
            (TextTower::Clip(w), GroupActivations::Clip(a)) => {
                text_backward(backend, w, a, d_features)?
            }
            (TextTower::Bert(w), GroupActivations::Bert(a)) => {
                bert_text_backward(backend, w, a, d_features)?
            }
            _ => return Err(mismatched_state()),
        };
        let d_ctx = group
            .prompts
            .context_gradient(backend, text, &d_embeddings)?;
        Ok(backend.download(&d_ctx, self.context_len())?)
    }
}

/// Projected features (not normalised) of `group`'s prompts.
fn group_forward<B: Backend>(
    backend: &B,
    text: &TextTower<B::Buf>,
    group: &PromptGroup,
    ctx: &B::Buf,
    acts: &mut GroupActivations<B::Buf>,
) -> Result<B::Buf, ClipError> {
    let prompts = &group.prompts;
    let embeddings = prompts.embed(backend, text, ctx)?;
    match (text, acts) {
        (TextTower::Clip(w), GroupActivations::Clip(a)) => text_forward(
            backend,
            w,
            &embeddings,
            prompts.seq_len(),
            prompts.eot_positions(),
            a,
        ),
        (TextTower::Bert(w), GroupActivations::Bert(a)) => {
            let shape = SeqShape {
                batch: prompts.len(),
                seq: prompts.seq_len(),
                width: w.config.width,
            };
            bert_text_forward(backend, w, &embeddings, shape, a)
        }
        _ => Err(mismatched_state()),
    }
}

fn mismatched_state() -> ClipError {
    ClipError::InvalidInput("the text state was made for another kind of text tower".into())
}
