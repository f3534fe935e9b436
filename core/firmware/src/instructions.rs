//! Counting executed instructions on QEMU, which has no cycle counter.
//!
//! QEMU does not model the Cortex-M4's DWT cycle counter, and its timing is not the silicon's
//! anyway. What it can give exactly is the number of instructions executed: run with
//! `-icount shift=0`, its virtual clock advances by exactly 1 ns per instruction, and every
//! timer the board has follows that clock. We read SysTick, clocked from the processor clock
//! (25 MHz on `mps2-an386`, so one tick per 40 instructions), with its interrupt off.
//!
//! We do not trust the ratio on faith: [`InstructionCounter::calibrate`] times a hand-written
//! loop whose instruction count is known (two instructions per turn) at two lengths, and the
//! difference of the two gives instructions per tick, free of the cost of reading the timer. The
//! same loop timed twice must give the same ticks (±1, the phase of the tick): without `-icount`
//! the clock follows the host's time and that check fails.
//!
//! Resolution: one tick (40 instructions) per measurement. Counts are instructions, not cycles:
//! a real Cortex-M4 takes more cycles than instructions (2-cycle loads, 14-cycle divisions,
//! branch refills, flash wait states), which QEMU does not model.

use core::arch::asm;
use cortex_m::peripheral::{syst::SystClkSource, SYST};

/// SysTick's counter is 24 bits wide.
const COUNTER_MASK: u32 = 0x00FF_FFFF;

/// Turns of the calibration loop: 2 M instructions, 50 k ticks at 40 instructions per tick.
const CALIBRATION_TURNS: u32 = 1_000_000;

/// A SysTick-based instruction counter, calibrated.
pub struct InstructionCounter {
    syst: SYST,
    /// Calibration: `calibration_instructions` instructions took `calibration_ticks` ticks.
    calibration_instructions: u64,
    calibration_ticks: u64,
}

/// Why instructions cannot be counted.
#[derive(Clone, Copy, Debug)]
pub enum CountError {
    /// The timed span took longer than SysTick's 24-bit period.
    Wrapped,
    /// The same loop timed twice gave different tick counts: QEMU runs without `-icount`.
    NotDeterministic {
        /// Ticks of the first timing.
        first: u32,
        /// Ticks of the second.
        second: u32,
    },
}

impl core::fmt::Display for CountError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            CountError::Wrapped => f.write_str(
                "the span outlasted SysTick's 24-bit period (is qemu running with -icount shift=0?)",
            ),
            CountError::NotDeterministic { first, second } => write!(
                f,
                "the same loop took {first} and then {second} ticks: qemu runs without -icount"
            ),
        }
    }
}

impl InstructionCounter {
    /// Starts SysTick on the processor clock and calibrates it against a loop of known length.
    pub fn calibrate(mut syst: SYST) -> Result<Self, CountError> {
        syst.disable_interrupt();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(COUNTER_MASK);
        syst.clear_current();
        syst.enable_counter();
        let mut counter = InstructionCounter {
            syst,
            calibration_instructions: 0,
            calibration_ticks: 0,
        };
        let ((), short) = counter.ticks(|| spin(CALIBRATION_TURNS));
        let ((), again) = counter.ticks(|| spin(CALIBRATION_TURNS));
        let ((), long) = counter.ticks(|| spin(2 * CALIBRATION_TURNS));
        let (short, again, long) = (short?, again?, long?);
        if short.abs_diff(again) > 1 {
            return Err(CountError::NotDeterministic {
                first: short,
                second: again,
            });
        }
        // The extra CALIBRATION_TURNS turns of the long run: 2 instructions each.
        counter.calibration_instructions = 2 * u64::from(CALIBRATION_TURNS);
        counter.calibration_ticks = u64::from(long - short);
        Ok(counter)
    }

    /// Instructions per SysTick tick, as calibrated.
    pub fn instructions_per_tick(&self) -> f32 {
        self.calibration_instructions as f32 / self.calibration_ticks as f32
    }

    /// Runs `f` and returns the SysTick ticks it took.
    pub fn ticks<R>(&mut self, f: impl FnOnce() -> R) -> (R, Result<u32, CountError>) {
        // Reading the control register clears the wrap flag.
        self.syst.has_wrapped();
        let start = SYST::get_current();
        let result = f();
        let end = SYST::get_current();
        // The counter counts down from `start`: after one reload it reads above `start`. Having
        // reloaded and reading at or below `start`, it went round at least once in full.
        if self.syst.has_wrapped() && end <= start {
            return (result, Err(CountError::Wrapped));
        }
        (result, Ok(start.wrapping_sub(end) & COUNTER_MASK))
    }

    /// Runs `f` and returns the instructions it executed (to within one tick).
    pub fn instructions<R>(&mut self, f: impl FnOnce() -> R) -> (R, Result<u64, CountError>) {
        let (result, ticks) = self.ticks(f);
        (result, ticks.map(|t| self.ticks_to_instructions(t)))
    }

    /// Converts ticks to instructions with the calibrated ratio, rounded to the nearest.
    pub fn ticks_to_instructions(&self, ticks: u32) -> u64 {
        (u64::from(ticks) * self.calibration_instructions + self.calibration_ticks / 2)
            / self.calibration_ticks
    }
}

/// Executes exactly `2 · turns` instructions (a decrement and a branch per turn).
#[inline(always)]
fn spin(turns: u32) {
    // SAFETY: touches only its own register and the flags.
    unsafe {
        asm!(
            "2:",
            "subs {turns}, {turns}, #1",
            "bne 2b",
            turns = inout(reg) turns => _,
            options(nomem, nostack),
        )
    };
}
