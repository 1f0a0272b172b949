//! The model spec: what a compiled network tells the runtime about itself
//! (parameters and their initializers, inputs, outputs, loss, state, the
//! `train` block), and the key of one step's random choices.

use std::borrow::Cow;

use crate::init::Init;
use crate::train::TrainSpec;

/// One named parameter: `buffer[offset..offset+len]`, viewed with `shape`.
///
/// Fields are `Cow<'static, _>` so generated code can declare the table as a
/// `const` of borrowed literals while tools that build models at run time can
/// use owned names and shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// The name in the source language, also the checkpoint tensor name.
    pub name: Cow<'static, str>,
    /// Logical shape; dense weights are `[in, out]` (`x @ W` convention).
    pub shape: Cow<'static, [usize]>,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Element count; always the product of `shape`.
    pub len: usize,
}

impl ParamSpec {
    /// A spec with an owned name and shape, `len` derived from the shape.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, offset: usize) -> Self {
        let len = shape.iter().product();
        ParamSpec {
            name: Cow::Owned(name.into()),
            shape: Cow::Owned(shape),
            offset,
            len,
        }
    }

    /// The `offset..offset+len` range, for slicing the flat buffers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The declared name.
    pub name: Cow<'static, str>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The declared name.
    pub name: Cow<'static, str>,
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

/// Everything the runtime needs to know about a compiled network.
///
/// Generated code declares it as a `static` of borrowed literals (hence
/// the `Cow<'static, _>` fields); the compiler builds owned values and
/// writes them out ([`crate::tokens`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The network's name.
    pub name: Cow<'static, str>,
    /// The source file it was compiled from.
    pub source: Cow<'static, str>,
    /// A hash of the compiled network (architecture and layout): checkpoints
    /// and ranks compare it to refuse mismatched models.
    pub hash: u64,
    /// Parameters, in declaration order, with offsets into the flat buffer.
    pub params: Cow<'static, [ParamSpec]>,
    /// Each parameter's initializer, in the same order.
    pub inits: Cow<'static, [Init]>,
    /// Total parameter count (the flat buffer's length).
    pub param_count: usize,
    /// Inputs and labels in declaration order.
    pub inputs: Cow<'static, [InputSpec]>,
    /// Outputs in declaration order.
    pub outputs: Cow<'static, [OutputSpec]>,
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
