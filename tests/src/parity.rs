//! The CUDA backend against the CPU backend and `fedotp_core`: every operation forward and
//! backward, the two towers and the BERT text tower end to end, the OT head, the loss and a
//! whole FedOTP local step.
//!
//! Run on a GPU by `tests/tests/cuda_parity.rs` and on the kernel emulator (the CUDA backend's
//! own code and kernels executed on the CPU, as CI does) by `tests/tests/cuda_emulated.rs`.
//!
//! The image tower runs in both of its architectures: a ViT and a ModifiedResNet (RN50's
//! layers: convolutions, batch-norm, pools and the attention pool).
//!
//! Every case draws random inputs (never zeros), fills every output buffer with NaN before the
//! operation runs (so an element the device does not write fails the comparison), and compares
//! with `‖gpu − cpu‖ / ‖cpu‖` against the tolerance of the backend's math mode. [`run_all`]
//! runs every case, prints one table and fails if any row fails.

use fedotp_core::head::{self as core_head, HeadShape};
use fedotp_core::ot::{BatchLayout, BatchReport, OtError, OtMode, OtParams};
use fedotp_host::backend::{
    Activation, AttentionShape, Backend, BackendError, BatchNorm, Conv2d, Cpu, Cuda, CudaBuf,
    LayerNorm, Linear, MapShape, MathMode, MatmulDims, PatchShape, PromptShape, SeqShape,
};
use fedotp_host::clip::{
    bert_text_backward, bert_text_forward, text_backward, text_forward, vision_forward,
    BertActivations, BertConfig, BertLayer, BertTextWeights, ClipConfig, ClipWeights, PromptBatch,
    SpecialTokens, TextActivations, TextTower, VisionConfig, VisionWeights,
};
use fedotp_host::prompt::{encode_images, Head, OtStopping, PromptLearner, PromptModel};

use crate::compare::relative_error;
use crate::inputs::{clip_like_similarities, indices, uniform};

/// Relative-error bounds for one math mode.
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    /// Operations without a matrix product: the same f32 arithmetic in another order.
    pub kernel: f64,
    /// One layer built on matrix products (linear, attention), in the mode's precision.
    pub gemm: f64,
    /// A tower or a training step end to end: many products in a row.
    pub chain: f64,
    /// The OT solve against the core's solver on the same similarities: the same algorithm in
    /// f32, the same number of iterations.
    pub ot: f64,
}

impl Tolerances {
    /// The bounds of `mode`. The matrix-product bounds hold the error of inputs rounded to the
    /// mode's mantissa (TF32 10 bits, BF16 7 bits) with room for cuBLAS's own summation order.
    pub fn for_mode(mode: MathMode) -> Self {
        let (gemm, chain) = match mode {
            MathMode::F32 => (1e-5, 1e-4),
            MathMode::Tf32 => (2e-3, 1e-2),
            MathMode::Bf16 => (1.5e-2, 6e-2),
        };
        Tolerances {
            kernel: 1e-5,
            gemm,
            chain,
            ot: 1e-4,
        }
    }
}

/// One compared quantity.
struct Row {
    name: String,
    error: f64,
    tolerance: f64,
}

/// The comparisons of a run, printed as one table.
pub struct Report {
    label: String,
    rows: Vec<Row>,
}

impl Report {
    fn new(label: &str) -> Self {
        Report {
            label: label.to_string(),
            rows: Vec::new(),
        }
    }

    /// Records `‖got − want‖ / ‖want‖` (infinite if `got` holds a NaN or has another length).
    fn compare(&mut self, name: &str, got: &[f32], want: &[f32], tolerance: f64) {
        let error = relative_error(got, want);
        self.rows.push(Row {
            name: name.to_string(),
            error,
            tolerance,
        });
    }

    /// Records a condition that must hold exactly.
    fn require(&mut self, name: &str, holds: bool) {
        self.rows.push(Row {
            name: name.to_string(),
            error: if holds { 0.0 } else { f64::INFINITY },
            tolerance: 0.0,
        });
    }

    /// Prints the table (to stderr, past the test harness's capture) and fails on any row over
    /// its tolerance.
    pub fn finish(self) {
        use std::io::Write;
        let mut text = format!("\n{}\n", self.label);
        text += &format!(
            "{:<58} {:>12} {:>10}  ok\n",
            "quantity", "rel. error", "tolerance"
        );
        let mut failed = Vec::new();
        for row in &self.rows {
            let ok = row.error <= row.tolerance;
            text += &format!(
                "{:<58} {:>12.3e} {:>10.1e}  {}\n",
                row.name,
                row.error,
                row.tolerance,
                if ok { "yes" } else { "NO" }
            );
            if !ok {
                failed.push(row.name.clone());
            }
        }
        let _ = std::io::stderr().write_all(text.as_bytes());
        assert!(failed.is_empty(), "{}: failed {failed:?}", self.label);
    }
}

/// A GPU buffer of `len` NaNs: an output the operation must overwrite.
fn poisoned(gpu: &Cuda, len: usize) -> CudaBuf {
    gpu.upload(&vec![f32::NAN; len]).unwrap()
}

fn down(gpu: &Cuda, buf: &CudaBuf) -> Vec<f32> {
    gpu.download(buf, gpu.buf_len(buf)).unwrap()
}

/// Runs every case on `gpu` and fails if any comparison is over its tolerance.
pub fn run_all(gpu: &Cuda, label: &str) {
    let tol = Tolerances::for_mode(gpu.math());
    let mut report = Report::new(&format!(
        "{label}: {} (math {})",
        gpu.info().name,
        gpu.math()
    ));
    let cpu = Cpu::new();
    memory(gpu, &mut report);
    embeddings(gpu, &cpu, &mut report, tol);
    layer_norm(gpu, &cpu, &mut report, tol);
    linear(gpu, &cpu, &mut report, tol);
    attention(gpu, &cpu, &mut report, tol);
    elementwise(gpu, &cpu, &mut report, tol);
    resnet_layers(gpu, &cpu, &mut report, tol);
    resnet_errors_match_the_cpu(gpu, &cpu, &mut report);
    errors_match_the_cpu(gpu, &cpu, &mut report);
    text_tower(gpu, &cpu, &mut report, tol);
    bert_tower(gpu, &cpu, &mut report, tol);
    bert_prompts(gpu, &cpu, &mut report, tol);
    vision_tower(gpu, &cpu, &mut report, tol);
    ot_plans(gpu, &cpu, &mut report, tol);
    head_ops(gpu, &cpu, &mut report, tol);
    non_finite_features(gpu, &cpu, &mut report);
    local_steps(gpu, &cpu, &mut report, tol);
    report.finish();
}

fn memory(gpu: &Cuda, report: &mut Report) {
    let values = uniform(1000, 1, 3.0);
    let buf = gpu.upload(&values).unwrap();
    report.require(
        "upload/download round trip is exact",
        down(gpu, &buf) == values,
    );
    report.require(
        "download of a prefix",
        gpu.download(&buf, 10).unwrap() == values[..10],
    );
    let zeros = gpu.alloc(77).unwrap();
    report.require(
        "alloc is zero-filled",
        down(gpu, &zeros).iter().all(|&x| x == 0.0),
    );
    let empty = gpu.alloc(0).unwrap();
    report.require(
        "empty buffers",
        gpu.buf_len(&empty) == 0 && gpu.download(&empty, 0).unwrap().is_empty(),
    );
}

fn embeddings(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    // Prompts: 3 classes × 2 context sets, 10 tokens, width 40, 3 context rows, vocabulary 50.
    let shape = PromptShape {
        batch: 6,
        seq: 10,
        width: 40,
        n_ctx: 3,
        n_sets: 2,
    };
    let table = uniform(50 * shape.width, 2, 1.0);
    let ids = indices(shape.batch * shape.seq, 3, 50);
    let ctx = uniform(shape.n_sets * shape.n_ctx * shape.width, 4, 1.0);
    let set: Vec<u32> = (0..shape.batch as u32).map(|s| s / 3).collect();
    let len = shape.batch * shape.seq * shape.width;
    let mut want = vec![0.0; len];
    cpu.prompt_embed(&mut want, &table, &ids, &ctx, &set, shape)
        .unwrap();
    let mut got = poisoned(gpu, len);
    let (table_g, ctx_g) = (gpu.upload(&table).unwrap(), gpu.upload(&ctx).unwrap());
    gpu.prompt_embed(&mut got, &table_g, &ids, &ctx_g, &set, shape)
        .unwrap();
    report.compare("prompt_embed", &down(gpu, &got), &want, 0.0);

    let d_out = uniform(len, 5, 1.0);
    let ctx_len = shape.n_sets * shape.n_ctx * shape.width;
    let mut want = vec![0.0; ctx_len];
    cpu.prompt_embed_backward(&mut want, &d_out, &set, shape)
        .unwrap();
    let mut got = poisoned(gpu, ctx_len);
    gpu.prompt_embed_backward(&mut got, &gpu.upload(&d_out).unwrap(), &set, shape)
        .unwrap();
    report.compare("prompt_embed_backward", &down(gpu, &got), &want, tol.kernel);

    // Positions: 3 sequences of 9 tokens, truncated to 7.
    let (in_seq, out) = (
        9,
        SeqShape {
            batch: 3,
            seq: 7,
            width: 24,
        },
    );
    let tokens = uniform(out.batch * in_seq * out.width, 6, 1.0);
    let pos = uniform(in_seq * out.width, 7, 0.5);
    let mut want = vec![0.0; out.len()];
    cpu.position_embed(&mut want, &tokens, &pos, in_seq, out)
        .unwrap();
    let mut got = poisoned(gpu, out.len());
    let (tokens_g, pos_g) = (gpu.upload(&tokens).unwrap(), gpu.upload(&pos).unwrap());
    gpu.position_embed(&mut got, &tokens_g, &pos_g, in_seq, out)
        .unwrap();
    report.compare("position_embed", &down(gpu, &got), &want, 0.0);
    let d_out = uniform(out.len(), 8, 1.0);
    let full = out.batch * in_seq * out.width;
    let mut want = vec![0.0; full];
    cpu.position_embed_backward(&mut want, &d_out, in_seq, out)
        .unwrap();
    let mut got = poisoned(gpu, full);
    gpu.position_embed_backward(&mut got, &gpu.upload(&d_out).unwrap(), in_seq, out)
        .unwrap();
    report.compare("position_embed_backward", &down(gpu, &got), &want, 0.0);

    // Patches: 2 images of 3 × 12 × 12 in 4 × 4 patches.
    let patches = PatchShape {
        batch: 2,
        channels: 3,
        image_size: 12,
        patch_size: 4,
    };
    let images = uniform(2 * 3 * 12 * 12, 9, 1.0);
    let len = patches.batch * patches.patches() * patches.patch_len();
    let mut want = vec![0.0; len];
    cpu.extract_patches(&mut want, &images, patches).unwrap();
    let mut got = poisoned(gpu, len);
    gpu.extract_patches(&mut got, &gpu.upload(&images).unwrap(), patches)
        .unwrap();
    report.compare("extract_patches", &down(gpu, &got), &want, 0.0);

    // ViT tokens: 2 images, class token + 9 patches, width 24.
    let shape = SeqShape {
        batch: 2,
        seq: 10,
        width: 24,
    };
    let patch_rows = uniform(2 * 9 * 24, 10, 1.0);
    let class = uniform(24, 11, 1.0);
    let pos = uniform(10 * 24, 12, 0.5);
    let mut want = vec![0.0; shape.len()];
    cpu.vit_tokens(&mut want, &patch_rows, &class, &pos, shape)
        .unwrap();
    let mut got = poisoned(gpu, shape.len());
    let uploaded = [&patch_rows, &class, &pos].map(|v| gpu.upload(v).unwrap());
    gpu.vit_tokens(&mut got, &uploaded[0], &uploaded[1], &uploaded[2], shape)
        .unwrap();
    report.compare("vit_tokens", &down(gpu, &got), &want, 0.0);

    // Gather: 4 sequences of 6 rows of width 40.
    let shape = SeqShape {
        batch: 4,
        seq: 6,
        width: 40,
    };
    let inp = uniform(shape.len(), 13, 1.0);
    let positions = vec![5, 0, 3, 3];
    let mut want = vec![0.0; 4 * 40];
    cpu.gather_rows(&mut want, &inp, &positions, shape).unwrap();
    let mut got = poisoned(gpu, 4 * 40);
    gpu.gather_rows(&mut got, &gpu.upload(&inp).unwrap(), &positions, shape)
        .unwrap();
    report.compare("gather_rows", &down(gpu, &got), &want, 0.0);
    let d_out = uniform(4 * 40, 14, 1.0);
    let mut want = vec![0.0; shape.len()];
    cpu.gather_rows_backward(&mut want, &d_out, &positions, shape)
        .unwrap();
    let mut got = poisoned(gpu, shape.len());
    gpu.gather_rows_backward(&mut got, &gpu.upload(&d_out).unwrap(), &positions, shape)
        .unwrap();
    report.compare("gather_rows_backward", &down(gpu, &got), &want, 0.0);
}

/// A LayerNorm of `width` with non-trivial scale and shift, on both backends.
fn layer_norm_weights(
    gpu: &Cuda,
    width: usize,
    seed: u64,
) -> (LayerNorm<Vec<f32>>, LayerNorm<CudaBuf>) {
    let weight: Vec<f32> = uniform(width, seed, 0.5).iter().map(|x| 1.0 + x).collect();
    let bias = uniform(width, seed + 1, 0.2);
    let host = LayerNorm {
        weight,
        bias,
        width,
        eps: 1e-5,
    };
    let device = host.clone().try_map(&mut |v| gpu.upload(&v)).unwrap();
    (host, device)
}

fn layer_norm(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    // 13 rows of width 80: not a multiple of the warp's 32 lanes.
    let (rows, width) = (13, 80);
    let (ln, ln_g) = layer_norm_weights(gpu, width, 20);
    let x: Vec<f32> = uniform(rows * width, 22, 2.0)
        .iter()
        .map(|v| v + 0.7)
        .collect();
    let (mut want, mut mean, mut rstd) =
        (vec![0.0; rows * width], vec![0.0; rows], vec![0.0; rows]);
    cpu.layer_norm(&mut want, (&mut mean, &mut rstd), &x, &ln, rows)
        .unwrap();
    let (mut got, mut mean_g, mut rstd_g) = (
        poisoned(gpu, rows * width),
        poisoned(gpu, rows),
        poisoned(gpu, rows),
    );
    let x_g = gpu.upload(&x).unwrap();
    gpu.layer_norm(&mut got, (&mut mean_g, &mut rstd_g), &x_g, &ln_g, rows)
        .unwrap();
    report.compare("layer_norm", &down(gpu, &got), &want, tol.kernel);
    report.compare("layer_norm mean", &down(gpu, &mean_g), &mean, tol.kernel);
    report.compare("layer_norm 1/std", &down(gpu, &rstd_g), &rstd, tol.kernel);

    // The backward accumulates onto what d_inp holds.
    let d_out = uniform(rows * width, 23, 1.0);
    let start = uniform(rows * width, 24, 1.0);
    let mut want = start.clone();
    cpu.layer_norm_backward(&mut want, &d_out, &x, (&mean, &rstd), &ln, rows)
        .unwrap();
    let mut got = gpu.upload(&start).unwrap();
    gpu.layer_norm_backward(
        &mut got,
        &gpu.upload(&d_out).unwrap(),
        &x_g,
        (&mean_g, &rstd_g),
        &ln_g,
        rows,
    )
    .unwrap();
    report.compare(
        "layer_norm_backward (accumulating)",
        &down(gpu, &got),
        &want,
        tol.kernel,
    );
}

fn linear(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    let (rows, n_in, n_out) = (11, 40, 24);
    for with_bias in [true, false] {
        let host = Linear {
            weight: uniform(n_out * n_in, 30, 0.3),
            bias: with_bias.then(|| uniform(n_out, 31, 0.5)),
            in_features: n_in,
            out_features: n_out,
        };
        let device = host.clone().try_map(&mut |v| gpu.upload(&v)).unwrap();
        let x = uniform(rows * n_in, 32, 1.0);
        let mut want = vec![0.0; rows * n_out];
        cpu.linear(&mut want, &x, &host, rows).unwrap();
        let mut got = poisoned(gpu, rows * n_out);
        gpu.linear(&mut got, &gpu.upload(&x).unwrap(), &device, rows)
            .unwrap();
        let name = if with_bias {
            "linear"
        } else {
            "linear (no bias)"
        };
        report.compare(name, &down(gpu, &got), &want, tol.gemm);

        let d_out = uniform(rows * n_out, 33, 1.0);
        let mut want = vec![0.0; rows * n_in];
        cpu.linear_backward(&mut want, &d_out, &host, rows).unwrap();
        let mut got = poisoned(gpu, rows * n_in);
        gpu.linear_backward(&mut got, &gpu.upload(&d_out).unwrap(), &device, rows)
            .unwrap();
        if with_bias {
            report.compare("linear_backward", &down(gpu, &got), &want, tol.gemm);
        }
    }
}

fn attention(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    // More sequences than heads and the reverse (the batched products loop over the shorter
    // axis), causal and not, and a sequence longer than a warp.
    let shapes = [
        AttentionShape {
            batch: 3,
            seq: 7,
            heads: 2,
            head_dim: 8,
            causal: true,
        },
        AttentionShape {
            batch: 2,
            seq: 37,
            heads: 4,
            head_dim: 16,
            causal: false,
        },
        AttentionShape {
            batch: 2,
            seq: 37,
            heads: 4,
            head_dim: 16,
            causal: true,
        },
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        let tag = format!(
            "{}×{} seq {} {}",
            shape.batch,
            shape.heads,
            shape.seq,
            if shape.causal { "causal" } else { "full" }
        );
        let width = shape.width();
        let rows = shape.batch * shape.seq;
        let qkv = uniform(rows * 3 * width, 40 + i as u64, 1.0);
        let (mut out, mut probs) = (vec![0.0; rows * width], vec![0.0; shape.probs_len()]);
        cpu.attention(&mut out, &mut probs, &qkv, shape).unwrap();
        let (mut out_g, mut probs_g) = (
            poisoned(gpu, rows * width),
            poisoned(gpu, shape.probs_len()),
        );
        let qkv_g = gpu.upload(&qkv).unwrap();
        gpu.attention(&mut out_g, &mut probs_g, &qkv_g, shape)
            .unwrap();
        report.compare(
            &format!("attention {tag}"),
            &down(gpu, &out_g),
            &out,
            tol.gemm,
        );
        report.compare(
            &format!("attention probs {tag}"),
            &down(gpu, &probs_g),
            &probs,
            tol.gemm,
        );

        let d_out = uniform(rows * width, 50 + i as u64, 1.0);
        let mut want = vec![0.0; rows * 3 * width];
        cpu.attention_backward(&mut want, &d_out, &qkv, &probs, shape)
            .unwrap();
        let mut got = poisoned(gpu, rows * 3 * width);
        gpu.attention_backward(
            &mut got,
            &gpu.upload(&d_out).unwrap(),
            &qkv_g,
            &probs_g,
            shape,
        )
        .unwrap();
        report.compare(
            &format!("attention_backward {tag}"),
            &down(gpu, &got),
            &want,
            tol.gemm,
        );
    }
}

fn elementwise(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    let len = 1000;
    let x = uniform(len, 60, 4.0);
    let x_g = gpu.upload(&x).unwrap();
    for act in [Activation::QuickGelu, Activation::Gelu] {
        let mut want = vec![0.0; len];
        cpu.activation(act, &mut want, &x, len).unwrap();
        let mut got = poisoned(gpu, len);
        gpu.activation(act, &mut got, &x_g, len).unwrap();
        report.compare(act.name(), &down(gpu, &got), &want, tol.kernel);

        let d = uniform(len, 61, 1.0);
        let mut want = d.clone();
        cpu.activation_backward(act, &mut want, &x, len).unwrap();
        let mut got = gpu.upload(&d).unwrap();
        gpu.activation_backward(act, &mut got, &x_g, len).unwrap();
        report.compare(act.backward_name(), &down(gpu, &got), &want, tol.kernel);
    }

    let acc = uniform(len, 62, 1.0);
    let mut want = acc.clone();
    cpu.add_assign(&mut want, &x, len).unwrap();
    let mut got = gpu.upload(&acc).unwrap();
    gpu.add_assign(&mut got, &x_g, len).unwrap();
    report.compare("add_assign", &down(gpu, &got), &want, 0.0);
}

/// A convolution of the ResNet's kinds, on both backends: random weight, no bias.
fn conv_weights(
    gpu: &Cuda,
    (in_channels, out_channels): (usize, usize),
    (kernel, stride, padding): (usize, usize, usize),
    seed: u64,
) -> (Conv2d<Vec<f32>>, Conv2d<CudaBuf>) {
    let host = Conv2d {
        weight: uniform(out_channels * kernel * kernel * in_channels, seed, 0.3),
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
    };
    let device = host.clone().try_map(&mut |v| gpu.upload(&v)).unwrap();
    (host, device)
}

/// The ModifiedResNet's layers: layout change, convolutions (im2col + GEMM, and the direct GEMM
/// of a 1×1 stride-1 convolution) at odd sizes, batch-norm, ReLU, pooling with dropped
/// trailing rows and columns, and the attention pool's tokens.
fn resnet_layers(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    let up = |v: &[f32]| gpu.upload(v).unwrap();
    // 2 images of 3 × 9 × 11, channels-first as they arrive.
    let shape = MapShape {
        batch: 2,
        height: 9,
        width: 11,
        channels: 3,
    };
    let images = uniform(shape.len(), 130, 1.0);
    let mut want = vec![0.0; shape.len()];
    cpu.to_channels_last(&mut want, &images, shape).unwrap();
    let mut got = poisoned(gpu, shape.len());
    gpu.to_channels_last(&mut got, &up(&images), shape).unwrap();
    report.compare("to_channels_last", &down(gpu, &got), &want, 0.0);

    // (in, out) channels, (kernel, stride, padding), input height × width: the stem's 3×3
    // stride-2 and 3×3 convolutions, the bottleneck's 1×1, a 1×1 at stride 2 (im2col path),
    // and a padding-free 5×5 over a non-square map.
    let convs = [
        ((3, 8), (3, 2, 1), (9, 11)),
        ((5, 6), (3, 1, 1), (7, 6)),
        ((16, 12), (1, 1, 0), (5, 7)),
        ((16, 12), (1, 2, 0), (5, 7)),
        ((4, 7), (5, 1, 0), (6, 9)),
    ];
    for (i, (channels, (kernel, stride, padding), (height, width))) in convs.into_iter().enumerate()
    {
        let (conv, conv_g) = conv_weights(gpu, channels, (kernel, stride, padding), 131 + i as u64);
        let shape = MapShape {
            batch: 2,
            height,
            width,
            channels: channels.0,
        };
        let inp = uniform(shape.len(), 140 + i as u64, 1.0);
        let out_len = conv.output_shape(shape).unwrap().len();
        let mut want = vec![0.0; out_len];
        cpu.conv2d(&mut want, &inp, &conv, shape).unwrap();
        let mut got = poisoned(gpu, out_len);
        gpu.conv2d(&mut got, &up(&inp), &conv_g, shape).unwrap();
        report.compare(
            &format!(
                "conv2d {}→{} {kernel}×{kernel} stride {stride} pad {padding} on {height}×{width}",
                channels.0, channels.1
            ),
            &down(gpu, &got),
            &want,
            tol.gemm,
        );
    }

    // Batch-norm over 2 × 5 × 3 positions of 40 channels (not a multiple of a warp).
    let (rows, channels) = (30, 40);
    let bn = BatchNorm {
        weight: uniform(channels, 150, 0.5)
            .iter()
            .map(|x| 1.0 + x)
            .collect(),
        bias: uniform(channels, 151, 0.3),
        running_mean: uniform(channels, 152, 0.5),
        running_var: uniform(channels, 153, 1.0)
            .iter()
            .map(|x| 0.1 + x.abs())
            .collect(),
        channels,
        eps: 1e-5,
    };
    let bn_g = bn.clone().try_map(&mut |v| gpu.upload(&v)).unwrap();
    let x = uniform(rows * channels, 154, 2.0);
    let mut want = x.clone();
    cpu.batch_norm(&mut want, &bn, rows).unwrap();
    let mut got = up(&x);
    gpu.batch_norm(&mut got, &bn_g, rows).unwrap();
    report.compare("batch_norm", &down(gpu, &got), &want, tol.kernel);

    let mut want = x.clone();
    cpu.relu(&mut want, x.len()).unwrap();
    let mut got = up(&x);
    gpu.relu(&mut got, x.len()).unwrap();
    report.compare("relu", &down(gpu, &got), &want, 0.0);

    // Pools over a 7 × 9 map: windows of 2 (the last row and column dropped) and of 3.
    let shape = MapShape {
        batch: 2,
        height: 7,
        width: 9,
        channels: 5,
    };
    let inp = uniform(shape.len(), 155, 1.0);
    for kernel in [2, 3] {
        let out_len = shape.batch * (shape.height / kernel) * (shape.width / kernel) * 5;
        let mut want = vec![0.0; out_len];
        cpu.avg_pool2d(&mut want, &inp, shape, kernel).unwrap();
        let mut got = poisoned(gpu, out_len);
        gpu.avg_pool2d(&mut got, &up(&inp), shape, kernel).unwrap();
        report.compare(
            &format!("avg_pool2d {kernel}×{kernel}"),
            &down(gpu, &got),
            &want,
            tol.kernel,
        );
    }

    // The attention pool's tokens over 3 × 4 positions of 6 channels.
    let shape = MapShape {
        batch: 2,
        height: 3,
        width: 4,
        channels: 6,
    };
    let seq = 1 + shape.positions();
    let map = uniform(shape.len(), 156, 1.0);
    let pos = uniform(seq * shape.channels, 157, 0.5);
    let mut want = vec![0.0; shape.batch * seq * shape.channels];
    cpu.attention_pool_tokens(&mut want, &map, &pos, shape)
        .unwrap();
    let mut got = poisoned(gpu, want.len());
    gpu.attention_pool_tokens(&mut got, &up(&map), &up(&pos), shape)
        .unwrap();
    report.compare("attention_pool_tokens", &down(gpu, &got), &want, tol.kernel);
}

/// Bad ResNet-layer calls fail with the CPU backend's error, before any device work.
fn resnet_errors_match_the_cpu(gpu: &Cuda, cpu: &Cpu, report: &mut Report) {
    let shape = MapShape {
        batch: 1,
        height: 4,
        width: 4,
        channels: 3,
    };
    let (inp_c, inp_g) = (vec![0.0; shape.len()], gpu.alloc(shape.len()).unwrap());
    let (mut out_c, mut out_g) = (vec![0.0; 64], gpu.alloc(64).unwrap());
    let same = |c: BackendError, g: BackendError| c.to_string() == g.to_string();

    // A convolution taking 2 channels, given 3; one whose 7×7 kernel outgrows the input.
    for (name, channels, kernel) in [("channel count", 2, 3), ("kernel too large", 3, 7)] {
        let (conv, conv_g) = conv_weights(gpu, (channels, 4), (kernel, 1, 1), 160);
        let cpu_err = cpu.conv2d(&mut out_c, &inp_c, &conv, shape).unwrap_err();
        let gpu_err = gpu.conv2d(&mut out_g, &inp_g, &conv_g, shape).unwrap_err();
        report.require(
            &format!("conv2d {name}: same error"),
            matches!(cpu_err, BackendError::InvalidShape { .. }) && same(cpu_err, gpu_err),
        );
    }
    let cpu_err = cpu.avg_pool2d(&mut out_c, &inp_c, shape, 5).unwrap_err();
    let gpu_err = gpu.avg_pool2d(&mut out_g, &inp_g, shape, 5).unwrap_err();
    report.require(
        "avg_pool2d window larger than the map: same error",
        matches!(cpu_err, BackendError::InvalidShape { .. }) && same(cpu_err, gpu_err),
    );
    // A batch-norm whose variance holds 2 of its 3 channels.
    let bn = BatchNorm {
        weight: vec![1.0; 3],
        bias: vec![0.0; 3],
        running_mean: vec![0.0; 3],
        running_var: vec![1.0; 2],
        channels: 3,
        eps: 1e-5,
    };
    let bn_g = bn.clone().try_map(&mut |v| gpu.upload(&v)).unwrap();
    let cpu_err = cpu.batch_norm(&mut out_c, &bn, 16).unwrap_err();
    let gpu_err = gpu.batch_norm(&mut out_g, &bn_g, 16).unwrap_err();
    report.require(
        "batch_norm short running_var: same error",
        matches!(
            cpu_err,
            BackendError::BufferTooSmall {
                buffer: "running_var",
                ..
            }
        ) && same(cpu_err, gpu_err),
    );
    let cpu_err = cpu
        .attention_pool_tokens(&mut out_c, &inp_c, &inp_c, shape)
        .unwrap_err();
    let gpu_err = gpu
        .attention_pool_tokens(&mut out_g, &inp_g, &inp_g, shape)
        .unwrap_err();
    report.require(
        "attention_pool_tokens short pos: same error",
        same(cpu_err, gpu_err),
    );
}

/// Bad calls fail with the CPU backend's error, before any device work.
fn errors_match_the_cpu(gpu: &Cuda, cpu: &Cpu, report: &mut Report) {
    let shape = SeqShape {
        batch: 2,
        seq: 3,
        width: 4,
    };
    let (short_c, inp_c) = (vec![0.0; 7], vec![0.0; shape.len()]);
    let (short_g, inp_g) = (gpu.alloc(7).unwrap(), gpu.alloc(shape.len()).unwrap());
    let cpu_err = cpu
        .gather_rows(&mut short_c.clone(), &inp_c, &[0, 1], shape)
        .unwrap_err();
    let gpu_err = gpu
        .gather_rows(&mut gpu.alloc(7).unwrap(), &inp_g, &[0, 1], shape)
        .unwrap_err();
    report.require(
        "short buffer: same error",
        cpu_err.to_string() == gpu_err.to_string(),
    );
    let mut out_c = vec![0.0; 8];
    let mut out_g = gpu.alloc(8).unwrap();
    let cpu_err = cpu
        .gather_rows(&mut out_c, &inp_c, &[0, 3], shape)
        .unwrap_err();
    let gpu_err = gpu
        .gather_rows(&mut out_g, &inp_g, &[0, 3], shape)
        .unwrap_err();
    report.require(
        "index out of range: same error",
        cpu_err.to_string() == gpu_err.to_string(),
    );
    let cpu_err = cpu
        .gather_rows(&mut out_c, &inp_c, &[0], shape)
        .unwrap_err();
    let gpu_err = gpu
        .gather_rows(&mut out_g, &inp_g, &[0], shape)
        .unwrap_err();
    report.require(
        "index count: same error",
        cpu_err.to_string() == gpu_err.to_string(),
    );
    // Patches of side 0: a shape error from the front door on both backends.
    let patches = PatchShape {
        batch: 1,
        channels: 1,
        image_size: 4,
        patch_size: 0,
    };
    let cpu_err = cpu
        .extract_patches(&mut vec![0.0; 16], &vec![0.0; 16], patches)
        .unwrap_err();
    let gpu_err = gpu
        .extract_patches(
            &mut gpu.alloc(16).unwrap(),
            &gpu.alloc(16).unwrap(),
            patches,
        )
        .unwrap_err();
    report.require(
        "patch size 0: same error",
        matches!(cpu_err, BackendError::InvalidShape { .. })
            && cpu_err.to_string() == gpu_err.to_string(),
    );
    drop((short_c, short_g));
}

/// The tiny CLIP of the tests, with 4 text heads (16-wide) and `act` in both towers.
fn tiny_weights(seed: u64, act: Activation) -> ClipWeights<Vec<f32>> {
    let mut config = ClipConfig::tiny();
    if let Some(text) = config.text.as_clip_mut() {
        text.heads = 4;
        text.activation = act;
    }
    if let VisionConfig::Vit(vit) = &mut config.vision {
        vit.activation = act;
    }
    ClipWeights::random(&config, seed).unwrap()
}

fn tiny_classes() -> Vec<Vec<u32>> {
    vec![
        vec![1929, 269],
        vec![2102, 5867, 269],
        vec![320, 1125, 539, 320, 269],
    ]
}

fn text_tower(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    for act in [Activation::QuickGelu, Activation::Gelu] {
        text_tower_with(gpu, cpu, report, tol, act);
    }
}

fn text_tower_with(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances, act: Activation) {
    let weights = tiny_weights(70, act);
    let tower_c = weights
        .text
        .clone()
        .try_map(&mut |v| cpu.upload_vec(v))
        .unwrap();
    let tower_g = weights
        .text
        .clone()
        .try_map(&mut |v| gpu.upload(&v))
        .unwrap();
    let (TextTower::Clip(text_c), TextTower::Clip(text_g)) = (&tower_c, &tower_g) else {
        unreachable!("the tiny CLIP's text tower is CLIP's")
    };
    let width = weights.config.text.width();
    let embed = weights.config.embed_dim;
    let prompts = PromptBatch::new(&tiny_classes(), 3, 2, 77, SpecialTokens::CLIP).unwrap();
    let (seq, eot) = (prompts.seq_len(), prompts.eot_positions());
    let mut acts_c = TextActivations::new(cpu).unwrap();
    let mut acts_g = TextActivations::new(gpu).unwrap();
    // Twice, with different contexts: the second run reuses the first one's buffers.
    for (round, seed) in [71u64, 72].into_iter().enumerate() {
        let ctx = uniform(2 * 3 * width, seed, 0.05);
        let d_features = uniform(prompts.len() * embed, seed + 10, 1.0);
        let emb_c = prompts.embed(cpu, &tower_c, &ctx).unwrap();
        let features_c = text_forward(cpu, text_c, &emb_c, seq, eot, &mut acts_c).unwrap();
        let d_emb_c = text_backward(cpu, text_c, &mut acts_c, &d_features).unwrap();
        let d_ctx_c = prompts.context_gradient(cpu, &tower_c, &d_emb_c).unwrap();

        let ctx_g = gpu.upload(&ctx).unwrap();
        let emb_g = prompts.embed(gpu, &tower_g, &ctx_g).unwrap();
        let features_g = text_forward(gpu, text_g, &emb_g, seq, eot, &mut acts_g).unwrap();
        let d_emb_g =
            text_backward(gpu, text_g, &mut acts_g, &gpu.upload(&d_features).unwrap()).unwrap();
        let d_ctx_g = prompts.context_gradient(gpu, &tower_g, &d_emb_g).unwrap();
        let run = if round == 0 { "" } else { ", buffers reused" };
        report.compare(
            &format!("text tower ({act}) features{run}"),
            &down(gpu, &features_g),
            &features_c,
            tol.chain,
        );
        report.compare(
            &format!("text tower ({act}) context gradient{run}"),
            &down(gpu, &d_ctx_g),
            &d_ctx_c,
            tol.chain,
        );
    }
}

/// A small random BERT text tower (BiomedCLIP's shape, shrunk): width 32 in 4 heads, 2 layers,
/// MLP 64, 16 positions, projection 32 → 24 → 16, eps 1e-12.
fn tiny_bert(seed: u64) -> BertTextWeights<Vec<f32>> {
    let config = BertConfig {
        width: 32,
        heads: 4,
        layers: 2,
        mlp_width: 64,
        max_positions: 16,
        vocab_size: 50,
        context_length: 16,
        layer_norm_eps: 1e-12,
        embed_dim: 16,
        proj_width: 24,
    };
    let mut next = seed;
    let mut draw = |len: usize, scale: f32| {
        next += 1;
        uniform(len, next, scale)
    };
    let mut linear = |n_in: usize, n_out: usize, bias: bool| {
        let weight = draw(n_in * n_out, (3.0 / n_in as f32).sqrt());
        Linear {
            weight,
            bias: bias.then(|| draw(n_out, 0.1)),
            in_features: n_in,
            out_features: n_out,
        }
    };
    let (w, m) = (config.width, config.mlp_width);
    let layers = (0..config.layers)
        .map(|_| BertLayer {
            attn_qkv: linear(w, 3 * w, true),
            attn_out: linear(w, w, true),
            attn_ln: ln_like(w, seed + 2),
            mlp_fc: linear(w, m, true),
            mlp_out: linear(m, w, true),
            mlp_ln: ln_like(w, seed + 3),
        })
        .collect();
    let proj_fc = linear(w, config.proj_width, false);
    let proj_out = linear(config.proj_width, config.embed_dim, false);
    BertTextWeights {
        word_embedding: uniform(config.vocab_size * w, seed + 4, 0.05),
        position_embedding: uniform(config.max_positions * w, seed + 5, 0.05),
        embedding_ln: ln_like(w, seed + 6),
        layers,
        proj_fc,
        proj_out,
        config,
    }
}

/// A host LayerNorm with BERT's eps and non-trivial scale and shift.
fn ln_like(width: usize, seed: u64) -> LayerNorm<Vec<f32>> {
    LayerNorm {
        weight: uniform(width, seed, 0.5).iter().map(|x| 1.0 + x).collect(),
        bias: uniform(width, seed + 1, 0.2),
        width,
        eps: 1e-12,
    }
}

/// The BERT tower on two groups of prompts of different lengths (the second run reuses the
/// first one's buffers): features and the gradient with respect to the embeddings.
fn bert_tower(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    let weights = tiny_bert(90);
    let embed = weights.config.embed_dim;
    let bert_c = weights.clone().try_map(&mut |v| cpu.upload_vec(v)).unwrap();
    let bert_g = weights.try_map(&mut |v| gpu.upload(&v)).unwrap();
    let mut acts_c = BertActivations::new(cpu).unwrap();
    let mut acts_g = BertActivations::new(gpu).unwrap();
    for (batch, seq, seed) in [(5, 9, 91u64), (3, 13, 92)] {
        let shape = SeqShape {
            batch,
            seq,
            width: bert_c.config.width,
        };
        let emb = uniform(shape.len(), seed, 0.05);
        let d_features = uniform(batch * embed, seed + 10, 1.0);
        let features_c = bert_text_forward(cpu, &bert_c, &emb, shape, &mut acts_c).unwrap();
        let d_emb_c = bert_text_backward(cpu, &bert_c, &mut acts_c, &d_features).unwrap();
        let emb_g = gpu.upload(&emb).unwrap();
        let features_g = bert_text_forward(gpu, &bert_g, &emb_g, shape, &mut acts_g).unwrap();
        let d_features_g = gpu.upload(&d_features).unwrap();
        let d_emb_g = bert_text_backward(gpu, &bert_g, &mut acts_g, &d_features_g).unwrap();
        let run = format!("{batch} x {seq} tokens");
        report.compare(
            &format!("BERT tower features, {run}"),
            &down(gpu, &features_g),
            &features_c,
            tol.chain,
        );
        report.compare(
            &format!("BERT tower embedding gradient, {run}"),
            &down(gpu, &d_emb_g),
            &d_emb_c,
            tol.chain,
        );
    }
}

/// BERT prompts through the whole learner: classes of three token lengths run as three groups
/// whose features are put back in prompt order, normalised, and whose context gradients sum
/// over the groups.
fn bert_prompts(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    let weights = tiny_bert(95);
    let tower_c = TextTower::Bert(weights.clone().try_map(&mut |v| cpu.upload_vec(v)).unwrap());
    let tower_g = TextTower::Bert(weights.try_map(&mut |v| gpu.upload(&v)).unwrap());
    let special = SpecialTokens { start: 2, end: 3 };
    let classes = [vec![7, 5], vec![8, 9, 10, 5], vec![11, 5], vec![12, 13, 5]];
    let (n_ctx, n_sets) = (3, 2);
    let learner = PromptLearner::from_tokens(&classes, n_ctx, n_sets, &tower_c, special).unwrap();
    let ctx = uniform(learner.context_len(), 96, 0.05);
    let rows = n_sets * classes.len();
    let d_unit = uniform(rows * learner.embed_dim(), 97, 1.0);
    let mut state_c = learner.state(cpu).unwrap();
    learner.forward(cpu, &tower_c, &ctx, &mut state_c).unwrap();
    let d_ctx_c = learner
        .backward(cpu, &tower_c, &mut state_c, &cpu.upload(&d_unit).unwrap())
        .unwrap();
    let mut state_g = learner.state(gpu).unwrap();
    learner.forward(gpu, &tower_g, &ctx, &mut state_g).unwrap();
    let d_ctx_g = learner
        .backward(gpu, &tower_g, &mut state_g, &gpu.upload(&d_unit).unwrap())
        .unwrap();
    report.compare(
        "BERT prompts (3 length groups): unit features",
        &down(gpu, &state_g.features),
        &state_c.features,
        tol.chain,
    );
    report.compare(
        "BERT prompts (3 length groups): context gradient",
        &d_ctx_g,
        &d_ctx_c,
        tol.chain,
    );
}

/// Both image towers end to end: the tiny ViT (with each activation, and in timm's form) and
/// the tiny ModifiedResNet (RN50's layers at 64 px, 2 × 2 positions).
fn vision_tower(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    let resnet = ClipWeights::random(&ClipConfig::tiny_resnet(), 82).unwrap();
    let towers = [
        ("ViT", tiny_weights(80, Activation::QuickGelu)),
        ("ViT (gelu)", tiny_weights(80, Activation::Gelu)),
        ("ViT (timm)", timm_like(tiny_weights(83, Activation::Gelu))),
        ("ResNet", resnet),
    ];
    for (name, weights) in towers {
        image_tower(gpu, cpu, report, tol, (name, &weights));
    }
}

/// `weights` with its ViT in the form of open_clip's timm tower (BiomedCLIP's): no `ln_pre`, a
/// patch-embedding bias, LayerNorm eps 1e-6.
fn timm_like(mut weights: ClipWeights<Vec<f32>>) -> ClipWeights<Vec<f32>> {
    let VisionWeights::Vit(vit) = &mut weights.vision else {
        unreachable!("the tiny model's image tower is a ViT")
    };
    vit.ln_pre = None;
    vit.patch_embedding.bias = Some(uniform(vit.config.width, 84, 0.1));
    vit.config.layer_norm_eps = 1e-6;
    let norms = vit
        .blocks
        .iter_mut()
        .flat_map(|b| [&mut b.ln_1, &mut b.ln_2]);
    for norm in norms.chain([&mut vit.ln_post]) {
        norm.eps = 1e-6;
    }
    weights
}

/// One image tower on both backends: every token and the pooled embedding.
fn image_tower(
    gpu: &Cuda,
    cpu: &Cpu,
    report: &mut Report,
    tol: Tolerances,
    (name, weights): (&str, &ClipWeights<Vec<f32>>),
) {
    let vision_c = weights
        .vision
        .clone()
        .try_map(&mut |v| cpu.upload_vec(v))
        .unwrap();
    let vision_g = weights
        .vision
        .clone()
        .try_map(&mut |v| gpu.upload(&v))
        .unwrap();
    let size = weights.config.vision.image_size();
    let images = uniform(2 * 3 * size * size, 81, 1.0);
    let want = vision_forward(cpu, &vision_c, &images, 2).unwrap();
    let got = vision_forward(gpu, &vision_g, &gpu.upload(&images).unwrap(), 2).unwrap();
    report.compare(
        &format!("{name} every token"),
        &down(gpu, &got.tokens),
        &want.tokens,
        tol.chain,
    );
    report.compare(
        &format!("{name} pooled"),
        &down(gpu, &got.pooled),
        &want.pooled,
        tol.chain,
    );
}

/// Whether two batch reports agree: the same problems and converged count, iteration counts
/// within one of each other. (The stopping test compares an f32 mean with the tolerance, so
/// summation order may move a problem sitting on the threshold by one iteration.)
fn reports_agree(gpu: &BatchReport, cpu: &BatchReport) -> bool {
    gpu.problems == cpu.problems
        && gpu.converged.abs_diff(cpu.converged) * 10 <= cpu.problems
        && gpu.max_iterations.abs_diff(cpu.max_iterations) <= 1
        && gpu.total_iterations.abs_diff(cpu.total_iterations) * 10 <= cpu.problems as u64
}

/// The GPU's plans and report for `sim` against the CPU backend's.
fn compare_plans(
    (gpu, cpu): (&Cuda, &Cpu),
    report: &mut Report,
    (name, sim, params, tolerance): (&str, &[f32], OtParams, f64),
    layout: BatchLayout,
) {
    let params = &params;
    let mut plans = vec![0.0; sim.len()];
    let want = cpu
        .ot_plans(&mut plans, &sim.to_vec(), layout, params)
        .unwrap();
    let mut plans_g = poisoned(gpu, sim.len());
    let got = gpu
        .ot_plans(&mut plans_g, &gpu.upload(sim).unwrap(), layout, params)
        .unwrap();
    report.compare(
        &format!("ot_plans, {name}"),
        &down(gpu, &plans_g),
        &plans,
        tolerance,
    );
    report.require(
        &format!(
            "ot_plans report, {name}: {} vs {} iterations",
            got.total_iterations, want.total_iterations
        ),
        reports_agree(&got, &want),
    );
}

/// The GPU's solve against the core's (the CPU backend runs `fedotp_core::ot::solve_batch`) in
/// every mode of the solver, at sharp and wide costs.
fn ot_plans(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    let layout = BatchLayout {
        images: 3,
        patches: 49,
        prompts: 2,
        classes: 7,
    };
    let len = 3 * 49 * 2 * 7;
    let clip = clip_like_similarities(len, 90);
    // Cosines spread over [-1, 1]: costs over [0, 2], which at eps 0.01 only the absorption
    // keeps finite.
    let wide = uniform(len, 91, 1.0);
    let base = OtParams::FEDOTP;
    // Fixed iteration counts (tol 0) compare the iteration itself; the defaults also the stop.
    let fixed = |eps, iterations, mode, gamma| OtParams {
        eps,
        gamma,
        max_iter: iterations,
        tol: 0.0,
        mode,
    };
    let cases = [
        ("FedOTP defaults", &clip, base, 1e-3),
        (
            "unbalanced eps 0.1, 50 it.",
            &clip,
            fixed(0.1, 50, OtMode::Unbalanced, 0.8),
            tol.ot,
        ),
        (
            "unbalanced eps 0.01 wide costs, 300 it.",
            &wide,
            fixed(0.01, 300, OtMode::Unbalanced, 0.8),
            tol.ot * 10.0,
        ),
        (
            "gamma 1 (saturated rows), 200 it.",
            &clip,
            fixed(0.05, 200, OtMode::Unbalanced, 1.0),
            tol.ot,
        ),
        (
            "balanced eps 0.02 wide costs, 150 it.",
            &wide,
            fixed(0.02, 150, OtMode::Balanced, 0.8),
            tol.ot * 10.0,
        ),
        (
            "balanced defaults",
            &clip,
            OtParams {
                mode: OtMode::Balanced,
                ..base
            },
            1e-3,
        ),
        // Stopped long before convergence: the plans are the rounding onto the constraints.
        (
            "unbalanced eps 0.001 wide costs, 5 it. (rounded)",
            &wide,
            fixed(0.001, 5, OtMode::Unbalanced, 0.8),
            tol.ot * 10.0,
        ),
        (
            "balanced eps 0.01, 3 it. (rounded)",
            &clip,
            fixed(0.01, 3, OtMode::Balanced, 0.8),
            tol.ot * 10.0,
        ),
    ];
    for (name, sim, params, tolerance) in cases {
        compare_plans((gpu, cpu), report, (name, sim, params, tolerance), layout);
    }
    let bad = OtParams { eps: 0.0, ..base };
    let mut plans = poisoned(gpu, len);
    let err = gpu.ot_plans(&mut plans, &gpu.upload(&clip).unwrap(), layout, &bad);
    report.require(
        "ot_plans refuses eps 0 as the core does",
        matches!(
            err,
            Err(BackendError::Ot {
                source: OtError::InvalidEps(_),
                ..
            })
        ),
    );
    // Similarities up to 10 at eps 5e-5: below the f32 resolution floor (1e-4 for them).
    let large: Vec<f32> = wide.iter().map(|s| s * 10.0).collect();
    let sharp = OtParams { eps: 5e-5, ..base };
    let want = cpu.ot_plans(&mut vec![0.0; len], &large, layout, &sharp);
    let mut plans = poisoned(gpu, len);
    let got = gpu.ot_plans(&mut plans, &gpu.upload(&large).unwrap(), layout, &sharp);
    report.require(
        &format!("ot_plans refuses an eps below the resolution floor as the core does: {got:?}"),
        matches!(
            (&got, &want),
            (
                Err(BackendError::Ot {
                    source: OtError::EpsBelowResolution { .. },
                    ..
                }),
                Err(BackendError::Ot {
                    source: OtError::EpsBelowResolution { .. },
                    ..
                }),
            )
        ),
    );
}

/// Patch and prompt features of a small head: 3 images × 20 patches, 2 prompts × 5 classes,
/// dimension 16.
fn head_inputs(seed: u64) -> (HeadShape, Vec<f32>, Vec<f32>) {
    let shape = HeadShape {
        images: 3,
        patches: 20,
        dim: 16,
        prompts: 2,
        classes: 5,
    };
    let patches = uniform(3 * 20 * 16, seed, 1.0);
    let prompts = uniform(2 * 5 * 16, seed + 1, 1.0);
    (shape, patches, prompts)
}

/// Every head operation against the CPU backend's, each fed the CPU's inputs so errors do not
/// compound; then the logits end to end against `fedotp_core::head::forward`.
fn head_ops(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    let (shape, patches, prompts) = head_inputs(100);
    let (rows_f, rows_g, dim) = (
        shape.images * shape.patches,
        shape.prompts * shape.classes,
        shape.dim,
    );
    let layout = BatchLayout {
        images: shape.images,
        patches: shape.patches,
        prompts: shape.prompts,
        classes: shape.classes,
    };
    let problems = shape.images * shape.classes;
    let scale = 100.0;
    let params = OtParams::FEDOTP;
    let up = |v: &[f32]| gpu.upload(v).unwrap();

    // Normalisation.
    let (mut f, mut f_norms) = (vec![0.0; rows_f * dim], vec![0.0; rows_f]);
    cpu.normalize_rows(&mut f, &mut f_norms, &patches, rows_f, dim)
        .unwrap();
    let (mut g, mut g_norms) = (vec![0.0; rows_g * dim], vec![0.0; rows_g]);
    cpu.normalize_rows(&mut g, &mut g_norms, &prompts, rows_g, dim)
        .unwrap();
    let (mut f_g, mut f_norms_g) = (poisoned(gpu, rows_f * dim), poisoned(gpu, rows_f));
    gpu.normalize_rows(&mut f_g, &mut f_norms_g, &up(&patches), rows_f, dim)
        .unwrap();
    report.compare("normalize_rows", &down(gpu, &f_g), &f, tol.kernel);
    report.compare(
        "normalize_rows norms",
        &down(gpu, &f_norms_g),
        &f_norms,
        tol.kernel,
    );

    // Similarities: every patch against every prompt of every class.
    let mm = MatmulDims {
        m: rows_f,
        n: rows_g,
        k: dim,
    };
    let mut sim = vec![0.0; rows_f * rows_g];
    cpu.matmul_nt(&mut sim, &f, &g, mm, 1.0).unwrap();
    let mut sim_g = poisoned(gpu, rows_f * rows_g);
    gpu.matmul_nt(&mut sim_g, &up(&f), &up(&g), mm, 1.0)
        .unwrap();
    report.compare(
        "matmul_nt (always f32)",
        &down(gpu, &sim_g),
        &sim,
        tol.kernel,
    );

    // Plans, logits and their gradient.
    let mut plans = vec![0.0; sim.len()];
    cpu.ot_plans(&mut plans, &sim, layout, &params).unwrap();
    let mut logits = vec![0.0; problems];
    cpu.ot_logits(&mut logits, &sim, &plans, layout, scale)
        .unwrap();
    let (sim_c, plans_c) = (up(&sim), up(&plans));
    let mut logits_g = poisoned(gpu, problems);
    gpu.ot_logits(&mut logits_g, &sim_c, &plans_c, layout, scale)
        .unwrap();
    report.compare("ot_logits", &down(gpu, &logits_g), &logits, tol.kernel);
    let d_logits = uniform(problems, 101, 0.1);
    let mut d_sim = vec![0.0; sim.len()];
    cpu.ot_logits_backward(&mut d_sim, &d_logits, &plans, layout, scale)
        .unwrap();
    let mut d_sim_g = poisoned(gpu, sim.len());
    gpu.ot_logits_backward(&mut d_sim_g, &up(&d_logits), &plans_c, layout, scale)
        .unwrap();
    report.compare(
        "ot_logits_backward",
        &down(gpu, &d_sim_g),
        &d_sim,
        tol.kernel,
    );

    // Back onto the prompt features: d_g = d_simᵀ · f, then through the normalisation.
    let mm = MatmulDims {
        m: rows_g,
        n: dim,
        k: rows_f,
    };
    let mut d_g = vec![0.0; rows_g * dim];
    cpu.matmul_tn(&mut d_g, &d_sim, &f, mm, 1.0).unwrap();
    let mut d_g_g = poisoned(gpu, rows_g * dim);
    gpu.matmul_tn(&mut d_g_g, &up(&d_sim), &up(&f), mm, 1.0)
        .unwrap();
    report.compare(
        "matmul_tn (always f32)",
        &down(gpu, &d_g_g),
        &d_g,
        tol.kernel,
    );
    let mut d_prompts = vec![0.0; rows_g * dim];
    cpu.normalize_rows_backward(&mut d_prompts, &d_g, &g, &g_norms, rows_g, dim)
        .unwrap();
    let mut d_prompts_g = poisoned(gpu, rows_g * dim);
    gpu.normalize_rows_backward(
        &mut d_prompts_g,
        &up(&d_g),
        &up(&g),
        &up(&g_norms),
        rows_g,
        dim,
    )
    .unwrap();
    report.compare(
        "normalize_rows_backward",
        &down(gpu, &d_prompts_g),
        &d_prompts,
        tol.kernel,
    );

    // Cross-entropy: the mean loss and its gradient.
    let labels = vec![4, 0, 2];
    let mut d = vec![0.0; problems];
    let loss = cpu
        .cross_entropy(&mut d, &logits, &labels, shape.classes)
        .unwrap();
    let mut d_g = poisoned(gpu, problems);
    let loss_g = gpu
        .cross_entropy(&mut d_g, &up(&logits), &labels, shape.classes)
        .unwrap();
    report.compare("cross_entropy loss", &[loss_g], &[loss], tol.kernel);
    report.compare("cross_entropy gradient", &down(gpu, &d_g), &d, tol.kernel);

    // End to end on the GPU against the core's OT head on the raw features.
    let mut g_g = poisoned(gpu, rows_g * dim);
    let mut g_norms_g = poisoned(gpu, rows_g);
    gpu.normalize_rows(&mut g_g, &mut g_norms_g, &up(&prompts), rows_g, dim)
        .unwrap();
    let mut sim_e = poisoned(gpu, rows_f * rows_g);
    gpu.matmul_nt(
        &mut sim_e,
        &f_g,
        &g_g,
        MatmulDims {
            m: rows_f,
            n: rows_g,
            k: dim,
        },
        1.0,
    )
    .unwrap();
    let mut plans_e = poisoned(gpu, sim.len());
    gpu.ot_plans(&mut plans_e, &sim_e, layout, &params).unwrap();
    let mut logits_e = poisoned(gpu, problems);
    gpu.ot_logits(&mut logits_e, &sim_e, &plans_e, layout, scale)
        .unwrap();
    let mut core_logits = vec![0.0; problems];
    let mut core_plans = vec![0.0; sim.len()];
    let mut work = vec![0.0; core_head::workspace_len(&shape).unwrap()];
    core_head::forward(
        &patches,
        &prompts,
        &shape,
        &params,
        scale,
        &mut work,
        &mut core_logits,
        Some(&mut core_plans),
    )
    .unwrap();
    report.compare(
        "OT head logits vs fedotp_core::head",
        &down(gpu, &logits_e),
        &core_logits,
        1e-4,
    );
    report.compare(
        "OT head plans vs fedotp_core::head",
        &down(gpu, &plans_e),
        &core_plans,
        1e-3,
    );
}

/// A zero feature makes its image's similarities non-finite: both backends refuse the solve
/// with the core's error.
fn non_finite_features(gpu: &Cuda, cpu: &Cpu, report: &mut Report) {
    let (shape, mut patches, prompts) = head_inputs(110);
    let dim = shape.dim;
    patches[21 * dim..22 * dim].fill(0.0); // image 1, patch 1
    let (rows_f, rows_g) = (shape.images * shape.patches, shape.prompts * shape.classes);
    let layout = BatchLayout {
        images: shape.images,
        patches: shape.patches,
        prompts: shape.prompts,
        classes: shape.classes,
    };
    let (mut f, mut norms) = (poisoned(gpu, rows_f * dim), poisoned(gpu, rows_f));
    gpu.normalize_rows(
        &mut f,
        &mut norms,
        &gpu.upload(&patches).unwrap(),
        rows_f,
        dim,
    )
    .unwrap();
    let norms = down(gpu, &norms);
    report.require(
        "zero feature: norm 0 and non-finite unit row",
        norms[21] == 0.0
            && down(gpu, &f)[21 * dim..22 * dim]
                .iter()
                .all(|x| !x.is_finite()),
    );
    let (mut g, mut g_norms) = (poisoned(gpu, rows_g * dim), poisoned(gpu, rows_g));
    gpu.normalize_rows(
        &mut g,
        &mut g_norms,
        &gpu.upload(&prompts).unwrap(),
        rows_g,
        dim,
    )
    .unwrap();
    let mut sim = poisoned(gpu, rows_f * rows_g);
    gpu.matmul_nt(
        &mut sim,
        &f,
        &g,
        MatmulDims {
            m: rows_f,
            n: rows_g,
            k: dim,
        },
        1.0,
    )
    .unwrap();
    let sim_host = down(gpu, &sim);
    let mut plans = poisoned(gpu, sim_host.len());
    let got = gpu.ot_plans(&mut plans, &sim, layout, &OtParams::FEDOTP);
    let first_bad = sim_host.iter().position(|x| !x.is_finite());
    let mut plans_c = vec![0.0; sim_host.len()];
    let want = cpu.ot_plans(&mut plans_c, &sim_host, layout, &OtParams::FEDOTP);
    report.require(
        "zero feature: ot_plans refuses, naming the first non-finite similarity",
        matches!(
            got,
            Err(BackendError::Ot { source: OtError::NonFinite { index, .. }, .. })
                if Some(index) == first_bad
        ) && matches!(
            want,
            Err(BackendError::Ot {
                source: OtError::NonFinite { .. },
                ..
            })
        ),
    );
}

/// FedOTP's SGD (lr 0.001, momentum 0.9, weight decay 5e-4) from a zero momentum buffer:
/// `ctx − lr · (grad + wd · ctx)`.
fn sgd_first_step(ctx: &[f32], grad: &[f32]) -> Vec<f32> {
    let (lr, wd) = (1e-3f32, 5e-4f32);
    ctx.iter()
        .zip(grad)
        .map(|(&p, &g)| p - lr * (g + wd * p))
        .collect()
}

/// Two FedOTP local steps through the training code (`fedotp_host::prompt`) on each backend: image
/// features from the frozen tower, prompt features, the OT head, the loss, the context
/// gradient and the SGD update of the context — the second step reusing the first one's
/// workspace. With each stopping rule: the released one solves on the CPU behind either backend.
fn local_steps(gpu: &Cuda, cpu: &Cpu, report: &mut Report, tol: Tolerances) {
    for stopping in [OtStopping::PerProblem, OtStopping::Released] {
        local_steps_with(gpu, cpu, report, tol, stopping);
    }
}

fn local_steps_with(
    gpu: &Cuda,
    cpu: &Cpu,
    report: &mut Report,
    tol: Tolerances,
    stopping: OtStopping,
) {
    // The released rule stops when the batch's mean change of the scalings falls below `tol`;
    // on this random model they reach thousands, so at the paper's 1e-3 the stop is decided by
    // f32 rounding and two correct summation orders (cuBLAS's, the CPU's) stop iterations apart
    // (an H200 run: 318 against 324). As the PyTorch reference of the rule does
    // (tests/scripts/prompt_step_reference.py), that case runs at 0.6.
    let params = match stopping {
        OtStopping::PerProblem => OtParams::FEDOTP,
        OtStopping::Released => OtParams {
            tol: 0.6,
            ..OtParams::FEDOTP
        },
    };
    let weights = tiny_weights(120, Activation::QuickGelu);
    let clip_c = weights.clone().to_backend(cpu).unwrap();
    let clip_g = weights.clone().to_backend(gpu).unwrap();
    let config = &weights.config;
    let (n_ctx, n_sets, batch) = (4, 2, 2);
    let size = config.vision.image_size();
    let images = uniform(batch * 3 * size * size, 121, 1.0);
    let labels = vec![2u32, 0];

    let features_c = encode_images(cpu, &clip_c.vision, &images, batch).unwrap();
    let features_g =
        encode_images(gpu, &clip_g.vision, &gpu.upload(&images).unwrap(), batch).unwrap();
    report.compare(
        "local step: unit patch features",
        &features_g.patches,
        &features_c.patches,
        tol.chain,
    );
    let model = PromptModel {
        learner: PromptLearner::from_tokens(
            &tiny_classes(),
            n_ctx,
            n_sets,
            &weights.text,
            SpecialTokens::CLIP,
        )
        .unwrap(),
        head: Head::Ot {
            params,
            stopping,
            patches: features_c.patches_per_image,
        },
        scale: weights.logit_scale.exp(),
    };
    let image_c = cpu.upload(&features_c.patches).unwrap();
    let image_g = gpu.upload(&features_g.patches).unwrap();
    let (mut ws_c, mut ws_g) = (model.workspace(cpu).unwrap(), model.workspace(gpu).unwrap());
    let mut ctx_c = uniform(n_sets * n_ctx * config.text.width(), 122, 0.02);
    let mut ctx_g = ctx_c.clone();
    let rule = match stopping {
        OtStopping::PerProblem => "",
        OtStopping::Released => ", released rule",
    };
    for step in 1..=2 {
        let step = format!("{step}{rule}");
        let c = model
            .loss_and_gradient(cpu, &clip_c.text, &ctx_c, &image_c, &labels, &mut ws_c)
            .unwrap();
        let g = model
            .loss_and_gradient(gpu, &clip_g.text, &ctx_g, &image_g, &labels, &mut ws_g)
            .unwrap();
        report.compare(
            &format!("local step {step}: logits"),
            &g.logits,
            &c.logits,
            tol.chain,
        );
        report.compare(
            &format!("local step {step}: loss"),
            &[g.loss],
            &[c.loss],
            tol.chain,
        );
        report.compare(
            &format!("local step {step}: context gradient"),
            &g.d_ctx,
            &c.d_ctx,
            tol.chain,
        );
        // The GPU's features carry its math mode's rounding into the solve: its iteration counts
        // match the core's only in f32.
        let agree = match gpu.math() {
            MathMode::F32 => reports_agree(&g.report, &c.report),
            _ => g.report.problems == c.report.problems,
        };
        report.require(
            &format!(
                "local step {step}: OT report ({} vs {} iterations)",
                g.report.total_iterations, c.report.total_iterations
            ),
            agree,
        );
        ctx_c = sgd_first_step(&ctx_c, &c.d_ctx);
        ctx_g = sgd_first_step(&ctx_g, &g.d_ctx);
        report.compare(
            &format!("local step {step}: updated context"),
            &ctx_g,
            &ctx_c,
            tol.chain,
        );
    }
}
