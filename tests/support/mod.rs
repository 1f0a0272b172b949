//! What several integration tests share: the workspace's seeded generator
//! (`nnc-test-support`), the error measure against the interpreter, and the
//! comparison of a sharded training step with a whole-batch one.
//! Each test crate uses a part of it, hence `dead_code` is allowed.
#![allow(dead_code, unused_imports)]

use nnc::compiler::ops::Tensor;

pub use nnc_test_support::Rng;

/// Largest difference relative to the larger magnitude of the
/// interpreter's tensor ([`nnc_test_support::rel_err`], floor 1e-3).
pub fn rel_err(got: &[f32], want: &Tensor) -> f64 {
    let want: Vec<f64> = want.iter().copied().collect();
    nnc_test_support::rel_err(got, &want, 1e-3)
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
