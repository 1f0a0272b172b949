//! Ops that move data without arithmetic: reshape, transpose, broadcast, and
//! broadcast's adjoint `sum_to` (summing a gradient back to an operand's
//! shape).

use super::elementwise::broadcast_shapes;
use super::grad::GradCtx;
use super::kernel::Kernel;
use super::signature::{normalize_axes, ArgKind, Function, Param};
use super::{EvalCtx, Op, OpError, Tensor};
use crate::graph::{Dim, NodeId, Shape, TensorType};
use ndarray::{Axis, IxDyn};
use proc_macro2::TokenStream;
use quote::quote;
use std::fmt;

/// A data-movement op.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ShapeOp {
    /// Same elements in row-major order, another shape.
    Reshape {
        /// The new shape.
        to: Shape,
    },
    /// Axes permuted: result axis `i` is operand axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// numpy broadcasting to a larger shape.
    Broadcast {
        /// The target shape.
        to: Shape,
    },
    /// Sums over the axes that broadcasting to the operand's shape would
    /// have added or stretched; the adjoint of `Broadcast`.
    SumTo {
        /// The target shape.
        to: Shape,
    },
}

impl ShapeOp {
    /// The shape rule.
    pub fn infer(&self, x: &TensorType) -> Result<TensorType, OpError> {
        let out = |shape: Shape| TensorType {
            dtype: x.dtype,
            shape,
        };
        match self {
            ShapeOp::Reshape { to } => {
                let same_fixed =
                    x.shape.fixed_numel().is_some() && x.shape.fixed_numel() == to.fixed_numel();
                if !same_fixed || x.shape.batch_power() != to.batch_power() {
                    return Err(OpError::shape(format!(
                        "cannot reshape {x} to {to}: the element counts differ"
                    )));
                }
                Ok(out(to.clone()))
            }
            ShapeOp::Transpose { perm } => {
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..x.shape.rank()).collect::<Vec<_>>() {
                    return Err(OpError::argument(format!(
                        "{perm:?} is not a permutation of the {} axes of {x}",
                        x.shape.rank()
                    )));
                }
                Ok(out(Shape(
                    perm.iter().map(|&p| x.shape.dims()[p]).collect(),
                )))
            }
            ShapeOp::Broadcast { to } => match broadcast_shapes(&x.shape, to) {
                Ok(s) if &s == to => Ok(out(to.clone())),
                _ => Err(OpError::shape(format!("cannot broadcast {x} to {to}"))),
            },
            ShapeOp::SumTo { to } => match broadcast_shapes(to, &x.shape) {
                Ok(s) if s == x.shape => Ok(out(to.clone())),
                _ => Err(OpError::shape(format!("cannot sum {x} down to {to}"))),
            },
        }
    }

    /// f64 evaluation.
    pub fn eval(&self, x: &Tensor, cx: &EvalCtx) -> Result<Tensor, OpError> {
        let bad = |e: ndarray::ShapeError| OpError::shape(e.to_string());
        match self {
            ShapeOp::Reshape { to } => {
                let dims = to.resolve(cx.batch);
                let flat: Vec<f64> = x.iter().copied().collect();
                Tensor::from_shape_vec(IxDyn(&dims), flat).map_err(bad)
            }
            ShapeOp::Transpose { perm } => {
                if perm.len() != x.ndim() {
                    return Err(OpError::shape("transpose rank mismatch"));
                }
                Ok(x.clone()
                    .permuted_axes(IxDyn(perm))
                    .as_standard_layout()
                    .into_owned())
            }
            ShapeOp::Broadcast { to } => {
                let dims = to.resolve(cx.batch);
                x.broadcast(IxDyn(&dims))
                    .map(|v| v.to_owned())
                    .ok_or_else(|| OpError::shape("broadcast failed"))
            }
            ShapeOp::SumTo { to } => {
                let dims = to.resolve(cx.batch);
                let mut v = x.clone();
                while v.ndim() > dims.len() {
                    v = v.sum_axis(Axis(0));
                }
                for (i, &d) in dims.iter().enumerate() {
                    if d == 1 && v.shape()[i] != 1 {
                        v = v.sum_axis(Axis(i));
                        v.insert_axis_inplace(Axis(i));
                    }
                }
                if v.shape() != dims.as_slice() {
                    return Err(OpError::shape("sum_to failed"));
                }
                Ok(v)
            }
        }
    }

    /// The gradient rule: the inverse data movement.
    pub fn grad(&self, cx: &mut GradCtx<'_>, x: NodeId, g: NodeId) -> Result<NodeId, OpError> {
        let xs = cx.ty(x).shape.clone();
        match self {
            ShapeOp::Reshape { .. } => cx.add(Op::Shape(ShapeOp::Reshape { to: xs }), &[g]),
            ShapeOp::Transpose { perm } => {
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                cx.add(Op::Shape(ShapeOp::Transpose { perm: inv }), &[g])
            }
            ShapeOp::Broadcast { .. } => cx.sum_to(g, &xs),
            ShapeOp::SumTo { .. } => cx.add(Op::Shape(ShapeOp::Broadcast { to: xs }), &[g]),
        }
    }
}

impl ShapeOp {
    /// The codegen face: a copy, or the runtime's data-movement kernels.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        let xd = Kernel::dims(&k.inputs[0].shape);
        let od = Kernel::dims(&k.out.shape);
        match self {
            ShapeOp::Reshape { .. } => quote!(out.copy_from_slice(x0);),
            ShapeOp::Transpose { perm } => {
                quote!(#rt::kernels::transpose(out, x0, &#xd, &[#(#perm),*]);)
            }
            ShapeOp::Broadcast { .. } => quote!(#rt::kernels::broadcast(out, &#od, x0, &#xd);),
            ShapeOp::SumTo { .. } => quote!(#rt::kernels::sum_to(out, &#od, x0, &#xd);),
        }
    }
}

impl fmt::Display for ShapeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeOp::Reshape { to } => write!(f, "reshape{to}"),
            ShapeOp::Transpose { perm } => write!(f, "transpose{perm:?}"),
            ShapeOp::Broadcast { to } => write!(f, "broadcast{to}"),
            ShapeOp::SumTo { to } => write!(f, "sum_to{to}"),
        }
    }
}

/// The data-movement functions of the language.
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "reshape",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::req("shape", ArgKind::Shape),
        ],
        doc: "same elements, new shape, e.g. reshape(x, [batch, 28, 28])",
        build: |a| {
            let to = a
                .shape(1)
                .cloned()
                .ok_or_else(|| OpError::argument("reshape needs a shape"))?;
            Ok((Op::Shape(ShapeOp::Reshape { to }), vec![a.tensor(0)?.0]))
        },
    },
    Function {
        name: "flatten",
        params: &[Param::req("x", ArgKind::Tensor)],
        doc: "keeps the first axis and flattens the rest: [batch, 28, 28] → [batch, 784]",
        build: |a| {
            let (x, ty) = a.tensor(0)?;
            let dims = ty.shape.dims();
            let Some((&first, rest)) = dims.split_first() else {
                return Err(OpError::argument(format!("cannot flatten a scalar {ty}")));
            };
            if rest.contains(&Dim::Batch) {
                return Err(OpError::argument(format!(
                    "flatten of {ty}: only the first axis may be batch"
                )));
            }
            let n = Shape(rest.to_vec())
                .fixed_numel()
                .ok_or_else(|| OpError::argument("flattened size overflows"))?;
            let to = Shape(vec![first, Dim::Fixed(n)]);
            Ok((Op::Shape(ShapeOp::Reshape { to }), vec![x]))
        },
    },
    Function {
        name: "transpose",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::opt("perm", ArgKind::Axes),
        ],
        doc: "permutes axes (reverses them when `perm` is omitted)",
        build: |a| {
            let (x, ty) = a.tensor(0)?;
            let rank = ty.shape.rank();
            let perm = match a.axes(1) {
                Some(p) => {
                    let resolved: Vec<usize> = p
                        .iter()
                        .map(|&i| super::signature::normalize_axis(i, rank))
                        .collect::<Result<_, _>>()?;
                    // Validate it is a permutation (same error as the shape rule).
                    normalize_axes(p, rank)?;
                    resolved
                }
                None => (0..rank).rev().collect(),
            };
            Ok((Op::Shape(ShapeOp::Transpose { perm }), vec![x]))
        },
    },
    Function {
        name: "broadcast",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::req("shape", ArgKind::Shape),
        ],
        doc: "numpy broadcasting to a larger shape",
        build: |a| {
            let to = a
                .shape(1)
                .cloned()
                .ok_or_else(|| OpError::argument("broadcast needs a shape"))?;
            Ok((Op::Shape(ShapeOp::Broadcast { to }), vec![a.tensor(0)?.0]))
        },
    },
];

impl ShapeOp {
    /// A reshape (`flatten`) is an alias in an int8 plan: row-major
    /// values need no step.
    pub fn int8(&self) -> super::Int8 {
        match self {
            ShapeOp::Reshape { .. } => super::Int8::Alias,
            _ => super::Int8::None,
        }
    }
}
