//! Matching a [`Dataset`]'s columns to a model's inputs and labels, and
//! copying batches of samples into the buffers a step reads.
//!
//! # The matching rule
//! Every input the step needs takes the column of its own name. Then, for
//! the common one-input-one-label case, names may be left out: when exactly
//! one feature input and exactly one real-valued column are left unmatched,
//! they go together, and likewise one label (or token) input with one class
//! column. Anything else unmatched is an error that lists the model's
//! inputs and the data's columns, so a two-input network never guesses.
//!
//! # Checks
//! A column must hold what its input takes: real numbers for `f32` inputs,
//! class indices below the model's class count for labels (a real-valued
//! column fed to a class label is an error), whole numbers in range for
//! token ids, and exactly the input's values per sample. Every error names
//! the input, the file and the column.

use super::dataset::{Column, Dataset, Values};
use super::DataError;
use crate::model::{Batch, InputKind, InputSpec, ModelSpec};

/// How one input is fed from its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// Real numbers, copied.
    F32,
    /// Class indices into a label slice.
    Labels,
    /// Class indices converted to the whole-number `f32`s a token input
    /// takes.
    TokensFromClasses,
}

/// One bound input: which column, how many values per sample, how fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    column: usize,
    width: usize,
    feed: Feed,
}

/// The columns of one dataset matched to the inputs of one model entry
/// point (training, or prediction, which reads fewer), in the order the
/// entry point takes them: feature-fed inputs, then labels, each in
/// declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    features: Vec<Slot>,
    labels: Vec<Slot>,
    /// The spec index of each feature-fed and each label slot.
    inputs: Vec<usize>,
}

impl Binding {
    /// Binds every input and label of `spec` (what a training step and
    /// the evaluation loss read). `what` names the data in errors
    /// ("training set").
    pub fn for_training(spec: &ModelSpec, data: &Dataset, what: &str) -> Result<Self, DataError> {
        Self::new(spec, data, what, |_| true)
    }

    /// Binds the inputs `wanted` selects, in declaration order.
    pub fn new(
        spec: &ModelSpec,
        data: &Dataset,
        what: &str,
        wanted: impl Fn(&InputSpec) -> bool,
    ) -> Result<Self, DataError> {
        let wanted: Vec<usize> = (0..spec.inputs.len())
            .filter(|&i| wanted(&spec.inputs[i]))
            .collect();
        let mismatch = |reason: String| DataError::Mismatch {
            what: what.to_string(),
            model: spec.name.to_string(),
            reason,
        };
        let mut chosen: Vec<Option<usize>> = wanted
            .iter()
            .map(|&i| {
                data.columns()
                    .iter()
                    .position(|c| c.name() == spec.inputs[i].name)
            })
            .collect();
        // The unambiguous leftovers: one label-like input with one class
        // column, one feature input with one real-valued column.
        let used = |chosen: &[Option<usize>], c: usize| chosen.contains(&Some(c));
        for labels in [true, false] {
            let is_label_like = |k: InputKind| !matches!(k, InputKind::Features);
            let open: Vec<usize> = (0..wanted.len())
                .filter(|&w| chosen[w].is_none())
                .filter(|&w| is_label_like(spec.inputs[wanted[w]].kind) == labels)
                .collect();
            let free: Vec<usize> = (0..data.columns().len())
                .filter(|&c| !used(&chosen, c))
                .filter(|&c| matches!(data.columns()[c].values(), Values::Classes { .. }) == labels)
                .collect();
            if let (&[w], &[c]) = (open.as_slice(), free.as_slice()) {
                chosen[w] = Some(c);
            }
        }
        let missing: Vec<String> = wanted
            .iter()
            .zip(&chosen)
            .filter(|(_, c)| c.is_none())
            .map(|(&i, _)| describe_input(&spec.inputs[i]))
            .collect();
        if !missing.is_empty() {
            return Err(mismatch(format!(
                "no column for {}; the data has {}. Name each column after the input it feeds",
                missing.join(", "),
                data.column_list()
            )));
        }
        let mut binding = Binding {
            features: Vec::new(),
            labels: Vec::new(),
            inputs: Vec::new(),
        };
        let mut label_inputs = Vec::new();
        for (&i, c) in wanted.iter().zip(chosen) {
            let c = c.expect("every input has a column (checked above)");
            let input = &spec.inputs[i];
            let slot = check(input, c, &data.columns()[c]).map_err(mismatch)?;
            if slot.feed == Feed::Labels {
                binding.labels.push(slot);
                label_inputs.push(i);
            } else {
                binding.features.push(slot);
                binding.inputs.push(i);
            }
        }
        binding.inputs.extend(label_inputs);
        Ok(binding)
    }

    /// The dataset column and the spec's input index of each feature-fed
    /// input, in order.
    pub fn feature_feeds(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.features
            .iter()
            .zip(&self.inputs)
            .map(|(s, &input)| (s.column, input))
    }

    /// Values per sample of each feature-fed input, in order.
    pub fn feature_widths(&self) -> impl Iterator<Item = usize> + '_ {
        self.features.iter().map(|s| s.width)
    }

    /// Values per sample of each label input, in order.
    pub fn label_widths(&self) -> impl Iterator<Item = usize> + '_ {
        self.labels.iter().map(|s| s.width)
    }

    /// The column feeding the spec's input `input`, if it is bound.
    pub fn column_of(&self, input: usize) -> Option<usize> {
        let slots = self.features.iter().chain(&self.labels);
        self.inputs
            .iter()
            .zip(slots)
            .find(|(&i, _)| i == input)
            .map(|(_, s)| s.column)
    }
}

/// "`image` (784 real values)", for messages.
fn describe_input(input: &InputSpec) -> String {
    match input.kind {
        InputKind::Features => format!("input `{}` ({} real values)", input.name, input.per_sample),
        InputKind::Labels { classes } => format!(
            "label `{}` ({} of {classes} classes)",
            input.name, input.per_sample
        ),
        InputKind::Tokens { classes } => format!(
            "input `{}` ({} token ids of {classes})",
            input.name, input.per_sample
        ),
    }
}

/// Whether column `column` (at index `c`) can feed `input`, and how.
fn check(input: &InputSpec, c: usize, column: &Column) -> Result<Slot, String> {
    let what = describe_input(input);
    if column.width() != input.per_sample {
        return Err(format!(
            "{what} takes {} values per sample, {} has {} (shape {:?})",
            input.per_sample,
            column.describe(),
            column.width(),
            column.shape()
        ));
    }
    let in_range = |values: &[u32], classes: u32, noun: &str| -> Result<(), String> {
        let w = column.width();
        match values.iter().position(|&v| v >= classes) {
            Some(i) => Err(format!(
                "{what}: {} of {} is {noun} {}, not below {classes}",
                column.origin().field(i / w, i % w),
                column.describe(),
                values[i]
            )),
            None => Ok(()),
        }
    };
    let feed = match (input.kind, column.values()) {
        (InputKind::Features, Values::F32(_)) => Feed::F32,
        (InputKind::Features, Values::Classes { .. }) => {
            return Err(format!(
                "{what} takes real numbers, {} holds class indices; read it as numbers",
                column.describe()
            ))
        }
        (InputKind::Labels { classes }, Values::Classes { values, .. }) => {
            in_range(values, classes, "class")?;
            Feed::Labels
        }
        (InputKind::Labels { .. }, Values::F32(_)) => {
            return Err(format!(
                "{what} takes class indices, {} holds real numbers; read it as classes",
                column.describe()
            ))
        }
        (InputKind::Tokens { classes }, Values::Classes { values, .. }) => {
            in_range(values, classes, "token")?;
            Feed::TokensFromClasses
        }
        (InputKind::Tokens { classes }, Values::F32(values)) => {
            let w = column.width();
            let bad = |v: f32| !(v >= 0.0 && v < classes as f32 && v.fract() == 0.0);
            if let Some(i) = values.iter().position(|&v| bad(v)) {
                return Err(format!(
                    "{what}: {} of {} is {}, not a token id in 0..{classes}",
                    column.origin().row(i / w),
                    column.describe(),
                    values[i]
                ));
            }
            Feed::F32
        }
    };
    Ok(Slot {
        column: c,
        width: input.per_sample,
        feed,
    })
}

/// The inputs most entry points take at once without allocating: a
/// network with more is fed through a heap-allocated list.
const INLINE_SLICES: usize = 16;

/// Batch buffers for one binding, allocated once for batches of up to
/// `capacity` samples: gathering a batch into them allocates nothing.
#[derive(Debug, Clone)]
pub struct Batcher {
    binding: Binding,
    features: Vec<Vec<f32>>,
    labels: Vec<Vec<u32>>,
    capacity: usize,
    rows: usize,
}

impl Batcher {
    /// Buffers for batches of up to `capacity` samples.
    pub fn new(binding: Binding, capacity: usize) -> Self {
        let features = binding
            .features
            .iter()
            .map(|s| vec![0.0; capacity * s.width])
            .collect();
        let labels = binding
            .labels
            .iter()
            .map(|s| vec![0; capacity * s.width])
            .collect();
        Batcher {
            binding,
            features,
            labels,
            capacity,
            rows: 0,
        }
    }

    /// The binding the buffers are for.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Copies the samples `indices` of `data` (the dataset the binding was
    /// made for) into the buffers.
    pub fn gather(&mut self, data: &Dataset, indices: &[usize]) -> Result<(), DataError> {
        if indices.len() > self.capacity {
            return Err(DataError::Invalid(format!(
                "batch of {} samples exceeds the buffers' {}",
                indices.len(),
                self.capacity
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(DataError::Invalid(format!(
                "index {bad} out of range for {} samples",
                data.len()
            )));
        }
        self.gather_at(data, indices, 0)?;
        self.rows = indices.len();
        Ok(())
    }

    /// Copies the contiguous samples `range` of `data` into the buffers.
    pub fn gather_range(
        &mut self,
        data: &Dataset,
        range: std::ops::Range<usize>,
    ) -> Result<(), DataError> {
        // A range of at most `capacity` indices, on the stack in blocks.
        let mut start = range.start;
        let mut idx = [0usize; 64];
        let total = range.len();
        if range.end > data.len() {
            return Err(DataError::Invalid(format!(
                "rows {range:?} out of range for {} samples",
                data.len()
            )));
        }
        if total > self.capacity {
            return Err(DataError::Invalid(format!(
                "batch of {total} samples exceeds the buffers' {}",
                self.capacity
            )));
        }
        // Gather block by block into the right offsets: shift the
        // buffers' view by filling from `done` on.
        let mut done = 0;
        while start < range.end {
            let n = (range.end - start).min(idx.len());
            for (k, slot) in idx[..n].iter_mut().enumerate() {
                *slot = start + k;
            }
            self.gather_at(data, &idx[..n], done)?;
            start += n;
            done += n;
        }
        self.rows = total;
        Ok(())
    }

    /// [`Self::gather`] into the buffers from row `at` on.
    fn gather_at(&mut self, data: &Dataset, indices: &[usize], at: usize) -> Result<(), DataError> {
        let columns = data.columns();
        for (slot, out) in self.binding.features.iter().zip(&mut self.features) {
            let w = slot.width;
            let out = &mut out[at * w..];
            match (slot.feed, columns[slot.column].values()) {
                (Feed::F32, Values::F32(v)) => {
                    for (o, &i) in out.chunks_exact_mut(w).zip(indices) {
                        o.copy_from_slice(&v[i * w..(i + 1) * w]);
                    }
                }
                (Feed::TokensFromClasses, Values::Classes { values, .. }) => {
                    for (o, &i) in out.chunks_exact_mut(w).zip(indices) {
                        for (o, &t) in o.iter_mut().zip(&values[i * w..(i + 1) * w]) {
                            *o = t as f32;
                        }
                    }
                }
                _ => return Err(stale(&columns[slot.column])),
            }
        }
        for (slot, out) in self.binding.labels.iter().zip(&mut self.labels) {
            let w = slot.width;
            let out = &mut out[at * w..];
            let Values::Classes { values, .. } = columns[slot.column].values() else {
                return Err(stale(&columns[slot.column]));
            };
            for (o, &i) in out.chunks_exact_mut(w).zip(indices) {
                o.copy_from_slice(&values[i * w..(i + 1) * w]);
            }
        }
        Ok(())
    }

    /// Samples gathered by the last call.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The last gathered batch's label values of label slot `k`.
    pub fn labels(&self, k: usize) -> &[u32] {
        let w = self.binding.labels[k].width;
        &self.labels[k][..self.rows * w]
    }

    /// The last gathered batch's values of feature slot `k`.
    pub fn features(&self, k: usize) -> &[f32] {
        let w = self.binding.features[k].width;
        &self.features[k][..self.rows * w]
    }

    /// Row `r` of the last gathered batch's feature slot `k`, to change in
    /// place (augmentation).
    pub fn feature_row_mut(&mut self, k: usize, r: usize) -> &mut [f32] {
        let w = self.binding.features[k].width;
        &mut self.features[k][r * w..(r + 1) * w]
    }

    /// Runs `f` on the gathered batch (rows `rows` of the buffers). Up to
    /// 16 inputs the slice lists live on the stack.
    pub fn with_batch<R>(
        &self,
        rows: std::ops::Range<usize>,
        f: impl FnOnce(&Batch<'_>) -> R,
    ) -> R {
        let nf = self.features.len();
        let nl = self.labels.len();
        let feat = |k: usize| {
            let w = self.binding.features[k].width;
            &self.features[k][rows.start * w..rows.end * w]
        };
        let lab = |k: usize| {
            let w = self.binding.labels[k].width;
            &self.labels[k][rows.start * w..rows.end * w]
        };
        if nf <= INLINE_SLICES && nl <= INLINE_SLICES {
            let mut xs: [&[f32]; INLINE_SLICES] = [&[]; INLINE_SLICES];
            let mut ys: [&[u32]; INLINE_SLICES] = [&[]; INLINE_SLICES];
            for (k, x) in xs[..nf].iter_mut().enumerate() {
                *x = feat(k);
            }
            for (k, y) in ys[..nl].iter_mut().enumerate() {
                *y = lab(k);
            }
            f(&Batch {
                inputs: &xs[..nf],
                labels: &ys[..nl],
            })
        } else {
            let xs: Vec<&[f32]> = (0..nf).map(feat).collect();
            let ys: Vec<&[u32]> = (0..nl).map(lab).collect();
            f(&Batch {
                inputs: &xs,
                labels: &ys,
            })
        }
    }
}

/// A dataset changed under its binding (a column's kind differs from when
/// it was bound).
fn stale(column: &Column) -> DataError {
    DataError::Invalid(format!(
        "{} changed kind after it was matched to the model",
        column.describe()
    ))
}
