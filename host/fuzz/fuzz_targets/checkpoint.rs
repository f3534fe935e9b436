//! Fuzzes the checkpoint reader: any byte string must give a typed error naming the file, or
//! a checkpoint that writes back to bytes reading to the same checkpoint; checking it against
//! a layout must not panic either.
//!
//! Run: `cargo +nightly fuzz run checkpoint` from `host/` (or `RUSTC_BOOTSTRAP=1 cargo fuzz run checkpoint`).
#![no_main]

use std::path::Path;

use fedotp_host::run::{Checkpoint, CheckpointLayout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    let checkpoint = match Checkpoint::from_bytes(data, path) {
        Ok(checkpoint) => checkpoint,
        Err(error) => {
            assert!(error.to_string().contains("fuzz.safetensors"), "{error}");
            return;
        }
    };
    // The layout of a small run, and the checkpoint's own client count.
    let layout = CheckpointLayout {
        clients: checkpoint.clients.len(),
        global_prompt: Some(vec![2, 4]),
        local_prompt: Some(vec![2, 4]),
        parameters: 16,
    };
    let _ = checkpoint.check(&layout, path);
    let bytes = checkpoint
        .to_bytes()
        .expect("a read checkpoint writes back");
    let again = Checkpoint::from_bytes(&bytes, path).expect("written bytes read back");
    assert_eq!(checkpoint, again);
});
