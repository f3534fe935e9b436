//! What the tests that build C and C++ programs share: libfedotp as the crate's sources are now.
#![allow(dead_code)] // each test binary that includes this uses a part

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The directory holding `libfedotp.a` and `libfedotp.so` as the crate's sources are now.
///
/// The library has an `rlib` beside its C crate types, so cargo builds all three before it
/// builds this crate's tests, into the `deps/` folder this test binary runs from.
pub fn library_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let dir = exe
            .parent()
            .expect("test binaries run from <target>/<profile>/deps")
            .to_path_buf();
        for library in ["libfedotp.a", "libfedotp.so"] {
            let path = dir.join(library);
            assert!(path.exists(), "{} was not built", path.display());
        }
        dir
    })
}
