//! The OT head and the batch solver against float64 references and against single solves.

use fedotp_core::head::{self, HeadShape};
use fedotp_core::ot::{self, BatchLayout, OtError, OtMode, OtParams, OtReport, Similarity};

const FIXTURE: &[u8] = include_bytes!("fixtures/ot_head.bin");

struct HeadCase {
    shape: HeadShape,
    params: OtParams,
    scale: f32,
    patches: Vec<f32>,
    prompts: Vec<f32>,
    logits: Vec<f64>,
    plans: Vec<f64>,
}

/// Reads `fixtures/ot_head.bin` (format in `tests/scripts/ot_fixtures.py`).
fn head_cases() -> Vec<HeadCase> {
    let mut at = 0usize;
    let mut take = |len: usize| {
        let bytes = &FIXTURE[at..at + len];
        at += len;
        bytes
    };
    assert_eq!(take(4), b"OTHD");
    let word = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
    assert_eq!(word(take(4)), 1);
    let count = word(take(4));
    (0..count)
        .map(|_| {
            let dims: Vec<usize> = (0..5).map(|_| word(take(4)) as usize).collect();
            let shape = HeadShape {
                images: dims[0],
                patches: dims[1],
                dim: dims[2],
                prompts: dims[3],
                classes: dims[4],
            };
            let eps = f32::from_bits(word(take(4)));
            let gamma = f32::from_bits(word(take(4)));
            let balanced = word(take(4)) != 0;
            let scale = f32::from_bits(word(take(4)));
            let f32s = |b: &[u8]| -> Vec<f32> {
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            let f64s = |b: &[u8]| -> Vec<f64> {
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            let (b, m, d, n, c) = (dims[0], dims[1], dims[2], dims[3], dims[4]);
            HeadCase {
                shape,
                params: OtParams {
                    eps,
                    gamma,
                    max_iter: 100_000,
                    tol: 1e-6,
                    mode: if balanced {
                        OtMode::Balanced
                    } else {
                        OtMode::Unbalanced
                    },
                },
                scale,
                patches: f32s(take(4 * b * m * d)),
                prompts: f32s(take(4 * n * c * d)),
                logits: f64s(take(8 * b * c)),
                plans: f64s(take(8 * b * c * m * n)),
            }
        })
        .collect()
}

fn run_head(case: &HeadCase) -> (Vec<f32>, Vec<f32>, ot::BatchReport) {
    run_head_with(case, head::workspace_len(&case.shape).unwrap())
}

/// The head on `case` with `workspace_len` floats of workspace.
fn run_head_with(case: &HeadCase, workspace_len: usize) -> (Vec<f32>, Vec<f32>, ot::BatchReport) {
    let shape = &case.shape;
    let mut work = vec![0.0; workspace_len];
    let mut logits = vec![0.0; shape.images * shape.classes];
    let mut plans = vec![0.0; case.plans.len()];
    let report = head::forward(
        &case.patches,
        &case.prompts,
        shape,
        &case.params,
        case.scale,
        &mut work,
        &mut logits,
        Some(&mut plans),
    )
    .unwrap();
    (logits, plans, report)
}

#[test]
fn logits_and_plans_match_float64_references() {
    for (k, case) in head_cases().iter().enumerate() {
        let (logits, plans, report) = run_head(case);
        assert_eq!(report.problems, case.shape.images * case.shape.classes);
        for (got, want) in logits.iter().zip(&case.logits) {
            // Logits are ~scale·similarity: compare against the scale.
            let err = (*got as f64 - want).abs() / case.scale as f64;
            assert!(err < 1e-5, "case {k}: logit {got} vs {want}");
        }
        let largest = case.plans.iter().fold(0.0f64, |a, b| a.max(*b));
        for (got, want) in plans.iter().zip(&case.plans) {
            assert!(
                ((*got as f64 - want) / largest).abs() < 2e-4,
                "case {k}: plan {got} vs {want}"
            );
        }
    }
}

/// Features need not be normalised: scaling any feature vector changes nothing.
/// With the larger workspace the head solves eight problems at a time in lockstep: the same
/// bits as one at a time, with and without the plans kept, on every reference case.
#[test]
fn lockstep_gives_the_same_logits_and_plans() {
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (k, case) in head_cases().iter().enumerate() {
        let lockstep_len = head::batch_workspace_len(&case.shape).unwrap();
        assert!(lockstep_len > head::workspace_len(&case.shape).unwrap());
        let (logits, plans, report) = run_head(case);
        let (lockstep_logits, lockstep_plans, lockstep_report) = run_head_with(case, lockstep_len);
        assert_eq!(bits(&lockstep_logits), bits(&logits), "case {k}");
        assert_eq!(bits(&lockstep_plans), bits(&plans), "case {k}");
        assert_eq!(lockstep_report, report, "case {k}");

        let mut work = vec![0.0; lockstep_len];
        let mut without_plans = vec![0.0; logits.len()];
        head::forward(
            &case.patches,
            &case.prompts,
            &case.shape,
            &case.params,
            case.scale,
            &mut work,
            &mut without_plans,
            None,
        )
        .unwrap();
        assert_eq!(bits(&without_plans), bits(&logits), "case {k}");
    }
}

#[test]
fn feature_scale_does_not_matter() {
    let case = &head_cases()[0];
    let (logits, _, _) = run_head(case);
    let scaled = HeadCase {
        patches: case
            .patches
            .iter()
            .enumerate()
            .map(|(i, x)| x * (1.0 + (i / case.shape.dim) as f32))
            .collect(),
        prompts: case.prompts.iter().map(|x| x * 1e-3).collect(),
        logits: case.logits.clone(),
        plans: case.plans.clone(),
        ..*case
    };
    let (scaled_logits, _, _) = run_head(&scaled);
    for (a, b) in logits.iter().zip(&scaled_logits) {
        assert!((a - b).abs() < 1e-4 * case.scale, "{a} vs {b}");
    }
}

/// Nor at the edges of `f32`: vectors whose squared norm underflows (1e-30, and subnormal
/// 1e-40) or overflows (1e30) give the same logits as the unscaled ones, never NaN.
#[test]
fn extreme_feature_scales_give_the_same_finite_logits() {
    let case = &head_cases()[0];
    let (logits, _, _) = run_head(case);
    for (patch_scale, prompt_scale) in [(1e-30, 1e30), (1e30, 1e-30), (1e30, 1e30), (1e-40, 1.0)] {
        let scaled = HeadCase {
            patches: case.patches.iter().map(|x| x * patch_scale).collect(),
            prompts: case.prompts.iter().map(|x| x * prompt_scale).collect(),
            logits: case.logits.clone(),
            plans: case.plans.clone(),
            ..*case
        };
        let (scaled_logits, _, _) = run_head(&scaled);
        for (a, b) in logits.iter().zip(&scaled_logits) {
            assert!(
                (a - b).abs() < 1e-3 * case.scale,
                "scales {patch_scale:e}, {prompt_scale:e}: {a} vs {b}"
            );
        }
    }
}

/// The batch entry point solves each (image, class) problem exactly as a single solve would,
/// reading it in place from the `images × patches × prompts × classes` similarity tensor.
#[test]
fn batch_problems_are_independent_single_solves() {
    let layout = BatchLayout {
        images: 3,
        patches: 11,
        prompts: 2,
        classes: 4,
    };
    let len = layout.elements().unwrap();
    // A deterministic spread of similarities, different for every problem.
    let sim: Vec<f32> = (0..len)
        .map(|k| ((k * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let params = OtParams {
        eps: 0.05,
        ..OtParams::FEDOTP
    };
    let mut work = vec![0.0; ot::workspace_len(11, 2)];
    let mut plans = vec![0.0; len];
    let mut reports = vec![OtReport::default(); 12];
    let summary = ot::solve_batch(
        &sim,
        layout,
        &params,
        &mut work,
        &mut plans,
        Some(&mut reports),
    )
    .unwrap();
    assert_eq!(summary.problems, 12);
    assert_eq!(
        summary.converged,
        reports.iter().filter(|r| r.converged).count()
    );
    assert_eq!(
        summary.max_iterations,
        reports.iter().map(|r| r.iterations).max().unwrap()
    );

    for b in 0..3 {
        for c in 0..4 {
            let mut single_sim = vec![0.0; 22];
            for m in 0..11 {
                for n in 0..2 {
                    single_sim[m * 2 + n] = sim[((b * 11 + m) * 2 + n) * 4 + c];
                }
            }
            let mut plan = vec![0.0; 22];
            let report = ot::solve(
                Similarity::new(&single_sim, 11, 2).unwrap(),
                &params,
                &mut work,
                &mut plan,
            )
            .unwrap();
            let problem = b * 4 + c;
            assert_eq!(report, reports[problem]);
            assert_eq!(
                plan,
                plans[problem * 22..(problem + 1) * 22],
                "problem ({b}, {c})"
            );
        }
    }
}

#[test]
fn head_refuses_bad_input_and_writes_nothing() {
    let shape = HeadShape {
        images: 1,
        patches: 2,
        dim: 2,
        prompts: 2,
        classes: 1,
    };
    let patches = [1.0, 0.0, 0.0, 1.0];
    let prompts = [1.0, 0.0, 0.5, 0.5];
    let mut work = vec![0.0; head::workspace_len(&shape).unwrap()];
    let p = OtParams::FEDOTP;
    let run = |patches: &[f32], prompts: &[f32], scale: f32, work: &mut [f32]| {
        let mut logits = [7.0f32];
        let mut plans = [7.0f32; 4];
        let result = head::forward(
            patches,
            prompts,
            &shape,
            &p,
            scale,
            work,
            &mut logits,
            Some(&mut plans),
        );
        if result.is_err() {
            assert_eq!(
                (logits, plans),
                ([7.0], [7.0; 4]),
                "output written on error"
            );
        }
        result
    };
    assert!(run(&patches, &prompts, 100.0, &mut work).is_ok());
    assert_eq!(
        run(&[1.0, 0.0, 0.0, 0.0], &prompts, 100.0, &mut work).unwrap_err(),
        OtError::ZeroNorm {
            name: "patches",
            index: 1
        }
    );
    assert_eq!(
        run(&patches, &[1.0, f32::NAN, 0.5, 0.5], 100.0, &mut work).unwrap_err(),
        OtError::NonFinite {
            name: "prompts",
            index: 1
        }
    );
    assert_eq!(
        run(&patches[..3], &prompts, 100.0, &mut work).unwrap_err(),
        OtError::BufferLength {
            name: "patches",
            expected: 4,
            found: 3
        }
    );
    assert_eq!(
        run(&patches, &prompts, f32::INFINITY, &mut work).unwrap_err(),
        OtError::InvalidScale(f32::INFINITY)
    );
    let short = work.len() - 1;
    assert!(matches!(
        run(&patches, &prompts, 100.0, &mut work[..short]).unwrap_err(),
        OtError::BufferLength {
            name: "workspace",
            ..
        }
    ));
    let huge = HeadShape {
        images: usize::MAX,
        ..shape
    };
    assert_eq!(
        head::workspace_len(&huge).unwrap_err(),
        OtError::SizeOverflow
    );
    let empty = HeadShape { dim: 0, ..shape };
    assert_eq!(
        head::workspace_len(&empty).unwrap_err(),
        OtError::EmptyDimension { name: "dim" }
    );
}
