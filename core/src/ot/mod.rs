//! Entropic optimal transport between the M patches of an image and the N prompts of a class.
//!
//! FedOTP aligns the patch features of an image with the N prompt features of each class by
//! solving, per (image, class) pair, an entropy-regularised transport problem over the cosine
//! similarity matrix `S` (M × N, cost `1 − S`):
//!
//! ```text
//! min_T  <T, 1 − S> + eps · Σ T (log T − 1)
//! unbalanced (FedOTP):  T 1 ≤ a = 1/M,   Tᵀ 1 = b = gamma/N     (only gamma of the mass moves)
//! balanced (ablation):  T 1 = a = 1/M,   Tᵀ 1 = b = 1/N
//! ```
//!
//! [`solve`] runs the scaling iterations of the paper on one problem with memory the caller
//! provides ([`workspace_len`] floats); [`solve_batch`] runs the independent problems of a batch,
//! eight at a time in lockstep when given [`batch_workspace_len`] floats.
//! Both are exact in `f32` across `eps` ∈ [0.005, 1]: see [`solver`] for how.
//! [`solve_batch_released`] is the released code's solver instead, batch-wide stopping and all,
//! to reproduce its results. With the
//! `nalgebra` feature, `ot::nalgebra::solve` does what [`solve`] does on nalgebra matrices and
//! views.
//!
//! ```
//! use fedotp_core::ot::{self, OtParams, Similarity};
//!
//! // 3 patches × 2 prompts.
//! let sim = [0.30, 0.10, 0.25, 0.20, 0.05, 0.28];
//! let mut work = [0.0f32; 32];
//! let mut plan = [0.0f32; 6];
//! let report = ot::solve(
//!     Similarity::new(&sim, 3, 2).unwrap(),
//!     &OtParams::FEDOTP,
//!     &mut work[..ot::workspace_len(3, 2)],
//!     &mut plan,
//! )
//! .unwrap();
//! assert!(report.converged);
//! // Each prompt receives exactly gamma / N = 0.4 of mass.
//! assert!((plan[0] + plan[2] + plan[4] - 0.4).abs() < 1e-6);
//! assert!((plan[1] + plan[3] + plan[5] - 0.4).abs() < 1e-6);
//! ```

pub(crate) mod batch;
mod error;
mod exp;
pub(crate) mod lockstep;
#[cfg(feature = "nalgebra")]
pub mod nalgebra;
mod params;
mod released;
mod similarity;
pub mod solver;

pub use batch::{solve_batch, BatchLayout, BatchReport};
pub use error::OtError;
pub use lockstep::batch_workspace_len;
pub use params::{OtMode, OtParams, OtReport, COSINE_BOUND, EPS_RESOLUTION};
pub use released::{released_workspace_len, solve_batch_released};
pub use similarity::Similarity;
pub use solver::{solve, workspace_len};
