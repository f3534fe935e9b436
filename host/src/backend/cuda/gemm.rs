//! Row-major matrix products through cuBLAS, in the math mode the backend was created with.
//!
//! cuBLAS is column-major; a row-major matrix is its transpose seen column-major, so the
//! row-major product `C = op(A)·op(B)` is computed as the column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ` —
//! the operands swapped, no data moved.
//!
//! Attention needs one product per (sequence, head) pair, each matrix at
//! `base + sequence·stride₀ + head·stride₁`. cuBLAS's strided-batched GEMM takes one stride,
//! so such a batch goes to `cublasGemmBatchedEx` instead, with arrays of every matrix's
//! address written on the device by a kernel: one call for all pairs. (Looping over the
//! shorter axis instead cost the text step 48 small calls per layer — 40 % of its GPU time on
//! an H200, at 5 µs a call for 12 × 12 × 64 products.)

use super::engine::{BlasCall, Operands, Strided};
use super::error::device_error;
use super::kernels::{elementwise, Arg, Kernel};
use super::{Cuda, MathMode};
use crate::backend::BackendResult;

/// One operand of a batch of row-major matrices: the device address of the first element of
/// matrix (0, 0), the distance between rows, and the distances between matrices along the two
/// batch axes — all in `f32` elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matrices {
    /// Device address of the first element.
    pub ptr: u64,
    /// Elements between consecutive rows (the leading dimension).
    pub ld: usize,
    /// Elements between consecutive matrices along the (outer, inner) batch axes.
    pub stride: (usize, usize),
}

impl Matrices {
    /// A single matrix.
    pub fn single(ptr: u64, ld: usize) -> Self {
        Matrices {
            ptr,
            ld,
            stride: (0, 0),
        }
    }
}

/// Shape of a batch of products `C (m×n) = op(A) (m×k) · op(B) (k×n)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemmShape {
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// `A` is stored `k × m` and used transposed.
    pub trans_a: bool,
    /// `B` is stored `n × k` and used transposed.
    pub trans_b: bool,
    /// Number of products along the (outer, inner) batch axes; `(1, 1)` for one product.
    pub batch: (usize, usize),
}

fn int(op: &'static str, what: &'static str, value: usize) -> BackendResult<i32> {
    i32::try_from(value).map_err(|_| {
        device_error(
            op,
            format!("GEMM {what} = {value} exceeds cuBLAS's 32-bit limit"),
        )
    })
}

impl Cuda {
    /// `C = alpha · op(A) · op(B) + beta · C` for every matrix of the batch, row-major, with
    /// `math`'s compute type (inputs and outputs stay `f32`). The caller (an op behind its
    /// front-door checks) guarantees that every operand's buffer holds the matrices the shape
    /// and strides address.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        op: &'static str,
        math: MathMode,
        shape: GemmShape,
        a: Matrices,
        b: Matrices,
        c: Matrices,
        alpha: f32,
        beta: f32,
    ) -> BackendResult<()> {
        let GemmShape { m, n, k, .. } = shape;
        let (outer, inner) = shape.batch;
        if m == 0 || n == 0 || outer == 0 || inner == 0 {
            return Ok(());
        }
        let (m_i, n_i, k_i) = (int(op, "m", m)?, int(op, "n", n)?, int(op, "k", k)?);
        let (lda, ldb, ldc) = (
            int(op, "lda", a.ld)?,
            int(op, "ldb", b.ld)?,
            int(op, "ldc", c.ld)?,
        );
        let count = int(op, "batch", outer * inner)?;
        // Column-major Cᵀ (n×m) = op(B)ᵀ (n×k) · op(A)ᵀ (k×m): B's storage is the first cuBLAS
        // operand, A's the second.
        let mut address_arrays = None;
        let operands = if outer > 1 && inner > 1 {
            // Three arrays of `count` addresses, written on the device, kept until the call is
            // queued and then freed in stream order.
            let arrays = self.engine.alloc_zeros::<u64>(op, 3 * outer * inner)?;
            let base = self.engine.address(&arrays);
            let operand = |x: Matrices| {
                [
                    Arg::Ptr(x.ptr),
                    Arg::I64(x.stride.0 as i64),
                    Arg::I64(x.stride.1 as i64),
                ]
            };
            let mut args = vec![
                Arg::Ptr(base),
                Arg::I32(count),
                Arg::I32(int(op, "batch", inner)?),
            ];
            args.extend(operand(b));
            args.extend(operand(a));
            args.extend(operand(c));
            self.engine
                .launch(op, Kernel::BatchPointers, elementwise(outer * inner), &args)?;
            address_arrays = Some(arrays);
            let array = |index: u64| base + index * 8 * (outer * inner) as u64;
            Operands::Arrays {
                a: array(0),
                b: array(1),
                c: array(2),
            }
        } else {
            // At most one batch axis longer than one: a strided batch along it.
            let stride = |x: Matrices| {
                if inner > 1 {
                    x.stride.1 as i64
                } else {
                    x.stride.0 as i64
                }
            };
            Operands::Strided(Strided {
                a: b.ptr,
                stride_a: stride(b),
                b: a.ptr,
                stride_b: stride(a),
                c: c.ptr,
                stride_c: stride(c),
            })
        };
        let call = BlasCall {
            trans_a: shape.trans_b,
            trans_b: shape.trans_a,
            m: n_i,
            n: m_i,
            k: k_i,
            alpha,
            lda: ldb,
            ldb: lda,
            beta,
            ldc,
            count,
            math,
            operands,
        };
        self.engine.blas(op, &call)?;
        drop(address_arrays);
        Ok(())
    }
}
