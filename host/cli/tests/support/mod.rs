//! What the binary's test files share: running `fedotp`, the short quickstart and a run's
//! result files.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the binary in `cwd` and waits for it.
pub fn fedotp(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedotp"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Overrides that shrink the quickstart to a few seconds.
pub const SHORT: [&str; 6] = [
    "--set",
    "federation.rounds=3",
    "--set",
    "federation.local_epochs=1",
    "--set",
    "compare=[]",
];

/// The bytes of a run's result files: metrics, summary and last checkpoint.
pub fn results(run: &Path) -> Vec<(String, Vec<u8>)> {
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
