//! The CUDA backend's stand-in, in builds without the `cuda` feature (the pattern of candle's
//! `dummy_cuda_backend.rs`).
//!
//! [`Cuda`] still exists, so that code generic over the backend and code that names CUDA —
//! [`super::device`], the CLI, libfedotp — compiles the same in every build, with no
//! `#[cfg(feature = "cuda")]` of its own. Opening it says that CUDA was not compiled in. It never
//! has a value: [`Cuda`] and [`CudaBuf`] are uninhabited, so none of its methods can be called,
//! and each body is an empty match on `self`.

use std::fmt;

use fedotp_core::ot::{BatchLayout, BatchReport, OtParams};

pub use super::MathMode;
use super::{
    Activation, AttentionShape, Backend, BackendResult, BatchNorm, Checked, Conv2d, LayerNorm,
    Linear, MapShape, MatmulDims, PatchShape, PromptShape, SeqShape,
};

/// Why there is no CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// This build has no CUDA backend.
    #[error("fedotp was built without CUDA support (feature `cuda`)")]
    NotCompiled,
}

/// The CUDA backend, absent from this build: it cannot be made.
#[derive(Debug, Clone)]
pub enum Cuda {}

/// A buffer of the absent CUDA backend: there is none.
#[derive(Debug)]
pub enum CudaBuf {}

/// What the absent CUDA backend would run on: nothing.
#[derive(Debug, Clone)]
pub enum DeviceInfo {}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl Cuda {
    /// Always [`CudaError::NotCompiled`].
    pub fn new(_ordinal: usize) -> Result<Self, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Always [`CudaError::NotCompiled`].
    pub fn with_math(_ordinal: usize, _math: MathMode) -> Result<Self, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Always [`CudaError::NotCompiled`].
    pub fn shared(_ordinal: usize) -> Result<Self, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Always [`CudaError::NotCompiled`]: no device is usable.
    pub fn device_count() -> Result<usize, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// The device's ordinal (never called: there is no `Cuda`).
    pub fn ordinal(&self) -> usize {
        match *self {}
    }

    /// The device (never called).
    pub fn info(&self) -> &DeviceInfo {
        match *self {}
    }

    /// The math mode of the matrix products (never called).
    pub fn math(&self) -> MathMode {
        match *self {}
    }

    /// Waits for queued work (never called).
    pub fn synchronize(&self) -> BackendResult<()> {
        match *self {}
    }
}

impl fmt::Display for Cuda {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl Backend for Cuda {
    type Buf = CudaBuf;

    fn name(&self) -> &'static str {
        match *self {}
    }

    fn buffers_in_host_memory(&self) -> bool {
        false
    }

    fn alloc(&self, _: usize) -> BackendResult<Self::Buf> {
        match *self {}
    }

    fn upload(&self, _: &[f32]) -> BackendResult<Self::Buf> {
        match *self {}
    }

    fn download_unchecked(&self, _: Checked, _: &Self::Buf, _: usize) -> BackendResult<Vec<f32>> {
        match *self {}
    }

    fn buf_len(&self, _: &Self::Buf) -> usize {
        match *self {}
    }

    fn prompt_embed_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &[u32],
        _: &Self::Buf,
        _: &[u32],
        _: PromptShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn prompt_embed_backward_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &[u32],
        _: PromptShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn position_embed_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: usize,
        _: SeqShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn position_embed_backward_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: usize,
        _: SeqShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn extract_patches_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: PatchShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn vit_tokens_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: SeqShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn layer_norm_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: (&mut Self::Buf, &mut Self::Buf),
        _: &Self::Buf,
        _: &LayerNorm<Self::Buf>,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn layer_norm_backward_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: (&Self::Buf, &Self::Buf),
        _: &LayerNorm<Self::Buf>,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn linear_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Linear<Self::Buf>,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn linear_backward_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Linear<Self::Buf>,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn attention_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: AttentionShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn attention_backward_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: AttentionShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn activation_unchecked(
        &self,
        _: Checked,
        _: Activation,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn activation_backward_unchecked(
        &self,
        _: Checked,
        _: Activation,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn add_assign_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn gather_rows_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &[u32],
        _: SeqShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn gather_rows_backward_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &[u32],
        _: SeqShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn normalize_rows_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: usize,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn normalize_rows_backward_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: usize,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn matmul_nt_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: MatmulDims,
        _: f32,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn matmul_tn_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: MatmulDims,
        _: f32,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn ot_plans_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: BatchLayout,
        _: &OtParams,
    ) -> BackendResult<BatchReport> {
        match *self {}
    }

    fn ot_logits_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: BatchLayout,
        _: f32,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn ot_logits_backward_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: BatchLayout,
        _: f32,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn cross_entropy_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &[u32],
        _: usize,
    ) -> BackendResult<f32> {
        match *self {}
    }

    fn to_channels_last_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: MapShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn conv2d_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Conv2d<Self::Buf>,
        _: MapShape,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn batch_norm_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &BatchNorm<Self::Buf>,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn relu_unchecked(&self, _: Checked, _: &mut Self::Buf, _: usize) -> BackendResult<()> {
        match *self {}
    }

    fn avg_pool2d_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: MapShape,
        _: usize,
    ) -> BackendResult<()> {
        match *self {}
    }

    fn attention_pool_tokens_unchecked(
        &self,
        _: Checked,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
        _: MapShape,
    ) -> BackendResult<()> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_says_cuda_was_not_compiled_in() {
        let expected = "fedotp was built without CUDA support (feature `cuda`)";
        assert_eq!(Cuda::new(0).unwrap_err().to_string(), expected);
        assert_eq!(Cuda::shared(1).unwrap_err().to_string(), expected);
        assert_eq!(Cuda::device_count().unwrap_err().to_string(), expected);
    }
}
