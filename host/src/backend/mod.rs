//! Compute backends: the seam between the CLIP model code and the hardware it runs on.
//!
//! The model code ([`crate::clip`]) is written once, generic over [`Backend`]: it holds its
//! weights and activations in the backend's buffer type ([`Backend::Buf`]) and calls one method
//! per layer, in the manner of llm.c — each layer an explicit forward (and, where the text tower's
//! backward needs it, backward) over flat row-major `f32` buffers with explicit dimensions. The
//! CPU backend ([`Cpu`]) keeps buffers in host memory; a CUDA backend keeps them in device memory
//! and implements the same methods with cuBLAS and kernels, without touching the model code.
//!
//! Conventions shared by every method:
//! - Buffers are flat `f32`, row-major; the shape is given by the dimension arguments. A buffer may
//!   be longer than an operation needs (so activations can be reused across calls with a smaller
//!   sequence length); only the leading elements are read or written.
//! - Outputs are overwritten, except where a method says it *accumulates* (`+=`), which is how the
//!   backward pass adds a branch's gradient into the residual stream.
//! - Small index arrays (token ids, context assignment, EOT positions) are host slices: a device
//!   backend copies them over, which costs little next to the layers.
//!
//! The ops cover the ViT, the text transformer and the ModifiedResNet (RN50) image tower. The
//! ResNet's feature maps are **channels-last** (`batch × height × width × channels`, see
//! [`MapShape`]): every spatial position is a row of `channels` values, so a 1×1 convolution is
//! one GEMM over rows like [`Backend::linear`], a k×k convolution is an im2col of rows plus that
//! GEMM, and the attention pool's tokens are the map's rows as they lie in memory.
//!
//! The prompt-learning head on top of the towers (feature normalisation, similarity products,
//! FedOTP's batched OT solve and its logits, the cross-entropy loss) is part of the trait too, so a
//! training step runs where the model runs.
//!
//! # One front door per op
//!
//! Every op is two methods of [`Backend`]. The **front door**, e.g. [`Backend::linear`], is what
//! model code calls: a provided method that checks the arguments — buffer lengths against the
//! dimensions, index arrays against their bounds, shapes that fit together — and then calls the
//! **implementation**, e.g. [`Backend::linear_unchecked`], which each backend writes. The checks
//! hand the implementation a [`Checked`] token that no code outside them can make, so an
//! implementation runs only behind its op's checks and may rely on them (the CPU's `gemm` calls
//! on raw pointers and the CUDA kernels do). The rule for a backend:
//!
//! - implement the `*_unchecked` methods and leave the front doors as they are: the checks are
//!   written once, so every backend refuses a bad call with the same [`BackendError`];
//! - check only the limits of its own hardware there (e.g. the CUDA kernels' 32-bit dimensions,
//!   the OT solve's shared memory).
//!
//! # Choosing a backend
//!
//! A [`Device`] (`cpu`, `cuda`, `cuda:N`, `auto`) names a backend; [`Device::open`] opens it and
//! [`SelectedBackend::run`] runs code written once, generic over [`Backend`] ([`OnBackend`]), on
//! it — the one way the CLI and libfedotp get to a device ([`device`]). Without the `cuda`
//! feature [`Cuda`] is a stand-in that says so when opened. Threads that share a backend take
//! turns on it ([`Backend::take_turn`]): a GPU serves one caller at a time.

mod activation;
mod checks;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
// Without the `cuda` feature, a stand-in that says so when opened.
#[cfg(not(feature = "cuda"))]
#[path = "no_cuda.rs"]
pub mod cuda;
pub mod device;
mod math_mode;
mod turn;

use fedotp_core::ot::{BatchLayout, BatchReport, OtParams};

use crate::memory::MemoryError;

pub use activation::Activation;
pub use checks::Checked;
pub use cpu::Cpu;
pub use cuda::{Cuda, CudaBuf, CudaError};
pub use device::{Device, DeviceError, OnBackend, SelectedBackend};
pub use math_mode::MathMode;
pub use turn::Turn;

/// An error reported by a backend operation.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The calling thread asked for a device's turn while holding it (a call made from inside
    /// another computation on the same GPU, e.g. from a progress callback).
    #[error(
        "this thread is already computing on the device (a call from inside another call on it?)"
    )]
    TurnHeld,
    /// A buffer is shorter than the operation's dimensions need (a bug in the caller).
    #[error("{op}: buffer `{buffer}` holds {len} floats but {needed} are needed")]
    BufferTooSmall {
        /// The operation.
        op: &'static str,
        /// Which argument.
        buffer: &'static str,
        /// Its length.
        len: usize,
        /// The length the dimensions need.
        needed: usize,
    },
    /// An index (token id, row position, context row) is out of range.
    #[error("{op}: {what} {index} is out of range (must be < {bound})")]
    IndexOutOfRange {
        /// The operation.
        op: &'static str,
        /// What the index selects.
        what: &'static str,
        /// The offending index.
        index: usize,
        /// The exclusive upper bound.
        bound: usize,
    },
    /// An index array does not have one entry per sequence (or token).
    #[error("{op}: `{what}` has {len} entries, expected {expected}")]
    IndexCount {
        /// The operation.
        op: &'static str,
        /// Which index array.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length the dimensions need.
        expected: usize,
    },
    /// The OT solver refused a batch (a non-finite similarity: the features it came from were).
    #[error("{op}: {source}")]
    Ot {
        /// The operation.
        op: &'static str,
        /// The solver's reason.
        source: fedotp_core::ot::OtError,
    },
    /// The dimensions of an operation do not fit together (e.g. a kernel larger than its padded
    /// input, a zero stride, a channel count that differs from the layer's).
    #[error("{op}: {message}")]
    InvalidShape {
        /// The operation.
        op: &'static str,
        /// What does not fit.
        message: String,
    },
    /// The host has no memory for a buffer the operation needs.
    #[error("{op}: {source}")]
    OutOfMemory {
        /// The operation.
        op: &'static str,
        /// What was asked for and what was available.
        source: MemoryError,
    },
    /// The device failed (driver or library error, kernel launch, out of memory) or cannot run
    /// the call (a dimension past the kernels' 32-bit range, a problem larger than the GPU
    /// solver's shared memory).
    #[error("{op}: device error: {source}")]
    Device {
        /// The operation.
        op: &'static str,
        /// The driver's or library's error, or what the device cannot do.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result of a backend operation.
pub type BackendResult<T> = Result<T, BackendError>;

/// A linear layer `y = x · Wᵀ + b` with `W` stored `(out_features, in_features)` row-major, as
/// PyTorch's `nn.Linear` stores it.
#[derive(Debug, Clone)]
pub struct Linear<Buf> {
    /// Weight, `out_features × in_features`.
    pub weight: Buf,
    /// Bias, `out_features`; `None` for CLIP's bias-free projections.
    pub bias: Option<Buf>,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
}

impl<Buf> Linear<Buf> {
    /// The same layer with each buffer converted by `f` (e.g. uploaded to a device).
    pub fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<Linear<T>, E> {
        Ok(Linear {
            weight: f(self.weight)?,
            bias: self.bias.map(&mut *f).transpose()?,
            in_features: self.in_features,
            out_features: self.out_features,
        })
    }
}

/// Layer normalisation over the last dimension, with learned scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNorm<Buf> {
    /// Scale (γ), `width`.
    pub weight: Buf,
    /// Shift (β), `width`.
    pub bias: Buf,
    /// Normalised width.
    pub width: usize,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl<Buf> LayerNorm<Buf> {
    /// The same layer with each buffer converted by `f` (e.g. uploaded to a device).
    pub fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<LayerNorm<T>, E> {
        Ok(LayerNorm {
            weight: f(self.weight)?,
            bias: f(self.bias)?,
            width: self.width,
            eps: self.eps,
        })
    }
}

/// A batch of sequences: `batch × seq × width` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqShape {
    /// Number of sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Features per token.
    pub width: usize,
}

impl SeqShape {
    /// Number of token rows, `batch × seq`.
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// Number of values, `batch × seq × width`.
    pub fn len(&self) -> usize {
        self.rows() * self.width
    }

    /// Whether the shape holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Multi-head self-attention over a batch of sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Number of sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Number of heads.
    pub heads: usize,
    /// Features per head; the model width is `heads × head_dim`.
    pub head_dim: usize,
    /// Whether token `i` may attend only to tokens `j ≤ i` (the text tower).
    pub causal: bool,
}

impl AttentionShape {
    /// Model width, `heads × head_dim`.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Length of the attention-probability buffer, `batch × heads × seq × seq`.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
}

/// Layout of a batch of prompts `[SOT] ctx_0 … ctx_{n_ctx-1} tokens… [EOT] pad…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptShape {
    /// Number of prompts (sequences) in the batch.
    pub batch: usize,
    /// Tokens per prompt.
    pub seq: usize,
    /// Embedding width.
    pub width: usize,
    /// Context rows per prompt, at positions `1..=n_ctx`.
    pub n_ctx: usize,
    /// Number of context sets (`ctx` holds `n_sets × n_ctx × width` values).
    pub n_sets: usize,
}

/// Images and their grid of non-overlapping square patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchShape {
    /// Number of images.
    pub batch: usize,
    /// Channels per image.
    pub channels: usize,
    /// Side of the (square) image in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels; divides `image_size`.
    pub patch_size: usize,
}

impl PatchShape {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches per image.
    pub fn patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Values per flattened patch, `channels × patch × patch`.
    pub fn patch_len(&self) -> usize {
        self.channels * self.patch_size * self.patch_size
    }
}

/// A batch of channels-last feature maps: `batch × height × width × channels` values, each
/// spatial position a row of `channels` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    /// Number of maps (images).
    pub batch: usize,
    /// Rows of positions.
    pub height: usize,
    /// Positions per row.
    pub width: usize,
    /// Values per position.
    pub channels: usize,
}

impl MapShape {
    /// Positions per map, `height × width`.
    pub fn positions(&self) -> usize {
        self.height * self.width
    }

    /// Position rows in the batch, `batch × height × width`.
    pub fn rows(&self) -> usize {
        self.batch * self.positions()
    }

    /// Number of values, `batch × height × width × channels`.
    pub fn len(&self) -> usize {
        self.rows() * self.channels
    }

    /// Whether the shape holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The maps as sequences of positions: `batch × (height·width) × channels`.
    pub fn as_seq(&self) -> SeqShape {
        SeqShape {
            batch: self.batch,
            seq: self.positions(),
            width: self.channels,
        }
    }
}

/// A bias-free 2-D convolution with a square kernel, zero padding and equal strides (CLIP's
/// ResNet convolutions are all followed by a batch-norm, so none has a bias).
///
/// The weight is stored **channels-last**, `out_channels × kernel × kernel × in_channels`
/// (PyTorch's `(out, in, kh, kw)` permuted to `(out, kh, kw, in)` at load time), so that one row
/// of the weight lines up with one im2col row of a channels-last map.
#[derive(Debug, Clone)]
pub struct Conv2d<Buf> {
    /// Weight, `out_channels × kernel × kernel × in_channels`.
    pub weight: Buf,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// Step between neighbouring output positions, in input positions.
    pub stride: usize,
    /// Zero positions added on each side of the input.
    pub padding: usize,
}

impl<Buf> Conv2d<Buf> {
    /// The shape of the output for an input of shape `input` (PyTorch's floor rounding):
    /// `(side + 2·padding − kernel) / stride + 1` per side, `out_channels` channels.
    ///
    /// Fails when the input's channels are not `in_channels`, the kernel or stride is zero, or
    /// the kernel is larger than the padded input.
    ///
    /// ```
    /// use fedotp_host::backend::{Conv2d, MapShape};
    ///
    /// // The ModifiedResNet stem's first convolution: 3×3, stride 2, padding 1.
    /// let conv = Conv2d { weight: (), in_channels: 3, out_channels: 32, kernel: 3, stride: 2, padding: 1 };
    /// let input = MapShape { batch: 8, height: 224, width: 224, channels: 3 };
    /// let out = conv.output_shape(input)?;
    /// assert_eq!((out.height, out.width, out.channels), (112, 112, 32));
    /// # Ok::<(), fedotp_host::backend::BackendError>(())
    /// ```
    pub fn output_shape(&self, input: MapShape) -> BackendResult<MapShape> {
        let invalid = |message: String| BackendError::InvalidShape {
            op: "conv2d",
            message,
        };
        if input.channels != self.in_channels {
            return Err(invalid(format!(
                "input has {} channels, the convolution takes {}",
                input.channels, self.in_channels
            )));
        }
        if self.kernel == 0 || self.stride == 0 {
            return Err(invalid(format!(
                "kernel {} and stride {} must be positive",
                self.kernel, self.stride
            )));
        }
        let padded = input.height.min(input.width) + 2 * self.padding;
        if padded < self.kernel {
            return Err(invalid(format!(
                "kernel {} is larger than the padded {}×{} input",
                self.kernel, input.height, input.width
            )));
        }
        let side = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        Ok(MapShape {
            batch: input.batch,
            height: side(input.height),
            width: side(input.width),
            channels: self.out_channels,
        })
    }

    /// Values per weight row, `kernel × kernel × in_channels` (one im2col row).
    pub fn patch_len(&self) -> usize {
        self.kernel * self.kernel * self.in_channels
    }

    /// The same layer with its weight converted by `f` (e.g. uploaded to a device).
    pub fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<Conv2d<T>, E> {
        Ok(Conv2d {
            weight: f(self.weight)?,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        })
    }
}

/// Batch normalisation with frozen statistics (inference): per channel,
/// `y = (x − running_mean) / √(running_var + eps) · weight + bias`.
#[derive(Debug, Clone)]
pub struct BatchNorm<Buf> {
    /// Scale (γ), `channels`.
    pub weight: Buf,
    /// Shift (β), `channels`.
    pub bias: Buf,
    /// Mean of the training data, `channels`.
    pub running_mean: Buf,
    /// Variance of the training data, `channels`.
    pub running_var: Buf,
    /// Normalised channels.
    pub channels: usize,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl<Buf> BatchNorm<Buf> {
    /// The same layer with each buffer converted by `f` (e.g. uploaded to a device).
    pub fn try_map<T, E>(self, f: &mut impl FnMut(Buf) -> Result<T, E>) -> Result<BatchNorm<T>, E> {
        Ok(BatchNorm {
            weight: f(self.weight)?,
            bias: f(self.bias)?,
            running_mean: f(self.running_mean)?,
            running_var: f(self.running_var)?,
            channels: self.channels,
            eps: self.eps,
        })
    }
}

/// Where the model's layers run. See the [module documentation](self) for the conventions.
pub trait Backend: Send + Sync {
    /// A buffer of `f32` values owned by the backend (host or device memory).
    type Buf: Send + Sync;

    /// A short name for messages, e.g. `"cpu"`.
    fn name(&self) -> &'static str;

    /// Whether its buffers are host memory (so a run's activations count against the host's
    /// memory, not a device's).
    fn buffers_in_host_memory(&self) -> bool;

    /// Runs `work`, a sequence of this backend's operations (a training step, a batch through a
    /// tower), where its operations start cheapest. The CPU backend runs it on a worker of its
    /// thread pool: an operation started there is split across threads only when its work pays
    /// for the hand-off, while one started on another thread always hands itself over and
    /// waits. Other backends run it on the calling thread.
    fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        work()
    }

    /// Waits until the calling thread may compute on this backend and holds the device for it
    /// until the [`Turn`] is dropped: take it around a sequence of operations when threads
    /// share the backend. A backend whose callers may compute in parallel (the CPU) never
    /// waits; a GPU backend serves one caller at a time, and refuses a thread that already
    /// holds the turn ([`BackendError::TurnHeld`]) rather than leave it waiting for itself.
    fn take_turn(&self) -> BackendResult<Turn<'_>> {
        Ok(Turn::shared())
    }

    // ---- memory -------------------------------------------------------------------------

    /// A zero-filled buffer of `len` values.
    fn alloc(&self, len: usize) -> BackendResult<Self::Buf>;
    /// A buffer holding a copy of `data`.
    fn upload(&self, data: &[f32]) -> BackendResult<Self::Buf>;
    /// A buffer holding `data`; host backends take the vector without copying.
    fn upload_vec(&self, data: Vec<f32>) -> BackendResult<Self::Buf> {
        self.upload(&data)
    }
    /// The first `len` values of `buf`, copied to the host.
    fn download(&self, buf: &Self::Buf, len: usize) -> BackendResult<Vec<f32>> {
        let checked = checks::download(self, buf, len)?;
        self.download_unchecked(checked, buf, len)
    }
    /// [`Backend::download`] behind its checks.
    fn download_unchecked(
        &self,
        checked: Checked,
        buf: &Self::Buf,
        len: usize,
    ) -> BackendResult<Vec<f32>>;
    /// Number of values `buf` holds.
    fn buf_len(&self, buf: &Self::Buf) -> usize;

    // ---- embeddings ---------------------------------------------------------------------

    /// Prompt token embeddings: `out[s, t] = ctx[set[s], t - 1]` for `t` in `1..=n_ctx`, else
    /// `table[ids[s, t]]`. `ids` is `batch × seq`, `set` is `batch`, `table` is `vocab × width`.
    fn prompt_embed(
        &self,
        out: &mut Self::Buf,
        table: &Self::Buf,
        ids: &[u32],
        ctx: &Self::Buf,
        set: &[u32],
        shape: PromptShape,
    ) -> BackendResult<()> {
        let checked = checks::prompt_embed(self, (out, table, ctx), (ids, set), shape)?;
        self.prompt_embed_unchecked(checked, out, table, ids, ctx, set, shape)
    }
    /// [`Backend::prompt_embed`] behind its checks.
    #[allow(clippy::too_many_arguments)] // the front door's arguments and the token
    fn prompt_embed_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        table: &Self::Buf,
        ids: &[u32],
        ctx: &Self::Buf,
        set: &[u32],
        shape: PromptShape,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::prompt_embed`] with respect to `ctx`:
    /// `d_ctx[k] = Σ_{s : set[s] = k} d_out[s, 1..=n_ctx]` (overwritten, `n_sets × n_ctx × width`).
    fn prompt_embed_backward(
        &self,
        d_ctx: &mut Self::Buf,
        d_out: &Self::Buf,
        set: &[u32],
        shape: PromptShape,
    ) -> BackendResult<()> {
        let checked = checks::prompt_embed_backward(self, (d_ctx, d_out), set, shape)?;
        self.prompt_embed_backward_unchecked(checked, d_ctx, d_out, set, shape)
    }
    /// [`Backend::prompt_embed_backward`] behind its checks.
    fn prompt_embed_backward_unchecked(
        &self,
        checked: Checked,
        d_ctx: &mut Self::Buf,
        d_out: &Self::Buf,
        set: &[u32],
        shape: PromptShape,
    ) -> BackendResult<()>;
    /// Adds position embeddings and truncates: `out[s, t] = tokens[s, t] + pos[t]` for
    /// `t < out_shape.seq`, where `tokens` is `batch × in_seq × width` and `pos` has at least
    /// `out_shape.seq` rows.
    fn position_embed(
        &self,
        out: &mut Self::Buf,
        tokens: &Self::Buf,
        pos: &Self::Buf,
        in_seq: usize,
        out_shape: SeqShape,
    ) -> BackendResult<()> {
        let checked = checks::position_embed(self, (out, tokens, pos), in_seq, out_shape)?;
        self.position_embed_unchecked(checked, out, tokens, pos, in_seq, out_shape)
    }
    /// [`Backend::position_embed`] behind its checks.
    fn position_embed_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        tokens: &Self::Buf,
        pos: &Self::Buf,
        in_seq: usize,
        out_shape: SeqShape,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::position_embed`] with respect to `tokens`: `d_out` padded with zero
    /// rows from `out_shape.seq` to `in_seq` (overwritten, `batch × in_seq × width`).
    fn position_embed_backward(
        &self,
        d_tokens: &mut Self::Buf,
        d_out: &Self::Buf,
        in_seq: usize,
        out_shape: SeqShape,
    ) -> BackendResult<()> {
        let checked = checks::position_embed_backward(self, (d_tokens, d_out), in_seq, out_shape)?;
        self.position_embed_backward_unchecked(checked, d_tokens, d_out, in_seq, out_shape)
    }
    /// [`Backend::position_embed_backward`] behind its checks.
    fn position_embed_backward_unchecked(
        &self,
        checked: Checked,
        d_tokens: &mut Self::Buf,
        d_out: &Self::Buf,
        in_seq: usize,
        out_shape: SeqShape,
    ) -> BackendResult<()>;
    /// Cuts images (`batch × channels × size × size`) into flattened non-overlapping patches:
    /// `out` is `batch × patches × (channels·patch·patch)`, patches in row-major grid order and
    /// each flattened as `(channel, y, x)` — the layout of a `Conv2d` weight, so the patch
    /// embedding is then one [`Backend::linear`].
    fn extract_patches(
        &self,
        out: &mut Self::Buf,
        images: &Self::Buf,
        shape: PatchShape,
    ) -> BackendResult<()> {
        let checked = checks::extract_patches(self, (out, images), shape)?;
        self.extract_patches_unchecked(checked, out, images, shape)
    }
    /// [`Backend::extract_patches`] behind its checks.
    fn extract_patches_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        images: &Self::Buf,
        shape: PatchShape,
    ) -> BackendResult<()>;
    /// ViT input tokens: `out[b, 0] = class + pos[0]`, `out[b, 1 + m] = patches[b, m] + pos[1 + m]`,
    /// with `patches` `batch × (seq - 1) × width` and `out` `batch × seq × width`.
    fn vit_tokens(
        &self,
        out: &mut Self::Buf,
        patches: &Self::Buf,
        class: &Self::Buf,
        pos: &Self::Buf,
        shape: SeqShape,
    ) -> BackendResult<()> {
        let checked = checks::vit_tokens(self, (out, patches, class, pos), shape)?;
        self.vit_tokens_unchecked(checked, out, patches, class, pos, shape)
    }
    /// [`Backend::vit_tokens`] behind its checks.
    fn vit_tokens_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        patches: &Self::Buf,
        class: &Self::Buf,
        pos: &Self::Buf,
        shape: SeqShape,
    ) -> BackendResult<()>;

    // ---- layers -------------------------------------------------------------------------

    /// Layer normalisation of `rows` rows; also writes each row's mean and reciprocal standard
    /// deviation (`rows` values each) for the backward pass.
    fn layer_norm(
        &self,
        out: &mut Self::Buf,
        stats: (&mut Self::Buf, &mut Self::Buf),
        inp: &Self::Buf,
        ln: &LayerNorm<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()> {
        let checked = checks::layer_norm(self, (out, inp), (stats.0, stats.1), ln, rows)?;
        self.layer_norm_unchecked(checked, out, stats, inp, ln, rows)
    }
    /// [`Backend::layer_norm`] behind its checks.
    fn layer_norm_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        stats: (&mut Self::Buf, &mut Self::Buf),
        inp: &Self::Buf,
        ln: &LayerNorm<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::layer_norm`] with respect to its input, **accumulated** into `d_inp`.
    fn layer_norm_backward(
        &self,
        d_inp: &mut Self::Buf,
        d_out: &Self::Buf,
        inp: &Self::Buf,
        stats: (&Self::Buf, &Self::Buf),
        ln: &LayerNorm<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()> {
        let checked = checks::layer_norm_backward(self, (d_inp, d_out, inp), stats, ln, rows)?;
        self.layer_norm_backward_unchecked(checked, d_inp, d_out, inp, stats, ln, rows)
    }
    /// [`Backend::layer_norm_backward`] behind its checks.
    #[allow(clippy::too_many_arguments)] // the front door's arguments and the token
    fn layer_norm_backward_unchecked(
        &self,
        checked: Checked,
        d_inp: &mut Self::Buf,
        d_out: &Self::Buf,
        inp: &Self::Buf,
        stats: (&Self::Buf, &Self::Buf),
        ln: &LayerNorm<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()>;
    /// `out = inp · Wᵀ + b` for `rows` rows (`inp` is `rows × in`, `out` is `rows × out`).
    fn linear(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        layer: &Linear<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()> {
        let checked = checks::linear(self, (out, inp), layer, rows)?;
        self.linear_unchecked(checked, out, inp, layer, rows)
    }
    /// [`Backend::linear`] behind its checks.
    fn linear_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        layer: &Linear<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::linear`] with respect to its input: `d_inp = d_out · W` (overwritten).
    /// The weights are frozen, so no weight gradient is formed.
    fn linear_backward(
        &self,
        d_inp: &mut Self::Buf,
        d_out: &Self::Buf,
        layer: &Linear<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()> {
        let checked = checks::linear_backward(self, (d_inp, d_out), layer, rows)?;
        self.linear_backward_unchecked(checked, d_inp, d_out, layer, rows)
    }
    /// [`Backend::linear_backward`] behind its checks.
    fn linear_backward_unchecked(
        &self,
        checked: Checked,
        d_inp: &mut Self::Buf,
        d_out: &Self::Buf,
        layer: &Linear<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()>;
    /// Multi-head scaled dot-product self-attention. `qkv` is `batch × seq × 3·width` (queries,
    /// keys and values side by side, each split into heads of `head_dim` columns); `out` is
    /// `batch × seq × width` with the heads merged; `probs` (`batch × heads × seq × seq`) receives
    /// the softmax probabilities for the backward pass.
    fn attention(
        &self,
        out: &mut Self::Buf,
        probs: &mut Self::Buf,
        qkv: &Self::Buf,
        shape: AttentionShape,
    ) -> BackendResult<()> {
        let checked = checks::attention(self, (out, probs, qkv), shape)?;
        self.attention_unchecked(checked, out, probs, qkv, shape)
    }
    /// [`Backend::attention`] behind its checks.
    fn attention_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        probs: &mut Self::Buf,
        qkv: &Self::Buf,
        shape: AttentionShape,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::attention`] with respect to `qkv` (overwritten).
    fn attention_backward(
        &self,
        d_qkv: &mut Self::Buf,
        d_out: &Self::Buf,
        qkv: &Self::Buf,
        probs: &Self::Buf,
        shape: AttentionShape,
    ) -> BackendResult<()> {
        let checked = checks::attention_backward(self, (d_qkv, d_out), (qkv, probs), shape)?;
        self.attention_backward_unchecked(checked, d_qkv, d_out, qkv, probs, shape)
    }
    /// [`Backend::attention_backward`] behind its checks.
    fn attention_backward_unchecked(
        &self,
        checked: Checked,
        d_qkv: &mut Self::Buf,
        d_out: &Self::Buf,
        qkv: &Self::Buf,
        probs: &Self::Buf,
        shape: AttentionShape,
    ) -> BackendResult<()>;
    /// The MLP activation `act` over `len` values: `out[i] = act(inp[i])`.
    fn activation(
        &self,
        act: Activation,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        len: usize,
    ) -> BackendResult<()> {
        let checked = checks::elementwise(self, act.name(), [("out", out), ("inp", inp)], len)?;
        self.activation_unchecked(checked, act, out, inp, len)
    }
    /// [`Backend::activation`] behind its checks.
    fn activation_unchecked(
        &self,
        checked: Checked,
        act: Activation,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        len: usize,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::activation`], in place: `d[i] *= act'(inp[i])`.
    fn activation_backward(
        &self,
        act: Activation,
        d: &mut Self::Buf,
        inp: &Self::Buf,
        len: usize,
    ) -> BackendResult<()> {
        let checked =
            checks::elementwise(self, act.backward_name(), [("d", d), ("inp", inp)], len)?;
        self.activation_backward_unchecked(checked, act, d, inp, len)
    }
    /// [`Backend::activation_backward`] behind its checks.
    fn activation_backward_unchecked(
        &self,
        checked: Checked,
        act: Activation,
        d: &mut Self::Buf,
        inp: &Self::Buf,
        len: usize,
    ) -> BackendResult<()>;
    /// Residual connection: `acc[i] += x[i]` over `len` values.
    fn add_assign(&self, acc: &mut Self::Buf, x: &Self::Buf, len: usize) -> BackendResult<()> {
        let checked = checks::elementwise(self, "add_assign", [("acc", acc), ("x", x)], len)?;
        self.add_assign_unchecked(checked, acc, x, len)
    }
    /// [`Backend::add_assign`] behind its checks.
    fn add_assign_unchecked(
        &self,
        checked: Checked,
        acc: &mut Self::Buf,
        x: &Self::Buf,
        len: usize,
    ) -> BackendResult<()>;
    /// Picks one row per sequence: `out[s] = inp[s, positions[s]]` (`out` is `batch × width`).
    fn gather_rows(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        positions: &[u32],
        shape: SeqShape,
    ) -> BackendResult<()> {
        let checked = checks::gather_rows(self, (out, inp), positions, shape)?;
        self.gather_rows_unchecked(checked, out, inp, positions, shape)
    }
    /// [`Backend::gather_rows`] behind its checks.
    fn gather_rows_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        positions: &[u32],
        shape: SeqShape,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::gather_rows`]: `d_inp` is zero except `d_inp[s, positions[s]] =
    /// d_out[s]` (overwritten, `batch × seq × width`).
    fn gather_rows_backward(
        &self,
        d_inp: &mut Self::Buf,
        d_out: &Self::Buf,
        positions: &[u32],
        shape: SeqShape,
    ) -> BackendResult<()> {
        let checked = checks::gather_rows_backward(self, (d_inp, d_out), positions, shape)?;
        self.gather_rows_backward_unchecked(checked, d_inp, d_out, positions, shape)
    }
    /// [`Backend::gather_rows_backward`] behind its checks.
    fn gather_rows_backward_unchecked(
        &self,
        checked: Checked,
        d_inp: &mut Self::Buf,
        d_out: &Self::Buf,
        positions: &[u32],
        shape: SeqShape,
    ) -> BackendResult<()>;

    // ---- the prompt-learning head -------------------------------------------------------

    /// Unit-length rows: `out[r] = inp[r] / ‖inp[r]‖` for `rows` rows of `dim` values, and
    /// `norms[r] = ‖inp[r]‖` for the backward pass. A zero row gives non-finite values, which the
    /// training step detects and skips.
    fn normalize_rows(
        &self,
        out: &mut Self::Buf,
        norms: &mut Self::Buf,
        inp: &Self::Buf,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()> {
        let checked = checks::normalize_rows(self, (out, norms, inp), rows, dim)?;
        self.normalize_rows_unchecked(checked, out, norms, inp, rows, dim)
    }
    /// [`Backend::normalize_rows`] behind its checks.
    fn normalize_rows_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        norms: &mut Self::Buf,
        inp: &Self::Buf,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::normalize_rows`] with respect to its input (overwritten):
    /// `d_inp[r] = (d_out[r] − out[r] ⟨out[r], d_out[r]⟩) / norms[r]`.
    fn normalize_rows_backward(
        &self,
        d_inp: &mut Self::Buf,
        d_out: &Self::Buf,
        out: &Self::Buf,
        norms: &Self::Buf,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()> {
        let checked =
            checks::normalize_rows_backward(self, (d_inp, d_out), (out, norms), rows, dim)?;
        self.normalize_rows_backward_unchecked(checked, d_inp, d_out, out, norms, rows, dim)
    }
    /// [`Backend::normalize_rows_backward`] behind its checks.
    #[allow(clippy::too_many_arguments)] // the front door's arguments and the token
    fn normalize_rows_backward_unchecked(
        &self,
        checked: Checked,
        d_inp: &mut Self::Buf,
        d_out: &Self::Buf,
        out: &Self::Buf,
        norms: &Self::Buf,
        rows: usize,
        dim: usize,
    ) -> BackendResult<()>;
    /// `out (m × n) = alpha · a · bᵀ` with `a` `m × k` and `b` `n × k`: every row of `a` against
    /// every row of `b` (similarities of image and text features).
    fn matmul_nt(
        &self,
        out: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        dims: MatmulDims,
        alpha: f32,
    ) -> BackendResult<()> {
        let checked = checks::matmul(self, "matmul_nt", (out, a, b), dims)?;
        self.matmul_nt_unchecked(checked, out, a, b, dims, alpha)
    }
    /// [`Backend::matmul_nt`] behind its checks.
    fn matmul_nt_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        dims: MatmulDims,
        alpha: f32,
    ) -> BackendResult<()>;
    /// `out (m × n) = alpha · aᵀ · b` with `a` `k × m` and `b` `k × n` (gradients of
    /// similarities back onto one side's features).
    fn matmul_tn(
        &self,
        out: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        dims: MatmulDims,
        alpha: f32,
    ) -> BackendResult<()> {
        let checked = checks::matmul(self, "matmul_tn", (out, a, b), dims)?;
        self.matmul_tn_unchecked(checked, out, a, b, dims, alpha)
    }
    /// [`Backend::matmul_tn`] behind its checks.
    fn matmul_tn_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        dims: MatmulDims,
        alpha: f32,
    ) -> BackendResult<()>;
    /// FedOTP's transport plans, one independent problem per (image, class): `sim` is
    /// `images × patches × prompts × classes` cosine similarities, `plans` receives
    /// `images × classes × patches × prompts` — the same algorithm, stopping rule and `f32`
    /// stabilisation as [`fedotp_core::ot::solve_batch`].
    fn ot_plans(
        &self,
        plans: &mut Self::Buf,
        sim: &Self::Buf,
        layout: BatchLayout,
        params: &OtParams,
    ) -> BackendResult<BatchReport> {
        let checked = checks::ot_plans(self, (plans, sim), layout, params)?;
        self.ot_plans_unchecked(checked, plans, sim, layout, params)
    }
    /// [`Backend::ot_plans`] behind its checks.
    fn ot_plans_unchecked(
        &self,
        checked: Checked,
        plans: &mut Self::Buf,
        sim: &Self::Buf,
        layout: BatchLayout,
        params: &OtParams,
    ) -> BackendResult<BatchReport>;
    /// Logits of the OT head: `logits[b, c] = scale · Σ_{m,n} plans[b, c, m, n] · sim[b, m, n, c]`.
    fn ot_logits(
        &self,
        logits: &mut Self::Buf,
        sim: &Self::Buf,
        plans: &Self::Buf,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()> {
        let checked = checks::ot_logits(self, (logits, sim, plans), layout)?;
        self.ot_logits_unchecked(checked, logits, sim, plans, layout, scale)
    }
    /// [`Backend::ot_logits`] behind its checks.
    fn ot_logits_unchecked(
        &self,
        checked: Checked,
        logits: &mut Self::Buf,
        sim: &Self::Buf,
        plans: &Self::Buf,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()>;
    /// Gradient of [`Backend::ot_logits`] with respect to `sim`, the plans held constant (as in
    /// the paper): `d_sim[b, m, n, c] = scale · d_logits[b, c] · plans[b, c, m, n]` (overwritten).
    fn ot_logits_backward(
        &self,
        d_sim: &mut Self::Buf,
        d_logits: &Self::Buf,
        plans: &Self::Buf,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()> {
        let checked = checks::ot_logits_backward(self, (d_sim, d_logits, plans), layout)?;
        self.ot_logits_backward_unchecked(checked, d_sim, d_logits, plans, layout, scale)
    }
    /// [`Backend::ot_logits_backward`] behind its checks.
    fn ot_logits_backward_unchecked(
        &self,
        checked: Checked,
        d_sim: &mut Self::Buf,
        d_logits: &Self::Buf,
        plans: &Self::Buf,
        layout: BatchLayout,
        scale: f32,
    ) -> BackendResult<()>;
    /// Softmax cross-entropy of `batch × classes` logits against `labels`, averaged over the
    /// batch; returns the loss and writes its gradient `d_logits = (softmax − one_hot) / batch`.
    fn cross_entropy(
        &self,
        d_logits: &mut Self::Buf,
        logits: &Self::Buf,
        labels: &[u32],
        classes: usize,
    ) -> BackendResult<f32> {
        let checked = checks::cross_entropy(self, (d_logits, logits), labels, classes)?;
        self.cross_entropy_unchecked(checked, d_logits, logits, labels, classes)
    }
    /// [`Backend::cross_entropy`] behind its checks.
    fn cross_entropy_unchecked(
        &self,
        checked: Checked,
        d_logits: &mut Self::Buf,
        logits: &Self::Buf,
        labels: &[u32],
        classes: usize,
    ) -> BackendResult<f32>;

    // ---- convolutional layers (ModifiedResNet image tower; forward only, it is frozen) -------

    /// Images from channels-first to channels-last: `inp` is `batch × channels × height × width`
    /// (PyTorch's layout, how images arrive), `out` is `batch × height × width × channels`;
    /// `shape` describes `out`.
    fn to_channels_last(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        shape: MapShape,
    ) -> BackendResult<()> {
        let checked = checks::to_channels_last(self, (out, inp), shape)?;
        self.to_channels_last_unchecked(checked, out, inp, shape)
    }
    /// [`Backend::to_channels_last`] behind its checks.
    fn to_channels_last_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        shape: MapShape,
    ) -> BackendResult<()>;
    /// 2-D convolution of channels-last maps: `inp` has shape `shape`, `out` has
    /// `conv.output_shape(shape)`, and
    /// `out[b, y, x, o] = Σ_{ky, kx, c} W[o, ky, kx, c] · inp[b, y·s + ky − p, x·s + kx − p, c]`
    /// with zero outside the input (s = stride, p = padding).
    fn conv2d(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        conv: &Conv2d<Self::Buf>,
        shape: MapShape,
    ) -> BackendResult<()> {
        let checked = checks::conv2d(self, (out, inp), conv, shape)?;
        self.conv2d_unchecked(checked, out, inp, conv, shape)
    }
    /// [`Backend::conv2d`] behind its checks.
    fn conv2d_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        conv: &Conv2d<Self::Buf>,
        shape: MapShape,
    ) -> BackendResult<()>;
    /// Inference batch normalisation, in place, over `rows` rows of `bn.channels` values
    /// (a channels-last map has `rows` = batch × height × width).
    fn batch_norm(
        &self,
        x: &mut Self::Buf,
        bn: &BatchNorm<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()> {
        let checked = checks::batch_norm(self, x, bn, rows)?;
        self.batch_norm_unchecked(checked, x, bn, rows)
    }
    /// [`Backend::batch_norm`] behind its checks.
    fn batch_norm_unchecked(
        &self,
        checked: Checked,
        x: &mut Self::Buf,
        bn: &BatchNorm<Self::Buf>,
        rows: usize,
    ) -> BackendResult<()>;
    /// ReLU in place, `x[i] = max(x[i], 0)`, over `len` values.
    fn relu(&self, x: &mut Self::Buf, len: usize) -> BackendResult<()> {
        let checked = checks::relu(self, x, len)?;
        self.relu_unchecked(checked, x, len)
    }
    /// [`Backend::relu`] behind its checks.
    fn relu_unchecked(&self, checked: Checked, x: &mut Self::Buf, len: usize) -> BackendResult<()>;
    /// Average pooling with a `kernel × kernel` window and stride `kernel`, no padding, floor
    /// rounding (PyTorch's `AvgPool2d(kernel)`): `inp` has shape `shape`, `out` has
    /// `(height / kernel) × (width / kernel)` positions of `shape.channels` values, each the mean
    /// of its window.
    fn avg_pool2d(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        shape: MapShape,
        kernel: usize,
    ) -> BackendResult<()> {
        let checked = checks::avg_pool2d(self, (out, inp), shape, kernel)?;
        self.avg_pool2d_unchecked(checked, out, inp, shape, kernel)
    }
    /// [`Backend::avg_pool2d`] behind its checks.
    fn avg_pool2d_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        shape: MapShape,
        kernel: usize,
    ) -> BackendResult<()>;
    /// The attention pool's input tokens: for each map `b` of `shape` (`H·W` positions),
    /// `out[b, 0] = mean_i map[b, i] + pos[0]` and `out[b, 1 + i] = map[b, i] + pos[1 + i]`;
    /// `out` is `batch × (1 + H·W) × channels`, `pos` is `(1 + H·W) × channels`.
    fn attention_pool_tokens(
        &self,
        out: &mut Self::Buf,
        map: &Self::Buf,
        pos: &Self::Buf,
        shape: MapShape,
    ) -> BackendResult<()> {
        let checked = checks::attention_pool_tokens(self, (out, map, pos), shape)?;
        self.attention_pool_tokens_unchecked(checked, out, map, pos, shape)
    }
    /// [`Backend::attention_pool_tokens`] behind its checks.
    fn attention_pool_tokens_unchecked(
        &self,
        checked: Checked,
        out: &mut Self::Buf,
        map: &Self::Buf,
        pos: &Self::Buf,
        shape: MapShape,
    ) -> BackendResult<()>;
}

/// Dimensions of a matrix product `out (m × n) = A · B`, with `k` the contracted dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulDims {
    /// Rows of the output.
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
}
