//! A direct int8 convolution for layers with one input channel (LeNet's
//! first layer: 1 channel, 5 × 5, 6 outputs), with output pixels and
//! channels in the vector lanes and no patch matrix.
//!
//! Through the GEMM (`conv.rs`) such a layer is mostly overhead: each
//! output pixel's 25 taps are copied into a patch row (`im2row`), its 6
//! channels fill 6 of a tile's 16 lanes, and the epilogue finishes all 16
//! per pixel. Here the lanes of `R` registers of 8 i32 hold `P`
//! consecutive output pixels × `O` channels in channels-last order
//! (`P · O = 8 · R`, the least such: 6 channels give 4 pixels in 3
//! registers), so
//! * the multiply: for kernel row `ki` and depth-quad `j` (taps `4j..4j+4`
//!   of the row, weights past `KW` zero), lane `(p, c)` needs the input
//!   bytes `x[oy + ki][ox + p + 4j..][..4]` of the padded input: one
//!   16-byte load of the row, broadcast to both halves, and one `vpshufb`
//!   per register build them; the weights are per-lane constants packed
//!   once ([`DirectWeights`]);
//! * the epilogue works on full registers, and the finished values come
//!   out in channels-last order: one contiguous store of `8 · R` bytes per
//!   group of pixels.
//!
//! Exactness: the same exact i32 sums as the GEMM (taps past `KW` have
//! weight 0, the padding holds the zero point, and the zero point is
//! folded out with the same column sums), then the GEMM's epilogue
//! arithmetic (`kernel/avx2.rs`' vector form of `epilogue.rs`), so the
//! outputs are bit-identical to it. The x86 families run it (AVX2: `vpmaddubsw` +
//! `vpmaddwd`; VNNI: `vpdpbusd`); the portable family keeps the GEMM.

use super::epilogue::Sink;
use super::kernel::Isa;
use super::{PackedWeights, QuantWeights};
use nnc_spec::Conv2d;

/// Lanes of one register of accumulators.
const LANES: usize = 8;
/// The most registers of accumulators per group of pixels.
const MAX_REGS: usize = 4;

/// A one-input-channel convolution's weights as the direct kernel reads
/// them, and the lane layout they imply.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct DirectWeights {
    /// Output channels.
    o: usize,
    /// Registers of accumulators per group of pixels (`R`).
    regs: usize,
    /// Output pixels per group (`P`).
    pixels: usize,
    /// Depth-quads per kernel row: `⌈KW / 4⌉`, 1 or 2.
    quads: usize,
    /// Per (kernel row, quad, register): each lane's four weight bytes.
    w: Vec<[i8; 4 * LANES]>,
    /// Per (quad, register): the `vpshufb` control giving each lane its
    /// pixel's four input bytes out of the 16 loaded from the row.
    shuffle: Vec<[u8; 4 * LANES]>,
}

/// Lane `i` (`r · 8 + l`) of a group holds pixel `i / o`, channel `i % o`.
fn lane(o: usize, i: usize) -> (usize, usize) {
    (i / o, i % o)
}

impl DirectWeights {
    /// The packed weights of `g` (quantized as `q`, `[O, KH · KW]`) if the
    /// direct kernel computes it: one input channel and group, stride and
    /// dilation 1, kernel rows of at most 8 taps, and at most [`MAX_REGS`]
    /// registers per group of pixels (`lcm(O, 8) ≤ 32`: 1, 2, 3, 4, 6, 8,
    /// 12, 16 or 32 channels).
    pub(super) fn new(g: &Conv2d, q: &QuantWeights) -> Option<Self> {
        let o = g.o;
        let simple = g.c == 1
            && g.groups == 1
            && g.stride == [1, 1]
            && g.dilation == [1, 1]
            && (1..=8).contains(&g.kw)
            && g.kh > 0
            && o > 0
            && q.channels() == o
            && q.depth() == g.kh * g.kw;
        if !simple {
            return None;
        }
        let all = lcm(o, LANES);
        let regs = all / LANES;
        if regs > MAX_REGS {
            return None;
        }
        let (pixels, quads) = (all / o, g.kw.div_ceil(4));
        let mut w = Vec::with_capacity(g.kh * quads * regs);
        for ki in 0..g.kh {
            for j in 0..quads {
                for r in 0..regs {
                    let mut v = [0i8; 4 * LANES];
                    for l in 0..LANES {
                        let (_, c) = lane(o, r * LANES + l);
                        for t in 0..4 {
                            let kj = 4 * j + t;
                            if kj < g.kw {
                                v[4 * l + t] = q.get(ki * g.kw + kj, c);
                            }
                        }
                    }
                    w.push(v);
                }
            }
        }
        // Byte `p + 4j + t` of the 16 loaded from the row at the group's
        // first pixel: at most 7 + 4 + 3 = 14, inside the load.
        let mut shuffle = Vec::with_capacity(quads * regs);
        for j in 0..quads {
            for r in 0..regs {
                let mut s = [0u8; 4 * LANES];
                for l in 0..LANES {
                    let (p, _) = lane(o, r * LANES + l);
                    for t in 0..4 {
                        s[4 * l + t] = (p + 4 * j + t) as u8;
                    }
                }
                shuffle.push(s);
            }
        }
        Some(DirectWeights {
            o,
            regs,
            pixels,
            quads,
            w,
            shuffle,
        })
    }

    /// Whether family `isa` runs the direct kernel (else the GEMM does).
    pub(super) fn runs_on(isa: Isa) -> bool {
        isa != Isa::Portable
    }
}

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// The epilogue's per-lane constants of one call, laid out as the lanes:
/// `zp · Σ_k q[k, c]`, `scale_a · s[c]` and `bias[c]` of each lane's
/// channel `c` (the GEMM's `PanelParams`, per lane).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct Lanes {
    zc: [[i32; LANES]; MAX_REGS],
    mult: [[f32; LANES]; MAX_REGS],
    bias: [[f32; LANES]; MAX_REGS],
}

impl Lanes {
    /// The constants for weights `d` (packed for the GEMM as `w`, whose
    /// column sums and scales they use), activations with zero point `zp`
    /// and scale `a_scale`, and `bias` (one per channel, checked).
    pub(super) fn new(
        d: &DirectWeights,
        w: &PackedWeights,
        zp: i32,
        a_scale: f32,
        bias: Option<&[f32]>,
    ) -> Lanes {
        let (sums, scales) = (w.colsums(), w.scales());
        let at = |r: usize, l: usize| lane(d.o, r * LANES + l).1;
        Lanes {
            zc: std::array::from_fn(|r| std::array::from_fn(|l| zp * sums[at(r, l)])),
            mult: std::array::from_fn(|r| std::array::from_fn(|l| a_scale * scales[at(r, l)])),
            bias: std::array::from_fn(|r| {
                std::array::from_fn(|l| bias.map_or(0.0, |b| b[at(r, l)]))
            }),
        }
    }
}

/// One sample of the convolution: `padded` is its input inside a border of
/// zero points (`[H + 2·PH, W + 2·PW]`, then at least 16 bytes of slack),
/// the output goes to `sink` (its element `(pixel, channel)` at `pixel · rs
/// + channel · cs`).
///
/// # Safety
/// `isa` must be an x86 family the CPU supports; `padded` must be as
/// described for `g`, and the sink's `OH · OW` pixels × `O` channels must
/// lie inside its destination and belong to this call alone.
pub(super) unsafe fn sample(
    isa: Isa,
    d: &DirectWeights,
    k: &Lanes,
    g: &Conv2d,
    padded: &[u8],
    sink: &Sink<'_>,
) {
    let wp = g.w + 2 * g.padding[1];
    let hp = g.h + 2 * g.padding[0];
    assert!(
        padded.len() >= hp * wp + 16,
        "nnc internal error: the padded input is too short"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded contract.
    unsafe {
        x86::sample(isa, d, k, g, padded, sink)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (d, k, sink);
        unreachable!("the direct kernel runs on x86 families only ({isa:?})");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::epilogue::{Kind, Sink};
    use super::super::kernel::avx2::{bytes16, dpbusd, quantize8, real8, EVEX, NO_VNNI, VEX};
    use super::super::kernel::Isa;
    use super::{DirectWeights, Lanes, LANES};
    use nnc_spec::Conv2d;

    /// # Safety
    /// As for [`super::sample`].
    pub(super) unsafe fn sample(
        isa: Isa,
        d: &DirectWeights,
        k: &Lanes,
        g: &Conv2d,
        padded: &[u8],
        sink: &Sink<'_>,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match isa {
                Isa::Avx2 => shape::<NO_VNNI>(d, k, g, padded, sink),
                Isa::AvxVnni => shape::<VEX>(d, k, g, padded, sink),
                Isa::Avx512Vnni => shape::<EVEX>(d, k, g, padded, sink),
                Isa::Portable => unreachable!("the portable family runs the GEMM"),
            }
        }
    }

    /// Dispatches on the registers per group and the quads per kernel row.
    ///
    /// # Safety
    /// As for [`super::sample`], the CPU supporting family `VNNI`.
    unsafe fn shape<const VNNI: u8>(
        d: &DirectWeights,
        k: &Lanes,
        g: &Conv2d,
        padded: &[u8],
        sink: &Sink<'_>,
    ) {
        let p = padded.as_ptr();
        // SAFETY: forwarded contract.
        unsafe {
            match (d.regs, d.quads) {
                (1, 1) => rows::<1, 1, VNNI>(d, k, g, p, sink),
                (1, _) => rows::<1, 2, VNNI>(d, k, g, p, sink),
                (2, 1) => rows::<2, 1, VNNI>(d, k, g, p, sink),
                (2, _) => rows::<2, 2, VNNI>(d, k, g, p, sink),
                (3, 1) => rows::<3, 1, VNNI>(d, k, g, p, sink),
                (3, _) => rows::<3, 2, VNNI>(d, k, g, p, sink),
                (4, 1) => rows::<4, 1, VNNI>(d, k, g, p, sink),
                _ => rows::<4, 2, VNNI>(d, k, g, p, sink),
            }
        }
    }

    /// `acc + Σ_t a[4c + t] · b[4c + t]` per i32 lane `c`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and family `VNNI`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn madd<const VNNI: u8>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: the caller vouches for the CPU.
        unsafe {
            if VNNI == NO_VNNI {
                // Exact: 7-bit weights keep each i16 pair sum unsaturated.
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
                _mm256_add_epi32(acc, p)
            } else {
                dpbusd::<VNNI>(acc, a, b)
            }
        }
    }

    /// Every output row of one sample, `R` registers of accumulators per
    /// group of pixels and `Q` quads per kernel row.
    ///
    /// # Safety
    /// As for [`super::sample`] (which checked the padded input's length);
    /// `R`, `Q` must be `d`'s.
    #[target_feature(enable = "avx2")]
    unsafe fn rows<const R: usize, const Q: usize, const VNNI: u8>(
        d: &DirectWeights,
        k: &Lanes,
        g: &Conv2d,
        padded: *const u8,
        sink: &Sink<'_>,
    ) {
        let (oh, ow) = g.out_hw();
        let wp = g.w + 2 * g.padding[1];
        let step = d.pixels;
        // SAFETY (whole body): the loads read 16 bytes from row oy + ki,
        // column ox ≤ OW − 1 of the padded input, so at most
        // (HP − 1) · WP + OW + 14 < HP · WP + 16 ≤ its length; the weights
        // and controls are indexed within their `KH · Q · R` and `Q · R`
        // entries; the stores follow the sink's contract.
        unsafe {
            // Loops rather than closures over intrinsics: a closure may not
            // get this function's target features.
            let mut shuffle = [[_mm256_setzero_si256(); R]; Q];
            let (mut zc, mut mult, mut bias) = (
                [_mm256_setzero_si256(); R],
                [_mm256_setzero_ps(); R],
                [_mm256_setzero_ps(); R],
            );
            for r in 0..R {
                for (j, s) in shuffle.iter_mut().enumerate() {
                    s[r] = _mm256_loadu_si256(d.shuffle[j * R + r].as_ptr().cast());
                }
                zc[r] = _mm256_loadu_si256(k.zc[r].as_ptr().cast());
                mult[r] = _mm256_loadu_ps(k.mult[r].as_ptr());
                bias[r] = _mm256_loadu_ps(k.bias[r].as_ptr());
            }
            let w = d.w.as_ptr().cast::<__m256i>();
            for oy in 0..oh {
                let mut ox = 0;
                while ox < ow {
                    let mut acc = [_mm256_setzero_si256(); R];
                    let mut wi = 0;
                    for ki in 0..g.kh {
                        let row = padded.add((oy + ki) * wp + ox);
                        let src = _mm256_broadcastsi128_si256(_mm_loadu_si128(row.cast()));
                        for sj in &shuffle {
                            for (a, &s) in acc.iter_mut().zip(sj) {
                                let x = _mm256_shuffle_epi8(src, s);
                                *a = madd::<VNNI>(*a, x, _mm256_loadu_si256(w.add(wi)));
                                wi += 1;
                            }
                        }
                    }
                    let n = step.min(ow - ox);
                    finish::<R>(&acc, &zc, &mult, &bias, sink, oy * ow + ox, n, d.o);
                    ox += step;
                }
            }
        }
    }

    /// The epilogue of one group: lanes `(p, c)` of `acc`, for pixels `p <
    /// n`, become output `(first + p, c)` of the sink, with the values of
    /// the GEMM's epilogue (`Sink::store`), bit for bit (the x86 families'
    /// vector epilogue, `real8` and `quantize8`).
    ///
    /// # Safety
    /// The CPU must support AVX2; output pixels `first..first + n` must be
    /// the sink's to write.
    #[target_feature(enable = "avx2")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn finish<const R: usize>(
        acc: &[__m256i; R],
        zc: &[__m256i; R],
        mult: &[__m256; R],
        bias: &[__m256; R],
        sink: &Sink<'_>,
        first: usize,
        n: usize,
        o: usize,
    ) {
        // SAFETY (whole body): the stores touch pixels first..first + n
        // only (caller's contract).
        unsafe {
            let mut y = [_mm256_setzero_ps(); R];
            for r in 0..R {
                y[r] = real8(acc[r], zc[r], mult[r], bias[r], sink.relu);
            }
            let count = n * o;
            let contiguous = sink.cs == 1 && sink.rs == o;
            match sink.kind {
                Kind::I32(out) => {
                    let mut v = [_mm256_setzero_si256(); R];
                    for r in 0..R {
                        v[r] = _mm256_sub_epi32(acc[r], zc[r]);
                    }
                    let vals: [[i32; LANES]; R] = std::mem::transmute_copy(&v);
                    put(out, sink, first, o, contiguous, count, vals.as_flattened());
                }
                Kind::F32(out) => {
                    let vals: [[f32; LANES]; R] = std::mem::transmute_copy(&y);
                    put(out, sink, first, o, contiguous, count, vals.as_flattened());
                }
                Kind::U8(out, inv, zp) => {
                    let (inv, zp) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zp as i32));
                    // Registers past R repeat the last one (never stored).
                    let mut q = [_mm256_setzero_si256(); 4];
                    for (r, qr) in q.iter_mut().enumerate() {
                        *qr = quantize8(y[r.min(R - 1)], inv, zp, sink.relu);
                    }
                    let halves: [__m128i; 2] = [bytes16(q[0], q[1]), bytes16(q[2], q[3])];
                    let vals: [u8; 4 * LANES] = std::mem::transmute(halves);
                    if contiguous && count == R * LANES {
                        // Fixed-size copies: one or two stores.
                        let dst = out.add(first * o);
                        match R {
                            1 => store::<8>(dst, &vals),
                            2 => store::<16>(dst, &vals),
                            3 => store::<24>(dst, &vals),
                            _ => store::<32>(dst, &vals),
                        }
                    } else {
                        put(out, sink, first, o, contiguous, count, &vals);
                    }
                }
            }
        }
    }

    /// Stores the first `N` bytes of `vals` at `dst`.
    ///
    /// # Safety
    /// `dst..dst + N` must be writable.
    #[inline(always)]
    unsafe fn store<const N: usize>(dst: *mut u8, vals: &[u8; 4 * LANES]) {
        let head: [u8; N] = vals[..N].try_into().expect("N ≤ 32");
        // SAFETY: forwarded contract.
        unsafe { dst.cast::<[u8; N]>().write_unaligned(head) }
    }

    /// Writes lane values `vals[..count]` (pixel `i / o`, channel `i % o`
    /// from pixel `first`) through the sink's strides.
    ///
    /// # Safety
    /// Those elements must be the caller's to write.
    #[inline(always)]
    unsafe fn put<T: Copy>(
        out: *mut T,
        sink: &Sink<'_>,
        first: usize,
        o: usize,
        contiguous: bool,
        count: usize,
        vals: &[T],
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            if contiguous {
                std::ptr::copy_nonoverlapping(vals.as_ptr(), out.add(first * o), count);
            } else {
                for (i, &v) in vals[..count].iter().enumerate() {
                    *out.add((first + i / o) * sink.rs + i % o * sink.cs) = v;
                }
            }
        }
    }
}
