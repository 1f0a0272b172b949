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

/// A fresh directory under the system's temporary one, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nnc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every tensor and metadata entry of every file of two sliced
/// checkpoints are the same, bit for bit (the files' bytes differ: the
/// header's key order is not fixed).
pub fn assert_same_slices(a: &std::path::Path, b: &std::path::Path, files: &[&str]) {
    use nnc::runtime::checkpoint::load_tensors;
    let bits = |ts: Vec<nnc::runtime::checkpoint::Tensor>| {
        ts.into_iter()
            .map(|t| {
                (
                    t.name,
                    t.shape,
                    t.data.iter().map(|v| v.to_bits()).collect(),
                )
            })
            .collect::<Vec<(String, Vec<usize>, Vec<u32>)>>()
    };
    for f in files {
        let (ta, ma) = load_tensors(a.join(f)).unwrap();
        let (tb, mb) = load_tensors(b.join(f)).unwrap();
        assert_eq!(ma, mb, "{f}: metadata");
        assert_eq!(bits(ta), bits(tb), "{f}: tensors");
    }
}
