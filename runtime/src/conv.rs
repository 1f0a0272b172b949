//! Convolution and pooling kernels over NCHW tensors, for generated code.
//!
//! A 2-D convolution is lowered, one sample and one group at a time, to
//! matrix products. Stride-1 layers (almost every layer of a modern CNN, and
//! both of LeNet's) on CPUs with the AVX2 kernel take the implicit GEMM of
//! `conv/implicit.rs`: the microkernel reads receptive fields where they lie in a
//! zero-padded copy of the image (forward and both gradients; 2.3–4× faster
//! than the column matrix on LeNet's layers, see `examples/conv_bench.rs`).
//! Every other layer goes through [`columns`]: `im2col` copies every
//! receptive field of the input into a column of a
//! `[C/groups · KH · KW, OH · OW]` matrix, and the weights
//! `[O/groups, C/groups · KH · KW]` multiply it into the output
//! `[O/groups, OH · OW]` (the Caffe layout; the output is NCHW without a
//! transpose). The backward products use the same matrix: the input gradient
//! is `Wᵀ @ dY` scattered back by `col2im`, the weight gradient `dY @ colsᵀ`
//! accumulated over the batch (the GEMM reads `cols` transposed, no copy).
//! A 1×1 convolution with stride 1 and no padding needs neither: the input
//! already is the matrix.
//!
//! The column matrix and the implicit products' padded copies live in
//! `scratch`, a region of the generated model's
//! workspace that the compiler's memory planner places like any other
//! value (live only during the kernel); its length is
//! [`Conv2d::scratch_len`]. No kernel here allocates.
//!
//! Pooling is plain loops: max pooling pads with −∞ and routes the gradient
//! to the first maximum of each window (in row-major window order); average
//! pooling divides by the full window size, padding included (PyTorch's
//! `count_include_pad=True`).

use crate::gemm::{sgemm, MatRef, Parallelism};

mod implicit;

/// The geometry of a 2-D convolution; defined in `nnc-geometry`, which the
/// compiler shares to size the workspace (generated code names this path).
pub use nnc_geometry::Conv2d;

/// One output extent (see [`nnc_geometry::out_len`]).
pub use nnc_geometry::out_len;

/// The output positions `lo..hi` (of `on`) whose input index
/// `o·s + off − p` falls inside `0..n`.
fn valid(on: usize, n: usize, s: usize, off: usize, p: usize) -> (usize, usize) {
    let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
    let hi = if n + p <= off {
        0
    } else {
        (n + p - off).div_ceil(s)
    };
    let hi = hi.min(on);
    (lo.min(hi), hi)
}

/// The implicit-GEMM plan, when `g` takes that path on this CPU.
fn implicit_plan(g: &Conv2d) -> Option<implicit::Plan> {
    if g.pointwise() || !crate::gemm::indexed_is_fast() {
        return None;
    }
    implicit::Plan::of(g)
}

/// Panics (an nnc bug, never a user error) unless the slices fit.
fn check(g: &Conv2d, b: usize, x: usize, wt: usize, y: usize, scratch: usize) {
    let (oh, ow) = g.out_hw();
    let ok = g.groups > 0
        && g.c % g.groups == 0
        && g.o % g.groups == 0
        && x == b * g.c * g.h * g.w
        && wt == g.o * g.k()
        && y == b * g.o * oh * ow
        && scratch >= g.scratch_len();
    assert!(
        ok,
        "nnc internal error: conv2d slices do not fit {g:?} at batch {b}"
    );
}

/// `im2col` of one group of one sample: `x` is `[C/groups, H, W]`,
/// `cols` is `[C/groups · KH · KW, OH · OW]`.
pub fn im2col(g: &Conv2d, x: &[f32], cols: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let (h, w) = (g.h, g.w);
    let ([sh, sw], [ph, pw], [dh, dw]) = (g.stride, g.padding, g.dilation);
    let mut rows = cols[..g.k() * oh * ow].chunks_exact_mut(oh * ow);
    for xc in x[..g.cg() * h * w].chunks_exact(h * w) {
        for ki in 0..g.kh {
            let (ylo, yhi) = valid(oh, h, sh, ki * dh, ph);
            for kj in 0..g.kw {
                let (xlo, xhi) = valid(ow, w, sw, kj * dw, pw);
                let Some(dst) = rows.next() else { return };
                for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
                    if oy < ylo || oy >= yhi {
                        d.fill(0.0);
                        continue;
                    }
                    let iy = oy * sh + ki * dh - ph;
                    let xr = &xc[iy * w..][..w];
                    d[..xlo].fill(0.0);
                    d[xhi..].fill(0.0);
                    if xlo < xhi {
                        let first = xlo * sw + kj * dw - pw;
                        if sw == 1 {
                            d[xlo..xhi].copy_from_slice(&xr[first..first + xhi - xlo]);
                        } else {
                            for (v, &s) in
                                d[xlo..xhi].iter_mut().zip(xr[first..].iter().step_by(sw))
                            {
                                *v = s;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry back onto
/// the input position it was copied from (`x` is not cleared first).
pub fn col2im(g: &Conv2d, cols: &[f32], x: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let (h, w) = (g.h, g.w);
    let ([sh, sw], [ph, pw], [dh, dw]) = (g.stride, g.padding, g.dilation);
    let mut rows = cols[..g.k() * oh * ow].chunks_exact(oh * ow);
    for xc in x[..g.cg() * h * w].chunks_exact_mut(h * w) {
        for ki in 0..g.kh {
            let (ylo, yhi) = valid(oh, h, sh, ki * dh, ph);
            for kj in 0..g.kw {
                let (xlo, xhi) = valid(ow, w, sw, kj * dw, pw);
                let Some(src) = rows.next() else { return };
                if xlo >= xhi {
                    continue;
                }
                for oy in ylo..yhi {
                    let s = &src[oy * ow..][xlo..xhi];
                    let iy = oy * sh + ki * dh - ph;
                    let first = xlo * sw + kj * dw - pw;
                    let xr = &mut xc[iy * w..][..w];
                    if sw == 1 {
                        for (v, &d) in xr[first..first + s.len()].iter_mut().zip(s) {
                            *v += d;
                        }
                    } else {
                        for (v, &d) in xr[first..].iter_mut().step_by(sw).zip(s) {
                            *v += d;
                        }
                    }
                }
            }
        }
    }
}

fn gemm(m: usize, n: usize, k: usize, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    if let Err(e) = sgemm(Parallelism::Sequential, m, n, k, 1.0, a, b, beta, c, n) {
        panic!("nnc internal error: conv2d product shapes disagree: {e}");
    }
}

/// `y[b, O, OH, OW] = conv2d(x[b, C, H, W], w[O, C/groups, KH, KW])`
/// (cross-correlation, as in every framework).
pub fn conv2d(g: &Conv2d, b: usize, y: &mut [f32], x: &[f32], w: &[f32], scratch: &mut [f32]) {
    check(g, b, x.len(), w.len(), y.len(), scratch.len());
    match implicit_plan(g) {
        Some(p) => implicit::conv2d(g, &p, b, y, x, w, scratch),
        None => columns::conv2d(g, b, y, x, w, scratch),
    }
}

/// The gradient of [`conv2d`] with respect to its input: `dx[b, C, H, W]`
/// from `dy[b, O, OH, OW]` and the weights.
pub fn conv2d_grad_input(
    g: &Conv2d,
    b: usize,
    dx: &mut [f32],
    dy: &[f32],
    w: &[f32],
    scratch: &mut [f32],
) {
    check(g, b, dx.len(), w.len(), dy.len(), scratch.len());
    match implicit_plan(g) {
        Some(p) => implicit::conv2d_grad_input(g, &p, b, dx, dy, w, scratch),
        None => columns::conv2d_grad_input(g, b, dx, dy, w, scratch),
    }
}

/// The gradient of [`conv2d`] with respect to its weights: `dw[O, C/groups,
/// KH, KW]`, summed over the batch, from the input and `dy[b, O, OH, OW]`.
pub fn conv2d_grad_weight(
    g: &Conv2d,
    b: usize,
    dw: &mut [f32],
    x: &[f32],
    dy: &[f32],
    scratch: &mut [f32],
) {
    check(g, b, x.len(), dw.len(), dy.len(), scratch.len());
    match implicit_plan(g) {
        Some(p) if b > 0 => implicit::conv2d_grad_weight(g, &p, b, dw, x, dy, scratch),
        _ => columns::conv2d_grad_weight(g, b, dw, x, dy, scratch),
    }
}

/// The `im2col` + GEMM kernels: every stride, padding and dilation, any
/// CPU. Public (hidden) so that tests check this path on CPUs where stride-1
/// convolutions take the implicit one.
#[doc(hidden)]
pub mod columns {
    use super::{check, col2im, gemm, im2col, Conv2d, MatRef};

    /// [`super::conv2d`] through a column matrix.
    pub fn conv2d(g: &Conv2d, b: usize, y: &mut [f32], x: &[f32], w: &[f32], scratch: &mut [f32]) {
        check(g, b, x.len(), w.len(), y.len(), scratch.len());
        let (oh, ow) = g.out_hw();
        let (og, k, ohw) = (g.og(), g.k(), oh * ow);
        for n in 0..b {
            for gi in 0..g.groups {
                let xs = &x[g.in_range(n, gi)];
                let ys = &mut y[g.out_range(n, gi)];
                let wg = MatRef::new(&w[gi * og * k..][..og * k], k);
                if g.pointwise() {
                    gemm(og, ohw, k, wg, MatRef::new(xs, ohw), 0.0, ys);
                } else {
                    im2col(g, xs, scratch);
                    gemm(
                        og,
                        ohw,
                        k,
                        wg,
                        MatRef::new(&scratch[..k * ohw], ohw),
                        0.0,
                        ys,
                    );
                }
            }
        }
    }

    /// [`super::conv2d_grad_input`] through a column matrix.
    pub fn conv2d_grad_input(
        g: &Conv2d,
        b: usize,
        dx: &mut [f32],
        dy: &[f32],
        w: &[f32],
        scratch: &mut [f32],
    ) {
        check(g, b, dx.len(), w.len(), dy.len(), scratch.len());
        let (oh, ow) = g.out_hw();
        let (og, k, ohw) = (g.og(), g.k(), oh * ow);
        for n in 0..b {
            for gi in 0..g.groups {
                let dxs = &mut dx[g.in_range(n, gi)];
                let dys = MatRef::new(&dy[g.out_range(n, gi)], ohw);
                let wt = MatRef::transposed(&w[gi * og * k..][..og * k], k);
                if g.pointwise() {
                    gemm(k, ohw, og, wt, dys, 0.0, dxs);
                } else {
                    gemm(k, ohw, og, wt, dys, 0.0, &mut scratch[..k * ohw]);
                    dxs.fill(0.0);
                    col2im(g, scratch, dxs);
                }
            }
        }
    }

    /// [`super::conv2d_grad_weight`] through a column matrix.
    pub fn conv2d_grad_weight(
        g: &Conv2d,
        b: usize,
        dw: &mut [f32],
        x: &[f32],
        dy: &[f32],
        scratch: &mut [f32],
    ) {
        check(g, b, x.len(), dw.len(), dy.len(), scratch.len());
        let (oh, ow) = g.out_hw();
        let (og, k, ohw) = (g.og(), g.k(), oh * ow);
        if b == 0 {
            dw.fill(0.0);
        }
        for n in 0..b {
            let beta = if n == 0 { 0.0 } else { 1.0 };
            for gi in 0..g.groups {
                let xs = &x[g.in_range(n, gi)];
                let dys = MatRef::new(&dy[g.out_range(n, gi)], ohw);
                let dwg = &mut dw[gi * og * k..][..og * k];
                if g.pointwise() {
                    gemm(og, k, ohw, dys, MatRef::transposed(xs, ohw), beta, dwg);
                } else {
                    im2col(g, xs, scratch);
                    let cols = MatRef::transposed(&scratch[..k * ohw], ohw);
                    gemm(og, k, ohw, dys, cols, beta, dwg);
                }
            }
        }
    }
}

/// The geometry of a 2-D pooling window (everything but the batch size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window (height, width).
    pub kernel: [usize; 2],
    /// Stride (height, width), at least 1.
    pub stride: [usize; 2],
    /// Padding on each side (height, width), at most half the window.
    pub padding: [usize; 2],
}

impl Pool2d {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        (
            out_len(self.h, self.kernel[0], self.stride[0], self.padding[0], 1),
            out_len(self.w, self.kernel[1], self.stride[1], self.padding[1], 1),
        )
    }

    fn check(&self, b: usize, x: usize, y: usize) {
        let (oh, ow) = self.out_hw();
        assert!(
            x == b * self.c * self.h * self.w && y == b * self.c * oh * ow,
            "nnc internal error: pooling slices do not fit {self:?} at batch {b}"
        );
    }

    /// Calls `f(plane, output index, input rows lo..hi, input columns lo..hi)`
    /// for every window, clipped to the input.
    fn windows(&self, planes: usize, mut f: impl FnMut(usize, usize, [usize; 2], [usize; 2])) {
        let (oh, ow) = self.out_hw();
        let ([kh, kw], [sh, sw], [ph, pw]) = (self.kernel, self.stride, self.padding);
        for p in 0..planes {
            for oy in 0..oh {
                let y0 = oy * sh;
                let rows = clip(y0, kh, ph, self.h);
                for ox in 0..ow {
                    let x0 = ox * sw;
                    let cols = clip(x0, kw, pw, self.w);
                    f(p, (p * oh + oy) * ow + ox, rows, cols);
                }
            }
        }
    }

    /// The 2×2 window with stride 2 and no padding (the pooling of almost
    /// every CNN), which has its own loops: windows never overlap, so the
    /// gradient writes each input position exactly once.
    fn halving(&self) -> bool {
        self.kernel == [2, 2] && self.stride == [2, 2] && self.padding == [0, 0]
    }

    /// Without padding every window lies inside the input: calls
    /// `f(plane, output index, index of the window's first maximum within
    /// the plane)` with no clipping (the common case, several times faster
    /// than [`Pool2d::windows`]).
    fn unpadded(&self, b: usize, mut f: impl FnMut(usize, usize, usize), x: &[f32]) {
        let (oh, ow) = self.out_hw();
        let ([kh, kw], [sh, sw], w) = (self.kernel, self.stride, self.w);
        let hw = self.h * w;
        for (pl, plane) in x.chunks_exact(hw).take(b * self.c).enumerate() {
            for oy in 0..oh {
                for ox in 0..ow {
                    let first = oy * sh * w + ox * sw;
                    let (mut best, mut m) = (first, plane[first]);
                    for ky in 0..kh {
                        let start = first + ky * w;
                        for (kx, &v) in plane[start..start + kw].iter().enumerate() {
                            if v > m {
                                (best, m) = (start + kx, v);
                            }
                        }
                    }
                    f(pl, (pl * oh + oy) * ow + ox, best);
                }
            }
        }
    }

    /// The index (within a plane) of the first maximum of a window.
    fn argmax(&self, plane: &[f32], rows: [usize; 2], cols: [usize; 2]) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for iy in rows[0]..rows[1] {
            for ix in cols[0]..cols[1] {
                let i = iy * self.w + ix;
                let v = plane[i];
                if best.is_none_or(|(_, m)| v > m) {
                    best = Some((i, v));
                }
            }
        }
        best.map(|(i, _)| i)
    }
}

/// The position and value of the first maximum of a 2×2 window in
/// row-major order (ties and NaN resolved as [`Pool2d::argmax`] does:
/// a later element wins only if strictly greater).
#[inline(always)]
fn first_max(v: [f32; 4]) -> (usize, f32) {
    let (mut i, mut m) = (0, v[0]);
    for (j, &x) in v.iter().enumerate().skip(1) {
        if x > m {
            (i, m) = (j, x);
        }
    }
    (i, m)
}

/// [`first_max`] of a 2×2 window `[a0, a1, c0, c1]` as a tournament:
/// whether `a1` beats `a0`, whether `c1` beats `c0`, and whether the lower
/// pair's winner beats the upper pair's. Equal to the sequential scan for
/// every input without NaN (a later element wins only if strictly greater).
#[inline(always)]
fn first_max_masks(v: [f32; 4]) -> [bool; 3] {
    let (t, b) = (v[1] > v[0], v[3] > v[2]);
    // A bit-mask select (`select_unpredictable` needs Rust 1.88, above
    // the workspace's rust-version).
    let pick = |c: bool, x: f32, y: f32| {
        let m = 0u32.wrapping_sub(c.into());
        f32::from_bits((x.to_bits() & m) | (y.to_bits() & !m))
    };
    [t, b, pick(b, v[3], v[2]) > pick(t, v[1], v[0])]
}

/// [`halving_grad_vector`] one window at a time (any CPU).
fn halving_grad_scalar(r0: &[f32], r1: &[f32], g: &[f32], d0: &mut [f32], d1: &mut [f32]) {
    let rows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
    let outs = d0.chunks_exact_mut(2).zip(d1.chunks_exact_mut(2));
    for (((a, c), (da, dc)), &g) in rows.zip(outs).zip(g) {
        // All-ones/all-zero masks, not `if`s: LLVM turns those into
        // branches, which random data mispredicts half the time (measured
        // 8× slower).
        let [t, b, l] =
            first_max_masks([a[0], a[1], c[0], c[1]]).map(|m| 0u32.wrapping_sub(m.into()));
        let keep = |m: u32| f32::from_bits(g.to_bits() & m);
        da[0] = keep(!l & !t);
        da[1] = keep(!l & t);
        dc[0] = keep(l & !b);
        dc[1] = keep(l & b);
    }
}

/// A 2×2/stride-2 max-pool gradient of one output row (the arguments of
/// [`halving_grad_scalar`]).
type HalvingGrad = fn(&[f32], &[f32], &[f32], &mut [f32], &mut [f32]);

/// The row kernel of the 2×2/stride-2 max-pool gradient for this CPU:
/// [`halving_grad_vector`] with AVX2, else [`halving_grad_scalar`]. Called
/// once per kernel call, not per row.
fn halving_grad_row() -> HalvingGrad {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected, and only then is this closure
        // handed out.
        return |r0, r1, g, d0, d1| unsafe { halving_grad_vector(r0, r1, g, d0, d1) };
    }
    halving_grad_scalar
}

/// The 2×2/stride-2 max-pool gradient of one output row, eight windows per
/// step: `r0`, `r1` the two input rows, `g` the output gradients, `d0`,
/// `d1` the input-gradient rows (a last group of fewer than 8 goes through
/// zero-padded copies). The same tournament as [`first_max_masks`], so
/// results equal the scalar loop's bit for bit.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
unsafe fn halving_grad_vector(r0: &[f32], r1: &[f32], g: &[f32], d0: &mut [f32], d1: &mut [f32]) {
    let n = g.len();
    assert!(r0.len() >= 2 * n && r1.len() >= 2 * n && d0.len() >= 2 * n && d1.len() >= 2 * n);
    if n == 0 {
        return;
    }
    let full = n / 8 * 8;
    // SAFETY: the caller guarantees AVX2; every slice holds `2 * full`
    // (rows) or `full` (gradients) elements, as asserted above.
    unsafe { halving_grad_avx2(r0, r1, g, d0, d1, full) };
    let rest = n - full;
    if rest > 0 {
        let mut t0 = [0f32; 16];
        let mut t1 = [0f32; 16];
        let mut tg = [0f32; 8];
        t0[..2 * rest].copy_from_slice(&r0[2 * full..2 * n]);
        t1[..2 * rest].copy_from_slice(&r1[2 * full..2 * n]);
        tg[..rest].copy_from_slice(&g[full..n]);
        let (mut o0, mut o1) = ([0f32; 16], [0f32; 16]);
        // SAFETY: the caller guarantees AVX2; the buffers hold 16 and 8
        // floats.
        unsafe { halving_grad_avx2(&t0, &t1, &tg, &mut o0, &mut o1, 8) };
        d0[2 * full..2 * n].copy_from_slice(&o0[..2 * rest]);
        d1[2 * full..2 * n].copy_from_slice(&o1[..2 * rest]);
    }
}

/// [`halving_grad_vector`]'s kernel for the first `n` windows (`n % 8 == 0`).
///
/// # Safety
/// The CPU must support AVX2; the slices must hold `2 * n` / `n` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn halving_grad_avx2(
    r0: &[f32],
    r1: &[f32],
    g: &[f32],
    d0: &mut [f32],
    d1: &mut [f32],
    n: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): loads and stores stay within the first `2 * n`
    // (rows) and `n` (gradient) elements, per the caller's contract.
    unsafe {
        // `shuffle_ps` of two 8-float loads yields windows 0,1,4,5,2,3,6,7;
        // the gradients are permuted to match, and `unpack` restores the
        // row order on the way out.
        let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
        for i in (0..n).step_by(8) {
            let split = |row: &[f32]| {
                let lo = _mm256_loadu_ps(row.as_ptr().add(2 * i));
                let hi = _mm256_loadu_ps(row.as_ptr().add(2 * i + 8));
                (
                    _mm256_shuffle_ps::<0x88>(lo, hi),
                    _mm256_shuffle_ps::<0xDD>(lo, hi),
                )
            };
            let (a0, a1) = split(r0);
            let (c0, c1) = split(r1);
            let t = _mm256_cmp_ps::<_CMP_GT_OQ>(a1, a0);
            let b = _mm256_cmp_ps::<_CMP_GT_OQ>(c1, c0);
            let top = _mm256_blendv_ps(a0, a1, t);
            let bottom = _mm256_blendv_ps(c0, c1, b);
            let l = _mm256_cmp_ps::<_CMP_GT_OQ>(bottom, top);
            let gv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(g.as_ptr().add(i)), order);
            let da0 = _mm256_andnot_ps(_mm256_or_ps(l, t), gv);
            let da1 = _mm256_and_ps(_mm256_andnot_ps(l, t), gv);
            let dc0 = _mm256_and_ps(_mm256_andnot_ps(b, l), gv);
            let dc1 = _mm256_and_ps(_mm256_and_ps(l, b), gv);
            let out0 = d0.as_mut_ptr().add(2 * i);
            _mm256_storeu_ps(out0, _mm256_unpacklo_ps(da0, da1));
            _mm256_storeu_ps(out0.add(8), _mm256_unpackhi_ps(da0, da1));
            let out1 = d1.as_mut_ptr().add(2 * i);
            _mm256_storeu_ps(out1, _mm256_unpacklo_ps(dc0, dc1));
            _mm256_storeu_ps(out1.add(8), _mm256_unpackhi_ps(dc0, dc1));
        }
    }
}

/// The input range `lo..hi` of a window starting at padded position
/// `start` with `k` elements, clipped to `0..n`.
fn clip(start: usize, k: usize, p: usize, n: usize) -> [usize; 2] {
    let lo = start.saturating_sub(p).min(n);
    let hi = (start + k).saturating_sub(p).min(n);
    [lo, hi.max(lo)]
}

/// Max pooling: `y[b, C, OH, OW]` is the maximum of each window of `x`.
pub fn max_pool2d(p: &Pool2d, b: usize, y: &mut [f32], x: &[f32]) {
    p.check(b, x.len(), y.len());
    let hw = p.h * p.w;
    if p.halving() {
        let (oh, ow) = p.out_hw();
        for (xp, yp) in x.chunks_exact(hw).zip(y.chunks_exact_mut(oh * ow)) {
            for (oy, yr) in yp.chunks_exact_mut(ow).enumerate() {
                let r0 = &xp[2 * oy * p.w..][..2 * ow];
                let r1 = &xp[(2 * oy + 1) * p.w..][..2 * ow];
                for ((v, a), c) in yr
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    *v = first_max([a[0], a[1], c[0], c[1]]).1;
                }
            }
        }
        return;
    }
    if p.padding == [0, 0] {
        p.unpadded(b, |pl, o, i| y[o] = x[pl * hw + i], x);
        return;
    }
    p.windows(b * p.c, |pl, o, rows, cols| {
        let plane = &x[pl * hw..][..hw];
        y[o] = p
            .argmax(plane, rows, cols)
            .map_or(f32::NEG_INFINITY, |i| plane[i]);
    });
}

/// The gradient of [`max_pool2d`]: each window's upstream gradient goes to
/// the first maximum of the window.
pub fn max_pool2d_grad(p: &Pool2d, b: usize, dx: &mut [f32], x: &[f32], dy: &[f32]) {
    p.check(b, x.len(), dy.len());
    assert_eq!(dx.len(), x.len(), "nnc internal error: max_pool2d_grad");
    let hw = p.h * p.w;
    if p.halving() {
        // Every input position is written once, so no clearing pass is
        // needed unless an odd last row or column lies outside all windows.
        if p.h % 2 == 1 || p.w % 2 == 1 {
            dx.fill(0.0);
        }
        let (oh, ow) = p.out_hw();
        // Eight windows at a time where the CPU has AVX2 (LLVM does not
        // vectorise the pairwise scalar loop: 6 cycles per input element,
        // 10% of a LeNet step); else one by one. Chosen once per call.
        let row_grad = halving_grad_row();
        let planes = x.chunks_exact(hw).zip(dx.chunks_exact_mut(hw));
        for ((xp, dxp), dyp) in planes.zip(dy.chunks_exact(oh * ow)) {
            for (oy, g) in dyp.chunks_exact(ow).enumerate() {
                let r0 = &xp[2 * oy * p.w..][..2 * ow];
                let r1 = &xp[(2 * oy + 1) * p.w..][..2 * ow];
                let (d0, d1) = dxp[2 * oy * p.w..].split_at_mut(p.w);
                let d1 = &mut d1[..2 * ow];
                let d0 = &mut d0[..2 * ow];
                row_grad(r0, r1, g, d0, d1);
            }
        }
        return;
    }
    dx.fill(0.0);
    if p.padding == [0, 0] {
        p.unpadded(b, |pl, o, i| dx[pl * hw + i] += dy[o], x);
        return;
    }
    p.windows(b * p.c, |pl, o, rows, cols| {
        if let Some(i) = p.argmax(&x[pl * hw..][..hw], rows, cols) {
            dx[pl * hw + i] += dy[o];
        }
    });
}

/// Average pooling: `y` is the sum of each window divided by its full size.
pub fn avg_pool2d(p: &Pool2d, b: usize, y: &mut [f32], x: &[f32]) {
    p.check(b, x.len(), y.len());
    let hw = p.h * p.w;
    let scale = 1.0 / (p.kernel[0] * p.kernel[1]) as f32;
    p.windows(b * p.c, |pl, o, rows, cols| {
        let plane = &x[pl * hw..][..hw];
        let mut s = 0.0;
        for iy in rows[0]..rows[1] {
            s += plane[iy * p.w + cols[0]..iy * p.w + cols[1]]
                .iter()
                .sum::<f32>();
        }
        y[o] = s * scale;
    });
}

/// The gradient of [`avg_pool2d`]: each window's upstream gradient, divided
/// by the window size, added to every input position of the window.
pub fn avg_pool2d_grad(p: &Pool2d, b: usize, dx: &mut [f32], dy: &[f32]) {
    p.check(b, dx.len(), dy.len());
    dx.fill(0.0);
    let hw = p.h * p.w;
    let scale = 1.0 / (p.kernel[0] * p.kernel[1]) as f32;
    p.windows(b * p.c, |pl, o, rows, cols| {
        let g = dy[o] * scale;
        let plane = &mut dx[pl * hw..][..hw];
        for iy in rows[0]..rows[1] {
            for v in &mut plane[iy * p.w + cols[0]..iy * p.w + cols[1]] {
                *v += g;
            }
        }
    });
}

/// [`crate::kernels::io`] for kernels that also take scratch space: splits
/// the workspace into the inputs (read-only), the output and the scratch
/// region, given as `(start, len)`. The three kinds of region must not
/// overlap (the memory planner guarantees it).
pub fn io_scratch<'a, const N: usize>(
    ws: &'a mut [f32],
    out: (usize, usize),
    scratch: (usize, usize),
    inputs: [(usize, usize); N],
) -> ([&'a [f32]; N], &'a mut [f32], &'a mut [f32]) {
    let (o, s) = (out.0..out.0 + out.1, scratch.0..scratch.0 + scratch.1);
    let swapped = s.start < o.start;
    let (first, second) = if swapped { (&s, &o) } else { (&o, &s) };
    assert!(
        first.end <= second.start,
        "nnc internal error: kernel output {o:?} overlaps its scratch {s:?}"
    );
    let (left, rest) = ws.split_at_mut(first.start);
    let (a, rest) = rest.split_at_mut(first.len());
    let (mid, rest) = rest.split_at_mut(second.start - first.end);
    let (bb, right) = rest.split_at_mut(second.len());
    let (left, mid, right): (&'a [f32], &'a [f32], &'a [f32]) = (left, mid, right);
    let (f_end, s_start, s_end) = (first.end, second.start, second.end);
    let ins = inputs.map(|(st, len)| {
        let r = st..st + len;
        if r.end <= first.start {
            &left[r]
        } else if r.start >= f_end && r.end <= s_start {
            &mid[r.start - f_end..r.end - f_end]
        } else if r.start >= s_end {
            &right[r.start - s_end..r.end - s_end]
        } else {
            panic!("nnc internal error: kernel input {r:?} overlaps its output or scratch")
        }
    });
    if swapped {
        (ins, bb, a)
    } else {
        (ins, a, bb)
    }
}

/// Direct nested-loop convolution in f64: the oracle the im2col kernels are
/// tested and benchmarked against. Not for training (it is slow on purpose:
/// every product term is visited once, in the obvious order).
#[doc(hidden)]
pub mod reference {
    use super::Conv2d;

    /// Input position of output `o` and kernel tap `k`, if inside `0..n`.
    fn at(o: usize, k: usize, s: usize, p: usize, d: usize, n: usize) -> Option<usize> {
        let i = (o * s + k * d) as isize - p as isize;
        (0..n as isize).contains(&i).then_some(i as usize)
    }

    /// The convolution `y` of `b` samples and, for the output gradient `dy`,
    /// the gradients `(y, dx, dw)`, accumulated in f64.
    pub fn conv2d(
        g: &Conv2d,
        b: usize,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (oh, ow) = g.out_hw();
        let (cg, og) = (g.c / g.groups, g.o / g.groups);
        let mut y = vec![0.0; b * g.o * oh * ow];
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        for n in 0..b {
            for o in 0..g.o {
                let grp = o / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let yi = ((n * g.o + o) * oh + oy) * ow + ox;
                        for ci in 0..cg {
                            let c = grp * cg + ci;
                            for ki in 0..g.kh {
                                let Some(iy) =
                                    at(oy, ki, g.stride[0], g.padding[0], g.dilation[0], g.h)
                                else {
                                    continue;
                                };
                                for kj in 0..g.kw {
                                    let Some(ix) =
                                        at(ox, kj, g.stride[1], g.padding[1], g.dilation[1], g.w)
                                    else {
                                        continue;
                                    };
                                    let xi = ((n * g.c + c) * g.h + iy) * g.w + ix;
                                    let wi = ((o * cg + ci) * g.kh + ki) * g.kw + kj;
                                    y[yi] += f64::from(x[xi]) * f64::from(w[wi]);
                                    dx[xi] += f64::from(dy[yi]) * f64::from(w[wi]);
                                    dw[wi] += f64::from(dy[yi]) * f64::from(x[xi]);
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }
}

#[cfg(test)]
mod tests {
    use super::{halving_grad_row, halving_grad_scalar};
    use crate::rng::Rng;

    /// The max-pool gradient row kernel this CPU runs (the vector one with
    /// AVX2) equals the scalar loop bit for bit (row lengths around
    /// multiples of 8, many exact ties).
    #[test]
    fn halving_grad_vector_equals_scalar() {
        let row_grad = halving_grad_row();
        let mut rng = Rng::new(5);
        for n in 1..40 {
            let mut row = |len: usize| -> Vec<f32> {
                (0..len)
                    .map(|_| {
                        (rng.below(5) as f32) - 2.0 + f32::from(u8::from(rng.below(2) == 0)) * 0.25
                    })
                    .collect()
            };
            let (r0, r1, g) = (row(2 * n), row(2 * n), row(n));
            let (mut a0, mut a1) = (vec![f32::NAN; 2 * n], vec![f32::NAN; 2 * n]);
            let (mut b0, mut b1) = (vec![f32::NAN; 2 * n], vec![f32::NAN; 2 * n]);
            halving_grad_scalar(&r0, &r1, &g, &mut a0, &mut a1);
            row_grad(&r0, &r1, &g, &mut b0, &mut b1);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a0), bits(&b0), "top row, {n} windows");
            assert_eq!(bits(&a1), bits(&b1), "bottom row, {n} windows");
        }
    }
}
