//! The core's OT solver compiled for the widest SIMD the running CPU has.
//!
//! `fedotp-core` is built for the baseline of its target (SSE2 on x86-64: four `f32` lanes) and
//! cannot ask the CPU what else it has: it is `no_std` and free of `unsafe`. Its solver's loops
//! are written as eight independent lanes and marked `#[inline(always)]` down to the iteration, so
//! a function here compiled with AVX2 enabled gets the whole solver inlined into it, as eight-lane
//! code, and picks it at run time when the CPU has AVX2. Nothing else changes: the arithmetic is
//! the same operations in the same order (no fused multiply-adds: Rust never contracts `a * b + c`),
//! so the plans are bit-identical to the core's (tested below), only faster.
//!
//! `fedotp train`'s CPU backend and libfedotp's `fedotp_ot_plan` and `fedotp_ot_logits` solve
//! through here.

use fedotp_core::head::{self, HeadShape};
use fedotp_core::ot::{self, BatchLayout, BatchReport, OtError, OtParams, OtReport, Similarity};

/// [`fedotp_core::ot::solve`], on the widest SIMD this CPU has.
pub fn solve(
    sim: Similarity<'_>,
    params: &OtParams,
    workspace: &mut [f32],
    plan: &mut [f32],
) -> Result<OtReport, OtError> {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: a `target_feature` function asks only that the CPU has the feature, which
        // `available()` just checked.
        return unsafe { avx2::solve(sim, params, workspace, plan) };
    }
    ot::solve(sim, params, workspace, plan)
}

/// [`fedotp_core::ot::solve_batch`], on the widest SIMD this CPU has.
pub fn solve_batch(
    sim: &[f32],
    layout: BatchLayout,
    params: &OtParams,
    workspace: &mut [f32],
    plans: &mut [f32],
    reports: Option<&mut [OtReport]>,
) -> Result<BatchReport, OtError> {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: as in `solve`: the CPU has AVX2.
        return unsafe { avx2::solve_batch(sim, layout, params, workspace, plans, reports) };
    }
    ot::solve_batch(sim, layout, params, workspace, plans, reports)
}

/// [`fedotp_core::head::forward`] (the OT head's logits), on the widest SIMD this CPU has.
#[allow(clippy::too_many_arguments)]
pub fn head_forward(
    patches: &[f32],
    prompts: &[f32],
    shape: &HeadShape,
    params: &OtParams,
    scale: f32,
    workspace: &mut [f32],
    logits: &mut [f32],
    plans: Option<&mut [f32]>,
) -> Result<BatchReport, OtError> {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: as in `solve`: the CPU has AVX2.
        return unsafe {
            avx2::head_forward(
                patches, prompts, shape, params, scale, workspace, logits, plans,
            )
        };
    }
    head::forward(
        patches, prompts, shape, params, scale, workspace, logits, plans,
    )
}

/// Which instruction set [`solve`] and [`solve_batch`] use on this CPU, for reports.
pub fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        return "AVX2 (8 lanes)";
    }
    "the target's baseline"
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    /// Whether this CPU has AVX2 (the standard library caches the answer). The functions below
    /// are the core's, inlined into a function compiled with AVX2. One wrapper per entry point,
    /// each naming the core's function: a single generic wrapper taking a closure compiles to a
    /// call of the closure, outside the AVX2 function, and the solver stays baseline code.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn solve(
        sim: Similarity<'_>,
        params: &OtParams,
        workspace: &mut [f32],
        plan: &mut [f32],
    ) -> Result<OtReport, OtError> {
        ot::solve(sim, params, workspace, plan)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn solve_batch(
        sim: &[f32],
        layout: BatchLayout,
        params: &OtParams,
        workspace: &mut [f32],
        plans: &mut [f32],
        reports: Option<&mut [OtReport]>,
    ) -> Result<BatchReport, OtError> {
        ot::solve_batch(sim, layout, params, workspace, plans, reports)
    }

    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn head_forward(
        patches: &[f32],
        prompts: &[f32],
        shape: &HeadShape,
        params: &OtParams,
        scale: f32,
        workspace: &mut [f32],
        logits: &mut [f32],
        plans: Option<&mut [f32]>,
    ) -> Result<BatchReport, OtError> {
        head::forward(
            patches, prompts, shape, params, scale, workspace, logits, plans,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedotp_core::ot::OtMode;
    use fedotp_tests::inputs::clip_like_similarities;

    /// Every mode and a range of eps, converged and cut off, through the dispatched solver and
    /// the core's own: the same bits.
    #[test]
    fn plans_are_bit_identical_to_the_core_solvers() {
        let (m, n) = (196, 3);
        let sim = clip_like_similarities(m * n, 5);
        let mut work = vec![0.0; ot::workspace_len(m, n)];
        for mode in [OtMode::Unbalanced, OtMode::Balanced] {
            for (eps, max_iter) in [(0.005, 1000), (0.01, 7), (0.1, 100), (1.0, 3)] {
                let params = OtParams {
                    mode,
                    eps,
                    max_iter,
                    ..OtParams::FEDOTP
                };
                let (mut ours, mut core) = (vec![0.0; m * n], vec![0.0; m * n]);
                let s = Similarity::new(&sim, m, n).unwrap();
                let report = solve(s, &params, &mut work, &mut ours).unwrap();
                let core_report = ot::solve(s, &params, &mut work, &mut core).unwrap();
                assert_eq!(report, core_report, "{mode:?} eps {eps}");
                let bits = |plan: &[f32]| plan.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&ours), bits(&core), "{mode:?} eps {eps}");
            }
        }
        println!("solved with {}", instruction_set());
    }

    /// The batch in lockstep (eight problems per SIMD lane group, AVX2 here) against the core's
    /// one problem at a time on the target's baseline: the same bits and reports, at the paper's
    /// constants and at an eps small enough to absorb. 15 problems: a group of eight and one of
    /// seven.
    #[test]
    fn batches_are_bit_identical_to_the_core_solvers_and_errors_the_same() {
        let layout = BatchLayout {
            images: 3,
            patches: 49,
            prompts: 2,
            classes: 5,
        };
        let len = layout.elements().unwrap();
        let mut sim = clip_like_similarities(len, 6);
        let mut work = vec![0.0; ot::batch_workspace_len(49, 2)];
        let one_at_a_time = ot::workspace_len(49, 2);
        let (mut ours, mut core) = (vec![0.0; len], vec![0.0; len]);
        let (mut our_reports, mut core_reports) = (vec![OtReport::default(); 15], vec![]);
        core_reports.resize(15, OtReport::default());
        let p = OtParams::FEDOTP;
        for params in [
            p,
            OtParams {
                eps: 0.005,
                max_iter: 1000,
                ..p
            },
        ] {
            let summary = solve_batch(
                &sim,
                layout,
                &params,
                &mut work,
                &mut ours,
                Some(&mut our_reports),
            );
            let core_summary = ot::solve_batch(
                &sim,
                layout,
                &params,
                &mut work[..one_at_a_time],
                &mut core,
                Some(&mut core_reports),
            );
            assert_eq!(summary.unwrap(), core_summary.unwrap());
            assert_eq!(our_reports, core_reports);
            assert!(ours
                .iter()
                .zip(&core)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }

        sim[17] = f32::NAN;
        let refused = solve_batch(&sim, layout, &p, &mut work, &mut ours, None);
        assert_eq!(
            refused,
            Err(OtError::NonFinite {
                name: "similarity",
                index: 17
            })
        );
    }
}
