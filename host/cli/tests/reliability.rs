//! The binary against a careless or hostile user, class by class (docs/RELIABILITY.md lists
//! what is guaranteed and where each guarantee is tested):
//!
//! - a run killed (SIGKILL) at any moment and resumed ends with the same bytes as one never
//!   interrupted;
//! - every file of a run directory truncated, emptied, flipped or deleted: `--resume` either
//!   repairs it and ends with those same bytes, or refuses naming the file — never a panic, an
//!   abort or different results. Damage to the files of record (configuration, partition,
//!   metrics, latest checkpoint) is always refused; copies (`metrics.csv`, `partition.txt`),
//!   the summary, the lock file and older checkpoints are written again or not read;
//! - values that parse but cannot work (beyond `f32`, subnormal, absurd sizes) are refused
//!   naming the key, before a run directory exists.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{fedotp, results, text, SHORT};

/// The short quickstart, run in `cwd` without interruption; returns how long it took.
fn reference_run(cwd: &Path) -> Duration {
    let start = Instant::now();
    let out = fedotp(cwd, &[&["train", "--quiet"][..], &SHORT].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    start.elapsed()
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Copies the tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    for file in files_under(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

/// Exit codes a refusal may have: success or the binary's error exit. A panic exits 101, an
/// allocation abort 134, a signal has none.
fn assert_no_crash(out: &std::process::Output, context: &str) {
    let stderr = text(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{context}: exit {:?}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{context}: {stderr}");
}

#[test]
fn a_run_killed_at_any_moment_resumes_to_the_same_bytes() {
    let reference = tempfile::tempdir().unwrap();
    let took = reference_run(reference.path());
    let expected = results(&reference.path().join("runs/quickstart"));
    let train = [&["train", "--quiet"][..], &SHORT].concat();
    // Kills spread over the run's length: while the configuration is checked and the run
    // directory made, while features are cached, during and between rounds, at the end.
    for eighth in 0..8u32 {
        let cwd = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fedotp"))
            .args(&train)
            .current_dir(cwd.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(took * eighth / 8);
        child.kill().unwrap(); // SIGKILL: no handler runs, no destructor.
        child.wait().unwrap();
        // Resume what the killed run left (a run killed before its directory held its
        // configuration is started again; the first attempt then takes the next name).
        let run = cwd.path().join("runs/quickstart");
        let out = if run.join("config.toml").exists() {
            fedotp(
                cwd.path(),
                &["train", "--quiet", "--resume", "runs/quickstart"],
            )
        } else {
            let _ = std::fs::remove_dir_all(cwd.path().join("runs"));
            fedotp(cwd.path(), &train)
        };
        let context = format!("killed at {}/8 of {took:?}", eighth);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{context}: {}",
            text(&out.stderr)
        );
        for ((name, resumed), (_, uninterrupted)) in results(&run).iter().zip(&expected) {
            assert!(resumed == uninterrupted, "{context}: {name} differs");
        }
        let leftovers: Vec<_> = files_under(&run)
            .into_iter()
            .filter(|path| path.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{context}: {leftovers:?}");
    }
}

/// What is done to one file of a run directory.
#[derive(Clone, Copy, Debug)]
enum Damage {
    Delete,
    Empty,
    TruncateToHalf,
    /// One bit of the byte in the middle inverted.
    FlipMiddleBit,
    /// The last byte inverted (a checksum, a closing brace, a newline).
    FlipLastByte,
}

impl Damage {
    const ALL: [Damage; 5] = [
        Damage::Delete,
        Damage::Empty,
        Damage::TruncateToHalf,
        Damage::FlipMiddleBit,
        Damage::FlipLastByte,
    ];

    fn apply(self, file: &Path) {
        let mut bytes = std::fs::read(file).unwrap();
        match self {
            Damage::Delete => return std::fs::remove_file(file).unwrap(),
            Damage::Empty => bytes.clear(),
            Damage::TruncateToHalf => bytes.truncate(bytes.len() / 2),
            Damage::FlipMiddleBit => {
                let middle = bytes.len() / 2;
                if let Some(byte) = bytes.get_mut(middle) {
                    *byte ^= 0x10;
                }
            }
            Damage::FlipLastByte => {
                if let Some(byte) = bytes.last_mut() {
                    *byte = !*byte;
                }
            }
        }
        std::fs::write(file, bytes).unwrap();
    }
}

#[test]
fn a_damaged_run_directory_is_repaired_or_refused_naming_the_file() {
    let reference = tempfile::tempdir().unwrap();
    reference_run(reference.path());
    let expected = results(&reference.path().join("runs/quickstart"));
    // A run stopped after round 1 of 3: config, partition, metrics, summary, two checkpoints.
    let stopped = tempfile::tempdir().unwrap();
    let stop = [&["train", "--quiet", "--stop-after", "1"][..], &SHORT].concat();
    let out = fedotp(stopped.path(), &stop);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let original = stopped.path().join("runs/quickstart");
    let files = files_under(&original);
    assert!(files.len() >= 8, "{files:?}");

    for file in &files {
        let relative = file.strip_prefix(&original).unwrap();
        for damage in Damage::ALL {
            let cwd = tempfile::tempdir().unwrap();
            let run = cwd.path().join("runs/quickstart");
            copy_tree(&original, &run);
            damage.apply(&run.join(relative));
            let out = fedotp(
                cwd.path(),
                &["train", "--quiet", "--resume", "runs/quickstart"],
            );
            let context = format!("{damage:?} {}", relative.display());
            assert_no_crash(&out, &context);
            // The files of record: any damage to them is refused, except a deleted latest
            // checkpoint, after which the run resumes from the one before.
            let of_record = [
                "config.toml",
                "partition.json",
                "metrics.jsonl",
                "checkpoints/round-000001.safetensors",
            ];
            let must_refuse = of_record.iter().any(|name| relative == Path::new(name))
                && !(matches!(damage, Damage::Delete) && relative.starts_with("checkpoints"));
            if out.status.code() == Some(0) {
                assert!(!must_refuse, "{context}: accepted");
                // Accepted: the damage was repaired or did not matter, so the results are the
                // uninterrupted run's.
                for ((name, resumed), (_, uninterrupted)) in results(&run).iter().zip(&expected) {
                    assert!(
                        resumed == uninterrupted,
                        "{context}: accepted, but {name} differs"
                    );
                }
            } else {
                let name = relative.file_name().unwrap().to_string_lossy();
                let stderr = text(&out.stderr);
                assert!(
                    stderr.contains(&*name),
                    "{context}: the refusal names no file\n{stderr}"
                );
            }
        }
    }
}

#[test]
fn values_that_parse_but_cannot_work_are_refused_naming_the_key() {
    let cwd = tempfile::tempdir().unwrap();
    let cases = [
        // Beyond f32, or subnormal in it.
        ("prompt.init_std=1e39", "`prompt.init_std`"),
        ("ot.eps=1e-39", "`ot.eps`"),
        ("ot.gamma=1e-45", "`ot.gamma`"),
        ("optimizer.lr=1e39", "`optimizer.lr`"),
        ("optimizer.lr=nan", "`optimizer.lr`"),
        ("optimizer.momentum=inf", "`optimizer.momentum`"),
        ("ot.tol=-1", "`ot.tol`"),
        // Sizes.
        ("prompt.n_ctx=100000000", "`prompt.n_ctx`"),
        (
            "model.vision.image_size=1000000",
            "`model.vision.image_size`",
        ),
        ("model.text.heads=3", "`model.text.heads`"),
        ("model.embed_dim=0", "`model.embed_dim`"),
        ("federation.rounds=0", "`federation.rounds`"),
        ("federation.batch_size=0", "`federation.batch_size`"),
        ("federation.frac=2", "`federation.frac`"),
        ("dataset.source.clients=0", "`dataset.source.clients`"),
        // Types.
        ("federation.rounds=-3", "federation.rounds"),
        ("federation.rounds=\"3\"", "federation.rounds"),
        ("ot.eps=[1]", "ot.eps"),
    ];
    for (setting, key) in cases {
        let out = fedotp(cwd.path(), &["train", "--quiet", "--set", setting]);
        assert_no_crash(&out, setting);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{setting}: {stderr}");
        assert!(
            stderr.contains(key),
            "{setting}: does not name {key}\n{stderr}"
        );
    }
    assert!(!cwd.path().join("runs").exists(), "nothing may be written");
}
