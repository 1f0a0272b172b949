//! Tests of the int8 path: the number formats (`math`), the GEMM against
//! an exact integer reference and an f64 one for the epilogues (`gemm`),
//! and the convolution (`conv`). Every kernel family this CPU runs is
//! tested, the portable one always.

use super::kernel::Isa;
use super::*;
use crate::rng::Rng;

mod conv;
mod gemm;
mod math;
mod plan;
mod pool;

/// `len` random bytes.
fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.below(256) as u8).collect()
}

/// Random packed-range weights `[k, n]` (dense layout) with random positive
/// scales.
fn weights(rng: &mut Rng, k: usize, n: usize) -> QuantWeights {
    let values = (0..k * n)
        .map(|_| (rng.below(127) as i64 - 63) as i8)
        .collect();
    let scales = (0..n).map(|_| rng.uniform_f32(1e-3, 0.1)).collect();
    QuantWeights::from_parts(values, scales, WeightLayout::InOut).unwrap()
}

/// The exact accumulators `Σ_k (a[i·lda + k] − zp) · q[k, j]`, in i64.
fn reference_acc(m: usize, a: &[u8], lda: usize, zp: u8, q: &QuantWeights) -> Vec<i64> {
    let (k, n) = (q.depth(), q.channels());
    let mut out = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|p| (i64::from(a[i * lda + p]) - i64::from(zp)) * i64::from(q.get(p, j)))
                .sum();
        }
    }
    out
}

/// The f32 epilogue in f64: `acc · (scale_a · s[j]) + bias[j]`, ReLU'd.
/// Returns the value and the magnitude its f32 rounding error scales with.
fn reference_f32(acc: i64, a_scale: f32, w_scale: f32, bias: f32, relu: bool) -> (f64, f64) {
    let prod = acc as f64 * (f64::from(a_scale) * f64::from(w_scale));
    let y = prod + f64::from(bias);
    (
        if relu { y.max(0.0) } else { y },
        prod.abs() + f64::from(bias).abs(),
    )
}

/// The tolerance stated for the f32 epilogue: four roundings of relative
/// size 2^-24 (i32 → f32, `scale_a · s`, the product, the bias add) of the
/// magnitudes involved, i.e. 2 f32 epsilons.
fn f32_tolerance(magnitude: f64) -> f64 {
    2.0 * f64::from(f32::EPSILON) * magnitude + 1e-30
}
