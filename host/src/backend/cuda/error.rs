//! What can go wrong setting up the CUDA backend.

use super::libs::{describe_missing, CudaLibrary};
use crate::backend::BackendError;

/// An error creating the CUDA backend or compiling its kernels.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// One or more of the driver, cuBLAS and NVRTC libraries cannot be loaded.
    #[error("CUDA is not usable: {}", describe_missing(.0))]
    MissingLibraries(Vec<CudaLibrary>),
    /// The driver loaded but reports no usable device (or failed to initialise).
    #[error("no CUDA device: {0}")]
    NoDevice(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The driver is older than the CUDA release of the NVRTC that compiles the kernels: it
    /// cannot load their machine code.
    #[error(
        "the NVIDIA driver supports CUDA {driver}, older than NVRTC {nvrtc} that compiles the \
         kernels: update the driver (CUDA 13 needs R580 or newer)"
    )]
    DriverTooOld {
        /// The CUDA version the driver supports, e.g. `12.4`.
        driver: String,
        /// NVRTC's version, e.g. `13.0`.
        nvrtc: String,
    },
    /// A device ordinal past the last device.
    #[error("CUDA device {requested} requested, but this machine has {count} (cuda:0 … cuda:{})", .count.saturating_sub(1))]
    NoSuchDevice {
        /// The ordinal asked for.
        requested: usize,
        /// How many devices the driver reports.
        count: usize,
    },
    /// NVRTC cannot generate code for the device.
    #[error(
        "NVRTC {nvrtc} supports compute capabilities {oldest} to {newest}; the GPU has {device}"
    )]
    UnsupportedArchitecture {
        /// The device's compute capability, e.g. `9.0`.
        device: String,
        /// NVRTC's version.
        nvrtc: String,
        /// The oldest architecture this NVRTC compiles for.
        oldest: String,
        /// The newest architecture this NVRTC compiles for.
        newest: String,
    },
    /// A kernel file does not compile (a bug in the kernel sources, or an NVRTC too old).
    #[error("NVRTC failed to compile {file} for {target}:\n{log}")]
    Compile {
        /// The `.cu` file.
        file: &'static str,
        /// The architecture, e.g. `sm_90`.
        target: String,
        /// NVRTC's log (errors with file and line).
        log: String,
    },
    /// A driver, NVRTC or cuBLAS call failed.
    #[error("{what}: {source}")]
    Library {
        /// What was being done.
        what: String,
        /// The library's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl CudaError {
    /// A failed library call: what was being done, and the library's error.
    pub(crate) fn library(
        what: impl Into<String>,
        err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        CudaError::Library {
            what: what.into(),
            source: err.into(),
        }
    }
}

/// Setting up the backend failed: the CUDA error is the source of the backend's.
impl From<CudaError> for BackendError {
    fn from(err: CudaError) -> Self {
        BackendError::Device {
            op: "cuda",
            source: Box::new(err),
        }
    }
}

/// A failed device call inside backend operation `op`, with the driver's or library's error
/// (or, for what the device cannot do, a message).
pub(crate) fn device_error(
    op: &'static str,
    err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> BackendError {
    BackendError::Device {
        op,
        source: err.into(),
    }
}
