//! The contract between generated code and the runtime: a compiled network
//! implements [`Model`] and describes itself with a static [`ModelSpec`], so
//! the runtime's training loop, checkpoints and data parallelism can drive
//! any network nnc compiles.

use crate::init::Init;
use crate::optim::OptimizerConfig;
use crate::params::ParamSpec;
use crate::schedule::Schedule;
use thiserror::Error;

/// What a fed tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// f32 features.
    Features,
    /// Integer class labels in `0..classes`.
    Labels {
        /// Number of classes.
        classes: u32,
    },
    /// Integer token ids in `0..classes`, fed with the features as `f32`
    /// whole numbers (so `predict` can take them): `input t: class[..] of N`.
    Tokens {
        /// Number of distinct tokens.
        classes: u32,
    },
}

impl InputKind {
    /// Whether the values are fed in the feature slices (features and
    /// tokens), not the label slices.
    pub fn is_fed_as_feature(self) -> bool {
        !matches!(self, InputKind::Labels { .. })
    }
}

/// One input or label of a network; every sample has `per_sample` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    /// The declared name.
    pub name: &'static str,
    /// Values per sample (the product of the non-batch dimensions).
    pub per_sample: usize,
    /// Features or labels.
    pub kind: InputKind,
    /// Whether `predict` and `predict_scores` read it (an input some output
    /// or the loss's prediction depends on); targets that only the loss
    /// reads are not.
    pub predict: bool,
}

/// One declared output; every sample has `per_sample` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSpec {
    /// The declared name.
    pub name: &'static str,
    /// Values per sample.
    pub per_sample: usize,
}

/// What a network's loss compares, found by the compiler in the `loss`
/// statement: which metrics describe the model, and which of its values
/// are the prediction ("scores") those metrics score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// `cross_entropy(logits, label)`: the scores are the logits.
    Classification {
        /// Index in [`ModelSpec::inputs`] of the label input.
        label: usize,
        /// Number of classes.
        classes: u32,
        /// Labels per sample (more than 1 for a label per position).
        positions: u32,
    },
    /// `binary_cross_entropy(logits, target)`: the scores are the logits.
    Binary {
        /// Index in [`ModelSpec::inputs`] of the target input.
        target: usize,
    },
    /// `mse(pred, target)` or `l1(pred, target)`: the scores are `pred`.
    Regression {
        /// Index in [`ModelSpec::inputs`] of the target input.
        target: usize,
    },
    /// Any other objective: no metrics beyond the loss.
    Other,
}

/// A network's loss, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossSpec {
    /// What it compares.
    pub kind: LossKind,
    /// Values per sample of the scores `Model::loss_with_scores` writes (0
    /// for [`LossKind::Other`]).
    pub scores: usize,
}

/// Samples per optimizer step, as the `train` block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSpec {
    /// The whole training set per step (full-batch gradient descent).
    Full,
    /// Mini-batches of this many samples (1 is stochastic gradient descent).
    Size(usize),
}

/// The shape of the learning-rate schedule, before the run length is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleSpec {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        /// Steps between decays.
        every: u64,
        /// Decay factor.
        gamma: f32,
    },
    /// Multiply by `gamma` every step.
    Exponential {
        /// Decay factor.
        gamma: f32,
    },
    /// Cosine annealing to `min_lr` over the rest of the run.
    Cosine {
        /// Final rate.
        min_lr: f32,
    },
}

/// A network's `train` block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSpec {
    /// The optimizer and its hyper-parameters (without the learning rate).
    pub optimizer: OptimizerConfig,
    /// The base learning rate.
    pub lr: f32,
    /// Samples per step.
    pub batch: BatchSpec,
    /// Passes over the training set.
    pub epochs: u64,
    /// Schedule shape.
    pub schedule: ScheduleSpec,
    /// Linear warmup steps in front of the schedule.
    pub warmup: u64,
    /// Decoupled weight decay applied after each step (`p -= lr·wd·p`);
    /// AdamW carries its own in `optimizer`.
    pub weight_decay: f32,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Clip the gradient to this global L2 norm (`clip_norm:`).
    pub clip_norm: Option<f32>,
    /// Stop after this many epochs without improvement (`early_stop:`).
    pub early_stop: Option<u64>,
}

impl TrainSpec {
    /// The concrete schedule for a run of `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: u64) -> Schedule {
        let after_warmup = total_steps.saturating_sub(self.warmup).max(1);
        let inner = match self.schedule {
            ScheduleSpec::Constant => Schedule::Constant,
            ScheduleSpec::Step { every, gamma } => Schedule::Step {
                step_size: every,
                gamma,
            },
            ScheduleSpec::Exponential { gamma } => Schedule::Exponential { gamma },
            ScheduleSpec::Cosine { min_lr } => Schedule::Cosine {
                total_steps: after_warmup,
                min_lr,
            },
        };
        if self.warmup > 0 {
            inner.with_warmup(self.warmup)
        } else {
            inner
        }
    }
}

/// Everything the runtime needs to know about a compiled network.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// The network's name.
    pub name: &'static str,
    /// The source file it was compiled from.
    pub source: &'static str,
    /// A hash of the compiled network (architecture and layout): checkpoints
    /// and ranks compare it to refuse mismatched models.
    pub hash: u64,
    /// Parameters, in declaration order, with offsets into the flat buffer.
    pub params: &'static [ParamSpec],
    /// Each parameter's initializer, in the same order.
    pub inits: &'static [Init],
    /// Total parameter count (the flat buffer's length).
    pub param_count: usize,
    /// Inputs and labels in declaration order.
    pub inputs: &'static [InputSpec],
    /// Outputs in declaration order.
    pub outputs: &'static [OutputSpec],
    /// The loss, for metrics.
    pub loss: LossSpec,
    /// The `train` block.
    pub train: TrainSpec,
}

/// What makes one training step's random choices (dropout masks) unique:
/// the run's seed, the optimizer step, and the global index of the first
/// sample of the batch (a data-parallel shard passes its own start, so it
/// draws exactly the mask the whole batch would).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepKey {
    /// The `train` block's seed.
    pub seed: u64,
    /// The optimizer step, from 0.
    pub step: u64,
    /// Global index of the batch's first sample.
    pub offset: u64,
}

/// One state tensor of a network (a batch norm's running mean or
/// variance): where it lives in the flat state buffer, its initial value,
/// and how fast it follows each step's batch statistic.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSpec {
    /// Name, shape and place in the state buffer.
    pub tensor: ParamSpec,
    /// Initial value of every element.
    pub init: f32,
    /// `state = (1 - momentum) · state + momentum · statistic`.
    pub momentum: f32,
}

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
            name: "stats",
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
        name: &'static str,
        /// Values expected.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A label outside `0..classes`.
    #[error("`{name}`[{index}] = {value} is not a class in 0..{classes}")]
    Label {
        /// The label input's name.
        name: &'static str,
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
        name: &'static str,
        /// Position in the slice.
        index: usize,
        /// The value as fed (a string: `StepError` is `Eq`, `f32` is not).
        value: String,
        /// Number of distinct tokens.
        classes: u32,
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
        for (p, init) in spec.params.iter().zip(spec.inits) {
            init.fill(&p.shape, &mut params[p.range()], &mut rng)?;
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
                name,
                expected: spec.param_count,
                found: len,
            });
        }
    }
    if ws.len() < workspace {
        return Err(StepError::Length {
            name: "workspace",
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
                name: spec_in.name,
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
                    name: spec_in.name,
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
                name: spec_in.name,
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
            name: "test",
            source: "test.nn",
            hash: 0,
            params: &[],
            inits: &[],
            param_count: 0,
            inputs: &[],
            outputs: &[],
            loss: LossSpec {
                kind: LossKind::Other,
                scores: 0,
            },
            train: TrainSpec {
                optimizer: OptimizerConfig::Sgd(crate::optim::SgdConfig::default()),
                lr: 0.1,
                batch: BatchSpec::Size(4),
                epochs: 1,
                schedule: ScheduleSpec::Constant,
                warmup: 0,
                weight_decay: 0.0,
                seed: 0,
                clip_norm: None,
                early_stop: None,
            },
        }
    }
}
