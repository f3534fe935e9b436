//! Checkpoints: the whole state of a federated run after a round, as one safetensors file.
//!
//! | tensor | dtype | shape | holds |
//! |---|---|---|---|
//! | `global_prompt` | F32 | as trained, e.g. `[1, n_ctx, width]` | the server's prompt(s), if the method has any |
//! | `client.<i>.local_prompt` | F32 | e.g. `[N − 1, n_ctx, width]` | client `i`'s prompts that never leave it |
//! | `client.<i>.momentum_buffer` | F32 | `[len]` | client `i`'s SGD momentum, once it has stepped |
//! | `rng.<name>` | U8 | `[56]` | a ChaCha8 generator: seed (32 bytes), stream (u64 LE), word position (u128 LE) |
//!
//! The header's metadata has one key, `fedotp_checkpoint`, whose value is JSON:
//! `{"version":2,"round":r,"clients":K,"config_sha256":"…","tensors_sha256":"…"}` (one key, so
//! the file's bytes do not depend on hash-map order and equal states give equal files). `round`
//! is the last round completed; a resumed run starts at `round + 1`. `tensors_sha256` is the
//! SHA-256 of every tensor in name order — its name, dtype, shape and bytes — so a damaged file
//! (a flipped bit) is refused rather than resumed; version 1 files, which have none, are still
//! read. Every f32 value must be finite.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::atomic::write_atomic;
use super::RunError;
use crate::fed::SgdState;

/// The metadata key of a checkpoint's header.
const METADATA_KEY: &str = "fedotp_checkpoint";
/// The checkpoint format this code writes.
const FORMAT_VERSION: u32 = 2;
/// The oldest format it reads (version 1: no checksum).
const OLDEST_VERSION: u32 = 1;
/// Bytes of a serialised [`RngState`].
const RNG_BYTES: usize = 32 + 8 + 16;
/// Most clients a checkpoint may declare: far beyond any simulation, and a guard against a
/// damaged header making the reader allocate or loop without end.
const MAX_CLIENTS: usize = 1 << 24;

/// An `f32` tensor held on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values, `shape.iter().product()` of them.
    pub values: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape`; `None` if `values` does not have `shape`'s element count.
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Option<Tensor> {
        (shape.iter().product::<usize>() == values.len()).then_some(Tensor { shape, values })
    }
}

/// The full state of a ChaCha8 generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RngState {
    /// The 32-byte key.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// Position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl RngState {
    /// The state of `rng`.
    pub fn of(rng: &ChaCha8Rng) -> RngState {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator in this state: it continues exactly where the saved one stopped.
    ///
    /// ```
    /// use rand::{Rng, SeedableRng};
    /// use fedotp_host::run::RngState;
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    /// rng.next_u32();
    /// let mut restored = RngState::of(&rng).restore();
    /// assert_eq!(rng.next_u64(), restored.next_u64());
    /// ```
    pub fn restore(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }

    fn to_bytes(self) -> [u8; RNG_BYTES] {
        let mut bytes = [0; RNG_BYTES];
        bytes[..32].copy_from_slice(&self.seed);
        bytes[32..40].copy_from_slice(&self.stream.to_le_bytes());
        bytes[40..].copy_from_slice(&self.word_pos.to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8; RNG_BYTES]) -> RngState {
        let (seed, rest) = bytes.split_at(32);
        let (stream, word_pos) = rest.split_at(8);
        RngState {
            seed: seed.try_into().expect("32 bytes"),
            stream: u64::from_le_bytes(stream.try_into().expect("8 bytes")),
            word_pos: u128::from_le_bytes(word_pos.try_into().expect("16 bytes")),
        }
    }
}

/// One client's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientState {
    /// The prompts that stay on the client (`None` for methods without local prompts).
    pub local_prompt: Option<Tensor>,
    /// The client's optimiser state.
    pub optimizer: SgdState,
}

/// The state of a run after a round.
///
/// ```
/// use fedotp_host::run::{Checkpoint, ClientState, Tensor};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("round.safetensors");
/// let checkpoint = Checkpoint {
///     round: 3,
///     config_hash: "ab12".into(),
///     global_prompt: Tensor::new(vec![1, 2, 2], vec![0.1, 0.2, 0.3, 0.4]),
///     clients: vec![ClientState::default(); 2],
///     rngs: Default::default(),
/// };
/// checkpoint.save(&path).unwrap();
/// assert_eq!(Checkpoint::load(&path).unwrap(), checkpoint);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The last round completed (0-based).
    pub round: u32,
    /// SHA-256 of the run's resolved configuration ([`crate::config::RunConfig::hash`]).
    pub config_hash: String,
    /// The server's prompt(s), for methods that have a global prompt.
    pub global_prompt: Option<Tensor>,
    /// Every client's state, by client index.
    pub clients: Vec<ClientState>,
    /// Named generators (data order, augmentation, ...), restored on resume.
    pub rngs: BTreeMap<String, RngState>,
}

/// The shapes a run's checkpoints must have, for [`Checkpoint::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointLayout {
    /// Number of clients.
    pub clients: usize,
    /// Shape of `global_prompt` (`None`: the method has no global prompt).
    pub global_prompt: Option<Vec<usize>>,
    /// Shape of every `client.<i>.local_prompt` (`None`: the method has no local prompt).
    pub local_prompt: Option<Vec<usize>>,
    /// Number of trained parameters per client: the length of a momentum buffer.
    pub parameters: usize,
}

/// The JSON of the metadata key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: u32,
    round: u32,
    clients: usize,
    config_sha256: String,
    /// Since version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tensors_sha256: Option<String>,
}

/// The checksum of tensors given as (name, dtype, shape, bytes): SHA-256 over each in name order.
fn tensors_sha256<'a>(
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Sha256::new();
    for (name, dtype, shape, bytes) in sorted {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update(format!("{dtype:?}").as_bytes());
        hash.update((shape.len() as u64).to_le_bytes());
        for &dim in shape {
            hash.update((dim as u64).to_le_bytes());
        }
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// An owned tensor to serialise.
struct Stored {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn stored_f32(shape: Vec<usize>, values: &[f32]) -> Stored {
    Stored {
        dtype: Dtype::F32,
        shape,
        bytes: f32_bytes(values),
    }
}

impl Checkpoint {
    /// The checkpoint as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, safetensors::SafeTensorError> {
        let mut tensors: Vec<(String, Stored)> = Vec::new();
        if let Some(global) = &self.global_prompt {
            tensors.push((
                "global_prompt".into(),
                stored_f32(global.shape.clone(), &global.values),
            ));
        }
        for (i, client) in self.clients.iter().enumerate() {
            if let Some(local) = &client.local_prompt {
                tensors.push((
                    format!("client.{i}.local_prompt"),
                    stored_f32(local.shape.clone(), &local.values),
                ));
            }
            if let Some(buffer) = &client.optimizer.momentum_buffer {
                tensors.push((
                    format!("client.{i}.momentum_buffer"),
                    stored_f32(vec![buffer.len()], buffer),
                ));
            }
        }
        for (name, state) in &self.rngs {
            tensors.push((
                format!("rng.{name}"),
                Stored {
                    dtype: Dtype::U8,
                    shape: vec![RNG_BYTES],
                    bytes: state.to_bytes().to_vec(),
                },
            ));
        }
        let checksum = tensors_sha256(
            tensors
                .iter()
                .map(|(name, t)| (name.as_str(), t.dtype, &t.shape[..], &t.bytes[..])),
        );
        let header = Header {
            version: FORMAT_VERSION,
            round: self.round,
            clients: self.clients.len(),
            config_sha256: self.config_hash.clone(),
            tensors_sha256: Some(checksum),
        };
        let metadata = HashMap::from([(
            METADATA_KEY.to_string(),
            serde_json::to_string(&header).expect("the header serialises"),
        )]);
        let views = tensors
            .iter()
            .map(|(name, t)| {
                Ok((
                    name.as_str(),
                    TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?,
                ))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        safetensors::serialize(views, Some(metadata))
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), RunError> {
        let bytes = self
            .to_bytes()
            .map_err(|e| RunError::format(path, format!("cannot serialise the checkpoint: {e}")))?;
        write_atomic(path, &bytes)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]; the error names the file and the
    /// tensor or metadata key at fault.
    pub fn load(path: &Path) -> Result<Checkpoint, RunError> {
        let bytes = std::fs::read(path).map_err(|e| RunError::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses checkpoint bytes; `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, RunError> {
        let not_safetensors = |e: safetensors::SafeTensorError| {
            RunError::format(path, format!("not a safetensors file: {e}"))
        };
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
        let file = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
        let header_json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| {
                RunError::format(
                    path,
                    format!("no `{METADATA_KEY}` metadata: not a fedotp checkpoint"),
                )
            })?;
        let header: Header = serde_json::from_str(header_json).map_err(|e| {
            RunError::format(path, format!("metadata `{METADATA_KEY}` is malformed: {e}"))
        })?;
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&header.version) {
            return Err(RunError::format(
                path,
                format!(
                    "checkpoint format version {} (this build reads versions {OLDEST_VERSION} \
                     to {FORMAT_VERSION})",
                    header.version
                ),
            ));
        }
        if header.clients > MAX_CLIENTS {
            return Err(RunError::format(
                path,
                format!(
                    "metadata `{METADATA_KEY}` declares {} clients, more than the {MAX_CLIENTS} a checkpoint may hold",
                    header.clients
                ),
            ));
        }
        let mut reader = Reader {
            file: &file,
            path,
            read: Vec::new(),
        };
        let global_prompt = reader.f32_tensor("global_prompt")?;
        let mut clients = Vec::with_capacity(header.clients);
        for i in 0..header.clients {
            let local_prompt = reader.f32_tensor(&format!("client.{i}.local_prompt"))?;
            let momentum_name = format!("client.{i}.momentum_buffer");
            let momentum_buffer = match reader.f32_tensor(&momentum_name)? {
                Some(t) if t.shape.len() == 1 => Some(t.values),
                Some(t) => {
                    return Err(RunError::tensor(
                        path,
                        &momentum_name,
                        format!("must have one dimension, has shape {:?}", t.shape),
                    ))
                }
                None => None,
            };
            clients.push(ClientState {
                local_prompt,
                optimizer: SgdState { momentum_buffer },
            });
        }
        let mut rngs = BTreeMap::new();
        let rng_names: Vec<String> = file
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix("rng.").map(str::to_owned))
            .collect();
        for name in rng_names {
            let tensor = format!("rng.{name}");
            let view = reader.view(&tensor)?.expect("listed by the file");
            if view.dtype() != Dtype::U8 || view.shape() != [RNG_BYTES] {
                return Err(RunError::tensor(
                    path,
                    &tensor,
                    format!(
                        "must be U8 of shape [{RNG_BYTES}], is {:?} of shape {:?}",
                        view.dtype(),
                        view.shape()
                    ),
                ));
            }
            let bytes: &[u8; RNG_BYTES] = view.data().try_into().expect("checked shape");
            rngs.insert(name, RngState::from_bytes(bytes));
        }
        if let Some(extra) = file
            .names()
            .into_iter()
            .find(|n| !reader.read.iter().any(|r| r == n))
        {
            return Err(RunError::tensor(
                path,
                extra,
                format!("is not part of a checkpoint of {} clients", header.clients),
            ));
        }
        // Last: a damaged value that is not finite, or a tensor of the wrong shape, is named.
        match (&header.tensors_sha256, header.version) {
            (Some(expected), _) => {
                let found = tensors_sha256(
                    file.tensors()
                        .iter()
                        .map(|(name, v)| (name.as_str(), v.dtype(), v.shape(), v.data())),
                );
                if &found != expected {
                    return Err(RunError::format(
                        path,
                        format!(
                            "the tensors' checksum is {found}, the header records {expected}: \
                             the file is damaged"
                        ),
                    ));
                }
            }
            (None, 1) => {}
            (None, version) => {
                return Err(RunError::format(
                    path,
                    format!(
                        "metadata `{METADATA_KEY}` of version {version} has no `tensors_sha256`"
                    ),
                ))
            }
        }
        Ok(Checkpoint {
            round: header.round,
            config_hash: header.config_sha256,
            global_prompt,
            clients,
            rngs,
        })
    }
}

impl Checkpoint {
    /// Checks that the checkpoint has `layout`'s clients and shapes; `path` names the file in
    /// errors, which name the tensor.
    pub fn check(&self, layout: &CheckpointLayout, path: &Path) -> Result<(), RunError> {
        if self.clients.len() != layout.clients {
            return Err(RunError::format(
                path,
                format!(
                    "holds {} clients, the run has {}",
                    self.clients.len(),
                    layout.clients
                ),
            ));
        }
        let check_shape =
            |name: &str, tensor: Option<&Tensor>, expected: Option<&Vec<usize>>| match (
                tensor, expected,
            ) {
                (None, None) => Ok(()),
                (Some(t), Some(shape)) if &t.shape == shape => Ok(()),
                (Some(t), Some(shape)) => Err(RunError::tensor(
                    path,
                    name,
                    format!("has shape {:?}, the run's is {shape:?}", t.shape),
                )),
                (None, Some(_)) => Err(RunError::tensor(path, name, "is missing")),
                (Some(_), None) => Err(RunError::tensor(
                    path,
                    name,
                    "is present, but the run's method has no such prompt",
                )),
            };
        check_shape(
            "global_prompt",
            self.global_prompt.as_ref(),
            layout.global_prompt.as_ref(),
        )?;
        for (i, client) in self.clients.iter().enumerate() {
            check_shape(
                &format!("client.{i}.local_prompt"),
                client.local_prompt.as_ref(),
                layout.local_prompt.as_ref(),
            )?;
            if let Some(buffer) = &client.optimizer.momentum_buffer {
                if buffer.len() != layout.parameters {
                    return Err(RunError::tensor(
                        path,
                        &format!("client.{i}.momentum_buffer"),
                        format!(
                            "holds {} values, the client trains {} parameters",
                            buffer.len(),
                            layout.parameters
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Reads tensors from a parsed file, recording which names were read.
struct Reader<'a> {
    file: &'a SafeTensors<'a>,
    path: &'a Path,
    read: Vec<String>,
}

impl<'a> Reader<'a> {
    fn view(&mut self, name: &str) -> Result<Option<TensorView<'a>>, RunError> {
        match self.file.tensor(name) {
            Ok(view) => {
                self.read.push(name.to_owned());
                Ok(Some(view))
            }
            Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
            Err(e) => Err(RunError::tensor(self.path, name, e.to_string())),
        }
    }

    fn f32_tensor(&mut self, name: &str) -> Result<Option<Tensor>, RunError> {
        let Some(view) = self.view(name)? else {
            return Ok(None);
        };
        if view.dtype() != Dtype::F32 {
            return Err(RunError::tensor(
                self.path,
                name,
                format!("must be F32, is {:?}", view.dtype()),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("four bytes")))
            .collect();
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(RunError::NonFinite {
                path: self.path.to_path_buf(),
                tensor: name.to_string(),
                value: values[index],
                index,
            });
        }
        Ok(Some(Tensor {
            shape: view.shape().to_vec(),
            values,
        }))
    }
}
