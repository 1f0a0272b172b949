//! The `im2col` + GEMM kernels: every stride, padding and dilation, any
//! CPU. Public (hidden) so that tests check this path on CPUs where stride-1
//! convolutions take the implicit one.

use super::{check, Conv2d};
use crate::gemm::{sgemm, MatRef, Parallelism};

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

/// [`super::conv2d`] through a column matrix.
pub fn conv2d(
    g: &Conv2d,
    b: usize,
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    scratch: &mut [f32],
    epilogue: &dyn Fn(usize, &mut [f32]),
) {
    check(g, b, x.len(), w.len(), y.len(), scratch.len());
    let (oh, ow) = g.out_hw();
    let (og, k, ohw) = (g.og(), g.k(), oh * ow);
    let per = g.o * ohw;
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
        epilogue(n * per, &mut y[n * per..][..per]);
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
