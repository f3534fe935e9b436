//! Reader of `fixtures/ot_cases.bin`, the float64 reference plans written by
//! `tests/scripts/ot_fixtures.py`. Shared, as source, by the host tests and the firmware test
//! program, so it uses neither `std` nor an allocator.

use fedotp_core::ot::{OtMode, OtParams};

/// One reference problem.
pub struct Case<'a> {
    pub m: usize,
    pub n: usize,
    pub eps: f32,
    pub gamma: f32,
    pub balanced: bool,
    sim: &'a [u8],
    plan: &'a [u8],
}

impl Case<'_> {
    /// Similarity `(i, j)`, row-major.
    pub fn sim(&self, k: usize) -> f32 {
        f32::from_le_bytes(self.sim[4 * k..4 * k + 4].try_into().unwrap())
    }

    /// Copies the similarity matrix into `out` (`m·n` values).
    pub fn sim_into(&self, out: &mut [f32]) {
        for (k, s) in out.iter_mut().enumerate() {
            *s = self.sim(k);
        }
    }

    /// Reference plan entry `k` (row-major), float64.
    pub fn plan(&self, k: usize) -> f64 {
        f64::from_le_bytes(self.plan[8 * k..8 * k + 8].try_into().unwrap())
    }

    /// The solver's parameters for this case, stopping at `tol` or `max_iter`.
    pub fn params(&self, max_iter: u32, tol: f32) -> OtParams {
        OtParams {
            eps: self.eps,
            gamma: self.gamma,
            max_iter,
            tol,
            mode: if self.balanced {
                OtMode::Balanced
            } else {
                OtMode::Unbalanced
            },
        }
    }
}

/// Iterates over the cases of a fixture file; panics on a malformed file (it is ours).
pub struct Cases<'a> {
    rest: &'a [u8],
    left: u32,
}

pub fn cases(bytes: &[u8]) -> Cases<'_> {
    assert_eq!(&bytes[..4], b"OTFX", "not an OT fixture file");
    assert_eq!(u32_at(bytes, 4), 1, "unknown OT fixture version");
    Cases {
        rest: &bytes[12..],
        left: u32_at(bytes, 8),
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

impl<'a> Iterator for Cases<'a> {
    type Item = Case<'a>;

    fn next(&mut self) -> Option<Case<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = self.rest;
        let (m, n) = (u32_at(r, 0) as usize, u32_at(r, 4) as usize);
        let eps = f32::from_bits(u32_at(r, 8));
        let gamma = f32::from_bits(u32_at(r, 12));
        let balanced = u32_at(r, 16) != 0;
        let (sim, r) = r[20..].split_at(4 * m * n);
        let (plan, r) = r.split_at(8 * m * n);
        self.rest = r;
        Some(Case {
            m,
            n,
            eps,
            gamma,
            balanced,
            sim,
            plan,
        })
    }
}
