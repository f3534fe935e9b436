//! `include/fedotp.h` must be what cbindgen generates from the crate today.
//! `UPDATE_HEADER=1 cargo test -p fedotp-ffi --test header` rewrites it.

use std::path::Path;

#[test]
fn checked_in_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen runs")
        .write(&mut generated);
    let header_path = crate_dir.join("../include/fedotp.h");
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(&header_path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read(&header_path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/fedotp.h is stale: run `UPDATE_HEADER=1 cargo test -p fedotp-ffi --test header`"
    );
}
