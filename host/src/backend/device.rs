//! Choosing where the model runs: the device `cpu`, `cuda`, `cuda:N` or `auto`, as the
//! configuration file, the command line and libfedotp name it, and running generic code on it.
//!
//! Three steps, each in one place:
//! - **Parsing** ([`Device`]'s `FromStr`, also its serde form) checks the spelling only.
//! - **Opening** ([`Device::open`]) checks the machine and opens the backend: the CPU always; a
//!   GPU when the CUDA libraries load and the device exists (else an error that says why); for
//!   `auto`, CUDA device 0 when it can be opened, else the CPU with the reason. A GPU's backend
//!   is the process's shared one ([`Cuda::shared`]).
//! - **Running** ([`SelectedBackend::run`]) hands the opened backend to code written once,
//!   generic over [`Backend`] ([`OnBackend`]).
//!
//! ```
//! use fedotp_host::backend::{Backend, Device, OnBackend};
//!
//! /// Doubles three numbers on whichever backend the device names.
//! struct Double;
//! impl OnBackend for Double {
//!     type Output = Vec<f32>;
//!     fn run<B: Backend + 'static>(self, backend: B) -> Vec<f32> {
//!         let x = backend.upload(&[1.0, 2.0, 3.0]).unwrap();
//!         let mut y = backend.upload(&[1.0, 2.0, 3.0]).unwrap();
//!         backend.add_assign(&mut y, &x, 3).unwrap();
//!         backend.download(&y, 3).unwrap()
//!     }
//! }
//!
//! let selected = "auto".parse::<Device>()?.open()?;
//! if let Some(why) = selected.fallback() {
//!     println!("on the CPU: {why}");
//! }
//! assert_eq!(selected.run(Double), [2.0, 4.0, 6.0]);
//! # Ok::<(), fedotp_host::backend::DeviceError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Backend, Cpu, Cuda, CudaError};

/// A compute device: `"cpu"`, `"cuda"` (device 0), `"cuda:N"` or `"auto"` (CUDA device 0 when
/// it can be used, else the CPU). Parsing checks the spelling; [`Device::open`] checks the
/// machine.
///
/// ```
/// use fedotp_host::backend::Device;
/// assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
/// assert_eq!("cuda".parse::<Device>().unwrap().to_string(), "cuda:0");
/// assert!("gpu".parse::<Device>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
    /// CUDA device 0 if it can be used, else the CPU.
    #[default]
    Auto,
}

/// A device that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Not one of the accepted spellings.
    #[error("{0:?} is not a device: use \"cpu\", \"cuda\", \"cuda:N\" or \"auto\"")]
    Unknown(String),
    /// A GPU that cannot be opened: a missing library (named), no driver, no such device, or a
    /// build without CUDA.
    #[error("device {device}: {source}")]
    Unavailable {
        /// The device asked for, e.g. `cuda:1`.
        device: Device,
        /// Why it cannot be used.
        source: CudaError,
    },
}

impl FromStr for Device {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<Self, DeviceError> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::Auto),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|ordinal| {
                    // Digits only: `usize::from_str` would also take a leading `+`.
                    let digits = !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit());
                    digits.then(|| ordinal.parse().ok()).flatten()
                })
                .map(Device::Cuda)
                .ok_or_else(|| DeviceError::Unknown(text.to_string())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
            Device::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Device {
    /// Whether the device can be computed on in this process, now: the CPU and `auto` always;
    /// a GPU when this build has the CUDA backend, the driver, cuBLAS and NVRTC load and the
    /// driver reports the device. Opens nothing.
    pub fn available(self) -> bool {
        match self {
            Device::Cpu | Device::Auto => true,
            Device::Cuda(ordinal) => Cuda::device_count().is_ok_and(|count| ordinal < count),
        }
    }

    /// Opens the backend of this device: the CPU; the process's shared backend on a GPU
    /// ([`Cuda::shared`]), or an error that says why it cannot be used; for `auto`, GPU 0 when
    /// it can be opened, else the CPU with the reason ([`SelectedBackend::fallback`]).
    pub fn open(self) -> Result<SelectedBackend, DeviceError> {
        match self {
            Device::Cpu => Ok(SelectedBackend::Cpu { fallback: None }),
            Device::Cuda(ordinal) => {
                Cuda::shared(ordinal)
                    .map(SelectedBackend::Cuda)
                    .map_err(|source| DeviceError::Unavailable {
                        device: self,
                        source,
                    })
            }
            Device::Auto => Ok(match Cuda::shared(0) {
                Ok(cuda) => SelectedBackend::Cuda(cuda),
                Err(source) => SelectedBackend::Cpu {
                    fallback: Some(DeviceError::Unavailable {
                        device: Device::Cuda(0),
                        source,
                    }),
                },
            }),
        }
    }
}

/// The backend a [`Device`] names, opened: what generic code runs on ([`SelectedBackend::run`]).
#[derive(Debug)]
pub enum SelectedBackend {
    /// The CPU backend.
    Cpu {
        /// For `auto`, why the GPU could not be used.
        fallback: Option<DeviceError>,
    },
    /// The CUDA backend of a GPU.
    Cuda(Cuda),
}

impl SelectedBackend {
    /// The device opened: `cpu` or `cuda:N`, never `auto`.
    pub fn device(&self) -> Device {
        match self {
            SelectedBackend::Cpu { .. } => Device::Cpu,
            SelectedBackend::Cuda(cuda) => Device::Cuda(cuda.ordinal()),
        }
    }

    /// Why `auto` chose the CPU; `None` when the device was opened as asked.
    pub fn fallback(&self) -> Option<&DeviceError> {
        match self {
            SelectedBackend::Cpu { fallback } => fallback.as_ref(),
            SelectedBackend::Cuda(_) => None,
        }
    }

    /// Runs `job` on the backend.
    pub fn run<J: OnBackend>(self, job: J) -> J::Output {
        match self {
            SelectedBackend::Cpu { .. } => job.run(Cpu::new()),
            SelectedBackend::Cuda(cuda) => job.run(cuda),
        }
    }
}

impl fmt::Display for SelectedBackend {
    /// `cpu`, or the GPU with its name and how its kernels were built.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectedBackend::Cpu { .. } => f.write_str("cpu"),
            SelectedBackend::Cuda(cuda) => write!(f, "{cuda}"),
        }
    }
}

/// Work written once, generic over the backend, that [`SelectedBackend::run`] runs on the
/// backend a device names.
pub trait OnBackend {
    /// What the work returns.
    type Output;
    /// Does the work on `backend`.
    fn run<B: Backend + 'static>(self, backend: B) -> Self::Output;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_spellings_round_trip() {
        for (text, want) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:0", Device::Cuda(0)),
            ("cuda:12", Device::Cuda(12)),
            ("auto", Device::Auto),
        ] {
            assert_eq!(text.parse::<Device>().unwrap(), want, "{text:?}");
        }
        for device in [Device::Cpu, Device::Cuda(2), Device::Auto] {
            assert_eq!(device.to_string().parse::<Device>().unwrap(), device);
        }
        assert_eq!(Device::default(), Device::Auto);
    }

    #[test]
    fn rejected_spellings_are_named() {
        for text in [
            "",
            "gpu",
            "CPU",
            " cpu",
            "cuda:",
            "cuda:x",
            "cuda:-1",
            "cuda:+1",
            "cuda0",
            "cpu:0",
            "cuda:99999999999999999999999",
        ] {
            let err = text.parse::<Device>().unwrap_err();
            assert!(
                matches!(&err, DeviceError::Unknown(t) if t == text),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("{text:?} is not a device: use \"cpu\", \"cuda\", \"cuda:N\" or \"auto\"")
            );
        }
    }

    #[test]
    fn serde_form_is_the_spelling() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Holder {
            device: Device,
        }
        let text = toml::to_string(&Holder {
            device: Device::Cuda(3),
        })
        .unwrap();
        assert_eq!(text.trim(), "device = \"cuda:3\"");
        assert_eq!(
            toml::from_str::<Holder>(&text).unwrap().device,
            Device::Cuda(3)
        );
        let err = toml::from_str::<Holder>("device = \"tpu\"").unwrap_err();
        assert!(err.to_string().contains("\"tpu\" is not a device"), "{err}");
    }

    #[test]
    fn the_cpu_always_opens() {
        let selected = Device::Cpu.open().unwrap();
        assert_eq!(selected.device(), Device::Cpu);
        assert!(selected.fallback().is_none());
        assert_eq!(selected.to_string(), "cpu");
        assert!(Device::Cpu.available() && Device::Auto.available());
    }

    /// On a machine without a usable GPU, `cuda` is an error that says why and `auto` falls back
    /// to the CPU with the same reason; with one, both open GPU 0.
    #[test]
    fn cuda_and_auto_follow_the_machine() {
        match Device::Cuda(0).open() {
            Ok(selected) => {
                assert_eq!(selected.device(), Device::Cuda(0));
                assert!(Device::Cuda(0).available());
                assert_eq!(Device::Auto.open().unwrap().device(), Device::Cuda(0));
                let absurd = Device::Cuda(10_000).open().unwrap_err();
                assert!(absurd.to_string().contains("cuda:10000"), "{absurd}");
            }
            Err(err) => {
                assert!(matches!(
                    err,
                    DeviceError::Unavailable {
                        device: Device::Cuda(0),
                        ..
                    }
                ));
                assert!(!Device::Cuda(0).available());
                let auto = Device::Auto.open().unwrap();
                assert_eq!(auto.device(), Device::Cpu);
                assert_eq!(
                    auto.fallback().map(ToString::to_string),
                    Some(err.to_string())
                );
            }
        }
        assert!(!Device::Cuda(10_000).available());
    }
}
