//! The training loop against hand-written models: multinomial logistic
//! regression with an analytic gradient (convergence, batch modes, resume,
//! checkpoints, evaluation, MNIST) and a one-vector "probe" whose gradient is
//! a constant, so every parameter update has a closed form (schedule, weight
//! decay).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use nnc_runtime::checkpoint::{self, CheckpointError};
use nnc_runtime::data::{load_mnist, Dataset, Labels};
use nnc_runtime::init::Init;
use nnc_runtime::model::{
    check_batch, check_buffers, Batch, BatchSpec, InputKind, InputSpec, OutputSpec,
};
use nnc_runtime::model::{Model, ModelSpec, ScheduleSpec, StepError, TrainSpec};
use nnc_runtime::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use nnc_runtime::params::ParamSpec;
use nnc_runtime::rng::Rng;
use nnc_runtime::train::{
    evaluate, fit, split_validation, FitError, FitOptions, History, TrainData, BEST_CHECKPOINT,
    LAST_CHECKPOINT,
};

// ------------------------------------------------------------------ specs

const SGD: OptimizerConfig = OptimizerConfig::Sgd(SgdConfig {
    momentum: 0.0,
    dampening: 0.0,
    nesterov: false,
    weight_decay: 0.0,
});

const TRAIN: TrainSpec = TrainSpec {
    optimizer: SGD,
    lr: 0.05,
    batch: BatchSpec::Size(16),
    epochs: 3,
    schedule: ScheduleSpec::Constant,
    warmup: 0,
    weight_decay: 0.0,
    seed: 7,
};

/// `static $name: ModelSpec` of a logistic regression from `$d` features to
/// `$k` classes: `linear.weight [d, k]`, `linear.bias [k]`, output `probs`.
macro_rules! logreg_spec {
    ($name:ident, $hash:expr, $d:expr, $k:expr) => {
        logreg_spec!(
            $name,
            $hash,
            $d,
            $k,
            &[
                InputSpec {
                    name: "x",
                    per_sample: $d,
                    kind: InputKind::Features
                },
                InputSpec {
                    name: "y",
                    per_sample: 1,
                    kind: InputKind::Labels { classes: $k }
                },
            ]
        );
    };
    ($name:ident, $hash:expr, $d:expr, $k:expr, $inputs:expr) => {
        static $name: ModelSpec = {
            const D: usize = $d;
            const K: usize = $k;
            const PARAMS: &[ParamSpec] = &[
                ParamSpec {
                    name: Cow::Borrowed("linear.weight"),
                    shape: Cow::Borrowed(&[D, K]),
                    offset: 0,
                    len: D * K,
                },
                ParamSpec {
                    name: Cow::Borrowed("linear.bias"),
                    shape: Cow::Borrowed(&[K]),
                    offset: D * K,
                    len: K,
                },
            ];
            ModelSpec {
                name: "LogReg",
                source: "runtime/tests/fit.rs",
                hash: $hash,
                params: PARAMS,
                inits: &[Init::Zeros, Init::Zeros],
                param_count: D * K + K,
                inputs: $inputs,
                outputs: &[OutputSpec {
                    name: "probs",
                    per_sample: K,
                }],
                train: TRAIN,
            }
        };
    };
}

logreg_spec!(SYN, 0x5151, 4, 3);
logreg_spec!(SYN_OTHER_HASH, 0x6262, 4, 3);
logreg_spec!(SYN_MORE_CLASSES, 0x5151, 4, 4);
logreg_spec!(MNIST, 0x0784, 784, 10);
logreg_spec!(
    TWO_INPUTS,
    0x2222,
    4,
    3,
    &[
        InputSpec {
            name: "x",
            per_sample: 4,
            kind: InputKind::Features
        },
        InputSpec {
            name: "z",
            per_sample: 4,
            kind: InputKind::Features
        },
        InputSpec {
            name: "y",
            per_sample: 1,
            kind: InputKind::Labels { classes: 3 }
        },
    ]
);

// ------------------------------------------------------------------ logistic regression

/// `probs = softmax(x @ W + b)`, mean softmax cross-entropy, gradient by hand:
/// `dlogits = (softmax - onehot) / B`, `dW = xᵀ dlogits`, `db = Σ dlogits`.
struct LogReg {
    spec: &'static ModelSpec,
    d: usize,
    k: usize,
    max_batch: usize,
    params: Vec<f32>,
    grads: Vec<f32>,
    /// `max_batch × k` logits, then probabilities.
    work: Vec<f32>,
}

impl LogReg {
    fn new(spec: &'static ModelSpec, max_batch: usize) -> Self {
        let shape = &spec.params[0].shape;
        let (d, k) = (shape[0], shape[1]);
        LogReg {
            spec,
            d,
            k,
            max_batch,
            params: vec![0.0; spec.param_count],
            grads: vec![0.0; spec.param_count],
            work: vec![0.0; max_batch * k],
        }
    }

    /// Softmax probabilities of the batch into `work`; returns the batch size.
    fn forward(&self, x: &[f32], work: &mut [f32]) -> usize {
        let (d, k) = (self.d, self.k);
        let rows = x.len() / d;
        let (w, b) = self.params.split_at(d * k);
        for (xr, out) in x.chunks_exact(d).zip(work.chunks_exact_mut(k)) {
            out.copy_from_slice(b);
            for (&xi, wi) in xr.iter().zip(w.chunks_exact(k)) {
                if xi != 0.0 {
                    for (o, &wij) in out.iter_mut().zip(wi) {
                        *o += xi * wij;
                    }
                }
            }
            let m = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for o in out.iter_mut() {
                *o = (*o - m).exp();
                sum += *o;
            }
            for o in out.iter_mut() {
                *o /= sum;
            }
        }
        rows
    }

    fn mean_loss(&self, y: &[u32], work: &[f32]) -> f32 {
        let k = self.k;
        let total: f64 = y
            .iter()
            .zip(work.chunks_exact(k))
            .map(|(&c, p)| -(p[c as usize].max(f32::MIN_POSITIVE) as f64).ln())
            .sum();
        (total / y.len() as f64) as f32
    }
}

impl Model for LogReg {
    fn spec(&self) -> &'static ModelSpec {
        self.spec
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    fn grads(&self) -> &[f32] {
        &self.grads
    }

    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, StepError> {
        let (mut work, mut grads) = (
            std::mem::take(&mut self.work),
            std::mem::take(&mut self.grads),
        );
        let result = self.train_step_in(&mut work, self.max_batch, &mut grads, batch);
        (self.work, self.grads) = (work, grads);
        result
    }

    fn workspace_len(&self, max_batch: usize) -> usize {
        max_batch * self.k
    }

    fn train_step_in(
        &self,
        work: &mut [f32],
        max_batch: usize,
        grads: &mut [f32],
        batch: &Batch<'_>,
    ) -> Result<f32, StepError> {
        check_buffers(self.spec, &self.params, grads, work, max_batch * self.k)?;
        check_batch(self.spec, batch.inputs, Some(batch.labels), max_batch)?;
        let (x, y) = (batch.inputs[0], batch.labels[0]);
        let rows = self.forward(x, work);
        let loss = self.mean_loss(y, work);
        let (d, k) = (self.d, self.k);
        let scale = 1.0 / rows as f32;
        grads.fill(0.0);
        let (gw, gb) = grads.split_at_mut(d * k);
        for ((xr, p), &c) in x.chunks_exact(d).zip(work.chunks_exact_mut(k)).zip(y) {
            p[c as usize] -= 1.0;
            for v in p.iter_mut() {
                *v *= scale;
            }
            for (g, &v) in gb.iter_mut().zip(p.iter()) {
                *g += v;
            }
            for (&xi, gi) in xr.iter().zip(gw.chunks_exact_mut(k)) {
                if xi != 0.0 {
                    for (g, &v) in gi.iter_mut().zip(p.iter()) {
                        *g += xi * v;
                    }
                }
            }
        }
        Ok(loss)
    }

    fn loss(&mut self, batch: &Batch<'_>) -> Result<f32, StepError> {
        check_batch(self.spec, batch.inputs, Some(batch.labels), self.max_batch)?;
        let mut work = std::mem::take(&mut self.work);
        self.forward(batch.inputs[0], &mut work);
        let loss = self.mean_loss(batch.labels[0], &work);
        self.work = work;
        Ok(loss)
    }

    fn predict(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<usize, StepError> {
        let rows = check_batch(self.spec, inputs, None, self.max_batch)?;
        let mut work = std::mem::take(&mut self.work);
        self.forward(inputs[0], &mut work);
        outputs[0].copy_from_slice(&work[..rows * self.k]);
        self.work = work;
        Ok(rows)
    }
}

// ------------------------------------------------------------------ the probe

static PROBE: ModelSpec = ModelSpec {
    name: "Probe",
    source: "runtime/tests/fit.rs",
    hash: 0x9999,
    params: &[ParamSpec {
        name: Cow::Borrowed("p"),
        shape: Cow::Borrowed(&[3]),
        offset: 0,
        len: 3,
    }],
    inits: &[Init::Zeros],
    param_count: 3,
    inputs: &[
        InputSpec {
            name: "x",
            per_sample: 1,
            kind: InputKind::Features,
        },
        InputSpec {
            name: "y",
            per_sample: 1,
            kind: InputKind::Labels { classes: 2 },
        },
    ],
    outputs: &[OutputSpec {
        name: "score",
        per_sample: 2,
    }],
    train: TrainSpec {
        batch: BatchSpec::Size(1),
        ..TRAIN
    },
};

/// Ignores its data: loss = mean of the parameters, gradient = `grad`
/// everywhere. Records the parameters each step saw.
struct Probe {
    params: Vec<f32>,
    grads: Vec<f32>,
    trace: Mutex<Vec<Vec<f32>>>,
}

impl Probe {
    fn new(start: [f32; 3], grad: f32) -> Self {
        Probe {
            params: start.to_vec(),
            grads: vec![grad; 3],
            trace: Mutex::new(Vec::new()),
        }
    }
}

impl Model for Probe {
    fn spec(&self) -> &'static ModelSpec {
        &PROBE
    }
    fn max_batch(&self) -> usize {
        8
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    fn grads(&self) -> &[f32] {
        &self.grads
    }
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, StepError> {
        let mut grads = self.grads.clone();
        self.train_step_in(&mut [], 8, &mut grads, batch)
    }
    fn workspace_len(&self, _: usize) -> usize {
        0
    }
    fn train_step_in(
        &self,
        _: &mut [f32],
        max_batch: usize,
        grads: &mut [f32],
        batch: &Batch<'_>,
    ) -> Result<f32, StepError> {
        self.trace.lock().unwrap().push(self.params.clone());
        check_batch(&PROBE, batch.inputs, Some(batch.labels), max_batch)?;
        grads.copy_from_slice(&self.grads);
        Ok(self.params.iter().sum::<f32>() / 3.0)
    }
    fn loss(&mut self, batch: &Batch<'_>) -> Result<f32, StepError> {
        check_batch(&PROBE, batch.inputs, Some(batch.labels), 8)?;
        Ok(self.params.iter().sum::<f32>() / 3.0)
    }
    fn predict(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<usize, StepError> {
        outputs[0].fill(0.0);
        check_batch(&PROBE, inputs, None, 8)
    }
}

/// `n` samples for the probe (whose content it ignores).
fn probe_data(n: usize) -> Dataset {
    Dataset::new(
        vec![0.0; n],
        vec![1],
        Labels::Classes {
            values: vec![0; n],
            num_classes: 2,
        },
    )
    .unwrap()
}

// ------------------------------------------------------------------ helpers

/// Three well-separated Gaussian blobs in 4-D: class `c` is centred at 5 on
/// axis `c`, unit noise.
fn blobs(n: usize, seed: u64) -> Dataset {
    overlapping_blobs(n, seed, 5.0)
}

/// Blobs centred at `centre` on their axis: they overlap when it is small.
fn overlapping_blobs(n: usize, seed: u64, centre: f32) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut features = Vec::with_capacity(n * 4);
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % 3) as u32;
        for axis in 0..4 {
            let centre = if axis == c as usize { centre } else { 0.0 };
            features.push(centre + rng.normal() as f32);
        }
        values.push(c);
    }
    Dataset::new(
        features,
        vec![4],
        Labels::Classes {
            values,
            num_classes: 3,
        },
    )
    .unwrap()
}

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "fit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
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

/// Epoch, steps, and the bits of train loss, val loss, val accuracy, lr.
type EpochBits = (u64, u64, u64, Option<u64>, Option<u64>, u32);

/// The metrics that must agree between runs (everything but timings).
fn trajectory(h: &History) -> Vec<EpochBits> {
    h.epochs
        .iter()
        .map(|m| {
            (
                m.epoch,
                m.steps,
                m.train_loss.to_bits(),
                m.val_loss.map(f64::to_bits),
                m.val_accuracy.map(f64::to_bits),
                m.lr.to_bits(),
            )
        })
        .collect()
}

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
        assert_eq!(Some(after.loss), last.val_loss, "{mode}");
        assert!(
            after.loss < 0.5 * before.loss,
            "{mode}: {before:?} -> {after:?}"
        );
        assert!(after.accuracy.unwrap() >= 0.95, "{mode}: {after:?}");
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
    let Labels::Classes { values, .. } = data.labels() else {
        unreachable!()
    };
    let (mut loss, mut correct) = (0.0f64, 0);
    for (i, &y) in values.iter().enumerate() {
        let x = data.sample(i).unwrap();
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
    assert_eq!(e.accuracy, Some(correct as f64 / 5.0));
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
        checkpoint::load_training(&last, SYN.params, &mut model.params.clone(), None).unwrap();
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
        checkpoint::load_training(p, SYN.params, &mut buf, None).unwrap();
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
        .min_by(|a, b| a.val_loss.unwrap().total_cmp(&b.val_loss.unwrap()))
        .unwrap()
        .epoch;
    let mut buf = vec![0.0; SYN.param_count];
    let best =
        checkpoint::load_training(dir.0.join(BEST_CHECKPOINT), SYN.params, &mut buf, None).unwrap();
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
    let last =
        checkpoint::load_training(dir.0.join(LAST_CHECKPOINT), SYN.params, &mut buf, None).unwrap();
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
    let msg = err(&SYN, 8, &train, quiet());
    assert!(
        msg.contains("batch of 16 samples exceeds the model's maximum batch 8"),
        "{msg}"
    );
    let full = FitOptions {
        batch: Some(BatchSpec::Full),
        ..quiet()
    };
    let msg = err(&SYN, 16, &train, full);
    assert!(
        msg.contains("full-batch training on 30 samples exceeds"),
        "{msg}"
    );
    let msg = err(&TWO_INPUTS, 16, &train, quiet());
    assert!(
        msg.contains("one feature input and one class-label input"),
        "{msg}"
    );
    assert!(msg.contains("`z`: 4 features"), "{msg}");

    let wide = Dataset::new(
        vec![0.0; 10],
        vec![5],
        Labels::Classes {
            values: vec![0, 1],
            num_classes: 3,
        },
    )
    .unwrap();
    let msg = err(&SYN, 16, &TrainData::new(&wide), quiet());
    assert!(
        msg.contains("training set does not fit model `LogReg`"),
        "{msg}"
    );
    assert!(msg.contains("5 values"), "{msg}");
    let msg = err(&SYN, 16, &train.with_validation(&wide), quiet());
    assert!(msg.contains("validation set does not fit"), "{msg}");
    let targets = Dataset::new(
        vec![0.0; 8],
        vec![4],
        Labels::Targets {
            values: vec![0.0; 2],
            width: 1,
        },
    )
    .unwrap();
    let msg = err(&SYN, 16, &TrainData::new(&targets), quiet());
    assert!(msg.contains("regression targets"), "{msg}");

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
    let train = mnist
        .train
        .subset(&subset)
        .unwrap()
        .with_sample_shape(vec![784])
        .unwrap();
    let test = mnist.test.with_sample_shape(vec![784]).unwrap();
    let mut model = LogReg::new(&MNIST, 256);
    let opts = FitOptions {
        lr: Some(0.5),
        batch: Some(BatchSpec::Size(32)),
        epochs: Some(1),
        ..FitOptions::quiet()
    };
    let h = fit(&mut model, &TrainData::new(&train), &opts).unwrap();
    let e = evaluate(&mut model, &test).unwrap();
    let acc = e.accuracy.unwrap();
    eprintln!(
        "MNIST logreg, 2000 samples, 1 epoch: train loss {:.3}, test loss {:.3}, test accuracy {:.1}% ({:.2?})",
        h.epochs[0].train_loss,
        e.loss,
        acc * 100.0,
        t0.elapsed()
    );
    assert!(acc > 0.80, "test accuracy {acc}");
}
