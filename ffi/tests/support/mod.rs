//! What the tests that build C and C++ programs share: libfedotp as the crate's sources are now.
#![allow(dead_code)] // each test binary that includes this uses a part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The cargo build this test binary belongs to.
pub struct CargoBuild {
    /// The profile's name, as `--profile` takes it ("dev", "release", ...).
    pub profile: String,
    /// The target directory.
    pub target_dir: PathBuf,
    /// Where the profile's libraries land (`<target dir>/debug` for "dev").
    pub output_dir: PathBuf,
}

/// The build of this test binary, which is `<target dir>/<profile dir>/deps/<test>-<hash>`.
pub fn cargo_build() -> CargoBuild {
    let exe = std::env::current_exe().unwrap();
    let output_dir = exe.parent().and_then(Path::parent).unwrap();
    let profile = match output_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("unexpected test binary location {}", exe.display()),
    };
    CargoBuild {
        profile: profile.to_string(),
        target_dir: output_dir.parent().unwrap().to_path_buf(),
        output_dir: output_dir.to_path_buf(),
    }
}

/// The directory holding `libfedotp.a` and `libfedotp.so` as the crate's sources are now.
///
/// `cargo test` builds this crate only as a test harness: a crate without an `rlib` is not a
/// dependency of its integration tests (and an `rlib` named `fedotp` would collide with the host
/// crate's), so nothing else refreshes the libraries. The first test to need them runs
/// `cargo build` in the tests' target directory and profile. It builds the whole workspace's
/// libraries and tests, so that dependencies resolve with the features `cargo test --workspace`
/// gives them: under CI, which has just built those, only libfedotp itself is left to link
/// (`-p fedotp-ffi` alone would build the host crate and half its dependencies a second time).
pub fn library_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = cargo_build();
        let build = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--lib", "--tests", "--profile"])
            .arg(&cargo.profile)
            .arg("--target-dir")
            .arg(&cargo.target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo runs");
        assert!(
            build.status.success(),
            "building libfedotp failed:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
        for library in ["libfedotp.a", "libfedotp.so"] {
            let path = cargo.output_dir.join(library);
            assert!(path.exists(), "{} was not built", path.display());
        }
        cargo.output_dir
    })
}
