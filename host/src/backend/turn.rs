//! Taking turns on a backend that several threads share.
//!
//! A backend is `Sync`, so threads may share one; but a GPU backend queues every operation on
//! one stream through one cuBLAS handle, which serve one caller at a time. A caller that
//! computes a sequence of operations (a training, a prediction) holds the backend's [`Turn`]
//! for the sequence ([`Backend::take_turn`](super::Backend::take_turn)); the CPU backend has
//! no such limit and hands out turns without waiting.
//!
//! A thread that already holds a device's turn and asks for it again — a progress callback that
//! calls into another client on the same GPU, say — would wait for itself for ever; it is told
//! so instead ([`BackendError::TurnHeld`]).

use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{BackendError, BackendResult};

thread_local! {
    /// The locks whose turns this thread holds, by address.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// A caller's exclusive use of a backend's device, until it is dropped.
#[must_use = "the turn ends when it is dropped"]
pub struct Turn<'a> {
    /// The lock held and its address (this thread's entry in `HELD`); `None` for a backend on
    /// which callers compute in parallel.
    held: Option<(MutexGuard<'a, ()>, usize)>,
}

impl<'a> Turn<'a> {
    /// A turn that excludes no one: for backends whose callers may compute in parallel.
    pub fn shared() -> Self {
        Turn { held: None }
    }

    /// Waits until `lock` is free and holds it; refuses at once if this thread holds it already.
    pub fn of(lock: &'a Mutex<()>) -> BackendResult<Self> {
        let address = lock as *const Mutex<()> as usize;
        if HELD.with(|held| held.borrow().contains(&address)) {
            return Err(BackendError::TurnHeld);
        }
        // A poisoned lock only means another caller panicked during its turn (and reported
        // it); the lock guards no data.
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        HELD.with(|held| held.borrow_mut().push(address));
        Ok(Turn {
            held: Some((guard, address)),
        })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some((_, address)) = &self.held {
            HELD.with(|held| held.borrow_mut().retain(|other| other != address));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::Turn;
    use crate::backend::{Backend, BackendError, Cpu};

    #[test]
    fn a_turn_holds_its_lock_until_dropped() {
        let lock = Mutex::new(());
        let turn = Turn::of(&lock).unwrap();
        assert!(lock.try_lock().is_err());
        drop(turn);
        assert!(lock.try_lock().is_ok());
    }

    #[test]
    fn a_thread_that_holds_a_turn_is_refused_another_instead_of_waiting_for_itself() {
        let lock = Mutex::new(());
        let other = Mutex::new(());
        let turn = Turn::of(&lock).unwrap();
        assert!(matches!(Turn::of(&lock), Err(BackendError::TurnHeld)));
        // Another device's turn is still free to this thread.
        drop(Turn::of(&other).unwrap());
        drop(turn);
        drop(Turn::of(&lock).unwrap());
    }

    #[test]
    fn a_panic_during_a_turn_does_not_end_the_turns() {
        let lock = Arc::new(Mutex::new(()));
        let held = Arc::clone(&lock);
        let panicked = std::thread::spawn(move || {
            let _turn = Turn::of(&held).unwrap();
            panic!("a caller fails during its turn");
        })
        .join();
        assert!(panicked.is_err() && lock.is_poisoned());
        let _turn = Turn::of(&lock).unwrap();
    }

    #[test]
    fn cpu_turns_exclude_no_one() {
        let cpu = Cpu::new();
        let _first = cpu.take_turn().unwrap();
        let _second = cpu.take_turn().unwrap();
    }
}
