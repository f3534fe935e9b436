//! CPU backend ops against naive float64 references written out loop by loop — here for the
//! paths the PyTorch fixtures do not reach (attention's backward without the causal mask; the
//! ResNet ops on odd sizes, strides and paddings the fixture's model does not have) and for the
//! buffer, index and shape checks every backend must make.

use fedotp_host::backend::{
    AttentionShape, Backend, BackendError, BatchNorm, Conv2d, Cpu, LayerNorm, MapShape, PatchShape,
    SeqShape,
};

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Naive attention: returns (out, probs, d_qkv) for upstream gradient `d_out`.
fn attention_reference(
    qkv: &[f32],
    d_out: &[f32],
    s: AttentionShape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b_n, l, h_n, d) = (s.batch, s.seq, s.heads, s.head_dim);
    let w = h_n * d;
    let at = |b: usize, t: usize, part: usize, h: usize, i: usize| {
        (b * l + t) * 3 * w + part * w + h * d + i
    };
    let mut out = vec![0.0; b_n * l * w];
    let mut probs = vec![0.0; b_n * h_n * l * l];
    let mut d_qkv = vec![0.0; qkv.len()];
    let scale = 1.0 / (d as f64).sqrt();
    for b in 0..b_n {
        for h in 0..h_n {
            let p = |i: usize, j: usize| (b * h_n + h) * l * l + i * l + j;
            for i in 0..l {
                let visible = if s.causal { i + 1 } else { l };
                let scores: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..d)
                            .map(|k| qkv[at(b, i, 0, h, k)] as f64 * qkv[at(b, j, 1, h, k)] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                for j in 0..visible {
                    probs[p(i, j)] = (scores[j] - max).exp() / sum;
                }
                for k in 0..d {
                    out[(b * l + i) * w + h * d + k] = (0..visible)
                        .map(|j| probs[p(i, j)] * qkv[at(b, j, 2, h, k)] as f64)
                        .sum();
                }
            }
            for i in 0..l {
                let d_o = |k: usize| d_out[(b * l + i) * w + h * d + k] as f64;
                let dp: Vec<f64> = (0..l)
                    .map(|j| (0..d).map(|k| d_o(k) * qkv[at(b, j, 2, h, k)] as f64).sum())
                    .collect();
                let dot: f64 = (0..l).map(|j| dp[j] * probs[p(i, j)]).sum();
                for j in 0..l {
                    let ds = probs[p(i, j)] * (dp[j] - dot) * scale;
                    for k in 0..d {
                        d_qkv[at(b, j, 2, h, k)] += probs[p(i, j)] * d_o(k);
                        d_qkv[at(b, i, 0, h, k)] += ds * qkv[at(b, j, 1, h, k)] as f64;
                        d_qkv[at(b, j, 1, h, k)] += ds * qkv[at(b, i, 0, h, k)] as f64;
                    }
                }
            }
        }
    }
    (out, probs, d_qkv)
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max error {err:.3e} (scale {scale:.3e})"
    );
}

#[test]
fn attention_forward_and_backward_match_float64_with_and_without_mask() {
    let cpu = Cpu::new();
    for causal in [false, true] {
        let shape = AttentionShape {
            batch: 3,
            seq: 7,
            heads: 2,
            head_dim: 5,
            causal,
        };
        let width = shape.width();
        let qkv = values(3 * 7 * 3 * width, 1);
        let d_out = values(3 * 7 * width, 2);
        let (want_out, want_probs, want_d_qkv) = attention_reference(&qkv, &d_out, shape);

        let mut out = vec![f32::NAN; 3 * 7 * width];
        let mut probs = vec![f32::NAN; shape.probs_len()];
        cpu.attention(&mut out, &mut probs, &qkv, shape).unwrap();
        assert_close(&format!("out (causal {causal})"), &out, &want_out, 1e-5);
        assert_close(
            &format!("probs (causal {causal})"),
            &probs,
            &want_probs,
            1e-5,
        );

        let mut d_qkv = vec![f32::NAN; qkv.len()];
        cpu.attention_backward(&mut d_qkv, &d_out, &qkv, &probs, shape)
            .unwrap();
        assert_close(
            &format!("d_qkv (causal {causal})"),
            &d_qkv,
            &want_d_qkv,
            1e-5,
        );
    }
}

#[test]
fn patches_are_flattened_like_a_conv_weight() {
    let cpu = Cpu::new();
    let shape = PatchShape {
        batch: 2,
        channels: 3,
        image_size: 6,
        patch_size: 3,
    };
    let images: Vec<f32> = (0..2 * 3 * 36).map(|i| i as f32).collect();
    let mut out = vec![0.0; 2 * 4 * 27];
    cpu.extract_patches(&mut out, &images, shape).unwrap();
    // Image 1, patch (row 1, col 0) = patch 2; its (channel 2, y 1, x 2) element sits at
    // image offset 3·36 (image 1) + 2·36 (channel 2) + (3 + 1)·6 (row) + 2 (column).
    let (image, patch, channel, y, x) = (1, 2, 2, 1, 2);
    let want = (image * 3 * 36 + channel * 36 + (3 + y) * 6 + x) as f32;
    assert_eq!(
        out[(image * 4 + patch) * 27 + (channel * 3 + y) * 3 + x],
        want
    );
}

#[test]
fn short_buffers_and_bad_indices_are_errors() {
    let cpu = Cpu::new();
    let shape = SeqShape {
        batch: 2,
        seq: 3,
        width: 4,
    };
    let inp = vec![0.0; 24];
    let mut out = vec![0.0; 7];
    let err = cpu.gather_rows(&mut out, &inp, &[0, 1], shape).unwrap_err();
    assert!(
        matches!(err, BackendError::BufferTooSmall { needed: 8, .. }),
        "{err}"
    );
    let mut out = vec![0.0; 8];
    let err = cpu.gather_rows(&mut out, &inp, &[0, 3], shape).unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::IndexOutOfRange {
                index: 3,
                bound: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = cpu.gather_rows(&mut out, &inp, &[0], shape).unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::IndexCount {
                len: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
}

/// Calls the CPU backend once refused only by a panic of its own: the checks are now the ops'
/// front doors, shared by every backend.
#[test]
fn front_door_checks_refuse_what_the_cpu_backend_did_not_check() {
    let cpu = Cpu::new();
    // A LayerNorm whose scale holds 3 of its 4 values.
    let ln = LayerNorm {
        weight: vec![1.0; 3],
        bias: vec![0.0; 4],
        width: 4,
        eps: 1e-5,
    };
    let (mut out, mut mean, mut rstd) = (vec![0.0; 8], vec![0.0; 2], vec![0.0; 2]);
    let err = cpu
        .layer_norm(&mut out, (&mut mean, &mut rstd), &vec![0.0; 8], &ln, 2)
        .unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::BufferTooSmall {
                buffer: "weight",
                len: 3,
                needed: 4,
                ..
            }
        ),
        "{err}"
    );
    // A position-embedding gradient asked to lengthen the sequences (5 of 3 tokens).
    let shape = SeqShape {
        batch: 1,
        seq: 5,
        width: 2,
    };
    let err = cpu
        .position_embed_backward(&mut vec![0.0; 10], &vec![0.0; 10], 3, shape)
        .unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::IndexOutOfRange {
                index: 5,
                bound: 4,
                ..
            }
        ),
        "{err}"
    );
    // Patches of side 0.
    let shape = PatchShape {
        batch: 1,
        channels: 3,
        image_size: 4,
        patch_size: 0,
    };
    let err = cpu
        .extract_patches(&mut vec![0.0; 48], &vec![0.0; 48], shape)
        .unwrap_err();
    assert!(matches!(err, BackendError::InvalidShape { .. }), "{err}");
}

/// Naive convolution over channels-last maps with a PyTorch-layout `(out, in, k, k)` weight.
fn conv_reference(inp: &[f32], shape: MapShape, weight: &[f32], conv: &Conv2d<()>) -> Vec<f64> {
    let out = conv.output_shape(shape).unwrap();
    let (k, p, s) = (
        conv.kernel as isize,
        conv.padding as isize,
        conv.stride as isize,
    );
    let (c_in, c_out) = (conv.in_channels, conv.out_channels);
    let mut values = vec![0.0; out.len()];
    for b in 0..shape.batch {
        for oy in 0..out.height {
            for ox in 0..out.width {
                for o in 0..c_out {
                    let mut sum = 0.0f64;
                    for c in 0..c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = oy as isize * s + ky - p;
                                let ix = ox as isize * s + kx - p;
                                if iy < 0
                                    || ix < 0
                                    || iy >= shape.height as isize
                                    || ix >= shape.width as isize
                                {
                                    continue;
                                }
                                let x = inp[((b * shape.height + iy as usize) * shape.width
                                    + ix as usize)
                                    * c_in
                                    + c];
                                let w = weight[((o * c_in + c) * k as usize + ky as usize)
                                    * k as usize
                                    + kx as usize];
                                sum += x as f64 * w as f64;
                            }
                        }
                    }
                    values[((b * out.height + oy) * out.width + ox) * c_out + o] = sum;
                }
            }
        }
    }
    values
}

/// `(out, in, k, k)` → the backend's channels-last `(out, k, k, in)`.
fn weight_channels_last(weight: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; weight.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            for t in 0..k * k {
                out[(o * k * k + t) * c_in + c] = weight[(o * c_in + c) * k * k + t];
            }
        }
    }
    out
}

#[test]
fn conv2d_matches_float64_for_strides_paddings_and_odd_sizes() {
    let cpu = Cpu::new();
    // (height, width, c_in, c_out, kernel, stride, padding)
    let cases = [
        (9, 7, 3, 5, 3, 2, 1), // the stem's first convolution, odd sizes
        (6, 6, 4, 3, 3, 1, 1), // the bottlenecks' 3×3
        (5, 8, 6, 7, 1, 1, 0), // 1×1: a GEMM over rows, no im2col
        (7, 5, 2, 4, 1, 2, 0), // strided 1×1
        (8, 9, 3, 2, 5, 3, 2), // larger kernel and stride
        (4, 4, 2, 3, 3, 1, 0), // no padding
    ];
    for (seed, &(h, w, c_in, c_out, k, stride, padding)) in cases.iter().enumerate() {
        let shape = MapShape {
            batch: 2,
            height: h,
            width: w,
            channels: c_in,
        };
        let spec = Conv2d {
            weight: (),
            in_channels: c_in,
            out_channels: c_out,
            kernel: k,
            stride,
            padding,
        };
        let inp = values(shape.len(), 10 + seed as u64);
        let torch_weight = values(c_out * c_in * k * k, 20 + seed as u64);
        let want = conv_reference(&inp, shape, &torch_weight, &spec);
        let conv = Conv2d {
            weight: weight_channels_last(&torch_weight, c_out, c_in, k),
            in_channels: c_in,
            out_channels: c_out,
            kernel: k,
            stride,
            padding,
        };
        let mut out = vec![f32::NAN; want.len()];
        cpu.conv2d(&mut out, &inp, &conv, shape).unwrap();
        let what = format!("conv {h}×{w}, {c_in}→{c_out}, k {k}, stride {stride}, pad {padding}");
        assert_close(&what, &out, &want, 1e-6);
    }
}

#[test]
fn batch_norm_relu_pool_and_pool_tokens_match_float64() {
    let cpu = Cpu::new();
    let shape = MapShape {
        batch: 2,
        height: 5,
        width: 7,
        channels: 3,
    };
    let x = values(shape.len(), 3);

    // Batch-norm with frozen statistics, then ReLU.
    let bn = BatchNorm {
        weight: vec![0.5, -1.5, 2.0],
        bias: vec![0.1, 0.0, -0.3],
        running_mean: vec![0.2, -0.4, 0.0],
        running_var: vec![0.25, 2.0, 1e-3],
        channels: 3,
        eps: 1e-5,
    };
    let want: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i % 3;
            let var = bn.running_var[c] as f64 + bn.eps as f64;
            let y = (v as f64 - bn.running_mean[c] as f64) / var.sqrt() * bn.weight[c] as f64
                + bn.bias[c] as f64;
            y.max(0.0)
        })
        .collect();
    let mut y = x.clone();
    cpu.batch_norm(&mut y, &bn, shape.rows()).unwrap();
    cpu.relu(&mut y, shape.len()).unwrap();
    assert_close("batch_norm + relu", &y, &want, 1e-6);

    // 2×2 average pool on a 5×7 map: floor rounding drops the last row and column.
    let mut pooled = vec![f32::NAN; 2 * 2 * 3 * 3];
    cpu.avg_pool2d(&mut pooled, &x, shape, 2).unwrap();
    let mut want = vec![0.0f64; pooled.len()];
    for b in 0..2 {
        for oy in 0..2 {
            for ox in 0..3 {
                for c in 0..3 {
                    let mut sum = 0.0;
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let (iy, ix) = (2 * oy + dy, 2 * ox + dx);
                        sum += x[((b * 5 + iy) * 7 + ix) * 3 + c] as f64;
                    }
                    want[((b * 2 + oy) * 3 + ox) * 3 + c] = sum / 4.0;
                }
            }
        }
    }
    assert_close("avg_pool2d", &pooled, &want, 1e-6);

    // Attention-pool tokens: [mean; positions] + pos.
    let positions = shape.positions();
    let pos = values((1 + positions) * 3, 4);
    let mut tokens = vec![f32::NAN; 2 * (1 + positions) * 3];
    cpu.attention_pool_tokens(&mut tokens, &x, &pos, shape)
        .unwrap();
    let mut want = vec![0.0f64; tokens.len()];
    for b in 0..2 {
        for c in 0..3 {
            let at = |p: usize| x[(b * positions + p) * 3 + c] as f64;
            let mean = (0..positions).map(at).sum::<f64>() / positions as f64;
            want[b * (1 + positions) * 3 + c] = mean + pos[c] as f64;
            for p in 0..positions {
                want[(b * (1 + positions) + 1 + p) * 3 + c] = at(p) + pos[(1 + p) * 3 + c] as f64;
            }
        }
    }
    assert_close("attention_pool_tokens", &tokens, &want, 1e-6);
}

#[test]
fn images_are_transposed_to_channels_last() {
    let cpu = Cpu::new();
    let shape = MapShape {
        batch: 2,
        height: 3,
        width: 4,
        channels: 3,
    };
    let images: Vec<f32> = (0..shape.len()).map(|i| i as f32).collect();
    let mut out = vec![f32::NAN; shape.len()];
    cpu.to_channels_last(&mut out, &images, shape).unwrap();
    // Image 1, channel 2, row 1, column 3.
    let (b, c, y, x) = (1, 2, 1, 3);
    assert_eq!(
        out[((b * 3 + y) * 4 + x) * 3 + c],
        (((b * 3 + c) * 3 + y) * 4 + x) as f32
    );
}

#[test]
fn convolution_shape_errors_name_the_problem() {
    let cpu = Cpu::new();
    let conv = Conv2d {
        weight: vec![0.0; 4 * 9 * 3],
        in_channels: 3,
        out_channels: 4,
        kernel: 3,
        stride: 1,
        padding: 0,
    };
    let mut shape = MapShape {
        batch: 1,
        height: 4,
        width: 4,
        channels: 2,
    };
    let inp = vec![0.0; 100];
    let mut out = vec![0.0; 100];
    let err = cpu.conv2d(&mut out, &inp, &conv, shape).unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidShape { .. }) && err.to_string().contains("2 channels"),
        "{err}"
    );
    shape.channels = 3;
    shape.width = 2;
    let err = cpu.conv2d(&mut out, &inp, &conv, shape).unwrap_err();
    assert!(err.to_string().contains("kernel 3 is larger"), "{err}");
    let err = cpu.avg_pool2d(&mut out, &inp, shape, 0).unwrap_err();
    assert!(matches!(err, BackendError::InvalidShape { .. }), "{err}");
    shape.width = 4;
    let mut short = vec![0.0; 7];
    let err = cpu.conv2d(&mut short, &inp, &conv, shape).unwrap_err();
    assert!(
        matches!(err, BackendError::BufferTooSmall { needed: 16, .. }),
        "{err}"
    );
}
