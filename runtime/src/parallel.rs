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
//!   shard; pays off when layers are small and many samples share them. A
//!   shard's large matrix products are cut into parts by whole output tiles
//!   ([`crate::gemm::Parallelism::Shared`]) that a worker done with its own
//!   shard takes from a slower one: the results are the same bits whoever
//!   runs a part.
//! * **Intra-op**: one shard, and every matrix product of the step is split
//!   across the threads (by whole tiles of the output, so each output
//!   element is summed in the same order whatever the thread count: this
//!   mode is bit-identical across thread counts too). Costs nothing extra in
//!   memory; pays off when large layers dominate.
//!
//! The two modes cut the work differently, so they round differently: a
//! model trained in one mode is not bit-identical to the same model trained
//! in the other (they agree to float precision).

use crate::collective::{Collective, CollectiveError};
use crate::kernels;
use crate::model::{Batch, InputKind, Model, StepError, StepKey};
use crate::optim::{OptimError, Optimizer};
use rayon::prelude::*;

/// How a training step is spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Data parallel, except intra-op for models of at least
    /// [`INTRA_OP_MIN_PARAMS`] parameters whose samples are single rows (a
    /// gradient buffer per shard would cost more memory and reduction time
    /// than the products' own parallelism). Sequence models of that size
    /// stay data parallel with [`MAX_LARGE_GRADIENTS`] gradient floats
    /// spread over their shards: their per-sequence attention products and
    /// row kernels (softmax, layer norm) do not split intra-op.
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

/// Rows per shard of a sequence model ([`default_shards_of`]): every
/// position is a row of the dense products, and each shard also pays the
/// step's fixed costs (a kernel call per op, the per-shard gradient sum),
/// which a few hundred token rows hide.
pub const SHARD_TOKEN_ROWS: usize = 512;

/// Gradient floats [`Strategy::Auto`] spends on the shards of a sequence
/// model of at least [`INTRA_OP_MIN_PARAMS`] parameters (every shard holds a
/// whole gradient buffer), though always at least two shards.
pub const MAX_LARGE_GRADIENTS: usize = 1 << 23;

/// Shards of a batch by default: one per [`SHARD_ROWS`] samples, between 1
/// and 8. A function of the batch size alone, so results do not depend on
/// the machine.
pub fn default_shards(batch: usize) -> usize {
    default_shards_of(batch, 1)
}

/// [`default_shards`] of a model whose samples are `positions` rows each (a
/// sequence's tokens; 1 for other models): one per [`SHARD_TOKEN_ROWS`]
/// token rows, between 1 and 8 and at most one per sample.
pub fn default_shards_of(batch: usize, positions: usize) -> usize {
    let shards = if positions > 1 {
        batch.saturating_mul(positions) / SHARD_TOKEN_ROWS
    } else {
        batch / SHARD_ROWS
    };
    shards.clamp(1, 8).min(batch.max(1))
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
    /// on batches of `batch` samples of one row each.
    pub fn resolve(self, params: usize, batch: usize) -> Resolved {
        self.resolve_rows(params, batch, 1)
    }

    /// [`Self::resolve`] for samples of `positions` rows each (the longest
    /// token input of a sequence model, 1 otherwise).
    pub fn resolve_rows(self, params: usize, batch: usize, positions: usize) -> Resolved {
        let shards = default_shards_of(batch, positions);
        match self {
            Strategy::Auto if params < INTRA_OP_MIN_PARAMS => Resolved::Data(shards),
            Strategy::Auto if positions > 1 && shards > 1 => {
                Resolved::Data(shards.min((MAX_LARGE_GRADIENTS / params).max(2)))
            }
            Strategy::Auto => Resolved::IntraOp,
            Strategy::Data { shards: given } => {
                Resolved::Data(given.unwrap_or(shards).clamp(1, batch.max(1)))
            }
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
///
/// # Across ranks
/// Built with [`StepRunner::for_rank`], the runner is one rank of a group
/// (see [`crate::collective`]). Every global batch is cut the same way
/// whatever the number of ranks, because the cut is a function of the
/// global batch size only:
///
/// 1. data parallel: the batch is cut into `S` shards ([`shard_range`] of
///    the rows into `S`, with `S` from [`Strategy::resolve`] on the global
///    batch), and rank `r` of `R` runs the consecutive shards
///    `shard_range(S, R, r)` on its threads; a rank may have none.
/// 2. Each shard's gradient (of its mean loss) is weighted by its share of
///    the batch, `rows_s / rows`, and the weighted shard gradients are summed
///    as a binary tree whose shape depends only on the number of shards
///    summed (split after the first `ceil(k / 2)`), first within the rank.
/// 3. One all-reduce of the rank sums (gradient and loss in one buffer).
///
/// On one rank this is the whole tree. On two ranks each rank's shards are
/// exactly one half of it and MPI adds the two halves, and `a + b == b + a`
/// in IEEE arithmetic: **two ranks reproduce one rank bit for bit**, for any
/// batch size. With more ranks the order in which MPI adds rank sums is the
/// library's choice, so results agree to float precision (a few ulps), not
/// necessarily bit for bit.
///
/// Intra-op: every rank runs rows `shard_range(rows, R, r)` as one shard with
/// parallel matrix products. This cut depends on `R`, so intra-op training is
/// bit-identical across thread counts but not across rank counts.
pub struct StepRunner {
    mode: Resolved,
    /// This rank's shards, in batch order.
    shards: Vec<Shard>,
    /// Global shards per full batch (the data-parallel cut), 1 for intra-op.
    global_shards: usize,
    /// This rank's range of global shards (data parallel).
    own: std::ops::Range<usize>,
    rank: usize,
    ranks: usize,
    /// The global batch the buffers were built for.
    batch: usize,
    /// Parameters: the gradient's length.
    params: usize,
    /// The reduced gradient of the last step, then one slot for the weighted
    /// loss, then the weighted batch statistics (models with state), so that
    /// one all-reduce carries all three.
    grads: Vec<f32>,
    /// Where the last step's gradient is.
    state: GradState,
    /// Per-shard losses and weights (shard rows / batch rows) of the last step.
    losses: Vec<f32>,
    weights: Vec<f32>,
    /// Floats per sample of each feature input and each label input.
    features: Vec<usize>,
    labels: Vec<usize>,
}

impl StepRunner {
    /// Buffers for steps of up to `batch` samples of `model`, in one process.
    pub fn new<M: Model + ?Sized>(
        model: &M,
        batch: usize,
        strategy: Strategy,
    ) -> Result<StepRunner, StepError> {
        Self::for_rank(model, batch, strategy, 0, 1)
    }

    /// Buffers for rank `rank` of `ranks` processes training `model` on
    /// global batches of up to `batch` samples: this rank only holds the
    /// workspaces of its own shards. Also reserves the matrix-product
    /// buffers of every thread of the current rayon pool
    /// ([`crate::gemm::reserve_workspaces`]): build the runner inside the
    /// pool that will run it.
    pub fn for_rank<M: Model + ?Sized>(
        model: &M,
        batch: usize,
        strategy: Strategy,
        rank: usize,
        ranks: usize,
    ) -> Result<StepRunner, StepError> {
        // Every worker's matrix-product buffers now, not at the first step
        // that happens to hand it a product.
        crate::gemm::reserve_workspaces();
        let ranks = ranks.max(1);
        let n = model.spec().param_count;
        let state = crate::model::state_len(model.state_spec());
        let (features, labels) = (per_sample(model, false), per_sample(model, true));
        let positions = model
            .spec()
            .inputs
            .iter()
            .filter(|i| matches!(i.kind, InputKind::Tokens { .. }))
            .map(|i| i.per_sample)
            .max()
            .unwrap_or(1);
        let mode = match strategy.resolve_rows(n, batch, positions) {
            // Shards slice each input into a fixed array of this many.
            Resolved::Data(_) if features.len().max(labels.len()) > MAX_SLICES => Resolved::Data(1),
            mode => mode,
        };
        let (global_shards, own, sizes): (usize, _, Vec<usize>) = match mode {
            Resolved::Data(s) => {
                let own = shard_range(s, ranks, rank);
                let sizes = own.clone().map(|i| shard_range(batch, s, i).len());
                (s, own, sizes.collect())
            }
            Resolved::IntraOp => (1, 0..1, vec![shard_range(batch, ranks, rank).len()]),
        };
        let count = sizes.len();
        // Workspaces scale with the batch: an allocation refused is an
        // error, not an abort.
        let shards = sizes
            .into_iter()
            .map(|rows| {
                let max_rows = rows.max(1);
                Ok(Shard {
                    ws: crate::model::zeroed(model.workspace_len(max_rows), "workspace")?,
                    // A rank with one shard computes straight into the
                    // runner's gradient buffer.
                    grads: if count > 1 { vec![0.0; n] } else { Vec::new() },
                    stats: if count > 1 {
                        vec![0.0; state]
                    } else {
                        Vec::new()
                    },
                    max_rows,
                })
            })
            .collect::<Result<_, StepError>>()?;
        Ok(StepRunner {
            mode,
            shards,
            global_shards,
            own,
            rank,
            ranks,
            batch,
            params: n,
            grads: vec![0.0; n + 1 + state],
            state: GradState::Summed,
            losses: vec![0.0; count],
            weights: vec![0.0; count],
            features,
            labels,
        })
    }

    /// The strategy in force.
    pub fn mode(&self) -> Resolved {
        self.mode
    }

    /// The rows of a global batch of `rows` samples this rank computes (all
    /// of them on a single rank).
    pub fn rank_rows(&self, rows: usize) -> std::ops::Range<usize> {
        match self.mode {
            Resolved::IntraOp => shard_range(rows, self.ranks, self.rank),
            Resolved::Data(_) if self.own.is_empty() => 0..0,
            Resolved::Data(s) => {
                shard_range(rows, s, self.own.start).start
                    ..shard_range(rows, s, self.own.end - 1).end
            }
        }
    }

    /// Forward and backward on one batch (of at most the size the runner was
    /// built for): the mean loss, with the gradient left in [`Self::grads`].
    /// For a runner of a single rank; runs as step 0 of seed 0
    /// ([`Self::step_at`]).
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
    /// statistics weighted by shard size and summed like the gradients. The
    /// cut depends only on the batch size, so this is deterministic and
    /// independent of the thread and rank count.
    pub fn step_at<M: Model + ?Sized>(
        &mut self,
        model: &M,
        batch: &Batch<'_>,
        key: StepKey,
    ) -> Result<f32, StepError> {
        let loss = self.step_deferred_at(model, batch, key)?;
        self.sum_shards();
        Ok(loss)
    }

    /// [`Self::step_at`], but the shards' gradients stay in the shards until
    /// [`Self::update`], which sums them into the optimizer's update as it
    /// goes: one pass over the gradients instead of two, and one fork-join
    /// less per step. The loss and [`Self::stats`] are final; the summed
    /// gradient itself is never stored ([`Self::grads`] is unavailable until
    /// the next `step_at`), unless the optimizer needs it whole.
    pub fn step_deferred_at<M: Model + ?Sized>(
        &mut self,
        model: &M,
        batch: &Batch<'_>,
        key: StepKey,
    ) -> Result<f32, StepError> {
        let rows =
            crate::model::check_batch(model.spec(), batch.inputs, Some(batch.labels), usize::MAX)?;
        if self.ranks != 1 {
            return Err(StepError::Arity {
                what: "rank",
                expected: 1,
                found: self.ranks,
            });
        }
        self.local_step(model, batch, rows, key)?;
        Ok(self.grads[self.params])
    }

    /// One update of `params` by `opt` with the last step's gradient, at
    /// learning rate `lr`: the same parameters, bit for bit, as
    /// `opt.step(params, self.grads(), lr)` after [`Self::step_at`]. After
    /// [`Self::step_deferred_at`] the shards' gradients are summed block by
    /// block inside the update where the optimizer allows it
    /// ([`Optimizer::step_streamed`]).
    ///
    /// After `step_at` the gradient stays in [`Self::grads`], and each
    /// update applies it again.
    ///
    /// # Panics
    /// On a second update after one [`Self::step_deferred_at`]: the first
    /// summed that step's gradient into its update and did not keep it.
    pub fn update<O: Optimizer + ?Sized>(
        &mut self,
        opt: &mut O,
        params: &mut [f32],
        lr: f32,
    ) -> Result<(), OptimError> {
        let n = self.params;
        match self.state {
            GradState::Summed => return opt.step(params, &self.grads[..n], lr),
            GradState::Consumed => {
                panic!("StepRunner::update: this deferred step's gradient was already applied")
            }
            GradState::InShards => {}
        }
        let (shards, weights) = (&self.shards, &self.weights);
        let count = shards.len();
        let fill = |start: usize, out: &mut [f32]| {
            for (b, block) in out.chunks_mut(TREE_BLOCK).enumerate() {
                let at = start + b * TREE_BLOCK;
                tree_sum(block, shards, weights, 0..count, at, &|s| &s.grads);
            }
        };
        match opt.step_streamed(params, &fill, lr) {
            Some(done) => {
                self.state = GradState::Consumed;
                done
            }
            None => {
                self.sum_shards();
                opt.step(params, &self.grads[..n], lr)
            }
        }
    }

    /// One step of a group of ranks: `local` holds this rank's rows
    /// ([`Self::rank_rows`]) of a global batch of `rows` samples. Computes
    /// this rank's share, then sums it over the ranks with one
    /// [`Collective::all_reduce_sum`] of the gradient and loss. Returns the
    /// global mean loss, identical on every rank, with the global gradient in
    /// [`Self::grads`] (and statistics in [`Self::stats`]). `key` is the
    /// step's key for the whole global batch.
    pub fn step_ranks<M: Model + ?Sized, C: Collective + ?Sized>(
        &mut self,
        model: &M,
        local: &Batch<'_>,
        rows: usize,
        key: StepKey,
        comm: &C,
    ) -> Result<f32, StepRankError> {
        let own = self.rank_rows(rows).len();
        if own > 0 {
            let given = crate::model::check_batch(
                model.spec(),
                local.inputs,
                Some(local.labels),
                usize::MAX,
            )?;
            if given != own {
                return Err(StepError::Length {
                    name: std::borrow::Cow::Borrowed("rank rows"),
                    expected: own,
                    found: given,
                }
                .into());
            }
        }
        self.local_step(model, local, rows, key)?;
        self.sum_shards();
        comm.all_reduce_sum(&mut self.grads)?;
        Ok(self.grads[self.params])
    }

    /// This rank's weighted loss and statistics sums (the whole result on
    /// one rank) into `self.grads`, and its gradient there too, or, with
    /// several shards, left in the shards for [`Self::sum_shards`] or
    /// [`Self::update`]; `batch` holds this rank's rows of a global batch of
    /// `rows`.
    fn local_step<M: Model + ?Sized>(
        &mut self,
        model: &M,
        batch: &Batch<'_>,
        rows: usize,
        key: StepKey,
    ) -> Result<(), StepError> {
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
        let max = self.batch.max(1);
        if rows > max {
            return Err(StepError::BatchTooLarge { batch: rows, max });
        }
        let n = self.params;
        let own = self.rank_rows(rows);
        let count = self.shards.len();
        self.state = GradState::Summed;
        if own.is_empty() {
            // Fewer shards than ranks, or a short last batch: this rank adds
            // nothing to the sum.
            self.grads.fill(0.0);
            return Ok(());
        }
        let scale = own.len() as f32 / rows as f32;
        if self.mode == Resolved::IntraOp || count == 1 {
            let shard = &mut self.shards[0];
            let (grads, rest) = self.grads.split_at_mut(n);
            let stats = &mut rest[1..];
            let at = StepKey {
                offset: key.offset + own.start as u64,
                ..key
            };
            let loss = if self.mode == Resolved::IntraOp {
                kernels::with_parallel_gemm(|| {
                    model.train_step_at(&mut shard.ws, shard.max_rows, grads, stats, batch, at)
                })?
            } else {
                model.train_step_at(&mut shard.ws, shard.max_rows, grads, stats, batch, at)?
            };
            // The weight of the only shard of the only rank is exactly 1.
            if scale != 1.0 {
                grads.par_chunks_mut(REDUCE_CHUNK).for_each(|c| {
                    for g in c {
                        *g *= scale;
                    }
                });
                for v in stats.iter_mut() {
                    *v *= scale;
                }
            }
            self.grads[n] = if scale != 1.0 { scale * loss } else { loss };
            return Ok(());
        }
        let (features, labels) = (&self.features, &self.labels);
        let (s, first) = (self.global_shards, self.own.start);
        let base = own.start;
        self.shards
            .par_iter_mut()
            .zip(self.losses.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, (shard, loss))| {
                let g = shard_range(rows, s, first + i);
                let r = g.start - base..g.end - base;
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
                    offset: key.offset + g.start as u64,
                    ..key
                };
                // Large products in parts an idle worker may take: the
                // shards are equal, the cores often are not.
                *loss = kernels::with_shared_gemm(|| {
                    model.train_step_at(
                        &mut shard.ws,
                        shard.max_rows,
                        &mut shard.grads,
                        &mut shard.stats,
                        &sub,
                        at,
                    )
                })?;
                Ok(())
            })?;
        for (i, w) in self.weights.iter_mut().enumerate() {
            *w = shard_range(rows, s, first + i).len() as f32 / rows as f32;
        }
        self.state = GradState::InShards;
        let (shards, weights) = (&self.shards, &self.weights);
        self.grads[n] = tree_sum_scalar(&self.losses, &self.weights, 0..count);
        for (b, block) in self.grads[n + 1..].chunks_mut(TREE_BLOCK).enumerate() {
            tree_sum(block, shards, weights, 0..count, b * TREE_BLOCK, &|s| {
                &s.stats
            });
        }
        Ok(())
    }

    /// Sums the shards' gradients into `self.grads`, if they are still
    /// apart.
    fn sum_shards(&mut self) {
        if self.state != GradState::InShards {
            return;
        }
        self.state = GradState::Summed;
        let n = self.params;
        let count = self.shards.len();
        // The same tree of sums, in the same order, on any number of threads
        // (and, for two ranks, split exactly at the rank boundary).
        let (shards, weights) = (&self.shards, &self.weights);
        self.grads[..n]
            .par_chunks_mut(REDUCE_CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                let start = c * REDUCE_CHUNK;
                for (b, block) in out.chunks_mut(TREE_BLOCK).enumerate() {
                    let at = start + b * TREE_BLOCK;
                    tree_sum(block, shards, weights, 0..count, at, &|s| &s.grads);
                }
            });
    }

    /// The gradient of the last [`Self::step`], [`Self::step_at`] or
    /// [`Self::step_ranks`].
    ///
    /// # Panics
    /// After [`Self::step_deferred_at`]: that step's gradient is only ever
    /// summed inside [`Self::update`].
    pub fn grads(&self) -> &[f32] {
        assert!(
            self.state == GradState::Summed,
            "StepRunner::grads after step_deferred_at: the gradient is summed inside update"
        );
        &self.grads[..self.params]
    }

    /// Scales the last step's summed gradient down to global L2 norm
    /// `max_norm` when it is larger (after [`Self::step_at`] or
    /// [`Self::step_ranks`]); returns the norm before clipping. The norm is
    /// summed in `f64` in gradient order, so every rank and thread count
    /// scales alike.
    pub fn clip_grad_norm(&mut self, max_norm: f32) -> f32 {
        self.sum_shards();
        crate::optim::clip_grad_norm(&mut self.grads[..self.params], max_norm)
    }

    /// The batch statistics of the last step (empty for models without
    /// state), laid out like the model's state buffer.
    pub fn stats(&self) -> &[f32] {
        &self.grads[self.params + 1..]
    }
}

/// Why a step of a group of ranks failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepRankError {
    /// This rank's part of the step.
    #[error(transparent)]
    Step(#[from] StepError),
    /// The all-reduce.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
}

/// Where the gradient of the last step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GradState {
    /// In the runner's buffer (summed, or computed there by a lone shard).
    Summed,
    /// Still in the shards' buffers, to be summed.
    InShards,
    /// Summed straight into an update, and not kept.
    Consumed,
}

/// Elements summed per tree pass: the tree's partial sums live on the stack.
const TREE_BLOCK: usize = 256;

/// `out = Σ weights[s] · of(shards[s])[start..]` over `range` (`of` picks the
/// gradient or the statistics), summed as the binary tree that splits a range
/// of `k` after its first `ceil(k / 2)`.
fn tree_sum(
    out: &mut [f32],
    shards: &[Shard],
    weights: &[f32],
    range: std::ops::Range<usize>,
    start: usize,
    of: &dyn Fn(&Shard) -> &[f32],
) {
    if range.len() == 1 {
        let (g, w) = (
            &of(&shards[range.start])[start..start + out.len()],
            weights[range.start],
        );
        for (o, &x) in out.iter_mut().zip(g) {
            *o = w * x;
        }
        return;
    }
    if range.len() == 2 {
        // The tree of two leaves in one pass, without a buffer for the right
        // leaf: `wa * a + wb * b` rounds exactly as the general case does
        // (Rust never contracts it into a fused multiply-add).
        let (a, b) = (range.start, range.start + 1);
        let ga = &of(&shards[a])[start..start + out.len()];
        let gb = &of(&shards[b])[start..start + out.len()];
        let (wa, wb) = (weights[a], weights[b]);
        for ((o, &x), &y) in out.iter_mut().zip(ga).zip(gb) {
            *o = wa * x + wb * y;
        }
        return;
    }
    let mid = range.start + range.len().div_ceil(2);
    tree_sum(out, shards, weights, range.start..mid, start, of);
    let mut right = [0.0f32; TREE_BLOCK];
    let right = &mut right[..out.len()];
    tree_sum(right, shards, weights, mid..range.end, start, of);
    for (o, &r) in out.iter_mut().zip(right.iter()) {
        *o += r;
    }
}

/// [`tree_sum`] of one value per shard.
fn tree_sum_scalar(values: &[f32], weights: &[f32], range: std::ops::Range<usize>) -> f32 {
    if range.len() == 1 {
        return weights[range.start] * values[range.start];
    }
    let mid = range.start + range.len().div_ceil(2);
    tree_sum_scalar(values, weights, range.start..mid)
        + tree_sum_scalar(values, weights, mid..range.end)
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
        // Sequence models count every position as a row: W4 (T16, batch 64)
        // takes two shards of 512 token rows, W4L (3.2 M parameters, T128,
        // batch 32) two shards for its gradient budget, not intra-op.
        assert_eq!(
            Strategy::Auto.resolve_rows(99_914, 64, 16),
            Resolved::Data(2)
        );
        assert_eq!(
            Strategy::Auto.resolve_rows(3_196_682, 32, 128),
            Resolved::Data(2)
        );
        assert_eq!(
            Strategy::Auto.resolve_rows(3_196_682, 1, 128),
            Resolved::IntraOp
        );
        assert_eq!(
            Strategy::Auto.resolve_rows(99_914, 8, 16),
            Resolved::Data(1)
        );
        assert_eq!(
            Strategy::Data { shards: Some(64) }.resolve(10, 16),
            Resolved::Data(16)
        );
    }
}
