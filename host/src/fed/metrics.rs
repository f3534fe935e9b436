//! Classification metrics of one client's evaluation, and the summary of a run's evaluations.
//!
//! Macro-F1 comes in the two forms in use: [`F1Classes::Union`] is scikit-learn's
//! `f1_score(y_true, y_pred, average="macro")` with its default label set, the classes present
//! in the true labels *or* the predictions; [`F1Classes::TrueLabels`] averages over the classes
//! present in the true labels only, as the reference code's evaluator (Dassl's, which passes
//! `labels=np.unique(y_true)`) does. They differ when a client predicts classes it holds no test
//! image of — common under label shift — each such class adding an F1 of 0 to the union's mean.
//! Per class, `F1 = 2·TP / (2·TP + FP + FN)`, scikit-learn's formula; a class in the label set
//! with no true and no predicted sample cannot occur in either form.
//!
//! [`Summary`] condenses a run's per-round means as the reference prints them: the maximum over
//! rounds, and the mean and standard deviation of the last five evaluations, with NumPy's
//! `np.std` default — the *population* standard deviation (`ddof = 0`).

use std::collections::BTreeMap;

/// Which classes macro-F1 averages over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F1Classes {
    /// Classes in the true labels or the predictions (scikit-learn's default).
    Union,
    /// Classes in the true labels (the reference code's evaluator).
    TrueLabels,
}

/// Predictions and labels of different lengths, or none at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// `labels` and `predictions` differ in length.
    #[error("{labels} labels but {predictions} predictions")]
    LengthMismatch {
        /// Number of labels.
        labels: usize,
        /// Number of predictions.
        predictions: usize,
    },
    /// There is nothing to evaluate.
    #[error("no samples to evaluate")]
    Empty,
}

fn check(labels: &[usize], predictions: &[usize]) -> Result<(), MetricsError> {
    if labels.len() != predictions.len() {
        return Err(MetricsError::LengthMismatch {
            labels: labels.len(),
            predictions: predictions.len(),
        });
    }
    if labels.is_empty() {
        return Err(MetricsError::Empty);
    }
    Ok(())
}

/// Fraction of predictions equal to their label.
///
/// ```
/// assert_eq!(fedotp_host::fed::accuracy(&[0, 1, 2, 2], &[0, 1, 1, 2]).unwrap(), 0.75);
/// ```
pub fn accuracy(labels: &[usize], predictions: &[usize]) -> Result<f64, MetricsError> {
    check(labels, predictions)?;
    let correct = labels
        .iter()
        .zip(predictions)
        .filter(|(l, p)| l == p)
        .count();
    Ok(correct as f64 / labels.len() as f64)
}

/// Macro-averaged F1 over `classes`.
///
/// ```
/// use fedotp_host::fed::{macro_f1, F1Classes};
/// let (labels, predictions) = ([0, 0, 1, 1], [0, 1, 1, 2]);
/// // F1 = 2·TP / (true + predicted): class 0 = 2/3, class 1 = 2/4, class 2 (predicted only) = 0.
/// let union = macro_f1(&labels, &predictions, F1Classes::Union).unwrap();
/// assert!((union - 7.0 / 18.0).abs() < 1e-15);
/// let true_labels = macro_f1(&labels, &predictions, F1Classes::TrueLabels).unwrap();
/// assert!((true_labels - 7.0 / 12.0).abs() < 1e-15);
/// ```
pub fn macro_f1(
    labels: &[usize],
    predictions: &[usize],
    classes: F1Classes,
) -> Result<f64, MetricsError> {
    check(labels, predictions)?;
    // Per class: (true positives, true count, predicted count), in class order.
    let mut counts: BTreeMap<usize, (u64, u64, u64)> = BTreeMap::new();
    for &label in labels {
        counts.entry(label).or_default().1 += 1;
    }
    for (&label, &prediction) in labels.iter().zip(predictions) {
        if classes == F1Classes::Union || counts.contains_key(&prediction) {
            counts.entry(prediction).or_default().2 += 1;
        }
        if label == prediction {
            counts.entry(label).or_default().0 += 1;
        }
    }
    let total: f64 = counts
        .values()
        .map(|&(tp, true_count, predicted)| {
            // 2·TP / (2·TP + FP + FN) = 2·TP / (true count + predicted count).
            2.0 * tp as f64 / (true_count + predicted) as f64
        })
        .sum();
    Ok(total / counts.len() as f64)
}

/// The summary of a series of per-round values (e.g. mean client accuracy per evaluated
/// round).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Largest value.
    pub max: f64,
    /// Index of the largest value in the series (the first, on ties).
    pub argmax: usize,
    /// Mean of the last `min(5, len)` values.
    pub last5_mean: f64,
    /// Population standard deviation (`ddof = 0`, NumPy's default) of the same values.
    pub last5_std: f64,
}

/// Number of final evaluations [`Summary`] averages.
pub const SUMMARY_WINDOW: usize = 5;

impl Summary {
    /// Summarises `values`; `None` if there are none.
    ///
    /// ```
    /// use fedotp_host::fed::Summary;
    /// let s = Summary::of(&[0.1, 0.5, 0.2, 0.3, 0.4, 0.6, 0.2]).unwrap();
    /// assert_eq!((s.max, s.argmax), (0.6, 5));
    /// assert!((s.last5_mean - 0.34).abs() < 1e-12); // 0.2, 0.3, 0.4, 0.6, 0.2
    /// assert!((s.last5_std - 0.0224f64.sqrt()).abs() < 1e-12); // population: Σ(v − mean)² / 5
    /// ```
    pub fn of(values: &[f64]) -> Option<Summary> {
        let (argmax, &max) =
            values
                .iter()
                .enumerate()
                .reduce(|best, next| if next.1 > best.1 { next } else { best })?;
        let last = &values[values.len().saturating_sub(SUMMARY_WINDOW)..];
        let n = last.len() as f64;
        let mean = last.iter().sum::<f64>() / n;
        let variance = last.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        Some(Summary {
            max,
            argmax,
            last5_mean: mean,
            last5_std: variance.sqrt(),
        })
    }
}
