//! Every case of `core/tests/fixtures/ot_cases.bin`, solved in `f32` on the target to convergence
//! and compared with its float64 reference plan: the checks of `core/tests/ot_reference.rs`.

use crate::{ot_cases, OtBuffers, Tally};
use cortex_m_semihosting::hprintln;
use fedotp_core::ot::{self, OtReport, Similarity};

/// The reference problems and their float64 plans (written by `tests/scripts/ot_fixtures.py`).
pub const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/ot_cases.bin");

/// Solved "to convergence" as on the host: a few balanced problems at small eps converge
/// sub-linearly and reach the iteration cap with an accurate plan.
const TOL: f32 = 1e-6;
const MAX_ITER: u32 = 100_000;

/// Largest max-norm error of the plan, relative to the reference's largest entry.
const PLAN_TOLERANCE: f64 = 2e-4;
/// Largest relative error of a column sum (= b) and of a row sum's excess over a.
const MARGINAL_TOLERANCE: f64 = 1e-5;

/// How an `f32` plan compares with its reference, every figure relative.
struct Agreement {
    report: OtReport,
    /// `max |T − T_ref| / max |T_ref|`.
    plan_error: f64,
    /// `max_j |Σ_i T_ij − b| / b`.
    column_error: f64,
    /// `max_i (Σ_j T_ij − a) / a`, or its absolute value where rows must be saturated.
    row_error: f64,
}

impl Agreement {
    fn holds(&self) -> bool {
        (self.report.converged || self.report.iterations == MAX_ITER)
            && self.plan_error < PLAN_TOLERANCE
            && self.column_error < MARGINAL_TOLERANCE
            && self.row_error < MARGINAL_TOLERANCE
    }
}

/// Solves and checks every case, one report line each.
pub fn run(buffers: &mut OtBuffers, tally: &mut Tally) {
    hprintln!(
        "\nOT reference cases: f32 to tol {TOL:e} (at most {MAX_ITER} iterations) against float64; \
         plan error < {PLAN_TOLERANCE:e}, marginals within {MARGINAL_TOLERANCE:e} (relative)"
    );
    for (k, case) in ot_cases::cases(FIXTURE).enumerate() {
        let label = Label(&case);
        match compare(&case, buffers) {
            Ok(agreement) => {
                let verdict = tally.record(agreement.holds());
                hprintln!(
                    "case {k:2} {label}: {:6} iterations{} plan {:.1e} columns {:.1e} rows {:.1e}  {verdict}",
                    agreement.report.iterations,
                    if agreement.report.converged { " " } else { "*" },
                    agreement.plan_error,
                    agreement.column_error,
                    agreement.row_error.max(0.0),
                );
            }
            Err(problem) => {
                tally.record(false);
                hprintln!("case {k:2} {label}: {problem}  FAIL");
            }
        }
    }
    hprintln!("(* = stopped at the iteration cap, as the host test allows)");
}

/// Solves `case` in the firmware's buffers and measures its agreement with the reference.
fn compare(case: &ot_cases::Case<'_>, buffers: &mut OtBuffers) -> Result<Agreement, Problem> {
    let (m, n) = (case.m, case.n);
    let work_len = ot::workspace_len(m, n);
    if m * n > buffers.plan.len() || work_len > buffers.work.len() {
        return Err(Problem::TooLarge);
    }
    let (sim, plan) = (&mut buffers.sim[..m * n], &mut buffers.plan[..m * n]);
    case.sim_into(sim);
    let report = ot::solve(
        Similarity::new(sim, m, n).map_err(Problem::Refused)?,
        &case.params(MAX_ITER, TOL),
        &mut buffers.work[..work_len],
        plan,
    )
    .map_err(Problem::Refused)?;

    let scale = (0..m * n).map(|k| case.plan(k).abs()).fold(0.0, f64::max);
    let plan_error = (0..m * n)
        .map(|k| (f64::from(plan[k]) - case.plan(k)).abs())
        .fold(0.0, f64::max)
        / scale;
    let a = 1.0 / m as f64;
    let b = if case.balanced {
        1.0
    } else {
        f64::from(case.gamma)
    } / n as f64;
    let column_error = (0..n)
        .map(|j| {
            let column: f64 = (0..m).map(|i| f64::from(plan[i * n + j])).sum();
            ((column - b) / b).abs()
        })
        .fold(0.0, f64::max);
    let rows_saturated = case.balanced || case.gamma >= 1.0;
    let row_error = plan
        .chunks_exact(n)
        .map(|row| {
            let excess = (row.iter().map(|&t| f64::from(t)).sum::<f64>() - a) / a;
            if rows_saturated {
                excess.abs()
            } else {
                excess
            }
        })
        .fold(f64::NEG_INFINITY, f64::max);
    Ok(Agreement {
        report,
        plan_error,
        column_error,
        row_error,
    })
}

/// Why a case could not be compared.
enum Problem {
    /// The case is larger than the firmware's static buffers.
    TooLarge,
    /// The solver refused it.
    Refused(ot::OtError),
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Problem::TooLarge => f.write_str("larger than the firmware's buffers"),
            Problem::Refused(error) => write!(f, "the solver refused it: {error}"),
        }
    }
}

/// `196x2  eps 0.1   gamma 0.8 unbalanced`, for report lines.
pub struct Label<'c, 'a>(pub &'c ot_cases::Case<'a>);

impl core::fmt::Display for Label<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let case = self.0;
        write!(
            f,
            "{:>3}x{:<2} eps {:<5} gamma {:<3} {:<10}",
            case.m,
            case.n,
            case.eps,
            case.gamma,
            if case.balanced {
                "balanced"
            } else {
                "unbalanced"
            }
        )
    }
}
