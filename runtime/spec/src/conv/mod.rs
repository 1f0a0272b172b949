//! The convolution geometry and scratch sizing, shared by the compiler,
//! which sizes the workspace, and the runtime, whose kernels carve it.
//!
//! A convolution kernel of `nnc-runtime` works in a scratch region of the
//! generated model's workspace, and the compiler's memory planner places
//! that region, so both must agree on its length to the element. This is
//! the one formula both call ([`Conv2d::scratch_len`], with the implicit
//! GEMM's [`implicit::Plan`]). Only pure arithmetic lives here; anything
//! that looks at the CPU or runs a kernel stays in `nnc-runtime` (which
//! re-exports [`Conv2d`] as `nnc_runtime::conv::Conv2d`, the path generated
//! code names).

pub mod implicit;

use std::ops::Range;

/// The geometry of a 2-D convolution (everything but the batch size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (height, width), at least 1.
    pub stride: [usize; 2],
    /// Zero padding on each side (height, width).
    pub padding: [usize; 2],
    /// Dilation (height, width), at least 1.
    pub dilation: [usize; 2],
    /// Groups: input and output channels are split into this many groups,
    /// each output group seeing only its input group.
    pub groups: usize,
}

/// One output extent: `(n + 2p − d(k − 1) − 1) / s + 1`, or 0 when the
/// dilated kernel does not fit the padded input.
pub fn out_len(n: usize, k: usize, s: usize, p: usize, d: usize) -> usize {
    let eff = d * (k.max(1) - 1) + 1;
    if n + 2 * p < eff || s == 0 {
        0
    } else {
        (n + 2 * p - eff) / s + 1
    }
}

impl Conv2d {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        (
            out_len(
                self.h,
                self.kh,
                self.stride[0],
                self.padding[0],
                self.dilation[0],
            ),
            out_len(
                self.w,
                self.kw,
                self.stride[1],
                self.padding[1],
                self.dilation[1],
            ),
        )
    }

    /// Whether the input is its own column matrix (1×1, stride 1, no padding).
    pub fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of the column matrix: `C/groups · KH · KW`.
    pub fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Where group `gi` of sample `n` lies in an input-shaped tensor
    /// (`[b, C, H, W]`).
    pub fn in_range(&self, n: usize, gi: usize) -> Range<usize> {
        let len = self.cg() * self.h * self.w;
        let start = (n * self.c + gi * self.cg()) * self.h * self.w;
        start..start + len
    }

    /// Where group `gi` of sample `n` lies in an output-shaped tensor
    /// (`[b, O, OH, OW]`).
    pub fn out_range(&self, n: usize, gi: usize) -> Range<usize> {
        let (oh, ow) = self.out_hw();
        let len = self.og() * oh * ow;
        let start = (n * self.o + gi * self.og()) * oh * ow;
        start..start + len
    }

    /// Elements of scratch space the kernels need: nothing for a pointwise
    /// convolution; else one group's column matrix, or for stride 1 the
    /// larger of that and the implicit products' buffers (so the same
    /// workspace serves CPUs with and without the AVX2 kernel).
    pub fn scratch_len(&self) -> usize {
        if self.pointwise() {
            return 0;
        }
        let (oh, ow) = self.out_hw();
        let columns = self.k() * oh * ow;
        implicit::Plan::of(self).map_or(columns, |p| columns.max(p.scratch_len(self)))
    }
}
