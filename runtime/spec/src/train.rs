//! The `train` block: optimizer, learning rate, batch, epochs, schedule,
//! weight decay, seed, clipping and early stopping.

use crate::optim::OptimizerConfig;

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

impl Default for TrainSpec {
    /// A network without a `train` block: Keras' `fit` defaults — Adam at
    /// 1e-3, batch 32, one epoch, constant rate, seed 0.
    fn default() -> Self {
        TrainSpec {
            optimizer: OptimizerConfig::Adam(crate::optim::AdamConfig::default()),
            lr: 1e-3,
            batch: BatchSpec::Size(32),
            epochs: 1,
            schedule: ScheduleSpec::Constant,
            warmup: 0,
            weight_decay: 0.0,
            seed: 0,
            clip_norm: None,
            early_stop: None,
        }
    }
}
