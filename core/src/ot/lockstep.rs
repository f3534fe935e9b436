//! Several problems of a batch solved in lockstep, one per SIMD lane.
//!
//! [`super::solver`] spreads one problem's patches across the SIMD lanes. Each of its iterations
//! is then a chain — the product `K̃v`, the divisions, the dot products and their reduction
//! across lanes, the relative change, the test — that one image's 196 patches are too few to
//! hide. Here [`WIDTH`] problems of the same shape (neighbouring classes of a batch) share every
//! instruction instead: element `l` of each vector belongs to problem `l`, so one division
//! instruction serves eight problems and the dot products need no reduction across lanes.
//!
//! Each problem still takes its own course: it stops at its own tolerance (its plan is handed
//! over then; its lane goes on being computed but is no longer read) and absorbs on its own. Its
//! arithmetic is the single-problem solver's, operation for operation — the same setup, the same
//! products, `K̃v` summed over the prompts in order, each dot product as [`PARTIAL_SUMS`] partial
//! sums over the patches added in order and then the tail — so plans and reports are
//! bit-identical to [`super::solve`]'s (tested). Absorbing and finishing a problem happen rarely
//! or once: they run the single-problem solver's own code on the problem's values, copied out of
//! the lanes and back.

use super::exp::exp;
use super::similarity::SimilarityEntries;
use super::solver::{unabsorbed, workspace_len, State, BOUND_CEILING, PARTIAL_SUMS};
use super::{OtParams, OtReport};

/// Problems solved at once: eight `f32` fill an AVX2 register (two SSE or NEON registers).
pub(crate) const WIDTH: usize = 8;

/// One value of each of the [`WIDTH`] problems.
type Lanes = [f32; WIDTH];

/// Floats of workspace with which [`solve_batch`](super::solve_batch) solves eight `m × n`
/// problems at a time in lockstep: each problem's [`workspace_len`] interleaved, and one
/// problem's more to absorb and finish them in (nine times `workspace_len`).
///
/// Saturates instead of overflowing, so an impossible size fails the workspace length check.
pub const fn batch_workspace_len(m: usize, n: usize) -> usize {
    workspace_len(m, n).saturating_mul(WIDTH + 1)
}

/// Solves `problems` (1 to [`WIDTH`], all `m × n`, already checked) in lockstep: problem `l`'s
/// plan goes to `plans[l·m·n..(l+1)·m·n]` (row-major) and its report to `reports[l]`.
/// `workspace` holds at least [`batch_workspace_len`]`(m, n)` floats.
#[inline(always)]
pub(super) fn solve_lockstep<S: SimilarityEntries>(
    problems: &[S],
    params: &OtParams,
    workspace: &mut [f32],
    plans: &mut [f32],
    reports: &mut [OtReport],
) {
    let count = problems.len();
    let (m, n) = (problems[0].rows(), problems[0].cols());
    let (interleaved, one) = workspace.split_at_mut(WIDTH * workspace_len(m, n));
    let mut lanes = Lockstep::new(interleaved, one, m, n);
    lanes.prepare(problems, params);
    let mut active = [false; WIDTH];
    active[..count].fill(true);

    let saturated = params.rows_saturated();
    let a = 1.0 / m as f32;
    let b = params.prompt_mass(n);
    for iteration in 1..=params.max_iter {
        let (kernel, v, bound) = (&*lanes.kernel, &*lanes.v, &*lanes.bound);
        let u_in_range = match (saturated, n) {
            (true, 2) => update_u_two_prompts::<true>(kernel, v, bound, a, lanes.u),
            (true, _) => update_u::<true>(kernel, v, bound, a, lanes.u),
            (false, 2) => update_u_two_prompts::<false>(kernel, v, bound, a, lanes.u),
            (false, _) => update_u::<false>(kernel, v, bound, a, lanes.u),
        };
        let change = update_v(lanes.kernel, lanes.u, b, lanes.v);
        let v_in_range = in_range(lanes.v);
        for l in 0..count {
            if !active[l] {
                continue;
            }
            if change[l] < params.tol {
                let report = OtReport {
                    iterations: iteration,
                    converged: true,
                };
                lanes.finish(l, report, params, plans, reports);
                active[l] = false;
            } else if !(u_in_range[l] && v_in_range[l]) {
                // As the single-problem solver does it, on this problem alone.
                lanes.load(l);
                lanes.one.absorb(&problems[l], params.eps, saturated);
                if iteration == params.max_iter {
                    lanes.one.update_v(b);
                }
                lanes.store(l);
            }
        }
        if !active.contains(&true) {
            return;
        }
    }
    let cut_off = OtReport {
        iterations: params.max_iter,
        converged: false,
    };
    for l in (0..count).filter(|&l| active[l]) {
        lanes.finish(l, cut_off, params, plans, reports);
    }
}

/// The interleaved buffers of [`WIDTH`] problems (those of [`State`], element `l` of each
/// [`Lanes`] belonging to problem `l`), and one problem's [`State`] to work on one of them.
struct Lockstep<'w> {
    /// `K̃`, column-major as in [`State`].
    kernel: &'w mut [Lanes],
    u: &'w mut [Lanes],
    bound: &'w mut [Lanes],
    p: &'w mut [Lanes],
    v: &'w mut [Lanes],
    q: &'w mut [Lanes],
    one: State<'w>,
}

impl<'w> Lockstep<'w> {
    #[inline(always)]
    fn new(interleaved: &'w mut [f32], one: &'w mut [f32], m: usize, n: usize) -> Self {
        let (interleaved, _) = interleaved.as_chunks_mut::<WIDTH>();
        let (kernel, rest) = interleaved.split_at_mut(m * n);
        let (u, rest) = rest.split_at_mut(m);
        let (bound, rest) = rest.split_at_mut(m);
        let (p, rest) = rest.split_at_mut(m);
        let (v, rest) = rest.split_at_mut(n);
        let (q, _) = rest.split_at_mut(n);
        Lockstep {
            kernel,
            u,
            bound,
            p,
            v,
            q,
            one: State::new(one, m, n),
        }
    }

    /// The starting point of every lane, as the single-problem solver sets up one problem (its
    /// `gather`, `init_potentials` and `kernel_from_gathered`): the same arithmetic, lane by
    /// lane. Lanes past the last problem repeat it, so that they hold finite values; they are
    /// never active, and their results are not read.
    #[inline(always)]
    fn prepare<S: SimilarityEntries>(&mut self, problems: &[S], params: &OtParams) {
        let (m, count) = (self.u.len(), problems.len());
        // Neighbouring classes lie side by side in the batch's tensor: gathering all lanes of an
        // entry at once reads each cache line once for all of them.
        for (j, column) in self.kernel.chunks_exact_mut(m).enumerate() {
            for (i, entry) in column.iter_mut().enumerate() {
                for (l, s) in entry.iter_mut().enumerate() {
                    *s = problems[l.min(count - 1)].get(i, j);
                }
            }
        }
        // The potentials (see `State::init_potentials`): `q[j]` the column's largest
        // similarity; `p[i]` the row's largest `S − q` when rows are saturated, else 0.
        let saturated = params.rows_saturated();
        for (column, q) in self.kernel.chunks_exact(m).zip(self.q.iter_mut()) {
            *q = [f32::NEG_INFINITY; WIDTH];
            for s in column {
                for l in 0..WIDTH {
                    q[l] = if s[l] > q[l] { s[l] } else { q[l] };
                }
            }
        }
        self.p
            .fill([if saturated { f32::NEG_INFINITY } else { 0.0 }; WIDTH]);
        if saturated {
            for (column, q) in self.kernel.chunks_exact(m).zip(self.q.iter()) {
                for (p, s) in self.p.iter_mut().zip(column) {
                    for l in 0..WIDTH {
                        let shifted = s[l] - q[l];
                        p[l] = if shifted > p[l] { shifted } else { p[l] };
                    }
                }
            }
        }
        self.u.fill([1.0; WIDTH]);
        self.v.fill([1.0; WIDTH]);
        // The kernel and the bound (see `State::kernel_from_gathered`). The exponentials run
        // over the buffers as flat slices: a plain loop the compiler vectorises, as in `State`.
        let inv_eps = 1.0 / params.eps;
        for (column, q) in self.kernel.chunks_exact_mut(m).zip(self.q.iter()) {
            for (k, p) in column.iter_mut().zip(self.p.iter()) {
                for l in 0..WIDTH {
                    k[l] = k[l] - p[l] - q[l];
                }
            }
        }
        for k in self.kernel.as_flattened_mut() {
            *k = exp(*k * inv_eps);
        }
        if !saturated {
            for (bound, &p) in self
                .bound
                .as_flattened_mut()
                .iter_mut()
                .zip(self.p.as_flattened())
            {
                *bound = exp(p * inv_eps).min(BOUND_CEILING);
            }
        }
    }

    /// Copies problem `l`'s values out of the lanes into `one`.
    #[inline(always)]
    fn load(&mut self, l: usize) {
        for (values, lanes) in self.buffers() {
            for (x, lanes) in values.iter_mut().zip(lanes.iter()) {
                *x = lanes[l];
            }
        }
    }

    /// Copies `one`'s values into problem `l`'s lanes.
    #[inline(always)]
    fn store(&mut self, l: usize) {
        for (values, lanes) in self.buffers() {
            for (lanes, &x) in lanes.iter_mut().zip(values.iter()) {
                lanes[l] = x;
            }
        }
    }

    /// Each of `one`'s buffers beside the lanes that hold it for every problem.
    #[inline(always)]
    fn buffers(&mut self) -> [(&mut [f32], &mut [Lanes]); 6] {
        let one = &mut self.one;
        [
            (&mut *one.kernel, &mut *self.kernel),
            (&mut *one.u, &mut *self.u),
            (&mut *one.bound, &mut *self.bound),
            (&mut *one.p, &mut *self.p),
            (&mut *one.v, &mut *self.v),
            (&mut *one.q, &mut *self.q),
        ]
    }

    /// Hands problem `l`'s plan and report over, as it stands: its lane goes on being computed
    /// with the others', but is no longer read.
    #[inline(always)]
    fn finish(
        &mut self,
        l: usize,
        report: OtReport,
        params: &OtParams,
        plans: &mut [f32],
        reports: &mut [OtReport],
    ) {
        let (m, n) = (self.u.len(), self.v.len());
        let plan = &mut plans[l * m * n..(l + 1) * m * n];
        self.load(l);
        self.one
            .finish(report, params, |i, j, t| plan[i * n + j] = t);
        reports[l] = report;
    }
}

/// `u = a / (K̃ v)`, clamped to the bound unless `SATURATED`, in every lane. Returns, per
/// lane, whether every `u` may stay unabsorbed.
///
/// Patch by patch: the products, then the division (measured faster here than the
/// single-problem solver's two passes, which store and reload `K̃ v`).
#[inline(always)]
fn update_u<const SATURATED: bool>(
    kernel: &[Lanes],
    v: &[Lanes],
    bound: &[Lanes],
    a: f32,
    u: &mut [Lanes],
) -> [bool; WIDTH] {
    let m = u.len();
    let mut outside = [0u32; WIDTH];
    for (i, (u, bound)) in u.iter_mut().zip(bound).enumerate() {
        // Summed over the prompts from 0.0 in order, as the single-problem `kernel_times` does.
        let mut product = [0.0f32; WIDTH];
        for (column, v) in kernel.chunks_exact(m).zip(v) {
            for l in 0..WIDTH {
                product[l] += column[i][l] * v[l];
            }
        }
        divide_and_clamp::<SATURATED>(a, &product, bound, u, &mut outside);
    }
    outside.map(|o| o == 0)
}

/// [`update_u`] for two prompts per class, the paper's setting: the two columns walked side by
/// side instead of a loop over the columns for every patch (an iteration of the 32 × 100 batch
/// of `benches/benches/ot.rs` measured 0.19 instead of 0.25 ms here).
#[inline(always)]
fn update_u_two_prompts<const SATURATED: bool>(
    kernel: &[Lanes],
    v: &[Lanes],
    bound: &[Lanes],
    a: f32,
    u: &mut [Lanes],
) -> [bool; WIDTH] {
    let (first, second) = kernel.split_at(u.len());
    let mut outside = [0u32; WIDTH];
    for (((u, bound), k0), k1) in u.iter_mut().zip(bound).zip(first).zip(second) {
        let mut product = [0.0f32; WIDTH];
        for l in 0..WIDTH {
            product[l] += k0[l] * v[0][l];
            product[l] += k1[l] * v[1][l];
        }
        divide_and_clamp::<SATURATED>(a, &product, bound, u, &mut outside);
    }
    outside.map(|o| o == 0)
}

/// One patch's `u = a / (K̃ v)`, clamped to its bound unless `SATURATED`; flags in `outside`
/// the lanes where it leaves the absorption range.
#[inline(always)]
fn divide_and_clamp<const SATURATED: bool>(
    a: f32,
    product: &Lanes,
    bound: &Lanes,
    u: &mut Lanes,
    outside: &mut [u32; WIDTH],
) {
    for l in 0..WIDTH {
        let ratio = a / product[l];
        u[l] = if SATURATED || ratio < bound[l] {
            ratio
        } else {
            bound[l]
        };
        outside[l] |= u32::from(!unabsorbed(u[l]));
    }
}

/// `v = b / (K̃ᵀ u)` in every lane; returns each lane's mean relative change of `v`.
#[inline(always)]
fn update_v(kernel: &[Lanes], u: &[Lanes], b: f32, v: &mut [Lanes]) -> Lanes {
    let mut change = [0.0f32; WIDTH];
    for (column, v) in kernel.chunks_exact(u.len()).zip(v.iter_mut()) {
        let sums = dot(column, u);
        for l in 0..WIDTH {
            let updated = b / sums[l];
            change[l] += ((updated - v[l]) / v[l]).abs();
            v[l] = updated;
        }
    }
    let prompts = v.len() as f32;
    change.map(|c| c / prompts)
}

/// Lane by lane, the single-problem solver's dot product: [`PARTIAL_SUMS`] partial sums over the
/// patches, added in order (from `-0.0`, as `Iterator::sum` starts), then the tail's products
/// summed the same way.
#[inline(always)]
fn dot(x: &[Lanes], y: &[Lanes]) -> Lanes {
    let mut partial = [[0.0f32; WIDTH]; PARTIAL_SUMS];
    let (xs, ys) = (x.chunks_exact(PARTIAL_SUMS), y.chunks_exact(PARTIAL_SUMS));
    let mut tail = [-0.0f32; WIDTH];
    for (a, b) in xs.remainder().iter().zip(ys.remainder()) {
        for l in 0..WIDTH {
            tail[l] += a[l] * b[l];
        }
    }
    for (xc, yc) in xs.zip(ys) {
        for k in 0..PARTIAL_SUMS {
            for l in 0..WIDTH {
                partial[k][l] += xc[k][l] * yc[k][l];
            }
        }
    }
    let mut total = [-0.0f32; WIDTH];
    for sums in partial {
        for l in 0..WIDTH {
            total[l] += sums[l];
        }
    }
    for l in 0..WIDTH {
        total[l] += tail[l];
    }
    total
}

/// Per lane, whether every scaling lies in `[1/ABSORB, ABSORB]`.
#[inline(always)]
fn in_range(scalings: &[Lanes]) -> [bool; WIDTH] {
    let mut outside = [0u32; WIDTH];
    for x in scalings {
        for l in 0..WIDTH {
            outside[l] |= u32::from(!unabsorbed(x[l]));
        }
    }
    outside.map(|o| o == 0)
}
