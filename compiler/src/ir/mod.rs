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
    default_init, Init, InputDecl, InputKind, LossDecl, Module, Network, OutputDecl, ParamDecl,
    StateDecl,
};
pub use train::{
    AdagradConfig, AdamConfig, BatchSpec, DataFormat, DataSource, OptimizerConfig, Regularization,
    RmspropConfig, ScheduleSpec, SgdConfig, TrainConfig, TrainSpec, Validation,
};
pub use training::{GradOptions, TrainingGraph};

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
