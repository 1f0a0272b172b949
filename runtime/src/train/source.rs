//! Where `fit`'s batches come from: the rows of a dataset in memory, picked
//! by the seeded [`Loader`], or a [`ShardStream`] over shards on disk. Both
//! serve the same global batches in the same order when the stream's window
//! covers the data (see [`crate::data::stream`]). Each rank copies only its
//! own rows of a batch into its buffers; a stream on one rank of several
//! reads only those rows from disk.

use std::ops::Range;

use crate::data::{
    Augmenter, Batcher, Binding, DataError, Dataset, Loader, LoaderConfig, LoaderState, RankRows,
    ShardStream,
};
use crate::model::ModelSpec;

use super::options::TrainSet;

/// The batches of one run, with their position for checkpoints.
// One value per run, made once and never moved in the step loop: the
// variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Batches<'a> {
    /// Samples picked from a dataset in memory.
    Memory {
        /// The training set.
        data: &'a Dataset,
        /// The order.
        loader: Loader,
    },
    /// Batches streamed from shards.
    Stream {
        /// The shards and how they are streamed, to restart on resume.
        set: &'a crate::data::ShardSet,
        /// The stream's configuration.
        cfg: LoaderConfig,
        /// Epochs the run trains: the stream reads no further.
        epochs: u64,
        /// This rank's rows of each batch, on a rank of several: the
        /// stream reads no others.
        rank: Option<RankRows>,
        /// The stream.
        stream: ShardStream,
        /// The binding made from the set's columns, which every batch's
        /// values are checked against.
        binding: Binding,
    },
}

impl<'a> Batches<'a> {
    /// The batches of `set` for a model bound as `binding`, of which this
    /// rank takes `rank`'s rows (every row without it).
    pub(super) fn new(
        set: TrainSet<'a>,
        cfg: LoaderConfig,
        epochs: u64,
        binding: &Binding,
        rank: Option<RankRows>,
    ) -> Result<Self, DataError> {
        Ok(match set {
            TrainSet::Memory(data) => Batches::Memory {
                data,
                loader: Loader::new(data.len(), cfg)?,
            },
            TrainSet::Shards(set) => Batches::Stream {
                set,
                cfg,
                epochs,
                rank,
                stream: Self::stream(set, &cfg, epochs, rank, None)?,
                binding: binding.clone(),
            },
        })
    }

    fn stream(
        set: &crate::data::ShardSet,
        cfg: &LoaderConfig,
        epochs: u64,
        rank: Option<RankRows>,
        state: Option<&LoaderState>,
    ) -> Result<ShardStream, DataError> {
        let stream = crate::data::StreamConfig {
            rank,
            ..set.config(cfg.batch_size, cfg.shuffle, cfg.seed, Some(epochs))
        };
        set.stream_config(stream, state)
    }

    /// Current 0-based epoch.
    pub(super) fn epoch(&self) -> u64 {
        match self {
            Batches::Memory { loader, .. } => loader.epoch(),
            Batches::Stream { stream, .. } => stream.epoch(),
        }
    }

    /// Batches in one epoch.
    pub(super) fn batches_per_epoch(&self) -> usize {
        match self {
            Batches::Memory { loader, .. } => loader.batches_per_epoch(),
            Batches::Stream { stream, .. } => stream.batches_per_epoch(),
        }
    }

    /// The position, for checkpoints.
    pub(super) fn state(&self) -> LoaderState {
        match self {
            Batches::Memory { loader, .. } => loader.state(),
            Batches::Stream { stream, .. } => stream.state(),
        }
    }

    /// Continues from a checkpoint's position.
    pub(super) fn restore(&mut self, state: &LoaderState) -> Result<(), DataError> {
        match self {
            Batches::Memory { loader, .. } => loader.restore(state),
            Batches::Stream {
                set,
                cfg,
                epochs,
                rank,
                stream,
                ..
            } => {
                *stream = Self::stream(set, cfg, *epochs, *rank, Some(state))?;
                Ok(())
            }
        }
    }

    /// Gathers this rank's rows (`mine` of a batch of that many rows) of the
    /// next batch into `batcher`, augmented when asked; the batch's global
    /// row count, or `None` at the epoch's end (after which the next call
    /// starts the next epoch).
    pub(super) fn next(
        &mut self,
        spec: &ModelSpec,
        batcher: &mut Batcher,
        mine: impl Fn(usize) -> Range<usize>,
        augment: Option<(&mut Augmenter, u64)>,
    ) -> Result<Option<usize>, DataError> {
        let epoch = self.epoch();
        match self {
            Batches::Memory { data, loader } => {
                let Some(indices) = loader.next_indices() else {
                    return Ok(None);
                };
                // Every rank draws the same global batch and copies its own rows.
                let rows = indices.len();
                let own = &indices[mine(rows)];
                batcher.gather(data, own)?;
                if let Some((a, seed)) = augment {
                    a.apply(batcher, own, seed, epoch);
                }
                Ok(Some(rows))
            }
            Batches::Stream {
                stream, binding, ..
            } => {
                let Some(batch) = stream.next_batch()? else {
                    return Ok(None);
                };
                // Values on disk are checked as they arrive, as a dataset's
                // are before training: classes within the model's, finite
                // numbers (the shard reader), whole token ids.
                // The stream read this rank's rows only (`batch.own`).
                let indices = &batch.indices[batch.own.clone()];
                let checked = match Binding::for_training(spec, &batch.data, "training set") {
                    Ok(b) => b,
                    Err(e) => return Err(locate(spec, &batch.data, indices, e)),
                };
                if checked != *binding {
                    return Err(DataError::Invalid(
                        "a streamed batch binds to the model differently from the shards' columns"
                            .into(),
                    ));
                }
                let rows = batch.indices.len();
                if batch.own != mine(rows) {
                    return Err(DataError::Invalid(format!(
                        "the stream served rows {:?} of a batch of {rows} to a rank that takes {:?}",
                        batch.own,
                        mine(rows)
                    )));
                }
                batcher.gather_range(&batch.data, 0..batch.data.len())?;
                if let Some((a, seed)) = augment {
                    a.apply(batcher, indices, seed, epoch);
                }
                Ok(Some(rows))
            }
        }
    }
}

/// A streamed batch's binding error, said of the sample it is about: the
/// first row that fails alone, by its index in the shards (a batch's rows
/// are numbered within the batch, which means nothing to the user).
fn locate(spec: &ModelSpec, data: &Dataset, indices: &[usize], e: DataError) -> DataError {
    let alone = (0..data.len()).find_map(|r| {
        let one = data.subset(&[r]).ok()?;
        Binding::for_training(spec, &one, "training set")
            .err()
            .map(|e| (r, e))
    });
    match alone {
        Some((
            r,
            DataError::Mismatch {
                what,
                model,
                reason,
            },
        )) => DataError::Mismatch {
            what: format!(
                "{what} (sample {} of the shards, counting from 0)",
                indices[r]
            ),
            model,
            reason: reason.replace(", row 1 of ", " of "),
        },
        _ => e,
    }
}
