//! The firmware test program: `fedotp-core` on an emulated Cortex-M4F (qemu `mps2-an386`).
//!
//! It checks, and reports through semihosting:
//! 1. that the FPU is on (cortex-m-rt's reset handler enables it on `eabihf` targets);
//! 2. every OT reference case, solved in `f32` to convergence, against its float64 plan
//!    ([`ot_reference`]);
//! 3. the RAM and the instructions per iteration of the 196×2 unbalanced solve ([`ot_cost`]);
//! 4. one round of the prompt-aggregation protocol against the host's encoding of it: client
//!    updates and the next global prompt encoded, decoded and averaged ([`protocol_round`]);
//!
//! and exits with status 0 only if every check passed (a panic or a fault exits non-zero too).
//! `run.sh` builds it and runs it under qemu. Started with the semihosting command line `trace`
//! (by `cycles.sh`), it runs only the solves that script traces ([`ot_cost::trace`]).
#![no_std]
#![no_main]

mod exit;
mod instructions;
mod ot_cost;
mod ot_reference;
mod protocol_round;
mod stack;
mod tally;

/// The fixture reader shared, as source, with the host tests.
#[path = "../../tests/support/ot_cases.rs"]
mod ot_cases;

use cortex_m::peripheral::{scb::FpuAccessMode, SCB};
use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use fedotp_core::ot;
use protocol_round::ProtocolBuffers;
use tally::Tally;

/// The largest OT problem the program solves: FedOTP's 196 patches × 2 prompts.
const LARGEST_PLAN: usize = 196 * 2;
const LARGEST_WORKSPACE: usize = ot::workspace_len(196, 2);

/// The OT solver's buffers, static so that their size shows in the memory map, not the stack.
pub struct OtBuffers {
    /// Similarity matrix of the problem being solved.
    pub sim: [f32; LARGEST_PLAN],
    /// The solver's workspace.
    pub work: [f32; LARGEST_WORKSPACE],
    /// The transport plan.
    pub plan: [f32; LARGEST_PLAN],
}

#[entry]
fn main() -> ! {
    // cortex-m-rt turns each `static mut` of the entry function into a `&'static mut`.
    static mut OT_BUFFERS: OtBuffers = OtBuffers {
        sim: [0.0; LARGEST_PLAN],
        work: [0.0; LARGEST_WORKSPACE],
        plan: [0.0; LARGEST_PLAN],
    };
    static mut PROTOCOL_BUFFERS: ProtocolBuffers = ProtocolBuffers::ZERO;

    let peripherals = cortex_m::Peripherals::take().expect("peripherals are taken once");
    if trace_requested() {
        let counter = instructions::InstructionCounter::calibrate(peripherals.SYST);
        exit::exit(ot_cost::trace(OT_BUFFERS, counter));
    }
    hprintln!("fedotp-core on an emulated Cortex-M4F (qemu mps2-an386)");
    let mut tally = Tally::default();

    let fpu = SCB::fpu_access_mode();
    let verdict = tally.record(matches!(fpu, FpuAccessMode::Enabled));
    hprintln!(
        "FPU access (CPACR CP10/CP11, set by cortex-m-rt's reset handler): {}  {verdict}",
        match fpu {
            FpuAccessMode::Enabled => "full",
            FpuAccessMode::Privileged => "privileged only",
            FpuAccessMode::Disabled => "disabled",
        }
    );

    ot_reference::run(OT_BUFFERS, &mut tally);
    let counter = instructions::InstructionCounter::calibrate(peripherals.SYST);
    ot_cost::run(OT_BUFFERS, counter, &mut tally);
    protocol_round::run(PROTOCOL_BUFFERS, &mut tally);
    tally.finish()
}

/// Whether qemu passed the semihosting command line `trace` (`-semihosting-config
/// enable=on,arg=trace`, as `cycles.sh` does).
fn trace_requested() -> bool {
    let mut line = [0u8; 8];
    // SYS_GET_CMDLINE takes a block (buffer, its length) and writes a NUL-terminated line, or
    // fails when the line does not fit, as the ELF path that `cargo run` passes usually does not.
    let block = [line.as_mut_ptr() as usize, line.len()];
    // SAFETY: the host writes at most `line.len()` bytes into `line`, which outlives the call.
    let status =
        unsafe { cortex_m_semihosting::syscall(cortex_m_semihosting::nr::GET_CMDLINE, &block) };
    status == 0 && line.starts_with(b"trace\0")
}
