//! The training loop against hand-written models: multinomial logistic
//! regression with an analytic gradient (convergence, batch modes, resume,
//! checkpoints, evaluation, MNIST) and a one-vector "probe" whose gradient is
//! a constant, so every parameter update has a closed form (schedule, weight
//! decay).

mod support;

use std::path::Path;
use std::time::Instant;

use nnc_runtime::checkpoint::{self, CheckpointError};
use nnc_runtime::data::{load_mnist, Column, Dataset, Values};
use nnc_runtime::model::BatchSpec;
use nnc_runtime::model::{ModelSpec, ScheduleSpec};
use nnc_runtime::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use nnc_runtime::rng::Rng;
use nnc_runtime::train::{
    evaluate, fit, split_validation, FitError, FitOptions, TrainData, BEST_CHECKPOINT,
    LAST_CHECKPOINT,
};

use support::*;

// ------------------------------------------------------------------ convergence

#[test]
fn full_stochastic_and_mini_batch_training_all_learn() {
    let all = blobs(390, 1);
    let (train, val) = split_validation(&all, 0.25, 2).unwrap();
    assert_eq!((train.len(), val.len()), (292, 98));
    let data = TrainData::new(&train).with_validation(&val);
    let modes = [
        ("full", BatchSpec::Full, 0.1, 40),
        ("stochastic", BatchSpec::Size(1), 0.01, 2),
        ("mini-batch", BatchSpec::Size(16), 0.05, 4),
    ];
    for (mode, batch, lr, epochs) in modes {
        let mut model = LogReg::new(&SYN, 292);
        let before = evaluate(&mut model, &val).unwrap();
        let opts = FitOptions {
            batch: Some(batch),
            lr: Some(lr),
            epochs: Some(epochs),
            ..FitOptions::quiet()
        };
        let h = fit(&mut model, &data, &opts).unwrap();
        let per_epoch = match batch {
            BatchSpec::Full => 1,
            BatchSpec::Size(b) => 292usize.div_ceil(b) as u64,
        };
        assert!(h.finished, "{mode}");
        assert_eq!(h.steps, epochs * per_epoch, "{mode}");
        assert_eq!(h.epochs.len() as u64, epochs, "{mode}");
        let (first, last) = (&h.epochs[0], h.epochs.last().unwrap());
        assert!(last.train_loss < first.train_loss, "{mode}: {h:?}");
        let after = evaluate(&mut model, &val).unwrap();
        assert_eq!(
            Some(after.loss),
            last.val.as_ref().map(|v| v.loss),
            "{mode}"
        );
        assert!(
            after.loss < 0.5 * before.loss,
            "{mode}: {before:?} -> {after:?}"
        );
        assert!(after.accuracy().unwrap() >= 0.95, "{mode}: {after:?}");
        if batch == BatchSpec::Full {
            // Gradient descent on a convex loss with lr below 2/L: monotone.
            let losses: Vec<f64> = h.epochs.iter().map(|m| m.train_loss).collect();
            assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
        }
    }
}

#[test]
fn evaluate_matches_a_hand_computation_across_chunks() {
    let data = blobs(5, 3);
    let mut model = LogReg::new(&SYN, 2); // chunks of 2, 2, 1
    let mut rng = Rng::new(4);
    for p in model.params.iter_mut() {
        *p = rng.uniform_f32(-1.0, 1.0);
    }
    let (w, b) = model.params.split_at(12);
    let Values::Classes { values, .. } = data.column("y").unwrap().values() else {
        unreachable!()
    };
    let Values::F32(xs) = data.column("x").unwrap().values() else {
        unreachable!()
    };
    let (mut loss, mut correct) = (0.0f64, 0);
    for (i, &y) in values.iter().enumerate() {
        let x = &xs[i * 4..(i + 1) * 4];
        let z: Vec<f64> = (0..3)
            .map(|j| {
                b[j] as f64
                    + (0..4)
                        .map(|a| x[a] as f64 * w[a * 3 + j] as f64)
                        .sum::<f64>()
            })
            .collect();
        let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
        loss += lse - z[y as usize];
        let best = (0..3).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap();
        correct += usize::from(best == y as usize);
    }
    let before = model.params.clone();
    let e = evaluate(&mut model, &data).unwrap();
    assert!(
        (e.loss - loss / 5.0).abs() < 1e-5,
        "{} vs {}",
        e.loss,
        loss / 5.0
    );
    assert_eq!(e.accuracy(), Some(correct as f64 / 5.0));
    assert_eq!(model.params, before);
}

#[test]
fn split_validation_is_seeded() {
    let all = blobs(300, 5);
    let (a, va) = split_validation(&all, 0.2, 9).unwrap();
    let (b, vb) = split_validation(&all, 0.2, 9).unwrap();
    let (_, vc) = split_validation(&all, 0.2, 10).unwrap();
    assert_eq!((a.len(), va.len()), (240, 60));
    assert_eq!((&a, &va), (&b, &vb));
    assert_ne!(va, vc);
}

// ------------------------------------------------------------------ resume

/// Adam (state to restore), warmup + cosine (position in the schedule),
/// decoupled weight decay, shuffled batches of 16 with a short last batch.
fn resume_options(dir: &Path) -> FitOptions {
    FitOptions {
        optimizer: Some(OptimizerConfig::Adam(AdamConfig::default())),
        lr: Some(0.05),
        batch: Some(BatchSpec::Size(16)),
        epochs: Some(3),
        schedule: Some(ScheduleSpec::Cosine { min_lr: 1e-3 }),
        warmup: Some(5),
        weight_decay: Some(0.01),
        checkpoint_dir: Some(dir.to_path_buf()),
        ..FitOptions::quiet()
    }
}

#[test]
fn resume_is_bit_for_bit_at_epoch_ends_and_mid_epoch() {
    let all = blobs(390, 11);
    let (train, val) = split_validation(&all, 0.25, 12).unwrap();
    let data = TrainData::new(&train).with_validation(&val);
    let per_epoch = 292u64.div_ceil(16); // 19, the last batch of 4

    let straight_dir = TempDir::new("straight");
    let mut straight = LogReg::new(&SYN, 16);
    let mut rng = Rng::new(3);
    straight
        .params
        .iter_mut()
        .for_each(|p| *p = rng.uniform_f32(-0.1, 0.1));
    let fresh = straight.params.clone();
    let want = fit(&mut straight, &data, &resume_options(&straight_dir.0)).unwrap();
    assert!(want.finished);
    assert_eq!(want.steps, 3 * per_epoch);

    // Stop at the end of epoch 1, then 7 steps into epoch 2, then finish;
    // each leg in a new model whose parameters resume must overwrite.
    let dir = TempDir::new("legs");
    let last = dir.0.join(LAST_CHECKPOINT);
    let mut model = LogReg::new(&SYN, 16);
    model.params.copy_from_slice(&fresh);
    let h1 = fit(
        &mut model,
        &data,
        &FitOptions {
            max_steps: Some(per_epoch),
            ..resume_options(&dir.0)
        },
    )
    .unwrap();
    assert!(!h1.finished);
    assert_eq!((h1.steps, h1.epochs.len()), (per_epoch, 1));

    let mut model = LogReg::new(&SYN, 16);
    model.params.fill(0.5);
    let h2 = fit(
        &mut model,
        &data,
        &FitOptions {
            max_steps: Some(per_epoch + 7),
            resume: Some(last.clone()),
            ..resume_options(&dir.0)
        },
    )
    .unwrap();
    assert!(!h2.finished);
    assert_eq!((h2.steps, h2.epochs.len()), (per_epoch + 7, 1));
    let mid =
        checkpoint::load_training(&last, &SYN.params, &mut model.params.clone(), None).unwrap();
    let loader = mid.meta.loader.unwrap();
    assert_eq!(
        (mid.meta.step, loader.epoch, loader.position),
        (per_epoch + 7, 1, 7 * 16)
    );

    let mut model = LogReg::new(&SYN, 16);
    let got = fit(
        &mut model,
        &data,
        &FitOptions {
            resume: Some(last.clone()),
            ..resume_options(&dir.0)
        },
    )
    .unwrap();
    assert!(got.finished);
    assert_eq!(got.steps, want.steps);
    assert_eq!(bits(&model.params), bits(&straight.params));
    assert_eq!(trajectory(&got), trajectory(&want));

    // The final checkpoints agree too, and resuming a finished run is a no-op.
    let params_of = |p: &Path| {
        let mut buf = vec![0.0; SYN.param_count];
        checkpoint::load_training(p, &SYN.params, &mut buf, None).unwrap();
        bits(&buf)
    };
    assert_eq!(
        params_of(&last),
        params_of(&straight_dir.0.join(LAST_CHECKPOINT))
    );
    let again = fit(
        &mut model,
        &data,
        &FitOptions {
            resume: Some(last),
            ..resume_options(&dir.0)
        },
    )
    .unwrap();
    assert_eq!(trajectory(&again), trajectory(&want));
    assert_eq!(bits(&model.params), bits(&straight.params));
}

#[test]
fn best_checkpoint_is_the_epoch_with_the_lowest_validation_loss() {
    // Overlapping classes and a high learning rate on small batches: the
    // validation loss wanders instead of falling monotonically.
    let all = overlapping_blobs(200, 21, 1.0);
    let (train, val) = split_validation(&all, 0.25, 22).unwrap();
    let dir = TempDir::new("best");
    let mut model = LogReg::new(&SYN, 16);
    let opts = FitOptions {
        lr: Some(1.0),
        batch: Some(BatchSpec::Size(4)),
        epochs: Some(6),
        checkpoint_dir: Some(dir.0.clone()),
        ..FitOptions::quiet()
    };
    let h = fit(
        &mut model,
        &TrainData::new(&train).with_validation(&val),
        &opts,
    )
    .unwrap();
    let best_epoch = h
        .epochs
        .iter()
        .min_by(|a, b| {
            a.val
                .as_ref()
                .unwrap()
                .loss
                .total_cmp(&b.val.as_ref().unwrap().loss)
        })
        .unwrap()
        .epoch;
    let mut buf = vec![0.0; SYN.param_count];
    let best = checkpoint::load_training(dir.0.join(BEST_CHECKPOINT), &SYN.params, &mut buf, None)
        .unwrap();
    assert_eq!(best.meta.epoch, best_epoch, "{h:#?}");
    assert!(
        best_epoch < 6,
        "the data should make the last epoch not the best"
    );
    // best.safetensors holds the parameters as they were after that epoch:
    // the same run stopped there.
    let mut shorter = LogReg::new(&SYN, 16);
    let stopped = fit(
        &mut shorter,
        &TrainData::new(&train).with_validation(&val),
        &FitOptions {
            max_steps: Some(best_epoch * 150u64.div_ceil(4)),
            checkpoint_dir: None,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(stopped.epochs.len() as u64, best_epoch);
    assert_eq!(bits(&buf), bits(&shorter.params));
    let last = checkpoint::load_training(dir.0.join(LAST_CHECKPOINT), &SYN.params, &mut buf, None)
        .unwrap();
    assert_eq!(last.meta.epoch, 6);
    assert_eq!(bits(&buf), bits(&model.params));
    assert_eq!(last.meta.model_hash, "0000000000005151");
}

#[test]
fn bad_checkpoints_are_rejected_with_a_reason_and_change_nothing() {
    let all = blobs(60, 31);
    let data = TrainData::new(&all);
    let dir = TempDir::new("bad");
    let good = dir.0.join(LAST_CHECKPOINT);
    let adam = FitOptions {
        optimizer: Some(OptimizerConfig::Adam(AdamConfig::default())),
        epochs: Some(1),
        checkpoint_dir: Some(dir.0.clone()),
        ..FitOptions::quiet()
    };
    fit(&mut LogReg::new(&SYN, 16), &data, &adam).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let garbage = dir.0.join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").unwrap();
    let truncated = dir.0.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    // One flipped byte in the last value (an optimizer moment).
    let flipped = dir.0.join("flipped.safetensors");
    let mut flip = bytes.clone();
    *flip.last_mut().unwrap() ^= 0x40;
    std::fs::write(&flipped, &flip).unwrap();
    // Edited and saved again with fresh checksums: only the value checks
    // can tell.
    let nan_weight = edited(&good, &dir.0, "nan", "linear.weight", 1, f32::NAN, &[]);
    let negative_moment = edited(
        &good,
        &dir.0,
        "negative",
        "optimizer.exp_avg_sq",
        2,
        -1e-3,
        &[],
    );
    let bad_step = edited(
        &good,
        &dir.0,
        "step",
        "linear.bias",
        0,
        0.5,
        &[("nnc.step", "3"), ("nnc.optimizer.step", "3")],
    );

    let resume = |path: &Path| FitOptions {
        resume: Some(path.to_path_buf()),
        epochs: Some(2),
        ..adam.clone()
    };
    let sgd_momentum = OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::default()
    });
    let cases: Vec<(&str, &'static ModelSpec, FitOptions, &str)> = vec![
        ("garbage", &SYN, resume(&garbage), "corrupt checkpoint"),
        ("truncated", &SYN, resume(&truncated), "corrupt checkpoint"),
        ("missing", &SYN, resume(&dir.0.join("nope")), "nope"),
        ("flipped byte", &SYN, resume(&flipped), "fails its checksum"),
        (
            "NaN weight",
            &SYN,
            resume(&nan_weight),
            "tensor `linear.weight` holds NaN at index 1",
        ),
        (
            "negative second moment",
            &SYN,
            resume(&negative_moment),
            "`adam` state tensor `exp_avg_sq` holds -0.001 at element 2: an average of squares \
             is never negative",
        ),
        (
            "step count",
            &SYN,
            resume(&bad_step),
            "step 3 does not match the data position (epoch 1, sample 0 of batches of 16: step 4)",
        ),
        ("other model", &SYN_OTHER_HASH, resume(&good), "model hash"),
        (
            "other shape",
            &SYN_MORE_CLASSES,
            resume(&good),
            "shape [4, 3]",
        ),
        (
            "other optimizer",
            &SYN,
            FitOptions {
                optimizer: Some(sgd_momentum),
                ..resume(&good)
            },
            "saved by `adam`, loading into `sgd`",
        ),
        (
            "other batch",
            &SYN,
            FitOptions {
                batch: Some(BatchSpec::Size(8)),
                ..resume(&good)
            },
            "trained with batch 16, this run uses 8",
        ),
    ];
    for (what, spec, opts, reason) in cases {
        let mut model = LogReg::new(spec, 16);
        model.params.fill(0.25);
        let err = fit(&mut model, &data, &opts).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(reason), "{what}: {msg}");
        // Each names the file it refused.
        assert!(
            what == "other batch" || msg.contains(".safetensors") || msg.contains("nope"),
            "{what}: {msg}"
        );
        assert!(
            model.params.iter().all(|&p| p == 0.25),
            "{what}: params changed"
        );
    }
    let err = fit(&mut LogReg::new(&SYN_OTHER_HASH, 16), &data, &resume(&good)).unwrap_err();
    assert!(matches!(
        err,
        FitError::Checkpoint(CheckpointError::Mismatch { .. })
    ));
}

/// A copy of checkpoint `from` named `tag.safetensors` in `dir` with
/// element `index` of tensor `tensor` set to `value` (and the metadata
/// keys of `meta` replaced), written with valid checksums, as an editing tool would.
fn edited(
    from: &Path,
    dir: &Path,
    tag: &str,
    tensor: &str,
    index: usize,
    value: f32,
    meta: &[(&str, &str)],
) -> std::path::PathBuf {
    let (mut tensors, mut md) = checkpoint::load_tensors(from).unwrap();
    tensors.iter_mut().find(|t| t.name == tensor).unwrap().data[index] = value;
    for (k, v) in meta {
        md.insert((*k).into(), (*v).into());
    }
    let refs: Vec<checkpoint::TensorRef<'_>> = tensors
        .iter()
        .map(|t| checkpoint::TensorRef {
            name: &t.name,
            shape: &t.shape,
            data: &t.data,
        })
        .collect();
    let path = dir.join(format!("{tag}.safetensors"));
    checkpoint::save_tensors(&path, &refs, &md).unwrap();
    path
}

// ------------------------------------------------------------------ closed forms

#[test]
fn the_optimizer_receives_the_scheduled_learning_rate() {
    // Gradient 1 and plain SGD: each step subtracts exactly that step's lr.
    let (base32, min32, warmup, steps) = (0.1f32, 0.01f32, 3u64, 20u64);
    let (base, min) = (f64::from(base32), f64::from(min32));
    let expected_lr = |t: u64| -> f32 {
        let lr = if t < warmup {
            base * (t + 1) as f64 / warmup as f64
        } else {
            let frac = (t - warmup) as f64 / (steps - warmup) as f64;
            min + (base - min) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0
        };
        lr as f32
    };
    let mut probe = Probe::new([0.0, 1.0, -2.0], 1.0);
    let opts = FitOptions {
        lr: Some(base32),
        epochs: Some(5),
        schedule: Some(ScheduleSpec::Cosine { min_lr: min32 }),
        warmup: Some(warmup),
        ..FitOptions::quiet()
    };
    let h = fit(&mut probe, &TrainData::new(&probe_data(4)), &opts).unwrap();
    assert_eq!(h.steps, steps);
    let params = probe.params.clone();
    let trace = probe.trace.get_mut().unwrap();
    trace.push(params);
    for t in 0..steps as usize {
        let lr = expected_lr(t as u64);
        for (a, b) in trace[t].iter().zip(&trace[t + 1]) {
            assert_eq!(*b, *a - lr, "step {t}");
        }
    }
    for (e, m) in h.epochs.iter().enumerate() {
        assert_eq!(m.lr, expected_lr(4 * e as u64 + 3));
    }
}

#[test]
fn decoupled_weight_decay_follows_its_closed_form() {
    // Zero gradient: SGD alone would not move; decay shrinks by (1 - lr·wd).
    let (lr, wd) = (0.1f32, 0.5f32);
    let start = [1.0f32, -2.0, 0.5];
    let mut probe = Probe::new(start, 0.0);
    let opts = FitOptions {
        lr: Some(lr),
        weight_decay: Some(wd),
        epochs: Some(5),
        ..FitOptions::quiet()
    };
    let h = fit(&mut probe, &TrainData::new(&probe_data(4)), &opts).unwrap();
    assert_eq!(h.steps, 20);
    let params = probe.params.clone();
    let trace = probe.trace.get_mut().unwrap();
    trace.push(params);
    for w in trace.windows(2) {
        for (a, b) in w[0].iter().zip(&w[1]) {
            assert_eq!(*b, *a - lr * wd * *a);
        }
    }
    for (p, s) in probe.params.iter().zip(start) {
        let closed = s as f64 * (1.0 - lr as f64 * wd as f64).powi(20);
        assert!(
            (*p as f64 - closed).abs() < 1e-6 * closed.abs(),
            "{p} vs {closed}"
        );
    }

    // AdamW carries its own decay: the `train` block's is not applied again,
    // and with zero gradient and zero AdamW decay nothing moves.
    let mut probe = Probe::new(start, 0.0);
    let adamw = FitOptions {
        optimizer: Some(OptimizerConfig::AdamW(AdamConfig::default())),
        ..opts
    };
    fit(&mut probe, &TrainData::new(&probe_data(4)), &adamw).unwrap();
    assert_eq!(probe.params, start);
}

// ------------------------------------------------------------------ errors

#[test]
fn unusable_configurations_are_rejected_clearly() {
    let data = blobs(30, 41);
    let train = TrainData::new(&data);
    let err = |spec: &'static ModelSpec, max: usize, data: &TrainData<'_>, opts: FitOptions| {
        fit(&mut LogReg::new(spec, max), data, &opts)
            .unwrap_err()
            .to_string()
    };
    let quiet = FitOptions::quiet;
    // The model's maximum batch sizes its own buffers (evaluation, predict);
    // `fit` sizes the step's, so a larger training batch is fine.
    let mut small = LogReg::new(&SYN, 8);
    fit(&mut small, &train, &quiet()).unwrap();
    let msg = err(&TWO_INPUTS, 16, &train, quiet());
    assert!(
        msg.contains(
            "training set does not fit model `LogReg`: no column for input `z` (4 real values)"
        ),
        "{msg}"
    );

    let wide = Dataset::new(vec![
        Column::f32("x", &[5], vec![0.0; 10]),
        Column::classes("y", &[], vec![0, 1], 3),
    ])
    .unwrap();
    let msg = err(&SYN, 16, &TrainData::new(&wide), quiet());
    assert!(
        msg.contains("training set does not fit model `LogReg`"),
        "{msg}"
    );
    assert!(
        msg.contains("takes 4 values per sample, column `x` has 5"),
        "{msg}"
    );
    let msg = err(&SYN, 16, &train.with_validation(&wide), quiet());
    assert!(msg.contains("validation set does not fit"), "{msg}");
    let targets = Dataset::new(vec![
        Column::f32("x", &[4], vec![0.0; 8]),
        Column::f32("y", &[], vec![0.0; 2]),
    ])
    .unwrap();
    let msg = err(&SYN, 16, &TrainData::new(&targets), quiet());
    assert!(
        msg.contains(
            "label `y` (1 of 3 classes) takes class indices, column `y` holds real numbers"
        ),
        "{msg}"
    );

    // Divergence is reported with its step instead of training on NaNs.
    let mut probe = Probe::new([0.0; 3], 1.0);
    let opts = FitOptions {
        lr: Some(1e38),
        ..quiet()
    };
    let e = fit(&mut probe, &TrainData::new(&probe_data(8)), &opts).unwrap_err();
    assert!(matches!(e, FitError::Diverged { step: 2, .. }), "{e}");
}

// ------------------------------------------------------------------ MNIST

#[test]
fn mnist_logistic_regression_learns_in_one_epoch() {
    let t0 = Instant::now();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-10k");
    let mnist = load_mnist(&dir).unwrap();
    let subset: Vec<usize> = (0..2000).collect();
    let train = mnist.train.subset(&subset).unwrap();
    let test = mnist.test;
    let mut model = LogReg::new(&MNIST, 256);
    let opts = FitOptions {
        lr: Some(0.5),
        batch: Some(BatchSpec::Size(32)),
        epochs: Some(1),
        ..FitOptions::quiet()
    };
    let h = fit(&mut model, &TrainData::new(&train), &opts).unwrap();
    let e = evaluate(&mut model, &test).unwrap();
    let acc = e.accuracy().unwrap();
    eprintln!(
        "MNIST logreg, 2000 samples, 1 epoch: train loss {:.3}, test loss {:.3}, test accuracy {:.1}% ({:.2?})",
        h.epochs[0].train_loss,
        e.loss,
        acc * 100.0,
        t0.elapsed()
    );
    assert!(acc > 0.80, "test accuracy {acc}");
}
