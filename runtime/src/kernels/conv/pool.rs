//! Pooling kernels (max and average, with their gradients) over NCHW
//! tensors: plain loops, plus an AVX2 row kernel for the gradient of the
//! common 2×2/stride-2 max pooling.

use super::{out_len, split};

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

/// Runs the forward pooling `f` over `b` samples, cut into runs of
/// samples on the pool's threads inside generated `predict` (each window
/// is computed alone, so the split does not change a bit).
fn forward(
    p: &Pool2d,
    b: usize,
    y: &mut [f32],
    x: &[f32],
    f: impl Fn(&Pool2d, usize, &mut [f32], &[f32]) + Sync,
) {
    p.check(b, x.len(), y.len());
    let (oh, ow) = p.out_hw();
    let (x_per, y_per) = (p.c * p.h * p.w, p.c * oh * ow);
    let parts = split::parts(b, x_per.saturating_mul(split::POOL_ELEMENT_WORK));
    split::samples(b, parts, y, y_per, x, x_per, |_, n, y, x| f(p, n, y, x));
}

/// Max pooling: `y[b, C, OH, OW]` is the maximum of each window of `x`.
pub fn max_pool2d(p: &Pool2d, b: usize, y: &mut [f32], x: &[f32]) {
    forward(p, b, y, x, max_pool2d_samples);
}

/// [`max_pool2d`] on the calling thread.
fn max_pool2d_samples(p: &Pool2d, b: usize, y: &mut [f32], x: &[f32]) {
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
    forward(p, b, y, x, avg_pool2d_samples);
}

/// [`avg_pool2d`] on the calling thread.
fn avg_pool2d_samples(p: &Pool2d, b: usize, y: &mut [f32], x: &[f32]) {
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
