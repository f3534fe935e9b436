//! The released code's batch solver (`ot::solve_batch_released`) against float64 NumPy runs of
//! the released loop (`fixtures/ot_released.bin`, written by `tests/scripts/ot_fixtures.py`):
//! the same stopping iteration for the whole batch, the same plans.

use fedotp_core::ot::{
    released_workspace_len, solve_batch, solve_batch_released, workspace_len, BatchLayout, OtError,
    OtMode, OtParams, OtReport,
};

const FIXTURE: &[u8] = include_bytes!("fixtures/ot_released.bin");

/// Plans agree to this fraction of the batch's largest entry (f32 against f64 after up to 100
/// iterations).
const PLAN_TOL: f64 = 1e-4;

/// One batch of the fixture.
struct Batch {
    layout: BatchLayout,
    params: OtParams,
    iterations: u32,
    converged: bool,
    sim: Vec<f32>,
    plans: Vec<f64>,
}

fn batches() -> Vec<Batch> {
    let u32_at = |at: usize| u32::from_le_bytes(FIXTURE[at..at + 4].try_into().unwrap());
    let f32_at = |at: usize| f32::from_le_bytes(FIXTURE[at..at + 4].try_into().unwrap());
    assert_eq!(&FIXTURE[..4], b"OTRL");
    assert_eq!(u32_at(4), 1, "unknown fixture version");
    let mut at = 12;
    (0..u32_at(8))
        .map(|_| {
            let layout = BatchLayout {
                images: u32_at(at) as usize,
                patches: u32_at(at + 4) as usize,
                prompts: u32_at(at + 8) as usize,
                classes: u32_at(at + 12) as usize,
            };
            let params = OtParams {
                eps: f32_at(at + 16),
                gamma: f32_at(at + 20),
                max_iter: u32_at(at + 24),
                tol: f32_at(at + 28),
                mode: if u32_at(at + 32) == 1 {
                    OtMode::Balanced
                } else {
                    OtMode::Unbalanced
                },
            };
            let (iterations, converged) = (u32_at(at + 36), u32_at(at + 40) == 1);
            at += 44;
            let len = layout.elements().unwrap();
            let sim = (0..len).map(|k| f32_at(at + 4 * k)).collect();
            at += 4 * len;
            let plans = (0..len)
                .map(|k| {
                    f64::from_le_bytes(FIXTURE[at + 8 * k..at + 8 * k + 8].try_into().unwrap())
                })
                .collect();
            at += 8 * len;
            Batch {
                layout,
                params,
                iterations,
                converged,
                sim,
                plans,
            }
        })
        .collect()
}

#[test]
fn released_solver_matches_the_released_loop_in_float64() {
    let batches = batches();
    assert_eq!(batches.len(), 6);
    // Both outcomes occur: batches that meet the tolerance and batches cut at max_iter.
    assert!(batches.iter().any(|b| b.converged) && batches.iter().any(|b| !b.converged));
    for (i, batch) in batches.iter().enumerate() {
        let len = batch.sim.len();
        let problems = batch.layout.problems().unwrap();
        let mut workspace = vec![f32::NAN; released_workspace_len(&batch.layout)];
        let mut plans = vec![f32::NAN; len];
        let mut reports = vec![OtReport::default(); problems];
        let summary = solve_batch_released(
            &batch.sim,
            batch.layout,
            &batch.params,
            &mut workspace,
            &mut plans,
            Some(&mut reports),
        )
        .unwrap();
        let want = OtReport {
            iterations: batch.iterations,
            converged: batch.converged,
        };
        assert!(
            reports.iter().all(|&r| r == want),
            "batch {i}: {reports:?}, want {want:?}"
        );
        assert_eq!(summary.problems, problems);
        assert_eq!(
            summary.converged,
            if batch.converged { problems } else { 0 }
        );
        assert_eq!(summary.max_iterations, batch.iterations);

        let largest = batch.plans.iter().fold(0.0f64, |m, p| m.max(p.abs()));
        let worst = plans
            .iter()
            .zip(&batch.plans)
            .map(|(&got, want)| (f64::from(got) - want).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= PLAN_TOL * largest,
            "batch {i}: plans differ by {worst:e} (largest entry {largest:e})"
        );
    }
}

/// The released rule stops the batch as a whole, so a problem's plan depends on its batch: some
/// problem of the batch, solved as a batch of its own, stops at another iteration with another
/// plan — where the per-problem solver gives it the same plan either way.
#[test]
fn a_plan_depends_on_its_batch_only_under_the_released_rule() {
    let batch = &batches()[0];
    let (m, n, classes) = (
        batch.layout.patches,
        batch.layout.prompts,
        batch.layout.classes,
    );
    let alone_layout = BatchLayout {
        images: 1,
        classes: 1,
        ..batch.layout
    };
    // Problem `p`'s plan and the iterations run, with the released rule or the per-problem one.
    let solve = |released: bool, sim: &[f32], layout: BatchLayout, p: usize| {
        let len = layout.elements().unwrap();
        let mut plans = vec![0.0; len];
        let report = if released {
            let mut workspace = vec![0.0; released_workspace_len(&layout)];
            solve_batch_released(sim, layout, &batch.params, &mut workspace, &mut plans, None)
        } else {
            let mut workspace = vec![0.0; workspace_len(m, n)];
            solve_batch(sim, layout, &batch.params, &mut workspace, &mut plans, None)
        }
        .unwrap();
        (plans[p * m * n..][..m * n].to_vec(), report.max_iterations)
    };
    let (_, batch_iterations) = solve(true, &batch.sim, batch.layout, 0);
    let mut differs = 0;
    for p in 0..batch.layout.problems().unwrap() {
        let (image, class) = (p / classes, p % classes);
        let alone_sim: Vec<f32> = (0..m * n)
            .map(|e| batch.sim[(image * m * n + e) * classes + class])
            .collect();
        let (alone, alone_iterations) = solve(true, &alone_sim, alone_layout, 0);
        let (in_batch, _) = solve(true, &batch.sim, batch.layout, p);
        if alone_iterations != batch_iterations {
            assert_ne!(alone, in_batch, "problem {p}");
            differs += 1;
        }
        assert_eq!(
            solve(false, &batch.sim, batch.layout, p).0,
            solve(false, &alone_sim, alone_layout, 0).0,
            "problem {p}"
        );
    }
    assert!(
        differs > 0,
        "every problem alone stops where its batch does"
    );
}

#[test]
fn bad_buffers_are_refused_before_anything_is_written() {
    let batch = &batches()[0];
    let len = batch.sim.len();
    let needed = released_workspace_len(&batch.layout);
    let mut plans = vec![7.0; len];
    let err = solve_batch_released(
        &batch.sim,
        batch.layout,
        &batch.params,
        &mut vec![0.0; needed - 1],
        &mut plans,
        None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        OtError::BufferLength {
            name: "workspace",
            expected: needed,
            found: needed - 1,
        }
    );
    let mut sim = batch.sim.clone();
    sim[5] = f32::NAN;
    let err = solve_batch_released(
        &sim,
        batch.layout,
        &batch.params,
        &mut vec![0.0; needed],
        &mut plans,
        None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        OtError::NonFinite {
            name: "similarity",
            index: 5
        }
    );
    assert!(plans.iter().all(|&p| p == 7.0));
}
