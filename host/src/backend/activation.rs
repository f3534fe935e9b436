//! The MLP activations of CLIP's transformer blocks, and their derivatives.
//!
//! OpenAI's CLIP releases use QuickGELU, `x · σ(1.702 x)`; open_clip models trained from scratch
//! (LAION, DataComp) and most Hugging Face conversions of them use the exact GELU,
//! `x · Φ(x) = ½ x (1 + erf(x / √2))` — PyTorch's `nn.GELU()` default, not its tanh
//! approximation. The two differ by up to 0.02 per value, enough to move a 12-block tower's
//! features far from the weights' own, so the activation is part of the architecture.
//!
//! The scalar formulas here are the CPU backend's; the CUDA kernels (`elementwise.cu`) spell the
//! same ones with the device's `expf` and `erff`.

use std::fmt;

/// Which activation a transformer block's MLP applies between its two linear layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x · σ(1.702 x)`: OpenAI's CLIP (open_clip's `quick_gelu = true`, Hugging Face's
    /// `hidden_act = "quick_gelu"`).
    #[default]
    QuickGelu,
    /// `x · Φ(x)` with the exact normal CDF: open_clip's default `nn.GELU`, Hugging Face's
    /// `hidden_act = "gelu"`.
    Gelu,
}

impl Activation {
    /// The name of its forward op in backend errors, as in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Activation::QuickGelu => "quick_gelu",
            Activation::Gelu => "gelu",
        }
    }

    /// The name of its backward op in backend errors.
    pub fn backward_name(self) -> &'static str {
        match self {
            Activation::QuickGelu => "quick_gelu_backward",
            Activation::Gelu => "gelu_backward",
        }
    }

    /// The activation of `x`.
    #[inline]
    pub fn forward(self, x: f32) -> f32 {
        match self {
            Activation::QuickGelu => x * sigmoid(QUICK_GELU_ALPHA * x),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        }
    }

    /// Its derivative at `x`.
    #[inline]
    pub fn derivative(self, x: f32) -> f32 {
        match self {
            Activation::QuickGelu => {
                let s = sigmoid(QUICK_GELU_ALPHA * x);
                s + QUICK_GELU_ALPHA * x * s * (1.0 - s)
            }
            // Φ(x) + x φ(x), φ the standard normal density.
            Activation::Gelu => {
                let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
                cdf + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
            }
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// QuickGELU's slope, `x · σ(1.702 x)`.
const QUICK_GELU_ALPHA: f32 = 1.702;

/// `1 / √(2π)`, the standard normal density at 0.
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of `x · Φ(x)` from float64 (`0.5 * x * (1 + math.erf(x / math.sqrt(2)))`).
    #[test]
    fn gelu_matches_float64_values() {
        let cases = [
            (-3.0f32, -0.004_049_694_094_890_31_f64),
            (-1.0, -0.158_655_253_931_457_07),
            (-0.1, -0.046_017_216_272_297_1),
            (0.0, 0.0),
            (0.5, 0.345_731_230_637_006_56),
            (2.0, 1.954_499_736_103_641_6),
        ];
        for (x, want) in cases {
            let got = f64::from(Activation::Gelu.forward(x));
            assert!((got - want).abs() <= 1e-6, "gelu({x}) = {got}, want {want}");
        }
    }

    /// Each derivative against a central difference in float64 of the same formula.
    #[test]
    fn derivatives_match_finite_differences() {
        let exact = |act: Activation, x: f64| match act {
            Activation::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        };
        for act in [Activation::QuickGelu, Activation::Gelu] {
            for i in -40..=40 {
                let x = f64::from(i) * 0.125;
                let h = 1e-5;
                let want = (exact(act, x + h) - exact(act, x - h)) / (2.0 * h);
                let got = f64::from(act.derivative(x as f32));
                assert!(
                    (got - want).abs() <= 2e-6,
                    "{act}'({x}) = {got}, want {want}"
                );
            }
        }
    }
}
