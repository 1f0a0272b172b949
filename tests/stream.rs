//! `fit` over shards on disk: with a window covering the data it trains
//! bit for bit as over the same rows in memory (losses and parameters, with
//! augmentation, over one or several shards); with a smaller window it
//! visits every row once per epoch, reproducibly, on any thread count, and
//! a streamed run stopped midway resumes bit for bit.

use std::path::{Path, PathBuf};

use nnc::runtime::data::shard::{write_shard, DEFAULT_CHUNK_ROWS};
use nnc::runtime::data::{load_mnist, Dataset, ShardSet};
use nnc::runtime::parallel::Strategy;
use nnc::runtime::{fit, AugmentSpec, FitOptions, History, Model, TrainData};

mod mnist_mlp {
    nnc::include_model!("mnist_mlp");
}
use mnist_mlp::MnistMlp;

fn train_set() -> Dataset {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-10k");
    let train = load_mnist(dir).expect("bundled MNIST").train;
    let first: Vec<usize> = (0..1000).collect();
    train.subset(&first).unwrap()
}

/// A fresh directory under the target dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("stream-{name}-{}", std::process::id()));
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

/// `data` as shards of `sizes` rows each (in order), chunks of 64 rows.
fn shards(dir: &Path, data: &Dataset, sizes: &[usize]) -> Vec<PathBuf> {
    let mut at = 0;
    sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let rows: Vec<usize> = (at..at + n).collect();
            at += n;
            let path = dir.join(format!("part{k}.shard"));
            write_shard(&path, &data.subset(&rows).unwrap(), 64).unwrap();
            path
        })
        .collect()
}

fn options(threads: usize, augment: Option<AugmentSpec>) -> FitOptions {
    FitOptions {
        epochs: Some(3),
        batch: Some(nnc::runtime::BatchSpec::Size(96)),
        threads: Some(threads),
        parallel: Strategy::Data { shards: None },
        augment,
        ..FitOptions::quiet()
    }
}

/// Losses of every epoch and the parameters after training.
fn run(data: &TrainData<'_>, opts: &FitOptions) -> (Vec<u64>, Vec<u32>) {
    let mut model = MnistMlp::new(opts.batch.map_or(96, |b| match b {
        nnc::runtime::BatchSpec::Size(n) => n,
        _ => 96,
    }));
    let h: History = fit(&mut model, data, opts).unwrap();
    assert_eq!(h.samples, 3 * 1000);
    (
        h.epochs.iter().map(|e| e.train_loss.to_bits()).collect(),
        model.params().iter().map(|p| p.to_bits()).collect(),
    )
}

const AUGMENT: AugmentSpec = AugmentSpec {
    shift: 2,
    rotate: 10.0,
    flip: false,
    cutout: 4,
    noise: 0.05,
};

#[test]
fn a_covering_window_trains_bit_for_bit_as_in_memory() {
    let dir = TempDir::new("same");
    let train = train_set();
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let one = ShardSet::open(shards(&a, &train, &[1000]))
        .unwrap()
        .with_window(1000);
    shards(&b, &train, &[300, 450, 250]);
    // A directory stands for its shards in name order.
    let three = ShardSet::open([&b]).unwrap().with_window(4096);
    assert_eq!(three.shards().len(), 3);
    for augment in [None, Some(AUGMENT)] {
        let opts = options(1, augment);
        let memory = run(&TrainData::new(&train), &opts);
        assert_eq!(
            run(&TrainData::streamed(&one), &opts),
            memory,
            "one shard, {augment:?}"
        );
        assert_eq!(
            run(&TrainData::streamed(&three), &opts),
            memory,
            "three shards, {augment:?}"
        );
    }
}

#[test]
fn small_windows_train_reproducibly_on_any_thread_count() {
    let dir = TempDir::new("window");
    let train = train_set();
    let set = ShardSet::open(shards(&dir.0, &train, &[300, 450, 250]))
        .unwrap()
        .with_window(128);
    let opts = options(1, Some(AUGMENT));
    let once = run(&TrainData::streamed(&set), &opts);
    assert_eq!(run(&TrainData::streamed(&set), &opts), once);
    assert_eq!(
        run(&TrainData::streamed(&set), &options(2, Some(AUGMENT))),
        once,
        "2 threads"
    );
    // Another order than the in-memory loader's: the window matters.
    assert_ne!(run(&TrainData::new(&train), &opts).1, once.1);
}

#[test]
fn a_streamed_run_stopped_midway_resumes_bit_for_bit() {
    let dir = TempDir::new("resume");
    let train = train_set();
    let set = ShardSet::open(shards(&dir.0, &train, &[600, 400]))
        .unwrap()
        .with_window(200);
    let data = TrainData::streamed(&set);
    let whole = run(&data, &options(1, None));
    let ckpt = dir.0.join("ckpt");
    // Step 15 is mid-way through the second epoch (11 batches of 96 each).
    let mut model = MnistMlp::new(96);
    let first = FitOptions {
        max_steps: Some(15),
        checkpoint_dir: Some(ckpt.clone()),
        ..options(1, None)
    };
    let h = fit(&mut model, &data, &first).unwrap();
    assert!(!h.finished);
    let mut model = MnistMlp::new(96);
    let rest = FitOptions {
        resume: Some(ckpt.join(nnc::runtime::train::LAST_CHECKPOINT)),
        checkpoint_dir: Some(ckpt),
        ..options(1, None)
    };
    let h = fit(&mut model, &data, &rest).unwrap();
    assert!(h.finished);
    let params: Vec<u32> = model.params().iter().map(|p| p.to_bits()).collect();
    assert_eq!(params, whole.1);
    assert_eq!(
        h.epochs.last().map(|e| e.train_loss.to_bits()),
        whole.0.last().copied()
    );
}

#[test]
fn a_bad_value_on_disk_stops_training_naming_the_sample_and_the_shard() {
    use nnc::runtime::data::Column;
    let dir = TempDir::new("bad");
    let train = train_set();
    let mut labels = train.class_values("label").unwrap().to_vec();
    labels[700] = 11;
    let bad = Dataset::new(vec![
        train.column("image").unwrap().clone(),
        Column::classes("label", &[], labels, 12),
    ])
    .unwrap();
    let path = dir.0.join("bad.shard");
    write_shard(&path, &bad, 64).unwrap();
    let set = ShardSet::open([&path]).unwrap().with_window(128);
    let mut model = MnistMlp::new(96);
    let e = fit(&mut model, &TrainData::streamed(&set), &options(1, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sample 700 of the shards"), "{e}");
    assert!(
        e.contains("bad.shard") && e.contains("class 11, not below 10"),
        "{e}"
    );
}

/// On two ranks of a data-parallel group (threads here, through the same
/// `fit_with` MPI uses), streamed training is bit for bit one process's, in
/// memory with a covering window and streamed with a small one; and each
/// rank reads from disk only its half of every batch (one row a block at
/// MNIST's row size, so the bytes count the rows). Batches of 128 are two
/// data-parallel shards of 64, one a rank.
#[test]
fn ranks_stream_only_their_own_rows_bit_for_bit() {
    use nnc::runtime::collective::Collective;
    let dir = TempDir::new("ranks");
    let train = train_set();
    let path = dir.0.join("all.shard");
    write_shard(&path, &train, DEFAULT_CHUNK_ROWS).unwrap();
    let record = (784 * 4 + 4) as u64;
    let shard = nnc::runtime::data::shard::Shard::open(&path).unwrap();
    assert_eq!(
        (shard.chunk_rows(), shard.record_bytes() as u64),
        (1, record)
    );
    let opts = FitOptions {
        batch: Some(nnc::runtime::BatchSpec::Size(128)),
        ..options(1, Some(AUGMENT))
    };
    for (window, single) in [
        (1000, run(&TrainData::new(&train), &opts)),
        (
            128,
            run(
                &TrainData::streamed(&ShardSet::open([&path]).unwrap().with_window(128)),
                &opts,
            ),
        ),
    ] {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = nnc::runtime::collective::Threads::group(2)
                .into_iter()
                .map(|comm| {
                    let (path, opts) = (&path, &opts);
                    s.spawn(move || {
                        let set = ShardSet::open([path]).unwrap().with_window(window);
                        let mut model = MnistMlp::new(128);
                        let h = nnc::runtime::fit_with(
                            &mut model,
                            &TrainData::streamed(&set),
                            opts,
                            &comm,
                        )
                        .unwrap();
                        assert_eq!(h.samples, 3 * 1000, "rank {}", comm.rank());
                        let losses: Vec<u64> =
                            h.epochs.iter().map(|e| e.train_loss.to_bits()).collect();
                        let params = model.params().iter().map(|p| p.to_bits()).collect();
                        ((losses, params), set.bytes_read())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, (trained, read)) in results.into_iter().enumerate() {
            assert_eq!(trained, single, "window {window}, rank {rank}");
            // Seven batches of 128 rows split 64/64, the last of 104 rows
            // 52/52: 500 rows a rank an epoch, 3 epochs.
            assert_eq!(read, 3 * 500 * (record + 8), "window {window}, rank {rank}");
        }
    }
}
