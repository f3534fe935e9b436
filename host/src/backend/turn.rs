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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::Turn;
    use crate::backend::{Backend, Cpu};

    #[test]
    fn a_turn_holds_its_lock_until_dropped() {
        let lock = Mutex::new(());
        let turn = Turn::of(&lock);
        assert!(lock.try_lock().is_err());
        drop(turn);
        assert!(lock.try_lock().is_ok());
    }

    #[test]
    fn a_panic_during_a_turn_does_not_end_the_turns() {
        let lock = Arc::new(Mutex::new(()));
        let held = Arc::clone(&lock);
        let panicked = std::thread::spawn(move || {
            let _turn = Turn::of(&held);
            panic!("a caller fails during its turn");
        })
        .join();
        assert!(panicked.is_err() && lock.is_poisoned());
        let _turn = Turn::of(&lock);
    }

    #[test]
    fn cpu_turns_exclude_no_one() {
        let cpu = Cpu::new();
        let _first = cpu.take_turn();
        let _second = cpu.take_turn();
    }
}
