//! Batch normalisation and dropout: the two ops whose meaning depends on
//! whether the network is training or running inference.
//!
//! The training/inference distinction is a property of the op, resolved
//! before any optimisation: lowering always builds the *training* form
//! (dropout active, batch statistics), and
//! [`Network::for_inference`](crate::ir::Network::for_inference) rewrites
//! each modal node into its inference form (dropout the identity, batch
//! norm reading the running statistics). The driver optimises the two
//! graphs separately and codegen compiles both: `train_step` runs the first, `loss` and `predict` the
//! second. The interpreter evaluates whichever graph it is given, so both
//! modes have an f64 oracle.
//!
//! Batch statistics are taken over every axis but axis 1 (the channels):
//! `[N, C]` and NCHW `[N, C, H, W]` inputs alike.
//!
//! Dropout's mask is a pure function of (seed, step, layer salt, global
//! element index): [`dropout_key`] and [`dropout_keep`] are the contract's
//! (`nnc_spec::hash`), which the runtime's kernel calls too, so the
//! interpreter and the generated code drop exactly the same elements,
//! whatever the sharding.

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::{expect_f32, EvalCtx, OpError, Tensor};
use crate::graph::{Dim, NodeId, Shape, TensorType};
use crate::ops::{BinaryOp, Op, ShapeOp, UnaryOp};
use ndarray::{ArrayD, IxDyn};
use proc_macro2::TokenStream;
use quote::quote;
use std::fmt;

/// A normalisation or dropout op. Floats are stored as their bits so that
/// ops compare and hash exactly (CSE keys on them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormOp {
    /// `x → x · mask / (1 - rate)` in training, `x` in inference. The batch
    /// must be the leading dimension: the mask is indexed by the global
    /// sample.
    Dropout {
        /// Drop probability (bits of an f64 in [0, 1)).
        rate: u64,
        /// Distinguishes the masks of different dropout layers.
        salt: u64,
        /// Training (active) or inference (identity).
        training: bool,
    },
    /// Training-mode batch norm without the affine part:
    /// `x → (x - mean) / sqrt(var + eps)` with the batch's mean and biased
    /// variance per channel.
    BatchNorm {
        /// Bits of `eps`.
        eps: u64,
    },
    /// [`NormOp::BatchNorm`]'s gradient: `(x, dy) → dx`.
    BatchNormGrad {
        /// Bits of `eps`.
        eps: u64,
    },
    /// Inference-mode batch norm: `(x, mean[C], var[C]) → (x - mean) /
    /// sqrt(var + eps)` with the running statistics.
    BatchNormInfer {
        /// Bits of `eps`.
        eps: u64,
    },
    /// `x → f32[C]`: the batch mean (`var: false`) or the unbiased batch
    /// variance (`var: true`, divided by `n - 1`, by `n` when `n = 1`) per
    /// channel: what the running statistics are blended towards.
    BatchStat {
        /// Variance rather than mean.
        var: bool,
    },
}

// The contract's hash, the same function the runtime's dropout kernel
// calls: the interpreter and generated code drop the same elements.
pub use nnc_spec::hash::{dropout_keep, dropout_key, dropout_threshold, mix};

/// `[N, C, rest...]` as (N, C, positions per channel and sample).
fn ncs(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

fn f(bits: u64) -> f64 {
    f64::from_bits(bits)
}

/// Requires `[N, C]` or `[N, C, H, W]` with a fixed channel count.
fn channels(ty: &TensorType, what: &str) -> Result<usize, OpError> {
    expect_f32(ty, 0, what)?;
    match ty.shape.dims() {
        [_, Dim::Fixed(c)] | [_, Dim::Fixed(c), Dim::Fixed(_), Dim::Fixed(_)] => Ok(*c),
        _ => Err(OpError::shape(format!(
            "{what} expects f32[batch, channels] or f32[batch, channels, height, width] \
             with fixed channels and size, found {ty}"
        ))
        .at(0)),
    }
}

/// Per channel mean and biased variance of `x` as `[N, C, S]`.
fn moments(x: &[f64], (n, c, s): (usize, usize, usize)) -> Vec<(f64, f64)> {
    let m = (n * s) as f64;
    (0..c)
        .map(|ch| {
            let vals = (0..n).flat_map(|i| (0..s).map(move |j| (i * c + ch) * s + j));
            let mean = vals.clone().map(|k| x[k]).sum::<f64>() / m;
            let var = vals.map(|k| (x[k] - mean).powi(2)).sum::<f64>() / m;
            (mean, var)
        })
        .collect()
}

impl NormOp {
    /// A dropout op in training mode.
    pub fn dropout(rate: f64, salt: u64) -> Self {
        NormOp::Dropout {
            rate: rate.to_bits(),
            salt,
            training: true,
        }
    }

    /// Number of operands.
    pub fn arity(&self) -> usize {
        match self {
            NormOp::Dropout { .. } | NormOp::BatchNorm { .. } | NormOp::BatchStat { .. } => 1,
            NormOp::BatchNormGrad { .. } => 2,
            NormOp::BatchNormInfer { .. } => 3,
        }
    }

    /// The op's inference-mode form, if it has one different from itself.
    pub fn inference(&self) -> Option<NormOp> {
        match *self {
            NormOp::Dropout {
                rate,
                salt,
                training: true,
            } => Some(NormOp::Dropout {
                rate,
                salt,
                training: false,
            }),
            NormOp::BatchNorm { eps } => Some(NormOp::BatchNormInfer { eps }),
            _ => None,
        }
    }

    /// The shape rule.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
        match self {
            NormOp::Dropout { rate, .. } => {
                let x = inputs[0];
                expect_f32(x, 0, "dropout")?;
                if !(0.0..1.0).contains(&f(*rate)) {
                    return Err(OpError::argument(format!(
                        "dropout rate must be in [0, 1), found {}",
                        f(*rate)
                    )));
                }
                if x.shape.dims().first() != Some(&Dim::Batch) || x.shape.batch_power() != 1 {
                    return Err(OpError::shape(format!(
                        "dropout expects a tensor whose first dimension (and only that one) is `batch`, found {x}"
                    ))
                    .at(0)
                    .with_help("the mask is drawn per sample, so the batch must lead"));
                }
                Ok(x.clone())
            }
            NormOp::BatchNorm { .. } => {
                channels(inputs[0], "batch_norm")?;
                Ok(inputs[0].clone())
            }
            NormOp::BatchNormGrad { .. } => {
                channels(inputs[0], "batch_norm_grad")?;
                if inputs[1] != inputs[0] {
                    return Err(OpError::shape(format!(
                        "batch_norm_grad: the gradient {} does not match the input {}",
                        inputs[1], inputs[0]
                    )));
                }
                Ok(inputs[0].clone())
            }
            NormOp::BatchNormInfer { .. } => {
                let c = channels(inputs[0], "batch_norm")?;
                for (i, s) in inputs[1..].iter().enumerate() {
                    if s.shape != Shape::fixed(&[c]) {
                        return Err(OpError::shape(format!(
                            "batch_norm: running statistic {} must be f32[{c}], found {s}",
                            i + 1
                        )));
                    }
                }
                Ok(inputs[0].clone())
            }
            NormOp::BatchStat { .. } => {
                let c = channels(inputs[0], "batch statistics")?;
                Ok(TensorType::f32(Shape::fixed(&[c])))
            }
        }
    }

    /// The f64 semantics.
    pub fn eval(&self, inputs: &[&Tensor], cx: &EvalCtx) -> Result<Tensor, OpError> {
        let x = inputs[0];
        let shape = x.shape().to_vec();
        let flat: Vec<f64> = x.iter().copied().collect();
        let out = |v: Vec<f64>, sh: &[usize]| {
            ArrayD::from_shape_vec(IxDyn(sh), v).map_err(|e| OpError::internal(e.to_string()))
        };
        match *self {
            NormOp::Dropout {
                training: false, ..
            } => Ok(x.clone()),
            NormOp::Dropout { rate, salt, .. } => {
                let p = f(rate);
                let key = dropout_key(cx.key.seed, cx.key.step, salt);
                let t = dropout_threshold(p);
                let per: usize = shape[1..].iter().product();
                let base = cx.key.offset.wrapping_mul(per as u64);
                let scale = 1.0 / (1.0 - p);
                let v = flat
                    .iter()
                    .enumerate()
                    .map(|(i, &xi)| {
                        if dropout_keep(key, base.wrapping_add(i as u64), t) {
                            xi * scale
                        } else {
                            0.0
                        }
                    })
                    .collect();
                out(v, &shape)
            }
            NormOp::BatchNorm { eps } | NormOp::BatchNormGrad { eps } => {
                let d = ncs(&shape);
                let (_, c, s) = d;
                let mo = moments(&flat, d);
                let xhat: Vec<f64> = flat
                    .iter()
                    .enumerate()
                    .map(|(k, &xi)| {
                        let (m, v) = mo[(k / s) % c];
                        (xi - m) / (v + f(eps)).sqrt()
                    })
                    .collect();
                if matches!(self, NormOp::BatchNorm { .. }) {
                    return out(xhat, &shape);
                }
                let dy: Vec<f64> = inputs[1].iter().copied().collect();
                let m = (d.0 * s) as f64;
                let mut sum_dy = vec![0.0; c];
                let mut sum_dy_xhat = vec![0.0; c];
                for k in 0..flat.len() {
                    let ch = (k / s) % c;
                    sum_dy[ch] += dy[k];
                    sum_dy_xhat[ch] += dy[k] * xhat[k];
                }
                let v = (0..flat.len())
                    .map(|k| {
                        let ch = (k / s) % c;
                        let rstd = 1.0 / (mo[ch].1 + f(eps)).sqrt();
                        rstd * (dy[k] - sum_dy[ch] / m - xhat[k] * sum_dy_xhat[ch] / m)
                    })
                    .collect();
                out(v, &shape)
            }
            NormOp::BatchNormInfer { eps } => {
                let (_, c, s) = ncs(&shape);
                let (mean, var) = (inputs[1], inputs[2]);
                let v = flat
                    .iter()
                    .enumerate()
                    .map(|(k, &xi)| {
                        let ch = (k / s) % c;
                        (xi - mean[[ch]]) / (var[[ch]] + f(eps)).sqrt()
                    })
                    .collect();
                out(v, &shape)
            }
            NormOp::BatchStat { var } => {
                let d = ncs(&shape);
                let m = d.0 * d.2;
                let v = moments(&flat, d)
                    .into_iter()
                    .map(|(mean, v)| match (var, m) {
                        (false, _) => mean,
                        (true, 1) => v,
                        (true, m) => v * m as f64 / (m - 1) as f64,
                    })
                    .collect();
                out(v, &[d.1])
            }
        }
    }

    /// The gradient rule.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        inputs: &[NodeId],
        dout: NodeId,
    ) -> Result<Vec<Option<NodeId>>, OpError> {
        match *self {
            // The same mask and scale, applied to the gradient.
            NormOp::Dropout { training: true, .. } => {
                Ok(vec![Some(cx.add(Op::Norm(*self), &[dout])?)])
            }
            NormOp::Dropout { .. } => Ok(vec![Some(dout)]),
            NormOp::BatchNorm { eps } => Ok(vec![Some(
                cx.add(Op::Norm(NormOp::BatchNormGrad { eps }), &[inputs[0], dout])?,
            )]),
            NormOp::BatchNormGrad { .. } => Err(OpError::internal(
                "batch_norm has no second derivative in nnc".to_string(),
            )),
            // dx = dy / sqrt(var + eps), broadcast over the channel axis; the
            // running statistics are state, not differentiated.
            NormOp::BatchNormInfer { eps } => {
                let e = cx.constant(f(eps))?;
                let ve = cx.binary(BinaryOp::Add, inputs[2], e)?;
                let mut r = cx.unary(UnaryOp::Pow(-0.5), ve)?;
                let xs = cx.ty(inputs[0]).shape.clone();
                if xs.rank() == 4 {
                    let c = xs.dims()[1].resolve(1);
                    r = cx.add(
                        Op::Shape(ShapeOp::Reshape {
                            to: Shape::fixed(&[c, 1, 1]),
                        }),
                        &[r],
                    )?;
                }
                Ok(vec![Some(cx.binary(BinaryOp::Mul, dout, r)?), None, None])
            }
            NormOp::BatchStat { .. } => Ok(vec![None]),
        }
    }

    /// Floating-point operations per sample.
    pub fn flops(&self, inputs: &[&TensorType]) -> u64 {
        let n = inputs[0].shape.numel(1) as u64;
        match self {
            NormOp::Dropout {
                training: false, ..
            } => 0,
            NormOp::Dropout { .. } => n,
            NormOp::BatchNorm { .. } | NormOp::BatchNormInfer { .. } => n.saturating_mul(5),
            NormOp::BatchNormGrad { .. } => n.saturating_mul(10),
            NormOp::BatchStat { .. } => n.saturating_mul(3),
        }
    }

    /// The f32 kernel body: calls into `nnc_runtime::norm`. Dropout's body
    /// names `key`, the step key the generated training step receives.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        let dims = k.inputs[0].shape.dims();
        // Batch norm's shape rule guarantees `[N, C, ...]`; dropout accepts
        // any batch-led tensor, `[batch]` included, so the channel split is
        // read only by the arms that need it.
        let ncs = || match dims {
            [n, c, rest @ ..] => (Kernel::dim(*n), Kernel::dim(*c), Kernel::product(rest)),
            _ => unreachable!("batch norm's shape rule admits only [N, C, ...], found {dims:?}"),
        };
        match *self {
            NormOp::Dropout {
                training: false, ..
            } => quote!(out.copy_from_slice(x0);),
            NormOp::Dropout { rate, salt, .. } => {
                // The kernel derives its threshold and scale from the rate.
                let per = Kernel::product(&dims[1..]);
                let rate = proc_macro2::Literal::f64_suffixed(f(rate));
                quote!(#rt::norm::dropout(x0, out, #per, key, #salt, #rate);)
            }
            NormOp::BatchNorm { eps } => {
                let (n, c, s) = ncs();
                let e = Kernel::f32(f(eps));
                quote!(#rt::norm::batch_norm(x0, out, [#n, #c, #s], #e);)
            }
            NormOp::BatchNormGrad { eps } => {
                let (n, c, s) = ncs();
                let e = Kernel::f32(f(eps));
                quote!(#rt::norm::batch_norm_grad(x0, x1, out, [#n, #c, #s], #e);)
            }
            NormOp::BatchNormInfer { eps } => {
                let (n, c, s) = ncs();
                let e = Kernel::f32(f(eps));
                quote!(#rt::norm::batch_norm_infer(x0, x1, x2, out, [#n, #c, #s], #e);)
            }
            NormOp::BatchStat { var } => {
                let (n, c, s) = ncs();
                quote!(#rt::norm::batch_stat(x0, out, [#n, #c, #s], #var);)
            }
        }
    }
}

impl fmt::Display for NormOp {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NormOp::Dropout {
                rate,
                training: true,
                ..
            } => write!(fm, "dropout(rate: {})", f(rate)),
            NormOp::Dropout { .. } => write!(fm, "dropout_identity"),
            NormOp::BatchNorm { eps } => write!(fm, "batch_norm(eps: {})", f(eps)),
            NormOp::BatchNormGrad { eps } => write!(fm, "batch_norm_grad(eps: {})", f(eps)),
            NormOp::BatchNormInfer { eps } => write!(fm, "batch_norm_infer(eps: {})", f(eps)),
            NormOp::BatchStat { var: false } => write!(fm, "batch_mean"),
            NormOp::BatchStat { var: true } => write!(fm, "batch_var"),
        }
    }
}

impl NormOp {
    /// Inference dropout is the identity: an alias in an int8 plan. Batch
    /// norm has no int8 plan step yet (it would fold into the preceding
    /// product at calibration).
    pub fn int8(&self) -> super::Int8 {
        match self {
            NormOp::Dropout {
                training: false, ..
            } => super::Int8::Alias,
            _ => super::Int8::None,
        }
    }
}
