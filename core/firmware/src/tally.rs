//! The count of passed and failed checks, and the verdict it gives.

use cortex_m_semihosting::hprintln;

/// Checks run so far.
#[derive(Default)]
pub struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    /// Records one check; returns the word its report line ends with.
    pub fn record(&mut self, ok: bool) -> &'static str {
        if ok {
            self.passed += 1;
            "ok"
        } else {
            self.failed += 1;
            "FAIL"
        }
    }

    /// Prints the verdict and ends the run, successfully only if every check passed.
    pub fn finish(self) -> ! {
        hprintln!(
            "\n{} checks: {} passed, {} failed",
            self.passed + self.failed,
            self.passed,
            self.failed
        );
        crate::exit::exit(self.failed == 0 && self.passed > 0)
    }
}
