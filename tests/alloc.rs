//! `train_step`, `loss`, `loss_with_scores`, `predict`, `predict_scores`
//! and `input_gradient` of generated code, and the shared training step (`Trainer` fed by a
//! `Batcher`, as `fit` runs it) for every kind of loss, allocate nothing
//! after the first call (`predict` also split over two threads): a counting
//! global allocator watches them.

use nnc::runtime::data::{Batcher, Binding, Column, Dataset};
use nnc::runtime::optim::Build;
use nnc::runtime::parallel::{StepRunner, Strategy};
use nnc::runtime::{Batch, Model, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

mod mnist_mlp {
    nnc::include_model!("mnist_mlp");
}
mod every_op {
    nnc::include_model!("every_op");
}
mod conv_net {
    nnc::include_model!("conv_net");
}
mod norm_net {
    nnc::include_model!("norm_net");
}

mod lenet {
    nnc::include_model!("lenet");
}
mod transformer {
    nnc::include_model!("transformer");
}
mod regression {
    nnc::include_model!("regression");
}
mod binary {
    nnc::include_model!("binary");
}
mod two_inputs {
    nnc::include_model!("two_inputs");
}
mod mnist_bn_dropout_explain {
    nnc::include_model!("mnist_bn_dropout_explain");
}

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f`.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Every entry point once; `read` are the inputs `predict` reads.
fn steps<M: Model>(
    model: &mut M,
    inputs: &[&[f32]],
    labels: &[&[u32]],
    read: &[&[f32]],
    outputs: &mut [&mut [f32]],
) {
    let batch = Batch { inputs, labels };
    let loss = model.train_step(&batch).expect("valid batch");
    assert!(loss.is_finite());
    model.loss(&batch).expect("valid batch");
    // A scores buffer on the stack: big enough for every model here.
    let mut scores = [0.0f32; 16 * 10 * 3];
    let rows = inputs[0].len() / model.spec().inputs[0].per_sample;
    let scores = &mut scores[..rows * model.spec().loss.scores];
    model.loss_with_scores(&batch, scores).expect("valid batch");
    model.predict_scores(read, scores).expect("valid batch");
    model.predict(read, outputs).expect("valid batch");
}

// One test function: the counter is global, and tests in one binary run on
// several threads.
#[test]
fn generated_steps_do_not_allocate_after_the_first_call() {
    // The counter is process-wide. Generated products may be split over the
    // global pool, and a worker that a busy machine leaves out of the first
    // call would otherwise allocate its buffers in a measured one.
    nnc::runtime::gemm::reserve_workspaces();
    let image: Vec<f32> = (0..784 * 32).map(|i| (i % 255) as f32 / 255.0).collect();
    let digit: Vec<u32> = (0..32).map(|i| i % 10).collect();
    let mut probs = vec![0.0f32; 10 * 32];
    let mut model = mnist_mlp::MnistMlp::new(32);
    steps(
        &mut model,
        &[&image],
        &[&digit],
        &[&image],
        &mut [&mut probs],
    );
    let n = allocations(|| {
        for _ in 0..3 {
            steps(
                &mut model,
                &[&image],
                &[&digit],
                &[&image],
                &mut [&mut probs],
            );
        }
    });
    assert_eq!(n, 0, "MnistMlp allocated {n} times in 3 steps");

    let x = vec![0.25f32; 12 * 5];
    let target = vec![0.5f32; 4 * 5];
    let y = vec![1u32; 5];
    let mut out = vec![0.0f32; 4 * 5];
    // Its second output: the fake-quantized scores.
    let mut quantized = vec![0.0f32; 4 * 5];
    let mut model = every_op::EveryOp::new(5);
    let outputs: &mut [&mut [f32]] = &mut [&mut out, &mut quantized];
    steps(&mut model, &[&x, &target], &[&y], &[&x], outputs);
    let n = allocations(|| steps(&mut model, &[&x, &target], &[&y], &[&x], outputs));
    assert_eq!(n, 0, "EveryOp allocated {n} times in one step");
    let image = vec![0.25f32; 100 * 4];
    let digit = vec![1u32; 4];
    let mut probs = vec![0.0f32; 4 * 4];
    let mut model = conv_net::ConvNet::new(4);
    steps(
        &mut model,
        &[&image],
        &[&digit],
        &[&image],
        &mut [&mut probs],
    );
    let n = allocations(|| {
        steps(
            &mut model,
            &[&image],
            &[&digit],
            &[&image],
            &mut [&mut probs],
        )
    });
    assert_eq!(n, 0, "ConvNet allocated {n} times in one step");
    // Batch norm and dropout: the training step with its statistics and
    // running update, and inference with the running statistics.
    let image = vec![0.25f32; 50 * 4];
    let image: Vec<f32> = image
        .iter()
        .enumerate()
        .map(|(i, v)| v * (i % 7) as f32)
        .collect();
    let digit = vec![1u32; 4];
    let mut probs = vec![0.0f32; 3 * 4];
    let mut model = norm_net::NormNet::new(4);
    steps(
        &mut model,
        &[&image],
        &[&digit],
        &[&image],
        &mut [&mut probs],
    );
    let n = allocations(|| {
        steps(
            &mut model,
            &[&image],
            &[&digit],
            &[&image],
            &mut [&mut probs],
        )
    });
    assert_eq!(n, 0, "NormNet allocated {n} times in one step");
    let tokens: Vec<f32> = (0..16 * 3).map(|i| (i % 10) as f32).collect();
    let reversed: Vec<u32> = (0..16 * 3).map(|i| 9 - i % 10).collect();
    let mut logits = vec![0.0f32; 16 * 10 * 3];
    let mut model = transformer::Transformer::new(3);
    steps(
        &mut model,
        &[&tokens],
        &[&reversed],
        &[&tokens],
        &mut [&mut logits],
    );
    let n = allocations(|| {
        steps(
            &mut model,
            &[&tokens],
            &[&reversed],
            &[&tokens],
            &mut [&mut logits],
        )
    });
    assert_eq!(n, 0, "Transformer allocated {n} times in one step");

    // The parallel runner with Adam: data parallel (four shards on two
    // threads) and intra-op, each with the gradient summed before the
    // update and (as `fit` drives it) inside it. Each worker thread grows its
    // GEMM packing buffers the first time it meets a shape, so warm up first;
    // everything runs inside one `install` (injecting a job from outside
    // the pool can allocate queue blocks).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let model_spec = &mnist_mlp::MNIST_MLP_SPEC;
    let strategies = [Strategy::Data { shards: Some(4) }, Strategy::IntraOp];
    for (strategy, deferred) in strategies.into_iter().flat_map(|s| [(s, false), (s, true)]) {
        let mut model = mnist_mlp::MnistMlp::new(128);
        let image: Vec<f32> = (0..784 * 128).map(|i| (i % 251) as f32 / 251.0).collect();
        let digit: Vec<u32> = (0..128).map(|i| i % 10).collect();
        let mut runner = pool.install(|| StepRunner::new(&model, 128, strategy).expect("buffers"));
        let mut adam = model_spec
            .train
            .optimizer
            .build(model_spec.param_count)
            .unwrap();
        let n = pool.install(|| {
            let mut step = || {
                let batch = Batch {
                    inputs: &[&image],
                    labels: &[&digit],
                };
                if deferred {
                    let key = Default::default();
                    let loss = runner
                        .step_deferred_at(&model, &batch, key)
                        .expect("valid batch");
                    assert!(loss.is_finite());
                    runner.update(&mut *adam, model.params_mut(), 1e-3).unwrap();
                } else {
                    let loss = runner.step(&model, &batch).expect("valid batch");
                    assert!(loss.is_finite());
                    adam.step(model.params_mut(), runner.grads(), 1e-3).unwrap();
                }
            };
            for _ in 0..10 {
                step();
            }
            allocations(|| {
                for _ in 0..5 {
                    step();
                }
            })
        });
        assert_eq!(
            n, 0,
            "{strategy:?} (deferred sum: {deferred}) allocated {n} times in 5 steps"
        );
    }

    // LeNet's `predict` at batch 64 on the two threads: its convolutions
    // and pooling cut the batch over them, each part with its thread's own
    // scratch (given to every worker by the first call).
    let image: Vec<f32> = (0..784 * 64).map(|i| (i % 253) as f32 / 253.0).collect();
    let mut probs = vec![0.0f32; 10 * 64];
    let mut model = lenet::LeNet::new(64);
    let n = pool.install(|| {
        model.predict(&image, &mut probs).expect("valid batch");
        allocations(|| {
            for _ in 0..5 {
                model.predict(&image, &mut probs).expect("valid batch");
            }
        })
    });
    assert_eq!(
        n, 0,
        "LeNet's predict on two threads allocated {n} times in 5 calls"
    );

    // The runner on a model with state, as `fit` drives it: keyed steps on
    // two shards, then the running update.
    let mut model = norm_net::NormNet::new(8);
    let image: Vec<f32> = (0..50 * 8).map(|i| (i % 13) as f32 / 13.0).collect();
    let digit: Vec<u32> = (0..8).map(|i| i % 3).collect();
    let mut runner = pool.install(|| {
        StepRunner::new(&model, 8, Strategy::Data { shards: Some(2) }).expect("buffers")
    });
    let n = pool.install(|| {
        let mut step = |i: u64| {
            let batch = Batch {
                inputs: &[&image],
                labels: &[&digit],
            };
            let key = nnc::runtime::StepKey {
                seed: 1,
                step: i,
                offset: 0,
            };
            let loss = runner.step_at(&model, &batch, key).expect("valid batch");
            assert!(loss.is_finite());
            model.update_state(runner.stats());
        };
        for i in 0..5 {
            step(i);
        }
        allocations(|| {
            for i in 5..10 {
                step(i);
            }
        })
    });
    assert_eq!(n, 0, "NormNet's runner allocated {n} times in 5 steps");

    // The one training step `fit` takes, for every kind of loss: the
    // Batcher gathers a shuffled batch into its buffers and the Trainer
    // steps (data parallel, Adam with the deferred gradient sum).
    trainer_steps_allocate_nothing(&pool, regression::Regression::new(16), || {
        Dataset::new(vec![
            Column::f32(
                "x",
                &[3],
                (0..64 * 3).map(|i| (i % 7) as f32 / 7.0).collect(),
            ),
            Column::f32("y", &[1], (0..64).map(|i| (i % 5) as f32).collect()),
        ])
    });
    trainer_steps_allocate_nothing(&pool, binary::Binary::new(16), || {
        Dataset::new(vec![
            Column::f32(
                "x",
                &[2],
                (0..64 * 2).map(|i| (i % 9) as f32 / 9.0).collect(),
            ),
            Column::f32("inside", &[1], (0..64).map(|i| (i % 2) as f32).collect()),
        ])
    });
    trainer_steps_allocate_nothing(&pool, two_inputs::TwoInputs::new(16), || {
        Dataset::new(vec![
            Column::f32("a", &[4], (0..64 * 4).map(|i| (i % 5) as f32).collect()),
            Column::f32("b", &[3], (0..64 * 3).map(|i| (i % 3) as f32).collect()),
            Column::classes("y", &[], (0..64).map(|i| i % 3).collect(), 3),
        ])
    });

    // `input_gradient` (compiled with `explain`), on a modal network: no
    // allocation after the first call either.
    let image = vec![0.25f32; 784 * 8];
    let cotangent = vec![1.0f32; 10 * 8];
    let mut d_image = vec![0.0f32; 784 * 8];
    let mut scores = vec![0.0f32; 10 * 8];
    let mut model = mnist_bn_dropout_explain::MnistBnDropout::new(8);
    model
        .input_gradient(&image, &cotangent, &mut d_image, &mut scores)
        .expect("valid batch");
    let n = allocations(|| {
        for _ in 0..3 {
            model
                .input_gradient(&image, &cotangent, &mut d_image, &mut scores)
                .expect("valid batch");
        }
    });
    assert_eq!(n, 0, "input_gradient allocated {n} times in 3 calls");

    // The counter does count: a Vec allocates.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);
}

/// Ten warm-up steps, then five measured, of the shared training step on
/// batches of 16 gathered from `data` in a shuffled order.
fn trainer_steps_allocate_nothing<M: Model>(
    pool: &rayon::ThreadPool,
    mut model: M,
    data: impl FnOnce() -> Result<Dataset, nnc::runtime::data::DataError>,
) {
    let data = data().unwrap();
    let name = model.spec().name.to_string();
    let binding = Binding::for_training(model.spec(), &data, "data").unwrap();
    let mut batcher = Batcher::new(binding, 16);
    let strategy = Strategy::Data { shards: Some(2) };
    let mut trainer = pool.install(|| Trainer::single(&model, 16, 1000, strategy).unwrap());
    let order: Vec<usize> = (0..64).map(|i| (i * 37) % 64).collect();
    let n = pool.install(|| {
        let mut step = |i: usize| {
            let at = (i * 16) % 64;
            batcher.gather(&data, &order[at..at + 16]).unwrap();
            let loss = batcher
                .with_batch(0..16, |b| trainer.step(&mut model, b))
                .expect("valid batch");
            assert!(loss.is_finite());
        };
        for i in 0..10 {
            step(i);
        }
        allocations(|| {
            for i in 10..15 {
                step(i);
            }
        })
    });
    assert_eq!(
        n, 0,
        "{name}: the shared training step allocated {n} times in 5 steps"
    );
}
