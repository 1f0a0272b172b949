//! The training loop: [`fit`] drives any compiled [`Model`](crate::Model) through epochs of
//! shuffled mini-batches, with a learning-rate schedule, decoupled weight
//! decay, gradient clipping, validation with the metrics of the model's
//! loss kind, early stopping, a progress bar, a metrics log and resumable
//! checkpoints; [`evaluate`] measures a model on a dataset and [`predict`]
//! runs it over one.
//!
//! Any network the language accepts trains here: the data is a
//! [`Dataset`](crate::data::Dataset) of named columns matched to the
//! model's inputs and labels by name ([`crate::data::bind`]).
//!
//! # Steps
//! Each step the seeded loader picks the next batch's samples, a
//! [`Batcher`](crate::data::Batcher) copies them into buffers allocated
//! once before the loop, and a [`Trainer`] takes the step: forward and
//! backward through a [`StepRunner`](crate::parallel::StepRunner)
//! ([`Model::train_step_at`](crate::Model::train_step_at) on the runner's workspaces and gradient
//! buffers: one, or one per shard of the batch when data parallel, see
//! [`crate::parallel`]), clipping, the optimizer's update at the schedule's
//! rate, decoupled weight decay (`p -= lr·wd·p`, except with AdamW, which
//! carries its own) and the batch-norm state update. Nothing is allocated
//! per step.
//!
//! # Batches
//! [`BatchSpec::Full`](crate::BatchSpec::Full) is full-batch gradient descent (one step per epoch over
//! the whole training set, in file order: there is nothing to shuffle);
//! `Size(1)` is stochastic gradient descent and `Size(n)` mini-batches of `n`
//! shuffled samples, the last batch of an epoch possibly smaller. The schedule
//! spans `epochs × batches per epoch` steps.
//!
//! # Checkpoints and resume
//! With [`FitOptions::checkpoint_dir`], every epoch ends by writing
//! `last.safetensors` (parameters, optimizer state, step and epoch counters,
//! model hash, loader position and this module's run state: loss sums of the
//! current epoch, best loss, epochs since it) and, when the monitored loss
//! (validation loss, else training loss) improved, the same state as
//! `best.safetensors`, then replaces the metrics log `metrics.csv` (see
//! [`log`]). A fresh run refuses a directory that holds another run's
//! files, unless told to overwrite. A run stopped by [`FitOptions::max_steps`] also writes
//! `last.safetensors`, mid-epoch if that is where it stopped. Resuming from
//! either file ([`FitOptions::resume`]) continues **bit for bit** as the run
//! that was never interrupted, at any step, provided the options that shape
//! the run (epochs, batch, lr, schedule, optimizer, data) are the same: the
//! loader replays the interrupted epoch's permutation and continues at the
//! saved position. Changing `epochs` on resume is allowed (to train longer)
//! but changes the schedule's length.
//!
//! # Early stopping
//! With [`EarlyStopping`] (or `early_stop: N;` in the `train` block) the
//! run ends when the monitored loss has not improved by more than
//! `min_delta` for `patience` epochs, and (by default) the best epoch's
//! parameters and state are put back, bit for bit.

mod eval;
mod fit;
pub mod log;
pub mod metrics;
mod options;
mod progress;
mod resume;
mod source;
mod state;
mod step;

use std::path::PathBuf;

use thiserror::Error;

use crate::checkpoint::CheckpointError;
use crate::collective::CollectiveError;
use crate::data::DataError;
use crate::model::StepError;
use crate::optim::OptimError;
use crate::parallel::StepRankError;
use crate::schedule::ScheduleError;

pub use eval::{evaluate, predict, predict_scores, Eval, Prediction, Scores};
#[cfg(feature = "app")]
pub(crate) use eval::{feature_slot, label_slot};
pub use fit::{fit, fit_with};
pub use metrics::{Confusion, Metrics};
pub use options::{split_validation, EarlyStopping, FitOptions, StopFlag, TrainData, TrainSet};
pub use resume::{BEST_CHECKPOINT, LAST_CHECKPOINT};
pub use step::{batch_size, Trainer};

/// Why training or evaluation stopped.
#[derive(Debug, Error)]
pub enum FitError {
    // The variants that wrap an error show it in their message and do not
    // expose it as `source()` (the `From`s are below), so the message is
    // complete on its own and a chain printer shows the cause once.
    /// The model rejected a batch.
    #[error("model step failed: {0}")]
    Step(StepError),
    /// The optimizer could not be built or stepped.
    #[error("optimizer: {0}")]
    Optim(OptimError),
    /// A checkpoint could not be written or read.
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointError),
    /// The data could not be read, or does not fit the model.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The learning-rate schedule is invalid.
    #[error("learning-rate schedule: {0}")]
    Schedule(ScheduleError),
    /// The model's tables are inconsistent with its buffers.
    #[error("model `{model}` cannot be trained: {reason}")]
    Unsupported {
        /// The network's name.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// Inconsistent options (bad lr, batch 0, a directory of another run, ...).
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// A checkpoint that is valid but cannot continue this run.
    #[error("{}: cannot resume: {reason}", path.display())]
    Resume {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The ranks of a multi-process run disagree, or an exchange failed.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// A parameter stopped being a finite number (the loss may still be
    /// finite: `relu` hides a NaN weight from it).
    #[error("training diverged: {0}")]
    NonFinite(NonFinite),
    /// The training loss stopped being a finite number.
    #[error("training diverged: loss is {loss} at step {step} (epoch {epoch}); try a lower learning rate")]
    Diverged {
        /// 0-based optimizer step whose batch gave the loss.
        step: u64,
        /// 1-based epoch (0 outside `fit`).
        epoch: u64,
        /// The loss.
        loss: f32,
    },
}

/// A parameter that is no longer a finite number after a step, named.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite {
    /// 0-based optimizer step whose update produced it.
    pub step: u64,
    /// 1-based epoch of that step (0 outside `fit`).
    pub epoch: u64,
    /// The parameter tensor (`h1.weight`).
    pub tensor: String,
    /// Element within the tensor.
    pub index: usize,
    /// The value (NaN or ±inf).
    pub value: f32,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "parameter `{}` became {} (element {}) in the update of step {} (epoch {}): its \
             gradient or update was not finite; try a lower learning rate or clip_norm",
            self.tensor, self.value, self.index, self.step, self.epoch
        )
    }
}

macro_rules! fit_error_from {
    ($($variant:ident($inner:ty)),*) => {$(
        impl From<$inner> for FitError {
            fn from(e: $inner) -> Self {
                FitError::$variant(e)
            }
        }
    )*};
}
fit_error_from!(
    Step(StepError),
    Optim(OptimError),
    Checkpoint(CheckpointError),
    Schedule(ScheduleError)
);

impl From<StepRankError> for FitError {
    fn from(e: StepRankError) -> Self {
        match e {
            StepRankError::Step(e) => FitError::Step(e),
            StepRankError::Collective(e) => FitError::Collective(e),
        }
    }
}

/// Metrics of one completed epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: u64,
    /// Optimizer steps taken since the start of training, after this epoch.
    pub steps: u64,
    /// Mean training loss over the epoch's samples (as each batch saw it).
    pub train_loss: f64,
    /// Loss and metrics on the validation set after the epoch.
    pub val: Option<Eval>,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
    /// Training throughput of the epoch (validation excluded).
    pub samples_per_sec: f64,
    /// Training wall time in seconds from the start of the run (across
    /// resumes) to the end of this epoch.
    pub elapsed_s: f64,
}

/// What [`fit`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// Every completed epoch, including those before a resume.
    pub epochs: Vec<EpochMetrics>,
    /// Optimizer steps taken in total.
    pub steps: u64,
    /// Training samples this call stepped through (every global batch's
    /// rows; a batch larger than the data counts the data once), for
    /// throughput: not counting the epochs before a resume.
    pub samples: u64,
    /// False when [`FitOptions::max_steps`] stopped the run before its last epoch.
    pub finished: bool,
    /// True when early stopping ended the run.
    pub stopped_early: bool,
}

impl History {
    /// The epoch whose weights `fit` keeps as the best: the first whose
    /// validation loss (else training loss) improved on every earlier one
    /// by more than `min_delta` and was not improved on later, by the rule
    /// `fit` applies ([`EarlyStopping::min_delta`], 0 without early
    /// stopping).
    pub fn best_epoch(&self, min_delta: f64) -> Option<&EpochMetrics> {
        let mut best: Option<(&EpochMetrics, f64)> = None;
        for e in &self.epochs {
            let monitored = e.val.as_ref().map_or(e.train_loss, |v| v.loss);
            if best.is_none_or(|(_, b)| monitored < b - min_delta) {
                best = Some((e, monitored));
            }
        }
        best.map(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::{EpochMetrics, Eval, History, Metrics};

    fn history(train: &[f64], val: Option<&[f64]>) -> History {
        let epochs = train
            .iter()
            .enumerate()
            .map(|(i, &train_loss)| EpochMetrics {
                epoch: i as u64 + 1,
                steps: i as u64 + 1,
                train_loss,
                val: val.map(|v| Eval {
                    loss: v[i],
                    metrics: Metrics::None,
                }),
                lr: 0.1,
                samples_per_sec: 1.0,
                elapsed_s: 1.0,
            })
            .collect();
        History {
            epochs,
            ..History::default()
        }
    }

    #[test]
    fn best_epoch_follows_the_rule_fit_applies() {
        let best = |h: &History, d| h.best_epoch(d).map(|e| e.epoch);
        assert_eq!(best(&History::default(), 0.0), None);
        // Validation loss decides when there is one; the first of equals wins.
        let h = history(&[5.0, 4.0, 3.0, 2.0], Some(&[3.0, 1.0, 2.0, 1.0]));
        assert_eq!(best(&h, 0.0), Some(2));
        // Training loss without validation.
        let h = history(&[5.0, 4.0, 3.0, 3.5], None);
        assert_eq!(best(&h, 0.0), Some(3));
        // An improvement must beat min_delta: 1.0 -> 0.95 is not one at 0.1.
        let h = history(&[1.0, 0.95, 0.92], None);
        assert_eq!(best(&h, 0.1), Some(1));
        assert_eq!(best(&h, 0.01), Some(3));
    }
}
