//! One step of prompt learning: text features from the context, logits through the head, the
//! cross-entropy loss and its gradient back to the context.

use fedotp_core::ot::BatchReport;

use super::{Head, HeadDims, HeadState, PromptLearner, TextState};
use crate::backend::Backend;
use crate::clip::{ClipError, TextTower};

/// A prompt learner, the head on top of it and CLIP's logit scale: everything that maps
/// context vectors and image features to class logits.
#[derive(Debug, Clone)]
pub struct PromptModel {
    /// The class prompts and their context sets.
    pub learner: PromptLearner,
    /// How logits are formed.
    pub head: Head,
    /// CLIP's `logit_scale.exp()` (100 for the released models).
    pub scale: f32,
}

/// Buffers a [`PromptModel`] reuses across steps.
pub struct Workspace<Buf> {
    text: TextState<Buf>,
    head: HeadState<Buf>,
}

/// What one training step computed.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    /// The batch's logits, `images × classes`.
    pub logits: Vec<f32>,
    /// Gradient of the loss with respect to the context, `n_sets × n_ctx × width`.
    pub d_ctx: Vec<f32>,
    /// What the OT solve did (empty for the cosine head).
    pub report: BatchReport,
}

impl PromptModel {
    /// Buffers for this model on `backend`.
    pub fn workspace<B: Backend>(&self, backend: &B) -> Result<Workspace<B::Buf>, ClipError> {
        Ok(Workspace {
            text: self.learner.state(backend)?,
            head: HeadState::default(),
        })
    }

    fn dims(&self, images: usize) -> HeadDims {
        HeadDims {
            images,
            prompts: self.learner.n_sets(),
            classes: self.learner.classes(),
            dim: self.learner.embed_dim(),
        }
    }

    /// Floats of image features one image contributes (`rows_per_image × embed_dim`).
    pub fn image_feature_len(&self) -> usize {
        self.head.rows_per_image() * self.learner.embed_dim()
    }

    /// Refuses image features that do not hold `images` images' worth.
    fn check_images(&self, len: usize, images: usize) -> Result<(), ClipError> {
        let needed = images * self.image_feature_len();
        if len < needed {
            return Err(ClipError::InvalidInput(format!(
                "image features hold {len} floats, {images} images need {needed}"
            )));
        }
        Ok(())
    }

    /// Loss and context gradient of one batch: `image` holds the batch's unit-length image
    /// features (`labels.len() × rows_per_image × embed_dim`), `ctx` the context vectors.
    pub fn loss_and_gradient<B: Backend>(
        &self,
        backend: &B,
        text: &TextTower<B::Buf>,
        ctx: &[f32],
        image: &B::Buf,
        labels: &[u32],
        ws: &mut Workspace<B::Buf>,
    ) -> Result<StepOutcome, ClipError> {
        let images = labels.len();
        self.check_images(backend.buf_len(image), images)?;
        let dims = self.dims(images);
        self.learner.forward(backend, text, ctx, &mut ws.text)?;
        let logits = self.head.forward(
            backend,
            image,
            &ws.text.features,
            dims,
            self.scale,
            &mut ws.head,
        )?;
        let mut d_logits = backend.alloc(images * dims.classes)?;
        let loss = backend.cross_entropy(&mut d_logits, &logits, labels, dims.classes)?;
        let d_text = self
            .head
            .backward(backend, image, &d_logits, dims, self.scale, &ws.head)?;
        let d_ctx = self
            .learner
            .backward(backend, text, &mut ws.text, &d_text)?;
        Ok(StepOutcome {
            loss,
            logits: backend.download(&logits, images * dims.classes)?,
            d_ctx,
            report: ws.head.report,
        })
    }

    /// Computes the prompt features for `ctx` once, for [`PromptModel::logits`] to reuse over
    /// many batches (evaluation).
    pub fn prepare<B: Backend>(
        &self,
        backend: &B,
        text: &TextTower<B::Buf>,
        ctx: &[f32],
        ws: &mut Workspace<B::Buf>,
    ) -> Result<(), ClipError> {
        self.learner.forward(backend, text, ctx, &mut ws.text)
    }

    /// Logits (`images × classes`) of a batch of unit-length image features against the prompt
    /// features of the last [`PromptModel::prepare`] (or training step).
    pub fn logits<B: Backend>(
        &self,
        backend: &B,
        image: &B::Buf,
        images: usize,
        ws: &mut Workspace<B::Buf>,
    ) -> Result<(Vec<f32>, BatchReport), ClipError> {
        self.check_images(backend.buf_len(image), images)?;
        let dims = self.dims(images);
        let logits = self.head.forward(
            backend,
            image,
            &ws.text.features,
            dims,
            self.scale,
            &mut ws.head,
        )?;
        Ok((
            backend.download(&logits, images * dims.classes)?,
            ws.head.report,
        ))
    }
}
