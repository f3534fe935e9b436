//! Compiling the kernel sources with NVRTC, for the GPU at hand, once per process.
//!
//! Each `.cu` file under `kernels/` is its own NVRTC program, prefixed with `common.cuh`. For a
//! GPU whose architecture NVRTC knows, the result is machine code (CUBIN, `sm_XY`), which the
//! driver loads without its PTX JIT — so it also loads when NVRTC is newer than the driver (the
//! CUDA minor-version compatibility rule covers machine code, not PTX). For a GPU newer than
//! NVRTC, the result is PTX for the newest architecture NVRTC knows, which the driver compiles
//! forward. Compiled images are cached per target for the life of the process; each context
//! then only loads them.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use rayon::prelude::*;

use super::CudaError;

/// Helpers prepended to every kernel file.
pub(super) const COMMON: &str = include_str!("kernels/common.cuh");

/// One kernel source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFile {
    /// File name under `host/src/backend/cuda/kernels/`.
    pub name: &'static str,
    /// Its text.
    pub code: &'static str,
}

/// Every kernel file, in the order the kernels table ([`super::kernels`]) numbers them.
pub const KERNEL_FILES: [KernelFile; 7] = [
    KernelFile {
        name: "embed.cu",
        code: include_str!("kernels/embed.cu"),
    },
    KernelFile {
        name: "layer_norm.cu",
        code: include_str!("kernels/layer_norm.cu"),
    },
    KernelFile {
        name: "attention.cu",
        code: include_str!("kernels/attention.cu"),
    },
    KernelFile {
        name: "elementwise.cu",
        code: include_str!("kernels/elementwise.cu"),
    },
    KernelFile {
        name: "conv.cu",
        code: include_str!("kernels/conv.cu"),
    },
    KernelFile {
        name: "ot.cu",
        code: include_str!("kernels/ot.cu"),
    },
    KernelFile {
        name: "loss.cu",
        code: include_str!("kernels/loss.cu"),
    },
];

/// A GPU architecture, as a compute capability (`major.minor`, e.g. 9.0 for the H100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComputeCapability {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl ComputeCapability {
    /// The capability NVRTC writes as `sm_{code}` / `compute_{code}`, e.g. 90 → 9.0.
    fn from_code(code: u32) -> Self {
        ComputeCapability {
            major: code / 10,
            minor: code % 10,
        }
    }

    fn code(self) -> u32 {
        self.major * 10 + self.minor
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What NVRTC generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Machine code for one architecture (`--gpu-architecture=sm_XY`).
    Cubin(ComputeCapability),
    /// PTX for a virtual architecture (`--gpu-architecture=compute_XY`), compiled by the driver.
    Ptx(ComputeCapability),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cubin(cc) => write!(f, "sm_{}", cc.code()),
            Target::Ptx(cc) => write!(f, "compute_{}", cc.code()),
        }
    }
}

/// A compiled kernel file, ready for `cuModuleLoadData`.
#[derive(Debug, Clone)]
pub enum ModuleImage {
    /// Machine code.
    Cubin(Vec<u8>),
    /// PTX text.
    Ptx(String),
}

/// NVRTC's version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::library("nvrtcVersion", e))?;
    Ok((major, minor))
}

/// The real architectures this NVRTC generates machine code for, oldest first.
pub fn supported_architectures() -> Result<Vec<ComputeCapability>, CudaError> {
    let mut count = 0;
    // SAFETY: an out-pointer to a live integer.
    unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut count) }
        .result()
        .map_err(|e| CudaError::library("nvrtcGetNumSupportedArchs", e))?;
    let mut codes = vec![0i32; count.max(0) as usize];
    // SAFETY: `codes` holds `count` integers, the number NVRTC just reported, which is what
    // nvrtcGetSupportedArchs writes.
    unsafe { nvrtc_sys::nvrtcGetSupportedArchs(codes.as_mut_ptr()) }
        .result()
        .map_err(|e| CudaError::library("nvrtcGetSupportedArchs", e))?;
    let mut archs: Vec<ComputeCapability> = codes
        .into_iter()
        .map(|c| ComputeCapability::from_code(c as u32))
        .collect();
    archs.sort();
    Ok(archs)
}

/// What to compile for a device: machine code for its own architecture when NVRTC knows it,
/// else PTX for the newest architecture below it that NVRTC knows (PTX runs on any later GPU).
pub fn target_for(device: ComputeCapability) -> Result<Target, CudaError> {
    let archs = supported_architectures()?;
    if archs.contains(&device) {
        return Ok(Target::Cubin(device));
    }
    match archs.iter().rev().find(|&&a| a < device) {
        Some(&below) => Ok(Target::Ptx(below)),
        None => {
            let (major, minor) = nvrtc_version()?;
            Err(CudaError::UnsupportedArchitecture {
                device: device.to_string(),
                nvrtc: format!("{major}.{minor}"),
                oldest: archs.first().map_or("none".into(), |a| a.to_string()),
                newest: archs.last().map_or("none".into(), |a| a.to_string()),
            })
        }
    }
}

/// An NVRTC program, destroyed on drop.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `create_program` and destroyed only here.
        let _ = unsafe { nvrtc::destroy_program(self.0) };
    }
}

/// Text NVRTC returned (a log, PTX): the characters up to its NUL terminator, or all of them
/// if there is none.
fn nvrtc_text(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).collect();
    let text = CStr::from_bytes_until_nul(&bytes).map_or(&bytes[..], CStr::to_bytes);
    String::from_utf8_lossy(text).into_owned()
}

/// Compiles one kernel file for `target`.
pub fn compile(file: &KernelFile, target: Target) -> Result<ModuleImage, CudaError> {
    // `#line` makes NVRTC's messages name the kernel file and its own line numbers.
    let source = format!("{COMMON}\n#line 1 \"{}\"\n{}", file.name, file.code);
    let source = CString::new(source).map_err(|_| CudaError::Compile {
        file: file.name,
        target: target.to_string(),
        log: "the source contains a NUL byte".into(),
    })?;
    let name = CString::new(file.name).expect("kernel file names contain no NUL");
    let program = Program(
        nvrtc::create_program(&source, Some(&name))
            .map_err(|e| CudaError::library("nvrtcCreateProgram", e))?,
    );
    let options = [format!("--gpu-architecture={target}")];
    // SAFETY: `program` is a live program; `source` and `name` outlive it.
    if let Err(e) = unsafe { nvrtc::compile_program(program.0, &options) } {
        // SAFETY: as above: `program` is live.
        let log = unsafe { nvrtc::get_program_log(program.0) }
            .map(|raw| nvrtc_text(&raw))
            .unwrap_or_else(|_| format!("{e} (and the log could not be read)"));
        return Err(CudaError::Compile {
            file: file.name,
            target: target.to_string(),
            log,
        });
    }
    match target {
        Target::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: `program` is live and compiled for a real architecture, so it holds a
            // CUBIN; `size` is a live out-pointer.
            unsafe { nvrtc_sys::nvrtcGetCUBINSize(program.0, &mut size) }
                .result()
                .map_err(|e| CudaError::library("nvrtcGetCUBINSize", e))?;
            let mut cubin = vec![0u8; size];
            // SAFETY: `cubin` holds `size` bytes, the size NVRTC just reported for this CUBIN,
            // which is what nvrtcGetCUBIN writes.
            unsafe { nvrtc_sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr() as *mut c_char) }
                .result()
                .map_err(|e| CudaError::library("nvrtcGetCUBIN", e))?;
            Ok(ModuleImage::Cubin(cubin))
        }
        Target::Ptx(_) => {
            // SAFETY: `program` is live and compiled, so it holds PTX.
            let raw = unsafe { nvrtc::get_ptx(program.0) }
                .map_err(|e| CudaError::library("nvrtcGetPTX", e))?;
            Ok(ModuleImage::Ptx(nvrtc_text(&raw)))
        }
    }
}

/// Every kernel file compiled for `target` (in [`KERNEL_FILES`] order), compiled on the first
/// request for that target in this process — the files in parallel — and shared afterwards.
pub fn compiled_kernel_files(target: Target) -> Result<Arc<Vec<ModuleImage>>, CudaError> {
    type Cache = Mutex<HashMap<Target, Arc<Vec<ModuleImage>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // Holding the lock while compiling makes concurrent first requests wait for one compile
    // instead of each running their own.
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(images) = cache.get(&target) {
        return Ok(images.clone());
    }
    let images: Vec<ModuleImage> = KERNEL_FILES
        .par_iter()
        .map(|file| compile(file, target))
        .collect::<Result<_, _>>()?;
    let images = Arc::new(images);
    cache.insert(target, images.clone());
    Ok(images)
}
