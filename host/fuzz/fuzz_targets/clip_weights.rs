//! Fuzzes the CLIP weight loader on one safetensors file: any bytes must load or give a typed
//! error naming the file — never a panic, and never an allocation the file's size does not
//! justify (libFuzzer's `-rss_limit_mb` catches those).
//!
//! Run: `cargo +nightly fuzz run clip_weights` from `host/` (or `RUSTC_BOOTSTRAP=1 cargo fuzz run clip_weights`).
#![no_main]

use std::sync::OnceLock;

use fedotp_host::clip::ClipWeights;
use libfuzzer_sys::fuzz_target;

/// One directory for the whole fuzzing process (the loader reads a file, and may look for
/// `config.json` beside it: there is none).
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("model.safetensors");
    std::fs::write(&path, data).expect("the fuzz file is written");
    if let Err(error) = ClipWeights::load(&path) {
        assert!(error.to_string().contains("model.safetensors"), "{error}");
    }
});
