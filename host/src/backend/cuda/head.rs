//! The CUDA backend's prompt-learning head: normalisation, the similarity products (cuBLAS,
//! always full `f32`), FedOTP's batched OT solve, the logits, their gradient and the
//! cross-entropy — the [`Backend`](crate::backend::Backend) methods of the head, called from
//! [`super::ops`].
//!
//! The solve is the core's algorithm ([`fedotp_core::ot::solver`]): the same stabilised scaling
//! iterations, the same stopping rule per problem, the same absorption thresholds (passed from
//! the core's constants), one warp per problem with its workspace in shared memory.

use cudarc::driver::LaunchConfig;
use fedotp_core::ot::solver::{workspace_len, ABSORB, BOUND_CEILING};
use fedotp_core::ot::{BatchLayout, BatchReport, OtError, OtParams, OtReport, EPS_RESOLUTION};

use super::error::device_error;
use super::gemm::{GemmShape, Matrices};
use super::kernels::{elementwise, warp_per_row, Arg, Kernel};
use super::ops::int;
use super::{Cuda, CudaBuf, MathMode};
use crate::backend::{BackendError, BackendResult, MatmulDims};

/// Shared memory a block may use without opting in to more: 48 KiB on every CUDA GPU.
const SHARED_MEMORY_LIMIT: usize = 48 * 1024;

/// Problems (warps) per block of the OT solve, at most: consecutive problems are consecutive
/// classes of one image, whose similarities share cache lines.
const PROBLEMS_PER_BLOCK: usize = 4;

/// Report words per problem: iterations, flags, the first non-finite similarity.
const REPORT_WORDS: usize = 3;
/// Report flag: the problem met the tolerance.
const REPORT_CONVERGED: u32 = 1;
/// Report flag: the problem's similarities are not all finite (its plan is NaN).
const REPORT_NON_FINITE: u32 = 2;
/// Report flag: eps is below the resolution floor for the problem's largest |S|, whose bits are
/// the report's third word.
const REPORT_EPS_BELOW_RESOLUTION: u32 = 4;

pub(super) fn normalize_rows(
    gpu: &Cuda,
    out: &mut CudaBuf,
    norms: &mut CudaBuf,
    inp: &CudaBuf,
    rows: usize,
    dim: usize,
) -> BackendResult<()> {
    const OP: &str = "normalize_rows";
    if rows * dim == 0 {
        return Ok(());
    }
    let args = [
        gpu.ptr(out),
        gpu.ptr(norms),
        gpu.ptr(inp),
        int(OP, "rows", rows)?,
        int(OP, "dim", dim)?,
    ];
    gpu.launch(OP, Kernel::NormalizeRows, warp_per_row(rows), &args)
}

pub(super) fn normalize_rows_backward(
    gpu: &Cuda,
    d_inp: &mut CudaBuf,
    d_out: &CudaBuf,
    out: &CudaBuf,
    norms: &CudaBuf,
    rows: usize,
    dim: usize,
) -> BackendResult<()> {
    const OP: &str = "normalize_rows_backward";
    if rows * dim == 0 {
        return Ok(());
    }
    let args = [
        gpu.ptr(d_inp),
        gpu.ptr(d_out),
        gpu.ptr(out),
        gpu.ptr(norms),
        int(OP, "rows", rows)?,
        int(OP, "dim", dim)?,
    ];
    gpu.launch(OP, Kernel::NormalizeRowsBackward, warp_per_row(rows), &args)
}

/// Which operand of a head product is stored transposed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Transposed {
    /// `out = alpha · a · bᵀ`, `a` is `m × k`, `b` is `n × k`.
    B,
    /// `out = alpha · aᵀ · b`, `a` is `k × m`, `b` is `k × n`.
    A,
}

/// The head's matrix products, always in full `f32` whatever the backend's [`MathMode`]: the
/// similarities feed a solve that divides them by `eps` (0.01 in the few-shot settings), so a
/// TF32 error of 1e-3 in a cosine would be a 10 % error in its kernel entry; and they are small
/// next to the towers' products.
pub(super) fn matmul(
    gpu: &Cuda,
    out: &mut CudaBuf,
    a: &CudaBuf,
    b: &CudaBuf,
    MatmulDims { m, n, k }: MatmulDims,
    alpha: f32,
    transposed: Transposed,
) -> BackendResult<()> {
    let op = match transposed {
        Transposed::B => "matmul_nt",
        Transposed::A => "matmul_tn",
    };
    let (trans_a, trans_b, lda, ldb) = match transposed {
        Transposed::B => (false, true, k, k),
        Transposed::A => (true, false, m, n),
    };
    let shape = GemmShape {
        m,
        n,
        k,
        trans_a,
        trans_b,
        batch: (1, 1),
    };
    gpu.gemm(
        op,
        MathMode::F32,
        shape,
        Matrices::single(gpu.address(&a.mem), lda),
        Matrices::single(gpu.address(&b.mem), ldb),
        Matrices::single(gpu.address(&out.mem), n),
        alpha,
        0.0,
    )
}

pub(super) fn ot_plans(
    gpu: &Cuda,
    plans: &mut CudaBuf,
    sim: &CudaBuf,
    layout: BatchLayout,
    params: &OtParams,
) -> BackendResult<BatchReport> {
    const OP: &str = "ot_plans";
    let problems = layout.images * layout.classes;
    let (m, n) = (layout.patches, layout.prompts);
    let per_problem = workspace_len(m, n) * std::mem::size_of::<f32>();
    if per_problem > SHARED_MEMORY_LIMIT {
        return Err(device_error(
            OP,
            format!(
                "a {m} × {n} problem needs {per_problem} bytes of shared memory; the GPU solver \
                 holds one problem in {SHARED_MEMORY_LIMIT} (M·N + 3M + 2N ≤ 12 288 floats)"
            ),
        ));
    }
    let warps = (SHARED_MEMORY_LIMIT / per_problem).clamp(1, PROBLEMS_PER_BLOCK);
    let blocks = u32::try_from(problems.div_ceil(warps))
        .map_err(|_| device_error(OP, format!("{problems} problems exceed the grid")))?;
    let config = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (32 * warps as u32, 1, 1),
        shared_mem_bytes: (warps * per_problem) as u32,
    };
    let reports = gpu.engine.alloc_zeros::<u32>(OP, REPORT_WORDS * problems)?;
    let args = [
        gpu.ptr(sim),
        gpu.ptr(plans),
        gpu.index_ptr(&reports),
        int(OP, "images", layout.images)?,
        int(OP, "patches", m)?,
        int(OP, "prompts", n)?,
        int(OP, "classes", layout.classes)?,
        Arg::F32(params.eps),
        // The core's f32 expressions, evaluated the same way.
        Arg::F32(1.0 / params.eps),
        Arg::F32(1.0 / m as f32),
        Arg::F32(params.prompt_mass(n)),
        int(OP, "max_iter", params.max_iter as usize)?,
        Arg::F32(params.tol),
        Arg::I32(i32::from(params.rows_saturated())),
        Arg::F32(ABSORB),
        Arg::F32(BOUND_CEILING),
        Arg::F32(EPS_RESOLUTION),
    ];
    gpu.launch(OP, Kernel::OtPlans, config, &args)?;
    // The caller gets the report now, as from the CPU: this waits for the solve.
    let words = gpu.engine.download(OP, &reports, REPORT_WORDS * problems)?;
    summarize(&words, layout, params.eps).map_err(|source| BackendError::Ot { op: OP, source })
}

/// The batch's report from the per-problem words, or the core's error: for the first
/// non-finite similarity (as an index into `sim`), else for an `eps` below the resolution floor
/// of the batch's largest |S|.
fn summarize(words: &[u32], layout: BatchLayout, eps: f32) -> Result<BatchReport, OtError> {
    let mut summary = BatchReport::default();
    let mut first_bad: Option<usize> = None;
    let mut largest: Option<f32> = None;
    for (problem, report) in words.chunks_exact(REPORT_WORDS).enumerate() {
        if report[1] & REPORT_EPS_BELOW_RESOLUTION != 0 {
            let magnitude = f32::from_bits(report[2]);
            largest = Some(largest.map_or(magnitude, |l| l.max(magnitude)));
        }
        if report[1] & REPORT_NON_FINITE != 0 {
            let (b, c) = (problem / layout.classes, problem % layout.classes);
            let within = report[2] as usize; // i·N + j
            let index = ((b * layout.patches * layout.prompts) + within) * layout.classes + c;
            first_bad = Some(first_bad.map_or(index, |f| f.min(index)));
        }
        summary.record(OtReport {
            iterations: report[0],
            converged: report[1] & REPORT_CONVERGED != 0,
        });
    }
    match (first_bad, largest) {
        (Some(index), _) => Err(OtError::NonFinite {
            name: "similarity",
            index,
        }),
        (None, Some(largest)) => Err(OtError::EpsBelowResolution {
            eps,
            largest,
            min: EPS_RESOLUTION * largest,
        }),
        (None, None) => Ok(summary),
    }
}

pub(super) fn ot_logits(
    gpu: &Cuda,
    logits: &mut CudaBuf,
    sim: &CudaBuf,
    plans: &CudaBuf,
    layout: BatchLayout,
    scale: f32,
) -> BackendResult<()> {
    const OP: &str = "ot_logits";
    let problems = layout.images * layout.classes;
    let args = [
        gpu.ptr(logits),
        gpu.ptr(sim),
        gpu.ptr(plans),
        int(OP, "images", layout.images)?,
        int(OP, "patches", layout.patches)?,
        int(OP, "prompts", layout.prompts)?,
        int(OP, "classes", layout.classes)?,
        Arg::F32(scale),
    ];
    gpu.launch(OP, Kernel::OtLogits, warp_per_row(problems), &args)
}

pub(super) fn ot_logits_backward(
    gpu: &Cuda,
    d_sim: &mut CudaBuf,
    d_logits: &CudaBuf,
    plans: &CudaBuf,
    layout: BatchLayout,
    scale: f32,
) -> BackendResult<()> {
    const OP: &str = "ot_logits_backward";
    let len = layout.images * layout.patches * layout.prompts * layout.classes;
    let args = [
        gpu.ptr(d_sim),
        gpu.ptr(d_logits),
        gpu.ptr(plans),
        int(OP, "images", layout.images)?,
        int(OP, "patches", layout.patches)?,
        int(OP, "prompts", layout.prompts)?,
        int(OP, "classes", layout.classes)?,
        Arg::F32(scale),
    ];
    gpu.launch(OP, Kernel::OtLogitsBackward, elementwise(len), &args)
}

pub(super) fn cross_entropy(
    gpu: &Cuda,
    d_logits: &mut CudaBuf,
    logits: &CudaBuf,
    labels: &[u32],
    classes: usize,
) -> BackendResult<f32> {
    const OP: &str = "cross_entropy";
    let batch = labels.len();
    if batch == 0 {
        // The mean over no rows, as the CPU backend computes it.
        return Ok(f32::NAN);
    }
    let losses = gpu.engine.alloc_zeros::<f32>(OP, batch)?;
    let labels_dev = gpu.upload_indices(OP, labels)?;
    let args = [
        Arg::Ptr(gpu.address(&losses)),
        gpu.ptr(d_logits),
        gpu.ptr(logits),
        gpu.index_ptr(&labels_dev),
        int(OP, "batch", batch)?,
        int(OP, "classes", classes)?,
        Arg::F32(1.0 / batch as f32),
    ];
    gpu.launch(OP, Kernel::CrossEntropy, warp_per_row(batch), &args)?;
    // Per-row losses summed on the host in f64, as the CPU backend sums them.
    let total: f64 = gpu
        .engine
        .download(OP, &losses, batch)?
        .iter()
        .map(|&l| f64::from(l))
        .sum();
    Ok((total / batch as f64) as f32)
}
