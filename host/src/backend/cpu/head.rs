//! The CPU backend's prompt-learning head: normalisation, similarity products, the batched OT
//! solve (the core's solver on the CPU's widest SIMD, [`crate::ot`], one image per rayon task)
//! and the cross-entropy loss.

use fedotp_core::ot::{self, BatchLayout, BatchReport, OtParams};
use gemm::Parallelism;
use rayon::prelude::*;

use super::{gemm_f32, Grain, MatMut, MatRef};
use crate::backend::{BackendError, BackendResult, MatmulDims};

pub(super) fn normalize_rows(
    out: &mut [f32],
    norms: &mut [f32],
    inp: &[f32],
    rows: usize,
    dim: usize,
) -> BackendResult<()> {
    out[..rows * dim]
        .par_chunks_mut(dim)
        .zip(norms[..rows].par_iter_mut())
        .zip(inp[..rows * dim].par_chunks(dim))
        .grain(2 * dim)
        .for_each(|((out, norm), inp)| {
            *norm = inp.iter().map(|x| x * x).sum::<f32>().sqrt();
            let inv = 1.0 / *norm;
            for (o, x) in out.iter_mut().zip(inp) {
                *o = x * inv;
            }
        });
    Ok(())
}

pub(super) fn normalize_rows_backward(
    d_inp: &mut [f32],
    d_out: &[f32],
    out: &[f32],
    norms: &[f32],
    rows: usize,
    dim: usize,
) -> BackendResult<()> {
    d_inp[..rows * dim]
        .par_chunks_mut(dim)
        .enumerate()
        .grain(3 * dim)
        .for_each(|(r, d_inp)| {
            let (d_out, out) = (&d_out[r * dim..][..dim], &out[r * dim..][..dim]);
            let along: f32 = out.iter().zip(d_out).map(|(y, d)| y * d).sum();
            let inv = 1.0 / norms[r];
            for ((g, &d), &y) in d_inp.iter_mut().zip(d_out).zip(out) {
                *g = (d - y * along) * inv;
            }
        });
    Ok(())
}

/// Whether the contracted dimension runs along `a`'s rows (`aᵀ·b`) or columns (`a·bᵀ`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Transposed {
    /// `out = a · bᵀ`, `a` is `m × k`, `b` is `n × k`.
    B,
    /// `out = aᵀ · b`, `a` is `k × m`, `b` is `k × n`.
    A,
}

pub(super) fn matmul(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    MatmulDims { m, n, k }: MatmulDims,
    alpha: f32,
    transposed: Transposed,
) -> BackendResult<()> {
    // (row stride, column stride) of the m × k left and k × n right operands.
    let (lhs, rhs) = match transposed {
        Transposed::B => ((k as isize, 1), (1, k as isize)),
        Transposed::A => ((1, m as isize), (n as isize, 1)),
    };
    // SAFETY: `checks::matmul` found `out` to hold `m × n` values, `a` `m × k` and `b` `n × k`:
    // what the product addresses, whichever operand is transposed; `out` is borrowed mutably,
    // so it overlaps neither input, and the product runs on rayon's pool inside this call.
    unsafe {
        gemm_f32(
            MatMut {
                ptr: out.as_mut_ptr(),
                rs: n as isize,
            },
            MatRef {
                ptr: a.as_ptr(),
                rs: lhs.0,
                cs: lhs.1,
            },
            MatRef {
                ptr: b.as_ptr(),
                rs: rhs.0,
                cs: rhs.1,
            },
            (m, n, k),
            alpha,
            false,
            Parallelism::Rayon(0),
        );
    }
    Ok(())
}

pub(super) fn ot_plans(
    plans: &mut [f32],
    sim: &[f32],
    layout: BatchLayout,
    params: &OtParams,
) -> BackendResult<BatchReport> {
    const OP: &str = "ot_plans";
    let per_image = layout.patches * layout.prompts * layout.classes;
    let len = layout.images * per_image;
    let one_image = BatchLayout {
        images: 1,
        ..layout
    };
    // The workspace with which the solver runs eight problems at a time, one per SIMD lane.
    let work_len = ot::batch_workspace_len(layout.patches, layout.prompts);
    // Each image's problems are independent: one rayon task per image, each with its own
    // solver workspace.
    plans[..len]
        .par_chunks_mut(per_image)
        .zip(sim[..len].par_chunks(per_image))
        .grain(per_image * params.max_iter as usize)
        .map_init(
            || vec![0.0f32; work_len],
            |work, (plans, sim)| crate::ot::solve_batch(sim, one_image, params, work, plans, None),
        )
        .try_reduce(BatchReport::default, |mut a, b| {
            a.merge(b);
            Ok(a)
        })
        .map_err(|source| BackendError::Ot { op: OP, source })
}

pub(super) fn ot_logits(
    logits: &mut [f32],
    sim: &[f32],
    plans: &[f32],
    layout: BatchLayout,
    scale: f32,
) -> BackendResult<()> {
    let BatchLayout {
        images,
        patches,
        prompts,
        classes,
    } = layout;
    let problem = patches * prompts;
    logits[..images * classes]
        .par_iter_mut()
        .enumerate()
        .grain(problem)
        .for_each(|(bc, logit)| {
            let (b, c) = (bc / classes, bc % classes);
            let plan = &plans[bc * problem..][..problem];
            let sim = &sim[b * problem * classes..][..problem * classes];
            let transported: f32 = plan
                .iter()
                .enumerate()
                .map(|(mn, t)| t * sim[mn * classes + c])
                .sum();
            *logit = scale * transported;
        });
    Ok(())
}

pub(super) fn ot_logits_backward(
    d_sim: &mut [f32],
    d_logits: &[f32],
    plans: &[f32],
    layout: BatchLayout,
    scale: f32,
) -> BackendResult<()> {
    let BatchLayout {
        images,
        patches,
        prompts,
        classes,
    } = layout;
    let problem = patches * prompts;
    d_sim[..images * problem * classes]
        .par_chunks_mut(problem * classes)
        .enumerate()
        .grain(problem * classes)
        .for_each(|(b, d_sim)| {
            for (mn, row) in d_sim.chunks_exact_mut(classes).enumerate() {
                for (c, d) in row.iter_mut().enumerate() {
                    let bc = b * classes + c;
                    *d = scale * d_logits[bc] * plans[bc * problem + mn];
                }
            }
        });
    Ok(())
}

pub(super) fn cross_entropy(
    d_logits: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    classes: usize,
) -> BackendResult<f32> {
    let batch = labels.len();
    let mut total = 0.0f64;
    for ((d, row), &label) in d_logits
        .chunks_exact_mut(classes)
        .zip(logits.chunks_exact(classes))
        .zip(labels)
    {
        // log-softmax with the row maximum subtracted: exact for logits of any size.
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let sum: f32 = row.iter().map(|x| (x - max).exp()).sum();
        total += f64::from(max + sum.ln() - row[label as usize]);
        for (k, (g, x)) in d.iter_mut().zip(row).enumerate() {
            let p = (x - max).exp() / sum;
            *g = (p - f32::from(k == label as usize)) / batch as f32;
        }
    }
    Ok((total / batch as f64) as f32)
}
