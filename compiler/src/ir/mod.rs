//! The types the stages hand each other, below every stage: a lowered
//! [`Module`] of [`Network`]s with their declarations, the validated
//! [`TrainConfig`] of each `train` block, and the [`TrainingGraph`] that
//! autodiff makes and the passes and codegen consume. The computation graph
//! itself is [`crate::graph`].
//!
//! Invariant: this module holds data and the queries over it, never a
//! stage's work, so every stage can import it without importing another.

mod network;
mod train;
mod training;

pub use network::{
    default_init, FrozenDecl, Init, InputDecl, InputKind, LossDecl, Module, Network, OutputDecl,
    ParamDecl, StateDecl,
};
pub use train::{
    AdagradConfig, AdamConfig, AugmentSpec, BatchSpec, DataFormat, DataSource, OptimizerConfig,
    Regularization, RmspropConfig, ScheduleSpec, SgdConfig, SplitKind, SplitLayer, TeacherSource,
    TrainConfig, TrainSpec, Validation,
};
pub use training::{GradOptions, TrainingGraph};

/// `MnistMlp` → `MNIST_MLP`: how generated code names a network's statics
/// (`MNIST_MLP_SPEC`), so two networks of one file must differ in it.
pub fn screaming(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase() || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
        if boundary && !out.ends_with('_') {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Optimisation levels of `nnc compile -O`: which graph passes run, and
/// whether codegen fuses loops and plans memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum OptLevel {
    /// No graph passes: one kernel per node, every value its own buffer.
    O0,
    /// Folding, simplification, CSE and DCE to a fixed point.
    O1,
    /// Everything in O1 plus the softmax + cross-entropy gradient rewrite,
    /// fusion and memory planning.
    #[default]
    O2,
}
