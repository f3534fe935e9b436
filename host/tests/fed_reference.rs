//! The federation maths against independent references: SGD against `torch.optim.SGD` bit for
//! bit, accuracy and both macro-F1s against scikit-learn, and the run summary against NumPy
//! (`tests/scripts/fed_fixtures.py` made the fixtures).

use fedotp_host::fed::{accuracy, macro_f1, F1Classes, Sgd, SgdState, Summary};
use serde::Deserialize;

#[derive(Deserialize)]
struct SgdFixture {
    cases: Vec<SgdCase>,
}

#[derive(Deserialize)]
struct SgdCase {
    name: String,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    initial: Vec<f64>,
    grads: Vec<Vec<f64>>,
    params: Vec<Vec<f64>>,
    momentum_buffers: Vec<Option<Vec<f64>>>,
}

fn f32s(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// The first element where two f32 vectors differ in their bits.
fn first_difference(ours: &[f32], theirs: &[f32]) -> Option<(usize, f32, f32)> {
    ours.iter()
        .zip(theirs)
        .enumerate()
        .find(|(_, (a, b))| a.to_bits() != b.to_bits())
        .map(|(i, (a, b))| (i, *a, *b))
}

#[test]
fn sgd_matches_torch_bit_for_bit() {
    let fixture: SgdFixture =
        serde_json::from_str(include_str!("fixtures/fed/sgd_torch.json")).unwrap();
    assert_eq!(fixture.cases.len(), 5);
    for case in &fixture.cases {
        // Hyper-parameters reach torch as Python floats and are cast to f32 by its kernels.
        let sgd = Sgd {
            lr: case.lr as f32,
            momentum: case.momentum as f32,
            weight_decay: case.weight_decay as f32,
        };
        let mut params = f32s(&case.initial);
        let mut state = SgdState::default();
        for (step, grad) in case.grads.iter().enumerate() {
            sgd.step(&mut params, &f32s(grad), &mut state).unwrap();
            if let Some((i, ours, theirs)) = first_difference(&params, &f32s(&case.params[step])) {
                panic!(
                    "{} step {step}: parameter {i} is {ours:e}, torch {theirs:e}",
                    case.name
                );
            }
            match (&state.momentum_buffer, &case.momentum_buffers[step]) {
                (None, None) => {}
                (Some(ours), Some(theirs)) => {
                    if let Some((i, a, b)) = first_difference(ours, &f32s(theirs)) {
                        panic!(
                            "{} step {step}: buffer {i} is {a:e}, torch {b:e}",
                            case.name
                        );
                    }
                }
                (ours, theirs) => panic!(
                    "{} step {step}: buffer present {} here, {} in torch",
                    case.name,
                    ours.is_some(),
                    theirs.is_some()
                ),
            }
        }
    }
}

#[test]
fn each_client_owns_its_momentum() {
    // Two clients stepping alternately with one shared state would mix their momenta; with
    // their own states each matches a client stepping alone.
    let sgd = Sgd {
        lr: 0.001,
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    let grads_a = [[1.0f32, -2.0], [0.5, 0.5], [-1.0, 3.0]];
    let grads_b = [[-3.0f32, 1.0], [2.0, 0.0], [0.25, -0.5]];
    let alone = |grads: &[[f32; 2]]| {
        let (mut p, mut s) = ([0.1f32, 0.2], SgdState::default());
        for g in grads {
            sgd.step(&mut p, g, &mut s).unwrap();
        }
        p
    };
    let (mut pa, mut pb) = ([0.1f32, 0.2], [0.1f32, 0.2]);
    let (mut sa, mut sb) = (SgdState::default(), SgdState::default());
    for (ga, gb) in grads_a.iter().zip(&grads_b) {
        sgd.step(&mut pa, ga, &mut sa).unwrap();
        sgd.step(&mut pb, gb, &mut sb).unwrap();
    }
    assert_eq!(pa, alone(&grads_a));
    assert_eq!(pb, alone(&grads_b));
}

#[test]
fn sgd_refuses_mismatched_lengths() {
    let sgd = Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let mut state = SgdState::default();
    let error = sgd.step(&mut [0.0; 3], &[1.0; 2], &mut state).unwrap_err();
    assert_eq!(
        error.to_string(),
        "SGD step: gradient has 2 values, the parameters 3"
    );
    sgd.step(&mut [0.0; 3], &[1.0; 3], &mut state).unwrap();
    let error = sgd.step(&mut [0.0; 4], &[1.0; 4], &mut state).unwrap_err();
    assert_eq!(error.what, "momentum buffer");
}

#[derive(Deserialize)]
struct MetricsFixture {
    classification: Vec<ClassificationCase>,
    summaries: Vec<SummaryCase>,
}

#[derive(Deserialize)]
struct ClassificationCase {
    name: String,
    labels: Vec<usize>,
    predictions: Vec<usize>,
    accuracy: f64,
    macro_f1: f64,
    macro_f1_true_labels: f64,
}

#[derive(Deserialize)]
struct SummaryCase {
    values: Vec<f64>,
    max: f64,
    argmax: usize,
    last5_mean: f64,
    last5_std: f64,
}

fn metrics_fixture() -> MetricsFixture {
    serde_json::from_str(include_str!("fixtures/fed/metrics_sklearn.json")).unwrap()
}

#[test]
fn accuracy_and_macro_f1_match_scikit_learn() {
    let fixture = metrics_fixture();
    assert!(fixture.classification.len() >= 10);
    for case in &fixture.classification {
        let (l, p) = (&case.labels, &case.predictions);
        let close = |ours: f64, theirs: f64, what: &str| {
            assert!(
                (ours - theirs).abs() <= 1e-12,
                "{} {what}: {ours} here, {theirs} in scikit-learn",
                case.name
            );
        };
        close(accuracy(l, p).unwrap(), case.accuracy, "accuracy");
        close(
            macro_f1(l, p, F1Classes::Union).unwrap(),
            case.macro_f1,
            "macro-F1",
        );
        close(
            macro_f1(l, p, F1Classes::TrueLabels).unwrap(),
            case.macro_f1_true_labels,
            "macro-F1 over the true labels",
        );
    }
    // The two label sets differ exactly when a prediction names a class absent from the labels.
    let absent = &fixture.classification[2];
    assert!(absent.macro_f1 < absent.macro_f1_true_labels);
}

#[test]
fn metrics_refuse_empty_and_mismatched_input() {
    assert_eq!(
        accuracy(&[], &[]).unwrap_err(),
        fedotp_host::fed::MetricsError::Empty
    );
    assert!(macro_f1(&[1, 2], &[1], F1Classes::Union)
        .unwrap_err()
        .to_string()
        .contains("2 labels but 1 predictions"));
}

#[test]
fn summaries_match_numpy() {
    for case in metrics_fixture().summaries {
        let s = Summary::of(&case.values).unwrap();
        assert_eq!((s.max, s.argmax), (case.max, case.argmax));
        assert!((s.last5_mean - case.last5_mean).abs() <= 1e-14, "{s:?}");
        assert!((s.last5_std - case.last5_std).abs() <= 1e-14, "{s:?}");
    }
    assert_eq!(Summary::of(&[]), None);
}
