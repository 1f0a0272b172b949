//! A validated `train` block: optimizer, batch size, epochs, schedule,
//! regularisation and seed. Everything the runtime needs is the contract's
//! [`TrainSpec`] (crate `nnc-spec`, shared with the runtime); the penalties
//! stay here.

use crate::diagnostic::Span;

pub use nnc_spec::optim::{AdagradConfig, AdamConfig, OptimizerConfig, RmspropConfig, SgdConfig};
pub use nnc_spec::train::{AugmentSpec, BatchSpec, ScheduleSpec, TrainSpec};

/// A validated `train` block: what the runtime gets ([`TrainSpec`], the
/// contract's type) and what stays in the compiler (the penalties folded
/// into the loss before differentiation).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The network it trains.
    pub network: String,
    /// The block (or the network, for defaults).
    pub span: Span,
    /// Optimizer, rate, batch, epochs, schedule, decay, seed, clipping,
    /// early stopping: written into the generated `ModelSpec`.
    pub spec: TrainSpec,
    /// L1/L2 penalties added to the loss.
    pub regularization: Regularization,
    /// The training data (`data:`), for `nnc train`.
    pub data: Option<DataSource>,
    /// How to validate (`validation:`): a held-out fraction or a file.
    pub validation: Option<Validation>,
    /// The test data (`test:`), evaluated after training.
    pub test: Option<DataSource>,
    /// The teacher network whose logits feed the input `teacher`
    /// (`teacher: lenet("lenet.safetensors");`).
    pub teacher: Option<TeacherSource>,
    /// Pipeline stages (`stages:`): the bindings that end each stage but
    /// the last, in order, with their spans; empty for one stage. Checked
    /// against the network's graph by `lower::stages`.
    pub stages: Vec<(String, Span)>,
    /// Split layers (`split: [columns(h1), rows(h2)]`): the dense layers
    /// whose weights are cut across ranks, in order; empty for none.
    /// Checked against the network's graph by `lower::split`.
    pub split: Vec<SplitLayer>,
    /// How many ranks the split layers are cut for (`split_ranks:`,
    /// default 2): the slices' shapes are static, so fixed at compile time.
    pub split_ranks: usize,
}

/// How a split layer's dense weight `[in, out]` is cut across ranks
/// (Megatron-LM's tensor parallelism).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitKind {
    /// `columns(h)`: rank `r` holds `weight[:, cols_r]` and `bias[cols_r]`
    /// and computes its slice of the layer's output.
    Columns,
    /// `rows(h)`: rank `r` holds `weight[rows_r, :]`, reads its slice of the
    /// input, and the partial products are summed over ranks (all-reduce)
    /// before the bias.
    Rows,
}

/// One entry of `split:`: a binding whose `dense` layer is split.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitLayer {
    /// The binding (`h1`), whose layer's parameters are `h1.weight` and
    /// `h1.bias`.
    pub binding: String,
    /// Columns or rows.
    pub kind: SplitKind,
    /// The entry (`columns(h1)`).
    pub span: Span,
}

/// A `teacher:` setting: another network of the same file, run in its
/// inference form inside the student's step, its parameters read from a
/// weights file. Lowering splices its forward graph into the student's.
#[derive(Clone, Debug, PartialEq)]
pub struct TeacherSource {
    /// The teacher network's name.
    pub network: String,
    /// The name as written.
    pub name_span: Span,
    /// The weights file as written, relative to the `.nn` file.
    pub path: String,
    /// The path string.
    pub path_span: Span,
    /// The whole call (`lenet("lenet.safetensors")`).
    pub span: Span,
}

/// A data file (or IDX directory) a `train` block names, as written: the
/// path is relative to the `.nn` file. Only `nnc train`, `eval` and
/// `predict` read it; generated code does not.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSource {
    /// The path as written.
    pub path: String,
    /// CSV with its column mapping, or IDX.
    pub format: DataFormat,
    /// The whole call (`csv("iris.csv", label: species)`).
    pub span: Span,
    /// The path string.
    pub path_span: Span,
}

/// How a data file is read.
#[derive(Clone, Debug, PartialEq)]
pub enum DataFormat {
    /// `csv("file", label: COL, delimiter: ";", header: false, INPUT: COLS, ...)`.
    Csv {
        /// The column of the labels or targets: a header name or an index.
        label: Option<String>,
        /// The field separator.
        delimiter: Option<char>,
        /// Whether the first row is a header (`None`: detect).
        header: Option<bool>,
        /// `(input, columns)`: which CSV columns feed an input, with the
        /// span of the argument.
        columns: Vec<(String, String, Span)>,
    },
    /// `idx("dir/")`: MNIST's four IDX files.
    Idx,
}

/// How a run is validated.
#[derive(Clone, Debug, PartialEq)]
pub enum Validation {
    /// A seeded random fraction of the training data, held out.
    Fraction(f64),
    /// A file of its own.
    Data(DataSource),
}

impl TrainConfig {
    /// The configuration of a network without a `train` block: the
    /// contract's defaults ([`TrainSpec::default`], Keras' `fit`: Adam
    /// 1e-3, batch 32, one epoch, seed 0).
    pub fn defaults(network: &str) -> Self {
        TrainConfig {
            network: network.to_string(),
            span: Span::default(),
            spec: TrainSpec::default(),
            regularization: Regularization::default(),
            data: None,
            validation: None,
            test: None,
            teacher: None,
            stages: Vec::new(),
            split: Vec::new(),
            split_ranks: 2,
        }
    }
}

/// Penalties added to the loss before differentiation. They apply to the
/// weights (parameters of rank 2 or more), not to biases or norms' scales.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Regularization {
    /// Adds `l1 · Σ|w|`.
    pub l1: f64,
    /// Adds `l2/2 · Σw²`, so the gradient gains `l2 · w` (PyTorch's coupled
    /// `weight_decay` convention).
    pub l2: f64,
}
