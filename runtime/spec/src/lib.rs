//! `nnc-spec`: the contract between the nnc compiler and its runtime.
//!
//! Every type both sides use is defined here once, with its defaults and
//! its validation: the model spec a compiled network describes itself with
//! ([`model`]), the `train` block ([`train`]), optimizer configurations
//! ([`optim`]), initializers ([`init`]), the dropout hash and the other
//! stable hashes ([`hash`]), the convolution geometry ([`conv`]), how
//! every output file is written ([`output`]), and how a network is cut
//! into the slices of a sliced checkpoint ([`slices`]). The
//! compiler builds these values and writes them into generated code
//! ([`tokens`], behind the `tokens` feature); the runtime consumes them.
//!
//! The crate has no dependencies beyond `quote` and `proc-macro2` for
//! `tokens`: the compiler, and with it the `network!` proc macro, links it
//! and must not pull the runtime's rayon, flate2, safetensors, ...

#![warn(missing_docs)]

pub mod conv;
pub mod hash;
pub mod init;
pub mod model;
pub mod optim;
pub mod output;
pub mod slices;
#[cfg(feature = "tokens")]
pub mod tokens;
pub mod train;

pub use conv::{out_len, Conv2d};
pub use init::Init;
pub use model::{
    InputKind, InputSpec, LossKind, LossSpec, ModelSpec, OutputSpec, ParamSpec, StateSpec, StepKey,
};
pub use optim::{AdagradConfig, AdamConfig, OptimizerConfig, RmspropConfig, SgdConfig};
pub use train::{AugmentSpec, BatchSpec, ScheduleSpec, TrainSpec};
