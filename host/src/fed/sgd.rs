//! SGD with momentum and weight decay, step for step as PyTorch's `torch.optim.SGD` (dampening
//! 0, no Nesterov) computes it on the CPU:
//!
//! ```text
//! g   = grad + weight_decay · p          (one rounding: torch's add(alpha) is a fused multiply-add)
//! buf = g                                on the first step
//! buf = momentum · buf + g               afterwards (two roundings: mul_, then add_)
//! p   = p − lr · buf                     (one rounding, fused)
//! ```
//!
//! Each client owns its [`SgdState`] (the momentum buffer), kept across rounds and saved in
//! checkpoints; the reference code's single optimiser shared by every client leaked momentum
//! between them (docs/ALGORITHM.md §6.2).

/// SGD's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor (0 disables the buffer).
    pub momentum: f32,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
}

/// One client's optimiser state: the momentum buffer, absent until the first step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SgdState {
    /// PyTorch's `momentum_buffer`, as long as the parameters.
    pub momentum_buffer: Option<Vec<f32>>,
}

/// Parameters, gradient and state that do not fit together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SGD step: {what} has {found} values, the parameters {expected}")]
pub struct SgdLengthError {
    /// Which buffer (`"gradient"` or `"momentum buffer"`).
    pub what: &'static str,
    /// Number of parameters.
    pub expected: usize,
    /// Length of the buffer.
    pub found: usize,
}

impl Sgd {
    /// One step: updates `params` in place from `grad`, and the momentum buffer in `state`.
    ///
    /// ```
    /// use fedotp_host::fed::{Sgd, SgdState};
    /// let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 };
    /// let mut state = SgdState::default();
    /// let mut p = [1.0f32];
    /// sgd.step(&mut p, &[1.0], &mut state).unwrap(); // buf = 1
    /// assert_eq!(p, [0.9]);
    /// sgd.step(&mut p, &[1.0], &mut state).unwrap(); // buf = 0.9 + 1 = 1.9
    /// assert!((p[0] - 0.71).abs() < 1e-6);
    /// ```
    pub fn step(
        &self,
        params: &mut [f32],
        grad: &[f32],
        state: &mut SgdState,
    ) -> Result<(), SgdLengthError> {
        let check = |what, found| {
            if found == params.len() {
                Ok(())
            } else {
                Err(SgdLengthError {
                    what,
                    expected: params.len(),
                    found,
                })
            }
        };
        check("gradient", grad.len())?;
        if let Some(buffer) = &state.momentum_buffer {
            check("momentum buffer", buffer.len())?;
        }
        let decayed = |p: f32, g: f32| {
            if self.weight_decay == 0.0 {
                g
            } else {
                p.mul_add(self.weight_decay, g)
            }
        };
        if self.momentum == 0.0 {
            for (p, &g) in params.iter_mut().zip(grad) {
                *p = decayed(*p, g).mul_add(-self.lr, *p);
            }
            return Ok(());
        }
        match &mut state.momentum_buffer {
            None => {
                let buffer: Vec<f32> = params
                    .iter()
                    .zip(grad)
                    .map(|(&p, &g)| decayed(p, g))
                    .collect();
                for (p, &b) in params.iter_mut().zip(&buffer) {
                    *p = b.mul_add(-self.lr, *p);
                }
                state.momentum_buffer = Some(buffer);
            }
            Some(buffer) => {
                for ((p, &g), b) in params.iter_mut().zip(grad).zip(buffer.iter_mut()) {
                    *b = *b * self.momentum + decayed(*p, g);
                    *p = b.mul_add(-self.lr, *p);
                }
            }
        }
        Ok(())
    }
}

/// FedProx's proximal term `mu/2 · ‖params − global‖²`, computed in `f64`, for the reported loss.
///
/// ```
/// assert_eq!(fedotp_host::fed::proximal_term(&[1.0, 2.0], &[0.0, 0.0], 0.5), 1.25);
/// ```
pub fn proximal_term(params: &[f32], global: &[f32], mu: f32) -> f64 {
    let squared: f64 = params
        .iter()
        .zip(global)
        .map(|(&p, &g)| {
            let d = f64::from(p) - f64::from(g);
            d * d
        })
        .sum();
    0.5 * f64::from(mu) * squared
}

/// Adds the gradient of FedProx's proximal term, `mu · (params − global)`, to `grad`.
///
/// ```
/// let mut grad = [0.5f32, 0.0];
/// fedotp_host::fed::add_proximal_gradient(&mut grad, &[1.0, 2.0], &[0.0, 1.0], 0.1);
/// assert_eq!(grad, [0.6, 0.1]);
/// ```
pub fn add_proximal_gradient(grad: &mut [f32], params: &[f32], global: &[f32], mu: f32) {
    for ((g, &p), &w) in grad.iter_mut().zip(params).zip(global) {
        *g += mu * (p - w);
    }
}
