//! What a run trains on and how: [`TrainData`] and [`FitOptions`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::data::{Dataset, ShardSet, SplitMode};
use crate::model::{AugmentSpec, BatchSpec, ScheduleSpec, TrainSpec};
use crate::optim::OptimizerConfig;
use crate::parallel::Strategy;

use super::FitError;

/// The data of a run: a training set and an optional validation set.
/// Their columns are matched to the model's inputs and labels by name
/// (see [`crate::data::bind`]).
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    /// Samples the model is trained on.
    pub train: TrainSet<'a>,
    /// Samples the model is measured on after every epoch.
    pub validation: Option<&'a Dataset>,
}

/// Where the training samples are: in memory, or in shards on disk that
/// `fit` streams a window at a time, so its memory does not grow with the
/// data. With a window covering the data the two train bit for bit alike
/// (see [`crate::data::stream`]).
#[derive(Debug, Clone, Copy)]
pub enum TrainSet<'a> {
    /// A dataset in memory.
    Memory(&'a Dataset),
    /// Shards read during training.
    Shards(&'a ShardSet),
}

impl TrainSet<'_> {
    /// Samples in the set.
    pub fn len(&self) -> usize {
        match self {
            TrainSet::Memory(d) => d.len(),
            TrainSet::Shards(s) => s.rows(),
        }
    }

    /// Whether the set has no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The set's columns (with its rows, in memory; with none, on disk):
    /// what binds to a model.
    pub fn columns(&self) -> &Dataset {
        match self {
            TrainSet::Memory(d) => d,
            TrainSet::Shards(s) => s.schema(),
        }
    }
}

impl<'a> TrainData<'a> {
    /// Training data without validation.
    pub fn new(train: &'a Dataset) -> Self {
        TrainData {
            train: TrainSet::Memory(train),
            validation: None,
        }
    }

    /// Training data streamed from shards, without validation.
    pub fn streamed(train: &'a ShardSet) -> Self {
        TrainData {
            train: TrainSet::Shards(train),
            validation: None,
        }
    }

    /// The same training data, validated on `validation` after every epoch.
    pub fn with_validation(self, validation: &'a Dataset) -> Self {
        TrainData {
            validation: Some(validation),
            ..self
        }
    }
}

/// Splits a seeded random `fraction` of `data` off as a validation set, for
/// runs that have no separate one: returns `(train, validation)`, each in the
/// original relative order (see [`Dataset::split`]).
pub fn split_validation(
    data: &Dataset,
    fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset), FitError> {
    Ok(data.split(fraction, SplitMode::Shuffled { seed })?)
}

/// Stop training when the monitored loss (validation loss, else training
/// loss) has not improved by more than `min_delta` for `patience` epochs,
/// as Keras' `EarlyStopping(monitor="val_loss")` does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping (at least 1).
    pub patience: u64,
    /// The smallest decrease that counts as an improvement.
    pub min_delta: f64,
    /// At the end of the run (stopped early or not), put back the
    /// parameters (and state) of the best epoch, bit for bit.
    pub restore_best: bool,
}

impl EarlyStopping {
    /// Stop after `patience` epochs without improvement, restoring the best
    /// epoch's weights.
    pub fn new(patience: u64) -> Self {
        EarlyStopping {
            patience,
            min_delta: 0.0,
            restore_best: true,
        }
    }
}

/// A flag another thread (a Ctrl-C handler) raises to stop training after
/// the current step; `fit` then saves `last.safetensors`, resumable, and
/// returns with [`super::History::finished`] false.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A lowered flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop after its current step.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the run was asked to stop.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl PartialEq for StopFlag {
    /// The same flag (not merely the same state).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// How to run [`super::fit`]. Every `Option` left `None` takes the value of
/// the model's `train` block ([`crate::ModelSpec::train`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Passes over the training set (in total, counting those before a resume).
    pub epochs: Option<u64>,
    /// Samples per step.
    pub batch: Option<BatchSpec>,
    /// Base learning rate.
    pub lr: Option<f32>,
    /// Optimizer and its hyper-parameters.
    pub optimizer: Option<OptimizerConfig>,
    /// Learning-rate schedule shape.
    pub schedule: Option<ScheduleSpec>,
    /// Linear warmup steps.
    pub warmup: Option<u64>,
    /// Decoupled weight decay (ignored with AdamW, which carries its own).
    pub weight_decay: Option<f32>,
    /// Seed of the shuffling order and the dropout masks.
    pub seed: Option<u64>,
    /// Scale the gradient down to this global L2 norm when it is larger,
    /// before the optimizer sees it.
    pub clip_norm: Option<f32>,
    /// Stop early when the monitored loss stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Augmentation of the training batches ([`AugmentSpec::NONE`] turns
    /// the `train` block's off).
    pub augment: Option<AugmentSpec>,
    /// Stop once this many optimizer steps have been taken in total
    /// (counting those before a resume), even mid-epoch. The schedule still
    /// spans all `epochs`, so a run stopped this way and resumed is identical
    /// to one never stopped.
    pub max_steps: Option<u64>,
    /// Directory for `last.safetensors`, `best.safetensors` and the metrics
    /// log `metrics.csv`; created if missing. A directory that already holds
    /// another run's checkpoints is refused unless [`FitOptions::resume`]
    /// continues it or [`FitOptions::overwrite`] is set.
    pub checkpoint_dir: Option<PathBuf>,
    /// Start over in a checkpoint directory that holds another run's files.
    pub overwrite: bool,
    /// A checkpoint written by `fit` to continue from.
    pub resume: Option<PathBuf>,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Print one line of metrics per epoch on stdout.
    pub verbose: bool,
    /// How each step uses several threads ([`Strategy::Auto`] by default).
    pub parallel: Strategy,
    /// Threads for the step (a rayon pool of this size, built once);
    /// `None` uses the global pool (`RAYON_NUM_THREADS`, or one per core).
    pub threads: Option<usize>,
    /// Stop cleanly after the current step when raised (Ctrl-C).
    pub stop: Option<StopFlag>,
}

impl Default for FitOptions {
    /// Everything from the `train` block, with progress bar and epoch lines.
    fn default() -> Self {
        FitOptions {
            epochs: None,
            batch: None,
            lr: None,
            optimizer: None,
            schedule: None,
            warmup: None,
            weight_decay: None,
            seed: None,
            clip_norm: None,
            early_stopping: None,
            augment: None,
            max_steps: None,
            checkpoint_dir: None,
            overwrite: false,
            resume: None,
            progress: true,
            verbose: true,
            parallel: Strategy::Auto,
            threads: None,
            stop: None,
        }
    }
}

impl FitOptions {
    /// The defaults without progress bar or printed lines (tests, CI, libraries).
    pub fn quiet() -> Self {
        FitOptions {
            progress: false,
            verbose: false,
            ..Self::default()
        }
    }

    /// The `train` block with these options' overrides applied.
    pub fn train_spec(&self, base: &TrainSpec) -> TrainSpec {
        TrainSpec {
            optimizer: self.optimizer.unwrap_or(base.optimizer),
            lr: self.lr.unwrap_or(base.lr),
            batch: self.batch.unwrap_or(base.batch),
            epochs: self.epochs.unwrap_or(base.epochs),
            schedule: self.schedule.unwrap_or(base.schedule),
            warmup: self.warmup.unwrap_or(base.warmup),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
            seed: self.seed.unwrap_or(base.seed),
            clip_norm: self.clip_norm.or(base.clip_norm),
            early_stop: match self.early_stopping {
                Some(e) => Some(e.patience),
                None => base.early_stop,
            },
            augment: self.augment.unwrap_or(base.augment),
        }
    }

    /// Early stopping as these options and the `train` block say (the
    /// block gives only the patience; the rest are the defaults).
    pub fn early_stopping(&self, base: &TrainSpec) -> Option<EarlyStopping> {
        self.early_stopping
            .or_else(|| base.early_stop.map(EarlyStopping::new))
    }
}
