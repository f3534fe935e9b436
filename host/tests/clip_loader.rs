//! The safetensors loader: bad files give errors that name the file and the tensor, never panics;
//! the architecture is inferred from shapes when no configuration file is present.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedotp_host::backend::{Activation, BatchNorm, Conv2d, Linear};
use fedotp_host::clip::{
    ClipConfig, ClipError, ClipWeights, ConvNorm, ImageResize, VisionConfig, VisionWeights,
    VitWeights,
};
use fedotp_host::data::{Geometry, Interpolation, Normalize};
use fedotp_tests::fixtures::fixture;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// A weights file's tensors: name → (dtype, shape, raw little-endian bytes).
type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(name, v)| {
            let entry = (v.dtype(), v.shape().to_vec(), v.data().to_vec());
            (name.to_string(), entry)
        })
        .collect()
}

fn write_tensors(tensors: &Tensors, path: &Path) {
    let views = tensors.iter().map(|(name, (dtype, shape, data))| {
        let view = TensorView::new(*dtype, shape.clone(), data).unwrap();
        (name.clone(), view)
    });
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A temporary copy of a fixture directory whose weights file was passed through `edit`.
fn edited(dir: &str, file: &str, edit: impl FnOnce(&mut Tensors)) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("clip").join(dir)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let path = tmp.path().join(file);
    let mut tensors = read_tensors(&path);
    edit(&mut tensors);
    write_tensors(&tensors, &path);
    (tmp, path)
}

fn load_err(path: &Path) -> (ClipError, String) {
    let err = ClipWeights::load(path).expect_err("loading must fail");
    let message = err.to_string();
    (err, message)
}

/// The error of loading a fixture whose weights file was passed through `edit`.
fn edited_err(dir: &str, file: &str, edit: impl FnOnce(&mut Tensors)) -> (ClipError, String) {
    let (_tmp, path) = edited(dir, file, edit);
    load_err(&path)
}

#[test]
fn missing_tensor_is_named() {
    let (_tmp, path) = edited("hf", "model.safetensors", |t| {
        t.remove("text_model.encoder.layers.1.self_attn.k_proj.bias");
    });
    let (err, message) = load_err(&path);
    assert!(matches!(err, ClipError::MissingTensor { .. }), "{err:?}");
    assert!(
        message.contains("text_model.encoder.layers.1.self_attn.k_proj.bias"),
        "{message}"
    );
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let (_tmp, path) = edited("openai", "open_clip_model.safetensors", |t| {
        t.insert(
            "visual.transformer.resblocks.1.mlp.c_fc.weight".into(),
            (Dtype::F32, vec![255, 64], vec![0; 255 * 64 * 4]),
        );
    });
    let (err, message) = load_err(&path);
    match err {
        ClipError::ShapeMismatch {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "visual.transformer.resblocks.1.mlp.c_fc.weight");
            assert_eq!(expected, vec![256, 64]);
            assert_eq!(found, vec![255, 64]);
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert!(
        message.contains("[256, 64]") && message.contains("[255, 64]"),
        "{message}"
    );
}

#[test]
fn unexpected_tensor_is_named() {
    let (_tmp, path) = edited("hf", "model.safetensors", |t| {
        let bias = t["text_model.final_layer_norm.bias"].clone();
        t.insert(
            "text_model.encoder.layers.2.layer_norm1.weight".into(),
            bias,
        );
    });
    let (err, message) = load_err(&path);
    assert!(matches!(err, ClipError::UnexpectedTensor { .. }), "{err:?}");
    assert!(
        message.contains("text_model.encoder.layers.2.layer_norm1.weight"),
        "{message}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let (_tmp, path) = edited("openai", "open_clip_model.safetensors", |t| {
        t.insert(
            "ln_final.bias".into(),
            (Dtype::I32, vec![64], vec![0; 64 * 4]),
        );
    });
    let (err, message) = load_err(&path);
    assert!(matches!(err, ClipError::UnsupportedDtype { .. }), "{err:?}");
    assert!(
        message.contains("ln_final.bias") && message.contains("I32"),
        "{message}"
    );
}

/// A copy of the HF fixture whose weights file bytes were changed by `edit`.
fn corrupted(edit: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(fixture("clip").join("hf").join("model.safetensors")).unwrap();
    edit(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
    (tmp, path)
}

#[test]
fn truncated_file_is_an_error_naming_the_file() {
    for keep in [0, 5, 100, 1_000_000] {
        let (_tmp, path) = corrupted(|b| b.truncate(keep));
        let (err, message) = load_err(&path);
        assert!(
            matches!(err, ClipError::Safetensors { .. }),
            "{keep}: {err:?}"
        );
        // The parser's own error stays reachable behind the message.
        let source = std::error::Error::source(&err)
            .and_then(|source| source.downcast_ref::<safetensors::SafeTensorError>());
        assert!(source.is_some(), "{keep}: {err:?}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

#[test]
fn corrupt_header_is_an_error_naming_the_file() {
    let edits: [fn(&mut Vec<u8>); 3] = [
        |b| b[20] = 0xff,                                    // not UTF-8
        |b| b[8..16].copy_from_slice(b"not json"),           // not JSON
        |b| b[..8].copy_from_slice(&u64::MAX.to_le_bytes()), // absurd header length
    ];
    for edit in edits {
        let (_tmp, path) = corrupted(edit);
        let (err, message) = load_err(&path);
        assert!(matches!(err, ClipError::Safetensors { .. }), "{err:?}");
        assert!(message.contains("model.safetensors"), "{message}");
    }
}

#[test]
fn missing_file_and_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (err, message) = load_err(&tmp.path().join("nope.safetensors"));
    assert!(matches!(err, ClipError::Io { .. }), "{err:?}");
    assert!(message.contains("nope.safetensors"), "{message}");
    let (err, message) = load_err(tmp.path());
    assert!(matches!(err, ClipError::NoWeights { .. }), "{err:?}");
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn unknown_layout_and_hugging_face_resnet_are_reported() {
    let (_tmp, path) = edited("openai", "open_clip_model.safetensors", |t| {
        t.retain(|name, _| name.starts_with("visual."));
    });
    let (err, _) = load_err(&path);
    assert!(matches!(err, ClipError::UnknownLayout { .. }), "{err:?}");

    // Hugging Face's CLIPModel has no ResNet tower: ResNet tensors in its layout are refused
    // with a pointer to the layout that has one.
    let (_tmp, path) = edited("hf", "model.safetensors", |t| {
        let w = t["visual_projection.weight"].clone();
        t.insert("vision_model.attnpool.c_proj.weight".into(), w);
    });
    let (err, message) = load_err(&path);
    assert!(matches!(err, ClipError::Unsupported { .. }), "{err:?}");
    assert!(
        message.contains("vision_model.attnpool.c_proj.weight")
            && message.contains("Hugging Face's CLIPModel has no ResNet tower")
            && message.contains("OpenAI / open_clip layout"),
        "{message}"
    );
}

#[test]
fn resnet_architecture_is_inferred_from_shapes_or_read_from_the_config() {
    // Everything but the head counts comes from the shapes; the config gives the text heads
    // (width 32 is not a multiple of 64) and here leaves out the vision head width.
    let (tmp, _) = edited("rn", "open_clip_model.safetensors", |_| {});
    let config = tmp.path().join("open_clip_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"head_width\": 96", "\"unused\": 0")).unwrap();
    let weights = ClipWeights::load(tmp.path()).unwrap();
    let VisionConfig::ResNet(r) = &weights.config.vision else {
        panic!("a ResNet")
    };
    // 3 × 3 positions → 96 px; open_clip's default 64-wide heads: 192 / 64 = 3.
    assert_eq!(
        (r.image_size, r.width, r.layers, r.heads),
        (96, 6, [2, 1, 1, 1], 3)
    );
    assert_eq!(
        (weights.config.embed_dim, weights.config.text.width()),
        (32, 32)
    );
    // open_clip_config.json's head_width 96 gives the fixture's 2 heads.
    let weights = ClipWeights::load(fixture("clip").join("rn")).unwrap();
    let VisionConfig::ResNet(r) = &weights.config.vision else {
        panic!("a ResNet")
    };
    assert_eq!(r.heads, 2);
    let VisionWeights::ResNet(w) = &weights.vision else {
        panic!("ResNet weights")
    };
    let blocks: Vec<usize> = w.stages.iter().map(Vec::len).collect();
    assert_eq!(blocks, [2, 1, 1, 1]);
    // layer1.0 widens 6 → 24 channels (a downsample without stride), layer1.1 keeps them.
    let first = &w.stages[0][0];
    assert_eq!((first.stride, first.downsample.is_some()), (1, true));
    assert!(w.stages[0][1].downsample.is_none());
    assert_eq!(w.stages[3][0].stride, 2);
}

#[test]
fn resnet_tensor_errors_name_the_tensor() {
    let (err, message) = edited_err("rn", "open_clip_model.safetensors", |t| {
        t.remove("visual.layer1.1.bn2.running_var");
    });
    assert!(matches!(err, ClipError::MissingTensor { .. }), "{err:?}");
    assert!(
        message.contains("visual.layer1.1.bn2.running_var"),
        "{message}"
    );

    // layer2.0's shortcut convolution: 24 → 48 channels, 1×1.
    let (err, message) = edited_err("rn", "open_clip_model.safetensors", |t| {
        t.insert(
            "visual.layer2.0.downsample.0.weight".into(),
            (Dtype::F32, vec![48, 24, 3, 3], vec![0; 48 * 24 * 9 * 4]),
        );
    });
    assert!(
        message.contains("`visual.layer2.0.downsample.0.weight` has shape [48, 24, 3, 3], expected [48, 24, 1, 1]"),
        "{message}"
    );
    assert!(matches!(err, ClipError::ShapeMismatch { .. }), "{err:?}");

    // A stage without blocks.
    let (err, message) = edited_err("rn", "open_clip_model.safetensors", |t| {
        t.retain(|name, _| !name.starts_with("visual.layer4."));
    });
    assert!(matches!(err, ClipError::MissingTensor { .. }), "{err:?}");
    assert!(
        message.contains("visual.layer4.0.conv1.weight"),
        "{message}"
    );

    // A parameter no ModifiedResNet has; `num_batches_tracked` counters are accepted (the
    // fixture has them), other integer tensors are not parameters.
    let (err, message) = edited_err("rn", "open_clip_model.safetensors", |t| {
        let w = t["visual.layer1.0.conv3.weight"].clone();
        t.insert("visual.layer1.0.conv4.weight".into(), w);
    });
    assert!(matches!(err, ClipError::UnexpectedTensor { .. }), "{err:?}");
    assert!(
        message.contains("visual.layer1.0.conv4.weight"),
        "{message}"
    );
}

/// Values held by a convolution and its batch-norm.
fn conv_norm_len(c: &ConvNorm<Vec<f32>>) -> usize {
    let Conv2d { weight, .. } = &c.conv;
    let BatchNorm {
        weight: gamma,
        bias,
        running_mean,
        running_var,
        ..
    } = &c.norm;
    weight.len() + gamma.len() + bias.len() + running_mean.len() + running_var.len()
}

fn linear_len(l: &Linear<Vec<f32>>) -> usize {
    l.weight.len() + l.bias.as_ref().map_or(0, Vec::len)
}

#[test]
fn random_resnets_have_the_sizes_of_open_clips() {
    // Parameters plus batch-norm running statistics of open_clip's `RN50-quickgelu` and
    // `RN101-quickgelu` image towers (`model.visual`), counted with PyTorch.
    for (config, want) in [
        (ClipConfig::rn50(), 38_370_144),
        (ClipConfig::rn101(), 56_365_408),
    ] {
        let weights = ClipWeights::random(&config, 0).unwrap();
        let VisionWeights::ResNet(w) = &weights.vision else {
            panic!("ResNet weights")
        };
        let pool = &w.attention_pool;
        let blocks: usize = w
            .stages
            .iter()
            .flatten()
            .map(|b| {
                [&b.conv1, &b.conv2, &b.conv3]
                    .into_iter()
                    .chain(&b.downsample)
                    .map(conv_norm_len)
                    .sum::<usize>()
            })
            .sum();
        let total = w.stem.iter().map(conv_norm_len).sum::<usize>()
            + blocks
            + pool.position_embedding.len()
            + linear_len(&pool.qkv)
            + linear_len(&pool.c_proj);
        assert_eq!(total, want, "{:?}", config.vision);
    }
}

#[test]
fn config_errors_name_the_file_and_field() {
    let (tmp, _) = edited("hf", "model.safetensors", |_| {});
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    // The tanh approximation is another function: refused, not run as the exact GELU.
    std::fs::write(&config, text.replacen("\"quick_gelu\"", "\"gelu_new\"", 1)).unwrap();
    let (err, message) = load_err(tmp.path());
    assert!(matches!(err, ClipError::Unsupported { .. }), "{err:?}");
    assert!(
        message.contains("hidden_act")
            && message.contains("gelu_new")
            && message.contains("config.json"),
        "{message}"
    );

    std::fs::write(&config, "{\"text_config\": {\"hidden_size\": \"wide\"}}").unwrap();
    let (err, message) = load_err(tmp.path());
    assert!(matches!(err, ClipError::Config { .. }), "{err:?}");
    assert!(
        message.contains("config.json") && message.contains("invalid type"),
        "{message}"
    );
}

#[test]
fn the_activation_is_read_from_either_config_file() {
    // Hugging Face: each tower's own `hidden_act`.
    let (tmp, _) = edited("hf", "model.safetensors", |_| {});
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        text.matches("\"quick_gelu\"").count(),
        2,
        "both towers name it"
    );
    std::fs::write(&config, text.replacen("\"quick_gelu\"", "\"gelu\"", 1)).unwrap();
    let weights = ClipWeights::load(tmp.path()).unwrap();
    let VisionConfig::Vit(vit) = &weights.config.vision else {
        panic!("a ViT fixture")
    };
    let towers = (
        weights.config.text.as_clip().unwrap().activation,
        vit.activation,
    );
    assert!(
        towers == (Activation::Gelu, Activation::QuickGelu)
            || towers == (Activation::QuickGelu, Activation::Gelu),
        "{towers:?}"
    );

    // open_clip: one flag for both towers; nn.GELU unless `quick_gelu` is set.
    let (tmp, _) = edited("openai", "open_clip_model.safetensors", |_| {});
    let config = tmp.path().join("open_clip_config.json");
    let quick = ClipWeights::load(tmp.path()).unwrap().config;
    assert_eq!(
        quick.text.as_clip().unwrap().activation,
        Activation::QuickGelu
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"quick_gelu\": true", "\"quick_gelu\": false"),
    )
    .unwrap();
    let gelu = ClipWeights::load(tmp.path()).unwrap().config;
    let VisionConfig::Vit(vit) = &gelu.vision else {
        panic!("a ViT fixture")
    };
    assert_eq!(
        (gelu.text.as_clip().unwrap().activation, vit.activation),
        (Activation::Gelu, Activation::Gelu)
    );
}

#[test]
fn a_config_of_zero_heads_or_a_directory_in_its_place_is_refused() {
    let (tmp, _) = edited("hf", "model.safetensors", |_| {});
    let config = tmp.path().join("config.json");
    let text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for (tower, heads) in [("text_config", 0), ("vision_config", 0), ("text_config", 7)] {
        let mut edited = text.clone();
        edited[tower]["num_attention_heads"] = heads.into();
        std::fs::write(&config, edited.to_string()).unwrap();
        let (err, message) = load_err(tmp.path());
        assert!(matches!(err, ClipError::Config { .. }), "{err:?}");
        let key = format!("`{tower}.num_attention_heads` is {heads}");
        assert!(
            message.contains("config.json") && message.contains(&key),
            "{message}"
        );
    }
    std::fs::remove_file(&config).unwrap();
    std::fs::create_dir(&config).unwrap();
    let (err, message) = load_err(tmp.path());
    assert!(matches!(err, ClipError::Config { .. }), "{err:?}");
    assert!(
        message.contains("config.json") && message.contains("is not a file"),
        "{message}"
    );
}

#[test]
fn architecture_is_inferred_from_shapes_without_config() {
    let (tmp, _) = edited("openai", "open_clip_model.safetensors", |_| {});
    std::fs::remove_file(tmp.path().join("open_clip_config.json")).unwrap();
    let weights = ClipWeights::load(tmp.path()).unwrap();
    let c = &weights.config;
    assert_eq!(c.embed_dim, 32);
    assert_eq!(
        (
            c.text.vocab_size(),
            c.text.context_length(),
            c.text.width(),
            c.text.as_clip().unwrap().layers
        ),
        (600, 77, 64, 2)
    );
    // Without a config, CLIP's 64-wide heads: 64 / 64 = 1 (the fixture itself uses 2).
    assert_eq!(
        (
            c.text.as_clip().unwrap().heads,
            c.text.as_clip().unwrap().mlp_width
        ),
        (1, 256)
    );
    let VisionConfig::Vit(v) = &c.vision else {
        panic!("a ViT")
    };
    assert_eq!(
        (v.image_size, v.patch_size, v.width, v.layers, v.heads),
        (40, 8, 64, 2, 1)
    );

    // With config.json, the Hugging Face fixture's 3 vision heads of 32.
    let weights = ClipWeights::load(fixture("clip").join("hf")).unwrap();
    let VisionConfig::Vit(v) = &weights.config.vision else {
        panic!("a ViT")
    };
    assert_eq!(
        (
            v.width,
            v.heads,
            weights.config.text.as_clip().unwrap().heads
        ),
        (96, 3, 2)
    );
    assert!((weights.logit_scale - 2.6592).abs() < 1e-4);
}

/// The image normalisation the weights were trained with: CLIP's unless the configuration says
/// otherwise — open_clip's `preprocess_cfg` in `open_clip_config.json`, Hugging Face's
/// `preprocessor_config.json` — and the transforms built for the model use it. Values that cannot
/// be statistics are refused naming the file and key.
#[test]
fn image_statistics_are_read_from_either_config_file() {
    let (mean, std) = ([0.5, 0.25, 0.125], [0.5, 2.0, 0.75]);
    let want = Normalize {
        mean: mean.map(|v: f64| v as f32),
        std: std.map(|v: f64| v as f32),
    };

    // open_clip.
    let (tmp, _) = edited("openai", "open_clip_model.safetensors", |_| {});
    assert_eq!(
        ClipWeights::load(tmp.path()).unwrap().config.image_stats,
        Normalize::CLIP
    );
    let config = tmp.path().join("open_clip_config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["preprocess_cfg"] =
        serde_json::json!({ "mean": mean, "std": std, "interpolation": "bicubic" });
    std::fs::write(&config, json.to_string()).unwrap();
    let loaded = ClipWeights::load(tmp.path()).unwrap().config;
    assert_eq!(loaded.image_stats, want);
    assert_eq!(loaded.eval_transform().normalize, want);
    assert_eq!(loaded.train_transform().normalize, want);

    json["preprocess_cfg"]["std"] = serde_json::json!([0.5, 0.0, 0.5]);
    std::fs::write(&config, json.to_string()).unwrap();
    let (_, message) = load_err(tmp.path());
    assert!(
        message.contains("open_clip_config.json")
            && message.contains("preprocess_cfg.std")
            && message.contains("positive"),
        "{message}"
    );

    // Hugging Face.
    let (tmp, _) = edited("hf", "model.safetensors", |_| {});
    let preprocessor = tmp.path().join("preprocessor_config.json");
    std::fs::write(
        &preprocessor,
        serde_json::json!({ "image_mean": mean, "image_std": std, "crop_size": 32 }).to_string(),
    )
    .unwrap();
    assert_eq!(
        ClipWeights::load(tmp.path()).unwrap().config.image_stats,
        want
    );
    std::fs::write(&preprocessor, r#"{"image_mean": [0.5, 0.5]}"#).unwrap();
    let (_, message) = load_err(tmp.path());
    assert!(
        message.contains("preprocessor_config.json")
            && message.contains("image_mean")
            && message.contains("has 2 values"),
        "{message}"
    );
}

/// The evaluation resize is read from open_clip's `preprocess_cfg` (`resize_mode`,
/// `interpolation`, `fill_color`, `size` checked against the tower) or Hugging Face's `resample`;
/// the model's evaluation transform follows it, its training crop stays bicubic. Values fedotp
/// cannot honour are refused naming the file and key.
#[test]
fn image_resize_is_read_from_either_config_file() {
    // open_clip.
    let (tmp, _) = edited("openai", "open_clip_model.safetensors", |_| {});
    let loaded = ClipWeights::load(tmp.path()).unwrap().config;
    assert_eq!(loaded.image_resize, ImageResize::CLIP);
    let side = loaded.vision.image_size();
    let config = tmp.path().join("open_clip_config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["preprocess_cfg"] = serde_json::json!({
        "size": [side, side], "resize_mode": "longest", "interpolation": "bilinear",
        "fill_color": 128
    });
    std::fs::write(&config, json.to_string()).unwrap();
    let loaded = ClipWeights::load(tmp.path()).unwrap().config;
    let want = ImageResize {
        geometry: Geometry::ResizeLongestPad { fill: 128 },
        interpolation: Interpolation::Bilinear,
    };
    assert_eq!(loaded.image_resize, want);
    let eval = loaded.eval_transform();
    assert_eq!(
        (eval.geometry, eval.interpolation),
        (want.geometry, want.interpolation)
    );
    assert!(matches!(
        loaded.train_transform().geometry,
        Geometry::RandomResizedCrop { .. }
    ));
    json["preprocess_cfg"] = serde_json::json!({ "resize_mode": "squash" });
    std::fs::write(&config, json.to_string()).unwrap();
    let loaded = ClipWeights::load(tmp.path()).unwrap().config;
    assert_eq!(loaded.image_resize.geometry, Geometry::Stretch);
    assert_eq!(loaded.image_resize.interpolation, Interpolation::Bicubic);

    for (cfg, key) in [
        (
            serde_json::json!({ "resize_mode": "crop" }),
            "preprocess_cfg.resize_mode",
        ),
        (
            serde_json::json!({ "interpolation": "nearest" }),
            "preprocess_cfg.interpolation",
        ),
        (
            serde_json::json!({ "fill_color": 300 }),
            "preprocess_cfg.fill_color",
        ),
        (
            serde_json::json!({ "size": side + 1 }),
            "preprocess_cfg.size",
        ),
    ] {
        json["preprocess_cfg"] = cfg;
        std::fs::write(&config, json.to_string()).unwrap();
        let (_, message) = load_err(tmp.path());
        assert!(
            message.contains("open_clip_config.json") && message.contains(key),
            "{message}"
        );
    }

    // Hugging Face.
    let (tmp, _) = edited("hf", "model.safetensors", |_| {});
    let preprocessor = tmp.path().join("preprocessor_config.json");
    std::fs::write(&preprocessor, r#"{"resample": 2}"#).unwrap();
    let loaded = ClipWeights::load(tmp.path()).unwrap().config;
    assert_eq!(loaded.image_resize.interpolation, Interpolation::Bilinear);
    assert_eq!(loaded.image_resize.geometry, Geometry::ResizeCenterCrop);
    std::fs::write(&preprocessor, r#"{"resample": 1}"#).unwrap();
    let (_, message) = load_err(tmp.path());
    assert!(
        message.contains("preprocessor_config.json") && message.contains("`resample` is 1"),
        "{message}"
    );
}

/// The error of loading the timm fixture's image tower (4 heads) after `edit`.
fn timm_err(edit: impl FnOnce(&mut Tensors)) -> (ClipError, String) {
    let (_tmp, path) = edited("timm", "open_clip_model.safetensors", edit);
    let err = VitWeights::load_open_clip_timm(&path, 4).expect_err("loading must fail");
    let message = err.to_string();
    assert!(message.contains("open_clip_model.safetensors"), "{message}");
    (err, message)
}

#[test]
fn timm_tower_errors_name_the_tensor() {
    let qkv_bias = "visual.trunk.blocks.1.attn.qkv.bias";
    let (err, message) = timm_err(|t| {
        t.remove(qkv_bias);
    });
    assert!(matches!(err, ClipError::MissingTensor { .. }), "{err:?}");
    assert!(message.contains(qkv_bias), "{message}");

    // A pre-norm ViT (timm's CLIP variants) is not this tower.
    let norm_pre = "visual.trunk.norm_pre.weight";
    let (err, message) = timm_err(|t| {
        let norm = t["visual.trunk.norm.weight"].clone();
        t.insert(norm_pre.into(), norm);
    });
    assert!(matches!(err, ClipError::UnexpectedTensor { .. }), "{err:?}");
    assert!(
        message.contains(norm_pre) && message.contains("[32]"),
        "{message}"
    );

    let fc2 = "visual.trunk.blocks.0.mlp.fc2.weight";
    let (err, message) = timm_err(|t| {
        t.get_mut(fc2).unwrap().1 = vec![128, 32];
    });
    assert!(matches!(err, ClipError::ShapeMismatch { .. }), "{err:?}");
    assert!(message.contains(fc2), "{message}");
    assert!(
        message.contains("[128, 32]") && message.contains("[32, 128]"),
        "{message}"
    );

    let (err, message) = timm_err(|t| {
        t.remove("visual.head.proj.weight");
    });
    assert!(matches!(err, ClipError::MissingTensor { .. }), "{err:?}");
    assert!(message.contains("visual.head.proj.weight"), "{message}");
}

#[test]
fn timm_tower_takes_its_heads_from_the_caller_and_a_head_bias_from_the_file() {
    let dir = fixture("clip/timm");
    let err = VitWeights::load_open_clip_timm(&dir, 5).expect_err("5 heads do not divide 32");
    let message = err.to_string();
    assert!(
        message.contains("5 heads") && message.contains("width 32"),
        "{message}"
    );
    assert!(VitWeights::load_open_clip_timm(&dir, 0).is_err());
    assert_eq!(
        VitWeights::load_open_clip_timm(&dir, 8)
            .unwrap()
            .config
            .heads,
        8
    );

    // open_clip's `timm_proj_bias`: a bias on the head's projection is read.
    let (_tmp, path) = edited("timm", "open_clip_model.safetensors", |t| {
        let bias = (0..16u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        t.insert("visual.head.proj.bias".into(), (Dtype::F32, vec![16], bias));
    });
    let w = VitWeights::load_open_clip_timm(&path, 4).unwrap();
    assert_eq!(w.projection.bias.unwrap()[15], 15.0);
}
