//! The `fedotp` binary: `train` with no arguments prepares the quickstart run, bad input is a
//! clear error that leaves nothing behind, `--resume` and `eval` read a run back.

mod support;

use std::path::Path;

use support::{fedotp, results, text, SHORT};

use fedotp_host::data::{federated_digits, DigitsFederation, Partition};
use fedotp_host::run::{Checkpoint, ClientState, RowScope, RunDir};

#[test]
fn train_without_a_config_runs_the_quickstart_and_its_comparison() {
    let cwd = tempfile::tempdir().unwrap();
    let out = fedotp(
        cwd.path(),
        &[
            "train",
            "--quiet",
            "--set",
            "federation.rounds=1",
            "--set",
            "federation.local_epochs=1",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("no --config: using configs/quickstart.toml (embedded)"),
        "{stdout}"
    );
    assert!(stdout.contains("method: FedOTP"), "{stdout}");
    assert!(stdout.contains("in 8 clients, 1 rounds"), "{stdout}");
    assert!(
        stdout.contains("then, for comparison: PromptFL as run quickstart-promptfl"),
        "{stdout}"
    );
    // One line per round on stderr, and the comparison table of the three methods.
    assert!(stderr.contains("round 0 [1/1]  acc "), "{stderr}");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("method "))
        .collect();
    assert_eq!(table.len(), 4, "{stdout}");
    for (line, (method, dir)) in table[1..].iter().zip([
        ("FedOTP ", "runs/quickstart"),
        ("PromptFL ", "runs/quickstart-promptfl"),
        ("CoOp (local) ", "runs/quickstart-coop_local"),
    ]) {
        assert!(line.starts_with(method) && line.ends_with(dir), "{line}");
    }

    // The run directory holds the resolved configuration, the partition, the metrics, the
    // summary and the last checkpoint.
    let dir = RunDir::open(&cwd.path().join("runs/quickstart")).unwrap();
    let config = dir.read_config().unwrap();
    assert_eq!(config.federation.rounds, 1);
    let partition = Partition::load(&dir.partition_path()).unwrap();
    let expected = federated_digits(&DigitsFederation {
        clients: 8,
        beta: 0.5,
        min_size: 10,
        image_size: 32,
        seed: config.federation.seed,
    })
    .unwrap();
    assert_eq!(partition, expected.partition);
    let table = std::fs::read_to_string(dir.partition_table_path()).unwrap();
    assert_eq!(
        table,
        expected.partition.counts(&expected.dataset).to_string()
    );
    assert!(stdout.contains(&table), "the table is printed");
    // Eight client rows and the mean.
    assert_eq!(dir.read_metrics().unwrap().len(), 9);
    assert!(dir.summary_path().is_file());
    assert_eq!(dir.checkpoint_rounds().unwrap(), [0]);
}

#[test]
fn bad_configurations_fail_before_anything_is_written() {
    let cwd = tempfile::tempdir().unwrap();
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/fewshot-dtd.toml");
    let preset = preset.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["train", "--set", "federation.roundz=3"],
            "`federation.roundz`: unknown field `roundz`",
        ),
        (
            vec!["train", "--set", "ot.eps=-1"],
            "`ot.eps` must be > 0 and representable as a normal f32",
        ),
        (
            vec!["train", "--config", preset],
            "dataset: cannot read data/dtd/split_zhou_DescribableTextures.json",
        ),
        (
            vec!["train", "--config", "absent.toml"],
            "cannot read absent.toml",
        ),
    ] {
        let out = fedotp(cwd.path(), &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(!cwd.path().join("runs").exists(), "nothing may be written");

    // Usage errors are clap's (exit code 2).
    for args in [
        vec!["train", "--set", "no-equals-sign"],
        vec!["train", "--resume", "runs/x", "--config", "a.toml"],
        vec!["plot"],
        vec![],
    ] {
        let out = fedotp(cwd.path(), &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = fedotp(cwd.path(), &["train", "--set", "no-equals-sign"]);
    assert!(text(&out.stderr).contains("expected key=value"));
}

#[test]
fn a_stopped_and_resumed_run_ends_bit_identical_and_eval_reads_it_back() {
    let whole = tempfile::tempdir().unwrap();
    let out = fedotp(whole.path(), &[&["train", "--quiet"][..], &SHORT].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let split = tempfile::tempdir().unwrap();
    let stop = [&["train", "--quiet", "--stop-after", "0"][..], &SHORT].concat();
    let out = fedotp(split.path(), &stop);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = split.path().join("runs/quickstart");
    assert_eq!(
        RunDir::open(&run).unwrap().checkpoint_rounds().unwrap(),
        [0]
    );
    let out = fedotp(
        split.path(),
        &["train", "--quiet", "--resume", "runs/quickstart"],
    );
    assert!(
        text(&out.stdout).contains("resuming runs/quickstart after round 0"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let whole_results = results(&whole.path().join("runs/quickstart"));
    for ((name, resumed), (_, uninterrupted)) in results(&run).iter().zip(&whole_results) {
        assert!(resumed == uninterrupted, "{name} differs after resuming");
    }

    // `eval` evaluates the last checkpoint: the same means as the last round recorded.
    let dir = RunDir::open(&run).unwrap();
    let mean = dir
        .read_metrics()
        .unwrap()
        .into_iter()
        .rfind(|row| row.client == RowScope::Mean)
        .unwrap();
    let out = fedotp(split.path(), &["eval", "runs/quickstart"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("FedOTP after round 2"), "{stdout}");
    let expected = format!(
        "mean   | {:>7.2}% | {:>7.2}%",
        100.0 * mean.accuracy.unwrap(),
        100.0 * mean.macro_f1.unwrap()
    );
    assert!(stdout.contains(&expected), "{expected} in\n{stdout}");

    // A changed data partition on disk is refused, by resume and eval.
    std::fs::write(
        dir.partition_path(),
        Partition {
            seed: 99,
            ..Partition::load(&dir.partition_path()).unwrap()
        }
        .to_json(),
    )
    .unwrap();
    for args in [
        &["train", "--resume", "runs/quickstart"][..],
        &["eval", "runs/quickstart"],
    ] {
        let out = fedotp(split.path(), args);
        assert!(
            text(&out.stderr).contains("partitioning the dataset again gives another partition"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = fedotp(split.path(), &["eval", "runs"]);
    assert!(text(&out.stderr).contains("not a run directory"));
}

/// The short quickstart in `cwd`, stopped after round 0 (with its checkpoint).
fn stopped_after_round_0(cwd: &Path) -> RunDir {
    let out = fedotp(
        cwd,
        &[&["train", "--quiet", "--stop-after", "0"][..], &SHORT].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    RunDir::open(&cwd.join("runs/quickstart")).unwrap()
}

#[test]
fn a_checkpoint_of_another_shape_is_refused() {
    let cwd = tempfile::tempdir().unwrap();
    let dir = stopped_after_round_0(cwd.path());
    let config = dir.read_config().unwrap();
    // Round 0's checkpoint replaced by one without the global prompt.
    let checkpoint = Checkpoint {
        round: 0,
        config_hash: config.hash(),
        global_prompt: None,
        clients: vec![ClientState::default(); 8],
        rngs: Default::default(),
    };
    dir.save_checkpoint(&checkpoint, 2).unwrap();
    let out = fedotp(cwd.path(), &["eval", "runs/quickstart"]);
    assert!(
        text(&out.stderr).contains("global_prompt") && text(&out.stderr).contains("missing"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn encode_writes_the_towers_outputs() {
    use fedotp_host::backend::{Backend, Cpu};
    use fedotp_host::clip::{vision_forward, ClipWeights};
    use fedotp_host::data::{RgbImage, Transform};
    use rand::SeedableRng;

    let cwd = tempfile::tempdir().unwrap();
    let images = cwd.path().join("images");
    std::fs::create_dir_all(images.join("nested")).unwrap();
    for (i, name) in ["b.png", "a.png", "nested/c.PNG"].iter().enumerate() {
        let picture = image::RgbImage::from_fn(48, 36, |x, y| {
            image::Rgb([(x * 5 + i as u32 * 40) as u8, (y * 7) as u8, (x * y) as u8])
        });
        picture
            .save_with_format(images.join(name), image::ImageFormat::Png)
            .unwrap();
    }
    // The fixture's vocabulary is 600 tokens, too small for CLIP's tokenizer: texts are refused
    // by line.
    std::fs::write(cwd.path().join("texts.txt"), "a\nphoto\n").unwrap();
    let weights_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clip/openai");
    // `fedotp encode` with the fixture's weights on the CPU, and `args`.
    let encode = |args: &[&str]| {
        let clip = [
            "encode",
            "--clip",
            weights_dir.to_str().unwrap(),
            "--device",
            "cpu",
        ];
        fedotp(cwd.path(), &[&clip[..], args].concat())
    };
    let out = encode(&[
        "--images",
        "images",
        "--out",
        "features.safetensors",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bytes = std::fs::read(cwd.path().join("features.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let values = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = file.tensor(name).unwrap();
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (t.shape().to_vec(), v)
    };

    // The image tower on the same files (name order, directories recursively), evaluation
    // transform, one batch.
    let cpu = Cpu::new();
    let weights = ClipWeights::load(&weights_dir)
        .unwrap()
        .to_backend(&cpu)
        .unwrap();
    let size = weights.config.vision.image_size() as u32;
    let mut pixels = Vec::new();
    for name in ["a.png", "b.png", "nested/c.PNG"] {
        let image = RgbImage::open(&images.join(name)).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        pixels.extend(Transform::eval(size).apply(&image, &mut rng).unwrap());
    }
    let input = cpu.upload(&pixels).unwrap();
    let expected = vision_forward(&cpu, &weights.vision, &input, 3).unwrap();
    let (tokens_per_image, dim) = (expected.tokens_per_image, expected.embed_dim);
    let (shape, tokens) = values("image_tokens");
    assert_eq!(shape, [3, tokens_per_image, dim]);
    assert_eq!(
        tokens,
        cpu.download(&expected.tokens, tokens.len()).unwrap()
    );
    let (shape, pooled) = values("image_embeds");
    assert_eq!(shape, [3, dim]);
    for (image, embed) in tokens
        .chunks_exact(tokens_per_image * dim)
        .zip(pooled.chunks_exact(dim))
    {
        assert_eq!(&image[..dim], embed);
    }
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let names = &header.metadata().as_ref().unwrap()["images"];
    assert!(
        names.contains("a.png") && names.ends_with("c.PNG\"]"),
        "{names}"
    );

    let out = encode(&["--images", "absent.png", "--out", "x.safetensors"]);
    assert!(
        text(&out.stderr).contains("absent.png: no such file or directory"),
        "{}",
        text(&out.stderr)
    );
    // An output that is an input is refused before anything is written.
    let before = std::fs::read(images.join("a.png")).unwrap();
    for (out_file, input) in [
        ("images/a.png", "a.png"),
        ("images/../images/b.png", "b.png"),
    ] {
        let out = encode(&["--images", "images", "--out", out_file, "--quiet"]);
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(
            stderr.contains("is (or is inside) the input") && stderr.contains(input),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read(images.join("a.png")).unwrap(), before);
    let into_weights = weights_dir.join("features.safetensors");
    let out = encode(&[
        "--images",
        "images",
        "--out",
        into_weights.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        text(&out.stderr).contains("is (or is inside) the input"),
        "{}",
        text(&out.stderr)
    );
    assert!(!into_weights.exists());
    // A text longer than the context is refused by its line, not cut.
    std::fs::write(
        cwd.path().join("long.txt"),
        format!("a\n{}\n", "photo ".repeat(100)),
    )
    .unwrap();
    let out = encode(&["--texts", "long.txt", "--out", "t.safetensors", "--quiet"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("text on line 2") && stderr.contains("shorten the line"),
        "{stderr}"
    );
}

/// `fedotp encode --gray-window`: a 16-bit grayscale PNG's tokens are those of its pixels mapped
/// by DICOM's linear function (computed here) — what training reads through
/// `dataset.gray_window` — and differ from those without the option (round(v / 257), as
/// `full-range` gives); an 8-bit PNG encodes the same either way. Bad windows are refused naming
/// the option and the value, before anything is written.
/// `fedotp encode` on BiomedCLIP (the hub-layout fixture of host/tests/biomedclip.rs): texts
/// tokenized with the model directory's `vocab.txt` and pooled at `[CLS]` give open_clip's
/// `encode_text` features (recorded in float64 by tests/scripts/biomedclip_fixtures.py).
#[test]
fn encode_runs_biomedclip_with_its_own_tokenizer() {
    use fedotp_tests::compare::assert_close;
    use fedotp_tests::fixtures::{fixture, Reference};

    let cwd = tempfile::tempdir().unwrap();
    // The fixture script's plain texts, in its order.
    let texts = [
        "a chest x-ray",
        "Normal lungs.",
        "Showing a small left pleural effusion, and cardiomegaly",
        "No opacities in the right lung",
    ];
    std::fs::write(cwd.path().join("texts.txt"), texts.join("\n")).unwrap();
    let model = fixture("biomedclip");
    let out = fedotp(
        cwd.path(),
        &[
            "encode",
            "--clip",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--texts",
            "texts.txt",
            "--out",
            "texts.safetensors",
            "--quiet",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written = Reference::open(cwd.path().join("texts.safetensors"));
    let (embeds, shape) = written.f32("text_embeds");
    assert_eq!(shape, [4, 32]);
    let reference = Reference::open(model.join("reference.safetensors"));
    assert_close(
        "fedotp encode's BiomedCLIP text embeddings",
        &embeds,
        &reference.values("plain.features"),
        2e-6,
    );
}

#[test]
fn encode_reads_16_bit_gray_through_the_window() {
    use fedotp_host::backend::{Backend, Cpu};
    use fedotp_host::clip::{vision_forward, ClipWeights};
    use fedotp_host::data::{GrayWindow, RgbImage, RowLayout, Transform, WindowedFile};
    use fedotp_tests::dicom::dicom_linear;
    use rand::SeedableRng;

    let cwd = tempfile::tempdir().unwrap();
    let (width, height) = (40u32, 30u32);
    // A 12-bit ramp in 16-bit values, across and beyond the window [800, 1200).
    let values: Vec<u16> = (0..width * height)
        .map(|i| (i * 3 + 500) as u16 % 4096)
        .collect();
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(width, height, values.clone())
        .unwrap()
        .save(cwd.path().join("ct.png"))
        .unwrap();
    let gray8: Vec<u8> = (0..width * height).map(|i| (i * 7 % 256) as u8).collect();
    image::GrayImage::from_raw(width, height, gray8.clone())
        .unwrap()
        .save(cwd.path().join("photo.png"))
        .unwrap();

    let weights_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clip/openai");
    let encode = |out: &str, window: &[&str]| {
        let args = [
            "encode",
            "--clip",
            weights_dir.to_str().unwrap(),
            "--device",
            "cpu",
            "--images",
            "ct.png",
            "photo.png",
            "--out",
            out,
            "--quiet",
        ];
        fedotp(cwd.path(), &[&args[..], window].concat())
    };
    let tokens = |out: &str| -> (Vec<f32>, Option<String>) {
        let bytes = std::fs::read(cwd.path().join(out)).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tokens = file
            .tensor("image_tokens")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let window = header
            .metadata()
            .as_ref()
            .unwrap()
            .get("gray_window")
            .cloned();
        (tokens, window)
    };
    let (centre, window_width) = (1000.0, 401.0);
    for (out, window) in [
        ("plain.safetensors", &[][..]),
        ("windowed.safetensors", &["--gray-window", "1000,401"][..]),
        ("full.safetensors", &["--gray-window", "full-range"][..]),
    ] {
        let run = encode(out, window);
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    }
    let (plain, no_window) = tokens("plain.safetensors");
    let (windowed, named) = tokens("windowed.safetensors");
    let (full, full_named) = tokens("full.safetensors");
    assert_eq!(no_window, None);
    assert_eq!(named.as_deref(), Some(r#"{"centre":1000.0,"width":401.0}"#));
    assert_eq!(full_named.as_deref(), Some(r#""full_range""#));

    // The image tower on the pixels as mapped here, independently of the library.
    let cpu = Cpu::new();
    let weights = ClipWeights::load(&weights_dir)
        .unwrap()
        .to_backend(&cpu)
        .unwrap();
    let transform = Transform::eval(weights.config.vision.image_size() as u32);
    let tower = |images: &[RgbImage]| -> Vec<f32> {
        let mut pixels = Vec::new();
        for image in images {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            pixels.extend(transform.apply(image, &mut rng).unwrap());
        }
        let out = vision_forward(&cpu, &weights.vision, &cpu.upload(&pixels).unwrap(), 2).unwrap();
        let n = 2 * out.tokens_per_image * out.embed_dim;
        cpu.download(&out.tokens, n).unwrap()
    };
    let gray = |levels: Vec<u8>| {
        let rgb: Vec<u8> = levels.iter().flat_map(|&v| [v; 3]).collect();
        RgbImage::new(width, height, rgb).unwrap()
    };
    let mapped = gray(
        values
            .iter()
            .map(|&v| dicom_linear(v, centre, window_width))
            .collect(),
    );
    let scaled = gray(
        values
            .iter()
            .map(|&v| (f64::from(v) / 257.0).round() as u8)
            .collect(),
    );
    let photo = gray(gray8);
    // The ramp covers black, the window's slope and white.
    assert!(mapped.pixels().contains(&0) && mapped.pixels().contains(&255));
    assert!(mapped.pixels().iter().any(|&v| v > 0 && v < 255));
    // Training's windowed file decodes to the same pixels.
    let window = GrayWindow::CentreWidth {
        centre,
        width: window_width,
    };
    let file = WindowedFile::new(cwd.path().join("ct.png"), window).unwrap();
    assert_eq!(file.load().unwrap(), mapped);
    let layout = RowLayout {
        width,
        height,
        row_stride: width as usize,
    };
    assert_eq!(
        RgbImage::from_gray16(layout, &values, window).unwrap(),
        mapped
    );

    assert_eq!(windowed, tower(&[mapped, photo.clone()]));
    assert_eq!(plain, tower(&[scaled, photo]));
    assert_eq!(full, plain);
    let per_image = plain.len() / 2;
    assert_ne!(windowed[..per_image], plain[..per_image]);
    assert_eq!(windowed[per_image..], plain[per_image..]);

    // Refusals name the option and the value; nothing is written.
    for (value, reason) in [
        ("1000,0.5", "width >= 1"),
        ("nan,400", "need finite values"),
        ("1000,inf", "need finite values"),
        ("1000", "CENTRE,WIDTH"),
        ("1000,wide", "not a number"),
        ("-600", "CENTRE,WIDTH"),
        ("full", "CENTRE,WIDTH"),
    ] {
        let run = encode("refused.safetensors", &["--gray-window", value]);
        let stderr = text(&run.stderr);
        assert_ne!(run.status.code(), Some(0), "{value}");
        assert!(
            stderr.contains("--gray-window") && stderr.contains(value) && stderr.contains(reason),
            "{value}: {stderr}"
        );
        assert!(!cwd.path().join("refused.safetensors").exists());
    }
    // A negative centre (stored units of signed data) is a value, not an option.
    let run = encode("negative.safetensors", &["--gray-window", "-600,1500"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
}

#[test]
fn a_run_that_fails_before_its_first_round_leaves_no_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let model = r#"model={ kind = "clip", path = "no-such-weights", backbone = "ViT-B/16" }"#;
    for _ in 0..2 {
        let out = fedotp(
            cwd.path(),
            &[&["train", "--quiet", "--set", model][..], &SHORT].concat(),
        );
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(stderr.contains("no-such-weights"), "{stderr}");
    }
    // Neither attempt left `runs/quickstart` (nor `quickstart-2`) behind.
    let runs = cwd.path().join("runs");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_run_being_trained_cannot_be_resumed_by_another_process() {
    let cwd = tempfile::tempdir().unwrap();
    let dir = stopped_after_round_0(cwd.path());
    let held = dir.lock().unwrap();
    let out = fedotp(
        cwd.path(),
        &["train", "--quiet", "--resume", "runs/quickstart"],
    );
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains(&format!("in use by process {}", std::process::id())),
        "{stderr}"
    );
    drop(held);
    let out = fedotp(
        cwd.path(),
        &["train", "--quiet", "--resume", "runs/quickstart"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Sizes no machine holds — in the weights, or only in what training adds — are refused with the
/// estimate and the limit (exit 1), not an allocation abort (exit 134), and leave no run behind.
#[test]
fn a_model_or_run_that_cannot_fit_in_memory_is_refused_with_its_estimate() {
    let cwd = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--set",
                "model.text.width=100000000",
                "--set",
                "model.text.heads=1",
            ],
            "drawing the model's random weights needs about ",
        ),
        (
            &["--set", "model.vision.layers=1000000000000"],
            "drawing the model's random weights needs about ",
        ),
        // A megapixel of one-pixel patches: small weights, attention over 10⁶ tokens.
        (
            &[
                "--set",
                "model.vision.image_size=1024",
                "--set",
                "model.vision.patch_size=1",
            ],
            "this run needs about ",
        ),
    ];
    for (overrides, expected) in cases {
        let out = fedotp(
            cwd.path(),
            &[&["train", "--quiet"][..], overrides, &SHORT].concat(),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{overrides:?}: {stderr}");
        assert!(stderr.contains(expected), "{overrides:?}: {stderr}");
        assert!(stderr.contains("of memory available"), "{stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(cwd.path().join("runs"))
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
