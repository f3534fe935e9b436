//! One FedOTP local step and one PromptFL step against PyTorch
//! (`host/scripts/prompt_step_reference.py`, on the small open_clip model of the CLIP fixtures):
//! image features, logits, loss and the gradient of the context.

#[path = "clip_support/mod.rs"]
mod clip_support;

use std::path::PathBuf;

use clip_support::{assert_close, fixture, Reference};
use fedotp::backend::{Backend, Cpu};
use fedotp::clip::ClipWeights;
use fedotp::prompt::{encode_images, Head, PromptLearner, PromptModel};
use fedotp_core::ot::{OtMode, OtParams};

fn reference() -> Reference {
    Reference::from_file(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/prompt_step/reference.safetensors"),
    )
}

struct Setup {
    cpu: Cpu,
    weights: fedotp::clip::ClipWeights<Vec<f32>>,
    reference: Reference,
    class_ids: Vec<Vec<u32>>,
    labels: Vec<u32>,
    scale: f32,
}

fn setup() -> Setup {
    let cpu = Cpu::new();
    let weights = ClipWeights::load(fixture("openai"))
        .unwrap()
        .to_backend(&cpu)
        .unwrap();
    let reference = reference();
    let class_ids = (0..3)
        .map(|c| reference.ids(&format!("class{c}")).0)
        .collect();
    let labels = reference.ids("labels").0;
    let scale = reference.values("scale")[0];
    Setup {
        cpu,
        weights,
        reference,
        class_ids,
        labels,
        scale,
    }
}

/// The paper's solver run to convergence, as the reference does.
const CONVERGED: OtParams = OtParams {
    eps: 0.1,
    gamma: 0.8,
    max_iter: 100_000,
    tol: 1e-6,
    mode: OtMode::Unbalanced,
};

#[test]
fn fedotp_step_matches_pytorch() {
    let s = setup();
    let images = s.cpu.upload(&s.reference.values("images")).unwrap();
    let features = encode_images(&s.cpu, &s.weights.vision, &images, 4).unwrap();
    assert_close(
        "unit patch features",
        &features.patches,
        &s.reference.values("fedotp.patches"),
        1e-5,
    );

    let learner = PromptLearner::from_tokens(&s.class_ids, 4, 2, &s.weights.text).unwrap();
    let model = PromptModel {
        learner,
        head: Head::Ot {
            params: CONVERGED,
            patches: features.patches_per_image,
        },
        scale: s.scale,
    };
    let mut ws = model.workspace(&s.cpu).unwrap();
    let patches = s.cpu.upload(&features.patches).unwrap();
    let ctx = s.reference.values("fedotp.ctx0");
    let out = model
        .loss_and_gradient(&s.cpu, &s.weights.text, &ctx, &patches, &s.labels, &mut ws)
        .unwrap();
    assert_eq!(out.report.problems, 4 * 3);
    assert_eq!(out.report.converged, 4 * 3);
    assert_close(
        "FedOTP logits",
        &out.logits,
        &s.reference.values("fedotp.logits"),
        1e-5,
    );
    assert_close(
        "FedOTP loss",
        &[out.loss],
        &s.reference.values("fedotp.loss"),
        1e-5,
    );
    assert_close(
        "FedOTP context gradient",
        &out.d_ctx,
        &s.reference.values("fedotp.d_ctx"),
        1e-4,
    );
}

#[test]
fn promptfl_step_matches_pytorch() {
    let s = setup();
    let images = s.cpu.upload(&s.reference.values("images")).unwrap();
    let features = encode_images(&s.cpu, &s.weights.vision, &images, 4).unwrap();
    assert_close(
        "unit pooled features",
        &features.pooled,
        &s.reference.values("promptfl.pooled"),
        1e-5,
    );

    let learner = PromptLearner::from_tokens(&s.class_ids, 4, 1, &s.weights.text).unwrap();
    let model = PromptModel {
        learner,
        head: Head::Cosine,
        scale: s.scale,
    };
    let mut ws = model.workspace(&s.cpu).unwrap();
    let pooled = s.cpu.upload(&features.pooled).unwrap();
    let ctx = s.reference.values("promptfl.ctx0");
    let out = model
        .loss_and_gradient(&s.cpu, &s.weights.text, &ctx, &pooled, &s.labels, &mut ws)
        .unwrap();
    assert_close(
        "PromptFL logits",
        &out.logits,
        &s.reference.values("promptfl.logits"),
        1e-5,
    );
    assert_close(
        "PromptFL loss",
        &[out.loss],
        &s.reference.values("promptfl.loss"),
        1e-5,
    );
    assert_close(
        "PromptFL context gradient",
        &out.d_ctx,
        &s.reference.values("promptfl.d_ctx"),
        1e-4,
    );

    // Evaluation reuses the prompt features: same logits.
    model
        .prepare(&s.cpu, &s.weights.text, &ctx, &mut ws)
        .unwrap();
    let (logits, _) = model.logits(&s.cpu, &pooled, 4, &mut ws).unwrap();
    assert_eq!(logits, out.logits);
}
