//! The workload sizes shared by the benchmarks, and the timing helpers of the tables that
//! compare fedotp with its references. Their inputs come from the test kit
//! (`fedotp_tests::inputs`), so benchmarks and tests draw from one generator.

use std::process::Command;
use std::time::{Duration, Instant};

/// Median wall time of `f` over `runs` runs after one warm-up run.
pub fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// Whether the binary runs as a benchmark (`cargo bench`) rather than as a smoke test
/// (`cargo test --benches`), in which case tables do one quick run and skip the references.
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Runs a reference script with `python3` and returns its stdout, or why it could not run.
///
/// The script is looked up in this crate's directory as it was at build time, else in
/// `benches/` under the current directory — for a binary built on one machine and run from the
/// repository root on another (a GPU machine without a Rust toolchain).
pub fn run_python(script: &str, args: &[&str]) -> Result<String, String> {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let path = if built.exists() {
        built
    } else {
        std::path::Path::new("benches").join(script)
    };
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The number after `"key":` in a one-line JSON object (what the reference scripts print).
pub fn json_number(json: &str, key: &str) -> Option<f64> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Images per image-tower forward in the CLIP benchmark.
pub const IMAGE_BATCH: usize = 8;
/// Classes in the CLIP text-step benchmark (CIFAR-100).
pub const N_CLASSES: usize = 100;
/// Prompts per class (FedOTP's global and local prompt).
pub const N_PROMPTS: usize = 2;
/// Context vectors per prompt (FedOTP's CIFAR presets).
pub const N_CTX: usize = 4;

/// Classes in the BiomedCLIP text-step benchmark: fewer, because the PyTorch reference pads
/// every prompt to BiomedCLIP's 256 tokens.
pub const N_BERT_CLASSES: usize = 10;

/// Token ids of `N_CLASSES` class names ending in "." (id 269), with the lengths of typical
/// class names: class `c` has `1 + (7·c mod 5)` name tokens, so 2 to 6 tokens with the period —
/// the longest prompt is `[SOT] + 4 ctx + 6 + [EOT]` = 12 tokens. `benches/clip_cpu.py` builds
/// the same ids.
pub fn class_token_ids() -> Vec<Vec<u32>> {
    (0..N_CLASSES)
        .map(|c| {
            let words = 1 + (7 * c) % 5;
            let mut ids: Vec<u32> = (0..words).map(|w| (1000 + 37 * c + w) as u32).collect();
            ids.push(269);
            ids
        })
        .collect()
}
