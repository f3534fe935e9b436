//! Fuzzes the run-configuration path: any TOML text and `--set` overrides must give a typed
//! error or a configuration that serialises, reads back to the same configuration (same hash)
//! and validates again.
//!
//! The input is the TOML document, then optionally a line `--` and one override per line.
//!
//! Run: `cargo +nightly fuzz run config` from `host/` (or `RUSTC_BOOTSTRAP=1 cargo fuzz run config`).
#![no_main]

use fedotp_host::config::{Override, RunConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (document, overrides) = text.split_once("\n--\n").unwrap_or((text, ""));
    let Ok(overrides) = overrides
        .lines()
        .map(str::parse::<Override>)
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let Ok(config) = RunConfig::from_toml(document, "fuzz.toml", &overrides) else {
        return;
    };
    let written = config.to_toml();
    let again = RunConfig::from_toml(&written, "written.toml", &[])
        .unwrap_or_else(|e| panic!("a configuration read back fails: {e}\n{written}"));
    assert_eq!(config.hash(), again.hash(), "{written}");
});
