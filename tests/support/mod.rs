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

/// Random MNIST-shaped data: `steps` batches of `batch` images (784
/// values in [0, 1)) and digit labels, drawn from `seed`.
pub fn mnist_batches(seed: u64, batch: usize, steps: usize) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
    let mut rng = Rng::new(seed);
    let images = (0..steps)
        .map(|_| rng.uniform_f32(batch * 784, 0.0, 1.0))
        .collect();
    let labels = (0..steps)
        .map(|_| (0..batch).map(|_| rng.below(10) as u32).collect())
        .collect();
    (images, labels)
}

/// Trains `whole` (initialised) one step of its own optimizer per batch,
/// on whole batches: the reference model-parallel runs are compared with.
/// Returns the losses.
pub fn train_whole(
    whole: &mut dyn nnc::runtime::Model,
    images: &[Vec<f32>],
    labels: &[Vec<u32>],
) -> Vec<f32> {
    let train = &whole.spec().train;
    let lr = train.lr;
    let mut opt = nnc::runtime::optim::build(&train.optimizer, whole.spec().param_count).unwrap();
    images
        .iter()
        .zip(labels)
        .map(|(x, y)| {
            let loss = whole
                .train_step(&nnc::runtime::Batch {
                    inputs: &[x],
                    labels: &[y],
                })
                .unwrap();
            let grads = whole.grads().to_vec();
            opt.step(whole.params_mut(), &grads, lr).unwrap();
            loss
        })
        .collect()
}

/// A model-parallel run (pipeline stages, split layers) against the whole
/// network trained on whole batches, each as (losses, parameters laid out
/// as the whole network's): the same to float precision, not bit for bit
/// (the batch's sums are split by micro-batch or by rank). The losses
/// agree within 1e-5 relative, the parameters within 1e-4 absolute: Adam
/// moves every parameter by about lr (1e-3) a step whatever its gradient's
/// size, so a rounding difference in a near-zero gradient shows at that
/// scale at most.
pub fn assert_matches_whole(what: &str, whole: (&[f32], &[f32]), parallel: (&[f32], &[f32])) {
    let ((wl, wp), (pl, pp)) = (whole, parallel);
    assert_eq!(wl.len(), pl.len(), "{what}: steps");
    for (step, (a, b)) in wl.iter().zip(pl).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "{what}, step {step}: loss {a} vs {b}"
        );
    }
    assert_eq!(wp.len(), pp.len(), "{what}: parameters");
    let d = wp
        .iter()
        .zip(pp)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(d <= 1e-4, "{what}: parameters differ by {d}");
}
