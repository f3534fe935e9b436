//! Choosing where the model runs: the `--device cpu|cuda|cuda:N|auto` option.
//!
//! Parsing ([`DeviceRequest`]) and resolving ([`DeviceRequest::resolve`]) are separate: parsing
//! checks the spelling; resolving checks the machine — whether the CUDA libraries load and the
//! device exists — and, for `auto`, falls back to the CPU with the reason. Creating the backend
//! itself ([`Cpu::new`](super::Cpu::new), `Cuda::new(ordinal)`) is the caller's, because the
//! model code is generic over the backend type:
//!
//! ```
//! use fedotp_host::backend::{DeviceRequest, SelectedDevice};
//!
//! let request: DeviceRequest = "auto".parse()?;
//! match request.resolve()? {
//!     SelectedDevice::Cpu { fallback } => {
//!         if let Some(why) = fallback {
//!             eprintln!("using the CPU: {why}");
//!         }
//!         // run(&fedotp_host::backend::Cpu::new())
//!     }
//!     SelectedDevice::Cuda { ordinal } => {
//!         // run(&fedotp_host::backend::Cuda::new(ordinal)?)
//!         # let _ = ordinal;
//!     }
//! }
//! # Ok::<(), fedotp_host::backend::DeviceError>(())
//! ```

use std::fmt;
use std::str::FromStr;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// `cpu`.
    Cpu,
    /// `cuda` (device 0) or `cuda:N`.
    Cuda(usize),
    /// `auto`: the first CUDA device when one is usable, else the CPU.
    Auto,
}

/// Where the model will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectedDevice {
    /// The CPU backend.
    Cpu {
        /// For `auto`, why CUDA was not used (no driver, a missing library, no device).
        fallback: Option<String>,
    },
    /// The CUDA backend on device `ordinal`.
    Cuda {
        /// The device ordinal.
        ordinal: usize,
    },
}

/// A `--device` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not one of the accepted spellings.
    #[error("unknown device `{0}`: expected cpu, cuda, cuda:N (N = 0, 1, …) or auto")]
    Unknown(String),
    /// A CUDA device was asked for and cannot be used.
    #[error("device {request}: {reason}")]
    Unavailable {
        /// The request, e.g. `cuda:1`.
        request: DeviceRequest,
        /// Why: a missing library (named), no driver, no such device, or a build without CUDA.
        reason: String,
    },
}

impl FromStr for DeviceRequest {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let value = s.trim().to_ascii_lowercase();
        match value.as_str() {
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            "auto" => Ok(DeviceRequest::Auto),
            _ => value
                .strip_prefix("cuda:")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceRequest::Auto => f.write_str("auto"),
        }
    }
}

impl DeviceRequest {
    /// Checks the request against this machine. `cuda`/`cuda:N` fail with the reason when the
    /// device cannot be used; `auto` never fails.
    pub fn resolve(self) -> Result<SelectedDevice, DeviceError> {
        match self {
            DeviceRequest::Cpu => Ok(SelectedDevice::Cpu { fallback: None }),
            DeviceRequest::Cuda(ordinal) => match cuda_device(ordinal) {
                Ok(()) => Ok(SelectedDevice::Cuda { ordinal }),
                Err(reason) => Err(DeviceError::Unavailable {
                    request: self,
                    reason,
                }),
            },
            DeviceRequest::Auto => Ok(match cuda_device(0) {
                Ok(()) => SelectedDevice::Cuda { ordinal: 0 },
                Err(reason) => SelectedDevice::Cpu {
                    fallback: Some(reason),
                },
            }),
        }
    }
}

/// Whether CUDA device `ordinal` exists and its libraries load; else why not.
#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<(), String> {
    use super::cuda::{Cuda, CudaError};
    let count = Cuda::device_count().map_err(|e| e.to_string())?;
    if ordinal >= count {
        return Err(CudaError::NoSuchDevice {
            requested: ordinal,
            count,
        }
        .to_string());
    }
    Ok(())
}

/// Without the `cuda` feature there is never a CUDA device.
#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<(), String> {
    Err("this build of fedotp has no CUDA support (build with the `cuda` feature)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_spellings() {
        for (text, want) in [
            ("cpu", DeviceRequest::Cpu),
            ("cuda", DeviceRequest::Cuda(0)),
            ("cuda:0", DeviceRequest::Cuda(0)),
            ("cuda:3", DeviceRequest::Cuda(3)),
            (" CUDA:12 ", DeviceRequest::Cuda(12)),
            ("auto", DeviceRequest::Auto),
        ] {
            assert_eq!(text.parse::<DeviceRequest>().unwrap(), want, "{text:?}");
        }
        for request in [
            DeviceRequest::Cpu,
            DeviceRequest::Cuda(2),
            DeviceRequest::Auto,
        ] {
            assert_eq!(
                request.to_string().parse::<DeviceRequest>().unwrap(),
                request
            );
        }
    }

    #[test]
    fn rejected_spellings_are_named() {
        for text in [
            "", "gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda0", "cpu:0",
        ] {
            let err = text.parse::<DeviceRequest>().unwrap_err();
            assert_eq!(err, DeviceError::Unknown(text.to_string()));
            assert!(err.to_string().contains(&format!("`{text}`")), "{err}");
        }
        let huge = "cuda:99999999999999999999999";
        assert!(huge.parse::<DeviceRequest>().is_err());
    }

    #[test]
    fn cpu_always_resolves() {
        assert_eq!(
            DeviceRequest::Cpu.resolve().unwrap(),
            SelectedDevice::Cpu { fallback: None }
        );
    }

    /// On a machine without a usable GPU, `cuda` is an error that says why and `auto` falls back
    /// to the CPU with the same reason; with one, both pick device 0.
    #[test]
    fn cuda_and_auto_follow_the_machine() {
        match DeviceRequest::Cuda(0).resolve() {
            Ok(selected) => {
                assert_eq!(selected, SelectedDevice::Cuda { ordinal: 0 });
                assert_eq!(
                    DeviceRequest::Auto.resolve().unwrap(),
                    SelectedDevice::Cuda { ordinal: 0 }
                );
                let absurd = DeviceRequest::Cuda(10_000).resolve().unwrap_err();
                assert!(absurd.to_string().contains("cuda:10000"), "{absurd}");
            }
            Err(DeviceError::Unavailable { request, reason }) => {
                assert_eq!(request, DeviceRequest::Cuda(0));
                assert!(!reason.is_empty());
                assert_eq!(
                    DeviceRequest::Auto.resolve().unwrap(),
                    SelectedDevice::Cpu {
                        fallback: Some(reason)
                    }
                );
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}
