//! The contract between generated code and the runtime: a compiled network
//! implements [`Model`] and describes itself with a static [`ModelSpec`], so
//! the runtime's training loop, checkpoints and data parallelism can drive
//! any network nnc compiles.

use std::borrow::Cow;

use thiserror::Error;

pub use nnc_spec::model::{
    InputKind, InputSpec, LossKind, LossSpec, ModelSpec, OutputSpec, StateSpec, StepKey,
};
pub use nnc_spec::train::{AugmentSpec, BatchSpec, ScheduleSpec, TrainSpec};

/// Elements of the flat state buffer a state table describes.
pub fn state_len(specs: &[StateSpec]) -> usize {
    specs
        .iter()
        .map(|s| s.tensor.offset + s.tensor.len)
        .max()
        .unwrap_or(0)
}

/// A state buffer holding every state tensor's initial value.
pub fn initial_state(specs: &[StateSpec]) -> Vec<f32> {
    let mut state = vec![0.0; state_len(specs)];
    for s in specs {
        state[s.tensor.range()].fill(s.init);
    }
    state
}

/// Checks the statistics buffer of a training step: empty (statistics not
/// wanted) or exactly the state's length.
pub fn check_stats(stats: &[f32], len: usize) -> Result<(), StepError> {
    if stats.is_empty() || stats.len() == len {
        Ok(())
    } else {
        Err(StepError::Length {
            name: Cow::Borrowed("stats"),
            expected: len,
            found: stats.len(),
        })
    }
}

/// Blends one step's batch statistics (`stats`, laid out like the state
/// buffer) into the running state: PyTorch's momentum convention.
pub fn update_state(specs: &[StateSpec], state: &mut [f32], stats: &[f32]) {
    if stats.len() != state.len() {
        // No statistics were computed (a step without them): nothing to blend.
        return;
    }
    for s in specs {
        let r = s.tensor.range();
        let m = s.momentum;
        for (v, &x) in state[r.clone()].iter_mut().zip(&stats[r]) {
            *v = (1.0 - m) * *v + m * x;
        }
    }
}

/// One step's data: feature slices for each `Features` input and label
/// slices for each `Labels` input, each in declaration order.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Features, `batch × per_sample` values each.
    pub inputs: &'a [&'a [f32]],
    /// Labels, `batch × per_sample` class indices each.
    pub labels: &'a [&'a [u32]],
}

/// Why a step could not run on the data it was given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StepError {
    /// More samples than the workspace was built for.
    #[error("batch of {batch} samples exceeds the model's maximum batch {max}")]
    BatchTooLarge {
        /// Samples given.
        batch: usize,
        /// The maximum.
        max: usize,
    },
    /// An empty batch.
    #[error("empty batch")]
    Empty,
    /// A slice whose length is not a whole number of samples, or disagrees
    /// with the batch size of the others.
    #[error("`{name}`: expected {expected} values, found {found}")]
    Length {
        /// The input's name.
        name: Cow<'static, str>,
        /// Values expected.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A label outside `0..classes`.
    #[error("`{name}`[{index}] = {value} is not a class in 0..{classes}")]
    Label {
        /// The label input's name.
        name: Cow<'static, str>,
        /// Position in the slice.
        index: usize,
        /// The value.
        value: u32,
        /// Number of classes.
        classes: u32,
    },
    /// A token id that is not a whole number in `0..classes`.
    #[error("`{name}`[{index}] = {value} is not a token id in 0..{classes}")]
    Token {
        /// The token input's name.
        name: Cow<'static, str>,
        /// Position in the slice.
        index: usize,
        /// The value as fed (a string: `StepError` is `Eq`, `f32` is not).
        value: String,
        /// Number of distinct tokens.
        classes: u32,
    },
    /// An entry point the model was not generated with (such as
    /// `input_gradient`, which needs the `explain` option).
    #[error("the model was compiled without `{option}`, which `{entry}` needs")]
    NotGenerated {
        /// The entry point called.
        entry: &'static str,
        /// The compile option that generates it.
        option: &'static str,
    },
    /// The wrong number of input or label slices.
    #[error("expected {expected} {what} slices, found {found}")]
    Arity {
        /// "input", "label" or "output".
        what: &'static str,
        /// Slices expected.
        expected: usize,
        /// Slices given.
        found: usize,
    },
    /// The weights of a teacher network compiled into the model could not
    /// be loaded (a missing file, a tensor missing or of another shape, a
    /// value that is not finite); the reason names the file and tensor.
    #[error("teacher weights: {reason}")]
    Teacher {
        /// What is wrong, with the file's path.
        reason: String,
    },
    /// A buffer that cannot be allocated: too large for the address space
    /// (`floats` is then `usize::MAX`) or refused by the allocator.
    #[error("cannot allocate the {what}: {floats} floats (reduce the batch size)")]
    Memory {
        /// "workspace", "parameters", "gradients", ...
        what: &'static str,
        /// Floats asked for.
        floats: usize,
    },
}

/// Grows `buf` to `len` zeros (never shrinks it), reporting an allocation
/// the allocator refuses as [`StepError::Memory`] instead of aborting.
/// `len` comes from sizes computed with saturating arithmetic, so an
/// overflowing size is `usize::MAX` here and fails the same way.
pub fn grow_zeroed(buf: &mut Vec<f32>, len: usize, what: &'static str) -> Result<(), StepError> {
    if buf.len() < len {
        let more = len - buf.len();
        let too_large = len > isize::MAX as usize / std::mem::size_of::<f32>();
        if too_large || buf.try_reserve_exact(more).is_err() {
            return Err(StepError::Memory { what, floats: len });
        }
        buf.resize(len, 0.0);
    }
    Ok(())
}

/// `len` zeros, or [`StepError::Memory`] when they cannot be had.
pub fn zeroed(len: usize, what: &'static str) -> Result<Vec<f32>, StepError> {
    let mut v = Vec::new();
    grow_zeroed(&mut v, len, what)?;
    Ok(v)
}

/// A compiled network: forward, loss and backward over a preallocated
/// workspace, parameters and gradients in flat buffers.
pub trait Model: Send + Sync {
    /// The static description.
    fn spec(&self) -> &'static ModelSpec;
    /// The largest batch the workspace holds.
    fn max_batch(&self) -> usize;
    /// The flat parameter buffer.
    fn params(&self) -> &[f32];
    /// The flat parameter buffer, for optimizers and checkpoints.
    fn params_mut(&mut self) -> &mut [f32];
    /// The flat gradient buffer written by the last `train_step` (empty
    /// before the first: training through [`Model::train_step_in`] never
    /// allocates it).
    fn grads(&self) -> &[f32];
    /// Forward, loss and backward: fills `grads` and returns the mean loss
    /// over the batch (without regularisation penalties).
    fn train_step(&mut self, batch: &Batch<'_>) -> Result<f32, StepError>;
    /// Workspace floats [`Model::train_step_in`] needs for batches of up to
    /// `max_batch` samples.
    fn workspace_len(&self, max_batch: usize) -> usize;
    /// [`Model::train_step`] on the caller's workspace (at least
    /// `workspace_len(max_batch)` floats) and gradient buffer, reading only
    /// the parameters: data-parallel workers call it at once, each with its
    /// own buffers and shard of the batch.
    fn train_step_in(
        &self,
        ws: &mut [f32],
        max_batch: usize,
        grads: &mut [f32],
        batch: &Batch<'_>,
    ) -> Result<f32, StepError>;
    /// Forward and loss only (inference mode).
    fn loss(&mut self, batch: &Batch<'_>) -> Result<f32, StepError>;
    /// [`Model::loss`], also writing the loss's prediction (the logits of
    /// a classification, the `pred` of a regression: see [`LossSpec`]) into
    /// `scores`, `batch × spec().loss.scores` values; an empty `scores`
    /// skips the copy.
    fn loss_with_scores(&mut self, batch: &Batch<'_>, scores: &mut [f32])
        -> Result<f32, StepError>;
    /// The loss's prediction (see [`LossSpec`]: logits of a classifier,
    /// `pred` of a regression) for a batch of the inputs `predict` takes,
    /// without labels: what `nnc predict` turns into classes and
    /// probabilities. Writes `batch × spec().loss.scores` values; returns
    /// the batch size.
    fn predict_scores(&mut self, inputs: &[&[f32]], scores: &mut [f32])
        -> Result<usize, StepError>;
    /// Forward to the outputs for a batch of the inputs the outputs read
    /// (those with [`InputSpec::predict`], in declaration order); returns
    /// the batch size.
    fn predict(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<usize, StepError>;

    /// The float inputs [`Model::input_gradient`] differentiates with
    /// respect to, by name, in declaration order (empty unless the model
    /// was compiled with `explain`).
    fn gradient_inputs(&self) -> &'static [&'static str] {
        &[]
    }

    /// The token inputs [`Model::input_gradient`] attributes through their
    /// embeddings, each with its embedding table's parameter (`[vocab,
    /// width]` in [`Model::params`]): in a model whose prediction reads only
    /// token ids, each read through one embedding lookup. Such an input is
    /// named in [`Model::gradient_inputs`]; `input_gradient` takes its
    /// gathered embedding vectors (`positions × width` a sample, after the
    /// inputs of `predict`, in this order) in place of differentiating the
    /// ids, and its gradient is with respect to those vectors. Empty for
    /// other models.
    fn embedded_inputs(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// The gradient of the loss's prediction (`batch × spec().loss.scores`
    /// scores) with respect to each of [`Model::gradient_inputs`], seeded
    /// per sample by `cotangent` (as many values as the scores; a one-hot
    /// row asks for one class): writes `cotangentᵀ · ∂scores/∂input` into
    /// `grads` (one slice per gradient input, each as long as that input's (or its embeddings')
    /// slice) and, unless `scores` is empty, the prediction into `scores`.
    /// `inputs` are those of [`Model::predict`], followed by the embeddings
    /// of [`Model::embedded_inputs`]. Inference mode; the
    /// parameters are not touched. Returns the batch size. Models compiled
    /// without `explain` return [`StepError::NotGenerated`].
    fn input_gradient(
        &mut self,
        inputs: &[&[f32]],
        cotangent: &[f32],
        grads: &mut [&mut [f32]],
        scores: &mut [f32],
    ) -> Result<usize, StepError> {
        let _ = (inputs, cotangent, grads, scores);
        Err(StepError::NotGenerated {
            entry: "input_gradient",
            option: "explain",
        })
    }

    /// For a pipeline stage (see [`crate::pipeline`]), a hash of the whole
    /// pipeline's layout, the same in every stage: the network, the stage
    /// count and each stage's parameters and graph. The ranks of a
    /// pipeline compare it at start-up, so a rank built from another model
    /// or another cut stops the job. 0 for other models.
    fn layout_hash(&self) -> u64 {
        0
    }

    /// The inputs whose gradient [`Model::train_step_backprop`] writes, by
    /// name: a pipeline stage's incoming activation (see
    /// [`crate::pipeline`]); empty for other models.
    fn backprop_inputs(&self) -> &'static [&'static str] {
        &[]
    }

    /// [`Model::train_step`] that also writes the gradient of the objective
    /// with respect to each of [`Model::backprop_inputs`] into `d_inputs`
    /// (one slice each, as long as that input's slice). Generated for the
    /// stage networks of a `train` block with `stages:`; other models
    /// return [`StepError::NotGenerated`].
    fn train_step_backprop(
        &mut self,
        batch: &Batch<'_>,
        d_inputs: &mut [&mut [f32]],
    ) -> Result<f32, StepError> {
        let _ = (batch, d_inputs);
        Err(StepError::NotGenerated {
            entry: "train_step_backprop",
            option: "stages",
        })
    }

    /// The network's state tensors (running statistics): not trained, not
    /// touched by the optimizer, updated by [`Model::update_state`] after
    /// each training step and saved in checkpoints. Empty by default.
    fn state_spec(&self) -> &'static [StateSpec] {
        &[]
    }

    /// The flat state buffer.
    fn state(&self) -> &[f32] {
        &[]
    }

    /// The flat state buffer, for checkpoints.
    fn state_mut(&mut self) -> &mut [f32] {
        &mut []
    }

    /// [`Model::train_step_in`] as step `key` of a run, also writing the
    /// batch's statistics (laid out like the state buffer) into `stats`
    /// when the network has state. Networks without dropout or batch norm
    /// ignore both (the default).
    fn train_step_at(
        &self,
        ws: &mut [f32],
        max_batch: usize,
        grads: &mut [f32],
        stats: &mut [f32],
        batch: &Batch<'_>,
        key: StepKey,
    ) -> Result<f32, StepError> {
        let _ = (stats, key);
        self.train_step_in(ws, max_batch, grads, batch)
    }

    /// Blends one step's batch statistics into the state (see
    /// [`update_state`]).
    fn update_state(&mut self, stats: &[f32]) {
        let specs = self.state_spec();
        update_state(specs, self.state_mut(), stats);
    }

    /// Initialises every parameter with its initializer from one seed
    /// (parameters draw from the generator in declaration order).
    fn init_params(&mut self, seed: u64) -> Result<(), crate::init::InitError> {
        let spec = self.spec();
        let mut rng = crate::rng::Rng::new(seed);
        let params = self.params_mut();
        for (p, init) in spec.params.iter().zip(spec.inits.iter()) {
            crate::init::fill(init, &p.shape, &mut params[p.range()], &mut rng)?;
        }
        Ok(())
    }
}

/// Checks the buffers of [`Model::train_step_in`]: parameters and gradients
/// of the spec's length, a workspace of at least `workspace` floats.
pub fn check_buffers(
    spec: &ModelSpec,
    params: &[f32],
    grads: &[f32],
    ws: &[f32],
    workspace: usize,
) -> Result<(), StepError> {
    for (name, len) in [("params", params.len()), ("grads", grads.len())] {
        if len != spec.param_count {
            return Err(StepError::Length {
                name: Cow::Borrowed(name),
                expected: spec.param_count,
                found: len,
            });
        }
    }
    if ws.len() < workspace {
        return Err(StepError::Length {
            name: Cow::Borrowed("workspace"),
            expected: workspace,
            found: ws.len(),
        });
    }
    Ok(())
}

/// Checks a batch against a spec and returns its batch size: every slice a
/// whole number of samples, all the same number, labels and token ids in
/// range. With `labels` (a training step or the loss) `inputs` holds every
/// feature-fed input; without (`predict`) only those with
/// [`InputSpec::predict`].
pub fn check_batch(
    spec: &ModelSpec,
    inputs: &[&[f32]],
    labels: Option<&[&[u32]]>,
    max: usize,
) -> Result<usize, StepError> {
    // Called on every step: iterators over the spec, no allocation.
    let fed = move |i: &&InputSpec| i.kind.is_fed_as_feature() && (labels.is_some() || i.predict);
    let features = || spec.inputs.iter().filter(fed);
    let label_specs = || {
        spec.inputs.iter().filter_map(|i| match i.kind {
            InputKind::Labels { classes } => Some((i, classes)),
            InputKind::Features | InputKind::Tokens { .. } => None,
        })
    };
    let n_features = features().count();
    if inputs.len() != n_features {
        return Err(StepError::Arity {
            what: "input",
            expected: n_features,
            found: inputs.len(),
        });
    }
    if let Some(l) = labels {
        let n_labels = label_specs().count();
        if l.len() != n_labels {
            return Err(StepError::Arity {
                what: "label",
                expected: n_labels,
                found: l.len(),
            });
        }
    }
    let labels = labels.unwrap_or(&[]);
    let sizes = features()
        .zip(inputs)
        .map(|(s, x)| (s, x.len()))
        .chain(label_specs().zip(labels).map(|((s, _), y)| (s, y.len())));
    let mut batch: Option<usize> = None;
    for (spec_in, len) in sizes {
        let per = spec_in.per_sample.max(1);
        let b = *batch.get_or_insert(len / per);
        if len != b * per {
            return Err(StepError::Length {
                name: spec_in.name.clone(),
                expected: b * per,
                found: len,
            });
        }
    }
    let b = batch.unwrap_or(1);
    if b == 0 {
        return Err(StepError::Empty);
    }
    if b > max {
        return Err(StepError::BatchTooLarge { batch: b, max });
    }
    // Token ids index tables: one out of range would read another row (or
    // past the table), so every one is checked before any kernel runs.
    for (spec_in, slice) in features().zip(inputs) {
        if let InputKind::Tokens { classes } = spec_in.kind {
            let bad = |v: f32| !(v >= 0.0 && v < classes as f32 && v.fract() == 0.0);
            if let Some((index, &value)) = slice.iter().enumerate().find(|(_, &v)| bad(v)) {
                return Err(StepError::Token {
                    name: spec_in.name.clone(),
                    index,
                    value: value.to_string(),
                    classes,
                });
            }
        }
    }
    for ((spec_in, classes), slice) in label_specs().zip(labels) {
        if let Some((index, &value)) = slice.iter().enumerate().find(|(_, &v)| v >= classes) {
            return Err(StepError::Label {
                name: spec_in.name.clone(),
                index,
                value,
                classes,
            });
        }
    }
    Ok(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec with no inputs, parameters or outputs, for tests to fill in.
    pub(crate) fn empty_spec() -> ModelSpec {
        ModelSpec {
            name: Cow::Borrowed("test"),
            source: Cow::Borrowed("test.nn"),
            hash: 0,
            params: Cow::Borrowed(&[]),
            inits: Cow::Borrowed(&[]),
            param_count: 0,
            inputs: Cow::Borrowed(&[]),
            outputs: Cow::Borrowed(&[]),
            loss: LossSpec {
                kind: LossKind::Other,
                scores: 0,
            },
            train: TrainSpec {
                optimizer: crate::optim::OptimizerConfig::Sgd(crate::optim::SgdConfig::default()),
                lr: 0.1,
                batch: BatchSpec::Size(4),
                epochs: 1,
                schedule: ScheduleSpec::Constant,
                warmup: 0,
                weight_decay: 0.0,
                seed: 0,
                clip_norm: None,
                early_stop: None,
                augment: AugmentSpec::NONE,
            },
        }
    }
}
