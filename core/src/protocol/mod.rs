//! The prompt-aggregation protocol: what the server and the clients of a FedOTP federation send
//! each other, and how the server averages what it receives.
//!
//! A round `r` goes:
//!
//! 1. The server sends every sampled client a [`GlobalPrompt`] (round `r`, the global prompt).
//! 2. Each client trains its `[global, local]` prompt pair and sends back a [`ClientUpdate`]:
//!    round `r`, its id, its training-set size, its trained global prompt (never the local one)
//!    and optionally its training loss and accuracy.
//! 3. The server feeds each update to an [`Aggregator`], which keeps the weighted FedAvg
//!    `Σ n_i · p_i / Σ n_i` (docs/ALGORITHM.md §3) and refuses anything that does not belong in
//!    it; once the round's updates are in, [`Aggregator::finish`] writes the next global prompt.
//!
//! Both messages travel in one binary format (`docs/PROTOCOL.md`): a fixed little-endian header
//! with magic, version, kind and explicit lengths, the prompt as `f32`, and a CRC-32 over the
//! whole. [`GlobalPrompt::encode`] / [`ClientUpdate::encode`] write it into a caller buffer of
//! exactly [`GlobalPrompt::encoded_len`] / [`ClientUpdate::encoded_len`] bytes; `decode` checks
//! every field against the shape the receiver expects, names the first defect in a
//! [`DecodeError`], and never panics, whatever the bytes.
//!
//! Nothing here allocates: messages borrow their prompts, decoding writes into the caller's
//! buffer, and the aggregator works in storage the caller hands it.

mod aggregate;
mod message;
mod wire;

pub use aggregate::{AggregateError, Aggregator};
pub use message::{ClientUpdate, GlobalPrompt, MessageKind, PromptShape};
pub use wire::{DecodeError, EncodeError, Field, MAGIC, VERSION};
