//! A client end to end through its C functions.

use std::ptr::null_mut;

use fedotp_host::backend::{Backend, Cpu};
use fedotp_host::clip::{vision_forward, ClipConfig, ClipWeights};
use fedotp_host::data::{RgbImage, RowLayout, Transform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    fedotp_client_config_default, fedotp_client_free, fedotp_client_global_prompt,
    fedotp_client_new, fedotp_client_predict, fedotp_client_train, FedotpClient, FedotpTrainReport,
};
use crate::images::{
    fedotp_images_add_rgb8, fedotp_images_add_tokens, fedotp_images_free, fedotp_images_new,
    FedotpImages,
};
use crate::model::{fedotp_model_free, fedotp_model_new_tiny, FedotpModel};
use crate::status::{FEDOTP_ERR_MIXED_IMAGES, FEDOTP_ERR_SHAPE_MISMATCH, FEDOTP_OK};

/// A tiny client (seed 5, no augmentation) on `model`.
fn client(model: *const FedotpModel) -> *mut FedotpClient {
    let mut config = std::mem::MaybeUninit::uninit();
    let mut client = null_mut();
    let names = [c"cat".as_ptr(), c"dog".as_ptr(), c"bird".as_ptr()];
    // SAFETY: valid out-pointers and strings.
    unsafe {
        assert_eq!(fedotp_client_config_default(config.as_mut_ptr()), FEDOTP_OK);
        let mut config = config.assume_init();
        (config.n_ctx, config.batch_size, config.augment, config.seed) = (4, 4, 0, 5);
        config.learning_rate = 0.5;
        let status = fedotp_client_new(model, names.as_ptr(), 3, &config, &mut client);
        assert_eq!(status, FEDOTP_OK);
    }
    client
}

/// Trains `client` two epochs on `images`, then predicts them: (loss, accuracy, global
/// prompt, probabilities).
fn train_and_predict(
    client: *mut FedotpClient,
    images: *const FedotpImages,
    count: usize,
) -> (f32, f32, Vec<f32>, Vec<f32>) {
    let mut report = FedotpTrainReport {
        loss: 0.0,
        accuracy: 0.0,
        steps: 0,
        skipped_steps: 0,
    };
    let mut prompt = vec![0.0; 4 * 64];
    let mut probabilities = vec![0.0; count * 3];
    // SAFETY: live handles and buffers of the stated lengths.
    unsafe {
        let status = fedotp_client_train(
            client,
            images,
            2,
            None,
            null_mut(),
            std::ptr::null(),
            &mut report,
        );
        assert_eq!(status, FEDOTP_OK);
        let status = fedotp_client_global_prompt(client, prompt.as_mut_ptr(), 4, 64);
        assert_eq!(status, FEDOTP_OK);
        let status = fedotp_client_predict(
            client,
            images,
            probabilities.as_mut_ptr(),
            probabilities.len(),
        );
        assert_eq!(status, FEDOTP_OK);
    }
    (report.loss, report.accuracy, prompt, probabilities)
}

#[test]
fn precomputed_tokens_train_and_predict_exactly_as_their_images() {
    let (seed, count, side) = (3, 7, 40u32);
    let mut model = null_mut();
    // SAFETY: `model` is a live local, so `&mut model` is a valid out-pointer.
    let status = unsafe { fedotp_model_new_tiny(seed, &mut model) };
    assert_eq!(status, FEDOTP_OK);
    let weights = ClipWeights::random(&ClipConfig::tiny(), seed).unwrap();
    let transform = Transform::eval(weights.config.vision.image_size() as u32);
    let layout = RowLayout {
        width: side,
        height: side,
        row_stride: 3 * side as usize,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (mut with_pixels, mut with_tokens) = (null_mut(), null_mut());
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(fedotp_images_new(&mut with_pixels), FEDOTP_OK);
        assert_eq!(fedotp_images_new(&mut with_tokens), FEDOTP_OK);
    }
    let (per_image, dim) = (weights.config.vision.tokens(), weights.config.embed_dim);
    for i in 0..count {
        let mut rgb = vec![0u8; 3 * (side * side) as usize];
        rng.fill_bytes(&mut rgb);
        let label = (i % 3) as u32;
        // The image tower's output, as `fedotp encode` writes it.
        let image = RgbImage::from_rgb8(layout, &rgb).unwrap();
        let mut pixels = vec![0.0; transform.output_len()];
        transform.apply_into(&image, &mut rng, &mut pixels).unwrap();
        let cpu = Cpu::new();
        let out = vision_forward(&cpu, &weights.vision, &cpu.upload(&pixels).unwrap(), 1).unwrap();
        let tokens = cpu.download(&out.tokens, per_image * dim).unwrap();
        // SAFETY: live sets, buffers of the stated lengths.
        unsafe {
            let status = fedotp_images_add_rgb8(
                with_pixels,
                rgb.as_ptr(),
                side,
                side,
                layout.row_stride,
                label,
            );
            assert_eq!(status, FEDOTP_OK);
            let status =
                fedotp_images_add_tokens(with_tokens, tokens.as_ptr(), per_image, dim, label);
            assert_eq!(status, FEDOTP_OK);
            // One set, one kind of input.
            let status =
                fedotp_images_add_tokens(with_pixels, tokens.as_ptr(), per_image, dim, label);
            assert_eq!(status, FEDOTP_ERR_MIXED_IMAGES);
            let status = fedotp_images_add_rgb8(
                with_tokens,
                rgb.as_ptr(),
                side,
                side,
                layout.row_stride,
                label,
            );
            assert_eq!(status, FEDOTP_ERR_MIXED_IMAGES);
        }
    }
    let (a, b) = (client(model), client(model));
    let from_pixels = train_and_predict(a, with_pixels, count);
    let from_tokens = train_and_predict(b, with_tokens, count);
    assert!(from_pixels.0.is_finite() && from_pixels.2.iter().any(|&v| v != 0.0));
    assert_eq!(
        from_pixels, from_tokens,
        "loss, accuracy, global prompt and probabilities bit for bit"
    );

    // Tokens of another model's sizes are refused when a client uses them.
    let mut wrong = null_mut();
    let odd = vec![0.5f32; 5 * dim];
    let mut report = std::mem::MaybeUninit::uninit();
    // SAFETY: live handles, buffers of the stated lengths.
    unsafe {
        assert_eq!(fedotp_images_new(&mut wrong), FEDOTP_OK);
        let status = fedotp_images_add_tokens(wrong, odd.as_ptr(), 5, dim, 0);
        assert_eq!(status, FEDOTP_OK);
        let status = fedotp_client_train(
            a,
            wrong,
            1,
            None,
            null_mut(),
            std::ptr::null(),
            report.as_mut_ptr(),
        );
        assert_eq!(status, FEDOTP_ERR_SHAPE_MISMATCH);
        for handle in [with_pixels, with_tokens, wrong] {
            assert_eq!(fedotp_images_free(handle), FEDOTP_OK);
        }
        assert_eq!(fedotp_client_free(a), FEDOTP_OK);
        assert_eq!(fedotp_client_free(b), FEDOTP_OK);
        assert_eq!(fedotp_model_free(model), FEDOTP_OK);
    }
}
