//! The CUDA backend: buffers in GPU memory, matrix products in cuBLAS, every other layer a CUDA C
//! kernel compiled at run time by NVRTC.
//!
//! - **Libraries at run time.** The driver, cuBLAS and NVRTC are opened when a [`Cuda`] is
//!   created, never at build time; [`Cuda::new`] first checks each can be loaded and names the
//!   missing ones ([`CudaError::MissingLibraries`]). [`super::device`] opens the backend a
//!   device name asks for.
//! - **Kernels.** The `.cu` files under `host/src/backend/cuda/kernels/` are compiled by NVRTC for
//!   the GPU's own architecture (machine code, no driver JIT) on first use in a process and
//!   cached for the rest of it; the table in [`kernels`] lists each kernel with its parameters.
//! - **Matrix products.** cuBLAS, f32 in and out, with the compute type of the [`MathMode`]:
//!   TF32 tensor cores by default. Attention's per-head products are strided-batched GEMMs around
//!   a softmax kernel.
//! - **One stream.** Every operation is queued on the backend's own stream, in call order; a
//!   download waits for the stream. Temporaries come from the driver's stream-ordered pool.
//! - **One backend per GPU, taking turns.** [`Cuda::shared`] gives every caller in the process
//!   the same backend of a GPU — one stream, one cuBLAS handle, the kernels loaded once — and
//!   [`Backend::take_turn`](super::Backend::take_turn) lets its callers compute one at a time.
//! - **The ResNet layers** (RN50 image tower): channels-last maps; a convolution is an im2col
//!   kernel and one cuBLAS GEMM (a 1×1 convolution only the GEMM), batch-norm, ReLU, pooling and
//!   the attention pool's tokens are kernels.
//! - **The prompt-learning head** (normalisation, similarity products, FedOTP's batched OT solve
//!   — the core's solver, one warp per problem — its logits and the cross-entropy) runs on the
//!   GPU too; its similarity products are always full `f32` (see [`MathMode`]).
//!
//! ```no_run
//! use fedotp_host::backend::{Activation, Backend, Cuda, MathMode};
//!
//! let gpu = Cuda::with_math(0, MathMode::F32)?;
//! println!("{}", gpu.info());
//! let x = gpu.upload(&[1.0, 2.0, 3.0])?;
//! let mut y = gpu.alloc(3)?;
//! gpu.activation(Activation::Gelu, &mut y, &x, 3)?;
//! assert_eq!(gpu.download(&y, 3)?.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compile;
mod conv;
#[cfg(any(test, feature = "kernel-emulator"))]
#[doc(hidden)]
pub mod emulator;
mod engine;
mod error;
mod gemm;
mod head;
pub mod kernels;
mod libs;
mod ops;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, LaunchConfig};
use cudarc::nvrtc::Ptx;

pub use super::MathMode;
pub use compile::{
    compile, compiled_kernel_files, nvrtc_version, supported_architectures, target_for,
    ComputeCapability, KernelFile, ModuleImage, Target, KERNEL_FILES,
};
pub use error::CudaError;
pub use libs::{missing_libraries, CudaLibrary};

use self::engine::{DeviceMemory, Driver, Engine};
use self::kernels::{Arg, Kernel};
use super::BackendResult;

/// What the backend runs on.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Device ordinal (`cuda:N`).
    pub ordinal: usize,
    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Its compute capability.
    pub compute_capability: ComputeCapability,
    /// Its memory in bytes.
    pub memory_bytes: usize,
    /// What NVRTC compiled the kernels for.
    pub target: Target,
    /// NVRTC's version.
    pub nvrtc: (i32, i32),
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cuda:{} {} (compute {}, {:.1} GiB, kernels {} by NVRTC {}.{})",
            self.ordinal,
            self.name,
            self.compute_capability,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.target,
            self.nvrtc.0,
            self.nvrtc.1
        )
    }
}

/// A buffer of `f32` values in GPU memory: [`Cuda`]'s [`Backend::Buf`](super::Backend::Buf).
#[derive(Debug)]
pub struct CudaBuf {
    /// The allocation; at least one element, because the driver refuses empty allocations.
    mem: DeviceMemory<f32>,
    /// Number of values the buffer holds.
    len: usize,
}

impl CudaBuf {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Runs every layer on one CUDA GPU. See the [module documentation](self).
///
/// A clone is the same backend — the same stream, cuBLAS handle and turn — not a second one.
#[derive(Clone)]
pub struct Cuda {
    engine: Arc<Engine>,
    /// Held by the caller whose turn it is ([`Backend::take_turn`](super::Backend::take_turn)):
    /// the stream and the cuBLAS handle serve one caller at a time.
    turn: Arc<Mutex<()>>,
    math: MathMode,
    info: DeviceInfo,
}

impl fmt::Display for Cuda {
    /// The device with its name and how the kernels were built for it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.info.fmt(f)
    }
}

impl fmt::Debug for Cuda {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cuda")
            .field("info", &self.info)
            .field("math", &self.math)
            .finish_non_exhaustive()
    }
}

/// Checks that the driver, cuBLAS and NVRTC can be loaded — before any call into them, since
/// cudarc panics on a missing library.
fn require_libraries() -> Result<(), CudaError> {
    let missing = missing_libraries(&CudaLibrary::ALL);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CudaError::MissingLibraries(missing))
    }
}

/// Checks that the driver's CUDA release is at least NVRTC's: machine code from a newer major
/// release does not load, and the driver would lack functions cudarc's bindings expect.
fn require_driver_for_nvrtc() -> Result<(), CudaError> {
    let mut version = 0;
    // SAFETY: an out-pointer to a live integer; cuDriverGetVersion needs no initialisation.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| CudaError::library("reading the driver version", e))?;
    let (major, minor) = nvrtc_version()?;
    if version / 1000 < major {
        return Err(CudaError::DriverTooOld {
            driver: format!("{}.{}", version / 1000, version % 1000 / 10),
            nvrtc: format!("{major}.{minor}"),
        });
    }
    Ok(())
}

impl Cuda {
    /// The backend on device `ordinal`, with TF32 matrix products ([`MathMode::default`]).
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        Self::with_math(ordinal, MathMode::default())
    }

    /// Number of CUDA devices, or why there are none usable (a missing library, no driver, no
    /// device).
    pub fn device_count() -> Result<usize, CudaError> {
        require_libraries()?;
        require_driver_for_nvrtc()?;
        let count = CudaContext::device_count().map_err(|e| CudaError::NoDevice(e.into()))?;
        if count <= 0 {
            return Err(CudaError::NoDevice(
                "the driver reports no CUDA device".into(),
            ));
        }
        Ok(count as usize)
    }

    /// The backend on device `ordinal` with matrix products in `math`. Compiles the kernels
    /// (once per process and architecture) and loads them.
    pub fn with_math(ordinal: usize, math: MathMode) -> Result<Self, CudaError> {
        let count = Self::device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoSuchDevice {
                requested: ordinal,
                count,
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::NoDevice(e.into()))?;
        // One stream: every operation is ordered by it, so cudarc's per-buffer events (for
        // synchronising several streams) would be pure overhead. Off before any allocation.
        // SAFETY: no buffer of this context exists yet, and all work goes to one stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| CudaError::library("creating a stream", e))?;
        keep_pool_memory(&ctx)?;

        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| CudaError::library("reading the compute capability", e))?;
        let compute_capability = ComputeCapability {
            major: major as u32,
            minor: minor as u32,
        };
        let target = target_for(compute_capability)?;
        let images = compiled_kernel_files(target)?;
        let modules = images
            .iter()
            .map(|image| {
                let ptx = match image {
                    ModuleImage::Cubin(bytes) => Ptx::from_binary(bytes.clone()),
                    ModuleImage::Ptx(text) => Ptx::from_src(text.clone()),
                };
                ctx.load_module(ptx)
                    .map_err(|e| CudaError::library("loading the compiled kernels", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let functions = Kernel::ALL
            .iter()
            .map(|k| {
                modules[k.file_index()]
                    .load_function(k.name())
                    .map_err(|e| CudaError::library("finding a kernel in its module", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| CudaError::library("creating cuBLAS", e))?;
        let info = DeviceInfo {
            ordinal,
            name: ctx
                .name()
                .map_err(|e| CudaError::library("reading the device name", e))?,
            compute_capability,
            memory_bytes: ctx
                .total_mem()
                .map_err(|e| CudaError::library("reading the device memory", e))?,
            target,
            nvrtc: nvrtc_version()?,
        };
        Ok(Cuda::on_engine(
            Engine::Driver(Driver {
                stream,
                blas,
                functions,
            }),
            math,
            info,
        ))
    }

    /// A backend of its own on `engine`, with its own turn.
    fn on_engine(engine: Engine, math: MathMode, info: DeviceInfo) -> Self {
        Cuda {
            engine: Arc::new(engine),
            turn: Arc::new(Mutex::new(())),
            math,
            info,
        }
    }

    /// The process's backend on device `ordinal` (TF32 products, [`MathMode::default`]), made
    /// by the first caller and shared by every later one: all clients of a GPU in a process use
    /// one stream and one cuBLAS handle and take turns on them
    /// ([`Backend::take_turn`](super::Backend::take_turn)). It lives as long as the process. A
    /// device that cannot be opened is an error for this caller; the next one tries again.
    pub fn shared(ordinal: usize) -> Result<Self, CudaError> {
        static OPENED: Mutex<Vec<Cuda>> = Mutex::new(Vec::new());
        // A poisoned lock only means a panic while opening; the list itself is consistent.
        let mut opened = OPENED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cuda) = opened.iter().find(|cuda| cuda.info.ordinal == ordinal) {
            return Ok(cuda.clone());
        }
        let cuda = Cuda::new(ordinal)?;
        opened.push(cuda.clone());
        Ok(cuda)
    }

    /// The device's ordinal, the N of `cuda:N`.
    pub fn ordinal(&self) -> usize {
        self.info.ordinal
    }

    /// The device and how the kernels were built for it.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The math mode of the matrix products.
    pub fn math(&self) -> MathMode {
        self.math
    }

    /// Waits until every queued operation has finished (for timing; downloads wait anyway).
    pub fn synchronize(&self) -> BackendResult<()> {
        self.engine.synchronize("synchronize")
    }

    /// Queues `kernel` with `args` (checked against its parameter list).
    fn launch(
        &self,
        op: &'static str,
        kernel: Kernel,
        config: LaunchConfig,
        args: &[Arg],
    ) -> BackendResult<()> {
        self.engine.launch(op, kernel, config, args)
    }

    /// The device address of an allocation, as kernels and cuBLAS take it.
    fn address<T>(&self, mem: &DeviceMemory<T>) -> u64 {
        self.engine.address(mem)
    }

    /// A buffer's device address as a kernel argument.
    fn ptr(&self, buf: &CudaBuf) -> Arg {
        Arg::Ptr(self.address(&buf.mem))
    }

    /// An index array's device address as a kernel argument.
    fn index_ptr(&self, indices: &DeviceMemory<u32>) -> Arg {
        Arg::Ptr(self.address(indices))
    }

    /// Copies a small host index array (token ids, positions, labels) to the device. The copy
    /// is freed, in stream order, after the kernels that use it.
    fn upload_indices(&self, op: &'static str, values: &[u32]) -> BackendResult<DeviceMemory<u32>> {
        // The driver refuses empty allocations; an empty array is never read.
        self.engine
            .upload(op, if values.is_empty() { &[0] } else { values })
    }
}

/// Keeps freed memory in the driver's stream-ordered pool instead of returning it to the device
/// at every synchronisation, so the per-call temporaries of the layers cost no allocation after
/// the first step.
fn keep_pool_memory(ctx: &Arc<CudaContext>) -> Result<(), CudaError> {
    use cudarc::driver::sys;
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let mut pool = std::ptr::null_mut();
    let threshold: u64 = u64::MAX;
    // SAFETY: out-pointer to a live pool handle; the attribute takes a pointer to a u64.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
            .result()
            .map_err(|e| CudaError::library("reading the memory pool", e))?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &threshold as *const u64 as *mut std::ffi::c_void,
        )
        .result()
        .map_err(|e| CudaError::library("configuring the memory pool", e))?;
    }
    Ok(())
}
