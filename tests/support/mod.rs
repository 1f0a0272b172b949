//! What several integration tests share: a random source independent of
//! the code under test, the error measure against the interpreter, and the
//! comparison of a sharded training step with a whole-batch one.
//! Each test crate uses a part of it, hence `dead_code` is allowed.
#![allow(dead_code)]

use nnc::compiler::ops::Tensor;

/// SplitMix64, independent of the code under test.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), with 24 random bits.
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A decimal digit.
    pub fn digit(&mut self) -> u32 {
        (self.next() % 10) as u32
    }
}

/// Largest difference relative to the larger magnitude of the interpreter's tensor.
pub fn rel_err(got: &[f32], want: &Tensor) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want.iter())
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// A sharded runner's step against one shard's, each as (loss, gradient):
/// the same loss and gradient to float rounding (relative 1e-5, the
/// gradient's difference relative to its largest magnitude).
pub fn assert_close_grads(whole: (f32, &[f32]), sharded: (f32, &[f32])) {
    let ((l1, g1), (l4, g4)) = (whole, sharded);
    assert!((l1 - l4).abs() <= 1e-5 * l1.abs(), "loss {l1} vs {l4}");
    let scale = g1.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    let err = g1
        .iter()
        .zip(g4)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 1e-5 * scale,
        "max gradient difference {err} (scale {scale})"
    );
}
