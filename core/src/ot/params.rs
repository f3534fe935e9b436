//! The parameters of a solve and what it reports.

use super::OtError;

/// Which marginal constraints the transport plan satisfies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtMode {
    /// FedOTP's solver: every patch sends at most `1/M`, every prompt receives exactly `gamma/N`.
    Unbalanced,
    /// Sinkhorn's: every patch sends exactly `1/M`, every prompt receives exactly `1/N`
    /// (`gamma` is not used).
    Balanced,
}

/// Parameters of one optimal-transport solve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OtParams {
    /// Entropic regularisation, a positive normal `f32` (not subnormal: the solver divides by
    /// it, and `1/eps` overflows). Smaller is sharper and needs more iterations.
    pub eps: f32,
    /// Total transported mass in the unbalanced mode, in `(0, 1]` and a normal `f32` (a
    /// subnormal mass per prompt underflows to zero and the plan is wrong).
    pub gamma: f32,
    /// Most scaling iterations to run, `≥ 1`.
    pub max_iter: u32,
    /// Stop once the mean relative change of the prompt-side scaling falls below this, `≥ 0`;
    /// 0 runs exactly `max_iter` iterations.
    pub tol: f32,
    /// Unbalanced (FedOTP) or balanced (Sinkhorn).
    pub mode: OtMode,
}

impl OtParams {
    /// The constants of the paper's reference scripts: eps 0.1, gamma 0.8, 100 iterations,
    /// tolerance 1e-3, unbalanced.
    pub const FEDOTP: OtParams = OtParams {
        eps: 0.1,
        gamma: 0.8,
        max_iter: 100,
        tol: 1e-3,
        mode: OtMode::Unbalanced,
    };

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), OtError> {
        // `is_normal` refuses NaN, the infinities, zero and the subnormals at once.
        if !(self.eps.is_normal() && self.eps > 0.0) {
            return Err(OtError::InvalidEps(self.eps));
        }
        if !(self.gamma.is_normal() && self.gamma > 0.0 && self.gamma <= 1.0) {
            return Err(OtError::InvalidGamma(self.gamma));
        }
        if self.max_iter == 0 {
            return Err(OtError::InvalidMaxIter);
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(OtError::InvalidTol(self.tol));
        }
        Ok(())
    }

    /// Mass every prompt receives: `gamma/N` (unbalanced) or `1/N` (balanced).
    pub fn prompt_mass(&self, n: usize) -> f32 {
        match self.mode {
            OtMode::Unbalanced => self.gamma / n as f32,
            OtMode::Balanced => 1.0 / n as f32,
        }
    }

    /// Whether the patch-side constraint is an equality. It is in the balanced mode, and also in
    /// the unbalanced one at `gamma = 1`: all mass must move, so every row is saturated. The
    /// balanced update reaches that same solution in a few hundred iterations where the clamped
    /// one needs thousands.
    pub fn rows_saturated(&self) -> bool {
        self.mode == OtMode::Balanced || self.gamma >= 1.0
    }
}

/// How a solve ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtReport {
    /// Scaling iterations run.
    pub iterations: u32,
    /// Whether the tolerance was met before `max_iter`.
    pub converged: bool,
}
