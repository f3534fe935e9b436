//! The independent problems of a batch: one per (image, class) pair.

use super::lockstep::{batch_workspace_len, solve_lockstep, WIDTH};
use super::similarity::checked_area;
use super::solver::{solve_checked, workspace_len};
use super::{OtError, OtParams, OtReport, Similarity};

/// Shape of a batch of problems, one per (image, class) pair, each `patches × prompts`.
///
/// The similarity tensor is `images × patches × prompts × classes` (row-major) — what one matrix
/// product of all patch features with all prompt features (`prompts × classes × dim`) gives. The
/// plans come out `images × classes × patches × prompts`: each problem's plan contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLayout {
    /// Images, B.
    pub images: usize,
    /// Patches per image, M.
    pub patches: usize,
    /// Prompts per class, N.
    pub prompts: usize,
    /// Classes, C.
    pub classes: usize,
}

impl BatchLayout {
    /// Number of problems, `B·C`.
    pub fn problems(&self) -> Result<usize, OtError> {
        if self.images == 0 {
            return Err(OtError::EmptyDimension { name: "images" });
        }
        if self.classes == 0 {
            return Err(OtError::EmptyDimension { name: "classes" });
        }
        self.images
            .checked_mul(self.classes)
            .ok_or(OtError::SizeOverflow)
    }

    /// Elements of the similarity tensor and of the plans, `B·M·N·C`.
    pub fn elements(&self) -> Result<usize, OtError> {
        checked_area(self.patches, self.prompts)?
            .checked_mul(self.problems()?)
            .ok_or(OtError::SizeOverflow)
    }

    /// The similarity matrix of problem `index` (image-major: image `index / C`, class
    /// `index % C`) inside the batch's similarity tensor.
    fn problem_at<'a>(&self, sim: &'a [f32], index: usize) -> Result<Similarity<'a>, OtError> {
        let (m, n, classes) = (self.patches, self.prompts, self.classes);
        let (b, c) = (index / classes, index % classes);
        let start = (b * m * n * classes + c).min(sim.len());
        Similarity::strided(&sim[start..], m, n, n * classes, classes)
    }
}

/// What a batch solve did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Problems solved.
    pub problems: usize,
    /// How many met the tolerance.
    pub converged: usize,
    /// Iterations of the slowest problem.
    pub max_iterations: u32,
    /// Iterations summed over problems.
    pub total_iterations: u64,
}

impl BatchReport {
    /// Adds one problem's report.
    pub fn record(&mut self, report: OtReport) {
        self.problems += 1;
        self.converged += usize::from(report.converged);
        self.max_iterations = self.max_iterations.max(report.iterations);
        self.total_iterations += u64::from(report.iterations);
    }

    /// Folds another report into this one (for batches solved in pieces).
    pub fn merge(&mut self, other: BatchReport) {
        self.problems += other.problems;
        self.converged += other.converged;
        self.max_iterations = self.max_iterations.max(other.max_iterations);
        self.total_iterations += other.total_iterations;
    }
}

/// Solves every (image, class) problem of a batch, each on its own: a problem's stopping and
/// plan never depend on the others (the released code stops all problems on the batch's mean
/// change; we do not).
///
/// `workspace` needs [`workspace_len`]`(M, N)` floats, reused by every problem. Given
/// [`batch_workspace_len`]`(M, N)` (nine times as much), it solves eight neighbouring problems at
/// a time in lockstep, one per SIMD lane — faster where the CPU has wide SIMD
/// (docs/PERFORMANCE.md), and bit for bit the same plans and reports. When `reports` is given
/// (one per problem, image-major), each problem's report is written there too. On error nothing
/// is written.
#[inline(always)]
pub fn solve_batch(
    sim: &[f32],
    layout: BatchLayout,
    params: &OtParams,
    workspace: &mut [f32],
    plans: &mut [f32],
    mut reports: Option<&mut [OtReport]>,
) -> Result<BatchReport, OtError> {
    check_batch(sim, layout, params, plans, reports.as_deref())?;
    let needed = workspace_len(layout.patches, layout.prompts);
    if workspace.len() < needed {
        return Err(OtError::BufferLength {
            name: "workspace",
            expected: needed,
            found: workspace.len(),
        });
    }

    let plan_len = layout.patches * layout.prompts;
    let group = group_size(workspace.len(), layout.patches, layout.prompts);
    let mut summary = BatchReport::default();
    let mut group_reports = [OtReport::default(); WIDTH];
    // Consecutive problems, a group at a time: their plans are contiguous; the last group may
    // hold fewer.
    for (index, plans) in plans.chunks_mut(group * plan_len).enumerate() {
        let first = index * group;
        let count = plans.len() / plan_len;
        // Cannot fail: the layout was checked against the similarity tensor's length above.
        let mut problems = [layout.problem_at(sim, first)?; WIDTH];
        for (l, problem) in problems.iter_mut().enumerate().take(count).skip(1) {
            *problem = layout.problem_at(sim, first + l)?;
        }
        let group_reports = &mut group_reports[..count];
        solve_group(&problems[..count], params, workspace, plans, group_reports);
        for (l, &report) in group_reports.iter().enumerate() {
            if let Some(reports) = reports.as_deref_mut() {
                reports[first + l] = report;
            }
            summary.record(report);
        }
    }
    Ok(summary)
}

/// The checks of a batch solve before it touches anything: the parameters, the similarities'
/// and plans' lengths against `layout`, the reports' count, finite similarities and `eps`
/// against their largest magnitude. Returns the number of problems.
pub(crate) fn check_batch(
    sim: &[f32],
    layout: BatchLayout,
    params: &OtParams,
    plans: &[f32],
    reports: Option<&[OtReport]>,
) -> Result<usize, OtError> {
    params.validate()?;
    let len = layout.elements()?;
    let problems = layout.problems()?;
    for (name, found) in [("similarity", sim.len()), ("plans", plans.len())] {
        if found != len {
            return Err(OtError::BufferLength {
                name,
                expected: len,
                found,
            });
        }
    }
    if let Some(found) = reports.map(|r| r.len()) {
        if found != problems {
            return Err(OtError::BufferLength {
                name: "reports",
                expected: problems,
                found,
            });
        }
    }
    if let Some(index) = sim.iter().position(|x| !x.is_finite()) {
        return Err(OtError::NonFinite {
            name: "similarity",
            index,
        });
    }
    // Every problem is checked against the batch's largest similarity: one of them holds it,
    // and that one alone would be refused.
    params.check_resolution(sim.iter().fold(0.0, |largest: f32, s| largest.max(s.abs())))?;
    Ok(problems)
}

/// How many problems [`solve_group`] solves at once with `workspace_floats` of workspace for
/// `m × n` problems: eight in lockstep given [`batch_workspace_len`], else one.
pub(crate) const fn group_size(workspace_floats: usize, m: usize, n: usize) -> usize {
    if workspace_floats >= batch_workspace_len(m, n) {
        WIDTH
    } else {
        1
    }
}

/// Solves `problems` (at most [`group_size`], known good, all of one shape) into `plans` (their
/// plans one after another) and `reports`: in lockstep or one at a time, as the workspace allows.
#[inline(always)]
pub(crate) fn solve_group(
    problems: &[Similarity<'_>],
    params: &OtParams,
    workspace: &mut [f32],
    plans: &mut [f32],
    reports: &mut [OtReport],
) {
    let (m, n) = (problems[0].rows(), problems[0].cols());
    if group_size(workspace.len(), m, n) == WIDTH {
        solve_lockstep(problems, params, workspace, plans, reports);
    } else {
        for ((&sim, plan), report) in problems
            .iter()
            .zip(plans.chunks_exact_mut(m * n))
            .zip(reports)
        {
            *report = solve_checked(sim, params, workspace, plan);
        }
    }
}
