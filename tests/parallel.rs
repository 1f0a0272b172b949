//! The parallel runtime: a data-parallel or intra-op training run gives
//! bit-identical parameters on 1, 2 or 8 threads, data-parallel
//! sharding computes the same gradient as one shard (to float rounding),
//! and `fit_with` on 2 ranks (threads sharing memory, no MPI) reproduces
//! 1 rank bit for bit; `predict` (the MLP's and LeNet's) is bit-identical on
//! any thread count.

use nnc::runtime::collective::{Collective, Threads};
use nnc::runtime::data::load_mnist;
use nnc::runtime::optim::Build;
use nnc::runtime::parallel::{Resolved, StepRunner, Strategy};
use nnc::runtime::{fit, AugmentSpec, Batch, FitOptions, Model, TrainData};

mod support;
use support::assert_close_grads;

mod mnist_mlp {
    nnc::include_model!("mnist_mlp");
}
use mnist_mlp::MnistMlp;
mod mnist_bn_dropout {
    nnc::include_model!("mnist_bn_dropout");
}
mod lenet {
    nnc::include_model!("lenet");
}
use lenet::LeNet;

fn train_set() -> nnc::runtime::data::Dataset {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-10k");
    let mnist = load_mnist(dir).expect("bundled MNIST");
    let train = mnist.train;
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

/// `predict` splits its matrix products across the caller's pool: at batch
/// 256 (products large enough to split) its outputs are the same bits on
/// 1, 2 and 8 threads, and each sample's are those of a batch-1 call (a
/// product of one row reads its weights in place, a tall one packs them).
#[test]
fn predict_is_bit_identical_on_any_thread_count_and_batch() {
    // Pixel-like values in [0, 1], no two rows alike.
    let x: Vec<f32> = (0..256 * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let run = |threads: usize| {
        let mut model = MnistMlp::new(256);
        let mut probs = vec![0.0; 256 * 10];
        pool(threads).install(|| model.predict(&x, &mut probs).unwrap());
        probs
    };
    let one = run(1);
    assert!(same_bits(&one, &run(2)), "1 vs 2 threads");
    assert!(same_bits(&one, &run(8)), "1 vs 8 threads");
    let mut model = MnistMlp::new(1);
    let mut probs = [0.0; 10];
    for i in [0, 1, 127, 255] {
        model.predict(&x[i * 784..][..784], &mut probs).unwrap();
        assert!(same_bits(&probs, &one[i * 10..][..10]), "sample {i} alone");
    }
}

/// LeNet's `predict` also cuts the batch of its convolutions and pooling
/// over the pool's threads (each part with its own scratch): at batch 256
/// its outputs are the same bits on 1, 2 and 8 threads, and each sample's
/// are those of a batch-1 call (which splits nothing).
#[test]
fn lenet_predict_is_bit_identical_on_any_thread_count_and_batch() {
    let x: Vec<f32> = (0..256 * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let run = |threads: usize| {
        let mut model = LeNet::new(256);
        let mut probs = vec![0.0; 256 * 10];
        pool(threads).install(|| model.predict(&x, &mut probs).unwrap());
        probs
    };
    let one = run(1);
    assert!(same_bits(&one, &run(2)), "1 vs 2 threads");
    assert!(same_bits(&one, &run(8)), "1 vs 8 threads");
    let mut model = LeNet::new(1);
    let mut probs = [0.0; 10];
    for i in [0, 1, 127, 128, 255] {
        pool(2).install(|| model.predict(&x[i * 784..][..784], &mut probs).unwrap());
        assert!(same_bits(&probs, &one[i * 10..][..10]), "sample {i} alone");
    }
}

/// Four shards weighted by size give one shard's gradient: the reduction
/// is a correct mean, on a batch that does not split evenly.
#[test]
fn sharded_gradient_equals_the_whole_batch_gradient() {
    let train = train_set();
    let rows = 103;
    let x = &train.f32_values("image").unwrap()[..rows * 784];
    let values = train.class_values("label").unwrap();
    let y = &values[..rows];
    let model = MnistMlp::new(128);
    let batch = Batch {
        inputs: &[x],
        labels: &[y],
    };
    let mut whole =
        StepRunner::new(&model, 128, Strategy::Data { shards: Some(1) }).expect("buffers");
    let mut sharded =
        StepRunner::new(&model, 128, Strategy::Data { shards: Some(4) }).expect("buffers");
    assert_eq!(sharded.mode(), Resolved::Data(4));
    let l1 = whole.step(&model, &batch).unwrap();
    let l4 = pool(2).install(|| sharded.step(&model, &batch)).unwrap();
    assert_close_grads((l1, whole.grads()), (l4, sharded.grads()));
    // A batch larger than the runner was built for is an error, not a panic.
    let big_x = vec![0.0f32; 129 * 784];
    let big_y = vec![0u32; 129];
    let too_big = Batch {
        inputs: &[&big_x],
        labels: &[&big_y],
    };
    assert!(sharded.step(&model, &too_big).is_err());
}

/// Summing the shards' gradients inside the update (`step_deferred_at`, then
/// `update`) moves the parameters exactly as summing them first (`step_at`,
/// then the optimizer's `step`): with Adam and SGD with momentum, which
/// stream the sum, and RMSprop, which needs it whole; on 1 and 2 threads,
/// on batches that fill the runner and batches that do not.
#[test]
fn update_with_deferred_sum_equals_step_then_optimizer() {
    use nnc::runtime::optim::{AdamConfig, OptimizerConfig, RmspropConfig, SgdConfig};
    let train = train_set();
    let values = train.class_values("label").unwrap();
    let configs = [
        OptimizerConfig::Adam(AdamConfig::default()),
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            ..Default::default()
        }),
        OptimizerConfig::Rmsprop(RmspropConfig::default()),
    ];
    for threads in [1, 2] {
        for config in configs {
            let runs = [false, true].map(|deferred| {
                let mut model = MnistMlp::new(128);
                let n = model.spec().param_count;
                let mut opt = config.build(n).unwrap();
                let mut runner = StepRunner::new(&model, 128, Strategy::Data { shards: Some(3) })
                    .expect("buffers");
                let mut losses = Vec::new();
                pool(threads).install(|| {
                    for (i, rows) in [128, 128, 77, 128].into_iter().enumerate() {
                        let at = i * 128;
                        let batch = Batch {
                            inputs: &[
                                &train.f32_values("image").unwrap()[at * 784..(at + rows) * 784]
                            ],
                            labels: &[&values[at..at + rows]],
                        };
                        let key = Default::default();
                        if deferred {
                            losses.push(runner.step_deferred_at(&model, &batch, key).unwrap());
                            runner.update(&mut *opt, model.params_mut(), 1e-2).unwrap();
                        } else {
                            losses.push(runner.step_at(&model, &batch, key).unwrap());
                            opt.step(model.params_mut(), runner.grads(), 1e-2).unwrap();
                        }
                    }
                });
                (model.params().to_vec(), losses, opt.state())
            });
            let [(p1, l1, s1), (p2, l2, s2)] = runs;
            let what = format!("{config:?} on {threads} threads");
            assert!(same_bits(&p1, &p2), "parameters: {what}");
            assert!(same_bits(&l1, &l2), "losses: {what}");
            assert_eq!(s1, s2, "optimizer state: {what}");
            assert!(!same_bits(&p1, MnistMlp::new(128).params()));
        }
    }
}

/// The gradient summed inside an update is not kept, so reading it is a
/// loud error rather than a stale answer.
#[test]
#[should_panic(expected = "summed inside update")]
fn grads_after_a_deferred_step_panics() {
    let (_, runner) = one_deferred_step();
    let _ = runner.grads();
}

/// A deferred step's gradient is summed into its first update and not
/// kept, so a second update cannot silently apply something else.
#[test]
#[should_panic(expected = "already applied")]
fn a_second_update_of_a_deferred_step_panics() {
    let (mut model, mut runner) = one_deferred_step();
    let spec = model.spec();
    let mut opt = spec.train.optimizer.build(spec.param_count).unwrap();
    runner.update(&mut *opt, model.params_mut(), 1e-3).unwrap();
    let _ = runner.update(&mut *opt, model.params_mut(), 1e-3);
}

/// A model and a two-shard runner after `step_deferred_at` on the first 128
/// training digits.
fn one_deferred_step() -> (MnistMlp, StepRunner) {
    let train = train_set();
    let values = train.class_values("label").unwrap();
    let model = MnistMlp::new(128);
    let mut runner =
        StepRunner::new(&model, 128, Strategy::Data { shards: Some(2) }).expect("buffers");
    let batch = Batch {
        inputs: &[&train.f32_values("image").unwrap()[..128 * 784]],
        labels: &[&values[..128]],
    };
    runner
        .step_deferred_at(&model, &batch, Default::default())
        .unwrap();
    (model, runner)
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

/// Parameters after 12 steps of batch 512 (8 data-parallel shards) on
/// `ranks` ranks, one thread each, with per-rank max-steps `steps(rank)`;
/// every rank's result.
fn train_ranks(ranks: usize, steps: impl Fn(usize) -> u64 + Sync) -> Vec<Result<Vec<f32>, String>> {
    train_ranks_with(ranks, steps, None)
}

/// [`train_ranks`] with the `train` block's augmentation replaced.
fn train_ranks_with(
    ranks: usize,
    steps: impl Fn(usize) -> u64 + Sync,
    augment: Option<AugmentSpec>,
) -> Vec<Result<Vec<f32>, String>> {
    let train = train_set();
    std::thread::scope(|s| {
        let handles: Vec<_> = Threads::group(ranks)
            .into_iter()
            .map(|comm| {
                let (train, steps) = (&train, &steps);
                s.spawn(move || {
                    let mut model = MnistMlp::new(512);
                    if comm.rank() != 0 {
                        // Overwritten by rank 0's broadcast.
                        model.params_mut().fill(f32::NAN);
                    }
                    let opts = FitOptions {
                        epochs: Some(6),
                        batch: Some(nnc::runtime::BatchSpec::Size(512)),
                        max_steps: Some(steps(comm.rank())),
                        threads: Some(1),
                        parallel: Strategy::Data { shards: None },
                        augment,
                        ..FitOptions::quiet()
                    };
                    nnc::runtime::fit_with(&mut model, &TrainData::new(train), &opts, &comm)
                        .map(|_| model.params().to_vec())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn two_ranks_reproduce_one_rank_bit_for_bit_and_more_agree_closely() {
    let one = train_ranks(1, |_| 12).remove(0).unwrap();
    for (r, params) in train_ranks(2, |_| 12).into_iter().enumerate() {
        assert!(same_bits(&one, &params.unwrap()), "rank {r} of 2");
    }
    // Three ranks split the 8 shards 3/3/2, off the reduction tree's
    // halves: a different rounding, within float precision.
    let scale = one.iter().fold(0.0f32, |m, p| m.max(p.abs()));
    for (r, params) in train_ranks(3, |_| 12).into_iter().enumerate() {
        let params = params.unwrap();
        let err = one
            .iter()
            .zip(&params)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-5 * scale, "rank {r} of 3: max difference {err}");
    }
    let start = MnistMlp::new(512).params().to_vec();
    assert!(!same_bits(&one, &start));
}

#[test]
fn ranks_that_disagree_all_stop_naming_the_rank_and_the_value() {
    let results = train_ranks(3, |r| if r == 2 { 5 } else { 12 });
    for (r, result) in results.into_iter().enumerate() {
        assert_eq!(
            result.unwrap_err(),
            "ranks disagree: rank 2 has max steps 5 (rank 0: 12); \
             every rank must run the same model on the same configuration",
            "rank {r}"
        );
    }
}

/// Every augmentation of images at once.
const AUGMENT: AugmentSpec = AugmentSpec {
    shift: 2,
    rotate: 10.0,
    flip: true,
    cutout: 6,
    noise: 0.05,
};

/// Each sample draws its augmentation from (seed, epoch, index): the
/// parameters are the same bits on 1 and 2 threads and on 1 and 2 ranks
/// (each rank augmenting only its rows), and differ from a run without it.
#[test]
fn augmented_training_is_bit_identical_on_any_thread_and_rank_count() {
    let run = |threads: usize| {
        let train = train_set();
        let mut model = MnistMlp::new(128);
        let opts = FitOptions {
            epochs: Some(2),
            max_steps: Some(12),
            threads: Some(threads),
            parallel: Strategy::Data { shards: None },
            augment: Some(AUGMENT),
            ..FitOptions::quiet()
        };
        fit(&mut model, &TrainData::new(&train), &opts).unwrap();
        model.params().to_vec()
    };
    let one = run(1);
    assert!(same_bits(&one, &run(2)), "1 vs 2 threads");
    let plain = train(Strategy::Data { shards: None }, 1);
    assert!(!same_bits(&one, &plain), "augmentation changed nothing");
    let rank = train_ranks_with(1, |_| 12, Some(AUGMENT))
        .remove(0)
        .unwrap();
    for (r, params) in train_ranks_with(2, |_| 12, Some(AUGMENT))
        .into_iter()
        .enumerate()
    {
        assert!(same_bits(&rank, &params.unwrap()), "rank {r} of 2");
    }
}
