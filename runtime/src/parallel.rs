//! Using more than one core for one training step.
//!
//! Two ways, and [`Strategy::Auto`] picks between them per model:
//!
//! * **Data parallel**: the mini-batch is cut into shards, each run by
//!   [`Model::train_step_in`] on a rayon worker with its own workspace and
//!   gradient buffer; the shard gradients are then summed, weighted by shard
//!   size, in shard order. The cut depends only on the batch size (never on
//!   the thread count), and every sum runs in the same order, so a run gives
//!   bit-identical results on 1, 2 or 8 threads. Costs one gradient buffer per
//!   shard; pays off when layers are small and many samples share them.
//! * **Intra-op**: one shard, and every matrix product of the step is split
//!   across the threads (by whole tiles of the output, so each output
//!   element is summed in the same order whatever the thread count: this
//!   mode is bit-identical across thread counts too). Costs nothing extra in
//!   memory; pays off when large layers dominate.
//!
//! The two modes cut the work differently, so they round differently: a
//! model trained in one mode is not bit-identical to the same model trained
//! in the other (they agree to float precision).

use crate::kernels;
use crate::model::{Batch, InputKind, Model, StepError, StepKey};
use rayon::prelude::*;

/// How a training step is spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Intra-op for models of at least [`INTRA_OP_MIN_PARAMS`] parameters
    /// (a gradient buffer per shard would cost more memory and reduction
    /// time than the products' own parallelism), data parallel otherwise.
    #[default]
    Auto,
    /// Shards of the batch on separate workers. `shards: None` takes
    /// [`default_shards`] of the batch size.
    Data {
        /// Number of shards per full batch (at least 1).
        shards: Option<usize>,
    },
    /// Matrix products split across threads.
    IntraOp,
}

impl std::str::FromStr for Strategy {
    type Err = String;

    /// `auto`, `data`, `data:N` (N shards) or `intra-op`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Strategy::Auto),
            "data" => Ok(Strategy::Data { shards: None }),
            "intra-op" => Ok(Strategy::IntraOp),
            _ => match s.strip_prefix("data:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Strategy::Data { shards: Some(n) }),
                _ => Err(format!(
                    "unknown parallel strategy `{s}`; expected auto, data, data:N (N > 0 shards) or intra-op"
                )),
            },
        }
    }
}

/// Parameter count from which [`Strategy::Auto`] picks intra-op.
pub const INTRA_OP_MIN_PARAMS: usize = 1 << 20;

/// Rows per shard [`default_shards`] aims for: fewer rows make the matrix
/// products inefficient, more leave cores idle.
pub const SHARD_ROWS: usize = 64;

/// Shards of a batch by default: one per [`SHARD_ROWS`] samples, between 1
/// and 8. A function of the batch size alone, so results do not depend on
/// the machine.
pub fn default_shards(batch: usize) -> usize {
    (batch / SHARD_ROWS).clamp(1, 8)
}

/// The strategy [`Strategy::Auto`] resolves to for a model and batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// This many shards per full batch.
    Data(usize),
    /// One shard, parallel matrix products.
    IntraOp,
}

impl Strategy {
    /// What this strategy means for a model of `params` parameters trained
    /// on batches of `batch` samples.
    pub fn resolve(self, params: usize, batch: usize) -> Resolved {
        match self {
            Strategy::Auto if params >= INTRA_OP_MIN_PARAMS => Resolved::IntraOp,
            Strategy::Auto => Resolved::Data(default_shards(batch)),
            Strategy::Data { shards } => Resolved::Data(
                shards
                    .unwrap_or_else(|| default_shards(batch))
                    .clamp(1, batch.max(1)),
            ),
            Strategy::IntraOp => Resolved::IntraOp,
        }
    }
}

/// One worker's buffers.
struct Shard {
    ws: Vec<f32>,
    grads: Vec<f32>,
    /// The shard's batch statistics (models with state only).
    stats: Vec<f32>,
    max_rows: usize,
}

/// Runs training steps of one model with a fixed strategy: all buffers are
/// allocated when it is built, none per step.
pub struct StepRunner {
    mode: Resolved,
    shards: Vec<Shard>,
    /// The reduced gradient of the last step.
    grads: Vec<f32>,
    /// The reduced batch statistics of the last step.
    stats: Vec<f32>,
    /// Per-shard losses and weights (shard rows / batch rows) of the last step.
    losses: Vec<f32>,
    weights: Vec<f32>,
    /// Floats per sample of each feature input and each label input.
    features: Vec<usize>,
    labels: Vec<usize>,
}

impl StepRunner {
    /// Buffers for steps of up to `batch` samples of `model`.
    pub fn new<M: Model + ?Sized>(model: &M, batch: usize, strategy: Strategy) -> StepRunner {
        let n = model.spec().param_count;
        let state = crate::model::state_len(model.state_spec());
        let (features, labels) = (per_sample(model, false), per_sample(model, true));
        let mode = match strategy.resolve(n, batch) {
            // Shards slice each input into a fixed array of this many.
            Resolved::Data(_) if features.len().max(labels.len()) > MAX_SLICES => Resolved::Data(1),
            mode => mode,
        };
        let count = match mode {
            Resolved::Data(s) => s,
            Resolved::IntraOp => 1,
        };
        let shards = (0..count)
            .map(|i| {
                let max_rows = shard_range(batch, count, i).len().max(1);
                Shard {
                    ws: vec![0.0; model.workspace_len(max_rows)],
                    grads: vec![0.0; n],
                    stats: vec![0.0; state],
                    max_rows,
                }
            })
            .collect();
        StepRunner {
            mode,
            shards,
            grads: vec![0.0; n],
            stats: vec![0.0; state],
            losses: vec![0.0; count],
            weights: vec![0.0; count],
            features,
            labels,
        }
    }

    /// The strategy in force.
    pub fn mode(&self) -> Resolved {
        self.mode
    }

    /// Forward and backward on one batch (of at most the size the runner was
    /// built for): the mean loss, with the gradient left in [`Self::grads`].
    /// Runs as step 0 of seed 0 ([`Self::step_at`]).
    pub fn step<M: Model + ?Sized>(
        &mut self,
        model: &M,
        batch: &Batch<'_>,
    ) -> Result<f32, StepError> {
        self.step_at(model, batch, StepKey::default())
    }

    /// [`Self::step`] as step `key` of a run (dropout masks depend on it);
    /// the batch statistics are left in [`Self::stats`].
    ///
    /// Batch norm under data parallelism: each shard normalises with its
    /// own batch statistics (as PyTorch's DDP does without SyncBatchNorm),
    /// and the statistics handed to the running averages are the shards'
    /// statistics weighted by shard size and summed in shard order, like the
    /// gradients. The cut depends only on the batch size, so this is
    /// deterministic and independent of the thread count.
    pub fn step_at<M: Model + ?Sized>(
        &mut self,
        model: &M,
        batch: &Batch<'_>,
        key: StepKey,
    ) -> Result<f32, StepError> {
        let spec = model.spec();
        let rows = crate::model::check_batch(spec, batch.inputs, Some(batch.labels), usize::MAX)?;
        for (what, given, expected) in [
            ("input", batch.inputs.len(), self.features.len()),
            ("label", batch.labels.len(), self.labels.len()),
        ] {
            if given != expected {
                return Err(StepError::Arity {
                    what,
                    expected,
                    found: given,
                });
            }
        }
        let count = self.shards.len();
        if rows > self.shards.iter().map(|s| s.max_rows).sum::<usize>() {
            return Err(StepError::BatchTooLarge {
                batch: rows,
                max: self.shards.iter().map(|s| s.max_rows).sum(),
            });
        }
        if self.mode == Resolved::IntraOp {
            let shard = &mut self.shards[0];
            let (grads, stats) = (&mut self.grads, &mut self.stats);
            let loss = kernels::with_parallel_gemm(|| {
                model.train_step_at(&mut shard.ws, shard.max_rows, grads, stats, batch, key)
            })?;
            return Ok(loss);
        }
        if count == 1 {
            let shard = &mut self.shards[0];
            return model.train_step_at(
                &mut shard.ws,
                shard.max_rows,
                &mut self.grads,
                &mut self.stats,
                batch,
                key,
            );
        }
        let (features, labels) = (&self.features, &self.labels);
        self.shards
            .par_iter_mut()
            .zip(self.losses.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, (shard, loss))| {
                let r = shard_range(rows, count, i);
                *loss = 0.0;
                if r.is_empty() {
                    shard.grads.fill(0.0);
                    shard.stats.fill(0.0);
                    return Ok(());
                }
                // A handful of inputs at most: fixed arrays, no allocation.
                let mut xs: [&[f32]; MAX_SLICES] = [&[]; MAX_SLICES];
                let mut ys: [&[u32]; MAX_SLICES] = [&[]; MAX_SLICES];
                for (j, (x, &w)) in batch.inputs.iter().zip(features).enumerate() {
                    xs[j] = &x[r.start * w..r.end * w];
                }
                for (j, (y, &w)) in batch.labels.iter().zip(labels).enumerate() {
                    ys[j] = &y[r.start * w..r.end * w];
                }
                let sub = Batch {
                    inputs: &xs[..batch.inputs.len()],
                    labels: &ys[..batch.labels.len()],
                };
                let at = StepKey {
                    offset: key.offset + r.start as u64,
                    ..key
                };
                *loss = model.train_step_at(
                    &mut shard.ws,
                    shard.max_rows,
                    &mut shard.grads,
                    &mut shard.stats,
                    &sub,
                    at,
                )?;
                Ok(())
            })?;
        // Weighted by shard size, summed in shard order: the same sums in the
        // same order on any number of threads.
        for (i, w) in self.weights.iter_mut().enumerate() {
            *w = shard_range(rows, count, i).len() as f32 / rows as f32;
        }
        let (shards, weights) = (&self.shards, &self.weights);
        self.grads
            .par_chunks_mut(REDUCE_CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                let start = c * REDUCE_CHUNK;
                for (s, shard) in shards.iter().enumerate() {
                    let g = &shard.grads[start..start + out.len()];
                    let w = weights[s];
                    if s == 0 {
                        for (o, &x) in out.iter_mut().zip(g) {
                            *o = w * x;
                        }
                    } else {
                        for (o, &x) in out.iter_mut().zip(g) {
                            *o += w * x;
                        }
                    }
                }
            });
        for (j, out) in self.stats.iter_mut().enumerate() {
            *out = shards
                .iter()
                .zip(weights)
                .fold(0.0, |acc, (s, &w)| acc + w * s.stats[j]);
        }
        Ok(self.losses.iter().zip(weights).map(|(&l, &w)| w * l).sum())
    }

    /// The gradient of the last [`Self::step`].
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// The batch statistics of the last [`Self::step_at`] (empty for models
    /// without state).
    pub fn stats(&self) -> &[f32] {
        &self.stats
    }
}

/// Floats per sample of the model's label inputs or of its feature inputs.
fn per_sample<M: Model + ?Sized>(model: &M, labels: bool) -> Vec<usize> {
    let spec = model.spec();
    spec.inputs
        .iter()
        .filter(|i| matches!(i.kind, InputKind::Labels { .. }) == labels)
        .map(|i| i.per_sample)
        .collect()
}

/// Inputs or labels per batch a data-parallel step can split.
const MAX_SLICES: usize = 8;
/// Gradient elements per reduction task.
const REDUCE_CHUNK: usize = 1 << 14;

/// Rows of shard `i` of `count` over `rows` samples: balanced, the first
/// `rows % count` shards one row longer.
pub fn shard_range(rows: usize, count: usize, i: usize) -> std::ops::Range<usize> {
    let (base, extra) = (rows / count, rows % count);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        for rows in 0..40 {
            for count in 1..9 {
                let mut next = 0;
                for i in 0..count {
                    let r = shard_range(rows, count, i);
                    assert_eq!(r.start, next);
                    assert!(r.len() + 1 >= rows / count && r.len() <= rows / count + 1);
                    next = r.end;
                }
                assert_eq!(next, rows);
            }
        }
    }

    #[test]
    fn strategies_parse() {
        assert_eq!("auto".parse(), Ok(Strategy::Auto));
        assert_eq!("data".parse(), Ok(Strategy::Data { shards: None }));
        assert_eq!("data:3".parse(), Ok(Strategy::Data { shards: Some(3) }));
        assert_eq!("intra-op".parse(), Ok(Strategy::IntraOp));
        for bad in ["data:0", "data:x", "threads", ""] {
            assert!(bad
                .parse::<Strategy>()
                .unwrap_err()
                .contains("expected auto"));
        }
    }

    #[test]
    fn auto_depends_on_the_model_and_batch_only() {
        assert_eq!(Strategy::Auto.resolve(118_282, 128), Resolved::Data(2));
        assert_eq!(Strategy::Auto.resolve(5_824_522, 512), Resolved::IntraOp);
        assert_eq!(Strategy::Auto.resolve(10, 1), Resolved::Data(1));
        assert_eq!(
            Strategy::Data { shards: Some(64) }.resolve(10, 16),
            Resolved::Data(16)
        );
    }
}
