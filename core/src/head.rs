//! The FedOTP OT head: class logits from patch features and prompt features.
//!
//! For image `b` and class `c`, the `M` patch features of the image and the `N` prompt features
//! of the class are L2-normalised, their cosine similarities `S` (M × N) form one transport
//! problem, and the logit is the similarity the plan transports:
//!
//! ```text
//! logit[b, c] = scale · Σ_{m,n} T[m, n] · S[m, n]
//! ```
//!
//! The plan is held constant in training (as in the paper), so `∂logit[b,c]/∂S[m,n] =
//! scale · T[m,n]`: pass `plans` to [`forward`] to keep them for the backward pass.
//!
//! ```
//! use fedotp_core::head::{self, HeadShape};
//! use fedotp_core::ot::OtParams;
//!
//! // One image with 3 patches, 2 prompts per class, 2 classes, features of dimension 2.
//! let shape = HeadShape { images: 1, patches: 3, dim: 2, prompts: 2, classes: 2 };
//! let patches = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0];
//! // prompts × classes × dim: class 0 points along x, class 1 along y.
//! let prompts = [1.0, 0.1, 0.1, 1.0, 1.0, -0.1, -0.1, 1.0];
//! let mut work = vec![0.0; head::workspace_len(&shape).unwrap()];
//! let mut logits = [0.0; 2];
//! head::forward(&patches, &prompts, &shape, &OtParams::FEDOTP, 100.0, &mut work, &mut logits, None)
//!     .unwrap();
//! // Two of the three patches point along x: class 0 wins.
//! assert!(logits[0] > logits[1]);
//! ```

use crate::ot::batch::solve_group;
use crate::ot::lockstep::WIDTH;
use crate::ot::{self, BatchReport, OtError, OtParams, OtReport, Similarity};

/// Dimensions of an OT-head evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    /// Images, B.
    pub images: usize,
    /// Patch features per image, M.
    pub patches: usize,
    /// Feature dimension, D.
    pub dim: usize,
    /// Prompts per class, N.
    pub prompts: usize,
    /// Classes, C.
    pub classes: usize,
}

impl HeadShape {
    fn checked(&self) -> Result<Sizes, OtError> {
        for (name, value) in [
            ("images", self.images),
            ("patches", self.patches),
            ("dim", self.dim),
            ("prompts", self.prompts),
            ("classes", self.classes),
        ] {
            if value == 0 {
                return Err(OtError::EmptyDimension { name });
            }
        }
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or(OtError::SizeOverflow);
        let patch_vectors = mul(self.images, self.patches)?;
        let prompt_vectors = mul(self.prompts, self.classes)?;
        let problem = mul(self.patches, self.prompts)?;
        let logits = mul(self.images, self.classes)?;
        // The norm factors, `group` problems' similarities and plans, and the solver's workspace.
        let workspace = |group: usize, solver: usize| {
            patch_vectors
                .checked_add(prompt_vectors)
                .and_then(|x| x.checked_mul(NORM_FACTORS))
                .and_then(|x| x.checked_add(problem.checked_mul(2 * group)?))
                .and_then(|x| x.checked_add(solver))
                .ok_or(OtError::SizeOverflow)
        };
        Ok(Sizes {
            patch_vectors,
            prompt_vectors,
            problem,
            logits,
            patch_values: mul(patch_vectors, self.dim)?,
            prompt_values: mul(prompt_vectors, self.dim)?,
            plans: mul(logits, problem)?,
            workspace: workspace(1, ot::workspace_len(self.patches, self.prompts))?,
            lockstep_workspace: workspace(
                WIDTH,
                ot::batch_workspace_len(self.patches, self.prompts),
            )?,
        })
    }
}

/// Buffer lengths implied by a [`HeadShape`], all overflow-checked.
struct Sizes {
    patch_vectors: usize,
    prompt_vectors: usize,
    problem: usize,
    logits: usize,
    patch_values: usize,
    prompt_values: usize,
    plans: usize,
    workspace: usize,
    lockstep_workspace: usize,
}

/// Floats of workspace [`forward`] needs: the norm factors of every feature vector, one
/// problem's similarity matrix and plan, and the solver's workspace.
pub fn workspace_len(shape: &HeadShape) -> Result<usize, OtError> {
    Ok(shape.checked()?.workspace)
}

/// Floats of workspace with which [`forward`] solves eight problems at a time in lockstep, one
/// per SIMD lane (as [`ot::solve_batch`] given [`ot::batch_workspace_len`]): eight problems'
/// similarities and plans, and the lockstep solver's workspace. The same logits and plans.
pub fn batch_workspace_len(shape: &HeadShape) -> Result<usize, OtError> {
    Ok(shape.checked()?.lockstep_workspace)
}

/// Evaluates the OT head.
///
/// - `patches`: `images × patches × dim` features (need not be normalised);
/// - `prompts`: `prompts × classes × dim` features (need not be normalised);
/// - `scale`: the logit scale (CLIP's `logit_scale.exp()`, about 100);
/// - `logits`: `images × classes` output;
/// - `plans`: optional `images × classes × patches × prompts` output, each problem's plan.
///
/// Problems are solved independently (see [`ot::solve_batch`]). On error nothing is written.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn forward(
    patches: &[f32],
    prompts: &[f32],
    shape: &HeadShape,
    params: &OtParams,
    scale: f32,
    workspace: &mut [f32],
    logits: &mut [f32],
    mut plans: Option<&mut [f32]>,
) -> Result<BatchReport, OtError> {
    params.validate_for_cosines()?;
    if !scale.is_finite() {
        return Err(OtError::InvalidScale(scale));
    }
    let sizes = shape.checked()?;
    check_len("patches", patches.len(), sizes.patch_values)?;
    check_len("prompts", prompts.len(), sizes.prompt_values)?;
    check_len("logits", logits.len(), sizes.logits)?;
    if let Some(plans) = plans.as_deref() {
        check_len("plans", plans.len(), sizes.plans)?;
    }
    if workspace.len() < sizes.workspace {
        return Err(OtError::BufferLength {
            name: "workspace",
            expected: sizes.workspace,
            found: workspace.len(),
        });
    }

    let (m, n, d, classes) = (shape.patches, shape.prompts, shape.dim, shape.classes);
    let problem = sizes.problem;
    let group = if workspace.len() >= sizes.lockstep_workspace {
        WIDTH
    } else {
        1
    };
    let (patch_norms, rest) = workspace.split_at_mut(sizes.patch_vectors * NORM_FACTORS);
    let (prompt_norms, rest) = rest.split_at_mut(sizes.prompt_vectors * NORM_FACTORS);
    let (sims, rest) = rest.split_at_mut(group * problem);
    let (group_plans, rest) = rest.split_at_mut(group * problem);
    // Exactly what the solver needs for that group size, which is how it picks its layout.
    let ot_workspace = &mut rest[..if group == WIDTH {
        ot::batch_workspace_len(m, n)
    } else {
        ot::workspace_len(m, n)
    }];
    norm_factors("patches", patches, shape.dim, patch_norms)?;
    norm_factors("prompts", prompts, shape.dim, prompt_norms)?;

    let mut report = BatchReport::default();
    let mut group_reports = [OtReport::default(); WIDTH];
    // A group of consecutive problems at a time, image-major: their logits and plans are
    // contiguous.
    for (index, logits) in logits.chunks_mut(group).enumerate() {
        let (first, count) = (index * group, logits.len());
        for (k, sim) in sims.chunks_exact_mut(problem).take(count).enumerate() {
            let (b, c) = ((first + k) / classes, (first + k) % classes);
            for (i, row) in sim.chunks_exact_mut(n).enumerate() {
                let f = b * m + i;
                let patch = &patches[f * d..(f + 1) * d];
                for (j, s) in row.iter_mut().enumerate() {
                    let g = j * classes + c;
                    let prompt = &prompts[g * d..(g + 1) * d];
                    *s = cosine(patch, prompt, &patch_norms[f * 2..], &prompt_norms[g * 2..]);
                }
            }
        }
        let mut problems = [Similarity::new(&sims[..problem], m, n)?; WIDTH];
        for (k, sim) in problems.iter_mut().enumerate().take(count).skip(1) {
            *sim = Similarity::new(&sims[k * problem..(k + 1) * problem], m, n)?;
        }
        let plans_out = match plans.as_deref_mut() {
            Some(plans) => &mut plans[first * problem..(first + count) * problem],
            None => &mut group_plans[..count * problem],
        };
        let group_reports = &mut group_reports[..count];
        solve_group(
            &problems[..count],
            params,
            ot_workspace,
            plans_out,
            group_reports,
        );
        for (((logit, sim), plan), &problem_report) in logits
            .iter_mut()
            .zip(&problems)
            .zip(plans_out.chunks_exact(problem))
            .zip(group_reports.iter())
        {
            report.record(problem_report);
            *logit = scale * transported_similarity(sim, plan);
        }
    }
    Ok(report)
}

/// `Σ T∘S` over one problem: the similarity the plan transports.
pub fn transported_similarity(sim: &Similarity<'_>, plan: &[f32]) -> f32 {
    let n = sim.cols();
    plan.chunks_exact(n)
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(|(j, t)| t * sim.get(i, j))
                .sum::<f32>()
        })
        .sum()
}

fn check_len(name: &'static str, found: usize, expected: usize) -> Result<(), OtError> {
    if found == expected {
        Ok(())
    } else {
        Err(OtError::BufferLength {
            name,
            expected,
            found,
        })
    }
}

/// Floats [`norm_factors`] keeps per feature vector.
const NORM_FACTORS: usize = 2;

/// For every `dim`-long vector `x` of `values`, its largest magnitude `s = max |x_k|` and
/// `1/‖x/s‖`, refusing non-finite values and zero vectors.
///
/// `‖x‖` itself is not kept: its square overflows `f32` for components near 1e20 and
/// underflows for components near 1e-20, and its inverse overflows for subnormal vectors.
/// `s` is exact and `1/‖x/s‖` lies in `[1/√dim, 1]`, so both are representable for every
/// finite non-zero vector.
fn norm_factors(
    name: &'static str,
    values: &[f32],
    dim: usize,
    out: &mut [f32],
) -> Result<(), OtError> {
    if let Some(index) = values.iter().position(|x| !x.is_finite()) {
        return Err(OtError::NonFinite { name, index });
    }
    for (index, (vector, factors)) in values
        .chunks_exact(dim)
        .zip(out.chunks_exact_mut(NORM_FACTORS))
        .enumerate()
    {
        let largest = vector.iter().fold(0.0f32, |acc, x| acc.max(x.abs()));
        if largest == 0.0 {
            return Err(OtError::ZeroNorm { name, index });
        }
        let sum: f32 = vector.iter().map(|x| (x / largest) * (x / largest)).sum();
        factors[0] = largest;
        factors[1] = 1.0 / libm::sqrtf(sum);
    }
    Ok(())
}

/// The cosine of `x` and `y` from their [`norm_factors`]: `x·y / (s_x s_y) · 1/‖x/s_x‖ ·
/// 1/‖y/s_y‖`. The dot product and the scale product are taken in `f64`, where the products
/// of any two finite `f32` values neither overflow nor underflow.
#[inline]
fn cosine(x: &[f32], y: &[f32], x_factors: &[f32], y_factors: &[f32]) -> f32 {
    let scales = f64::from(x_factors[0]) * f64::from(y_factors[0]);
    let unit = f64::from(x_factors[1]) * f64::from(y_factors[1]);
    (dot(x, y) / scales * unit) as f32
}

/// `Σ x·y` in `f64` with eight independent partial sums, so the compiler can keep them in SIMD
/// lanes (a single running sum is a serial chain it may not reorder).
#[inline]
fn dot(x: &[f32], y: &[f32]) -> f64 {
    let mut partial = [0.0f64; 8];
    let (x_chunks, y_chunks) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f64 = x_chunks
        .remainder()
        .iter()
        .zip(y_chunks.remainder())
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum();
    for (xc, yc) in x_chunks.zip(y_chunks) {
        for k in 0..8 {
            partial[k] += f64::from(xc[k]) * f64::from(yc[k]);
        }
    }
    partial.iter().sum::<f64>() + tail
}
