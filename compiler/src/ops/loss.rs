//! Losses over a batch, each the mean over its elements, and the one-hot
//! encoding of class labels. Cross-entropy is one op (not log-softmax then a
//! gather) so that later stages can emit it as one stable kernel.

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::leaf::LeafOp;
use super::signature::{ArgKind, Function, Param};
use super::softmax::{logsumexp, SoftmaxKind, SoftmaxOp};
use super::{expect_f32, BinaryOp, Op, OpError, Tensor, UnaryOp};
use crate::diagnostic::ErrorKind;
use crate::graph::{DType, Dim, NodeId, Shape, TensorType};
use ndarray::{ArrayD, Axis, IxDyn};
use proc_macro2::TokenStream;
use quote::quote;
use std::fmt;

/// A loss or label encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossOp {
    /// Mean over positions of `-log softmax(logits)[label]`; operands
    /// `logits: f32[..., C]` and `labels: class[...] of C`.
    CrossEntropy,
    /// Mean over elements of the binary cross-entropy of `sigmoid(logits)`
    /// against float targets in [0, 1]; computed from the logits, stably.
    BinaryCrossEntropy,
    /// `(softmax(logits) − one_hot(labels)) · scale` over the last axis:
    /// cross-entropy's gradient with respect to the logits as one op, so it
    /// runs as one stable kernel. Not in the language: the `softmax-ce` graph
    /// pass builds it from the gradient's primitives.
    /// Operands `logits: f32[..., C]`, `labels: class[...] of C` and a
    /// one-element `scale`.
    CrossEntropyGrad,
    /// `class[...] of C` → `f32[..., C]` with a 1 at each label.
    OneHot {
        /// The number of classes C.
        classes: usize,
    },
}

impl LossOp {
    /// Number of operands.
    pub fn arity(&self) -> usize {
        match self {
            LossOp::CrossEntropy | LossOp::BinaryCrossEntropy => 2,
            LossOp::CrossEntropyGrad => 3,
            LossOp::OneHot { .. } => 1,
        }
    }

    /// The shape rule.
    pub fn infer(&self, t: &[&TensorType]) -> Result<TensorType, OpError> {
        match self {
            LossOp::CrossEntropy => {
                logits_against_labels(t[0], t[1])?;
                Ok(TensorType::scalar())
            }
            LossOp::CrossEntropyGrad => {
                logits_against_labels(t[0], t[1])?;
                expect_f32(t[2], 2, "cross_entropy_grad")?;
                if t[2].shape.dims().iter().any(|&d| d != Dim::Fixed(1)) {
                    return Err(OpError::shape(format!(
                        "cross_entropy_grad scales by one value, found {}",
                        t[2]
                    )));
                }
                Ok(t[0].clone())
            }
            LossOp::BinaryCrossEntropy => {
                expect_f32(t[0], 0, "binary_cross_entropy")?;
                expect_f32(t[1], 1, "binary_cross_entropy")?;
                if t[0].shape != t[1].shape {
                    return Err(OpError::shape(format!(
                        "binary_cross_entropy of {} against {}: shapes differ",
                        t[0], t[1]
                    )));
                }
                Ok(TensorType::scalar())
            }
            LossOp::OneHot { classes: want } => match t[0].dtype {
                DType::Class { classes } if classes == *want => {
                    let mut dims = t[0].shape.dims().to_vec();
                    dims.push(Dim::Fixed(classes));
                    Ok(TensorType::f32(Shape(dims)))
                }
                _ => Err(OpError {
                    kind: ErrorKind::TypeMismatch,
                    message: format!(
                        "one_hot expects class labels of {want} classes, found {}",
                        t[0]
                    ),
                    operand: Some(0),
                    help: None,
                }),
            },
        }
    }

    /// f64 evaluation.
    pub fn eval(&self, x: &[&Tensor]) -> Result<Tensor, OpError> {
        match self {
            LossOp::CrossEntropy => {
                let (logits, labels) = (x[0], x[1]);
                let c = *logits.shape().last().unwrap_or(&0);
                if labels.len() * c != logits.len() || c == 0 {
                    return Err(OpError::shape("cross_entropy operands do not agree"));
                }
                let rows = logits
                    .to_shape((labels.len(), c))
                    .map_err(|e| OpError::internal(e.to_string()))?;
                let mut total = 0.0;
                for (row, &label) in rows.outer_iter().zip(labels.iter()) {
                    let k = class_index(label, c)?;
                    total += logsumexp(row.iter()) - row[k];
                }
                Ok(scalar(total / labels.len() as f64))
            }
            LossOp::BinaryCrossEntropy => {
                let total: f64 = x[0]
                    .iter()
                    .zip(x[1].iter())
                    .map(|(&z, &t)| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p())
                    .sum();
                Ok(scalar(total / x[0].len() as f64))
            }
            LossOp::CrossEntropyGrad => {
                let (logits, labels) = (x[0], x[1]);
                let c = *logits.shape().last().unwrap_or(&0);
                if labels.len() * c != logits.len() || c == 0 || x[2].len() != 1 {
                    return Err(OpError::shape("cross_entropy_grad operands do not agree"));
                }
                let scale = x[2].iter().next().copied().unwrap_or(0.0);
                let mut out = one_hot(labels, c)?;
                let mut rows = out
                    .view_mut()
                    .into_shape_with_order((labels.len(), c))
                    .map_err(|e| OpError::internal(e.to_string()))?;
                let logit_rows = logits
                    .to_shape((labels.len(), c))
                    .map_err(|e| OpError::internal(e.to_string()))?;
                for (mut o, row) in rows.outer_iter_mut().zip(logit_rows.outer_iter()) {
                    let lse = logsumexp(row.iter());
                    for (o, &v) in o.iter_mut().zip(row.iter()) {
                        *o = ((v - lse).exp() - *o) * scale;
                    }
                }
                Ok(out)
            }
            LossOp::OneHot { classes } => one_hot(x[0], *classes),
        }
    }

    /// FLOPs for one sample.
    pub fn flops(&self, t: &[&TensorType]) -> u64 {
        let n = t[0].shape.numel(1) as u64;
        match self {
            LossOp::CrossEntropy => n.saturating_mul(5),
            LossOp::BinaryCrossEntropy => n.saturating_mul(6),
            LossOp::CrossEntropyGrad => n.saturating_mul(6),
            LossOp::OneHot { .. } => 0,
        }
    }

    /// Gradient rules: cross-entropy's is (softmax(logits) − one_hot(labels))/N,
    /// binary cross-entropy's (sigmoid(logits) − targets)/N; labels get none.
    /// Cross-entropy's gradient op differentiates as `softmax(logits) · scale`
    /// (softmax's own rule) and, for the scale, `Σ g·(softmax − one_hot)`.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        x: &[NodeId],
        g: NodeId,
    ) -> Result<Vec<Option<NodeId>>, OpError> {
        match self {
            LossOp::CrossEntropy => {
                let labels_shape = cx.ty(x[1]).shape.clone();
                let scale = mean_scale(cx, &labels_shape, g)?;
                let axis = cx.ty(x[0]).shape.rank() - 1;
                let p = cx.add(
                    Op::Softmax(SoftmaxOp {
                        kind: SoftmaxKind::Softmax,
                        axis,
                    }),
                    &[x[0]],
                )?;
                let classes = cx.ty(x[0]).shape.dims()[axis].resolve(1);
                let oh = cx.add(Op::Loss(LossOp::OneHot { classes }), &[x[1]])?;
                let d = cx.binary(BinaryOp::Sub, p, oh)?;
                Ok(vec![Some(cx.binary(BinaryOp::Mul, d, scale)?), None])
            }
            LossOp::BinaryCrossEntropy => {
                let shape = cx.ty(x[0]).shape.clone();
                let scale = mean_scale(cx, &shape, g)?;
                let s = cx.unary(UnaryOp::Sigmoid, x[0])?;
                let d = cx.binary(BinaryOp::Sub, s, x[1])?;
                let dz = cx.binary(BinaryOp::Mul, d, scale)?;
                let nz = cx.unary(UnaryOp::Neg, x[0])?;
                let dt = cx.binary(BinaryOp::Mul, nz, scale)?;
                Ok(vec![Some(dz), Some(dt)])
            }
            LossOp::CrossEntropyGrad => {
                let axis = cx.ty(x[0]).shape.rank() - 1;
                let softmax = SoftmaxOp {
                    kind: SoftmaxKind::Softmax,
                    axis,
                };
                let p = cx.add(Op::Softmax(softmax), &[x[0]])?;
                let gs = cx.binary(BinaryOp::Mul, g, x[2])?;
                let d_logits = softmax.grad(cx, x[0], p, gs)?;
                let classes = cx.ty(x[0]).shape.dims()[axis].resolve(1);
                let oh = cx.add(Op::Loss(LossOp::OneHot { classes }), &[x[1]])?;
                let d = cx.binary(BinaryOp::Sub, p, oh)?;
                let gd = cx.binary(BinaryOp::Mul, g, d)?;
                let to = cx.ty(x[2]).shape.clone();
                let d_scale = cx.add(Op::Shape(super::ShapeOp::SumTo { to }), &[gd])?;
                Ok(vec![Some(d_logits), None, Some(d_scale)])
            }
            LossOp::OneHot { .. } => Ok(vec![None]),
        }
    }
}

impl LossOp {
    /// The codegen face: the runtime's loss kernels.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        match self {
            LossOp::CrossEntropy => {
                let c = Kernel::dim(*k.inputs[0].shape.dims().last().unwrap_or(&Dim::Fixed(1)));
                quote!(out[0] = #rt::kernels::cross_entropy(x0, x1, #c);)
            }
            LossOp::CrossEntropyGrad => {
                let c = Kernel::dim(*k.inputs[0].shape.dims().last().unwrap_or(&Dim::Fixed(1)));
                quote!(#rt::kernels::cross_entropy_grad(out, x0, x1, #c, x2[0]);)
            }
            LossOp::BinaryCrossEntropy => {
                quote!(out[0] = #rt::kernels::binary_cross_entropy(x0, x1);)
            }
            LossOp::OneHot { classes } => {
                let c = Kernel::dim(Dim::Fixed(*classes));
                quote!(#rt::kernels::one_hot(out, x0, #c);)
            }
        }
    }
}

/// Checks `logits: f32[..., C]` against `labels: class[...] of C`.
fn logits_against_labels(logits: &TensorType, labels: &TensorType) -> Result<(), OpError> {
    expect_f32(logits, 0, "cross_entropy")?;
    let DType::Class { classes } = labels.dtype else {
        return Err(OpError {
            kind: ErrorKind::TypeMismatch,
            message: format!(
                "cross_entropy expects class labels as its second operand, found {labels}"
            ),
            operand: Some(1),
            help: Some(
                "declare them with `label name: class[batch] of N;`, or use \
                     binary_cross_entropy or mse for float targets"
                    .into(),
            ),
        });
    };
    let want = labels
        .shape
        .dims()
        .iter()
        .copied()
        .chain([Dim::Fixed(classes)]);
    if !logits.shape.dims().iter().copied().eq(want) {
        return Err(OpError::shape(format!(
            "cross_entropy of {logits} against {labels}: logits must be \
                 f32{} (one score per class for each label)",
            Shape(
                labels
                    .shape
                    .dims()
                    .iter()
                    .copied()
                    .chain([Dim::Fixed(classes)])
                    .collect()
            )
        )));
    }
    Ok(())
}

/// `g / N` where N is the number of elements of `shape` (symbolic in batch).
fn mean_scale(cx: &mut GradCtx<'_>, shape: &Shape, g: NodeId) -> Result<NodeId, OpError> {
    let n = shape.fixed_numel().unwrap_or(usize::MAX) as f64;
    let c = cx.add(
        Op::Leaf(LeafOp::Constant {
            value: 1.0 / n,
            batch_pow: -shape.batch_power(),
        }),
        &[],
    )?;
    cx.binary(BinaryOp::Mul, g, c)
}

fn scalar(v: f64) -> Tensor {
    ArrayD::from_elem(IxDyn(&[]), v)
}

/// A label value as a class index, rejecting non-integers and out-of-range.
pub fn class_index(label: f64, classes: usize) -> Result<usize, OpError> {
    if label.fract() != 0.0 || label < 0.0 || label >= classes as f64 {
        return Err(OpError::argument(format!(
            "label {label} is not a class index in 0..{classes}"
        )));
    }
    Ok(label as usize)
}

/// One-hot encoding of label values for `classes` classes.
pub fn one_hot(labels: &Tensor, classes: usize) -> Result<Tensor, OpError> {
    let mut shape = labels.shape().to_vec();
    shape.push(classes);
    let mut out = Tensor::zeros(IxDyn(&shape));
    {
        let mut rows = out
            .view_mut()
            .into_shape_with_order((labels.len(), classes))
            .map_err(|e| OpError::internal(e.to_string()))?;
        for (mut row, &l) in rows.axis_iter_mut(Axis(0)).zip(labels.iter()) {
            row[class_index(l, classes)?] = 1.0;
        }
    }
    Ok(out)
}

impl fmt::Display for LossOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossOp::CrossEntropy => "cross_entropy",
            LossOp::BinaryCrossEntropy => "binary_cross_entropy",
            LossOp::CrossEntropyGrad => "cross_entropy_grad",
            LossOp::OneHot { .. } => "one_hot",
        })
    }
}

/// The losses of the language (mse and l1 are layers over these primitives;
/// see `lower`).
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "cross_entropy",
        params: &[
            Param::req("logits", ArgKind::Tensor),
            Param::req("labels", ArgKind::Tensor),
        ],
        doc: "mean of -log softmax(logits)[label]: sparse categorical cross-entropy from logits",
        build: |a| {
            Ok((
                Op::Loss(LossOp::CrossEntropy),
                vec![a.tensor(0)?.0, a.tensor(1)?.0],
            ))
        },
    },
    Function {
        name: "binary_cross_entropy",
        params: &[
            Param::req("logits", ArgKind::Tensor),
            Param::req("targets", ArgKind::Tensor),
        ],
        doc: "mean binary cross-entropy of sigmoid(logits) against targets, from logits",
        build: |a| {
            Ok((
                Op::Loss(LossOp::BinaryCrossEntropy),
                vec![a.tensor(0)?.0, a.tensor(1)?.0],
            ))
        },
    },
    Function {
        name: "one_hot",
        params: &[Param::req("labels", ArgKind::Tensor)],
        doc: "class labels as f32 one-hot vectors",
        build: |a| {
            let (labels, ty) = a.tensor(0)?;
            let DType::Class { classes } = ty.dtype else {
                return Err(OpError {
                    kind: ErrorKind::TypeMismatch,
                    message: format!("one_hot expects class labels, found {ty}"),
                    operand: Some(0),
                    help: None,
                });
            };
            Ok((Op::Loss(LossOp::OneHot { classes }), vec![labels]))
        },
    },
];
