//! Fake quantization for quantization-aware training (the compiler's
//! `ops/quant.rs`): a tensor rounded to a symmetric `bits`-bit grid and
//! back, `clamp(round_half_even(x / s), qmin, qmax) · s`. The scale and the
//! rounding are those of [`crate::quant::QuantWeights`] (`max|x| / qmax`,
//! division, half to even), so weights fine-tuned through this kernel are
//! the values the int8 code will hold.

/// `1.5 · 2^23`: adding and subtracting it rounds an f32 of magnitude at
/// most `2^22` to an integer, half to even (see `quant::scheme`), without
/// the libm call `round_ties_even` is on the x86_64 baseline.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `(qmin, qmax)` of `bits` bits, as f32 (exact for `bits ≤ 16`).
fn range(bits: u32) -> (f32, f32) {
    let half = (1u32 << (bits - 1)) as f32;
    (-half, half - 1.0)
}

/// `round_half_even(x / s)`, clamped to `[qmin − 1, qmax + 1]` first so
/// the rounding trick is exact (values beyond clamp to a bound either way);
/// NaN stays NaN.
#[inline(always)]
fn rounded(x: f32, s: f32, lo: f32, hi: f32) -> f32 {
    let v = (x / s).clamp(lo - 1.0, hi + 1.0);
    (v + ROUND_MAGIC) - ROUND_MAGIC
}

/// The dynamic scale of `x`: `max|x| / qmax`, or 1 when every element is
/// zero (any scale gives zeros then). `bits` is in `2..=16`.
pub fn fake_quant_scale(x: &[f32], bits: u32) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        1.0
    } else {
        amax / range(bits).1
    }
}

/// `out[i] = clamp(round_half_even(x[i] / s), qmin, qmax) · s`, with
/// `qmin = −2^(bits−1)`, `qmax = 2^(bits−1) − 1`. `bits` is in `2..=16`.
pub fn fake_quant(x: &[f32], s: f32, bits: u32, out: &mut [f32]) {
    let (lo, hi) = range(bits);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = rounded(v, s, lo, hi).clamp(lo, hi) * s;
    }
}

/// The straight-through gradient's mask: `out[i]` is 1 where
/// `round_half_even(x[i] / s)` lies in `[qmin, qmax]`, else 0 (0 for NaN).
pub fn fake_quant_mask(x: &[f32], s: f32, bits: u32, out: &mut [f32]) {
    let (lo, hi) = range(bits);
    for (o, &v) in out.iter_mut().zip(x) {
        let r = rounded(v, s, lo, hi);
        *o = if (lo..=hi).contains(&r) { 1.0 } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantWeights;

    /// A one-channel weight tensor quantized by the int8 weight quantizer
    /// (7 bits, scale `max|w| / 63`) is exactly `fake_quant(w, bits: 7)`:
    /// quantization-aware training sees the values inference will hold.
    #[test]
    fn seven_bits_equal_the_weight_quantizer() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let w: Vec<f32> = (0..257)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 3.0 - 1.5
            })
            .collect();
        let q = QuantWeights::dense(&w, w.len(), 1).unwrap();
        let want = q.dequantize();
        let mut got = vec![0.0; w.len()];
        let s = fake_quant_scale(&w, 7);
        assert_eq!(s, q.scales()[0]);
        fake_quant(&w, s, 7, &mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn ties_round_to_even_and_the_clamp_cuts() {
        let x = [0.5, 1.5, 2.5, -0.5, -2.5, 300.0, -300.0, 126.6, f32::NAN];
        let mut out = [0.0; 9];
        fake_quant(&x, 1.0, 8, &mut out);
        assert_eq!(
            &out[..8],
            &[0.0, 2.0, 2.0, -0.0, -2.0, 127.0, -128.0, 127.0]
        );
        assert!(out[8].is_nan());
        fake_quant_mask(&x, 1.0, 8, &mut out);
        assert_eq!(out, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(fake_quant_scale(&[0.0, -0.0], 8), 1.0);
    }
}
