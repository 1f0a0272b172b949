//! The geometry of convolution and pooling: the configurations, their
//! validation, output extents, and the f64 loops over windows that the
//! reference semantics and gradients share.

use super::super::{expect_f32, OpError};
use crate::graph::{DType, Dim, Shape, TensorType};
use proc_macro2::TokenStream;
use quote::quote;

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

/// One output extent: `(n + 2p − d(k − 1) − 1) / s + 1`, or `None` when the
/// dilated kernel does not fit the padded input.
pub(super) fn out_len(n: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let eff = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = n.checked_add(p.checked_mul(2)?)?;
    (padded >= eff && s > 0).then(|| (padded - eff) / s + 1)
}

/// An NCHW image type: `(N, C, H, W)` with fixed C, H, W.
pub(super) fn image(
    t: &TensorType,
    operand: usize,
    what: &str,
    role: &str,
) -> Result<[Dim; 4], OpError> {
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

pub(super) fn fixed(d: Dim) -> usize {
    match d {
        Dim::Fixed(n) => n,
        Dim::Batch => 0,
    }
}

/// A convolution's full geometry, once the shapes have been checked.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub(super) n: Dim,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) p: ConvParams,
}

impl ConvParams {
    pub(super) fn validate(&self) -> Result<(), OpError> {
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
    pub(super) fn geom(&self, x: [Dim; 4], wt: &TensorType) -> Result<Geom, OpError> {
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
    pub(super) fn out_type(&self) -> TensorType {
        nchw(self.n, self.o, self.oh, self.ow)
    }

    pub(super) fn in_type(&self) -> TensorType {
        nchw(self.n, self.c, self.h, self.w)
    }

    /// Calls `f(x index, w index, y index)` for every product term of the
    /// convolution of `batch` samples: y[yi] = Σ x[xi]·w[wi].
    pub(super) fn each_term(&self, batch: usize, mut f: impl FnMut(usize, usize, usize)) {
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
    pub(super) fn emit(&self, rt: &TokenStream) -> TokenStream {
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

    /// The runtime's `conv::Conv2d` (defined in `nnc-spec`).
    pub(super) fn conv2d(&self) -> nnc_spec::Conv2d {
        nnc_spec::Conv2d {
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
    /// enough), shared through `nnc-spec`: the compiler does not link
    /// the runtime.
    pub(super) fn scratch(&self) -> usize {
        self.conv2d().scratch_len()
    }

    /// Multiply-adds of one sample, times two.
    pub(super) fn flops(&self) -> u64 {
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
pub(super) struct PoolGeom {
    pub(super) n: Dim,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) p: PoolParams,
}

impl PoolParams {
    pub(super) fn geom(&self, what: &str, x: [Dim; 4]) -> Result<PoolGeom, OpError> {
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
    pub(super) fn out_type(&self) -> TensorType {
        nchw(self.n, self.c, self.oh, self.ow)
    }

    pub(super) fn in_type(&self) -> TensorType {
        nchw(self.n, self.c, self.h, self.w)
    }

    /// Calls `f(y index, x indices of the window inside the input)` in
    /// row-major window order.
    pub(super) fn each_window(&self, batch: usize, mut f: impl FnMut(usize, &[usize])) {
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

    pub(super) fn emit(&self, rt: &TokenStream) -> TokenStream {
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
pub(super) fn argmax(x: &[f64], taps: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for &i in taps {
        if best.is_none_or(|b| x[i] > x[b]) {
            best = Some(i);
        }
    }
    best
}

pub(super) fn same_batch(a: Dim, b: Dim, what: &str) -> Result<(), OpError> {
    if a == b {
        Ok(())
    } else {
        Err(OpError::shape(format!(
            "{what}: batch dimensions {a} and {b} differ"
        )))
    }
}

pub(super) fn expect_type(
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
pub(super) fn nchw(n: Dim, c: usize, h: usize, w: usize) -> TensorType {
    TensorType::f32(Shape(vec![n, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)]))
}

/// A weight type `[O, C/groups, KH, KW]`.
pub(super) fn weight_type(o: usize, cg: usize, k: [usize; 2]) -> TensorType {
    TensorType::f32(Shape::fixed(&[o, cg, k[0], k[1]]))
}

pub(super) fn pair(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        format!("[{}, {}]", v[0], v[1])
    }
}
