//! Matrix product: `[..., m, k] @ [..., k, n] → [..., m, n]`, batched over
//! equal leading dimensions, or with a shared rank-2 right operand (the usual
//! `x @ weight`).

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::reduce::{ReduceKind, ReduceOp};
use super::signature::{ArgKind, Function, Param};
use super::{expect_f32, Op, OpError, ShapeOp, Tensor};
use crate::graph::{NodeId, Shape, TensorType};
use ndarray::{Array2, ArrayView2, Axis, IxDyn};
use proc_macro2::TokenStream;
use quote::quote;

/// The matrix product op (`@`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Matmul;

impl Matmul {
    /// The shape rule.
    pub fn infer(&self, a: &TensorType, b: &TensorType) -> Result<TensorType, OpError> {
        expect_f32(a, 0, "matmul")?;
        expect_f32(b, 1, "matmul")?;
        let what = || format!("matmul of {a} and {b}");
        let (ra, rb) = (a.shape.rank(), b.shape.rank());
        if ra < 2 {
            return Err(OpError::shape(format!(
                "{}: the left operand must have rank 2 or more, found rank {ra}",
                what()
            ))
            .at(0));
        }
        if rb < 2 {
            return Err(OpError::shape(format!(
                "{}: the right operand must have rank 2 or more, found rank {rb}",
                what()
            ))
            .at(1));
        }
        let (ad, bd) = (a.shape.dims(), b.shape.dims());
        let (k1, k2) = (ad[ra - 1], bd[rb - 2]);
        if k1 != k2 {
            return Err(OpError::shape(format!(
                "{}: inner dimensions {k1} and {k2} differ",
                what()
            )));
        }
        if rb > 2 && ad[..ra - 2] != bd[..rb - 2] {
            return Err(OpError::shape(format!(
                "{}: leading (batch) dimensions {} and {} differ",
                what(),
                Shape(ad[..ra - 2].to_vec()),
                Shape(bd[..rb - 2].to_vec())
            )));
        }
        let mut out = ad[..ra - 1].to_vec();
        out.push(bd[rb - 1]);
        Ok(TensorType::f32(Shape(out)))
    }

    /// The f64 product.
    pub fn eval(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
        let (ra, rb) = (a.ndim(), b.ndim());
        if ra < 2 || rb < 2 || a.shape()[ra - 1] != b.shape()[rb - 2] {
            return Err(OpError::shape("matmul operands do not agree"));
        }
        let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
        let lead: Vec<usize> = a.shape()[..ra - 2].to_vec();
        let batches: usize = lead.iter().product();
        let a3 = a
            .to_shape((batches, m, k))
            .map_err(|e| OpError::internal(e.to_string()))?;
        let b3 = if rb == 2 {
            None
        } else {
            Some(
                b.to_shape((batches, k, n))
                    .map_err(|e| OpError::internal(e.to_string()))?,
            )
        };
        let b2: Option<ArrayView2<f64>> = if rb == 2 {
            Some(
                b.view()
                    .into_dimensionality()
                    .map_err(|e| OpError::internal(e.to_string()))?,
            )
        } else {
            None
        };
        let mut out = Vec::with_capacity(batches * m * n);
        for i in 0..batches {
            let ai = a3.index_axis(Axis(0), i);
            let prod: Array2<f64> = match (&b2, &b3) {
                (Some(b2), _) => ai.dot(b2),
                (None, Some(b3)) => ai.dot(&b3.index_axis(Axis(0), i)),
                (None, None) => unreachable!("one of the right operand views exists"),
            };
            out.extend(prod.iter().copied());
        }
        let mut shape = lead;
        shape.extend([m, n]);
        Tensor::from_shape_vec(IxDyn(&shape), out).map_err(|e| OpError::internal(e.to_string()))
    }

    /// dA = dC @ Bᵀ; dB = Aᵀ @ dC, summed over leading dimensions when B is
    /// shared across them.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        a: NodeId,
        b: NodeId,
        g: NodeId,
    ) -> Result<Vec<Option<NodeId>>, OpError> {
        let ra = cx.ty(a).shape.rank();
        let rb = cx.ty(b).shape.rank();
        let bt = cx.add(
            Op::Shape(ShapeOp::Transpose {
                perm: swap_last(rb),
            }),
            &[b],
        )?;
        let ga = cx.add(Op::Matmul(Matmul), &[g, bt])?;
        let at = cx.add(
            Op::Shape(ShapeOp::Transpose {
                perm: swap_last(ra),
            }),
            &[a],
        )?;
        let mut gb = cx.add(Op::Matmul(Matmul), &[at, g])?;
        if rb == 2 && ra > 2 {
            let axes: Vec<usize> = (0..ra - 2).collect();
            gb = cx.add(
                Op::Reduce(ReduceOp {
                    kind: ReduceKind::Sum,
                    axes,
                    keepdims: false,
                }),
                &[gb],
            )?;
        }
        Ok(vec![Some(ga), Some(gb)])
    }
}

impl Matmul {
    /// The codegen face: one GEMM (leading dimensions folded into the rows
    /// when the right operand is shared), or one per leading index.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        let (a, bshape) = (k.inputs[0].shape.dims(), k.inputs[1].shape.dims());
        let ra = a.len();
        let batches = Kernel::product(&a[..ra - 2]);
        let (m, kk, n) = (
            Kernel::dim(a[ra - 2]),
            Kernel::dim(a[ra - 1]),
            Kernel::dim(bshape[bshape.len() - 1]),
        );
        let shared = bshape.len() == 2;
        let ta = k.transposed.first().copied().unwrap_or(false);
        let tb = k.transposed.get(1).copied().unwrap_or(false);
        if ta || tb {
            // Only rank-2 operands are folded (one matrix each).
            return quote! {
                #rt::kernels::matmul_t(out, x0, x1, #m, #kk, #n, #ta, #tb);
            };
        }
        quote! {
            #rt::kernels::matmul(out, x0, x1, #batches, #m, #kk, #n, #shared);
        }
    }
}

/// The permutation that swaps the last two axes of a rank-`r` tensor.
pub fn swap_last(r: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..r).collect();
    if r >= 2 {
        p.swap(r - 1, r - 2);
    }
    p
}

/// The matmul functions of the language (`a @ b` is the operator form).
pub static FUNCTIONS: &[Function] = &[Function {
    name: "matmul",
    params: &[
        Param::req("a", ArgKind::Tensor),
        Param::req("b", ArgKind::Tensor),
    ],
    doc: "matrix product, the same as a @ b",
    build: |a| Ok((Op::Matmul(Matmul), vec![a.tensor(0)?.0, a.tensor(1)?.0])),
}];

impl Matmul {
    /// Int8 plans run a product with a weight parameter on the int8 GEMM.
    pub fn int8(&self) -> super::Int8 {
        super::Int8::Kernel
    }
}
