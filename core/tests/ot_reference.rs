//! The solver against float64 reference plans (POT and an exact Newton solve of the dual, see
//! `tests/scripts/ot_fixtures.py`), over eps from 0.005 to 1 and costs across [0, 2].

#[path = "support/ot_cases.rs"]
mod ot_cases;

use fedotp_core::ot::{self, Similarity};

const FIXTURE: &[u8] = include_bytes!("fixtures/ot_cases.bin");

/// Iterations allowed to reach the tolerance. A few problems (balanced, costs across [0, 2],
/// small eps) converge sub-linearly: their plan is accurate long before the relative change of
/// the prompt scaling, dominated by columns' negligible entries, falls below 1e-6 in f32.
const MAX_ITER: u32 = 100_000;

/// Solves a case to convergence in f32.
fn solve_to_convergence(case: &ot_cases::Case<'_>) -> (Vec<f32>, ot::OtReport) {
    let mut sim = vec![0.0; case.m * case.n];
    case.sim_into(&mut sim);
    let mut work = vec![0.0; ot::workspace_len(case.m, case.n)];
    let mut plan = vec![0.0; case.m * case.n];
    let report = ot::solve(
        Similarity::new(&sim, case.m, case.n).unwrap(),
        &case.params(MAX_ITER, 1e-6),
        &mut work,
        &mut plan,
    )
    .unwrap();
    (plan, report)
}

#[test]
fn converged_plans_match_float64_references() {
    let mut worst = 0.0f64;
    for (k, case) in ot_cases::cases(FIXTURE).enumerate() {
        let (plan, report) = solve_to_convergence(&case);
        assert!(
            report.converged || report.iterations == MAX_ITER,
            "case {k}: {report:?}"
        );
        let scale = (0..plan.len())
            .map(|i| case.plan(i).abs())
            .fold(0.0, f64::max);
        let error = (0..plan.len())
            .map(|i| (plan[i] as f64 - case.plan(i)).abs())
            .fold(0.0, f64::max)
            / scale;
        worst = worst.max(error);
        assert!(
            error < 2e-4,
            "case {k} ({}x{}, eps {}, gamma {}, balanced {}): max-norm relative error {error:.2e} after {} iterations",
            case.m,
            case.n,
            case.eps,
            case.gamma,
            case.balanced,
            report.iterations
        );
    }
    eprintln!("worst max-norm relative error: {worst:.2e}");
}

#[test]
fn converged_plans_meet_their_marginals() {
    for (k, case) in ot_cases::cases(FIXTURE).enumerate() {
        let (plan, _) = solve_to_convergence(&case);
        let (m, n) = (case.m, case.n);
        let a = 1.0 / m as f64;
        let b = if case.balanced {
            1.0
        } else {
            case.gamma as f64
        } / n as f64;
        for j in 0..n {
            let column: f64 = (0..m).map(|i| plan[i * n + j] as f64).sum();
            assert!(
                ((column - b) / b).abs() < 1e-5,
                "case {k}: column {j} sums to {column}, not {b}"
            );
        }
        for i in 0..m {
            let row: f64 = plan[i * n..(i + 1) * n].iter().map(|&t| t as f64).sum();
            assert!(
                (row - a) / a < 1e-5,
                "case {k}: row {i} sums to {row} > {a}"
            );
            if case.balanced || case.gamma >= 1.0 {
                assert!(
                    ((row - a) / a).abs() < 1e-5,
                    "case {k}: row {i} sums to {row}, not {a}"
                );
            }
        }
    }
}

/// At the paper's constants (100 iterations, tol 1e-3) the plan is already close to the solution.
#[test]
fn paper_constants_stop_early_and_near_the_solution() {
    for case in ot_cases::cases(FIXTURE).filter(|c| c.m == 196 && c.eps == 0.1) {
        let mut sim = vec![0.0; case.m * case.n];
        case.sim_into(&mut sim);
        let mut work = vec![0.0; ot::workspace_len(case.m, case.n)];
        let mut plan = vec![0.0; case.m * case.n];
        let report = ot::solve(
            Similarity::new(&sim, case.m, case.n).unwrap(),
            &case.params(100, 1e-3),
            &mut work,
            &mut plan,
        )
        .unwrap();
        assert!(report.converged && report.iterations < 100, "{report:?}");
        let scale = (0..plan.len()).map(|i| case.plan(i)).fold(0.0, f64::max);
        let error = (0..plan.len())
            .map(|i| (plan[i] as f64 - case.plan(i)).abs())
            .fold(0.0, f64::max)
            / scale;
        assert!(error < 1e-2, "error {error:.2e} after {report:?}");
    }
}
