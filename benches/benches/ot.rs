//! The OT solver: one 196 × 2 unbalanced solve at 100 iterations (a ViT-B/16 image against one
//! class's two prompts) and a batch of 32 × 100 such problems (one training step at CIFAR-100
//! scale), each beside the released code's batched PyTorch solve and POT's solver of the same
//! problem timed in the same run (`benches/ot_reference.py`), and the arithmetic floor measured
//! on this CPU in the same run.
//!
//! `cargo bench -p fedotp-benches --bench ot` prints the criterion estimates, then the table.

use criterion::Criterion;
use fedotp_benches::{benchmarking, json_number, median_time, run_python};
use fedotp_core::ot::{self, BatchLayout, OtParams, Similarity};
use fedotp_host::backend::{Backend, Cpu};
use fedotp_tests::inputs::clip_like_similarities;
use std::hint::black_box;
use std::time::Duration;

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
            work: vec![0.0; ot::batch_workspace_len(M, N)],
            plan: vec![0.0; M * N],
            plans: vec![0.0; len],
        }
    }

    /// The core's solver as compiled for the target's baseline (SSE2 on x86-64).
    fn solve_single_baseline(&mut self, params: &OtParams) -> ot::OtReport {
        let sim = Similarity::new(&self.single, M, N).expect("valid shape");
        ot::solve(sim, params, &mut self.work, &mut self.plan).expect("valid problem")
    }

    /// The solver as libfedotp and `fedotp train` run it: on this CPU's widest SIMD.
    fn solve_single(&mut self, params: &OtParams) -> ot::OtReport {
        let sim = Similarity::new(&self.single, M, N).expect("valid shape");
        fedotp_host::ot::solve(sim, params, &mut self.work, &mut self.plan).expect("valid problem")
    }

    /// The batch on one thread, on this CPU's widest SIMD: eight problems at a time, one per
    /// SIMD lane (the workspace of `ot::batch_workspace_len`).
    fn solve_batch(&mut self, params: &OtParams) -> ot::BatchReport {
        fedotp_host::ot::solve_batch(
            &self.batch,
            BATCH,
            params,
            &mut self.work,
            &mut self.plans,
            None,
        )
        .expect("valid batch")
    }

    /// The batch on one thread, one problem at a time with its patches across the SIMD lanes
    /// (the smaller workspace of `ot::workspace_len`).
    fn solve_batch_one_at_a_time(&mut self, params: &OtParams) -> ot::BatchReport {
        fedotp_host::ot::solve_batch(
            &self.batch,
            BATCH,
            params,
            &mut self.work[..ot::workspace_len(M, N)],
            &mut self.plans,
            None,
        )
        .expect("valid batch")
    }

    /// The batch as `fedotp train` solves it: the CPU backend's `ot_plans`, one image per task
    /// on all cores.
    fn solve_batch_all_cores(&mut self, params: &OtParams) -> ot::BatchReport {
        Cpu::new()
            .ot_plans(&mut self.plans, &self.batch, BATCH, params)
            .expect("valid batch")
    }
}

fn criterion_benches(c: &mut Criterion, inputs: &mut Inputs) {
    let mut group = c.benchmark_group("ot");
    group.bench_function("solve_196x2_100_iterations", |b| {
        b.iter(|| black_box(inputs.solve_single(black_box(&FIXED_100))))
    });
    group.bench_function("solve_196x2_100_iterations_baseline_simd", |b| {
        b.iter(|| black_box(inputs.solve_single_baseline(black_box(&FIXED_100))))
    });
    group.bench_function("solve_196x2_paper_stopping", |b| {
        b.iter(|| black_box(inputs.solve_single(black_box(&OtParams::FEDOTP))))
    });
    group.sample_size(10);
    group.bench_function("batch_32x100_196x2_100_iterations", |b| {
        b.iter(|| black_box(inputs.solve_batch(black_box(&FIXED_100))))
    });
    group.bench_function("batch_32x100_196x2_100_iterations_one_at_a_time", |b| {
        b.iter(|| black_box(inputs.solve_batch_one_at_a_time(black_box(&FIXED_100))))
    });
    group.bench_function("batch_32x100_196x2_100_iterations_all_cores", |b| {
        b.iter(|| black_box(inputs.solve_batch_all_cores(black_box(&FIXED_100))))
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
    let baseline = median_time(2001, || {
        black_box(inputs.solve_single_baseline(&FIXED_100));
    });
    let single = median_time(2001, || {
        black_box(inputs.solve_single(&FIXED_100));
    });
    let batch = median_time(11, || {
        black_box(inputs.solve_batch(&FIXED_100));
    });
    let batch_one_at_a_time = median_time(11, || {
        black_box(inputs.solve_batch_one_at_a_time(&FIXED_100));
    });
    let batch_all_cores = median_time(11, || {
        black_box(inputs.solve_batch_all_cores(&FIXED_100));
    });
    let floor = floor::per_iteration(M, N) * 100;
    let flops = flops_per_iteration(M, N) * 100;
    println!("\nOT solve, 100 iterations, unbalanced (eps 0.1, gamma 0.8)");
    println!(
        "  flops per 196x2 solve: {flops} ({} per iteration, {} divisions)",
        flops / 100,
        M + N
    );
    println!(
        "  arithmetic floor of 100 iterations on this CPU ({}): {:.2} us",
        fedotp_host::ot::instruction_set(),
        floor.as_secs_f64() * 1e6
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
        "  {:<40} {:>12} {:>8} {:>14} {:>9} {:>16} {:>9} {:>8}",
        "work", "fedotp", "/ floor", "PyTorch", "speed-up", "POT", "speed-up", "GFLOP/s"
    );
    let rayon_threads = rayon::current_num_threads();
    for (name, ours, floors, torch, pot, problems) in [
        (
            "one 196x2 solve, baseline SIMD",
            baseline,
            1,
            ref_single,
            pot_single,
            1,
        ),
        ("one 196x2 solve", single, 1, ref_single, pot_single, 1),
        (
            "32x100 batch, one thread, one at a time",
            batch_one_at_a_time,
            3200,
            ref_batch,
            pot_batch,
            3200,
        ),
        (
            "32x100 batch, one thread, 8 in lockstep",
            batch,
            3200,
            ref_batch,
            pot_batch,
            3200,
        ),
        (
            &format!("32x100 batch, {rayon_threads} threads (fedotp train)"),
            batch_all_cores,
            3200 / rayon_threads as u32,
            ref_batch,
            pot_batch,
            3200,
        ),
    ] {
        let us = ours.as_secs_f64() * 1e6;
        let time = |t: Option<f64>| t.map_or("-".into(), |t| format!("{t:.1} us"));
        let ratio = |t: Option<f64>| t.map_or("-".into(), |t| format!("{:.1}x", t / us));
        println!(
            "  {:<40} {:>9.1} us {:>7.2}x {:>14} {:>9} {:>16} {:>9} {:>8.2}",
            name,
            us,
            ours.as_secs_f64() / (floor * floors).as_secs_f64(),
            time(torch),
            ratio(torch),
            time(pot),
            ratio(pot),
            (flops * problems) as f64 / us / 1e3,
        );
    }
    if let Some(threads) = threads {
        println!("  (PyTorch on {threads} threads, POT on one)");
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

/// The arithmetic floor of one iteration, measured on this CPU: the time of its divisions and of
/// its multiply-adds, each run as a loop of independent operations over data in L1 (so at the
/// instructions' throughput, with no latency chain and nothing else in the loop), compiled for
/// the same instruction set as the solver. The fastest of several timings: a floor is what the
/// machine can do at best, and on a shared machine the median wanders with its load.
mod floor {
    use super::Duration;
    use std::hint::black_box;
    use std::time::Instant;

    /// Repetitions of each loop per timing, so that a timing is far above the clock's resolution.
    const REPEATS: u32 = 20_000;

    /// `m + n` divisions (the scaling updates) plus `2·m·n` multiply-adds (`K̃v` and `K̃ᵀu`, `m·n`
    /// each, counted as independent operations).
    pub fn per_iteration(m: usize, n: usize) -> Duration {
        let denominators: Vec<f32> = (0..m + n).map(|i| 1.0 + i as f32 * 0.01).collect();
        let kernel: Vec<f32> = (0..m * n).map(|i| 0.5 + i as f32 * 1e-4).collect();
        let mut out = vec![0.0f32; m * n / 2];
        let mut quotients = vec![0.0f32; m + n];
        let divide = fastest(|| {
            for _ in 0..REPEATS {
                divisions(black_box(0.3), &denominators, &mut quotients);
                black_box(&mut quotients);
            }
        });
        let multiply_add = fastest(|| {
            for _ in 0..REPEATS {
                // Two multiply-adds per output, m·n per call: one call for each product.
                multiply_adds(black_box(0.7), &kernel, &mut out);
                multiply_adds(black_box(0.6), &kernel, &mut out);
                black_box(&mut out);
            }
        });
        (divide + multiply_add) / REPEATS
    }

    /// The fastest of 21 timings of `f`.
    fn fastest(mut f: impl FnMut()) -> Duration {
        (0..21)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .min()
            .unwrap_or_default()
    }

    fn divisions(a: f32, denominators: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: a `target_feature` function asks only that the CPU has the feature.
            return unsafe { avx2::divisions(a, denominators, out) };
        }
        divisions_baseline(a, denominators, out)
    }

    fn multiply_adds(v: f32, kernel: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as in `divisions`.
            return unsafe { avx2::multiply_adds(v, kernel, out) };
        }
        multiply_adds_baseline(v, kernel, out)
    }

    #[inline(always)]
    fn divisions_baseline(a: f32, denominators: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(denominators) {
            *o = a / x;
        }
    }

    /// `out[i] += k[i]·v + k[i + len]·v`: two multiply-adds per element, independent across
    /// elements.
    #[inline(always)]
    fn multiply_adds_baseline(v: f32, kernel: &[f32], out: &mut [f32]) {
        let (first, second) = kernel.split_at(out.len());
        for ((o, &a), &b) in out.iter_mut().zip(first).zip(second) {
            *o += a * v + b * v;
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        #[target_feature(enable = "avx2")]
        pub fn divisions(a: f32, denominators: &[f32], out: &mut [f32]) {
            super::divisions_baseline(a, denominators, out)
        }

        #[target_feature(enable = "avx2")]
        pub fn multiply_adds(v: f32, kernel: &[f32], out: &mut [f32]) {
            super::multiply_adds_baseline(v, kernel, out)
        }
    }
}
