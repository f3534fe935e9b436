//! Finding the CUDA libraries at run time.
//!
//! cudarc loads the driver (`libcuda`), cuBLAS and NVRTC lazily, on the first call into each,
//! and **panics** when a library is missing. Everything here runs before any such call: it
//! tries to open each library by the names cudarc would use and reports which are missing,
//! so the caller gets an error that names the library instead of a panic.

use std::fmt;
use std::sync::OnceLock;

/// A CUDA library the backend loads at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaLibrary {
    /// The driver API, `libcuda.so` (installed with the NVIDIA driver).
    Driver,
    /// cuBLAS, `libcublas.so` (with `libcublasLt.so`), for the matrix products.
    Cublas,
    /// NVRTC, `libnvrtc.so`, which compiles the kernels at run time.
    Nvrtc,
}

impl CudaLibrary {
    /// Every library the CUDA backend needs.
    pub const ALL: [CudaLibrary; 3] =
        [CudaLibrary::Driver, CudaLibrary::Cublas, CudaLibrary::Nvrtc];

    /// The library's base name, as cudarc searches for it (`lib{name}.so`, `lib{name}.so.13`, …).
    pub fn base_name(self) -> &'static str {
        match self {
            CudaLibrary::Driver => "cuda",
            CudaLibrary::Cublas => "cublas",
            CudaLibrary::Nvrtc => "nvrtc",
        }
    }

    /// Where the library usually comes from, for error messages.
    pub fn source(self) -> &'static str {
        match self {
            CudaLibrary::Driver => "the NVIDIA driver (is this a machine with an NVIDIA GPU?)",
            CudaLibrary::Cublas => {
                "the CUDA 13 toolkit, or `pip install nvidia-cublas` (then add its nvidia/cu13/lib to LD_LIBRARY_PATH)"
            }
            CudaLibrary::Nvrtc => {
                "the CUDA 13 toolkit, or `pip install nvidia-cuda-nvrtc` (then add its nvidia/cu13/lib to LD_LIBRARY_PATH)"
            }
        }
    }

    /// Whether the library can be opened, by the names cudarc searches. A library found stays
    /// loaded for the life of the process — cudarc opens it again (the loader returns the same
    /// copy) when it first needs it — because unloading one that carries its own C++ runtime
    /// (NVRTC does) leaves that runtime's allocations behind. The answer is kept: the loader
    /// path does not change while the process runs.
    pub fn is_present(self) -> bool {
        static PRESENT: [OnceLock<bool>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        *PRESENT[self as usize].get_or_init(|| {
            cudarc::get_lib_name_candidates(self.base_name())
                .into_iter()
                // SAFETY: opening a CUDA library runs only its initialisers, which the CUDA
                // libraries keep to their own state; no symbol is called here.
                .find_map(|name| unsafe { libloading::Library::new(name) }.ok())
                .map(std::mem::forget)
                .is_some()
        })
    }
}

impl fmt::Display for CudaLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CudaLibrary::Driver => "CUDA driver (libcuda)",
            CudaLibrary::Cublas => "cuBLAS (libcublas)",
            CudaLibrary::Nvrtc => "NVRTC (libnvrtc)",
        })
    }
}

/// The libraries among `wanted` that cannot be opened, in order.
pub fn missing_libraries(wanted: &[CudaLibrary]) -> Vec<CudaLibrary> {
    wanted.iter().copied().filter(|l| !l.is_present()).collect()
}

/// A readable account of missing libraries: each with where it comes from and the file names
/// searched.
pub(crate) fn describe_missing(missing: &[CudaLibrary]) -> String {
    missing
        .iter()
        .map(|l| {
            // cudarc also tries Windows-style names (`cuda64_13`); show the Unix ones.
            let unix = format!("lib{}.so", l.base_name());
            let names = cudarc::get_lib_name_candidates(l.base_name());
            let shown: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| n.starts_with(&unix))
                .collect();
            format!(
                "{l} not found (searched {} on the loader path); it comes with {}",
                shown.join(", "),
                l.source()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
