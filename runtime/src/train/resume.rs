//! Checkpoints of a run: what `fit` saves after each epoch, how a run
//! resumes from it, and the checkpoint directory's rules.

use std::path::{Path, PathBuf};

use crate::checkpoint::{self, CheckpointError, CheckpointMeta};
use crate::model::{Model, ModelSpec};
use crate::optim::Optimizer;
use crate::params::ParamSpec;

use super::source::Batches;
use super::state::RunState;
use super::{log, FitError, FitOptions};

/// File name of the checkpoint written after every epoch.
pub const LAST_CHECKPOINT: &str = "last.safetensors";
/// File name of the checkpoint of the epoch with the lowest monitored loss.
pub const BEST_CHECKPOINT: &str = "best.safetensors";

/// Checks that the model's buffers have the lengths its spec declares.
pub(super) fn check_buffers<M: Model + ?Sized>(model: &M) -> Result<(), FitError> {
    let spec = model.spec();
    let unsupported = |reason: String| FitError::Unsupported {
        model: spec.name.to_string(),
        reason,
    };
    crate::params::validate_layout(&spec.params, spec.param_count)
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
pub(super) fn model_hash(spec: &ModelSpec) -> String {
    format!("{:016x}", spec.hash)
}

/// Creates the checkpoint directory, refuses one that holds another run's
/// checkpoints (unless resuming or told to overwrite), and removes the
/// temporary files a killed save left behind.
pub(super) fn prepare_dir(dir: &Path, opts: &FitOptions) -> Result<PathBuf, FitError> {
    std::fs::create_dir_all(dir).map_err(|error| CheckpointError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    checkpoint::remove_stale_temporaries(dir);
    if opts.resume.is_none() && !opts.overwrite {
        let existing: Vec<&str> = [LAST_CHECKPOINT, BEST_CHECKPOINT, log::METRICS_LOG]
            .into_iter()
            .filter(|f| dir.join(f).exists())
            .collect();
        if !existing.is_empty() {
            return Err(FitError::Config(format!(
                "{} already holds another run ({}): resume it, or start over with overwrite \
                 (`--overwrite`), or choose another directory",
                dir.display(),
                existing.join(", ")
            )));
        }
    }
    Ok(dir.to_path_buf())
}

/// Loads a checkpoint written by `fit` into the model, optimizer and
/// loader, and the run's history from the metrics log beside it. Everything
/// is validated before the model's parameters are touched.
pub(super) fn resume<M: Model + ?Sized>(
    model: &mut M,
    path: &Path,
    batch: usize,
    optimizer: &mut dyn Optimizer,
    loader: &mut Batches<'_>,
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
    let mut run = RunState::decode(&loaded.meta.extra, batch).map_err(fail)?;
    // The step count follows from the loader's position (same batch, checked
    // above): a count that does not would run the schedule (warmup, decay,
    // Adam's bias correction) at the wrong point, silently.
    let expected = (loader.batches_per_epoch() as u64)
        .checked_mul(loader_state.epoch)
        .and_then(|s| s.checked_add(loader_state.position.div_ceil(batch.max(1)) as u64));
    if expected != Some(loaded.meta.step) {
        return Err(fail(format!(
            "step {} does not match the data position (epoch {}, sample {} of batches of {batch}: \
             step {})",
            loaded.meta.step,
            loader_state.epoch,
            loader_state.position,
            expected.map_or("out of range".to_string(), |s| s.to_string())
        )));
    }
    // The history of the epochs before the checkpoint: the log beside it
    // (rank 0 wrote it in the same directory), cut to those epochs. Without
    // a log the resumed run reports only its own epochs.
    let log_path = super::fit::log_beside(path);
    if log_path.exists() {
        let h = log::read_log(&log_path).map_err(|e| fail(e.to_string()))?;
        run.history = h
            .epochs
            .into_iter()
            .filter(|e| e.epoch <= loader_state.epoch)
            .collect();
    }
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
pub(crate) fn with_state<M: Model + ?Sized>(model: &M) -> (Vec<ParamSpec>, Vec<f32>) {
    let spec = model.spec();
    let n = spec.param_count;
    let mut specs = spec.params.to_vec();
    specs.extend(model.state_spec().iter().map(|s| ParamSpec {
        offset: n + s.tensor.offset,
        ..s.tensor.clone()
    }));
    let mut values = model.params().to_vec();
    values.extend_from_slice(model.state());
    (specs, values)
}

/// The weights to restore at the end of an early-stopped run, to start
/// with: those of `best.safetensors` beside a resumed checkpoint, else the
/// model's current ones.
pub(super) fn best_weights<M: Model + ?Sized>(
    model: &M,
    resumed: Option<&Path>,
) -> Result<Vec<f32>, FitError> {
    let (specs, mut values) = with_state(model);
    if let Some(path) = resumed {
        let best = path.with_file_name(BEST_CHECKPOINT);
        if best.exists() {
            checkpoint::load_training(&best, &specs, &mut values, Some(&model_hash(model.spec())))?;
        }
    }
    Ok(values)
}

/// Copies parameters and state into `out` (laid out as [`with_state`]).
pub(super) fn copy_weights<M: Model + ?Sized>(model: &M, out: &mut [f32]) {
    let n = model.params().len();
    out[..n].copy_from_slice(model.params());
    out[n..].copy_from_slice(model.state());
}

/// Puts back weights saved by [`copy_weights`].
pub(super) fn restore_weights<M: Model + ?Sized>(model: &mut M, saved: &[f32]) {
    let n = model.params().len();
    model.params_mut().copy_from_slice(&saved[..n]);
    model.state_mut().copy_from_slice(&saved[n..]);
}

/// Writes a run's checkpoints and log (only rank 0 has a directory).
pub(super) struct Saver<'a> {
    pub(super) dir: Option<&'a Path>,
    pub(super) spec: &'static ModelSpec,
    pub(super) batch: usize,
}

impl Saver<'_> {
    pub(super) fn save_last<M: Model + ?Sized>(
        &self,
        model: &M,
        optimizer: &dyn Optimizer,
        loader: &Batches<'_>,
        run: &RunState,
    ) -> Result<(), FitError> {
        self.save(LAST_CHECKPOINT, model, optimizer, loader, run)
    }

    pub(super) fn save<M: Model + ?Sized>(
        &self,
        file: &str,
        model: &M,
        optimizer: &dyn Optimizer,
        loader: &Batches<'_>,
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

    /// Replaces the metrics log with the history so far.
    pub(super) fn write_log(&self, history: &[super::EpochMetrics]) -> Result<(), FitError> {
        let Some(dir) = self.dir else {
            return Ok(());
        };
        let h = super::History {
            epochs: history.to_vec(),
            ..Default::default()
        };
        log::write_log(dir, &h)?;
        Ok(())
    }
}
