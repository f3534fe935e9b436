//! The OT solver and the OT head on NumPy arrays: `fedotp_ot_plan` and `fedotp_ot_logits`
//! over each problem of a batch, with the GIL released while they run.

use fedotp::{FedotpOtParams, FedotpOtReport};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;

use crate::arrays::{contiguous, shape_of_rank, typed};
use crate::failure::{check, error, Failure};

/// How the solves of one call ended.
#[pyclass(module = "fedotp", frozen, get_all)]
pub(crate) struct OtReport {
    /// Whether every problem met the tolerance before `max_iter`.
    converged: bool,
    /// The most iterations any problem ran.
    iterations: u32,
}

#[pymethods]
impl OtReport {
    fn __repr__(&self) -> String {
        format!(
            "OtReport(converged={}, iterations={})",
            if self.converged { "True" } else { "False" },
            self.iterations
        )
    }
}

/// The C parameters from Python's keyword arguments (checked by libfedotp).
pub(crate) fn params(
    eps: f32,
    gamma: f32,
    max_iter: u32,
    tol: f32,
    balanced: bool,
) -> FedotpOtParams {
    FedotpOtParams {
        eps,
        gamma,
        max_iter,
        tol,
        balanced: u32::from(balanced),
    }
}

/// FedOTP's transport plan between M patches and N prompts (libfedotp's `fedotp_ot_plan`).
///
/// `sim`: float32 cosine similarities, C-contiguous, `(M, N)` or a batch `(B, M, N)`, read in
/// place (not copied); the cost is `1 - sim`. Unbalanced by default: each patch sends at most 1/M,
/// each prompt receives gamma/N; `balanced=True` is Sinkhorn with 1/M and 1/N. Returns the plan
/// (same shape) and an `OtReport`. The GIL is released while it solves.
///
/// >>> import numpy as np, fedotp
/// >>> sim = np.random.default_rng(0).uniform(-1, 1, (196, 2)).astype(np.float32)
/// >>> plan, report = fedotp.ot_plan(sim, eps=0.1, gamma=0.8)
/// >>> round(float(plan.sum()), 4), report.converged
/// (0.8, True)
///
/// Raises `WrongDType` (not float32), `NonContiguous`, `ShapeMismatch`, `NonFinite` (NaN or
/// infinity in `sim`), `InvalidArgument` (eps, gamma, max_iter or tol out of range; an empty M or N).
#[pyfunction]
#[pyo3(signature = (sim, eps=0.1, gamma=0.8, max_iter=100, tol=1e-3, balanced=false))]
pub(crate) fn ot_plan<'py>(
    sim: &Bound<'py, PyAny>,
    eps: f32,
    gamma: f32,
    max_iter: u32,
    tol: f32,
    balanced: bool,
) -> PyResult<(Bound<'py, PyAny>, OtReport)> {
    let py = sim.py();
    let sim = typed::<f32>(sim, "sim", "float32")?;
    let shape = shape_of_rank(py, &sim, &[2, 3], "sim", "(M, N) or (B, M, N)")?.to_vec();
    let values = contiguous(py, &sim, "sim")?;
    let (m, n) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let params = params(eps, gamma, max_iter, tol, balanced);
    let problem = m.saturating_mul(n);

    let solved = py.detach(|| -> Result<_, Failure> {
        let mut plan = vec![0.0f32; values.len()];
        let mut summary = OtReport {
            converged: true,
            iterations: 0,
        };
        // An empty M or N goes to libfedotp once, which refuses it (before reading); an empty
        // batch of non-empty problems has nothing to solve.
        let problems = values.len().checked_div(problem).unwrap_or(1);
        for index in 0..problems {
            let start = (index * problem).min(values.len());
            let mut report = FedotpOtReport {
                iterations: 0,
                converged: 0,
            };
            // SAFETY: `values` holds `problems * m * n` floats (a C-contiguous array of this
            // shape) and `plan` as many, so both pointers at `start` have `m * n` floats left
            // (or `m * n` is 0 and libfedotp refuses before reading); `plan` is ours, apart
            // from `values`; `params` and `report` are valid locals.
            let status = unsafe {
                fedotp::fedotp_ot_plan(
                    values.as_ptr().add(start),
                    m,
                    n,
                    &params,
                    plan.as_mut_ptr().add(start),
                    &mut report,
                )
            };
            check(status)?;
            summary.converged &= report.converged == 1;
            summary.iterations = summary.iterations.max(report.iterations);
        }
        Ok((plan, summary))
    });
    let (plan, report) = solved?;
    let plan = PyArray1::from_vec(py, plan).reshape(shape)?;
    Ok((plan.into_any(), report))
}

/// FedOTP's OT head (libfedotp's `fedotp_ot_logits`): class logits from patch and prompt features.
///
/// `patches`: float32 `(M, D)` or `(B, M, D)`; `prompts`: float32 `(N, C, D)`, N prompts with one
/// feature per class; neither need be normalised. Returns `(C,)` or `(B, C)`: `logit_scale *
/// sum(T * S)` per class, with S the patch-prompt cosine similarities and T their transport plan.
///
/// >>> import numpy as np, fedotp
/// >>> rng = np.random.default_rng(0)
/// >>> patches = rng.standard_normal((4, 16, 8), dtype=np.float32)
/// >>> prompts = rng.standard_normal((2, 3, 8), dtype=np.float32)
/// >>> fedotp.ot_logits(patches, prompts).shape
/// (4, 3)
#[pyfunction]
#[pyo3(signature = (patches, prompts, logit_scale=100.0, eps=0.1, gamma=0.8, max_iter=100, tol=1e-3, balanced=false))]
#[allow(clippy::too_many_arguments)] // the Python signature: the solver's keyword arguments
pub(crate) fn ot_logits<'py>(
    patches: &Bound<'py, PyAny>,
    prompts: &Bound<'py, PyAny>,
    logit_scale: f32,
    eps: f32,
    gamma: f32,
    max_iter: u32,
    tol: f32,
    balanced: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = patches.py();
    let patches = typed::<f32>(patches, "patches", "float32")?;
    let prompts = typed::<f32>(prompts, "prompts", "float32")?;
    let patches_shape = shape_of_rank(py, &patches, &[2, 3], "patches", "(M, D) or (B, M, D)")?;
    let prompts_shape = shape_of_rank(py, &prompts, &[3], "prompts", "(N, C, D)")?;
    let batched = patches_shape.len() == 3;
    let (batch, m, dim) = match *patches_shape {
        [b, m, d] => (b, m, d),
        [m, d] => (1, m, d),
        _ => unreachable!("rank checked above"),
    };
    let [n, classes, prompt_dim] = *prompts_shape else {
        unreachable!("rank checked above")
    };
    if prompt_dim != dim {
        return Err(error(
            py,
            "ShapeMismatch",
            format!("`patches` have {dim} features (last axis) but `prompts` have {prompt_dim}"),
        ));
    }
    let patch_values = contiguous(py, &patches, "patches")?;
    let prompt_values = contiguous(py, &prompts, "prompts")?;
    let params = params(eps, gamma, max_iter, tol, balanced);

    let logits = py.detach(|| -> Result<_, Failure> {
        let mut logits = vec![0.0f32; batch.saturating_mul(classes)];
        // SAFETY: the arrays are C-contiguous with the shapes passed (checked above), so they
        // hold `batch*m*dim` and `n*classes*dim` floats; `logits` is ours with
        // `batch*classes`, apart from both; `params` is a valid local.
        let status = unsafe {
            fedotp::fedotp_ot_logits(
                patch_values.as_ptr(),
                batch,
                m,
                dim,
                prompt_values.as_ptr(),
                n,
                classes,
                &params,
                logit_scale,
                logits.as_mut_ptr(),
            )
        };
        check(status)?;
        Ok(logits)
    })?;
    let shape = if batched {
        vec![batch, classes]
    } else {
        vec![classes]
    };
    Ok(PyArray1::from_vec(py, logits).reshape(shape)?.into_any())
}
