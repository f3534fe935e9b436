//! The text tower's contract beyond the PyTorch fixtures: prompt layout, truncation, activation
//! reuse, the directional derivative of the backward pass, and input errors.

use fedotp_host::backend::Cpu;
use fedotp_host::clip::{
    text_backward, text_forward, ClipConfig, ClipError, ClipWeights, PromptBatch, SpecialTokens,
    TextActivations, TextTower, TextWeights,
};
use fedotp_tests::inputs::uniform;

fn tiny_text(seed: u64) -> TextWeights<Vec<f32>> {
    let mut config = ClipConfig::tiny();
    config.text.as_clip_mut().unwrap().heads = 4; // 16-wide heads: a different split than the fixtures
    let TextTower::Clip(text) = ClipWeights::random(&config, seed).unwrap().text else {
        unreachable!("the tiny CLIP's text tower is CLIP's")
    };
    text
}

fn classes() -> Vec<Vec<u32>> {
    vec![
        vec![1929, 269],
        vec![2102, 5867, 269],
        vec![320, 1125, 539, 320, 269],
    ]
}

#[test]
fn prompt_layout_and_context_gradient() {
    let prompts = PromptBatch::new(&classes(), 3, 2, 77, SpecialTokens::CLIP).unwrap();
    assert_eq!(prompts.len(), 6);
    assert_eq!(prompts.seq_len(), 1 + 3 + 5 + 1);
    assert_eq!(prompts.eot_positions(), &[6, 7, 9, 6, 7, 9]);
    let seq = prompts.seq_len();
    assert_eq!(
        &prompts.token_ids()[seq..2 * seq],
        &[49406, 0, 0, 0, 2102, 5867, 269, 49407, 0, 0]
    );

    // Context rows are spliced in per set; other rows come from the token table.
    let cpu = Cpu::new();
    let text = tiny_text(1);
    let width = text.config.width;
    let ctx = uniform(2 * 3 * width, 7, 1.0);
    let tower = TextTower::Clip(text.clone());
    let emb = prompts.embed(&cpu, &tower, &ctx).unwrap();
    let row = |s: usize, t: usize| &emb[(s * seq + t) * width..][..width];
    assert_eq!(row(4, 2), &ctx[(3 + 1) * width..][..width]); // set 1, context row 1
    assert_eq!(row(1, 4), &text.token_embedding[2102 * width..][..width]);

    // The context gradient sums each set's rows over its classes.
    let d_emb = uniform(6 * seq * width, 3, 1.0);
    let d_ctx = prompts.context_gradient(&cpu, &tower, &d_emb).unwrap();
    for set in 0..2 {
        for k in 0..3 {
            for i in 0..width {
                let want: f32 = (0..3)
                    .map(|c| d_emb[((set * 3 + c) * seq + 1 + k) * width + i])
                    .sum();
                let got = d_ctx[(set * 3 + k) * width + i];
                assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0));
            }
        }
    }

    // A prompt longer than the context is refused.
    let long = vec![vec![320; 72]];
    let err = PromptBatch::new(&long, 4, 1, 77, SpecialTokens::CLIP).unwrap_err();
    assert!(
        err.to_string().contains("exceed the context length 77"),
        "{err}"
    );
}

#[test]
fn truncation_and_reused_activations_match_fresh_runs() {
    let cpu = Cpu::new();
    let text = tiny_text(2);
    let width = text.config.width;
    let run = |emb: &[f32], in_seq, eot: &[u32], acts: &mut TextActivations<Vec<f32>>| {
        let features = text_forward(&cpu, &text, &emb.to_vec(), in_seq, eot, acts).unwrap();
        let d_features = uniform(features.len(), 11, 1.0);
        let d_emb = text_backward(&cpu, &text, acts, &d_features).unwrap();
        (features, d_emb)
    };

    // A full-length batch (EOT at 76) then a short one, through the same activations.
    let long_eot = [76, 10, 30];
    let long = uniform(3 * 77 * width, 5, 0.1);
    let short_eot = [3, 8];
    let short = uniform(2 * 12 * width, 6, 0.1);
    let mut reused = TextActivations::new(&cpu).unwrap();
    let long_reused = run(&long, 77, &long_eot, &mut reused);
    let short_reused = run(&short, 12, &short_eot, &mut reused);
    let long_again = run(&long, 77, &long_eot, &mut reused);
    let fresh = |emb: &[f32], in_seq, eot: &[u32]| {
        run(emb, in_seq, eot, &mut TextActivations::new(&cpu).unwrap())
    };
    assert_eq!(long_reused, fresh(&long, 77, &long_eot));
    assert_eq!(short_reused, fresh(&short, 12, &short_eot));
    assert_eq!(long_again, long_reused);

    // Padding the short batch to 77 changes nothing but adds zero gradient rows.
    let mut padded = vec![0.5; 2 * 77 * width];
    for s in 0..2 {
        padded[s * 77 * width..][..12 * width]
            .copy_from_slice(&short[s * 12 * width..][..12 * width]);
    }
    let (features, d_padded) = fresh(&padded, 77, &short_eot);
    assert_eq!(features, short_reused.0);
    for s in 0..2 {
        let rows = &d_padded[s * 77 * width..][..77 * width];
        assert_eq!(
            &rows[..9 * width],
            &short_reused.1[s * 12 * width..][..9 * width]
        );
        assert!(rows[9 * width..].iter().all(|&g| g == 0.0));
    }
}

#[test]
fn backward_matches_directional_derivative() {
    let cpu = Cpu::new();
    let text = tiny_text(3);
    let width = text.config.width;
    let (batch, seq) = (3, 9);
    let eot = [8, 5, 2];
    let emb = uniform(batch * seq * width, 21, 0.1);
    let direction = uniform(emb.len(), 22, 1.0);
    let weights_out = uniform(batch * text.projection.out_features, 23, 1.0);
    let loss = |e: &[f32]| -> f64 {
        let mut acts = TextActivations::new(&cpu).unwrap();
        let f = text_forward(&cpu, &text, &e.to_vec(), seq, &eot, &mut acts).unwrap();
        f.iter()
            .zip(&weights_out)
            .map(|(a, b)| (a * b) as f64)
            .sum()
    };
    let mut acts = TextActivations::new(&cpu).unwrap();
    text_forward(&cpu, &text, &emb, seq, &eot, &mut acts).unwrap();
    let grad = text_backward(&cpu, &text, &mut acts, &weights_out).unwrap();
    let analytic: f64 = grad
        .iter()
        .zip(&direction)
        .map(|(g, d)| (g * d) as f64)
        .sum();

    let h = 1e-3f32;
    let shifted = |sign: f32| -> Vec<f32> {
        emb.iter()
            .zip(&direction)
            .map(|(e, d)| e + sign * h * d)
            .collect()
    };
    let numeric = (loss(&shifted(1.0)) - loss(&shifted(-1.0))) / (2.0 * h as f64);
    let rel = (numeric - analytic).abs() / analytic.abs();
    println!("directional derivative: numeric {numeric:.6} analytic {analytic:.6} rel {rel:.2e}");
    assert!(
        rel < 1e-2,
        "numeric {numeric} vs analytic {analytic} (rel {rel:.2e})"
    );
}

#[test]
fn malformed_inputs_are_errors() {
    let cpu = Cpu::new();
    let text = tiny_text(4);
    let width = text.config.width;
    let emb = vec![0.0; 2 * 5 * width];
    let mut acts = TextActivations::new(&cpu).unwrap();

    let err = text_forward(&cpu, &text, &emb, 5, &[4, 5], &mut acts).unwrap_err();
    assert!(matches!(err, ClipError::InvalidInput(_)), "{err}");
    assert!(
        err.to_string().contains("EOT position 5 of sequence 1"),
        "{err}"
    );

    let err = text_forward(&cpu, &text, &emb, 5, &[4, 4, 4], &mut acts).unwrap_err();
    assert!(err.to_string().contains("3 sequences × 5 tokens"), "{err}");

    let err = text_backward(&cpu, &text, &mut acts, &vec![0.0; 64]).unwrap_err();
    assert!(err.to_string().contains("needs the activations"), "{err}");

    text_forward(&cpu, &text, &emb, 5, &[4, 2], &mut acts).unwrap();
    let err = text_backward(&cpu, &text, &mut acts, &vec![0.0; 3]).unwrap_err();
    assert!(
        err.to_string().contains("d_features holds 3 values"),
        "{err}"
    );
}
