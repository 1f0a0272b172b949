//! Convolution and pooling over NCHW tensors: `conv2d` (stride, padding,
//! dilation, groups) with its input and weight gradients as ops of their
//! own, `max_pool2d` and `avg_pool2d` with their gradients, and
//! `global_avg_pool` (a mean over the two spatial axes, so a [`ReduceOp`](super::ReduceOp)).
//!
//! The f32 kernels are in `nnc_runtime::conv`: implicit GEMMs for stride 1
//! (on AVX2 CPUs), im2col + GEMM otherwise, with the padded copies or the
//! column matrix in scratch space of the workspace that the memory planner
//! places (see [`ConvOp::scratch`]).

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::{Op, OpError, Tensor};
use crate::graph::{Dim, NodeId, Shape, TensorType};
use ndarray::IxDyn;
use proc_macro2::TokenStream;
use quote::quote;
use std::fmt;

mod geometry;
mod surface;

use geometry::{argmax, expect_type, fixed, image, pair, same_batch, weight_type, Geom, PoolGeom};
pub use geometry::{ConvParams, PoolParams};
pub use surface::{conv_params, FUNCTIONS};

/// A convolution or pooling op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvOp {
    /// `(x: f32[N, C, H, W], w: f32[O, C/groups, KH, KW]) → f32[N, O, OH, OW]`.
    Conv2d(ConvParams),
    /// Conv2d's gradient with respect to its input:
    /// `(dy: f32[N, O, OH, OW], w) → f32[N, C, H, W]`.
    Conv2dGradInput {
        /// The convolution.
        p: ConvParams,
        /// The input's height and width (not implied by the output's when
        /// the stride is above 1).
        input: [usize; 2],
    },
    /// Conv2d's gradient with respect to its weights, summed over the batch:
    /// `(x, dy) → f32[O, C/groups, KH, KW]`.
    Conv2dGradWeight {
        /// The convolution.
        p: ConvParams,
        /// The kernel's height and width.
        kernel: [usize; 2],
    },
    /// `f32[N, C, H, W] → f32[N, C, OH, OW]`, the maximum of each window.
    MaxPool2d(PoolParams),
    /// Max pooling's gradient: `(x, dy) → f32[N, C, H, W]`, each window's
    /// gradient routed to its first maximum.
    MaxPool2dGrad(PoolParams),
    /// `f32[N, C, H, W] → f32[N, C, OH, OW]`, the mean of each window
    /// (padding counts as zeros in the mean).
    AvgPool2d(PoolParams),
    /// Average pooling's gradient: `dy → f32[N, C, H, W]`.
    AvgPool2dGrad {
        /// The pooling.
        p: PoolParams,
        /// The input's height and width.
        input: [usize; 2],
    },
}

impl ConvOp {
    /// The op's name, without its configuration.
    pub fn name(&self) -> &'static str {
        match self {
            ConvOp::Conv2d(_) => "conv2d",
            ConvOp::Conv2dGradInput { .. } => "conv2d_grad_input",
            ConvOp::Conv2dGradWeight { .. } => "conv2d_grad_weight",
            ConvOp::MaxPool2d(_) => "max_pool2d",
            ConvOp::MaxPool2dGrad(_) => "max_pool2d_grad",
            ConvOp::AvgPool2d(_) => "avg_pool2d",
            ConvOp::AvgPool2dGrad { .. } => "avg_pool2d_grad",
        }
    }

    /// Number of operands.
    pub fn arity(&self) -> usize {
        match self {
            ConvOp::MaxPool2d(_) | ConvOp::AvgPool2d(_) | ConvOp::AvgPool2dGrad { .. } => 1,
            _ => 2,
        }
    }

    /// The convolution geometry of a convolution op, from its operands.
    fn conv_geom(&self, t: &[&TensorType]) -> Result<Geom, OpError> {
        match *self {
            ConvOp::Conv2d(p) => p.geom(image(t[0], 0, "conv2d", "an input")?, t[1]),
            ConvOp::Conv2dGradInput { p, input } => {
                let what = "conv2d_grad_input";
                let dy = image(t[0], 0, what, "a gradient")?;
                let wd = t[1].shape.dims();
                if wd.len() != 4 {
                    return Err(OpError::shape(format!(
                        "{what}: weight {} is not 4-D",
                        t[1]
                    )));
                }
                let c = Dim::Fixed(fixed(wd[1]).saturating_mul(p.groups));
                let x = [dy[0], c, Dim::Fixed(input[0]), Dim::Fixed(input[1])];
                let g = p.geom(x, t[1])?;
                expect_type(t[0], &g.out_type(), what, 0)?;
                Ok(g)
            }
            ConvOp::Conv2dGradWeight { p, kernel } => {
                let what = "conv2d_grad_weight";
                let x = image(t[0], 0, what, "an input")?;
                let dy = image(t[1], 1, what, "a gradient")?;
                same_batch(x[0], dy[0], what)?;
                p.validate()?;
                let w = weight_type(fixed(dy[1]), fixed(x[1]) / p.groups, kernel);
                let g = p.geom(x, &w)?;
                expect_type(t[1], &g.out_type(), what, 1)?;
                Ok(g)
            }
            _ => Err(OpError::internal(format!("{self} is not a convolution"))),
        }
    }

    /// The pooling geometry of a pooling op, from its operands.
    fn pool_geom(&self, t: &[&TensorType]) -> Result<PoolGeom, OpError> {
        let what = self.name();
        match *self {
            ConvOp::MaxPool2d(p) | ConvOp::AvgPool2d(p) => {
                p.geom(what, image(t[0], 0, what, "an input")?)
            }
            ConvOp::MaxPool2dGrad(p) => {
                let g = p.geom(what, image(t[0], 0, what, "an input")?)?;
                expect_type(t[1], &g.out_type(), what, 1)?;
                Ok(g)
            }
            ConvOp::AvgPool2dGrad { p, input } => {
                let dy = image(t[0], 0, what, "a gradient")?;
                let x = [dy[0], dy[1], Dim::Fixed(input[0]), Dim::Fixed(input[1])];
                let g = p.geom(what, x)?;
                expect_type(t[0], &g.out_type(), what, 0)?;
                Ok(g)
            }
            _ => Err(OpError::internal(format!("{self} is not a pooling"))),
        }
    }

    /// The shape rule.
    pub fn infer(&self, t: &[&TensorType]) -> Result<TensorType, OpError> {
        match self {
            ConvOp::Conv2d(_) => Ok(self.conv_geom(t)?.out_type()),
            ConvOp::Conv2dGradInput { .. } => Ok(self.conv_geom(t)?.in_type()),
            ConvOp::Conv2dGradWeight { kernel, p } => {
                let g = self.conv_geom(t)?;
                Ok(weight_type(g.o, g.c / p.groups, *kernel))
            }
            ConvOp::MaxPool2d(_) | ConvOp::AvgPool2d(_) => Ok(self.pool_geom(t)?.out_type()),
            ConvOp::MaxPool2dGrad(_) | ConvOp::AvgPool2dGrad { .. } => {
                Ok(self.pool_geom(t)?.in_type())
            }
        }
    }

    /// f64 evaluation: direct loops.
    pub fn eval(&self, x: &[&Tensor]) -> Result<Tensor, OpError> {
        let types: Vec<TensorType> = x
            .iter()
            .map(|t| TensorType::f32(Shape::fixed(t.shape())))
            .collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let flat = |t: &Tensor| t.iter().copied().collect::<Vec<f64>>();
        let out = self.infer(&refs)?;
        let dims = out.shape.resolve(0);
        let batch = x[0].shape()[0];
        let mut y = vec![0.0; dims.iter().product()];
        match self {
            ConvOp::Conv2d(_)
            | ConvOp::Conv2dGradInput { .. }
            | ConvOp::Conv2dGradWeight { .. } => {
                let g = self.conv_geom(&refs)?;
                let (a, b) = (flat(x[0]), flat(x[1]));
                match self {
                    ConvOp::Conv2d(_) => g.each_term(batch, |xi, wi, yi| y[yi] += a[xi] * b[wi]),
                    ConvOp::Conv2dGradInput { .. } => {
                        g.each_term(batch, |xi, wi, yi| y[xi] += a[yi] * b[wi])
                    }
                    _ => g.each_term(batch, |xi, wi, yi| y[wi] += a[xi] * b[yi]),
                }
            }
            ConvOp::MaxPool2d(_) => {
                let a = flat(x[0]);
                self.pool_geom(&refs)?.each_window(batch, |yi, taps| {
                    y[yi] = argmax(&a, taps).map_or(f64::NEG_INFINITY, |i| a[i]);
                });
            }
            ConvOp::MaxPool2dGrad(_) => {
                let (a, dy) = (flat(x[0]), flat(x[1]));
                self.pool_geom(&refs)?.each_window(batch, |yi, taps| {
                    if let Some(i) = argmax(&a, taps) {
                        y[i] += dy[yi];
                    }
                });
            }
            ConvOp::AvgPool2d(p) => {
                let a = flat(x[0]);
                let area = (p.kernel[0] * p.kernel[1]) as f64;
                self.pool_geom(&refs)?.each_window(batch, |yi, taps| {
                    y[yi] = taps.iter().map(|&i| a[i]).sum::<f64>() / area;
                });
            }
            ConvOp::AvgPool2dGrad { p, .. } => {
                let dy = flat(x[0]);
                let area = (p.kernel[0] * p.kernel[1]) as f64;
                self.pool_geom(&refs)?.each_window(batch, |yi, taps| {
                    for &i in taps {
                        y[i] += dy[yi] / area;
                    }
                });
            }
        }
        Tensor::from_shape_vec(IxDyn(&dims), y).map_err(|e| OpError::internal(e.to_string()))
    }

    /// The gradient rules. The convolution is bilinear, so each of the three
    /// convolution ops differentiates into the other two: for
    /// `B(x, w, dy) = ⟨dy, conv2d(x, w)⟩`, `conv2d_grad_input(dy, w) = ∂B/∂x`
    /// and `conv2d_grad_weight(x, dy) = ∂B/∂w`. Average pooling and its
    /// gradient are linear and adjoint to each other. Max pooling's gradient
    /// is not differentiated further.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        inputs: &[NodeId],
        g: NodeId,
    ) -> Result<Vec<Option<NodeId>>, OpError> {
        let hw = |cx: &GradCtx<'_>, id: NodeId| {
            let d = cx.ty(id).shape.dims();
            [fixed(d[2]), fixed(d[3])]
        };
        match *self {
            ConvOp::Conv2d(p) => {
                let (x, w) = (inputs[0], inputs[1]);
                let input = hw(cx, x);
                let kernel = hw(cx, w);
                let dx = cx.add(Op::Conv(ConvOp::Conv2dGradInput { p, input }), &[g, w])?;
                let dw = cx.add(Op::Conv(ConvOp::Conv2dGradWeight { p, kernel }), &[x, g])?;
                Ok(vec![Some(dx), Some(dw)])
            }
            ConvOp::Conv2dGradInput { p, .. } => {
                // dx = ∂B/∂x (dy, w); upstream G has x's shape.
                let (dy, w) = (inputs[0], inputs[1]);
                let kernel = hw(cx, w);
                let ddy = cx.add(Op::Conv(ConvOp::Conv2d(p)), &[g, w])?;
                let dw = cx.add(Op::Conv(ConvOp::Conv2dGradWeight { p, kernel }), &[g, dy])?;
                Ok(vec![Some(ddy), Some(dw)])
            }
            ConvOp::Conv2dGradWeight { p, .. } => {
                // dw = ∂B/∂w (x, dy); upstream G has w's shape.
                let (x, dy) = (inputs[0], inputs[1]);
                let input = hw(cx, x);
                let dx = cx.add(Op::Conv(ConvOp::Conv2dGradInput { p, input }), &[dy, g])?;
                let ddy = cx.add(Op::Conv(ConvOp::Conv2d(p)), &[x, g])?;
                Ok(vec![Some(dx), Some(ddy)])
            }
            ConvOp::MaxPool2d(p) => {
                let dx = cx.add(Op::Conv(ConvOp::MaxPool2dGrad(p)), &[inputs[0], g])?;
                Ok(vec![Some(dx)])
            }
            ConvOp::MaxPool2dGrad(_) => Err(OpError::argument(
                "the second derivative of max_pool2d is not supported",
            )),
            ConvOp::AvgPool2d(p) => {
                let input = hw(cx, inputs[0]);
                let dx = cx.add(Op::Conv(ConvOp::AvgPool2dGrad { p, input }), &[g])?;
                Ok(vec![Some(dx)])
            }
            ConvOp::AvgPool2dGrad { p, .. } => {
                let ddy = cx.add(Op::Conv(ConvOp::AvgPool2d(p)), &[g])?;
                Ok(vec![Some(ddy)])
            }
        }
    }

    /// Floating-point operations for one sample.
    pub fn flops(&self, inputs: &[&TensorType], out: &TensorType) -> u64 {
        match self {
            ConvOp::Conv2d(_)
            | ConvOp::Conv2dGradInput { .. }
            | ConvOp::Conv2dGradWeight { .. } => self.conv_geom(inputs).map_or(0, |g| g.flops()),
            ConvOp::MaxPool2d(p) | ConvOp::AvgPool2d(p) => {
                (out.shape.numel(1) as u64).saturating_mul((p.kernel[0] * p.kernel[1]) as u64)
            }
            ConvOp::MaxPool2dGrad(p) | ConvOp::AvgPool2dGrad { p, .. } => {
                (inputs[inputs.len() - 1].shape.numel(1) as u64)
                    .saturating_mul((p.kernel[0] * p.kernel[1]) as u64)
            }
        }
    }

    /// Elements of scratch space the f32 kernel needs besides its output:
    /// the convolutions' padded copies or im2col matrix, none for pooling.
    pub fn scratch(&self, inputs: &[&TensorType]) -> usize {
        match self {
            ConvOp::Conv2d(_)
            | ConvOp::Conv2dGradInput { .. }
            | ConvOp::Conv2dGradWeight { .. } => self.conv_geom(inputs).map_or(0, |g| g.scratch()),
            _ => 0,
        }
    }

    /// The codegen face: calls into `nnc_runtime::conv` (`scratch` is the
    /// kernel's scratch slice, present when [`ConvOp::scratch`] is not 0).
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        let types: Vec<&TensorType> = k.inputs.iter().collect();
        let scratch = if self.scratch(&types) > 0 {
            quote!(scratch)
        } else {
            quote!(&mut [])
        };
        match self {
            ConvOp::Conv2d(_)
            | ConvOp::Conv2dGradInput { .. }
            | ConvOp::Conv2dGradWeight { .. } => {
                let Ok(g) = self.conv_geom(&types) else {
                    return quote!(unreachable!("nnc internal error: conv2d shapes"););
                };
                let geom = g.emit(rt);
                let f = match self {
                    ConvOp::Conv2d(_) => quote!(conv2d),
                    ConvOp::Conv2dGradInput { .. } => quote!(conv2d_grad_input),
                    _ => quote!(conv2d_grad_weight),
                };
                quote!(#rt::conv::#f(#geom, b, out, x0, x1, #scratch);)
            }
            _ => {
                let Ok(g) = self.pool_geom(&types) else {
                    return quote!(unreachable!("nnc internal error: pooling shapes"););
                };
                let geom = g.emit(rt);
                match self {
                    ConvOp::MaxPool2d(_) => quote!(#rt::conv::max_pool2d(#geom, b, out, x0);),
                    ConvOp::MaxPool2dGrad(_) => {
                        quote!(#rt::conv::max_pool2d_grad(#geom, b, out, x0, x1);)
                    }
                    ConvOp::AvgPool2d(_) => quote!(#rt::conv::avg_pool2d(#geom, b, out, x0);),
                    _ => quote!(#rt::conv::avg_pool2d_grad(#geom, b, out, x0);),
                }
            }
        }
    }
}

impl ConvOp {
    /// The codegen face of a forward convolution whose finished samples
    /// run `epilogue` (`|i0, seg| …`, the fused bias add and activation):
    /// `nnc_runtime::conv::conv2d_then`. Other ops have no epilogue form.
    pub fn emit_then(&self, k: &Kernel<'_>, epilogue: TokenStream) -> TokenStream {
        let rt = k.rt;
        let types: Vec<&TensorType> = k.inputs.iter().collect();
        let (ConvOp::Conv2d(_), Ok(g)) = (self, self.conv_geom(&types)) else {
            return quote!(unreachable!("nnc internal error: conv2d epilogue shapes"););
        };
        let scratch = if self.scratch(&types) > 0 {
            quote!(scratch)
        } else {
            quote!(&mut [])
        };
        let geom = g.emit(rt);
        quote!(#rt::conv::conv2d_then(#geom, b, out, x0, x1, #scratch, #epilogue);)
    }
}

impl fmt::Display for ConvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conv = |f: &mut fmt::Formatter<'_>, name: &str, p: &ConvParams| {
            write!(
                f,
                "{name}(stride: {}, padding: {}, dilation: {}, groups: {})",
                pair(p.stride),
                pair(p.padding),
                pair(p.dilation),
                p.groups
            )
        };
        let pool = |f: &mut fmt::Formatter<'_>, name: &str, p: &PoolParams| {
            write!(
                f,
                "{name}(kernel: {}, stride: {}, padding: {})",
                pair(p.kernel),
                pair(p.stride),
                pair(p.padding)
            )
        };
        match self {
            ConvOp::Conv2d(p) => conv(f, "conv2d", p),
            ConvOp::Conv2dGradInput { p, .. } => conv(f, "conv2d_grad_input", p),
            ConvOp::Conv2dGradWeight { p, .. } => conv(f, "conv2d_grad_weight", p),
            ConvOp::MaxPool2d(p) => pool(f, "max_pool2d", p),
            ConvOp::MaxPool2dGrad(p) => pool(f, "max_pool2d_grad", p),
            ConvOp::AvgPool2d(p) => pool(f, "avg_pool2d", p),
            ConvOp::AvgPool2dGrad { p, .. } => pool(f, "avg_pool2d_grad", p),
        }
    }
}

impl ConvOp {
    /// The convolution has an int8 kernel; pooling stays f32 (a plan's f32
    /// step); the gradients have no place in inference.
    pub fn int8(&self) -> super::Int8 {
        match self {
            ConvOp::Conv2d(_) => super::Int8::Kernel,
            ConvOp::MaxPool2d(_) | ConvOp::AvgPool2d(_) => super::Int8::F32,
            _ => super::Int8::None,
        }
    }
}
