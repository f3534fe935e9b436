//! One FedOTP local step and one PromptFL step against PyTorch
//! (`tests/scripts/prompt_step_reference.py`, on the small open_clip model of the CLIP fixtures):
//! image features, logits, loss and the gradient of the context.

use fedotp_core::ot::{OtMode, OtParams};
use fedotp_host::backend::{Backend, Cpu};
use fedotp_host::clip::{ClipWeights, SpecialTokens};
use fedotp_host::fed::{Sgd, SgdState};
use fedotp_host::prompt::{
    encode_images, Head, OtStopping, PromptLearner, PromptModel, StepOutcome,
};
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
    /// The fixture model's start and end tokens: the last two ids of its small vocabulary, as
    /// the reference script places them.
    special: SpecialTokens,
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
    let vocab = weights.text.vocab_size() as u32;
    let special = SpecialTokens {
        start: vocab - 2,
        end: vocab - 1,
    };
    Setup {
        cpu,
        weights,
        reference,
        class_ids,
        special,
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

/// One step of `model` from `ctx` against the reference's `<method>.logits`, `.loss` and
/// `.d_ctx`, then two SGD steps ([`check_two_sgd_steps`]); the step's outcome.
fn check_step(
    s: &Setup,
    model: &PromptModel,
    features: &Vec<f32>,
    ctx: &[f32],
    method: &str,
) -> StepOutcome {
    let mut ws = model.workspace(&s.cpu).unwrap();
    let out = model
        .loss_and_gradient(&s.cpu, &s.weights.text, ctx, features, &s.labels, &mut ws)
        .unwrap();
    let want = |what: &str| s.reference.values(&format!("{method}.{what}"));
    assert_close(
        &format!("{method} logits"),
        &out.logits,
        &want("logits"),
        1e-5,
    );
    assert_close(&format!("{method} loss"), &[out.loss], &want("loss"), 1e-5);
    assert_close(
        &format!("{method} context gradient"),
        &out.d_ctx,
        &want("d_ctx"),
        1e-4,
    );
    check_two_sgd_steps(s, model, features, ctx, method);
    out
}

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

    let learner =
        PromptLearner::from_tokens(&s.class_ids, 4, 2, &s.weights.text, s.special).unwrap();
    let model = PromptModel {
        learner,
        head: Head::Ot {
            params: CONVERGED,
            stopping: OtStopping::PerProblem,
            patches: features.patches_per_image,
        },
        scale: s.scale,
    };
    let patches = s.cpu.upload(&features.patches).unwrap();
    let ctx = s.reference.values("fedotp.ctx0");
    let report = check_step(&s, &model, &patches, &ctx, "fedotp").report;
    assert_eq!(report.problems, 4 * 3);
    assert_eq!(report.converged, 4 * 3);
}

/// `ot.stopping = "released"`: the batch solved as the released code does (one stopping
/// iteration for the whole batch, on the unshifted kernel), against the reference's float64 run
/// of that loop — logits, loss, context gradient and two SGD steps.
#[test]
fn released_rule_step_matches_pytorch() {
    let s = setup();
    let images = s.cpu.upload(&s.reference.values("images")).unwrap();
    let features = encode_images(&s.cpu, &s.weights.vision, &images, 4).unwrap();
    let learner =
        PromptLearner::from_tokens(&s.class_ids, 4, 2, &s.weights.text, s.special).unwrap();
    let model = PromptModel {
        learner,
        head: Head::Ot {
            // The reference script's tolerance (see RELEASED_TOL there).
            params: OtParams {
                max_iter: 100,
                tol: 0.6,
                ..CONVERGED
            },
            stopping: OtStopping::Released,
            patches: features.patches_per_image,
        },
        scale: s.scale,
    };
    let patches = s.cpu.upload(&features.patches).unwrap();
    let ctx = s.reference.values("fedotp.ctx0");
    let report = check_step(&s, &model, &patches, &ctx, "released").report;
    // One stopping iteration for the whole batch, met by every problem at once.
    assert_eq!((report.problems, report.converged), (4 * 3, 4 * 3));
    assert_eq!(
        report.total_iterations,
        u64::from(report.max_iterations) * 12
    );
    assert!(report.max_iterations > 1 && report.max_iterations < 100);
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

    let learner =
        PromptLearner::from_tokens(&s.class_ids, 4, 1, &s.weights.text, s.special).unwrap();
    let model = PromptModel {
        learner,
        head: Head::Cosine,
        scale: s.scale,
    };
    let pooled = s.cpu.upload(&features.pooled).unwrap();
    let ctx = s.reference.values("promptfl.ctx0");
    let out = check_step(&s, &model, &pooled, &ctx, "promptfl");

    let mut ws = model.workspace(&s.cpu).unwrap();
    // Evaluation reuses the prompt features: same logits.
    model
        .prepare(&s.cpu, &s.weights.text, &ctx, &mut ws)
        .unwrap();
    let (logits, _) = model.logits(&s.cpu, &pooled, 4, &mut ws).unwrap();
    assert_eq!(logits, out.logits);
}
