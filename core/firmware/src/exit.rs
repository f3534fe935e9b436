//! How the run ends: a semihosting exit whose status qemu passes on. A panic or a fault ends it
//! with a message and a non-zero status, never a hang.

use core::fmt::Write;
use core::panic::PanicInfo;
use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hio};

/// Ends the run: qemu exits with status 0 on success, 1 otherwise.
pub fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached when a debugger, not qemu, serves the semihosting call and resumes us.
    loop {
        cortex_m::asm::bkpt();
    }
}

/// Prints `message` on the host's stdout through a handle of its own: the shared one of
/// `hprintln!` may be held by the code that failed.
fn report(message: core::fmt::Arguments<'_>) {
    if let Ok(mut out) = hio::hstdout() {
        let _ = writeln!(out, "{message}");
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    report(format_args!("PANIC: {info}"));
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    report(format_args!("HARD FAULT: {frame:?}"));
    exit(false)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    report(format_args!("UNEXPECTED EXCEPTION: {irqn}"));
    exit(false)
}
