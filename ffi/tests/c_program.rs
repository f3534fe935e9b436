//! Compiles the C programs in `tests/c/` against `include/fedotp.h` and the static library,
//! runs them, and fails on a non-zero exit. Each program runs twice: built plainly, and built
//! with AddressSanitizer and UndefinedBehaviorSanitizer (the runtimes come with gcc; `.ci/run`
//! installs it), which also checks for leaks at exit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `libfedotp.a` as the crate's sources are now.
///
/// `cargo test` builds this crate only as a test harness: a crate without an `rlib` is not a
/// dependency of its integration tests, so nothing else would refresh the static library and
/// the C programs would link a stale one. So the first test to need it runs `cargo build` for
/// it, in the same target directory and profile as the tests (a no-op when it is current).
fn static_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        // The test binary is `target/<profile dir>/deps/c_program-<hash>`.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap();
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => "dev",
            Some(name) => name,
            None => panic!("unexpected test binary location {}", exe.display()),
        };
        let build = Command::new(env!("CARGO"))
            .args([
                "build",
                "--package",
                "fedotp-ffi",
                "--lib",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(profile_dir.parent().unwrap())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo runs");
        assert!(
            build.status.success(),
            "building libfedotp.a failed:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
        let library = profile_dir.join("libfedotp.a");
        assert!(library.exists(), "{} was not built", library.display());
        library
    })
}

/// How a C program is built and run.
#[derive(Clone, Copy)]
enum Build {
    Plain,
    /// `-fsanitize=address,undefined`: out-of-bounds and use-after-free accesses in the C
    /// program, undefined behaviour, and leaks (every handle and buffer freed) end the run with
    /// a report.
    Sanitized,
}

impl Build {
    fn name(self) -> &'static str {
        match self {
            Build::Plain => "plain",
            Build::Sanitized => "asan-ubsan",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Build::Plain => &["-O1"],
            Build::Sanitized => &[
                "-O1",
                "-g",
                "-fno-omit-frame-pointer",
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all",
            ],
        }
    }
}

fn compile_and_run(source: &str, build: Build) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let static_lib = static_library();
    let exe = std::env::temp_dir().join(format!(
        "fedotp-{}-{}-{}",
        source.replace('.', "-"),
        build.name(),
        std::process::id()
    ));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .args(build.flags())
        .arg("-I")
        .arg(root.join("../include"))
        .arg(root.join("tests/c").join(source))
        .arg(static_lib)
        .args(["-lm", "-lpthread", "-ldl"])
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(
        status.success(),
        "compiling {source} ({}) failed",
        build.name()
    );
    let output = Command::new(&exe)
        .env("ASAN_OPTIONS", "detect_leaks=1")
        .env("UBSAN_OPTIONS", "print_stacktrace=1")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&exe);
    assert!(
        output.status.success(),
        "{source} ({}) failed:\n{}{}",
        build.name(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn ot_functions_from_c() {
    compile_and_run("ot_api.c", Build::Plain);
}

#[test]
fn ot_functions_from_c_under_sanitizers() {
    compile_and_run("ot_api.c", Build::Sanitized);
}

#[test]
fn protocol_functions_from_c() {
    compile_and_run("protocol_api.c", Build::Plain);
}

#[test]
fn protocol_functions_from_c_under_sanitizers() {
    compile_and_run("protocol_api.c", Build::Sanitized);
}
