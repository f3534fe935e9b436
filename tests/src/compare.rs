//! Relative errors between a result and its reference, and the assertion the tests print them
//! with. References may be `f32` (another backend, a PyTorch fixture) or `f64` (a naive
//! reference written out loop by loop); and the assertion of exact comparisons (token ids).

/// `‖got − want‖₂ / ‖want‖₂` in `f64`; the absolute norm when `want` is zero; infinite when
/// `got` holds a NaN or has another length (so a missing or unwritten output always fails).
pub fn relative_error<W: Copy + Into<f64>>(got: &[f32], want: &[W]) -> f64 {
    if got.len() != want.len() || got.iter().any(|x| x.is_nan()) {
        return f64::INFINITY;
    }
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w.into()).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|&w| w.into().powi(2)).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// `max |got − want| / max |want|` in `f64`: the error of the worst element against the scale
/// of the whole reference. Panics on a length mismatch or an all-zero reference, which have no
/// relative error; a NaN in `got` gives a NaN, which no tolerance accepts.
pub fn max_relative_error<W: Copy + Into<f64>>(got: &[f32], want: &[W]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f64, |m, &w| m.max(w.into().abs()));
    assert!(scale > 0.0, "reference is all zeros");
    let mut err = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        let e = (g as f64 - w.into()).abs();
        if e.is_nan() {
            return f64::NAN;
        }
        err = err.max(e);
    }
    err / scale
}

/// Asserts that `got` matches `want` to `tolerance` in [`max_relative_error`], printing the
/// error (`--nocapture` shows each comparison's margin).
#[track_caller]
pub fn assert_close<W: Copy + Into<f64>>(what: &str, got: &[f32], want: &[W], tolerance: f64) {
    let err = max_relative_error(got, want);
    println!("{what:<40} max rel error {err:.2e}");
    assert!(
        err <= tolerance,
        "{what}: max relative error {err:.3e} > {tolerance:.0e}"
    );
}

/// Fails if any exact comparison against a reference failed, listing every mismatch (up to a
/// screenful), not just the first; each entry says what differed, e.g. a text and a position.
#[track_caller]
pub fn assert_no_mismatches(what: &str, mismatches: &[String]) {
    assert!(
        mismatches.is_empty(),
        "{} {what} differ from the reference, e.g.:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_is_the_norm_ratio() {
        // ‖(0.3, -0.4)‖ / ‖(3, 4)‖ = 0.5 / 5.
        let err = relative_error(&[3.3, 3.6], &[3.0f32, 4.0]);
        assert!((err - 0.1).abs() < 1e-6, "{err}");
        assert_eq!(relative_error(&[0.5, 0.0], &[0.0f64, 0.0]), 0.5);
    }

    #[test]
    fn relative_error_is_infinite_for_a_nan_or_another_length() {
        assert_eq!(relative_error(&[f32::NAN], &[1.0f32]), f64::INFINITY);
        assert_eq!(relative_error(&[1.0], &[1.0f32, 2.0]), f64::INFINITY);
    }

    #[test]
    fn max_relative_error_scales_the_worst_element_by_the_largest_reference() {
        let err = max_relative_error(&[1.0, 10.5], &[1.5f64, 10.0]);
        assert!((err - 0.05).abs() < 1e-12, "{err}");
        assert!(max_relative_error(&[f32::NAN, 1.0], &[1.0f32, 1.0]).is_nan());
    }

    #[test]
    #[should_panic(expected = "max relative error")]
    fn assert_close_fails_past_the_tolerance() {
        assert_close("values", &[1.0, 2.1], &[1.0f32, 2.0], 1e-2);
    }
}
