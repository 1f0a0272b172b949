//! Stride-1 convolutions as implicit GEMMs: the receptive fields are
//! multiplied where they lie in a zero-padded copy of the image, never
//! copied out into a column matrix.
//!
//! The trick (flattened rows): with stride 1, output position `(oy, ox)`
//! and kernel tap `(c, ki, kj)` read padded-input element
//! `c·Hp·Wp + ki·dh·Wp + kj·dw + (oy·Wp + ox)`. Computing the output over
//! *padded-width* rows, `q = oy·Wp + ox` for `ox < Wp` instead of `ox < OW`,
//! makes that address `off(tap) + q`: a fixed offset per tap plus the output
//! index, so 16 consecutive outputs of one tap are 16 consecutive floats of
//! the image — exactly a row of B for the AVX2 microkernel, read in place
//! ([`crate::gemm::indexed`]). The `Wp − OW` extra columns per row are
//! computed and dropped when the result is compacted into NCHW (12.5% of
//! LeNet's first layer, 29% of its second), which costs far less than
//! writing `KH·KW` copies of every pixel and packing them again.
//!
//! * forward: `Y[o, q] = Σ_tap W[o, tap] · Xp[off(tap) + q]`;
//! * input gradient: the same product over `dY` zero-padded by
//!   `(K − 1)·d − p` with the kernel flipped and transposed (a "full"
//!   correlation), output rows `W + (KW − 1)·dw` wide;
//! * weight gradient: `dWᵀ[tap, o] = Σ_n Σ_q Xp[off(tap) + q] · dY[o, q]`,
//!   A read in place through the same offsets, `dY` packed once per sample
//!   into 16-channel panels with zeros in the dropped columns; or, when
//!   there are few output channels (LeNet's first layer has 6), `dW[o, tap]`
//!   with `dY` as A and the receptive fields packed 16 taps per panel.
//!
//! The input gradient orders its taps kernel row first, so each block of
//! 16 outputs skips the kernel rows that read only the zero rows of the
//! padding above or below `dY` ([`Padded::kernel_rows`]): the full
//! correlation of LeNet's second layer reads 18 padded rows of `dY` for 10
//! real ones (22% fewer instructions for that kernel).
//!
//! Used for stride 1 whenever the padding is at most the dilated kernel
//! extent minus one (so the input gradient's padding is not negative) and
//! the CPU has the AVX2 kernel; otherwise `im2col` is used.

use std::cell::RefCell;

use super::Conv2d;
use crate::gemm::{self, Indexed, INDEXED_BLOCK};
pub(super) use nnc_spec::conv::implicit::Plan;

/// `off(tap)` for every tap `(c, ki, kj)` of a `[c, rows, cols]` image.
fn offsets(g: &Conv2d, c: usize, rows: usize, cols: usize, out: &mut Vec<usize>) {
    out.clear();
    for ci in 0..c {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                out.push(ci * rows * cols + ki * g.dilation[0] * cols + kj * g.dilation[1]);
            }
        }
    }
}

/// A product over padded-width rows: its B operand is a stack of dense
/// `[h, w]` images zero-padded to `[hp, wp]` (each image's `(0, 0)` at
/// `(top, left)`), and of its `q` columns per row (`rows · wp`), the first
/// `width` of every `wp` are the result.
#[derive(Clone, Copy)]
struct Padded {
    h: usize,
    w: usize,
    hp: usize,
    wp: usize,
    top: usize,
    left: usize,
    q: usize,
    width: usize,
}

impl Padded {
    /// The forward product (and the weight gradient's padded input): the
    /// input padded by the convolution's padding, outputs `OW` wide.
    fn input(g: &Conv2d, p: &Plan) -> Padded {
        let [ph, pw] = g.padding;
        Padded {
            h: g.h,
            w: g.w,
            hp: p.hp,
            wp: p.wp,
            top: ph,
            left: pw,
            q: p.q,
            width: p.ow,
        }
    }

    /// The input-gradient product: `dY` padded by `(K − 1)·d − p`, outputs
    /// `W` wide.
    fn output_grad(g: &Conv2d, p: &Plan) -> Padded {
        Padded {
            h: p.oh,
            w: p.ow,
            hp: p.hd,
            wp: p.wd,
            top: (g.kh - 1) * g.dilation[0] - g.padding[0],
            left: (g.kw - 1) * g.dilation[1] - g.padding[1],
            q: p.q2,
            width: g.w,
        }
    }

    /// Copies the images of `src` (`[_, h, w]`) into `dst`, zeroed first
    /// when `zero`. Every call of one geometry writes the same interior, so
    /// the border stays zero from the first call of a kernel on: zeroing
    /// the whole buffer for every sample was 6% of LeNet's step.
    fn pad(&self, src: &[f32], dst: &mut [f32], zero: bool) {
        if zero {
            dst.fill(0.0);
        }
        for (s, d) in src
            .chunks_exact(self.h * self.w)
            .zip(dst.chunks_exact_mut(self.hp * self.wp))
        {
            for (r, row) in s.chunks_exact(self.w).enumerate() {
                d[(r + self.top) * self.wp + self.left..][..self.w].copy_from_slice(row);
            }
        }
    }

    /// One sample's product, as the forward and the input-gradient kernels
    /// compute it: pads `src` into `padded`, multiplies `a` (rows at
    /// `a_rows`) by it (each B row at a tap's offset `b_rows`) into `cbuf`
    /// over padded-width rows, and keeps each row's first `width` columns
    /// in the dense `dst`: `dst = compact(A @ pad(src))`. `first`: the
    /// kernel's first product, which zeroes `padded` (see [`Self::pad`]).
    /// `rows`: `Some((taps per kernel row, kernel rows, row dilation))`
    /// when the taps are ordered kernel row first; each block of outputs
    /// then skips the kernel rows that read only the zero border above or
    /// below the image (see [`Self::kernel_rows`]).
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        a: &[f32],
        t: &Tables,
        src: &[f32],
        padded: &mut [f32],
        cbuf: &mut [f32],
        dst: &mut [f32],
        first: bool,
        rows: Option<(usize, usize, usize)>,
    ) {
        self.pad(src, padded, first);
        let depth = rows.map(|(per_row, kh, dilation)| {
            move |j0: usize| {
                let live = self.kernel_rows(j0, kh, dilation);
                live.start * per_row..live.end * per_row
            }
        });
        let operands = Indexed {
            a,
            a_rows: &t.a,
            b: padded,
            b_rows: &t.b,
            b_block: INDEXED_BLOCK,
            depth: depth
                .as_ref()
                .map(|f| f as &dyn Fn(usize) -> std::ops::Range<usize>),
        };
        gemm::indexed(self.q, &operands, 0.0, cbuf, self.q);
        for (d, s) in dst
            .chunks_exact_mut(self.width)
            .zip(cbuf.chunks_exact(self.wp))
        {
            d.copy_from_slice(&s[..self.width]);
        }
    }
}

impl Padded {
    /// The kernel rows `ki` (of `kh`, `dilation` apart) that read a
    /// non-zero row of the padded image for some output in the 16 columns
    /// from `j0`. Output row `r` (of `wp` columns) reads, through kernel
    /// row `ki`, padded row `r + ki·dilation` only (a kept column never
    /// reaches past its row; dropped columns may, and are dropped), and the
    /// image occupies padded rows `top..top + h`.
    fn kernel_rows(&self, j0: usize, kh: usize, dilation: usize) -> std::ops::Range<usize> {
        let last = (j0 + INDEXED_BLOCK).min(self.q).max(j0 + 1) - 1;
        let (r_lo, r_hi) = (j0 / self.wp, last / self.wp);
        // ki ≥ ⌈(top − r_hi) / d⌉ and ki < ⌈(top + h − r_lo) / d⌉.
        let lo = self.top.saturating_sub(r_hi).div_ceil(dilation);
        let hi = (self.top + self.h).saturating_sub(r_lo).div_ceil(dilation);
        lo.min(kh)..hi.min(kh)
    }
}

/// Row tables of the indexed products, per thread; they only grow.
struct Tables {
    a: Vec<usize>,
    b: Vec<usize>,
    taps: Vec<usize>,
}

thread_local! {
    static TABLES: RefCell<Tables> = const {
        RefCell::new(Tables { a: Vec::new(), b: Vec::new(), taps: Vec::new() })
    };
}

fn with_tables<R>(f: impl FnOnce(&mut Tables) -> R) -> R {
    TABLES.with(|t| match t.try_borrow_mut() {
        Ok(mut t) => f(&mut t),
        // Unreachable (the kernels never nest), but a fresh table is correct.
        Err(_) => f(&mut Tables {
            a: Vec::new(),
            b: Vec::new(),
            taps: Vec::new(),
        }),
    })
}

/// Gives this thread's tables room for the forward product of `p` (a
/// worker's first part of a split `predict` must not allocate them).
pub(super) fn reserve_tables(p: &Plan) {
    with_tables(|t| {
        t.a.reserve(p.og.saturating_sub(t.a.len()));
        t.b.reserve(p.taps.saturating_sub(t.b.len()));
    });
}

/// Whether this thread's tables have the room [`reserve_tables`] gives.
pub(super) fn tables_ready(p: &Plan) -> bool {
    with_tables(|t| t.a.capacity() >= p.og && t.b.capacity() >= p.taps)
}

/// Forward: see [`super::conv2d_then`]; slices already checked.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d(
    g: &Conv2d,
    p: &Plan,
    b: usize,
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    scratch: &mut [f32],
    epilogue: &dyn Fn(usize, &mut [f32]),
) {
    let (xp, rest) = scratch.split_at_mut(p.xp_len(g));
    let cbuf = &mut rest[..p.og * p.q];
    let padded = Padded::input(g, p);
    // No kernel rows skipped: with one channel per group the taps are
    // ordered kernel row first and could be, but for LeNet's first layer
    // (25 taps a tile) the per-block range cost more instructions than the
    // 4% of taps it skipped (83.1 M → 86.2 M in a W3 step's callgrind).
    with_tables(|t| {
        t.a.clear();
        t.a.extend((0..p.og).map(|i| i * p.taps));
        offsets(g, p.cg, p.hp, p.wp, &mut t.b);
        for n in 0..b {
            for gi in 0..g.groups {
                let wg = &w[gi * p.og * p.taps..][..p.og * p.taps];
                let (xs, ys) = (&x[g.in_range(n, gi)], &mut y[g.out_range(n, gi)]);
                padded.product(wg, t, xs, xp, cbuf, ys, n == 0 && gi == 0, None);
            }
            let per = g.o * p.oh * p.ow;
            epilogue(n * per, &mut y[n * per..][..per]);
        }
    });
}

/// Input gradient: see [`super::conv2d_grad_input`]; slices already checked.
pub(super) fn conv2d_grad_input(
    g: &Conv2d,
    p: &Plan,
    b: usize,
    dx: &mut [f32],
    dy: &[f32],
    w: &[f32],
    scratch: &mut [f32],
) {
    let (kh, kw) = (g.kh, g.kw);
    let flipped_len = p.cg * p.og * kh * kw;
    let (wt, rest) = scratch.split_at_mut(flipped_len);
    let (dyp, rest) = rest.split_at_mut(p.dyp_len(g));
    let dxbuf = &mut rest[..p.cg * p.q2];
    let padded = Padded::output_grad(g, p);
    let row_len = p.og * kh * kw;
    // Taps ordered (ki', o, kj'), kernel row first, so that the output rows
    // near the top and bottom skip the kernel rows that read only the zero
    // border of the padded dY (LeNet's second layer pads 10 rows to 18: 29%
    // of the full correlation's taps multiply zero rows).
    let rows = Some((p.og * kw, kh, g.dilation[0]));
    with_tables(|t| {
        t.a.clear();
        t.a.extend((0..p.cg).map(|i| i * row_len));
        t.b.clear();
        for ki in 0..kh {
            for o in 0..p.og {
                for kj in 0..kw {
                    t.b.push(o * p.hd * p.wd + ki * g.dilation[0] * p.wd + kj * g.dilation[1]);
                }
            }
        }
        for gi in 0..g.groups {
            // wt[ci, (ki', o, kj')] = w[o, ci, KH-1-ki', KW-1-kj'].
            let wg = &w[gi * p.og * p.taps..][..p.og * p.taps];
            for ci in 0..p.cg {
                for ki in 0..kh {
                    for o in 0..p.og {
                        for kj in 0..kw {
                            wt[ci * row_len + (ki * p.og + o) * kw + kj] =
                                wg[((o * p.cg + ci) * kh + kh - 1 - ki) * kw + kw - 1 - kj];
                        }
                    }
                }
            }
            for n in 0..b {
                let (dys, dxs) = (&dy[g.out_range(n, gi)], &mut dx[g.in_range(n, gi)]);
                padded.product(wt, t, dys, dyp, dxbuf, dxs, n == 0 && gi == 0, rows);
            }
        }
    });
}

/// Weight gradient: see [`super::conv2d_grad_weight`]; slices already
/// checked, `b > 0`.
pub(super) fn conv2d_grad_weight(
    g: &Conv2d,
    p: &Plan,
    b: usize,
    dw: &mut [f32],
    x: &[f32],
    dy: &[f32],
    scratch: &mut [f32],
) {
    if p.channels_as_rows() {
        return grad_weight_by_channels(g, p, b, dw, x, dy, scratch);
    }
    let (xp, rest) = scratch.split_at_mut(p.xp_len(g));
    let (panel, rest) = rest.split_at_mut(p.panels() * p.q * INDEXED_BLOCK);
    let dwt = &mut rest[..p.taps * p.og];
    let ohw = p.oh * p.ow;
    let padded = Padded::input(g, p);
    with_tables(|t| {
        offsets(g, p.cg, p.hp, p.wp, &mut t.a);
        t.b.clear();
        t.b.extend((0..p.q).map(|q| q * INDEXED_BLOCK));
        for gi in 0..g.groups {
            for n in 0..b {
                let xs = &x[g.in_range(n, gi)];
                let first = n == 0 && gi == 0;
                padded.pad(xs, xp, first);
                // panel[(blk · q + oy·Wp + ox) · 16 + o % 16] = dY[o, oy, ox],
                // zero in the dropped columns and past the last channel
                // (written by no sample, so zeroed once).
                let dys = &dy[g.out_range(n, gi)];
                if first {
                    panel.fill(0.0);
                }
                for (o, src) in dys.chunks_exact(ohw).enumerate() {
                    let (blk, lane) = (o / INDEXED_BLOCK, o % INDEXED_BLOCK);
                    let base = blk * p.q;
                    for (oy, row) in src.chunks_exact(p.ow).enumerate() {
                        let dst = &mut panel[(base + oy * p.wp) * INDEXED_BLOCK + lane..];
                        for (d, &v) in dst.iter_mut().step_by(INDEXED_BLOCK).zip(row) {
                            *d = v;
                        }
                    }
                }
                let operands = Indexed {
                    a: xp,
                    a_rows: &t.a,
                    b: panel,
                    b_rows: &t.b,
                    b_block: p.q * INDEXED_BLOCK,
                    depth: None,
                };
                let beta = if n == 0 { 0.0 } else { 1.0 };
                gemm::indexed(p.og, &operands, beta, dwt, p.og);
            }
            let dwg = &mut dw[gi * p.og * p.taps..][..p.og * p.taps];
            for (o, row) in dwg.chunks_exact_mut(p.taps).enumerate() {
                for (tap, v) in row.iter_mut().enumerate() {
                    *v = dwt[tap * p.og + o];
                }
            }
        }
    });
}

/// The weight gradient with output channels as rows:
/// `dW[o, tap] = Σ_n Σ_q dY[o, q] · Xp[off(tap) + q]`, A = `dY` on
/// padded-width rows (zeros in the dropped columns), B = the receptive
/// fields packed 16 taps per panel (a transpose of 16 image runs).
fn grad_weight_by_channels(
    g: &Conv2d,
    p: &Plan,
    b: usize,
    dw: &mut [f32],
    x: &[f32],
    dy: &[f32],
    scratch: &mut [f32],
) {
    let (xp, rest) = scratch.split_at_mut(p.xp_len(g));
    let (dyq, rest) = rest.split_at_mut(p.og * p.q);
    let tap_panels = p.taps.div_ceil(INDEXED_BLOCK);
    let (panels, rest) = rest.split_at_mut(tap_panels * p.q * INDEXED_BLOCK);
    let zeros = &mut rest[..p.q];
    zeros.fill(0.0);
    // Only the kept columns are written below: the dropped ones stay zero.
    dyq.fill(0.0);
    let ohw = p.oh * p.ow;
    let padded = Padded::input(g, p);
    with_tables(|t| {
        offsets(g, p.cg, p.hp, p.wp, &mut t.taps);
        t.a.clear();
        t.a.extend((0..p.og).map(|o| o * p.q));
        t.b.clear();
        t.b.extend((0..p.q).map(|q| q * INDEXED_BLOCK));
        for gi in 0..g.groups {
            let dwg = &mut dw[gi * p.og * p.taps..][..p.og * p.taps];
            for n in 0..b {
                let xs = &x[g.in_range(n, gi)];
                padded.pad(xs, xp, n == 0 && gi == 0);
                let dys = &dy[g.out_range(n, gi)];
                for (src, dst) in dys.chunks_exact(ohw).zip(dyq.chunks_exact_mut(p.q)) {
                    for (row, out) in src.chunks_exact(p.ow).zip(dst.chunks_exact_mut(p.wp)) {
                        out[..p.ow].copy_from_slice(row);
                    }
                }
                for (pb, panel) in panels.chunks_exact_mut(p.q * INDEXED_BLOCK).enumerate() {
                    let lines: [&[f32]; INDEXED_BLOCK] = std::array::from_fn(|l| {
                        t.taps
                            .get(pb * INDEXED_BLOCK + l)
                            .map_or(&zeros[..], |&off| &xp[off..][..p.q])
                    });
                    gemm::pack_panel(panel, &lines, p.q);
                }
                let operands = Indexed {
                    a: dyq,
                    a_rows: &t.a,
                    b: panels,
                    b_rows: &t.b,
                    b_block: p.q * INDEXED_BLOCK,
                    depth: None,
                };
                let beta = if n == 0 { 0.0 } else { 1.0 };
                gemm::indexed(p.taps, &operands, beta, dwg, p.taps);
            }
        }
    });
}
