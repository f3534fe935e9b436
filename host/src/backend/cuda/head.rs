//! FedOTP's OT head and loss on the GPU: feature normalisation, similarities, the batched
//! optimal-transport solve with its logits, the logits' gradient and the cross-entropy.
//!
//! These are methods of [`Cuda`] until the training code adds the matching methods to the
//! [`Backend`](crate::backend::Backend) trait; each takes the same shapes and parameters as its
//! `fedotp_core` counterpart ([`HeadShape`], [`BatchLayout`], [`OtParams`]) and follows the
//! layouts of [`fedotp_core::head`] and [`fedotp_core::ot::solve_batch`]:
//!
//! ```text
//! patches  images × patches × dim          (image features, one row per patch)
//! prompts  prompts × classes × dim         (text features, one row per prompt and class)
//! sim      images × patches × prompts × classes     = normalised patches · normalised promptsᵀ
//! plans    images × classes × patches × prompts     (each problem's plan contiguous)
//! logits   images × classes
//! ```
//!
//! The solve is the core's algorithm (see [`fedotp_core::ot::solver`]): the same stabilised
//! scaling iterations, the same stopping rule per problem, the same absorption thresholds
//! (passed from the core's constants), one warp per problem.

use cudarc::driver::LaunchConfig;
use fedotp_core::head::HeadShape;
use fedotp_core::ot::solver::{workspace_len, ABSORB, BOUND_CEILING};
use fedotp_core::ot::{BatchLayout, BatchReport, OtParams, OtReport};

use super::engine::DeviceMemory;
use super::gemm::{GemmShape, Matrices};
use super::kernels::{elementwise, warp_per_row, Arg, Kernel};
use super::ops::{check, int};
use super::{Cuda, CudaBuf, MathMode};
use crate::backend::checks::check_indices;
use crate::backend::{BackendError, BackendResult};

/// Shared memory a block may use without opting in to more: 48 KiB on every CUDA GPU.
const SHARED_MEMORY_LIMIT: usize = 48 * 1024;

/// Problems (warps) per block of the OT solve, at most: consecutive problems are consecutive
/// classes of one image, whose similarities share cache lines.
const PROBLEMS_PER_BLOCK: usize = 4;

/// Per-problem reports of [`Cuda::ot_solve`], kept on the device until
/// [`Cuda::download_ot_reports`].
#[derive(Debug)]
pub struct OtReports {
    /// Two words per problem: iterations, flags.
    data: DeviceMemory<u32>,
    problems: usize,
}

impl OtReports {
    /// Number of problems the buffer holds reports for.
    pub fn problems(&self) -> usize {
        self.problems
    }
}

/// Report bit: the problem met the tolerance.
const REPORT_CONVERGED: u32 = 1;
/// Report bit: the problem's similarities were not all finite (its plan and logit are NaN).
const REPORT_NON_FINITE: u32 = 2;

/// What a batch solve did, read back from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtOutcome {
    /// The summary the core's [`fedotp_core::ot::solve_batch`] returns, over the solved problems.
    pub summary: BatchReport,
    /// Each problem's report, image-major.
    pub reports: Vec<OtReport>,
    /// Problems whose similarities were not all finite (a zero or non-finite feature): their
    /// plans and logits are NaN. The core refuses such a batch; on the GPU the other problems
    /// are still solved, and the caller decides.
    pub non_finite: Vec<usize>,
}

fn invalid(op: &'static str, message: String) -> BackendError {
    BackendError::InvalidArgument { op, message }
}

impl Cuda {
    /// `out[r] = inp[r] / ‖inp[r]‖` for `rows` rows of `dim` values, keeping `inv_norms[r] =
    /// 1/‖inp[r]‖` for [`Cuda::l2_normalize_rows_backward`]. The norm is taken as the core takes
    /// it (scaled by the row's largest magnitude); a zero or non-finite row gives NaN.
    pub fn l2_normalize_rows(
        &self,
        out: &mut CudaBuf,
        inv_norms: &mut CudaBuf,
        inp: &CudaBuf,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()> {
        const OP: &str = "l2_normalize_rows";
        check(OP, "out", out, rows * dim)?;
        check(OP, "inv_norms", inv_norms, rows)?;
        check(OP, "inp", inp, rows * dim)?;
        if rows * dim == 0 {
            return Ok(());
        }
        let args = [
            self.ptr(out),
            self.ptr(inv_norms),
            self.ptr(inp),
            int(OP, "rows", rows)?,
            int(OP, "dim", dim)?,
        ];
        self.launch(OP, Kernel::L2NormalizeRows, warp_per_row(rows), &args)
    }

    /// Gradient of [`Cuda::l2_normalize_rows`]: `d_inp[r] = (d_out[r] − y·(y·d_out[r])) /
    /// ‖inp[r]‖` with `y = out[r]` (overwritten).
    pub fn l2_normalize_rows_backward(
        &self,
        d_inp: &mut CudaBuf,
        d_out: &CudaBuf,
        out: &CudaBuf,
        inv_norms: &CudaBuf,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()> {
        const OP: &str = "l2_normalize_rows_backward";
        check(OP, "d_inp", d_inp, rows * dim)?;
        check(OP, "d_out", d_out, rows * dim)?;
        check(OP, "out", out, rows * dim)?;
        check(OP, "inv_norms", inv_norms, rows)?;
        if rows * dim == 0 {
            return Ok(());
        }
        let args = [
            self.ptr(d_inp),
            self.ptr(d_out),
            self.ptr(out),
            self.ptr(inv_norms),
            int(OP, "rows", rows)?,
            int(OP, "dim", dim)?,
        ];
        self.launch(
            OP,
            Kernel::L2NormalizeRowsBackward,
            warp_per_row(rows),
            &args,
        )
    }

    /// Similarities `sim = patches · promptsᵀ` (`images × patches × prompts × classes`) of
    /// (normalised) patch features `images × patches × dim` and prompt features `prompts ×
    /// classes × dim`: one GEMM, always in full `f32` whatever the backend's [`MathMode`] (the
    /// solve at small `eps` amplifies similarity errors by `1/eps`).
    pub fn similarity(
        &self,
        sim: &mut CudaBuf,
        patches: &CudaBuf,
        prompts: &CudaBuf,
        shape: &HeadShape,
    ) -> BackendResult<()> {
        const OP: &str = "similarity";
        let (features, columns, dim) = head_sizes(shape);
        check(OP, "sim", sim, features * columns)?;
        check(OP, "patches", patches, features * dim)?;
        check(OP, "prompts", prompts, columns * dim)?;
        let product = GemmShape {
            m: features,
            n: columns,
            k: dim,
            trans_a: false,
            trans_b: true,
            batch: (1, 1),
        };
        self.gemm(
            OP,
            MathMode::F32,
            product,
            Matrices::single(self.address(&patches.mem), dim),
            Matrices::single(self.address(&prompts.mem), dim),
            Matrices::single(self.address(&sim.mem), columns),
            1.0,
            0.0,
        )
    }

    /// Gradient of [`Cuda::similarity`]: `d_patches = d_sim · prompts` and `d_prompts =
    /// d_simᵀ · patches` (both overwritten), in full `f32`.
    pub fn similarity_backward(
        &self,
        d_patches: &mut CudaBuf,
        d_prompts: &mut CudaBuf,
        d_sim: &CudaBuf,
        patches: &CudaBuf,
        prompts: &CudaBuf,
        shape: &HeadShape,
    ) -> BackendResult<()> {
        const OP: &str = "similarity_backward";
        let (features, columns, dim) = head_sizes(shape);
        check(OP, "d_patches", d_patches, features * dim)?;
        check(OP, "d_prompts", d_prompts, columns * dim)?;
        check(OP, "d_sim", d_sim, features * columns)?;
        check(OP, "patches", patches, features * dim)?;
        check(OP, "prompts", prompts, columns * dim)?;
        let d_sim = Matrices::single(self.address(&d_sim.mem), columns);
        // d_patches (features × dim) = d_sim (features × columns) · prompts (columns × dim)
        self.gemm(
            OP,
            MathMode::F32,
            GemmShape {
                m: features,
                n: dim,
                k: columns,
                trans_a: false,
                trans_b: false,
                batch: (1, 1),
            },
            d_sim,
            Matrices::single(self.address(&prompts.mem), dim),
            Matrices::single(self.address(&d_patches.mem), dim),
            1.0,
            0.0,
        )?;
        // d_prompts (columns × dim) = d_simᵀ (columns × features) · patches (features × dim)
        self.gemm(
            OP,
            MathMode::F32,
            GemmShape {
                m: columns,
                n: dim,
                k: features,
                trans_a: true,
                trans_b: false,
                batch: (1, 1),
            },
            d_sim,
            Matrices::single(self.address(&patches.mem), dim),
            Matrices::single(self.address(&d_prompts.mem), dim),
            1.0,
            0.0,
        )
    }

    /// A report buffer for `problems` problems.
    pub fn alloc_ot_reports(&self, problems: usize) -> BackendResult<OtReports> {
        let data = self
            .engine
            .alloc_zeros("alloc_ot_reports", 2 * problems.max(1))?;
        Ok(OtReports { data, problems })
    }

    /// Solves every (image, class) problem of a batch — the core's
    /// [`fedotp_core::ot::solve_batch`] and [`fedotp_core::head::forward`] in one kernel:
    /// `logits[b, c] = scale · Σ T ⊙ S` for each problem's plan `T`, the plans written to
    /// `plans` when given (`images × classes × patches × prompts`, kept for the backward pass).
    ///
    /// `sim` is `images × patches × prompts × classes` (from [`Cuda::similarity`]). A problem's
    /// workspace (`M·N + 3M + 2N` floats) lives in shared memory, so `M·N + 3M + 2N ≤ 12 288`
    /// (every FedOTP configuration is far below: ViT-B/16 with two prompts needs 984).
    #[allow(clippy::too_many_arguments)]
    pub fn ot_solve(
        &self,
        logits: &mut CudaBuf,
        plans: Option<&mut CudaBuf>,
        reports: &mut OtReports,
        sim: &CudaBuf,
        layout: BatchLayout,
        params: &OtParams,
        scale: f32,
    ) -> BackendResult<()> {
        const OP: &str = "ot_solve";
        params
            .validate()
            .map_err(|e| invalid(OP, format!("parameters: {e}")))?;
        if !scale.is_finite() {
            return Err(invalid(OP, format!("logit scale {scale} is not finite")));
        }
        let elements = layout.elements().map_err(|e| invalid(OP, e.to_string()))?;
        let problems = layout.problems().map_err(|e| invalid(OP, e.to_string()))?;
        let (m, n) = (layout.patches, layout.prompts);
        check(OP, "sim", sim, elements)?;
        check(OP, "logits", logits, problems)?;
        if reports.problems < problems {
            return Err(BackendError::BufferTooSmall {
                op: OP,
                buffer: "reports",
                len: reports.problems,
                needed: problems,
            });
        }
        let plans_ptr = match plans {
            Some(plans) => {
                check(OP, "plans", plans, elements)?;
                self.ptr(plans)
            }
            None => Arg::Ptr(0),
        };
        let per_problem = workspace_len(m, n) * std::mem::size_of::<f32>();
        if per_problem > SHARED_MEMORY_LIMIT {
            return Err(invalid(
                OP,
                format!(
                    "a {m} × {n} problem needs {per_problem} bytes of shared memory; the GPU solver has {SHARED_MEMORY_LIMIT}"
                ),
            ));
        }
        let warps = (SHARED_MEMORY_LIMIT / per_problem).clamp(1, PROBLEMS_PER_BLOCK);
        let blocks = problems.div_ceil(warps);
        let config = LaunchConfig {
            grid_dim: (
                u32::try_from(blocks).map_err(|_| invalid(OP, "too many problems".into()))?,
                1,
                1,
            ),
            block_dim: (32 * warps as u32, 1, 1),
            shared_mem_bytes: (warps * per_problem) as u32,
        };
        let args = [
            self.ptr(sim),
            plans_ptr,
            self.ptr(logits),
            self.index_ptr(&reports.data),
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
            Arg::F32(scale),
            Arg::F32(ABSORB),
            Arg::F32(BOUND_CEILING),
        ];
        self.launch(OP, Kernel::OtSolve, config, &args)
    }

    /// Reads the reports of the last [`Cuda::ot_solve`] into `fedotp_core`'s types (waits for
    /// the solve).
    pub fn download_ot_reports(&self, reports: &OtReports) -> BackendResult<OtOutcome> {
        let words = if reports.problems == 0 {
            Vec::new()
        } else {
            self.engine
                .download("download_ot_reports", &reports.data, 2 * reports.problems)?
        };
        let mut outcome = OtOutcome {
            summary: BatchReport::default(),
            reports: Vec::with_capacity(reports.problems),
            non_finite: Vec::new(),
        };
        for (problem, pair) in words.chunks_exact(2).enumerate() {
            let report = OtReport {
                iterations: pair[0],
                converged: pair[1] & REPORT_CONVERGED != 0,
            };
            if pair[1] & REPORT_NON_FINITE != 0 {
                outcome.non_finite.push(problem);
            } else {
                outcome.summary.record(report);
            }
            outcome.reports.push(report);
        }
        Ok(outcome)
    }

    /// Gradient of the logits with respect to the similarities, the plans held constant (as
    /// the paper trains): `d_sim[b, i, j, c] = scale · T_(b,c)[i, j] · d_logits[b, c]`
    /// (overwritten, the layout of `sim`).
    pub fn transported_logits_backward(
        &self,
        d_sim: &mut CudaBuf,
        plans: &CudaBuf,
        d_logits: &CudaBuf,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()> {
        const OP: &str = "transported_logits_backward";
        let elements = layout.elements().map_err(|e| invalid(OP, e.to_string()))?;
        let problems = layout.problems().map_err(|e| invalid(OP, e.to_string()))?;
        check(OP, "d_sim", d_sim, elements)?;
        check(OP, "plans", plans, elements)?;
        check(OP, "d_logits", d_logits, problems)?;
        let args = [
            self.ptr(d_sim),
            self.ptr(plans),
            self.ptr(d_logits),
            int(OP, "images", layout.images)?,
            int(OP, "patches", layout.patches)?,
            int(OP, "prompts", layout.prompts)?,
            int(OP, "classes", layout.classes)?,
            Arg::F32(scale),
        ];
        self.launch(
            OP,
            Kernel::TransportedLogitsBackward,
            elementwise(elements),
            &args,
        )
    }

    /// Softmax cross-entropy of `labels.len()` rows of `classes` logits: `losses[r] =
    /// logsumexp(logits[r]) − logits[r, labels[r]]`, and the gradient of their **mean**,
    /// `d_logits[r] = (softmax(logits[r]) − onehot(labels[r])) / rows` (overwritten).
    pub fn cross_entropy(
        &self,
        losses: &mut CudaBuf,
        d_logits: &mut CudaBuf,
        logits: &CudaBuf,
        labels: &[u32],
        classes: usize,
    ) -> BackendResult<()> {
        const OP: &str = "cross_entropy";
        let rows = labels.len();
        check(OP, "losses", losses, rows)?;
        check(OP, "d_logits", d_logits, rows * classes)?;
        check(OP, "logits", logits, rows * classes)?;
        check_indices(OP, "label", labels, classes)?;
        if rows == 0 {
            return Ok(());
        }
        let labels = self.upload_indices(OP, labels)?;
        let args = [
            self.ptr(losses),
            self.ptr(d_logits),
            self.ptr(logits),
            self.index_ptr(&labels),
            int(OP, "rows", rows)?,
            int(OP, "classes", classes)?,
            Arg::F32(1.0 / rows as f32),
        ];
        self.launch(OP, Kernel::CrossEntropy, warp_per_row(rows), &args)
    }
}

/// `(images·patches, prompts·classes, dim)`: the similarity GEMM's rows, columns and depth.
fn head_sizes(shape: &HeadShape) -> (usize, usize, usize) {
    (
        shape.images * shape.patches,
        shape.prompts * shape.classes,
        shape.dim,
    )
}
