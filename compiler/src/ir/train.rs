//! A validated `train` block: optimizer, batch size, epochs, schedule,
//! regularisation and seed. Everything the runtime needs is the contract's
//! [`TrainSpec`] (crate `nnc-spec`, shared with the runtime); the penalties
//! stay here.

use crate::diagnostic::Span;

pub use nnc_spec::optim::{AdagradConfig, AdamConfig, OptimizerConfig, RmspropConfig, SgdConfig};
pub use nnc_spec::train::{BatchSpec, ScheduleSpec, TrainSpec};

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
