//! Quantization-aware training: `fake_quant`, which rounds a tensor to the
//! grid of symmetric per-tensor integers and back, so that a model can be
//! fine-tuned for the int8 code it will run as (PyTorch's `FakeQuantize`,
//! `torch.fake_quantize_per_tensor_affine` with zero point 0).
//!
//! With `b` bits, `qmin = −2^(b−1)`, `qmax = 2^(b−1) − 1` and a scale `s`:
//! `q(x) = clamp(round(x / s), qmin, qmax) · s`, rounding half to even. The
//! scale is the one given (`scale:`, fixed) or `max|x| / qmax` over the
//! whole tensor as the step sees it (dynamic; 1 for a tensor of zeros). The
//! division, the rounding and the dynamic scale are those of the runtime's
//! weight quantizer (`nnc_runtime::quant::QuantWeights`, whose 7-bit weights
//! are `fake_quant(w, bits: 7)` per output channel), so a model fine-tuned
//! through this op sees the values it will be quantized to.
//!
//! The gradient is the straight-through estimator: the identity where
//! `round(x / s)` lies in `[qmin, qmax]` and zero where the clamp cuts (with
//! the dynamic scale nothing is cut: the gradient is the identity). It is
//! not the derivative of the forward function — that is zero almost
//! everywhere (a staircase), or, with the dynamic scale, the staircase's
//! dependence on the largest element — and it is by design: the scale is
//! treated as a constant, as PyTorch treats its observers' scales.

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::signature::{ArgKind, Args, Built, Function, Lit, Param};
use super::{expect_f32, BinaryOp, Op, OpError, Tensor};
use crate::graph::{NodeId, TensorType};
use proc_macro2::TokenStream;
use quote::quote;
use std::fmt;

/// The bit widths `fake_quant` accepts: at least a sign and one magnitude
/// bit, and no more than an `i16` holds (the runtime kernel's rounding is
/// exact there).
pub const BITS: std::ops::RangeInclusive<i64> = 2..=16;

/// A quantization op. The scale is stored as the bits of an f64 so that
/// ops compare and hash exactly (CSE keys on them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantOp {
    /// `clamp(round_half_even(x / s), qmin, qmax) · s`, with `s` fixed (the
    /// bits of an f64) or, for `None`, `max|x| / qmax` of the operand.
    FakeQuant {
        /// Bit width, in [`BITS`].
        bits: u8,
        /// Bits of the fixed scale; `None` for the dynamic one.
        scale: Option<u64>,
    },
    /// The straight-through estimator's mask for a fixed scale: 1 where
    /// `round_half_even(x / s)` is in `[qmin, qmax]`, else 0 (and 0 for NaN).
    FakeQuantMask {
        /// Bit width, in [`BITS`].
        bits: u8,
        /// Bits of the scale.
        scale: u64,
    },
}

/// The integer range of `bits` bits: `(qmin, qmax)`.
pub fn range(bits: u8) -> (f64, f64) {
    let half = f64::from(1u32 << (bits - 1));
    (-half, half - 1.0)
}

/// The scale of the dynamic form: `max|x| / qmax`, or 1 when every element
/// is zero (any scale then gives zeros; 1 keeps the division defined).
pub fn dynamic_scale(x: &Tensor, bits: u8) -> f64 {
    let amax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        1.0
    } else {
        amax / range(bits).1
    }
}

/// One value through the quantizer: `clamp(round_half_even(v / s), qmin,
/// qmax) · s` (NaN stays NaN).
pub fn fake_quant_one(v: f64, s: f64, bits: u8) -> f64 {
    let (lo, hi) = range(bits);
    (v / s).round_ties_even().clamp(lo, hi) * s
}

impl QuantOp {
    /// Number of operands: the tensor.
    pub fn arity(&self) -> usize {
        1
    }

    /// The shape rule: an f32 tensor, kept as it is.
    pub fn infer(&self, t: &[&TensorType]) -> Result<TensorType, OpError> {
        expect_f32(t[0], 0, "fake_quant")?;
        Ok(t[0].clone())
    }

    /// The f64 semantics.
    pub fn eval(&self, x: &[&Tensor]) -> Result<Tensor, OpError> {
        let x = x[0];
        Ok(match *self {
            QuantOp::FakeQuant { bits, scale } => {
                let s = scale.map_or_else(|| dynamic_scale(x, bits), f64::from_bits);
                x.mapv(|v| fake_quant_one(v, s, bits))
            }
            QuantOp::FakeQuantMask { bits, scale } => {
                let (s, (lo, hi)) = (f64::from_bits(scale), range(bits));
                x.mapv(|v| {
                    let r = (v / s).round_ties_even();
                    f64::from(u8::from((lo..=hi).contains(&r)))
                })
            }
        })
    }

    /// The straight-through estimator (see the module docs): `dx = dout`
    /// with the dynamic scale, `dout · mask(x)` with a fixed one; the mask
    /// itself is piecewise constant and has none.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        inputs: &[NodeId],
        dout: NodeId,
    ) -> Result<Vec<Option<NodeId>>, OpError> {
        match *self {
            QuantOp::FakeQuant { scale: None, .. } => Ok(vec![Some(dout)]),
            QuantOp::FakeQuant {
                bits,
                scale: Some(scale),
            } => {
                let mask = cx.add(
                    Op::Quant(QuantOp::FakeQuantMask { bits, scale }),
                    &[inputs[0]],
                )?;
                Ok(vec![Some(cx.binary(BinaryOp::Mul, dout, mask)?)])
            }
            QuantOp::FakeQuantMask { .. } => Ok(vec![None]),
        }
    }

    /// A division, a rounding, a clamp and a product per element (and the
    /// dynamic scale's pass over the tensor).
    pub fn flops(&self, inputs: &[&TensorType]) -> u64 {
        let n = inputs[0].shape.numel(1) as u64;
        match self {
            QuantOp::FakeQuant { scale: None, .. } => n.saturating_mul(5),
            _ => n.saturating_mul(4),
        }
    }

    /// The codegen face: the runtime's kernels, which round as the
    /// interpreter does (half to even) and divide by the scale as the
    /// runtime's weight quantizer does.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        match *self {
            QuantOp::FakeQuant { bits, scale } => {
                let bits = u32::from(bits);
                let s = match scale {
                    Some(s) => Kernel::f32(f64::from_bits(s)),
                    None => quote!(#rt::kernels::fake_quant_scale(x0, #bits)),
                };
                quote! {
                    #rt::kernels::fake_quant(x0, #s, #bits, out);
                }
            }
            QuantOp::FakeQuantMask { bits, scale } => {
                let bits = u32::from(bits);
                let s = Kernel::f32(f64::from_bits(scale));
                quote! {
                    #rt::kernels::fake_quant_mask(x0, #s, #bits, out);
                }
            }
        }
    }
}

impl fmt::Display for QuantOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QuantOp::FakeQuant { bits, scale: None } => write!(f, "fake_quant({bits} bits)"),
            QuantOp::FakeQuant {
                bits,
                scale: Some(s),
            } => write!(f, "fake_quant({bits} bits, scale {})", f64::from_bits(s)),
            QuantOp::FakeQuantMask { bits, scale } => {
                write!(
                    f,
                    "fake_quant_mask({bits} bits, scale {})",
                    f64::from_bits(scale)
                )
            }
        }
    }
}

/// The quantization functions of the language.
pub static FUNCTIONS: &[Function] = &[Function {
    name: "fake_quant",
    params: &[
        Param::req("x", ArgKind::Tensor),
        Param::opt("bits", ArgKind::Int).or(Lit::Int(8)),
        Param::opt("scale", ArgKind::Float),
    ],
    doc: "clamp(round(x / s), -2^(bits-1), 2^(bits-1) - 1) · s, rounding half to even; \
          s is `scale` or max|x| / (2^(bits-1) - 1); gradient: straight-through",
    build: build_fake_quant,
}];

fn build_fake_quant(a: &Args) -> Result<Built, OpError> {
    let bits = a.int(1).unwrap_or(8);
    if !BITS.contains(&bits) {
        return Err(OpError::argument(format!(
            "fake_quant quantizes to 2 to 16 bits, found bits: {bits}"
        )));
    }
    let scale = match a.float(2) {
        None => None,
        // The scale must stay a positive normal number in the f32 code.
        Some(s) if s > 0.0 && (s as f32).is_normal() => Some(s.to_bits()),
        Some(s) => {
            return Err(OpError::argument(format!(
                "the scale of fake_quant must be a positive (normal f32) number, found {s}"
            )))
        }
    };
    let op = QuantOp::FakeQuant {
        bits: bits as u8,
        scale,
    };
    Ok((Op::Quant(op), vec![a.tensor(0)?.0]))
}
