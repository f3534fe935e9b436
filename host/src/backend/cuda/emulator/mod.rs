//! The kernel emulator of the tests: the CUDA backend's own code — argument checks, launches,
//! cuBLAS calls, every kernel source — run on the CPU, so a machine without a GPU (CI) still
//! executes all of it and compares it with the CPU backend.
//!
//! Compiled into this crate's unit tests and, for the test kit's parity suite
//! (`tests/tests/cuda_emulated.rs`), into builds with the `kernel-emulator` feature, which only
//! the kit's dev-dependency enables: [`for_test`] is not part of the library's interface.
//!
//! - **Kernels** are compiled by the host C++ compiler (`$CXX`, else `c++`) after
//!   [`runtime.h`](runtime.h), which emulates the CUDA built-ins: a warp's 32 lanes are fibers
//!   that meet at every shuffle, vote and `__syncwarp`, in a new random order every round, and
//!   lanes that reach different built-ins are reported as divergence. One shared library per
//!   kernel file, compiled once per process and loaded with `libloading`.
//! - **cuBLAS calls** (`BlasCall`) run through `blas_reference`, a column-major GEMM with
//!   cuBLAS's argument conventions, its inputs rounded to TF32 or BF16 as the math mode asks.
//! - **Memory** is host memory (`HostMemory`) whose address the kernels receive as a device
//!   pointer.
//!
//! What it cannot show: timing, the driver and cuBLAS themselves, NVRTC's code generation and
//! real concurrency between warps. The GPU parity suite (`tests/tests/cuda_parity.rs`) runs the
//! same cases on a GPU.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::LaunchConfig;
use rayon::prelude::*;

use super::compile::{ComputeCapability, Target, COMMON, KERNEL_FILES};
use super::engine::{BlasCall, Engine, Operands, Strided};
use super::error::device_error;
use super::kernels::{Arg, Kernel};
use super::{Cuda, DeviceInfo, MathMode};
use crate::backend::{BackendError, BackendResult};

/// The CUDA built-ins on the host.
const RUNTIME: &str = include_str!("runtime.h");

/// Host memory standing in for a device allocation: owned through a raw pointer, because
/// kernels write through addresses taken from shared references, as on a GPU.
pub(crate) struct HostMemory<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the allocation is owned like a `Box<[T]>` (freed only on drop), so moving it to
// another thread moves its values, which `T: Send` allows.
unsafe impl<T: Send> Send for HostMemory<T> {}
// SAFETY: `&HostMemory` gives no access to the values except through emulated kernels, GEMMs
// and copies, which run synchronously on the calling thread inside the backend's calls — never
// two at once on one allocation — so shared references across threads are as sound as `&[T]`.
unsafe impl<T: Sync> Sync for HostMemory<T> {}

/// Every live host allocation, `start address → length in bytes`: the GEMM reference checks
/// that each call stays inside one, as cuBLAS on a GPU would fault.
fn allocations() -> &'static Mutex<BTreeMap<u64, u64>> {
    static ALLOCATIONS: OnceLock<Mutex<BTreeMap<u64, u64>>> = OnceLock::new();
    ALLOCATIONS.get_or_init(Default::default)
}

/// Whether bytes `[start, end)` lie inside one live allocation.
fn allocated(start: u64, end: u64) -> bool {
    let map = allocations().lock().unwrap_or_else(|p| p.into_inner());
    map.range(..=start)
        .next_back()
        .is_some_and(|(&base, &len)| end <= base + len)
}

impl<T: Copy + Default> HostMemory<T> {
    /// `len ≥ 1` default (zero) values.
    pub fn zeros(len: usize) -> Self {
        Self::from(&vec![T::default(); len][..])
    }

    /// A copy of `data`.
    pub fn from(data: &[T]) -> Self {
        let boxed: Box<[T]> = data.into();
        let len = boxed.len();
        let ptr = Box::into_raw(boxed) as *mut T;
        allocations()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ptr as u64, (len * std::mem::size_of::<T>()) as u64);
        HostMemory { ptr, len }
    }

    /// The first `len` values.
    pub fn read(&self, len: usize) -> Vec<T> {
        assert!(len <= self.len, "read past a host allocation");
        // SAFETY: `ptr` holds `self.len ≥ len` initialised values; no kernel runs concurrently.
        unsafe { std::slice::from_raw_parts(self.ptr, len) }.to_vec()
    }
}

impl<T> HostMemory<T> {
    /// The address kernels receive.
    pub fn address(&self) -> u64 {
        self.ptr as u64
    }
}

impl<T> Drop for HostMemory<T> {
    fn drop(&mut self) {
        allocations()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(self.ptr as u64));
        // SAFETY: `ptr` and `len` came from `Box::into_raw` of a boxed slice of `len` values.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

impl<T> std::fmt::Debug for HostMemory<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostMemory({} values at {:p})", self.len, self.ptr)
    }
}

/// An emulated kernel: `(grid, block, shared bytes, argument pointers) -> status`.
type EmulatedKernel = unsafe extern "C" fn(u32, u32, u32, *const *const c_void) -> i32;

/// The compiled kernel libraries and their entry points, indexed by [`Kernel`] discriminant.
struct CompiledKernels {
    functions: Vec<EmulatedKernel>,
    /// Kept loaded for the life of the process.
    _libraries: Vec<libloading::Library>,
}

/// Why the emulator cannot run.
#[derive(Debug)]
pub(crate) enum EmulatorError {
    /// No C++ compiler: the emulated tests are skipped (CI requires them).
    Unavailable(String),
    /// The kernels do not compile or load on the host: a failure.
    Failed(String),
}

/// Runs the kernels on the calling thread (see the module documentation).
pub(crate) struct Emulator {
    kernels: Arc<CompiledKernels>,
}

impl Emulator {
    /// The emulator, compiling the kernels on first use in the process.
    fn new() -> Result<Self, EmulatorError> {
        static KERNELS: OnceLock<Result<Arc<CompiledKernels>, String>> = OnceLock::new();
        let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        if Command::new(&compiler).arg("--version").output().is_err() {
            return Err(EmulatorError::Unavailable(format!(
                "no C++ compiler `{compiler}` to build the kernel emulator (set CXX)"
            )));
        }
        match KERNELS.get_or_init(|| compile_kernels(&compiler).map(Arc::new)) {
            Ok(kernels) => Ok(Emulator {
                kernels: kernels.clone(),
            }),
            Err(e) => Err(EmulatorError::Failed(e.clone())),
        }
    }

    /// Runs `kernel` to completion.
    pub fn launch(
        &self,
        op: &'static str,
        kernel: Kernel,
        config: LaunchConfig,
        args: &[Arg],
    ) -> BackendResult<()> {
        let values: Vec<*const c_void> = args
            .iter()
            .map(|arg| match arg {
                Arg::Ptr(p) => p as *const u64 as *const c_void,
                Arg::I32(v) => v as *const i32 as *const c_void,
                Arg::I64(v) => v as *const i64 as *const c_void,
                Arg::F32(v) => v as *const f32 as *const c_void,
            })
            .collect();
        let (grid, block) = (config.grid_dim, config.block_dim);
        if (grid.1, grid.2, block.1, block.2) != (1, 1, 1, 1) {
            return Err(emulator_error(op, kernel, "only 1-D grids are emulated"));
        }
        let function = self.kernels.functions[kernel as usize];
        // SAFETY: `values` points at one value per parameter, typed as the kernel declares them
        // (checked by the engine), alive for the call; the pointers among them address host
        // allocations that the op's front door (`backend::checks`) found long enough for the
        // dimensions passed with them.
        let status = unsafe { function(grid.0, block.0, config.shared_mem_bytes, values.as_ptr()) };
        match status {
            0 => Ok(()),
            1 => Err(emulator_error(
                op,
                kernel,
                "warp divergence: lanes reached different warp-synchronous built-ins",
            )),
            _ => Err(emulator_error(op, kernel, "invalid launch configuration")),
        }
    }
}

fn emulator_error(op: &'static str, kernel: Kernel, what: &str) -> BackendError {
    device_error(op, format!("emulated {}: {what}", kernel.name()))
}

/// Compiles one shared library per kernel file and resolves every kernel's entry.
fn compile_kernels(compiler: &str) -> Result<CompiledKernels, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("emulator temp dir: {e}"))?;
    let libraries: Vec<libloading::Library> = KERNEL_FILES
        .par_iter()
        .map(|file| {
            let stem = file.name.trim_end_matches(".cu");
            let source = dir.path().join(format!("{stem}.cpp"));
            let library = dir.path().join(format!("lib{stem}.so"));
            let entries: String = Kernel::ALL
                .iter()
                .filter(|k| k.file() == file.name)
                .map(|k| format!("EMULATE({})\n", k.name()))
                .collect();
            let text = format!(
                "{RUNTIME}\n{COMMON}\n#line 1 \"{}\"\n{}\n{entries}",
                file.name, file.code
            );
            std::fs::write(&source, text).map_err(|e| format!("writing {source:?}: {e}"))?;
            let output = Command::new(compiler)
                // No _FORTIFY_SOURCE: its longjmp check refuses jumps between the lanes' stacks.
                .args([
                    "-std=c++17",
                    "-O2",
                    "-shared",
                    "-fPIC",
                    "-U_FORTIFY_SOURCE",
                    "-o",
                ])
                .arg(&library)
                .arg(&source)
                .output()
                .map_err(|e| format!("running {compiler}: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "{compiler} failed on {}:\n{}",
                    file.name,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            // SAFETY: a library we just built from the kernel sources; its initialisers only
            // set up thread-local storage.
            unsafe { libloading::Library::new(&library) }
                .map_err(|e| format!("loading {library:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let functions = Kernel::ALL
        .iter()
        .map(|k| {
            let symbol = format!("emulated_{}", k.name());
            // SAFETY: every entry is defined by EMULATE with this signature.
            unsafe {
                libraries[k.file_index()]
                    .get::<EmulatedKernel>(symbol.as_bytes())
                    .map(|f| *f)
                    .map_err(|e| format!("{symbol}: {e}"))
            }
        })
        .collect::<Result<_, _>>()?;
    // The libraries stay mapped after their files are deleted with `dir`.
    Ok(CompiledKernels {
        functions,
        _libraries: libraries,
    })
}

/// Rounds `x` to the nearest value with `bits` mantissa bits (ties to even), as a tensor core
/// reads an `f32` input in TF32 (10 bits) or BF16 (7 bits).
fn round_mantissa(x: f32, bits: u32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let drop = 23 - bits;
    let raw = x.to_bits();
    let half = (1u32 << (drop - 1)) - 1 + ((raw >> drop) & 1);
    f32::from_bits((raw.wrapping_add(half)) & !((1u32 << drop) - 1))
}

/// A cuBLAS GEMM call on host memory: column-major, `op(X)` the transpose when asked, `C` not
/// read when `beta = 0`, products accumulated in `f64` from inputs rounded as the math mode's
/// tensor cores would. Refuses what cuBLAS refuses (`CUBLAS_STATUS_INVALID_VALUE`): negative
/// sizes, leading dimensions shorter than a column. Pointer arrays
/// ([`Operands::Arrays`]) must lie in live allocations; each of their entries is then one
/// single-matrix strided call.
///
/// # Safety
/// Every element the call addresses must lie in live host memory, and `C` must not overlap
/// `A` or `B`.
pub(crate) unsafe fn blas_reference(call: &BlasCall) -> Result<(), String> {
    let (a, b, c) = match call.operands {
        // SAFETY: the caller's guarantee for `call` is the one `strided_reference` needs.
        Operands::Strided(strided) => return unsafe { strided_reference(call, strided) },
        Operands::Arrays { a, b, c } => (a, b, c),
    };
    if call.count < 0 {
        return Err(format!("negative batch in {call:?}"));
    }
    let count = call.count as usize;
    for (name, array) in [("A", a), ("B", b), ("C", c)] {
        if count > 0 && !allocated(array, array + 8 * count as u64) {
            return Err(format!(
                "the array of {name} addresses reaches outside its allocation in {call:?}"
            ));
        }
    }
    // SAFETY: called for `i < count` only, on arrays that `allocated` found to hold `count`
    // addresses in one live allocation.
    let read = |array: u64, i: usize| unsafe { *(array as *const u64).add(i) };
    for i in 0..count {
        let entry = BlasCall {
            count: 1,
            operands: Operands::Strided(Strided {
                a: read(a, i),
                stride_a: 0,
                b: read(b, i),
                stride_b: 0,
                c: read(c, i),
                stride_c: 0,
            }),
            ..*call
        };
        // SAFETY: the entry addresses one matrix of the caller's call, which the caller
        // guarantees lies in live memory, `C` apart from `A` and `B`.
        unsafe { blas_reference(&entry) }.map_err(|e| format!("entry {i}: {e}"))?;
    }
    Ok(())
}

/// [`blas_reference`] for operands at a base and a stride each.
unsafe fn strided_reference(call: &BlasCall, operands: Strided) -> Result<(), String> {
    let Strided {
        a,
        stride_a,
        b,
        stride_b,
        c,
        stride_c,
    } = operands;
    let (rows_a, rows_b) = (
        if call.trans_a { call.k } else { call.m },
        if call.trans_b { call.n } else { call.k },
    );
    if call.m < 0 || call.n < 0 || call.k < 0 || call.count < 0 {
        return Err(format!("negative size in {call:?}"));
    }
    if call.lda < rows_a.max(1) || call.ldb < rows_b.max(1) || call.ldc < call.m.max(1) {
        return Err(format!("leading dimension too short in {call:?}"));
    }
    if call.m == 0 || call.n == 0 || call.count == 0 {
        return Ok(());
    }
    // The span each operand addresses: `cols` columns of `rows` elements, `ld` apart, for every
    // matrix of the batch.
    let span = |ptr: u64, rows: i32, cols: i32, ld: i32, stride: i64| {
        let last =
            (cols as i64 - 1) * ld as i64 + rows as i64 - 1 + (call.count as i64 - 1) * stride;
        (ptr, ptr + 4 * (last as u64 + 1))
    };
    let (cols_a, cols_b) = (
        if call.trans_a { call.m } else { call.k },
        if call.trans_b { call.k } else { call.n },
    );
    for (name, (start, end)) in [
        ("A", span(a, rows_a, cols_a, call.lda, stride_a)),
        ("B", span(b, rows_b, cols_b, call.ldb, stride_b)),
        ("C", span(c, call.m, call.n, call.ldc, stride_c)),
    ] {
        // A and B are not read when k = 0.
        if (call.k > 0 || name == "C") && !allocated(start, end) {
            return Err(format!(
                "operand {name} reaches outside its allocation in {call:?}"
            ));
        }
    }
    let round = |x: f32| match call.math {
        MathMode::F32 => x,
        MathMode::Tf32 => round_mantissa(x, 10),
        MathMode::Bf16 => round_mantissa(x, 7),
    };
    let (m, n, k) = (call.m as isize, call.n as isize, call.k as isize);
    let (lda, ldb, ldc) = (call.lda as isize, call.ldb as isize, call.ldc as isize);
    // SAFETY: the span checks above found every element that the call addresses in A, B and C
    // inside a live allocation, and the caller guarantees that C overlaps neither A nor B; the
    // emulator runs synchronously, so nothing else touches the memory during the call.
    unsafe {
        for batch in 0..call.count as isize {
            let a = (a as *const f32).offset(batch * stride_a as isize);
            let b = (b as *const f32).offset(batch * stride_b as isize);
            let c = (c as *mut f32).offset(batch * stride_c as isize);
            let a_at = |i: isize, p: isize| {
                round(if call.trans_a {
                    *a.offset(p + i * lda)
                } else {
                    *a.offset(i + p * lda)
                })
            };
            let b_at = |p: isize, j: isize| {
                round(if call.trans_b {
                    *b.offset(j + p * ldb)
                } else {
                    *b.offset(p + j * ldb)
                })
            };
            for j in 0..n {
                for i in 0..m {
                    let sum: f64 = (0..k).map(|p| a_at(i, p) as f64 * b_at(p, j) as f64).sum();
                    let out = c.offset(i + j * ldc);
                    let product = call.alpha as f64 * sum;
                    *out = if call.beta == 0.0 {
                        product as f32
                    } else {
                        (product + call.beta as f64 * *out as f64) as f32
                    };
                }
            }
        }
    }
    Ok(())
}

impl Cuda {
    /// The CUDA backend on the kernel emulator, with matrix products rounded as `math` asks.
    pub(crate) fn emulated(math: MathMode) -> Result<Cuda, EmulatorError> {
        Ok(Cuda::on_engine(
            Engine::Emulator(Emulator::new()?),
            math,
            DeviceInfo {
                ordinal: 0,
                name: "kernel emulator (host)".into(),
                compute_capability: ComputeCapability { major: 0, minor: 0 },
                memory_bytes: 0,
                target: Target::Ptx(ComputeCapability { major: 0, minor: 0 }),
                nvrtc: (0, 0),
            },
        ))
    }
}

/// The emulated backend for the test named `test`, or `None` after printing on stderr why it
/// cannot run (no C++ compiler): the test is then skipped, unless `FEDOTP_REQUIRE_KERNEL_CHECKS=1`
/// (as CI sets) makes that a failure. Kernels that do not compile are always a failure.
pub fn for_test(math: MathMode, test: &str) -> Option<Cuda> {
    match Cuda::emulated(math) {
        Ok(gpu) => Some(gpu),
        Err(EmulatorError::Failed(why)) => panic!("the kernel emulator failed: {why}"),
        Err(EmulatorError::Unavailable(why)) => {
            if std::env::var("FEDOTP_REQUIRE_KERNEL_CHECKS").is_ok_and(|v| v == "1") {
                panic!("FEDOTP_REQUIRE_KERNEL_CHECKS=1 but {why}");
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            None
        }
    }
}

#[cfg(test)]
mod tests;
