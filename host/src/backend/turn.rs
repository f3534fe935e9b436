//! Taking turns on a backend that several threads share.
//!
//! A backend is `Sync`, so threads may share one; but a GPU backend queues every operation on
//! one stream through one cuBLAS handle, which serve one caller at a time. A caller that
//! computes a sequence of operations (a training, a prediction) holds the backend's [`Turn`]
//! for the sequence ([`Backend::take_turn`](super::Backend::take_turn)); the CPU backend has
//! no such limit and hands out turns without waiting.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A caller's exclusive use of a backend's device, until it is dropped.
#[must_use = "the turn ends when it is dropped"]
pub struct Turn<'a> {
    /// `None` for a backend on which callers compute in parallel.
    _guard: Option<MutexGuard<'a, ()>>,
}

impl<'a> Turn<'a> {
    /// A turn that excludes no one: for backends whose callers may compute in parallel.
    pub fn shared() -> Self {
        Turn { _guard: None }
    }

    /// Waits until `lock` is free and holds it.
    pub fn of(lock: &'a Mutex<()>) -> Self {
        // A poisoned lock only means another caller panicked during its turn (and reported
        // it); the lock guards no data.
        Turn {
            _guard: Some(lock.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }
}
