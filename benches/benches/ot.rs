//! The OT solver: one 196 × 2 unbalanced solve at 100 iterations (a ViT-B/16 image against one
//! class's two prompts) and a batch of 32 × 100 such problems (one training step at CIFAR-100
//! scale), each beside the released code's batched PyTorch solve and POT's solver of the same
//! problem timed in the same run (`benches/ot_reference.py`), and the arithmetic floor.
//!
//! `cargo bench -p fedotp-benches --bench ot` prints the criterion estimates, then the table.

use criterion::Criterion;
use fedotp_benches::{benchmarking, json_number, median_time, run_python};
use fedotp_core::ot::{self, BatchLayout, OtParams, Similarity};
use fedotp_tests::inputs::clip_like_similarities;
use std::hint::black_box;

const M: usize = 196;
const N: usize = 2;
const BATCH: BatchLayout = BatchLayout {
    images: 32,
    patches: M,
    prompts: N,
    classes: 100,
};

/// The paper's solver at exactly 100 iterations (`tol` 0: no early stop), as the reference runs.
const FIXED_100: OtParams = OtParams {
    tol: 0.0,
    ..OtParams::FEDOTP
};

/// Inputs and buffers of both benchmarks.
struct Inputs {
    single: Vec<f32>,
    batch: Vec<f32>,
    work: Vec<f32>,
    plan: Vec<f32>,
    plans: Vec<f32>,
}

impl Inputs {
    fn new() -> Self {
        let len = BATCH.elements().expect("valid layout");
        Inputs {
            single: clip_like_similarities(M * N, 1),
            batch: clip_like_similarities(len, 2),
            work: vec![0.0; ot::workspace_len(M, N)],
            plan: vec![0.0; M * N],
            plans: vec![0.0; len],
        }
    }

    fn solve_single(&mut self, params: &OtParams) -> ot::OtReport {
        let sim = Similarity::new(&self.single, M, N).expect("valid shape");
        ot::solve(sim, params, &mut self.work, &mut self.plan).expect("valid problem")
    }

    fn solve_batch(&mut self, params: &OtParams) -> ot::BatchReport {
        ot::solve_batch(
            &self.batch,
            BATCH,
            params,
            &mut self.work,
            &mut self.plans,
            None,
        )
        .expect("valid batch")
    }
}

fn criterion_benches(c: &mut Criterion, inputs: &mut Inputs) {
    let mut group = c.benchmark_group("ot");
    group.bench_function("solve_196x2_100_iterations", |b| {
        b.iter(|| black_box(inputs.solve_single(black_box(&FIXED_100))))
    });
    group.bench_function("solve_196x2_paper_stopping", |b| {
        b.iter(|| black_box(inputs.solve_single(black_box(&OtParams::FEDOTP))))
    });
    group.sample_size(10);
    group.bench_function("batch_32x100_196x2_100_iterations", |b| {
        b.iter(|| black_box(inputs.solve_batch(black_box(&FIXED_100))))
    });
    group.finish();
}

/// Floating-point operations of one iteration on an `m × n` problem: `K̃v` and `K̃ᵀu` (a multiply
/// and an add per kernel entry each), a division and a clamp per patch, a division and the
/// relative change (subtract, divide, add) per prompt.
fn flops_per_iteration(m: usize, n: usize) -> usize {
    4 * m * n + 2 * m + 4 * n
}

fn print_table(inputs: &mut Inputs) {
    let single = median_time(2001, || {
        black_box(inputs.solve_single(&FIXED_100));
    });
    let batch = median_time(11, || {
        black_box(inputs.solve_batch(&FIXED_100));
    });
    let flops = flops_per_iteration(M, N) * 100;
    println!("\nOT solve, 100 iterations, unbalanced (eps 0.1, gamma 0.8), one thread (fedotp)");
    println!(
        "  flops per 196x2 solve: {flops} ({} per iteration, {M} divisions)",
        flops / 100
    );
    let reference = run_python("ot_reference.py", &[]);
    let (ref_single, ref_batch, pot_single, pot_batch) = match &reference {
        Ok(json) => (
            json_number(json, "solve_196x2_100"),
            json_number(json, "batch_32x100_196x2_100"),
            json_number(json, "pot_solve_196x2_100"),
            json_number(json, "pot_batch_32x100_196x2_100"),
        ),
        Err(why) => {
            println!("  PyTorch and POT references not run: {why}");
            (None, None, None, None)
        }
    };
    let threads = reference
        .as_ref()
        .ok()
        .and_then(|j| json_number(j, "threads"));
    println!(
        "  {:<32} {:>14} {:>16} {:>10} {:>16} {:>10} {:>10}",
        "work", "fedotp", "PyTorch", "speed-up", "POT", "speed-up", "GFLOP/s"
    );
    for (name, ours, torch, pot, problems) in [
        ("one 196x2 solve", single, ref_single, pot_single, 1),
        (
            "32x100 batch of 196x2 solves",
            batch,
            ref_batch,
            pot_batch,
            3200,
        ),
    ] {
        let us = ours.as_secs_f64() * 1e6;
        let time = |t: Option<f64>| t.map_or("-".into(), |t| format!("{t:.1} us"));
        let ratio = |t: Option<f64>| t.map_or("-".into(), |t| format!("{:.0}x", t / us));
        println!(
            "  {:<32} {:>11.1} us {:>16} {:>10} {:>16} {:>10} {:>10.2}",
            name,
            us,
            time(torch),
            ratio(torch),
            time(pot),
            ratio(pot),
            (flops * problems) as f64 / us / 1e3,
        );
    }
    if let Some(threads) = threads {
        println!("  (PyTorch on {threads} threads, POT and fedotp on one)");
    }
}

fn main() {
    let mut inputs = Inputs::new();
    // No plots: criterion's plotters backend needs system fonts, which CI machines lack.
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    criterion_benches(&mut criterion, &mut inputs);
    criterion.final_summary();
    if benchmarking() {
        print_table(&mut inputs);
    }
}
