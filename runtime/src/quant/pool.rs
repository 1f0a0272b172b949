//! Max pooling on u8 activations: the bytes of one quantization are
//! ordered as the values they stand for, so pooling them equals pooling
//! the f32 values and quantizing (see `plan/layout.rs`).

use crate::kernels::conv::Pool2d;

/// `y = max_pool2d(x)` over `b` samples of NCHW bytes, windows clipped to
/// the input (padding never wins, as the f32 kernel's `−∞`).
///
/// A window entirely in the padding (none is: padding is at most half the
/// window) gives byte 0, as the f32 kernel's `−∞` quantizes to.
///
/// # Panics
/// If the slices do not fit the pooling at batch `b` (a checked plan
/// sizes them).
pub fn max_pool2d_u8(p: &Pool2d, b: usize, y: &mut [u8], x: &[u8]) {
    let (oh, ow) = p.out_hw();
    let hw = p.h * p.w;
    assert!(
        x.len() == b * p.c * hw && y.len() == b * p.c * oh * ow,
        "nnc internal error: byte pooling slices do not fit {p:?} at batch {b}"
    );
    let planes = x
        .chunks_exact(hw.max(1))
        .zip(y.chunks_exact_mut((oh * ow).max(1)));
    if p.kernel == [2, 2] && p.stride == [2, 2] && p.padding == [0, 0] {
        // The common 2×2/stride-2 pooling: two input rows per output row,
        // a loop LLVM vectorises.
        for (xp, yp) in planes {
            for (oy, yr) in yp.chunks_exact_mut(ow).enumerate() {
                let r0 = &xp[2 * oy * p.w..][..2 * ow];
                let r1 = &xp[(2 * oy + 1) * p.w..][..2 * ow];
                for ((v, a), c) in yr
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    *v = a[0].max(a[1]).max(c[0].max(c[1]));
                }
            }
        }
        return;
    }
    let ([kh, kw], [sh, sw], [ph, pw]) = (p.kernel, p.stride, p.padding);
    let clip = |o: usize, k: usize, s: usize, pad: usize, n: usize| {
        let lo = (o * s).saturating_sub(pad).min(n);
        let hi = (o * s + k).saturating_sub(pad).min(n);
        lo..hi
    };
    for (xp, yp) in planes {
        for oy in 0..oh {
            let rows = clip(oy, kh, sh, ph, p.h);
            for ox in 0..ow {
                let cols = clip(ox, kw, sw, pw, p.w);
                let m = rows
                    .clone()
                    .flat_map(|iy| xp[iy * p.w..][cols.clone()].iter().copied())
                    .max()
                    .unwrap_or(0);
                yp[oy * ow + ox] = m;
            }
        }
    }
}

/// [`max_pool2d_u8`] over channels-last bytes (`[b, H, W, C]` to `[b, OH,
/// OW, C]`): each window's pixels are maxed as whole runs of `C` bytes,
/// which LLVM vectorises across the channels.
///
/// # Panics
/// As for [`max_pool2d_u8`].
pub fn max_pool2d_u8_channels_last(p: &Pool2d, b: usize, y: &mut [u8], x: &[u8]) {
    let (oh, ow) = p.out_hw();
    let c = p.c;
    let (hwc, ohwc) = (p.h * p.w * c, oh * ow * c);
    assert!(
        x.len() == b * hwc && y.len() == b * ohwc,
        "nnc internal error: byte pooling slices do not fit {p:?} at batch {b}"
    );
    if c == 0 || hwc == 0 || ohwc == 0 {
        return;
    }
    if p.kernel == [2, 2] && p.stride == [2, 2] && p.padding == [0, 0] {
        // The common 2×2/stride-2 pooling: two input pixels of two input
        // rows per output pixel, no window clipping.
        let row = p.w * c;
        #[cfg(target_arch = "x86_64")]
        if c <= 16 {
            pool_2x2_sse2(p, b, y, x);
            return;
        }
        for (xs, ys) in x.chunks_exact(hwc).zip(y.chunks_exact_mut(ohwc)) {
            for (oy, yr) in ys.chunks_exact_mut(ow * c).enumerate() {
                let r0 = &xs[2 * oy * row..][..2 * ow * c];
                let r1 = &xs[(2 * oy + 1) * row..][..2 * ow * c];
                for ((yp, a), b) in yr
                    .chunks_exact_mut(c)
                    .zip(r0.chunks_exact(2 * c))
                    .zip(r1.chunks_exact(2 * c))
                {
                    let ((a0, a1), (b0, b1)) = (a.split_at(c), b.split_at(c));
                    for ((((v, &a0), &a1), &b0), &b1) in
                        yp.iter_mut().zip(a0).zip(a1).zip(b0).zip(b1)
                    {
                        *v = a0.max(a1).max(b0.max(b1));
                    }
                }
            }
        }
        return;
    }
    let ([kh, kw], [sh, sw], [ph, pw]) = (p.kernel, p.stride, p.padding);
    let clip = |o: usize, k: usize, s: usize, pad: usize, n: usize| {
        let lo = (o * s).saturating_sub(pad).min(n);
        let hi = (o * s + k).saturating_sub(pad).min(n);
        lo..hi
    };
    for (xs, ys) in x.chunks_exact(hwc).zip(y.chunks_exact_mut(ohwc)) {
        for (oy, yr) in ys.chunks_exact_mut(ow * c).enumerate() {
            let rows = clip(oy, kh, sh, ph, p.h);
            for (ox, yp) in yr.chunks_exact_mut(c).enumerate() {
                let cols = clip(ox, kw, sw, pw, p.w);
                // A window entirely in the padding gives 0, as in the
                // channels-first kernel.
                yp.fill(0);
                for iy in rows.clone() {
                    let xr = &xs[(iy * p.w + cols.start) * c..(iy * p.w + cols.end) * c];
                    for px in xr.chunks_exact(c) {
                        for (v, &a) in yp.iter_mut().zip(px) {
                            *v = (*v).max(a);
                        }
                    }
                }
            }
        }
    }
}

/// The 2×2/stride-2 channels-last pooling of at most 16 channels: each
/// output pixel is the byte-wise maximum (`pmaxub`, SSE2, which every
/// x86_64 CPU has) of 16-byte loads at its four input pixels, stored as 16
/// bytes; in increasing order, so the bytes past a pixel's channels are
/// rewritten by the next pixel. Output rows whose last loads or store
/// would pass the end of the slices take the byte loop (the bounds are
/// checked once per row: a check per pixel kept the loop at ~160
/// instructions per output pixel).
#[cfg(target_arch = "x86_64")]
fn pool_2x2_sse2(p: &Pool2d, b: usize, y: &mut [u8], x: &[u8]) {
    use std::arch::x86_64::*;
    let (oh, ow) = p.out_hw();
    let c = p.c;
    let (row, hwc, ohwc) = (p.w * c, p.h * p.w * c, oh * ow * c);
    if ow == 0 {
        return;
    }
    for n in 0..b {
        for oy in 0..oh {
            let at = n * ohwc + oy * ow * c;
            let i0 = n * hwc + 2 * oy * row;
            // The row's last pixel: its fourth load and its store.
            let last_in = i0 + row + (2 * ow - 1) * c;
            let last_out = at + (ow - 1) * c;
            if last_in + 16 <= x.len() && last_out + 16 <= y.len() {
                // SAFETY: every load of the row starts at or before the
                // last pixel's fourth and every store at or before its
                // store, both in bounds (checked just above); SSE2 is part
                // of x86_64.
                unsafe {
                    let (r0, dst) = (x.as_ptr().add(i0), y.as_mut_ptr().add(at));
                    let r1 = r0.add(row);
                    for ox in 0..ow {
                        let i = 2 * ox * c;
                        let m = _mm_max_epu8(
                            _mm_max_epu8(
                                _mm_loadu_si128(r0.add(i).cast()),
                                _mm_loadu_si128(r0.add(i + c).cast()),
                            ),
                            _mm_max_epu8(
                                _mm_loadu_si128(r1.add(i).cast()),
                                _mm_loadu_si128(r1.add(i + c).cast()),
                            ),
                        );
                        _mm_storeu_si128(dst.add(ox * c).cast(), m);
                    }
                }
            } else {
                for ox in 0..ow {
                    let (o, i) = (at + ox * c, i0 + 2 * ox * c);
                    for ch in 0..c {
                        let (a, b) = (x[i + ch].max(x[i + c + ch]), x[i + row + ch]);
                        y[o + ch] = a.max(b.max(x[i + row + c + ch]));
                    }
                }
            }
        }
    }
}
