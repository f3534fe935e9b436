//! The CPU backend: host buffers, the `gemm` crate for matrix products and rayon for all cores.
//!
//! Large products (the linear layers) run one `gemm` call split over all rayon threads. Attention
//! is many small per-(sequence, head) products: a rayon loop over those pairs, each product
//! single-threaded inside, so the two levels never nest thread pools. Row-wise layers (LayerNorm,
//! activations, gathers) are rayon loops over rows. The convolutional layers of the ResNet image
//! tower are in [`conv`].

mod conv;

use gemm::Parallelism;
use rayon::prelude::*;

mod head;

use fedotp_core::ot::{BatchLayout, BatchReport, OtParams};

use crate::memory::try_zeroed;

use super::{
    Activation, AttentionShape, Backend, BackendError, BackendResult, BatchNorm, Checked, Conv2d,
    LayerNorm, Linear, MapShape, MatmulDims, PatchShape, PromptShape, SeqShape,
};

/// Runs every layer on the host CPU, using all threads of rayon's global pool.
///
/// # Example
///
/// ```
/// use fedotp_host::backend::{Backend, Cpu, Linear};
///
/// let cpu = Cpu::new();
/// // y = x · Wᵀ + b with W = [[1, 2], [3, 4]], b = [10, 20]
/// let layer = Linear {
///     weight: cpu.upload(&[1.0, 2.0, 3.0, 4.0])?,
///     bias: Some(cpu.upload(&[10.0, 20.0])?),
///     in_features: 2,
///     out_features: 2,
/// };
/// let x = cpu.upload(&[1.0, 1.0])?;
/// let mut y = cpu.alloc(2)?;
/// cpu.linear(&mut y, &x, &layer, 1)?;
/// assert_eq!(cpu.download(&y, 2)?, vec![13.0, 27.0]);
/// # Ok::<(), fedotp_host::backend::BackendError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

impl Cpu {
    /// The CPU backend.
    pub fn new() -> Self {
        Cpu
    }
}

/// A read-only strided matrix: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct MatRef {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// A writable matrix with unit column stride: element `(i, j)` at `ptr + i·rs + j`.
#[derive(Clone, Copy)]
struct MatMut {
    ptr: *mut f32,
    rs: isize,
}

/// `dst (m×n) = scale · lhs (m×k) · rhs (k×n)`, plus the old `dst` when `accumulate`.
///
/// # Safety
/// The three views must address valid, properly sized memory, and `dst` must not overlap the
/// inputs or memory another thread writes.
unsafe fn gemm_f32(
    dst: MatMut,
    lhs: MatRef,
    rhs: MatRef,
    (m, n, k): (usize, usize, usize),
    scale: f32,
    accumulate: bool,
    parallelism: Parallelism,
) {
    // gemm computes dst := alpha·dst + beta·lhs·rhs (alpha and beta swapped relative to BLAS),
    // reading dst only when `read_dst` is set.
    // SAFETY: the caller upholds this function's contract, which is gemm's: every element the
    // three views address for an m × n × k product lies in its live buffer, and `dst` overlaps
    // neither input nor memory another thread accesses during the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            1,
            dst.rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Which product of a linear layer's weight `W` (`out × in`) [`times_weight`] forms.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// `dst (rows × out) += src (rows × in) · Wᵀ`, onto the bias already in `dst` if any.
    Forward,
    /// `dst (rows × in) = src (rows × out) · W`.
    InputGradient,
}

/// One multi-threaded GEMM between `rows` rows of `src` and a linear layer's weight, for
/// [`Backend::linear`] or [`Backend::linear_backward`], whose checks bound `dst`, `src` and the
/// weight.
fn times_weight(
    dst: &mut [f32],
    src: &[f32],
    layer: &Linear<Vec<f32>>,
    rows: usize,
    direction: Direction,
) {
    let (n_in, n_out) = (layer.in_features, layer.out_features);
    let (src_cols, dst_cols, weight) = match direction {
        // Wᵀ: element (i, o) is W[o, i].
        Direction::Forward => (n_in, n_out, (1, n_in as isize)),
        Direction::InputGradient => (n_out, n_in, (n_in as isize, 1)),
    };
    // SAFETY: the op's checks (`checks::linear`, `checks::linear_backward`) found `dst` to hold
    // `rows × dst_cols`, `src` `rows × src_cols` and the weight `out × in` values, exactly what
    // the product addresses; `dst` is borrowed mutably, so it overlaps neither input, and the
    // product runs on rayon's pool inside this call.
    unsafe {
        gemm_f32(
            MatMut {
                ptr: dst.as_mut_ptr(),
                rs: dst_cols as isize,
            },
            MatRef {
                ptr: src.as_ptr(),
                rs: src_cols as isize,
                cs: 1,
            },
            MatRef {
                ptr: layer.weight.as_ptr(),
                rs: weight.0,
                cs: weight.1,
            },
            (rows, dst_cols, src_cols),
            1.0,
            direction == Direction::Forward && layer.bias.is_some(),
            Parallelism::Rayon(0),
        );
    }
}

/// Floats an op must touch before it is split across threads. Below it, handing work to another
/// thread (a wake-up, a steal, a join: microseconds) costs more than doing it (about a
/// nanosecond a float), and the tiny model's ops — a few thousand floats each — would spend more
/// time waking threads than computing.
const MIN_PARALLEL_WORK: usize = 1 << 16;

/// The grain of the CPU backend's parallel loops.
pub(super) trait Grain: IndexedParallelIterator {
    /// Splits into tasks of at least [`MIN_PARALLEL_WORK`] floats, each item carrying about
    /// `item_work`: an op smaller than that stays one task, which the calling worker runs
    /// without waking another thread ([`Cpu::run`] puts the caller on a worker).
    fn grain(self, item_work: usize) -> rayon::iter::MinLen<Self> {
        self.with_min_len((MIN_PARALLEL_WORK / item_work.max(1)).max(1))
    }
}

impl<I: IndexedParallelIterator> Grain for I {}

/// A raw pointer that rayon tasks may share because each task writes a disjoint region.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: a raw pointer has no thread affinity; moving it to another thread is sound because
// each use gives every task a region of the buffer that no other task reads or writes, and the
// buffer outlives the tasks (they finish inside the borrowing call).
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`: the tasks share the pointer, each writing only its own region.
unsafe impl Sync for SharedMut {}
impl SharedMut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl Backend for Cpu {
    type Buf = Vec<f32>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn buffers_in_host_memory(&self) -> bool {
        true
    }

    fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        // `scope` runs its closure on a worker of the global pool (at once when the caller is
        // one): one hand-off for the whole sequence instead of one per operation.
        rayon::scope(|_| work())
    }

    fn alloc(&self, len: usize) -> BackendResult<Vec<f32>> {
        try_zeroed("a buffer", len).map_err(|source| BackendError::OutOfMemory {
            op: "alloc",
            source,
        })
    }

    fn upload(&self, data: &[f32]) -> BackendResult<Vec<f32>> {
        let mut copy = try_zeroed("a copy of a buffer", data.len()).map_err(|source| {
            BackendError::OutOfMemory {
                op: "upload",
                source,
            }
        })?;
        copy.copy_from_slice(data);
        Ok(copy)
    }

    fn upload_vec(&self, data: Vec<f32>) -> BackendResult<Vec<f32>> {
        Ok(data)
    }

    fn download_unchecked(
        &self,
        _: Checked,
        buf: &Vec<f32>,
        len: usize,
    ) -> BackendResult<Vec<f32>> {
        Ok(buf[..len].to_vec())
    }

    fn buf_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn prompt_embed_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        table: &Vec<f32>,
        ids: &[u32],
        ctx: &Vec<f32>,
        set: &[u32],
        shape: PromptShape,
    ) -> BackendResult<()> {
        let PromptShape {
            batch,
            seq,
            width,
            n_ctx,
            ..
        } = shape;
        out[..batch * seq * width]
            .par_chunks_mut(seq * width)
            .enumerate()
            .grain(seq * width)
            .for_each(|(s, out_seq)| {
                for (t, row) in out_seq.chunks_mut(width).enumerate() {
                    let src = if (1..=n_ctx).contains(&t) {
                        let at = (set[s] as usize * n_ctx + t - 1) * width;
                        &ctx[at..at + width]
                    } else {
                        let at = ids[s * seq + t] as usize * width;
                        &table[at..at + width]
                    };
                    row.copy_from_slice(src);
                }
            });
        Ok(())
    }

    fn prompt_embed_backward_unchecked(
        &self,
        _: Checked,
        d_ctx: &mut Vec<f32>,
        d_out: &Vec<f32>,
        set: &[u32],
        shape: PromptShape,
    ) -> BackendResult<()> {
        let PromptShape {
            batch,
            seq,
            width,
            n_ctx,
            n_sets,
        } = shape;
        let ctx_len = n_ctx * width;
        // One task per context set, each summing its own sequences in order (deterministic).
        d_ctx[..n_sets * ctx_len]
            .par_chunks_mut(ctx_len.max(1))
            .enumerate()
            .grain(batch * ctx_len)
            .for_each(|(k, d_set)| {
                d_set.fill(0.0);
                for s in (0..batch).filter(|&s| set[s] as usize == k) {
                    let at = (s * seq + 1) * width;
                    for (d, g) in d_set.iter_mut().zip(&d_out[at..at + ctx_len]) {
                        *d += g;
                    }
                }
            });
        Ok(())
    }

    fn position_embed_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        tokens: &Vec<f32>,
        pos: &Vec<f32>,
        in_seq: usize,
        out_shape: SeqShape,
    ) -> BackendResult<()> {
        let SeqShape { seq, width, .. } = out_shape;
        out[..out_shape.len()]
            .par_chunks_mut(seq * width)
            .enumerate()
            .grain(seq * width)
            .for_each(|(s, out_seq)| {
                let src = &tokens[s * in_seq * width..][..seq * width];
                for ((o, x), p) in out_seq.iter_mut().zip(src).zip(&pos[..seq * width]) {
                    *o = x + p;
                }
            });
        Ok(())
    }

    fn position_embed_backward_unchecked(
        &self,
        _: Checked,
        d_tokens: &mut Vec<f32>,
        d_out: &Vec<f32>,
        in_seq: usize,
        out_shape: SeqShape,
    ) -> BackendResult<()> {
        let SeqShape { batch, seq, width } = out_shape;
        d_tokens[..batch * in_seq * width]
            .par_chunks_mut(in_seq * width)
            .enumerate()
            .grain(in_seq * width)
            .for_each(|(s, d_seq)| {
                let (kept, padded) = d_seq.split_at_mut(seq * width);
                kept.copy_from_slice(&d_out[s * seq * width..][..seq * width]);
                padded.fill(0.0);
            });
        Ok(())
    }

    fn extract_patches_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        images: &Vec<f32>,
        shape: PatchShape,
    ) -> BackendResult<()> {
        let PatchShape {
            batch,
            channels,
            image_size,
            patch_size,
        } = shape;
        let (grid, patch_len) = (shape.grid(), shape.patch_len());
        let image_len = channels * image_size * image_size;
        out[..batch * shape.patches() * patch_len]
            .par_chunks_mut(patch_len)
            .enumerate()
            .grain(patch_len)
            .for_each(|(i, patch)| {
                let (b, m) = (i / shape.patches(), i % shape.patches());
                let (gy, gx) = (m / grid, m % grid);
                let image = &images[b * image_len..][..image_len];
                for c in 0..channels {
                    for y in 0..patch_size {
                        let src =
                            (c * image_size + gy * patch_size + y) * image_size + gx * patch_size;
                        let dst = (c * patch_size + y) * patch_size;
                        patch[dst..dst + patch_size].copy_from_slice(&image[src..src + patch_size]);
                    }
                }
            });
        Ok(())
    }

    fn vit_tokens_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        patches: &Vec<f32>,
        class: &Vec<f32>,
        pos: &Vec<f32>,
        shape: SeqShape,
    ) -> BackendResult<()> {
        let SeqShape { seq, width, .. } = shape;
        out[..shape.len()]
            .par_chunks_mut(width)
            .enumerate()
            .grain(width)
            .for_each(|(row, o)| {
                let (b, t) = (row / seq, row % seq);
                let src = if t == 0 {
                    &class[..width]
                } else {
                    &patches[(b * (seq - 1) + t - 1) * width..][..width]
                };
                for ((o, x), p) in o.iter_mut().zip(src).zip(&pos[t * width..]) {
                    *o = x + p;
                }
            });
        Ok(())
    }

    fn layer_norm_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        (mean, rstd): (&mut Vec<f32>, &mut Vec<f32>),
        inp: &Vec<f32>,
        ln: &LayerNorm<Vec<f32>>,
        rows: usize,
    ) -> BackendResult<()> {
        let width = ln.width;
        let (weight, bias) = (&ln.weight[..width], &ln.bias[..width]);
        out[..rows * width]
            .par_chunks_mut(width)
            .zip(inp[..rows * width].par_chunks(width))
            .zip(mean[..rows].par_iter_mut().zip(rstd[..rows].par_iter_mut()))
            .grain(3 * width)
            .for_each(|((o, x), (m, r))| {
                // Two passes in f32, like PyTorch's CPU kernel (mean, then centred variance).
                let mu = x.iter().sum::<f32>() / width as f32;
                let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / width as f32;
                let s = 1.0 / (var + ln.eps).sqrt();
                for (((o, x), w), b) in o.iter_mut().zip(x).zip(weight).zip(bias) {
                    *o = (x - mu) * s * w + b;
                }
                *m = mu;
                *r = s;
            });
        Ok(())
    }

    fn layer_norm_backward_unchecked(
        &self,
        _: Checked,
        d_inp: &mut Vec<f32>,
        d_out: &Vec<f32>,
        inp: &Vec<f32>,
        (mean, rstd): (&Vec<f32>, &Vec<f32>),
        ln: &LayerNorm<Vec<f32>>,
        rows: usize,
    ) -> BackendResult<()> {
        let width = ln.width;
        let weight = &ln.weight[..width];
        d_inp[..rows * width]
            .par_chunks_mut(width)
            .enumerate()
            .grain(4 * width)
            .for_each(|(row, dx)| {
                let x = &inp[row * width..][..width];
                let dy = &d_out[row * width..][..width];
                let (mu, s) = (mean[row], rstd[row]);
                // With n = (x - μ)·s and g = γ ⊙ dy:
                //   dx = s · (g - mean(g) - n · mean(g ⊙ n))
                let (mut g_mean, mut gn_mean) = (0.0f32, 0.0f32);
                for ((x, dy), w) in x.iter().zip(dy).zip(weight) {
                    let g = w * dy;
                    g_mean += g;
                    gn_mean += g * (x - mu) * s;
                }
                g_mean /= width as f32;
                gn_mean /= width as f32;
                for (((dx, x), dy), w) in dx.iter_mut().zip(x).zip(dy).zip(weight) {
                    let n = (x - mu) * s;
                    *dx += s * (w * dy - g_mean - n * gn_mean);
                }
            });
        Ok(())
    }

    fn linear_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        layer: &Linear<Vec<f32>>,
        rows: usize,
    ) -> BackendResult<()> {
        let n_out = layer.out_features;
        if let Some(bias) = &layer.bias {
            out[..rows * n_out]
                .par_chunks_mut(n_out)
                .grain(n_out)
                .for_each(|row| row.copy_from_slice(&bias[..n_out]));
        }
        times_weight(out, inp, layer, rows, Direction::Forward);
        Ok(())
    }

    fn linear_backward_unchecked(
        &self,
        _: Checked,
        d_inp: &mut Vec<f32>,
        d_out: &Vec<f32>,
        layer: &Linear<Vec<f32>>,
        rows: usize,
    ) -> BackendResult<()> {
        times_weight(d_inp, d_out, layer, rows, Direction::InputGradient);
        Ok(())
    }

    fn attention_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        probs: &mut Vec<f32>,
        qkv: &Vec<f32>,
        shape: AttentionShape,
    ) -> BackendResult<()> {
        let AttentionShape {
            seq,
            heads,
            head_dim,
            causal,
            ..
        } = shape;
        let width = shape.width();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let out_ptr = SharedMut(out.as_mut_ptr());
        probs[..shape.probs_len()]
            .par_chunks_mut(seq * seq)
            .enumerate()
            .grain(2 * seq * seq * head_dim)
            .for_each(|(bh, p)| {
                let (b, h) = (bh / heads, bh % heads);
                let q = qkv[b * seq * 3 * width + h * head_dim..].as_ptr();
                let (k, v) = (q.wrapping_add(width), q.wrapping_add(2 * width));
                let row = 3 * width as isize;
                // SAFETY: `checks::attention` found `qkv` to hold `batch × seq × 3·width`
                // values, so the `seq × head_dim` blocks of Q and K of head `h` of sequence `b`
                // (rows `3·width` apart) lie inside it; `p` is this task's own `seq × seq` chunk
                // of `probs`, a buffer distinct from `qkv`.
                unsafe {
                    // scores = scale · Q Kᵀ
                    gemm_f32(
                        MatMut {
                            ptr: p.as_mut_ptr(),
                            rs: seq as isize,
                        },
                        MatRef {
                            ptr: q,
                            rs: row,
                            cs: 1,
                        },
                        MatRef {
                            ptr: k,
                            rs: 1,
                            cs: row,
                        },
                        (seq, seq, head_dim),
                        scale,
                        false,
                        Parallelism::None,
                    );
                }
                for (i, r) in p.chunks_mut(seq).enumerate() {
                    let visible = if causal { i + 1 } else { seq };
                    let max = r[..visible]
                        .iter()
                        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    let mut sum = 0.0;
                    for x in &mut r[..visible] {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    for x in &mut r[..visible] {
                        *x /= sum;
                    }
                    r[visible..].fill(0.0);
                }
                // SAFETY: `out` holds `batch × seq × width` values (checked), and this task
                // writes only its `seq × head_dim` block — the columns of head `h` in the rows of
                // sequence `b` — which no other task reads or writes; `p` and V (inside `qkv`,
                // as above) are only read.
                unsafe {
                    // out_h = P V
                    gemm_f32(
                        MatMut {
                            ptr: out_ptr.get().add(b * seq * width + h * head_dim),
                            rs: width as isize,
                        },
                        MatRef {
                            ptr: p.as_ptr(),
                            rs: seq as isize,
                            cs: 1,
                        },
                        MatRef {
                            ptr: v,
                            rs: row,
                            cs: 1,
                        },
                        (seq, head_dim, seq),
                        1.0,
                        false,
                        Parallelism::None,
                    );
                }
            });
        Ok(())
    }

    fn attention_backward_unchecked(
        &self,
        _: Checked,
        d_qkv: &mut Vec<f32>,
        d_out: &Vec<f32>,
        qkv: &Vec<f32>,
        probs: &Vec<f32>,
        shape: AttentionShape,
    ) -> BackendResult<()> {
        let AttentionShape {
            batch,
            seq,
            heads,
            head_dim,
            ..
        } = shape;
        let width = shape.width();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let d_qkv_ptr = SharedMut(d_qkv.as_mut_ptr());
        let (row, seq_i) = (3 * width as isize, seq as isize);
        (0..batch * heads)
            .into_par_iter()
            .grain(4 * seq * seq * head_dim)
            .for_each(|bh| {
                let (b, h) = (bh / heads, bh % heads);
                let p = &probs[bh * seq * seq..][..seq * seq];
                let at = b * seq * 3 * width + h * head_dim;
                let q = qkv[at..].as_ptr();
                let (k, v) = (q.wrapping_add(width), q.wrapping_add(2 * width));
                let d_o = d_out[b * seq * width + h * head_dim..].as_ptr();
                let mut dp = vec![0.0f32; seq * seq];
                // SAFETY: `checks::attention_backward` found `qkv` and `d_qkv` to hold
                // `batch × seq × 3·width` values, `d_out` `batch × seq × width` and `probs`
                // `batch × heads × seq × seq`, so every block addressed here — head `h` of sequence
                // `b` — lies inside its buffer. This task writes only the dV block of that head in
                // `d_qkv`, which no other task touches, and its own `dp`; the rest is only read.
                unsafe {
                    let dv = d_qkv_ptr.get().add(at + 2 * width);
                    let p_t = MatRef {
                        ptr: p.as_ptr(),
                        rs: 1,
                        cs: seq_i,
                    };
                    let d_o = MatRef {
                        ptr: d_o,
                        rs: width as isize,
                        cs: 1,
                    };
                    let dims_pv = (seq, head_dim, seq);
                    // dV = Pᵀ dO
                    let dv_mat = MatMut { ptr: dv, rs: row };
                    gemm_f32(dv_mat, p_t, d_o, dims_pv, 1.0, false, Parallelism::None);
                    // dP = dO Vᵀ
                    let dp_mat = MatMut {
                        ptr: dp.as_mut_ptr(),
                        rs: seq_i,
                    };
                    let v_t = MatRef {
                        ptr: v,
                        rs: 1,
                        cs: row,
                    };
                    gemm_f32(
                        dp_mat,
                        d_o,
                        v_t,
                        (seq, seq, head_dim),
                        1.0,
                        false,
                        Parallelism::None,
                    );
                }
                // Softmax backward: dS = P ⊙ (dP - rowsum(dP ⊙ P)); masked entries have P = 0.
                for (dp_row, p_row) in dp.chunks_mut(seq).zip(p.chunks(seq)) {
                    let dot: f32 = dp_row.iter().zip(p_row).map(|(a, b)| a * b).sum();
                    for (d, p) in dp_row.iter_mut().zip(p_row) {
                        *d = p * (*d - dot);
                    }
                }
                // SAFETY: as above; this task writes only the dQ and dK blocks of head `h` of
                // sequence `b` in `d_qkv`, which no other task touches, and reads its own `dp`.
                unsafe {
                    let dq = d_qkv_ptr.get().add(at);
                    let dk = dq.add(width);
                    let ds = MatRef {
                        ptr: dp.as_ptr(),
                        rs: seq_i,
                        cs: 1,
                    };
                    let ds_t = MatRef {
                        ptr: dp.as_ptr(),
                        rs: 1,
                        cs: seq_i,
                    };
                    let dims = (seq, head_dim, seq);
                    // scores = scale · Q Kᵀ ⇒ dQ = scale · dS K, dK = scale · dSᵀ Q
                    let k_ref = MatRef {
                        ptr: k,
                        rs: row,
                        cs: 1,
                    };
                    let q_ref = MatRef {
                        ptr: q,
                        rs: row,
                        cs: 1,
                    };
                    gemm_f32(
                        MatMut { ptr: dq, rs: row },
                        ds,
                        k_ref,
                        dims,
                        scale,
                        false,
                        Parallelism::None,
                    );
                    gemm_f32(
                        MatMut { ptr: dk, rs: row },
                        ds_t,
                        q_ref,
                        dims,
                        scale,
                        false,
                        Parallelism::None,
                    );
                }
            });
        Ok(())
    }

    fn activation_unchecked(
        &self,
        _: Checked,
        act: Activation,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        len: usize,
    ) -> BackendResult<()> {
        out[..len]
            .par_chunks_mut(4096)
            .zip(inp[..len].par_chunks(4096))
            .grain(8 * 4096)
            .for_each(|(o, x)| {
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = act.forward(x);
                }
            });
        Ok(())
    }

    fn activation_backward_unchecked(
        &self,
        _: Checked,
        act: Activation,
        d: &mut Vec<f32>,
        inp: &Vec<f32>,
        len: usize,
    ) -> BackendResult<()> {
        d[..len]
            .par_chunks_mut(4096)
            .zip(inp[..len].par_chunks(4096))
            .grain(8 * 4096)
            .for_each(|(d, x)| {
                for (d, &x) in d.iter_mut().zip(x) {
                    *d *= act.derivative(x);
                }
            });
        Ok(())
    }

    fn add_assign_unchecked(
        &self,
        _: Checked,
        acc: &mut Vec<f32>,
        x: &Vec<f32>,
        len: usize,
    ) -> BackendResult<()> {
        acc[..len]
            .par_chunks_mut(4096)
            .zip(x[..len].par_chunks(4096))
            .grain(4096)
            .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, x)| *a += x));
        Ok(())
    }

    fn gather_rows_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        positions: &[u32],
        shape: SeqShape,
    ) -> BackendResult<()> {
        let SeqShape { batch, seq, width } = shape;
        for (s, o) in out[..batch * width].chunks_mut(width).enumerate() {
            o.copy_from_slice(&inp[(s * seq + positions[s] as usize) * width..][..width]);
        }
        Ok(())
    }

    fn gather_rows_backward_unchecked(
        &self,
        _: Checked,
        d_inp: &mut Vec<f32>,
        d_out: &Vec<f32>,
        positions: &[u32],
        shape: SeqShape,
    ) -> BackendResult<()> {
        let SeqShape { seq, width, .. } = shape;
        d_inp[..shape.len()]
            .par_chunks_mut(seq * width)
            .enumerate()
            .grain(seq * width)
            .for_each(|(s, d_seq)| {
                d_seq.fill(0.0);
                let at = positions[s] as usize * width;
                d_seq[at..at + width].copy_from_slice(&d_out[s * width..][..width]);
            });
        Ok(())
    }

    fn normalize_rows_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        norms: &mut Vec<f32>,
        inp: &Vec<f32>,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()> {
        head::normalize_rows(out, norms, inp, rows, dim)
    }

    fn normalize_rows_backward_unchecked(
        &self,
        _: Checked,
        d_inp: &mut Vec<f32>,
        d_out: &Vec<f32>,
        out: &Vec<f32>,
        norms: &Vec<f32>,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()> {
        head::normalize_rows_backward(d_inp, d_out, out, norms, rows, dim)
    }

    fn matmul_nt_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        a: &Vec<f32>,
        b: &Vec<f32>,
        dims: MatmulDims,
        alpha: f32,
    ) -> BackendResult<()> {
        head::matmul(out, a, b, dims, alpha, head::Transposed::B)
    }

    fn matmul_tn_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        a: &Vec<f32>,
        b: &Vec<f32>,
        dims: MatmulDims,
        alpha: f32,
    ) -> BackendResult<()> {
        head::matmul(out, a, b, dims, alpha, head::Transposed::A)
    }

    fn ot_plans_unchecked(
        &self,
        _: Checked,
        plans: &mut Vec<f32>,
        sim: &Vec<f32>,
        layout: BatchLayout,
        params: &OtParams,
    ) -> BackendResult<BatchReport> {
        head::ot_plans(plans, sim, layout, params)
    }

    fn ot_logits_unchecked(
        &self,
        _: Checked,
        logits: &mut Vec<f32>,
        sim: &Vec<f32>,
        plans: &Vec<f32>,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()> {
        head::ot_logits(logits, sim, plans, layout, scale)
    }

    fn ot_logits_backward_unchecked(
        &self,
        _: Checked,
        d_sim: &mut Vec<f32>,
        d_logits: &Vec<f32>,
        plans: &Vec<f32>,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()> {
        head::ot_logits_backward(d_sim, d_logits, plans, layout, scale)
    }

    fn cross_entropy_unchecked(
        &self,
        _: Checked,
        d_logits: &mut Vec<f32>,
        logits: &Vec<f32>,
        labels: &[u32],
        classes: usize,
    ) -> BackendResult<f32> {
        head::cross_entropy(d_logits, logits, labels, classes)
    }

    fn to_channels_last_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        shape: MapShape,
    ) -> BackendResult<()> {
        conv::to_channels_last(out, inp, shape)
    }

    fn conv2d_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        conv: &Conv2d<Vec<f32>>,
        shape: MapShape,
    ) -> BackendResult<()> {
        conv::conv2d(out, inp, conv, shape)
    }

    fn batch_norm_unchecked(
        &self,
        _: Checked,
        x: &mut Vec<f32>,
        bn: &BatchNorm<Vec<f32>>,
        rows: usize,
    ) -> BackendResult<()> {
        conv::batch_norm(x, bn, rows)
    }

    fn relu_unchecked(&self, _: Checked, x: &mut Vec<f32>, len: usize) -> BackendResult<()> {
        conv::relu(x, len)
    }

    fn avg_pool2d_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        shape: MapShape,
        kernel: usize,
    ) -> BackendResult<()> {
        conv::avg_pool2d(out, inp, shape, kernel)
    }

    fn attention_pool_tokens_unchecked(
        &self,
        _: Checked,
        out: &mut Vec<f32>,
        map: &Vec<f32>,
        pos: &Vec<f32>,
        shape: MapShape,
    ) -> BackendResult<()> {
        conv::attention_pool_tokens(out, map, pos, shape)
    }
}
