//! Run configurations: every preset loads, the resolved form round-trips, and every kind of bad
//! input is an error naming the file or argument and the key.

use std::path::{Path, PathBuf};

use fedotp_host::config::{
    Aggregation, BatchSize, ConfigError, DatasetSource, Device, Method, ModelConfig, Override,
    RunConfig, QUICKSTART_PRESET,
};
use fedotp_host::data::{Geometry, GrayWindow, Interpolation, Normalize, PartitionSpec};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// Every `.toml` file under `configs/`, sorted.
fn presets() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&configs_dir(), &mut out);
    out.sort();
    out
}

fn sets(args: &[&str]) -> Vec<Override> {
    args.iter().map(|a| a.parse().unwrap()).collect()
}

fn quickstart_error(args: &[&str]) -> String {
    RunConfig::quickstart_with(&sets(args))
        .unwrap_err()
        .to_string()
}

#[test]
fn every_preset_loads_and_round_trips() {
    let presets = presets();
    assert!(presets.len() >= 36, "{} presets", presets.len());
    for path in &presets {
        let config = RunConfig::load(path, &[]).unwrap_or_else(|e| panic!("{e}"));
        let stem = path.file_stem().unwrap().to_str().unwrap();
        assert_eq!(
            config.name,
            stem,
            "{}: name and file differ",
            path.display()
        );
        // The resolved TOML reads back to the same configuration and hash.
        let resolved = config.to_toml();
        let back = RunConfig::from_toml(&resolved, "resolved", &[]).unwrap();
        assert_eq!(back, config, "{}", path.display());
        assert_eq!(back.hash(), config.hash());
        assert_eq!(config.hash().len(), 64);
    }
}

#[test]
fn the_table_rows_have_the_papers_settings() {
    let load = |name: &str| RunConfig::load(&configs_dir().join(name), &[]).unwrap();
    for dataset in ["caltech101", "oxford_pets", "flowers102", "food101", "dtd"] {
        let c = load(&format!("fewshot-{dataset}.toml"));
        assert!(matches!(c.model, ModelConfig::Clip { .. }));
        assert_eq!(c.model.image_size(), 224);
        assert_eq!(
            c.dataset.partition,
            Some(PartitionSpec::Pathological {
                clients: 10,
                shots: Some(16)
            })
        );
        assert_eq!((c.prompt.n_ctx, c.n_prompts(), c.ot.eps), (16, 2, 0.01));
        assert_eq!(c.federation.local_epochs, 5);
        assert_eq!(c.federation.batch_size, BatchSize::Shots);
        assert_eq!(c.batch_size(), 16);
        // batch = shots follows an override of the shots.
        let one_shot = RunConfig::load(
            &configs_dir().join(format!("fewshot-{dataset}.toml")),
            &sets(&["dataset.partition.shots=1"]),
        )
        .unwrap();
        assert_eq!(one_shot.batch_size(), 1);
    }
    let c = load("cifar100-two-level-dirichlet.toml");
    assert_eq!(
        c.dataset.partition,
        Some(PartitionSpec::TwoLevelDirichlet {
            clients: 100,
            beta: 0.3,
            fine_concentration: 10.0
        })
    );
    assert_eq!(
        (c.federation.rounds, c.federation.frac, c.prompt.n_ctx),
        (150, 0.1, 4)
    );
    for name in ["cifar10-dirichlet.toml", "cifar100-dirichlet.toml"] {
        let c = load(name);
        assert!(matches!(
            c.dataset.partition,
            Some(PartitionSpec::Dirichlet { clients: 100, beta, min_size: 10 }) if beta == 0.5
        ));
        assert!(!c
            .dataset
            .train_transform
            .transform(224, c.dataset.normalize.statistics(Normalize::CLIP))
            .is_random());
    }
    assert_eq!(
        load("domainnet-feature-label-shift.toml").dataset.clients(),
        Some(30)
    );
    assert_eq!(
        load("office-caltech10-feature-label-shift.toml")
            .dataset
            .clients(),
        Some(12)
    );
    assert_eq!(
        load("domainnet-feature-shift.toml").dataset.partition,
        Some(PartitionSpec::OneClientPerDomain)
    );
}

#[test]
fn baselines_and_ablations_differ_from_their_base_only_where_they_say() {
    let base = RunConfig::load(&configs_dir().join("fewshot-dtd.toml"), &[]).unwrap();
    let promptfl = RunConfig::load(
        &configs_dir().join("baselines/fewshot-dtd-promptfl.toml"),
        &[],
    )
    .unwrap();
    assert_eq!(promptfl.method, Method::PromptFl);
    assert_eq!(promptfl.n_prompts(), 1);
    let mut expected = base.clone();
    expected.name = "fewshot-dtd-promptfl".into();
    expected.method = Method::PromptFl;
    expected.prompt.n_prompts = Some(1);
    assert_eq!(promptfl, expected);

    let ablation =
        |name: &str| RunConfig::load(&configs_dir().join("ablations").join(name), &[]).unwrap();
    let labels: Vec<String> = [
        "quickstart-balanced-ot.toml",
        "quickstart-all-shared.toml",
        "quickstart-none-shared.toml",
        "quickstart-one-prompt.toml",
    ]
    .iter()
    .map(|n| {
        let c = ablation(n);
        assert!(c.compare.is_empty());
        c.method_label()
    })
    .collect();
    assert_eq!(
        labels,
        [
            "FedOTP (balanced OT)",
            "FedOTP (all prompts shared)",
            "FedOTP (no prompt shared)",
            "FedOTP (1 prompt)"
        ]
    );
}

#[test]
fn the_embedded_quickstart_is_the_preset_file() {
    let file = std::fs::read_to_string(configs_dir().join("quickstart.toml")).unwrap();
    assert_eq!(file, QUICKSTART_PRESET);
    let config = RunConfig::quickstart();
    let ModelConfig::Tiny(tiny) = &config.model else {
        panic!("the quickstart uses the tiny model")
    };
    assert_eq!(tiny.clip_config(), fedotp_host::clip::ClipConfig::tiny());
    assert!(matches!(
        config.dataset.source,
        DatasetSource::FederatedDigits { clients: 8, .. }
    ));
    assert_eq!(
        config.method,
        Method::FedOtp {
            aggregate: Aggregation::First
        }
    );
    let compared: Vec<String> = config
        .comparison_runs()
        .iter()
        .map(|c| format!("{} {} {}", c.name, c.method_label(), c.n_prompts()))
        .collect();
    assert_eq!(
        compared,
        [
            "quickstart-promptfl PromptFL 1",
            "quickstart-coop_local CoOp (local) 1"
        ]
    );
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    // In the file, at every level, including inside a tagged table.
    for (from, to, key, field) in [
        (
            "name = \"quickstart\"",
            "name = \"quickstart\"\nnmae = 1",
            "nmae",
            "nmae",
        ),
        (
            "rounds = 20",
            "rounds = 20\nroundz = 3",
            "federation.roundz",
            "roundz",
        ),
        (
            "min_size = 10 }",
            "min_size = 10, betta = 1 }",
            "dataset.source.betta",
            "betta",
        ),
        (
            "heads = 2, mlp_width = 256, context",
            "heads = 2, mlp = 1, mlp_width = 256, context",
            "model.text.mlp",
            "mlp",
        ),
    ] {
        let text = QUICKSTART_PRESET.replacen(from, to, 1);
        assert_ne!(text, QUICKSTART_PRESET);
        let error = RunConfig::from_toml(&text, "my.toml", &[]).unwrap_err();
        let ConfigError::Field {
            source_name,
            key: k,
            message,
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!((source_name.as_str(), k.as_str()), ("my.toml", key));
        assert!(
            message.contains(&format!("unknown field `{field}`")),
            "{message}"
        );
    }
    // Through --set, which the message names.
    let message = quickstart_error(&["federation.rounds=4", "optimizer.learning_rate=0.1"]);
    assert!(
        message.contains("with --set optimizer.learning_rate=0.1"),
        "{message}"
    );
    assert!(
        message.contains("`optimizer.learning_rate`: unknown field `learning_rate`"),
        "{message}"
    );
}

#[test]
fn wrong_types_and_syntax_are_errors_naming_the_key_or_line() {
    let message = quickstart_error(&["federation.rounds=ten"]);
    assert!(
        message.contains("`federation.rounds`: invalid type: string \"ten\", expected u32"),
        "{message}"
    );
    let message = quickstart_error(&["federation.batch_size=\"all\""]);
    assert!(message.contains("`federation.batch_size`"), "{message}");
    assert!(
        message.contains("a positive integer or \"shots\""),
        "{message}"
    );
    let message = quickstart_error(&["name.first=1"]);
    assert!(
        message.contains("`name` holds a string, not a table"),
        "{message}"
    );
    let message = quickstart_error(&["method.kind=fedprox"]);
    assert!(
        message.contains("`method`: missing field `mu`"),
        "{message}"
    );
    let text = QUICKSTART_PRESET.replace("rounds = 20", "rounds = ");
    let message = RunConfig::from_toml(&text, "q.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("q.toml: not valid TOML"), "{message}");
    assert!(message.contains("line 30"), "{message}");
}

#[test]
fn out_of_range_values_are_errors_naming_the_field() {
    for (set, field) in [
        ("federation.frac=1.5", "federation.frac"),
        ("federation.frac=0", "federation.frac"),
        ("federation.rounds=0", "federation.rounds"),
        ("federation.eval_interval=0", "federation.eval_interval"),
        ("federation.batch_size=0", "federation.batch_size"),
        ("federation.batch_size=\"shots\"", "federation.batch_size"),
        ("ot.eps=0", "ot.eps"),
        ("ot.gamma=1.5", "ot.gamma"),
        ("ot.max_iter=0", "ot.max_iter"),
        ("ot.tol=-1", "ot.tol"),
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("optimizer.momentum=1.0", "optimizer.momentum"),
        ("optimizer.weight_decay=nan", "optimizer.weight_decay"),
        ("prompt.n_ctx=0", "prompt.n_ctx"),
        ("prompt.n_ctx=74", "prompt.n_ctx"),
        ("prompt.n_prompts=0", "prompt.n_prompts"),
        ("prompt.init_std=0", "prompt.init_std"),
        // Valid as f64, broken as the f32 the training computes in: overflow to infinity,
        // underflow to zero or to a subnormal.
        ("prompt.init_std=1e39", "prompt.init_std"),
        ("prompt.init_std=1e-39", "prompt.init_std"),
        ("ot.eps=1e-39", "ot.eps"),
        ("ot.eps=1e39", "ot.eps"),
        // Below what f32 resolves against cosines (2e-5).
        ("ot.eps=1e-5", "ot.eps"),
        ("ot.gamma=1e-45", "ot.gamma"),
        ("ot.tol=1e39", "ot.tol"),
        ("ot.tol=1e-42", "ot.tol"),
        ("optimizer.lr=1e39", "optimizer.lr"),
        ("optimizer.lr=1e-40", "optimizer.lr"),
        ("optimizer.momentum=0.9999999999", "optimizer.momentum"),
        ("optimizer.weight_decay=1e39", "optimizer.weight_decay"),
        ("optimizer.weight_decay=1e-44", "optimizer.weight_decay"),
        ("compare=[{kind=\"fedprox\", mu=1e39}]", "compare[0].mu"),
        ("model.text.heads=3", "model.text.heads"),
        ("model.vision.patch_size=5", "model.vision.patch_size"),
        ("model.embed_dim=0", "model.embed_dim"),
        ("name=../escape", "name"),
        ("name=\"\"", "name"),
        ("dataset.shots=0", "dataset.shots"),
        ("dataset.source.beta=-1", "dataset.source.beta"),
        ("dataset.partition={kind=\"iid\", clients=3}", "dataset.partition"),
        ("dataset.train_transform.geometry={kind=\"random_resized_crop\", scale=[0.5, 0.1], ratio=[0.75, 1.33]}", "dataset.train_transform"),
        ("compare=[{kind=\"fedprox\", mu=-1.0}]", "compare[0].mu"),
        ("compare=[{kind=\"zero_shot\", template=\"no placeholder\"}]", "compare[0].template"),
        ("output.keep_checkpoints=0", "output.keep_checkpoints"),
        ("output.checkpoint_interval=0", "output.checkpoint_interval"),
    ] {
        let error = RunConfig::quickstart_with(&sets(&[set])).unwrap_err();
        match &error {
            ConfigError::Invalid { field: f, source_name, .. } => {
                assert_eq!(f, field, "--set {set}: {error}");
                assert!(source_name.as_deref().unwrap().contains("quickstart"));
            }
            other => panic!("--set {set}: {other}"),
        }
    }
    // A baseline with two prompts.
    let message = quickstart_error(&["method.kind=promptfl", "prompt.n_prompts=2"]);
    assert!(
        message.contains("`prompt.n_prompts` must be 1"),
        "{message}"
    );
}

#[test]
fn devices_parse_and_invalid_ones_are_named() {
    for (text, device) in [
        ("cpu", Device::Cpu),
        ("cuda", Device::Cuda(0)),
        ("cuda:3", Device::Cuda(3)),
        ("auto", Device::Auto),
    ] {
        let config = RunConfig::quickstart_with(&sets(&[&format!("device={text}")])).unwrap();
        assert_eq!(config.device, device);
    }
    for bad in ["gpu", "cuda:", "cuda:-1", "cuda:+1", "cuda:x", "CPU"] {
        let message = quickstart_error(&[&format!("device={bad}")]);
        assert!(message.contains("`device`"), "{bad}: {message}");
        assert!(message.contains("is not a device"), "{bad}: {message}");
    }
}

#[test]
fn setting_a_kind_switches_the_variant() {
    let config = RunConfig::quickstart_with(&sets(&[
        "dataset.source.kind=digits",
        "dataset.partition.kind=k_labels",
        "dataset.partition.clients=5",
        "dataset.partition.k=3",
        "method.kind=fedprox",
        "method.mu=0.01",
    ]))
    .unwrap();
    assert_eq!(config.dataset.source, DatasetSource::Digits);
    assert_eq!(
        config.dataset.partition,
        Some(PartitionSpec::KLabels { clients: 5, k: 3 })
    );
    assert_eq!(config.method, Method::FedProx { mu: 0.01 });
    // The resolved prompt count follows the method set on the command line.
    assert_eq!(config.n_prompts(), 1);
}

#[test]
fn extends_merges_and_reports_broken_chains() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    write("base.toml", QUICKSTART_PRESET);
    let child = write(
        "child.toml",
        "extends = \"base.toml\"\nname = \"child\"\n[federation]\nrounds = 2\n",
    );
    let config = RunConfig::load(&child, &sets(&["federation.frac=1.0"])).unwrap();
    assert_eq!(
        (config.name.as_str(), config.federation.rounds),
        ("child", 2)
    );
    assert_eq!(config.federation.frac, 1.0);
    assert_eq!(config.federation.batch_size, BatchSize::Fixed(32)); // from the base

    let missing = write("missing.toml", "extends = \"nowhere.toml\"\nname = \"m\"\n");
    let message = RunConfig::load(&missing, &[]).unwrap_err().to_string();
    assert!(
        message.contains("missing.toml: `extends`: base file"),
        "{message}"
    );
    assert!(message.contains("nowhere.toml does not exist"), "{message}");

    write("a.toml", "extends = \"b.toml\"\n");
    let cycle = write("b.toml", "extends = \"a.toml\"\n");
    let message = RunConfig::load(&cycle, &[]).unwrap_err().to_string();
    assert!(message.contains("extends itself"), "{message}");

    let message = RunConfig::from_toml("extends = \"x.toml\"", "text", &[])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("only configuration files may extend"),
        "{message}"
    );

    let message = RunConfig::load(&dir.path().join("absent.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("cannot read"), "{message}");
    assert!(message.contains("absent.toml"), "{message}");
}

#[test]
fn evaluation_schedule() {
    let config = RunConfig::quickstart_with(&sets(&[
        "federation.rounds=20",
        "federation.eval_interval=5",
        "federation.eval_start=3",
    ]))
    .unwrap();
    let rounds: Vec<u32> = (0..20)
        .filter(|&r| config.federation.evaluates(r))
        .collect();
    assert_eq!(rounds, [3, 8, 13, 18, 19]);
    let checkpoints: Vec<u32> = (0..20)
        .filter(|&r| {
            fedotp_host::config::OutputConfig {
                checkpoint_interval: 7,
                ..Default::default()
            }
            .checkpoints(r, 20)
        })
        .collect();
    assert_eq!(checkpoints, [6, 13, 19]);
}

#[test]
fn the_quickstart_data_loads_as_configured() {
    let config = RunConfig::quickstart();
    let data = config
        .dataset
        .load(config.model.image_size(), config.federation.seed)
        .unwrap();
    assert_eq!(data.partition.clients.len(), 8);
    assert_eq!(data.dataset.domain_names.len(), 8); // one style per client
    let transform = config.dataset.test_transform.transform(
        config.model.image_size(),
        config.dataset.normalize.statistics(Normalize::CLIP),
    );
    let image = data
        .dataset
        .load_image(
            fedotp_host::data::Split::Test,
            data.partition.clients[0].test[0],
            &transform,
            &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0),
        )
        .unwrap();
    assert_eq!(image.len(), 3 * 32 * 32);
    // Same seed, same partition; another seed, another.
    let again = config.dataset.load(32, config.federation.seed).unwrap();
    assert_eq!(again.partition, data.partition);
    let other = config.dataset.load(32, config.federation.seed + 1).unwrap();
    assert_ne!(other.partition, data.partition);
}

/// A test transform with open_clip's `longest` resize and a bilinear filter is set from the
/// command line, round-trips through the resolved TOML, and the default transforms keep their
/// form (no `interpolation` key), so earlier runs keep their configuration hash.
#[test]
fn test_transforms_take_a_resize_mode_and_filter() {
    let config = RunConfig::quickstart_with(&sets(&[
        r#"dataset.test_transform={ geometry = { kind = "resize_longest_pad", fill = 7 }, interpolation = "bilinear" }"#,
    ]))
    .unwrap();
    let transform = config.dataset.test_transform;
    assert_eq!(transform.geometry, Geometry::ResizeLongestPad { fill: 7 });
    assert_eq!(transform.interpolation, Interpolation::Bilinear);
    let resolved = config.to_toml();
    assert!(
        resolved.contains("interpolation = \"bilinear\""),
        "{resolved}"
    );
    let back = RunConfig::from_toml(&resolved, "resolved", &[]).unwrap();
    assert_eq!(back, config);

    let default = RunConfig::quickstart().to_toml();
    assert!(!default.contains("interpolation"), "{default}");
    let error = quickstart_error(&[r#"dataset.test_transform.interpolation="nearest""#]);
    assert!(error.contains("nearest"), "{error}");
}

/// `quickstart_with` on an ImageFolder source, plus `extra` overrides.
fn image_folder_with(extra: &[&str]) -> Result<RunConfig, ConfigError> {
    let mut args = vec![
        r#"dataset.source={ kind = "image_folder", train = "data/xray/train", test = "data/xray/test" }"#,
        r#"dataset.partition={ kind = "iid", clients = 2 }"#,
    ];
    args.extend_from_slice(extra);
    RunConfig::quickstart_with(&sets(&args))
}

/// `dataset.gray_window` takes a centre and width or `"full_range"`, round-trips through the
/// resolved TOML (and changes the hash), and bad windows are refused naming the key.
#[test]
fn the_gray_window_round_trips_and_bad_windows_name_their_key() {
    let plain = image_folder_with(&[]).unwrap();
    for (value, window) in [
        (
            "{ centre = 40.0, width = 400.0 }",
            GrayWindow::CentreWidth {
                centre: 40.0,
                width: 400.0,
            },
        ),
        (
            "{ centre = -600, width = 1 }",
            GrayWindow::CentreWidth {
                centre: -600.0,
                width: 1.0,
            },
        ),
        ("\"full_range\"", GrayWindow::FullRange),
        ("full_range", GrayWindow::FullRange),
    ] {
        let config = image_folder_with(&[&format!("dataset.gray_window={value}")]).unwrap();
        assert_eq!(config.dataset.gray_window, Some(window), "{value}");
        let resolved = config.to_toml();
        assert!(resolved.contains("gray_window"), "{resolved}");
        let back = RunConfig::from_toml(&resolved, "resolved", &[]).unwrap();
        assert_eq!(back, config);
        assert_eq!(back.hash(), config.hash());
        assert_ne!(config.hash(), plain.hash());
    }
    // Set key by key, as `--set` does.
    let keys = image_folder_with(&[
        "dataset.gray_window.centre=2048",
        "dataset.gray_window.width=4096",
    ])
    .unwrap();
    assert_eq!(
        keys.dataset.gray_window,
        Some(GrayWindow::CentreWidth {
            centre: 2048.0,
            width: 4096.0
        })
    );

    let error = |value: &str| {
        image_folder_with(&[&format!("dataset.gray_window={value}")])
            .unwrap_err()
            .to_string()
    };
    for (value, key, says) in [
        (
            "{ centre = 40.0, width = 0.5 }",
            "`dataset.gray_window.width`",
            "at least 1",
        ),
        (
            "{ centre = 40.0, width = inf }",
            "`dataset.gray_window.width`",
            "finite",
        ),
        (
            "{ centre = nan, width = 400.0 }",
            "`dataset.gray_window.centre`",
            "finite",
        ),
        (
            "{ centre = 40.0, width = 400.0, level = 3 }",
            "dataset.gray_window",
            "level",
        ),
        ("{ centre = 40.0 }", "dataset.gray_window", "width"),
        ("\"soft_tissue\"", "dataset.gray_window", "soft_tissue"),
    ] {
        let message = error(value);
        assert!(
            message.contains(key) && message.contains(says),
            "{value}: {message}"
        );
    }
    // Sources whose images are 8-bit and in memory have nothing to window.
    let message = quickstart_error(&["dataset.gray_window=full_range"]);
    assert!(
        message.contains("`dataset.gray_window`") && message.contains("federated_digits"),
        "{message}"
    );
}

/// Without `dataset.gray_window` nothing about a configuration changes: no preset but the
/// medical one writes the key into its resolved TOML or into what the feature cache's key
/// hashes (the dataset's JSON), so the resolved configurations and their hashes are those of
/// before the key existed, and kept feature caches stay valid.
#[test]
fn presets_without_a_window_resolve_as_before() {
    for path in presets() {
        let config = RunConfig::load(&path, &[]).unwrap();
        let resolved = config.to_toml();
        let json = serde_json::to_string(&config.dataset).unwrap();
        if config.dataset.gray_window.is_some() {
            assert!(resolved.contains("gray_window"), "{}", path.display());
            continue;
        }
        assert!(!resolved.contains("gray_window"), "{}", path.display());
        assert!(!json.contains("gray_window"), "{}: {json}", path.display());
    }
    assert!(!RunConfig::quickstart().to_toml().contains("gray_window"));
}

/// The medical preset: an ImageFolder read through a 12-bit X-ray window, a few hospitals
/// with label shift, FedOTP on BiomedCLIP (any shape the files describe: no backbone check).
#[test]
fn the_medical_preset_windows_an_image_folder() {
    let config =
        RunConfig::load(&configs_dir().join("medical-xray-imagefolder.toml"), &[]).unwrap();
    assert!(matches!(
        config.dataset.source,
        DatasetSource::ImageFolder { .. }
    ));
    assert_eq!(
        config.dataset.gray_window,
        Some(GrayWindow::CentreWidth {
            centre: 2048.0,
            width: 4096.0
        })
    );
    assert!(matches!(
        config.dataset.partition,
        Some(PartitionSpec::Dirichlet { clients: 4, .. })
    ));
    assert!(matches!(config.method, Method::FedOtp { .. }));
    assert!(matches!(
        &config.model,
        ModelConfig::Clip { path, backbone: None } if path.ends_with("BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    ));
}
