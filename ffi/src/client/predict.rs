//! Prediction: class probabilities of a set of images under the client's personal prompts.

use super::{with_dataset, FedotpClient};
use crate::boundary::{call, check_span, require, slice_mut};
use crate::handle;
use crate::images::FedotpImages;
use crate::status::{
    Failure, FEDOTP_ERR_BUFFER_TOO_SMALL, FEDOTP_ERR_EMPTY_DIMENSION, FEDOTP_ERR_SIZE_OVERFLOW,
};

/// Class probabilities for every image of `images` with the client's personal prompts (global
/// and local, through the OT head): row `i` holds image `i`'s `num_classes` probabilities,
/// which sum to 1. Labels are ignored. The images are resized (short side, bicubic) and
/// centre-cropped to the model's input; a set of precomputed tokens skips the image tower.
///
/// - `probabilities_out`, `len`: the caller's buffer and its length in floats, at least
///   `images x num_classes`; only those are written (row-major).
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `images`,
/// `probabilities_out`); `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`;
/// `FEDOTP_ERR_EMPTY_DIMENSION` (no images); `FEDOTP_ERR_BUFFER_TOO_SMALL`;
/// `FEDOTP_ERR_SIZE_OVERFLOW`; `FEDOTP_ERR_SHAPE_MISMATCH` (tokens of other sizes than the
/// model's); `FEDOTP_ERR_DEVICE`; `FEDOTP_ERR_OUT_OF_MEMORY`. On error nothing is written.
/// Thread-safe (the client and the image set are locked during the call).
///
/// # Safety
/// A non-NULL `probabilities_out` must point to `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_predict(
    client: *mut FedotpClient,
    images: *const FedotpImages,
    probabilities_out: *mut f32,
    len: usize,
) -> i32 {
    call(|| {
        check_span::<f32>(len, "probabilities_out")?;
        handle::with(client, "client", |client| {
            handle::with(images, "images", |set| {
                let samples = &set.samples;
                if samples.is_empty() {
                    return Err(Failure::new(
                        FEDOTP_ERR_EMPTY_DIMENSION,
                        "the image set is empty",
                    ));
                }
                let classes = client.class_names.len();
                let needed = samples.len().checked_mul(classes).ok_or_else(|| {
                    Failure::new(
                        FEDOTP_ERR_SIZE_OVERFLOW,
                        "images x classes overflows size_t",
                    )
                })?;
                if len < needed {
                    return Err(Failure::new(
                        FEDOTP_ERR_BUFFER_TOO_SMALL,
                        format!(
                            "`probabilities_out` holds {len} floats, {} images x {classes} \
                             classes need {needed}",
                            samples.len()
                        ),
                    ));
                }
                require(probabilities_out, "probabilities_out")?;
                let class_names = client.class_names.clone();
                let (context, batch) = (&client.context, client.batch_size);
                let probabilities = with_dataset(set, &class_names, |dataset, tokens| {
                    client.engine.probabilities(dataset, tokens, context, batch)
                })?;
                // SAFETY: the caller passes `len` >= `needed` writable floats.
                let out = unsafe { slice_mut(probabilities_out, needed, "probabilities_out") }?;
                out.copy_from_slice(&probabilities);
                Ok(())
            })
        })
    })
}

/// Appends the softmax of `logits`, computed in f64 from the largest logit (no overflow).
pub(super) fn softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits
        .iter()
        .map(|&l| (f64::from(l) - f64::from(max)).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    out.extend(exps.iter().map(|e| (e / sum) as f32));
}

#[cfg(test)]
mod tests {
    use super::softmax_into;

    #[test]
    fn softmax_matches_hand_computed_values_and_survives_large_logits() {
        // exp(0) : exp(ln 3) = 1 : 3.
        let mut out = Vec::new();
        softmax_into(&[0.0, 3f32.ln()], &mut out);
        assert!(
            (out[0] - 0.25).abs() < 1e-7 && (out[1] - 0.75).abs() < 1e-7,
            "{out:?}"
        );
        // Logits of a CLIP scale (x100) would overflow exp in f32 without the shift.
        out.clear();
        softmax_into(&[1000.0, 1000.0, 0.0], &mut out);
        assert_eq!(out, [0.5, 0.5, 0.0]);
    }
}
