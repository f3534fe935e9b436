//! Where the backend's work executes: the CUDA driver with cuBLAS — or, in this crate's own
//! tests, a host emulator that runs the same kernel sources and the same cuBLAS calls on the
//! CPU, so the backend's code is exercised end to end on machines without a GPU.
//!
//! Everything above this module (the [`Backend`](crate::backend::Backend) methods, the OT head)
//! talks to the device only through [`Engine`]: allocations, copies, kernel launches and
//! matrix products described as [`BlasCall`]s.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as cublas, sys as cublas_sys, CudaBlas};
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};

use super::error::{device_error, CudaError};
use super::kernels::{check_args, Arg, Kernel, PushArgs};
use super::MathMode;
use crate::backend::BackendResult;

/// The device the backend drives.
pub(crate) enum Engine {
    /// A CUDA GPU through the driver API and cuBLAS.
    Driver(Driver),
    /// The host emulator of the crate's tests.
    #[cfg(test)]
    Emulator(super::emulator::Emulator),
}

/// A CUDA GPU: one stream, one cuBLAS handle on it, and the loaded kernels.
pub(crate) struct Driver {
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    /// Indexed by [`Kernel`] discriminant.
    pub functions: Vec<CudaFunction>,
}

/// An allocation of the engine.
#[derive(Debug)]
pub(crate) enum DeviceMemory<T> {
    /// GPU memory.
    Driver(CudaSlice<T>),
    /// Host memory standing in for GPU memory in the emulator.
    #[cfg(test)]
    Host(super::emulator::HostMemory<T>),
}

/// One cuBLAS GEMM call, column-major as cuBLAS sees it: `C = alpha · op(A) · op(B) + beta · C`
/// for `count` matrices, addressed as [`Operands`] says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlasCall {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub lda: i32,
    pub ldb: i32,
    pub beta: f32,
    pub ldc: i32,
    pub count: i32,
    pub math: MathMode,
    pub operands: Operands,
}

/// Where a [`BlasCall`]'s matrices are.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operands {
    /// `cublasGemmStridedBatchedEx`: each operand's first matrix and the elements between
    /// consecutive ones.
    Strided(Strided),
    /// `cublasGemmBatchedEx`: the device addresses of three arrays of `count` matrix addresses
    /// (`u64`) each, for A, B and C.
    Arrays { a: u64, b: u64, c: u64 },
}

/// Operands at a base address and a stride each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided {
    pub a: u64,
    pub stride_a: i64,
    pub b: u64,
    pub stride_b: i64,
    pub c: u64,
    pub stride_c: i64,
}

impl MathMode {
    fn compute_type(self) -> cublas_sys::cublasComputeType_t {
        match self {
            MathMode::F32 => cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            MathMode::Tf32 => cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
            MathMode::Bf16 => cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
        }
    }
}

fn blas_op(transposed: bool) -> cublas_sys::cublasOperation_t {
    if transposed {
        cublas_sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        cublas_sys::cublasOperation_t::CUBLAS_OP_N
    }
}

impl Engine {
    /// `len` zeros (`len ≥ 1`: the driver refuses empty allocations).
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits + Copy + Default>(
        &self,
        op: &'static str,
        len: usize,
    ) -> BackendResult<DeviceMemory<T>> {
        match self {
            Engine::Driver(d) => d
                .stream
                .alloc_zeros::<T>(len)
                .map(DeviceMemory::Driver)
                .map_err(|e| device_error(op, e)),
            #[cfg(test)]
            Engine::Emulator(_) => Ok(DeviceMemory::Host(super::emulator::HostMemory::zeros(len))),
        }
    }

    /// A copy of `data` (non-empty).
    pub fn upload<T: DeviceRepr + Copy + Default>(
        &self,
        op: &'static str,
        data: &[T],
    ) -> BackendResult<DeviceMemory<T>> {
        match self {
            Engine::Driver(d) => d
                .stream
                .clone_htod(data)
                .map(DeviceMemory::Driver)
                .map_err(|e| device_error(op, e)),
            #[cfg(test)]
            Engine::Emulator(_) => Ok(DeviceMemory::Host(super::emulator::HostMemory::from(data))),
        }
    }

    /// The first `len ≥ 1` values, once every queued operation has finished.
    pub fn download<T: DeviceRepr + Copy + Default>(
        &self,
        op: &'static str,
        mem: &DeviceMemory<T>,
        len: usize,
    ) -> BackendResult<Vec<T>> {
        match (self, mem) {
            (Engine::Driver(d), DeviceMemory::Driver(slice)) => {
                let values = d
                    .stream
                    .clone_dtoh(&slice.slice(0..len))
                    .map_err(|e| device_error(op, e))?;
                d.stream.synchronize().map_err(|e| device_error(op, e))?;
                Ok(values)
            }
            #[cfg(test)]
            (Engine::Emulator(_), DeviceMemory::Host(host)) => Ok(host.read(len)),
            #[cfg(test)]
            _ => Err(foreign(op)),
        }
    }

    /// The address kernels and cuBLAS see for `mem`.
    pub fn address<T>(&self, mem: &DeviceMemory<T>) -> u64 {
        match (self, mem) {
            (Engine::Driver(d), DeviceMemory::Driver(slice)) => {
                // Event tracking is off for the backend's context (one stream), so the guard
                // this returns records nothing.
                let (ptr, _guard) = slice.device_ptr(&d.stream);
                ptr
            }
            #[cfg(test)]
            (_, DeviceMemory::Host(host)) => host.address(),
            #[cfg(test)]
            (Engine::Emulator(_), DeviceMemory::Driver(_)) => {
                unreachable!("GPU memory handed to the emulator")
            }
        }
    }

    /// Queues `kernel` with `args`, checked against its parameter list.
    pub fn launch(
        &self,
        op: &'static str,
        kernel: Kernel,
        config: LaunchConfig,
        args: &[Arg],
    ) -> BackendResult<()> {
        check_args(op, kernel, args)?;
        match self {
            Engine::Driver(d) => {
                let function = &d.functions[kernel as usize];
                let mut builder = d.stream.launch_builder(function);
                builder.push_args(args);
                // SAFETY: the arguments match the kernel's declared parameters (checked above,
                // and the table against the `.cu` source by the NVRTC test); every pointer is
                // a live buffer of this context that the op's front door (`backend::checks`)
                // found long enough for the dimensions passed with it.
                unsafe { builder.launch(config) }.map_err(|e| {
                    device_error(
                        op,
                        CudaError::library(format!("launching {}", kernel.name()), e),
                    )
                })?;
                Ok(())
            }
            #[cfg(test)]
            Engine::Emulator(emulator) => emulator.launch(op, kernel, config, args),
        }
    }

    /// Runs one cuBLAS call. The caller guarantees every element it addresses lies in a live
    /// allocation, and for [`Operands::Arrays`] that the arrays hold `count` addresses each
    /// (written by work queued before).
    pub fn blas(&self, op: &'static str, call: &BlasCall) -> BackendResult<()> {
        match self {
            Engine::Driver(d) => {
                d.stream
                    .context()
                    .bind_to_thread()
                    .map_err(|e| device_error(op, e))?;
                let f32_type = cublas_sys::cudaDataType_t::CUDA_R_32F;
                let (alpha, beta) = (
                    &call.alpha as *const f32 as *const c_void,
                    &call.beta as *const f32 as *const c_void,
                );
                let (trans_a, trans_b) = (blas_op(call.trans_a), blas_op(call.trans_b));
                let (compute, algo) = (
                    call.math.compute_type(),
                    cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                );
                let handle = *d.blas.handle();
                // SAFETY: the handle belongs to this stream and context (bound above); the
                // caller guarantees that every addressed element lies in a live allocation
                // (see this method's documentation); alpha and beta outlive the call, which
                // only queues the product.
                unsafe {
                    match call.operands {
                        Operands::Strided(s) => cublas::gemm_strided_batched_ex(
                            handle,
                            trans_a,
                            trans_b,
                            call.m,
                            call.n,
                            call.k,
                            alpha,
                            s.a as *const c_void,
                            f32_type,
                            call.lda,
                            s.stride_a,
                            s.b as *const c_void,
                            f32_type,
                            call.ldb,
                            s.stride_b,
                            beta,
                            s.c as *mut c_void,
                            f32_type,
                            call.ldc,
                            s.stride_c,
                            call.count,
                            compute,
                            algo,
                        ),
                        Operands::Arrays { a, b, c } => cublas_sys::cublasGemmBatchedEx(
                            handle,
                            trans_a,
                            trans_b,
                            call.m,
                            call.n,
                            call.k,
                            alpha,
                            a as *const *const c_void,
                            f32_type,
                            call.lda,
                            b as *const *const c_void,
                            f32_type,
                            call.ldb,
                            beta,
                            c as *const *mut c_void,
                            f32_type,
                            call.ldc,
                            call.count,
                            compute,
                            algo,
                        )
                        .result(),
                    }
                }
                .map_err(|e| device_error(op, CudaError::library("cuBLAS GEMM", e)))
            }
            #[cfg(test)]
            Engine::Emulator(_) => {
                // SAFETY: the caller guarantees the addresses as above (host memory here), and
                // C overlaps neither A nor B: every product writes a buffer (or temporary) that
                // its op holds apart from the inputs it reads.
                unsafe { super::emulator::blas_reference(call) }
                    .map_err(|e| device_error(op, format!("emulated cuBLAS GEMM: {e}")))
            }
        }
    }

    /// Waits for every queued operation.
    pub fn synchronize(&self, op: &'static str) -> BackendResult<()> {
        match self {
            Engine::Driver(d) => d.stream.synchronize().map_err(|e| device_error(op, e)),
            #[cfg(test)]
            Engine::Emulator(_) => Ok(()), // the emulator runs everything synchronously
        }
    }
}

#[cfg(test)]
fn foreign(op: &'static str) -> crate::backend::BackendError {
    device_error(op, "a buffer of another engine")
}
