//! What hangs off `fit` besides the step: early stopping, gradient
//! clipping, the metrics log, and the checkpoint directory's rules.

mod support;

use nnc_runtime::model::{BatchSpec, Model};
use nnc_runtime::optim::{OptimizerConfig, SgdConfig};
use nnc_runtime::train::log::{read_log, METRICS_LOG};
use nnc_runtime::train::{
    fit, split_validation, EarlyStopping, FitOptions, TrainData, BEST_CHECKPOINT, LAST_CHECKPOINT,
};
use support::*;

#[test]
fn early_stopping_stops_and_restores_the_best_epoch_bit_for_bit() {
    // Overlapping blobs and a large rate: the validation loss bottoms out
    // early and then wanders, so patience runs out long before 60 epochs.
    let all = overlapping_blobs(240, 21, 0.8);
    let (train, val) = split_validation(&all, 0.5, 22).unwrap();
    let data = TrainData::new(&train).with_validation(&val);
    let dir = TempDir::new("early");
    let opts = FitOptions {
        epochs: Some(60),
        lr: Some(2.0),
        batch: Some(BatchSpec::Size(8)),
        early_stopping: Some(EarlyStopping {
            patience: 3,
            min_delta: 0.0,
            restore_best: true,
        }),
        checkpoint_dir: Some(dir.0.clone()),
        ..FitOptions::quiet()
    };
    let mut model = LogReg::new(&SYN, 64);
    let h = fit(&mut model, &data, &opts).unwrap();
    assert!(h.stopped_early && h.finished, "{h:?}");
    let losses: Vec<f64> = h
        .epochs
        .iter()
        .map(|e| e.val.as_ref().unwrap().loss)
        .collect();
    let best = losses
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(
        h.epochs.len(),
        best + 1 + 3,
        "stops 3 epochs after the best: {losses:?}"
    );
    // The restored parameters are the best epoch's, as `best.safetensors`
    // saved them then.
    let mut saved = vec![0.0; SYN.param_count];
    nnc_runtime::checkpoint::load_training(
        dir.0.join(BEST_CHECKPOINT),
        &SYN.params,
        &mut saved,
        None,
    )
    .unwrap();
    assert_eq!(bits(model.params()), bits(&saved));
    let mut last = vec![0.0; SYN.param_count];
    nnc_runtime::checkpoint::load_training(
        dir.0.join(LAST_CHECKPOINT),
        &SYN.params,
        &mut last,
        None,
    )
    .unwrap();
    assert_ne!(
        bits(&last),
        bits(&saved),
        "the last epoch moved on from the best"
    );
}

#[test]
fn clipping_bounds_the_global_norm() {
    // The probe's gradient is 10 on each of its 3 parameters: norm √300.
    // Plain SGD at lr 1 clipped to norm 1 moves each parameter by
    // 10 · 1 / (√300 + 1e-6) per step, the closed form of clip-then-step.
    let opts = FitOptions {
        optimizer: Some(OptimizerConfig::Sgd(SgdConfig::default())),
        lr: Some(1.0),
        epochs: Some(1),
        batch: Some(BatchSpec::Size(1)),
        max_steps: Some(1),
        clip_norm: Some(1.0),
        ..FitOptions::quiet()
    };
    let mut probe = Probe::new([0.0; 3], 10.0);
    fit(&mut probe, &TrainData::new(&probe_data(4)), &opts).unwrap();
    let coef = (1.0f64 / (300f64.sqrt() + 1e-6)) as f32;
    let step = 10.0 * coef;
    for &p in probe.params() {
        assert_eq!(p, -step);
    }
    let moved = probe.params().iter().map(|p| p * p).sum::<f32>().sqrt();
    assert!((moved - 1.0).abs() < 1e-5, "update norm {moved}");
    // A norm below the bound is left alone.
    let mut probe = Probe::new([0.0; 3], 0.1);
    let opts = FitOptions {
        clip_norm: Some(1.0),
        ..opts
    };
    fit(&mut probe, &TrainData::new(&probe_data(4)), &opts).unwrap();
    assert_eq!(probe.params(), &[-0.1; 3]);
    // A bound that is not a positive number is refused.
    let bad = FitOptions {
        clip_norm: Some(0.0),
        ..opts
    };
    let e = fit(&mut probe, &TrainData::new(&probe_data(4)), &bad).unwrap_err();
    assert!(e.to_string().contains("clipping norm 0"), "{e}");
}

#[test]
fn the_metrics_log_round_trips_and_equals_the_history() {
    let all = blobs(200, 31);
    let (train, val) = split_validation(&all, 0.25, 32).unwrap();
    let dir = TempDir::new("log");
    let opts = FitOptions {
        epochs: Some(4),
        checkpoint_dir: Some(dir.0.clone()),
        ..FitOptions::quiet()
    };
    let mut model = LogReg::new(&SYN, 64);
    let h = fit(
        &mut model,
        &TrainData::new(&train).with_validation(&val),
        &opts,
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.0.join(METRICS_LOG)).unwrap();
    assert!(
        text.starts_with(
            "epoch,steps,train_loss,val_loss,val_accuracy,lr,samples_per_sec,elapsed_s\n"
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), 5);
    let read = read_log(&dir.0.join(METRICS_LOG)).unwrap();
    assert_eq!(read.epochs, h.epochs);
    assert_eq!(read.steps, h.steps);
    // Without validation the metric columns are absent and the row still reads.
    let dir2 = TempDir::new("log-noval");
    let opts = FitOptions {
        checkpoint_dir: Some(dir2.0.clone()),
        ..opts
    };
    let h = fit(&mut LogReg::new(&SYN, 64), &TrainData::new(&train), &opts).unwrap();
    assert_eq!(
        read_log(&dir2.0.join(METRICS_LOG)).unwrap().epochs,
        h.epochs
    );
    // A corrupt log is refused with its line.
    std::fs::write(dir2.0.join(METRICS_LOG), "epoch,steps\n1,2\n").unwrap();
    let e = read_log(&dir2.0.join(METRICS_LOG)).unwrap_err().to_string();
    assert!(e.contains(":1: not an nnc metrics log header"), "{e}");
}

#[test]
fn a_fresh_run_never_overwrites_another_runs_checkpoints() {
    let data = blobs(60, 41);
    let dir = TempDir::new("occupied");
    let opts = FitOptions {
        epochs: Some(1),
        checkpoint_dir: Some(dir.0.clone()),
        ..FitOptions::quiet()
    };
    fit(&mut LogReg::new(&SYN, 16), &TrainData::new(&data), &opts).unwrap();
    let before = std::fs::read(dir.0.join(LAST_CHECKPOINT)).unwrap();
    let e = fit(&mut LogReg::new(&SYN, 16), &TrainData::new(&data), &opts).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("already holds another run"), "{msg}");
    assert!(msg.contains("last.safetensors"), "{msg}");
    assert_eq!(std::fs::read(dir.0.join(LAST_CHECKPOINT)).unwrap(), before);
    // Told to, it starts over; a temporary file a killed save left behind
    // (its process long gone) is cleaned up.
    let stray = dir.0.join(".last.safetensors.tmp-4000000-7");
    std::fs::write(&stray, b"half a checkpoint").unwrap();
    // Files that merely look alike are not nnc's and stay.
    let lookalikes = [
        ".notes.tmp-4000000",
        ".notes.tmp-4000000-x",
        "notes.tmp-4000000-7",
    ]
    .map(|n| dir.0.join(n));
    for l in &lookalikes {
        std::fs::write(l, b"someone else's").unwrap();
    }
    let opts = FitOptions {
        overwrite: true,
        ..opts
    };
    fit(&mut LogReg::new(&SYN, 16), &TrainData::new(&data), &opts).unwrap();
    assert!(!stray.exists(), "stale temporary file left in place");
    assert!(
        lookalikes.iter().all(|l| l.exists()),
        "another file removed"
    );
}

#[test]
fn a_non_finite_parameter_is_caught_in_its_step_and_named() {
    // The loss (the mean of the parameters) is finite at step 0; the NaN
    // gradient makes every parameter NaN in that step's update.
    let mut probe = Probe::new([0.0; 3], f32::NAN);
    let opts = FitOptions {
        batch: Some(BatchSpec::Size(1)),
        ..FitOptions::quiet()
    };
    let e = fit(&mut probe, &TrainData::new(&probe_data(4)), &opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        "training diverged: parameter `p` became NaN (element 0) in the update of step 0 \
         (epoch 1): its gradient or update was not finite; try a lower learning rate or clip_norm"
    );
}

/// `e` and its causes, outermost first, as a chain printer (anyhow's
/// `{:#}`) joins them.
fn chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out
}

#[test]
fn error_chains_print_each_cause_once() {
    use nnc_runtime::checkpoint::load_tensors;
    use nnc_runtime::data::csv::{read_csv, CsvOptions};
    use nnc_runtime::data::load_mnist;

    let dir = TempDir::new("chains");
    let data = blobs(20, 5);
    let missing = dir.0.join("missing.safetensors");
    let garbage = dir.0.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let bad_csv = dir.0.join("bad.csv");
    std::fs::write(&bad_csv, "a,label\n1e39,0\n").unwrap();
    let resume = |path: &std::path::Path| FitOptions {
        resume: Some(path.to_path_buf()),
        ..FitOptions::quiet()
    };
    let errors: Vec<(Box<dyn std::error::Error>, &str)> = vec![
        (
            Box::new(
                fit(
                    &mut LogReg::new(&SYN, 8),
                    &TrainData::new(&data),
                    &resume(&missing),
                )
                .unwrap_err(),
            ),
            "No such file",
        ),
        (
            Box::new(
                fit(
                    &mut LogReg::new(&SYN, 8),
                    &TrainData::new(&data),
                    &resume(&garbage),
                )
                .unwrap_err(),
            ),
            "corrupt checkpoint",
        ),
        (
            Box::new(
                fit(
                    &mut LogReg::new(&SYN, 8),
                    &TrainData::new(&data),
                    &FitOptions {
                        lr: Some(f32::NAN),
                        ..FitOptions::quiet()
                    },
                )
                .unwrap_err(),
            ),
            "learning rate NaN",
        ),
        (
            Box::new(load_tensors(&missing).unwrap_err()),
            "No such file",
        ),
        (
            Box::new(read_csv(dir.0.join("nope.csv"), &CsvOptions::default()).unwrap_err()),
            "No such file",
        ),
        (
            Box::new(read_csv(&bad_csv, &CsvOptions::default()).unwrap_err()),
            "bad.csv:2:1: `1e39` is beyond the range of f32",
        ),
        (Box::new(load_mnist(&dir.0).unwrap_err()), "neither"),
    ];
    for (e, cause) in errors {
        let links = chain(e.as_ref());
        let printed = links.join(": ");
        assert_eq!(
            printed.matches(cause).count(),
            1,
            "`{cause}` not printed exactly once in `{printed}`"
        );
        // No link repeats the next one's message.
        for pair in links.windows(2) {
            assert!(
                !pair[0].contains(&pair[1]),
                "cause printed twice: {printed}"
            );
        }
    }
}
