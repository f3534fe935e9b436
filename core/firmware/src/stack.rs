//! Stack high-water mark of one call, by painting.
//!
//! Before the call, the free stack below the caller's stack pointer is filled with a known word;
//! after it, the lowest word that no longer holds that word marks how deep the call went. This
//! counts the stack the call *wrote*: a frame that reserves space and never touches it would be
//! under-counted by that space (the solver's frames are register spills and locals it writes).
//! No interrupt is enabled while a measured call runs, so no exception frame lands in the window.

use core::arch::asm;

/// The paint: an unlikely value for a float, an address or a small integer.
const PAINT: u32 = 0xC5AC_CE55;

/// Bytes below the stack pointer painted before the call: far more than the OT solver needs,
/// small enough that painting and scanning cost little.
const WINDOW: usize = 16 * 1024;

extern "C" {
    /// Lowest address the stack may reach: the end of statically allocated RAM (cortex-m-rt's
    /// linker script).
    static _stack_end: u32;
}

/// How deep a measured call went, or why it could not be told.
#[derive(Clone, Copy, Debug)]
pub enum StackUse {
    /// Bytes of stack the call wrote below its caller's stack pointer.
    Bytes(usize),
    /// The call wrote the lowest painted word: it used at least `WINDOW` bytes.
    WindowExhausted,
    /// Fewer than `WINDOW` bytes of stack are left to paint.
    NoRoom,
}

/// Runs `f` and reports the stack it used (its own frame and everything it calls).
#[inline(never)]
pub fn high_water<R>(f: impl FnOnce() -> R) -> (R, StackUse) {
    let top: usize;
    // SAFETY: reads the stack pointer.
    unsafe { asm!("mov {}, sp", out(reg) top, options(nomem, nostack, preserves_flags)) };
    let limit = core::ptr::addr_of!(_stack_end) as usize;
    let bottom = top - WINDOW;
    if bottom < limit {
        return (f(), StackUse::NoRoom);
    }
    // SAFETY: [bottom, top) lies between the end of static RAM and the stack pointer: memory no
    // live object occupies. Painted in assembly so that no compiled code's frame is in the way.
    unsafe {
        asm!(
            "2:",
            "str {paint}, [{at}], #4",
            "cmp {at}, {top}",
            "blo 2b",
            at = inout(reg) bottom => _,
            top = in(reg) top,
            paint = in(reg) PAINT,
            options(nostack),
        )
    };
    let result = call(f);
    let lowest_written = (bottom..top)
        .step_by(4)
        // SAFETY: the same free stack, read back; `f` has returned, so no frame lives there now.
        .find(|&address| unsafe { core::ptr::read_volatile(address as *const u32) } != PAINT);
    let used = match lowest_written {
        Some(address) if address == bottom => StackUse::WindowExhausted,
        Some(address) => StackUse::Bytes(top - address),
        None => StackUse::Bytes(0),
    };
    (result, used)
}

/// Calls `f` in a frame of its own, below the stack pointer `high_water` read: were `f` inlined
/// into `high_water`, its locals would sit in `high_water`'s frame, above the painted window.
#[inline(never)]
fn call<R>(f: impl FnOnce() -> R) -> R {
    f()
}
