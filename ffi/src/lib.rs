//! libfedotp: the C ABI of fedotp.
//!
//! Every function returns an `int32_t` status: `FEDOTP_OK` (0) or a distinct negative code
//! (`fedotp_status_str` names it, `fedotp_last_error_message` gives the detail for the calling
//! thread). Every pointer, length and parameter is checked before anything is computed, no panic
//! crosses the boundary, and on error no output is written.
//!
//! The header `include/fedotp.h` is generated from this crate by cbindgen (`ffi/cbindgen.toml`);
//! `cargo test -p fedotp-ffi` fails when the checked-in header is stale, and
//! `UPDATE_HEADER=1 cargo test -p fedotp-ffi --test header` rewrites it.

// Every unsafe operation sits in its own `unsafe {}` block with a `// SAFETY:` comment that
// names the invariant it relies on (checked here, or the C caller's contract in the header).
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod aggregator;
mod boundary;
mod client;
mod handle;
mod images;
mod info;
mod last_error;
mod message;
mod model;
mod ot;
mod status;

pub use aggregator::{
    fedotp_aggregator_add_message, fedotp_aggregator_add_update, fedotp_aggregator_finish,
    fedotp_aggregator_free, fedotp_aggregator_new, fedotp_aggregator_progress,
    fedotp_aggregator_start_round, FedotpAggregator, FEDOTP_MAX_CLIENTS,
};
pub use client::{
    fedotp_client_config_default, fedotp_client_device, fedotp_client_free,
    fedotp_client_global_prompt, fedotp_client_load, fedotp_client_new, fedotp_client_predict,
    fedotp_client_prompt_shape, fedotp_client_read_global, fedotp_client_save, fedotp_client_train,
    fedotp_client_update_message_size, fedotp_client_write_update, FedotpClient,
    FedotpClientConfig, FedotpProgressFn, FedotpTrainReport, FEDOTP_DEVICE_CPU, FEDOTP_DEVICE_CUDA,
    FEDOTP_OT_STOPPING_PER_PROBLEM, FEDOTP_OT_STOPPING_RELEASED,
};
pub use handle::fedotp_live_handles;
pub use images::{
    fedotp_images_add_encoded, fedotp_images_add_encoded_windowed, fedotp_images_add_gray16,
    fedotp_images_add_gray8, fedotp_images_add_rgb8, fedotp_images_add_tokens, fedotp_images_count,
    fedotp_images_free, fedotp_images_new, FedotpGrayWindow, FedotpImages, FEDOTP_NO_LABEL,
};
pub use info::{fedotp_device_available, fedotp_version, fedotp_version_numbers};
pub use last_error::fedotp_last_error_message;
pub use message::{
    fedotp_client_update_decode, fedotp_client_update_encode, fedotp_client_update_size,
    fedotp_global_prompt_decode, fedotp_global_prompt_encode, fedotp_global_prompt_size,
    FedotpClientUpdateHeader, FEDOTP_MAX_PROMPT_LEN,
};
pub use model::{
    fedotp_model_free, fedotp_model_info, fedotp_model_load, fedotp_model_new_tiny, FedotpModel,
    FedotpModelInfo,
};
pub use ot::{fedotp_ot_logits, fedotp_ot_plan, FedotpOtParams, FedotpOtReport};
pub use status::*;
