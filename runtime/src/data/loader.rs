//! The mini-batch loader: which samples each step reads, epoch after epoch.
//!
//! Each epoch's order is the identity permutation shuffled by the loader's
//! generator, which carries over from epoch to epoch (one seeded stream for
//! the whole run). The loader's state ([`LoaderState`]) goes into
//! checkpoints, so a resumed run visits the remaining samples of the epoch
//! in exactly the order it would have.

use super::DataError;
use crate::rng::Rng;

/// Mini-batch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch; the dataset size gives full-batch training, 1 gives
    /// pure stochastic gradient descent.
    pub batch_size: usize,
    /// Visit samples in a fresh random order each epoch.
    pub shuffle: bool,
    /// Skip the last batch of an epoch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffling stream.
    pub seed: u64,
}

/// A loader's position, for checkpoints. Restoring it replays the current
/// epoch's permutation from `epoch_rng` and continues at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderState {
    /// 0-based epoch.
    pub epoch: u64,
    /// Samples of this epoch already served.
    pub position: usize,
    /// Generator state at the start of this epoch (before its shuffle).
    pub epoch_rng: [u64; 4],
    /// Dataset size the state belongs to (checked on restore).
    pub samples: usize,
    /// The order `position` counts in: 0 for the whole data shuffled as
    /// one (the in-memory loader, and a stream whose window covers the
    /// data), otherwise a fingerprint of a stream's windows (window,
    /// chunking and rows of each shard). Restoring into another order is
    /// refused: the rest of the epoch would repeat some samples and skip
    /// others.
    pub order: u64,
}

/// Serves batches of sample indices, epoch after epoch.
///
/// Each epoch's order is the identity permutation shuffled by the loader's
/// generator, which carries over from epoch to epoch (one seeded stream for
/// the whole run).
#[derive(Debug, Clone)]
pub struct Loader {
    cfg: LoaderConfig,
    n: usize,
    order: Vec<usize>,
    epoch: u64,
    pos: usize,
    epoch_rng: [u64; 4],
    rng: Rng,
}

impl Loader {
    /// A loader over `n` samples, positioned at the start of epoch 0.
    pub fn new(n: usize, cfg: LoaderConfig) -> Result<Self, DataError> {
        if n == 0 {
            return Err(DataError::Invalid(
                "cannot load batches from an empty dataset".into(),
            ));
        }
        if cfg.batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        if cfg.drop_last && cfg.batch_size > n {
            return Err(DataError::Invalid(format!(
                "batch size {} with drop_last leaves no batch from {n} samples",
                cfg.batch_size
            )));
        }
        let rng = Rng::new(cfg.seed);
        let mut loader = Loader {
            cfg,
            n,
            order: Vec::with_capacity(n),
            epoch: 0,
            pos: 0,
            epoch_rng: rng.state(),
            rng,
        };
        loader.start_epoch();
        Ok(loader)
    }

    fn start_epoch(&mut self) {
        self.epoch_rng = self.rng.state();
        self.order.clear();
        self.order.extend(0..self.n);
        if self.cfg.shuffle {
            self.rng.shuffle(&mut self.order);
        }
        self.pos = 0;
    }

    fn end(&self) -> usize {
        if self.cfg.drop_last {
            self.n / self.cfg.batch_size * self.cfg.batch_size
        } else {
            self.n
        }
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.cfg.drop_last {
            self.n / self.cfg.batch_size
        } else {
            self.n.div_ceil(self.cfg.batch_size)
        }
    }

    /// Current 0-based epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next batch's sample indices, or `None` once at the end of each
    /// epoch (after which the loader is at the start of the next epoch).
    /// Exposed so data-parallel code can split one batch's indices into shards.
    pub fn next_indices(&mut self) -> Option<&[usize]> {
        let Some(range) = self.next_range() else {
            self.roll_over();
            return None;
        };
        self.pos = range.end;
        Some(&self.order[range])
    }

    /// Positions of the next batch in `order`, or `None` at the epoch's end.
    fn next_range(&self) -> Option<std::ops::Range<usize>> {
        let end = self.end();
        (self.pos < end).then(|| self.pos..(self.pos + self.cfg.batch_size).min(end))
    }

    fn roll_over(&mut self) {
        self.epoch += 1;
        self.start_epoch();
    }

    /// Snapshot for checkpoints.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            epoch: self.epoch,
            position: self.pos,
            epoch_rng: self.epoch_rng,
            samples: self.n,
            order: 0,
        }
    }

    /// Continues from a snapshot taken by [`Loader::state`] of a loader with
    /// the same configuration; on error `self` is unchanged.
    pub fn restore(&mut self, state: &LoaderState) -> Result<(), DataError> {
        if state.order != 0 {
            return Err(DataError::Invalid(format!(
                "loader state is a position in a shard stream's windowed order (order {:#x}), \
                 not in the whole data's: resume from the same shards with the same window",
                state.order
            )));
        }
        if state.samples != self.n {
            return Err(DataError::Invalid(format!(
                "loader state is for {} samples, dataset has {}",
                state.samples, self.n
            )));
        }
        if state.position > self.end() {
            return Err(DataError::Invalid(format!(
                "loader state position {} is past the end of the epoch ({})",
                state.position,
                self.end()
            )));
        }
        let rng = Rng::from_state(state.epoch_rng)
            .map_err(|e| DataError::Invalid(format!("loader state: {e}")))?;
        self.rng = rng;
        self.epoch = state.epoch;
        self.start_epoch();
        self.pos = state.position;
        Ok(())
    }
}
