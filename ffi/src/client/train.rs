//! Local training: FedOTP's SGD on both prompts over a set of labelled images.

use std::ffi::c_void;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, Ordering};

use fedotp_host::data::{Dataset, Sample, Transform};
use fedotp_host::train::LocalSchedule;

use super::{with_dataset, Client, FedotpClient, Trained};
use crate::boundary::call;
use crate::handle;
use crate::images::{FedotpImages, Tokens, FEDOTP_NO_LABEL};
use crate::status::{
    Failure, FEDOTP_ERR_EMPTY_DIMENSION, FEDOTP_ERR_INVALID_LABEL, FEDOTP_ERR_NON_FINITE,
    FEDOTP_ERR_TOO_LARGE,
};

/// A training call's results.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpTrainReport {
    /// Mean training loss (cross-entropy) over the steps.
    pub loss: f32,
    /// Training accuracy over the steps' images, a fraction in [0, 1].
    pub accuracy: f32,
    /// Steps taken: `epochs * ceil(images / batch_size)`, less the skipped ones.
    pub steps: u64,
    /// Steps skipped because a loss, gradient or transport plan was not finite.
    pub skipped_steps: u64,
}

/// Progress of a training call: `done` of `total` steps, and the `user_data` given to
/// `fedotp_client_train`. Called on the training thread after every step. It may call
/// libfedotp, except on the client or image set the training holds, or on another client
/// that computes on the same GPU: those calls return `FEDOTP_ERR_HANDLE_BUSY` (they would wait
/// for the training that waits for them).
pub type FedotpProgressFn =
    Option<unsafe extern "C" fn(done: u64, total: u64, user_data: *mut c_void)>;

/// Whether the C cancel flag at `cancel` (if any) is set.
///
/// # Safety
/// A non-NULL `cancel` must point to a `uint32_t` that stays valid during the call, written
/// by other threads only atomically.
unsafe fn cancelled(cancel: *const u32) -> bool {
    if cancel.is_null() {
        return false;
    }
    // SAFETY: `cancel` is non-NULL (checked above); the caller guarantees an aligned uint32_t
    // there, valid during the call and written by other threads only atomically, so an atomic
    // view of it races with nothing. libfedotp only loads it.
    unsafe { AtomicU32::from_ptr(cancel.cast_mut()) }.load(Ordering::Relaxed) != 0
}

/// Trains the client's prompts for `epochs` passes over the labelled images of `images`:
/// FedOTP's local training (SGD on both prompts through the OT head; CLIP frozen).
///
/// - `images`: the training images, or their precomputed tokens (`fedotp_images_add_tokens`,
///   not augmented); every label must be a class of the client (not `FEDOTP_NO_LABEL`). The
///   set is locked during the call;
/// - `epochs`: passes over the images, >= 1; each pass shuffles them (from the client's
///   generator);
/// - `progress`: NULL, or called after every step with (done, total, `user_data`) on this
///   thread; calls it makes on this client or image set, their `_free` included, return
///   `FEDOTP_ERR_HANDLE_BUSY`;
/// - `cancel`: NULL, or a flag another thread may set to non-zero (as a C11 `atomic_uint` or
///   a C++ `std::atomic<uint32_t>`, whose layout is `uint32_t`'s), checked after every step;
/// - `report_out`: NULL, or receives the loss and accuracy.
///
/// Either the whole call takes effect or none of it: on any error, a cancellation included,
/// the client's prompts, optimiser and generator are as before the call and nothing is
/// written. After a successful call the client can write an update message.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `images`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_EMPTY_DIMENSION`
/// (`epochs` is 0, or no images); `FEDOTP_ERR_TOO_LARGE` (more than 2^32 - 1 images, the most
/// an update can weigh); `FEDOTP_ERR_INVALID_LABEL` (the detail names the image);
/// `FEDOTP_ERR_CANCELLED`; `FEDOTP_ERR_NON_FINITE` (every step's loss or transport plan was
/// not finite: nothing was learned); `FEDOTP_ERR_SHAPE_MISMATCH` (tokens of other sizes than
/// the model's); `FEDOTP_ERR_DEVICE` (the GPU failed); `FEDOTP_ERR_OUT_OF_MEMORY`.
/// Thread-safe: see `progress`.
///
/// # Safety
/// `cancel` as stated; `report_out` NULL or writable; `progress` a valid function or NULL.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_train(
    client: *mut FedotpClient,
    images: *const FedotpImages,
    epochs: u32,
    progress: FedotpProgressFn,
    user_data: *mut c_void,
    cancel: *const u32,
    report_out: *mut FedotpTrainReport,
) -> i32 {
    call(|| {
        if epochs == 0 {
            return Err(Failure::new(FEDOTP_ERR_EMPTY_DIMENSION, "`epochs` is zero"));
        }
        let report = handle::with(client, "client", |client| {
            handle::with(images, "images", |set| {
                check_labels(&set.samples, client.class_names.len())?;
                let count = u32::try_from(set.samples.len()).map_err(|_| {
                    Failure::new(
                        FEDOTP_ERR_TOO_LARGE,
                        format!(
                            "{} images: an update weighs at most 2^32 - 1",
                            set.samples.len()
                        ),
                    )
                })?;
                let class_names = client.class_names.clone();
                with_dataset(set, &class_names, |dataset, tokens| {
                    client.train(dataset, tokens, epochs, count, &mut |done, total| {
                        if let Some(progress) = progress {
                            // SAFETY: a non-NULL `progress` is a valid function of this
                            // signature (the header's contract); `user_data` is passed through
                            // untouched.
                            unsafe { progress(done as u64, total as u64, user_data) };
                        }
                        // SAFETY: `cancelled`'s contract is this function's: NULL, or a
                        // uint32_t valid during the call, written only atomically.
                        if unsafe { cancelled(cancel) } {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                })
            })
        })?;
        // SAFETY: `as_mut` turns NULL into `None`; a non-NULL `report_out` points to an aligned,
        // writable `FedotpTrainReport` (the header's contract), a plain struct with nothing to
        // drop, so assigning over whatever was there is sound.
        if let Some(report_out) = unsafe { report_out.as_mut() } {
            *report_out = report;
        }
        Ok(())
    })
}

/// Refuses an empty set and a label outside `classes`.
fn check_labels(samples: &[Sample], classes: usize) -> Result<(), Failure> {
    if samples.is_empty() {
        return Err(Failure::new(
            FEDOTP_ERR_EMPTY_DIMENSION,
            "the image set is empty",
        ));
    }
    match samples.iter().position(|s| s.label >= classes) {
        None => Ok(()),
        Some(i) if samples[i].label == FEDOTP_NO_LABEL as usize => Err(Failure::new(
            FEDOTP_ERR_INVALID_LABEL,
            format!("image {i} has no label"),
        )),
        Some(i) => Err(Failure::new(
            FEDOTP_ERR_INVALID_LABEL,
            format!(
                "image {i} has label {}, the client has {classes} classes",
                samples[i].label
            ),
        )),
    }
}

impl Client {
    /// The transform of training images.
    fn train_transform(&self) -> Transform {
        let config = self.engine.config();
        if self.augment {
            config.train_transform()
        } else {
            config.eval_transform()
        }
    }

    /// Trains on every sample of `dataset`'s train split (with the set's `tokens` when it has
    /// them); commits the new state only on success.
    fn train(
        &mut self,
        dataset: &Dataset,
        tokens: Option<&Tokens>,
        epochs: u32,
        count: u32,
        progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<FedotpTrainReport, Failure> {
        let schedule = LocalSchedule {
            epochs,
            batch_size: self.batch_size,
        };
        let transform = self.train_transform();
        // Trained on copies: an error or a cancellation leaves the client untouched.
        let mut context = self.context.clone();
        let mut optimizer = self.optimizer.clone();
        let mut rng = self.rng.clone();
        let stats = self.engine.train(
            dataset,
            tokens,
            transform,
            schedule,
            &mut context,
            &mut optimizer,
            &mut rng,
            progress,
        )?;
        let (Some(loss), Some(accuracy)) = (stats.loss, stats.accuracy) else {
            return Err(Failure::new(
                FEDOTP_ERR_NON_FINITE,
                format!(
                    "every one of the {} steps had a non-finite loss or transport plan: nothing \
                     was learned",
                    stats.skipped_batches
                ),
            ));
        };
        let steps_per_epoch = dataset.train.len().div_ceil(self.batch_size) as u64;
        let report = FedotpTrainReport {
            loss: loss as f32,
            accuracy: accuracy as f32,
            steps: steps_per_epoch * u64::from(epochs) - stats.skipped_batches,
            skipped_steps: stats.skipped_batches,
        };
        self.context = context;
        self.optimizer = optimizer;
        self.rng = rng;
        self.trained = Some(Trained {
            samples: count,
            loss: report.loss,
            accuracy: report.accuracy,
        });
        Ok(report)
    }
}
