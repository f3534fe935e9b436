//! `exp` for the shifted kernel, written so a loop of it becomes SIMD code.
//!
//! Building `K̃ = exp((S − p − q) / eps)` evaluates one exponential per kernel entry, at the start
//! of every solve and at each absorption: 392 of them for a 196 × 2 problem, about a fifth of a
//! 100-iteration solve with `libm::expf`, whose branches keep it scalar. This version has no
//! branches and no table, so the compiler vectorises a loop over it, and it keeps `libm`'s
//! accuracy for the solver's purpose: within 1 ulp of the exact exponential for every normal
//! result, correctly rounded into the subnormal range, 0 below it, ∞ above `f32::MAX`, NaN for
//! NaN (all checked against `f64` in the tests below).
//!
//! The method is the classical one (Cody and Waite's argument reduction, as in Cephes' `expf`):
//! `x = n·ln 2 + r` with `n` the nearest integer to `x / ln 2` and `|r| ≤ ln 2 / 2`, `ln 2` split
//! into a head exact in `f32` and a tail so that `r` is computed without cancellation error;
//! `eʳ` by a degree-6 polynomial (Cephes' minimax coefficients); and the product with `2ⁿ` done
//! as two exact powers of two `2^⌊n/2⌋ · 2^(n − ⌊n/2⌋)`, each a normal `f32` for every `n` that
//! can occur, so results down to the subnormal range round once, correctly.

/// Inputs below this give 0 (`e^-104` is below half the smallest subnormal `f32`); clamping
/// there keeps `n` in the range where both halves of `2ⁿ` are normal.
const LOWEST: f32 = -104.0;
/// Inputs above this give ∞ (`e^89` is above `f32::MAX`).
const HIGHEST: f32 = 89.0;

/// `1 / ln 2`.
const LOG2_E: f32 = core::f32::consts::LOG2_E;
/// `ln 2` in two parts: `LN2_HIGH` has few enough significant bits that `n · LN2_HIGH` is exact
/// for every `|n| ≤ 2⁹`; `LN2_LOW` is the rest.
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;

/// Adding and subtracting `1.5 · 2²³` rounds an `f32` of magnitude below `2²²` to the nearest
/// integer (ties to even), and leaves that integer in the low bits of the sum.
const ROUNDER: f32 = 12_582_912.0;

/// `e^x`; see the module documentation for its accuracy.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Written as comparisons so a NaN passes through both unchanged (and gives NaN below).
    let x = if x < LOWEST { LOWEST } else { x };
    let x = if x > HIGHEST { HIGHEST } else { x };

    let shifted = x * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    // The integer `n` read from the sum's low bits (exact: |n| ≤ 151 < 2²²).
    let n_int = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;

    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let poly = 1.987_569_1e-4;
    let poly = poly * r + 1.398_199_9e-3;
    let poly = poly * r + 8.333_452e-3;
    let poly = poly * r + 4.166_579_6e-2;
    let poly = poly * r + 1.666_666_5e-1;
    let poly = poly * r + 0.5;
    let exp_r = poly * r * r + r + 1.0;

    let half = n_int >> 1;
    exp_r * power_of_two(half) * power_of_two(n_int - half)
}

/// `2^k` for `-126 ≤ k ≤ 127`, built from its exponent bits.
#[inline(always)]
fn power_of_two(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place of `exact` (rounded to `f32`) between `found` and
    /// the exact value, for normal results.
    fn ulps(found: f32, exact: f64) -> f64 {
        let nearest = exact as f32;
        let ulp = f32::from_bits(nearest.to_bits() + 1) - nearest;
        (f64::from(found) - exact).abs() / f64::from(ulp)
    }

    #[test]
    fn within_one_ulp_of_the_exact_exponential_for_normal_results() {
        // Every 97th f32 across the range whose results are normal (about 2 million inputs,
        // both signs, every binade).
        let mut worst = (0.0, 0.0f32);
        let mut bits = 0u32;
        while bits < u32::MAX - 97 {
            let x = f32::from_bits(bits);
            bits += 97;
            if !(-87.0..88.5).contains(&x) {
                continue;
            }
            let error = ulps(exp(x), f64::from(x).exp());
            if error > worst.0 {
                worst = (error, x);
            }
        }
        assert!(worst.0 <= 1.0, "{} ulp at x = {:e}", worst.0, worst.1);
    }

    #[test]
    fn subnormal_results_round_once_and_the_extremes_saturate() {
        for x in [-88.0f32, -90.0, -95.5, -100.0, -103.0, -103.97] {
            let exact = f64::from(x).exp();
            // Correctly rounded to f32, up to the one rounding of the polynomial's result.
            let step = f64::from(f32::from_bits(1));
            assert!(
                (f64::from(exp(x)) - exact).abs() <= step + exact * 4e-7,
                "exp({x}) = {:e}, exact {exact:e}",
                exp(x)
            );
        }
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
    }

    #[test]
    fn agrees_with_libm_where_the_kernel_lives() {
        // The kernel's exponents: (S − p − q) / eps ≤ about 0 and down to where entries vanish.
        let mut x = -110.0f32;
        while x < 1.0 {
            let (ours, reference) = (exp(x), libm::expf(x));
            let tolerance = 2.5e-7 * reference + f32::from_bits(1);
            assert!(
                (ours - reference).abs() <= tolerance,
                "exp({x}) = {ours:e}, libm {reference:e}"
            );
            x += 0.000_37;
        }
    }
}
