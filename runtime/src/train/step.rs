//! The training step, once: forward and backward through the
//! [`StepRunner`] (shards on threads, ranks over a [`Collective`]), gradient
//! clipping, the optimizer's update at the schedule's rate, decoupled
//! weight decay, the batch-norm state update and the dropout keys.
//!
//! `fit`, `nnc-bench`, the sequence example and the tests all step through
//! a [`Trainer`], so a change to what a step does is made here and nowhere
//! else.

use crate::collective::{Collective, Local};
use crate::model::{Batch, BatchSpec, Model, StepKey, TrainSpec};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::parallel::{Resolved, StepRunner, Strategy};
use crate::schedule::Schedule;

use super::FitError;

/// Everything one optimizer step needs besides the model and the batch,
/// allocated once.
pub struct Trainer {
    runner: StepRunner,
    optimizer: Box<dyn Optimizer>,
    schedule: Schedule,
    base_lr: f32,
    /// `lr · decay` is subtracted from each parameter after the update
    /// (0 with AdamW, which decays inside its update).
    decay: f32,
    clip_norm: Option<f32>,
    seed: u64,
    /// The learning rate of the last step.
    lr: f32,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.optimizer.steps())
            .field("mode", &self.runner.mode())
            .field("lr", &self.lr)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A trainer for `model` as `train` says, for global batches of up to
    /// `batch` samples, a run of `total_steps` steps (the schedule's length),
    /// on rank `rank` of `ranks`. Build it inside the rayon pool that will
    /// run it (see [`StepRunner::for_rank`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new<M: Model + ?Sized>(
        model: &M,
        train: &TrainSpec,
        batch: usize,
        total_steps: u64,
        strategy: Strategy,
        rank: usize,
        ranks: usize,
    ) -> Result<Self, FitError> {
        check_train(train)?;
        let schedule = crate::schedule::schedule_of(train, total_steps);
        schedule.validate()?;
        let optimizer = crate::optim::build(&train.optimizer, model.spec().param_count)?;
        let decay = match train.optimizer {
            OptimizerConfig::AdamW(_) => 0.0,
            _ => train.weight_decay,
        };
        let lr = schedule.lr_at(train.lr, 0);
        Ok(Trainer {
            runner: StepRunner::for_rank(model, batch, strategy, rank, ranks)?,
            optimizer,
            schedule,
            base_lr: train.lr,
            decay,
            clip_norm: train.clip_norm,
            seed: train.seed,
            lr,
        })
    }

    /// A trainer for one process with `model`'s own `train` block, for
    /// batches of `batch` samples over `total_steps` steps.
    pub fn single<M: Model + ?Sized>(
        model: &M,
        batch: usize,
        total_steps: u64,
        strategy: Strategy,
    ) -> Result<Self, FitError> {
        Self::new(
            model,
            &model.spec().train,
            batch,
            total_steps,
            strategy,
            0,
            1,
        )
    }

    /// One step of a single process on `batch`: returns the batch's mean
    /// loss (before the update).
    pub fn step<M: Model + ?Sized>(
        &mut self,
        model: &mut M,
        batch: &Batch<'_>,
    ) -> Result<f32, FitError> {
        let rows =
            crate::model::check_batch(model.spec(), batch.inputs, Some(batch.labels), usize::MAX)?;
        self.step_rank(model, batch, rows, &Local)
    }

    /// One step of this rank: `local` holds this rank's rows
    /// ([`Trainer::rank_rows`]) of a global batch of `rows` samples. Every
    /// rank takes the same update.
    pub fn step_rank<M: Model + ?Sized>(
        &mut self,
        model: &mut M,
        local: &Batch<'_>,
        rows: usize,
        comm: &dyn Collective,
    ) -> Result<f32, FitError> {
        let step = self.optimizer.steps();
        // Dropout masks are keyed by the global sample index: the runner
        // adds this rank's and each shard's first row.
        let key = StepKey {
            seed: self.seed,
            step,
            offset: 0,
        };
        // On one rank the shards' gradients are summed inside the
        // optimizer's update ([`StepRunner::update`]) unless clipping needs
        // the whole gradient first; ranks must sum theirs first, for the
        // all-reduce.
        let loss = if comm.size() == 1 && self.clip_norm.is_none() {
            self.runner.step_deferred_at(&*model, local, key)?
        } else if comm.size() == 1 {
            self.runner.step_at(&*model, local, key)?
        } else {
            self.runner.step_ranks(&*model, local, rows, key, comm)?
        };
        if !loss.is_finite() {
            return Err(FitError::Diverged {
                step,
                epoch: 0,
                loss,
            });
        }
        if let Some(max) = self.clip_norm {
            self.runner.clip_grad_norm(max);
        }
        self.lr = self.schedule.lr_at(self.base_lr, step);
        let params = model.params_mut();
        self.runner
            .update(self.optimizer.as_mut(), params, self.lr)?;
        if self.decay != 0.0 {
            let k = self.lr * self.decay;
            for p in params.iter_mut() {
                *p -= k * *p;
            }
        }
        // A NaN weight behind a relu leaves the loss finite for a while and
        // poisons every later checkpoint: catch it in the step it appears.
        // One read of the parameters, vectorised; the search for the
        // culprit runs only when there is one.
        if !all_finite(params) {
            let i = params.iter().position(|p| !p.is_finite()).unwrap_or(0);
            return Err(non_finite(model.spec(), step, i, model.params()[i]));
        }
        // Running statistics (batch norm) follow the batch's.
        model.update_state(self.runner.stats());
        Ok(loss)
    }

    /// Optimizer steps taken (including those restored on resume).
    pub fn steps(&self) -> u64 {
        self.optimizer.steps()
    }

    /// The learning rate of the last step (of step 0 before any).
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// The learning rate step `step` will use.
    pub fn lr_at(&self, step: u64) -> f32 {
        self.schedule.lr_at(self.base_lr, step)
    }

    /// The rows of a global batch of `rows` samples this rank computes.
    pub fn rank_rows(&self, rows: usize) -> std::ops::Range<usize> {
        self.runner.rank_rows(rows)
    }

    /// How steps use the threads.
    pub fn mode(&self) -> Resolved {
        self.runner.mode()
    }

    /// The optimizer (its state, for checkpoints).
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// The optimizer, to restore its state on resume.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        self.optimizer.as_mut()
    }
}

/// The batch size a `train` block's batch setting means for `n` samples.
pub fn batch_size(batch: BatchSpec, n: usize) -> Result<usize, FitError> {
    match batch {
        BatchSpec::Full => Ok(n.max(1)),
        BatchSpec::Size(0) => Err(FitError::Config("batch size 0".into())),
        BatchSpec::Size(b) => Ok(b),
    }
}

/// Rejects hyper-parameters no run can use, before anything is allocated.
fn check_train(train: &TrainSpec) -> Result<(), FitError> {
    let finite_non_negative = |what: &str, v: f32| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(FitError::Config(format!(
                "{what} {v} is not a finite number >= 0"
            )))
        }
    };
    finite_non_negative("learning rate", train.lr)?;
    finite_non_negative("weight decay", train.weight_decay)?;
    if let Some(c) = train.clip_norm {
        if !(c.is_finite() && c > 0.0) {
            return Err(FitError::Config(format!(
                "gradient clipping norm {c} is not a finite number > 0"
            )));
        }
    }
    Ok(())
}

/// Whether every value is finite: `x - x` is 0 for a finite `x` and NaN
/// for NaN or ±inf, and NaN survives addition, so independent lane sums
/// (which the compiler vectorises, unlike an early-exit search) decide it
/// in one pass.
#[allow(clippy::eq_op)] // `x - x` is the point: 0, or NaN for a non-finite `x`
fn all_finite(xs: &[f32]) -> bool {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x - x;
        }
    }
    let tail = chunks.remainder().iter().fold(0.0f32, |a, &x| a + (x - x));
    acc.iter().sum::<f32>() + tail == 0.0
}

/// The error for element `i` of the flat parameter buffer, named by tensor.
fn non_finite(spec: &crate::ModelSpec, step: u64, i: usize, value: f32) -> FitError {
    let (tensor, index) = spec
        .params
        .iter()
        .find(|p| p.range().contains(&i))
        .map_or(("?".to_string(), i), |p| (p.name.to_string(), i - p.offset));
    FitError::NonFinite(super::NonFinite {
        step,
        epoch: 0,
        tensor,
        index,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn all_finite_finds_any_non_finite_value_anywhere() {
        for n in [0, 1, 15, 16, 17, 100] {
            let mut xs: Vec<f32> = (0..n).map(|i| (i as f32 - 50.0) * 6e36).collect();
            assert!(all_finite(&xs), "n={n}");
            for i in 0..n {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let keep = xs[i];
                    xs[i] = bad;
                    assert!(!all_finite(&xs), "n={n} i={i} {bad}");
                    xs[i] = keep;
                }
            }
        }
        assert!(all_finite(&[f32::MAX, f32::MIN, f32::MIN_POSITIVE, -0.0]));
    }
}
