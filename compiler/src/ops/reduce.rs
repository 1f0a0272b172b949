//! Reductions over axes: sum, mean, max; and the mask that routes max's
//! gradient to the maxima.

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::leaf::LeafOp;
use super::signature::{normalize_axes, ArgKind, Args, Built, Function, Param};
use super::{expect_f32, BinaryOp, Op, OpError, ShapeOp, Tensor};
use crate::graph::{Dim, NodeId, Shape, TensorType};
use ndarray::Axis;
use proc_macro2::TokenStream;
use quote::quote;
use std::fmt;

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Sum of the elements.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
}

/// A reduction over `axes` (all axes when empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReduceOp {
    /// Which reduction.
    pub kind: ReduceKind,
    /// Sorted, unique, non-negative axes; empty means every axis.
    pub axes: Vec<usize>,
    /// Whether reduced axes stay as size 1.
    pub keepdims: bool,
}

impl ReduceOp {
    /// The axes actually reduced for a rank.
    fn reduced(&self, rank: usize) -> Vec<usize> {
        if self.axes.is_empty() {
            (0..rank).collect()
        } else {
            self.axes.clone()
        }
    }

    /// The shape with reduced axes kept as 1.
    fn kept_shape(&self, x: &Shape) -> Shape {
        let red = self.reduced(x.rank());
        Shape(
            x.dims()
                .iter()
                .enumerate()
                .map(|(i, &d)| if red.contains(&i) { Dim::Fixed(1) } else { d })
                .collect(),
        )
    }

    /// The shape rule.
    pub fn infer(&self, x: &TensorType) -> Result<TensorType, OpError> {
        expect_f32(x, 0, &self.to_string())?;
        if let Some(&bad) = self.axes.iter().find(|&&a| a >= x.shape.rank()) {
            return Err(OpError::argument(format!(
                "axis {bad} is out of range for {x}"
            )));
        }
        let red = self.reduced(x.shape.rank());
        let shape = if self.keepdims {
            self.kept_shape(&x.shape)
        } else {
            Shape(
                x.shape
                    .dims()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !red.contains(i))
                    .map(|(_, &d)| d)
                    .collect(),
            )
        };
        Ok(TensorType::f32(shape))
    }

    /// f64 evaluation.
    pub fn eval(&self, x: &Tensor) -> Tensor {
        let red = self.reduced(x.ndim());
        let mut v = x.clone();
        for &ax in red.iter().rev() {
            v = match self.kind {
                ReduceKind::Sum | ReduceKind::Mean => v.sum_axis(Axis(ax)),
                ReduceKind::Max => v.fold_axis(Axis(ax), f64::NEG_INFINITY, |&m, &e| m.max(e)),
            };
            if self.keepdims {
                v.insert_axis_inplace(Axis(ax));
            }
        }
        match self.kind {
            ReduceKind::Sum | ReduceKind::Max => v,
            ReduceKind::Mean => {
                let count: usize = red.iter().map(|&a| x.shape()[a]).product();
                v / count as f64
            }
        }
    }

    /// The gradient rule: the upstream gradient spread back over the reduced
    /// axes, scaled by 1/count for mean, and for max routed to the elements
    /// equal to the maximum (ties share it evenly, as in PyTorch's `amax`).
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        x: NodeId,
        out: NodeId,
        g: NodeId,
    ) -> Result<Option<NodeId>, OpError> {
        let xs = cx.ty(x).shape.clone();
        let kept = self.kept_shape(&xs);
        let g = cx.add(Op::Shape(ShapeOp::Reshape { to: kept.clone() }), &[g])?;
        let g = cx.add(Op::Shape(ShapeOp::Broadcast { to: xs.clone() }), &[g])?;
        let d = match self.kind {
            ReduceKind::Sum => g,
            ReduceKind::Mean => {
                let red = self.reduced(xs.rank());
                let reduced = Shape(red.iter().map(|&a| xs.dims()[a]).collect());
                let count = reduced.fixed_numel().unwrap_or(usize::MAX) as f64;
                let scale = cx.add(
                    Op::Leaf(LeafOp::Constant {
                        value: 1.0 / count,
                        batch_pow: -reduced.batch_power(),
                    }),
                    &[],
                )?;
                cx.binary(BinaryOp::Mul, g, scale)?
            }
            ReduceKind::Max => {
                let m = cx.add(Op::Shape(ShapeOp::Reshape { to: kept.clone() }), &[out])?;
                let m = cx.add(Op::Shape(ShapeOp::Broadcast { to: xs.clone() }), &[m])?;
                let mask = cx.binary(BinaryOp::Equal, x, m)?;
                let count = cx.add(
                    Op::Reduce(ReduceOp {
                        kind: ReduceKind::Sum,
                        axes: self.axes.clone(),
                        keepdims: true,
                    }),
                    &[mask],
                )?;
                let count = cx.add(Op::Shape(ShapeOp::Broadcast { to: xs.clone() }), &[count])?;
                let share = cx.binary(BinaryOp::Div, mask, count)?;
                cx.binary(BinaryOp::Mul, g, share)?
            }
        };
        Ok(Some(d))
    }
}

impl ReduceOp {
    /// The codegen face: the runtime's reduction over an axis mask.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        let shape = &k.inputs[0].shape;
        let dims = Kernel::dims(shape);
        let mask = Kernel::mask(shape.rank(), &self.axes);
        let kind = match self.kind {
            ReduceKind::Sum => quote!(Sum),
            ReduceKind::Mean => quote!(Mean),
            ReduceKind::Max => quote!(Max),
        };
        quote! {
            #rt::kernels::reduce(#rt::kernels::Reduce::#kind, out, x0, &#dims, &#mask);
        }
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            ReduceKind::Sum => "sum",
            ReduceKind::Mean => "mean",
            ReduceKind::Max => "max",
        };
        if self.axes.is_empty() {
            write!(f, "{name}")
        } else {
            write!(f, "{name}(axis: {:?})", self.axes)
        }
    }
}

const REDUCE_PARAMS: &[Param] = &[
    Param::req("x", ArgKind::Tensor),
    Param::opt("axis", ArgKind::Axes),
    Param::opt("keepdims", ArgKind::Bool),
];

fn build(kind: ReduceKind, a: &Args) -> Result<Built, OpError> {
    let (x, ty) = a.tensor(0)?;
    let axes = match a.axes(1) {
        Some(axes) => normalize_axes(axes, ty.shape.rank())?,
        None => Vec::new(),
    };
    let keepdims = a.bool(2).unwrap_or(false);
    Ok((
        Op::Reduce(ReduceOp {
            kind,
            axes,
            keepdims,
        }),
        vec![x],
    ))
}

/// The reductions of the language.
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "sum",
        params: REDUCE_PARAMS,
        doc: "sum over `axis` (an axis or a list; all when omitted), `keepdims: true` keeps them as 1",
        build: |a| build(ReduceKind::Sum, a),
    },
    Function {
        name: "mean",
        params: REDUCE_PARAMS,
        doc: "mean over `axis` (all when omitted)",
        build: |a| build(ReduceKind::Mean, a),
    },
    Function {
        name: "max",
        params: REDUCE_PARAMS,
        doc: "maximum over `axis` (all when omitted); ties share the gradient",
        build: |a| build(ReduceKind::Max, a),
    },
];
