//! Shared helpers of the CLIP tests: the PyTorch reference fixtures and tolerance checks.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

/// `host/tests/fixtures/clip/<name>`, written by `host/scripts/clip_fixtures.py`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip")
        .join(name)
}

/// A `reference.safetensors` of recorded PyTorch tensors.
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    pub fn open(dir: &str) -> Self {
        Self::from_file(fixture(dir).join("reference.safetensors"))
    }

    pub fn from_file(path: PathBuf) -> Self {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Reference { bytes }
    }

    fn view(&self, name: &str) -> (Dtype, Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid reference file");
        let view = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference has no `{name}`"));
        (view.dtype(), view.shape().to_vec(), view.data().to_vec())
    }

    /// An f32 tensor and its shape.
    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let (dtype, shape, data) = self.view(name);
        assert_eq!(dtype, Dtype::F32, "`{name}` is not f32");
        let values = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (values, shape)
    }

    /// An f32 tensor's values.
    pub fn values(&self, name: &str) -> Vec<f32> {
        self.f32(name).0
    }

    /// An i64 tensor as u32 values and its shape.
    pub fn ids(&self, name: &str) -> (Vec<u32>, Vec<usize>) {
        let (dtype, shape, data) = self.view(name);
        assert_eq!(dtype, Dtype::I64, "`{name}` is not i64");
        let values = data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        (values, shape)
    }
}

/// `max |got - want| / max |want|`.
pub fn max_rel_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0, "reference is all zeros");
    err / scale
}

/// Asserts `got` matches `want` to `tol` in max-norm relative error, printing the error.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let err = max_rel_error(got, want);
    println!("{what:<40} max rel error {err:.2e}");
    assert!(
        err <= tol,
        "{what}: max relative error {err:.3e} > {tol:.0e}"
    );
}

/// The first `keep` rows of each of `batch` sequences of `seq` rows of `width` values.
pub fn truncate(values: &[f32], batch: usize, seq: usize, keep: usize, width: usize) -> Vec<f32> {
    (0..batch)
        .flat_map(|s| values[s * seq * width..][..keep * width].iter().copied())
        .collect()
}
