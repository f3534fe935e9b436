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

/// Smallest `eps` the `f32` solver honours, per unit of the largest similarity magnitude.
///
/// The solver keeps the kernel as `exp((S − p − q)/eps)` with dual potentials `p`, `q` of the
/// similarities' magnitude, held in `f32`: one rounding step of a potential (2⁻²⁴ of the
/// largest |S|) moves the exponent by `2⁻²⁴·max|S|/eps`. At `eps = 1e-5·max|S|` that is 0.6 %
/// of a kernel entry; a few orders of magnitude below it, the updates of the potentials vanish
/// in rounding, the iteration stalls, and kernels overflow into NaN plans. (The plan the solver
/// returns always meets the constraints; this floor is what keeps it meaningful.)
pub const EPS_RESOLUTION: f32 = 1e-5;

/// The largest similarity magnitude the OT head assumes when it checks `eps` before computing
/// its cosines: they lie in `[-1, 1]` up to rounding, and the margin of 2 keeps a later check on
/// the computed values from refusing what this one accepted.
pub const COSINE_BOUND: f32 = 2.0;

/// Parameters of one optimal-transport solve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OtParams {
    /// Entropic regularisation, a positive normal `f32` (not subnormal: the solver divides by
    /// it, and `1/eps` overflows), and at least [`EPS_RESOLUTION`] times the largest magnitude
    /// of the similarities it is used on ([`OtParams::check_resolution`]). Smaller is sharper
    /// and needs more iterations.
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

    /// Checks `eps` against the similarities it will be used on: at least [`EPS_RESOLUTION`]
    /// times `largest`, their largest magnitude (the OT head passes [`COSINE_BOUND`]).
    pub fn check_resolution(&self, largest: f32) -> Result<(), OtError> {
        let min = EPS_RESOLUTION * largest;
        if self.eps < min {
            return Err(OtError::EpsBelowResolution {
                eps: self.eps,
                largest,
                min,
            });
        }
        Ok(())
    }

    /// [`OtParams::validate`], then `eps` against cosine similarities ([`COSINE_BOUND`]): the
    /// check of every caller that solves on cosines (the OT head, training, the backends).
    pub fn validate_for_cosines(&self) -> Result<(), OtError> {
        self.validate()?;
        self.check_resolution(COSINE_BOUND)
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
