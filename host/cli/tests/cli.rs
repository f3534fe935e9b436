//! The `fedotp` binary: `train` with no arguments prepares the quickstart run, bad input is a
//! clear error that leaves nothing behind, `--resume` and `eval` read a run back.

use std::path::Path;
use std::process::{Command, Output};

use fedotp_host::data::{federated_digits, DigitsFederation, Partition};
use fedotp_host::run::{Checkpoint, ClientState, RowScope, RunDir};

fn fedotp(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedotp"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Overrides that shrink the quickstart to a few seconds.
const SHORT: [&str; 6] = [
    "--set",
    "federation.rounds=3",
    "--set",
    "federation.local_epochs=1",
    "--set",
    "compare=[]",
];

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

/// The bytes of a run's result files: metrics, summary and last checkpoint.
fn results(run: &Path) -> Vec<(String, Vec<u8>)> {
    [
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "checkpoints/round-000002.safetensors",
    ]
    .iter()
    .map(|name| (name.to_string(), std::fs::read(run.join(name)).unwrap()))
    .collect()
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

#[test]
fn a_checkpoint_of_another_shape_is_refused() {
    let cwd = tempfile::tempdir().unwrap();
    let out = fedotp(
        cwd.path(),
        &[&["train", "--quiet", "--stop-after", "0"][..], &SHORT].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dir = RunDir::open(&cwd.path().join("runs/quickstart")).unwrap();
    let config = dir.read_config().unwrap();
    let checkpoint = Checkpoint {
        round: 1,
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
    let out = fedotp(
        cwd.path(),
        &[
            "encode",
            "--clip",
            weights_dir.to_str().unwrap(),
            "--images",
            "images",
            "--out",
            "features.safetensors",
            "--device",
            "cpu",
            "--quiet",
        ],
    );
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

    let out = fedotp(
        cwd.path(),
        &[
            "encode",
            "--clip",
            weights_dir.to_str().unwrap(),
            "--images",
            "absent.png",
            "--out",
            "x.safetensors",
        ],
    );
    assert!(
        text(&out.stderr).contains("absent.png: no such file or directory"),
        "{}",
        text(&out.stderr)
    );
}
