//! Parameter initializers, with the formulas of PyTorch's `torch.nn.init`.
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

use thiserror::Error;

use crate::rng::Rng;

pub use nnc_spec::init::{fans, Init};

/// Why a tensor could not be initialized.
#[derive(Debug, Error, PartialEq)]
pub enum InitError {
    /// The output slice does not hold exactly `prod(shape)` elements.
    #[error("shape {shape:?} has {expected} elements but the buffer has {actual}")]
    SizeMismatch {
        /// Shape requested.
        shape: Vec<usize>,
        /// Its element count.
        expected: usize,
        /// Buffer length.
        actual: usize,
    },
    /// A fan-based initializer was asked to fill a scalar, which has no fans.
    #[error("{init:?} needs a tensor of rank >= 1 to compute fan_in/fan_out")]
    NoFans {
        /// The initializer.
        init: Init,
    },
    /// Parameters that describe no distribution (negative std, low > high, NaN).
    #[error("invalid initializer parameters: {0:?}")]
    InvalidParams(Init),
}

/// Method syntax for [`fill`]: `init.fill(shape, out, rng)`.
pub trait Fill {
    /// See [`fill`].
    fn fill(&self, shape: &[usize], out: &mut [f32], rng: &mut Rng) -> Result<(), InitError>;
}

impl Fill for Init {
    fn fill(&self, shape: &[usize], out: &mut [f32], rng: &mut Rng) -> Result<(), InitError> {
        fill(self, shape, out, rng)
    }
}

/// Fills `out` (a tensor of `shape`, row-major) with fresh values drawn as
/// `init` says.
///
/// Consumes `rng` deterministically: the same seed and the same sequence
/// of `fill` calls give bit-identical parameters on every machine.
pub fn fill(init: &Init, shape: &[usize], out: &mut [f32], rng: &mut Rng) -> Result<(), InitError> {
    let expected = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    if expected != out.len() {
        return Err(InitError::SizeMismatch {
            shape: shape.to_vec(),
            expected,
            actual: out.len(),
        });
    }
    let fan = || fans(shape).ok_or(InitError::NoFans { init: *init });
    match *init {
        Init::Zeros => out.fill(0.0),
        Init::Ones => out.fill(1.0),
        Init::Constant(c) => out.fill(c),
        Init::Normal { mean, std } => {
            if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
                return Err(InitError::InvalidParams(*init));
            }
            rng.fill_normal(out, mean, std);
        }
        Init::Uniform { low, high } => {
            if !(low.is_finite() && high.is_finite() && low <= high) {
                return Err(InitError::InvalidParams(*init));
            }
            fill_uniform(out, low as f64, high as f64, rng);
        }
        Init::GlorotUniform => {
            let (fi, fo) = fan()?;
            let b = (6.0 / (fi + fo).max(1) as f64).sqrt();
            fill_uniform(out, -b, b, rng);
        }
        Init::GlorotNormal => {
            let (fi, fo) = fan()?;
            let s = (2.0 / (fi + fo).max(1) as f64).sqrt();
            rng.fill_normal(out, 0.0, s as f32);
        }
        Init::HeUniform => {
            let (fi, _) = fan()?;
            let b = (6.0 / fi.max(1) as f64).sqrt();
            fill_uniform(out, -b, b, rng);
        }
        Init::HeNormal => {
            let (fi, _) = fan()?;
            let s = (2.0 / fi.max(1) as f64).sqrt();
            rng.fill_normal(out, 0.0, s as f32);
        }
    }
    Ok(())
}

/// Advances `rng` past exactly the values [`fill`] would draw for a tensor
/// of `shape` under `init`, writing nothing, with [`fill`]'s errors: so a
/// part of a network (a pipeline stage) can take its parameters from the
/// whole network's initialisation stream without allocating the parameters
/// it does not hold.
pub fn skip(init: &Init, shape: &[usize], rng: &mut Rng) -> Result<(), InitError> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| InitError::SizeMismatch {
            shape: shape.to_vec(),
            expected: usize::MAX,
            actual: 0,
        })?;
    let fan = || fans(shape).ok_or(InitError::NoFans { init: *init });
    // One generator output per uniform value; normals come in pairs from
    // one Box–Muller transform (two outputs), an odd last one costing a
    // whole transform (`Rng::fill_normal`).
    let draws = match *init {
        Init::Zeros | Init::Ones | Init::Constant(_) => 0,
        Init::Normal { mean, std } => {
            if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
                return Err(InitError::InvalidParams(*init));
            }
            2 * n.div_ceil(2)
        }
        Init::Uniform { low, high } => {
            if !(low.is_finite() && high.is_finite() && low <= high) {
                return Err(InitError::InvalidParams(*init));
            }
            n
        }
        Init::GlorotUniform | Init::HeUniform => {
            fan()?;
            n
        }
        Init::GlorotNormal | Init::HeNormal => {
            fan()?;
            2 * n.div_ceil(2)
        }
    };
    for _ in 0..draws {
        rng.next_u64();
    }
    Ok(())
}

fn fill_uniform(out: &mut [f32], low: f64, high: f64, rng: &mut Rng) {
    for x in out {
        *x = rng.uniform_f64(low, high) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(xs: &[f32]) -> (f64, f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let max = xs.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
        (mean, var.sqrt(), max)
    }

    #[test]
    fn fans_follow_documented_conventions() {
        assert_eq!(fans(&[]), None);
        assert_eq!(fans(&[10]), Some((10, 10)));
        assert_eq!(fans(&[784, 128]), Some((784, 128)));
        assert_eq!(fans(&[16, 3, 5, 5]), Some((75, 400)));
    }

    #[test]
    fn scales_match_pytorch_formulas() {
        let shape = [784usize, 128];
        let n = 784 * 128;
        let mut rng = Rng::new(11);
        let mut buf = vec![0f32; n];
        let sum = 784.0 + 128.0;
        // (init, expected bound if uniform, expected std)
        let cases = [
            (Init::GlorotUniform, Some((6.0f64 / sum).sqrt())),
            (Init::HeUniform, Some((6.0f64 / 784.0).sqrt())),
            (Init::GlorotNormal, None),
            (Init::HeNormal, None),
        ];
        for (init, bound) in cases {
            init.fill(&shape, &mut buf, &mut rng).unwrap();
            let (mean, std, max) = stats(&buf);
            let want_std = match (init, bound) {
                (_, Some(b)) => b / 3f64.sqrt(),
                (Init::GlorotNormal, None) => (2.0 / sum).sqrt(),
                _ => (2.0f64 / 784.0).sqrt(),
            };
            assert!(mean.abs() < 0.02 * want_std, "{init:?} mean {mean}");
            assert!(
                (std / want_std - 1.0).abs() < 0.01,
                "{init:?} std {std} want {want_std}"
            );
            if let Some(b) = bound {
                assert!(max < b && max > 0.999 * b, "{init:?} max {max} bound {b}");
            }
        }
    }

    #[test]
    fn skip_draws_exactly_what_fill_draws() {
        let inits = [
            Init::Zeros,
            Init::Constant(0.5),
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
            Init::Uniform {
                low: -1.0,
                high: 1.0,
            },
            Init::GlorotUniform,
            Init::GlorotNormal,
            Init::HeUniform,
            Init::HeNormal,
        ];
        for init in inits {
            for shape in [vec![3usize, 5], vec![4, 4], vec![7]] {
                let (mut a, mut b) = (Rng::new(9), Rng::new(9));
                let mut buf = vec![0f32; shape.iter().product()];
                init.fill(&shape, &mut buf, &mut a).unwrap();
                skip(&init, &shape, &mut b).unwrap();
                assert_eq!(a.state(), b.state(), "{init:?} {shape:?}");
            }
        }
        let bad = Init::Normal {
            mean: 0.0,
            std: -1.0,
        };
        assert_eq!(
            skip(&bad, &[2], &mut Rng::new(1)),
            Err(InitError::InvalidParams(bad))
        );
        assert_eq!(
            skip(&Init::HeNormal, &[], &mut Rng::new(1)),
            Err(InitError::NoFans {
                init: Init::HeNormal
            })
        );
    }

    #[test]
    fn conv_shape_uses_receptive_field() {
        let shape = [64usize, 32, 3, 3];
        let mut buf = vec![0f32; 64 * 32 * 9];
        Init::HeNormal
            .fill(&shape, &mut buf, &mut Rng::new(3))
            .unwrap();
        let (_, std, _) = stats(&buf);
        let want = (2.0f64 / (32.0 * 9.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.02, "{std} vs {want}");
    }

    #[test]
    fn plain_distributions_and_constants() {
        let mut rng = Rng::new(5);
        let mut buf = vec![0f32; 50_000];
        Init::Normal {
            mean: 1.5,
            std: 0.2,
        }
        .fill(&[50_000], &mut buf, &mut rng)
        .unwrap();
        let (m, s, _) = stats(&buf);
        assert!((m - 1.5).abs() < 0.01 && (s - 0.2).abs() < 0.005);
        Init::Uniform {
            low: 2.0,
            high: 3.0,
        }
        .fill(&[100, 500], &mut buf, &mut rng)
        .unwrap();
        assert!(buf.iter().all(|&x| (2.0..3.0).contains(&x)));
        Init::Constant(7.0)
            .fill(&[2, 3], &mut buf[..6], &mut rng)
            .unwrap();
        assert_eq!(&buf[..6], &[7.0; 6]);
        Init::Zeros.fill(&[3], &mut buf[..3], &mut rng).unwrap();
        assert_eq!(&buf[..3], &[0.0; 3]);
    }

    #[test]
    fn same_seed_same_parameters() {
        let mut a = vec![0f32; 300];
        let mut b = vec![0f32; 300];
        Init::GlorotUniform
            .fill(&[20, 15], &mut a, &mut Rng::new(9))
            .unwrap();
        Init::GlorotUniform
            .fill(&[20, 15], &mut b, &mut Rng::new(9))
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_requests_are_errors() {
        let mut rng = Rng::new(0);
        let mut buf = [0f32; 4];
        assert!(matches!(
            Init::Zeros.fill(&[2, 3], &mut buf, &mut rng),
            Err(InitError::SizeMismatch {
                expected: 6,
                actual: 4,
                ..
            })
        ));
        assert!(matches!(
            Init::HeNormal.fill(&[], &mut buf[..1], &mut rng),
            Err(InitError::NoFans { .. })
        ));
        assert!(Init::Normal {
            mean: 0.0,
            std: -1.0
        }
        .fill(&[4], &mut buf, &mut rng)
        .is_err());
        assert!(Init::Uniform {
            low: 1.0,
            high: f32::NAN
        }
        .fill(&[4], &mut buf, &mut rng)
        .is_err());
    }
}
