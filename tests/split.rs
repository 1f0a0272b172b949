//! Split layers (`split:`, issue #24) on one process: the shard and tail
//! networks the compiler generates for `examples/models/mnist_split.nn`
//! (`h1` split by columns, `h2` by rows, 2 ranks), trained by the split
//! driver (`nnc_runtime::split`) with both ranks' shards local, against the
//! unsplit network trained with the same optimizer: the same losses and
//! parameters after 10 Adam steps, to float precision (the row split sums
//! `h2`'s product in two halves, so not bit for bit). The same driver on
//! two MPI ranks is checked by the MNIST example's `tests/mpi.rs`.

use nnc::runtime::collective::Local;
use nnc::runtime::split::{place_params, slice_params, SplitError, SplitLayers};
use nnc::runtime::Model;

mod support;
use support::{
    assert_matches_whole, assert_resumes_bit_for_bit, assert_same_slices, mnist_batches,
    train_whole, TempDir,
};

mod mnist_split {
    nnc::include_model!("mnist_split");
}
use mnist_split::{MnistSplit, MnistSplitShard, MnistSplitTail};

/// Random images and labels for `steps` batches of `batch`.
fn data(batch: usize, steps: usize) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
    mnist_batches(11, batch, steps)
}

#[test]
fn the_shard_holds_slices_and_the_tail_the_rest() {
    let shard = MnistSplitShard::new(4);
    let tail = MnistSplitTail::new(4);
    let shapes = |m: &dyn Model| -> Vec<(String, Vec<usize>)> {
        m.spec()
            .params
            .iter()
            .map(|p| (p.name.to_string(), p.shape.to_vec()))
            .collect()
    };
    assert_eq!(
        shapes(&shard),
        vec![
            ("h1.weight".to_string(), vec![784, 64]),
            ("h1.bias".into(), vec![64]),
            ("h2.weight".into(), vec![64, 128]),
        ]
    );
    assert_eq!(
        shapes(&tail),
        vec![
            ("h2.bias".to_string(), vec![128]),
            ("logits.weight".into(), vec![128, 10]),
            ("logits.bias".into(), vec![10]),
        ]
    );
    assert_eq!(tail.backprop_inputs(), &["h2_partial"]);
}

#[test]
fn slicing_and_placing_the_parameters_round_trip() {
    let mut whole = MnistSplit::new(4);
    whole.init_params(3).unwrap();
    let spec = whole.spec();
    let mut out = vec![0.0f32; spec.param_count];
    for r in 0..2 {
        let mut shard = MnistSplitShard::new(4);
        slice_params(&whole, &mut shard, r, 2).unwrap();
        // Rank r's columns of h1.weight: row 5, column 64r + 7.
        let w = spec.params.iter().find(|p| p.name == "h1.weight").unwrap();
        assert_eq!(
            shard.params()[5 * 64 + 7],
            whole.params()[w.offset + 5 * 128 + 64 * r + 7]
        );
        place_params(spec, &shard, r, 2, &mut out).unwrap();
    }
    let mut tail = MnistSplitTail::new(4);
    slice_params(&whole, &mut tail, 0, 2).unwrap();
    place_params(spec, &tail, 0, 2, &mut out).unwrap();
    assert!(
        out.iter()
            .zip(whole.params())
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the slices do not assemble the network"
    );
}

#[test]
fn two_shards_equal_the_whole_network_after_10_adam_steps() {
    let (batch, steps) = (64, 10);
    let (images, labels) = data(batch, steps);
    let mut whole = MnistSplit::new(batch);
    whole.init_params(42).unwrap();
    let initial = whole.params().to_vec();
    let lr = whole.spec().train.lr;
    let mut shards = [MnistSplitShard::new(batch), MnistSplitShard::new(batch)];
    let mut tail = MnistSplitTail::new(batch);
    for (r, s) in shards.iter_mut().enumerate() {
        slice_params(&whole, s, r, 2).unwrap();
    }
    slice_params(&whole, &mut tail, 0, 2).unwrap();

    let whole_losses = train_whole(&mut whole, &images, &labels);

    let [s0, s1] = &mut shards;
    let local: Vec<&mut dyn Model> = vec![s0, s1];
    let mut split = SplitLayers::new(local, &mut tail, 2, &Local).unwrap();
    let mut split_losses = Vec::new();
    for (x, y) in images.iter().zip(&labels) {
        split_losses.push(
            split
                .step(&[("image", x)], &[("digit", y)], batch, lr)
                .unwrap(),
        );
    }
    assert_eq!(split.bytes_per_step(batch), (batch * 128 * 4) as u64);
    let spec = whole.spec();
    let mut params = vec![0.0f32; spec.param_count];
    for (r, s) in split.shards().into_iter().enumerate() {
        place_params(spec, s, r, 2, &mut params).unwrap();
    }
    place_params(spec, split.tail(), 0, 2, &mut params).unwrap();

    assert_matches_whole(
        "2 shards",
        (&whole_losses, whole.params()),
        (&split_losses, &params),
    );
    // And training moved them (Adam, lr 1e-3, 10 steps): the comparison is
    // not vacuous. (Random labels: the loss need not fall.)
    let moved = initial
        .iter()
        .zip(whole.params())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(moved > 5e-3, "parameters moved by {moved} only");
}

#[test]
fn a_missing_shard_is_a_layout_error() {
    let mut s0 = MnistSplitShard::new(8);
    let mut tail = MnistSplitTail::new(8);
    let err = SplitLayers::new(vec![&mut s0], &mut tail, 2, &Local)
        .err()
        .expect("one shard of two");
    assert!(matches!(err, SplitError::Layout(_)), "{err}");
    assert!(
        err.to_string().contains("one process holds every shard"),
        "{err}"
    );
}

/// Trains both shards and the tail on one process over the batches given,
/// from `whole`'s initialisation or, with `resume`, from that sliced
/// checkpoint (the parts then start from their generated defaults); saves
/// into `save`. Returns the losses and the parameters assembled as the
/// whole network's.
fn train_split(
    whole: &MnistSplit,
    batch: usize,
    (images, labels): (&[Vec<f32>], &[Vec<u32>]),
    resume: Option<&std::path::Path>,
    save: &std::path::Path,
) -> (Vec<f32>, Vec<f32>) {
    let mut shards = [MnistSplitShard::new(batch), MnistSplitShard::new(batch)];
    let mut tail = MnistSplitTail::new(batch);
    if resume.is_none() {
        for (r, s) in shards.iter_mut().enumerate() {
            slice_params(whole, s, r, 2).unwrap();
        }
        slice_params(whole, &mut tail, 0, 2).unwrap();
    }
    let lr = whole.spec().train.lr;
    let [s0, s1] = &mut shards;
    let mut split = SplitLayers::new(vec![s0, s1], &mut tail, 2, &Local).unwrap();
    if let Some(dir) = resume {
        split.load_checkpoint(dir).unwrap();
    }
    let losses = images
        .iter()
        .zip(labels)
        .map(|(x, y)| {
            split
                .step(&[("image", x)], &[("digit", y)], batch, lr)
                .unwrap()
        })
        .collect();
    split.save_checkpoint(save).unwrap();
    let spec = whole.spec();
    let mut params = vec![0.0f32; spec.param_count];
    for (r, s) in split.shards().into_iter().enumerate() {
        place_params(spec, s, r, 2, &mut params).unwrap();
    }
    place_params(spec, split.tail(), 0, 2, &mut params).unwrap();
    (losses, params)
}

#[test]
fn a_sliced_checkpoint_resumes_bit_for_bit_and_merges_into_the_whole_network() {
    use nnc::runtime::checkpoint::{load_training, load_weights, sliced, LoadOptions};
    let batch = 32;
    let (images, labels) = data(batch, 10);
    let mut whole = MnistSplit::new(batch);
    whole.init_params(42).unwrap();
    let tmp = TempDir::new("split-ckpt");
    let (straight, p10) =
        assert_resumes_bit_for_bit(&tmp.0, (&images, &labels), &|data, resume, save| {
            train_split(&whole, batch, data, resume, save)
        });
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();

    // Merged: the unsplit network's ordinary checkpoint, holding the
    // slices' parameters assembled bit for bit.
    let merged = tmp.0.join("merged.safetensors");
    sliced::merge(&straight, whole.spec(), &merged).unwrap();
    let mut fresh = MnistSplit::new(batch);
    load_weights(&mut fresh, &merged, &LoadOptions::default()).unwrap();
    assert_eq!(bits(fresh.params()), bits(&p10));
    let spec = whole.spec();
    let mut buf = vec![0.0; spec.param_count];
    let hash = format!("{:016x}", spec.hash);
    let got = load_training(&merged, &spec.params, &mut buf, Some(&hash)).unwrap();
    let opt = got.optimizer.unwrap();
    assert_eq!(
        (opt.kind.as_str(), opt.step, got.meta.step),
        ("adam", 10, 10)
    );
    // Split again for the same layout: the same slices.
    let again = tmp.0.join("again");
    let (shard, tail) = (MnistSplitShard::new(1), MnistSplitTail::new(1));
    let parts = vec![vec![shard.spec(), tail.spec()]; 2];
    sliced::split(&merged, spec, sliced::Layout::Split(2), &parts, &again).unwrap();
    assert_same_slices(&straight, &again);
    // A damaged slice is refused, naming it.
    let file = straight.join(sliced::read_manifest(&straight).unwrap().file_name(1));
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let mut shards = [MnistSplitShard::new(batch), MnistSplitShard::new(batch)];
    let mut tail = MnistSplitTail::new(batch);
    let [s0, s1] = &mut shards;
    let mut split = SplitLayers::new(vec![s0, s1], &mut tail, 2, &Local).unwrap();
    let before = split.shards()[0].params().to_vec();
    let err = split.load_checkpoint(&straight).unwrap_err().to_string();
    assert!(
        err.contains("shard-1.gen-1.safetensors: corrupt checkpoint"),
        "{err}"
    );
    // Nothing was loaded: shard 0, whose slice is fine, is unchanged.
    assert_eq!(bits(split.shards()[0].params()), bits(&before));
}

/// Every slice carries a copy of the replicated tail. A checkpoint whose
/// copies differ (the ranks had diverged when they saved), though every
/// slice matches its hash in the manifest, is refused, naming the slice,
/// and nothing is loaded.
#[test]
fn slices_whose_tails_differ_are_refused() {
    use nnc::runtime::checkpoint::sliced::{self, Part};
    let batch = 32;
    let (images, labels) = data(batch, 2);
    let mut whole = MnistSplit::new(batch);
    whole.init_params(7).unwrap();
    let tmp = TempDir::new("split-tails");
    let dir = tmp.0.join("ckpt");
    train_split(&whole, batch, (&images, &labels), None, &dir);
    // Rewrite slice 1 with its own shard and a tail one bit off, and the
    // manifest with the new slice's hash: a consistent directory whose
    // tails disagree.
    let mut m = sliced::read_manifest(&dir).unwrap();
    let (shard, tail) = (MnistSplitShard::new(1), MnistSplitTail::new(1));
    let specs = [shard.spec(), tail.spec()];
    let mut parts = sliced::read_slice(&dir, &m, 1, &specs).unwrap();
    parts[1].params[0] = f32::from_bits(parts[1].params[0].to_bits() ^ 1);
    let written: Vec<Part<'_>> = parts
        .iter()
        .zip(specs)
        .map(|(p, spec)| Part {
            spec,
            params: &p.params,
            optimizer: &p.optimizer,
        })
        .collect();
    m.hashes[1] =
        sliced::write_slice(&dir, &m.network, m.layout, m.generation, 1, &written).unwrap();
    sliced::write_manifest(&dir, &m).unwrap();

    let mut shards = [MnistSplitShard::new(batch), MnistSplitShard::new(batch)];
    let mut tail = MnistSplitTail::new(batch);
    let [s0, s1] = &mut shards;
    let mut split = SplitLayers::new(vec![s0, s1], &mut tail, 2, &Local).unwrap();
    let before = split.tail().params().to_vec();
    let err = split.load_checkpoint(&dir).unwrap_err().to_string();
    assert!(
        err.contains("shard-1.gen-1.safetensors") && err.contains("replicated tail differs"),
        "{err}"
    );
    assert_eq!(split.tail().params(), &before[..]);
}
