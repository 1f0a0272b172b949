//! The training loop: [`fit`] drives any compiled [`Model`] through epochs of
//! shuffled mini-batches, with a learning-rate schedule, decoupled weight
//! decay, validation, a progress bar, per-epoch metrics and resumable
//! checkpoints; [`evaluate`] measures a model on a dataset.
//!
//! Scope: networks with exactly one feature input and one class-label input
//! (one label per sample), the shape of every classifier nnc compiles today.
//!
//! # Steps
//! Each step the seeded loader copies the next batch into buffers allocated
//! once before the loop, the model runs forward and backward through a
//! [`StepRunner`] ([`Model::train_step_in`] on the runner's workspaces and
//! gradient buffers: one, or one per shard of the batch when data parallel,
//! see [`crate::parallel`]), and the optimizer updates the parameters from
//! the runner's gradient with the schedule's rate for that step. For every optimizer
//! except AdamW, which carries its own, the `train` block's decoupled weight
//! decay follows: `p -= lr·wd·p`. Nothing is allocated per step.
//!
//! # Batches
//! [`BatchSpec::Full`] is full-batch gradient descent (one step per epoch over
//! the whole training set, in file order: there is nothing to shuffle);
//! `Size(1)` is stochastic gradient descent and `Size(n)` mini-batches of `n`
//! shuffled samples, the last batch of an epoch possibly smaller. The schedule
//! spans `epochs × batches per epoch` steps.
//!
//! # Checkpoints and resume
//! With [`FitOptions::checkpoint_dir`], every epoch ends by writing
//! `last.safetensors` (parameters, optimizer state, step and epoch counters,
//! model hash, loader position and this module's run state: loss sums of the
//! current epoch, best loss, metric history) and, when the monitored loss
//! (validation loss, else training loss) improved, the same state as
//! `best.safetensors`. A run stopped by [`FitOptions::max_steps`] also writes
//! `last.safetensors`, mid-epoch if that is where it stopped. Resuming from
//! either file ([`FitOptions::resume`]) continues **bit for bit** as the run
//! that was never interrupted, at any step, provided the options that shape
//! the run (epochs, batch, lr, schedule, optimizer, data) are the same: the
//! loader replays the interrupted epoch's permutation and continues at the
//! saved position. Changing `epochs` on resume is allowed (to train longer)
//! but changes the schedule's length.

mod eval;
mod state;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use thiserror::Error;

use crate::checkpoint::{self, CheckpointError, CheckpointMeta};
use crate::collective::{fnv1a, hash_f32, Collective, CollectiveError, Local, Value};
use crate::data::{DataError, Dataset, LabelsMut, Loader, LoaderConfig, SplitMode};
use crate::model::{
    Batch, BatchSpec, InputKind, Model, ModelSpec, ScheduleSpec, StepError, StepKey, TrainSpec,
};
use crate::optim::{OptimError, Optimizer, OptimizerConfig};
use crate::parallel::{StepRankError, StepRunner, Strategy};
use crate::schedule::ScheduleError;

use eval::Evaluator;
pub use eval::{evaluate, Eval};
use state::RunState;

/// File name of the checkpoint written after every epoch.
pub const LAST_CHECKPOINT: &str = "last.safetensors";
/// File name of the checkpoint of the epoch with the lowest monitored loss.
pub const BEST_CHECKPOINT: &str = "best.safetensors";

/// Added to the `train` seed to seed the shuffling stream, so shuffling does
/// not replay the generator stream that initialised the parameters.
const SHUFFLE_STREAM: u64 = 0x5348_5546_464c_4531;

/// Why training or evaluation stopped.
#[derive(Debug, Error)]
pub enum FitError {
    /// The model rejected a batch.
    #[error("model step failed: {0}")]
    Step(#[from] StepError),
    /// The optimizer could not be built or stepped.
    #[error("optimizer: {0}")]
    Optim(#[from] OptimError),
    /// A checkpoint could not be written or read.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The data could not be served.
    #[error("data: {0}")]
    Data(#[from] DataError),
    /// The learning-rate schedule is invalid.
    #[error("learning-rate schedule: {0}")]
    Schedule(#[from] ScheduleError),
    /// The model has inputs or outputs `fit` cannot feed.
    #[error("model `{model}` is not supported by fit: {reason}")]
    Unsupported {
        /// The network's name.
        model: &'static str,
        /// What is not supported.
        reason: String,
    },
    /// The data does not match the model's inputs.
    #[error("{what} does not fit model `{model}`: {reason}")]
    DataMismatch {
        /// "training set", "validation set" or "dataset".
        what: &'static str,
        /// The network's name.
        model: &'static str,
        /// What differs.
        reason: String,
    },
    /// Inconsistent options (batch above the model's maximum, bad lr, ...).
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
    #[error("{0}")]
    Collective(#[from] CollectiveError),
    /// The training loss stopped being a finite number.
    #[error("training diverged: loss is {loss} at step {step} (epoch {epoch}); try a lower learning rate")]
    Diverged {
        /// 0-based optimizer step whose batch gave the loss.
        step: u64,
        /// 1-based epoch.
        epoch: u64,
        /// The loss.
        loss: f32,
    },
}

impl From<StepRankError> for FitError {
    fn from(e: StepRankError) -> Self {
        match e {
            StepRankError::Step(e) => FitError::Step(e),
            StepRankError::Collective(e) => FitError::Collective(e),
        }
    }
}

/// The data of a run: a training set and an optional validation set, both
/// with one feature row and one class label per sample.
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    /// Samples the model is trained on.
    pub train: &'a Dataset,
    /// Samples the model is measured on after every epoch.
    pub validation: Option<&'a Dataset>,
}

impl<'a> TrainData<'a> {
    /// Training data without validation.
    pub fn new(train: &'a Dataset) -> Self {
        TrainData {
            train,
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

/// How to run [`fit`]. Every `Option` left `None` takes the value of the
/// model's `train` block ([`ModelSpec::train`]).
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
    /// Seed of the shuffling order.
    pub seed: Option<u64>,
    /// Stop once this many optimizer steps have been taken in total
    /// (counting those before a resume), even mid-epoch. The schedule still
    /// spans all `epochs`, so a run stopped this way and resumed is identical
    /// to one never stopped.
    pub max_steps: Option<u64>,
    /// Directory for `last.safetensors` and `best.safetensors`; created if
    /// missing.
    pub checkpoint_dir: Option<PathBuf>,
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
            max_steps: None,
            checkpoint_dir: None,
            resume: None,
            progress: true,
            verbose: true,
            parallel: Strategy::Auto,
            threads: None,
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
    /// Mean loss on the validation set after the epoch.
    pub val_loss: Option<f64>,
    /// Fraction of validation samples whose first output's argmax is the
    /// label (when the first output has one value per class).
    pub val_accuracy: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
    /// Training throughput of the epoch (validation excluded).
    pub samples_per_sec: f64,
    /// Training wall time from the start of the run (across resumes) to the
    /// end of this epoch.
    pub elapsed: Duration,
}

/// What [`fit`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// Every completed epoch, including those before a resume.
    pub epochs: Vec<EpochMetrics>,
    /// Optimizer steps taken in total.
    pub steps: u64,
    /// False when [`FitOptions::max_steps`] stopped the run before its last epoch.
    pub finished: bool,
}

/// The one feature input and one label input `fit` feeds.
#[derive(Debug, Clone, Copy)]
struct Layout {
    model: &'static str,
    /// Values per sample of the feature input.
    features: usize,
    /// Classes of the label input.
    classes: u32,
}

impl Layout {
    fn of(spec: &ModelSpec) -> Result<Self, FitError> {
        let unsupported = |reason: String| FitError::Unsupported {
            model: spec.name,
            reason,
        };
        let describe = || {
            let list: Vec<String> = spec
                .inputs
                .iter()
                .map(|i| match i.kind {
                    InputKind::Features => format!("`{}`: {} features", i.name, i.per_sample),
                    InputKind::Tokens { classes } => {
                        format!("`{}`: {} token ids of {classes}", i.name, i.per_sample)
                    }
                    InputKind::Labels { classes } => {
                        format!("`{}`: {} labels of {classes} classes", i.name, i.per_sample)
                    }
                })
                .collect();
            format!(
                "fit feeds one feature input and one class-label input, the model has [{}]",
                list.join(", ")
            )
        };
        let features: Vec<_> = spec
            .inputs
            .iter()
            .filter(|i| i.kind == InputKind::Features)
            .collect();
        let labels: Vec<_> = spec
            .inputs
            .iter()
            .filter_map(|i| match i.kind {
                InputKind::Labels { classes } => Some((i, classes)),
                InputKind::Features | InputKind::Tokens { .. } => None,
            })
            .collect();
        let (&[feat], &[(label, classes)]) = (features.as_slice(), labels.as_slice()) else {
            return Err(unsupported(describe()));
        };
        if label.per_sample != 1 {
            return Err(unsupported(format!(
                "label `{}` has {} values per sample; fit feeds one class per sample",
                label.name, label.per_sample
            )));
        }
        if feat.per_sample == 0 {
            return Err(unsupported(format!("input `{}` has no values", feat.name)));
        }
        Ok(Layout {
            model: spec.name,
            features: feat.per_sample,
            classes,
        })
    }

    /// Checks that `data` has this layout's sample size and classes.
    fn check(&self, data: &Dataset, what: &'static str) -> Result<(), FitError> {
        let mismatch = |reason: String| FitError::DataMismatch {
            what,
            model: self.model,
            reason,
        };
        if data.is_empty() {
            return Err(mismatch("it has no samples".into()));
        }
        if data.sample_len() != self.features {
            return Err(mismatch(format!(
                "its samples have {} values (shape {:?}), the model's input takes {}",
                data.sample_len(),
                data.sample_shape(),
                self.features
            )));
        }
        match data.num_classes() {
            None => Err(mismatch(
                "it has regression targets, the model takes class labels".into(),
            )),
            Some(c) if c > self.classes as usize => Err(mismatch(format!(
                "it has {c} classes, the model's label input takes {}",
                self.classes
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// Checks that the model's buffers have the lengths its spec declares.
fn check_buffers<M: Model + ?Sized>(model: &M) -> Result<(), FitError> {
    let spec = model.spec();
    let unsupported = |reason: String| FitError::Unsupported {
        model: spec.name,
        reason,
    };
    crate::params::validate_layout(spec.params, spec.param_count)
        .map_err(|e| unsupported(format!("invalid parameter table: {e}")))?;
    let len = model.params().len();
    if len != spec.param_count {
        return Err(unsupported(format!(
            "params buffer has {len} values, the spec declares {}",
            spec.param_count
        )));
    }
    Ok(())
}

/// The hash a checkpoint stores to identify the model.
fn model_hash(spec: &ModelSpec) -> String {
    format!("{:016x}", spec.hash)
}

/// Trains `model` on `data` as its `train` block and `opts` say and returns
/// the metrics of every epoch. See the [module docs](self) for the loop,
/// checkpoints and resume.
///
/// The parameters are trained from their current values: initialise them
/// first ([`Model::init_params`]) unless resuming.
pub fn fit<M: Model + ?Sized>(
    model: &mut M,
    data: &TrainData<'_>,
    opts: &FitOptions,
) -> Result<History, FitError> {
    fit_with(model, data, opts, &Local)
}

/// [`fit`] as one rank of a group of processes (data-parallel training, see
/// [`crate::collective`]). Every rank calls it with the same model, data and
/// options; the run is then the run of one process on the same global
/// batches (bit for bit on two ranks, see [`StepRunner`]):
///
/// * at start-up the ranks compare model hash, parameter count, training
///   options and data sizes ([`Collective::check_agreement`]) and all fail
///   with the same [`FitError::Collective`] naming the first rank that
///   differs;
/// * rank 0's parameters (initialised, or resumed) are broadcast to all;
/// * each rank computes its rows of every global batch (every rank runs the
///   same seeded loader and gathers only its own rows), and the gradient and
///   loss are summed with one all-reduce per step; every rank then takes the
///   same optimizer step;
/// * only rank 0 prints, shows progress and writes checkpoints; every rank
///   evaluates the validation set (so every rank returns the same
///   [`History`]); at the end of each epoch the ranks check that their
///   parameters are still bit-identical;
/// * resuming: every rank reads [`FitOptions::resume`] (a path every rank
///   can read), and a checkpoint of a run on any number of ranks resumes on
///   any other number.
///
/// A rank whose `fit_with` returns an error should end the job with
/// [`Collective::abort`]: the other ranks may be waiting in a collective.
pub fn fit_with<M: Model + ?Sized>(
    model: &mut M,
    data: &TrainData<'_>,
    opts: &FitOptions,
    comm: &dyn Collective,
) -> Result<History, FitError> {
    match opts.threads {
        None => fit_on_current_pool(model, data, opts, comm),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| FitError::Config(format!("cannot start {n} threads: {e}")))?;
            pool.install(|| fit_on_current_pool(model, data, opts, comm))
        }
    }
}

fn fit_on_current_pool<M: Model + ?Sized>(
    model: &mut M,
    data: &TrainData<'_>,
    opts: &FitOptions,
    comm: &dyn Collective,
) -> Result<History, FitError> {
    let spec = model.spec();
    let lead = comm.rank() == 0;
    // First, before anything that could fail on one rank only: do the ranks
    // run the same thing? (A rank failing alone leaves the others waiting.)
    {
        let train = opts.train_spec(&spec.train);
        comm.check_agreement(&[
            ("model hash", Value::Hash(spec.hash)),
            ("parameter count", Value::Count(spec.param_count as u64)),
            (
                "params buffer length",
                Value::Count(model.params().len() as u64),
            ),
            ("training samples", Value::Count(data.train.len() as u64)),
            (
                "validation samples",
                Value::Count(data.validation.map_or(0, |v| v.len() as u64)),
            ),
            (
                "training options (hash)",
                Value::Hash(fnv1a(format!("{train:?}").into_bytes())),
            ),
            (
                "max steps",
                Value::Count(opts.max_steps.unwrap_or(u64::MAX)),
            ),
            (
                "parallel strategy (hash)",
                Value::Hash(fnv1a(format!("{:?}", opts.parallel).into_bytes())),
            ),
            ("resuming", Value::Count(u64::from(opts.resume.is_some()))),
        ])?;
    }
    let layout = Layout::of(spec)?;
    check_buffers(model)?;
    layout.check(data.train, "training set")?;
    if let Some(v) = data.validation {
        layout.check(v, "validation set")?;
    }
    let train = opts.train_spec(&spec.train);
    if !(train.lr.is_finite() && train.lr >= 0.0) {
        return Err(FitError::Config(format!(
            "learning rate {} is not a finite number >= 0",
            train.lr
        )));
    }
    if !(train.weight_decay.is_finite() && train.weight_decay >= 0.0) {
        return Err(FitError::Config(format!(
            "weight decay {} is not a finite number >= 0",
            train.weight_decay
        )));
    }
    let n = data.train.len();
    let batch = match train.batch {
        BatchSpec::Full => n,
        BatchSpec::Size(0) => return Err(FitError::Config("batch size 0".into())),
        BatchSpec::Size(b) => b,
    };
    if batch > model.max_batch() {
        let what = match train.batch {
            BatchSpec::Full => format!("full-batch training on {n} samples"),
            BatchSpec::Size(_) => format!("a batch of {batch} samples"),
        };
        return Err(FitError::Config(format!(
            "{what} exceeds the model's maximum batch {} (its workspace size); \
             choose a smaller batch or build the model with a larger maximum",
            model.max_batch()
        )));
    }

    let mut loader = Loader::new(
        n,
        LoaderConfig {
            batch_size: batch,
            shuffle: train.batch != BatchSpec::Full,
            drop_last: false,
            seed: train.seed.wrapping_add(SHUFFLE_STREAM),
        },
    )?;
    let total_steps = train
        .epochs
        .saturating_mul(loader.batches_per_epoch() as u64);
    let schedule = train.schedule(total_steps);
    schedule.validate()?;
    let mut optimizer = train.optimizer.build(spec.param_count)?;
    let mut run = RunState::default();
    if let Some(path) = &opts.resume {
        run = resume(model, path, batch, optimizer.as_mut(), &mut loader)?;
    }
    // Rank 0's parameters are the run's: initialised there, or resumed.
    comm.broadcast(model.params_mut(), 0)?;
    comm.check_agreement(&[("resumed step", Value::Count(optimizer.steps()))])?;
    let ckpt_dir = match &opts.checkpoint_dir {
        Some(dir) if lead => {
            std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
                path: dir.clone(),
                source,
            })?;
            Some(dir.as_path())
        }
        _ => None,
    };

    // Everything the loop touches, allocated once.
    let mut runner = StepRunner::for_rank(&*model, batch, opts.parallel, comm.rank(), comm.size());
    let rank_max = runner.rank_rows(batch).len();
    let mut x = vec![0.0f32; rank_max * layout.features];
    let mut y = vec![0u32; rank_max];
    let mut evaluator = match data.validation {
        Some(_) => Some(Evaluator::new(model)?),
        None => None,
    };
    let decay = match train.optimizer {
        OptimizerConfig::AdamW(_) => 0.0,
        _ => train.weight_decay,
    };
    let show_progress = lead && opts.progress && std::io::stderr().is_terminal();
    let running_loss = Arc::new(AtomicU64::new(f64::NAN.to_bits()));
    let stop_at = opts.max_steps.unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut step = optimizer.steps();
    let mut lr = schedule.lr_at(train.lr, step);
    let ctx = SaveContext {
        dir: ckpt_dir,
        spec,
        batch,
    };

    while loader.epoch() < train.epochs && step < stop_at {
        let epoch = loader.epoch();
        let bar = progress_bar(
            show_progress,
            n,
            loader.state().position,
            epoch,
            train.epochs,
            &running_loss,
        );
        let epoch_started = Instant::now();
        let mut samples_now = 0usize;
        loop {
            if step >= stop_at && loader.state().position < n {
                // Stopped mid-epoch: save where we are and leave. (At the
                // epoch's end the epoch is closed first, below.)
                bar.finish_and_clear();
                run.elapsed += started.elapsed();
                ctx.save_last(model, optimizer.as_ref(), &loader, &run)?;
                return Ok(History {
                    epochs: run.history,
                    steps: step,
                    finished: false,
                });
            }
            let Some(indices) = loader.next_indices() else {
                break;
            };
            // Every rank draws the same global batch and copies its own rows.
            let rows = indices.len();
            let own = runner.rank_rows(rows);
            let mine = &indices[own.clone()];
            data.train
                .gather(mine, &mut x, LabelsMut::Classes(&mut y))?;
            let inputs = [&x[..mine.len() * layout.features]];
            let labels = [&y[..mine.len()]];
            // Dropout masks are keyed by the global sample index: the runner
            // adds this rank's and each shard's first row.
            let key = StepKey {
                seed: train.seed,
                step,
                offset: 0,
            };
            let local = Batch {
                inputs: &inputs,
                labels: &labels,
            };
            // On one rank the shards' gradients are summed inside the
            // optimizer's update ([`StepRunner::update`]); ranks must sum
            // theirs first, for the all-reduce.
            let loss = if comm.size() == 1 {
                runner.step_deferred_at(&*model, &local, key)?
            } else {
                runner.step_ranks(&*model, &local, rows, key, comm)?
            };
            if !loss.is_finite() {
                bar.finish_and_clear();
                return Err(FitError::Diverged {
                    step,
                    epoch: epoch + 1,
                    loss,
                });
            }
            lr = schedule.lr_at(train.lr, step);
            let params = model.params_mut();
            runner.update(optimizer.as_mut(), params, lr)?;
            if decay != 0.0 {
                let k = lr * decay;
                for p in params.iter_mut() {
                    *p -= k * *p;
                }
            }
            // Running statistics (batch norm) follow the batch's.
            model.update_state(runner.stats());
            step += 1;
            run.epoch_loss += f64::from(loss) * rows as f64;
            run.epoch_samples += rows as u64;
            samples_now += rows;
            if show_progress {
                let mean = run.epoch_loss / run.epoch_samples as f64;
                running_loss.store(mean.to_bits(), Ordering::Relaxed);
                bar.inc(rows as u64);
            }
        }
        let train_time = epoch_started.elapsed();
        bar.finish_and_clear();

        let val = match (data.validation, evaluator.as_mut()) {
            (Some(v), Some(e)) => Some(e.run(model, v)?),
            _ => None,
        };
        let train_loss = run.epoch_loss / run.epoch_samples.max(1) as f64;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            steps: step,
            train_loss,
            val_loss: val.map(|v| v.loss),
            val_accuracy: val.and_then(|v| v.accuracy),
            lr,
            samples_per_sec: samples_now as f64 / train_time.as_secs_f64().max(1e-9),
            elapsed: run.elapsed + started.elapsed(),
        };
        if opts.verbose && lead {
            println!("{}", format_epoch(&metrics, train.epochs));
        }
        // Identical steps on identical gradients keep the ranks' parameters
        // identical; check it, cheaply, once an epoch.
        comm.check_agreement(&[("parameters (hash)", Value::Hash(hash_f32(model.params())))])?;
        let monitored = metrics.val_loss.unwrap_or(train_loss);
        let improved = monitored < run.best;
        if improved {
            run.best = monitored;
        }
        run.history.push(metrics);
        run.epoch_loss = 0.0;
        run.epoch_samples = 0;
        if ckpt_dir.is_some() {
            let mut saved = run.clone();
            saved.elapsed += started.elapsed();
            if improved {
                ctx.save(BEST_CHECKPOINT, model, optimizer.as_ref(), &loader, &saved)?;
            }
            ctx.save_last(model, optimizer.as_ref(), &loader, &saved)?;
        }
    }
    Ok(History {
        finished: loader.epoch() >= train.epochs,
        epochs: run.history,
        steps: step,
    })
}

/// Loads a checkpoint written by `fit` into the model, optimizer and loader.
/// Everything is validated before the model's parameters are touched.
fn resume<M: Model + ?Sized>(
    model: &mut M,
    path: &Path,
    batch: usize,
    optimizer: &mut dyn Optimizer,
    loader: &mut Loader,
) -> Result<RunState, FitError> {
    let spec = model.spec();
    let fail = |reason: String| FitError::Resume {
        path: path.to_path_buf(),
        reason,
    };
    let (specs, mut staged) = with_state(model);
    let loaded = checkpoint::load_training(path, &specs, &mut staged, Some(&model_hash(spec)))?;
    let opt_state = loaded
        .optimizer
        .ok_or_else(|| fail("the checkpoint has no optimizer state".into()))?;
    optimizer
        .load_state(&opt_state)
        .map_err(|e| fail(e.to_string()))?;
    if opt_state.step != loaded.meta.step {
        return Err(fail(format!(
            "optimizer state is at step {}, the checkpoint at step {}",
            opt_state.step, loaded.meta.step
        )));
    }
    let loader_state = loaded
        .meta
        .loader
        .ok_or_else(|| fail("the checkpoint has no data loader state".into()))?;
    let run = RunState::decode(&loaded.meta.extra, batch).map_err(fail)?;
    loader
        .restore(&loader_state)
        .map_err(|e| fail(format!("data loader: {e}")))?;
    let n = spec.param_count;
    model.params_mut().copy_from_slice(&staged[..n]);
    model.state_mut().copy_from_slice(&staged[n..]);
    Ok(run)
}

/// The tensors a checkpoint holds for a model: its parameters, then its
/// state tensors (running statistics) placed after them, with their values.
/// State is saved under its own names (`bn.running_mean`) like a parameter.
fn with_state<M: Model + ?Sized>(model: &M) -> (Vec<crate::params::ParamSpec>, Vec<f32>) {
    let spec = model.spec();
    let n = spec.param_count;
    let mut specs = spec.params.to_vec();
    specs.extend(model.state_spec().iter().map(|s| crate::params::ParamSpec {
        offset: n + s.tensor.offset,
        ..s.tensor.clone()
    }));
    let mut values = model.params().to_vec();
    values.extend_from_slice(model.state());
    (specs, values)
}

/// What every checkpoint of a run shares.
struct SaveContext<'a> {
    dir: Option<&'a Path>,
    spec: &'static ModelSpec,
    batch: usize,
}

impl SaveContext<'_> {
    fn save_last<M: Model + ?Sized>(
        &self,
        model: &M,
        optimizer: &dyn Optimizer,
        loader: &Loader,
        run: &RunState,
    ) -> Result<(), FitError> {
        self.save(LAST_CHECKPOINT, model, optimizer, loader, run)
    }

    fn save<M: Model + ?Sized>(
        &self,
        file: &str,
        model: &M,
        optimizer: &dyn Optimizer,
        loader: &Loader,
        run: &RunState,
    ) -> Result<(), FitError> {
        let Some(dir) = self.dir else {
            return Ok(());
        };
        let loader_state = loader.state();
        let meta = CheckpointMeta {
            step: optimizer.steps(),
            epoch: loader_state.epoch,
            model_hash: model_hash(self.spec),
            // The loader's shuffling stream is the only random state of a
            // run, and it is saved with the loader.
            rng: None,
            loader: Some(loader_state),
            extra: run.encode(self.batch),
        };
        let (specs, values) = with_state(model);
        checkpoint::save_training(
            dir.join(file),
            &specs,
            &values,
            Some(&optimizer.state()),
            &meta,
        )?;
        Ok(())
    }
}

/// A progress bar over the epoch's samples, or a hidden one.
fn progress_bar(
    show: bool,
    samples: usize,
    position: usize,
    epoch: u64,
    epochs: u64,
    running_loss: &Arc<AtomicU64>,
) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let loss = Arc::clone(running_loss);
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len}  loss {loss}  {rate}  {elapsed} (eta {eta})",
    )
    .expect("valid template")
    .progress_chars("=> ")
    .with_key(
        "loss",
        move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let v = f64::from_bits(loss.load(Ordering::Relaxed));
            let _ = write!(w, "{v:.4}");
        },
    )
    .with_key(
        "rate",
        |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} samples/s", s.per_sec());
        },
    );
    running_loss.store(f64::NAN.to_bits(), Ordering::Relaxed);
    let bar = ProgressBar::new(samples as u64).with_style(style);
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar.set_position(position as u64);
    bar
}

/// One line of metrics for an epoch.
fn format_epoch(m: &EpochMetrics, epochs: u64) -> String {
    use std::fmt::Write;
    let mut s = format!("epoch {}/{epochs}  loss {:.4}", m.epoch, m.train_loss);
    if let Some(v) = m.val_loss {
        let _ = write!(s, "  val_loss {v:.4}");
    }
    if let Some(a) = m.val_accuracy {
        let _ = write!(s, "  val_acc {:.2}%", a * 100.0);
    }
    let _ = write!(
        s,
        "  lr {:.3e}  {:.0} samples/s  {:.1}s",
        m.lr,
        m.samples_per_sec,
        m.elapsed.as_secs_f64()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_line_names_every_metric() {
        let m = EpochMetrics {
            epoch: 3,
            steps: 30,
            train_loss: 0.25,
            val_loss: Some(0.5),
            val_accuracy: Some(0.9234),
            lr: 1e-3,
            samples_per_sec: 1234.4,
            elapsed: Duration::from_millis(4500),
        };
        assert_eq!(
            format_epoch(&m, 10),
            "epoch 3/10  loss 0.2500  val_loss 0.5000  val_acc 92.34%  lr 1.000e-3  1234 samples/s  4.5s"
        );
    }
}
