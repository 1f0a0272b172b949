//! A model on a whole dataset, in chunks of its maximum batch: the loss and
//! the metrics of its loss kind ([`evaluate`]), or its outputs
//! ([`predict`]).

use crate::data::{Batcher, Binding, Dataset};
use crate::model::{InputKind, LossKind, Model};

use super::metrics::{Accumulator, Metrics};
use super::FitError;

/// A model's quality on a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    /// Mean loss over the samples (inference mode: dropout off, batch
    /// norm on its running statistics).
    pub loss: f64,
    /// The metrics of the model's loss kind.
    pub metrics: Metrics,
}

impl Eval {
    /// Accuracy (or token accuracy) of a classification loss.
    pub fn accuracy(&self) -> Option<f64> {
        match self.metrics {
            Metrics::Classification { accuracy, .. } | Metrics::Binary { accuracy, .. } => {
                Some(accuracy)
            }
            _ => None,
        }
    }
}

/// Measures `model` on `data`: the mean loss and the metrics of its loss
/// kind, with a confusion matrix for classification. The columns are
/// matched to every input and label, as for training. The parameters are
/// not changed.
pub fn evaluate<M: Model + ?Sized>(model: &mut M, data: &Dataset) -> Result<Eval, FitError> {
    Evaluator::new(model, data, "dataset", true)?.run(model, data)
}

/// Buffers for evaluating one dataset, allocated once (per run of `fit`).
pub(super) struct Evaluator {
    batcher: Batcher,
    scores: Vec<f32>,
    acc: Accumulator,
    chunk: usize,
    /// Values per sample of `scores`.
    width: usize,
    /// Where the loss kind's labels or targets are among the batch's
    /// label or feature slots.
    label_slot: Option<usize>,
    target_slot: Option<usize>,
}

impl Evaluator {
    /// Buffers for `data` (named `what` in errors); with `confusion`, the
    /// metrics include a confusion matrix.
    pub(super) fn new<M: Model + ?Sized>(
        model: &M,
        data: &Dataset,
        what: &str,
        confusion: bool,
    ) -> Result<Self, FitError> {
        let spec = model.spec();
        // No chunk is larger than the data: a maximum batch beyond it
        // (from a command line) must not size the buffers.
        let chunk = model.max_batch().min(data.len().max(1));
        if chunk == 0 {
            return Err(FitError::Unsupported {
                model: spec.name.to_string(),
                reason: "its maximum batch is 0".into(),
            });
        }
        if data.is_empty() {
            return Err(FitError::Config(format!("the {what} has no samples")));
        }
        let binding = Binding::for_training(spec, data, what)?;
        let kind = spec.loss.kind;
        let (label_slot, target_slot) = match kind {
            LossKind::Classification { label, .. } => (label_slot(spec, label), None),
            LossKind::Binary { target } | LossKind::Regression { target } => {
                (None, feature_slot(spec, target))
            }
            LossKind::Other => (None, None),
        };
        let width = spec.loss.scores;
        Ok(Evaluator {
            batcher: Batcher::new(binding, chunk),
            scores: vec![0.0; chunk * width],
            acc: Accumulator::new(kind, confusion),
            chunk,
            width,
            label_slot,
            target_slot,
        })
    }

    /// The loss and metrics of `model` on `data` (the dataset the buffers
    /// were made for).
    pub(super) fn run<M: Model + ?Sized>(
        &mut self,
        model: &mut M,
        data: &Dataset,
    ) -> Result<Eval, FitError> {
        let n = data.len();
        let mut loss_sum = 0.0f64;
        self.acc.reset();
        let mut start = 0;
        while start < n {
            let rows = self.chunk.min(n - start);
            self.batcher.gather_range(data, start..start + rows)?;
            let scores = &mut self.scores[..rows * self.width];
            let loss = self
                .batcher
                .with_batch(0..rows, |b| model.loss_with_scores(b, scores))?;
            loss_sum += f64::from(loss) * rows as f64;
            let labels = self.label_slot.map_or(&[][..], |k| self.batcher.labels(k));
            let targets = self
                .target_slot
                .map_or(&[][..], |k| self.batcher.features(k));
            self.acc
                .add(&self.scores[..rows * self.width], labels, targets);
            start += rows;
        }
        Ok(Eval {
            loss: loss_sum / n as f64,
            metrics: self.acc.finish(),
        })
    }
}

/// The position of spec input `input` among the label inputs.
pub(crate) fn label_slot(spec: &crate::ModelSpec, input: usize) -> Option<usize> {
    let is_label = |k: InputKind| matches!(k, InputKind::Labels { .. });
    is_label(spec.inputs.get(input)?.kind).then(|| {
        spec.inputs[..input]
            .iter()
            .filter(|i| is_label(i.kind))
            .count()
    })
}

/// The position of spec input `input` among the feature-fed inputs.
pub(crate) fn feature_slot(spec: &crate::ModelSpec, input: usize) -> Option<usize> {
    let fed = |k: InputKind| !matches!(k, InputKind::Labels { .. });
    fed(spec.inputs.get(input)?.kind)
        .then(|| spec.inputs[..input].iter().filter(|i| fed(i.kind)).count())
}

/// One output of [`predict`] over a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The output's declared name.
    pub name: String,
    /// Values per sample.
    pub width: usize,
    /// `rows × width` values, sample after sample.
    pub values: Vec<f32>,
}

impl Prediction {
    /// The values of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }
}

/// Runs `model`'s `predict` over every sample of `data` and returns each
/// declared output, in declaration order. Only the inputs the outputs
/// depend on are read, so data without labels or targets will do.
pub fn predict<M: Model + ?Sized>(
    model: &mut M,
    data: &Dataset,
) -> Result<Vec<Prediction>, FitError> {
    let spec = model.spec();
    let chunk = model.max_batch().clamp(1, data.len().max(1));
    let binding = Binding::new(spec, data, "dataset", |i| i.predict)?;
    let mut batcher = Batcher::new(binding, chunk);
    let n = data.len();
    let mut out: Vec<Prediction> = spec
        .outputs
        .iter()
        .map(|o| Prediction {
            name: o.name.to_string(),
            width: o.per_sample,
            values: vec![0.0; n * o.per_sample],
        })
        .collect();
    let mut start = 0;
    while start < n {
        let rows = chunk.min(n - start);
        batcher.gather_range(data, start..start + rows)?;
        let mut outs: Vec<&mut [f32]> = out
            .iter_mut()
            .map(|p| &mut p.values[start * p.width..(start + rows) * p.width])
            .collect();
        batcher.with_batch(0..rows, |b| model.predict(b.inputs, &mut outs))?;
        start += rows;
    }
    Ok(out)
}

/// The loss's prediction for every sample of a dataset: logits of a
/// classifier, the `pred` of a regression (see [`crate::LossSpec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// What the loss compares, which says how to read the values.
    pub kind: LossKind,
    /// Values per sample.
    pub width: usize,
    /// `rows × width` values.
    pub values: Vec<f32>,
}

impl Scores {
    /// The values of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// Samples.
    pub fn len(&self) -> usize {
        self.values.len() / self.width.max(1)
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Runs `model`'s `predict_scores` over every sample of `data`: only the
/// inputs the prediction reads are needed.
pub fn predict_scores<M: Model + ?Sized>(
    model: &mut M,
    data: &Dataset,
) -> Result<Scores, FitError> {
    let spec = model.spec();
    let chunk = model.max_batch().clamp(1, data.len().max(1));
    let binding = Binding::new(spec, data, "dataset", |i| i.predict)?;
    let mut batcher = Batcher::new(binding, chunk);
    let n = data.len();
    let width = spec.loss.scores;
    let mut values = vec![0.0; n * width];
    let mut start = 0;
    while start < n {
        let rows = chunk.min(n - start);
        batcher.gather_range(data, start..start + rows)?;
        let out = &mut values[start * width..(start + rows) * width];
        batcher.with_batch(0..rows, |b| model.predict_scores(b.inputs, out))?;
        start += rows;
    }
    Ok(Scores {
        kind: spec.loss.kind,
        width,
        values,
    })
}
