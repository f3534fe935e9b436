//! How the CUDA backend multiplies `f32` matrices: a setting that exists in every build (the
//! benches and tests name it), also where the `cuda` feature is off.

use std::fmt;

/// How cuBLAS multiplies `f32` matrices. Buffers stay `f32` in every mode; the mode picks the
/// tensor-core input precision, always accumulating in `f32`.
///
/// The default is [`MathMode::Tf32`]: TF32 keeps `f32`'s range with a 10-bit mantissa, a
/// relative error of a few 1e-4 per product (docs/GPU.md has the measured figures) against
/// several times the speed of full `f32` on Ampere and later GPUs. The prompt-learning head's
/// products (similarities and their gradients) are always full `f32` whatever the mode: at
/// `eps = 0.01` an error of 1e-3 in a cosine is a 10 % error in its kernel entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MathMode {
    /// Full `f32` (`CUBLAS_COMPUTE_32F`): the most accurate, the slowest.
    F32,
    /// TF32 tensor cores (`CUBLAS_COMPUTE_32F_FAST_TF32`), `f32` accumulation.
    #[default]
    Tf32,
    /// BF16 tensor cores (`CUBLAS_COMPUTE_32F_FAST_16BF`), `f32` accumulation: the fastest, a
    /// relative error of a few 1e-3 per product.
    Bf16,
}

impl fmt::Display for MathMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MathMode::F32 => "f32",
            MathMode::Tf32 => "tf32",
            MathMode::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for MathMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(MathMode::F32),
            "tf32" => Ok(MathMode::Tf32),
            "bf16" => Ok(MathMode::Bf16),
            _ => Err(format!(
                "unknown math mode `{s}` (expected f32, tf32 or bf16)"
            )),
        }
    }
}
