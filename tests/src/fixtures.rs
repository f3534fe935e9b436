//! The reference fixtures of the host tests (`host/tests/fixtures/`, written by the scripts of
//! `tests/scripts/`) and a reader of the PyTorch tensors they record.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// `host/tests/fixtures/<relative>` in this checkout.
pub fn fixture(relative: impl AsRef<Path>) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host/tests/fixtures")
        .join(relative)
}

/// A safetensors file of recorded PyTorch tensors (a fixture's `reference.safetensors`).
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    /// Reads the file at `path`; panics naming it if it cannot be read.
    pub fn open(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

    /// An i64 tensor as u32 values (token ids, labels) and its shape.
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

/// Field `key` of a JSON fixture's `value` as an array; panics naming the key otherwise.
pub fn json_array<'a>(value: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("fixture field {key} is not an array"))
}

/// Field `key` of a JSON fixture's `value` as a string; panics naming the key otherwise.
pub fn json_str<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("fixture field {key} is not a string"))
}

/// Field `key` of a JSON fixture's `value` as token ids (an array of `u32`).
pub fn json_ids(value: &serde_json::Value, key: &str) -> Vec<u32> {
    json_array(value, key)
        .iter()
        .map(|id| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .unwrap_or_else(|| panic!("fixture field {key} holds {id}, not a u32 id"))
        })
        .collect()
}
