//! Compiles the C programs in `tests/c/` against `include/fedotp.h` and the static library
//! cargo just built, runs them, and fails on a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, where cargo put `libfedotp.a` (the test binary lives in its `deps/`).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn compile_and_run(source: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = library_dir();
    let static_lib = lib_dir.join("libfedotp.a");
    assert!(
        static_lib.exists(),
        "{} was not built",
        static_lib.display()
    );
    let exe = std::env::temp_dir().join(format!(
        "fedotp-{}-{}",
        source.replace('.', "-"),
        std::process::id()
    ));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg("-I")
        .arg(root.join("../include"))
        .arg(root.join("tests/c").join(source))
        .arg(&static_lib)
        .args(["-lm", "-lpthread", "-ldl"])
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success(), "compiling {source} failed");
    let output = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_file(&exe);
    assert!(
        output.status.success(),
        "{source} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn ot_functions_from_c() {
    compile_and_run("ot_api.c");
}
