//! Convolution and pooling over NCHW tensors: `conv2d` (stride, padding,
//! dilation, groups) with its input and weight gradients as ops of their
//! own, `max_pool2d` and `avg_pool2d` with their gradients, and
//! `global_avg_pool` (a mean over the two spatial axes, so a [`ReduceOp`]).
//!
//! The f32 kernels are in `nnc_runtime::conv`: implicit GEMMs for stride 1
//! (on AVX2 CPUs), im2col + GEMM otherwise, with the padded copies or the
//! column matrix in scratch space of the workspace that the memory planner
//! places (see [`ConvOp::scratch`]).

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::reduce::{ReduceKind, ReduceOp};
use super::signature::{ArgKind, Args, Built, Function, Param};
use super::{expect_f32, Op, OpError, Tensor};
use crate::graph::{DType, Dim, NodeId, Shape, TensorType};
use ndarray::IxDyn;
use proc_macro2::TokenStream;
use quote::quote;
use std::fmt;

/// The configuration of a convolution, per spatial axis (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvParams {
    /// Step between windows, at least 1.
    pub stride: [usize; 2],
    /// Zeros added on each side.
    pub padding: [usize; 2],
    /// Spacing between kernel taps, at least 1.
    pub dilation: [usize; 2],
    /// Channel groups: output group `g` sees only input group `g`.
    pub groups: usize,
}

/// The configuration of a pooling window, per spatial axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolParams {
    /// Window size, at least 1.
    pub kernel: [usize; 2],
    /// Step between windows, at least 1.
    pub stride: [usize; 2],
    /// Padding on each side, at most half the window.
    pub padding: [usize; 2],
}

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

/// One output extent: `(n + 2p − d(k − 1) − 1) / s + 1`, or `None` when the
/// dilated kernel does not fit the padded input.
fn out_len(n: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let eff = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = n.checked_add(p.checked_mul(2)?)?;
    (padded >= eff && s > 0).then(|| (padded - eff) / s + 1)
}

/// An NCHW image type: `(N, C, H, W)` with fixed C, H, W.
fn image(t: &TensorType, operand: usize, what: &str, role: &str) -> Result<[Dim; 4], OpError> {
    expect_f32(t, operand, what)?;
    let d = t.shape.dims();
    let ok = d.len() == 4 && d[1..].iter().all(|d| matches!(d, Dim::Fixed(_)));
    if !ok {
        return Err(OpError::shape(format!(
            "{what} expects {role} f32[batch, channels, height, width] (NCHW, fixed channels and size), found {t}"
        ))
        .at(operand));
    }
    Ok([d[0], d[1], d[2], d[3]])
}

fn fixed(d: Dim) -> usize {
    match d {
        Dim::Fixed(n) => n,
        Dim::Batch => 0,
    }
}

/// A convolution's full geometry, once the shapes have been checked.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: Dim,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: ConvParams,
}

impl ConvParams {
    fn validate(&self) -> Result<(), OpError> {
        if self.stride.contains(&0) {
            return Err(OpError::argument(format!(
                "conv2d: `stride` must be at least 1, found {}",
                pair(self.stride)
            )));
        }
        if self.dilation.contains(&0) {
            return Err(OpError::argument(format!(
                "conv2d: `dilation` must be at least 1, found {}",
                pair(self.dilation)
            )));
        }
        if self.groups == 0 {
            return Err(OpError::argument("conv2d: `groups` must be at least 1"));
        }
        Ok(())
    }

    /// The shape rule shared by the convolution and its gradients, from the
    /// input `(N, C, H, W)` and the weight `[O, C/groups, KH, KW]`.
    fn geom(&self, x: [Dim; 4], wt: &TensorType) -> Result<Geom, OpError> {
        self.validate()?;
        let wd = wt.shape.dims();
        if wd.len() != 4 || wd.contains(&Dim::Batch) || wt.dtype != DType::F32 {
            return Err(OpError::shape(format!(
                "conv2d expects a weight f32[out_channels, in_channels / groups, kernel_h, kernel_w], found {wt}"
            ))
            .at(1));
        }
        let (c, h, w) = (fixed(x[1]), fixed(x[2]), fixed(x[3]));
        let [o, cg, kh, kw] = [fixed(wd[0]), fixed(wd[1]), fixed(wd[2]), fixed(wd[3])];
        let g = self.groups;
        if c % g != 0 {
            return Err(OpError::shape(format!(
                "conv2d: the input's {c} channels are not divisible by groups: {g}"
            )));
        }
        if o % g != 0 {
            return Err(OpError::shape(format!(
                "conv2d: the weight's {o} output channels are not divisible by groups: {g}"
            )));
        }
        if cg != c / g {
            let per = if g == 1 {
                String::new()
            } else {
                format!(" in {g} groups, {} per group", c / g)
            };
            return Err(OpError::shape(format!(
                "conv2d: the weight takes {cg} input channels, the input has {c}{per}"
            ))
            .with_help(format!(
                "the weight's second dimension is in_channels / groups = {}",
                c / g
            )));
        }
        let oh = out_len(h, kh, self.stride[0], self.padding[0], self.dilation[0]);
        let ow = out_len(w, kw, self.stride[1], self.padding[1], self.dilation[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            let span = |k: usize, d: usize| d * (k - 1) + 1;
            return Err(OpError::shape(format!(
                "conv2d: the kernel spans {}x{}, more than the padded input's {}x{}",
                span(kh, self.dilation[0]),
                span(kw, self.dilation[1]),
                h + 2 * self.padding[0],
                w + 2 * self.padding[1],
            )));
        };
        Ok(Geom {
            n: x[0],
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            p: *self,
        })
    }
}

impl Geom {
    fn out_type(&self) -> TensorType {
        nchw(self.n, self.o, self.oh, self.ow)
    }

    fn in_type(&self) -> TensorType {
        nchw(self.n, self.c, self.h, self.w)
    }

    /// Calls `f(x index, w index, y index)` for every product term of the
    /// convolution of `batch` samples: y[yi] = Σ x[xi]·w[wi].
    fn each_term(&self, batch: usize, mut f: impl FnMut(usize, usize, usize)) {
        let g = self.p.groups;
        let (cg, og) = (self.c / g, self.o / g);
        let [sh, sw] = self.p.stride;
        let [ph, pw] = self.p.padding;
        let [dh, dw] = self.p.dilation;
        for n in 0..batch {
            for o in 0..self.o {
                let grp = o / og;
                for oy in 0..self.oh {
                    for ox in 0..self.ow {
                        let yi = ((n * self.o + o) * self.oh + oy) * self.ow + ox;
                        for ci in 0..cg {
                            let c = grp * cg + ci;
                            for ki in 0..self.kh {
                                let iy = (oy * sh + ki * dh) as isize - ph as isize;
                                if iy < 0 || iy >= self.h as isize {
                                    continue;
                                }
                                for kj in 0..self.kw {
                                    let ix = (ox * sw + kj * dw) as isize - pw as isize;
                                    if ix < 0 || ix >= self.w as isize {
                                        continue;
                                    }
                                    let xi = ((n * self.c + c) * self.h + iy as usize) * self.w
                                        + ix as usize;
                                    let wi = ((o * cg + ci) * self.kh + ki) * self.kw + kj;
                                    f(xi, wi, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The runtime's `conv::Conv2d` literal.
    fn emit(&self, rt: &TokenStream) -> TokenStream {
        let (c, h, w, o, kh, kw) = (self.c, self.h, self.w, self.o, self.kh, self.kw);
        let ([sh, sw], [ph, pw], [dh, dw]) = (self.p.stride, self.p.padding, self.p.dilation);
        let g = self.p.groups;
        quote! {
            &#rt::conv::Conv2d {
                c: #c, h: #h, w: #w, o: #o, kh: #kh, kw: #kw,
                stride: [#sh, #sw], padding: [#ph, #pw], dilation: [#dh, #dw], groups: #g,
            }
        }
    }

    /// The runtime's `conv::Conv2d` (defined in `nnc-geometry`).
    fn conv2d(&self) -> nnc_geometry::Conv2d {
        nnc_geometry::Conv2d {
            c: self.c,
            h: self.h,
            w: self.w,
            o: self.o,
            kh: self.kh,
            kw: self.kw,
            stride: self.p.stride,
            padding: self.p.padding,
            dilation: self.p.dilation,
            groups: self.p.groups,
        }
    }

    /// Elements of scratch space the kernels need: none when 1×1 with
    /// stride 1 and no padding (the input is its own column matrix); else
    /// the im2col column matrix, or for stride 1 the larger of that and the
    /// implicit products' buffers. The runtime's formula
    /// (`nnc_runtime::conv::Conv2d::scratch_len`, which asserts it got
    /// enough), shared through `nnc-geometry`: the compiler does not link
    /// the runtime.
    fn scratch(&self) -> usize {
        self.conv2d().scratch_len()
    }

    /// Multiply-adds of one sample, times two.
    fn flops(&self) -> u64 {
        [
            self.o,
            self.oh,
            self.ow,
            self.c / self.p.groups,
            self.kh,
            self.kw,
            2,
        ]
        .iter()
        .fold(1u64, |a, &b| a.saturating_mul(b as u64))
    }
}

/// A pooling's geometry once its input has been checked.
#[derive(Clone, Copy, Debug)]
struct PoolGeom {
    n: Dim,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    p: PoolParams,
}

impl PoolParams {
    fn geom(&self, what: &str, x: [Dim; 4]) -> Result<PoolGeom, OpError> {
        if self.kernel.contains(&0) {
            return Err(OpError::argument(format!(
                "{what}: `kernel` must be at least 1, found {}",
                pair(self.kernel)
            )));
        }
        if self.stride.contains(&0) {
            return Err(OpError::argument(format!(
                "{what}: `stride` must be at least 1, found {}",
                pair(self.stride)
            )));
        }
        if (0..2).any(|i| self.padding[i] * 2 > self.kernel[i]) {
            return Err(OpError::argument(format!(
                "{what}: `padding` {} is more than half the window {}",
                pair(self.padding),
                pair(self.kernel)
            )));
        }
        let (c, h, w) = (fixed(x[1]), fixed(x[2]), fixed(x[3]));
        let oh = out_len(h, self.kernel[0], self.stride[0], self.padding[0], 1);
        let ow = out_len(w, self.kernel[1], self.stride[1], self.padding[1], 1);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(OpError::shape(format!(
                "{what}: the window {}x{} is larger than the padded input's {}x{}",
                self.kernel[0],
                self.kernel[1],
                h + 2 * self.padding[0],
                w + 2 * self.padding[1],
            )));
        };
        Ok(PoolGeom {
            n: x[0],
            c,
            h,
            w,
            oh,
            ow,
            p: *self,
        })
    }
}

impl PoolGeom {
    fn out_type(&self) -> TensorType {
        nchw(self.n, self.c, self.oh, self.ow)
    }

    fn in_type(&self) -> TensorType {
        nchw(self.n, self.c, self.h, self.w)
    }

    /// Calls `f(y index, x indices of the window inside the input)` in
    /// row-major window order.
    fn each_window(&self, batch: usize, mut f: impl FnMut(usize, &[usize])) {
        let mut taps = Vec::with_capacity(self.p.kernel[0] * self.p.kernel[1]);
        for pl in 0..batch * self.c {
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    taps.clear();
                    for ki in 0..self.p.kernel[0] {
                        let iy = (oy * self.p.stride[0] + ki) as isize - self.p.padding[0] as isize;
                        if iy < 0 || iy >= self.h as isize {
                            continue;
                        }
                        for kj in 0..self.p.kernel[1] {
                            let ix =
                                (ox * self.p.stride[1] + kj) as isize - self.p.padding[1] as isize;
                            if ix < 0 || ix >= self.w as isize {
                                continue;
                            }
                            taps.push((pl * self.h + iy as usize) * self.w + ix as usize);
                        }
                    }
                    f((pl * self.oh + oy) * self.ow + ox, &taps);
                }
            }
        }
    }

    fn emit(&self, rt: &TokenStream) -> TokenStream {
        let (c, h, w) = (self.c, self.h, self.w);
        let ([kh, kw], [sh, sw], [ph, pw]) = (self.p.kernel, self.p.stride, self.p.padding);
        quote! {
            &#rt::conv::Pool2d {
                c: #c, h: #h, w: #w,
                kernel: [#kh, #kw], stride: [#sh, #sw], padding: [#ph, #pw],
            }
        }
    }
}

/// The first maximum of some elements.
fn argmax(x: &[f64], taps: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for &i in taps {
        if best.is_none_or(|b| x[i] > x[b]) {
            best = Some(i);
        }
    }
    best
}

fn same_batch(a: Dim, b: Dim, what: &str) -> Result<(), OpError> {
    if a == b {
        Ok(())
    } else {
        Err(OpError::shape(format!(
            "{what}: batch dimensions {a} and {b} differ"
        )))
    }
}

fn expect_type(
    got: &TensorType,
    want: &TensorType,
    what: &str,
    operand: usize,
) -> Result<(), OpError> {
    if got == want {
        Ok(())
    } else {
        Err(OpError::shape(format!("{what}: expected {want}, found {got}")).at(operand))
    }
}

/// An f32 NCHW activation type with `n` samples (usually `batch`).
fn nchw(n: Dim, c: usize, h: usize, w: usize) -> TensorType {
    TensorType::f32(Shape(vec![n, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)]))
}

/// A weight type `[O, C/groups, KH, KW]`.
fn weight_type(o: usize, cg: usize, k: [usize; 2]) -> TensorType {
    TensorType::f32(Shape::fixed(&[o, cg, k[0], k[1]]))
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

fn pair(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        format!("[{}, {}]", v[0], v[1])
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

/// An `int or [h, w]` argument: both axes.
fn hw_arg(a: &Args, i: usize, name: &str, default: [usize; 2]) -> Result<[usize; 2], OpError> {
    let Some(v) = a.ints(i) else {
        return Ok(default);
    };
    let bad = || {
        OpError::argument(format!(
            "`{name}` must be a non-negative integer or a list [height, width] of them, found {v:?}"
        ))
    };
    let conv = |x: i64| usize::try_from(x).ok().filter(|&x| x <= 1 << 30);
    match v {
        [x] => conv(*x).map(|x| [x, x]).ok_or_else(bad),
        [h, w] => Ok([conv(*h).ok_or_else(bad)?, conv(*w).ok_or_else(bad)?]),
        _ => Err(bad()),
    }
}

const CONV_PARAMS: &[Param] = &[
    Param::req("x", ArgKind::Tensor),
    Param::req("w", ArgKind::Tensor),
    Param::opt("stride", ArgKind::Ints),
    Param::opt("padding", ArgKind::Ints),
    Param::opt("dilation", ArgKind::Ints),
    Param::opt("groups", ArgKind::Int),
];

/// Binds the configuration arguments of `conv2d` (parameters 2 to 5 of
/// `CONV_PARAMS`, shared with the `conv2d` layer, which passes its own
/// indices): stride, padding, dilation, groups.
pub fn conv_params(a: &Args, first: usize) -> Result<ConvParams, OpError> {
    let p = ConvParams {
        stride: hw_arg(a, first, "stride", [1, 1])?,
        padding: hw_arg(a, first + 1, "padding", [0, 0])?,
        dilation: hw_arg(a, first + 2, "dilation", [1, 1])?,
        groups: match a.int(first + 3) {
            None => 1,
            Some(g) if (1..=1 << 30).contains(&g) => g as usize,
            Some(g) => {
                return Err(OpError::argument(format!(
                    "conv2d: `groups` must be at least 1, found {g}"
                )))
            }
        },
    };
    p.validate()?;
    Ok(p)
}

const POOL_PARAMS: &[Param] = &[
    Param::req("x", ArgKind::Tensor),
    Param::req("kernel", ArgKind::Ints),
    Param::opt("stride", ArgKind::Ints),
    Param::opt("padding", ArgKind::Ints),
];

fn build_pool(max: bool, a: &Args) -> Result<Built, OpError> {
    let kernel = hw_arg(a, 1, "kernel", [1, 1])?;
    let p = PoolParams {
        kernel,
        stride: hw_arg(a, 2, "stride", kernel)?,
        padding: hw_arg(a, 3, "padding", [0, 0])?,
    };
    let op = if max {
        ConvOp::MaxPool2d(p)
    } else {
        ConvOp::AvgPool2d(p)
    };
    Ok((Op::Conv(op), vec![a.tensor(0)?.0]))
}

/// The convolution and pooling functions of the language.
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "conv2d",
        params: CONV_PARAMS,
        doc: "2-D convolution of x f32[batch, C, H, W] with w f32[O, C/groups, KH, KW] → f32[batch, O, OH, OW]",
        build: |a| {
            let p = conv_params(a, 2)?;
            Ok((
                Op::Conv(ConvOp::Conv2d(p)),
                vec![a.tensor(0)?.0, a.tensor(1)?.0],
            ))
        },
    },
    Function {
        name: "max_pool2d",
        params: POOL_PARAMS,
        doc: "maximum over each kernel window of an NCHW tensor; stride defaults to the kernel",
        build: |a| build_pool(true, a),
    },
    Function {
        name: "avg_pool2d",
        params: POOL_PARAMS,
        doc: "mean over each kernel window of an NCHW tensor (padding counts as zeros)",
        build: |a| build_pool(false, a),
    },
    Function {
        name: "global_avg_pool",
        params: &[Param::req("x", ArgKind::Tensor)],
        doc: "mean over the spatial axes: f32[batch, C, H, W] → f32[batch, C]",
        build: |a| {
            let (x, ty) = a.tensor(0)?;
            image(ty, 0, "global_avg_pool", "an input")?;
            Ok((
                Op::Reduce(ReduceOp {
                    kind: ReduceKind::Mean,
                    axes: vec![2, 3],
                    keepdims: false,
                }),
                vec![x],
            ))
        },
    },
];
