//! The epoch loop of [`fit`] and [`fit_with`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::collective::{fnv1a, hash_f32, Collective, Local, Value};
use crate::data::{Augmenter, Batcher, Binding, LoaderConfig, RankRows};
use crate::model::{BatchSpec, Model};

use super::eval::Evaluator;
use super::progress::{format_epoch, progress_bar};
use super::resume::{self, Saver};
use super::source::Batches;
use super::state::RunState;
use super::step::{batch_size, Trainer};
use super::{log, EpochMetrics, FitError, FitOptions, History, StopFlag, TrainData};

/// Added to the `train` seed to seed the shuffling stream, so shuffling does
/// not replay the generator stream that initialised the parameters.
const SHUFFLE_STREAM: u64 = 0x5348_5546_464c_4531;

/// Trains `model` on `data` as its `train` block and `opts` say and returns
/// the metrics of every epoch. See the [module docs](super) for the loop,
/// checkpoints and resume.
///
/// The parameters are trained from their current values: initialise them
/// first ([`Model::init_params`], which the generated constructors do)
/// unless resuming.
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
/// batches (bit for bit on two ranks, see [`crate::parallel::StepRunner`]):
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
/// * only rank 0 prints, shows progress and writes checkpoints and the
///   metrics log; every rank evaluates the validation set (so every rank
///   returns the same [`History`]); at the end of each epoch the ranks check
///   that their parameters are still bit-identical;
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
            let available = std::thread::available_parallelism().map_or(1, |n| n.get());
            // More threads than a machine has only oversubscribes it (and a
            // pool of 100,000 threads cannot even start); cap at 4 per core.
            let n = n.clamp(1, 4 * available);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
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
    let train = opts.train_spec(&spec.train);
    // First, before anything that could fail on one rank only: do the ranks
    // run the same thing? (A rank failing alone leaves the others waiting.)
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
            Value::Hash(fnv1a(
                format!("{train:?} {:?}", opts.early_stopping).into_bytes(),
            )),
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
    resume::check_buffers(model)?;
    let binding = Binding::for_training(spec, data.train.columns(), "training set")?;
    let mut evaluator = match data.validation {
        Some(v) => Some(Evaluator::new(model, v, "validation set", false)?),
        None => None,
    };
    let n = data.train.len();
    if n == 0 {
        return Err(FitError::Config("the training set has no samples".into()));
    }
    // A batch larger than the data is the whole data: no step could use
    // more rows, so no buffer is sized for them.
    let batch = batch_size(train.batch, n)?.min(n);
    let total_steps = train.epochs.saturating_mul(n.div_ceil(batch) as u64);
    let mut trainer = Trainer::new(
        &*model,
        &train,
        batch,
        total_steps,
        opts.parallel,
        comm.rank(),
        comm.size(),
    )?;
    // On a rank of several, a stream reads only this rank's rows.
    let rank = (comm.size() > 1).then(|| RankRows::new(batch, n, |r| trainer.rank_rows(r)));
    let mut loader = Batches::new(
        data.train,
        LoaderConfig {
            batch_size: batch,
            shuffle: train.batch != BatchSpec::Full,
            drop_last: false,
            seed: train.seed.wrapping_add(SHUFFLE_STREAM),
        },
        train.epochs,
        &binding,
        rank,
    )?;
    let early = opts.early_stopping(&spec.train);
    let mut run = RunState::default();
    if let Some(path) = &opts.resume {
        run = resume::resume(model, path, batch, trainer.optimizer_mut(), &mut loader)?;
    }
    // Rank 0's parameters are the run's: initialised there, or resumed.
    comm.broadcast(model.params_mut(), 0)?;
    comm.check_agreement(&[("resumed step", Value::Count(trainer.steps()))])?;
    let ckpt_dir = match &opts.checkpoint_dir {
        Some(dir) if lead => Some(resume::prepare_dir(dir, opts)?),
        _ => None,
    };
    let saver = Saver {
        dir: ckpt_dir.as_deref(),
        spec,
        batch,
    };
    // The best epoch's parameters and state, kept to restore them bit for
    // bit when early stopping ends the run.
    let mut best_weights = match early {
        Some(e) if e.restore_best => Some(resume::best_weights(model, opts.resume.as_deref())?),
        _ => None,
    };

    // Everything the loop touches, allocated once.
    let rank_max = trainer.rank_rows(batch).len().max(1);
    let mut batcher = Batcher::new(binding, rank_max);
    // Each sample is augmented by its own (seed, epoch, index) draws, so
    // every rank can augment just its rows.
    let mut augmenter = (!train.augment.is_none())
        .then(|| Augmenter::new(train.augment, spec, &batcher, data.train.columns()))
        .transpose()?;
    let show_progress =
        lead && opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let running_loss = Arc::new(AtomicU64::new(f64::NAN.to_bits()));
    let stop_at = opts.max_steps.unwrap_or(u64::MAX);
    let stopped = || opts.stop.as_ref().is_some_and(StopFlag::is_raised);
    let started = Instant::now();
    let mut step = trainer.steps();
    let mut lr = trainer.lr_at(step);
    let mut stopped_early = false;
    let mut samples = 0u64;

    while loader.epoch() < train.epochs && step < stop_at && !stopped_early && !stopped() {
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
            if (step >= stop_at || stopped()) && loader.state().position < n {
                // Stopped mid-epoch: save where we are and leave. (At the
                // epoch's end the epoch is closed first, below.)
                bar.finish_and_clear();
                run.elapsed += started.elapsed();
                saver.save_last(model, trainer.optimizer(), &loader, &run)?;
                return Ok(History {
                    epochs: run.history,
                    steps: step,
                    samples,
                    finished: false,
                    stopped_early: false,
                });
            }
            let next = loader.next(
                spec,
                &mut batcher,
                |rows| trainer.rank_rows(rows),
                augmenter.as_mut().map(|a| (a, train.seed)),
            );
            let rows = match next {
                Ok(Some(rows)) => rows,
                Ok(None) => break,
                Err(e) => {
                    bar.finish_and_clear();
                    return Err(e.into());
                }
            };
            let own = batcher.rows();
            let loss = batcher
                .with_batch(0..own, |b| trainer.step_rank(model, b, rows, comm))
                .map_err(|e| match e {
                    FitError::Diverged { step, loss, .. } => FitError::Diverged {
                        step,
                        epoch: epoch + 1,
                        loss,
                    },
                    FitError::NonFinite(n) => FitError::NonFinite(super::NonFinite {
                        epoch: epoch + 1,
                        ..n
                    }),
                    e => e,
                });
            let loss = match loss {
                Ok(l) => l,
                Err(e) => {
                    bar.finish_and_clear();
                    return Err(e);
                }
            };
            lr = trainer.lr();
            step += 1;
            run.epoch_loss += f64::from(loss) * rows as f64;
            run.epoch_samples += rows as u64;
            samples_now += rows;
            samples += rows as u64;
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
            val,
            lr,
            samples_per_sec: samples_now as f64 / train_time.as_secs_f64().max(1e-9),
            elapsed_s: (run.elapsed + started.elapsed()).as_secs_f64(),
        };
        if opts.verbose && lead {
            println!("{}", format_epoch(&metrics, train.epochs));
        }
        // Identical steps on identical gradients keep the ranks' parameters
        // identical; check it, cheaply, once an epoch.
        comm.check_agreement(&[("parameters (hash)", Value::Hash(hash_f32(model.params())))])?;
        let monitored = metrics.val.as_ref().map_or(train_loss, |v| v.loss);
        let min_delta = early.map_or(0.0, |e| e.min_delta);
        let improved = monitored < run.best - min_delta;
        if improved {
            run.best = monitored;
            run.since_best = 0;
            if let Some(best) = best_weights.as_mut() {
                resume::copy_weights(model, best);
            }
        } else {
            run.since_best += 1;
        }
        if let Some(e) = early {
            stopped_early = run.since_best >= e.patience.max(1);
        }
        run.history.push(metrics);
        run.epoch_loss = 0.0;
        run.epoch_samples = 0;
        if saver.dir.is_some() {
            let mut saved = run.clone();
            saved.elapsed += started.elapsed();
            if improved {
                saver.save(
                    resume::BEST_CHECKPOINT,
                    model,
                    trainer.optimizer(),
                    &loader,
                    &saved,
                )?;
            }
            saver.save_last(model, trainer.optimizer(), &loader, &saved)?;
            saver.write_log(&saved.history)?;
        }
    }
    // The best epoch's weights, whether patience ran out or the epochs did
    // (Keras 3's `restore_best_weights`), unless the run was interrupted.
    let completed = stopped_early || loader.epoch() >= train.epochs;
    if let (true, Some(best)) = (completed, &best_weights) {
        resume::restore_weights(model, best);
    }
    if stopped_early && opts.verbose && lead {
        println!(
            "early stopping: no improvement for {} epochs{}",
            run.since_best,
            if best_weights.is_some() {
                "; restored the best epoch's weights"
            } else {
                ""
            }
        );
    }
    Ok(History {
        finished: loader.epoch() >= train.epochs || stopped_early,
        stopped_early,
        epochs: run.history,
        steps: step,
        samples,
    })
}

/// Where the metrics log of a checkpoint is.
pub(super) fn log_beside(checkpoint: &Path) -> std::path::PathBuf {
    checkpoint
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(log::METRICS_LOG)
}
