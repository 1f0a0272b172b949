//! Int8 NCHW convolution: each sample's receptive fields are copied into
//! u8 patch rows (`im2row`, padding filled with the zero point, i.e. the
//! real 0), which the int8 GEMM multiplies by the per-group packed weights;
//! the epilogue writes the NCHW output directly (strided), so there is no
//! transpose pass.
//!
//! The patch matrix is `[OH · OW, C/groups · KH · KW]` (output pixels ×
//! taps), the transpose of the f32 kernels' column matrix: the GEMM's
//! per-column weight scales then are the per-output-channel scales.
//!
//! Between int8 steps the bytes may be held channels-last (NHWC,
//! [`Channels::Last`]): then the GEMM's rows of output channels are stored
//! whole (one contiguous store per pixel instead of one byte per channel
//! plane), and a kernel row of the next convolution's patch is one run of
//! `KW · C/groups` bytes instead of `C/groups` runs of `KW` bytes. The
//! weights are packed with their taps in the matching `(kh, kw, c)` order.
//!
//! Layers with one input channel (and stride and dilation 1) skip the
//! patches: `direct.rs` computes them from the padded input with output
//! pixels in the vector lanes, bit-identically.

use super::direct::{self, DirectWeights, Lanes};
use super::gemm::{check_operand, check_weights, max_threads, run, Implicit, Problem};
use super::kernel::Isa;
use super::kernel::Seg;
use super::{ActQuant, Output, PackedWeights, QuantError, QuantWeights, WeightLayout};
use crate::gemm::Parallelism;
use nnc_spec::Conv2d;

/// Where a tensor of u8 activations keeps its channels, per sample:
/// `[C, H, W]` (`First`, NCHW, the f32 kernels' layout) or `[H, W, C]`
/// (`Last`, NHWC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channels {
    /// NCHW.
    #[default]
    First,
    /// NHWC.
    Last,
}

/// A convolution's quantized weights packed for [`conv2d`]: one
/// [`PackedWeights`] per group (its `O / groups` output channels by
/// `C/groups · KH · KW` taps, in the order of the input layout the weights
/// were packed for), built once.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedConv {
    geometry: Conv2d,
    input: Channels,
    groups: Vec<PackedWeights>,
    /// The direct kernel's weights, for the layers it computes.
    direct: Option<DirectWeights>,
    /// Channels-last inputs of one group (dilation 1 along the width): the
    /// weights with each kernel row's `KW · C` taps padded to whole quads
    /// by zeros, for the implicit GEMM, which reads the patch rows in place
    /// from the padded input (no patch matrix). Boxed, so that a
    /// `PackedConv` held beside dense weights in an enum stays small.
    implicit: Option<Box<PackedWeights>>,
}

impl PackedConv {
    /// Packs weights quantized with [`QuantWeights::conv`] (or read back
    /// with layout [`WeightLayout::OutIn`]) for geometry `g`. Fails if the
    /// geometry is inconsistent or the weights are not `[O, C/groups · KH ·
    /// KW]`.
    pub fn new(g: &Conv2d, q: &QuantWeights) -> Result<Self, QuantError> {
        PackedConv::for_input(g, q, Channels::First)
    }

    /// [`PackedConv::new`] for inputs laid out as `input` says (with
    /// [`Channels::Last`], the taps are packed in `(kh, kw, c)` order).
    pub fn for_input(g: &Conv2d, q: &QuantWeights, input: Channels) -> Result<Self, QuantError> {
        check_geometry(g)?;
        if q.layout() != WeightLayout::OutIn || q.channels() != g.o || q.depth() != g.k() {
            return Err(QuantError::Geometry(format!(
                "weights are {:?} with {} channels of depth {}, the convolution needs \
                 OutIn with {} channels of depth {}",
                q.layout(),
                q.channels(),
                q.depth(),
                g.o,
                g.k()
            )));
        }
        let og = g.og();
        // Tap k' of a channels-last patch row is (kh, kw, c); the weights
        // store (c, kh, kw).
        let order: Option<Vec<usize>> = (input == Channels::Last).then(|| {
            let (cg, kh, kw) = (g.cg(), g.kh, g.kw);
            (0..g.k())
                .map(|t| {
                    let (ki, kj, c) = (t / (kw * cg), t / cg % kw, t % cg);
                    (c * kh + ki) * kw + kj
                })
                .collect()
        });
        let groups = (0..g.groups)
            .map(|gi| PackedWeights::pack(q, gi * og..(gi + 1) * og, order.as_deref()))
            .collect();
        let implicit =
            (input == Channels::Last && g.groups == 1 && g.dilation[1] == 1).then(|| {
                let (run, kw, kh) = (g.kw * g.c, g.kw, g.kh);
                let width = run.div_ceil(4) * 4;
                let taps: Vec<Option<usize>> = (0..kh * width)
                    .map(|t| {
                        let (ki, r) = (t / width, t % width);
                        (r < run).then(|| {
                            let (kj, c) = (r / g.c, r % g.c);
                            (c * kh + ki) * kw + kj
                        })
                    })
                    .collect();
                Box::new(PackedWeights::pack_taps(q, 0..g.o, &taps))
            });
        Ok(PackedConv {
            geometry: *g,
            input,
            groups,
            direct: DirectWeights::new(g, q),
            implicit,
        })
    }

    /// The input layout the weights were packed for.
    pub fn input(&self) -> Channels {
        self.input
    }

    /// Quantizes (per output channel) and packs the f32 weight
    /// `w[O, C/groups, KH, KW]` of geometry `g`.
    pub fn from_f32(g: &Conv2d, w: &[f32]) -> Result<Self, QuantError> {
        check_geometry(g)?;
        PackedConv::new(g, &QuantWeights::conv(w, g.o)?)
    }

    /// The geometry the weights were packed for.
    pub fn geometry(&self) -> &Conv2d {
        &self.geometry
    }

    /// Whether the direct kernel (`direct.rs`) computes this convolution on
    /// the x86 families.
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether the implicit GEMM (patch rows read in place) computes this
    /// convolution (on inputs that take no direct kernel).
    #[cfg(test)]
    pub(super) fn is_implicit(&self) -> bool {
        self.implicit.is_some()
    }

    /// The packed weights of group `gi`.
    pub fn group(&self, gi: usize) -> &PackedWeights {
        &self.groups[gi]
    }
}

/// Fails unless the channel counts split into the groups.
fn check_geometry(g: &Conv2d) -> Result<(), QuantError> {
    if g.groups == 0 || g.c % g.groups != 0 || g.o % g.groups != 0 {
        return Err(QuantError::Geometry(format!(
            "{} input and {} output channels do not split into {} groups",
            g.c, g.o, g.groups
        )));
    }
    Ok(())
}

/// Bytes of scratch [`conv2d`] needs: one group's patch matrix,
/// `OH · OW · C/groups · KH · KW`, and one group's input with its padding,
/// `C/groups · (H + 2·PH) · (W + 2·PW)`.
/// (Each with 16 bytes more: the slack of the patch copy's wide moves.)
pub fn conv_scratch_len(g: &Conv2d) -> usize {
    patches_len(g) + padded_len(g)
}

/// Bytes past the end of the patches and the padded input that
/// [`im2row_padded`]'s 8- and 16-byte moves may touch.
const SLACK: usize = 16;

fn patches_len(g: &Conv2d) -> usize {
    let (oh, ow) = g.out_hw();
    oh * ow * g.k() + SLACK
}

fn padded_len(g: &Conv2d) -> usize {
    g.cg() * (g.h + 2 * g.padding[0]) * (g.w + 2 * g.padding[1]) + SLACK
}

/// The patch matrix of one group of one sample: `x` is its `[C/groups, H,
/// W]` bytes, `rows` receives `[OH · OW, C/groups · KH · KW]` with taps in
/// the weights' `(c, kh, kw)` order; taps in the padding get `zero_point`
/// (the byte of the real 0).
///
/// # Panics
/// If `x` or `rows` is shorter than that.
pub fn im2row(g: &Conv2d, x: &[u8], zero_point: u8, rows: &mut [u8]) {
    let (oh, ow) = g.out_hw();
    assert!(rows.len() >= oh * ow * g.k(), "im2row: rows too short");
    let mut padded = vec![0; padded_len(g)];
    im2row_padded(g, x, zero_point, &mut padded, rows);
}

/// [`im2row`] through `padded` (at least `C/groups · (H + 2·PH) · (W +
/// 2·PW)` bytes): the input is first copied inside a border of zero
/// points, so every tap reads in bounds and a kernel row (dilation 1) is
/// one run of `KW` bytes: no per-tap edge tests. With [`SLACK`] bytes
/// more in both buffers, kernel rows of up to 8 bytes move as one 8-byte
/// load and store each.
fn im2row_padded(g: &Conv2d, x: &[u8], zero_point: u8, padded: &mut [u8], rows: &mut [u8]) {
    let (oh, ow) = g.out_hw();
    let (k, cg) = (g.k(), g.cg());
    let ([sh, sw], [dh, dw]) = (g.stride, g.dilation);
    let wp = g.w + 2 * g.padding[1];
    let plane = (g.h + 2 * g.padding[0]) * wp;
    let (npad, nrows) = (cg * plane, oh * ow * k);
    pad_input(g, x, zero_point, padded);
    let (kh, kw) = (g.kh, g.kw);
    let wide = dw == 1
        && (1..=8).contains(&kw)
        && padded.len() >= npad + SLACK
        && rows.len() >= nrows + SLACK;
    if wide {
        // In increasing order: the bytes a store writes past its kernel row
        // are overwritten by the next store (or land in the slack).
        let (src0, dst0) = (padded.as_ptr(), rows.as_mut_ptr());
        let mut d = 0;
        for oy in 0..oh {
            for ox in 0..ow {
                let origin = oy * sh * wp + ox * sw;
                for c in 0..cg {
                    let mut src = c * plane + origin;
                    for _ in 0..kh {
                        // SAFETY: `src` is a kernel row's first tap inside
                        // the padded input, so src + 8 ≤ npad + SLACK ≤
                        // padded.len(); d + kw ≤ nrows, so d + 8 ≤ nrows +
                        // SLACK ≤ rows.len() (checked for `wide`).
                        unsafe {
                            let v = src0.add(src).cast::<[u8; 8]>().read_unaligned();
                            dst0.add(d).cast::<[u8; 8]>().write_unaligned(v);
                        }
                        d += kw;
                        src += dh * wp;
                    }
                }
            }
        }
        return;
    }
    let padded = &padded[..npad];
    for (pix, row) in rows[..nrows].chunks_exact_mut(k.max(1)).enumerate() {
        let (oy, ox) = (pix / ow, pix % ow);
        let origin = oy * sh * wp + ox * sw;
        for (c, c_taps) in row.chunks_exact_mut(kh * kw).enumerate() {
            for (ki, dst) in c_taps.chunks_exact_mut(kw).enumerate() {
                let src = &padded[c * plane + origin + ki * dh * wp..];
                if dw == 1 {
                    copy_small(dst, &src[..kw]);
                } else {
                    for (kj, d) in dst.iter_mut().enumerate() {
                        *d = src[kj * dw];
                    }
                }
            }
        }
    }
}

/// Copies one group's `[C/groups, H, W]` bytes `x` into `padded` inside a
/// border of `zero_point`s: `[C/groups, H + 2·PH, W + 2·PW]`.
fn pad_input(g: &Conv2d, x: &[u8], zero_point: u8, padded: &mut [u8]) {
    let (h, w, cg) = (g.h, g.w, g.cg());
    let ([ph, pw], wp) = (g.padding, g.w + 2 * g.padding[1]);
    let plane = (h + 2 * ph) * wp;
    let npad = cg * plane;
    let x = &x[..cg * h * w];
    if ph > 0 || pw > 0 {
        padded[..npad].fill(zero_point);
    }
    for (pc, xc) in padded[..npad]
        .chunks_exact_mut(plane)
        .zip(x.chunks_exact(h * w))
    {
        for (prow, xr) in pc[ph * wp..].chunks_exact_mut(wp).zip(xc.chunks_exact(w)) {
            prow[pw..pw + w].copy_from_slice(xr);
        }
    }
}

/// `dst.copy_from_slice(src)` for the few bytes of one kernel row: the
/// common widths as fixed-size copies (a copy of variable length is a
/// `memcpy` call, several times the cost of moving 3 or 5 bytes).
#[inline(always)]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    fn fixed<const N: usize>(dst: &mut [u8], src: &[u8]) {
        let (d, s): (&mut [u8; N], &[u8; N]) = (
            dst.try_into().expect("same length"),
            src.try_into().expect("same length"),
        );
        *d = *s;
    }
    match dst.len() {
        3 => fixed::<3>(dst, src),
        5 => fixed::<5>(dst, src),
        7 => fixed::<7>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// The patch matrix of group `gi` of one channels-last sample `x` (`[H, W,
/// C]`): `rows` receives `[OH · OW, KH · KW · C/groups]` with taps in
/// `(kh, kw, c)` order, the order [`PackedConv::for_input`] packs
/// [`Channels::Last`] weights in. Through `padded` as [`im2row_padded`]
/// (here `(H + 2·PH) · (W + 2·PW) · C/groups` bytes): a kernel row
/// (dilation 1) is one run of `KW · C/groups` bytes, moved 16 bytes at a
/// time when both buffers have [`SLACK`] bytes to spare.
fn im2row_last(
    g: &Conv2d,
    x: &[u8],
    gi: usize,
    zero_point: u8,
    padded: &mut [u8],
    rows: &mut [u8],
) {
    let (oh, ow) = g.out_hw();
    let (h, w, cg, k) = (g.h, g.w, g.cg(), g.k());
    let ([sh, sw], [ph, pw], [dh, dw]) = (g.stride, g.padding, g.dilation);
    let wp = w + 2 * pw;
    let npad = (h + 2 * ph) * wp * cg;
    pad_last(g, x, gi, zero_point, padded);
    // Dilation 1: one run per kernel row; else one per tap.
    let (run, runs) = if dw == 1 { (g.kw * cg, 1) } else { (cg, g.kw) };
    let wide = padded.len() >= npad + SLACK && rows.len() >= oh * ow * k + SLACK;
    if wide && dw == 1 {
        // In increasing order: the bytes a move writes past its run are
        // overwritten by the next run (or land in the slack).
        let (src0, dst0) = (padded.as_ptr(), rows.as_mut_ptr());
        let mut d = 0;
        for oy in 0..oh {
            for ox in 0..ow {
                let origin = (oy * sh * wp + ox * sw) * cg;
                for ki in 0..g.kh {
                    let src = origin + ki * dh * wp * cg;
                    let mut o = 0;
                    while o < run {
                        // SAFETY: the run lies inside the padded input and
                        // the patch row, so its 16-byte moves end at most
                        // 15 bytes past them: inside npad + SLACK and
                        // OH·OW·k + SLACK (checked for `wide`).
                        unsafe {
                            let v = src0.add(src + o).cast::<[u8; 16]>().read_unaligned();
                            dst0.add(d + o).cast::<[u8; 16]>().write_unaligned(v);
                        }
                        o += 16;
                    }
                    d += run;
                }
            }
        }
        return;
    }
    for pix in 0..oh * ow {
        let (oy, ox) = (pix / ow, pix % ow);
        let mut d = pix * k;
        for ki in 0..g.kh {
            let row = ((oy * sh + ki * dh) * wp + ox * sw) * cg;
            for kj in 0..runs {
                let src = row + kj * dw * cg;
                if wide {
                    copy_run(rows, d, padded, src, run);
                } else {
                    rows[d..d + run].copy_from_slice(&padded[src..src + run]);
                }
                d += run;
            }
        }
    }
}

/// Copies group `gi` of one channels-last sample `x` (`[H, W, C]`) into
/// `padded` inside a border of `zero_point`s: `[H + 2·PH, W + 2·PW,
/// C/groups]`.
fn pad_last(g: &Conv2d, x: &[u8], gi: usize, zero_point: u8, padded: &mut [u8]) {
    let (h, w, c, cg) = (g.h, g.w, g.c, g.cg());
    let [ph, pw] = g.padding;
    let wp = w + 2 * pw;
    let npad = (h + 2 * ph) * wp * cg;
    if ph > 0 || pw > 0 {
        padded[..npad].fill(zero_point);
    }
    for (y, xr) in x[..h * w * c].chunks_exact((w * c).max(1)).enumerate() {
        let prow = &mut padded[((y + ph) * wp + pw) * cg..][..w * cg];
        if cg == c {
            prow.copy_from_slice(xr);
        } else {
            for (d, s) in prow.chunks_exact_mut(cg).zip(xr.chunks_exact(c)) {
                d.copy_from_slice(&s[gi * cg..][..cg]);
            }
        }
    }
}

/// Copies `len` bytes from `src[s..]` to `dst[d..]` in 16-byte moves (a
/// copy of variable length is a `memcpy` call): up to 15 bytes past
/// `d + len` receive whatever follows in `src`, which the caller's next
/// run overwrites or its slack absorbs.
#[inline(always)]
fn copy_run(dst: &mut [u8], d: usize, src: &[u8], s: usize, len: usize) {
    let mut o = 0;
    while o < len {
        let v: [u8; 16] = src[s + o..s + o + 16].try_into().expect("16 bytes");
        dst[d + o..d + o + 16].copy_from_slice(&v);
        o += 16;
    }
}

/// `y[b, O, OH, OW] = conv2d(x[b, C, H, W], w[O, C/groups, KH, KW])`
/// (cross-correlation, as [`crate::conv::conv2d`]) on u8 activations
/// quantized with `x_quant` and packed int8 weights, with the epilogue and
/// output format of [`Output`] (bias: one per output channel; `I32` gives
/// the exact accumulators). The output slice holds exactly the NCHW
/// tensor.
///
/// One sample and group at a time: [`im2row`] into `scratch` (at least
/// [`conv_scratch_len`] bytes), then [`qgemm`](super::qgemm)'s kernels
/// over the patches, writing NCHW planes directly. Allocation-free; `par`
/// splits each product as in `qgemm`, bit-identically. The input is read
/// in the layout `w` was packed for ([`PackedConv::input`]; NCHW from
/// [`PackedConv::new`]); [`conv2d_layout`] can also write NHWC.
///
/// Fails, before touching anything, if the slices do not fit the geometry
/// and batch, or the weights were packed for another geometry.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    par: Parallelism,
    g: &Conv2d,
    batch: usize,
    x: &[u8],
    x_quant: ActQuant,
    w: &PackedConv,
    out: Output<'_>,
    scratch: &mut [u8],
) -> Result<(), QuantError> {
    conv2d_layout(par, g, batch, x, x_quant, w, out, Channels::First, scratch)
}

/// [`conv2d`] writing its output in layout `out_layout` (with
/// [`Channels::Last`], `[b, OH, OW, O]`: each pixel's output channels are
/// one contiguous store).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_layout(
    par: Parallelism,
    g: &Conv2d,
    batch: usize,
    x: &[u8],
    x_quant: ActQuant,
    w: &PackedConv,
    out: Output<'_>,
    out_layout: Channels,
    scratch: &mut [u8],
) -> Result<(), QuantError> {
    let isa = Isa::detect();
    conv2d_with(isa, par, g, batch, x, x_quant, w, out, out_layout, scratch)
}

/// [`conv2d_layout`] with an explicit kernel family (tests run every one).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_with(
    isa: Isa,
    par: Parallelism,
    g: &Conv2d,
    batch: usize,
    x: &[u8],
    x_quant: ActQuant,
    w: &PackedConv,
    mut out: Output<'_>,
    out_layout: Channels,
    scratch: &mut [u8],
) -> Result<(), QuantError> {
    check_geometry(g)?;
    if w.geometry != *g {
        return Err(QuantError::Geometry(format!(
            "weights packed for {:?}, called with {g:?}",
            w.geometry
        )));
    }
    let (oh, ow) = g.out_hw();
    let (k, ohw, og) = (g.k(), oh * ow, g.og());
    let lens = [
        ("conv2d input", batch * g.c * g.h * g.w, x.len()),
        ("conv2d output", batch * g.o * ohw, out.len()),
    ];
    for (what, expected, found) in lens {
        if expected != found {
            return Err(QuantError::Length {
                what,
                expected,
                found,
            });
        }
    }
    let scratch_len = conv_scratch_len(g);
    check_operand("conv2d scratch", scratch.len(), 1, scratch_len, scratch_len)?;
    // The bias covers all groups; each group's product checks its share.
    if let Some(b) = out.bias().filter(|b| b.len() != g.o) {
        return Err(QuantError::Length {
            what: "bias",
            expected: g.o,
            found: b.len(),
        });
    }
    for wg in w.groups.iter().chain(w.implicit.as_deref()) {
        check_weights(wg, None)?;
    }
    let (patches, padded) = scratch[..scratch_len].split_at_mut(patches_len(g));
    // NCHW: output pixel i of channel j of a group's plane is at
    // i + j · OH·OW. NHWC: at i · O + j.
    let sink = match out_layout {
        Channels::First => out.sink(1, ohw),
        Channels::Last => out.sink(g.o, 1),
    };
    let threads = max_threads(par);
    let zp = x_quant.zero_point();
    if let Some(d) = w.direct.as_ref().filter(|_| DirectWeights::runs_on(isa)) {
        // One input channel: no patches (one sample at a time: its product
        // is far below the work that pays for a split over threads).
        let lanes = Lanes::new(d, &w.groups[0], i32::from(zp), x_quant.scale(), sink.bias);
        for n in 0..batch {
            pad_input(g, &x[g.in_range(n, 0)], zp, padded);
            let start = match out_layout {
                Channels::First => g.out_range(n, 0).start,
                Channels::Last => n * ohw * g.o,
            };
            // SAFETY: the sample's first output element lies inside the
            // output (its length was checked), and its OH·OW × O outputs
            // too, which this call borrows mutably; `padded` holds the
            // padded input and SLACK bytes more; `isa` is an x86 family
            // detected (or one of `Isa::all()` in tests).
            unsafe { direct::sample(isa, d, &lanes, g, padded, &sink.shifted(start, 0)) };
        }
        return Ok(());
    }
    if let Some(wi) = w.implicit.as_deref() {
        // Channels-last, one group: the GEMM reads each patch row's kernel
        // rows (runs of KW · C bytes, padded to whole quads by taps of
        // weight 0) in place from the padded input.
        let (wp, c) = (g.w + 2 * g.padding[1], g.c);
        let seg = Seg {
            quads: (g.kw * c).div_ceil(4),
            stride: g.dilation[0] * wp * c,
        };
        let implicit = Implicit {
            ow,
            row_step: g.stride[0] * wp * c,
            px_step: g.stride[1] * c,
            seg,
        };
        let sample = g.c * g.h * g.w;
        for n in 0..batch {
            pad_last(g, &x[n * sample..][..sample], 0, zp, padded);
            let start = match out_layout {
                Channels::First => g.out_range(n, 0).start,
                Channels::Last => n * ohw * g.o,
            };
            let p = Problem {
                m: ohw,
                a: padded,
                lda: 0,
                zp: i32::from(zp),
                a_scale: x_quant.scale(),
                w: wi,
                // SAFETY: the sample's first output element lies inside
                // the output (its length was checked).
                sink: unsafe { sink.shifted(start, 0) },
                implicit: Some(implicit),
            };
            // SAFETY: every patch row's runs (each at most 3 bytes past its
            // KW · C taps) lie inside the padded input and its SLACK; the
            // sample's OH·OW × O outputs lie inside `out` (NHWC pixels or
            // NCHW planes), which this call borrows mutably; `isa` is
            // detected (or one of `Isa::all()` in tests).
            unsafe { run(isa, &p, threads) };
        }
        return Ok(());
    }
    for n in 0..batch {
        for (gi, wg) in w.groups.iter().enumerate() {
            match w.input {
                Channels::First => im2row_padded(g, &x[g.in_range(n, gi)], zp, padded, patches),
                Channels::Last => {
                    let sample = g.c * g.h * g.w;
                    im2row_last(g, &x[n * sample..][..sample], gi, zp, padded, patches)
                }
            }
            let start = match out_layout {
                Channels::First => g.out_range(n, gi).start,
                Channels::Last => n * ohw * g.o + gi * og,
            };
            let p = Problem {
                implicit: None,
                m: ohw,
                a: patches,
                lda: k,
                zp: i32::from(zp),
                a_scale: x_quant.scale(),
                w: wg,
                // SAFETY: the group's first output element lies inside the
                // output (its length was checked) and channel gi · og
                // inside the bias.
                sink: unsafe { sink.shifted(start, gi * og) },
            };
            // SAFETY: the patches hold OH·OW rows of k bytes; the group's
            // OH·OW × og outputs lie in its NCHW planes (or NHWC pixels),
            // inside `out`, which this call borrows mutably; `isa` is
            // detected (or one of `Isa::all()` in tests).
            unsafe { run(isa, &p, threads) };
        }
    }
    Ok(())
}
