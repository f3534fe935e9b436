//! Compiles the C programs in `tests/c/` against `include/fedotp.h` and the static library,
//! runs them, and fails on a non-zero exit. Each program runs twice: built plainly, and built
//! with AddressSanitizer and UndefinedBehaviorSanitizer (the runtimes come with gcc; `.ci/run`
//! installs it), which also checks for leaks at exit.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

/// `libfedotp.a` as the crate's sources are now.
fn static_library() -> PathBuf {
    support::library_dir().join("libfedotp.a")
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
        // Where the programs find fixtures and may write files.
        .arg(format!(
            "-DFEDOTP_SOURCE_DIR=\"{}\"",
            root.parent().unwrap().display()
        ))
        .arg(format!(
            "-DFEDOTP_SCRATCH_DIR=\"{}\"",
            env!("CARGO_TARGET_TMPDIR")
        ))
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

#[test]
fn client_functions_from_c() {
    compile_and_run("client_api.c", Build::Plain);
}

#[test]
fn client_functions_from_c_under_sanitizers() {
    compile_and_run("client_api.c", Build::Sanitized);
}
