//! What several integration tests share: a random source independent of
//! the code under test, and the error measure against the interpreter.
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
