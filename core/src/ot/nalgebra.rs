//! The solver on [nalgebra](https://nalgebra.rs) matrices: feature `nalgebra`.
//!
//! [`solve`] takes the similarities as any nalgebra matrix or view of `f32` — M patches (rows) ×
//! N prompts (columns) — and fills the caller's matrix or view with the M × N plan. Entries are
//! addressed as `(patch, prompt)`, so nalgebra's column-major storage, a view's strides and a
//! view with steps all work as they are: the similarities are read where they lie and the plan is
//! written entry by entry. Nothing is copied and nothing allocated; the workspace is the same
//! [`workspace_len`]`(M, N)` floats as [`ot::solve`](super::solve)'s, and the plan equals that of
//! [`ot::solve`](super::solve) on the same similarities in a row-major slice, bit for bit.
//!
//! ```
//! use fedotp_core::ot::{self, OtParams};
//! use nalgebra::{Matrix3x2, Matrix3x4};
//!
//! // 3 patches × 2 prompts.
//! let sim = Matrix3x2::new(
//!     0.30, 0.10,
//!     0.25, 0.20,
//!     0.05, 0.28,
//! );
//! let mut work = [0.0f32; ot::workspace_len(3, 2)];
//! let mut plan = Matrix3x2::zeros();
//! let report = ot::nalgebra::solve(&sim, &OtParams::FEDOTP, &mut work, &mut plan).unwrap();
//! assert!(report.converged);
//! // Each prompt receives exactly gamma / N = 0.4 of mass.
//! assert!(plan.row_sum().iter().all(|&mass| (mass - 0.4).abs() < 1e-6));
//!
//! // Views work as well: here the prompts of two classes are interleaved (columns: prompt 0 of
//! // class 0, of class 1, prompt 1 of class 0, of class 1) and class 1's problem is every second
//! // column from column 1. Its plan goes into the right half of a larger matrix.
//! let all_classes = Matrix3x4::new(
//!     0.9, 0.30, 0.8, 0.10,
//!     0.7, 0.25, 0.6, 0.20,
//!     0.5, 0.05, 0.4, 0.28,
//! );
//! let class_1 = all_classes.columns_with_step(1, 2, 1);
//! let mut plans = Matrix3x4::zeros();
//! ot::nalgebra::solve(&class_1, &OtParams::FEDOTP, &mut work, &mut plans.columns_mut(2, 2))
//!     .unwrap();
//! assert_eq!(plans.columns(2, 2), plan);
//! ```

use nalgebra::{Dim, Matrix, RawStorage, RawStorageMut};

use super::similarity::{checked_area, SimilarityEntries};
use super::solver::{solve_checked_with, workspace_len};
use super::{OtError, OtParams, OtReport};

/// Solves one problem: `sim` is M patches × N prompts, `plan` receives the M × N plan, and
/// `workspace` holds at least [`workspace_len`]`(M, N)` floats (contents ignored).
///
/// Both may be owned matrices or views, of static or dynamic size, with any strides. Refused with
/// the errors of [`Similarity::new`](super::Similarity::new) and [`ot::solve`](super::solve):
/// invalid parameters, an empty dimension, a short workspace, a non-finite similarity (its index
/// row-major, as there); a plan whose row or column count is not M or N is an
/// [`OtError::BufferLength`] named `"plan rows"` or `"plan columns"`. On error nothing is written
/// to `plan`.
pub fn solve<R, C, S, PlanR, PlanC, PlanS>(
    sim: &Matrix<f32, R, C, S>,
    params: &OtParams,
    workspace: &mut [f32],
    plan: &mut Matrix<f32, PlanR, PlanC, PlanS>,
) -> Result<OtReport, OtError>
where
    R: Dim,
    C: Dim,
    S: RawStorage<f32, R, C>,
    PlanR: Dim,
    PlanC: Dim,
    PlanS: RawStorageMut<f32, PlanR, PlanC>,
{
    params.validate()?;
    let (m, n) = sim.shape();
    checked_area(m, n)?;
    let needed = workspace_len(m, n);
    if workspace.len() < needed {
        return Err(OtError::BufferLength {
            name: "workspace",
            expected: needed,
            found: workspace.len(),
        });
    }
    for (name, expected, found) in [
        ("plan rows", m, plan.nrows()),
        ("plan columns", n, plan.ncols()),
    ] {
        if found != expected {
            return Err(OtError::BufferLength {
                name,
                expected,
                found,
            });
        }
    }
    if let Some(index) = sim.first_non_finite() {
        return Err(OtError::NonFinite {
            name: "similarity",
            index,
        });
    }
    params.check_resolution(sim.largest_magnitude())?;
    Ok(solve_checked_with(sim, params, workspace, |i, j, t| {
        plan[(i, j)] = t
    }))
}

/// A nalgebra matrix read as a similarity matrix: rows are patches, columns prompts.
impl<R: Dim, C: Dim, S: RawStorage<f32, R, C>> SimilarityEntries for Matrix<f32, R, C, S> {
    fn rows(&self) -> usize {
        self.nrows()
    }

    fn cols(&self) -> usize {
        self.ncols()
    }

    #[inline]
    fn get(&self, i: usize, j: usize) -> f32 {
        self[(i, j)]
    }
}
