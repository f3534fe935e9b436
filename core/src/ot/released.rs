//! The released code's batch solver, to reproduce its results (`ot.stopping = "released"` in
//! `fedotp train`; docs/ALGORITHM.md §7.2).
//!
//! The released PyTorch code solves all problems of a batch together, on the kernel as written
//! and from scalings of 1:
//!
//! ```text
//! K = exp(−(1 − S) / eps),   u = 1,   v = 1
//! repeat at most max_iter times, for every problem of the batch:
//!     u = min(a / (K v), 1)              (balanced: no clamp)
//!     v = b / (Kᵀ u)
//!     stop all problems when mean |Δv| over the whole batch < tol    (balanced: mean |Δu|)
//! T = diag(u) K diag(v)
//! ```
//!
//! Three things set it apart from [`super::solve_batch`], which is why it is an option and not
//! the default:
//! - a problem's plan depends on the batch it happens to be in, and the change is absolute, so
//!   scalings of large magnitude (small eps) rarely meet the tolerance at all;
//! - the kernel is not shifted: below eps ≈ (1 − S)/87 its entries underflow `f32`, a prompt
//!   whose column is all zero gets an infinite scaling and a NaN plan (the released code, in
//!   half precision, crashes there; here the plan comes back NaN and `fedotp train` skips and
//!   counts the batch);
//! - the plan is the last iterate as it is: unless the iteration converged, a patch may send
//!   more than `1/M` (no rounding onto the constraints).
//!
//! Each iteration is the same arithmetic as the paper's loop in `f32`; only the batch mean is
//! summed in `f64`, so that its value does not depend on the batch's size through rounding.

use super::batch::check_batch;
use super::exp::exp;
use super::{BatchLayout, BatchReport, OtError, OtMode, OtParams, OtReport};

/// Floats of workspace [`solve_batch_released`] needs for `layout`: both scalings of every
/// problem, `B·C·(M + N)`. Saturates instead of overflowing, so an impossible size fails the
/// workspace length check.
pub const fn released_workspace_len(layout: &BatchLayout) -> usize {
    layout
        .images
        .saturating_mul(layout.classes)
        .saturating_mul(layout.patches.saturating_add(layout.prompts))
}

/// Solves every problem of a batch with the released code's iteration and batch-wide stopping
/// rule (see the module documentation). Arguments, checks and layouts are those of
/// [`super::solve_batch`], except that `workspace` needs [`released_workspace_len`] floats; every
/// problem reports the batch's iteration count and whether the batch met the tolerance.
pub fn solve_batch_released(
    sim: &[f32],
    layout: BatchLayout,
    params: &OtParams,
    workspace: &mut [f32],
    plans: &mut [f32],
    reports: Option<&mut [OtReport]>,
) -> Result<BatchReport, OtError> {
    let problems = check_batch(sim, layout, params, plans, reports.as_deref())?;
    let needed = released_workspace_len(&layout);
    if workspace.len() < needed {
        return Err(OtError::BufferLength {
            name: "workspace",
            expected: needed,
            found: workspace.len(),
        });
    }
    let (m, n, classes) = (layout.patches, layout.prompts, layout.classes);
    let (u_all, rest) = workspace[..needed].split_at_mut(problems * m);
    let v_all = &mut rest[..problems * n];

    // Each problem's kernel in its plan's place (row-major `m × n`), gathered from the
    // `images × patches × prompts × classes` similarities.
    for (p, kernel) in plans.chunks_exact_mut(m * n).enumerate() {
        let (image, class) = (p / classes, p % classes);
        for (e, k) in kernel.iter_mut().enumerate() {
            let s = sim[(image * m * n + e) * classes + class];
            *k = exp(-(1.0 - s) / params.eps);
        }
    }
    u_all.fill(1.0);
    v_all.fill(1.0);

    let balanced = params.mode == OtMode::Balanced;
    let a = 1.0 / m as f32;
    let b = params.prompt_mass(n);
    // The mean runs over the scaling the rule watches: `v` (N per problem), or `u` (M) balanced.
    let watched = problems * if balanced { m } else { n };
    let mut report = OtReport {
        iterations: params.max_iter,
        converged: false,
    };
    for iteration in 1..=params.max_iter {
        let mut change = 0.0f64;
        for ((kernel, u), v) in plans
            .chunks_exact(m * n)
            .zip(u_all.chunks_exact_mut(m))
            .zip(v_all.chunks_exact_mut(n))
        {
            for (row, u) in kernel.chunks_exact(n).zip(u.iter_mut()) {
                let kv: f32 = row.iter().zip(v.iter()).map(|(k, v)| k * v).sum();
                let new = if balanced { a / kv } else { (a / kv).min(1.0) };
                if balanced {
                    change += f64::from((new - *u).abs());
                }
                *u = new;
            }
            for (j, v) in v.iter_mut().enumerate() {
                let ktu: f32 = kernel
                    .iter()
                    .skip(j)
                    .step_by(n)
                    .zip(u.iter())
                    .map(|(k, u)| k * u)
                    .sum();
                let new = b / ktu;
                if !balanced {
                    change += f64::from((new - *v).abs());
                }
                *v = new;
            }
        }
        if change / (watched as f64) < f64::from(params.tol) {
            report = OtReport {
                iterations: iteration,
                converged: true,
            };
            break;
        }
    }

    for ((plan, u), v) in plans
        .chunks_exact_mut(m * n)
        .zip(u_all.chunks_exact(m))
        .zip(v_all.chunks_exact(n))
    {
        for (row, &u) in plan.chunks_exact_mut(n).zip(u) {
            for (t, &v) in row.iter_mut().zip(v) {
                *t *= u * v;
            }
        }
    }
    let mut summary = BatchReport::default();
    for _ in 0..problems {
        summary.record(report);
    }
    if let Some(reports) = reports {
        reports.fill(report);
    }
    Ok(summary)
}
