//! Parameter initializers, with the formulas of PyTorch's `torch.nn.init`:
//! what a `param` declaration's `= init` means. The runtime fills tensors
//! (`nnc_runtime::init`); the compiler checks and writes these values.
//!
//! Fans. The scale of Glorot/He initializers depends on `fan_in`/`fan_out`,
//! which depend on how a shape is laid out. nnc's conventions:
//!
//! - rank 1 (biases, norms): `fan_in = fan_out = len`.
//! - rank 2, dense weights, stored `[in, out]` because nnc computes `x @ W`:
//!   `fan_in = shape[0]`, `fan_out = shape[1]`. **This is the transpose of
//!   PyTorch's `nn.Linear` weight `[out, in]`**, so the same layer gets the
//!   same scale in both systems even though the shapes read differently.
//! - rank > 2, convolution kernels `[out_ch, in_ch, k...]` (PyTorch layout):
//!   `fan_in = in_ch * prod(k)`, `fan_out = out_ch * prod(k)`.
//!
//! Formulas (gain 1 for Glorot, gain sqrt(2) — ReLU — for He):
//! - `GlorotUniform`: U(-b, b), b = sqrt(6 / (fan_in + fan_out))  (`xavier_uniform_`)
//! - `GlorotNormal`: N(0, s²), s = sqrt(2 / (fan_in + fan_out))   (`xavier_normal_`)
//! - `HeUniform`: U(-b, b), b = sqrt(6 / fan_in)   (`kaiming_uniform_`, fan_in mode, relu)
//! - `HeNormal`: N(0, s²), s = sqrt(2 / fan_in)   (`kaiming_normal_`, fan_in mode, relu)

/// How to fill a parameter tensor before training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (the usual bias init).
    Zeros,
    /// All ones (the usual norm-scale init).
    Ones,
    /// Every element the same value.
    Constant(f32),
    /// Independent N(mean, std²).
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation, >= 0.
        std: f32,
    },
    /// Independent U[low, high).
    Uniform {
        /// Inclusive lower bound.
        low: f32,
        /// Exclusive upper bound, >= low.
        high: f32,
    },
    /// Xavier/Glorot uniform: keeps activation variance across tanh-like layers.
    GlorotUniform,
    /// Xavier/Glorot normal.
    GlorotNormal,
    /// Kaiming/He uniform for ReLU layers.
    HeUniform,
    /// Kaiming/He normal for ReLU layers.
    HeNormal,
}

impl Init {
    /// Whether the parameters describe a distribution (finite, `std ≥ 0`,
    /// `low ≤ high`); why not, when they do not.
    pub fn validate(&self) -> Result<(), &'static str> {
        match *self {
            Init::Constant(v) if !v.is_finite() => Err("the value is not a finite f32"),
            Init::Normal { mean, std } if !(mean.is_finite() && std.is_finite()) => {
                Err("`mean` and `std` must be finite f32 numbers")
            }
            Init::Normal { std, .. } if std < 0.0 => Err("`std` must not be negative"),
            Init::Uniform { low, high } if !(low.is_finite() && high.is_finite()) => {
                Err("`low` and `high` must be finite f32 numbers")
            }
            Init::Uniform { low, high } if low > high => Err("`low` must not be above `high`"),
            _ => Ok(()),
        }
    }

    /// Whether the scale depends on the tensor's fans (Glorot, He).
    pub fn needs_fans(&self) -> bool {
        matches!(
            self,
            Init::GlorotUniform | Init::GlorotNormal | Init::HeUniform | Init::HeNormal
        )
    }
}

/// `(fan_in, fan_out)` of a shape under nnc's layout conventions (see the
/// module docs); `None` for a scalar.
pub fn fans(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [] => None,
        [n] => Some((*n, *n)),
        [i, o] => Some((*i, *o)),
        [out_ch, in_ch, k @ ..] => {
            let field: usize = k.iter().product();
            Some((in_ch * field, out_ch * field))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fans_follow_documented_conventions() {
        assert_eq!(fans(&[]), None);
        assert_eq!(fans(&[10]), Some((10, 10)));
        assert_eq!(fans(&[784, 128]), Some((784, 128)));
        assert_eq!(fans(&[16, 3, 5, 5]), Some((75, 400)));
    }

    #[test]
    fn invalid_distributions_are_named() {
        assert!(Init::Normal {
            mean: 0.0,
            std: -1.0
        }
        .validate()
        .is_err());
        assert!(Init::Uniform {
            low: 1.0,
            high: 0.0
        }
        .validate()
        .is_err());
        assert!(Init::Constant(f32::INFINITY).validate().is_err());
        assert!(Init::HeNormal.validate().is_ok() && Init::HeNormal.needs_fans());
    }
}
