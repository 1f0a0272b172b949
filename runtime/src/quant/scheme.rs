//! Per-tensor affine u8 activation quantization: the parameters, their
//! calibration from min/max statistics, and bulk (de)quantization.

use super::QuantError;

/// `1.5 · 2^23`: adding and subtracting it rounds an f32 of magnitude at
/// most `2^22` to an integer, half to even (the sum lies in `[2^23, 2^24)`,
/// where the spacing of f32 is 1, and the constant is even). Portable and
/// vectorisable, unlike `round_ties_even` on the x86_64 baseline (a libm
/// call there).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `round_ties_even(x)` for `|x| ≤ 2^22`.
#[inline(always)]
pub(super) fn round_even(x: f32) -> f32 {
    (x + ROUND_MAGIC) - ROUND_MAGIC
}

/// The one quantization formula every path shares (bulk quantization and
/// the GEMM's u8 epilogue), so they agree to the bit:
/// `clamp(round_half_even(x · inv_scale) + zero_point, 0, 255)`, NaN ↦ 0.
// `max`/`min` rather than `clamp`: they map NaN to a bound, `clamp` keeps it.
#[allow(clippy::manual_clamp)]
#[inline(always)]
pub(super) fn quantize_one(x: f32, inv_scale: f32, zero_point: f32) -> u8 {
    // Clamping to ±256 first changes no result (the zero point is in
    // [0, 255], so anything beyond saturates either way) and keeps the
    // rounding trick in its exact range. `max` and `min` return the other
    // operand for a NaN, so NaN becomes −256 here and 0 below; each is one
    // `maxps`/`minps` when vectorised.
    let v = round_even((x * inv_scale).max(-256.0).min(256.0));
    let q = (v + zero_point).max(0.0).min(255.0);
    // A whole number in [0, 255]; plus 2^23 it sits in the low mantissa
    // bits. (LLVM scalarises `as u8` and `as i32` here: it does not know
    // the range, so it keeps their saturation and NaN handling.)
    (q + 8_388_608.0).to_bits() as u8
}

/// The quantization of one activation tensor: `x ≈ scale · (q − zero_point)`
/// for bytes `q ∈ [0, 255]`.
///
/// Invariants (checked by the constructors): `scale` is a positive normal
/// f32 whose reciprocal is finite; the zero point is an integer, so the real
/// 0 is represented exactly (by `q = zero_point`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    scale: f32,
    inv_scale: f32,
    zero_point: u8,
}

impl ActQuant {
    /// The parameters `(scale, zero_point)` as calibrated or loaded from a
    /// file; fails unless `scale` is a positive normal number with a finite
    /// reciprocal.
    pub fn new(scale: f32, zero_point: u8) -> Result<Self, QuantError> {
        let inv_scale = 1.0 / scale;
        if !(scale.is_normal() && scale > 0.0 && inv_scale.is_finite()) {
            return Err(QuantError::BadScale(scale));
        }
        Ok(ActQuant {
            scale,
            inv_scale,
            zero_point,
        })
    }

    /// The parameters that cover the calibration range `[min, max]`: the
    /// range is widened to include 0 (ONNX Runtime's
    /// `DynamicQuantizeLinear` rule), `scale = (max − min) / 255` and the
    /// zero point is `round(−min / scale)`, so 0 is exact and every value of
    /// the range quantizes with an error of at most `scale / 2` (the rounded
    /// zero point moves the ends of the representable range by at most
    /// that), up to f32 rounding. A range of only zeros gets scale 1. Fails
    /// on non-finite bounds.
    pub fn from_min_max(min: f32, max: f32) -> Result<Self, QuantError> {
        for (what, value) in [("calibration minimum", min), ("calibration maximum", max)] {
            if !value.is_finite() {
                return Err(QuantError::NotFinite { what, value });
            }
        }
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let lo = lo.min(hi);
        let range = f64::from(hi) - f64::from(lo);
        if range == 0.0 {
            return ActQuant::new(1.0, 0);
        }
        // In f64, so that a range near f32::MAX does not overflow; the
        // scale is then rounded once to f32 and the zero point follows from
        // the rounded scale.
        let scale = ((range / 255.0) as f32).max(f32::MIN_POSITIVE);
        let zp = (-f64::from(lo) / f64::from(scale))
            .round_ties_even()
            .clamp(0.0, 255.0);
        ActQuant::new(scale, zp as u8)
    }

    /// The step between consecutive quantized values.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The byte that represents 0.
    pub fn zero_point(&self) -> u8 {
        self.zero_point
    }

    /// `1 / scale`, rounded to f32 once; quantization multiplies by it.
    pub fn inv_scale(&self) -> f32 {
        self.inv_scale
    }

    /// One value: `clamp(round_half_even(x · (1 / scale)) + zero_point, 0,
    /// 255)`; NaN quantizes to 0.
    pub fn quantize(&self, x: f32) -> u8 {
        quantize_one(x, self.inv_scale, f32::from(self.zero_point))
    }

    /// One value back: `scale · (q − zero_point)`, computed as
    /// `(q − zero_point) as f32 · scale` (exact integer difference, one
    /// rounding).
    pub fn dequantize(&self, q: u8) -> f32 {
        (i32::from(q) - i32::from(self.zero_point)) as f32 * self.scale
    }
}

/// Calibration statistics of one tensor: the smallest and largest value
/// seen over every batch observed. [`MinMax::act_quant`] turns them into
/// the tensor's [`ActQuant`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMax {
    min: f32,
    max: f32,
}

impl Default for MinMax {
    fn default() -> Self {
        MinMax::new()
    }
}

impl MinMax {
    /// No values seen yet.
    pub fn new() -> Self {
        MinMax {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }

    /// Widens the range to cover `xs`; NaNs are ignored (infinities are
    /// kept and make [`MinMax::act_quant`] fail).
    pub fn observe(&mut self, xs: &[f32]) {
        // Eight independent lanes, so the loop vectorises (a single running
        // min is a dependency chain the compiler may not reorder).
        let (mut lo, mut hi) = ([self.min; 8], [self.max; 8]);
        let mut chunks = xs.chunks_exact(8);
        for c in &mut chunks {
            for i in 0..8 {
                lo[i] = lo[i].min(c[i]);
                hi[i] = hi[i].max(c[i]);
            }
        }
        for &x in chunks.remainder() {
            lo[0] = lo[0].min(x);
            hi[0] = hi[0].max(x);
        }
        self.min = lo.iter().fold(self.min, |a, &b| a.min(b));
        self.max = hi.iter().fold(self.max, |a, &b| a.max(b));
    }

    /// Combines statistics gathered separately (e.g. per thread).
    pub fn merge(&mut self, other: &MinMax) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The smallest value seen (`+∞` before any).
    pub fn min(&self) -> f32 {
        self.min
    }

    /// The largest value seen (`−∞` before any).
    pub fn max(&self) -> f32 {
        self.max
    }

    /// The quantization of the observed range ([`ActQuant::from_min_max`]);
    /// with nothing observed, that of the range `[0, 0]`.
    pub fn act_quant(&self) -> Result<ActQuant, QuantError> {
        if self.min > self.max {
            return ActQuant::from_min_max(0.0, 0.0);
        }
        ActQuant::from_min_max(self.min, self.max)
    }
}

/// Panics (a bug in the calling code, never a user error) unless the two
/// slices have the same length.
fn same_len(what: &str, a: usize, b: usize) {
    assert!(
        a == b,
        "nnc internal error: {what}: input has {a} elements, output {b}"
    );
}

/// `out[i] = q.quantize(x[i])`: a layer's f32 input to the u8 bytes the
/// GEMM reads. Identical, bit for bit, on every CPU.
///
/// # Panics
/// If the slices' lengths differ.
pub fn quantize_u8(q: ActQuant, x: &[f32], out: &mut [u8]) {
    same_len("quantize_u8", x.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        unsafe { quantize_avx2(q, x, out) };
        return;
    }
    quantize_portable(q, x, out);
}

/// The loop of [`quantize_u8`]; inlined into each instruction-set variant.
#[inline(always)]
fn quantize_portable(q: ActQuant, x: &[f32], out: &mut [u8]) {
    let (inv, zp) = (q.inv_scale, f32::from(q.zero_point));
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_one(v, inv, zp);
    }
}

/// [`quantize_portable`] for AVX2, 32 values at a time, giving the same
/// bytes with fewer steps (LLVM's vectorisation of the scalar formula
/// keeps its float clamps and narrows byte by byte): after the clamp to
/// `[−256, 256]` (NaN to −256), `vcvtps2dq` rounds half to even (the
/// default rounding mode) as the magic-constant trick does, the zero point
/// is added to the integer exactly, and the saturating packs clamp to
/// `[0, 255]`.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(q: ActQuant, x: &[f32], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let n = x.len() / 32 * 32;
    // SAFETY (whole body): block i reads x[i..i + 32] and writes
    // out[i..i + 32], i + 32 ≤ n ≤ both lengths (equal, checked by the
    // caller); the loads and stores are unaligned.
    unsafe {
        let inv = _mm256_set1_ps(q.inv_scale);
        let zp = _mm256_set1_epi32(i32::from(q.zero_point));
        let (lo, hi) = (_mm256_set1_ps(-256.0), _mm256_set1_ps(256.0));
        // The packs interleave 128-bit halves; this puts them back.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for i in (0..n).step_by(32) {
            let mut v = [_mm256_setzero_si256(); 4];
            for (j, v) in v.iter_mut().enumerate() {
                let t = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i + 8 * j)), inv);
                // `max` returns its second operand for a NaN.
                let t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
                *v = _mm256_add_epi32(_mm256_cvtps_epi32(t), zp);
            }
            let words = (
                _mm256_packs_epi32(v[0], v[1]),
                _mm256_packs_epi32(v[2], v[3]),
            );
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(words.0, words.1), order);
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), bytes);
        }
    }
    quantize_portable(q, &x[n..], &mut out[n..]);
}

/// `out[i] = q.dequantize(x[i])`: u8 bytes back to f32.
///
/// # Panics
/// If the slices' lengths differ.
pub fn dequantize_u8(q: ActQuant, x: &[u8], out: &mut [f32]) {
    same_len("dequantize_u8", x.len(), out.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = q.dequantize(v);
    }
}
