//! CPU backend ops against naive float64 references written out loop by loop — here for the
//! paths the PyTorch fixtures do not reach (attention's backward without the causal mask) and
//! for the buffer and index checks every backend must make.

use fedotp::backend::{AttentionShape, Backend, BackendError, Cpu, PatchShape, SeqShape};

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
