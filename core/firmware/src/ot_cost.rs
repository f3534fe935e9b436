//! What FedOTP's own problem, 196 patches (ViT-B/16) × 2 prompts, unbalanced, costs on the
//! Cortex-M4F: the RAM the solve needs (workspace, inputs, outputs, stack) and the instructions
//! one iteration executes; and the run that `cycles.sh` traces instruction by instruction for its
//! cycle model ([`trace`]).

use crate::instructions::{CountError, InstructionCounter};
use crate::ot_reference::FIXTURE;
use crate::stack::{self, StackUse};
use crate::{ot_cases, OtBuffers, Tally};
use cortex_m_semihosting::hprintln;
use fedotp_core::ot::{self, OtError, OtParams, OtReport, Similarity};

const M: usize = 196;
const N: usize = 2;
const F32: usize = core::mem::size_of::<f32>();

/// The aim for the RAM of this solve.
const RAM_BUDGET: usize = 16 * 1024;

/// Iteration counts of the runs whose differences give the cost of one iteration. With tol 0 the
/// solver runs exactly `max_iter` iterations; an absorption inside either window (a rebuild of
/// the kernel, hundreds of exponentials) would make the two windows' counts differ.
const WINDOW_ENDS: [u32; 3] = [100, 150, 200];

/// Iteration counts of the two solves [`trace`] runs: the first and last window ends, so that the
/// trace's count per iteration is the one this program reports.
const TRACED_ITERATIONS: [u32; 2] = [WINDOW_ENDS[0], WINDOW_ENDS[2]];

/// Measures and reports; records the checks that the measurements are sound and within budget.
pub fn run(
    buffers: &mut OtBuffers,
    counter: Result<InstructionCounter, CountError>,
    tally: &mut Tally,
) {
    // The paper's constants (eps 0.1, gamma 0.8, tol 1e-3, at most 100 iterations), and the same
    // problem at eps 0.01, where the scalings leave their range and are absorbed on the way.
    let paper_params = OtParams::FEDOTP;
    let (Some(paper), Some(sharp)) = (find(paper_params.eps), find(0.01)) else {
        let verdict = tally.record(false);
        hprintln!("\nthe fixture lacks the 196x2 unbalanced cases at eps 0.1 and 0.01  {verdict}");
        return;
    };
    let mut paper_sim = [0.0f32; M * N];
    let mut sharp_sim = [0.0f32; M * N];
    paper.sim_into(&mut paper_sim);
    sharp.sim_into(&mut sharp_sim);
    let work = &mut buffers.work[..ot::workspace_len(M, N)];
    let plan = &mut buffers.plan[..M * N];

    hprintln!("\nRAM of the 196x2 unbalanced solve");
    let sharp_params = sharp.params(100_000, 1e-6);
    let (paper_report, paper_stack) =
        stack::high_water(|| solve(&paper_sim, &paper_params, work, plan));
    let (sharp_report, sharp_stack) =
        stack::high_water(|| solve(&sharp_sim, &sharp_params, work, plan));
    let stack_bytes = match (paper_report, sharp_report, paper_stack, sharp_stack) {
        (Ok(p), Ok(s), StackUse::Bytes(a), StackUse::Bytes(b)) => {
            hprintln!(
                "  stack high-water mark of ot::solve: {a} B at the paper's constants (eps 0.1, \
                 tol 1e-3: {} iterations), {b} B at eps 0.01 to tol 1e-6 ({} iterations, with \
                 absorptions)",
                p.iterations,
                s.iterations
            );
            a.max(b)
        }
        other => {
            let verdict = tally.record(false);
            hprintln!("  stack measurement failed: {other:?}  {verdict}");
            return;
        }
    };
    let workspace = work.len() * F32;
    let inputs = paper_sim.len() * F32;
    let outputs = plan.len() * F32;
    let total = workspace + inputs + outputs + stack_bytes;
    hprintln!(
        "  workspace {workspace:5} B  (ot::workspace_len(196, 2) = {} f32: kernel, patch \
         scaling/bound/potential, prompt scaling/potential)",
        work.len()
    );
    hprintln!("  inputs    {inputs:5} B  (similarity matrix, 392 f32)");
    hprintln!("  outputs   {outputs:5} B  (transport plan, 392 f32)");
    hprintln!("  stack     {stack_bytes:5} B  (the larger high-water mark above)");
    let verdict = tally.record(total <= RAM_BUDGET);
    hprintln!("  total     {total:5} B  of a {RAM_BUDGET} B budget  {verdict}");

    hprintln!("\nInstructions of the 196x2 unbalanced solve (qemu -icount shift=0, SysTick)");
    let mut counter = match counter {
        Ok(counter) => counter,
        Err(error) => {
            let verdict = tally.record(false);
            hprintln!("  cannot count instructions: {error}  {verdict}");
            return;
        }
    };
    hprintln!(
        "  calibration: {:.3} instructions per SysTick tick (a loop of known length)",
        counter.instructions_per_tick()
    );
    let mut counts = [0u64; WINDOW_ENDS.len()];
    for (count, &iterations) in counts.iter_mut().zip(&WINDOW_ENDS) {
        match fixed_iterations(&mut counter, &paper_sim, iterations, work, plan) {
            (Ok(report), Ok(instructions)) if report.iterations == iterations => {
                *count = instructions;
                hprintln!("  eps 0.1, tol 0, {iterations} iterations: {instructions} instructions");
            }
            other => {
                let verdict = tally.record(false);
                hprintln!("  eps 0.1, tol 0, {iterations} iterations: {other:?}  {verdict}");
                return;
            }
        }
    }
    // Each count is exact to one tick; an absorption in either window would add thousands.
    let first = counts[1] - counts[0];
    let second = counts[2] - counts[1];
    let tick = counter.ticks_to_instructions(1);
    let verdict = tally.record(first.abs_diff(second) <= 4 * tick);
    let span = u64::from(WINDOW_ENDS[2] - WINDOW_ENDS[0]);
    let per_iteration = (counts[2] - counts[0]) as f32 / span as f32;
    hprintln!(
        "  iterations {}-{}: {first}, {}-{}: {second} instructions (equal within 4 ticks)  {verdict}",
        WINDOW_ENDS[0] + 1,
        WINDOW_ENDS[1],
        WINDOW_ENDS[1] + 1,
        WINDOW_ENDS[2],
    );
    hprintln!(
        "  per iteration: {per_iteration:.1} instructions (+-{:.1}); setup and plan output: {} instructions",
        (2 * tick) as f32 / span as f32,
        counts[0].saturating_sub((per_iteration * WINDOW_ENDS[0] as f32) as u64),
    );
    for (what, whole) in [
        ("paper's constants (eps 0.1, tol 1e-3)", paper_params),
        ("eps 0.1 to tol 1e-6", paper.params(100_000, 1e-6)),
    ] {
        match counter.instructions(|| solve(&paper_sim, &whole, work, plan)) {
            (Ok(report), Ok(instructions)) => hprintln!(
                "  whole solve, {what}: {} iterations, {instructions} instructions",
                report.iterations
            ),
            other => {
                let verdict = tally.record(false);
                hprintln!("  whole solve, {what}: {other:?}  {verdict}");
            }
        }
    }
}

/// The run `cycles.sh` traces (the semihosting command line `trace`): only the 196×2 solve at
/// the paper's constants and tol 0 for 100 and then 200 iterations, counted by SysTick as in
/// [`run`], which the trace's own count must match. A trace of the whole program would take
/// gigabytes (one reference case runs 100,000 iterations). Returns whether both solves ran.
pub fn trace(buffers: &mut OtBuffers, counter: Result<InstructionCounter, CountError>) -> bool {
    let mut counter = match (find(OtParams::FEDOTP.eps), counter) {
        (Some(paper), Ok(counter)) => {
            paper.sim_into(&mut buffers.sim[..M * N]);
            counter
        }
        (None, _) => {
            hprintln!("the fixture lacks the 196x2 unbalanced case at eps 0.1");
            return false;
        }
        (_, Err(error)) => {
            hprintln!("cannot count instructions: {error}");
            return false;
        }
    };
    hprintln!(
        "calibration: {:.3} instructions per SysTick tick",
        counter.instructions_per_tick()
    );
    let (sim, work, plan) = (
        &buffers.sim[..M * N],
        &mut buffers.work[..ot::workspace_len(M, N)],
        &mut buffers.plan[..M * N],
    );
    for iterations in TRACED_ITERATIONS {
        match fixed_iterations(&mut counter, sim, iterations, work, plan) {
            (Ok(report), Ok(instructions)) if report.iterations == iterations => {
                hprintln!("traced solve: {iterations} iterations, {instructions} instructions");
            }
            other => {
                hprintln!("traced solve: {iterations} iterations: {other:?}");
                return false;
            }
        }
    }
    true
}

/// The fixture's 196×2 unbalanced case at `eps` and the paper's gamma.
fn find(eps: f32) -> Option<ot_cases::Case<'static>> {
    ot_cases::cases(FIXTURE).find(|c| {
        (c.m, c.n) == (M, N) && !c.balanced && c.eps == eps && c.gamma == OtParams::FEDOTP.gamma
    })
}

/// The solve at the paper's constants and tol 0, which runs exactly `iterations` iterations,
/// counted by SysTick. Between two calls of [`fedotp_trace_mark`], which is how the cycle model
/// finds it in an instruction trace.
fn fixed_iterations(
    counter: &mut InstructionCounter,
    sim: &[f32],
    iterations: u32,
    work: &mut [f32],
    plan: &mut [f32],
) -> (Result<OtReport, OtError>, Result<u64, CountError>) {
    let params = OtParams {
        max_iter: iterations,
        tol: 0.0,
        ..OtParams::FEDOTP
    };
    counter.instructions(|| {
        fedotp_trace_mark();
        let report = solve(sim, &params, work, plan);
        fedotp_trace_mark();
        report
    })
}

/// Marks the start and the end of a solve in an instruction trace: `cycles.sh` counts from one
/// entry of this function to the next, found by this unmangled name in the ELF's symbol table.
/// One function for both ends, because identical empty functions may be merged into one address.
#[inline(never)]
#[no_mangle]
fn fedotp_trace_mark() {
    // An empty assembly statement is a side effect the optimiser must keep, so the call stays.
    // SAFETY: it executes nothing.
    unsafe { core::arch::asm!("", options(nomem, nostack, preserves_flags)) };
}

/// One 196×2 solve in the firmware's buffers.
fn solve(
    sim: &[f32],
    params: &OtParams,
    work: &mut [f32],
    plan: &mut [f32],
) -> Result<OtReport, OtError> {
    ot::solve(Similarity::new(sim, M, N)?, params, work, plan)
}
