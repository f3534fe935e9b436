//! The scaling iterations on one problem, stabilised so they stay exact in `f32`.
//!
//! ## The iteration
//!
//! The paper's solver keeps two scaling vectors and alternates (`a = 1/M`, `b = gamma/N`):
//!
//! ```text
//! u = min(a / (K v), 1)        the clamp is the relaxed patch-side constraint T 1 ≤ a
//! v = b / (Kᵀ u)               the prompt-side constraint Tᵀ 1 = b holds after every step
//! T = diag(u) K diag(v),       K = exp(−(1 − S) / eps)
//! ```
//!
//! and the balanced (Sinkhorn) ablation drops the clamp. It stops when the mean relative change
//! of `v` falls below `tol`, or after `max_iter` iterations.
//!
//! ## Why not the textbook kernel
//!
//! CLIP's cosines sit around 0.1–0.3, so at eps = 0.01 the kernel `exp(−(1 − S)/eps)` is about
//! `e⁻⁸⁰`, at the edge of `f32`'s range, and across costs in [0, 2] at eps = 0.005 it spans
//! `e⁻⁴⁰⁰`: the plain iteration divides zero by zero. We keep the kernel shifted by two dual
//! potentials, `p` (per patch) and `q` (per prompt):
//!
//! ```text
//! K̃[i,j] = exp((S[i,j] − p[i] − q[j]) / eps),     T = diag(u) K̃ diag(v)
//! ```
//!
//! which represents the same plan for any `p`, `q` — the true patch potential is
//! `f = eps·ln u − p`, so the clamp `f ≤ 0` becomes `u ≤ exp(p/eps)`. We start with `q[j]` the
//! largest similarity of prompt `j` (every column of `K̃` has an entry 1) and, when the patch side
//! is an equality, `p[i]` such that every row has one too. Whenever `u` or `v` leave
//! `[1/ABSORB, ABSORB]`, they are absorbed into `p` and `q` and `K̃` is recomputed from `S`
//! ("absorption", as in Schmitzer's stabilised scaling). Each iteration stays two passes of
//! multiply-adds over `K̃` and one division per patch; only an absorption evaluates
//! exponentials. The cost shift `1 − S` never appears: a constant added to the cost is absorbed
//! by `q`, so we work with `S` itself and lose no precision to the subtraction.
//!
//! ## The plan handed back meets the constraints
//!
//! After the last iteration the prompt-side sums are exact but, unless the iteration converged,
//! a patch may send more than `a`. A converged plan is handed back as it is (within the
//! tolerance, as the paper's solver hands it back); an unfinished one is rounded onto the
//! constraints (the rounding
//! of Altschuler, Weed and Rigollet, NeurIPS 2017, with the patch side an inequality): rows
//! above `a` are scaled down to `a`, then columns above `b` down to `b`, and each column's
//! remaining deficit `d[j]` is spread over the patches in proportion to their slack
//! `s[i] = a − Σⱼ T[i,j]`: `T += s dᵀ / Σ s`. Since `Σ d = gamma − Σ T ≤ 1 − Σ T = Σ s`, no
//! row passes `a`; with saturated rows (`Σ d = Σ s`) every row ends at exactly `a`. The plan
//! moves by at most twice the constraints' violation (in ℓ₁), and whatever `max_iter` allows,
//! the plan is feasible.

use super::similarity::SimilarityEntries;
use super::{OtError, OtParams, OtReport, Similarity};

/// Scalings are absorbed into the potentials once they leave `[1/ABSORB, ABSORB]`: far enough
/// that absorptions are rare, near enough that `K̃` keeps every significant entry in range.
/// (Public so other implementations of this solver, such as the host's GPU kernel, use the same
/// value.)
pub const ABSORB: f32 = 1e4;

/// Width of the chunks the iteration's loops walk: eight independent lanes the compiler maps
/// onto SIMD registers.
const LANES: usize = 8;

/// Ceiling on the patch-side bound `exp(p/eps)`: a patch whose bound overflows is unconstrained
/// in practice, and a finite ceiling keeps `0 · bound` from turning into NaN.
pub const BOUND_CEILING: f32 = 1e30;

/// Floats of workspace [`solve`] needs for an `m × n` problem: the shifted kernel (`m·n`), the
/// patch scaling, potential and bound (`3m`), the prompt scaling and potential (`2n`).
///
/// Saturates instead of overflowing, so an impossible size fails the workspace length check.
pub const fn workspace_len(m: usize, n: usize) -> usize {
    m.saturating_mul(n)
        .saturating_add(m.saturating_mul(3))
        .saturating_add(n.saturating_mul(2))
}

/// Solves one problem into `plan` (`m × n`, row-major), using `workspace` (at least
/// [`workspace_len`]`(m, n)` floats, contents ignored).
///
/// On error nothing is written to `plan`.
pub fn solve(
    sim: Similarity<'_>,
    params: &OtParams,
    workspace: &mut [f32],
    plan: &mut [f32],
) -> Result<OtReport, OtError> {
    params.validate()?;
    let (m, n) = (sim.rows(), sim.cols());
    let needed = workspace_len(m, n);
    if workspace.len() < needed {
        return Err(OtError::BufferLength {
            name: "workspace",
            expected: needed,
            found: workspace.len(),
        });
    }
    if plan.len() != m * n {
        return Err(OtError::BufferLength {
            name: "plan",
            expected: m * n,
            found: plan.len(),
        });
    }
    if let Some(index) = sim.first_non_finite() {
        return Err(OtError::NonFinite {
            name: "similarity",
            index,
        });
    }
    params.check_resolution(sim.largest_magnitude())?;
    Ok(solve_checked(sim, params, workspace, plan))
}

/// [`solve`] once the parameters, the buffers' lengths and the similarities are known good.
pub(crate) fn solve_checked(
    sim: Similarity<'_>,
    params: &OtParams,
    workspace: &mut [f32],
    plan: &mut [f32],
) -> OtReport {
    let n = sim.cols();
    solve_checked_with(&sim, params, workspace, |i, j, t| plan[i * n + j] = t)
}

/// The solve itself, on any kind of similarity matrix, once everything is known good: hands the
/// plan's entries to `write_plan` as `(i, j, T[i,j])`, row by row.
pub(crate) fn solve_checked_with<S: SimilarityEntries>(
    sim: &S,
    params: &OtParams,
    workspace: &mut [f32],
    write_plan: impl FnMut(usize, usize, f32),
) -> OtReport {
    let mut state = State::new(workspace, sim.rows(), sim.cols());
    let report = state.iterate(sim, params);
    let rounded = !report.converged;
    if rounded {
        state.round_onto_constraints(1.0 / sim.rows() as f32, params.prompt_mass(sim.cols()));
    }
    state.write_plan(rounded, write_plan);
    report
}

/// The solver's buffers, carved out of the caller's workspace.
struct State<'w> {
    m: usize,
    n: usize,
    /// `K̃`, column-major (prompt `j`'s column at `j·m..(j+1)·m`) so both passes are unit-stride.
    kernel: &'w mut [f32],
    /// Patch scaling `u` (holds `K̃ v` for a moment inside each iteration).
    u: &'w mut [f32],
    /// Patch-side bound on `u`, `exp(p/eps)` (unbalanced mode only).
    bound: &'w mut [f32],
    /// Patch potential `p`.
    p: &'w mut [f32],
    /// Prompt scaling `v`.
    v: &'w mut [f32],
    /// Prompt potential `q`.
    q: &'w mut [f32],
}

impl<'w> State<'w> {
    fn new(workspace: &'w mut [f32], m: usize, n: usize) -> Self {
        let (kernel, rest) = workspace.split_at_mut(m * n);
        let (u, rest) = rest.split_at_mut(m);
        let (bound, rest) = rest.split_at_mut(m);
        let (p, rest) = rest.split_at_mut(m);
        let (v, rest) = rest.split_at_mut(n);
        let (q, _) = rest.split_at_mut(n);
        State {
            m,
            n,
            kernel,
            u,
            bound,
            p,
            v,
            q,
        }
    }

    fn iterate<S: SimilarityEntries>(&mut self, sim: &S, params: &OtParams) -> OtReport {
        let saturated = params.rows_saturated();
        let a = 1.0 / self.m as f32;
        let b = params.prompt_mass(self.n);
        self.init_potentials(sim, saturated);
        self.v.fill(1.0);
        self.u.fill(1.0);
        self.rebuild_kernel(sim, params.eps, saturated);

        for iteration in 1..=params.max_iter {
            let update = if saturated {
                update_u::<true>
            } else {
                update_u::<false>
            };
            let u_range = update(self.kernel, self.v, self.bound, a, self.u);
            let change = self.update_v(b);
            if change < params.tol {
                return OtReport {
                    iterations: iteration,
                    converged: true,
                };
            }
            if !(in_range(u_range) && self.v.iter().all(|&v| in_range((v, v)))) {
                self.absorb(sim, params.eps, saturated);
                if iteration == params.max_iter {
                    // The kernel rebuilt from potentials rounded to f32 moves the prompt-side
                    // sums by that rounding (far from negligible when the potentials are large
                    // against eps); the plan handed back must keep them exact.
                    self.update_v(b);
                }
            }
        }
        OtReport {
            iterations: params.max_iter,
            converged: false,
        }
    }

    /// `q[j] = max_i S[i,j]`; `p[i] = max_j (S[i,j] − q[j])` when rows are saturated, else 0
    /// (so the initial bound is `u ≤ 1`, the paper's clamp).
    fn init_potentials<S: SimilarityEntries>(&mut self, sim: &S, saturated: bool) {
        for (j, q) in self.q.iter_mut().enumerate() {
            *q = (0..self.m)
                .map(|i| sim.get(i, j))
                .fold(f32::NEG_INFINITY, f32::max);
        }
        for (i, p) in self.p.iter_mut().enumerate() {
            *p = if saturated {
                (0..self.n)
                    .map(|j| sim.get(i, j) - self.q[j])
                    .fold(f32::NEG_INFINITY, f32::max)
            } else {
                0.0
            };
        }
    }

    /// Recomputes `K̃` (and the bound on `u`) from `S` and the potentials.
    fn rebuild_kernel<S: SimilarityEntries>(&mut self, sim: &S, eps: f32, saturated: bool) {
        let inv_eps = 1.0 / eps;
        for (j, column) in self.kernel.chunks_exact_mut(self.m).enumerate() {
            let q = self.q[j];
            for (i, k) in column.iter_mut().enumerate() {
                *k = libm::expf((sim.get(i, j) - self.p[i] - q) * inv_eps);
            }
        }
        if !saturated {
            for (bound, &p) in self.bound.iter_mut().zip(self.p.iter()) {
                *bound = libm::expf(p * inv_eps).min(BOUND_CEILING);
            }
        }
    }

    /// `v = b / (K̃ᵀ u)`; returns the mean relative change of `v`.
    fn update_v(&mut self, b: f32) -> f32 {
        let mut change = 0.0;
        for (column, v) in self.kernel.chunks_exact(self.m).zip(self.v.iter_mut()) {
            let updated = b / dot(column, self.u);
            change += ((updated - *v) / *v).abs();
            *v = updated;
        }
        change / self.n as f32
    }

    /// Moves the scalings into the potentials (`p −= eps·ln u`, `q −= eps·ln v`), resets them to
    /// 1 and rebuilds the kernel: the plan is unchanged, its representation re-centred.
    fn absorb<S: SimilarityEntries>(&mut self, sim: &S, eps: f32, saturated: bool) {
        // A scaling of 0 or ∞ (a patch or prompt whose kernel entries all underflowed against
        // the others' potentials) cannot be absorbed; re-centre its potential on its largest
        // entry instead. The next `u` update recomputes every patch scaling from `v`, so only
        // the prompt side must stay exact, and a re-centred prompt is one the plan had lost.
        for (j, (q, v)) in self.q.iter_mut().zip(self.v.iter_mut()).enumerate() {
            if v.is_finite() && *v > 0.0 {
                *q -= eps * libm::logf(*v);
            } else {
                *q = (0..self.m)
                    .map(|i| sim.get(i, j) - self.p[i])
                    .fold(f32::NEG_INFINITY, f32::max);
            }
            *v = 1.0;
        }
        for (i, (p, u)) in self.p.iter_mut().zip(self.u.iter_mut()).enumerate() {
            if u.is_finite() && *u > 0.0 {
                *p -= eps * libm::logf(*u);
            } else {
                *p = (0..self.n)
                    .map(|j| sim.get(i, j) - self.q[j])
                    .fold(f32::NEG_INFINITY, f32::max);
            }
            *u = 1.0;
        }
        self.rebuild_kernel(sim, eps, saturated);
    }

    /// Rounds `T = diag(u) K̃ diag(v)` onto the constraints (see the module documentation):
    /// scales `u` and `v` down where rows pass `a` and columns pass `b`, and leaves in `q` each
    /// column's deficit `d[j]` and in `p` each row's share of the slack `s[i] / Σ s`, so that
    /// the plan is `T[i,j] = u[i] K̃[i,j] v[j] + p[i] q[j]`. The potentials are not needed
    /// after the last iteration.
    fn round_onto_constraints(&mut self, a: f32, b: f32) {
        // A scaling that is not finite belongs to a row or column whose kernel entries all
        // underflowed: it carries no mass the plan can use, and the deficit step restores the
        // column's.
        for x in self.u.iter_mut().chain(self.v.iter_mut()) {
            if !x.is_finite() {
                *x = 0.0;
            }
        }
        for (i, u) in self.u.iter_mut().enumerate() {
            let row = *u * row_dot(self.kernel, self.m, i, self.v);
            if row > a {
                *u *= a / row;
            }
        }
        for ((column, v), deficit) in self
            .kernel
            .chunks_exact(self.m)
            .zip(self.v.iter_mut())
            .zip(self.q.iter_mut())
        {
            let sum = *v * dot(column, self.u);
            let kept = if sum > b {
                *v *= b / sum;
                b
            } else {
                sum
            };
            *deficit = b - kept;
        }
        let mut slack_total = 0.0;
        for (i, (share, &u)) in self.p.iter_mut().zip(self.u.iter()).enumerate() {
            *share = (a - u * row_dot(self.kernel, self.m, i, self.v)).max(0.0);
            slack_total += *share;
        }
        for share in self.p.iter_mut() {
            *share = if slack_total > 0.0 {
                *share / slack_total
            } else {
                0.0
            };
        }
    }

    /// `T[i,j] = u[i] · K̃[i,j] · v[j]`, plus `p[i] · q[j]` when `rounded` (the plan
    /// [`Self::round_onto_constraints`] left), handed to `write` row by row.
    fn write_plan(&self, rounded: bool, mut write: impl FnMut(usize, usize, f32)) {
        for (i, (&u, &share)) in self.u.iter().zip(self.p.iter()).enumerate() {
            for (j, (&v, &deficit)) in self.v.iter().zip(self.q.iter()).enumerate() {
                let t = u * self.kernel[j * self.m + i] * v;
                write(i, j, if rounded { t + share * deficit } else { t });
            }
        }
    }
}

/// `u = a / (K̃ v)`, clamped to the bound unless `SATURATED`. Returns the smallest and largest
/// `u`.
///
/// A free function over slices, not a method, so the compiler knows the buffers do not alias,
/// written as unit-stride loops over `LANES`-wide chunks that it keeps in SIMD registers;
/// comparisons are spelled out (`if x < y`) rather than `f32::min`, whose NaN handling costs
/// several instructions per lane.
fn update_u<const SATURATED: bool>(
    kernel: &[f32],
    v: &[f32],
    bound: &[f32],
    a: f32,
    u: &mut [f32],
) -> (f32, f32) {
    let m = u.len();
    u.fill(0.0);
    for (column, &vj) in kernel.chunks_exact(m).zip(v) {
        for (x, k) in u.iter_mut().zip(column) {
            *x += k * vj;
        }
    }
    let scale = |x: f32, limit: f32| {
        let ratio = a / x;
        if SATURATED || ratio < limit {
            ratio
        } else {
            limit
        }
    };
    let mut low = [f32::INFINITY; LANES];
    let mut high = [0.0f32; LANES];
    let mut chunks = u.chunks_exact_mut(LANES);
    let mut limits = bound.chunks_exact(LANES);
    for (x, limit) in (&mut chunks).zip(&mut limits) {
        for l in 0..LANES {
            x[l] = scale(x[l], limit[l]);
            low[l] = if x[l] < low[l] { x[l] } else { low[l] };
            high[l] = if x[l] > high[l] { x[l] } else { high[l] };
        }
    }
    for (x, &limit) in chunks.into_remainder().iter_mut().zip(limits.remainder()) {
        *x = scale(*x, limit);
        low[0] = low[0].min(*x);
        high[0] = high[0].max(*x);
    }
    (
        low.iter().fold(f32::INFINITY, |acc, &x| acc.min(x)),
        high.iter().fold(0.0, |acc, &x| acc.max(x)),
    )
}

/// `Σ x·y` with `LANES` independent partial sums, so the compiler can keep them in SIMD lanes
/// (a single running sum is a serial chain it may not reorder).
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut partial = [0.0f32; LANES];
    let (xs, ys) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: f32 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xc, yc) in xs.zip(ys) {
        for l in 0..LANES {
            partial[l] += xc[l] * yc[l];
        }
    }
    partial.iter().sum::<f32>() + tail
}

/// `Σⱼ K̃[i,j] v[j]`: row `i` of the column-major `kernel` (`m` rows) against `v`.
fn row_dot(kernel: &[f32], m: usize, i: usize, v: &[f32]) -> f32 {
    v.iter()
        .enumerate()
        .map(|(j, &vj)| kernel[j * m + i] * vj)
        .sum()
}

/// Whether scalings spanning `[low, high]` may stay unabsorbed (false for NaN too).
fn in_range((low, high): (f32, f32)) -> bool {
    low >= 1.0 / ABSORB && high <= ABSORB
}
