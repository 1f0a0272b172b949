//! The parallel runtime: a data-parallel or intra-op training run gives
//! bit-identical parameters on 1, 2 or 8 threads, and data-parallel
//! sharding computes the same gradient as one shard (to float rounding).

use nnc::runtime::data::load_mnist;
use nnc::runtime::parallel::{Resolved, StepRunner, Strategy};
use nnc::runtime::{fit, Batch, FitOptions, Model, TrainData};

mod mnist_mlp {
    nnc::include_model!("mnist_mlp");
}
use mnist_mlp::MnistMlp;
mod mnist_bn_dropout {
    nnc::include_model!("mnist_bn_dropout");
}

fn train_set() -> nnc::runtime::data::Dataset {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-10k");
    let mnist = load_mnist(dir).expect("bundled MNIST");
    let train = mnist.train.with_sample_shape(vec![784]).unwrap();
    let first: Vec<usize> = (0..1280).collect();
    train.subset(&first).unwrap()
}

/// Parameters after 12 steps of batch 128 with this strategy and threads.
fn train(parallel: Strategy, threads: usize) -> Vec<f32> {
    let train = train_set();
    let mut model = MnistMlp::new(128);
    let opts = FitOptions {
        epochs: Some(2),
        max_steps: Some(12),
        threads: Some(threads),
        parallel,
        ..FitOptions::quiet()
    };
    fit(&mut model, &TrainData::new(&train), &opts).unwrap();
    model.params().to_vec()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn data_parallel_is_bit_identical_on_any_thread_count() {
    let data = Strategy::Data { shards: None };
    let one = train(data, 1);
    assert!(same_bits(&one, &train(data, 2)), "1 vs 2 threads");
    assert!(same_bits(&one, &train(data, 8)), "1 vs 8 threads");
    // Not trivially so: training moved the parameters.
    let start = MnistMlp::new(128).params().to_vec();
    assert!(!same_bits(&one, &start));
}

#[test]
fn intra_op_is_bit_identical_on_any_thread_count() {
    let one = train(Strategy::IntraOp, 1);
    assert!(
        same_bits(&one, &train(Strategy::IntraOp, 2)),
        "1 vs 2 threads"
    );
    assert!(
        same_bits(&one, &train(Strategy::IntraOp, 8)),
        "1 vs 8 threads"
    );
}

/// Four shards weighted by size give one shard's gradient: the reduction
/// is a correct mean, on a batch that does not split evenly.
#[test]
fn sharded_gradient_equals_the_whole_batch_gradient() {
    let train = train_set();
    let rows = 103;
    let x = &train.features()[..rows * 784];
    let nnc::runtime::data::Labels::Classes { values, .. } = train.labels() else {
        panic!("class labels");
    };
    let y = &values[..rows];
    let model = MnistMlp::new(128);
    let batch = Batch {
        inputs: &[x],
        labels: &[y],
    };
    let mut whole = StepRunner::new(&model, 128, Strategy::Data { shards: Some(1) });
    let mut sharded = StepRunner::new(&model, 128, Strategy::Data { shards: Some(4) });
    assert_eq!(sharded.mode(), Resolved::Data(4));
    let l1 = whole.step(&model, &batch).unwrap();
    let l4 = pool(2).install(|| sharded.step(&model, &batch)).unwrap();
    assert!((l1 - l4).abs() <= 1e-5 * l1.abs(), "loss {l1} vs {l4}");
    let scale = whole.grads().iter().fold(0.0f32, |m, g| m.max(g.abs()));
    let err = whole
        .grads()
        .iter()
        .zip(sharded.grads())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 1e-5 * scale,
        "max gradient difference {err} (scale {scale})"
    );
    // A batch larger than the runner was built for is an error, not a panic.
    let big_x = vec![0.0f32; 129 * 784];
    let big_y = vec![0u32; 129];
    let too_big = Batch {
        inputs: &[&big_x],
        labels: &[&big_y],
    };
    assert!(sharded.step(&model, &too_big).is_err());
}

/// Parameters and running statistics of the batch norm + dropout MLP after
/// 12 data-parallel steps of batch 128 (two shards) on `threads` threads.
fn train_bn_dropout(threads: usize) -> (Vec<f32>, Vec<f32>) {
    let train = train_set();
    let mut model = mnist_bn_dropout::MnistBnDropout::new(128);
    let opts = FitOptions {
        epochs: Some(2),
        max_steps: Some(12),
        threads: Some(threads),
        parallel: Strategy::Data { shards: None },
        ..FitOptions::quiet()
    };
    fit(&mut model, &TrainData::new(&train), &opts).unwrap();
    (model.params().to_vec(), model.state().to_vec())
}

/// Dropout masks keyed by the global sample and per-shard batch statistics
/// reduced in shard order: still bit-identical on any thread count.
#[test]
fn batch_norm_and_dropout_are_bit_identical_on_any_thread_count() {
    let (p1, s1) = train_bn_dropout(1);
    for threads in [2, 8] {
        let (p, s) = train_bn_dropout(threads);
        assert!(same_bits(&p1, &p), "parameters: 1 vs {threads} threads");
        assert!(
            same_bits(&s1, &s),
            "running statistics: 1 vs {threads} threads"
        );
    }
    // Training moved the running statistics off their initial 0 and 1.
    let fresh = mnist_bn_dropout::MnistBnDropout::new(128);
    assert!(!same_bits(&s1, fresh.state()));
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}
