//! Softmax and log-softmax along one axis, computed stably (the maximum is
//! subtracted before exponentiating).

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::reduce::{ReduceKind, ReduceOp};
use super::signature::{normalize_axis, ArgKind, Args, Built, Function, Param};
use super::{expect_f32, BinaryOp, Op, OpError, Tensor, UnaryOp};
use crate::graph::{NodeId, TensorType};
use ndarray::Axis;
use proc_macro2::TokenStream;
use quote::quote;
use std::fmt;

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftmaxKind {
    /// `exp(x) / sum(exp(x))`
    Softmax,
    /// `x - log(sum(exp(x)))`
    LogSoftmax,
}

/// Softmax or log-softmax along `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftmaxOp {
    /// Which normalisation.
    pub kind: SoftmaxKind,
    /// The (non-negative) axis normalised over.
    pub axis: usize,
}

impl SoftmaxOp {
    /// The shape rule: same shape.
    pub fn infer(&self, x: &TensorType) -> Result<TensorType, OpError> {
        expect_f32(x, 0, &self.to_string())?;
        if self.axis >= x.shape.rank() {
            return Err(OpError::argument(format!(
                "axis {} is out of range for {x}",
                self.axis
            )));
        }
        Ok(x.clone())
    }

    /// Stable f64 evaluation.
    pub fn eval(&self, x: &Tensor) -> Tensor {
        let mut out = x.clone();
        for mut lane in out.lanes_mut(Axis(self.axis)) {
            let m = lane.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let lse = lane.iter().map(|&v| (v - m).exp()).sum::<f64>().ln() + m;
            match self.kind {
                SoftmaxKind::Softmax => lane.mapv_inplace(|v| (v - lse).exp()),
                SoftmaxKind::LogSoftmax => lane.mapv_inplace(|v| v - lse),
            }
        }
        out
    }

    /// softmax: dx = y ⊙ (g − Σ g⊙y); log-softmax: dx = g − exp(y) ⊙ Σ g.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        _x: NodeId,
        y: NodeId,
        g: NodeId,
    ) -> Result<NodeId, OpError> {
        let sum = Op::Reduce(ReduceOp {
            kind: ReduceKind::Sum,
            axes: vec![self.axis],
            keepdims: true,
        });
        match self.kind {
            SoftmaxKind::Softmax => {
                let gy = cx.binary(BinaryOp::Mul, g, y)?;
                let s = cx.add(sum, &[gy])?;
                let d = cx.binary(BinaryOp::Sub, g, s)?;
                cx.binary(BinaryOp::Mul, y, d)
            }
            SoftmaxKind::LogSoftmax => {
                let s = cx.add(sum, &[g])?;
                let p = cx.unary(UnaryOp::Exp, y)?;
                let ps = cx.binary(BinaryOp::Mul, p, s)?;
                cx.binary(BinaryOp::Sub, g, ps)
            }
        }
    }
}

impl SoftmaxOp {
    /// The codegen face: the runtime's stable softmax over the middle of an
    /// `[outer, n, inner]` view.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        let d = k.inputs[0].shape.dims();
        let outer = Kernel::product(&d[..self.axis]);
        let n = Kernel::dim(d[self.axis]);
        let inner = Kernel::product(&d[self.axis + 1..]);
        let log = self.kind == SoftmaxKind::LogSoftmax;
        quote! {
            #rt::kernels::softmax(out, x0, #outer, #n, #inner, #log);
        }
    }
}

impl fmt::Display for SoftmaxOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SoftmaxKind::Softmax => write!(f, "softmax(axis: {})", self.axis),
            SoftmaxKind::LogSoftmax => write!(f, "log_softmax(axis: {})", self.axis),
        }
    }
}

const PARAMS: &[Param] = &[
    Param::req("x", ArgKind::Tensor),
    Param::opt("axis", ArgKind::Int),
];

fn build(kind: SoftmaxKind, a: &Args) -> Result<Built, OpError> {
    let (x, ty) = a.tensor(0)?;
    let axis = normalize_axis(a.int(1).unwrap_or(-1), ty.shape.rank())?;
    Ok((Op::Softmax(SoftmaxOp { kind, axis }), vec![x]))
}

/// The softmax functions of the language.
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "softmax",
        params: PARAMS,
        doc: "softmax along `axis` (default -1, the last)",
        build: |a| build(SoftmaxKind::Softmax, a),
    },
    Function {
        name: "log_softmax",
        params: PARAMS,
        doc: "log of softmax along `axis`, computed stably",
        build: |a| build(SoftmaxKind::LogSoftmax, a),
    },
];

/// Numerically stable log(sum(exp(v))) of a slice, shared with the losses.
pub fn logsumexp<'a>(v: impl Iterator<Item = &'a f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    if m == f64::NEG_INFINITY {
        return m;
    }
    v.map(|&x| (x - m).exp()).sum::<f64>().ln() + m
}

impl SoftmaxOp {
    /// Softmax is an f32 step of an int8 plan (over the last axis).
    pub fn int8(&self) -> super::Int8 {
        match self.kind {
            SoftmaxKind::Softmax => super::Int8::F32,
            SoftmaxKind::LogSoftmax => super::Int8::None,
        }
    }
}
