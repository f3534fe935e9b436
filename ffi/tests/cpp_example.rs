//! The C++ example `ffi/examples/cpp` as a user builds it: libfedotp installed with
//! `ffi/install.sh` into a fresh prefix, the program configured with CMake through
//! `find_package(fedotp)` and built with the system's C++ compiler, then run — linked with the
//! shared library, once more built with AddressSanitizer and UndefinedBehaviorSanitizer and
//! linked statically, and once under valgrind's memcheck. Each run must pass every check of
//! the program and end clean.
//!
//! Needs cmake, a C++ compiler and valgrind (`.ci/run` installs them). Where one is missing the
//! tests that need it say so and pass, except under CI (`CI` set), where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod support;

/// The tests' scratch directory, in cargo's temporary directory for integration tests: each
/// run overwrites the last one's, and what a failed run leaves is there to inspect.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cpp-example");
        // A previous run's CMake cache would keep its settings; start from nothing.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Whether `tool` runs; if not, a test that needs it skips (outside CI) or fails (in CI).
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing; .ci/run installs it"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// libfedotp installed by `ffi/install.sh` into a prefix of its own, from the libraries this
/// test run built.
fn installed_prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = scratch().join("prefix");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh");
        run(
            Command::new("bash")
                .arg(script)
                .arg("--prefix")
                .arg(&prefix)
                .arg("--lib-dir")
                .arg(support::library_dir()),
            "ffi/install.sh",
        );
        prefix
    })
}

/// How the example is built.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// Against the shared library, as most programs link it.
    Shared,
    /// Against the static library, with `-fsanitize=address,undefined`.
    StaticSanitized,
}

/// Configures and builds the example; returns the program.
fn build(variant: Variant) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cpp");
    let (name, static_link, flags) = match variant {
        Variant::Shared => ("shared", "OFF", "-O1"),
        Variant::StaticSanitized => (
            "static-asan-ubsan",
            "ON",
            "-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all",
        ),
    };
    let build_dir = scratch().join(format!("build-{name}"));
    run(
        Command::new("cmake")
            .arg("-S")
            .arg(&source)
            .arg("-B")
            .arg(&build_dir)
            .arg(format!(
                "-DCMAKE_PREFIX_PATH={}",
                installed_prefix().display()
            ))
            .arg(format!("-DFEDOTP_LINK_STATIC={static_link}"))
            .arg(format!("-DCMAKE_CXX_FLAGS={flags}"))
            .arg("-DCMAKE_BUILD_TYPE=None"),
        "cmake configure",
    );
    run(
        Command::new("cmake").arg("--build").arg(&build_dir),
        "cmake build",
    );
    build_dir.join("federated_hospitals")
}

/// The shared build, made once for the tests that run it.
fn shared_program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| build(Variant::Shared))
}

/// A directory for one run's saved client states.
fn work_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_all_checks_passed(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("all federated-hospital checks passed"),
        "{stdout}"
    );
    // Two rounds of three hospitals.
    assert_eq!(stdout.matches("round ").count(), 6, "{stdout}");
}

#[test]
fn cpp_example_builds_against_the_installed_shared_library_and_passes() {
    if !(have("cmake") && have("c++")) {
        return;
    }
    let program = shared_program();
    // The program must find the library through its soname link in the prefix.
    let output = run(
        Command::new(program)
            .arg(work_dir("shared"))
            .env("LD_LIBRARY_PATH", installed_prefix().join("lib")),
        "federated_hospitals (shared)",
    );
    assert_all_checks_passed(&output);
}

#[test]
fn cpp_example_linked_statically_is_clean_under_asan_and_ubsan() {
    if !(have("cmake") && have("c++")) {
        return;
    }
    let program = build(Variant::StaticSanitized);
    let output = run(
        Command::new(program)
            .arg(work_dir("sanitized"))
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .env("UBSAN_OPTIONS", "print_stacktrace=1"),
        "federated_hospitals (static, ASan + UBSan)",
    );
    assert_all_checks_passed(&output);
}

#[test]
fn cpp_example_is_clean_under_valgrind() {
    if !(have("cmake") && have("c++") && have("valgrind")) {
        return;
    }
    let program = shared_program();
    // Any invalid read or write, use of uninitialised memory, or memory definitely lost at
    // exit fails the run. Still-reachable blocks are the process-wide state (thread pools,
    // the tokenizer) that lives until exit by design.
    let output = run(
        Command::new("valgrind")
            .args([
                "--error-exitcode=97",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--show-leak-kinds=definite",
            ])
            .arg(program)
            .arg(work_dir("valgrind"))
            .env("LD_LIBRARY_PATH", installed_prefix().join("lib")),
        "federated_hospitals under valgrind",
    );
    assert_all_checks_passed(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
}
