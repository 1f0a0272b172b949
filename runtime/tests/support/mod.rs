//! Hand-written models for the training-loop tests: multinomial logistic
//! regression with an analytic gradient and a one-vector "probe" whose
//! gradient is a constant, so every parameter update has a closed form.
#![allow(dead_code)]

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Mutex;

use nnc_runtime::data::{Column, Dataset};
use nnc_runtime::init::Init;
use nnc_runtime::model::{
    check_batch, check_buffers, Batch, BatchSpec, InputKind, InputSpec, OutputSpec,
};
use nnc_runtime::model::{
    LossKind, LossSpec, Model, ModelSpec, ScheduleSpec, StepError, TrainSpec,
};
use nnc_runtime::optim::{OptimizerConfig, SgdConfig};
use nnc_runtime::params::ParamSpec;
use nnc_runtime::rng::Rng;
use nnc_runtime::train::History;

// ------------------------------------------------------------------ specs

pub const SGD: OptimizerConfig = OptimizerConfig::Sgd(SgdConfig {
    momentum: 0.0,
    dampening: 0.0,
    nesterov: false,
    weight_decay: 0.0,
});

pub const TRAIN: TrainSpec = TrainSpec {
    optimizer: SGD,
    lr: 0.05,
    batch: BatchSpec::Size(16),
    epochs: 3,
    schedule: ScheduleSpec::Constant,
    warmup: 0,
    weight_decay: 0.0,
    seed: 7,
    clip_norm: None,
    early_stop: None,
    augment: nnc_runtime::spec::train::AugmentSpec::NONE,
};

/// `static $name: ModelSpec` of a logistic regression from `$d` features to
/// `$k` classes: `linear.weight [d, k]`, `linear.bias [k]`, output `probs`.
#[allow(unused_macros)]
macro_rules! logreg_spec {
    ($name:ident, $hash:expr, $d:expr, $k:expr) => {
        logreg_spec!(
            $name,
            $hash,
            $d,
            $k,
            &[
                InputSpec {
                    name: Cow::Borrowed("x"),
                    per_sample: $d,
                    kind: InputKind::Features,
                    predict: true,
                },
                InputSpec {
                    name: Cow::Borrowed("y"),
                    per_sample: 1,
                    kind: InputKind::Labels { classes: $k },
                    predict: false,
                },
            ]
        );
    };
    ($name:ident, $hash:expr, $d:expr, $k:expr, $inputs:expr) => {
        pub static $name: ModelSpec = {
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
                name: Cow::Borrowed("LogReg"),
                source: Cow::Borrowed("runtime/tests/fit.rs"),
                hash: $hash,
                params: Cow::Borrowed(PARAMS),
                inits: Cow::Borrowed(&[Init::Zeros, Init::Zeros]),
                param_count: D * K + K,
                inputs: Cow::Borrowed($inputs),
                outputs: Cow::Borrowed(&[OutputSpec {
                    name: Cow::Borrowed("probs"),
                    per_sample: K,
                }]),
                // The label is the last input of every variant.
                loss: LossSpec {
                    kind: LossKind::Classification {
                        label: $inputs.len() - 1,
                        classes: K as u32,
                        positions: 1,
                    },
                    scores: K,
                },
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
            name: Cow::Borrowed("x"),
            per_sample: 4,
            kind: InputKind::Features,
            predict: true,
        },
        InputSpec {
            name: Cow::Borrowed("z"),
            per_sample: 4,
            kind: InputKind::Features,
            predict: true,
        },
        InputSpec {
            name: Cow::Borrowed("y"),
            per_sample: 1,
            kind: InputKind::Labels { classes: 3 },
            predict: false,
        },
    ]
);

// ------------------------------------------------------------------ logistic regression

/// `probs = softmax(x @ W + b)`, mean softmax cross-entropy, gradient by hand:
/// `dlogits = (softmax - onehot) / B`, `dW = xᵀ dlogits`, `db = Σ dlogits`.
pub struct LogReg {
    pub spec: &'static ModelSpec,
    pub d: usize,
    pub k: usize,
    pub max_batch: usize,
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    /// `max_batch × k` logits, then probabilities.
    pub work: Vec<f32>,
}

impl LogReg {
    pub fn new(spec: &'static ModelSpec, max_batch: usize) -> Self {
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
    pub fn forward(&self, x: &[f32], work: &mut [f32]) -> usize {
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

    pub fn mean_loss(&self, y: &[u32], work: &[f32]) -> f32 {
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

    fn loss_with_scores(
        &mut self,
        batch: &Batch<'_>,
        scores: &mut [f32],
    ) -> Result<f32, StepError> {
        let loss = self.loss(batch)?;
        // Probabilities rank like the logits, which is all metrics need.
        if !scores.is_empty() {
            scores.copy_from_slice(&self.work[..scores.len()]);
        }
        Ok(loss)
    }

    fn predict_scores(
        &mut self,
        inputs: &[&[f32]],
        scores: &mut [f32],
    ) -> Result<usize, StepError> {
        let rows = check_batch(self.spec, inputs, None, self.max_batch)?;
        let mut work = std::mem::take(&mut self.work);
        self.forward(inputs[0], &mut work);
        scores.copy_from_slice(&work[..rows * self.k]);
        self.work = work;
        Ok(rows)
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

pub static PROBE: ModelSpec = ModelSpec {
    name: Cow::Borrowed("Probe"),
    source: Cow::Borrowed("runtime/tests/fit.rs"),
    hash: 0x9999,
    params: Cow::Borrowed(&[ParamSpec {
        name: Cow::Borrowed("p"),
        shape: Cow::Borrowed(&[3]),
        offset: 0,
        len: 3,
    }]),
    inits: Cow::Borrowed(&[Init::Zeros]),
    param_count: 3,
    inputs: Cow::Borrowed(&[
        InputSpec {
            name: Cow::Borrowed("x"),
            per_sample: 1,
            kind: InputKind::Features,
            predict: true,
        },
        InputSpec {
            name: Cow::Borrowed("y"),
            per_sample: 1,
            kind: InputKind::Labels { classes: 2 },
            predict: false,
        },
    ]),
    outputs: Cow::Borrowed(&[OutputSpec {
        name: Cow::Borrowed("score"),
        per_sample: 2,
    }]),
    loss: LossSpec {
        kind: LossKind::Other,
        scores: 0,
    },
    train: TrainSpec {
        batch: BatchSpec::Size(1),
        ..TRAIN
    },
};

/// Ignores its data: loss = mean of the parameters, gradient = `grad`
/// everywhere. Records the parameters each step saw.
pub struct Probe {
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    pub trace: Mutex<Vec<Vec<f32>>>,
}

impl Probe {
    pub fn new(start: [f32; 3], grad: f32) -> Self {
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
    fn loss_with_scores(&mut self, batch: &Batch<'_>, _: &mut [f32]) -> Result<f32, StepError> {
        self.loss(batch)
    }
    fn predict_scores(&mut self, inputs: &[&[f32]], _: &mut [f32]) -> Result<usize, StepError> {
        check_batch(&PROBE, inputs, None, 8)
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
pub fn probe_data(n: usize) -> Dataset {
    Dataset::new(vec![
        Column::f32("x", &[1], vec![0.0; n]),
        Column::classes("y", &[], vec![0; n], 2),
    ])
    .unwrap()
}

// ------------------------------------------------------------------ helpers

/// Three well-separated Gaussian blobs in 4-D: class `c` is centred at 5 on
/// axis `c`, unit noise.
pub fn blobs(n: usize, seed: u64) -> Dataset {
    overlapping_blobs(n, seed, 5.0)
}

/// Blobs centred at `centre` on their axis: they overlap when it is small.
pub fn overlapping_blobs(n: usize, seed: u64, centre: f32) -> Dataset {
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
    Dataset::new(vec![
        Column::f32("x", &[4], features),
        Column::classes("y", &[], values, 3),
    ])
    .unwrap()
}

pub fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
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
pub type EpochBits = (u64, u64, u64, Option<u64>, Option<u64>, u32);

/// The metrics that must agree between runs (everything but timings).
pub fn trajectory(h: &History) -> Vec<EpochBits> {
    h.epochs
        .iter()
        .map(|m| {
            (
                m.epoch,
                m.steps,
                m.train_loss.to_bits(),
                m.val.as_ref().map(|v| v.loss.to_bits()),
                m.val.as_ref().and_then(|v| v.accuracy()).map(f64::to_bits),
                m.lr.to_bits(),
            )
        })
        .collect()
}
