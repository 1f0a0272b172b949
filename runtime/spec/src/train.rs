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
    /// Random changes to each training sample (`augment:`); none by default.
    pub augment: AugmentSpec,
}

/// Data augmentation of the training batches, the `train` block's
/// `augment: image(...)` or `augment: tabular(noise: σ)`.
///
/// The runtime draws every random choice from a generator seeded by (run
/// seed, epoch, sample index), so a sample's augmentation does not depend
/// on the batch it lands in, the thread count or the rank count;
/// evaluation and prediction never augment. Per image (a feature column of
/// at least two dimensions per sample: height and width last, channels
/// before), in this order: horizontal flip, rotation, shift, cutout; then
/// Gaussian noise on every real-valued feature (never on token ids).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentSpec {
    /// Shift by up to this many pixels in each direction, drawn uniformly
    /// per axis, with zeros entering (a random crop of the zero-padded
    /// image).
    pub shift: u32,
    /// Rotate by an angle drawn uniformly in `[-rotate, rotate]` degrees
    /// about the image's centre, bilinear, zeros outside.
    pub rotate: f32,
    /// Mirror left to right with probability 1/2.
    pub flip: bool,
    /// Zero a square of this side whose centre is uniform over the image
    /// (DeVries & Taylor's cutout; the square may leave the image).
    pub cutout: u32,
    /// Standard deviation of the Gaussian noise added to every value of
    /// every real-valued feature.
    pub noise: f32,
}

impl AugmentSpec {
    /// No augmentation.
    pub const NONE: AugmentSpec = AugmentSpec {
        shift: 0,
        rotate: 0.0,
        flip: false,
        cutout: 0,
        noise: 0.0,
    };

    /// Whether it changes nothing.
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }

    /// Whether it has a geometric part that needs an image.
    pub fn is_image(&self) -> bool {
        self.shift > 0 || self.rotate > 0.0 || self.flip || self.cutout > 0
    }
}

impl Default for AugmentSpec {
    fn default() -> Self {
        Self::NONE
    }
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
            augment: AugmentSpec::NONE,
        }
    }
}
