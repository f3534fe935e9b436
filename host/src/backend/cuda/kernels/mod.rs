//! The table of kernels — each one's file, entry name and parameter list — and the launch that
//! checks every argument against it.
//!
//! Kernel arguments cross into C untyped: a `usize` passed where the kernel declares `int`
//! shifts every later argument. Two checks close that gap. Every launch is checked by
//! `check_args`, which refuses an argument list whose kinds differ from the table; and the NVRTC
//! test (`host/tests/cuda_kernels.rs`) compiles every file to PTX and checks each entry's
//! parameter types against the same table. Together: the Rust call, the table and the `.cu`
//! signature agree, or a test fails.

use cudarc::driver::{LaunchArgs, LaunchConfig, PushKernelArg};

use super::compile::KERNEL_FILES;
use super::error::device_error;
use crate::backend::BackendResult;

/// The C type of one kernel parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// A device pointer (`float*`, `const unsigned*`, …).
    Ptr,
    /// `int`.
    I32,
    /// `long long`.
    I64,
    /// `float`.
    F32,
}

impl Param {
    /// The type NVRTC gives the parameter in PTX (`.param .u64 name_param_0`): pointers and
    /// 64-bit integers are `.u64`, `int` is `.u32`, `float` is `.f32`.
    pub fn ptx_type(self) -> &'static str {
        match self {
            Param::Ptr | Param::I64 => ".u64",
            Param::I32 => ".u32",
            Param::F32 => ".f32",
        }
    }
}

/// One kernel argument, typed as the kernel declares it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    /// A device address (0 for a null pointer).
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `long long`.
    I64(i64),
    /// `float`.
    F32(f32),
}

impl Arg {
    pub(crate) fn param(&self) -> Param {
        match self {
            Arg::Ptr(_) => Param::Ptr,
            Arg::I32(_) => Param::I32,
            Arg::I64(_) => Param::I64,
            Arg::F32(_) => Param::F32,
        }
    }
}

macro_rules! kernels {
    ($($(#[doc = $doc:literal])* $variant:ident = $file:literal : $name:literal ($($param:ident),*);)*) => {
        /// Every kernel of the CUDA backend.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kernel {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Kernel {
            /// All kernels, in table order.
            pub const ALL: &'static [Kernel] = &[$(Kernel::$variant),*];

            /// The `.cu` file that defines it.
            pub fn file(self) -> &'static str {
                match self { $(Kernel::$variant => $file,)* }
            }

            /// Its `extern "C"` entry name.
            pub fn name(self) -> &'static str {
                match self { $(Kernel::$variant => $name,)* }
            }

            /// Its parameters, in order.
            pub fn params(self) -> &'static [Param] {
                match self { $(Kernel::$variant => &[$(Param::$param),*],)* }
            }
        }
    };
}

kernels! {
    /// `out[s, t]` = context row or token embedding.
    PromptEmbed = "embed.cu": "prompt_embed"(Ptr, Ptr, Ptr, Ptr, Ptr, I32, I32, I32, I32);
    /// Context gradient: the sum over each set's sequences.
    PromptEmbedBackward = "embed.cu": "prompt_embed_backward"(Ptr, Ptr, Ptr, I32, I32, I32, I32, I32);
    /// Position embeddings added, sequence truncated.
    PositionEmbed = "embed.cu": "position_embed"(Ptr, Ptr, Ptr, I32, I32, I32, I32);
    /// Gradient of the position embedding: copy and zero-pad.
    PositionEmbedBackward = "embed.cu": "position_embed_backward"(Ptr, Ptr, I32, I32, I32, I32);
    /// Images to flattened patches.
    ExtractPatches = "embed.cu": "extract_patches"(Ptr, Ptr, I32, I32, I32, I32);
    /// ViT tokens: class token and patches plus positions.
    VitTokens = "embed.cu": "vit_tokens"(Ptr, Ptr, Ptr, Ptr, I32, I32, I32);
    /// One row per sequence.
    GatherRows = "embed.cu": "gather_rows"(Ptr, Ptr, Ptr, I32, I32, I32);
    /// Scatter of the gathered rows' gradient, zero elsewhere.
    GatherRowsBackward = "embed.cu": "gather_rows_backward"(Ptr, Ptr, Ptr, I32, I32, I32);
    /// A bias copied into every row.
    BroadcastRows = "embed.cu": "broadcast_rows"(Ptr, Ptr, I32, I32);
    /// LayerNorm forward with its statistics.
    LayerNormForward = "layer_norm.cu": "layer_norm_forward"(Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, I32, I32, F32);
    /// LayerNorm input gradient, accumulated.
    LayerNormBackward = "layer_norm.cu": "layer_norm_backward"(Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, I32, I32);
    /// Row softmax of attention scores, in place, optionally causal.
    SoftmaxForward = "attention.cu": "softmax_forward"(Ptr, I32, I32, I32);
    /// Softmax backward to the raw scores, in place.
    SoftmaxBackward = "attention.cu": "softmax_backward"(Ptr, Ptr, I32, I32, F32);
    /// Operand addresses of a two-axis batch of products, for `cublasGemmBatchedEx`.
    BatchPointers = "attention.cu": "batch_pointers"(Ptr, I32, I32, Ptr, I64, I64, Ptr, I64, I64, Ptr, I64, I64);
    /// QuickGELU.
    QuickGeluForward = "elementwise.cu": "quick_gelu_forward"(Ptr, Ptr, I64);
    /// QuickGELU gradient, in place.
    QuickGeluBackward = "elementwise.cu": "quick_gelu_backward"(Ptr, Ptr, I64);
    /// GELU with the exact normal CDF.
    GeluForward = "elementwise.cu": "gelu_forward"(Ptr, Ptr, I64);
    /// GELU gradient, in place.
    GeluBackward = "elementwise.cu": "gelu_backward"(Ptr, Ptr, I64);
    /// `acc += x`.
    AddAssign = "elementwise.cu": "add_assign"(Ptr, Ptr, I64);
    /// ReLU, in place.
    Relu = "elementwise.cu": "relu"(Ptr, I64);
    /// Channels-first images to channels-last maps.
    ToChannelsLast = "conv.cu": "to_channels_last"(Ptr, Ptr, I32, I32, I32);
    /// Rows of the im2col matrix of a convolution's input.
    Im2col = "conv.cu": "im2col"(Ptr, Ptr, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32);
    /// Inference batch-norm, in place.
    BatchNorm = "conv.cu": "batch_norm"(Ptr, Ptr, Ptr, Ptr, Ptr, I32, I32, F32);
    /// Average pooling over non-overlapping windows.
    AvgPool2d = "conv.cu": "avg_pool2d"(Ptr, Ptr, I32, I32, I32, I32, I32);
    /// The attention pool's tokens: the mean and every position, plus positions.
    AttentionPoolTokens = "conv.cu": "attention_pool_tokens"(Ptr, Ptr, Ptr, I32, I32, I32);
    /// Rows divided by their L2 norm, the norms kept.
    NormalizeRows = "ot.cu": "normalize_rows"(Ptr, Ptr, Ptr, I32, I32);
    /// Gradient through the row normalisation.
    NormalizeRowsBackward = "ot.cu": "normalize_rows_backward"(Ptr, Ptr, Ptr, Ptr, I32, I32);
    /// The batched OT solve: one plan and report per (image, class).
    OtPlans = "ot.cu": "ot_plans"(Ptr, Ptr, Ptr, I32, I32, I32, I32, F32, F32, F32, F32, I32, F32, I32, F32, F32, F32);
    /// The similarity each plan transports, scaled.
    OtLogits = "ot.cu": "ot_logits"(Ptr, Ptr, Ptr, I32, I32, I32, I32, F32);
    /// Gradient of the logits with respect to the similarities.
    OtLogitsBackward = "ot.cu": "ot_logits_backward"(Ptr, Ptr, Ptr, I32, I32, I32, I32, F32);
    /// Softmax cross-entropy, loss and gradient.
    CrossEntropy = "loss.cu": "cross_entropy"(Ptr, Ptr, Ptr, Ptr, I32, I32, F32);
}

impl Kernel {
    /// Index of its file in [`KERNEL_FILES`].
    pub(crate) fn file_index(self) -> usize {
        KERNEL_FILES
            .iter()
            .position(|f| f.name == self.file())
            .expect("every kernel's file is in KERNEL_FILES (checked by a unit test)")
    }
}

/// Threads per block of every kernel: 8 warps.
pub(crate) const BLOCK: u32 = 256;

/// Most blocks an element-wise grid uses; grid-stride loops cover the rest.
const MAX_GRID: usize = 1 << 16;

/// A grid-stride launch over `len` elements.
pub(crate) fn elementwise(len: usize) -> LaunchConfig {
    let blocks = len.div_ceil(BLOCK as usize).clamp(1, MAX_GRID);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row over `rows` rows.
pub(crate) fn warp_per_row(rows: usize) -> LaunchConfig {
    let warps = (BLOCK / 32) as usize;
    LaunchConfig {
        grid_dim: (rows.div_ceil(warps).max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Checks that `args` match `kernel`'s parameter list.
pub(crate) fn check_args(op: &'static str, kernel: Kernel, args: &[Arg]) -> BackendResult<()> {
    let kinds: Vec<Param> = args.iter().map(Arg::param).collect();
    if kinds != kernel.params() {
        return Err(device_error(
            op,
            format!(
                "kernel {} takes {:?} but was launched with {kinds:?}",
                kernel.name(),
                kernel.params()
            ),
        ));
    }
    Ok(())
}

/// Pushing a list of [`Arg`]s onto cudarc's launch builder.
pub(crate) trait PushArgs<'a> {
    /// Adds every argument, in order; they must outlive the launch.
    fn push_args(&mut self, args: &'a [Arg]);
}

impl<'a> PushArgs<'a> for LaunchArgs<'a> {
    fn push_args(&mut self, args: &'a [Arg]) {
        for arg in args {
            match arg {
                Arg::Ptr(p) => self.arg(p),
                Arg::I32(v) => self.arg(v),
                Arg::I64(v) => self.arg(v),
                Arg::F32(v) => self.arg(v),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_names_a_known_file_and_appears_in_it() {
        for &kernel in Kernel::ALL {
            let file = &KERNEL_FILES[kernel.file_index()];
            let entry = format!("void {}(", kernel.name());
            assert!(
                file.code.contains(&entry),
                "{} does not define {}",
                file.name,
                kernel.name()
            );
        }
    }
}
