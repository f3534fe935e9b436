//! From image features and prompt features to class logits, and back to the prompt features'
//! gradient.
//!
//! - [`Head::Ot`]: FedOTP. For each image and class, the `M` unit-length patch features and the
//!   class's `N` unit-length prompt features form an `M × N` cosine-similarity matrix `S`; the
//!   transport plan `T` of the OT problem on `1 − S` weighs it, `logit = scale · Σ T∘S`. The
//!   plan is held constant in the backward pass, as in the paper.
//! - [`Head::Cosine`]: CLIP's own (zero-shot, CoOp, PromptFL): one pooled unit-length feature per
//!   image against one prompt feature per class, `logit = scale · cos`.

use fedotp_core::ot::{self, BatchLayout, BatchReport, OtParams};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, BackendResult, MatmulDims};
use crate::clip::ClipError;

/// When the OT head's iterations stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtStopping {
    /// Each problem on its own, when its prompt-side scaling's mean relative change falls below
    /// `tol` (the backend's solver: [`Backend::ot_plans`]).
    #[default]
    PerProblem,
    /// The released code's rule, to reproduce its results: all problems of a batch together,
    /// when the batch's mean absolute change falls below `tol`, on the unshifted kernel
    /// ([`fedotp_core::ot::solve_batch_released`], on the CPU whatever the backend: the
    /// similarities come down and the plans go back up).
    Released,
}

impl OtStopping {
    /// Whether this is the default.
    pub fn is_per_problem(&self) -> bool {
        *self == OtStopping::PerProblem
    }
}

/// How class logits are formed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Head {
    /// FedOTP's optimal-transport head over patch features (`patches` per image).
    Ot {
        /// The solver's parameters.
        params: OtParams,
        /// When its iterations stop.
        stopping: OtStopping,
        /// Patch features per image, M.
        patches: usize,
    },
    /// Cosine similarity of one pooled feature per image with one prompt per class.
    Cosine,
}

/// The head's buffers, kept between forward and backward and reused across steps.
pub struct HeadState<Buf> {
    sim: Option<Buf>,
    plans: Option<Buf>,
    /// What the last OT solve did (empty for the cosine head).
    pub report: BatchReport,
}

impl<Buf> Default for HeadState<Buf> {
    fn default() -> Self {
        HeadState {
            sim: None,
            plans: None,
            report: BatchReport::default(),
        }
    }
}

/// Dimensions of one evaluation of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadDims {
    /// Images in the batch.
    pub images: usize,
    /// Prompts per class, N.
    pub prompts: usize,
    /// Classes.
    pub classes: usize,
    /// Feature dimension.
    pub dim: usize,
}

impl Head {
    /// Rows of image features per image the head reads: M patches, or 1 pooled feature.
    pub fn rows_per_image(&self) -> usize {
        match self {
            Head::Ot { patches, .. } => *patches,
            Head::Cosine => 1,
        }
    }

    fn layout(&self, dims: HeadDims) -> BatchLayout {
        BatchLayout {
            images: dims.images,
            patches: self.rows_per_image(),
            prompts: dims.prompts,
            classes: dims.classes,
        }
    }

    /// Logits (`images × classes`) from unit-length image features
    /// (`images × rows_per_image × dim`) and unit-length prompt features
    /// (`prompts × classes × dim`, set-major).
    pub fn forward<B: Backend>(
        &self,
        backend: &B,
        image: &B::Buf,
        text: &B::Buf,
        dims: HeadDims,
        scale: f32,
        state: &mut HeadState<B::Buf>,
    ) -> Result<B::Buf, ClipError> {
        let mut logits = backend.alloc(dims.images * dims.classes)?;
        match *self {
            Head::Cosine => {
                if dims.prompts != 1 {
                    return Err(ClipError::InvalidInput(format!(
                        "the cosine head takes one prompt per class, got {}",
                        dims.prompts
                    )));
                }
                let mm = MatmulDims {
                    m: dims.images,
                    n: dims.classes,
                    k: dims.dim,
                };
                backend.matmul_nt(&mut logits, image, text, mm, scale)?;
                state.report = BatchReport::default();
            }
            Head::Ot {
                params, stopping, ..
            } => {
                let layout = self.layout(dims);
                let len = dims.images * layout.patches * dims.prompts * dims.classes;
                let mut sim = backend.alloc(len)?;
                let mm = MatmulDims {
                    m: dims.images * layout.patches,
                    n: dims.prompts * dims.classes,
                    k: dims.dim,
                };
                backend.matmul_nt(&mut sim, image, text, mm, 1.0)?;
                let (plans, report) = match stopping {
                    OtStopping::PerProblem => {
                        let mut plans = backend.alloc(len)?;
                        let report = backend.ot_plans(&mut plans, &sim, layout, &params)?;
                        (plans, report)
                    }
                    OtStopping::Released => released_plans(backend, &sim, layout, &params)?,
                };
                state.report = report;
                backend.ot_logits(&mut logits, &sim, &plans, layout, scale)?;
                state.sim = Some(sim);
                state.plans = Some(plans);
            }
        }
        Ok(logits)
    }

    /// The gradient with respect to the unit-length prompt features (`prompts × classes ×
    /// dim`) from the gradient with respect to the last forward pass's logits.
    pub fn backward<B: Backend>(
        &self,
        backend: &B,
        image: &B::Buf,
        d_logits: &B::Buf,
        dims: HeadDims,
        scale: f32,
        state: &HeadState<B::Buf>,
    ) -> Result<B::Buf, ClipError> {
        let mut d_text = backend.alloc(dims.prompts * dims.classes * dims.dim)?;
        match *self {
            Head::Cosine => {
                // d_text (classes × dim) = scale · d_logitsᵀ (classes × images) · image.
                let mm = MatmulDims {
                    m: dims.classes,
                    n: dims.dim,
                    k: dims.images,
                };
                backend.matmul_tn(&mut d_text, d_logits, image, mm, scale)?;
            }
            Head::Ot { .. } => {
                let (Some(_), Some(plans)) = (&state.sim, &state.plans) else {
                    return Err(ClipError::InvalidInput(
                        "the OT head's backward pass needs a forward pass first".into(),
                    ));
                };
                let layout = self.layout(dims);
                let len = dims.images * layout.patches * dims.prompts * dims.classes;
                let mut d_sim = backend.alloc(len)?;
                backend.ot_logits_backward(&mut d_sim, d_logits, plans, layout, scale)?;
                // d_text ((prompts·classes) × dim) = d_simᵀ · image, summed over images and
                // patches.
                let mm = MatmulDims {
                    m: dims.prompts * dims.classes,
                    n: dims.dim,
                    k: dims.images * layout.patches,
                };
                backend.matmul_tn(&mut d_text, &d_sim, image, mm, 1.0)?;
            }
        }
        Ok(d_text)
    }
}

/// The plans of [`OtStopping::Released`] and the solve's report: the similarities downloaded,
/// solved on the CPU, the plans uploaded. The solver's refusals are the backend's own
/// ([`BackendError::Ot`]), so a batch of non-finite similarities is handled as with
/// [`Backend::ot_plans`].
fn released_plans<B: Backend>(
    backend: &B,
    sim: &B::Buf,
    layout: BatchLayout,
    params: &OtParams,
) -> BackendResult<(B::Buf, BatchReport)> {
    let refused = |source| BackendError::Ot {
        op: "ot_plans (released rule)",
        source,
    };
    let len = layout.elements().map_err(refused)?;
    let sim = backend.download(sim, len)?;
    let mut host_plans = vec![0.0; len];
    let mut workspace = vec![0.0; ot::released_workspace_len(&layout)];
    let report =
        ot::solve_batch_released(&sim, layout, params, &mut workspace, &mut host_plans, None)
            .map_err(refused)?;
    Ok((backend.upload_vec(host_plans)?, report))
}
