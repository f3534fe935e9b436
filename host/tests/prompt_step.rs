//! One FedOTP local step and one PromptFL step against PyTorch
//! (`tests/scripts/prompt_step_reference.py`, on the small open_clip model of the CLIP fixtures):
//! image features, logits, loss and the gradient of the context.

use fedotp_core::ot::{OtMode, OtParams};
use fedotp_host::backend::{Backend, Cpu};
use fedotp_host::clip::ClipWeights;
use fedotp_host::fed::{Sgd, SgdState};
use fedotp_host::prompt::{encode_images, Head, PromptLearner, PromptModel};
use fedotp_tests::compare::assert_close;
use fedotp_tests::fixtures::{fixture, Reference};

fn reference() -> Reference {
    Reference::open(fixture("prompt_step/reference.safetensors"))
}

struct Setup {
    cpu: Cpu,
    weights: fedotp_host::clip::ClipWeights<Vec<f32>>,
    reference: Reference,
    class_ids: Vec<Vec<u32>>,
    labels: Vec<u32>,
    scale: f32,
}

fn setup() -> Setup {
    let cpu = Cpu::new();
    let weights = ClipWeights::load(fixture("clip/openai"))
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

/// The reference script's optimiser.
const SGD: Sgd = Sgd {
    lr: 0.5,
    momentum: 0.9,
    weight_decay: 5e-4,
};

/// Two SGD steps on the same batch from `ctx`, as the reference takes them, checked against
/// its contexts after each step (`<method>.ctx1`, `<method>.ctx2`).
fn check_two_sgd_steps(
    s: &Setup,
    model: &PromptModel,
    features: &Vec<f32>,
    ctx: &[f32],
    method: &str,
) {
    let mut ws = model.workspace(&s.cpu).unwrap();
    let mut ctx = ctx.to_vec();
    let mut state = SgdState::default();
    for step in 1..=2 {
        let out = model
            .loss_and_gradient(&s.cpu, &s.weights.text, &ctx, features, &s.labels, &mut ws)
            .unwrap();
        SGD.step(&mut ctx, &out.d_ctx, &mut state).unwrap();
        assert_close(
            &format!("{method} context after SGD step {step}"),
            &ctx,
            &s.reference.values(&format!("{method}.ctx{step}")),
            1e-4,
        );
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
    check_two_sgd_steps(&s, &model, &patches, &ctx, "fedotp");
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
    check_two_sgd_steps(&s, &model, &pooled, &ctx, "promptfl");

    // Evaluation reuses the prompt features: same logits.
    model
        .prepare(&s.cpu, &s.weights.text, &ctx, &mut ws)
        .unwrap();
    let (logits, _) = model.logits(&s.cpu, &pooled, 4, &mut ws).unwrap();
    assert_eq!(logits, out.logits);
}
