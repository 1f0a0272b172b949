//! A validated `train` block: optimizer, batch size, epochs, schedule,
//! regularisation and seed. These types describe training, not the graph;
//! they are kept together because they are the contract with the runtime's
//! `TrainSpec` (one day a crate shared with it).

use crate::diagnostic::Span;

/// An optimizer with its hyper-parameters. Update rules and defaults follow
/// PyTorch's documentation of `torch.optim`.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor (0 disables momentum).
        momentum: f64,
        /// Dampening of the momentum.
        dampening: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator term.
        eps: f64,
    },
    /// Adam with decoupled weight decay.
    AdamW {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator term.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
    /// RMSprop.
    RmsProp {
        /// Learning rate.
        lr: f64,
        /// Smoothing constant.
        alpha: f64,
        /// Denominator term.
        eps: f64,
        /// Momentum factor.
        momentum: f64,
        /// Normalise by the centred second moment.
        centered: bool,
    },
    /// Adagrad.
    Adagrad {
        /// Learning rate.
        lr: f64,
        /// Learning-rate decay.
        lr_decay: f64,
        /// Denominator term.
        eps: f64,
        /// Starting value of the accumulator.
        initial_accumulator: f64,
    },
}

impl Optimizer {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Adam { lr, .. }
            | Optimizer::AdamW { lr, .. }
            | Optimizer::RmsProp { lr, .. }
            | Optimizer::Adagrad { lr, .. } => *lr,
        }
    }
}

/// How many samples one optimizer step sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    /// The whole training set: full-batch gradient descent.
    Full,
    /// Mini-batches of this size (1 is stochastic gradient descent).
    Size(u64),
}

/// The shape of a learning-rate schedule, counted in optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        /// Steps between decays.
        every: u64,
        /// Decay factor.
        gamma: f64,
    },
    /// Multiply by `gamma` every step.
    Exponential {
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over the whole run.
    Cosine {
        /// The final rate.
        min_lr: f64,
    },
}

/// A schedule with optional linear warmup in front.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// The schedule after warmup.
    pub kind: ScheduleKind,
    /// Steps of linear warmup from 0 to the base rate (0 for none).
    pub warmup: u64,
}

/// A validated `train` block.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The network it trains.
    pub network: String,
    /// The block (or the network, for defaults).
    pub span: Span,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Samples per step.
    pub batch: BatchSize,
    /// Passes over the training set.
    pub epochs: u64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// L1/L2 penalties added to the loss.
    pub regularization: Regularization,
    /// Decoupled weight decay applied by the optimizer step.
    pub weight_decay: f64,
    /// Seed for initialisation and shuffling.
    pub seed: u64,
}

impl TrainConfig {
    /// The configuration of a network without a `train` block: Adam 1e-3,
    /// batch 32, one epoch, seed 0 (Keras' `fit` defaults).
    pub fn defaults(network: &str) -> Self {
        TrainConfig {
            network: network.to_string(),
            span: Span::default(),
            optimizer: Optimizer::Adam {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            batch: BatchSize::Size(32),
            epochs: 1,
            schedule: Schedule {
                kind: ScheduleKind::Constant,
                warmup: 0,
            },
            regularization: Regularization::default(),
            weight_decay: 0.0,
            seed: 0,
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
