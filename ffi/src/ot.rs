//! The OT solver and the OT head.

use fedotp_core::head::{self, HeadShape};
use fedotp_core::ot::{self, OtMode, OtParams, Similarity};

use crate::boundary::{buffer_len, call, check_disjoint, reference, slice, slice_mut, zeroed};
use crate::status::{Failure, FEDOTP_ERR_INVALID_BALANCED};

/// Parameters of an optimal-transport solve (FedOTP's defaults: eps 0.1, gamma 0.8,
/// max_iter 100, tol 1e-3, balanced 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpOtParams {
    /// Entropic regularisation, finite, > 0 and not subnormal (at least `FLT_MIN`), and at
    /// least 1e-5 times the largest |similarity| it is used on — `fedotp_ot_plan` checks the
    /// values it is given, the OT head and the client take cosines as at most 2 in magnitude,
    /// so at least 2e-5 — below which f32 cannot resolve the solve: else
    /// `FEDOTP_ERR_INVALID_EPS`.
    pub eps: f32,
    /// Mass moved in the unbalanced mode, in (0, 1] and not subnormal: else
    /// `FEDOTP_ERR_INVALID_GAMMA`.
    pub gamma: f32,
    /// Most iterations, >= 1.
    pub max_iter: u32,
    /// Stop when the mean relative change of the prompt-side scaling is below this, >= 0.
    pub tol: f32,
    /// 0: unbalanced (patches send at most 1/m, prompts receive gamma/n);
    /// 1: balanced Sinkhorn (1/m and 1/n exactly).
    pub balanced: u32,
}

/// How a solve ended.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpOtReport {
    /// Iterations run.
    pub iterations: u32,
    /// 1 if the tolerance was met before max_iter, else 0.
    pub converged: u32,
}

impl FedotpOtParams {
    /// The core's parameters, checked.
    pub(crate) fn to_core(self) -> Result<OtParams, Failure> {
        let p = self;
        let mode = match p.balanced {
            0 => OtMode::Unbalanced,
            1 => OtMode::Balanced,
            other => {
                return Err(Failure::new(
                    FEDOTP_ERR_INVALID_BALANCED,
                    format!("params.balanced must be 0 or 1, got {other}"),
                ))
            }
        };
        let params = OtParams {
            eps: p.eps,
            gamma: p.gamma,
            max_iter: p.max_iter,
            tol: p.tol,
            mode,
        };
        params.validate()?;
        Ok(params)
    }
}

/// Solves one OT problem between `m` patches and `n` prompts.
///
/// - `sim`: `m*n` cosine similarities, row-major (patch-major); the cost is `1 - sim`.
/// - `params`: the solver's parameters (see `FedotpOtParams`).
/// - `plan_out`: `m*n` floats, row-major; receives the transport plan. Must not overlap `sim`.
///   A solve that met the tolerance hands back its iteration's plan; one that did not is
///   rounded onto the constraints, which it then meets to f32 rounding (rows at most 1/m,
///   exactly 1/m when balanced or gamma = 1; columns gamma/n or 1/n).
/// - `report`: may be NULL; receives the iterations run and whether the tolerance was met.
///
/// Returns `FEDOTP_OK`, or an error status with nothing written. Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to buffers of the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn fedotp_ot_plan(
    sim: *const f32,
    m: usize,
    n: usize,
    params: *const FedotpOtParams,
    plan_out: *mut f32,
    report: *mut FedotpOtReport,
) -> i32 {
    call(|| {
        // SAFETY: the caller passes a valid `FedotpOtParams` or NULL.
        let params = (*unsafe { reference(params, "params") }?).to_core()?;
        let len = buffer_len(&[("m", m), ("n", n)])?;
        check_disjoint(plan_out, len, "plan_out", sim, len, "sim")?;
        check_disjoint(plan_out, len, "plan_out", report, 1, "report")?;
        // SAFETY: the caller passes `m*n` floats at `sim` and at `plan_out`, not overlapping
        // (checked above).
        let (sim, plan_out) = unsafe {
            (
                slice(sim, len, "sim")?,
                slice_mut(plan_out, len, "plan_out")?,
            )
        };
        let mut work = zeroed::<f32>(ot::workspace_len(m, n), "workspace")?;
        let result =
            fedotp_host::ot::solve(Similarity::new(sim, m, n)?, &params, &mut work, plan_out)?;
        // SAFETY: `as_mut` turns NULL into `None`; a non-NULL `report` points to an aligned,
        // writable `FedotpOtReport` (the header's contract), apart from `plan_out` (checked
        // above); a plain struct with nothing to drop, so assigning over it is sound.
        if let Some(report) = unsafe { report.as_mut() } {
            *report = FedotpOtReport {
                iterations: result.iterations,
                converged: u32::from(result.converged),
            };
        }
        Ok(())
    })
}

/// FedOTP's OT head: class logits from patch features and prompt features.
///
/// - `patches`: `batch*m*dim` floats: `m` patch features per image (need not be normalised;
///   any finite magnitude works, 1e-30 and 1e30 included);
/// - `prompts`: `n*classes*dim` floats: for each of the `n` prompts, one feature per class
///   (need not be normalised, any finite magnitude);
/// - `logit_scale`: the multiplier (CLIP's `exp(logit_scale)`, about 100), finite;
/// - `logits_out`: `batch*classes` floats; receives
///   `logit_scale * sum(T * S)` per (image, class), where `S` is the `m x n` cosine similarity
///   matrix and `T` its transport plan. Must not overlap the inputs.
///
/// Returns `FEDOTP_OK`, or an error status with nothing written: among them
/// `FEDOTP_ERR_NON_FINITE` (a NaN or infinite feature) and `FEDOTP_ERR_ZERO_NORM` (an all-zero
/// feature vector has no direction; the detail names the vector's index in `patches` or
/// `prompts`). Thread-safe.
///
/// # Safety
/// Non-NULL pointers must point to buffers of the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn fedotp_ot_logits(
    patches: *const f32,
    batch: usize,
    m: usize,
    dim: usize,
    prompts: *const f32,
    n: usize,
    classes: usize,
    params: *const FedotpOtParams,
    logit_scale: f32,
    logits_out: *mut f32,
) -> i32 {
    call(|| {
        // SAFETY: the caller passes a valid `FedotpOtParams` or NULL.
        let params = (*unsafe { reference(params, "params") }?).to_core()?;
        let patches_len = buffer_len(&[("batch", batch), ("m", m), ("dim", dim)])?;
        let prompts_len = buffer_len(&[("n", n), ("classes", classes), ("dim", dim)])?;
        let logits_len = buffer_len(&[("batch", batch), ("classes", classes)])?;
        check_disjoint(
            logits_out,
            logits_len,
            "logits_out",
            patches,
            patches_len,
            "patches",
        )?;
        check_disjoint(
            logits_out,
            logits_len,
            "logits_out",
            prompts,
            prompts_len,
            "prompts",
        )?;
        // SAFETY: the caller passes buffers of the stated lengths; the output overlaps neither
        // input (checked above).
        let (patches, prompts, logits_out) = unsafe {
            (
                slice(patches, patches_len, "patches")?,
                slice(prompts, prompts_len, "prompts")?,
                slice_mut(logits_out, logits_len, "logits_out")?,
            )
        };
        let shape = HeadShape {
            images: batch,
            patches: m,
            dim,
            prompts: n,
            classes,
        };
        let mut work = zeroed::<f32>(head::batch_workspace_len(&shape)?, "workspace")?;
        fedotp_host::ot::head_forward(
            patches,
            prompts,
            &shape,
            &params,
            logit_scale,
            &mut work,
            logits_out,
            None,
        )?;
        Ok(())
    })
}
