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
//!
//! ## Compiled where it is called
//!
//! Every function of a solve is `#[inline(always)]`, down to the iteration's loops: a caller
//! compiled with wider SIMD than the target's baseline (the host crate's AVX2 path) then gets the
//! whole solve compiled that way, with the same arithmetic in the same order. The loops are
//! plain unit-stride loops, which the compiler vectorises at whatever width the caller allows;
//! the range test that decides an absorption is a fold without early exit, so it vectorises too.

use super::exp::exp;
use super::similarity::SimilarityEntries;
use super::{OtError, OtParams, OtReport, Similarity};

/// Scalings are absorbed into the potentials once they leave `[1/ABSORB, ABSORB]`: far enough
/// that absorptions are rare, near enough that `K̃` keeps every significant entry in range.
/// (Public so other implementations of this solver, such as the host's GPU kernel, use the same
/// value.)
pub const ABSORB: f32 = 1e4;

/// Partial sums a dot product keeps: eight independent lanes the compiler maps onto SIMD
/// registers. (The lockstep solver repeats this summation order, problem by problem.)
pub(super) const PARTIAL_SUMS: usize = 8;

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
#[inline(always)]
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
#[inline(always)]
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
#[inline(always)]
pub(crate) fn solve_checked_with<S: SimilarityEntries>(
    sim: &S,
    params: &OtParams,
    workspace: &mut [f32],
    write_plan: impl FnMut(usize, usize, f32),
) -> OtReport {
    let mut state = State::new(workspace, sim.rows(), sim.cols());
    let report = state.iterate(sim, params);
    state.finish(report, params, write_plan);
    report
}

/// The solver's buffers, carved out of the caller's workspace. (The lockstep solver of
/// [`super::lockstep`] keeps one to absorb and finish each of its problems exactly as here.)
pub(super) struct State<'w> {
    m: usize,
    n: usize,
    /// `K̃`, column-major (prompt `j`'s column at `j·m..(j+1)·m`) so both passes are unit-stride.
    pub(super) kernel: &'w mut [f32],
    /// Patch scaling `u` (holds `K̃ v` for a moment inside each iteration).
    pub(super) u: &'w mut [f32],
    /// Patch-side bound on `u`, `exp(p/eps)` (unbalanced mode only).
    pub(super) bound: &'w mut [f32],
    /// Patch potential `p`.
    pub(super) p: &'w mut [f32],
    /// Prompt scaling `v`.
    pub(super) v: &'w mut [f32],
    /// Prompt potential `q`.
    pub(super) q: &'w mut [f32],
}

impl<'w> State<'w> {
    #[inline(always)]
    pub(super) fn new(workspace: &'w mut [f32], m: usize, n: usize) -> Self {
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

    #[inline(always)]
    fn iterate<S: SimilarityEntries>(&mut self, sim: &S, params: &OtParams) -> OtReport {
        let saturated = params.rows_saturated();
        let a = 1.0 / self.m as f32;
        let b = params.prompt_mass(self.n);
        self.gather(sim);
        self.init_potentials(saturated);
        self.v.fill(1.0);
        self.u.fill(1.0);
        self.kernel_from_gathered(params.eps, saturated);

        for iteration in 1..=params.max_iter {
            // Called, not taken as a function pointer: a pointer would name a copy compiled for
            // the target's baseline, outside the caller's SIMD (see the module documentation).
            let u_in_range = if saturated {
                update_u::<true>(self.kernel, self.v, self.bound, a, self.u)
            } else {
                update_u::<false>(self.kernel, self.v, self.bound, a, self.u)
            };
            let change = self.update_v(b);
            if change < params.tol {
                return OtReport {
                    iterations: iteration,
                    converged: true,
                };
            }
            if !(u_in_range && in_range(self.v)) {
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

    /// Copies `S` into the kernel's buffer, column-major: the similarities may be strided (a
    /// problem inside a batch); everything after this reads them with unit stride.
    #[inline(always)]
    fn gather<S: SimilarityEntries>(&mut self, sim: &S) {
        for (j, column) in self.kernel.chunks_exact_mut(self.m).enumerate() {
            for (i, k) in column.iter_mut().enumerate() {
                *k = sim.get(i, j);
            }
        }
    }

    /// From `S` gathered in the kernel's buffer: `q[j] = max_i S[i,j]`; `p[i] = max_j (S[i,j] −
    /// q[j])` when rows are saturated, else 0 (so the initial bound is `u ≤ 1`, the paper's
    /// clamp). The similarities are known finite, so plain comparisons take the maxima.
    #[inline(always)]
    fn init_potentials(&mut self, saturated: bool) {
        for (column, q) in self.kernel.chunks_exact(self.m).zip(self.q.iter_mut()) {
            *q = column
                .iter()
                .fold(f32::NEG_INFINITY, |max, &s| if s > max { s } else { max });
        }
        self.p.fill(if saturated { f32::NEG_INFINITY } else { 0.0 });
        if saturated {
            for (column, &q) in self.kernel.chunks_exact(self.m).zip(self.q.iter()) {
                for (p, &s) in self.p.iter_mut().zip(column) {
                    let shifted = s - q;
                    *p = if shifted > *p { shifted } else { *p };
                }
            }
        }
    }

    /// Turns `S`, gathered in the kernel's buffer, into `K̃ = exp((S − p − q) / eps)` in place,
    /// and sets the bound on `u`. Each loop is unit-stride and branch-free, so the compiler runs
    /// several exponentials per SIMD instruction.
    #[inline(always)]
    fn kernel_from_gathered(&mut self, eps: f32, saturated: bool) {
        let inv_eps = 1.0 / eps;
        for (column, &q) in self.kernel.chunks_exact_mut(self.m).zip(self.q.iter()) {
            for (k, &p) in column.iter_mut().zip(self.p.iter()) {
                *k = exp((*k - p - q) * inv_eps);
            }
        }
        if !saturated {
            for (bound, &p) in self.bound.iter_mut().zip(self.p.iter()) {
                *bound = exp(p * inv_eps).min(BOUND_CEILING);
            }
        }
    }

    /// `v = b / (K̃ᵀ u)`; returns the mean relative change of `v`.
    #[inline(always)]
    pub(super) fn update_v(&mut self, b: f32) -> f32 {
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
    #[inline(always)]
    pub(super) fn absorb<S: SimilarityEntries>(&mut self, sim: &S, eps: f32, saturated: bool) {
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
        self.gather(sim);
        self.kernel_from_gathered(eps, saturated);
    }

    /// Hands the plan to `write_plan`, rounded onto the constraints unless the solve converged.
    #[inline(always)]
    pub(super) fn finish(
        &mut self,
        report: OtReport,
        params: &OtParams,
        write_plan: impl FnMut(usize, usize, f32),
    ) {
        let rounded = !report.converged;
        if rounded {
            self.round_onto_constraints(1.0 / self.m as f32, params.prompt_mass(self.n));
        }
        self.write_plan(rounded, write_plan);
    }

    /// Rounds `T = diag(u) K̃ diag(v)` onto the constraints (see the module documentation):
    /// scales `u` and `v` down where rows pass `a` and columns pass `b`, and leaves in `q` each
    /// column's deficit `d[j]` and in `p` each row's share of the slack `s[i] / Σ s`, so that
    /// the plan is `T[i,j] = u[i] K̃[i,j] v[j] + p[i] q[j]`. The potentials are not needed
    /// after the last iteration.
    #[inline(always)]
    fn round_onto_constraints(&mut self, a: f32, b: f32) {
        // A scaling that is not finite belongs to a row or column whose kernel entries all
        // underflowed: it carries no mass the plan can use, and the deficit step restores the
        // column's.
        for scalings in [&mut *self.u, &mut *self.v] {
            for x in scalings.iter_mut() {
                *x = if x.is_finite() { *x } else { 0.0 };
            }
        }
        // The bound on `u` is not needed after the last iteration: it holds the row sums.
        kernel_times(self.kernel, self.v, self.bound);
        for (u, &row_sum) in self.u.iter_mut().zip(self.bound.iter()) {
            let row = *u * row_sum;
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
        kernel_times(self.kernel, self.v, self.bound);
        let mut slack_total = 0.0;
        for ((share, &u), &row_sum) in self.p.iter_mut().zip(self.u.iter()).zip(self.bound.iter()) {
            *share = (a - u * row_sum).max(0.0);
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
    #[inline(always)]
    fn write_plan(&self, rounded: bool, mut write: impl FnMut(usize, usize, f32)) {
        for (i, (&u, &share)) in self.u.iter().zip(self.p.iter()).enumerate() {
            for (j, (&v, &deficit)) in self.v.iter().zip(self.q.iter()).enumerate() {
                let t = u * self.kernel[j * self.m + i] * v;
                write(i, j, if rounded { t + share * deficit } else { t });
            }
        }
    }
}

/// `u = a / (K̃ v)`, clamped to the bound unless `SATURATED`. Returns whether every `u` may stay
/// unabsorbed.
///
/// Two plain loops (the product; the division, clamp and range check), each of which the
/// compiler turns into SIMD code on its own; the clamp is spelled out (`if x < y`) rather than
/// `f32::min`, whose NaN handling costs several instructions per lane.
#[inline(always)]
fn update_u<const SATURATED: bool>(
    kernel: &[f32],
    v: &[f32],
    bound: &[f32],
    a: f32,
    u: &mut [f32],
) -> bool {
    kernel_times(kernel, v, u);
    let mut all_in_range = true;
    for (x, &limit) in u.iter_mut().zip(bound) {
        let ratio = a / *x;
        *x = if SATURATED || ratio < limit {
            ratio
        } else {
            limit
        };
        all_in_range &= unabsorbed(*x);
    }
    all_in_range
}

/// `Σ x·y` with [`PARTIAL_SUMS`] independent partial sums, so the compiler can keep them in SIMD
/// lanes (a single running sum is a serial chain it may not reorder).
#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut partial = [0.0f32; PARTIAL_SUMS];
    let (xs, ys) = (x.chunks_exact(PARTIAL_SUMS), y.chunks_exact(PARTIAL_SUMS));
    let tail: f32 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xc, yc) in xs.zip(ys) {
        for l in 0..PARTIAL_SUMS {
            partial[l] += xc[l] * yc[l];
        }
    }
    partial.iter().sum::<f32>() + tail
}

/// `out = K̃ v`, one unit-stride pass per column of the column-major `kernel`.
#[inline(always)]
fn kernel_times(kernel: &[f32], v: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (column, &vj) in kernel.chunks_exact(out.len()).zip(v) {
        for (x, k) in out.iter_mut().zip(column) {
            *x += k * vj;
        }
    }
}

/// Whether every scaling lies in `[1/ABSORB, ABSORB]` and may stay unabsorbed (false for NaN
/// too). A fold without early exit, so that it runs as SIMD comparisons.
#[inline(always)]
fn in_range(scalings: &[f32]) -> bool {
    scalings.iter().fold(true, |all, &x| all & unabsorbed(x))
}

/// Whether a scaling lies in `[1/ABSORB, ABSORB]` (false for NaN).
#[inline(always)]
pub(super) fn unabsorbed(x: f32) -> bool {
    (1.0 / ABSORB..=ABSORB).contains(&x)
}
