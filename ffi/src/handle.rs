//! Opaque handles: C holds ids, never pointers to Rust objects.
//!
//! Every object that C keeps between calls (a model, an image set, a client, an aggregator) lives
//! in one process-wide registry, and the handle C receives is its id disguised as a pointer to an
//! opaque struct (`FedotpModel *`, `FedotpImages *`, `FedotpClient *`, `FedotpAggregator *`),
//! which C cannot dereference. Every call looks the id up first, so a handle that
//!
//! - was freed (ids are never reused, so it cannot reach a newer object),
//! - was never issued (a forged, uninitialised or corrupted value), or
//! - names an object of another type (an aggregator passed where a model is expected)
//!
//! is refused with `FEDOTP_ERR_INVALID_HANDLE` or `FEDOTP_ERR_WRONG_HANDLE_TYPE` instead of
//! being dereferenced. Handle values are odd, so the address of any real object (at least
//! 2-byte aligned) is never mistaken for one.
//!
//! Each object sits behind its own mutex: calls on one handle from several threads take turns,
//! calls on different handles run in parallel, and freeing a handle while another thread is
//! inside a call on it is safe: the call finishes on the object, which is dropped afterwards.
//! A call on a handle that the same thread already holds — from a progress callback inside a
//! training on it — would wait for itself: it is refused with `FEDOTP_ERR_HANDLE_BUSY`. So is
//! freeing such a handle from there: the call further up still uses the object.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::boundary::{self, call};
use crate::status::{
    Failure, FEDOTP_ERR_HANDLE_BUSY, FEDOTP_ERR_INVALID_HANDLE, FEDOTP_ERR_NULL_POINTER,
    FEDOTP_ERR_OUT_OF_MEMORY, FEDOTP_ERR_PANIC, FEDOTP_ERR_WRONG_HANDLE_TYPE,
};

/// A C handle type: an opaque struct that C only ever holds a pointer to, standing for an
/// object of type [`Handle::Object`] in the registry.
pub(crate) trait Handle {
    /// The Rust object behind handles of this type.
    type Object: Send + 'static;
    /// The C type's name, for error messages.
    const NAME: &'static str;
}

struct Entry {
    /// `Handle::NAME` of the handle type it was registered as.
    type_name: &'static str,
    /// An `Arc<Mutex<H::Object>>`, type-erased so that one map holds every handle type.
    object: Arc<dyn Any + Send + Sync>,
}

struct Registry {
    /// The id the next handle gets. Ids start at 1 and only grow, so an id below it that is not
    /// in `entries` was freed, and one at or above it was never issued.
    next_id: usize,
    entries: BTreeMap<usize, Entry>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    next_id: 1,
    entries: BTreeMap::new(),
});

// No code panics while it holds the registry's lock (a map insertion that cannot allocate
// aborts), so a poisoned lock still guards a consistent map.
fn read() -> RwLockReadGuard<'static, Registry> {
    REGISTRY.read().unwrap_or_else(PoisonError::into_inner)
}

fn write() -> RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(PoisonError::into_inner)
}

/// The handle value of `id`: `2 id + 1`, odd, so no aligned address is ever a valid handle.
fn handle_value(id: usize) -> Option<usize> {
    id.checked_mul(2)?.checked_add(1)
}

/// The id a handle value stands for, if it has the form of one.
fn id_of(value: usize) -> Option<usize> {
    (value % 2 == 1).then_some(value / 2)
}

/// Registers `object` and returns the new handle that names it.
pub(crate) fn register<H: Handle>(object: H::Object) -> Result<*mut H, Failure> {
    let mut registry = write();
    let id = registry.next_id;
    let value = handle_value(id)
        .filter(|_| id < usize::MAX / 2)
        .ok_or_else(|| {
            Failure::new(
                FEDOTP_ERR_OUT_OF_MEMORY,
                "no handle ids left: this process has created the most handles it can",
            )
        })?;
    registry.entries.insert(
        id,
        Entry {
            type_name: H::NAME,
            object: Arc::new(Mutex::new(object)),
        },
    );
    registry.next_id = id + 1;
    Ok(std::ptr::without_provenance_mut(value))
}

thread_local! {
    /// The ids of the objects whose locks calls on this thread hold, innermost last.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks an object's lock as held by this thread until dropped.
struct Held;

impl Held {
    fn take(id: usize) -> Held {
        HELD.with(|held| held.borrow_mut().push(id));
        Held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|held| held.borrow_mut().pop());
    }
}

/// Runs `body` on the object `handle` names, holding that object's lock for the duration.
///
/// `name` is the argument's name, for error messages. Refuses NULL, a freed or never-issued
/// handle and a handle of another type, each with its own status, and a handle this thread
/// already holds further up its stack (it would wait for itself).
pub(crate) fn with<H: Handle, R>(
    handle: *const H,
    name: &str,
    body: impl FnOnce(&mut H::Object) -> Result<R, Failure>,
) -> Result<R, Failure> {
    let (id, object) = lookup(handle, name)?;
    if HELD.with(|held| held.borrow().contains(&id)) {
        return Err(Failure::new(
            FEDOTP_ERR_HANDLE_BUSY,
            format!(
                "`{name}` is held by a call further up this thread (a progress callback calling \
                 libfedotp on the client or images it trains with?): the call would wait for itself"
            ),
        ));
    }
    // A panic in an earlier call on this object was caught at the boundary, but it may have
    // left the object half-changed: refuse to use it rather than compute from it.
    let mut object = object.lock().map_err(|_| {
        Failure::new(
            FEDOTP_ERR_PANIC,
            format!(
                "`{name}` is unusable: an internal error interrupted an earlier call on it; free it"
            ),
        )
    })?;
    let _held = Held::take(id);
    body(&mut object)
}

/// Frees the object `handle` names. NULL is a no-op; a freed, never-issued or wrong-type
/// handle is refused and nothing is freed, and so is a handle a call further up this thread
/// holds (`FEDOTP_ERR_HANDLE_BUSY`, as for every other call on it).
///
/// The object is dropped once no call on it is running any more: at once, or when the last
/// concurrent call on it (in another thread) returns.
pub(crate) fn release<H: Handle>(handle: *mut H, name: &str) -> Result<(), Failure> {
    if handle.is_null() {
        return Ok(());
    }
    let removed = {
        let mut registry = write();
        let (id, _) = find::<H>(&registry, handle.addr(), name)?;
        if HELD.with(|held| held.borrow().contains(&id)) {
            return Err(Failure::new(
                FEDOTP_ERR_HANDLE_BUSY,
                format!(
                    "`{name}` is held by a call further up this thread (a progress callback \
                     freeing the client or images it trains with?): nothing was freed"
                ),
            ));
        }
        registry.entries.remove(&id)
    };
    // Dropped here, outside the registry's lock: freeing a large object must not hold up calls
    // on other handles.
    drop(removed);
    Ok(())
}

/// The number of live handles, of every type, in this process: what was created and not yet
/// freed. For leak checks (a program that freed everything sees 0), since objects behind handles
/// stay reachable from the registry and so escape leak detectors.
///
/// - `count_out`: receives the count.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`. Thread-safe (other threads may change
/// the count at any time).
///
/// # Safety
/// A non-NULL `count_out` must point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_live_handles(count_out: *mut usize) -> i32 {
    call(|| {
        let count = read().entries.len();
        // SAFETY: the caller passes a writable size_t or NULL.
        unsafe { boundary::write(count_out, count, "count_out") }
    })
}

/// An object in the registry, shared with the calls using it.
type Shared<T> = Arc<Mutex<T>>;

/// The id and the shared object `handle` names, after every check.
fn lookup<H: Handle>(handle: *const H, name: &str) -> Result<(usize, Shared<H::Object>), Failure> {
    if handle.is_null() {
        return Err(Failure::new(
            FEDOTP_ERR_NULL_POINTER,
            format!("`{name}` is NULL"),
        ));
    }
    let (id, entry) =
        find::<H>(&read(), handle.addr(), name).map(|(id, e)| (id, Arc::clone(&e.object)))?;
    // `find` checked the entry was registered as an `H`, so it holds an `H::Object`.
    let object = entry.downcast::<Mutex<H::Object>>().map_err(|_| {
        Failure::new(
            FEDOTP_ERR_PANIC,
            format!("internal error in libfedotp: `{name}` holds another object than its type"),
        )
    })?;
    Ok((id, object))
}

/// The id and entry of the live handle of type `H` with the (non-NULL) value `value`.
fn find<'r, H: Handle>(
    registry: &'r Registry,
    value: usize,
    name: &str,
) -> Result<(usize, &'r Entry), Failure> {
    let invalid = |why: &str| {
        Failure::new(
            FEDOTP_ERR_INVALID_HANDLE,
            format!("`{name}` ({value:#x}) {why}"),
        )
    };
    let Some(id) = id_of(value).filter(|&id| id >= 1 && id < registry.next_id) else {
        return Err(invalid(&format!(
            "is not a handle libfedotp issued (uninitialised, forged or corrupted?); expected a {}",
            H::NAME
        )));
    };
    let Some(entry) = registry.entries.get(&id) else {
        return Err(invalid("was already freed"));
    };
    if !(*entry.object).is::<Mutex<H::Object>>() {
        return Err(Failure::new(
            FEDOTP_ERR_WRONG_HANDLE_TYPE,
            format!(
                "`{name}` is a {} handle, but a {} is expected",
                entry.type_name,
                H::NAME
            ),
        ));
    }
    Ok((id, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    struct Counter;
    impl Handle for Counter {
        type Object = u64;
        const NAME: &'static str = "Counter";
    }

    struct Label;
    impl Handle for Label {
        type Object = String;
        const NAME: &'static str = "Label";
    }

    fn status<R>(result: Result<R, Failure>) -> i32 {
        result.err().map_or(0, |failure| failure.status)
    }

    #[test]
    fn a_live_handle_reaches_its_object() {
        let counter = register::<Counter>(41).unwrap();
        with(counter, "counter", |value| {
            *value += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(with(counter, "counter", |value| Ok(*value)).unwrap(), 42);
        release(counter, "counter").unwrap();
    }

    #[test]
    fn handles_are_odd_and_never_reused() {
        let first = register::<Counter>(1).unwrap();
        release(first, "first").unwrap();
        let second = register::<Counter>(2).unwrap();
        assert_ne!(first, second);
        assert_eq!(first.addr() % 2, 1);
        assert_eq!(second.addr() % 2, 1);
        release(second, "second").unwrap();
    }

    #[test]
    fn freed_handles_are_refused() {
        let counter = register::<Counter>(7).unwrap();
        release(counter, "counter").unwrap();
        let failure = with(counter, "counter", |value| Ok(*value)).unwrap_err();
        assert_eq!(failure.status, FEDOTP_ERR_INVALID_HANDLE);
        assert!(
            failure.message.contains("already freed"),
            "{}",
            failure.message
        );
        assert_eq!(
            status(release(counter, "counter")),
            FEDOTP_ERR_INVALID_HANDLE
        );
    }

    #[test]
    fn forged_handles_are_refused() {
        let local = 5u64;
        let forged = [
            std::ptr::from_ref(&local).cast::<Counter>(), // a real, aligned address
            std::ptr::without_provenance((usize::MAX / 3) | 1), // odd, never issued
        ];
        for handle in forged {
            let failure = with(handle, "counter", |value| Ok(*value)).unwrap_err();
            assert_eq!(failure.status, FEDOTP_ERR_INVALID_HANDLE);
            assert!(
                failure.message.contains("not a handle"),
                "{}",
                failure.message
            );
        }
        assert_eq!(
            status(with(std::ptr::null::<Counter>(), "counter", |_| Ok(()))),
            FEDOTP_ERR_NULL_POINTER
        );
        assert_eq!(status(release(std::ptr::null_mut::<Counter>(), "c")), 0);
    }

    #[test]
    fn a_handle_of_another_type_is_refused_and_stays_live() {
        let label = register::<Label>("kept".to_string()).unwrap();
        let as_counter = label.cast::<Counter>();
        let failure = with(as_counter, "counter", |value| Ok(*value)).unwrap_err();
        assert_eq!(failure.status, FEDOTP_ERR_WRONG_HANDLE_TYPE);
        assert!(
            failure.message.contains("Label") && failure.message.contains("Counter"),
            "{}",
            failure.message
        );
        assert_eq!(
            status(release(as_counter, "counter")),
            FEDOTP_ERR_WRONG_HANDLE_TYPE
        );
        assert_eq!(with(label, "label", |s| Ok(s.clone())).unwrap(), "kept");
        release(label, "label").unwrap();
    }

    #[test]
    fn calls_on_one_handle_from_many_threads_take_turns() {
        let counter = register::<Counter>(0).unwrap();
        // Raw pointers are not Send; the handle's value is what crosses threads, as in C.
        let value = counter.addr();
        thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(move || {
                    let counter = std::ptr::without_provenance::<Counter>(value);
                    for _ in 0..1000 {
                        with(counter, "counter", |n| {
                            // A read-modify-write that would lose updates without the lock.
                            let seen = *n;
                            thread::yield_now();
                            *n = seen + 1;
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(with(counter, "counter", |n| Ok(*n)).unwrap(), 8000);
        release(counter, "counter").unwrap();
    }

    #[test]
    fn a_handle_held_further_up_the_thread_is_busy_not_a_deadlock() {
        let counter = register::<Counter>(1).unwrap();
        let label = register::<Label>("other".to_string()).unwrap();
        let result = with(counter, "counter", |n| {
            let inner = with(counter, "counter", |_| Ok(())).unwrap_err();
            assert_eq!(inner.status, FEDOTP_ERR_HANDLE_BUSY);
            assert!(
                inner.message.contains("wait for itself"),
                "{}",
                inner.message
            );
            // Another handle is free to use.
            let text = with(label, "label", |s| Ok(s.clone()))?;
            *n += 1;
            Ok(text)
        });
        assert_eq!(result.unwrap(), "other");
        // Nor can it be freed from inside a call on it; another handle can.
        let freed_inside = with(counter, "counter", |_| {
            let busy = release(counter, "counter").unwrap_err();
            assert_eq!(busy.status, FEDOTP_ERR_HANDLE_BUSY);
            assert!(
                busy.message.contains("nothing was freed"),
                "{}",
                busy.message
            );
            release(label, "label")
        });
        assert!(freed_inside.is_ok());
        assert_eq!(
            status(with(label, "label", |_| Ok(()))),
            FEDOTP_ERR_INVALID_HANDLE
        );
        // Released with its call: usable again, on this thread and others.
        assert_eq!(with(counter, "counter", |n| Ok(*n)).unwrap(), 2);
        release(counter, "counter").unwrap();
    }

    #[test]
    fn freeing_during_a_call_lets_the_call_finish() {
        let label = register::<Label>("alive".to_string()).unwrap();
        let value = label.addr();
        let result = with(label, "label", |s| {
            // Another thread frees the handle while this call holds the object.
            thread::spawn(move || {
                release(std::ptr::without_provenance_mut::<Label>(value), "label").unwrap()
            })
            .join()
            .unwrap();
            s.push_str(" until the end");
            Ok(s.clone())
        });
        assert_eq!(result.unwrap(), "alive until the end");
        assert_eq!(
            status(with(label, "label", |_| Ok(()))),
            FEDOTP_ERR_INVALID_HANDLE
        );
    }
}
