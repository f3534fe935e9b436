//! A client's state on disk: saved to a file and restored from one, in the run checkpoint
//! format with one client.

use std::ffi::c_char;
use std::path::Path;

use fedotp_host::run::{Checkpoint, CheckpointLayout, ClientState, RngState, Tensor};
use sha2::{Digest, Sha256};

use super::{Client, FedotpClient};
use crate::boundary::{call, string};
use crate::handle;
use crate::status::{Failure, FEDOTP_ERR_STATE_FORMAT, FEDOTP_ERR_STATE_MISMATCH};

/// The generator's name in a saved state.
const RNG_NAME: &str = "client";

impl Client {
    /// What a saved state must have been saved by: the model (its weights' fingerprint), the
    /// prompt length and the class names in order, as SHA-256 hex (length-prefixed, so no two
    /// inputs collide by concatenation).
    fn identity(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"fedotp client state 2");
        hash.update(self.model_fingerprint.as_bytes());
        hash.update(u64::from(self.shape.n_ctx()).to_le_bytes());
        hash.update((self.class_names.len() as u64).to_le_bytes());
        for name in &self.class_names {
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
        }
        hash.finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The shapes of a saved state: one prompt of each kind, `[1, n_ctx, width]`.
    fn layout(&self) -> CheckpointLayout {
        let prompt = vec![1, self.shape.n_ctx() as usize, self.shape.width() as usize];
        CheckpointLayout {
            clients: 1,
            global_prompt: Some(prompt.clone()),
            local_prompt: Some(prompt),
            parameters: self.context.len(),
        }
    }

    fn prompt_tensor(&self, values: &[f32]) -> Option<Tensor> {
        Tensor::new(self.layout().local_prompt?, values.to_vec())
    }

    /// The client's state in the run checkpoint format (one client).
    fn checkpoint(&self) -> Checkpoint {
        let (global, local) = self.context.split_at(self.shape.len());
        Checkpoint {
            round: self.round,
            config_hash: self.identity(),
            global_prompt: self.prompt_tensor(global),
            clients: vec![ClientState {
                local_prompt: self.prompt_tensor(local),
                optimizer: self.optimizer.clone(),
            }],
            rngs: [(RNG_NAME.to_string(), RngState::of(&self.rng))].into(),
        }
    }

    /// Installs `checkpoint`, read from `path`, after checking it was saved by a client like
    /// this one.
    fn restore(&mut self, checkpoint: Checkpoint, path: &Path) -> Result<(), Failure> {
        if checkpoint.config_hash != self.identity() {
            return Err(Failure::new(
                FEDOTP_ERR_STATE_MISMATCH,
                format!(
                    "{}: saved by a client of another model (other weights), other class names or \
                     another n_ctx",
                    path.display()
                ),
            ));
        }
        checkpoint.check(&self.layout(), path)?;
        let format = |what: &str| {
            Failure::new(
                FEDOTP_ERR_STATE_FORMAT,
                format!("{}: {what}", path.display()),
            )
        };
        let rng = checkpoint
            .rngs
            .get(RNG_NAME)
            .ok_or_else(|| format("no `rng.client` generator state"))?
            .restore();
        let (Some(global), Some(state)) = (checkpoint.global_prompt, checkpoint.clients.first())
        else {
            return Err(format("no prompts"));
        };
        let local = state
            .local_prompt
            .as_ref()
            .ok_or_else(|| format("no local prompt"))?;
        let mut context = global.values;
        context.extend_from_slice(&local.values);
        self.context = context;
        self.optimizer = state.optimizer.clone();
        self.rng = rng;
        self.round = checkpoint.round;
        self.trained = None;
        Ok(())
    }
}

/// Saves the client's state — both prompts, the SGD momentum, the generator and the round of
/// its global prompt — to a safetensors file, atomically (a temporary file renamed over
/// `path`: a crash leaves the old file or the new one, never a mix). The file is fedotp's run
/// checkpoint format with one client (tensors `global_prompt`, `client.0.local_prompt`,
/// `client.0.momentum_buffer`, `rng.client`), readable by PyTorch and NumPy too.
///
/// - `path`: NUL-terminated UTF-8 path; its directory must exist.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `path`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_INVALID_UTF8`;
/// `FEDOTP_ERR_IO`. Thread-safe.
///
/// # Safety
/// A non-NULL `path` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_save(
    client: *const FedotpClient,
    path: *const c_char,
) -> i32 {
    call(|| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let path = Path::new(unsafe { string(path, "path") }?);
        let checkpoint = handle::with(client, "client", |client| Ok(client.checkpoint()))?;
        Ok(checkpoint.save(path)?)
    })
}

/// Restores a state saved by `fedotp_client_save` into a client created with the same model
/// sizes, class names (same order) and `n_ctx`: the hospital restarts where it left off. The
/// other settings (OT, optimiser, batch, device) are the client's own and may differ. The
/// client must train again before it writes an update.
///
/// - `path`: NUL-terminated UTF-8 path of the file.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`client`, `path`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_INVALID_UTF8`;
/// `FEDOTP_ERR_IO` (cannot be read); `FEDOTP_ERR_STATE_FORMAT` (not a client state: not
/// safetensors, no fedotp metadata, a missing or misshapen tensor; the detail names it);
/// `FEDOTP_ERR_STATE_MISMATCH` (saved by a client of another model — other weights, even of
/// the same architecture — other class names or another `n_ctx`); `FEDOTP_ERR_NON_FINITE` (a
/// prompt or the optimiser's momentum holds NaN or an infinity; the detail names the tensor
/// and the index). On error the client is unchanged. Thread-safe.
///
/// # Safety
/// A non-NULL `path` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fedotp_client_load(client: *mut FedotpClient, path: *const c_char) -> i32 {
    call(|| {
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let path = Path::new(unsafe { string(path, "path") }?);
        handle::with(client, "client", |client| {
            let checkpoint = Checkpoint::load(path)?;
            client.restore(checkpoint, path)
        })
    })
}
