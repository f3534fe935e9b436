//! A client end to end through its C functions.

use std::ffi::{c_char, CStr};
use std::ops::ControlFlow;
use std::ptr::null_mut;

use fedotp_core::ot::{OtMode, OtParams};
use fedotp_host::backend::{Backend, Cpu};
use fedotp_host::clip::tokenizer::Tokenizer;
use fedotp_host::clip::{vision_forward, ClipConfig, ClipWeights};
use fedotp_host::data::{Dataset, RgbImage, RowLayout, Split, Transform};
use fedotp_host::fed::{Sgd, SgdState};
use fedotp_host::prompt::OtStopping;
use fedotp_host::train::{
    ContextInit, FrozenClip, HeadChoice, LocalSchedule, PromptSetup, PromptTrainer, SplitFeatures,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    fedotp_client_config_default, fedotp_client_free, fedotp_client_global_prompt,
    fedotp_client_new, fedotp_client_predict, fedotp_client_train, FedotpClient,
    FedotpClientConfig, FedotpTrainReport, FEDOTP_OT_STOPPING_PER_PROBLEM,
    FEDOTP_OT_STOPPING_RELEASED,
};
use crate::handle;
use crate::images::{
    fedotp_images_add_rgb8, fedotp_images_add_tokens, fedotp_images_free, fedotp_images_new,
    FedotpImages,
};
use crate::last_error::fedotp_last_error_message;
use crate::model::{
    fedotp_model_free, fedotp_model_info, fedotp_model_load, fedotp_model_new_tiny, FedotpModel,
};
use crate::status::{
    FEDOTP_ERR_INVALID_CONFIG, FEDOTP_ERR_INVALID_UTF8, FEDOTP_ERR_MIXED_IMAGES,
    FEDOTP_ERR_SHAPE_MISMATCH, FEDOTP_OK,
};

const CLASSES: [&CStr; 3] = [c"cat", c"dog", c"bird"];

/// The tiny clients' settings: n_ctx 4, batch 4, no augmentation, seed 5, learning rate 0.5.
fn tiny_config() -> FedotpClientConfig {
    let mut config = std::mem::MaybeUninit::uninit();
    // SAFETY: a valid out-pointer.
    let status = unsafe { fedotp_client_config_default(config.as_mut_ptr()) };
    assert_eq!(status, FEDOTP_OK);
    // SAFETY: initialised by the call above, which succeeded.
    let mut config = unsafe { config.assume_init() };
    (config.n_ctx, config.batch_size, config.augment, config.seed) = (4, 4, 0, 5);
    config.learning_rate = 0.5;
    config
}

/// `fedotp_client_new` on `model` for [`CLASSES`] with `config`: the status, and the client
/// when it is `FEDOTP_OK`.
fn new_client(model: *const FedotpModel, config: &FedotpClientConfig) -> (i32, *mut FedotpClient) {
    let names = CLASSES.map(CStr::as_ptr);
    let mut client = null_mut();
    // SAFETY: valid strings, config and out-pointer.
    let status = unsafe { fedotp_client_new(model, names.as_ptr(), 3, config, &mut client) };
    (status, client)
}

/// The calling thread's last error message.
fn last_error() -> String {
    // SAFETY: libfedotp returns a NUL-terminated string, valid until its next call here.
    unsafe { CStr::from_ptr(fedotp_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// A client's whole context, `[global; local]`.
fn context(client: *mut FedotpClient) -> Vec<f32> {
    handle::with(client, "client", |client| Ok(client.context.clone())).unwrap()
}

/// A tiny model of `seed`.
fn tiny_model(seed: u64) -> *mut FedotpModel {
    let mut model = null_mut();
    // SAFETY: `model` is a live local, so `&mut model` is a valid out-pointer.
    let status = unsafe { fedotp_model_new_tiny(seed, &mut model) };
    assert_eq!(status, FEDOTP_OK);
    model
}

/// A tiny client ([`tiny_config`]) on `model`.
fn client(model: *const FedotpModel) -> *mut FedotpClient {
    let (status, client) = new_client(model, &tiny_config());
    assert_eq!(status, FEDOTP_OK);
    client
}

/// Trains `client` two epochs on `images`, then predicts them: (loss, accuracy, global
/// prompt, probabilities). The prompt is the tiny clients' 4 vectors of 64.
fn train_and_predict(
    client: *mut FedotpClient,
    images: *const FedotpImages,
    count: usize,
) -> (f32, f32, Vec<f32>, Vec<f32>) {
    train_and_predict_sized(client, images, count, (4, 64))
}

/// [`train_and_predict`] for a prompt of `n_ctx × width` floats.
fn train_and_predict_sized(
    client: *mut FedotpClient,
    images: *const FedotpImages,
    count: usize,
    (n_ctx, width): (usize, usize),
) -> (f32, f32, Vec<f32>, Vec<f32>) {
    let mut report = FedotpTrainReport {
        loss: 0.0,
        accuracy: 0.0,
        steps: 0,
        skipped_steps: 0,
    };
    let mut prompt = vec![0.0; n_ctx * width];
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
        let status = fedotp_client_global_prompt(client, prompt.as_mut_ptr(), n_ctx, width);
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
    let model = tiny_model(seed);
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

/// `config->ctx_init` (CoOp's context from words): both prompts start as the rows of the
/// model's token-embedding table for the words' tokens, `_` read as a space; words that are
/// not `n_ctx` tokens, no tokens at all, or not UTF-8 are refused naming the field.
#[test]
fn ctx_init_starts_both_prompts_from_the_words_token_embeddings() {
    let seed = 3;
    let model = tiny_model(seed);
    let words = "a photo of a";
    let ids = Tokenizer::openai().unwrap().encode(words);
    assert_eq!(ids.len(), 4);
    let weights = ClipWeights::random(&ClipConfig::tiny(), seed).unwrap();
    let width = weights.config.text.width();
    let table = weights.text.token_embedding();
    let set: Vec<f32> = ids
        .iter()
        .flat_map(|&id| &table[id as usize * width..][..width])
        .copied()
        .collect();
    let both = [set.clone(), set.clone()].concat();

    let mut config = tiny_config();
    for spelling in [c"a photo of a", c"a_photo_of_a"] {
        config.ctx_init = spelling.as_ptr();
        let (status, client) = new_client(model, &config);
        assert_eq!(status, FEDOTP_OK, "{}", last_error());
        assert_eq!(
            context(client),
            both,
            "{spelling:?}: global and local prompt"
        );
        let mut global = vec![0.0; 4 * width];
        // SAFETY: a live client, a buffer of `n_ctx × width` floats.
        let status = unsafe { fedotp_client_global_prompt(client, global.as_mut_ptr(), 4, width) };
        assert_eq!(status, FEDOTP_OK);
        assert_eq!(global, set);
        assert_eq!(fedotp_client_free(client), FEDOTP_OK);
    }
    // Without words, the normal draw from the seed, as before.
    let (status, random) = new_client(model, &tiny_config());
    assert_eq!(status, FEDOTP_OK);
    let random_context = context(random);
    assert_ne!(random_context, both);
    let std =
        (random_context.iter().map(|v| v * v).sum::<f32>() / random_context.len() as f32).sqrt();
    assert!((0.015..0.025).contains(&std), "std {std}");

    let refused = |ctx_init: *const c_char, n_ctx: u32| {
        let config = FedotpClientConfig {
            ctx_init,
            n_ctx,
            ..tiny_config()
        };
        let (status, client) = new_client(model, &config);
        assert!(client.is_null());
        (status, last_error())
    };
    let (status, message) = refused(c"a photo of a".as_ptr(), 16);
    assert_eq!(status, FEDOTP_ERR_INVALID_CONFIG);
    assert!(
        message.contains("`config->ctx_init` (\"a photo of a\") is 4 tokens")
            && message.contains("`config->n_ctx` is 16"),
        "{message}"
    );
    for blank in [c"", c" _ "] {
        let (status, message) = refused(blank.as_ptr(), 4);
        assert_eq!(status, FEDOTP_ERR_INVALID_CONFIG);
        assert!(
            message.contains("`config->ctx_init`") && message.contains("has no tokens"),
            "{message}"
        );
    }
    let (status, message) = refused(c"a \xff photo".as_ptr(), 4);
    assert_eq!(status, FEDOTP_ERR_INVALID_UTF8);
    assert!(message.contains("`config->ctx_init`"), "{message}");
    assert_eq!(fedotp_client_free(random), FEDOTP_OK);
    assert_eq!(fedotp_model_free(model), FEDOTP_OK);
}

/// `config->ot_stopping`: a client trains exactly as `fedotp_host`'s trainer does with the same
/// settings and the rule asked for — the per-problem rule by default, the released code's batch
/// rule with `FEDOTP_OT_STOPPING_RELEASED` — and the two rules train to different prompts; any
/// other value is refused naming the field.
#[test]
fn the_ot_stopping_rule_reaches_the_training() {
    let (seed, count, side) = (3, 7, 40u32);
    let model = tiny_model(seed);
    let mut images = null_mut();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { fedotp_images_new(&mut images) }, FEDOTP_OK);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for i in 0..count {
        let mut rgb = vec![0u8; 3 * (side * side) as usize];
        rng.fill_bytes(&mut rgb);
        // SAFETY: a live set, a buffer of `side` rows of `3 * side` bytes.
        let status = unsafe {
            fedotp_images_add_rgb8(images, rgb.as_ptr(), side, side, 3 * side as usize, i % 3)
        };
        assert_eq!(status, FEDOTP_OK);
    }
    let samples = handle::with(images, "images", |set| Ok(set.samples.clone())).unwrap();

    // The host's trainer on the same weights, samples and settings as `tiny_config`.
    let clip = FrozenClip::new(
        Cpu::new(),
        ClipWeights::random(&ClipConfig::tiny(), seed).unwrap(),
    )
    .unwrap();
    let class_names: Vec<String> = ["cat", "dog", "bird"].map(String::from).into();
    let dataset = Dataset {
        name: "images".into(),
        class_names: class_names.clone(),
        domain_names: vec!["images".into()],
        coarse: None,
        train: samples,
        test: Vec::new(),
    };
    let host = |stopping: OtStopping| {
        let params = OtParams {
            eps: 0.1,
            gamma: 0.8,
            max_iter: 100,
            tol: 1e-3,
            mode: OtMode::Unbalanced,
        };
        let setup = PromptSetup {
            n_ctx: 4,
            sets: 2,
            shared_sets: 1,
            init: ContextInit::Normal { std: 0.02 },
            head: HeadChoice::Ot { params, stopping },
            sgd: Sgd {
                lr: 0.5,
                momentum: 0.9,
                weight_decay: 5e-4,
            },
            proximal_mu: None,
        };
        let mut trainer = PromptTrainer::new(&clip, &class_names, setup).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut context = trainer.init_context(trainer.context_len(), &mut rng);
        let eval = clip.weights().config.eval_transform();
        let features = SplitFeatures::new(&dataset, Split::Train, eval, trainer.feature_kind());
        let all: Vec<usize> = (0..count as usize).collect();
        let schedule = LocalSchedule {
            epochs: 2,
            batch_size: 4,
        };
        let stats = trainer
            .train(
                &clip,
                &mut context,
                &mut SgdState::default(),
                None,
                &features,
                &all,
                schedule,
                &mut rng,
                &mut |_, _| ControlFlow::Continue(()),
            )
            .unwrap();
        (stats.loss.unwrap() as f32, context)
    };
    let trained_with = |ot_stopping: Option<u32>| {
        let mut config = tiny_config();
        if let Some(rule) = ot_stopping {
            config.ot_stopping = rule;
        }
        let (status, client) = new_client(model, &config);
        assert_eq!(status, FEDOTP_OK, "{}", last_error());
        let (loss, ..) = train_and_predict(client, images, count as usize);
        let trained = (loss, context(client));
        assert_eq!(fedotp_client_free(client), FEDOTP_OK);
        trained
    };
    let per_problem = trained_with(None);
    assert_eq!(
        per_problem,
        host(OtStopping::PerProblem),
        "the default rule"
    );
    assert_eq!(
        trained_with(Some(FEDOTP_OT_STOPPING_PER_PROBLEM)),
        per_problem,
        "FEDOTP_OT_STOPPING_PER_PROBLEM"
    );
    let released = trained_with(Some(FEDOTP_OT_STOPPING_RELEASED));
    assert_eq!(released, host(OtStopping::Released), "the released rule");
    assert_ne!(released.1, per_problem.1);

    let config = FedotpClientConfig {
        ot_stopping: 2,
        ..tiny_config()
    };
    let (status, refused) = new_client(model, &config);
    assert_eq!(status, FEDOTP_ERR_INVALID_CONFIG);
    assert!(refused.is_null());
    let message = last_error();
    assert!(
        message.contains("`config->ot_stopping`") && message.contains("got 2"),
        "{message}"
    );
    assert_eq!(fedotp_images_free(images), FEDOTP_OK);
    assert_eq!(fedotp_model_free(model), FEDOTP_OK);
}

/// BiomedCLIP through the C functions a hospital's program calls: `fedotp_model_load` on the
/// hub-layout fixture (a BERT text tower, a timm ViT), its sizes, a client whose context starts
/// from words its own WordPiece vocabulary reads (`chest` 44, `x` 31), training on 16-pixel
/// images and predictions that are distributions.
#[test]
fn biomedclip_loads_and_trains_a_client() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/tests/fixtures/biomedclip");
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut model = null_mut();
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let status = unsafe { fedotp_model_load(path.as_ptr(), &mut model) };
    assert_eq!(status, FEDOTP_OK, "{}", last_error());
    let mut info = std::mem::MaybeUninit::uninit();
    // SAFETY: a live model and a valid out-pointer.
    let status = unsafe { fedotp_model_info(model, info.as_mut_ptr()) };
    assert_eq!(status, FEDOTP_OK);
    // SAFETY: written by the call above, which succeeded.
    let info = unsafe { info.assume_init() };
    let sizes = (info.image_size, info.image_tokens, info.text_width);
    assert_eq!(
        (sizes, info.context_length, info.embed_dim),
        ((16, 16, 48), 256, 32)
    );

    let config = FedotpClientConfig {
        ctx_init: c"chest x".as_ptr(),
        n_ctx: 2,
        ..tiny_config()
    };
    let (status, client) = new_client(model, &config);
    assert_eq!(status, FEDOTP_OK, "{}", last_error());
    let weights = ClipWeights::load(&dir).unwrap();
    let table = weights.text.token_embedding();
    let set: Vec<f32> = [44usize, 31]
        .iter()
        .flat_map(|&id| &table[id * 48..][..48])
        .copied()
        .collect();
    assert_eq!(context(client), [set.clone(), set.clone()].concat());

    let mut images = null_mut();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { fedotp_images_new(&mut images) }, FEDOTP_OK);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for label in [0u32, 1, 2, 0, 1, 2] {
        let mut pixels = vec![0u8; 20 * 20 * 3];
        rng.fill_bytes(&mut pixels);
        // SAFETY: a live image set and 20 rows of 60 bytes.
        let status = unsafe { fedotp_images_add_rgb8(images, pixels.as_ptr(), 20, 20, 60, label) };
        assert_eq!(status, FEDOTP_OK);
    }
    let (loss, _, global, probabilities) = train_and_predict_sized(client, images, 6, (2, 48));
    assert!(loss.is_finite(), "loss {loss}");
    assert_ne!(global, set, "the global prompt trained");
    for row in probabilities.chunks_exact(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    assert_eq!(fedotp_images_free(images), FEDOTP_OK);
    assert_eq!(fedotp_client_free(client), FEDOTP_OK);
    assert_eq!(fedotp_model_free(model), FEDOTP_OK);
}
