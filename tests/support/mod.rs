//! What several integration tests share: the workspace's seeded generator
//! (`nnc-test-support`), the error measure against the interpreter, and the
//! comparison of a sharded training step with a whole-batch one.
//! Each test crate uses a part of it, hence `dead_code` is allowed.
#![allow(dead_code, unused_imports)]

use nnc::compiler::ops::Tensor;
use std::path::{Path, PathBuf};

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

/// Two sliced checkpoints hold the same state: the same layout and step,
/// and every tensor and metadata entry of each slice the same, bit for bit
/// (the files' bytes differ: the header's key order is not fixed; their
/// names differ by generation).
pub fn assert_same_slices(a: &Path, b: &Path) {
    use nnc::runtime::checkpoint::{load_tensors, sliced};
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
    let (ma, mb) = (
        sliced::read_manifest(a).unwrap(),
        sliced::read_manifest(b).unwrap(),
    );
    assert_eq!(
        (ma.layout, ma.step),
        (mb.layout, mb.step),
        "layout and step"
    );
    for i in 0..ma.layout.slices() {
        let (ta, da) = load_tensors(a.join(ma.file_name(i))).unwrap();
        let (tb, db) = load_tensors(b.join(mb.file_name(i))).unwrap();
        assert_eq!(da, db, "slice {i}: metadata");
        assert_eq!(bits(ta), bits(tb), "slice {i}: tensors");
    }
}

/// Data for a model-parallel run: batches of images and of labels.
pub type Data<'a> = (&'a [Vec<f32>], &'a [Vec<u32>]);

/// One run of a model-parallel driver, for [`assert_resumes_bit_for_bit`]:
/// trains over the batches given, from the network's initialisation or,
/// with `resume`, from that sliced checkpoint; saves into `save`; returns
/// the losses and the parameters laid out as the whole network's.
pub type TrainRun<'a> = &'a dyn Fn(Data<'_>, Option<&Path>, &Path) -> (Vec<f32>, Vec<f32>);

/// The resume test every sliced layout shares: the batches trained
/// straight, against their first half saved, then the rest resumed from
/// that checkpoint — after a later save into it died midway (a real slice
/// of a later step under the name of the next generation, and a temporary
/// file of the next slice, no manifest naming either) — give the same
/// losses and parameters bit for bit, and the same slices (optimizer state
/// included). The resumed run saves into the same directory, which then
/// holds the manifest and the files it names, nothing else. Returns the
/// straight run's checkpoint directory and parameters.
pub fn assert_resumes_bit_for_bit(
    tmp: &Path,
    data: Data<'_>,
    train: TrainRun<'_>,
) -> (PathBuf, Vec<f32>) {
    use nnc::runtime::checkpoint::sliced;
    let (images, labels) = data;
    let h = images.len() / 2;
    let (straight, half, later) = (tmp.join("straight"), tmp.join("half"), tmp.join("later"));
    let (all, p_all) = train(data, None, &straight);
    let (mut losses, _) = train((&images[..h], &labels[..h]), None, &half);
    train((&images[h..=h], &labels[h..=h]), Some(&half), &later);
    let m = sliced::read_manifest(&half).unwrap();
    let next = m.generation + 1;
    let done = sliced::read_manifest(&later).unwrap();
    std::fs::copy(
        later.join(done.file_name(0)),
        half.join(m.layout.file_name(0, next)),
    )
    .unwrap();
    let tmp_name = format!(".{}.tmp-4000000-0", m.layout.file_name(1, next));
    std::fs::write(half.join(tmp_name), b"half a slice").unwrap();
    let (rest, p) = train((&images[h..], &labels[h..]), Some(&half), &half);
    losses.extend(rest);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&losses), bits(&all), "losses");
    assert_eq!(bits(&p), bits(&p_all), "parameters");
    assert_same_slices(&straight, &half);
    let saved = sliced::read_manifest(&half).unwrap();
    assert_eq!(saved.generation, next);
    let mut want: Vec<String> = (0..saved.layout.slices())
        .map(|i| saved.file_name(i))
        .collect();
    want.push(sliced::MANIFEST.into());
    want.sort();
    let mut have: Vec<String> = std::fs::read_dir(&half)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    have.sort();
    assert_eq!(have, want, "what a save leaves in its directory");
    (straight, p_all)
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
