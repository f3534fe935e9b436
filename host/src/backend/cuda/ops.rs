//! [`Backend`] for [`Cuda`]: each op's implementation, behind the checks of its front door —
//! kernels and cuBLAS products queued on the backend's stream.

use fedotp_core::ot::{BatchLayout, BatchReport, OtParams};

use super::error::device_error;
use super::gemm::{GemmShape, Matrices};
use super::kernels::{elementwise, warp_per_row, Arg, Kernel};
use super::{conv, head};
use super::{Cuda, CudaBuf};
use crate::backend::{
    Activation, AttentionShape, Backend, BackendResult, BatchNorm, Checked, Conv2d, LayerNorm,
    Linear, MapShape, MatmulDims, PatchShape, PromptShape, SeqShape, Turn,
};

/// A dimension as a kernel's `int`, refusing values that do not fit.
pub(super) fn int(op: &'static str, what: &'static str, value: usize) -> BackendResult<Arg> {
    i32::try_from(value).map(Arg::I32).map_err(|_| {
        device_error(
            op,
            format!("{what} = {value} exceeds the kernels' 32-bit dimensions"),
        )
    })
}

/// A length as a kernel's `long long`.
pub(super) fn long(value: usize) -> Arg {
    Arg::I64(value as i64)
}

impl Cuda {
    /// `C = op(A)·op(B)` products of [`Backend::attention`] and its backward: one per (sequence,
    /// head), with the backend's math mode.
    fn head_gemm(
        &self,
        op: &'static str,
        shape: AttentionShape,
        (m, n, k): (usize, usize, usize),
        (trans_a, trans_b): (bool, bool),
        (a, b, c): (Matrices, Matrices, Matrices),
        alpha: f32,
    ) -> BackendResult<()> {
        let dims = GemmShape {
            m,
            n,
            k,
            trans_a,
            trans_b,
            batch: (shape.batch, shape.heads),
        };
        self.gemm(op, self.math, dims, a, b, c, alpha, 0.0)
    }
}

/// Where attention's operands live: per (sequence, head) matrices inside `qkv`-shaped,
/// `out`-shaped and probability-shaped buffers.
struct AttentionLayout {
    seq: usize,
    heads: usize,
    head_dim: usize,
    width: usize,
}

impl AttentionLayout {
    fn new(shape: AttentionShape) -> Self {
        AttentionLayout {
            seq: shape.seq,
            heads: shape.heads,
            head_dim: shape.head_dim,
            width: shape.width(),
        }
    }

    /// Part `part` (0 queries, 1 keys, 2 values) of a `batch × seq × 3·width` buffer at `base`.
    fn qkv(&self, base: u64, part: usize) -> Matrices {
        let row = 3 * self.width;
        Matrices {
            ptr: base + (part * self.width * std::mem::size_of::<f32>()) as u64,
            ld: row,
            stride: (self.seq * row, self.head_dim),
        }
    }

    /// A `batch × seq × width` buffer at `base`, heads side by side.
    fn merged(&self, base: u64) -> Matrices {
        Matrices {
            ptr: base,
            ld: self.width,
            stride: (self.seq * self.width, self.head_dim),
        }
    }

    /// A `batch × heads × seq × seq` buffer at `base`.
    fn scores(&self, base: u64) -> Matrices {
        let square = self.seq * self.seq;
        Matrices {
            ptr: base,
            ld: self.seq,
            stride: (self.heads * square, square),
        }
    }
}

impl Backend for Cuda {
    type Buf = CudaBuf;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn buffers_in_host_memory(&self) -> bool {
        false
    }

    fn take_turn(&self) -> BackendResult<Turn<'_>> {
        Turn::of(&self.turn)
    }

    fn alloc(&self, len: usize) -> BackendResult<CudaBuf> {
        // At least one element: the driver refuses empty allocations.
        let mem = self.engine.alloc_zeros("alloc", len.max(1))?;
        Ok(CudaBuf { mem, len })
    }

    fn upload(&self, data: &[f32]) -> BackendResult<CudaBuf> {
        if data.is_empty() {
            return self.alloc(0);
        }
        let mem = self.engine.upload("upload", data)?;
        Ok(CudaBuf {
            mem,
            len: data.len(),
        })
    }

    fn download_unchecked(&self, _: Checked, buf: &CudaBuf, len: usize) -> BackendResult<Vec<f32>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        self.engine.download("download", &buf.mem, len)
    }

    fn buf_len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn prompt_embed_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        table: &CudaBuf,
        ids: &[u32],
        ctx: &CudaBuf,
        set: &[u32],
        shape: PromptShape,
    ) -> BackendResult<()> {
        const OP: &str = "prompt_embed";
        let PromptShape {
            batch,
            seq,
            width,
            n_ctx,
            ..
        } = shape;
        let len = batch * seq * width;
        if len == 0 {
            return Ok(());
        }
        let ids = self.upload_indices(OP, ids)?;
        let set = self.upload_indices(OP, set)?;
        let args = [
            self.ptr(out),
            self.ptr(table),
            self.index_ptr(&ids),
            self.ptr(ctx),
            self.index_ptr(&set),
            int(OP, "batch", batch)?,
            int(OP, "seq", seq)?,
            int(OP, "width", width)?,
            int(OP, "n_ctx", n_ctx)?,
        ];
        self.launch(OP, Kernel::PromptEmbed, elementwise(len), &args)
    }

    fn prompt_embed_backward_unchecked(
        &self,
        _: Checked,
        d_ctx: &mut CudaBuf,
        d_out: &CudaBuf,
        set: &[u32],
        shape: PromptShape,
    ) -> BackendResult<()> {
        const OP: &str = "prompt_embed_backward";
        let PromptShape {
            batch,
            seq,
            width,
            n_ctx,
            n_sets,
        } = shape;
        let len = n_sets * n_ctx * width;
        if len == 0 {
            return Ok(());
        }
        let set = self.upload_indices(OP, set)?;
        let args = [
            self.ptr(d_ctx),
            self.ptr(d_out),
            self.index_ptr(&set),
            int(OP, "batch", batch)?,
            int(OP, "seq", seq)?,
            int(OP, "width", width)?,
            int(OP, "n_ctx", n_ctx)?,
            int(OP, "n_sets", n_sets)?,
        ];
        self.launch(OP, Kernel::PromptEmbedBackward, elementwise(len), &args)
    }

    fn position_embed_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        tokens: &CudaBuf,
        pos: &CudaBuf,
        in_seq: usize,
        out_shape: SeqShape,
    ) -> BackendResult<()> {
        const OP: &str = "position_embed";
        let SeqShape { batch, seq, width } = out_shape;
        if out_shape.is_empty() {
            return Ok(());
        }
        let args = [
            self.ptr(out),
            self.ptr(tokens),
            self.ptr(pos),
            int(OP, "batch", batch)?,
            int(OP, "seq", seq)?,
            int(OP, "width", width)?,
            int(OP, "in_seq", in_seq)?,
        ];
        self.launch(
            OP,
            Kernel::PositionEmbed,
            elementwise(out_shape.len()),
            &args,
        )
    }

    fn position_embed_backward_unchecked(
        &self,
        _: Checked,
        d_tokens: &mut CudaBuf,
        d_out: &CudaBuf,
        in_seq: usize,
        out_shape: SeqShape,
    ) -> BackendResult<()> {
        const OP: &str = "position_embed_backward";
        let SeqShape { batch, seq, width } = out_shape;
        let len = batch * in_seq * width;
        if len == 0 {
            return Ok(());
        }
        let args = [
            self.ptr(d_tokens),
            self.ptr(d_out),
            int(OP, "batch", batch)?,
            int(OP, "seq", seq)?,
            int(OP, "width", width)?,
            int(OP, "in_seq", in_seq)?,
        ];
        self.launch(OP, Kernel::PositionEmbedBackward, elementwise(len), &args)
    }

    fn extract_patches_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        images: &CudaBuf,
        shape: PatchShape,
    ) -> BackendResult<()> {
        const OP: &str = "extract_patches";
        let PatchShape {
            batch,
            channels,
            image_size,
            patch_size,
        } = shape;
        let len = batch * shape.patches() * shape.patch_len();
        if len == 0 {
            return Ok(());
        }
        let args = [
            self.ptr(out),
            self.ptr(images),
            int(OP, "batch", batch)?,
            int(OP, "channels", channels)?,
            int(OP, "image_size", image_size)?,
            int(OP, "patch_size", patch_size)?,
        ];
        self.launch(OP, Kernel::ExtractPatches, elementwise(len), &args)
    }

    fn vit_tokens_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        patches: &CudaBuf,
        class: &CudaBuf,
        pos: &CudaBuf,
        shape: SeqShape,
    ) -> BackendResult<()> {
        const OP: &str = "vit_tokens";
        let SeqShape { batch, seq, width } = shape;
        if shape.is_empty() {
            return Ok(());
        }
        let args = [
            self.ptr(out),
            self.ptr(patches),
            self.ptr(class),
            self.ptr(pos),
            int(OP, "batch", batch)?,
            int(OP, "seq", seq)?,
            int(OP, "width", width)?,
        ];
        self.launch(OP, Kernel::VitTokens, elementwise(shape.len()), &args)
    }

    fn layer_norm_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        (mean, rstd): (&mut CudaBuf, &mut CudaBuf),
        inp: &CudaBuf,
        ln: &LayerNorm<CudaBuf>,
        rows: usize,
    ) -> BackendResult<()> {
        const OP: &str = "layer_norm";
        let width = ln.width;
        if rows * width == 0 {
            return Ok(());
        }
        let args = [
            self.ptr(out),
            self.ptr(mean),
            self.ptr(rstd),
            self.ptr(inp),
            self.ptr(&ln.weight),
            self.ptr(&ln.bias),
            int(OP, "rows", rows)?,
            int(OP, "width", width)?,
            Arg::F32(ln.eps),
        ];
        self.launch(OP, Kernel::LayerNormForward, warp_per_row(rows), &args)
    }

    fn layer_norm_backward_unchecked(
        &self,
        _: Checked,
        d_inp: &mut CudaBuf,
        d_out: &CudaBuf,
        inp: &CudaBuf,
        (mean, rstd): (&CudaBuf, &CudaBuf),
        ln: &LayerNorm<CudaBuf>,
        rows: usize,
    ) -> BackendResult<()> {
        const OP: &str = "layer_norm_backward";
        let width = ln.width;
        if rows * width == 0 {
            return Ok(());
        }
        let args = [
            self.ptr(d_inp),
            self.ptr(d_out),
            self.ptr(inp),
            self.ptr(mean),
            self.ptr(rstd),
            self.ptr(&ln.weight),
            int(OP, "rows", rows)?,
            int(OP, "width", width)?,
        ];
        self.launch(OP, Kernel::LayerNormBackward, warp_per_row(rows), &args)
    }

    fn linear_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        layer: &Linear<CudaBuf>,
        rows: usize,
    ) -> BackendResult<()> {
        const OP: &str = "linear";
        let (n_in, n_out) = (layer.in_features, layer.out_features);
        if rows * n_out == 0 {
            return Ok(());
        }
        // The GEMM accumulates onto the bias, copied into every row first.
        let beta = match &layer.bias {
            Some(bias) => {
                let args = [
                    self.ptr(out),
                    self.ptr(bias),
                    int(OP, "rows", rows)?,
                    int(OP, "out_features", n_out)?,
                ];
                self.launch(OP, Kernel::BroadcastRows, elementwise(rows * n_out), &args)?;
                1.0
            }
            None => 0.0,
        };
        // out (rows × out) = inp (rows × in) · Wᵀ, W stored out × in.
        let shape = GemmShape {
            m: rows,
            n: n_out,
            k: n_in,
            trans_a: false,
            trans_b: true,
            batch: (1, 1),
        };
        self.gemm(
            OP,
            self.math,
            shape,
            Matrices::single(self.address(&inp.mem), n_in),
            Matrices::single(self.address(&layer.weight.mem), n_in),
            Matrices::single(self.address(&out.mem), n_out),
            1.0,
            beta,
        )
    }

    fn linear_backward_unchecked(
        &self,
        _: Checked,
        d_inp: &mut CudaBuf,
        d_out: &CudaBuf,
        layer: &Linear<CudaBuf>,
        rows: usize,
    ) -> BackendResult<()> {
        const OP: &str = "linear_backward";
        let (n_in, n_out) = (layer.in_features, layer.out_features);
        // d_inp (rows × in) = d_out (rows × out) · W (out × in).
        let shape = GemmShape {
            m: rows,
            n: n_in,
            k: n_out,
            trans_a: false,
            trans_b: false,
            batch: (1, 1),
        };
        self.gemm(
            OP,
            self.math,
            shape,
            Matrices::single(self.address(&d_out.mem), n_out),
            Matrices::single(self.address(&layer.weight.mem), n_in),
            Matrices::single(self.address(&d_inp.mem), n_in),
            1.0,
            0.0,
        )
    }

    fn attention_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        probs: &mut CudaBuf,
        qkv: &CudaBuf,
        shape: AttentionShape,
    ) -> BackendResult<()> {
        const OP: &str = "attention";
        let AttentionShape {
            batch,
            seq,
            heads,
            head_dim,
            causal,
        } = shape;
        let width = shape.width();
        if batch * seq * width == 0 {
            return Ok(());
        }
        let layout = AttentionLayout::new(shape);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let (q_base, p_base) = (self.address(&qkv.mem), self.address(&probs.mem));
        // scores = scale · Q Kᵀ, per (sequence, head).
        self.head_gemm(
            OP,
            shape,
            (seq, seq, head_dim),
            (false, true),
            (
                layout.qkv(q_base, 0),
                layout.qkv(q_base, 1),
                layout.scores(p_base),
            ),
            scale,
        )?;
        let rows = batch * heads * seq;
        let args = [
            self.ptr(probs),
            int(OP, "rows", rows)?,
            int(OP, "seq", seq)?,
            Arg::I32(i32::from(causal)),
        ];
        self.launch(OP, Kernel::SoftmaxForward, warp_per_row(rows), &args)?;
        // out_h = P V, written into the head's columns of `out`.
        self.head_gemm(
            OP,
            shape,
            (seq, head_dim, seq),
            (false, false),
            (
                layout.scores(p_base),
                layout.qkv(q_base, 2),
                layout.merged(self.address(&out.mem)),
            ),
            1.0,
        )
    }

    fn attention_backward_unchecked(
        &self,
        _: Checked,
        d_qkv: &mut CudaBuf,
        d_out: &CudaBuf,
        qkv: &CudaBuf,
        probs: &CudaBuf,
        shape: AttentionShape,
    ) -> BackendResult<()> {
        const OP: &str = "attention_backward";
        let AttentionShape {
            batch,
            seq,
            heads,
            head_dim,
            ..
        } = shape;
        let width = shape.width();
        if batch * seq * width == 0 {
            return Ok(());
        }
        let layout = AttentionLayout::new(shape);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let d_scores = self.alloc(shape.probs_len())?;
        let q = self.address(&qkv.mem);
        let dq = self.address(&d_qkv.mem);
        let (p, dp) = (
            layout.scores(self.address(&probs.mem)),
            layout.scores(self.address(&d_scores.mem)),
        );
        let d_o = layout.merged(self.address(&d_out.mem));
        // dV = Pᵀ dO
        let (tk, square) = ((seq, head_dim, seq), (seq, seq, head_dim));
        self.head_gemm(
            OP,
            shape,
            tk,
            (true, false),
            (p, d_o, layout.qkv(dq, 2)),
            1.0,
        )?;
        // dP = dO Vᵀ
        self.head_gemm(
            OP,
            shape,
            square,
            (false, true),
            (d_o, layout.qkv(q, 2), dp),
            1.0,
        )?;
        // dS = scale · P ⊙ (dP − rowsum(dP ⊙ P)), the gradient of the raw scores Q Kᵀ.
        let rows = batch * heads * seq;
        let args = [
            self.ptr(&d_scores),
            self.ptr(probs),
            int(OP, "rows", rows)?,
            int(OP, "seq", seq)?,
            Arg::F32(scale),
        ];
        self.launch(OP, Kernel::SoftmaxBackward, warp_per_row(rows), &args)?;
        // dQ = dS K, dK = dSᵀ Q
        self.head_gemm(
            OP,
            shape,
            tk,
            (false, false),
            (dp, layout.qkv(q, 1), layout.qkv(dq, 0)),
            1.0,
        )?;
        self.head_gemm(
            OP,
            shape,
            tk,
            (true, false),
            (dp, layout.qkv(q, 0), layout.qkv(dq, 1)),
            1.0,
        )?;
        // `d_scores` is freed here, in stream order: after the products that read it.
        Ok(())
    }

    fn activation_unchecked(
        &self,
        _: Checked,
        act: Activation,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        len: usize,
    ) -> BackendResult<()> {
        if len == 0 {
            return Ok(());
        }
        let kernel = match act {
            Activation::QuickGelu => Kernel::QuickGeluForward,
            Activation::Gelu => Kernel::GeluForward,
        };
        let args = [self.ptr(out), self.ptr(inp), long(len)];
        self.launch(act.name(), kernel, elementwise(len), &args)
    }

    fn activation_backward_unchecked(
        &self,
        _: Checked,
        act: Activation,
        d: &mut CudaBuf,
        inp: &CudaBuf,
        len: usize,
    ) -> BackendResult<()> {
        if len == 0 {
            return Ok(());
        }
        let kernel = match act {
            Activation::QuickGelu => Kernel::QuickGeluBackward,
            Activation::Gelu => Kernel::GeluBackward,
        };
        let args = [self.ptr(d), self.ptr(inp), long(len)];
        self.launch(act.backward_name(), kernel, elementwise(len), &args)
    }

    fn add_assign_unchecked(
        &self,
        _: Checked,
        acc: &mut CudaBuf,
        x: &CudaBuf,
        len: usize,
    ) -> BackendResult<()> {
        const OP: &str = "add_assign";
        if len == 0 {
            return Ok(());
        }
        let args = [self.ptr(acc), self.ptr(x), long(len)];
        self.launch(OP, Kernel::AddAssign, elementwise(len), &args)
    }

    fn gather_rows_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        positions: &[u32],
        shape: SeqShape,
    ) -> BackendResult<()> {
        const OP: &str = "gather_rows";
        let SeqShape { batch, seq, width } = shape;
        if batch * width == 0 {
            return Ok(());
        }
        let positions = self.upload_indices(OP, positions)?;
        let args = [
            self.ptr(out),
            self.ptr(inp),
            self.index_ptr(&positions),
            int(OP, "batch", batch)?,
            int(OP, "seq", seq)?,
            int(OP, "width", width)?,
        ];
        self.launch(OP, Kernel::GatherRows, elementwise(batch * width), &args)
    }

    fn gather_rows_backward_unchecked(
        &self,
        _: Checked,
        d_inp: &mut CudaBuf,
        d_out: &CudaBuf,
        positions: &[u32],
        shape: SeqShape,
    ) -> BackendResult<()> {
        const OP: &str = "gather_rows_backward";
        let SeqShape { batch, seq, width } = shape;
        if shape.is_empty() {
            return Ok(());
        }
        let positions = self.upload_indices(OP, positions)?;
        let args = [
            self.ptr(d_inp),
            self.ptr(d_out),
            self.index_ptr(&positions),
            int(OP, "batch", batch)?,
            int(OP, "seq", seq)?,
            int(OP, "width", width)?,
        ];
        self.launch(
            OP,
            Kernel::GatherRowsBackward,
            elementwise(shape.len()),
            &args,
        )
    }

    fn normalize_rows_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        norms: &mut CudaBuf,
        inp: &CudaBuf,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()> {
        head::normalize_rows(self, out, norms, inp, rows, dim)
    }

    fn normalize_rows_backward_unchecked(
        &self,
        _: Checked,
        d_inp: &mut CudaBuf,
        d_out: &CudaBuf,
        out: &CudaBuf,
        norms: &CudaBuf,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()> {
        head::normalize_rows_backward(self, d_inp, d_out, out, norms, rows, dim)
    }

    fn matmul_nt_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        a: &CudaBuf,
        b: &CudaBuf,
        dims: MatmulDims,
        alpha: f32,
    ) -> BackendResult<()> {
        head::matmul(self, out, a, b, dims, alpha, head::Transposed::B)
    }

    fn matmul_tn_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        a: &CudaBuf,
        b: &CudaBuf,
        dims: MatmulDims,
        alpha: f32,
    ) -> BackendResult<()> {
        head::matmul(self, out, a, b, dims, alpha, head::Transposed::A)
    }

    fn ot_plans_unchecked(
        &self,
        _: Checked,
        plans: &mut CudaBuf,
        sim: &CudaBuf,
        layout: BatchLayout,
        params: &OtParams,
    ) -> BackendResult<BatchReport> {
        head::ot_plans(self, plans, sim, layout, params)
    }

    fn ot_logits_unchecked(
        &self,
        _: Checked,
        logits: &mut CudaBuf,
        sim: &CudaBuf,
        plans: &CudaBuf,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()> {
        head::ot_logits(self, logits, sim, plans, layout, scale)
    }

    fn ot_logits_backward_unchecked(
        &self,
        _: Checked,
        d_sim: &mut CudaBuf,
        d_logits: &CudaBuf,
        plans: &CudaBuf,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()> {
        head::ot_logits_backward(self, d_sim, d_logits, plans, layout, scale)
    }

    fn cross_entropy_unchecked(
        &self,
        _: Checked,
        d_logits: &mut CudaBuf,
        logits: &CudaBuf,
        labels: &[u32],
        classes: usize,
    ) -> BackendResult<f32> {
        head::cross_entropy(self, d_logits, logits, labels, classes)
    }

    fn to_channels_last_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        shape: MapShape,
    ) -> BackendResult<()> {
        conv::to_channels_last(self, out, inp, shape)
    }

    fn conv2d_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        conv: &Conv2d<CudaBuf>,
        shape: MapShape,
    ) -> BackendResult<()> {
        conv::conv2d(self, out, inp, conv, shape)
    }

    fn batch_norm_unchecked(
        &self,
        _: Checked,
        x: &mut CudaBuf,
        bn: &BatchNorm<CudaBuf>,
        rows: usize,
    ) -> BackendResult<()> {
        conv::batch_norm(self, x, bn, rows)
    }

    fn relu_unchecked(&self, _: Checked, x: &mut CudaBuf, len: usize) -> BackendResult<()> {
        conv::relu(self, x, len)
    }

    fn avg_pool2d_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        shape: MapShape,
        kernel: usize,
    ) -> BackendResult<()> {
        conv::avg_pool2d(self, out, inp, shape, kernel)
    }

    fn attention_pool_tokens_unchecked(
        &self,
        _: Checked,
        out: &mut CudaBuf,
        map: &CudaBuf,
        pos: &CudaBuf,
        shape: MapShape,
    ) -> BackendResult<()> {
        conv::attention_pool_tokens(self, out, map, pos, shape)
    }
}
