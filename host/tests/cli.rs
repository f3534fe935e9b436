//! The `fedotp` binary: `train` with no arguments prepares the quickstart run, bad input is a
//! clear error that leaves nothing behind, `--resume` and `eval` read a run back.

use std::path::Path;
use std::process::{Command, Output};

use fedotp::config::RunConfig;
use fedotp::data::{federated_digits, DigitsFederation, Partition};
use fedotp::run::{Checkpoint, ClientState, RunDir};

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

#[test]
fn train_without_arguments_prepares_the_quickstart() {
    let cwd = tempfile::tempdir().unwrap();
    let out = fedotp(cwd.path(), &["train"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("no --config: using configs/quickstart.toml (embedded)"),
        "{stdout}"
    );
    assert!(stdout.contains("method: FedOTP"), "{stdout}");
    assert!(stdout.contains("in 8 clients, 10 rounds"), "{stdout}");
    assert!(
        stdout.contains("then, for comparison: PromptFL as run quickstart-promptfl"),
        "{stdout}"
    );
    assert!(
        stderr.contains("`fedotp train` needs the CLIP model and a compute backend"),
        "{stderr}"
    );

    // The run directory holds the resolved configuration and the partition.
    let dir = RunDir::open(&cwd.path().join("runs/quickstart")).unwrap();
    let config = RunConfig::quickstart();
    assert_eq!(
        std::fs::read_to_string(dir.config_path()).unwrap(),
        config.to_toml()
    );
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

    // A second run gets its own directory.
    fedotp(cwd.path(), &["train", "--set", "federation.rounds=3"]);
    let config = RunDir::open(&cwd.path().join("runs/quickstart-2"))
        .unwrap()
        .read_config()
        .unwrap();
    assert_eq!(config.federation.rounds, 3);
}

#[test]
fn bad_configurations_fail_before_anything_is_written() {
    let cwd = tempfile::tempdir().unwrap();
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/fewshot-dtd.toml");
    let preset = preset.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["train", "--set", "federation.roundz=3"],
            "`federation.roundz`: unknown field `roundz`",
        ),
        (vec!["train", "--set", "ot.eps=-1"], "`ot.eps` is invalid"),
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
fn resume_and_eval_read_the_run_back() {
    let cwd = tempfile::tempdir().unwrap();
    fedotp(cwd.path(), &["train", "--quiet"]);
    let run = cwd.path().join("runs/quickstart");

    let out = fedotp(cwd.path(), &["train", "--resume", "runs/quickstart"]);
    assert!(
        text(&out.stdout).contains("resuming runs/quickstart from the start (no checkpoint yet)")
    );
    assert_eq!(out.status.code(), Some(1));

    // With a checkpoint of this configuration, resume continues after its round.
    let dir = RunDir::open(&run).unwrap();
    let config = dir.read_config().unwrap();
    let checkpoint = Checkpoint {
        round: 4,
        config_hash: config.hash(),
        global_prompt: None,
        clients: vec![ClientState::default(); 8],
        rngs: Default::default(),
    };
    dir.save_checkpoint(&checkpoint, 2).unwrap();
    let out = fedotp(cwd.path(), &["train", "--resume", "runs/quickstart"]);
    assert!(
        text(&out.stdout).contains("resuming runs/quickstart after round 4"),
        "{}",
        text(&out.stdout)
    );

    let out = fedotp(cwd.path(), &["eval", "runs/quickstart"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FedOTP after round 4"), "{stdout}");
    assert!(stdout.contains("no evaluation recorded yet"), "{stdout}");
    assert!(text(&out.stderr).contains("`fedotp eval` needs the CLIP model"));

    // A changed data partition on disk is refused.
    std::fs::write(
        dir.partition_path(),
        Partition {
            seed: 99,
            ..Partition::load(&dir.partition_path()).unwrap()
        }
        .to_json(),
    )
    .unwrap();
    let out = fedotp(cwd.path(), &["train", "--resume", "runs/quickstart"]);
    assert!(
        text(&out.stderr).contains("partitioning the dataset again gives another partition"),
        "{}",
        text(&out.stderr)
    );

    let out = fedotp(cwd.path(), &["eval", "runs"]);
    assert!(text(&out.stderr).contains("not a run directory"));
}
