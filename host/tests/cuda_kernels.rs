//! Every CUDA kernel compiles with NVRTC, and every kernel's parameter list in the `.cu` source
//! matches the table the Rust launches are checked against — without a GPU.
//!
//! NVRTC compiles to PTX and machine code with no driver and no device, so this runs wherever
//! `libnvrtc.so` can be loaded (the CUDA toolkit, or the `nvidia-cuda-nvrtc` PyPI package with
//! its `nvidia/cu13/lib` on `LD_LIBRARY_PATH`; `.ci/run` installs it). Without NVRTC the test
//! says so on stderr and passes — unless `FEDOTP_REQUIRE_KERNEL_CHECKS=1`, as CI sets, which turns the
//! absence into a failure, so CI cannot skip it silently.

#![cfg(feature = "cuda")]

use std::io::Write;

use fedotp_host::backend::cuda::kernels::{Kernel, Param};
use fedotp_host::backend::cuda::{
    compile, missing_libraries, nvrtc_version, supported_architectures, ComputeCapability,
    CudaLibrary, ModuleImage, Target, KERNEL_FILES,
};

/// Architectures the kernels must compile for when NVRTC supports them: Ampere (A100, A10),
/// Ada (L4, RTX 4090), Hopper (H100, H200), Blackwell (B200, RTX 5090).
const ARCHITECTURES: [(u32, u32); 6] = [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)];

/// Whether NVRTC is usable; prints why not (past the test harness's capture) when it is not.
fn nvrtc_available() -> bool {
    if missing_libraries(&[CudaLibrary::Nvrtc]).is_empty() {
        return true;
    }
    let reason = "NVRTC (libnvrtc.so) cannot be loaded: put the directory holding libnvrtc.so.13 \
                  on LD_LIBRARY_PATH (.ci/run installs it from the nvidia-cuda-nvrtc wheel)";
    if std::env::var("FEDOTP_REQUIRE_KERNEL_CHECKS").is_ok_and(|v| v == "1") {
        panic!("FEDOTP_REQUIRE_KERNEL_CHECKS=1 but {reason}");
    }
    // Written to the process's stderr directly, which the harness does not capture.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED cuda_kernels: {reason}; no kernel was compiled"
    );
    false
}

/// The `(name, parameter types)` of every `.entry` in a PTX module.
fn ptx_entries(ptx: &str) -> Vec<(String, Vec<String>)> {
    let mut entries = Vec::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(".visible .entry ") else {
            continue;
        };
        let name = rest.trim_end_matches('(').trim().to_string();
        let mut params = Vec::new();
        for param in lines.by_ref() {
            let param = param.trim();
            if param.starts_with(')') {
                break;
            }
            // `.param .u64 .ptr .align 1 name_param_0,` or `.param .u32 name_param_5,`
            let kind = param
                .split_whitespace()
                .nth(1)
                .unwrap_or_else(|| panic!("unexpected PTX parameter line `{param}`"));
            params.push(kind.to_string());
        }
        entries.push((name, params));
    }
    entries
}

#[test]
fn every_kernel_compiles_and_matches_its_parameter_table() {
    if !nvrtc_available() {
        return;
    }
    let (major, minor) = nvrtc_version().unwrap();
    let supported = supported_architectures().unwrap();
    let targets: Vec<ComputeCapability> = ARCHITECTURES
        .iter()
        .map(|&(major, minor)| ComputeCapability { major, minor })
        .filter(|cc| supported.contains(cc))
        .collect();
    assert!(
        targets.contains(&ComputeCapability { major: 9, minor: 0 }),
        "NVRTC {major}.{minor} cannot compile for sm_90 (supports {supported:?})"
    );

    // PTX for the oldest target: its text shows each entry's parameter types.
    let ptx_target = Target::Ptx(targets[0]);
    let mut checked = 0;
    for file in &KERNEL_FILES {
        let ModuleImage::Ptx(ptx) = compile(file, ptx_target).unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("a PTX target gave machine code");
        };
        let entries = ptx_entries(&ptx);
        let expected: Vec<Kernel> = Kernel::ALL
            .iter()
            .copied()
            .filter(|k| k.file() == file.name)
            .collect();
        assert_eq!(
            entries.len(),
            expected.len(),
            "{}: PTX entries {:?}, kernel table {:?}",
            file.name,
            entries.iter().map(|e| &e.0).collect::<Vec<_>>(),
            expected
        );
        for kernel in expected {
            let (_, params) = entries
                .iter()
                .find(|(name, _)| name == kernel.name())
                .unwrap_or_else(|| panic!("{} has no entry {}", file.name, kernel.name()));
            let want: Vec<&str> = kernel
                .params()
                .iter()
                .map(|p| Param::ptx_type(*p))
                .collect();
            assert_eq!(
                params,
                &want,
                "{}: parameters of {} in PTX vs the kernel table",
                file.name,
                kernel.name()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, Kernel::ALL.len());

    // Machine code for every architecture a user may run on, as the backend compiles it.
    for &cc in &targets {
        for file in &KERNEL_FILES {
            match compile(file, Target::Cubin(cc)) {
                Ok(ModuleImage::Cubin(bytes)) => {
                    // An ELF image, as cuModuleLoadData expects.
                    assert_eq!(&bytes[..4], b"\x7fELF", "{} for sm_{cc}", file.name);
                }
                Ok(ModuleImage::Ptx(_)) => panic!("a CUBIN target gave PTX"),
                Err(e) => panic!("{e}"),
            }
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "cuda_kernels: NVRTC {major}.{minor} compiled {} files ({} kernels) for {}",
        KERNEL_FILES.len(),
        Kernel::ALL.len(),
        targets
            .iter()
            .map(|cc| format!("sm_{}{}", cc.major, cc.minor))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn a_kernel_that_does_not_compile_is_reported_with_file_and_line() {
    if !nvrtc_available() {
        return;
    }
    let broken = fedotp_host::backend::cuda::KernelFile {
        name: "broken.cu",
        code: "extern \"C\" __global__ void broken(float* out) {\n    out[0] = undeclared;\n}\n",
    };
    let err = compile(
        &broken,
        Target::Ptx(ComputeCapability { major: 8, minor: 0 }),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("broken.cu"), "{err}");
    assert!(err.contains("undeclared"), "{err}");
    // `#line 1` after the shared prelude: the error is on the file's own line 2.
    assert!(err.contains("broken.cu(2)"), "{err}");
}
